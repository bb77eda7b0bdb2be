"""NanoDet-Plus (RangiLyu/nanodet ``nanodet/model/arch/nanodet_plus.py``, config ``nanodet-plus-m_*.yml``).

Inference graph: backbone (ShuffleNetV2 as in the official configs, or NanoDet's GhostNet) → GhostPAN →
NanoDetPlusHead. Training adds the Assign Guidance Module (AGM):
``aux_fpn`` (a copy of the neck) and ``aux_head`` (SimpleConvHead on concat(main, aux) features), whose
predictions drive the label assignment for both heads.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from detcli.assigners.assignment import Assignment
from detcli.assigners.dsl import DynamicSoftLabelAssigner
from detcli.assigners.prior_fit import (
    BEYOND_REGRESSION_RANGE,
    SMALLER_THAN_STRIDE,
    PriorFit,
    larger_input_advice,
    point_fit,
)
from detcli.config.schema import GFLLossConfig, InputConfig, NanoDetPlusConfig, TestConfig
from detcli.errors import DetcliError
from detcli.geometry.priors import point_priors
from detcli.losses.nanodet_plus_loss import (
    decode_gfl_boxes,
    gfl_target_logits,
    nanodet_plus_loss,
)
from detcli.models.backbones import ghostnet, shufflenetv2
from detcli.models.base import Detector, level_grid_sizes
from detcli.structures import HeadOutput, Priors
from detcli.models.convert import official_nanodet_class_names, official_nanodet_state_dict
from detcli.models.heads.nanodet_plus_head import NanoDetPlusHead
from detcli.models.heads.simple_conv_head import SimpleConvHead
from detcli.models.necks.ghost_pan import GhostPAN
from detcli.postprocess import PostprocessConfig
from detcli.structures import ImageMeta, Target

AUX_PREFIXES = ("aux_fpn.", "aux_head.")
# a constant buffer of the official Integral layer (bins 0..reg_max); detcli computes the bins on the fly
OFFICIAL_INTEGRAL_KEYS = ("head.distribution_project.project", "aux_head.distribution_project.project")
BACKBONE_STRIDES = (8, 16, 32)


class NanoDetPlus(Detector):
    """NanoDet-Plus detector, from its parts (:meth:`from_config` builds them from a preset).

    Args:
        backbone: :func:`nanodet_backbone` (C3, C4, C5 and their ``out_channels``).
        fpn: :class:`GhostPAN`, one output per stride (the first three the backbone's, each further one an extra
            level).
        head: :class:`NanoDetPlusHead`; its strides (8, 16, 32 followed by doublings) and ``reg_max`` (R, GFL
            bins per side minus one) are the model's.
        aux_fpn, aux_head: the Assign Guidance Module (AGM), training only: a copy of the neck and a
            :class:`SimpleConvHead` on concat(main, aux) features.
        assigner: DSLA (no centre prior).
        loss: QFL, DFL and GIoU weights.
        detach_epoch: from this 0-indexed epoch on the AGM trains on detached features.
        postprocess: test-time settings (official: multi-label score > 0.05, no top-k, class-aware NMS 0.6, 100
            per image).
    """

    config_type = NanoDetPlusConfig
    display_name = NanoDetPlusConfig.display_name
    augment_type = NanoDetPlusConfig.augment_type
    ddp_find_unused_parameters = False  # every trainable parameter gets a gradient every step (checked)
    param_count_convention = "conv"  # NanoDet's README "Params": Conv2d weights and biases only
    param_count_source = "NanoDet's README"

    def __init__(self, backbone: nn.Module, fpn: GhostPAN, head: NanoDetPlusHead, aux_fpn: GhostPAN,
                 aux_head: SimpleConvHead, assigner: DynamicSoftLabelAssigner, loss: GFLLossConfig,
                 detach_epoch: int, postprocess: PostprocessConfig) -> None:
        super().__init__()
        strides = head.strides
        if strides[:3] != BACKBONE_STRIDES or any(b != 2 * a for a, b in zip(strides[2:], strides[3:])):
            raise ValueError(f"strides must be (8, 16, 32) followed by doublings, got {strides}")
        self.num_classes = head.num_classes
        self.strides = strides
        self.reg_max = head.reg_max
        self.detach_epoch = detach_epoch
        self.loss_weights = {"qfl": loss.qfl_weight, "dfl": loss.dfl_weight, "giou": loss.giou_weight}
        self.assigner = assigner
        self.postprocess_cfg = postprocess
        self.backbone = backbone
        self.fpn = fpn
        self.head = head
        self.aux_fpn = aux_fpn
        self.aux_head = aux_head
        self.agm_trained = True  # False after loading an official checkpoint without AGM weights
        self.backbone_init_message: str | None = None

    @classmethod
    def from_config(cls, cfg: NanoDetPlusConfig, num_classes: int, test: TestConfig | None = None,
                    input_cfg: InputConfig | None = None, backbone_weights: str | None = None) -> NanoDetPlus:
        """NanoDet-Plus from a preset's ``model`` (``NanoDetPlusConfig``) and ``test`` sections (``test=None``:
        the schema's defaults). Every prior takes part in training, so nothing of ``input_cfg`` is needed.

        ``backbone_weights``: None = random init; "imagenet" = the backbone's ImageNet file from the torch hub
        cache if present (torchvision's ShuffleNetV2, Huawei's GhostNet; else random init, see
        ``backbone_init_message``); any other string = path of such a file (must exist).
        """
        strides = cls.strides_of(cfg)
        backbone = nanodet_backbone(cfg.backbone.type, cfg.width, cfg.backbone.act,
                                    getattr(cfg.backbone, "out_stages", None))
        fpn = GhostPAN(backbone.out_channels, cfg.neck_channels, kernel_size=5, num_extra_level=len(strides) - 3,
                       act="LeakyReLU")
        head = NanoDetPlusHead(num_classes, cfg.neck_channels, cfg.neck_channels, cfg.stacked_convs,
                               cfg.head_kernel, strides, cfg.reg_max, act="LeakyReLU")
        aux_fpn = copy.deepcopy(fpn)  # the AGM neck starts as an exact copy of the main neck (official)
        aux_head = SimpleConvHead(num_classes, 2 * cfg.neck_channels, cfg.aux_channels, cfg.aux_stacked_convs,
                                  strides, cfg.reg_max, act="LeakyReLU")
        assigner = DynamicSoftLabelAssigner(topk=cfg.assigner.topk, iou_factor=cfg.assigner.iou_factor)
        model = cls(backbone, fpn, head, aux_fpn, aux_head, assigner, cfg.loss, cfg.detach_epoch,
                    PostprocessConfig.from_test(test or TestConfig()))
        if backbone_weights is not None:
            path = None if backbone_weights == "imagenet" else backbone_weights
            model.backbone_init_message = load_backbone_imagenet_weights(backbone, path)
        return model

    @classmethod
    def strides_of(cls, cfg: NanoDetPlusConfig) -> tuple[int, ...]:
        return tuple(int(s) for s in cfg.strides)

    @classmethod
    def assigner_description(cls, cfg: NanoDetPlusConfig) -> str:
        a = cfg.assigner
        return f"DynamicSoftLabelAssigner(topk={a.topk}, iou_factor={a.iou_factor}) on AGM predictions"

    # ------------------------------------------------------------------ inference graph
    def forward(self, images: Tensor) -> HeadOutput:
        """(B, 3, H, W) → main-head output (the AGM never runs here): class logits (B, N, C) and GFL distance
        logits (B, N, 4(R+1)), views of the head's single (B, N, C + 4(R+1)) tensor."""
        return self._split(self.head(self.fpn(self.backbone(images))))

    def _split(self, out: Tensor) -> HeadOutput:
        """(B, N, C + 4(R+1)) → HeadOutput (views, no copy)."""
        cls_logits, bbox_reg = out.split([self.num_classes, 4 * (self.reg_max + 1)], dim=-1)
        return HeadOutput(cls_logits, bbox_reg)

    def priors(self, image_size: tuple[int, int], device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32) -> Priors:
        """Point priors of an (H, W) input: one per cell of the ⌈H/s⌉ × ⌈W/s⌉ maps, at the cell's top-left
        corner (offset 0, as the official ``get_single_level_center_priors``)."""
        sizes = level_grid_sizes(image_size, self.strides)
        points = point_priors(list(sizes), self.strides, offset=0.0, device=device, dtype=dtype)
        return Priors.on_grid(points, None, sizes, 1)

    @property
    def box_coding(self) -> str:
        r = self.reg_max
        return (f"GFL: K = 4·{r + 1} logits, sides l, t, r, b; per side softmax over bins 0..{r}, expectation × "
                "stride = distance; box = (x - l, y - t, x + r, y + b) at the prior point")

    def decode_boxes(self, outputs: HeadOutput, priors: Priors) -> Tensor:
        """(B, N, 4(R+1)) distance logits → (B, N, 4) ``xyxy``: softmax expectation × stride, not clipped."""
        return decode_gfl_boxes(outputs.bbox_reg, priors.points, self.reg_max)

    def encode_boxes(self, boxes: Tensor, priors: Priors) -> Tensor:
        """(B, N, 4) ``xyxy`` boxes → (B, N, 4(R+1)) logits of DFL's target distribution: each side distance
        d (in strides, clamped to [0, R]) as weight ⌊d⌋+1−d on bin ⌊d⌋ and d−⌊d⌋ on the next, so the softmax
        expectation decodes back to d."""
        return gfl_target_logits(boxes, priors.points, self.reg_max)

    def decode_scores(self, outputs: HeadOutput) -> Tensor:
        """Sigmoid of every class logit, (B, N, C)."""
        return outputs.cls_logits.sigmoid()

    # ------------------------------------------------------------------ inspection
    @property
    def assignment_predictions(self) -> str:
        if self.agm_trained:
            return "the AGM's predictions (aux_fpn + aux_head, as in training)"
        return "the main head's predictions (the checkpoint has no AGM weights)"

    def assignment_outputs(self, images: Tensor) -> HeadOutput:
        """The AGM's predictions, which training assigns on (:meth:`loss`); the main head's when the loaded
        official checkpoint had no AGM weights."""
        feats = self.backbone(images)
        fpn_feats = self.fpn(feats)
        if not self.agm_trained:
            return self._split(self.head(fpn_feats))
        return self._split(self.agm_forward(feats, fpn_feats, detach=True))

    @property
    def prior_fit_rule(self) -> str:
        return (f"a prior point strictly inside the box (the assigner's candidates) whose level reaches every side "
                f"within reg_max · stride = {self.reg_max} strides (GFL's range)")

    def prior_fit(self, priors: Priors, gt_boxes: Tensor, meta: ImageMeta | None = None) -> PriorFit:
        """:func:`point_fit` with GFL's reach of ``reg_max`` strides per side."""
        return point_fit(priors.points, gt_boxes.to(priors.points.device), self.reg_max * priors.points[:, 2])

    def fit_advice(self, missed_wh: Tensor, reasons: Tensor) -> str:
        """Boxes too small for the stride-8 grid → a larger input (``input.size``); boxes beyond GFL's range →
        a larger ``reg_max`` (a new head shape: official weights no longer load)."""
        if missed_wh.numel() == 0:
            return "nothing to change"
        small = reasons == SMALLER_THAN_STRIDE
        far = reasons == BEYOND_REGRESSION_RANGE
        if int(far.sum()) > int(small.sum()):
            need = float(missed_wh[far].max()) / self.strides[-1]  # a side distance ≤ the box size
            return (f"--set model.reg_max={max(self.reg_max + 1, int(need) + 1)} (missed GTs up to "
                    f"{float(missed_wh[far].max()):.0f} px reach beyond {self.reg_max} × {self.strides[-1]} px; "
                    "a new head shape)")
        return larger_input_advice(missed_wh[~far], self.strides[0])

    # ------------------------------------------------------------------ training graph
    def assign(self, outputs: HeadOutput, priors: Priors, targets: list[Target],
               metas: list[ImageMeta] | None = None) -> Assignment:
        """DSLA of every image at once on ``outputs``' detached class logits and decoded boxes (in training the
        AGM's, official ``NanoDetPlusHead.loss``); ``metas`` are not needed."""
        cls_logits, bbox_reg = outputs.cls_logits.float(), outputs.bbox_reg.float()
        boxes = decode_gfl_boxes(bbox_reg, priors.points, self.reg_max)
        return self.assigner.assign_batch(
            cls_logits.detach(), priors.points, boxes.detach(), [t.boxes for t in targets], [t.labels for t in targets]
        )

    def loss(self, images: Tensor, targets: list[Target], metas: list[ImageMeta], epoch: int) -> dict[str, Tensor]:
        """Main-head and AGM losses (weighted), both on the assignment of the AGM's predictions. From
        ``detach_epoch`` on, the AGM sees detached backbone and main-neck features, so its losses no longer
        reach the shared modules (official ``forward_train``)."""
        feats = self.backbone(images)
        fpn_feats = self.fpn(feats)
        main_out = self._split(self.head(fpn_feats))
        aux_out = self._split(self.agm_forward(feats, fpn_feats, detach=epoch >= self.detach_epoch))
        priors = self.priors(tuple(images.shape[-2:]), images.device)
        assignment = self.assign(aux_out, priors, targets)
        return nanodet_plus_loss(
            main_out, aux_out, priors.points, assignment, targets, self.reg_max,
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
        self.agm_trained = has_agm
        return has_agm


def nanodet_backbone(kind: str, width: str, act: str = "LeakyReLU",
                     out_stages: tuple[int, ...] | None = None) -> nn.Module:
    """The backbone a NanoDet-Plus preset names (``model.backbone.type``), with C3/C4/C5 outputs (strides 8, 16,
    32) and their ``out_channels``: ShuffleNetV2 of ``width`` (stages (2, 3, 4)), or GhostNet with width
    multiplier ``width`` (stages (4, 6, 9) unless given)."""
    match kind:
        case "shufflenetv2":
            return shufflenetv2.ShuffleNetV2(width, out_stages=tuple(out_stages or (2, 3, 4)), act=act)
        case "ghostnet":
            return ghostnet.GhostNet(float(width.removesuffix("x")), out_stages=tuple(out_stages or (4, 6, 9)), act=act)
    raise ValueError(f"unknown NanoDet-Plus backbone {kind!r}; expected 'shufflenetv2' or 'ghostnet'")


def load_backbone_imagenet_weights(backbone: nn.Module, path: str | None) -> str:
    """The ImageNet weights of a :func:`nanodet_backbone` (each backbone's own loader); a one-line message."""
    if isinstance(backbone, ghostnet.GhostNet):
        return ghostnet.load_imagenet_weights(backbone, path)
    return shufflenetv2.load_imagenet_weights(backbone, path)

