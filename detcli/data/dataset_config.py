"""Where a dataset's files are: a small YAML file, a dataset folder, or the built-in demo.

Three formats, told apart by what is on disk (or by ``format:`` in the YAML):

- COCO: a dataset YAML (paths relative to the YAML's folder)::

      train:
        ann_file: annotations/instances_train.json
        img_dir: train
      val:
        ann_file: annotations/instances_val.json
        img_dir: val

  or a COCO-style folder (``annotations/instances_<split>.json`` + ``<split>/``).
- YOLO: an Ultralytics ``data.yaml`` (``path``, ``train``, ``val``, ``names``; see :mod:`detcli.data.yolo`),
  or a folder holding one.
- Pascal VOC: a VOC root (``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/``), or a YAML naming image sets
  (see :func:`detcli.data.voc.voc_yaml_splits`).

Every format is read into the same in-memory COCO annotations (:mod:`detcli.data.coco_json`), so training,
the counts tables and COCO-style evaluation are the same for all three.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Tag, ValidationError

from detcli.config.yaml_text import read_yaml_file
from detcli.data.yaml_fields import brief, names_as_text
from detcli.errors import DatasetError

FORMATS = ("coco", "yolo", "voc")


class Split(BaseModel):
    """One COCO split: an annotation file and the folder its ``file_name``s are relative to."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["coco"] = "coco"
    ann_file: Path
    img_dir: Path

    @property
    def source(self) -> Path:
        """The file that names this split in messages and tables."""
        return self.ann_file

    @property
    def note(self) -> str | None:
        """How a split in another format becomes COCO (None for COCO itself)."""
        return None


class YoloSplit(BaseModel):
    """One split of a YOLO dataset: image sources (label files found from them) and the class names."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["yolo"] = "yolo"
    data_file: Path  # the data.yaml
    images: list[Path]  # absolute folders, .txt image lists or image files
    names: list[str]
    root: Path | None = None  # the YAML's `path` (None, in records made before it was kept: the YAML's folder)

    @property
    def source(self) -> Path:
        return self.data_file

    @property
    def note(self) -> str | None:
        return ("YOLO labels converted to COCO annotations in memory (class k → category id k+1, box area w·h); "
                "evaluation is COCO-style (COCOeval by faster-coco-eval when installed, else pycocotools)")


class VocSplit(BaseModel):
    """One split of a Pascal VOC dataset: image-set files (``<root>/ImageSets/Main/<set>.txt``) and class names."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["voc"] = "voc"
    image_sets: list[Path]
    names: list[str]

    @property
    def source(self) -> Path:
        return self.image_sets[0]

    @property
    def note(self) -> str | None:
        return ("Pascal VOC XML converted to COCO annotations in memory (boxes from 1-based pixels, class k → "
                "category id k+1, difficult objects as crowd: ignored in training and evaluation); evaluation is "
                "COCO-style (AP@[.50:.95] by faster-coco-eval or pycocotools, not VOC's AP50)")


def _split_format(value: Any) -> str:
    """The tag of a split; a split recorded before formats existed is COCO."""
    fmt = value.get("format", "coco") if isinstance(value, dict) else getattr(value, "format", "coco")
    return fmt if fmt in FORMATS else "coco"


AnySplit = Annotated[
    Annotated[Split, Tag("coco")] | Annotated[YoloSplit, Tag("yolo")] | Annotated[VocSplit, Tag("voc")],
    Discriminator(_split_format),
]


class DatasetConfig(BaseModel):
    """Train (optional: eval/predict need only val) and val splits, with absolute paths once loaded.

    This is what a checkpoint records (``dataset.config``), so eval and ``--resume`` find the data again.
    """

    model_config = ConfigDict(extra="forbid")

    train: AnySplit | None = None
    val: AnySplit

    @property
    def format(self) -> str:
        return self.val.format

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
        cfg = _CocoDatasetFile(train=train, val=Split(ann_file=Path(val_ann), img_dir=Path(val_img_dir)))
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
                f"{root}: no annotations/instances_val*.json; expected a dataset YAML file, a COCO-style folder, "
                f"a folder with a YOLO data.yaml, or a Pascal VOC root (Annotations/, JPEGImages/, ImageSets/Main/)"
            )
        return cls(**splits)


class _CocoDatasetFile(BaseModel):
    """A COCO dataset YAML as written (validated with messages that name its keys)."""

    model_config = ConfigDict(extra="forbid")

    train: Split | None = None
    val: Split


