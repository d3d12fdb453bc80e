"""Triton reduction kernels: sum, prod, amax/amin, all/any and vector norms (``reduce_kernel``),
max/min with their first index (``arg_kernel``), variance (``var_kernel``), logsumexp
(``lse_kernel``), softmax/log_softmax (``softmax_kernel``) and cumsum/cumprod (``scan_kernel``).

Layout. Every kernel reads its input as a 3-D strided view ``(outer, n, inner)`` and reduces
(or scans) over ``n``: element ``[o, j, k]`` is at ``x + o*stride_o + j*stride_n + k*stride_k``.
A program owns one ``o`` and ``BLOCK_K`` consecutive ``k``, and walks ``n`` in steps of
``BLOCK_N`` over a ``[BLOCK_N, BLOCK_K]`` tile:

* column reductions (``stride_k == 1``): each tile row is one coalesced load along ``inner``;
* row reductions: the host passes rows as columns, ``(1, n, rows)`` with ``stride_n == 1``, so
  the loads run along ``n`` and ``BLOCK_K`` short rows can share a program.

Triton specializes an integer argument equal to 1 into a constant, and its coalescing pass
lays each load out along the axis whose addresses are contiguous: one kernel serves both.

Every lane of the tile keeps its own accumulator during the walk (a block of partial sums,
maxima, ...); the tile is reduced along axis 0 once, at the end. Full steps load without a
mask along ``n`` (so loads vectorize); the tail is one masked step.

Split reductions (few outputs, long ``n``): program axis 1 picks chunk ``c`` of ``n``
(``chunk`` rows from ``c * chunk``), and the program writes its accumulator to
``out[o, c, k]``. A second launch of the same kernel reduces those partial accumulators
(``MAP=NONE``: they are already mapped) and finishes. With one chunk, ``out[o, k]``.

Accumulators: float16/bfloat16 compute in float32 (rounded once, on the store), float32 in
float32, float64 in float64, integers and bool in int64 (sums and products wrap as int64).
Kernels here know nothing about tensors, autograd or dtype promotion.
"""
import triton
import triton.language as tl
from triton.language import core as _tl_core  # noqa: F401  (see _tl_sum)

from .._tlmath import libdevice

# reduce_kernel's MAP (applied to each loaded element), COMBINE and FINISH; the host
# (kernels/reduction.py) composes every simple reduction from these.
NONE = tl.constexpr(0)
ABS = tl.constexpr(1)        # MAP: |x|
SQUARE = tl.constexpr(2)     # MAP: x * x
NONZERO = tl.constexpr(3)    # MAP: 1 where x != 0 (NaN included) else 0
POW = tl.constexpr(4)        # MAP: |x| ** p
ADD = tl.constexpr(1)        # COMBINE
MUL = tl.constexpr(2)
MAX = tl.constexpr(3)        # NaN propagates
MIN = tl.constexpr(4)
SQRT = tl.constexpr(1)       # FINISH: sqrt(acc)
ROOT = tl.constexpr(2)       # FINISH: acc ** (1 / p)

# Triton's reductions and scans, called through these names: on the emulated device
# kernels/reduction.py rebinds them to skip the interpreter's work at each call (see there).
_tl_sum, _tl_max, _tl_min, _tl_cumsum, _tl_cumprod = tl.sum, tl.max, tl.min, tl.cumsum, tl.cumprod

_INT64_MIN = tl.constexpr(-9223372036854775808)
_INT64_MAX = tl.constexpr(9223372036854775807)


# ---- element types, identities, combine functions ------------------------------------------------
@triton.jit
def _acc_type(x):
    """x in its accumulator type: floats at least float32, integers and bool int64."""
    if tl.constexpr(x.dtype.is_floating()):
        if tl.constexpr(x.dtype.primitive_bitwidth < 32):
            y = x.to(tl.float32)
        else:
            y = x
    else:
        y = x.to(tl.int64)
    return y


