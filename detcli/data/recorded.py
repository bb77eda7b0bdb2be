"""The dataset a checkpoint records (``dataset.config``), validated like a dataset YAML the user gave.

Training records the resolved :class:`~detcli.data.dataset_config.DatasetConfig` of its data so that ``eval``
and ``--resume`` find it again. A checkpoint is a file from anywhere: the paths inside it are input, not facts,
and decide what is read. :func:`recorded_dataset` accepts them only when they could have come from a dataset
YAML, with every check a YAML gets (confinement, existence, regular files):

- COCO: an absolute annotation file ending in ``.json`` that is a regular file, and an absolute image folder
  (the ``file_name``\\ s inside are confined to it when it is read, as always);
- YOLO: an absolute ``data.yaml`` (``.yaml``/``.yml``, a regular file) that is read again as the user's YAML:
  the split it gives now must be the recorded one (same image sources, same names), so the record cannot add a
  path of its own; why a YAML does not read is not quoted (the YAML is one the checkpoint chose);
- VOC: absolute image-set files, each ``<VOC root>/ImageSets/Main/<set>.txt`` really inside its VOC root, and
  class names that are strings.

Nothing is opened before its path passes (``/etc/passwd`` as an annotation file is refused by its name).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from detcli.data.dataset_config import AnySplit, DatasetConfig, Split, VocSplit, YoloSplit, load_dataset_config
from detcli.fileio import is_regular
from detcli.data.voc import check_image_set
from detcli.data.yaml_fields import parse_names
from detcli.errors import DatasetError

EVAL_HINT = "give --data to evaluate on data of your choice"


def recorded_dataset(config: Any, source: str, hint: str = EVAL_HINT) -> DatasetConfig:
    """The dataset of a checkpoint's ``dataset.config``, after the checks a dataset YAML gets.

    Args:
        config: the recorded value (a DatasetConfig dump, or a DatasetConfig).
        source: how messages name the checkpoint, e.g. ``"checkpoint runs/train/train/weights/best.pt"``.
        hint: what the user can do instead, appended to every message.
    Raises:
        DatasetError: naming the checkpoint and the field (``dataset.config.val.ann_file``), saying that the
            paths came from the checkpoint; no refused path is opened.
    """
    where = f"{source}: dataset.config"
    if config is None:
        raise DatasetError(f"{source} records no dataset (dataset.config); {hint}")
    if isinstance(config, BaseModel):
        config = config.model_dump(mode="json")
    if not isinstance(config, dict):
        raise DatasetError(f"{where}: expected a mapping of splits, got {type(config).__name__}; {hint}")
    try:
        cfg = DatasetConfig.model_validate(config)
    except (ValidationError, RecursionError) as e:
        problems = ("; ".join(f"{'.'.join(map(str, err['loc'])) or '(top level)'}: {err['msg']}"
                              for err in e.errors()[:3]) if isinstance(e, ValidationError) else "nested too deeply")
        raise DatasetError(f"{where} is not a dataset record ({problems}); {hint}") from None
    splits = {}
    for kind in ("train", "val"):
        split = getattr(cfg, kind)
        if split is not None:
            try:
                splits[kind] = _checked(split, kind)
            except DatasetError as e:
                raise DatasetError(f"{where}.{kind}: the dataset path recorded in the checkpoint is refused: {e}; "
                                   f"{hint}") from None
    return DatasetConfig(**splits)


def _checked(split: AnySplit, kind: str) -> AnySplit:
    match split:
        case Split():
            _absolute(split.ann_file, "ann_file")
            _absolute(split.img_dir, "img_dir")
            if split.ann_file.suffix.lower() != ".json":
                raise DatasetError(f"ann_file {split.ann_file} is not a COCO annotation file (.json)")
            if not is_regular(split.ann_file):
                raise DatasetError(f"ann_file {split.ann_file} does not exist or is not a regular file")
            if not split.img_dir.is_dir():
                raise DatasetError(f"img_dir {split.img_dir} is not a folder")
            return split
        case YoloSplit():
            return _yolo(split, kind)
        case VocSplit():
            sets = [check_image_set(_absolute(p, "image_sets"), "image_sets") for p in split.image_sets]
            if not sets:
                raise DatasetError("image_sets is empty")
            return VocSplit(image_sets=sets, names=parse_names(split.names, "names"))
    raise AssertionError(split)  # pragma: no cover - the union is exhaustive


def _yolo(split: YoloSplit, kind: str) -> YoloSplit:
    data_file = _absolute(split.data_file, "data_file")
    if data_file.suffix.lower() not in (".yaml", ".yml"):
        raise DatasetError(f"data_file {data_file} is not a dataset YAML (.yaml or .yml)")
    if not is_regular(data_file):
        raise DatasetError(f"data_file {data_file} does not exist or is not a regular file")
    try:
        now = getattr(load_dataset_config(data_file), kind)
    except DatasetError:  # its message could quote a file the checkpoint chose: the user can ask for it
        now = None
    if not isinstance(now, YoloSplit):
        raise DatasetError(f"data_file {data_file} does not read as a YOLO dataset with a {kind} split (see why "
                           f"with: detcli train --check --data {data_file})")
    if [Path(p) for p in now.images] != [Path(p) for p in split.images] or now.names != split.names:
        raise DatasetError(f"{data_file} now gives other {kind} images or names than the checkpoint records "
                           f"(edited since training?)")
    return now


def _absolute(path: Path, field: str) -> Path:
    if not Path(path).is_absolute():
        raise DatasetError(f"{field} {path} is not an absolute path (training records resolved paths)")
    return Path(path)


__all__ = ["EVAL_HINT", "recorded_dataset"]
