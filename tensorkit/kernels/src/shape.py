"""Triton kernel of transposing copies (host side: ``kernels/pointwise.py``, the ``copy``
primitive's launcher, which takes this path for a same-dtype copy whose source runs along
another axis than its destination: ``.contiguous()`` of a transpose, a permute to channels-last,
a K-major staging for matmul).

A generated elementwise copy reads such a source, or writes the destination, one element per
memory transaction. Here each program moves a (BLOCK_P, BLOCK_Q) tile: loaded along P (the
source's contiguous axis), stored along Q (the destination's); Triton's coalescing pass gives
the load and the store each their own layout and converts between them in shared memory.
"""
import triton
import triton.language as tl


@triton.jit
def transpose_copy_kernel(src, dst,              # dst: (B, P, Q) contiguous; src: the same elements, strided
                          P, Q, s_b, s_p, s_q,   # src's strides along B, P, Q (s_p is 1: its contiguous axis)
                          BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr):
    """``dst[b, p, q] = src[b * s_b + p * s_p + q * s_q]``."""
    b = tl.program_id(2).to(tl.int64)
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    q = tl.program_id(1) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    mask = (p[:, None] < P) & (q[None, :] < Q)
    tile = tl.load(src + b * s_b + p[:, None].to(tl.int64) * s_p + q[None, :].to(tl.int64) * s_q, mask=mask)
    tl.store(dst + b * P * Q + p[:, None].to(tl.int64) * Q + q[None, :], tile, mask=mask)
