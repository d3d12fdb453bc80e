"""CPU kernels of the indexing primitives: ``index``, ``index_put`` and ``nonzero``.

Plain gathers and writes are numpy fancy indexing on the tensors' memory (``_np()`` views;
ml_dtypes makes bfloat16 work too). Combining writes (accumulate, scatter's reductions) run
a Numba loop over flat storage offsets: ``np.add.at`` and friends are several times slower.
float16/bfloat16 accumulate in float32 and round once at the end; bool 'sum' is a logical or
and 'prod' a logical and, as in PyTorch.

The callers (``ops/indexing.py``) have checked shapes, dtypes and bounds; kernels know
nothing about autograd or errors of the user's arguments.
"""
from __future__ import annotations

import numba
import numpy as np

from .. import _dispatch
from .. import dtypes as D

_HALF = (D.float16, D.bfloat16)
_MODES = {"sum": 0, "mean": 0, "prod": 1, "amax": 2, "amin": 3}


def _key(indices) -> tuple:
    return tuple(slice(None) if t is None else t._np() for t in indices)


@_dispatch.register("index", "cpu", D.ALL_DTYPES)
def index(input, indices, out) -> None:
    out._np()[...] = input._np()[_key(indices)]


@_dispatch.register("nonzero", "cpu", D.ALL_DTYPES)
def nonzero(input, out):
    """With ``out=None``: the number of nonzero elements; else write their coordinates into out."""
    if out is None:
        return int(np.count_nonzero(input._np()))
    out._np()[...] = np.argwhere(input._np())


@_dispatch.register("index_put", "cpu", D.ALL_DTYPES)
def index_put(input, indices, values, reduce, include_self) -> None:
    """``input[indices] (reduce)= values``; values already broadcast to the indexed shape."""
    key = _key(indices)
    if reduce is None:
        input._np()[key] = values._np()        # numpy: with duplicates, one of the values lands
        return
    offsets = _offsets(input, key)
    vals = values._np().reshape(-1)
    buf = input._storage.data
    mode = _MODES[reduce]
    if input.dtype is D.bool_:                 # or / and on bytes: max / min
        buf, vals, mode = buf.view(np.uint8), vals.view(np.uint8), {0: 2, 1: 3}.get(mode, mode)
    if include_self and reduce != "mean" and input.dtype not in _HALF:
        _combine(buf, offsets, np.ascontiguousarray(vals, buf.dtype), mode)
        return
    # Work on a copy of the touched elements: widened halves, identities, counts for 'mean'.
    touched, slot = np.unique(offsets, return_inverse=True)
    wide = np.float32 if input.dtype in _HALF else buf.dtype
    acc = buf[touched].astype(wide)
    if not include_self:
        acc[...] = _identity(reduce, acc.dtype)
    _combine(acc, slot.reshape(-1), np.ascontiguousarray(vals, wide), mode)
    if reduce == "mean":
        count = np.bincount(slot.reshape(-1), minlength=len(touched)) + include_self
        acc = acc / count if acc.dtype.kind == "f" else acc // count   # integers round down, as PyTorch
    buf[touched] = acc.astype(buf.dtype)


def _identity(reduce: str, dtype: np.dtype):
    if reduce in ("sum", "mean"):
        return 0
    if reduce == "prod":
        return 1
    lo, hi = (-np.inf, np.inf) if dtype.kind == "f" else (np.iinfo(dtype).min, np.iinfo(dtype).max)
    return lo if reduce == "amax" else hi


def _offsets(x, key: tuple) -> np.ndarray:
    """Storage offsets of the elements of ``x[key]``, flat in the result's order. Each dim's
    coordinate grid is a zero-copy broadcast that numpy indexes like the data itself (so the
    result layout and negative indices follow numpy's rules for free)."""
    off = np.int64(x._offset)
    for d, (n, st) in enumerate(zip(x.shape, x._strides)):
        coords = np.broadcast_to(np.arange(n, dtype=np.int64).reshape((n,) + (1,) * (x.ndim - d - 1)), x.shape)
        off = off + coords[key] * st
    return np.asarray(off).reshape(-1)


@numba.njit(cache=True, nogil=True)
def _combine(buf, offsets, vals, mode):
    """``buf[offsets[i]] = op(buf[offsets[i]], vals[i])`` in order; op: 0 add, 1 multiply,
    2 max, 3 min (NaN wins, as in PyTorch)."""
    for i in range(offsets.shape[0]):
        o = offsets[i]
        a, v = buf[o], vals[i]
        if mode == 0:
            buf[o] = a + v
        elif mode == 1:
            buf[o] = a * v
        elif mode == 2:
            buf[o] = a if a >= v or a != a else v
        else:
            buf[o] = a if a <= v or a != a else v
