"""Triton flash-attention forward (host side: ``kernels/attention.py``).

For each (batch·head, block of BLOCK_M queries), the keys and values are streamed in blocks
of BLOCK_N and softmax is computed online, so the [L, S] score matrix never reaches memory::

    s = q kᵀ · scale (masked: j > i when CAUSAL, j >= S past the end)
    m' = max(m, rowmax(s));  p = exp(s - m');  l' = l · exp(m - m') + rowsum(p)
    acc' = acc · exp(m - m') + p v;              out = acc / l,  lse = m + log l

Exponentials are base 2 (scale folded with log2 e). Scores and accumulators are float32;
p is cast to v's dtype for the second matmul (as FlashAttention). float32 inputs use exact
(IEEE) products, not TF32. ``INTERPRETER_BF16`` (set by the host on the emulated device
only) casts bfloat16 operands to float32 before each product: Triton's interpreter multiplies
bfloat16's raw bits (see ``kernels/src/matmul.py``). Kernels here know nothing about autograd.
"""
import triton
import triton.language as tl

_tl_sum, _tl_max = tl.sum, tl.max
_LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit
def _dot(a, b, IEEE: tl.constexpr, INTERPRETER_BF16: tl.constexpr):
    if INTERPRETER_BF16:
        r = tl.dot(a.to(tl.float32), b.to(tl.float32))
    elif IEEE:
        r = tl.dot(a, b, input_precision="ieee")
    else:
        r = tl.dot(a, b)
    return r


@triton.jit
def attn_fwd_kernel(q_ptr,        # [BH, L, D] queries, contiguous
                    k_ptr,        # [BH, S, D] keys
                    v_ptr,        # [BH, S, D] values
                    o_ptr,        # [BH, L, D] output
                    lse_ptr,      # [BH, L] float32 logsumexp of each query's scores (natural log)
                    L, S, D, scale,
                    CAUSAL: tl.constexpr, IEEE: tl.constexpr, INTERPRETER_BF16: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                    BLOCK_D: tl.constexpr):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    q = tl.load(q_ptr + bh * L * D + offs_m[:, None] * D + offs_d[None, :],
                mask=(offs_m[:, None] < L) & d_ok[None, :], other=0)
    k_base = k_ptr + bh * S * D
    v_base = v_ptr + bh * S * D
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    qk_scale = scale * _LOG2E
    hi = S
    if CAUSAL:                                       # keys after the block's last query add nothing
        hi = tl.minimum(S, (pid_m + 1) * BLOCK_M)
    for start in range(0, hi, BLOCK_N):
        cols = start + offs_n
        kt = tl.load(k_base + cols[None, :] * D + offs_d[:, None], mask=(cols[None, :] < S) & d_ok[:, None],
                     other=0)                                               # [BLOCK_D, BLOCK_N]
        s = _dot(q, kt, IEEE, INTERPRETER_BF16) * qk_scale
        keep = cols[None, :] < S
        if CAUSAL:
            keep = keep & (cols[None, :] <= offs_m[:, None])
        s = tl.where(keep, s, float("-inf"))
        m_new = tl.maximum(m_i, _tl_max(s, 1))
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)     # a row with nothing visible yet
        p = tl.exp2(s - shift[:, None])
        alpha = tl.exp2(m_i - shift)
        l_i = l_i * alpha + _tl_sum(p, 1)
        v = tl.load(v_base + cols[:, None] * D + offs_d[None, :], mask=(cols[:, None] < S) & d_ok[None, :],
                    other=0)
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, IEEE, INTERPRETER_BF16)
        m_i = m_new
    out = acc / l_i[:, None]
    row_ok = offs_m < L
    tl.store(o_ptr + bh * L * D + offs_m[:, None] * D + offs_d[None, :], out, mask=row_ok[:, None] & d_ok[None, :])
    tl.store(lse_ptr + bh * L + offs_m, (m_i + tl.log2(l_i)) / _LOG2E, mask=row_ok)


