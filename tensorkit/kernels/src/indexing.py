"""Triton kernels of the indexing primitives: gather (``index``), scatter (``index_put``),
bounds checks and ``nonzero``. The launchers are in ``kernels/indexing.py``.

Layout. ``x[i_0, ..., i_k]`` and ``x[i_0, ...] op= values`` run over the result's elements
(the output of a gather, the values of a scatter). The host coalesces the result's dims
and gives every operand one stride per coalesced dim: the result/values, ``x`` (0 along
the dims the indices make), and each index tensor (0 along the dims of ``x`` kept whole).
The last coalesced dim is the tile's columns, the others its rows (``rows`` holds their
sizes), so a row of an embedding-style lookup (``table[idx]``, rows of ``table``
contiguous) is one coalesced load of contiguous memory.

The element of ``x`` read or written is ``x + row/column part + sum_k wrap(i_k) * step_k``
(``step_k``: the stride of ``x`` along the dim index k selects, ``wrap``: negative indices
count from the end). A lane whose index is out of range touches no memory and reports it:
the scatter sets its flag ``err[0]`` (read by the host after the launches), the gather notes
the index in its report ``rep`` (read at the host's next synchronisation).

Every argument named ``*_st`` is a tuple of strides in elements, one per coalesced dim
(rows first, the column last); ``idx`` is a tuple of index tensors (int32/int64).
"""
import triton
import triton.language as tl

from .. import _tlmath as tm

# index_put's combine ops (the host maps reduce names and dtypes onto these); Triton reads
# globals only as tl.constexpr instances
STORE = tl.constexpr(0)      # plain write: with duplicates one of the values lands
ADD = tl.constexpr(1)
MUL = tl.constexpr(2)
MAX = tl.constexpr(3)        # NaN wins, as on the CPU
MIN = tl.constexpr(4)
# index_put's steps
INIT = tl.constexpr(0)       # touched elements of the target := self (widened) or the identity
COMBINE = tl.constexpr(1)    # target op= values
FINISH = tl.constexpr(2)     # x := the staged result narrowed to x's dtype (mean: divided by the count)


@triton.jit
def _offset(i, shape, strides):
    """sum_d coord_d * strides[d] for flat row-major positions ``i`` (int64) over ``shape``."""
    off = tl.zeros_like(i)
    for d in tl.static_range(len(shape) - 1, 0, -1):
        off += (i % shape[d]) * strides[d]
        i = i // shape[d]
    return off + i * strides[0]


