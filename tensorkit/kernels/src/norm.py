"""Triton kernels of the fused norm and loss primitives (host side: ``kernels/norm.py``).

Layer norm forward (``norm_fwd_kernel``), one program per row of ``x`` ``[M, N]``::

    mean = Σ x / N,  rstd = 1 / sqrt(Σ (x - mean)² / N + eps),  y = (x - mean) · rstd · w + b

(RMS: mean = 0). SINGLE (N <= BLOCK_N): the row is read once into registers; otherwise three
sweeps over the row (sum, squared deviations, write), the later ones mostly from cache.

Backward (``norm_bwd_kernel``): with x̂ = (x - mean) · rstd and gy = g · w,

    dx = rstd · (gy - mean(gy) - x̂ · mean(gy · x̂))      (RMS: no mean(gy) term)
    dw = Σ_rows g · x̂,   db = Σ_rows g

A program owns a contiguous block of rows and accumulates its dw / db partial sums in
registers (SINGLE) or in its own row of the ``[programs, N]`` partial buffers, written once;
the host reduces those over programs. Deterministic, no atomics.

Cross-entropy (``ce_fwd_kernel``, ``ce_bwd_kernel``), one program per row of logits ``[M, C]``,
lse = log Σ exp(x), W = Σ_c w[c] (C without weights)::

    loss = (1 - ε) w[t] (lse - x[t]) + ε / C · Σ_c w[c] (lse - x[c])        (0 if t == ignore)
    dx   = g · ((1 - ε) w[t] + ε W / C) · exp(x - lse) - g · ((1 - ε) w[t] [c == t] + ε w[c] / C)

A target outside [0, C) (and not ``ignore_index``) gives that row a NaN loss and sets the op's
deferred report: an IndexError at the next synchronisation (``kernels/indexing.py``). Statistics
accumulate in float32 for half inputs, in the input's dtype otherwise; the norms' weight and bias
are the input's dtype or, next to a half input, float32 (PyTorch's mix): loaded through ``_acc``,
the math is the same.
Kernels here know nothing about autograd.
"""
import triton
import triton.language as tl

_tl_sum, _tl_max = tl.sum, tl.max


@triton.jit
def _acc(x):
    """x in the accumulator type: float32 for 16-bit floats, else unchanged."""
    if tl.constexpr(x.dtype.primitive_bitwidth < 32):
        y = x.to(tl.float32)
    else:
        y = x
    return y


