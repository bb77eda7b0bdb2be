"""Resolve, merge, override and validate presets, with errors that point at the bad field.

A preset is a YAML file: a built-in name (``nanodet-plus-m`` → ``presets/nanodet-plus-m.yaml``,
shipped inside the wheel as ``detcli.presets``) or a path. A preset may start from another one with
``base: <name or relative path>``; mappings are merged key by key. ``--set a.b.c=value`` overrides any
field (the value is parsed as YAML) and is validated at once.
"""
from __future__ import annotations

import copy
import difflib
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from detcli.config.schema import Preset, TrainConfig, _deep_merge
from detcli.config.yaml_text import parse_yaml, read_yaml_file
from detcli.errors import PresetError


def presets_dir() -> Path:
    """The built-in presets: ``detcli/presets`` in an installed wheel, ``presets/`` in a source tree."""
    installed = Path(__file__).resolve().parents[1] / "presets"  # the wheel maps presets/ → detcli.presets
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parents[2] / "presets"


def builtin_presets() -> dict[str, Path]:
    """Built-in preset names → files."""
    return {p.stem: p for p in sorted(presets_dir().glob("*.yaml"))}


def resolve_preset_path(name_or_path: str | Path, relative_to: Path | None = None) -> Path:
    text = str(name_or_path)
    candidates = [Path(text)]
    if relative_to is not None:
        candidates.insert(0, relative_to / text)
    for cand in candidates:
        if cand.suffix in (".yaml", ".yml") or cand.exists():
            if cand.is_file():
                return cand
    builtins = builtin_presets()
    if text in builtins:
        return builtins[text]
    if Path(text).suffix in (".yaml", ".yml"):
        raise PresetError(f"preset file not found: {text}")
    close = difflib.get_close_matches(text, list(builtins), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise PresetError(f"unknown preset {text!r}.{hint} Built-in presets: {', '.join(sorted(builtins))}.")


def _read_yaml(path: Path) -> tuple[dict, yaml.Node | None]:
    data, node = read_yaml_file(path, "preset", PresetError)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PresetError(f"{path}: a preset must be a mapping of fields, got {type(data).__name__}")
    return data, node


def _load_raw(path: Path, seen: tuple[Path, ...] = ()) -> tuple[dict, yaml.Node | None]:
    """The merged fields of a preset and its ``base`` chain, and the YAML nodes of ``path`` itself."""
    if path.resolve() in seen:
        raise PresetError(f"{path}: 'base' chain loops back to itself")
    data, node = _read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data, node
    base_path = resolve_preset_path(base, relative_to=path.parent)
    inherited = _load_raw(base_path, seen + (path.resolve(),))[0]
    inherited.pop("zoo", None)  # the base recipe's COCO figures describe its model, not this one's
    return _deep_merge(inherited, data), node


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'train.optimizer.lr=0.002'`` → (['train', 'optimizer', 'lr'], 0.002)."""
    if "=" not in text:
        raise PresetError(f"--set {text!r}: expected path.to.field=value")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".")]
    if not key.strip() or any(not p for p in parts):
        raise PresetError(f"--set {text!r}: empty field name")
    try:
        value = parse_yaml(raw, f"--set {key}", PresetError)[0] if raw.strip() else None
    except PresetError:
        value = raw  # not YAML: the text itself (validation says whether the field takes it)
    return parts, value


def apply_override(data: dict, parts: list[str], value: Any) -> None:
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise PresetError(f"--set {'.'.join(parts)}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def train_overrides(overrides: list[str] | tuple[str, ...]) -> dict:
    """The ``train.*`` fields of ``--set`` overrides as a nested dict (what the user asked for explicitly)."""
    out: dict = {}
    for text in overrides:
        parts, value = parse_override(text)
        if parts[0] == "train" and len(parts) > 1:  # `--set train={…}` replaces the whole section instead
            apply_override(out, parts[1:], value)
    return out


def load_preset(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> tuple[Preset, Path]:
    """Load, merge ``base``, apply ``--set`` overrides and validate. Raises PresetError."""
    path = resolve_preset_path(name_or_path)
    data, node = _load_raw(path)
    data.setdefault("name", path.stem)
    return validate_preset(data, overrides, str(path), node), path


def validate_preset(
    data: dict, overrides: list[str] | tuple[str, ...] = (), source: str = "", node: yaml.Node | None = None
) -> Preset:
    """Apply ``--set`` overrides to preset fields and validate them. Raises PresetError.

    Args:
        data: the preset's fields (not modified).
        overrides: ``path.to.field=value`` texts.
        source: how messages name the preset (a file path, or e.g. "stored in best.pt").
        node: the YAML nodes ``data`` was read from, for line numbers; None when it was not read from YAML.
    """
    data = copy.deepcopy(data)
    set_paths = []
    for text in overrides:
        parts, value = parse_override(text)
        apply_override(data, parts, value)
        set_paths.append(tuple(parts))
    try:
        return Preset.model_validate(data)
    except ValidationError as e:
        raise PresetError(format_validation_error(e, source, data, set_paths, node)) from None


# --------------------------------------------------------------------------- error messages
def format_validation_error(
    err: ValidationError, source: str, data: dict, set_paths: list[tuple[str, ...]] = (),
    node: yaml.Node | None = None,
) -> str:
    """One line per error: the field's dotted path, where it came from (``--set`` or a YAML line), the problem."""
    lines = [f"invalid preset {source}:"]
    for item in err.errors():
        loc = _clean_loc(item["loc"], data)
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        where = ""
        dotted_loc = tuple(str(p) for p in loc)
        if any(dotted_loc[: len(p)] == tuple(p) for p in set_paths):
            where = " (from --set)"
        else:
            line = _line_of(node, loc)
            if line is not None:
                where = f" (line {line})"
        if item["type"] == "extra_forbidden":
            valid = _field_names(item["loc"][:-1], data)
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.4)
            hint = f"; did you mean {'.'.join([*map(str, loc[:-1]), close[0]])!r}?" if close else ""
            lines.append(f"  {dotted}{where}: unknown field{hint} (valid here: {', '.join(valid)})")
        else:
            got = item.get("input")
            got_text = f" (got {_short_repr(got)})" if got is not None and not isinstance(got, dict) else ""
            lines.append(f"  {dotted}{where}: {item['msg']}{got_text}")
    return "\n".join(lines)


