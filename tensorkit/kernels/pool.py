"""Triton pooling on the cuda device: the host side of ``kernels/src/pool.py``, registered for
the same ops and dtypes as ``cpu/pool.py``. Each launch covers the result with programs of
``BLOCK`` elements; the window loops' bounds (the longest window, or for the backward the
most windows one input element lies in) are computed here from the geometry.

Kernels here know nothing about autograd; Triton is imported at the first launch.
"""
from __future__ import annotations

import functools

from .. import _dispatch, cuda
from .. import dtypes as D
from .._tensor import Tensor
from ._launch import launch, pointer, triton_source

DTYPES = (D.float16, D.bfloat16, D.float32, D.float64)
BLOCK = 256                      # outputs per program: 2 per thread with 4 warps, loads coalesced along Wo

_kernels = functools.partial(triton_source, "pool")


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _longest(n_in: int, n_out: int, axis: tuple, adaptive: bool) -> int:
    """The most taps a window has along one axis."""
    return _cdiv(n_in, n_out) + 1 if adaptive else axis[0]


def _block() -> int:
    return 64 if cuda.EMULATED else BLOCK


def _acc(t: Tensor):
    tl = _kernels().tl
    return tl.float64 if t.dtype is D.float64 else tl.float32


def _run(kernel, operands: tuple, out: Tensor, *scalars, **constexprs) -> None:
    """Launch ``kernel`` with one program per ``BLOCK`` elements of ``out`` (its result): the
    operands' pointers, the element count, then ``scalars``."""
    total = out.numel()
    if total == 0:
        return
    block = _block()
    launch(kernel, (_cdiv(total, block),), *[pointer(t) for t in operands], total, *scalars, **constexprs,
           ACC=_acc(out), BLOCK=block)


def _most_windows(n_in: int, n_out: int, axis: tuple, adaptive: bool) -> int:
    """The most windows one input position lies in along one axis."""
    return _cdiv(n_out, n_in) + 1 if adaptive else _cdiv(axis[0], axis[1])


def _avg_constexprs(geom) -> dict:
    return dict(ADAPTIVE=geom.adaptive, COUNT_PAD=geom.count_include_pad, DIVISOR=geom.divisor)


@_dispatch.register("max_pool2d", "cuda", DTYPES)
def max_pool2d(x: Tensor, out: Tensor, idx: Tensor, geom) -> None:
    (H, W), (Ho, Wo) = x._shape[2:], out._shape[2:]
    _run(_kernels().max_pool_kernel, (x, out, idx), out, x._shape[1], H, W, Ho, Wo, *x._strides, *geom.h, *geom.w,
         _longest(H, Ho, geom.h, geom.adaptive), _longest(W, Wo, geom.w, geom.adaptive), ADAPTIVE=geom.adaptive)


@_dispatch.register("avg_pool2d", "cuda", DTYPES)
def avg_pool2d(x: Tensor, out: Tensor, geom) -> None:
    (H, W), (Ho, Wo) = x._shape[2:], out._shape[2:]
    _run(_kernels().avg_pool_kernel, (x, out), out, x._shape[1], H, W, Ho, Wo, *x._strides, *geom.h[:3], *geom.w[:3],
         _longest(H, Ho, geom.h, geom.adaptive), _longest(W, Wo, geom.w, geom.adaptive), **_avg_constexprs(geom))


@_dispatch.register("avg_pool2d_backward", "cuda", DTYPES)
def avg_pool2d_backward(g: Tensor, gx: Tensor, geom) -> None:
    (H, W), (Ho, Wo) = gx._shape[2:], g._shape[2:]
    _run(_kernels().avg_pool_backward_kernel, (g, gx), gx, g._shape[1], H, W, Ho, Wo, *g._strides, *geom.h[:3], *geom.w[:3],
         _most_windows(H, Ho, geom.h, geom.adaptive), _most_windows(W, Wo, geom.w, geom.adaptive),
         **_avg_constexprs(geom))
