"""NumPy values in checkpoints, rebuilt by detcli instead of by NumPy's own unpickling.

Official checkpoints hold a few NumPy values (MMEngine's ``message_hub`` log buffers, scalars in ``meta``).
NumPy pickles them as calls that torch's ``weights_only`` reader makes with the file's arguments:
``numpy.dtype(code, align, copy)`` then ``dtype.__setstate__(state)``; ``_reconstruct(ndarray, (0,), b"b")``
then ``ndarray.__setstate__((version, shape, dtype, is_fortran, data))``; ``scalar(dtype, data)``. NumPy's
``__setstate__`` trusts that state: a field past the item size or at a negative offset reads memory outside the
array, and the object flag over raw bytes makes NumPy follow the bytes as pointers (a crash). So these NumPy
names are bound to the stand-ins below (:func:`numpy_globals`), which accept exactly what NumPy writes for plain
numeric values: a bool, int, uint, float or complex dtype with a byte order, no fields, no sub-array, no
metadata, no flags; a shape whose size times the item size is the number of bytes given. They build the value
from those bytes themselves; anything else raises :class:`NumpyRefused`. While the file is read, arrays and
dtypes are stand-ins (:class:`SafeArray`, :class:`SafeDtype`); :func:`finished` gives the NumPy value of each
once reading is done.
"""
from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

# the dtype codes NumPy pickles plain numeric dtypes with (np.dtype(...).__reduce__()[1][0])
_NUMERIC_CODE = re.compile(r"b1|[iu](?:1|2|4|8)|f(?:2|4|8|16)|c(?:8|16|32)")
_MAX_DIMS = 64  # NumPy 2's NPY_MAXDIMS
_KINDS = {"V": " (structured or raw bytes)", "O": " (Python objects)", "U": " (text)", "S": " (bytes)",
          "M": " (datetime)", "m": " (timedelta)"}


class NumpyRefused(ValueError):
    """A NumPy value in a checkpoint that is not a plain numeric array, dtype or scalar."""


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value) if isinstance(value, (str, bytes, int, float, bool, type(None))) else type(value).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class SafeDtype:
    """``numpy.dtype`` while a checkpoint is read: ``SafeDtype(code, align, copy)`` then ``__setstate__(state)``,
    as NumPy pickles a dtype. :attr:`value` is the real dtype once both were checked (None before)."""

    __slots__ = ("code", "value")

    def __init__(self, code: Any = None, align: Any = False, copy: Any = True) -> None:
        if not isinstance(code, str) or not _NUMERIC_CODE.fullmatch(code):
            kind = _KINDS.get(code[:1], "") if isinstance(code, str) else ""
            raise NumpyRefused(f"a NumPy dtype {_show(code)}{kind}: only bool, int, uint, float and complex dtypes "
                               "are read")
        if align is not False or not isinstance(copy, bool):
            raise NumpyRefused(f"a NumPy dtype {code!r} with align={_show(align)}, copy={_show(copy)}")
        self.code, self.value = code, None

    def __setstate__(self, state: Any) -> None:
        code = getattr(self, "code", None)
        if code is None:
            raise NumpyRefused("a NumPy dtype built without a type code")
        # (version, byte order, sub-array, names, fields, item size, alignment, flags[, metadata])
        plain = (isinstance(state, tuple) and len(state) in (8, 9) and state[0] in (3, 4)
                 and state[1] in ("<", ">", "|", "=") and state[2:5] == (None, None, None)
                 and state[5:8] == (-1, -1, 0) and all(type(v) is int for v in state[5:8])
                 and (len(state) == 8 or state[8] is None))
        if not plain:
            raise NumpyRefused(
                f"a NumPy dtype {code!r} with the state {_show(state, 200)}: only plain numeric dtypes are read (no "
                "fields, no sub-array, no flags such as the object flag, no metadata)"
            )
        dtype = np.dtype(code)
        self.value = dtype.newbyteorder(state[1]) if state[1] in "<>" and dtype.itemsize > 1 else dtype


