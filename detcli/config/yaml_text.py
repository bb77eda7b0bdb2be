"""Read YAML written by a user (presets, dataset files, ``--set`` values): every way it can fail is a message.

Not UTF-8, bad syntax, a tag PyYAML cannot construct (``!!float abc``) or nesting deeper than Python's
recursion limit all raise the caller's :class:`~detcli.errors.DetcliError` subclass, naming the source.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from detcli.errors import DetcliError

# what PyYAML's safe constructors raise on text they cannot turn into values, besides YAMLError
_CONSTRUCT_ERRORS = (ValueError, TypeError, AttributeError, OverflowError)


def parse_yaml(text: str, source: str, error: type[DetcliError]) -> tuple[Any, yaml.Node | None]:
    """The value of one YAML document and its node tree (for line numbers).

    Args:
        text: the YAML text.
        source: how the message names it, e.g. ``"dataset file data.yaml"``.
        error: the exception class to raise.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise error(f"{source}: invalid YAML{where}: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise error(f"{source}: invalid YAML: {e}") from None
    except RecursionError:
        raise error(f"{source}: nested too deeply to read") from None
    except _CONSTRUCT_ERRORS as e:
        raise error(f"{source}: invalid YAML: {e}") from None
    finally:
        loader.dispose()
    return data, node


def read_yaml_file(path: Path, what: str, error: type[DetcliError]) -> tuple[Any, yaml.Node | None]:
    """:func:`parse_yaml` of a file's text; ``what`` names the kind of file (``"preset"``, ``"dataset file"``)."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise error(f"{what} {path} cannot be read ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(
            f"{what} {path}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); save it as UTF-8"
        ) from None
    return parse_yaml(text, f"{what} {path}", error)