@triton.jit
def _lowest(like):
    """A block like ``like`` filled with the smallest value of its type (-inf for floats)."""
    if tl.constexpr(like.dtype.is_floating()):
        r = tl.full(like.shape, float("-inf"), like.dtype)
    else:
        r = tl.full(like.shape, _INT64_MIN, like.dtype)
    return r


@triton.jit
def _highest(like):
    if tl.constexpr(like.dtype.is_floating()):
        r = tl.full(like.shape, float("inf"), like.dtype)
    else:
        r = tl.full(like.shape, _INT64_MAX, like.dtype)
    return r


@triton.jit
def _identity(like, COMBINE: tl.constexpr, MAP: tl.constexpr):
    """What a masked lane contributes: 0 to sums, 1 to products, the lowest value to a max
    (0 after a MAP, whose results are >= 0: an empty ``any`` is False), the highest to a min
    (1 for ``all``'s 0/1 flags: an empty ``all`` is True)."""
    if COMBINE == ADD:
        r = tl.full(like.shape, 0, like.dtype)
    elif COMBINE == MUL:
        r = tl.full(like.shape, 1, like.dtype)
    elif COMBINE == MAX:
        if MAP == NONE:
            r = _lowest(like)
        else:
            r = tl.full(like.shape, 0, like.dtype)
    else:
        if MAP == NONZERO:
            r = tl.full(like.shape, 1, like.dtype)
        else:
            r = _highest(like)
    return r


@triton.jit
def _mul(a, b):
    return a * b


@triton.jit
def _max_nan(a, b):
    # NaN wins, as in PyTorch: once a is NaN, neither test picks b
    return tl.where((a > b) | (a != a), a, b)


@triton.jit
def _min_nan(a, b):
    return tl.where((a < b) | (a != a), a, b)


@triton.jit
def _combine(a, b, COMBINE: tl.constexpr):
    if COMBINE == ADD:
        r = a + b
    elif COMBINE == MUL:
        r = a * b
    elif COMBINE == MAX:
        r = _max_nan(a, b)
    else:
        r = _min_nan(a, b)
    return r


@triton.jit
def _nan_max(x):
    """max of x along axis 0, NaN if any is NaN (tl.max skips NaN)."""
    r = _tl_max(x, 0)
    if tl.constexpr(x.dtype.is_floating()):
        r = tl.where(_tl_max((x != x).to(tl.int32), 0) > 0, float("nan"), r)
    return r


@triton.jit
def _nan_min(x):
    r = _tl_min(x, 0)
    if tl.constexpr(x.dtype.is_floating()):
        r = tl.where(_tl_max((x != x).to(tl.int32), 0) > 0, float("nan"), r)
    return r


@triton.jit
def _reduce(acc, COMBINE: tl.constexpr):
    """acc reduced along axis 0. Triton's own reductions where they exist: Triton's
    interpreter runs them in numpy, a custom combine function element by element."""
    if COMBINE == ADD:
        r = _tl_sum(acc, 0)
    elif COMBINE == MUL:
        r = tl.reduce(acc, 0, _mul)
    elif COMBINE == MAX:
        r = _nan_max(acc)
    else:
        r = _nan_min(acc)
    return r


@triton.jit
def _map(x, MAP: tl.constexpr, p):
    if MAP == ABS:
        y = tl.abs(x)
    elif MAP == SQUARE:
        y = x * x
    elif MAP == NONZERO:
        y = (x != 0).to(x.dtype)
    elif MAP == POW:
        y = libdevice.pow(tl.abs(x), tl.full(x.shape, 0, x.dtype) + p.to(x.dtype))
    else:
        y = x
    return y


@triton.jit
def _finish(acc, FINISH: tl.constexpr, p):
    if FINISH == SQRT:
        if tl.constexpr(acc.dtype == tl.float32):
            r = tl.sqrt_rn(acc)         # IEEE-rounded, as the CPU (float32's tl.sqrt is approximate)
        else:
            r = tl.sqrt(acc)
    elif FINISH == ROOT:
        r = libdevice.pow(acc, tl.full(acc.shape, 0, acc.dtype) + (1.0 / p).to(acc.dtype))
    else:
        r = acc
    return r


