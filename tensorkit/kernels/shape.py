"""Triton kernel of ``cat`` on the cuda device: each part is copied (and cast) into its slot
of the output by the ``copy`` primitive's generated pointwise kernel (``kernels/pointwise.py``),
one launch per non-empty part, no sync. The GPU twin of ``cpu/shape.py``.

A dedicated kernel would not move the bytes faster: the copy takes the flat, vectorised
path when a slot is contiguous (``cat`` along dim 0 of contiguous parts) and the strided one
otherwise. The copies are launched directly, not through ``copy_``, so autograd and the
tracer see one ``cat``. Kernels know nothing about autograd.
"""
from __future__ import annotations

from .. import _dispatch
from .. import dtypes as D
from .._tensor import Tensor
from .pointwise import copy_into


@_dispatch.register("cat", "cuda", D.ALL_DTYPES)
def cat(parts, dim: int, out: Tensor) -> None:
    """Copy ``parts`` one after another along ``dim`` into ``out`` (of their promoted dtype)."""
    start, step = out._offset, out._strides[dim]
    for t in parts:
        n = t._shape[dim]
        if t.numel():
            slot = Tensor._make(out._storage, start, out._shape[:dim] + (n,) + out._shape[dim + 1:], out._strides,
                                out.dtype)
            copy_into(t, slot)
        start += n * step
