"""The contract every detector family implements; nothing outside ``detcli/models`` needs to know the family.

One pass through a detector, the same for every family::

    outputs = model(images)                              # HeadOutput: (B, N, C) logits, (B, N, K) box regression
    priors = model.priors((H, W))                        # Priors: the N priors, without running the network
    boxes, scores = model.decode(outputs, priors)        # (B, N, 4) xyxy input pixels, (B, N, C) probabilities
    assignment = model.assign(outputs, priors, targets)  # Assignment: (B, N) matched GT / background / ignored
    detections = model.predict(images, metas)            # forward → decode → clip → shared postprocess

Inspection (``detcli inspect-anchors``) uses the same pieces plus two: ``assignment_outputs`` (the predictions
training's assigner looks at, None for anchor-IoU assigners) and ``prior_fit`` (can the priors represent a GT at
all: the anchor-fit check).

N runs over the priors level after level (fine → coarse), row-major inside a level (``y`` outer, ``x``
inner), and for anchor families over the A anchors of a cell last (MMDetection's order: level, y, x, anchor).
Row ``n`` of every (B, N, ·) tensor belongs to prior ``n``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from detcli.assigners.assignment import Assignment
from detcli.assigners.prior_fit import PriorFit
from detcli.data.transforms.common import inverse_warp_boxes
from detcli.errors import DetcliError
from detcli.postprocess import PostprocessConfig, clip_boxes, image_limits, postprocess
from detcli.structures import Decoded, Detections, HeadOutput, ImageMeta, Priors, Target


def level_grid_sizes(image_size: tuple[int, int], strides: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """Feature-map sizes ``(⌈H/s⌉, ⌈W/s⌉)`` of an (H, W) input: every stride-2 conv and pool of the
    backbones and necks here uses padding k//2, which rounds up."""
    h, w = int(image_size[0]), int(image_size[1])
    return tuple((-(-h // s), -(-w // s)) for s in strides)


def flatten_levels(maps: list[Tensor]) -> Tensor:
    """Per-level (B, k, H, W) maps → (B, Σ H·W, k), index (level, y, x): the prior order of one-prior-per-cell
    heads (MMDetection's and cvpods' flattening)."""
    return torch.cat([m.permute(0, 2, 3, 1).flatten(1, 2) for m in maps], dim=1)


class Detector(nn.Module, ABC):
    """A one-stage detector (see the module docstring for the shared pass).

    ``forward`` is the inference graph only (what parity checks and export compare); ``loss`` runs the training
    graph (it may use modules that ``forward`` never touches, e.g. NanoDet-Plus' AGM).

    Attributes:
        strides: level strides in input pixels.
        num_classes: C.
        postprocess_cfg: the preset's test-time settings (score filter, top-k, NMS, max detections).
        box_coding: how ``bbox_reg`` turns into boxes, in words (written into raw exports for their users).
        select_on_logits: True when scores are ``sigmoid(cls_logits)`` and the postprocess may filter the logits
            and take the sigmoid of the survivors only (RetinaNet; exact, the sigmoid is monotonic). False:
            :meth:`decode_scores` runs on every pair first (NanoDet-Plus as the official ``get_bboxes``).

    Weights from files: each family reads its official checkpoints (:meth:`official_state_dict`,
    :meth:`official_class_names`) and says how many classes a state dict's head has (:meth:`classes_in`),
    so loading code never needs to know which family a model is.
    """

    strides: tuple[int, ...]
    num_classes: int
    postprocess_cfg: PostprocessConfig
    box_coding: str = ""
    select_on_logits: bool = False

    # How the family's reference reports a model's parameter count, so the model summary can label the
    # number to compare: "conv" = weights and biases of the inference graph's Conv2d layers (BN excluded),
    # "all" = every parameter of the inference graph. ``param_count_source`` names who counts that way.
    param_count_convention: ClassVar[Literal["conv", "all"]] = "all"
    param_count_source: ClassVar[str | None] = None
    # How the family's reference reports FLOPs, so the model summary prints the number to compare with:
    # "2macs" = 2 × multiply-accumulates of the convs (NanoDet's README), "macs" = one multiply-accumulate counted
    # as one FLOP (MMDetection's get_flops, RTMDet's README). ``flop_count_source`` names who counts that way.
    flop_count_convention: ClassVar[Literal["2macs", "macs"]] = "2macs"
    flop_count_source: ClassVar[str | None] = None
    # How :meth:`to_original` brings boxes back to the original image, in the words exports record for their users
    # (``to_original`` in the ONNX metadata): "clip" = scale back, clip to the original image (NanoDet-Plus,
    # RetinaNet); "unclipped" = scale back only (RTMDet: the boxes were clipped at the padded input);
    # "clip_drop_empty" = scale back, clip, drop boxes left with no width or height (DeFCN, after the top-k cut).
    to_original_rule: ClassVar[Literal["clip", "unclipped", "clip_drop_empty"]] = "clip"

    # ------------------------------------------------------------------ the family
    # Each family's facts, written once. The torch-free ones live on its ``model`` config class in
    # ``detcli.config.schema`` (the schema checks presets before torch loads) and the detector refers to them.
    config_type: ClassVar[type[Any]]  # the family's ``model`` section (e.g. RetinaNetConfig)
    display_name: ClassVar[str]  # "RetinaNet", as ``detcli presets`` and summaries name the family
    augment_type: ClassVar[str]  # the ``augment.type`` the family trains with

    @classmethod
    def from_config(cls, cfg: Any, num_classes: int, test: Any = None, input_cfg: Any = None,
                    backbone_weights: str | None = None) -> Detector:
        """The detector a preset's ``model`` section (``cfg``, of :attr:`config_type`), ``test`` and ``input``
        sections describe, with ``num_classes`` classes; ``test`` / ``input_cfg`` None: the schema's defaults.
        ``backbone_weights``: None (random init), ``"imagenet"`` or a path (``backbone_init_message`` says what
        was loaded). Every family defines it (``detcli.models.build_model`` calls it)."""
        raise NotImplementedError(f"{cls.__name__} is not built from a preset")

    @classmethod
    def strides_of(cls, cfg: Any) -> tuple[int, ...]:
        """The level strides a ``model`` section gives, without a build."""
        raise NotImplementedError(f"{cls.__name__} has no model section")

    @classmethod
    def assigner_description(cls, cfg: Any) -> str:
        """The label assignment of a ``model`` section in one line, for summaries and inspection reports."""
        raise NotImplementedError(f"{cls.__name__} has no model section")

    # ------------------------------------------------------------------ the contract
    @abstractmethod
    def forward(self, images: Tensor) -> HeadOutput:
        """(B, 3, H, W) normalised images → raw head output, N rows in prior order."""

    @abstractmethod
    def priors(
        self, image_size: tuple[int, int], device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> Priors:
        """The N priors of an (H, W) input (feature maps ⌈H/s⌉ × ⌈W/s⌉), computed without running the network."""

    @abstractmethod
    def decode_boxes(self, outputs: HeadOutput, priors: Priors) -> Tensor:
        """(B, N, 4) ``xyxy`` boxes in input pixels, not clipped. Pure tensor code (traces and exports)."""

    @abstractmethod
    def encode_boxes(self, boxes: Tensor, priors: Priors) -> Tensor:
        """The inverse of :meth:`decode_boxes`: (B, N, 4) ``xyxy`` boxes, one per prior → (B, N, K) regression
        in the head's coding (within the coding's range, e.g. side distances of at most R strides for GFL)."""

    @abstractmethod
    def decode_scores(self, outputs: HeadOutput) -> Tensor:
        """(B, N, C) class probabilities. Pure tensor code."""

    @abstractmethod
    def assign(
        self, outputs: HeadOutput | None, priors: Priors, targets: list[Target], metas: list[ImageMeta] | None = None
    ) -> Assignment:
        """The family's label assignment of every prior of every image, (B, N) fields.

        Args:
            outputs: the predictions the assigner looks at (NanoDet-Plus trains on the AGM's; any head output
                of the same input works for inspection). Anchor-IoU assigners ignore them (None is fine there).
            priors: of the input size.
            targets: B ground truths in input pixels.
            metas: each image's ``img_shape`` (priors beyond an image's own padded area are ignored where the
                family does that, RetinaNet); None = every image fills the input.
        """

    @abstractmethod
    def loss(self, images: Tensor, targets: list[Target], metas: list[ImageMeta], epoch: int) -> dict[str, Tensor]:
        """Named scalar losses (already weighted); the engine sums them. ``epoch`` is 0-indexed."""

    # ------------------------------------------------------------------ inspection
    # What the assigner looks at, in words ("AGM predictions"); None: no predictions (anchor IoU), then
    # :meth:`assignment_outputs` returns None and inspection never runs the network.
    assignment_predictions: str | None = "the head's predictions"

    def assignment_outputs(self, images: Tensor) -> HeadOutput | None:
        """The predictions training's assignment looks at for a (B, 3, H, W) batch, in the model's current mode
        (default: the inference head); None when :attr:`assignment_predictions` is None. Callers choose the grad
        mode (inspection: no grad)."""
        return None if self.assignment_predictions is None else self(images)

    def prior_fit(self, priors: Priors, gt_boxes: Tensor, meta: ImageMeta | None = None) -> PriorFit:
        """Can the priors of this input represent each GT at all, before assignment (the anchor-fit check)?

        Args:
            priors: of the input size.
            gt_boxes: (G, 4) ``xyxy`` of one image in input pixels.
            meta: the image's ``img_shape``, for families whose priors depend on it (RetinaNet's valid anchors).

        Returns:
            :class:`~detcli.assigners.prior_fit.PriorFit` by the family's own rule
            (:func:`~detcli.assigners.prior_fit.anchor_fit` or :func:`~detcli.assigners.prior_fit.point_fit`).
        """
        raise NoPriors(f"{type(self).__name__} does not say how its priors fit boxes")

    # The rule :meth:`prior_fit` applies, in words, for reports.
    prior_fit_rule: str = ""

    def fit_advice(self, missed_wh: Tensor, reasons: Tensor) -> str:
        """Which preset field to change (as ``--set …``) so the priors reach the GTs that do not fit.

        Args:
            missed_wh: (M, 2) width and height in input pixels of the GTs that do not fit.
            reasons: (M,) their :data:`~detcli.assigners.prior_fit.REASONS` codes.
        """
        return "no advice for this family"

    # ------------------------------------------------------------------ shared
    def decode(self, outputs: HeadOutput, priors: Priors) -> Decoded:
        """Boxes (B, N, 4) and scores (B, N, C); no data-dependent shapes, so ``forward`` + ``decode`` trace."""
        return Decoded(self.decode_boxes(outputs, priors), self.decode_scores(outputs))

    def postprocess(
        self, boxes: Tensor, scores: Tensor, priors: Priors, cfg: PostprocessConfig | None = None,
        scores_are_logits: bool = False,
    ) -> list[Detections]:
        """:func:`detcli.postprocess.postprocess` with this model's settings (``cfg`` overrides them)."""
        return postprocess(boxes, scores, priors, cfg or self.postprocess_cfg, scores_are_logits)

    @torch.no_grad()
    def predict(self, images: Tensor, metas: list[ImageMeta], cfg: PostprocessConfig | None = None) -> list[Detections]:
        """(B, 3, H, W) normalised images → B detections in network-input pixels (the
        :class:`~detcli.inference.predictor.Predictor` contract; :meth:`to_original` maps them back).

        forward → decode → clip to each image's ``img_shape`` (the whole input when ``metas`` is empty) →
        the shared postprocess with ``cfg`` (None: :attr:`postprocess_cfg`, the preset's ``test`` section).
        """
        return self.detections(self(images), tuple(images.shape), metas, cfg or self.postprocess_cfg)

    def detections(
        self, outputs: HeadOutput, batch_shape: tuple[int, ...], metas: list[ImageMeta], cfg: PostprocessConfig
    ) -> list[Detections]:
        """decode → clip → postprocess of head outputs of a (B, 3, H, W) batch (wherever they were computed,
        e.g. by an exported raw model in onnxruntime)."""
        priors = self.priors(tuple(batch_shape[-2:]), outputs.cls_logits.device, outputs.cls_logits.dtype)
        boxes = self.decode_boxes(outputs, priors)
        boxes = clip_boxes(boxes, image_limits(metas, batch_shape, boxes))
        scores = outputs.cls_logits if self.select_on_logits else self.decode_scores(outputs)
        return self.postprocess(boxes, scores, priors, cfg, scores_are_logits=self.select_on_logits)

    def to_original(self, det: Detections, meta: ImageMeta) -> Detections:
        """One image's detections from network-input pixels to original-image pixels, by the family's official rule.

        Default (NanoDet-Plus: ``warp_boxes`` with the inverse matrix): each box's 4 corners through
        ``inverse(meta.warp_matrix)``, their min/max box, clipped to ``meta.ori_shape``. Families whose reference
        rescales without clipping again, or drops boxes left empty, override this.

        Args:
            det: boxes (K, 4) xyxy in input pixels (already clipped to ``img_shape`` by :meth:`detections`).
            meta: the image's ``warp_matrix`` (original → input), ``ori_shape`` (h, w) and ``img_shape``.
        Returns:
            (K', 4) boxes in original pixels with their scores and labels, K' ≤ K, same order.
        """
        boxes = inverse_warp_boxes(det.boxes, meta.warp_matrix, meta.ori_shape)
        return Detections(boxes=boxes, scores=det.scores, labels=det.labels)

    def inference_state_dict(self) -> dict[str, Tensor]:
        """State dict of the inference graph (training-only modules dropped). Default: everything."""
        return self.state_dict()

    # ------------------------------------------------------------------ weights from files
    def official_state_dict(self, checkpoint: Any) -> dict[str, Tensor]:
        """The weights of an official checkpoint of this family, under this model's key names (not loaded).

        Raises:
            DetcliError: the checkpoint does not have this family's layout.
        """
        raise DetcliError(f"{type(self).__name__} reads no official checkpoints")

    def official_class_names(self, checkpoint: Any) -> list[str] | None:
        """The class names an official checkpoint records, in label order; None when it records none."""
        return None

    def classes_in(self, state: Mapping[str, Tensor]) -> int | None:
        """Class count of the classification head in ``state`` (this model's key names); None: unknown."""
        return None

    def load_official_state_dict(self, checkpoint: Any) -> Any:
        """Load an official checkpoint of this family strictly (every tensor present, same shapes).

        Raises:
            DetcliError: another layout, or weights that do not fit (see :meth:`weights_mismatch`).
        """
        self.load_checked(self.official_state_dict(checkpoint))

    def load_checked(self, state: Mapping[str, Tensor], required: Iterable[str] | None = None) -> None:
        """Load ``state``: every key of ``required`` (default: the whole state dict) present, no unknown key,
        every shape equal; else :class:`DetcliError` with :meth:`weights_mismatch`'s explanation."""
        problem = self.weights_mismatch(state, required)
        if problem is not None:
            raise DetcliError(problem)
        self.load_state_dict(state, strict=False)

    def weights_mismatch(self, state: Mapping[str, Tensor], required: Iterable[str] | None = None) -> str | None:
        """Why ``state`` does not fit this model, in one short message (None when it fits).

        Another class count is said first, with its fix; otherwise counts of the missing, unexpected and
        differently shaped tensors with the first few names. ``num_batches_tracked`` may be missing.
        """
        own = self.state_dict()
        required = own.keys() if required is None else required
        missing = [k for k in required if k not in state and not k.endswith("num_batches_tracked")]
        unexpected = [k for k in state if k not in own]
        wrong = [k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
        if not (missing or unexpected or wrong):
            return None
        shapes = _listing(wrong, lambda k: f"{k} {_shape(state[k])} in the file, {_shape(own[k])} here")
        found = self.classes_in(state)
        if found is not None and found != self.num_classes:
            return (
                f"the weights are for {found} classes, this model for {self.num_classes} "
                f"(shape mismatch: {shapes}). Run them with --set model.num_classes={found}; to fine-tune them "
                f"on {self.num_classes} classes use train --weights, which keeps the head tensors of another "
                "shape freshly initialised"
            )
        parts = [f"{len(keys)} {what}, e.g. {_listing(keys)}"
                 for what, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
        if wrong:
            parts.append(f"{len(wrong)} shape mismatch(es), e.g. {shapes}")
        return f"the weights do not fit this {type(self).__name__} (another preset or size?): " + "; ".join(parts)


class NoPriors(DetcliError):
    """A detector without priors to show (inspection needs :meth:`Detector.priors` and :meth:`Detector.prior_fit`)."""


def _shape(t: Tensor) -> str:
    return "×".join(map(str, t.shape)) or "scalar"


def _listing(keys: list[str], show=str, first: int = 3) -> str:
    """The first ``first`` keys (as ``show`` renders them), then how many more."""
    text = ", ".join(show(k) for k in keys[:first])
    return text + (f" and {len(keys) - first} more" if len(keys) > first else "")
