"""Data types and PyTorch's type-promotion rules.

A DType is a small immutable object (``tk.float32``) that knows its numpy twin, its size
and its category (bool < integer < floating). Promotion follows PyTorch exactly:

* ``promote_types(a, b)``: the lattice of two dtypes (uint8 + int8 -> int16, float16 +
  bfloat16 -> float32, any int + any float -> the float, bool + x -> x).
* ``result_type(*operands)``: operands come in three priority groups - tensors with
  dimensions, zero-dim tensors, and Python scalars. A lower group only changes the result
  when it is of a higher *category* (``int32 tensor + 2.5 -> float32``, but
  ``float16 tensor + 2.5 -> float16`` and ``int8 tensor + 1000 -> int8``). Python floats
  count as the default dtype, Python ints as int64, Python bools as bool.

This module must not import the rest of tensorkit.
"""
from __future__ import annotations

import builtins

import ml_dtypes
import numpy as np

__all__ = [
    "DType", "bool_", "uint8", "int8", "int16", "int32", "int64", "float16", "bfloat16",
    "float32", "float64", "promote_types", "result_type", "get_default_dtype",
    "set_default_dtype", "can_cast", "from_numpy_dtype", "ALL_DTYPES",
]


class DType:
    """A tensor element type, e.g. ``tk.float32``. Compare with ``==`` or ``is``."""

    __slots__ = ("name", "numpy", "itemsize", "category", "is_signed", "_rank")

    def __init__(self, name: str, numpy_dtype, category: int, is_signed: bool, rank: int):
        self.name = name
        self.numpy = np.dtype(numpy_dtype)
        self.itemsize = self.numpy.itemsize
        self.category = category        # 0 bool, 1 integer, 2 floating
        self.is_signed = is_signed
        self._rank = rank               # order inside the category, for promotion

    @property
    def is_floating_point(self) -> builtins.bool:
        return self.category == 2

    @property
    def is_integer(self) -> builtins.bool:
        return self.category == 1

    @property
    def is_complex(self) -> builtins.bool:
        return False

    def __repr__(self) -> str:
        return f"tk.{self.name}"

    def __reduce__(self):                # pickles as the singleton it names
        return (_by_name, (self.name,))


bool_ = DType("bool", np.bool_, 0, False, 0)
uint8 = DType("uint8", np.uint8, 1, False, 0)
int8 = DType("int8", np.int8, 1, True, 0)
int16 = DType("int16", np.int16, 1, True, 1)
int32 = DType("int32", np.int32, 1, True, 2)
int64 = DType("int64", np.int64, 1, True, 3)
float16 = DType("float16", np.float16, 2, True, 0)
bfloat16 = DType("bfloat16", ml_dtypes.bfloat16, 2, True, 0)
float32 = DType("float32", np.float32, 2, True, 1)
float64 = DType("float64", np.float64, 2, True, 2)

ALL_DTYPES = (bool_, uint8, int8, int16, int32, int64, float16, bfloat16, float32, float64)
INTEGER_DTYPES = (uint8, int8, int16, int32, int64)
FLOAT_DTYPES = (float16, bfloat16, float32, float64)
_BY_NAME = {d.name: d for d in ALL_DTYPES}
_BY_NUMPY = {d.numpy: d for d in ALL_DTYPES}


def _by_name(name: str) -> DType:
    return _BY_NAME[name]


def from_numpy_dtype(np_dtype) -> DType:
    """The DType of a numpy dtype; a TypeError names numpy dtypes tensorkit cannot hold."""
    try:
        return _BY_NUMPY[np.dtype(np_dtype)]
    except KeyError:
        raise TypeError(
            f"numpy dtype {np.dtype(np_dtype)} is not supported; supported: "
            + ", ".join(str(d.numpy) for d in ALL_DTYPES)) from None


def to_dtype(obj) -> DType:
    """Accept a DType, a numpy dtype / type, or a python type (float, int, bool)."""
    if isinstance(obj, DType):
        return obj
    if obj is builtins.float:          # a Python float is a C double (PyTorch: float64)
        return float64
    if obj is builtins.int:
        return int64
    if obj is builtins.bool:
        return bool_
    if isinstance(obj, str) and obj in _BY_NAME:
        return _BY_NAME[obj]
    return from_numpy_dtype(obj)


def promote_types(a: DType, b: DType) -> DType:
    """The smallest dtype both ``a`` and ``b`` convert to safely (PyTorch's table)."""
    if a is b:
        return a
    if a.category != b.category:
        return a if a.category > b.category else b
    if a.category == 2:
        if a._rank == b._rank:          # float16 with bfloat16
            return float32
        return a if a._rank > b._rank else b
    if a.category == 1:
        if a is uint8 or b is uint8:    # uint8 with a signed int: a signed int wide enough
            other = b if a is uint8 else a
            return int16 if other is int8 else other
        return a if a._rank > b._rank else b
    return a


def _combine(higher: DType | None, lower: DType | None) -> DType | None:
    # PyTorch's combine_categories: a lower-priority group matters only if its category wins.
    if higher is None:
        return lower
    if lower is None or higher.category == 2:
        return higher
    if higher.category == 0 or lower.category == 2:
        return promote_types(higher, lower)
    return higher


def scalar_dtype(value) -> DType:
    """The dtype a Python scalar stands for in promotion."""
    if isinstance(value, (builtins.bool, np.bool_)):
        return bool_
    if isinstance(value, (builtins.int, np.integer)):
        return int64
    if isinstance(value, (builtins.float, np.floating)):
        return get_default_dtype()
    raise TypeError(f"expected a Tensor or a Python number, got {type(value).__name__}")


def result_type(*operands) -> DType:
    """The result dtype of an op over tensors and Python scalars, as PyTorch computes it."""
    groups: list[DType | None] = [None, None, None]   # dimensioned, zero-dim, scalars
    for x in operands:
        dt = getattr(x, "dtype", None)
        if isinstance(dt, DType):
            g = 0 if x.ndim > 0 else 1
        else:
            dt, g = scalar_dtype(x), 2
        groups[g] = dt if groups[g] is None else promote_types(groups[g], dt)
    out = _combine(groups[0], _combine(groups[1], groups[2]))
    if out is None:
        raise TypeError("result_type needs at least one operand")
    return out


def can_cast(from_: DType, to: DType) -> builtins.bool:
    """Whether an op computing ``from_`` may write into ``to`` (PyTorch's in-place rule):
    no float into an integer or bool, no integer into bool."""
    return from_.category <= to.category


_default_dtype = float32


def get_default_dtype() -> DType:
    """The dtype of Python floats and of float tensors created without ``dtype=``."""
    return _default_dtype


def set_default_dtype(d: DType) -> None:
    """Set the default floating-point dtype (float16, bfloat16, float32 or float64)."""
    global _default_dtype
    d = to_dtype(d)
    if not d.is_floating_point:
        raise TypeError(f"set_default_dtype: only floating-point types are allowed, got {d}")
    _default_dtype = d
