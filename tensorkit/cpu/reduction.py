"""CPU reduction kernels (Numba) over plain numpy arrays.

Layout contract: the caller views every reduction as a 3-D array ``x`` of shape
``(outer, n, inner)`` reduced over axis 1 (``n`` may be 0), C-contiguous or any view with
non-negative strides. Outputs are preallocated, C-contiguous, shape ``(outer, inner)``
(``(outer, n, inner)`` for scans and softmax), in the dtype the caller wants; kernels
accumulate in the output's dtype unless a function says it widens.

Kernels here know nothing about Tensor, autograd, dtype promotion or error checking of the
user's arguments (an empty ``amax`` is the caller's error to raise).

Two loop shapes, chosen by the launcher:

- ``inner == 1`` ("rows"): each slice is a contiguous row; the loop runs along it. When there
  are fewer rows than threads, rows are split into chunks reduced in parallel, then the
  chunk results are reduced again (only for ops whose partial results combine that way).
- ``inner > 1`` ("columns"): the innermost loop runs over ``inner`` (contiguous), keeping a
  row of partial results; work is split into tiles of ``inner`` so partial rows stay in L1.

Every driver is compiled twice from one body, serial and ``parallel=True``; inputs smaller
than ``_PARALLEL_MIN`` elements use the serial one so they do not pay thread start-up.
"""
from __future__ import annotations

import math
import types

import numba
import numpy as np
from numba import prange

from .. import _dispatch
from ._vecmath import vexp
from .. import dtypes as D

__all__ = [
    "sum", "prod", "amax", "amin", "max_with_indices", "min_with_indices", "argmax",
    "argmin", "var", "all", "any", "logsumexp", "norm", "cumsum", "cumprod", "softmax",
    "log_softmax",
]

_PARALLEL_MIN = 1 << 15  # elements; below this a parallel launch (~10 us) costs more than it saves
_PAIRWISE_LEAF = 1024     # the pairwise sum's leaf; LLVM vectorises it into 32 accumulators
_ROW_BLOCK = 64          # column sums add rows in blocks of this many, then add the block in
_TILE = 2048             # columns of `inner` one task owns; its partial-result rows fit in L1
_MIN_CHUNK = 8192        # smallest piece a row is split into for threading

# error_model="numpy": division by zero gives inf/nan instead of raising, and no checks in loops.
_jit = numba.njit(cache=True, error_model="numpy")
# reassoc only (not nnan/ninf): lets LLVM vectorise float reductions; NaN and inf still propagate.
_jit_reassoc = numba.njit(cache=True, error_model="numpy", fastmath={"reassoc"})


def _serial_and_parallel(body):
    """Compile one driver body as (serial, parallel) kernels; prange is range in the serial one.

    The parallel copy gets its own qualname because Numba's on-disk cache is keyed by it.
    """
    copy = types.FunctionType(body.__code__, body.__globals__, body.__name__ + "_parallel",
                              body.__defaults__, body.__closure__)
    copy.__qualname__ = body.__qualname__ + "_parallel"
    return (numba.njit(cache=True, error_model="numpy")(body),
            numba.njit(cache=True, error_model="numpy", parallel=True)(copy))


# ----------------------------------------------------------------------------------------
# Launch helpers: which kernel, how the work is split.

def _threads(x) -> int:
    """Threads to use for `x` (1 = serial kernel)."""
    return numba.get_num_threads() if x.size >= _PARALLEL_MIN else 1


