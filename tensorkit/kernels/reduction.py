"""Triton reductions on the cuda device: the host side of ``kernels/src/reduction.py``.

The GPU twin of ``cpu/reduction.py``, registered for the same ops and dtypes. Each kernel
gets ``(op, x, outs, dims, params)`` from ``ops/reduction.py``: ``x`` of any strides, fresh
contiguous ``outs`` (the reduced shape, or x's shape for scans and softmax), sorted ``dims``.

A call goes: view x as ``(outer, n, inner)`` reduced over ``n`` with one stride per axis
(``_geometry``: the dims before, in and after the reduced block must each collapse into one
strided run; otherwise one contiguous copy, permuted so that the reduced dims come last when
they are not adjacent) -> pick the tile, the warps and the split (``_reduce_plan``,
``_along_plan``) -> launch (``_launch.launch``). Geometry and plan are cached per (shape,
strides, dims), so a repeated call costs little more than the launch.

Row reductions (``inner == 1``) are passed to the kernels as columns of a ``(1, n, rows)``
view: one kernel then serves rows (loads along ``n``) and columns (loads along ``inner``);
see the kernel module. When there are too few programs to fill the GPU and ``n`` is long,
``n`` is split into chunks reduced by separate programs into a small buffer of partial
results, which a second launch of the same kernel reduces: deterministic, no atomics.

Semantics are the CPU backend's: integer sums and products in int64, float16/bfloat16 in
float32 (rounded once), NaN propagates through max/min, argmax/argmin give the first index of
the extreme with NaN as the extreme, empty reductions give the identity. Kernels here know
nothing about autograd; Triton is imported at the first launch.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np

from .. import _dispatch
from .. import dtypes as D
from .._tensor import Tensor
from ._launch import launch, pointer, triton_source
from .pointwise import copy_into

# Strategy thresholds (elements). Tests lower them to reach every path with tiny tensors.
# ROW_BLOCK, COL_BLOCK, TILE: measured best over row and column sums of six shapes from
# (128, 128, 512) to (256, 262144) float32 on an H200 (2026-11-29); 4096/128/4096 was 2-23% slower.
ROW_BLOCK = 2048        # a row-reduction step: 2048 contiguous elements, 4 warps x 16 per thread
COL_BLOCK = 64          # inner positions of a column tile (256 bytes of float32 per row: coalesced)
TILE = 2048             # elements of one [BLOCK_N, BLOCK_K] tile (short rows share a program)
SPLIT_PROGRAMS = 1024   # split n while fewer programs than this would run (~8 per SM on an H100)
SPLIT_MIN = 32768       # ... and only into chunks of at least this many elements
SOFTMAX_BLOCK = 8192    # softmax slices up to this long are held in registers: one read, one write
SCAN_BLOCK = 1024       # a scan step along n

_HALF = (D.float16, D.bfloat16)
_kernels = functools.partial(triton_source, "reduction")   # the @triton.jit functions, on first use



def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _warps(elements: int, most: int = 8) -> int:
    """Warps for a tile: about 16 elements per thread (4 vector loads), at most ``most``."""
    return max(1, min(most, elements // 512))


def _acc_dtype(dtype: D.DType) -> D.DType:
    """The kernels' accumulator type (see the kernel module)."""
    if dtype.is_floating_point:
        return D.float32 if dtype in _HALF else dtype
    return D.int64


def _new(shape, dtype: D.DType, like: Tensor) -> Tensor:
    from ..ops.creation import new_tensor
    return new_tensor(shape, dtype, like._storage.device)


# ---- geometry: x as (outer, n, inner) --------------------------------------------------------------
def _collapse(sizes, strides):
    """(size, stride) of dims that walk memory as one strided run, else None."""
    size, stride = 1, 0
    for s, st in zip(reversed(sizes), reversed(strides)):
        if s == 1:
            continue
        if size == 1:
            size, stride = s, st
        elif st == stride * size:
            size *= s
        else:
            return None
    return size, stride


class _Geometry(NamedTuple):
    copy: object          # None: x as it is; "contiguous"; or the permutation to make contiguous
    outer: int
    n: int
    inner: int
    strides: tuple        # (stride_o, stride_n, stride_k) of x (or of its copy)


