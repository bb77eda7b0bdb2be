"""Fields shared by the YOLO and Pascal VOC dataset YAMLs: ``path`` (the root), split entries, ``names``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from detcli.errors import DatasetError


def entries(data: dict[str, Any], key: str) -> list[Any]:
    """``data[key]`` as a list: absent → [], one value → [value]."""
    value = data.get(key)
    return [] if value is None else value if isinstance(value, list) else [value]


def parse_names(value: Any, where: str) -> list[str]:
    """``names`` as a list, or a ``{index: name}`` mapping with indices 0..N−1, → the list of names."""
    if isinstance(value, dict):
        try:
            keys = sorted(int(k) for k in value)
        except (TypeError, ValueError):
            raise DatasetError(f"{where}: names: the keys of a names mapping are class indices 0, 1, 2, …") from None
        if keys != list(range(len(keys))):
            missing = sorted(set(range(len(keys))) - set(keys))
            raise DatasetError(f"{where}: names: class indices must run 0..{len(keys) - 1} without gaps"
                               + (f" (missing {missing[:5]})" if missing else f" (got {keys[:10]})"))
        by_index = {int(k): v for k, v in value.items()}
        value = [by_index[k] for k in keys]
    if not isinstance(value, list) or not value:
        raise DatasetError(f"{where}: names must be a non-empty list of class names or a {{index: name}} mapping")
    for i, name in enumerate(value):
        if not isinstance(name, (str, int, float)) or isinstance(name, bool) or str(name).strip() == "":
            raise DatasetError(f"{where}: names[{i}]: a class name must be a non-empty string, got {name!r}")
    return [str(n).strip() for n in value]


def yaml_root(data: dict[str, Any], path: Path) -> Path:
    """The dataset root of a YOLO/VOC YAML: its ``path`` (relative to the YAML's folder), else that folder."""
    folder = path.resolve().parent
    value = data.get("path")
    if value is None or value == "":
        return folder
    if not isinstance(value, str):
        raise DatasetError(f"dataset file {path}: path must be a folder name, got {value!r}")
    root = (folder / Path(value).expanduser()).resolve()
    if not root.is_dir():
        raise DatasetError(f"dataset file {path}: path {value!r} → {root} is not a folder "
                           f"(a relative path is relative to the YAML's folder)")
    return root
