"""The one resolved description of a model run: what a checkpoint, an exported file or a new training run says.

A :class:`RunSpec` is built once, where the run starts (loading a detcli checkpoint, an official checkpoint with
its preset, an exported ONNX file, or a training run being set up), and every later step reads it: the input size
(``--imgsz`` resolved there and nowhere else), the transforms, the class names and category ids, the dataset. The
trainer writes it into its checkpoints (:meth:`RunSpec.record_fields`); :meth:`RunSpec.from_record` reads it back.
The file layout itself is :class:`detcli.checkpoints.record.RunRecord`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from detcli.config.schema import Preset

Origin = Literal["detcli", "official", "exported", "new"]


@dataclass(frozen=True)
class RunSpec:
    """Everything a run says about the model it runs.

    Attributes:
        preset: the validated preset, ``--set`` overrides applied (its ``train`` section: the one trained with).
        class_names: name of each class index.
        cat_ids: the dataset's category id of each class index (COCO's ids for the 80 COCO classes).
        imgsz: the long side of the input (``--imgsz``) as resolved for this run: the flag when given, else the
            size the checkpoint was trained at, else None (the preset's own ``input.size``).
        dataset: the checkpoint's dataset record as stored (``config``, ``imgsz``, ``train``/``val`` splits), or
            None (official and library-built models).
        trained_imgsz: the ``--imgsz`` the weights were trained at (None: the preset's size, or not known).
        weights: the file the model came from (None: a model being trained from scratch).
        origin: "detcli" (a detcli checkpoint), "official" (an official checkpoint read with a preset),
            "exported" (an ONNX file from ``detcli export``), "new" (a training run being set up).
        metadata: anything else the file records (versions, date, train_args, metrics), for reports.
    """

    preset: Preset
    class_names: list[str]
    cat_ids: list[int]
    imgsz: int | None = None
    dataset: dict[str, Any] | None = None
    trained_imgsz: int | None = None
    weights: Path | None = None
    origin: Origin = "new"
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.cat_ids) != len(self.class_names):
            raise ValueError(f"{len(self.cat_ids)} category ids for {len(self.class_names)} class names")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_size(self) -> tuple[int, int]:
        """(w, h) network input size at :attr:`imgsz` (:func:`detcli.data.build.input_size`)."""
        from detcli.data.build import input_size

        return input_size(self.preset, self.imgsz)

    def transform(self, train: bool = False, epochs: int | None = None):
        """The preset's transform at :attr:`imgsz` (:func:`detcli.data.build.build_transform`)."""
        from detcli.data.build import build_transform

        return build_transform(self.preset, train=train, imgsz=self.imgsz, epochs=epochs)

    def replace(self, **changes: Any) -> RunSpec:
        return dataclasses.replace(self, **changes)

    def record_fields(self) -> dict[str, Any]:
        """What a checkpoint stores of this spec (the :class:`~detcli.checkpoints.record.RunRecord` fields
        ``input_size``, ``class_names``, ``cat_ids`` and ``dataset``; the preset is stored by the trainer with the
        train section it ran)."""
        out: dict[str, Any] = {
            "input_size": list(self.input_size),  # [w, h] trained at
            "class_names": list(self.class_names),
            "cat_ids": [int(c) for c in self.cat_ids],
        }
        if self.dataset is not None:
            out["dataset"] = self.dataset
        return out


__all__ = ["RunSpec", "Origin"]