_geometries: dict = {}


def _geometry(x: Tensor, dims: tuple) -> _Geometry:
    key = (x._shape, x._strides, dims)
    g = _geometries.get(key)
    if g is None:
        g = _geometries[key] = _find_geometry(x._shape, x._strides, dims)
    return g


def _find_geometry(shape, strides, dims) -> _Geometry:
    ndim = len(shape)
    if dims and dims[-1] - dims[0] + 1 != len(dims):
        # reduced dims apart: one permuted copy puts them last, (kept..., reduced...) = (outer, n, 1)
        kept = tuple(d for d in range(ndim) if d not in dims)
        perm = kept + tuple(dims)
        pshape = tuple(shape[d] for d in perm)
        g = _find_geometry(pshape, _contiguous_strides(pshape), tuple(range(len(kept), ndim)))
        return g._replace(copy=perm)
    lo, hi = (dims[0], dims[-1] + 1) if dims else (ndim, ndim)   # a 0-d x reduces nothing: n == 1
    groups = [_collapse(shape[a:b], strides[a:b]) for a, b in ((0, lo), (lo, hi), (hi, ndim))]
    if None in groups:
        g = _find_geometry(shape, _contiguous_strides(shape), dims)
        return g._replace(copy="contiguous")
    (outer, so), (n, sn), (inner, sk) = groups
    return _Geometry(None, outer, n, inner, (so, sn, sk))


def _contiguous_strides(shape) -> tuple:
    strides, step = [], 1
    for s in reversed(shape):
        strides.append(step)
        step *= max(s, 1)
    return tuple(reversed(strides))


def _materialize(x: Tensor, g: _Geometry) -> Tensor:
    """x, or the contiguous (permuted) copy ``g`` asks for. The copy is this kernel's own
    step (``copy_into``), not a ``copy`` op autograd and the tracer would see."""
    if g.copy is None:
        return x
    if g.copy != "contiguous":
        perm = g.copy
        x = Tensor._make(x._storage, x._offset, tuple(x._shape[d] for d in perm),
                         tuple(x._strides[d] for d in perm), x.dtype)
    out = _new(x._shape, x.dtype, x)
    copy_into(x, out)
    return out


# ---- plans: tile shape, warps, split -------------------------------------------------------------------
class _Plan(NamedTuple):
    outer: int
    n: int
    inner: int
    strides: tuple        # of the input, as the kernel indexes it
    block_n: int
    block_k: int
    warps: int
    chunks: int           # programs along n (1: not split)
    chunk: int            # rows per chunk
    grid: tuple
    options: dict         # Triton's launch options ({"num_warps": warps}), built once


def _make_plan(outer, n, inner, strides, bn, bk, warps, chunks=1, chunk=0) -> _Plan:
    return _Plan(outer, n, inner, strides, bn, bk, warps, chunks, chunk, (outer * _cdiv(inner, bk), chunks),
                 {"num_warps": warps})


def _as_columns(outer, n, inner, strides):
    """Rows (inner == 1) become the columns of a (1, n, rows) view: one kernel shape for both."""
    if inner == 1 and outer > 1:
        so, sn, _ = strides
        return 1, n, outer, (0, sn, so)
    return outer, n, inner, strides