# ---- layer_norm / rms_norm ----------------------------------------------------------------------------------
@triton.jit
def norm_fwd_kernel(x_ptr,        # [M, N] contiguous input
                    w_ptr,        # [N] weight (read if HAS_W), the input's dtype or float32
                    b_ptr,        # [N] bias (read if HAS_B), the input's dtype or float32
                    y_ptr,        # [M, N] output, contiguous, the input's dtype
                    mean_ptr,     # [M] saved mean (written unless RMS), accumulator dtype
                    rstd_ptr,     # [M] saved 1 / sqrt(var + eps)
                    N, eps,
                    RMS: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr, SINGLE: tl.constexpr,
                    BLOCK_N: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * N
    y_row = y_ptr + row * N
    cols = tl.arange(0, BLOCK_N)
    if SINGLE:
        mask = cols < N
        x = _acc(tl.load(x_row + cols, mask=mask, other=0))
        if RMS:
            d = x
        else:
            mean = _tl_sum(x, 0) / N
            d = tl.where(mask, x - mean, 0)
        rstd = 1 / tl.sqrt(_tl_sum(d * d, 0) / N + eps)
        y = d * rstd
        if HAS_W:
            y = y * _acc(tl.load(w_ptr + cols, mask=mask, other=0))
        if HAS_B:
            y = y + _acc(tl.load(b_ptr + cols, mask=mask, other=0))
        tl.store(y_row + cols, y, mask=mask)
    else:
        acc = _acc(tl.zeros([BLOCK_N], x_ptr.dtype.element_ty))
        if RMS:
            mean = _tl_sum(acc, 0)
        else:
            for off in range(0, N, BLOCK_N):
                acc += _acc(tl.load(x_row + off + cols, mask=off + cols < N, other=0))
            mean = _tl_sum(acc, 0) / N
            acc = acc * 0
        for off in range(0, N, BLOCK_N):
            mask = off + cols < N
            d = tl.where(mask, _acc(tl.load(x_row + off + cols, mask=mask, other=0)) - mean, 0)
            acc += d * d
        rstd = 1 / tl.sqrt(_tl_sum(acc, 0) / N + eps)
        for off in range(0, N, BLOCK_N):
            mask = off + cols < N
            y = (_acc(tl.load(x_row + off + cols, mask=mask, other=0)) - mean) * rstd
            if HAS_W:
                y = y * _acc(tl.load(w_ptr + off + cols, mask=mask, other=0))
            if HAS_B:
                y = y + _acc(tl.load(b_ptr + off + cols, mask=mask, other=0))
            tl.store(y_row + off + cols, y, mask=mask)
    if not RMS:
        tl.store(mean_ptr + row, mean)
    tl.store(rstd_ptr + row, rstd)


@triton.jit
def _bwd_terms(g_row, x_row, w_ptr, off, cols, N, mean, rstd, HAS_W: tl.constexpr):
    """(mask, g, x̂, gy) of one block of a row."""
    mask = off + cols < N
    g = _acc(tl.load(g_row + off + cols, mask=mask, other=0))
    xh = tl.where(mask, (_acc(tl.load(x_row + off + cols, mask=mask, other=0)) - mean) * rstd, 0)
    if HAS_W:
        gy = g * _acc(tl.load(w_ptr + off + cols, mask=mask, other=0))
    else:
        gy = g
    return mask, g, xh, gy


@triton.jit
def norm_bwd_kernel(g_ptr,        # [M, N] gradient of y, contiguous
                    x_ptr,        # [M, N] input
                    w_ptr,        # [N] weight (read if HAS_W), the input's dtype or float32
                    mean_ptr,     # [M] saved mean (read unless RMS)
                    rstd_ptr,     # [M] saved rstd
                    dx_ptr,       # [M, N] gradient of x
                    dw_ptr,       # [programs, N] partial sums of g · x̂ (written if HAS_W), accumulator dtype
                    db_ptr,       # [programs, N] partial sums of g
                    M, N, rows_per_program,
                    RMS: tl.constexpr, HAS_W: tl.constexpr, SINGLE: tl.constexpr, BLOCK_N: tl.constexpr):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    first = pid * rows_per_program
    last = tl.minimum(first + rows_per_program, M)
    dw_row = dw_ptr + pid.to(tl.int64) * N
    db_row = db_ptr + pid.to(tl.int64) * N
    dw = _acc(tl.zeros([BLOCK_N], x_ptr.dtype.element_ty))
    db = dw * 0
    if not SINGLE and HAS_W:              # partial sums live in memory: start them at zero
        for off in range(0, N, BLOCK_N):
            tl.store(dw_row + off + cols, dw, mask=off + cols < N)
            tl.store(db_row + off + cols, db, mask=off + cols < N)
    for i in range(0, last - first):
        row = (first + i).to(tl.int64)
        g_row, x_row, dx_row = g_ptr + row * N, x_ptr + row * N, dx_ptr + row * N
        rstd = tl.load(rstd_ptr + row)
        if RMS:
            mean = rstd * 0
        else:
            mean = tl.load(mean_ptr + row)
        if SINGLE:
            mask, g, xh, gy = _bwd_terms(g_row, x_row, w_ptr, 0, cols, N, mean, rstd, HAS_W)
            c2 = _tl_sum(gy * xh, 0) / N
            if RMS:
                dx = (gy - xh * c2) * rstd
            else:
                dx = (gy - _tl_sum(gy, 0) / N - xh * c2) * rstd
            tl.store(dx_row + cols, dx, mask=mask)
            if HAS_W:
                dw += g * xh
                db += g
        else:
            s1 = dw * 0
            s2 = dw * 0
            for off in range(0, N, BLOCK_N):
                mask, g, xh, gy = _bwd_terms(g_row, x_row, w_ptr, off, cols, N, mean, rstd, HAS_W)
                s1 += gy
                s2 += gy * xh
                if HAS_W:
                    tl.store(dw_row + off + cols, tl.load(dw_row + off + cols, mask=mask) + g * xh, mask=mask)
                    tl.store(db_row + off + cols, tl.load(db_row + off + cols, mask=mask) + g, mask=mask)
            c1 = _tl_sum(s1, 0) / N
            c2 = _tl_sum(s2, 0) / N
            for off in range(0, N, BLOCK_N):
                mask, g, xh, gy = _bwd_terms(g_row, x_row, w_ptr, off, cols, N, mean, rstd, HAS_W)
                if RMS:
                    dx = (gy - xh * c2) * rstd
                else:
                    dx = (gy - c1 - xh * c2) * rstd
                tl.store(dx_row + off + cols, dx, mask=mask)
    if SINGLE and HAS_W:
        tl.store(dw_row + cols, dw, mask=cols < N)
        tl.store(db_row + cols, db, mask=cols < N)


# ---- cross_entropy -----------------------------------------------------------------------------------------
@triton.jit
def _weight_sum(w_ptr, C, cols, HAS_W: tl.constexpr, BLOCK_C: tl.constexpr):
    if HAS_W:
        acc = _acc(tl.zeros([BLOCK_C], w_ptr.dtype.element_ty))
        for off in range(0, C, BLOCK_C):
            acc += _acc(tl.load(w_ptr + off + cols, mask=off + cols < C, other=0))
        total = _tl_sum(acc, 0)
    else:
        total = C * 1.0
    return total


@triton.jit
def ce_fwd_kernel(x_ptr,          # [M, C] logits, contiguous
                  t_ptr,          # [M] int64 class indices
                  w_ptr,          # [C] class weights (read if HAS_W)
                  loss_ptr,       # [M] loss per row
                  lse_ptr,        # [M] saved logsumexp, accumulator dtype
                  report_ptr,     # int64 [2]: set to (1, target) by a row whose target is out of range
                  C, ignore_index, eps,
                  HAS_W: tl.constexpr, SMOOTH: tl.constexpr, BLOCK_C: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * C
    cols = tl.arange(0, BLOCK_C)
    # online logsumexp per lane, merged at the end; also Σ w x for the smoothing term
    m = _acc(tl.full([BLOCK_C], float("-inf"), x_ptr.dtype.element_ty))
    s = _acc(tl.zeros([BLOCK_C], x_ptr.dtype.element_ty))
    wx = _acc(tl.zeros([BLOCK_C], x_ptr.dtype.element_ty))
    for off in range(0, C, BLOCK_C):
        mask = off + cols < C
        x = _acc(tl.load(x_row + off + cols, mask=mask, other=float("-inf")))
        m_new = tl.maximum(m, x)
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        s = s * tl.exp(m - shift) + tl.exp(x - shift)
        m = m_new
        if SMOOTH:
            xz = tl.where(mask, x, 0)             # masked lanes hold -inf: keep them out of Σ w x
            if HAS_W:
                wx += xz * _acc(tl.load(w_ptr + off + cols, mask=mask, other=0))
            else:
                wx += xz
    m_all = _tl_max(m, 0)
    shift = tl.where(m_all == float("-inf"), 0.0, m_all)
    lse = shift + tl.log(_tl_sum(s * tl.exp(m - shift), 0))
    tl.store(lse_ptr + row, lse)
    t = tl.load(t_ptr + row)
    valid = (t >= 0) & (t < C)
    tc = tl.where(valid, t, 0)
    xt = _acc(tl.load(x_row + tc))
    if HAS_W:
        wt = _acc(tl.load(w_ptr + tc))
    else:
        wt = xt * 0 + 1
    loss = (1 - eps) * wt * (lse - xt)
    if SMOOTH:
        total = _weight_sum(w_ptr, C, cols, HAS_W, BLOCK_C)
        loss += eps / C * (total * lse - _tl_sum(wx, 0))
    loss = tl.where(valid, loss, float("nan"))
    loss = tl.where(t == ignore_index, 0.0, loss)
    tl.store(loss_ptr + row, loss)
    if ((t < 0) | (t >= C)) & (t != ignore_index):
        tl.store(report_ptr, 1)
        tl.store(report_ptr + 1, t)


@triton.jit
def ce_bwd_kernel(g_ptr,          # [M] gradient of the per-row loss
                  x_ptr,          # [M, C] logits
                  t_ptr,          # [M] int64 class indices
                  w_ptr,          # [C] class weights (read if HAS_W)
                  lse_ptr,        # [M] saved logsumexp
                  dx_ptr,         # [M, C] gradient of the logits
                  C, ignore_index, eps,
                  HAS_W: tl.constexpr, BLOCK_C: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    x_row, dx_row = x_ptr + row * C, dx_ptr + row * C
    cols = tl.arange(0, BLOCK_C)
    t = tl.load(t_ptr + row)
    lse = tl.load(lse_ptr + row)
    g = _acc(tl.load(g_ptr + row))
    valid = (t >= 0) & (t < C)
    tc = tl.where(valid, t, 0)
    if HAS_W:
        wt = _acc(tl.load(w_ptr + tc))
    else:
        wt = g * 0 + 1
    total = _weight_sum(w_ptr, C, cols, HAS_W, BLOCK_C)
    a = (1 - eps) * wt + eps / C * total
    g = tl.where(t == ignore_index, 0.0, tl.where(valid, g, float("nan")))
    for off in range(0, C, BLOCK_C):
        mask = off + cols < C
        p = tl.exp(_acc(tl.load(x_row + off + cols, mask=mask, other=0)) - lse)
        if HAS_W:
            b = eps / C * _acc(tl.load(w_ptr + off + cols, mask=mask, other=0))
        else:
            b = p * 0 + eps / C
        b = tl.where(off + cols == tc, b + (1 - eps) * wt, b)
        tl.store(dx_row + off + cols, g * (a * p - b), mask=mask)


# ---- batch_norm ------------------------------------------------------------------------------------------------
# x is [N, C, HW] (HW: the spatial dims, 1 for [N, C]). A program owns a block of channels and a run of
# "items" (one sample's [BLOCK_C, BLOCK_HW] tile; items = N · ceil(HW / BLOCK_HW)), so the grid
# (channel blocks, splits) fills the GPU whatever the shape. Forward, per channel, count = N · HW:
#
#     K = x[0, c, 0] (a shift: sums of x - K do not cancel catastrophically when |mean| >> std)
#     mean = K + Σ (x - K) / count,  var = Σ (x - K)² / count - (mean - K)²,  invstd = 1 / sqrt(var + eps)
#     y = (x - mean) · invstd · w + b
#     running_mean = (1 - m) running_mean + m mean,  running_var = (1 - m) running_var + m var count / (count - 1)
#
# Backward, with x̂ = (x - mean) · invstd:
#
#     dw = Σ g · x̂,  db = Σ g,  dx = w · invstd · (g - db / count - x̂ · dw / count)
#
# Each direction is three launches: ``bn_stats_kernel`` writes per-program partial sums ([splits, C]),
# ``bn_finalize_kernel`` reduces them per channel (and, forward, updates the running statistics),
# ``bn_apply_kernel`` writes y or dx. Deterministic, no atomics.
@triton.jit
def _bn_tile(it, hw_blocks, chans, cmask, hws, C, HW, BLOCK_HW: tl.constexpr):
    """(offsets, mask) of work item ``it``: sample n, spatial block hb, the program's channels."""
    n = (it // hw_blocks).to(tl.int64)
    h = (it % hw_blocks) * BLOCK_HW + hws
    mask = cmask[:, None] & (h < HW)[None, :]
    return (n * C + chans[:, None]) * HW + h[None, :], mask


@triton.jit
def bn_stats_kernel(x_ptr,        # [N, C, HW] contiguous input
                    g_ptr,        # [N, C, HW] gradient of y (read if BWD)
                    mean_ptr,     # [C] saved mean (read if BWD)
                    part_ptr,     # [2, splits, C] partial sums, accumulator dtype: Σ (x - K), Σ (x - K)²;
                                  # backward Σ g, Σ g (x - mean)
                    C, HW, items, per, hw_blocks, splits,
                    BWD: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    s = tl.program_id(1)
    chans = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = chans < C
    hws = tl.arange(0, BLOCK_HW)
    if BWD:
        k = tl.load(mean_ptr + chans, mask=cmask, other=0)
    else:
        k = _acc(tl.load(x_ptr + chans.to(tl.int64) * HW, mask=cmask, other=0))
    s1 = _acc(tl.zeros([BLOCK_C, BLOCK_HW], x_ptr.dtype.element_ty))
    s2 = s1 * 0
    first = s * per
    last = tl.minimum(first + per, items)
    for i in range(0, last - first):
        off, mask = _bn_tile(first + i, hw_blocks, chans, cmask, hws, C, HW, BLOCK_HW)
        d = tl.where(mask, _acc(tl.load(x_ptr + off, mask=mask, other=0)) - k[:, None], 0)
        if BWD:
            g = _acc(tl.load(g_ptr + off, mask=mask, other=0))
            s1 += g
            s2 += g * d
        else:
            s1 += d
            s2 += d * d
    tl.store(part_ptr + s * C + chans, _tl_sum(s1, 1), mask=cmask)
    tl.store(part_ptr + (splits + s) * C + chans, _tl_sum(s2, 1), mask=cmask)


@triton.jit
def bn_finalize_kernel(x_ptr,         # [N, C, HW] input (forward: the shift K, its first element per channel)
                       part_ptr,      # [2, splits, C] partial sums from bn_stats_kernel
                       mean_ptr,      # [C] forward: saved mean (written); backward: unused
                       stat_ptr,      # [C] forward: saved invstd (written); backward: invstd (read)
                       out1_ptr,      # [C] backward: Σ g · x̂ (written)
                       out2_ptr,      # [C] backward: Σ g (written)
                       rm_ptr,        # [C] running mean (updated in place if HAS_RM), any float dtype
                       rv_ptr,        # [C] running variance (updated in place if HAS_RV)
                       C, HW, splits, count, eps, momentum,
                       BWD: tl.constexpr, HAS_RM: tl.constexpr, HAS_RV: tl.constexpr,
                       BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr):
    chans = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = chans < C
    rows = tl.arange(0, BLOCK_S)
    a1 = tl.zeros([BLOCK_S, BLOCK_C], part_ptr.dtype.element_ty)
    a2 = a1 * 0
    for s0 in range(0, splits, BLOCK_S):
        mask = ((s0 + rows) < splits)[:, None] & cmask[None, :]
        off = (s0 + rows)[:, None] * C + chans[None, :]
        a1 += tl.load(part_ptr + off, mask=mask, other=0)
        a2 += tl.load(part_ptr + splits * C + off, mask=mask, other=0)
    t1 = _tl_sum(a1, 0)
    t2 = _tl_sum(a2, 0)
    if BWD:
        tl.store(out1_ptr + chans, t2 * tl.load(stat_ptr + chans, mask=cmask), mask=cmask)
        tl.store(out2_ptr + chans, t1, mask=cmask)
    else:
        k = _acc(tl.load(x_ptr + chans.to(tl.int64) * HW, mask=cmask, other=0))
        dm = t1 / count
        var = tl.maximum(t2 / count - dm * dm, 0)
        mean = k + dm
        tl.store(mean_ptr + chans, mean, mask=cmask)
        tl.store(stat_ptr + chans, 1 / tl.sqrt(var + eps), mask=cmask)
        if HAS_RM:
            rm = tl.load(rm_ptr + chans, mask=cmask).to(mean.dtype)
            tl.store(rm_ptr + chans, (1 - momentum) * rm + momentum * mean, mask=cmask)
        if HAS_RV:
            rv = tl.load(rv_ptr + chans, mask=cmask).to(mean.dtype)
            tl.store(rv_ptr + chans, (1 - momentum) * rv + momentum * (var * (count / (count - 1))), mask=cmask)


@triton.jit
def bn_apply_kernel(x_ptr,        # [N, C, HW] input
                    g_ptr,        # [N, C, HW] gradient of y (read if BWD)
                    out_ptr,      # [N, C, HW] y, or dx if BWD; the input's dtype
                    mean_ptr,     # [C] saved mean
                    invstd_ptr,   # [C] saved invstd
                    w_ptr,        # [C] weight (read if HAS_W)
                    b_ptr,        # [C] bias (read if HAS_B and not BWD)
                    s1_ptr,       # [C] Σ g · x̂ (read if BWD)
                    s2_ptr,       # [C] Σ g (read if BWD)
                    C, HW, items, per, hw_blocks, count,
                    BWD: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
                    BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    s = tl.program_id(1)
    chans = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = chans < C
    hws = tl.arange(0, BLOCK_HW)
    mean = tl.load(mean_ptr + chans, mask=cmask, other=0)[:, None]
    r = tl.load(invstd_ptr + chans, mask=cmask, other=0)[:, None]
    a = r
    if HAS_W:
        a = a * _acc(tl.load(w_ptr + chans, mask=cmask, other=0))[:, None]
    if BWD:
        c1 = tl.load(s2_ptr + chans, mask=cmask, other=0)[:, None] / count
        c2 = tl.load(s1_ptr + chans, mask=cmask, other=0)[:, None] / count
    else:
        c1 = mean * 0
        if HAS_B:
            c1 += _acc(tl.load(b_ptr + chans, mask=cmask, other=0))[:, None]
    first = s * per
    last = tl.minimum(first + per, items)
    for i in range(0, last - first):
        off, mask = _bn_tile(first + i, hw_blocks, chans, cmask, hws, C, HW, BLOCK_HW)
        xc = _acc(tl.load(x_ptr + off, mask=mask, other=0)) - mean
        if BWD:
            g = _acc(tl.load(g_ptr + off, mask=mask, other=0))
            out = a * (g - c1 - xc * r * c2)
        else:
            out = xc * a + c1
        tl.store(out_ptr + off, out, mask=mask)
