"""RetinaNet (Lin et al., "Focal Loss for Dense Object Detection", 2017) as in MMDetection 3.x.

``retinanet_r50_fpn_1x_coco``: ResNet (frozen stem + layer1, BN in eval mode) → FPN P3–P7 (P6 from C5)
→ shared RetinaHead; 9 anchors per location; MaxIoU 0.5/0.4 with low-quality matches; focal loss
(α 0.25, γ 2) + L1 on deltas, both divided by Σ_images max(#pos, 1); test: per level score > 0.05,
top 1000 (anchor, class) pairs, decode + clip, class-aware NMS 0.5, 100 detections.

Parameter names equal MMDetection's state-dict keys (``backbone.*``, ``neck.*``, ``bbox_head.*``), so an
MMDetection checkpoint loads strictly with :meth:`RetinaNet.load_mmdet_state_dict`.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

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
from detcli.models.convert import mmdet_class_names, tensor_state_dict
from detcli.models.heads.retina_head import RetinaHead
from detcli.models.necks.fpn import FPN
from detcli.structures import Detections, ImageMeta, Target

if TYPE_CHECKING:
    from detcli.config.schema import RetinaNetConfig, TestConfig


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
        min_bbox_size: decoded, clipped boxes need width and height > this to survive (mmdet test_cfg: 0).
        size_divisor: the batch padding divisor; an image's own padded shape decides its valid anchors.
        backbone_weights: None (random init), ``"imagenet"`` (local torchvision file in
            ``torch.hub.get_dir()/checkpoints``) or a path to a torchvision ResNet checkpoint.
            If it is missing, ``backbone_init_message`` says so and the backbone stays random.
    """

    ddp_find_unused_parameters = False  # every trainable parameter gets a gradient every step (checked)
    param_count_convention = "all"  # mmdet tools/analysis_tools/get_flops.py: every parameter of the model
    param_count_source = "MMDetection"

    # predict: above this many pre-selected pairs per (image · nms_pre), a dense top-k beats the sparse path
    dense_topk_factor: float = 8.0

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
        min_bbox_size: float = 0.0,
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
        self.min_bbox_size = min_bbox_size
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
        """``loss_cls`` (focal) and ``loss_bbox`` (L1 on deltas), each / Σ_images max(#pos_i, 1).

        Args:
            images: (B, 3, H, W) padded batch; ``metas[i].img_shape`` gives image i's own size, from which its
                padded shape and valid anchors follow.
            targets: per image (G_i, 4) xyxy boxes and (G_i,) labels in input pixels.
        The normaliser is per process (no all-reduce across GPUs), as MMDetection.
        """
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
        decode, clip to each image's ``img_shape``, drop boxes of size ≤ ``min_bbox_size``, class-aware NMS
        (one ``batched_nms`` call for the batch, groups = (image, class)), keep ``max_det`` per image."""
        score_thr = self.score_thr if score_thr is None else score_thr
        iou_thr = self.iou_thr if iou_thr is None else iou_thr
        max_det = self.max_det if max_det is None else max_det
        cls_scores, bbox_preds = self(images)
        _, level_anchors = self._anchors(cls_scores)
        b, c = images.shape[0], self.num_classes

        parts = [self._level_candidates(*lvl, score_thr) for lvl in zip(cls_scores, bbox_preds, level_anchors)]
        img_idx, labels, scores, priors, deltas = (torch.cat(t) for t in zip(*parts))
        img_hw = torch.tensor([m.img_shape for m in metas], device=scores.device, dtype=torch.float32)
        boxes = self.coder.decode(priors, deltas, max_shape=img_hw[img_idx])  # (K, 4)
        # min_bbox_size=0 of the mmdet test_cfg: boxes clipped to zero width/height are dropped before NMS
        keep = ((boxes[:, 2:] - boxes[:, :2]) > self.min_bbox_size).all(dim=1)
        img_idx, labels, scores, boxes = img_idx[keep], labels[keep], scores[keep], boxes[keep]
        kept = batched_nms(boxes, scores, img_idx * c + labels, iou_thr)  # sorted by score
        kept_img = img_idx[kept]
        out = []
        for i in range(b):
            sel = kept[kept_img == i][:max_det]
            out.append(Detections(boxes[sel], scores[sel], labels[sel]))
        return out

    def _level_candidates(
        self, cls_map: Tensor, reg_map: Tensor, anchors: Tensor, score_thr: float
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(anchor, class) pairs of one level with score > ``score_thr``, at most ``nms_pre`` per image
        (MMDetection ``filter_scores_and_topk``: threshold first, then the best ``nms_pre``).

        Works on the raw (B, A·C, H, W) logits without a permuted copy or a sigmoid of every pair. Few
        survivors of the threshold (the usual case): select them on the logit (sigmoid is monotonic; small
        margin, then the exact ``sigmoid > thr`` test) and rank them per image. Many survivors: a dense
        per-image top-``nms_pre`` on the logits, then the threshold — the same set, cheaper.
        Returns, over the K candidates: image index (K,), class (K,), score (K,), prior (K, 4), deltas (K, 4).
        """
        c, a = self.num_classes, self.anchor_generator.num_base_anchors
        b, _, h, w = cls_map.shape
        k = self.nms_pre if self.nms_pre > 0 else cls_map[0].numel()
        if score_thr <= 0:
            pre = torch.ones_like(cls_map, dtype=torch.bool)
        elif score_thr >= 1:
            pre = torch.zeros_like(cls_map, dtype=torch.bool)
        else:
            pre = cls_map > math.log(score_thr / (1 - score_thr)) - 1e-3
        n_pre = int(pre.count_nonzero())
        if n_pre > self.dense_topk_factor * k * b:
            top, flat = cls_map.reshape(b, -1).topk(min(k, cls_map[0].numel()), dim=1)
            score = top.float().sigmoid()
            ok = score > score_thr
            img = torch.arange(b, device=flat.device)[:, None].expand_as(flat)[ok]
            flat, score = flat[ok], score[ok]
            ch, y, x = flat // (h * w), flat % (h * w) // w, flat % w
        else:
            img, ch, y, x = torch.nonzero(pre, as_tuple=True)
            score = cls_map[img, ch, y, x].float().sigmoid()
            ok = score > score_thr
            img, ch, y, x, score = img[ok], ch[ok], y[ok], x[ok], score[ok]
            # rank inside each image: sort by score (descending), then stably by image
            order = torch.argsort(score, descending=True, stable=True)
            order = order[torch.argsort(img[order], stable=True)]
            counts = torch.bincount(img, minlength=b)
            rank = torch.arange(len(order), device=order.device) - (counts.cumsum(0) - counts)[img[order]]
            order = order[rank < k]
            img, ch, y, x, score = img[order], ch[order], y[order], x[order], score[order]
        anchor_in_cell = ch // c
        prior = anchors[(y * w + x) * a + anchor_in_cell]
        reg_ch = anchor_in_cell[:, None] * 4 + torch.arange(4, device=ch.device)
        delta = reg_map[img[:, None], reg_ch, y[:, None], x[:, None]].float()
        return img, ch % c, score, prior, delta

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


