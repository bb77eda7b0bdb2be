"""Fields shared by the YOLO and Pascal VOC dataset YAMLs: ``path`` (the root), split entries, ``names``."""
from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any

import yaml

from detcli.errors import DatasetError

_BRIEF = reprlib.Repr()
_BRIEF.maxstring, _BRIEF.maxother, _BRIEF.maxlist, _BRIEF.maxdict, _BRIEF.maxlevel = 60, 60, 6, 4, 3


def brief(value: Any) -> str:
    """A repr of at most a few dozen characters, built without expanding ``value`` (:mod:`reprlib`)."""
    try:
        return _BRIEF.repr(value)
    except (ValueError, RecursionError):  # an int beyond Python's 4300-digit str limit; a self-containing value
        return f"a {type(value).__name__} too large to show"


def names_as_text(data: Any, node: yaml.Node | None) -> Any:
    """``data`` with the class names of its ``names`` as the YAML text wrote them.

    YAML 1.1 reads ``no``, ``on``, ``yes``, ``off`` as booleans and ``1e3`` as a number; a class name is
    always the text: each scalar item of a ``names`` list, or each value of a ``names`` mapping (its keys stay
    class indices), is taken from the node tree. Other values are left as they are.
    """
    if not isinstance(data, dict) or "names" not in data or not isinstance(node, yaml.MappingNode):
        return data
    value = next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == "names"), None)
    names = data["names"]
    if isinstance(value, yaml.SequenceNode) and isinstance(names, list) and len(value.value) == len(names):
        names = [n.value if isinstance(n, yaml.ScalarNode) and _scalar(n) else v for n, v in zip(value.value, names)]
    elif isinstance(value, yaml.MappingNode) and isinstance(names, dict):
        texts = [v.value if isinstance(v, yaml.ScalarNode) and _scalar(v) else None for _, v in value.value]
        if len(texts) == len(names):  # a repeated key would make them differ: then left as constructed
            names = {k: t if t is not None else names[k] for k, t in zip(names, texts)}
    return {**data, "names": names}


def _scalar(node: yaml.ScalarNode) -> bool:
    """A plain value (not ``null`` / ``~`` / an empty item, which stay missing names)."""
    return node.tag != "tag:yaml.org,2002:null"


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
            raise DatasetError(f"{where}: names[{i}]: a class name must be a non-empty string, got {brief(name)}")
    return [str(n).strip() for n in value]


def yaml_root(data: dict[str, Any], path: Path) -> Path:
    """The dataset root of a YOLO/VOC YAML: its ``path`` (relative to the YAML's folder), else that folder."""
    folder = path.resolve().parent
    value = data.get("path")
    if value is None or value == "":
        return folder
    if not isinstance(value, str):
        raise DatasetError(f"dataset file {path}: path must be a folder name, got {brief(value)}")
    root = (folder / Path(value).expanduser()).resolve()
    if not root.is_dir():
        raise DatasetError(f"dataset file {path}: path {brief(value)} → {root} is not a folder "
                           f"(a relative path is relative to the YAML's folder)")
    return root
