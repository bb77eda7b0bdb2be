"""What is checked around ``torch.load`` when detcli reads a checkpoint: the zip directory before, the loaded
structure after.

Before: a ``torch.save`` file is a zip of *stored* (uncompressed) records, and torch allocates each record's
declared size when it reads it. A crafted file can declare gigabytes in a few deflated megabytes (a zip
bomb), so the declared sizes are added up from the zip directory, nothing decompressed, and a file whose
records would unpack to more than :data:`MAX_EXPANSION` times its own size (plus :data:`SIZE_ALLOWANCE`) is
refused before torch reads a byte of it.

After: the loaded object is walked once, without recursion: containers nested deeper than :data:`MAX_DEPTH`
levels or holding themselves are refused (every later reader — pydantic, ``repr``, ``copy.deepcopy`` —
recurses, and would end in a RecursionError), so are containers shared so often that, written out, they would
hold more than :data:`MAX_VALUES` values (a pickle "billion laughs": 40 memo references to a list that holds the
previous one twice are 2**40 values to pydantic or ``repr``), and the NumPy stand-ins of :mod:`detcli.checkpoints.safe_numpy`
become the arrays and dtypes they stand for.
"""
from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from detcli.checkpoints.safe_numpy import NumpyRefused, finished, is_stand_in
from detcli.errors import DetcliError

MAX_DEPTH = 100  # detcli checkpoints nest 6 levels, official ones about 10
MAX_EXPANSION = 8  # torch.save's records are stored: their sizes add up to less than the file's
SIZE_ALLOWANCE = 64 * 2**20  # room for a small file whose pickle was deflated by a zip tool
MAX_VALUES = 10_000_000  # values of the loaded object written out (each tensor is one): far above any checkpoint's


def zip_records(path: Path) -> list[str] | None:
    """The record names of a zip checkpoint (None: not a zip, e.g. a legacy ``torch.save`` file).

    Raises:
        DetcliError: the records declare more bytes than the limit (a zip bomb), or sizes that cannot be.
    """
    try:
        if not zipfile.is_zipfile(path):
            return None  # a legacy torch.save file, or not a checkpoint (torch's reader says which)
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (OSError, zipfile.BadZipFile, ValueError, EOFError) as e:  # sizes unknown: not given to torch
        raise DetcliError(f"{path}: not a readable checkpoint (its zip directory is damaged: {e})") from None
    size = path.stat().st_size
    for info in infos:
        if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
            raise DetcliError(
                f"{path}: refused before reading: record {info.filename!r} is stored uncompressed but declares "
                f"{_bytes(info.file_size)} for {_bytes(info.compress_size)} of data (a damaged or crafted file)"
            )
    total = sum(info.file_size for info in infos)
    limit = MAX_EXPANSION * size + SIZE_ALLOWANCE
    if total > limit:
        largest = max(infos, key=lambda i: i.file_size)
        raise DetcliError(
            f"{path}: refused before reading: its records would unpack to {_bytes(total)}, over the limit of "
            f"{_bytes(limit)} for a file of {_bytes(size)} ({largest.filename!r}: {_bytes(largest.file_size)} from "
            f"{_bytes(largest.compress_size)} compressed). torch.save writes records uncompressed; this file was "
            "repacked or crafted (a zip bomb). Nothing in it was read."
        )
    return [info.filename for info in infos]


