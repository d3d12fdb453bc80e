"""Indexing: ``x[...]`` and ``x[...] = v``.

Basic indexing (ints, slices with steps, None, Ellipsis) returns views sharing memory.
"""
from __future__ import annotations

import numpy as np

from .._tensor import Tensor
from .view import _view


def _expand_ellipsis(index: tuple, ndim: int) -> tuple:
    consumed = 0
    for i in index:
        if i is None or i is Ellipsis:
            continue
        if isinstance(i, Tensor) and i.dtype.category == 0:
            consumed += max(i.ndim, 1)
        elif isinstance(i, (bool, np.bool_)):
            continue
        else:
            consumed += 1
    n_ell = sum(1 for i in index if i is Ellipsis)
    if n_ell > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if consumed > ndim:
        raise IndexError(f"too many indices for tensor of dimension {ndim} (got {consumed})")
    if n_ell:
        k = next(j for j, i in enumerate(index) if i is Ellipsis)
        return index[:k] + (slice(None),) * (ndim - consumed) + index[k + 1:]
    return index + (slice(None),) * (ndim - consumed)


def _basic(x: Tensor, index: tuple) -> Tensor:
    """Apply ints, slices and None: one view."""
    shape, strides, offset, d = [], [], x._offset, 0
    for i in index:
        if i is None:
            shape.append(1)
            strides.append(0)
            continue
        size, st = x.shape[d], x._strides[d]
        if isinstance(i, slice):
            start, stop, step = i.indices(size)
            if step <= 0:
                raise ValueError("step must be greater than zero (negative steps are not supported, as in PyTorch; "
                                 "use .flip(dim))")
            n = max(0, -(-(stop - start) // step))
            shape.append(n)
            strides.append(st * step)
            offset += start * st if n else 0
        else:
            i = int(i)
            if not -size <= i < size:
                raise IndexError(f"index {i} is out of bounds for dimension {d} with size {size}")
            offset += (i + size if i < 0 else i) * st
        d += 1
    return _view(x, tuple(shape), tuple(strides), offset, "getitem", {"index": index})


def _is_basic(i) -> bool:
    return i is None or isinstance(i, (slice, int, np.integer)) and not isinstance(i, (bool, np.bool_))


def getitem(x: Tensor, index) -> Tensor:
    """``x[index]``: basic indexing gives a view."""
    if not isinstance(index, tuple):
        index = (index,)
    index = tuple(int(i) if isinstance(i, Tensor) and i.ndim == 0 and i.dtype.category == 1 else i for i in index)
    if x.ndim == 0 and any(i is not None and i is not Ellipsis and not isinstance(i, slice) for i in index):
        if not all(isinstance(i, (Tensor, bool, list)) or i is None or i is Ellipsis for i in index):
            raise IndexError("invalid index of a 0-dim tensor; use tensor.item() to get the Python number")
    index = _expand_ellipsis(index, x.ndim)
    if all(_is_basic(i) for i in index):
        return _basic(x, index)
    raise NotImplementedError("advanced indexing is not implemented yet")


def setitem(x: Tensor, index, value) -> None:
    """``x[index] = value``: value (a number or tensor) broadcasts to the indexed shape."""
    target = getitem(x, index)
    target.copy_(value)
