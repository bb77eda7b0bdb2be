"""RetinaNet (Lin et al., "Focal Loss for Dense Object Detection", 2017) as in MMDetection 3.x.

``retinanet_r50_fpn_1x_coco``: ResNet (frozen stem + layer1, BN in eval mode) → FPN P3–P7 (P6 from C5)
→ shared RetinaHead; 9 anchors per location; MaxIoU 0.5/0.4 with low-quality matches; focal loss
(α 0.25, γ 2) + L1 on deltas, both divided by Σ_images max(#pos, 1); test: per level score > 0.05,
top 1000 (anchor, class) pairs, decode + clip, class-aware NMS 0.5, 100 detections.

Back to the original image, RetinaNet keeps :meth:`Detector.to_original`'s default: the inverse of the realised
resize factors (new_w / w, new_h / h, MMDetection's ``scale_factor``), clipped to the original image, is
MMDetection's rescale (clip to the resized ``img_shape``, divide by ``scale_factor``, no second clip) up to
float32 rounding (≤ 6.1e-5 px on ``tests/golden/e2e/retinanet-*.json``). MMDetection filters ``min_bbox_size`` and
runs NMS on the rescaled boxes, detcli on input pixels: the same for the official ``min_bbox_size=0`` (IoU does
not change under a per-axis scale); a size > 0 is in input pixels here, in original pixels there.

Parameter names equal MMDetection's state-dict keys (``backbone.*``, ``neck.*``, ``bbox_head.*``), so an
MMDetection checkpoint loads strictly with :meth:`RetinaNet.load_mmdet_state_dict`.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from detcli.assigners.assignment import Assignment
from detcli.assigners.max_iou import MaxIoUAssigner
from detcli.assigners.prior_fit import BELOW_IOU_THRESHOLD, PriorFit, anchor_fit
from detcli.config.schema import FocalLossConfig, InputConfig, RetinaNetConfig, TestConfig
from detcli.errors import DetcliError
from detcli.geometry.anchors import AnchorGenerator, overlap_candidates, padded_shape
from detcli.geometry.delta_xywh import DeltaXYWHCoder
from detcli.geometry.priors import point_priors
from detcli.losses.focal import focal_loss, l1_loss
from detcli.models.backbones.resnet import ResNet
from detcli.models.base import Detector, level_grid_sizes
from detcli.structures import HeadOutput, Priors
from detcli.models.convert import mmdet_class_names, tensor_state_dict
from detcli.models.heads.retina_head import RetinaHead
from detcli.models.necks.fpn import FPN
from detcli.postprocess import PostprocessConfig
from detcli.structures import ImageMeta, Target


class RetinaNet(Detector):
    """RetinaNet with a ResNet-18/50 FPN backbone, from its parts (:meth:`from_config` builds them from a preset).

    Args:
        backbone: :class:`ResNet` (C3–C5).
        neck: :class:`FPN` P3–P7 (P6 from C5).
        bbox_head: :class:`RetinaHead` with ``anchor_generator.num_base_anchors`` anchors per cell.
        anchor_generator: the anchors of the five levels (their strides are the model's).
        assigner: :class:`MaxIoUAssigner` (ignore boxes: ``Target.ignore_boxes``).
        loss: focal-loss α, γ and the two loss weights.
        postprocess: test-time settings (``predict``'s ``cfg`` overrides them; ``nms_pre`` per level, ≤ 0 keeps
            every candidate; ``min_bbox_size``: decoded, clipped boxes need width and height > this).
        size_divisor: the batch padding divisor (``input.size_divisor``); an image's own padded shape decides its
            valid anchors, so it must be the one the batches are padded with.
    """

    config_type = RetinaNetConfig
    display_name = RetinaNetConfig.display_name
    augment_type = RetinaNetConfig.augment_type
    ddp_find_unused_parameters = False  # every trainable parameter gets a gradient every step (checked)
    param_count_convention = "all"  # mmdet tools/analysis_tools/get_flops.py: every parameter of the model
    param_count_source = "MMDetection"
    flop_count_convention = "macs"  # mmdet get_flops counts one multiply-accumulate as one FLOP
    flop_count_source = "MMDetection"
    select_on_logits = True  # sigmoid scores: filter on the logits, sigmoid of the survivors only
    box_coding = ("DeltaXYWH (means 0, stds 1): K = 4 deltas dx, dy, dw, dh from the anchor box (x1, y1, x2, y2): "
                  "centre += size · (dx, dy), size ·= exp(dw, dh) with dw, dh clamped to ±4.135")

    def __init__(self, backbone: ResNet, neck: FPN, bbox_head: RetinaHead, anchor_generator: AnchorGenerator,
                 assigner: MaxIoUAssigner, loss: FocalLossConfig, postprocess: PostprocessConfig,
                 size_divisor: int) -> None:
        super().__init__()
        if len(anchor_generator.strides) != 5:
            raise ValueError(f"RetinaNet uses 5 levels (P3–P7); got {len(anchor_generator.strides)} anchor strides")
        self.num_classes = bbox_head.num_classes
        self.strides = anchor_generator.strides
        self.anchor_generator = anchor_generator
        self.coder = DeltaXYWHCoder()
        self.assigner = assigner
        self.loss_cfg = loss
        self.postprocess_cfg = postprocess
        self.size_divisor = size_divisor
        self.backbone = backbone
        self.neck = neck
        self.bbox_head = bbox_head
        self.backbone_init_message: str | None = None

    @classmethod
    def from_config(cls, cfg: RetinaNetConfig, num_classes: int, test: TestConfig | None = None,
                    input_cfg: InputConfig | None = None, backbone_weights: str | None = None) -> RetinaNet:
        """RetinaNet from a preset's ``model`` (``RetinaNetConfig``), ``test`` and ``input`` sections.

        ``test=None``: the schema's defaults; ``test.nms_pre=None`` keeps MMDetection's 1000 pairs per level,
        ``test.min_bbox_size=None`` its 0. ``input_cfg`` gives ``size_divisor`` (None: 32, the schema's default).
        ``backbone_weights``: None (random init), ``"imagenet"`` (local torchvision file in
        ``torch.hub.get_dir()/checkpoints``) or a path to a torchvision ResNet checkpoint; when it is missing,
        ``backbone_init_message`` says so and the backbone stays random.
        """
        anchors = AnchorGenerator(cfg.anchor.strides, cfg.anchor.ratios, cfg.anchor.octave_base_scale,
                                  cfg.anchor.scales_per_octave, center_offset=0.0)
        a = cfg.assigner
        assigner = MaxIoUAssigner(a.pos_iou_thr, a.neg_iou_thr, a.min_pos_iou, a.match_low_quality,
                                  a.gt_max_assign_all, a.ignore_iof_thr, a.ignore_wrt_candidates)
        backbone = ResNet(cfg.depth, cfg.frozen_stages, cfg.norm_eval)
        neck = FPN(backbone.out_channels, cfg.fpn_channels, num_extra=2)
        head = RetinaHead(num_classes, cfg.fpn_channels, anchors.num_base_anchors, cfg.fpn_channels,
                          cfg.stacked_convs)
        model = cls(backbone, neck, head, anchors, assigner, cfg.loss,
                    PostprocessConfig.from_test(test or TestConfig(), nms_pre=1000, min_bbox_size=0.0),
                    size_divisor=32 if input_cfg is None else input_cfg.size_divisor)
        model.backbone_init_message = backbone.load_imagenet(backbone_weights)
        return model

    @classmethod
    def strides_of(cls, cfg: RetinaNetConfig) -> tuple[int, ...]:
        return tuple(cfg.anchor.strides)

    @classmethod
    def assigner_description(cls, cfg: RetinaNetConfig) -> str:
        a = cfg.assigner
        return f"MaxIoUAssigner(pos={a.pos_iou_thr}, neg={a.neg_iou_thr}, min_pos={a.min_pos_iou})"

    # ------------------------------------------------------------------ graph
    def forward(self, images: Tensor) -> HeadOutput:
        """(B, 3, H, W) → class logits (B, N, C) and deltas (B, N, 4), N in MMDetection's order (level, y, x, a)."""
        cls_maps, reg_maps = self.forward_maps(images)
        return HeadOutput(_flatten_levels(cls_maps, self.num_classes), _flatten_levels(reg_maps, 4))

    def forward_maps(self, images: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Per-level maps as MMDetection's ``RetinaHead.forward``: (B, A·C, H_l, W_l) and (B, A·4, H_l, W_l)."""
        return self.bbox_head(self.neck(self.backbone(images)))

    def priors(self, image_size: tuple[int, int], device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32) -> Priors:
        """The A anchors of every cell of the ⌈H/s⌉ × ⌈W/s⌉ maps (the FPN's sizes, every stride-2 op rounds up),
        index ((y·W_l + x)·A + a) inside a level; ``points`` are the anchor centres (x·s, y·s)."""
        device = torch.device("cpu") if device is None else device  # AnchorGenerator wants one
        sizes = level_grid_sizes(image_size, self.strides)
        boxes = torch.cat(self.anchor_generator.grid_anchors(sizes, device=device, dtype=dtype))
        a = self.anchor_generator.num_base_anchors
        centres = point_priors(list(sizes), self.strides, offset=self.anchor_generator.center_offset,
                               device=device, dtype=dtype)
        return Priors.on_grid(centres.repeat_interleave(a, dim=0), boxes, sizes, a)

    def decode_boxes(self, outputs: HeadOutput, priors: Priors) -> Tensor:
        """DeltaXYWH deltas (B, N, 4) applied to the anchors → (B, N, 4) ``xyxy``, not clipped."""
        return self.coder.decode(priors.boxes.float(), outputs.bbox_reg.float())

    def encode_boxes(self, boxes: Tensor, priors: Priors) -> Tensor:
        """(B, N, 4) ``xyxy`` boxes → (B, N, 4) DeltaXYWH deltas from the anchors (the L1 targets)."""
        return self.coder.encode(priors.boxes, boxes)

    def decode_scores(self, outputs: HeadOutput) -> Tensor:
        """Sigmoid of every (anchor, class) logit, (B, N, C)."""
        return outputs.cls_logits.float().sigmoid()

    # ------------------------------------------------------------------ inspection
    assignment_predictions = None  # MaxIoU looks at anchors and GTs only

    @property
    def prior_fit_rule(self) -> str:
        return (f"an anchor with IoU ≥ {self.assigner.pos_iou_thr} (MaxIoU's positive threshold); the share of GTs "
                "that have one is the best possible recall (BPR)")

    def prior_fit(self, priors: Priors, gt_boxes: Tensor, meta: ImageMeta | None = None) -> PriorFit:
        """:func:`anchor_fit` on the anchors of the image's own padded area (those :meth:`assign` uses)."""
        anchors, boxes = priors.boxes, gt_boxes.to(priors.boxes.device)
        pad = padded_shape(meta.img_shape, self.size_divisor) if meta is not None else None
        used = overlap_candidates(self.anchor_generator, priors.level_sizes, boxes, pad)  # the others have IoU 0
        return anchor_fit(anchors[used], boxes, self.assigner.pos_iou_thr)

    def fit_advice(self, missed_wh: Tensor, reasons: Tensor) -> str:
        """Smaller missed boxes → a smaller ``octave_base_scale`` (the smallest anchor is base scale × the
        first stride); elongated ones → more ``ratios``; larger ones → a larger base scale; else a lower
        ``pos_iou_thr``. A square box of side s reaches IoU 0.5 with a concentric anchor of side ≤ s·√2."""
        gen = self.anchor_generator
        if missed_wh.numel() == 0 or not bool((reasons == BELOW_IOU_THRESHOLD).any()):
            return "nothing to change"
        side = missed_wh.float().prod(dim=1).sqrt()
        aspect = (missed_wh[:, 1] / missed_wh[:, 0].clamp(min=1e-6)).float()
        smallest = float(gen.scales[0]) * gen.strides[0]
        largest = float(gen.scales[-1]) * gen.strides[-1]
        ratios = gen.ratios
        elongated = (aspect > 1.5 * float(ratios.max())) | (aspect < float(ratios.min()) / 1.5)
        typical = float(side.median())
        if float((side < smallest).float().mean()) > 0.5:
            base = max(1.0, round(float(gen.scales[0]) * typical * 2 ** 0.5 / smallest, 1))
            return (f"--set model.anchor.octave_base_scale={base:g} (most missed GTs are about {typical:.0f} px, "
                    f"under the smallest anchor, {smallest:.0f} px)")
        if float(elongated.float().mean()) > 0.5:
            wider = sorted({round(float(r), 2) for r in ratios} | {round(float(aspect.median()), 2)})
            return (f"--set model.anchor.ratios=[{','.join(f'{r:g}' for r in wider)}] (most missed GTs have "
                    f"aspect ratio h/w ≈ {float(aspect.median()):.2f}, beyond the anchors' ratios)")
        if float((side > largest).float().mean()) > 0.5:
            base = round(float(gen.scales[0]) * typical / (largest * 2 ** 0.5), 1)
            return (f"--set model.anchor.octave_base_scale={base:g} (most missed GTs are about {typical:.0f} px, "
                    f"over the largest anchor, {largest:.0f} px)")
        return (f"--set model.assigner.pos_iou_thr={max(0.1, self.assigner.pos_iou_thr - 0.1):.1f} (missed GTs fall "
                "between anchor scales and positions)")

    # ------------------------------------------------------------------ training
    def assign(self, outputs: HeadOutput | None, priors: Priors, targets: list[Target],
               metas: list[ImageMeta] | None = None) -> Assignment:
        """MaxIoU of each image on the anchors of its own padded area (``metas[i].img_shape`` rounded up to
        ``size_divisor``; MMDetection drops the others first, they come out ignored with quality 0)."""
        anchors = priors.boxes
        b, n, device = len(targets), priors.num, anchors.device
        if metas:
            pad_shapes = [padded_shape(m.img_shape, self.size_divisor) for m in metas]
            valid = self.anchor_generator.valid_flags(priors.level_sizes, pad_shapes, device=device)  # (B, N)
        else:
            valid = torch.ones((b, n), dtype=torch.bool, device=device)
        gt_inds = torch.where(valid, 0, -1)  # valid anchors that can overlap no GT: background, IoU 0
        labels = torch.full((b, n), -1, dtype=torch.long, device=device)
        quality = torch.zeros((b, n), dtype=torch.float32, device=device)
        for i, t in enumerate(targets):
            boxes = t.boxes.to(device)
            ignore = boxes[:0] if t.ignore_boxes is None else t.ignore_boxes.to(device)
            # MaxIoU on the valid anchors that may overlap a GT or ignore box: the others have IoU 0 with every
            # GT, which makes them ``no_overlap_gt_ind`` (background, or ignored below a neg_iou_thr range) and
            # never a low-quality match (the > 0 guard), so the result is the same as on every valid anchor,
            # with (G, M) instead of (G, N) IoUs
            pad = padded_shape(metas[i].img_shape, self.size_divisor) if metas else None
            used = overlap_candidates(self.anchor_generator, priors.level_sizes, torch.cat([boxes, ignore]), pad)
            if len(boxes):
                gt_inds[i] = torch.where(valid[i], self.assigner.no_overlap_gt_ind, -1)
            res = self.assigner.assign(anchors[used], boxes, t.labels.to(device), ignore)
            gt_inds[i, used] = res.gt_inds
            labels[i, used] = res.labels
            quality[i, used] = res.quality.float()
        return Assignment(gt_inds, labels, quality)

    def loss(self, images: Tensor, targets: list[Target], metas: list[ImageMeta], epoch: int = 0) -> dict[str, Tensor]:
        """``loss_cls`` (focal) and ``loss_bbox`` (L1 on deltas), each / Σ_images max(#pos_i, 1).

        Args:
            images: (B, 3, H, W) padded batch; ``metas[i].img_shape`` gives image i's own size, from which its
                padded shape and valid anchors follow.
            targets: per image (G_i, 4) xyxy boxes and (G_i,) labels in input pixels.
        The normaliser is per process (no all-reduce across GPUs), as MMDetection.
        """
        outputs = self(images)
        priors = self.priors(tuple(images.shape[-2:]), images.device)
        gt_inds = self.assign(outputs, priors, targets, metas).gt_inds  # (B, N)
        anchors, device = priors.boxes, images.device
        gt_boxes = torch.cat([t.boxes.to(device).float() for t in targets]) if targets else anchors.new_zeros((0, 4))
        gt_labels = torch.cat([t.labels.to(device).long() for t in targets]) if targets else gt_inds.new_zeros(0)
        gt_offsets = torch.tensor([0] + [len(t.labels) for t in targets[:-1]], device=device).cumsum(0)

        pos = gt_inds > 0  # (B, N)
        used = gt_inds >= 0  # positives and negatives; ignored and invalid anchors drop out
        pos_img, pos_anchor = torch.nonzero(pos, as_tuple=True)
        pos_gt = gt_offsets[pos_img] + gt_inds[pos_img, pos_anchor] - 1
        avg_factor = pos.sum(dim=1).clamp(min=1).sum().float()

        logits = outputs.cls_logits[used]  # (M, C)
        onehot = torch.zeros_like(logits, dtype=torch.float32)
        pos_rows = (used.flatten().cumsum(0) - 1)[pos.flatten()]
        onehot[pos_rows, gt_labels[pos_gt]] = 1.0
        loss_cls = focal_loss(logits, onehot, avg_factor, self.loss_cfg.alpha, self.loss_cfg.gamma)

        deltas = outputs.bbox_reg[pos_img, pos_anchor]  # (P, 4)
        target_deltas = self.coder.encode(anchors[pos_anchor], gt_boxes[pos_gt])
        loss_bbox = l1_loss(deltas, target_deltas, avg_factor)
        return {"loss_cls": self.loss_cfg.cls_weight * loss_cls, "loss_bbox": self.loss_cfg.bbox_weight * loss_bbox}

    # ------------------------------------------------------------------ checkpoints
    def official_state_dict(self, checkpoint: Any) -> dict[str, Tensor]:
        """Weights of an MMDetection checkpoint (``{"state_dict": …, "meta": …}`` or a bare state dict); the
        key names already are this model's, less DataParallel's ``module.`` prefix."""
        if not isinstance(checkpoint, Mapping):
            raise DetcliError(f"not an MMDetection checkpoint: expected a dict, found {type(checkpoint).__name__}")
        sd = tensor_state_dict(checkpoint.get("state_dict", checkpoint), "MMDetection checkpoint 'state_dict'")
        return {k.removeprefix("module."): v for k, v in sd.items()}

    def official_class_names(self, checkpoint: Any) -> list[str] | None:
        """``meta.dataset_meta.classes`` (MMDetection 3.x) or ``meta.CLASSES`` (2.x), if recorded."""
        return mmdet_class_names(checkpoint)

    def classes_in(self, state: Mapping[str, Tensor]) -> int | None:
        """C from ``retina_cls``: A·C output channels."""
        cls_conv = state.get("bbox_head.retina_cls.weight")
        a = self.anchor_generator.num_base_anchors
        return None if cls_conv is None or cls_conv.shape[0] % a else int(cls_conv.shape[0]) // a

    def load_mmdet_state_dict(self, checkpoint: Any) -> None:
        """Load an MMDetection RetinaNet checkpoint strictly (:meth:`Detector.load_official_state_dict`).

        Raises:
            DetcliError: keys or shapes do not match this model (e.g. another depth or class count).
        """
        self.load_official_state_dict(checkpoint)


def _flatten_levels(maps: list[Tensor], per_anchor: int) -> Tensor:
    """Per-level (B, A·k, H, W) → (B, N, k), index (level, y, x, a) as in MMDetection.

    One copy of the maps, as a 2-D (A·k, H·W) → (H·W, A·k) transpose per image and level: PyTorch blocks
    that case for the cache (about 3× faster on CPU than copying the 4-D permuted view). Channels_last maps
    (the optimised inference model) already are (H·W, A·k) in memory: there the permute is a view and the
    concatenation the one copy. Under tracing (export) the batch size must stay symbolic, so there it is the
    plain permute + concatenation too.
    """
    if torch.jit.is_tracing() or maps[0].is_contiguous(memory_format=torch.channels_last):
        return torch.cat([m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, per_anchor) for m in maps], dim=1)
    b = maps[0].shape[0]
    counts = [m.shape[1] * m.shape[2] * m.shape[3] // per_anchor for m in maps]
    out = maps[0].new_empty((b, sum(counts), per_anchor))
    start = 0
    for m, count in zip(maps, counts):
        channels, cells = m.shape[1], m.shape[2] * m.shape[3]
        level = out.narrow(1, start, count)
        for i in range(b):
            level[i].view(cells, channels).copy_(m[i].reshape(channels, cells).t())
        start += count
    return out

