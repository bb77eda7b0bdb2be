"""RetinaNet (Lin et al., "Focal Loss for Dense Object Detection", 2017) as in MMDetection 3.x.

``retinanet_r50_fpn_1x_coco``: ResNet (frozen stem + layer1, BN in eval mode) → FPN P3–P7 (P6 from C5)
→ shared RetinaHead; 9 anchors per location; MaxIoU 0.5/0.4 with low-quality matches; focal loss
(α 0.25, γ 2) + L1 on deltas, both divided by Σ_images max(#pos, 1); test: per level score > 0.05,
top 1000 (anchor, class) pairs, decode + clip, class-aware NMS 0.5, 100 detections.

Parameter names equal MMDetection's state-dict keys (``backbone.*``, ``neck.*``, ``bbox_head.*``), so an
MMDetection checkpoint loads strictly with :meth:`RetinaNet.load_mmdet_state_dict`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from detcli.assigners.max_iou import MaxIoUAssigner
from detcli.errors import DetcliError
from detcli.geometry.anchors import AnchorGenerator, padded_shape
from detcli.geometry.delta_xywh import DeltaXYWHCoder
from detcli.losses.focal import focal_loss, l1_loss
from detcli.models.backbones.resnet import ResNet
from detcli.models.base import Detector
from detcli.models.heads.retina_head import RetinaHead
from detcli.models.necks.fpn import FPN
from detcli.structures import Detections, ImageMeta, Target


class RetinaNet(Detector):
    """RetinaNet with a ResNet-18/50 FPN backbone.

    Args:
        num_classes: number of foreground classes C.
        depth: ResNet depth, 18 or 50.
        frozen_stages, norm_eval: see :class:`ResNet`.
        fpn_channels: FPN width (also the head's input width).
        feat_channels, stacked_convs: head tower width and depth.
        anchor_strides, anchor_ratios, octave_base_scale, scales_per_octave: see :class:`AnchorGenerator`.
        pos_iou_thr, neg_iou_thr, min_pos_iou, match_low_quality, gt_max_assign_all: see :class:`MaxIoUAssigner`.
        focal_alpha, focal_gamma: focal-loss parameters.
        loss_cls_weight, loss_bbox_weight: loss weights.
        score_thr, nms_pre, iou_thr, max_det: test-time defaults (``predict`` arguments override the first,
            third and fourth; ``nms_pre`` ≤ 0 keeps every candidate).
        size_divisor: the batch padding divisor; an image's own padded shape decides its valid anchors.
        backbone_weights: None (random init), ``"imagenet"`` (local torchvision file in
            ``torch.hub.get_dir()/checkpoints``) or a path to a torchvision ResNet checkpoint.
            If it is missing, ``backbone_init_message`` says so and the backbone stays random.
    """

    def __init__(
        self,
        num_classes: int = 80,
        depth: int = 50,
        frozen_stages: int = 1,
        norm_eval: bool = True,
        fpn_channels: int = 256,
        feat_channels: int = 256,
        stacked_convs: int = 4,
        anchor_strides: Sequence[int] = (8, 16, 32, 64, 128),
        anchor_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        octave_base_scale: float = 4,
        scales_per_octave: int = 3,
        pos_iou_thr: float = 0.5,
        neg_iou_thr: float = 0.4,
        min_pos_iou: float = 0.0,
        match_low_quality: bool = True,
        gt_max_assign_all: bool = True,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        loss_cls_weight: float = 1.0,
        loss_bbox_weight: float = 1.0,
        score_thr: float = 0.05,
        nms_pre: int = 1000,
        iou_thr: float = 0.5,
        max_det: int = 100,
        size_divisor: int = 32,
        backbone_weights: str | None = None,
    ) -> None:
        super().__init__()
        if len(anchor_strides) != 5:
            raise ValueError(f"RetinaNet uses 5 levels (P3–P7); got {len(anchor_strides)} anchor strides")
        self.num_classes = num_classes
        self.strides = tuple(int(s) for s in anchor_strides)
        self.anchor_generator = AnchorGenerator(
            anchor_strides, anchor_ratios, octave_base_scale, scales_per_octave, center_offset=0.0
        )
        self.coder = DeltaXYWHCoder()
        self.assigner = MaxIoUAssigner(pos_iou_thr, neg_iou_thr, min_pos_iou, match_low_quality, gt_max_assign_all)
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.loss_cls_weight, self.loss_bbox_weight = loss_cls_weight, loss_bbox_weight
        self.score_thr, self.nms_pre, self.iou_thr, self.max_det = score_thr, nms_pre, iou_thr, max_det
        self.size_divisor = size_divisor

        self.backbone = ResNet(depth, frozen_stages, norm_eval)
        self.neck = FPN(self.backbone.out_channels, fpn_channels, num_extra=2)
        self.bbox_head = RetinaHead(
            num_classes, fpn_channels, self.anchor_generator.num_base_anchors, feat_channels, stacked_convs
        )
        self.backbone_init_message: str | None = self.backbone.load_imagenet(backbone_weights)

    # ------------------------------------------------------------------ graph
    def forward(self, images: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """(B, 3, H, W) → (cls_scores, bbox_preds): per level (B, A·C, H_l, W_l) and (B, A·4, H_l, W_l)."""
        return self.bbox_head(self.neck(self.backbone(images)))

    def _flat(self, maps: list[Tensor], per_anchor: int) -> Tensor:
        """Per-level (B, A·k, H, W) → (B, N, k), index (level, y, x, a) as in MMDetection."""
        b = maps[0].shape[0]
        return torch.cat([m.permute(0, 2, 3, 1).reshape(b, -1, per_anchor) for m in maps], dim=1)

    def _anchors(self, cls_scores: list[Tensor]) -> tuple[list[tuple[int, int]], list[Tensor]]:
        sizes = [(int(c.shape[-2]), int(c.shape[-1])) for c in cls_scores]
        return sizes, self.anchor_generator.grid_anchors(sizes, device=cls_scores[0].device)

    # ------------------------------------------------------------------ training
    def loss(self, images: Tensor, targets: list[Target], metas: list[ImageMeta], epoch: int = 0) -> dict[str, Tensor]:
        """``loss_cls`` (focal) and ``loss_bbox`` (L1 on deltas), each / Σ_images max(#pos_i, 1)."""
        cls_scores, bbox_preds = self(images)
        device, b, c = images.device, images.shape[0], self.num_classes
        sizes, level_anchors = self._anchors(cls_scores)
        anchors = torch.cat(level_anchors)  # (N, 4)
        n = anchors.shape[0]
        pad_shapes = [padded_shape(m.img_shape, self.size_divisor) for m in metas]
        valid = self.anchor_generator.valid_flags(sizes, pad_shapes, device=device)  # (B, N)

        # assignment per image on that image's valid anchors (MMDetection drops the others first)
        gt_inds = torch.full((b, n), -1, dtype=torch.long, device=device)
        for i, t in enumerate(targets):
            res = self.assigner.assign(anchors[valid[i]], t.boxes.to(device), t.labels.to(device))
            gt_inds[i, valid[i]] = res.gt_inds
        gt_boxes = torch.cat([t.boxes.to(device).float() for t in targets]) if targets else anchors.new_zeros((0, 4))
        gt_labels = torch.cat([t.labels.to(device).long() for t in targets]) if targets else gt_inds.new_zeros(0)
        gt_offsets = torch.tensor([0] + [len(t.labels) for t in targets[:-1]], device=device).cumsum(0)

        pos = gt_inds > 0  # (B, N)
        used = gt_inds >= 0  # positives and negatives; ignored and invalid anchors drop out
        pos_img, pos_anchor = torch.nonzero(pos, as_tuple=True)
        pos_gt = gt_offsets[pos_img] + gt_inds[pos_img, pos_anchor] - 1
        avg_factor = pos.sum(dim=1).clamp(min=1).sum().float()

        logits = self._flat(cls_scores, c)[used]  # (M, C)
        onehot = torch.zeros_like(logits, dtype=torch.float32)
        pos_rows = (used.flatten().cumsum(0) - 1)[pos.flatten()]
        onehot[pos_rows, gt_labels[pos_gt]] = 1.0
        loss_cls = focal_loss(logits, onehot, avg_factor, self.focal_alpha, self.focal_gamma)

        deltas = self._flat(bbox_preds, 4)[pos_img, pos_anchor]  # (P, 4)
        target_deltas = self.coder.encode(anchors[pos_anchor], gt_boxes[pos_gt])
        loss_bbox = l1_loss(deltas, target_deltas, avg_factor)
        return {"loss_cls": self.loss_cls_weight * loss_cls, "loss_bbox": self.loss_bbox_weight * loss_bbox}

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict(
        self,
        images: Tensor,
        metas: list[ImageMeta],
        score_thr: float | None = None,
        iou_thr: float | None = None,
        max_det: int | None = None,
    ) -> list[Detections]:
        """Per level: sigmoid, drop scores ≤ score_thr, keep the top ``nms_pre`` (anchor, class) pairs;
        decode, clip to each image's ``img_shape``, class-aware NMS, keep ``max_det``."""
        score_thr = self.score_thr if score_thr is None else score_thr
        iou_thr = self.iou_thr if iou_thr is None else iou_thr
        max_det = self.max_det if max_det is None else max_det
        cls_scores, bbox_preds = self(images)
        _, level_anchors = self._anchors(cls_scores)
        b, c = images.shape[0], self.num_classes

        scores, labels, priors, deltas = [], [], [], []
        for cls_map, reg_map, anchors in zip(cls_scores, bbox_preds, level_anchors):
            s = cls_map.permute(0, 2, 3, 1).reshape(b, -1).float().sigmoid()  # (B, N_l·C)
            s = s.masked_fill(s <= score_thr, -1.0)
            k = s.shape[1] if self.nms_pre <= 0 else min(self.nms_pre, s.shape[1])
            top, idx = s.topk(k, dim=1)  # scores above the threshold come first
            anchor_idx = idx // c
            reg = reg_map.permute(0, 2, 3, 1).reshape(b, -1, 4).float()
            deltas.append(torch.gather(reg, 1, anchor_idx[..., None].expand(-1, -1, 4)))
            priors.append(anchors[anchor_idx])
            scores.append(top)
            labels.append(idx % c)
        scores, labels = torch.cat(scores, 1), torch.cat(labels, 1)
        img_hw = torch.tensor([m.img_shape for m in metas], device=scores.device)
        boxes = self.coder.decode(torch.cat(priors, 1), torch.cat(deltas, 1), max_shape=img_hw)  # (B, K, 4)

        keep = scores > score_thr  # (B, K)
        img_idx, _ = torch.nonzero(keep, as_tuple=True)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        kept = batched_nms(boxes, scores, img_idx * c + labels, iou_thr)  # sorted by score
        kept_img = img_idx[kept]
        out = []
        for i in range(b):
            sel = kept[kept_img == i][:max_det]
            out.append(Detections(boxes[sel], scores[sel], labels[sel]))
        return out

    # ------------------------------------------------------------------ checkpoints
    def load_mmdet_state_dict(self, checkpoint: Mapping[str, object]) -> None:
        """Load an MMDetection RetinaNet checkpoint (``{"state_dict": …, "meta": …}`` or a bare state dict) strictly.

        Raises:
            DetcliError: keys or shapes do not match this model (e.g. another depth or class count).
        """
        sd = checkpoint.get("state_dict", checkpoint)
        if not isinstance(sd, Mapping):
            raise DetcliError("MMDetection checkpoint has no 'state_dict' mapping")
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
        own = self.state_dict()
        missing = sorted(set(own) - set(sd))
        unexpected = sorted(set(sd) - set(own))
        wrong = sorted(k for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(sd[k].shape))
        if missing or unexpected or wrong:
            parts = []
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong)):
                if keys:
                    parts.append(f"{what} ({len(keys)}): {', '.join(keys[:5])}{' …' if len(keys) > 5 else ''}")
            raise DetcliError("MMDetection checkpoint does not match this RetinaNet — " + "; ".join(parts))
        self.load_state_dict(sd, strict=True)

