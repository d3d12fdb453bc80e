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