def build_retinanet(cfg: "RetinaNetConfig", test: "TestConfig", num_classes: int, backbone_weights: str | None) -> RetinaNet:
    """RetinaNet from a validated preset's ``model`` (``RetinaNetConfig``) and ``test`` sections.

    ``test.nms_pre=None`` keeps MMDetection's 1000 pairs per level.
    """
    return RetinaNet(
        num_classes=num_classes,
        depth=cfg.depth,
        frozen_stages=cfg.frozen_stages,
        norm_eval=cfg.norm_eval,
        fpn_channels=cfg.fpn_channels,
        feat_channels=cfg.fpn_channels,
        stacked_convs=cfg.stacked_convs,
        anchor_strides=tuple(cfg.anchor.strides),
        anchor_ratios=tuple(cfg.anchor.ratios),
        octave_base_scale=cfg.anchor.octave_base_scale,
        scales_per_octave=cfg.anchor.scales_per_octave,
        pos_iou_thr=cfg.assigner.pos_iou_thr,
        neg_iou_thr=cfg.assigner.neg_iou_thr,
        min_pos_iou=cfg.assigner.min_pos_iou,
        focal_alpha=cfg.loss.alpha,
        focal_gamma=cfg.loss.gamma,
        loss_cls_weight=cfg.loss.cls_weight,
        loss_bbox_weight=cfg.loss.bbox_weight,
        score_thr=test.score_thr,
        nms_pre=1000 if test.nms_pre is None else test.nms_pre,
        iou_thr=test.iou_thr,
        max_det=test.max_det,
        backbone_weights=backbone_weights,
    )
