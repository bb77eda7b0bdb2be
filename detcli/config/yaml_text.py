"""Read YAML written by a user (presets, dataset files, ``--set`` values): every way it can fail is a message.

Not UTF-8, bad syntax, a tag PyYAML cannot construct (``!!float abc``), nesting deeper than Python's
recursion limit, an alias inside the node it names, or aliases that expand to more than
:data:`MAX_ALIAS_EXPANSION` values (an alias bomb: nine nested lists of ten aliases are 10⁹ values, which a
message's ``repr`` or a validator would expand) all raise the caller's :class:`~detcli.errors.DetcliError`
subclass, naming the source. Anchors and aliases of ordinary size (``<<: *defaults``) keep working.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from detcli.fileio import read_regular_bytes
from detcli.errors import DetcliError

# what PyYAML's safe constructors raise on text they cannot turn into values, besides YAMLError
_CONSTRUCT_ERRORS = (ValueError, TypeError, AttributeError, OverflowError)
MAX_ALIAS_EXPANSION = 100_000  # values that aliases may add to a document beyond those written out


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def alias_expansion(root: yaml.Node) -> int | None:
    """How many values aliases add to the document of ``root`` (its expanded size minus its distinct nodes),
    or None when an alias sits inside the node it names (a document without end).

    Counted on the composed node tree, where an alias is the very node object it names, in time linear in
    the distinct nodes: nothing is expanded.
    """
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in _children(node))
            continue
        if key in size:
            continue
        on_path.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in on_path:
                return None
            if id(child) not in size:
                stack.append((child, False))
    return size[id(root)] - len(size)


def _check_aliases(node: yaml.Node, source: str, error: type[DetcliError]) -> None:
    extra = alias_expansion(node)
    if extra is None:
        raise error(f"{source}: a YAML alias (*name) sits inside the value it names: the document never ends")
    if extra > MAX_ALIAS_EXPANSION:
        raise error(f"{source}: YAML aliases (*name) expand to more than {MAX_ALIAS_EXPANSION:,} values "
                    f"(an alias bomb?); write the values out")


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
        if node is not None:
            _check_aliases(node, source, error)  # before anything is constructed (merge keys copy on construction)
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
        raw = read_regular_bytes(path)  # a FIFO is refused, never opened
    except OSError as e:
        raise error(f"{what} {path} cannot be read ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(
            f"{what} {path}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); save it as UTF-8"
        ) from None
    return parse_yaml(text, f"{what} {path}", error)
