"""Where a dataset's files are: a small YAML file, or a COCO-style folder, or the built-in demo.

A dataset YAML (paths relative to the YAML's folder)::

    train:
      ann_file: annotations/instances_train.json
      img_dir: train
    val:
      ann_file: annotations/instances_val.json
      img_dir: val
"""
from __future__ import annotations

import difflib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from detcli.config.yaml_text import read_yaml_file
from detcli.errors import DatasetError


class Split(BaseModel):
    """One split: a COCO annotation file and the folder its ``file_name``s are relative to."""

    model_config = ConfigDict(extra="forbid")

    ann_file: Path
    img_dir: Path


class DatasetConfig(BaseModel):
    """Train (optional: eval/predict need only val) and val splits, with absolute paths once loaded."""

    model_config = ConfigDict(extra="forbid")

    train: Split | None = None
    val: Split

    @classmethod
    def from_files(
        cls,
        val_ann: str | Path,
        val_img_dir: str | Path,
        train_ann: str | Path | None = None,
        train_img_dir: str | Path | None = None,
    ) -> "DatasetConfig":
        """Build from explicit paths (e.g. CLI flags); checks that they exist."""
        if (train_ann is None) != (train_img_dir is None):
            raise DatasetError("give both the train annotation file and the train image folder, or neither")
        train = None if train_ann is None else Split(ann_file=Path(train_ann), img_dir=Path(train_img_dir))
        cfg = cls(train=train, val=Split(ann_file=Path(val_ann), img_dir=Path(val_img_dir)))
        return _resolved(cfg, Path.cwd(), source="command line")

    @classmethod
    def from_coco_root(cls, root: str | Path) -> "DatasetConfig":
        """COCO layout: ``root/annotations/instances_<split>.json`` with images in ``root/<split>``
        (or ``root/images/<split>``), e.g. ``instances_val2017.json`` ↔ ``val2017/``. Train is optional."""
        root = Path(root).expanduser().resolve()
        splits: dict[str, Split] = {}
        for kind in ("train", "val"):
            anns = sorted((root / "annotations").glob(f"instances_{kind}*.json"))
            if len(anns) > 1:
                names = ", ".join(a.name for a in anns)
                raise DatasetError(f"{root}: several {kind} annotation files ({names}); write a dataset YAML instead")
            if not anns:
                continue
            stem = anns[0].stem[len("instances_"):]
            candidates = [root / stem, root / "images" / stem]
            img_dir = next((c for c in candidates if c.is_dir()), None)
            if img_dir is None:
                raise DatasetError(
                    f"{root}: found {anns[0].name} but no image folder {candidates[0]} or {candidates[1]}"
                )
            splits[kind] = Split(ann_file=anns[0], img_dir=img_dir)
        if "val" not in splits:
            raise DatasetError(
                f"{root}: no annotations/instances_val*.json; expected a dataset YAML file or a COCO-style folder"
            )
        return cls(**splits)


def _check_exists(cfg: DatasetConfig, source: str) -> None:
    for kind in ("train", "val"):
        split: Split | None = getattr(cfg, kind)
        if split is None:
            continue
        if not split.ann_file.is_file():
            raise DatasetError(f"{source}: {kind}.ann_file: annotation file {split.ann_file} does not exist")
        if not split.img_dir.is_dir():
            raise DatasetError(f"{source}: {kind}.img_dir: image folder {split.img_dir} does not exist")


def _resolved(cfg: DatasetConfig, base: Path, source: str) -> DatasetConfig:
    def fix(split: Split | None) -> Split | None:
        if split is None:
            return None
        return Split(
            ann_file=(base / split.ann_file.expanduser()).resolve(),
            img_dir=(base / split.img_dir.expanduser()).resolve(),
        )

    out = DatasetConfig(train=fix(cfg.train), val=fix(cfg.val))
    _check_exists(out, source)
    return out


def _format_validation_error(path: Path, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            key = str(e["loc"][-1])
            allowed = ["train", "val"] if len(e["loc"]) == 1 else ["ann_file", "img_dir"]
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (allowed: {', '.join(allowed)})"
            lines.append(f"  {loc}: unknown key{hint}")
        else:
            lines.append(f"  {loc}: {e['msg']}")
    return f"dataset file {path} is not valid:\n" + "\n".join(lines)


def load_dataset_config(path: str | Path) -> DatasetConfig:
    """Read a dataset YAML; paths inside are relative to the YAML's folder.

    Raises:
        DatasetError: missing file, bad YAML, unknown/missing keys, or paths that do not exist.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetError(f"dataset file {path} does not exist")
    data, _ = read_yaml_file(path, "dataset file", DatasetError)
    if not isinstance(data, dict):
        raise DatasetError(f"dataset file {path}: expected a mapping with 'train' and 'val', got {type(data).__name__}")
    try:
        cfg = DatasetConfig.model_validate(data)
    except ValidationError as e:
        raise DatasetError(_format_validation_error(path, e)) from None
    return _resolved(cfg, path.resolve().parent, source=f"dataset file {path}")


def resolve_dataset(spec: str | Path) -> DatasetConfig:
    """``demo`` → the built-in demo dataset; a ``.yaml``/``.yml`` file → :func:`load_dataset_config`;
    a folder → its ``data.yaml``/``dataset.yaml``/``demo.yaml`` if present, else COCO layout."""
    if str(spec) == "demo":
        from detcli.data.demo import ensure_demo_dataset

        return load_dataset_config(ensure_demo_dataset() / "demo.yaml")
    p = Path(spec).expanduser()
    if p.is_dir():
        for name in ("data.yaml", "dataset.yaml", "demo.yaml"):
            if (p / name).is_file():
                return load_dataset_config(p / name)
        return DatasetConfig.from_coco_root(p)
    if p.suffix.lower() in (".yaml", ".yml") or p.exists():
        return load_dataset_config(p)
    raise DatasetError(f"dataset {spec!s} not found: give 'demo', a dataset YAML file or a COCO-style folder")