def _tile(n: int, inner: int, strides, long: int) -> tuple[int, int]:
    """(BLOCK_N, BLOCK_K): along n up to ``long`` when n is the contiguous axis, else COL_BLOCK
    columns and enough rows to fill a TILE."""
    _, sn, sk = strides
    if sn == 1 and sk != 1:
        bn = min(_pow2(n), long)
        return bn, min(_pow2(inner), max(1, TILE // bn))
    bk = min(_pow2(inner), COL_BLOCK)
    return min(_pow2(n), max(1, TILE // bk)), bk


def _fit_int32(bn: int, bk: int, *stride_pairs) -> tuple[int, int]:
    """Shrink the tile until offsets within it (and a step's advance, BLOCK_N * stride_n) fit
    the kernels' int32 arithmetic; only tensors with rows or columns of 2**31 / 4096 elements
    apart get here. Strides >= 2**31 reach the kernel as int64 and need nothing."""
    def span(bn, bk):
        return max((bn * abs(sn) + bk * abs(sk) for sn, sk in stride_pairs if max(abs(sn), abs(sk)) < 2 ** 31),
                   default=0)
    while (bn > 1 or bk > 1) and span(bn, bk) >= 2 ** 31:
        if bn * max(abs(sn) for sn, _ in stride_pairs) >= bk * max(abs(sk) for _, sk in stride_pairs) and bn > 1:
            bn //= 2
        else:
            bk //= 2
    return bn, bk


def _reduce_plan(outer, n, inner, strides, split: bool = True) -> _Plan:
    outer, n, inner, strides = _as_columns(outer, n, inner, strides)
    bn, bk = _fit_int32(*_tile(n, inner, strides, ROW_BLOCK), strides[1:])
    programs = outer * _cdiv(inner, bk)
    # chunk: whole steps (only the last chunk has a tail), and a multiple of 16 elements: Triton
    # then knows each chunk's start is aligned and vectorizes the loads (also when chunks == 1)
    chunks, chunk = 1, _cdiv(max(n, 1), bn) * bn
    min_rows = max(bn, SPLIT_MIN // bk)
    if split and programs < SPLIT_PROGRAMS and n >= 2 * min_rows:
        chunks = min(_cdiv(SPLIT_PROGRAMS, programs), n // min_rows)
        chunk = _cdiv(_cdiv(n, chunks), bn) * bn
        chunks = _cdiv(n, chunk)
    return _make_plan(outer, n, inner, strides, bn, bk, _warps(bn * bk), chunks, chunk)


def _partial_plan(plan: _Plan) -> _Plan:
    """The second pass: reduce the (outer, chunks, inner) partial results over chunks."""
    c, k = plan.chunks, plan.inner
    return _reduce_plan(plan.outer, c, k, (c * k, k, 1), split=False)


def _reduce_plans(g: _Geometry) -> tuple[_Plan, _Plan | None]:
    """The plan of a reduction, and of its second pass when it is split."""
    plan = _reduce_plan(g.outer, g.n, g.inner, g.strides)
    return plan, (_partial_plan(plan) if plan.chunks > 1 else None)


_plans: dict = {}


def _start(kind: str, x: Tensor, dims: tuple, make):
    """(x or its copy, the plan ``make(geometry)``, the kernel module), ready to launch. The
    geometry and the plan are cached per (kind, shape, strides, dims)."""
    key = (kind, x._shape, x._strides, dims)
    cached = _plans.get(key)
    if cached is None:
        g = _geometry(x, dims)
        cached = _plans[key] = (g, make(g))
    g, plan = cached
    x = _materialize(x, g)
    return x, plan, _kernels()


def clear_caches() -> None:
    """Forget cached geometries and plans (after changing the thresholds above)."""
    _geometries.clear()
    _plans.clear()


def _partials(plan: _Plan, dtype: D.DType, like: Tensor) -> Tensor:
    """A buffer for the first pass of a split reduction: (outer, chunks, inner), contiguous."""
    return _new((plan.outer * plan.chunks * plan.inner,), dtype, like)


# ---- sum, prod, amax, amin, all, any, norm -----------------------------------------------------------
# (MAP, COMBINE, FINISH), as named in kernels.src.reduction, of each simple reduction
_SIMPLE = {"sum": ("NONE", "ADD", "NONE"), "prod": ("NONE", "MUL", "NONE"), "amax": ("NONE", "MAX", "NONE"),
           "amin": ("NONE", "MIN", "NONE"), "all": ("NONZERO", "MIN", "NONE"), "any": ("NONZERO", "MAX", "NONE")}
_NORMS = {2.0: ("SQUARE", "ADD", "SQRT"), 1.0: ("ABS", "ADD", "NONE"), math.inf: ("ABS", "MAX", "NONE"),
          -math.inf: ("ABS", "MIN", "NONE"), 0.0: ("NONZERO", "ADD", "NONE")}     # any other p: POW, ADD, ROOT
_codes: dict = {}


def _simple_codes(src, op: str, p: float | None) -> tuple:
    """(MAP, COMBINE, FINISH, p as the bits of a float64) for the kernel; cached."""
    key = (op, p)
    codes = _codes.get(key)
    if codes is None:
        names = _NORMS.get(p, ("POW", "ADD", "ROOT")) if op == "norm" else _SIMPLE[op]
        p_bits = int(np.float64(p or 0.0).view(np.int64))             # p exactly, whatever the dtype
        codes = _codes[key] = tuple(getattr(src, name).value for name in names) + (p_bits,)
    return codes


def _reduce(op: str, x: Tensor, outs, dims, params) -> None:
    (out,) = outs
    if out.numel() == 0:
        return
    x, (plan, second), src = _start("reduce", x, dims, _reduce_plans)
    map_, combine, finish, p_bits = _simple_codes(src, op, params.get("p"))
    if second is None:
        _run_reduce(src, plan, x, out, map_, combine, finish, p_bits)
        return
    part = _partials(plan, _acc_dtype(x.dtype), x)
    _run_reduce(src, plan, x, part, map_, combine, 0, p_bits)       # partial results: not finished
    _run_reduce(src, second, part, out, 0, combine, finish, p_bits)  # ... already mapped


def _run_reduce(src, p: _Plan, inp: Tensor, dst: Tensor, map_: int, combine: int, finish: int, p_bits: int):
    launch(src.reduce_kernel, p.grid, pointer(inp), pointer(dst), p.n, p.inner, p.chunk, *p.strides, p_bits,
           options=p.options, MAP=map_, COMBINE=combine, FINISH=finish, BLOCK_N=p.block_n, BLOCK_K=p.block_k)


# ---- max/min with indices, argmax, argmin ----------------------------------------------------------
def _arg(op: str, x: Tensor, outs, dims, params) -> None:
    values, indices = outs if len(outs) == 2 else (None, outs[0])
    if indices.numel() == 0:
        return
    x, (plan, second), src = _start("reduce", x, dims, _reduce_plans)
    is_max = op in ("max_with_indices", "argmax")

    def run(p: _Plan, inp, idx, vals, idx_out):
        launch(src.arg_kernel, p.grid, pointer(inp), pointer(idx if idx is not None else inp),
               pointer(vals if vals is not None else idx_out), pointer(idx_out), p.n, p.inner, p.chunk, *p.strides,
               options=p.options, IS_MAX=is_max, HAS_IDX=idx is not None,
               STORE_VALUES=vals is not None, BLOCK_N=p.block_n, BLOCK_K=p.block_k)

    if second is None:
        run(plan, x, None, values, indices)
        return
    part_v, part_i = _partials(plan, _acc_dtype(x.dtype), x), _partials(plan, D.int64, x)
    run(plan, x, None, part_v, part_i)
    run(second, part_v, part_i, values, indices)


# ---- var ---------------------------------------------------------------------------------------------
def _var(op: str, x: Tensor, outs, dims, params) -> None:
    (out,) = outs
    if out.numel() == 0:
        return
    x, (plan, second), src = _start("reduce", x, dims, _reduce_plans)
    correction = float(params["correction"])

    def run(p: _Plan, summary, outs3, summaries: bool, finish: bool):
        launch(src.var_kernel, p.grid, *(pointer(t) for t in summary), *(pointer(t) for t in outs3),
               p.n, p.inner, p.chunk, *p.strides, correction, options=p.options,
               SUMMARIES=summaries, FINISH=finish, BLOCK_N=p.block_n, BLOCK_K=p.block_k)

    if second is None:
        run(plan, (x, x, x), (out, out, out), False, True)
        return
    part = [_partials(plan, _acc_dtype(x.dtype), x) for _ in range(3)]     # mean, m2, count per chunk
    run(plan, (x, x, x), part, False, False)
    run(second, part, (out, out, out), True, True)


# ---- logsumexp ---------------------------------------------------------------------------------------
def _logsumexp(op: str, x: Tensor, outs, dims, params) -> None:
    (out,) = outs
    if out.numel() == 0:
        return
    x, (plan, second), src = _start("reduce", x, dims, _reduce_plans)

    def run(p: _Plan, inp, dst):
        launch(src.lse_kernel, p.grid, pointer(inp), pointer(dst), p.n, p.inner, p.chunk, *p.strides,
               options=p.options, BLOCK_N=p.block_n, BLOCK_K=p.block_k)

    if second is None:
        run(plan, x, out)
        return
    part = _partials(plan, _acc_dtype(x.dtype), x)
    run(plan, x, part)
    run(second, part, out)


# ---- softmax, log_softmax, cumsum, cumprod: outputs shaped like x --------------------------------------
class _AlongPlan(NamedTuple):
    plan: _Plan
    out_strides: tuple
    single: bool


def _along_plan(g: _Geometry, long: int, single_max: int) -> _AlongPlan:
    """``single``: a whole slice fits one tile of at most ``single_max`` elements (with
    coalesced columns, when inner is the contiguous axis)."""
    outer, n, inner = g.outer, g.n, g.inner
    out_strides = (n * inner, inner, 1)         # the output is contiguous (outer, n, inner)
    if inner == 1 and outer > 1:                # rows as columns, for the output too
        (outer, n, inner, strides), out_strides = _as_columns(outer, n, inner, g.strides), (0, 1, n)
    else:
        strides = g.strides
    bn, bk = _tile(n, inner, strides, long)
    rows = strides[1] == 1 and strides[2] != 1
    single = _pow2(n) * (1 if rows else bk) <= single_max
    if single:
        bn = _pow2(n)
        bk = min(_pow2(inner), max(1, TILE // bn)) if rows else bk
    bn, bk = _fit_int32(bn, bk, strides[1:], out_strides[1:])
    single = single and bn >= n
    return _AlongPlan(_make_plan(outer, n, inner, strides, bn, bk, _warps(bn * bk, 16 if single else 8)),
                      out_strides, single)


def _softmax(op: str, x: Tensor, outs, dims, params) -> None:
    (out,) = outs
    if out.numel() == 0:
        return
    x, a, src = _start("softmax", x, dims, lambda g: _along_plan(g, ROW_BLOCK, SOFTMAX_BLOCK))
    p = a.plan
    launch(src.softmax_kernel, p.grid, pointer(x), pointer(out), p.n, p.inner, *p.strides, *a.out_strides,
           options=p.options, LOG=op == "log_softmax", SINGLE=a.single, BLOCK_N=p.block_n,
           BLOCK_K=p.block_k)


def _scan(op: str, x: Tensor, outs, dims, params) -> None:
    (out,) = outs
    if out.numel() == 0:
        return
    x, a, src = _start("scan", x, dims, lambda g: _along_plan(g, SCAN_BLOCK, 0))
    p = a.plan
    launch(src.scan_kernel, p.grid, pointer(x), pointer(out), p.n, p.inner, *p.strides, *a.out_strides,
           options=p.options, IS_SUM=op == "cumsum", BLOCK_N=p.block_n, BLOCK_K=p.block_k)


# ---- registration: the CPU backend's ops and dtypes ------------------------------------------------------
for _op, _fn, _dtypes in [
        ("sum", _reduce, D.ALL_DTYPES), ("prod", _reduce, D.ALL_DTYPES), ("amax", _reduce, D.ALL_DTYPES),
        ("amin", _reduce, D.ALL_DTYPES), ("all", _reduce, D.ALL_DTYPES), ("any", _reduce, D.ALL_DTYPES),
        ("norm", _reduce, D.FLOAT_DTYPES),
        ("max_with_indices", _arg, D.ALL_DTYPES), ("min_with_indices", _arg, D.ALL_DTYPES),
        ("argmax", _arg, D.ALL_DTYPES), ("argmin", _arg, D.ALL_DTYPES),
        ("var", _var, D.FLOAT_DTYPES), ("logsumexp", _logsumexp, D.FLOAT_DTYPES),
        ("softmax", _softmax, D.FLOAT_DTYPES), ("log_softmax", _softmax, D.FLOAT_DTYPES),
        ("cumsum", _scan, D.ALL_DTYPES), ("cumprod", _scan, D.ALL_DTYPES)]:
    _dispatch.register(_op, "cuda", _dtypes)(_fn)