class SafeArray:
    """``numpy.ndarray`` while a checkpoint is read (:func:`reconstruct` makes one, ``__setstate__`` fills it).
    :attr:`value` is the real array once its state was checked (None before)."""

    __slots__ = ("value",)

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 5 and state[0] == 1 and type(state[0]) is int:
            state = state[1:]
        if not (isinstance(state, tuple) and len(state) == 4):
            raise NumpyRefused(f"a NumPy array with the state {_show(state)}")
        shape, dtype, fortran, data = state
        if not (isinstance(shape, tuple) and len(shape) <= _MAX_DIMS
                and all(type(n) is int and n >= 0 for n in shape)):
            raise NumpyRefused(f"a NumPy array of shape {_show(shape)}")
        if not isinstance(dtype, SafeDtype) or dtype.value is None:
            raise NumpyRefused(f"a NumPy array whose dtype is {_show(dtype)}, not a plain numeric dtype")
        if type(fortran) is not bool or not isinstance(data, bytes):
            raise NumpyRefused("a NumPy array without raw data (an object array, or a damaged one)")
        count = math.prod(shape)
        if count * dtype.value.itemsize != len(data):
            raise NumpyRefused(
                f"a NumPy array of shape {shape} and dtype {dtype.value} ({count * dtype.value.itemsize} bytes) "
                f"given {len(data)} bytes"
            )
        order = "F" if fortran else "C"
        flat = np.frombuffer(data, dtype=dtype.value, count=count)
        self.value = flat.reshape(shape, order=order).copy(order="K")  # its own, writable memory


def reconstruct(cls: Any, shape: Any, typecode: Any) -> SafeArray:
    """``numpy.core.multiarray._reconstruct``: the empty array that ``__setstate__`` then fills."""
    if cls is not SafeArray or shape != (0,) or typecode != b"b":
        raise NumpyRefused(f"a NumPy array made as {_show(cls)}{_show(shape)}; only plain ndarrays are read")
    return SafeArray()


def scalar(dtype: Any, data: Any) -> np.generic:
    """``numpy.core.multiarray.scalar``: one value of a plain numeric dtype from its bytes."""
    if not isinstance(dtype, SafeDtype) or dtype.value is None:
        raise NumpyRefused(f"a NumPy scalar whose dtype is {_show(dtype)}, not a plain numeric dtype")
    if not isinstance(data, bytes) or len(data) != dtype.value.itemsize:
        raise NumpyRefused(f"a NumPy {dtype.value} scalar given {_show(data)} instead of {dtype.value.itemsize} bytes")
    return np.frombuffer(data, dtype=dtype.value)[0]


def empty_bytes(*args: Any) -> bytes:
    """``builtins.bytes``, which pickle protocol 2 calls without arguments for ``b""`` (the data of an empty
    array); with arguments (``bytes(10**10)`` would allocate them) it is refused."""
    if args:
        raise NumpyRefused(f"a call bytes{_show(args)} (pickle writes b'' as bytes())")
    return b""


def numpy_globals() -> list[tuple[Any, str]]:
    """``(stand-in, "numpy.Name")`` pairs for torch's ``safe_globals``, under NumPy 1's and NumPy 2's names, and
    ``builtins.bytes`` for empty arrays."""
    pairs: list[tuple[Any, str]] = [(SafeArray, "numpy.ndarray"), (SafeDtype, "numpy.dtype"),
                                    (empty_bytes, "builtins.bytes")]
    for core in ("numpy.core", "numpy._core"):
        pairs += [(reconstruct, f"{core}.multiarray._reconstruct"), (scalar, f"{core}.multiarray.scalar")]
    return pairs


def is_stand_in(value: Any) -> bool:
    return isinstance(value, (SafeArray, SafeDtype))


def finished(value: SafeArray | SafeDtype) -> np.ndarray | np.dtype:
    """The NumPy array or dtype a stand-in was built into.

    Raises:
        NumpyRefused: the file made the stand-in but never gave it a state.
    """
    if value.value is None:
        raise NumpyRefused(f"a NumPy {'array' if isinstance(value, SafeArray) else 'dtype'} without its state")
    return value.value


__all__ = ["NumpyRefused", "SafeArray", "SafeDtype", "numpy_globals", "is_stand_in", "finished"]