# ---- backward ------------------------------------------------------------------------------------------------
# With p = exp(s - lse) (s = q kᵀ · scale, recomputed per tile) and delta_i = Σ_d o_id · do_id:
#     dv = pᵀ do,   dp = do vᵀ,   ds = p (dp - delta),   dq = ds k · scale,   dk = dsᵀ q · scale
# ``attn_bwd_dkdv_kernel`` owns a block of keys and walks the queries; ``attn_bwd_dq_kernel``
# owns a block of queries and walks the keys (FlashAttention-2's split: no atomics).
@triton.jit
def attn_bwd_delta_kernel(o_ptr,       # [BH·L, D] forward output
                          do_ptr,      # [BH·L, D] its gradient
                          delta_ptr,   # [BH·L] float32: Σ_d o · do
                          R, D, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (rows[:, None] < R) & (offs_d[None, :] < D)
    ptrs = rows.to(tl.int64)[:, None] * D + offs_d[None, :]
    o = tl.load(o_ptr + ptrs, mask=mask, other=0).to(tl.float32)
    do = tl.load(do_ptr + ptrs, mask=mask, other=0).to(tl.float32)
    tl.store(delta_ptr + rows, _tl_sum(o * do, 1), mask=rows < R)


@triton.jit
def _block(bh, rows, n, D, offs_d, d_ok):
    """Element offsets and mask of rows ``rows`` of the [n, D] matrix ``bh`` of a [BH, n, D] tensor."""
    return bh * n * D + rows[:, None] * D + offs_d[None, :], (rows[:, None] < n) & d_ok[None, :]


@triton.jit
def _row_stats(lse_ptr, delta_ptr, bh, rows, L):
    """The logsumexp and delta of queries ``rows`` of matrix ``bh``."""
    lse = tl.load(lse_ptr + bh * L + rows, mask=rows < L, other=0)
    return lse, tl.load(delta_ptr + bh * L + rows, mask=rows < L, other=0)


@triton.jit
def attn_bwd_dkdv_kernel(q_ptr, k_ptr, v_ptr, do_ptr,     # [BH, L|S, D] as in the forward; do like q
                         lse_ptr, delta_ptr,              # [BH, L] float32
                         dk_ptr, dv_ptr,                  # [BH, S, D] outputs
                         L, S, D, scale,
                         CAUSAL: tl.constexpr, IEEE: tl.constexpr, INTERPRETER_BF16: tl.constexpr,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_n = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    kv_off, kv_mask = _block(bh, offs_n, S, D, offs_d, d_ok)
    k = tl.load(k_ptr + kv_off, mask=kv_mask, other=0)
    v = tl.load(v_ptr + kv_off, mask=kv_mask, other=0)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    lo = 0
    if CAUSAL:                               # queries before this key block's first key see none of it
        lo = (pid_n * BLOCK_N) // BLOCK_M * BLOCK_M
    for start in range(lo, L, BLOCK_M):
        rows = start + offs_m
        q_off, q_mask = _block(bh, rows, L, D, offs_d, d_ok)
        q = tl.load(q_ptr + q_off, mask=q_mask, other=0)
        do = tl.load(do_ptr + q_off, mask=q_mask, other=0)
        lse, delta = _row_stats(lse_ptr, delta_ptr, bh, rows, L)
        st = _dot(k, tl.trans(q), IEEE, INTERPRETER_BF16) * scale              # [BLOCK_N, BLOCK_M] = sᵀ
        keep = (offs_n[:, None] < S) & (rows[None, :] < L)
        if CAUSAL:
            keep = keep & (offs_n[:, None] <= rows[None, :])
        pt = tl.where(keep, tl.exp(st - lse[None, :]), 0.0)
        dv += _dot(pt.to(do.dtype), do, IEEE, INTERPRETER_BF16)
        dpt = _dot(v, tl.trans(do), IEEE, INTERPRETER_BF16)
        dst = pt * (dpt - delta[None, :])
        dk += _dot(dst.to(q.dtype), q, IEEE, INTERPRETER_BF16)
    tl.store(dk_ptr + kv_off, dk * scale, mask=kv_mask)
    tl.store(dv_ptr + kv_off, dv, mask=kv_mask)


@triton.jit
def attn_bwd_dq_kernel(q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr,
                       dq_ptr,                            # [BH, L, D] output
                       L, S, D, scale,
                       CAUSAL: tl.constexpr, IEEE: tl.constexpr, INTERPRETER_BF16: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    q_off, q_mask = _block(bh, rows, L, D, offs_d, d_ok)
    q = tl.load(q_ptr + q_off, mask=q_mask, other=0)
    do = tl.load(do_ptr + q_off, mask=q_mask, other=0)
    lse, delta = _row_stats(lse_ptr, delta_ptr, bh, rows, L)
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    hi = S
    if CAUSAL:
        hi = tl.minimum(S, (pid_m + 1) * BLOCK_M)
    for start in range(0, hi, BLOCK_N):
        cols = start + offs_n
        kv_off, kv_mask = _block(bh, cols, S, D, offs_d, d_ok)
        k = tl.load(k_ptr + kv_off, mask=kv_mask, other=0)
        v = tl.load(v_ptr + kv_off, mask=kv_mask, other=0)
        s = _dot(q, tl.trans(k), IEEE, INTERPRETER_BF16) * scale
        keep = (rows[:, None] < L) & (cols[None, :] < S)
        if CAUSAL:
            keep = keep & (cols[None, :] <= rows[:, None])
        p = tl.where(keep, tl.exp(s - lse[:, None]), 0.0)
        dp = _dot(do, tl.trans(v), IEEE, INTERPRETER_BF16)
        ds = p * (dp - delta[:, None])
        dq += _dot(ds.to(k.dtype), k, IEEE, INTERPRETER_BF16)
    tl.store(dq_ptr + q_off, dq * scale, mask=q_mask)