def _tile_width(outer: int, inner: int, threads: int) -> int:
    """Width of the `inner` tile each task owns: at most _TILE, small enough to feed every thread."""
    width = min(inner, _TILE)
    tiles_wanted = -(-threads // outer)
    if tiles_wanted > 1:
        per_tile = -(-inner // tiles_wanted)
        width = min(width, max(16, (per_tile + 15) // 16 * 16))
    return width


def _row_chunks(outer: int, n: int, threads: int) -> int:
    """Pieces each row is split into so that a few rows still keep every thread busy."""
    if threads == 1 or outer >= 2 * threads:
        return 1
    return max(1, min(-(-4 * threads // outer), n // _MIN_CHUNK))


def _launch(rows, cols, x, out, *args, combine=None):
    """Run a reduction: `rows`/`cols` are (serial, parallel) driver pairs.

    rows(x2, out2, *args) reduces x2[o, chunk c] into out2[o, c]; cols(x, out, width, *args)
    reduces tiles of `inner`. If `combine` (a rows pair) is given, long rows may be split
    into chunks whose partial results `combine` reduces again.
    """
    outer, n, inner = x.shape
    if out.size == 0:
        return out
    threads = _threads(x)
    par = threads > 1
    if inner != 1:
        cols[par](x, out, _tile_width(outer, inner, threads), *args)
        return out
    x2 = x[:, :, 0]
    chunks = _row_chunks(outer, n, threads) if combine is not None else 1
    if chunks == 1:
        rows[par](x2, out, *args)
    else:
        partial = np.empty((outer, chunks), out.dtype)
        rows[par](x2, partial, *args)
        combine[False](partial, out, *args)
    return out


@_jit
def _chunk(c, chunks, n):
    """Bounds of chunk c of `chunks` equal pieces of range(n)."""
    return c * n // chunks, (c + 1) * n // chunks


# ----------------------------------------------------------------------------------------
# sum, prod

@_jit_reassoc
def _sum_leaf(x, lo, hi, zero):
    s = zero
    if x.strides[0] == x.itemsize:  # LLVM vectorises this into 32 interleaved accumulators
        for i in range(np.uint64(lo), np.uint64(hi)):  # unsigned: no negative-index wraparound
            s += x[i]
        return s
    # Strided (or zero-stride) rows stay scalar; keep 4 accumulators so the error does too.
    a0, a1, a2, a3 = zero, zero, zero, zero
    end = lo + (hi - lo) // 4 * 4
    for i in range(lo, end, 4):
        a0 += x[i]
        a1 += x[i + 1]
        a2 += x[i + 2]
        a3 += x[i + 3]
    for i in range(end, hi):
        s += x[i]
    return s + ((a0 + a1) + (a2 + a3))


@_jit
def _sum_1d(x, lo, hi, zero):
    """Pairwise sum of x[lo:hi] (numpy's scheme): rounding error grows like log(n), not n.

    Indices rather than slices: a slice costs an atomic reference-count update per call.
    """
    if hi - lo <= _PAIRWISE_LEAF:
        return _sum_leaf(x, lo, hi, zero)
    mid = lo + (hi - lo) // 2 // 8 * 8
    return _sum_1d(x, lo, mid, zero) + _sum_1d(x, mid, hi, zero)


def _sum_rows(x, out, zero):
    outer, n = x.shape
    chunks = out.shape[1]
    for t in prange(outer * chunks):
        o, c = t // chunks, t % chunks
        lo, hi = _chunk(c, chunks, n)
        out[o, c] = _sum_1d(x[o], lo, hi, zero)


def _sum_cols(x, out, width, zero):
    outer, n, inner = x.shape
    tiles = -(-inner // width)
    for t in prange(outer * tiles):
        o, k0 = t // tiles, t % tiles * width
        m = min(width, inner - k0)
        dst = out[o, k0:k0 + m]
        block = np.empty(m, out.dtype)
        dst[:] = zero
        # Two levels (blocks of rows, then blocks into `dst`) keep float error ~ sqrt(n) terms.
        for j0 in range(0, n, _ROW_BLOCK):
            block[:] = zero
            for j in range(j0, min(j0 + _ROW_BLOCK, n)):
                src = x[o, j, k0:k0 + m]
                for k in range(m):
                    block[k] += src[k]
            for k in range(m):
                dst[k] += block[k]


@_jit_reassoc
def _prod_1d(seg, one):
    p = one
    for i in range(seg.shape[0]):
        p *= seg[i]
    return p


def _prod_rows(x, out, one):
    outer, n = x.shape
    chunks = out.shape[1]
    for t in prange(outer * chunks):
        o, c = t // chunks, t % chunks
        lo, hi = _chunk(c, chunks, n)
        out[o, c] = _prod_1d(x[o, lo:hi], one)


def _prod_cols(x, out, width, one):
    outer, n, inner = x.shape
    tiles = -(-inner // width)
    for t in prange(outer * tiles):
        o, k0 = t // tiles, t % tiles * width
        m = min(width, inner - k0)
        dst = out[o, k0:k0 + m]
        dst[:] = one
        for j in range(n):
            src = x[o, j, k0:k0 + m]
            for k in range(m):
                dst[k] *= src[k]


_sum_rows, _sum_cols = _serial_and_parallel(_sum_rows), _serial_and_parallel(_sum_cols)
_prod_rows, _prod_cols = _serial_and_parallel(_prod_rows), _serial_and_parallel(_prod_cols)


def sum(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out[o, k] = sum_j x[o, j, k], accumulated in out's dtype (pairwise for floats).

    bool counts Trues (give an integer `out`). NaN and inf propagate. n == 0 gives 0.
    """
    return _launch(_sum_rows, _sum_cols, x, out, out.dtype.type(0), combine=_sum_rows)


def prod(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out[o, k] = prod_j x[o, j, k], accumulated in out's dtype. n == 0 gives 1."""
    return _launch(_prod_rows, _prod_cols, x, out, out.dtype.type(1), combine=_prod_rows)


# ----------------------------------------------------------------------------------------
# amax, amin: NaN wins (as PyTorch); `is_max` is a runtime flag, hoisted out of the loops.

@_jit
def _extreme_1d(seg, is_max):
    m = seg[0]
    if is_max:
        for i in range(1, seg.shape[0]):
            v = seg[i]
            m = v if (v > m) | (v != v) else m  # once m is NaN, neither test passes
    else:
        for i in range(1, seg.shape[0]):
            v = seg[i]
            m = v if (v < m) | (v != v) else m
    return m


def _extreme_rows(x, out, is_max):
    outer, n = x.shape
    chunks = out.shape[1]
    for t in prange(outer * chunks):
        o, c = t // chunks, t % chunks
        lo, hi = _chunk(c, chunks, n)
        out[o, c] = _extreme_1d(x[o, lo:hi], is_max)


@_jit
def _extreme_tile(x, dst, k0, is_max):
    """dst[k] = extreme_j x[j, k0 + k] for a tile; x is one (n, inner) slice."""
    m = dst.shape[0]
    dst[:] = x[0, k0:k0 + m]
    for j in range(1, x.shape[0]):
        src = x[j, k0:k0 + m]
        if is_max:
            for k in range(m):
                v = src[k]
                dst[k] = v if (v > dst[k]) | (v != v) else dst[k]
        else:
            for k in range(m):
                v = src[k]
                dst[k] = v if (v < dst[k]) | (v != v) else dst[k]


def _extreme_cols(x, out, width, is_max):
    outer, n, inner = x.shape
    tiles = -(-inner // width)
    for t in prange(outer * tiles):
        o, k0 = t // tiles, t % tiles * width
        _extreme_tile(x[o], out[o, k0:min(k0 + width, inner)], k0, is_max)


_extreme_rows, _extreme_cols = _serial_and_parallel(_extreme_rows), _serial_and_parallel(_extreme_cols)


def _check_nonempty(name, x):
    if x.shape[1] == 0 and x.shape[0] * x.shape[2] > 0:
        raise ValueError(f"{name}: cannot reduce over an empty dimension (n == 0); "
                         "the caller must reject this")


def amax(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out[o, k] = max_j x[o, j, k]; any NaN in the slice gives NaN. Needs n > 0."""
    _check_nonempty("amax", x)
    return _launch(_extreme_rows, _extreme_cols, x, out, True, combine=_extreme_rows)


def amin(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out[o, k] = min_j x[o, j, k]; any NaN in the slice gives NaN. Needs n > 0."""
    _check_nonempty("amin", x)
    return _launch(_extreme_rows, _extreme_cols, x, out, False, combine=_extreme_rows)


# ----------------------------------------------------------------------------------------
# max/min with indices, argmax/argmin: first occurrence wins; NaN is the extreme (PyTorch).

@_jit
def _arg_extreme_1d(seg, is_max):
    m = seg[0]
    at = 0
    if m != m:
        return m, at
    for i in range(1, seg.shape[0]):
        v = seg[i]
        if v != v:
            return v, i
        if (v > m) if is_max else (v < m):  # strict: ties keep the first index
            m = v
            at = i
    return m, at


def _arg_extreme_rows(x, values, indices, is_max):
    for o in prange(x.shape[0]):
        values[o, 0], indices[o, 0] = _arg_extreme_1d(x[o], is_max)


def _arg_extreme_cols(x, values, indices, width, is_max):
    outer, n, inner = x.shape
    tiles = -(-inner // width)
    for t in prange(outer * tiles):
        o, k0 = t // tiles, t % tiles * width
        m = min(width, inner - k0)
        val, idx = values[o, k0:k0 + m], indices[o, k0:k0 + m]
        val[:] = x[o, 0, k0:k0 + m]
        idx[:] = 0
        for j in range(1, n):
            src = x[o, j, k0:k0 + m]
            for k in range(m):
                v, best = src[k], val[k]
                better = (v > best) if is_max else (v < best)
                if better | ((v != v) & (best == best)):  # the first NaN sticks
                    val[k] = v
                    idx[k] = j


_arg_extreme_rows = _serial_and_parallel(_arg_extreme_rows)
_arg_extreme_cols = _serial_and_parallel(_arg_extreme_cols)


def _arg_extreme(name, x, values, indices, is_max):
    _check_nonempty(name, x)
    outer, n, inner = x.shape
    if values.size == 0:
        return values, indices
    threads = _threads(x)
    if inner == 1:
        _arg_extreme_rows[threads > 1](x[:, :, 0], values, indices, is_max)
    else:
        _arg_extreme_cols[threads > 1](x, values, indices, _tile_width(outer, inner, threads),
                                       is_max)
    return values, indices


def max_with_indices(x: np.ndarray, values_out: np.ndarray, indices_out: np.ndarray):
    """values_out, indices_out (int64) = max over axis 1 and the index of its first occurrence.

    NaN counts as the maximum: the index is that of the first NaN (PyTorch). Needs n > 0.
    """
    return _arg_extreme("max", x, values_out, indices_out, True)


def min_with_indices(x: np.ndarray, values_out: np.ndarray, indices_out: np.ndarray):
    """As max_with_indices, for the minimum (NaN still wins)."""
    return _arg_extreme("min", x, values_out, indices_out, False)


def argmax(x: np.ndarray, indices_out: np.ndarray) -> np.ndarray:
    """indices_out[o, k] = index of the first maximum of x[o, :, k] (first NaN if any)."""
    return _arg_extreme("argmax", x, np.empty(indices_out.shape, x.dtype), indices_out, True)[1]


def argmin(x: np.ndarray, indices_out: np.ndarray) -> np.ndarray:
    """indices_out[o, k] = index of the first minimum of x[o, :, k] (first NaN if any)."""
    return _arg_extreme("argmin", x, np.empty(indices_out.shape, x.dtype), indices_out, False)[1]


# ----------------------------------------------------------------------------------------
# var: two passes in float64 (mean, then squared deviations), which avoids the cancellation
# of the one-pass E[x^2] - E[x]^2.

@_jit
def _var_finish(sq, n, correction):
    dof = n - correction
    if n == 0:
        return np.nan
    return sq / dof if dof > 0 else sq * np.inf  # PyTorch: dof <= 0 gives inf, or nan if sq == 0


@_jit_reassoc
def _var_1d(seg, correction):
    n = seg.shape[0]
    s = 0.0
    for i in range(n):
        s += seg[i]
    mean = s / n
    sq = 0.0
    for i in range(n):
        d = seg[i] - mean
        sq += d * d
    return _var_finish(sq, n, correction)


def _var_rows(x, out, correction):
    for o in prange(x.shape[0]):
        out[o, 0] = _var_1d(x[o], correction)


def _var_cols(x, out, width, correction):
    outer, n, inner = x.shape
    tiles = -(-inner // width)
    for t in prange(outer * tiles):
        o, k0 = t // tiles, t % tiles * width
        m = min(width, inner - k0)
        mean = np.zeros(m)
        sq = np.zeros(m)
        for j in range(n):
            src = x[o, j, k0:k0 + m]
            for k in range(m):
                mean[k] += src[k]
        mean /= n
        for j in range(n):
            src = x[o, j, k0:k0 + m]
            for k in range(m):
                d = src[k] - mean[k]
                sq[k] += d * d
        for k in range(m):
            out[o, k0 + k] = _var_finish(sq[k], n, correction)


_var_rows, _var_cols = _serial_and_parallel(_var_rows), _serial_and_parallel(_var_cols)


def var(x: np.ndarray, out: np.ndarray, correction: float = 1) -> np.ndarray:
    """out[o, k] = sum_j (x[o, j, k] - mean)^2 / (n - correction), in float64 internally.

    n - correction <= 0 gives inf (nan where all deviations are 0), n == 0 gives nan, as
    PyTorch (which also warns; the caller's job).
    """
    return _launch(_var_rows, _var_cols, x, out, float(correction))


# ----------------------------------------------------------------------------------------
# all, any: nonzero (NaN included) is True; `is_all` is a runtime flag.

@_jit
def _all_any_1d(seg, is_all):
    for i in range(seg.shape[0]):
        if (seg[i] != 0) != is_all:  # early exit on the first deciding element
            return not is_all
    return is_all


def _all_any_rows(x, out, is_all):
    outer, n = x.shape
    chunks = out.shape[1]
    for t in prange(outer * chunks):
        o, c = t // chunks, t % chunks
        lo, hi = _chunk(c, chunks, n)
        out[o, c] = _all_any_1d(x[o, lo:hi], is_all)


def _all_any_cols(x, out, width, is_all):
    outer, n, inner = x.shape
    tiles = -(-inner // width)
    for t in prange(outer * tiles):
        o, k0 = t // tiles, t % tiles * width
        m = min(width, inner - k0)
        dst = out[o, k0:k0 + m]
        dst[:] = is_all
        for j in range(n):
            src = x[o, j, k0:k0 + m]
            if is_all:
                for k in range(m):
                    dst[k] &= src[k] != 0
            else:
                for k in range(m):
                    dst[k] |= src[k] != 0


_all_any_rows, _all_any_cols = _serial_and_parallel(_all_any_rows), _serial_and_parallel(_all_any_cols)


def all(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out[o, k] (bool) = every x[o, :, k] is nonzero (NaN is nonzero). n == 0 gives True."""
    return _launch(_all_any_rows, _all_any_cols, x, out, True, combine=_all_any_rows)


def any(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out[o, k] (bool) = some x[o, :, k] is nonzero (NaN is nonzero). n == 0 gives False."""
    return _launch(_all_any_rows, _all_any_cols, x, out, False, combine=_all_any_rows)


# ----------------------------------------------------------------------------------------
# logsumexp, softmax, log_softmax: exp(x - max) never overflows. In the column kernels a
# non-finite max is replaced by a shift of 0, so that all -inf gives log(0) = -inf, +inf
# gives inf and NaN gives NaN with no special case. softmax keeps no such care: an all -inf
# row gives exp(-inf - -inf) = nan, which is what PyTorch returns.

@_jit_reassoc
def _sum_exp_1d(seg, shift, dst, store):
    """sum_j exp(seg[j] - shift); also writes the exps to dst when `store` (softmax)."""
    s = shift - shift
    if store:
        for i in range(seg.shape[0]):
            e = vexp(seg[i] - shift)
            dst[i] = e
            s += e
    else:
        for i in range(seg.shape[0]):
            s += vexp(seg[i] - shift)
    return s


@_jit
def _logsumexp_1d(seg):
    if seg.shape[0] == 0:
        return -np.inf
    m = _extreme_1d(seg, True)
    if not abs(m) < np.inf:
        return m  # NaN; all -inf gives -inf; any +inf gives +inf
    return m + math.log(_sum_exp_1d(seg, m, seg, False))


def _logsumexp_rows(x, out):
    outer, n = x.shape
    chunks = out.shape[1]
    for t in prange(outer * chunks):
        o, c = t // chunks, t % chunks
        lo, hi = _chunk(c, chunks, n)
        out[o, c] = _logsumexp_1d(x[o, lo:hi])


@_jit
def _shift_tile(x, shift, k0):
    """shift[k] = max_j x[j, k0 + k] where finite, else 0 (see above); -inf if n == 0."""
    if x.shape[0] == 0:
        shift[:] = -np.inf
        return
    _extreme_tile(x, shift, k0, True)
    for k in range(shift.shape[0]):
        if not abs(shift[k]) < np.inf:
            shift[k] = 0


def _logsumexp_cols(x, out, width):
    outer, n, inner = x.shape
    tiles = -(-inner // width)
    for t in prange(outer * tiles):
        o, k0 = t // tiles, t % tiles * width
        m = min(width, inner - k0)
        shift = out[o, k0:k0 + m]
        _shift_tile(x[o], shift, k0)
        s = np.zeros(m, out.dtype)
        for j in range(n):
            src = x[o, j, k0:k0 + m]
            for k in range(m):
                s[k] += vexp(src[k] - shift[k])
        for k in range(m):
            shift[k] += math.log(s[k])


_logsumexp_rows = _serial_and_parallel(_logsumexp_rows)
_logsumexp_cols = _serial_and_parallel(_logsumexp_cols)


def logsumexp(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out[o, k] = log(sum_j exp(x[o, j, k])), shifted by the max so it never overflows.

    Floating x and out of the same dtype. All -inf (or n == 0) gives -inf; +inf gives inf.
    """
    return _launch(_logsumexp_rows, _logsumexp_cols, x, out, combine=_logsumexp_rows)


def _softmax_rows(x, out, log):
    for o in prange(x.shape[0]):
        src, dst = x[o], out[o]
        m = _extreme_1d(src, True)
        s = _sum_exp_1d(src, m, dst, not log)
        if log:
            c = math.log(s)
            for j in range(src.shape[0]):
                dst[j] = (src[j] - m) - c
        else:
            r = 1 / s
            for j in range(src.shape[0]):
                dst[j] *= r


def _softmax_cols(x, out, width, log):
    outer, n, inner = x.shape
    tiles = -(-inner // width)
    for t in prange(outer * tiles):
        o, k0 = t // tiles, t % tiles * width
        m = min(width, inner - k0)
        mx = np.empty(m, x.dtype)
        _extreme_tile(x[o], mx, k0, True)
        s = np.zeros(m, out.dtype)
        for j in range(n):
            src, dst = x[o, j, k0:k0 + m], out[o, j, k0:k0 + m]
            for k in range(m):
                e = vexp(src[k] - mx[k])
                s[k] += e
                if not log:
                    dst[k] = e
        if log:
            for k in range(m):
                s[k] = math.log(s[k])
        else:
            s[:] = 1 / s
        for j in range(n):
            src, dst = x[o, j, k0:k0 + m], out[o, j, k0:k0 + m]
            if log:
                for k in range(m):
                    dst[k] = (src[k] - mx[k]) - s[k]
            else:
                for k in range(m):
                    dst[k] *= s[k]


_softmax_rows, _softmax_cols = _serial_and_parallel(_softmax_rows), _serial_and_parallel(_softmax_cols)


def _softmax(x, out, log):
    outer, n, inner = x.shape
    if out.size == 0:
        return out
    threads = _threads(x)
    if inner == 1:
        _softmax_rows[threads > 1](x[:, :, 0], out[:, :, 0], log)
    else:
        _softmax_cols[threads > 1](x, out, _tile_width(outer, inner, threads), log)
    return out


def softmax(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out[o, j, k] = exp(x[o, j, k] - max) / sum_j exp(x[o, j, k] - max), floating dtypes.

    A slice that is all -inf gives nan, as PyTorch does.
    """
    return _softmax(x, out, False)


def log_softmax(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out[o, j, k] = (x[o, j, k] - max) - log(sum_j exp(x[o, j, k] - max)); all -inf gives nan."""
    return _softmax(x, out, True)


# ----------------------------------------------------------------------------------------
# norm: accumulated in float64. `mode` encodes p so that one compiled kernel serves all p.

_NORM_MODES = {2.0: 0, 1.0: 1, math.inf: 2, -math.inf: 3, 0.0: 4}  # anything else: 5


@_jit_reassoc
def _norm_step(acc, v, mode, p):
    a = abs(np.float64(v))
    if mode == 0:
        return acc + a * a
    if mode == 1:
        return acc + a
    if mode == 2:
        return a if (a > acc) | (a != a) else acc  # NaN wins
    if mode == 3:
        return a if (a < acc) | (a != a) else acc
    if mode == 4:
        return acc + (1.0 if a != 0 else 0.0)  # NaN is nonzero (PyTorch)
    return acc + a ** p


@_jit
def _norm_init(mode):
    return np.inf if mode == 3 else 0.0


@_jit
def _norm_finish(acc, mode, p):
    if mode == 0:
        return math.sqrt(acc)
    if mode == 5:
        return acc ** (1 / p)
    return acc


def _norm_rows(x, out, mode, p):
    outer, n = x.shape
    chunks = out.shape[1]
    for t in prange(outer * chunks):
        o, c = t // chunks, t % chunks
        lo, hi = _chunk(c, chunks, n)
        acc = _norm_init(mode)
        for j in range(lo, hi):
            acc = _norm_step(acc, x[o, j], mode, p)
        out[o, c] = _norm_finish(acc, mode, p)


def _norm_cols(x, out, width, mode, p):
    outer, n, inner = x.shape
    tiles = -(-inner // width)
    for t in prange(outer * tiles):
        o, k0 = t // tiles, t % tiles * width
        m = min(width, inner - k0)
        acc = np.full(m, _norm_init(mode))
        for j in range(n):
            src = x[o, j, k0:k0 + m]
            for k in range(m):
                acc[k] = _norm_step(acc[k], src[k], mode, p)
        for k in range(m):
            out[o, k0 + k] = _norm_finish(acc[k], mode, p)


_norm_rows, _norm_cols = _serial_and_parallel(_norm_rows), _serial_and_parallel(_norm_cols)


def norm(x: np.ndarray, out: np.ndarray, p: float = 2.0) -> np.ndarray:
    """out[o, k] = vector p-norm of x[o, :, k]: (sum_j |x|^p)^(1/p), accumulated in float64.

    p = inf / -inf: max / min of |x| (NaN propagates); p = 0: count of nonzeros (NaN counts).
    n == 0 gives 0 (PyTorch rejects empty inf norms; the caller's job).
    """
    p = float(p)
    mode = _NORM_MODES.get(p, 5)
    # Partial norms of row chunks combine into the norm (for p = 0 they would need a sum).
    return _launch(_norm_rows, _norm_cols, x, out, mode, p,
                   combine=_norm_rows if mode != 4 else None)


# ----------------------------------------------------------------------------------------
# cumsum, cumprod: scans along axis 1. Floats accumulate in float64 (as PyTorch on the CPU),
# so out[j] is the rounded exact-ish prefix, not a running float32 sum.

def _scan_rows(x, out, first, is_sum):
    for o in prange(x.shape[0]):
        acc = first
        src, dst = x[o], out[o]
        if is_sum:
            for j in range(src.shape[0]):
                acc += src[j]
                dst[j] = acc
        else:
            for j in range(src.shape[0]):
                acc *= src[j]
                dst[j] = acc


def _scan_cols(x, out, width, first, is_sum):
    outer, n, inner = x.shape
    tiles = -(-inner // width)
    for t in prange(outer * tiles):
        o, k0 = t // tiles, t % tiles * width
        m = min(width, inner - k0)
        acc = np.full(m, first)
        for j in range(n):
            src, dst = x[o, j, k0:k0 + m], out[o, j, k0:k0 + m]
            if is_sum:
                for k in range(m):
                    acc[k] += src[k]
                    dst[k] = acc[k]
            else:
                for k in range(m):
                    acc[k] *= src[k]
                    dst[k] = acc[k]


_scan_rows, _scan_cols = _serial_and_parallel(_scan_rows), _serial_and_parallel(_scan_cols)


def _scan(x, out, is_sum):
    outer, n, inner = x.shape
    if out.size == 0:
        return out
    acc_type = np.float64 if out.dtype.kind == "f" else out.dtype.type
    first = acc_type(0 if is_sum else 1)
    threads = _threads(x)
    if inner == 1:
        _scan_rows[threads > 1](x[:, :, 0], out[:, :, 0], first, is_sum)
    else:
        _scan_cols[threads > 1](x, out, _tile_width(outer, inner, threads), first, is_sum)
    return out


def cumsum(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out[o, j, k] = sum_{i <= j} x[o, i, k]; float64 accumulation for float out."""
    return _scan(x, out, True)


def cumprod(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out[o, j, k] = prod_{i <= j} x[o, i, k]; float64 accumulation for float out."""
    return _scan(x, out, False)


# ---- dispatcher registration: Tensors in, (outer, n, inner) numpy views to the kernels ------------
_HALF = (D.float16, D.bfloat16)
_ALL = D.ALL_DTYPES
_FLOATS = D.FLOAT_DTYPES


def _prod_of(sizes) -> int:
    n = 1
    for s in sizes:
        n *= s
    return n


def _as3d(x, dims) -> np.ndarray:
    """x's elements as a C-contiguous (outer, n, inner) array reducing over axis 1: a view of
    a contiguous x when the reduced dims are adjacent, else a copy. Contiguous only, so each
    kernel compiles once per dtype, not once per memory layout as well."""
    a = x._np()
    if x.dtype in _HALF:
        a = a.astype(np.float32)
    return np.ascontiguousarray(_grouped(a, x.ndim, dims))


def _grouped(a: np.ndarray, ndim: int, dims) -> np.ndarray:
    if not dims:
        return a.reshape(1, 1, -1) if ndim == 0 else a.reshape(_prod_of(a.shape), 1, 1)
    shape = a.shape
    lo, hi = dims[0], dims[-1]
    if hi - lo + 1 == len(dims):
        return a.reshape(_prod_of(shape[:lo]), _prod_of(shape[lo:hi + 1]), _prod_of(shape[hi + 1:]))
    kept = [d for d in range(a.ndim) if d not in dims]
    return a.transpose(kept + list(dims)).reshape(_prod_of(shape[d] for d in kept), _prod_of(shape[d] for d in dims), 1)


def _targets(outs, shape):
    """Output arrays of ``shape`` for the kernel: the outputs' own memory, or float32
    stand-ins for half outputs (rounded back by ``_store``)."""
    # outputs are fresh contiguous tensors: their storage reshaped is their memory
    return [np.empty(shape, np.float32) if o.dtype in _HALF else o._storage.data.reshape(shape) for o in outs]


def _store(outs, targets) -> None:
    for o, t in zip(outs, targets):
        if o.dtype in _HALF:
            o._np()[...] = t.reshape(o.shape)


def _register_reduction(op, kernel, dtypes, *param_names, scan=False):
    @_dispatch.register(op, "cpu", dtypes)
    def run(name, x, outs, dims, params):
        a = _as3d(x, dims)
        outer, n, inner = a.shape
        targets = _targets(outs, a.shape if scan else (outer, inner))
        kernel(a, *targets, *[params[p] for p in param_names])
        _store(outs, targets)
    return run


for _op, _kernel, _dtypes, _params in [
        ("sum", sum, _ALL, ()), ("prod", prod, _ALL, ()), ("amax", amax, _ALL, ()), ("amin", amin, _ALL, ()),
        ("max_with_indices", max_with_indices, _ALL, ()), ("min_with_indices", min_with_indices, _ALL, ()),
        ("argmax", argmax, _ALL, ()), ("argmin", argmin, _ALL, ()), ("all", all, _ALL, ()), ("any", any, _ALL, ()),
        ("var", var, _FLOATS, ("correction",)), ("logsumexp", logsumexp, _FLOATS, ()),
        ("norm", norm, _FLOATS, ("p",))]:
    _register_reduction(_op, _kernel, _dtypes, *_params)
for _op, _kernel, _dtypes in [("cumsum", cumsum, _ALL), ("cumprod", cumprod, _ALL),
                              ("softmax", softmax, _FLOATS), ("log_softmax", log_softmax, _FLOATS)]:
    _register_reduction(_op, _kernel, _dtypes, scan=True)
