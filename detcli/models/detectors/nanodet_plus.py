"""NanoDet-Plus (RangiLyu/nanodet ``nanodet/model/arch/nanodet_plus.py``, config ``nanodet-plus-m_*.yml``).

Inference graph: ShuffleNetV2 → GhostPAN → NanoDetPlusHead. Training adds the Assign Guidance Module (AGM):
``aux_fpn`` (a copy of the neck) and ``aux_head`` (SimpleConvHead on concat(main, aux) features), whose
predictions drive the label assignment for both heads.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from detcli.assigners.dsl import DynamicSoftLabelAssigner
from detcli.errors import DetcliError
from detcli.geometry.distance import distance2bbox, integral
from detcli.geometry.priors import point_priors
from detcli.losses.nanodet_plus_loss import nanodet_plus_loss
from detcli.models.backbones.shufflenetv2 import ShuffleNetV2, load_imagenet_weights
from detcli.models.base import Detector
from detcli.models.convert import official_nanodet_class_names, official_nanodet_state_dict
from detcli.models.heads.nanodet_plus_head import NanoDetPlusHead
from detcli.models.heads.simple_conv_head import SimpleConvHead
from detcli.models.necks.ghost_pan import GhostPAN
from detcli.postprocess import multiclass_nms
from detcli.structures import Detections, ImageMeta, Target

if TYPE_CHECKING:
    from detcli.config.schema import NanoDetPlusConfig

AUX_PREFIXES = ("aux_fpn.", "aux_head.")
# a constant buffer of the official Integral layer (bins 0..reg_max); detcli computes the bins on the fly
OFFICIAL_INTEGRAL_KEYS = ("head.distribution_project.project", "aux_head.distribution_project.project")
BACKBONE_STRIDES = (8, 16, 32)


class NanoDetPlus(Detector):
    """NanoDet-Plus detector.

    Args:
        num_classes: C.
        width: ShuffleNetV2 width, "1.0x" (NanoDet-Plus-m) or "1.5x" (-m-1.5x).
        neck_channels: GhostPAN / head channels (96 for 1.0x, 128 for 1.5x).
        head_kernel: dw kernel of the head towers.
        stacked_convs: head tower depth.
        strides: level strides; the first three are the backbone's (8, 16, 32), each further one an extra
            GhostPAN level.
        reg_max: R, GFL distribution bins per side minus one.
        aux_channels: AGM head width (2 × neck_channels in the official configs).
        aux_stacked_convs: AGM head tower depth.
        detach_epoch: from this 0-indexed epoch on the AGM trains on detached features.
        assigner_topk, assigner_iou_factor: DSLA parameters.
        qfl_weight, dfl_weight, giou_weight: loss weights.
        backbone_weights: None = random init; "imagenet" = torchvision ShuffleNetV2 file from the torch hub
            cache if present (else random init, see ``backbone_init_message``); any other string = path of
            such a file (must exist).
    """

    ddp_find_unused_parameters = False  # every trainable parameter gets a gradient every step (checked)
    param_count_convention = "conv"  # NanoDet's README "Params": Conv2d weights and biases only
    param_count_source = "NanoDet's README"

    def __init__(
        self,
        num_classes: int,
        width: str,
        neck_channels: int,
        head_kernel: int = 5,
        stacked_convs: int = 2,
        strides: tuple[int, ...] = (8, 16, 32, 64),
        reg_max: int = 7,
        aux_channels: int = 192,
        aux_stacked_convs: int = 4,
        detach_epoch: int = 10,
        assigner_topk: int = 13,
        assigner_iou_factor: float = 3.0,
        qfl_weight: float = 1.0,
        dfl_weight: float = 0.25,
        giou_weight: float = 2.0,
        backbone_weights: str | None = None,
    ) -> None:
        super().__init__()
        strides = tuple(int(s) for s in strides)
        if strides[:3] != BACKBONE_STRIDES or any(b != 2 * a for a, b in zip(strides[2:], strides[3:])):
            raise ValueError(f"strides must be (8, 16, 32) followed by doublings, got {strides}")
        self.num_classes = num_classes
        self.strides = strides
        self.reg_max = reg_max
        self.detach_epoch = detach_epoch
        self.loss_weights = {"qfl": qfl_weight, "dfl": dfl_weight, "giou": giou_weight}
        self.assigner = DynamicSoftLabelAssigner(topk=assigner_topk, iou_factor=assigner_iou_factor)

        self.backbone = ShuffleNetV2(width, out_stages=(2, 3, 4), act="LeakyReLU")
        self.fpn = GhostPAN(self.backbone.out_channels, neck_channels, kernel_size=5,
                            num_extra_level=len(strides) - 3, act="LeakyReLU")
        self.head = NanoDetPlusHead(num_classes, neck_channels, neck_channels, stacked_convs, head_kernel,
                                    strides, reg_max, act="LeakyReLU")
        # the AGM neck starts as an exact copy of the main neck (official: copy.deepcopy(self.fpn))
        self.aux_fpn = copy.deepcopy(self.fpn)
        self.aux_head = SimpleConvHead(num_classes, 2 * neck_channels, aux_channels, aux_stacked_convs,
                                       strides, reg_max, act="LeakyReLU")

        self.backbone_init_message: str | None = None
        if backbone_weights is not None:
            path = None if backbone_weights == "imagenet" else backbone_weights
            self.backbone_init_message = load_imagenet_weights(self.backbone, path)

    # ------------------------------------------------------------------ inference graph
    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) → (B, N, C + 4(R+1)) raw main-head output (the AGM never runs here)."""
        return self.head(self.fpn(self.backbone(images)))

    def priors(self, height: int, width: int, device: torch.device | None = None,
               dtype: torch.dtype = torch.float32) -> Tensor:
        """(N, 4) ``[x, y, stride, stride]`` for an input of (height, width); maps of size ⌈H/s⌉ × ⌈W/s⌉."""
        sizes = [(-(-height // s), -(-width // s)) for s in self.strides]
        # offset 0 (cell top-left) as in the official get_single_level_center_priors
        return point_priors(sizes, self.strides, offset=0.0, device=device, dtype=dtype)

    def decode_boxes(self, reg_logits: Tensor, priors: Tensor) -> Tensor:
        """(B, N, 4(R+1)) distance logits → (B, N, 4) ``xyxy`` boxes: softmax expectation × stride, unclamped."""
        return distance2bbox(priors[:, :2], integral(reg_logits, self.reg_max) * priors[:, 2, None])

    @torch.no_grad()
    def predict(self, images: Tensor, metas: list[ImageMeta], score_thr: float = 0.05, iou_thr: float = 0.6,
                max_det: int = 100) -> list[Detections]:
        """Detections in network-input pixels.

        Sigmoid class scores; boxes decoded from the priors and clamped to each image's ``img_shape``
        (the whole input when ``metas`` is empty); multi-label candidates with score > ``score_thr``;
        class-aware NMS; top ``max_det`` (official defaults 0.05 / 0.6 / 100).
        """
        b, _, h, w = images.shape
        out = self(images)
        cls_logits, reg_logits = out.split([self.num_classes, 4 * (self.reg_max + 1)], dim=-1)
        boxes = self.decode_boxes(reg_logits, self.priors(h, w, images.device, out.dtype))
        shapes = [m.img_shape for m in metas] if metas else [(h, w)] * b
        limits = torch.tensor([[sw, sh, sw, sh] for sh, sw in shapes], dtype=boxes.dtype, device=boxes.device)
        boxes = torch.minimum(boxes.clamp_(min=0), limits[:, None, :])
        scores = cls_logits.sigmoid()
        return [multiclass_nms(boxes[i], scores[i], score_thr, iou_thr, max_det) for i in range(b)]

    # ------------------------------------------------------------------ training graph
    def loss(self, images: Tensor, targets: list[Target], metas: list[ImageMeta], epoch: int) -> dict[str, Tensor]:
        """Main-head and AGM losses (weighted). From ``detach_epoch`` on, the AGM sees detached backbone and
        main-neck features, so its losses no longer reach the shared modules (official ``forward_train``)."""
        feats = self.backbone(images)
        fpn_feats = self.fpn(feats)
        main_out = self.head(fpn_feats)
        aux_out = self.agm_forward(feats, fpn_feats, detach=epoch >= self.detach_epoch)
        priors = self.priors(images.shape[2], images.shape[3], images.device)
        return nanodet_plus_loss(
            main_out, aux_out, priors, targets, self.num_classes, self.reg_max, self.assigner,
            qfl_weight=self.loss_weights["qfl"], dfl_weight=self.loss_weights["dfl"],
            giou_weight=self.loss_weights["giou"],
        )

    def agm_forward(self, feats: tuple[Tensor, ...], fpn_feats: tuple[Tensor, ...], detach: bool) -> Tensor:
        """Assign Guidance Module: ``aux_head(concat(main neck level, aux_fpn(backbone feats) level))``.

        Args:
            feats: backbone outputs (C3, C4, C5).
            fpn_feats: main-neck outputs, one per stride.
            detach: cut the AGM off the backbone and the main neck (official: epoch >= detach_epoch).

        Returns:
            (B, N, C + 4(R+1)) aux-head output.
        """
        if detach:
            feats = [f.detach() for f in feats]
            fpn_feats = [f.detach() for f in fpn_feats]
        aux_feats = self.aux_fpn(feats)
        return self.aux_head([torch.cat([f, a], dim=1) for f, a in zip(fpn_feats, aux_feats)])

    # ------------------------------------------------------------------ weights
    def inference_state_dict(self) -> dict[str, Tensor]:
        """State dict without the training-only AGM (``aux_fpn.*``, ``aux_head.*``)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(AUX_PREFIXES)}

    def official_state_dict(self, checkpoint: Any) -> dict[str, Tensor]:
        """Weights of an official NanoDet-Plus checkpoint (Lightning ``.ckpt`` dict, ``nanodet_model_best.pth``
        dict or bare state dict; EMA ``avg_model.`` weights preferred) under this model's key names.

        The official constant Integral buffer ``head.distribution_project.project`` is checked against
        reg_max (:class:`DetcliError` when it differs) and dropped.
        """
        state = official_nanodet_state_dict(checkpoint)
        for key in OFFICIAL_INTEGRAL_KEYS:
            if key in state:
                bins = state.pop(key)
                if bins.numel() != self.reg_max + 1:
                    raise DetcliError(f"checkpoint has reg_max={bins.numel() - 1} ({key}), the model {self.reg_max}")
        return state

    def official_class_names(self, checkpoint: Any) -> list[str] | None:
        """``class_names`` of the NanoDet config stored in the checkpoint, if any."""
        return official_nanodet_class_names(checkpoint)

    def classes_in(self, state: Mapping[str, Tensor]) -> int | None:
        """C from the main head's first output conv: C + 4(R+1) channels."""
        cls_conv = state.get("head.gfl_cls.0.weight")
        classes = None if cls_conv is None else int(cls_conv.shape[0]) - 4 * (self.reg_max + 1)
        return classes if classes is not None and classes > 0 else None

    def load_official_state_dict(self, checkpoint: Any) -> bool:
        """Load an official NanoDet-Plus checkpoint (:meth:`official_state_dict`).

        The inference graph must match key-for-key and shape-for-shape (else :class:`DetcliError`); the AGM is
        loaded when the checkpoint has it (then completely).

        Returns:
            True when the AGM weights were loaded too.
        """
        state = self.official_state_dict(checkpoint)
        has_agm = any(k.startswith(AUX_PREFIXES) for k in state)
        self.load_checked(state, required=self.state_dict() if has_agm else self.inference_state_dict())
        return has_agm


def build_nanodet_plus(cfg: "NanoDetPlusConfig", num_classes: int, backbone_weights: str | None) -> NanoDetPlus:
    """NanoDet-Plus from a validated preset's ``model`` section (``NanoDetPlusConfig``)."""
    return NanoDetPlus(
        num_classes=num_classes,
        width=cfg.width,
        neck_channels=cfg.neck_channels,
        head_kernel=cfg.head_kernel,
        stacked_convs=cfg.stacked_convs,
        strides=tuple(cfg.strides),
        reg_max=cfg.reg_max,
        aux_channels=cfg.aux_channels,
        aux_stacked_convs=cfg.aux_stacked_convs,
        detach_epoch=cfg.detach_epoch,
        assigner_topk=cfg.assigner.topk,
        assigner_iou_factor=cfg.assigner.iou_factor,
        qfl_weight=cfg.loss.qfl_weight,
        dfl_weight=cfg.loss.dfl_weight,
        giou_weight=cfg.loss.giou_weight,
        backbone_weights=backbone_weights,
    )
