"""The interface every detector family implements; the engine only talks to this."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Literal

from torch import Tensor, nn

from detcli.errors import DetcliError
from detcli.structures import Detections, ImageMeta, Target


class Detector(nn.Module, ABC):
    """A one-stage detector.

    ``forward`` is the inference graph only (what parity checks and export compare);
    ``loss`` runs the training graph (it may use modules that ``forward`` never touches,
    e.g. NanoDet-Plus' AGM); ``predict`` decodes and post-processes.

    Weights from files: each family reads its official checkpoints (:meth:`official_state_dict`,
    :meth:`official_class_names`) and says how many classes a state dict's head has (:meth:`classes_in`),
    so loading code never needs to know which family a model is.
    """

    strides: tuple[int, ...]
    num_classes: int

    # How the family's reference reports a model's parameter count, so the model summary can label the
    # number to compare: "conv" = weights and biases of the inference graph's Conv2d layers (BN excluded),
    # "all" = every parameter of the inference graph. ``param_count_source`` names who counts that way.
    param_count_convention: ClassVar[Literal["conv", "all"]] = "all"
    param_count_source: ClassVar[str | None] = None

    @abstractmethod
    def forward(self, images: Tensor) -> Tensor | tuple[Tensor, ...]:
        """Raw head outputs for (B, 3, H, W) normalised images."""

    @abstractmethod
    def loss(self, images: Tensor, targets: list[Target], metas: list[ImageMeta], epoch: int) -> dict[str, Tensor]:
        """Named scalar losses (already weighted); the engine sums them. ``epoch`` is 0-indexed."""

    @abstractmethod
    def predict(
        self,
        images: Tensor,
        metas: list[ImageMeta],
        score_thr: float,
        iou_thr: float,
        max_det: int,
    ) -> list[Detections]:
        """Detections in network-input pixels (the engine maps them back to the original image)."""

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


def _shape(t: Tensor) -> str:
    return "×".join(map(str, t.shape)) or "scalar"


def _listing(keys: list[str], show=str, first: int = 3) -> str:
    """The first ``first`` keys (as ``show`` renders them), then how many more."""
    text = ", ".join(show(k) for k in keys[:first])
    return text + (f" and {len(keys) - first} more" if len(keys) > first else "")