@triton.jit
def _tile(n, inner, chunk, stride_o, stride_n, stride_k, BLOCK_K: tl.constexpr):
    """This program's slice: (o, c, k0, offset of its first element, rows in its chunk)."""
    pid = tl.program_id(0)
    c = tl.program_id(1)
    k_tiles = (inner + BLOCK_K - 1) // BLOCK_K
    o = pid // k_tiles
    k0 = (pid % k_tiles) * BLOCK_K
    start = c * chunk
    # int64: offsets of large tensors pass 2**31; offsets within a tile stay small
    base = o.to(tl.int64) * stride_o + start.to(tl.int64) * stride_n + k0.to(tl.int64) * stride_k
    return o, c, k0, base, tl.minimum(n - start, chunk)


# ---- sum, prod, amax, amin, all, any, norms ---------------------------------------------------------
@triton.jit
def _reduce_step(acc, ptrs, mask, MAP: tl.constexpr, COMBINE: tl.constexpr, p):
    v = _map(_acc_type(tl.load(ptrs, mask=mask, other=0)), MAP, p)
    return _combine(acc, tl.where(mask, v, _identity(v, COMBINE, MAP)), COMBINE)


@triton.jit(do_not_specialize=["p_bits"])
def reduce_kernel(x_ptr, out_ptr, n, inner, chunk, stride_o, stride_n, stride_k, p_bits,
                  MAP: tl.constexpr, COMBINE: tl.constexpr, FINISH: tl.constexpr,
                  BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """out[o, c, k] = FINISH(COMBINE_{j in chunk c} MAP(x[o, j, k])).

    x_ptr: the input view (see the module docstring); out_ptr: contiguous (outer, chunks, inner);
    p_bits: the norm's p as the bits of a float64 (exact for any p; POW and ROOT use it).
    """
    o, c, k0, base, length = _tile(n, inner, chunk, stride_o, stride_n, stride_k, BLOCK_K)
    p = p_bits.to(tl.int64).to(tl.float64, bitcast=True)
    rows = tl.arange(0, BLOCK_N)
    cols = tl.arange(0, BLOCK_K)
    col_ok = (cols < inner - k0)[None, :]         # the last tile of inner runs past the end
    ptrs = x_ptr + base + rows[:, None] * stride_n + cols[None, :] * stride_k
    acc = _identity(_acc_type(tl.full([BLOCK_N, BLOCK_K], 0, x_ptr.dtype.element_ty)), COMBINE, MAP)
    full = length // BLOCK_N * BLOCK_N
    for _ in range(0, full, BLOCK_N):
        acc = _reduce_step(acc, ptrs, col_ok, MAP, COMBINE, p)
        ptrs += BLOCK_N * stride_n
    if full < length:
        acc = _reduce_step(acc, ptrs, (rows < length - full)[:, None] & col_ok, MAP, COMBINE, p)
    r = _finish(_reduce(acc, COMBINE), FINISH, p)
    out = out_ptr + (o.to(tl.int64) * tl.num_programs(1) + c) * inner + k0
    tl.store(out + cols, r, mask=cols < inner - k0)


# ---- max/min with indices, argmax, argmin -------------------------------------------------------------
@triton.jit
def _arg_better(v, i, w, j, IS_MAX: tl.constexpr):
    """Whether (value v, index i) beats (w, j): a greater value (smaller, for min), NaN above
    everything, and between equal values (or two NaNs) the smaller index: PyTorch's first
    extreme."""
    if IS_MAX:
        strict = v > w
    else:
        strict = v < w
    v_nan = v != v
    w_nan = w != w
    same = (v == w) | (v_nan & w_nan)
    return strict | (v_nan & ~w_nan) | (same & (i < j))


@triton.jit
def _arg_step(best, best_i, x_ptrs, idx_ptrs, pos, mask, IS_MAX: tl.constexpr, HAS_IDX: tl.constexpr):
    v = _acc_type(tl.load(x_ptrs, mask=mask, other=0))
    if HAS_IDX:
        i = tl.load(idx_ptrs, mask=mask, other=0)
    else:
        i = pos
    b = mask & _arg_better(v, i, best, best_i, IS_MAX)
    return tl.where(b, v, best), tl.where(b, i, best_i)


@triton.jit
def arg_kernel(x_ptr, idx_ptr, val_out_ptr, idx_out_ptr, n, inner, chunk, stride_o, stride_n, stride_k,
               IS_MAX: tl.constexpr, HAS_IDX: tl.constexpr, STORE_VALUES: tl.constexpr,
               BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """val_out[o, c, k], idx_out[o, c, k] = the extreme of x[o, j, k] over chunk c and its
    first index j (int64; NaN counts as the extreme).

    idx_ptr (HAS_IDX, a second pass over partial results): the index of each x element,
    laid out like x; otherwise an element's index is its position j. STORE_VALUES=False
    (argmax/argmin) writes the indices only.
    """
    o, c, k0, base, length = _tile(n, inner, chunk, stride_o, stride_n, stride_k, BLOCK_K)
    rows = tl.arange(0, BLOCK_N)
    cols = tl.arange(0, BLOCK_K)
    col_ok = (cols < inner - k0)[None, :]
    offs = base + rows[:, None] * stride_n + cols[None, :] * stride_k
    zero = _acc_type(tl.full([BLOCK_N, BLOCK_K], 0, x_ptr.dtype.element_ty))
    if IS_MAX:
        best = _lowest(zero)
    else:
        best = _highest(zero)
    best_i = tl.full([BLOCK_N, BLOCK_K], _INT64_MAX, tl.int64)   # loses every tie with a real element
    pos = (c.to(tl.int64) * chunk + rows)[:, None] + tl.full([BLOCK_N, BLOCK_K], 0, tl.int64)
    full = length // BLOCK_N * BLOCK_N
    for _ in range(0, full, BLOCK_N):
        best, best_i = _arg_step(best, best_i, x_ptr + offs, idx_ptr + offs, pos, col_ok, IS_MAX, HAS_IDX)
        offs += BLOCK_N * stride_n
        pos += BLOCK_N
    if full < length:
        mask = (rows < length - full)[:, None] & col_ok
        best, best_i = _arg_step(best, best_i, x_ptr + offs, idx_ptr + offs, pos, mask, IS_MAX, HAS_IDX)
    # across lanes: the extreme value, then the smallest index of the lanes that hold it
    if IS_MAX:
        r = _nan_max(best)
    else:
        r = _nan_min(best)
    hit = (best == r[None, :]) | ((best != best) & (r != r)[None, :])
    ri = _tl_min(tl.where(hit, best_i, _INT64_MAX), 0)
    out = (o.to(tl.int64) * tl.num_programs(1) + c) * inner + k0 + cols
    k_ok = cols < inner - k0
    if STORE_VALUES:
        tl.store(val_out_ptr + out, r, mask=k_ok)
    tl.store(idx_out_ptr + out, ri, mask=k_ok)


# ---- var -----------------------------------------------------------------------------------------------
@triton.jit
def _welford_merge(mean_a, m2_a, n_a, mean_b, m2_b, n_b):
    """Chan et al.'s merge of two (mean, sum of squared deviations, count) summaries (Welford's
    update when b is one element); stable where the one-pass E[x^2] - E[x]^2 cancels. An empty
    b (n_b == 0) leaves a unchanged."""
    n = n_a + n_b
    w = tl.where(n == 0, 0.0, n_b / n)          # b's share of the merged count
    d = mean_b - mean_a
    # (d * n_a) * (d * w), not d * d * ...: the first element of a lane has n_a == 0, and d * d
    # may overflow where the product with 0 must stay 0
    return mean_a + d * w, m2_a + m2_b + (d * n_a) * (d * w), n


@triton.jit
def _var_step(mean, m2, cnt, x_ptrs, m2_ptrs, n_ptrs, mask, SUMMARIES: tl.constexpr):
    v = _acc_type(tl.load(x_ptrs, mask=mask, other=0))
    if SUMMARIES:
        v_m2 = tl.load(m2_ptrs, mask=mask, other=0)
        v_n = tl.load(n_ptrs, mask=mask, other=0)         # 0: a masked lane merges nothing
    else:
        v_m2 = tl.full(v.shape, 0, v.dtype)
        v_n = tl.where(mask, 1.0, 0.0).to(v.dtype)
    return _welford_merge(mean, m2, cnt, v, v_m2, v_n)


@triton.jit
def var_kernel(x_ptr, m2_ptr, n_ptr, out_ptr, m2_out_ptr, n_out_ptr, n, inner, chunk,
               stride_o, stride_n, stride_k, correction,
               SUMMARIES: tl.constexpr, FINISH: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """Variance over n: sum_j (x[o, j, k] - mean)^2 / (count - correction) by Welford/Chan merges.

    SUMMARIES (a second pass): x_ptr, m2_ptr, n_ptr are partial (mean, m2, count) summaries,
    laid out alike; otherwise x_ptr is the data and m2_ptr, n_ptr are unused. FINISH writes
    the variance to out_ptr (count - correction <= 0 gives inf, or NaN where m2 == 0; count 0
    gives NaN, as PyTorch); otherwise the summary to out_ptr, m2_out_ptr, n_out_ptr.
    """
    o, c, k0, base, length = _tile(n, inner, chunk, stride_o, stride_n, stride_k, BLOCK_K)
    rows = tl.arange(0, BLOCK_N)
    cols = tl.arange(0, BLOCK_K)
    col_ok = (cols < inner - k0)[None, :]
    offs = base + rows[:, None] * stride_n + cols[None, :] * stride_k
    mean = _acc_type(tl.full([BLOCK_N, BLOCK_K], 0, x_ptr.dtype.element_ty))
    m2 = tl.full(mean.shape, 0, mean.dtype)
    cnt = tl.full(mean.shape, 0, mean.dtype)
    full = length // BLOCK_N * BLOCK_N
    for _ in range(0, full, BLOCK_N):
        mean, m2, cnt = _var_step(mean, m2, cnt, x_ptr + offs, m2_ptr + offs, n_ptr + offs, col_ok, SUMMARIES)
        offs += BLOCK_N * stride_n
    if full < length:
        mask = (rows < length - full)[:, None] & col_ok
        mean, m2, cnt = _var_step(mean, m2, cnt, x_ptr + offs, m2_ptr + offs, n_ptr + offs, mask, SUMMARIES)
    # across lanes: M2 = sum m2_i + sum n_i (mean_i - mean)^2 (Chan's merge of many summaries)
    total = _tl_sum(cnt, 0)
    mean_all = _tl_sum(mean * cnt, 0) / total
    d = mean - mean_all[None, :]
    m2 = _tl_sum(m2, 0) + _tl_sum((cnt * d) * d, 0)       # cnt * d first: 0 for empty lanes, even if d * d overflows
    mean, cnt = mean_all, total
    out = (o.to(tl.int64) * tl.num_programs(1) + c) * inner + k0 + cols
    k_ok = cols < inner - k0
    if FINISH:
        dof = cnt - correction
        r = tl.where(dof > 0, m2 / dof, m2 * float("inf"))
        tl.store(out_ptr + out, tl.where(cnt == 0, float("nan"), r), mask=k_ok)
    else:
        tl.store(out_ptr + out, mean, mask=k_ok)
        tl.store(m2_out_ptr + out, m2, mask=k_ok)
        tl.store(n_out_ptr + out, cnt, mask=k_ok)


# ---- logsumexp, softmax, log_softmax --------------------------------------------------------------------
@triton.jit
def _lse_merge(m_a, s_a, m_b, s_b):
    """Merge two (max, sum of exp(x - max)) summaries (the online softmax update).

    A summary of only -inf has m == -inf, s == 0; shifting by 0 then keeps exp(-inf) == 0
    instead of exp(-inf - -inf) == NaN. An inf or NaN max makes s NaN: callers use m then."""
    m = _max_nan(m_a, m_b)
    shift = tl.where(m == float("-inf"), 0.0, m)
    return m, s_a * tl.exp(m_a - shift) + s_b * tl.exp(m_b - shift)


@triton.jit
def _lse_step(m, s, ptrs, mask):
    v = _acc_type(tl.load(ptrs, mask=mask, other=float("-inf")))     # -inf adds exp(-inf) == 0
    return _lse_merge(m, s, v, tl.full(v.shape, 1, v.dtype))


@triton.jit
def _lse_summary(ptrs, length, rows, col_ok, stride_n, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """(max, sum of exp(x - max)) of each column over ``length`` rows from ``ptrs``, one read."""
    m = _lowest(_acc_type(tl.full([BLOCK_N, BLOCK_K], 0, ptrs.dtype.element_ty)))
    s = tl.full(m.shape, 0, m.dtype)
    full = length // BLOCK_N * BLOCK_N
    for _ in range(0, full, BLOCK_N):
        m, s = _lse_step(m, s, ptrs, col_ok)
        ptrs += BLOCK_N * stride_n
    if full < length:
        m, s = _lse_step(m, s, ptrs, (rows < length - full)[:, None] & col_ok)
    # across lanes: rescale each lane's sum to the column's max
    m_all = _nan_max(m)
    shift = tl.where(m_all == float("-inf"), 0.0, m_all)
    return m_all, _tl_sum(s * tl.exp(m - shift[None, :]), 0)


@triton.jit
def lse_kernel(x_ptr, out_ptr, n, inner, chunk, stride_o, stride_n, stride_k,
               BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """out[o, c, k] = log(sum_{j in chunk c} exp(x[o, j, k])), shifted by the max so it never
    overflows. NaN gives NaN, any +inf gives inf, all -inf (or no rows) -inf. logsumexp of
    chunk results is the logsumexp of the whole, so a split's second pass is this kernel again."""
    o, c, k0, base, length = _tile(n, inner, chunk, stride_o, stride_n, stride_k, BLOCK_K)
    rows = tl.arange(0, BLOCK_N)
    cols = tl.arange(0, BLOCK_K)
    col_ok = (cols < inner - k0)[None, :]
    ptrs = x_ptr + base + rows[:, None] * stride_n + cols[None, :] * stride_k
    m, s = _lse_summary(ptrs, length, rows, col_ok, stride_n, BLOCK_N, BLOCK_K)
    r = tl.where(tl.abs(m) < float("inf"), m + tl.log(s), m)
    out = out_ptr + (o.to(tl.int64) * tl.num_programs(1) + c) * inner + k0
    tl.store(out + cols, r, mask=cols < inner - k0)


@triton.jit
def _softmax_write(x_ptrs, out_ptrs, mask, m, log_s, inv_s, LOG: tl.constexpr):
    z = _acc_type(tl.load(x_ptrs, mask=mask, other=0)) - m
    if LOG:
        y = z - log_s
    else:
        y = tl.exp(z) * inv_s
    tl.store(out_ptrs, y, mask=mask)


@triton.jit
def softmax_kernel(x_ptr, out_ptr, n, inner, stride_o, stride_n, stride_k, out_stride_o, out_stride_n, out_stride_k,
                   LOG: tl.constexpr, SINGLE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """out[o, j, k] = exp(x - m) / sum_j exp(x - m) (LOG: (x - m) - log(sum_j exp(x - m))),
    m = max_j x[o, j, k]. NaN in a slice gives NaN, an all -inf slice NaN (as PyTorch).

    out_ptr: strided like x, by the out_stride_* arguments. SINGLE (n <= BLOCK_N): the slice is
    one tile, read once and written once; otherwise an online pass (running max, rescaled sum)
    then a pass that reads again and writes.
    """
    o, c, k0, base, length = _tile(n, inner, n, stride_o, stride_n, stride_k, BLOCK_K)
    rows = tl.arange(0, BLOCK_N)
    cols = tl.arange(0, BLOCK_K)
    col_ok = (cols < inner - k0)[None, :]
    x_ptrs = x_ptr + base + rows[:, None] * stride_n + cols[None, :] * stride_k
    out_ptrs = (out_ptr + o.to(tl.int64) * out_stride_o + k0.to(tl.int64) * out_stride_k
                + rows[:, None] * out_stride_n + cols[None, :] * out_stride_k)
    if SINGLE:
        mask = (rows < n)[:, None] & col_ok
        x = _acc_type(tl.load(x_ptrs, mask=mask, other=float("-inf")))
        # tl.max skips NaN, but a NaN still reaches the sum through exp(x - m): NaN everywhere
        m = _tl_max(x, 0)
        z = x - m[None, :]
        e = tl.exp(z)
        s = _tl_sum(e, 0)
        if LOG:
            y = z - tl.log(s)[None, :]
        else:
            y = e * (1.0 / s)[None, :]
        tl.store(out_ptrs, y, mask=mask)
    else:
        m, s = _lse_summary(x_ptrs, n, rows, col_ok, stride_n, BLOCK_N, BLOCK_K)
        m = m[None, :]
        log_s = tl.log(s)[None, :]
        inv_s = (1.0 / s)[None, :]
        full = n // BLOCK_N * BLOCK_N
        for _ in range(0, full, BLOCK_N):
            _softmax_write(x_ptrs, out_ptrs, col_ok, m, log_s, inv_s, LOG)
            x_ptrs += BLOCK_N * stride_n
            out_ptrs += BLOCK_N * out_stride_n
        if full < n:
            _softmax_write(x_ptrs, out_ptrs, (rows < n - full)[:, None] & col_ok, m, log_s, inv_s, LOG)


# ---- cumsum, cumprod -------------------------------------------------------------------------------------
@triton.jit
def _scan_step(carry, x_ptrs, out_ptrs, mask, last_row, IS_SUM: tl.constexpr):
    """Scan one tile along n on top of ``carry`` (the total of the rows before); returns the
    new carry, the tile's last row. Masked lanes load the identity, so they leave both alone."""
    if IS_SUM:
        y = _tl_cumsum(_acc_type(tl.load(x_ptrs, mask=mask, other=0)), 0) + carry[None, :]
    else:
        y = _tl_cumprod(_acc_type(tl.load(x_ptrs, mask=mask, other=1)), 0) * carry[None, :]
    tl.store(out_ptrs, y, mask=mask)
    return _tl_sum(tl.where(last_row, y, 0), 0)


@triton.jit
def scan_kernel(x_ptr, out_ptr, n, inner, stride_o, stride_n, stride_k, out_stride_o, out_stride_n, out_stride_k,
                IS_SUM: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """out[o, j, k] = sum (IS_SUM) or product of x[o, i, k] for i <= j; out_ptr is strided like
    x, by the out_stride_* arguments. Each step scans its tile and carries its total on."""
    o, c, k0, base, length = _tile(n, inner, n, stride_o, stride_n, stride_k, BLOCK_K)
    rows = tl.arange(0, BLOCK_N)
    cols = tl.arange(0, BLOCK_K)
    col_ok = (cols < inner - k0)[None, :]
    x_ptrs = x_ptr + base + rows[:, None] * stride_n + cols[None, :] * stride_k
    out_ptrs = (out_ptr + o.to(tl.int64) * out_stride_o + k0.to(tl.int64) * out_stride_k
                + rows[:, None] * out_stride_n + cols[None, :] * out_stride_k)
    if IS_SUM:
        carry = _acc_type(tl.full([BLOCK_K], 0, x_ptr.dtype.element_ty))
    else:
        carry = _acc_type(tl.full([BLOCK_K], 1, x_ptr.dtype.element_ty))
    last_row = (rows == BLOCK_N - 1)[:, None]
    full = n // BLOCK_N * BLOCK_N
    for _ in range(0, full, BLOCK_N):
        carry = _scan_step(carry, x_ptrs, out_ptrs, col_ok, last_row, IS_SUM)
        x_ptrs += BLOCK_N * stride_n
        out_ptrs += BLOCK_N * out_stride_n
    if full < n:
        _scan_step(carry, x_ptrs, out_ptrs, (rows < n - full)[:, None] & col_ok, last_row, IS_SUM)