@triton.jit
def _tile(n_rows, n_cols, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """This program's rows and columns (int64), and which of them exist."""
    pid = tl.program_id(0)
    col_blocks = tl.cdiv(n_cols, BLOCK_C)
    r = (pid // col_blocks).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    c = (pid % col_blocks).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
    return r, c, r < n_rows, c < n_cols


@triton.jit
def _tile_offset(r, c, rows, st):
    """Offsets of a (rows, columns) tile of an operand with strides ``st``."""
    return _offset(r, rows, st)[:, None] + c[None, :] * st[len(rows)]


@triton.jit
def _indexed_offset(r, c, r_in, c_in, rows, x_st, idx, idx_st, idx_size, idx_step, rep,
                    NEGATIVE: tl.constexpr, COL_INDEXED: tl.constexpr, REPORT: tl.constexpr):
    """(offsets into x of a tile, which lanes read indices, which of those are all in range).

    ``COL_INDEXED``: some index varies along the columns, lanes are the tile's elements;
    otherwise each row's indices are loaded once (a gather of rows: one index per row, a
    coalesced run of columns) and the lanes are the rows ([BLOCK_R, 1]). ``REPORT``: note
    the indices out of range in ``rep`` (``_report``)."""
    off = _tile_offset(r, c, rows, x_st)
    if COL_INDEXED:
        live = r_in[:, None] & c_in[None, :]
    else:
        live = r_in[:, None]
    ok = live
    for k in tl.static_range(len(idx)):
        if COL_INDEXED:
            i = tl.load(idx[k] + _tile_offset(r, c, rows, idx_st[k]), mask=live, other=0).to(tl.int64)
        else:
            i = tl.load(idx[k] + _offset(r, rows, idx_st[k]), mask=r_in, other=0).to(tl.int64)[:, None]
        raw = i
        if NEGATIVE:
            i = tl.where(i < 0, i + idx_size[k], i)
        in_range = (i >= 0) & (i < idx_size[k])
        if REPORT:
            _report(rep, k, raw, live & ~in_range)
        ok = ok & in_range
        off += i * idx_step[k]
    return off, live, ok


@triton.jit
def _flag(err, bad):
    """err[0] = 1 where ``bad`` (no memory traffic when nothing is bad)."""
    tl.store(err + tl.zeros(bad.shape, tl.int32), 1, mask=bad)


@triton.jit
def _report(rep, k, raw, bad):
    """A gather's report (int64): rep[2k] = 1 and rep[2k+1] = one of the index values ``raw``
    of index tensor k where ``bad`` (lanes race: any bad value will do; no memory traffic
    when nothing is bad)."""
    z = tl.zeros(bad.shape, tl.int64)
    tl.store(rep + 2 * k + z, 1, mask=bad)
    tl.store(rep + 2 * k + 1 + z, raw, mask=bad)


@triton.jit
def index_kernel(out, x, idx, rows, n_rows, n_cols, x_st, out_st, idx_st, idx_size, idx_step, rep,
                 NEGATIVE: tl.constexpr, COL_INDEXED: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """out = x[idx...] (a gather), bounds checked as it goes.

    out: the result (strides ``out_st``); x: the indexed tensor (strides ``x_st``, 0 along the
    indexed dims); idx: the index tensors (strides ``idx_st``); idx_size / idx_step: per index,
    the size and stride of the dim of x it selects; rep: int64 report, per index tensor k a flag
    and a bad value (``_report``); an element whose index is out of range reads nothing and is
    0; rows: the row dims' sizes; n_rows, n_cols: the extents.
    """
    r, c, r_in, c_in = _tile(n_rows, n_cols, BLOCK_R, BLOCK_C)
    x_off, live, ok = _indexed_offset(r, c, r_in, c_in, rows, x_st, idx, idx_st, idx_size, idx_step, rep, NEGATIVE,
                                      COL_INDEXED, True)
    in_tile = r_in[:, None] & c_in[None, :]
    v = tl.load(x + x_off, mask=ok & in_tile, other=0)       # out of range: 0 (deterministic, not stale memory)
    tl.store(out + _tile_offset(r, c, rows, out_st), v, mask=in_tile)


@triton.jit
def check_kernel(idx, n, shape, st, size, err, NEGATIVE: tl.constexpr, REPORT: tl.constexpr, BLOCK: tl.constexpr):
    """Whether an element of an index tensor is outside [-size, size) (or [0, size) without
    ``NEGATIVE``): ``err`` is index_put's int32 flag (set to 1), or with ``REPORT`` a gather's
    report (``_report``). Per index tensor k: ``n[k]`` elements, coalesced ``shape[k]`` and
    strides ``st[k]``; program p checks elements [p*BLOCK, (p+1)*BLOCK) of each. index_put
    runs this before it writes anything, so a bad index leaves the tensor unchanged."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    for k in tl.static_range(len(idx)):
        m = i < n[k]
        v = tl.load(idx[k] + _offset(i, shape[k], st[k]), mask=m, other=0).to(tl.int64)
        lo = -size[k] if NEGATIVE else 0
        bad = m & ((v < lo) | (v >= size[k]))
        if REPORT:
            _report(err, k, v, bad)
        else:
            _flag(err, bad)


@triton.jit
def reset_kernel(err, n, BLOCK: tl.constexpr):
    """err[0..n) = 0 (a flag or a report)."""
    i = tl.arange(0, BLOCK)
    tl.store(err + i, tl.zeros((BLOCK,), err.dtype.element_ty), mask=i < n)


@triton.jit
def _cas_combine(ptr, v, mask, OP: tl.constexpr):
    """*ptr = op(*ptr, v) atomically, for ops with no native atomic (products; float max/min
    with the CPU's NaN rule): a compare-and-swap loop on the element's bits (compared as
    integers, so a NaN compares equal to itself). Lanes outside ``mask`` must point at valid
    memory (atomic_cas takes no mask): they swap a value for itself, which changes nothing."""
    W: tl.constexpr = ptr.dtype.element_ty
    BITS: tl.constexpr = tl.int32 if W.primitive_bitwidth == 32 else tl.int64
    iptr = ptr.to(tl.pointer_type(BITS), bitcast=True)
    old = tl.load(ptr, mask=mask, other=0)
    pending = mask
    while tl.max(pending.to(tl.int32), axis=None) > 0:
        if OP == MUL:
            new = old * v
        elif OP == MAX:
            new = tl.where((old >= v) | (old != old), old, v)
        else:
            new = tl.where((old <= v) | (old != old), old, v)
        new = tl.where(pending, new, old)
        expected = old.to(BITS, bitcast=True)
        seen = tl.atomic_cas(iptr, expected, new.to(BITS, bitcast=True), sem="relaxed")
        pending = pending & (seen != expected)          # another lane got there first: retry on its result
        old = seen.to(W, bitcast=True)


@triton.jit
def index_put_kernel(x, values, stage, count, idx, rows, n_rows, n_cols, x_st, v_st, idx_st, idx_size, idx_step,
                     identity, err, STEP: tl.constexpr, OP: tl.constexpr, INCLUDE_SELF: tl.constexpr,
                     COUNT: tl.constexpr, COL_INDEXED: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """One step of ``x[idx...] (op)= values``.

    x: the destination (strides ``x_st``); values: as many elements as the result (strides
    ``v_st``); stage: where the combine runs, x itself or a buffer of the work dtype laid out
    like x (same offsets); count: int32, laid out like x, for 'mean'; identity: the op's
    identity in the work dtype; err: the bounds flag, set by ``check_kernel`` over every index
    before this runs: if it is set, nothing is written. Steps (``STEP``): INIT, COMBINE,
    FINISH (see the constants above); ``COUNT``: count the values per element ('mean').
    """
    r, c, r_in, c_in = _tile(n_rows, n_cols, BLOCK_R, BLOCK_C)
    # a bad index anywhere: write nothing (compared as a block: the interpreter mistypes a broadcast 0-d comparison)
    no_error = (tl.zeros_like(c) + tl.load(err)) == 0
    off, _, ok = _indexed_offset(r, c, r_in, c_in, rows, x_st, idx, idx_st, idx_size, idx_step, err, True,
                                 COL_INDEXED, False)
    m = ok & (c_in & no_error)[None, :]
    off = tl.where(m, off, 0)      # idle lanes point at a valid element (see _cas_combine)
    W: tl.constexpr = stage.dtype.element_ty
    if STEP == INIT:
        if INCLUDE_SELF:
            a = tl.load(x + off, mask=m).to(W)
        else:
            a = tl.full(off.shape, identity, W)
        tl.store(stage + off, a, mask=m)
        if COUNT:
            tl.store(count + off, tl.full(off.shape, 1 if INCLUDE_SELF else 0, tl.int32), mask=m)
    elif STEP == COMBINE:
        v = tl.load(values + _tile_offset(r, c, rows, v_st), mask=m)
        if OP == STORE:
            tl.store(x + off, v, mask=m)
        elif OP == ADD:
            tl.atomic_add(stage + off, v.to(W), mask=m, sem="relaxed")
        elif OP == MAX and W.is_int():
            tl.atomic_max(stage + off, v.to(W), mask=m, sem="relaxed")
        elif OP == MIN and W.is_int():
            tl.atomic_min(stage + off, v.to(W), mask=m, sem="relaxed")
        else:
            _cas_combine(stage + off, v.to(W), m, OP)
        if COUNT:
            tl.atomic_add(count + off, tl.full(off.shape, 1, tl.int32), mask=m, sem="relaxed")
    else:
        a = tl.load(stage + off, mask=m)
        X: tl.constexpr = x.dtype.element_ty
        if COUNT:
            n = tl.load(count + off, mask=m, other=1)
            if W.is_floating():
                a = a / n.to(W)
            else:      # the sum wraps in x's dtype, then rounds down (the CPU's integer mean)
                a = tm.floordiv_int(a.to(X).to(W), n.to(W))
        tl.store(x + off, a.to(X), mask=m)


@triton.jit
def nonzero_count_kernel(x, n, shape, st, counts, BLOCK: tl.constexpr):
    """counts[p] = the number of nonzero elements among flat positions [p*BLOCK, (p+1)*BLOCK)
    of x (``n`` elements; ``shape``, ``st``: its coalesced dims and strides)."""
    pid = tl.program_id(0)
    i = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    nz = tl.load(x + _offset(i, shape, st), mask=i < n, other=0) != 0
    tl.store(counts + pid, tl.sum(nz.to(tl.int64), axis=0))


@triton.jit
def exclusive_scan_kernel(counts, n, BLOCK: tl.constexpr):
    """counts[0..n] := exclusive prefix sums of counts[0..n-1] (counts[n] gets the total); one
    program, BLOCK counts per step."""
    carry = tl.zeros((), tl.int64)
    for start in range(0, n + 1, BLOCK):
        i = start + tl.arange(0, BLOCK)
        a = tl.load(counts + i, mask=i < n, other=0)
        tl.store(counts + i, carry + tl.cumsum(a, axis=0) - a, mask=i <= n)
        carry += tl.sum(a, axis=0)


@triton.jit
def nonzero_fill_kernel(x, n, shape, load_shape, load_st, starts, out, BLOCK: tl.constexpr):
    """out[p, :] = the coordinates (over ``shape``) of the p-th nonzero element of x in
    row-major order; ``load_shape``, ``load_st``: x's coalesced dims and strides; ``starts[b]``:
    how many nonzero elements precede block b (``exclusive_scan_kernel``)."""
    NDIM: tl.constexpr = len(shape)
    pid = tl.program_id(0)
    i = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    nz = (tl.load(x + _offset(i, load_shape, load_st), mask=i < n, other=0) != 0) & (i < n)
    row = tl.load(starts + pid) + tl.cumsum(nz.to(tl.int64), axis=0) - 1
    for d in tl.static_range(NDIM - 1, -1, -1):      # coordinates from the flat index, last dim fastest
        tl.store(out + row * NDIM + d, i % shape[d], mask=nz)
        i = i // shape[d]