def _check_exists(cfg: DatasetConfig, source: str) -> None:
    for kind in ("train", "val"):
        split: Split | None = getattr(cfg, kind)
        if split is None:
            continue
        if not split.ann_file.is_file():
            what = "is not a regular file" if split.ann_file.exists() else "does not exist"
            raise DatasetError(f"{source}: {kind}.ann_file: annotation file {split.ann_file} {what}")
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
    """Read a dataset YAML (COCO, YOLO or VOC: ``format:`` if given, else told from its keys and the disk);
    paths inside are relative to the YAML's folder.

    Raises:
        DatasetError: missing file, bad YAML, unknown/missing keys, or paths that do not exist.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_file():
        raise DatasetError(f"dataset file {path} is not a regular file")
    if not path.is_file():
        raise DatasetError(f"dataset file {path} does not exist")
    data, node = read_yaml_file(path, "dataset file", DatasetError)
    data = names_as_text(data, node)  # class names are the text written: `no` is a class, not False
    if not isinstance(data, dict):
        raise DatasetError(f"dataset file {path}: expected a mapping with 'train' and 'val', got {type(data).__name__}")
    fmt = _yaml_format(data, path)
    if fmt == "yolo":
        return yolo_config(data, path)
    if fmt == "voc":
        from detcli.data.voc import voc_yaml_splits

        return _voc(*voc_yaml_splits(data, path))
    try:
        cfg = _CocoDatasetFile.model_validate({k: v for k, v in data.items() if k != "format"})
    except ValidationError as e:
        raise DatasetError(_format_validation_error(path, e)) from None
    return _resolved(cfg, path.resolve().parent, source=f"dataset file {path}")


def _yaml_format(data: dict[str, Any], path: Path) -> str:
    """``format:`` when given; COCO when a split is a mapping (``ann_file``/``img_dir``); VOC when the root is a
    VOC root or the splits are image-set files in ``ImageSets/Main``; YOLO otherwise."""
    from detcli.data.voc import is_voc_root
    from detcli.data.yaml_fields import entries, yaml_root

    fmt = data.get("format")
    if fmt is not None:
        if fmt not in FORMATS:
            raise DatasetError(f"dataset file {path}: format {brief(fmt)} is not one of {', '.join(FORMATS)}")
        return fmt
    values = entries(data, "train") + entries(data, "val")
    plain = values and all(isinstance(v, str) for v in values)
    if not plain and "names" not in data and "path" not in data:
        return "coco"  # mappings (or nothing usable): validated as COCO, with its messages
    root = yaml_root(data, path)
    if is_voc_root(root):
        return "voc"
    in_image_sets = [
        v.endswith(".txt") and (root / v).parent.name == "Main" and (root / v).parent.parent.name == "ImageSets"
        for v in values if isinstance(v, str)
    ]
    return "voc" if in_image_sets and all(in_image_sets) else "yolo"


def yolo_config(data: dict[str, Any], path: Path) -> DatasetConfig:
    """A YOLO ``data.yaml`` (parsed) → splits with absolute image sources (see :mod:`detcli.data.yolo`)."""
    from detcli.data.yolo import yolo_yaml_splits

    splits, names, root = yolo_yaml_splits(data, path)
    data_file = path.resolve()
    return DatasetConfig(**{k: YoloSplit(data_file=data_file, images=v, names=names, root=root)
                            for k, v in splits.items()})


def _voc(sets: dict[str, list[Path]], names: list[str]) -> DatasetConfig:
    return DatasetConfig(**{k: VocSplit(image_sets=v, names=names) for k, v in sets.items()})


def resolve_dataset(spec: str | Path) -> DatasetConfig:
    """``demo`` → the built-in demo dataset; a ``.yaml``/``.yml`` file → :func:`load_dataset_config`;
    a folder → its ``data.yaml``/``dataset.yaml``/``demo.yaml`` if present, else a VOC root, else COCO layout."""
    from detcli.data.voc import is_voc_root, voc_root_splits

    if str(spec) == "demo":
        from detcli.data.demo import ensure_demo_dataset

        return load_dataset_config(ensure_demo_dataset() / "demo.yaml")
    p = Path(spec).expanduser()
    if p.is_dir():
        for name in ("data.yaml", "dataset.yaml", "demo.yaml"):
            if (p / name).is_file():
                return load_dataset_config(p / name)
        if is_voc_root(p):
            return _voc(*voc_root_splits(p.resolve()))
        roots = sorted(c.name for c in p.iterdir() if c.is_dir() and is_voc_root(c))
        if roots:
            raise DatasetError(
                f"{p}: holds the Pascal VOC roots {', '.join(roots)}; give one of them, or a dataset YAML with "
                f"format: voc, path: {p}, train: [{roots[0]}/ImageSets/Main/trainval.txt, ...], val: ..."
            )
        if (p / "images").is_dir() and (p / "labels").is_dir() and not (p / "annotations").is_dir():
            raise DatasetError(f"{p}: images/ and labels/ look like a YOLO dataset, but there is no data.yaml; "
                               f"write {p / 'data.yaml'} with train: images/<train folder>, val: images/<val folder> "
                               f"and names: [...]")
        return DatasetConfig.from_coco_root(p)
    if p.suffix.lower() in (".yaml", ".yml") or p.exists():
        return load_dataset_config(p)
    raise DatasetError(f"dataset {spec!s} not found: give 'demo', a dataset YAML file, a COCO-style folder, "
                       f"a YOLO folder with data.yaml or a Pascal VOC root")
