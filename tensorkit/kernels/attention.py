"""Flash attention on the cuda device: the host side of ``kernels/src/attention.py``.

Inputs arrive contiguous as ``[B·H, L, D]`` (``ops/attention.py`` reshapes). Tiles: BLOCK_M
queries x BLOCK_N keys; 128 x 64 with 4 warps and 3 pipeline stages for 16-bit inputs and
head dims up to 64 (the Triton tutorial's H100 choice), smaller for float32 and wide heads so
a tile's operands fit in shared memory.
"""
from __future__ import annotations

import functools

from .. import _dispatch, cuda
from .. import dtypes as D
from ._launch import launch, pointer, triton_source

_kernels = functools.partial(triton_source, "attention")


def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def _tiles(dtype: D.DType, d: int):
    """(BLOCK_M, BLOCK_N, num_warps, num_stages)."""
    if dtype in (D.float16, D.bfloat16) and d <= 128:
        return (128, 64, 4, 3) if d <= 64 else (128, 32, 8, 3)
    return 64, 32, 4, 2


def flash_attention(q, k, v, outs, params) -> None:
    o, lse = outs
    bh, lq, d = q.shape
    s = k.shape[1]
    if o.numel() == 0:
        return
    bm, bn, warps, stages = _tiles(q.dtype, d)
    bm = min(bm, max(16, _pow2(lq)))
    bn = min(bn, max(16, _pow2(s)))
    grid = (-(-lq // bm), bh)
    launch(_kernels().attn_fwd_kernel, grid, pointer(q), pointer(k), pointer(v), pointer(o), pointer(lse),
           lq, s, d, params["scale"], options={"num_warps": warps, "num_stages": stages},
           CAUSAL=params["causal"], IEEE=q.dtype in (D.float32, D.float64),
           INTERPRETER_BF16=cuda.EMULATED and q.dtype is D.bfloat16, BLOCK_M=bm, BLOCK_N=bn,
           BLOCK_D=max(16, _pow2(d)))


_dispatch.register("flash_attention", "cuda", (D.float16, D.bfloat16, D.float32))(flash_attention)