def _short_repr(value: Any, limit: int = 80) -> str:
    try:
        text = repr(value)
    except RecursionError:
        text = f"a deeply nested {type(value).__name__}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _clean_loc(loc: tuple, data: dict) -> list:
    """Drop pydantic's discriminator tags (e.g. 'nanodet_plus') that are not keys of the data."""
    out, node = [], data
    for part in loc:
        if isinstance(node, dict) and part not in node and isinstance(part, str) and node.get("type") == part:
            continue
        out.append(part)
        node = node.get(part) if isinstance(node, dict) else (
            node[part] if isinstance(node, (list, tuple)) and isinstance(part, int) and part < len(node) else None
        )
    return out


def _field_names(loc: tuple, data: dict) -> list[str]:
    """Valid field names of the schema model at pydantic location ``loc``."""
    cls: Any = Preset
    node: Any = data
    if loc and loc[0] == "demo":  # `demo` holds overrides of `train` fields (Preset.demo_train)
        cls, node, loc = TrainConfig, data.get("demo"), loc[1:]
    for part in loc:
        if isinstance(node, dict) and isinstance(part, str) and part not in node and node.get("type") == part:
            continue  # discriminator tag
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or part not in cls.model_fields:
            return []
        cls = _model_in(cls.model_fields[part].annotation, node.get(part) if isinstance(node, dict) else None)
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        return list(cls.model_fields)
    return []


def _model_in(annotation: Any, value: Any) -> Any:
    """The BaseModel class inside an annotation (Optional/Union/Annotated), picked by ``type`` tag."""
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _model_in(args[0], value)
    if args and origin is not None and origin not in (list, tuple, dict):
        models = [m for a in args if (m := _model_in(a, value)) is not None]
        tag = value.get("type") if isinstance(value, dict) else None
        for m in models:
            field = m.model_fields.get("type")
            if field is not None and tag in typing.get_args(field.annotation):
                return m
        return models[0] if len(models) == 1 else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _line_of(node: yaml.Node | None, loc: list) -> int | None:
    """1-based line of the deepest YAML node found along ``loc``."""
    line = None
    for part in loc:  # only a full match is reported: a field inherited from `base` has no line here
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if getattr(k, "value", None) == str(part)), None)
            key = next((k for k, v in node.value if getattr(k, "value", None) == str(part)), None)
            if match is None:
                return None
            line = key.start_mark.line + 1
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return None
    return line
