"""DeFCN (Wang et al., "End-to-End Object Detection with Fully Convolutional Network", CVPR 2021): POTO +
3D Max Filtering + auxiliary loss, as Megvii's DeFCN on cvpods (``poto.res50.fpn.coco.800size.3x_ms.3dmf.aux``).

ResNet-50 (caffe style, FrozenBN, stem + res2 frozen) → FPN P3–P7 (P6 from P5, P7 = conv(ReLU(P6))) → FCOS-style
GN head with per-level Scale and ReLU(·)·stride distances, plus 3D Max Filtering and a filter logit; score =
σ(cls)·σ(filter). Training: POTO one-to-one on the detached predictions (focal loss on the probability
product + 2 × GIoU) and the auxiliary one-to-many focal loss on the class logits. Test: per level the best 1000
(point, class) pairs with score > 0.05, the best 100 overall, **no NMS** (``test.nms``; ``--nms`` turns it on);
then cvpods' ``detector_postprocess`` (:meth:`DeFCN.to_original`): rescaled to the original image, clipped there,
empty boxes dropped, so an image may keep fewer than 100.

Parameter names: ``backbone.*`` torchvision ResNet, ``neck.*`` the shared FPN, ``head.*`` DeFCN's own names;
a cvpods checkpoint is renamed on load (:func:`~detcli.models.cvpods_keys.cvpods_to_detcli`).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from detcli.assigners.assignment import Assignment
from detcli.assigners.poto import POTOAssigner
from detcli.assigners.prior_fit import PriorFit, candidate_fit
from detcli.config.schema import DeFCNConfig, DeFCNLossConfig, InputConfig, TestConfig
from detcli.errors import DetcliError
from detcli.losses.defcn_loss import defcn_loss
from detcli.models.backbones.resnet import ResNet
from detcli.models.base import flatten_levels
from detcli.structures import HeadOutput, Priors
from detcli.models.convert import tensor_state_dict
from detcli.models.cvpods_keys import cvpods_to_detcli
from detcli.models.heads.defcn_head import DeFCNHead
from detcli.models.point_detector import PointDetector
from detcli.models.necks.fpn import FPN
from detcli.postprocess import PostprocessConfig
from detcli.structures import Detections, ImageMeta, Target


class DeFCN(PointDetector):
    """DeFCN with a ResNet-50 FPN, from its parts (:meth:`from_config` builds them from a preset).

    Args:
        backbone: caffe-style :class:`ResNet` 50 (FrozenBN, or BN).
        neck: :class:`FPN` P3–P7 (P6 from P5, ReLU before P7).
        head: :class:`DeFCNHead` (its strides are the model's).
        assigner: :class:`~detcli.assigners.poto.POTOAssigner` and the auxiliary one-to-many assignment.
        loss: focal α, γ, the GIoU weight and the auxiliary loss weight.
        postprocess: test settings (DeFCN's: top 1000 per level, > 0.05, 100, no NMS).
    """

    config_type = DeFCNConfig
    display_name = DeFCNConfig.display_name
    augment_type = DeFCNConfig.augment_type
    ddp_find_unused_parameters = False  # every trainable parameter reaches a loss
    param_count_convention = "all"  # FrozenBN statistics and affine are buffers, as in cvpods
    param_count_source = "DeFCN (cvpods, whose FrozenBN affine are buffers)"
    flop_count_convention = "macs"  # DeFCN publishes none; detectron2/cvpods' counter (fvcore) counts MACs
    flop_count_source = "fvcore (detectron2, cvpods)"
    select_on_logits = False  # the score is a product of two sigmoids
    assignment_predictions = ("the head's own predictions: σ(cls)·σ(filter) for POTO, σ(cls) for the auxiliary "
                              "one-to-many assignment")
    box_coding = ("distance: K = 4 side distances l, t, r, b in input pixels (ReLU(scale·x)·stride already applied); "
                  "box = (x - l, y - t, x + r, y + b) at the prior point; score = sigmoid(cls) · sigmoid(score_factor)")

    prior_offset = 0.5  # cvpods ``ShiftGenerator(offset=0.5)``: cell centres, not RetinaNet's or RTMDet's corners

    def __init__(self, backbone: ResNet, neck: FPN, head: DeFCNHead, assigner: POTOAssigner, loss: DeFCNLossConfig,
                 postprocess: PostprocessConfig) -> None:
        super().__init__()
        if len(head.strides) != 5:
            raise ValueError(f"DeFCN uses 5 levels (P3–P7); got {len(head.strides)} strides")
        self.num_classes = head.num_classes
        self.strides = head.strides
        self.assigner = assigner
        self.loss_settings = loss.model_dump()  # focal_alpha, focal_gamma, reg_weight, aux_weight
        self.postprocess_cfg = postprocess
        self.backbone = backbone
        self.neck = neck
        self.head = head
        self.backbone_init_message: str | None = None

    @classmethod
    def from_config(cls, cfg: DeFCNConfig, num_classes: int, test: TestConfig | None = None,
                    input_cfg: InputConfig | None = None, backbone_weights: str | None = None) -> DeFCN:
        """DeFCN from a preset's ``model`` (``DeFCNConfig``) and ``test`` sections (``test=None``: the schema's
        defaults; ``test.nms_pre=None`` keeps DeFCN's 1000 per level, ``test.min_bbox_size=None`` drops no box
        before the top-``max_det`` cut: cvpods drops the empty ones after it, :meth:`to_original`). Every prior
        takes part in training, so nothing of ``input_cfg`` is needed.

        ``backbone_weights``: None, ``"imagenet"`` (the MSRA ``R-50.pkl`` in the torch hub cache) or a path.
        """
        backbone = ResNet(50, cfg.frozen_stages, norm_eval=cfg.norm == "frozen_bn", style="caffe", norm=cfg.norm)
        neck = FPN(backbone.out_channels, cfg.fpn_channels, num_extra=2, extra_source="output",
                   relu_before_extra=True, init="c2_xavier")
        head = DeFCNHead(num_classes, cfg.fpn_channels, cls.strides_of(cfg), cfg.num_convs, cfg.prior_prob,
                         cfg.filter.kernel_size, cfg.filter.tau, cfg.filter.norm)
        a = cfg.assigner
        model = cls(backbone, neck, head, POTOAssigner(a.alpha, a.centre_radius, a.aux_topk), cfg.loss,
                    PostprocessConfig.from_test(test or TestConfig(), nms_pre=1000, min_bbox_size=None))
        message = backbone.load_imagenet(backbone_weights)
        if message and cfg.norm == "frozen_bn":
            message += (
                "; FrozenBN then normalises nothing (identity statistics: C5 activations reach ~1e3) and training "
                "from scratch is slow or unstable: for a random backbone use --set model.norm=bn (BatchNorm on "
                "batch statistics; He et al., 'Rethinking ImageNet Pre-training', 2019)")
        model.backbone_init_message = message
        return model

    @classmethod
    def strides_of(cls, cfg: DeFCNConfig) -> tuple[int, ...]:
        return tuple(int(s) for s in cfg.strides)

    @classmethod
    def assigner_description(cls, cfg: DeFCNConfig) -> str:
        a = cfg.assigner
        return (f"POTO(alpha={a.alpha}, centre_radius={a.centre_radius}, Hungarian) + auxiliary one-to-many "
                f"(top-{a.aux_topk} per level, mean+std) on the head's own predictions")

    # ------------------------------------------------------------------ inference graph
    def forward(self, images: Tensor) -> HeadOutput:
        """(B, 3, H, W) → class logits (B, N, C), distances in pixels (B, N, 4), filter logits (B, N, 1); N in
        level, y, x order."""
        cls_maps, reg_maps, filter_maps = self.forward_maps(images)
        return HeadOutput(flatten_levels(cls_maps), flatten_levels(reg_maps), flatten_levels(filter_maps))

    def forward_maps(self, images: Tensor) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Per-level maps as DeFCN's ``FCOSHead.forward``: (B, C, H_l, W_l), (B, 4, H_l, W_l), (B, 1, H_l, W_l)."""
        return self.head(self.neck(self.backbone(images)))

    def decode_scores(self, outputs: HeadOutput) -> Tensor:
        """σ(cls) · σ(filter), (B, N, C)."""
        return outputs.cls_logits.float().sigmoid() * outputs.score_factor.float().sigmoid()

    # ------------------------------------------------------------------ test-time post-processing
    def detections(self, outputs: HeadOutput, batch_shape: tuple[int, ...], metas: list[ImageMeta],
                   cfg: PostprocessConfig) -> list[Detections]:
        """decode → postprocess, boxes **not** clipped (cvpods' ``inference_single_image`` leaves them as decoded;
        :meth:`to_original` clips once, in original pixels)."""
        priors = self.priors(tuple(batch_shape[-2:]), outputs.cls_logits.device, outputs.cls_logits.dtype)
        return self.postprocess(self.decode_boxes(outputs, priors), self.decode_scores(outputs), priors, cfg)

    to_original_rule = "clip_drop_empty"

    def to_original(self, det: Detections, meta: ImageMeta) -> Detections:
        """cvpods ``detector_postprocess`` of one image's top-``max_det`` detections.

        x × (ori_w / img_w) and y × (ori_h / img_h) (the factors in float64, the product in the boxes' float32,
        as ``Boxes.scale``), clamped to [0, ori_w] × [0, ori_h] (``Boxes.clip``), then the boxes whose width or
        height is not > 0 dropped (``Boxes.nonempty``): after the cut, so fewer than ``max_det`` may remain.

        Args:
            det: (K, 4) xyxy in input pixels (unclipped), scores and labels, best first.
            meta: ``img_shape`` (the resized image, h, w) and ``ori_shape`` (h, w).
        Returns:
            the K' ≤ K non-empty detections in original pixels, same order.
        """
        (img_h, img_w), (ori_h, ori_w) = meta.img_shape, meta.ori_shape
        boxes = det.boxes.clone()
        boxes[:, 0::2] *= ori_w / img_w
        boxes[:, 1::2] *= ori_h / img_h
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, ori_w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, ori_h)
        keep = ((boxes[:, 2] - boxes[:, 0]) > 0) & ((boxes[:, 3] - boxes[:, 1]) > 0)
        return Detections(boxes=boxes[keep], scores=det.scores[keep], labels=det.labels[keep])

    # ------------------------------------------------------------------ inspection
    @property
    def prior_fit_rule(self) -> str:
        r = self.assigner.centre_radius
        region = f"its centre-sampling box (centre ± {r:g}·stride, clipped to the box)" if r > 0 else "the box"
        return (f"a prior point strictly inside {region}, POTO's candidates; a GT without one is still matched to "
                "its best-scoring point")

    def prior_fit(self, priors: Priors, gt_boxes: Tensor, meta: ImageMeta | None = None) -> PriorFit:
        """:func:`candidate_fit` on POTO's candidate rule."""
        boxes = gt_boxes.to(priors.points.device).float()
        return candidate_fit(self.assigner.candidates(priors.points, boxes), boxes, float(priors.points[:, 2].min()))

    # ------------------------------------------------------------------ training graph
    def assign(self, outputs: HeadOutput, priors: Priors, targets: list[Target],
               metas: list[ImageMeta] | None = None) -> Assignment:
        """POTO on σ(cls)·σ(filter) and the decoded boxes, with the auxiliary one-to-many assignment on σ(cls) in
        ``.auxiliary`` (DeFCN ``get_ground_truth`` / ``get_aux_ground_truth``; every prior takes part)."""
        cls = outputs.cls_logits.detach().float().sigmoid()
        probs = cls * outputs.score_factor.detach().float().sigmoid()
        boxes = self.decode_boxes(outputs, priors).detach().float()
        return self.assigner.assign(probs, cls, boxes, priors.points, priors.level_counts,
                                    [t.boxes for t in targets], [t.labels for t in targets])

    def loss(self, images: Tensor, targets: list[Target], metas: list[ImageMeta], epoch: int = 0) -> dict[str, Tensor]:
        """``loss_cls``, ``loss_box_reg`` (×2) and ``loss_cls_aux`` (:func:`~detcli.losses.defcn_loss.defcn_loss`)."""
        outputs = self(images)
        priors = self.priors(tuple(images.shape[-2:]), images.device)
        assignment = self.assign(outputs, priors, targets)
        matched = _matched_boxes(assignment, targets, priors.num)
        target_distances = self.encode_boxes(matched, priors)
        return defcn_loss(outputs.cls_logits, outputs.score_factor, outputs.bbox_reg, target_distances, assignment,
                          **self.loss_settings)

    # ------------------------------------------------------------------ weights
    def official_state_dict(self, checkpoint: Any) -> dict[str, Tensor]:
        """Weights of a DeFCN (cvpods) checkpoint (``{"model": state_dict, …}``, ``{"state_dict": …}`` or a bare
        state dict; cvpods' key names, renamed), or of a detcli-named state dict (returned as is)."""
        if not isinstance(checkpoint, Mapping):
            raise DetcliError(f"not a DeFCN (cvpods) checkpoint: expected a dict, found {type(checkpoint).__name__}")
        key = next((k for k in ("model", "state_dict") if isinstance(checkpoint.get(k), Mapping)), None)
        raw = checkpoint if key is None else checkpoint[key]
        return cvpods_to_detcli(tensor_state_dict(raw, "DeFCN (cvpods) checkpoint" + (f" '{key}'" if key else "")))

    def classes_in(self, state: Mapping[str, Tensor]) -> int | None:
        """C from ``head.cls_score``."""
        cls_conv = state.get("head.cls_score.weight")
        return None if cls_conv is None else int(cls_conv.shape[0])


def _matched_boxes(assignment: Assignment, targets: list[Target], n: int) -> Tensor:
    """(B, N, 4) the box of each prior's matched GT (zeros where not positive)."""
    b = len(targets)
    device = assignment.gt_inds.device
    out = torch.zeros((b, n, 4), dtype=torch.float32, device=device)
    pos = assignment.gt_inds > 0
    if bool(pos.any()):
        img, prior = pos.nonzero(as_tuple=True)
        offsets = torch.tensor([0] + [len(t.labels) for t in targets[:-1]], device=device).cumsum(0)
        gt_boxes = torch.cat([t.boxes.to(device).float() for t in targets])
        out[img, prior] = gt_boxes[offsets[img] + assignment.gt_inds[img, prior] - 1]
    return out

