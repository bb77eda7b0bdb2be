"""RTMDet (Lyu et al., "RTMDet: An Empirical Study of Designing Real-Time Object Detectors", 2022) as in
MMDetection 3.x, ``configs/rtmdet/rtmdet_{tiny,s,m,l,x}_8xb32-300e_coco.py``.

CSPNeXt P5 → CSPNeXtPAFPN → RTMDetSepBNHead (shared convs, per-level BN, no Scale); point priors with offset 0
at strides 8/16/32; the head predicts side distances in pixels (``exp(·)·stride`` for m/l/x); training assigns
with the dynamic soft label assigner *with* its soft centre prior on the head's own detached predictions, then
QFL + 2 × GIoU, both divided by the sum of the IoU targets. Test: sigmoid scores > 0.001, the best 30000 pairs
per level, class-aware NMS 0.65, 300 per image; boxes clipped to the padded 640 × 640 ``img_shape`` and divided
by the resize's scale factor without a second clip (:meth:`RTMDet.to_original`).

Parameter names equal MMDetection's state-dict keys (``backbone.*``, ``neck.*``, ``bbox_head.*``), so an
MMDetection checkpoint loads strictly.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from detcli.assigners.assignment import Assignment
from detcli.assigners.dsl import DynamicSoftLabelAssigner
from detcli.assigners.prior_fit import PriorFit, point_fit
from detcli.config.schema import InputConfig, RTMDetConfig, RTMDetLossConfig, TestConfig
from detcli.errors import DetcliError
from detcli.losses.rtmdet_loss import rtmdet_loss
from detcli.models.backbones.cspnext import CSPNeXt, load_imagenet_weights
from detcli.models.base import flatten_levels
from detcli.structures import HeadOutput, Priors
from detcli.models.convert import mmdet_class_names, official_mmdet_state_dict
from detcli.models.heads.rtmdet_head import RTMDetSepBNHead
from detcli.models.point_detector import PointDetector
from detcli.models.necks.cspnext_pafpn import CSPNeXtPAFPN
from detcli.postprocess import PostprocessConfig
from detcli.structures import Detections, ImageMeta, Target

STRIDES = (8, 16, 32)


class RTMDet(PointDetector):
    """RTMDet-tiny/s/m/l/x, from its parts (:meth:`from_config` builds them from a preset).

    Args:
        backbone: :class:`CSPNeXt` P5 of the preset's deepen / widen factors.
        neck: :class:`CSPNeXtPAFPN`, output width = head width.
        bbox_head: :class:`RTMDetSepBNHead` at strides 8, 16, 32.
        assigner: DSLA with the soft centre prior (official topk 13, iou_factor 3.0, soft_center_radius 3.0).
        loss: QFL and GIoU weights and QFL's β (official 1.0, 2.0, 2.0).
        postprocess: test-time settings (the official ``test_cfg``: > 0.001, 30000 per level, NMS 0.65, 300).
    """

    config_type = RTMDetConfig
    display_name = RTMDetConfig.display_name
    augment_type = RTMDetConfig.augment_type
    ddp_find_unused_parameters = False  # every parameter takes part in every loss
    param_count_convention = "all"  # mmdet get_flops: every parameter, BN included, shared convs once
    param_count_source = "MMDetection"
    flop_count_convention = "macs"  # RTMDet's README "FLOPs" column: multiply-accumulates
    flop_count_source = "MMDetection"
    select_on_logits = True  # sigmoid scores: filter on the logits, sigmoid of the survivors only
    assignment_predictions = "the head's own predictions (as in training)"
    box_coding = ("distance: K = 4 side distances l, t, r, b in input pixels (the head's exp(·)·stride or "
                  "·stride already applied); box = (x - l, y - t, x + r, y + b) at the prior point")
    prior_fit_rule = ("a prior point strictly inside the box (the assigner's candidates); the distance coding has "
                      "no range limit")

    prior_offset = 0.0  # MMDetection's ``MlvlPointGenerator(offset=0)``: cell top-left corners

    def __init__(self, backbone: CSPNeXt, neck: CSPNeXtPAFPN, bbox_head: RTMDetSepBNHead,
                 assigner: DynamicSoftLabelAssigner, loss: RTMDetLossConfig, postprocess: PostprocessConfig) -> None:
        super().__init__()
        self.num_classes = bbox_head.num_classes
        self.strides = bbox_head.strides
        self.assigner = assigner
        self.loss_settings = loss.model_dump()  # qfl_weight, giou_weight, qfl_beta
        self.postprocess_cfg = postprocess
        self.backbone = backbone
        self.neck = neck
        self.bbox_head = bbox_head
        self.backbone_init_message: str | None = None

    @classmethod
    def from_config(cls, cfg: RTMDetConfig, num_classes: int, test: TestConfig | None = None,
                    input_cfg: InputConfig | None = None, backbone_weights: str | None = None) -> RTMDet:
        """RTMDet from a preset's ``model`` (``RTMDetConfig``) and ``test`` sections (``test=None``: the schema's
        defaults; ``test.nms_pre=None`` keeps MMDetection's 30000 pairs per level, ``test.min_bbox_size=None``
        its 0). Every prior takes part in training, so nothing of ``input_cfg`` is needed.

        ``backbone_weights``: None = random init (Kaiming uniform, as the official init_cfg); ``"imagenet"`` or a
        path: see :func:`~detcli.models.backbones.cspnext.load_imagenet_weights`.
        """
        a = cfg.assigner
        assigner = DynamicSoftLabelAssigner(topk=a.topk, iou_factor=a.iou_factor,
                                            soft_center_radius=a.soft_center_radius)
        backbone = CSPNeXt(cfg.deepen_factor, cfg.widen_factor)
        neck = CSPNeXtPAFPN(backbone.out_channels, cfg.neck_channels, cfg.num_csp_blocks)
        head = RTMDetSepBNHead(num_classes, cfg.neck_channels, cfg.neck_channels, cfg.stacked_convs,
                               cls.strides_of(cfg), cfg.exp_on_reg)
        model = cls(backbone, neck, head, assigner, cfg.loss,
                    PostprocessConfig.from_test(test or TestConfig(), nms_pre=30000, min_bbox_size=0.0))
        if backbone_weights is not None:
            model.backbone_init_message = load_imagenet_weights(backbone, backbone_weights)
        return model

    @classmethod
    def strides_of(cls, cfg: RTMDetConfig) -> tuple[int, ...]:
        return STRIDES

    @classmethod
    def assigner_description(cls, cfg: RTMDetConfig) -> str:
        a = cfg.assigner
        return (f"DynamicSoftLabelAssigner(topk={a.topk}, iou_factor={a.iou_factor}, "
                f"soft_center_radius={a.soft_center_radius}) on the head's own predictions")

    # ------------------------------------------------------------------ inference graph
    def forward(self, images: Tensor) -> HeadOutput:
        """(B, 3, H, W) → class logits (B, N, C) and side distances in pixels (B, N, 4), N = Σ H_l·W_l in
        level, y, x order (MMDetection's flattening)."""
        cls_maps, reg_maps = self.forward_maps(images)
        return HeadOutput(flatten_levels(cls_maps), flatten_levels(reg_maps))

    def forward_maps(self, images: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Per-level maps as MMDetection's ``RTMDetSepBNHead.forward``: (B, C, H_l, W_l) and (B, 4, H_l, W_l)."""
        return self.bbox_head(self.neck(self.backbone(images)))

    def decode_scores(self, outputs: HeadOutput) -> Tensor:
        """Sigmoid of every class logit, (B, N, C)."""
        return outputs.cls_logits.sigmoid()

    to_original_rule = "unclipped"

    def to_original(self, det: Detections, meta: ImageMeta) -> Detections:
        """MMDetection's ``_bbox_post_process(rescale=True)``: the boxes, already clipped to ``img_shape`` (the test
        ``Pad`` makes it the padded 640 × 640), are multiplied by ``1 / scale_factor`` in float32 and *not* clipped
        to the original image again, so a box that reaches into the padding reaches beyond the original image as
        the official one does.

        ``scale_factor`` is the test ``Resize``'s realised ``(new_w / w, new_h / h)``, the diagonal of
        ``meta.warp_matrix``. A matrix that is not a pure scaling (not this family's test pipeline) takes the
        default rule.

        Args:
            det: boxes (K, 4) xyxy in input pixels, clipped to ``meta.img_shape``.
            meta: the image's ``warp_matrix`` (original → input).
        Returns:
            (K, 4) float32 boxes in original pixels, same scores, labels and order.
        """
        m = [[float(v) for v in row] for row in meta.warp_matrix]
        if (m[0][1], m[0][2], m[1][0], m[1][2], m[2][0], m[2][1], m[2][2]) != (0, 0, 0, 0, 0, 0, 1):
            return super().to_original(det, meta)
        # as mmdet.structures.bbox.scale_boxes: Python's 1 / s, then one float32 multiplication
        inverse = det.boxes.new_tensor([1 / m[0][0], 1 / m[1][1]], dtype=torch.float32).repeat(2)
        return Detections(boxes=det.boxes.float() * inverse, scores=det.scores, labels=det.labels)

    # ------------------------------------------------------------------ inspection
    def prior_fit(self, priors: Priors, gt_boxes: Tensor, meta: ImageMeta | None = None) -> PriorFit:
        """:func:`point_fit` without a range limit (the distances are not bounded)."""
        return point_fit(priors.points, gt_boxes.to(priors.points.device), max_distance=None)

    # ------------------------------------------------------------------ training graph
    def assign(self, outputs: HeadOutput, priors: Priors, targets: list[Target],
               metas: list[ImageMeta] | None = None) -> Assignment:
        """DSLA with the soft centre prior, every image at once, on ``outputs``' detached class logits and decoded
        boxes (in training the head's own, official ``RTMDetHead.get_targets``). Every prior takes part
        (``allowed_border=-1``; the official pipelines pad every image to the input size), so ``metas`` are
        not needed."""
        boxes = self.decode_boxes(outputs, priors)
        return self.assigner.assign_batch(
            outputs.cls_logits.detach().float(), priors.points, boxes.detach().float(),
            [t.boxes for t in targets], [t.labels for t in targets],
        )

    def loss(self, images: Tensor, targets: list[Target], metas: list[ImageMeta], epoch: int = 0) -> dict[str, Tensor]:
        """``loss_cls`` (QFL) and ``loss_bbox`` (GIoU), weighted, on the assignment of this forward's predictions
        (:func:`~detcli.losses.rtmdet_loss.rtmdet_loss`)."""
        outputs = self(images)
        priors = self.priors(tuple(images.shape[-2:]), images.device)
        assignment = self.assign(outputs, priors, targets)
        boxes = self.decode_boxes(outputs, priors)
        return rtmdet_loss(outputs.cls_logits, boxes, assignment, targets, **self.loss_settings)

    # ------------------------------------------------------------------ weights
    def official_state_dict(self, checkpoint: Any) -> dict[str, Tensor]:
        """Weights of an MMDetection RTMDet checkpoint (:func:`~detcli.models.convert.official_mmdet_state_dict`:
        ``state_dict``, which holds the EMA weights), under this model's key names (MMDetection's).

        Raises:
            DetcliError: another layout, or head convs that differ between levels (not a shared-conv head).
        """
        state = official_mmdet_state_dict(checkpoint)
        for key, value in state.items():
            shared = _level0_key(key)
            if shared != key and shared in state and not torch.equal(value, state[shared]):
                raise DetcliError(f"{key} differs from {shared}: RTMDetSepBNHead shares its tower convs across "
                                  "levels (share_conv=True), this checkpoint does not")
        return state

    def official_class_names(self, checkpoint: Any) -> list[str] | None:
        """``meta.dataset_meta.classes`` (MMDetection 3.x) or ``meta.CLASSES`` (2.x), if recorded."""
        return mmdet_class_names(checkpoint)

    def classes_in(self, state: Mapping[str, Tensor]) -> int | None:
        """C from the first level's ``rtm_cls`` conv."""
        cls_conv = state.get("bbox_head.rtm_cls.0.weight")
        return None if cls_conv is None else int(cls_conv.shape[0])


def _level0_key(key: str) -> str:
    """The level-0 key of a shared head conv (``bbox_head.cls_convs.2.0.conv.weight`` →
    ``bbox_head.cls_convs.0.0.conv.weight``); any other key unchanged."""
    parts = key.split(".")
    if len(parts) == 6 and parts[0] == "bbox_head" and parts[1] in ("cls_convs", "reg_convs") and parts[4] == "conv":
        parts[2] = "0"
    return ".".join(parts)