def _bytes(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


# ---------------------------------------------------------------------------------------- the loaded object
def finish_loaded(root: Any, path: Path) -> Any:
    """``root`` as read by torch, with NumPy stand-ins made real, after the depth and cycle checks.

    Dicts and lists are updated in place; a tuple, set or frozenset holding a stand-in is rebuilt.

    Raises:
        DetcliError: nesting deeper than :data:`MAX_DEPTH`, a container inside itself, or a NumPy value that
            :mod:`detcli.checkpoints.safe_numpy` refuses; the message names where in the file it is.
    """
    try:
        order = _containers_children_first(root, path)
        _check_written_out_size(order, path)
        done: dict[int, Any] = {}
        for obj in order:
            new = _with_children_finished(obj, done)
            if new is not obj:
                done[id(obj)] = new
        return _finished(root, done)
    except NumpyRefused as e:
        raise DetcliError(f"{path}: refused: it holds {e}. Nothing from it was used.") from None


def _is_container(obj: Any) -> bool:
    return isinstance(obj, (dict, list, tuple, set, frozenset)) or bool(_attributes(obj))


def _attributes(obj: Any) -> dict[str, Any]:
    """Attributes the file set with BUILD (a config node's ``__immutable__``, a foreign object's fields, a
    tensor's Python attributes); ``{}`` for everything else."""
    if isinstance(obj, (str, bytes, int, float, complex, type(None))) or is_stand_in(obj):
        return {}
    found = getattr(obj, "__dict__", None)
    return found if isinstance(found, dict) else {}


def _children(obj: Any) -> Iterator[tuple[Any, Any]]:
    """``(where, child)`` for each element of a container (keys too: a key can be a nested tuple); ``where`` is
    formatted only for a message (:func:`_label`)."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield key, value
            if isinstance(key, (tuple, frozenset)):
                yield _KEY, key
    elif isinstance(obj, (list, tuple)):
        yield from enumerate(obj)
    elif isinstance(obj, (set, frozenset)):
        yield from ((_MEMBER, v) for v in obj)
    for name, value in _attributes(obj).items():
        yield _Attribute(name), value


class _Attribute(str):
    """An attribute name (``.name``), told from a dict key."""


_KEY, _MEMBER = object(), object()


def _label(where: Any) -> str:
    if where is _KEY:
        return " (a key)"
    if where is _MEMBER:
        return "{…}"
    if isinstance(where, str):
        return f".{where}"
    return f"[{where!r}]"


def _containers_children_first(root: Any, path: Path) -> list[Any]:
    """Every container reachable from ``root``, each once, children before parents (an iterative walk)."""
    order: list[Any] = []
    if not _is_container(root):
        return order
    stack: list[tuple[Any, Any, Iterator[tuple[Any, Any]]]] = [(root, None, _children(root))]
    seen, open_ = {id(root)}, {id(root)}
    while stack:
        obj, _, children = stack[-1]
        for where, child in children:
            if not _is_container(child):
                continue
            if id(child) in open_:
                raise DetcliError(f"{path}: refused: {_where(stack, where)} refers back to a container it is "
                                  "inside (a cycle, which no checkpoint writer produces)")
            if id(child) in seen:
                continue
            if len(stack) >= MAX_DEPTH:
                raise DetcliError(f"{path}: refused: it nests containers deeper than {MAX_DEPTH} levels (at "
                                  f"{_where(stack, where)}); checkpoints nest a few levels")
            seen.add(id(child))
            open_.add(id(child))
            stack.append((child, where, _children(child)))
            break
        else:
            stack.pop()
            open_.discard(id(obj))
            order.append(obj)
    return order


def _check_written_out_size(order: list[Any], path: Path) -> None:
    """Refuse a structure that holds more than :data:`MAX_VALUES` values once every shared container is counted
    each time it is referred to (``order``: children before parents)."""
    sizes: dict[int, int] = {}
    for obj in order:
        n = 1 + sum(sizes.get(id(child), 1) for _, child in _children(obj))
        if n > MAX_VALUES:
            raise DetcliError(f"{path}: refused: it refers to the same containers so often that it would hold more "
                              f"than {MAX_VALUES:,} values (a pickle bomb); checkpoints hold a few thousand")
        sizes[id(obj)] = n


def _where(stack: list[tuple[Any, Any, Any]], last: Any, shown: int = 6) -> str:
    parts = [_label(where) for _, where, _ in stack[1:]] + [_label(last)]
    text = "".join(parts[:shown]) + ("…" if len(parts) > shown else "")
    return text.lstrip(".") or "the top level"


def _finished(value: Any, done: dict[int, Any]) -> Any:
    if is_stand_in(value):
        return finished(value)
    return done.get(id(value), value)


def _with_children_finished(obj: Any, done: dict[int, Any]) -> Any:
    """``obj`` with each child replaced by its finished value (in place, except in tuples: rebuilt)."""
    if isinstance(obj, dict):
        changed = {}
        for key, value in obj.items():
            if _finished(key, done) is not key:
                raise NumpyRefused("a NumPy value as a dictionary key")
            new = _finished(value, done)
            if new is not value:
                changed[key] = new
        for key, new in changed.items():
            obj[key] = new
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            obj[i] = _finished(value, done)
    elif isinstance(obj, (tuple, set, frozenset)):
        items = [_finished(v, done) for v in obj]
        if any(new is not old for new, old in zip(items, obj)):
            if type(obj) is not tuple:  # NumPy values are not set members (arrays are unhashable)
                raise NumpyRefused(f"a NumPy value inside a {type(obj).__name__}")
            obj = tuple(items)
    attributes = _attributes(obj)
    for name, value in list(attributes.items()):
        attributes[name] = _finished(value, done)
    return obj


__all__ = ["MAX_DEPTH", "MAX_EXPANSION", "MAX_VALUES", "SIZE_ALLOWANCE", "zip_records", "finish_loaded"]
