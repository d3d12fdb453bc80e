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


def flash_attention_backward(g, q, k, v, o, lse, outs, params) -> None:
    """dq, dk, dv of ``flash_attention`` (see the kernel module): a delta pass, then one kernel
    over key blocks (dk, dv) and one over query blocks (dq)."""
    dq, dk, dv = outs
    bh, lq, d = q.shape
    s = k.shape[1]
    if dq.numel() == 0 and dk.numel() == 0:
        return
    from ..ops.creation import new_tensor
    src = _kernels()
    bm, bn, warps, stages = _bwd_tiles(q.dtype, d)
    bm, bn = min(bm, max(16, _pow2(lq))), min(bn, max(16, _pow2(s)))
    bd = max(16, _pow2(d))
    delta = new_tensor((bh, lq), D.float32, q._storage.device)
    launch(src.attn_bwd_delta_kernel, (-(-bh * lq // 64),), pointer(o), pointer(g), pointer(delta), bh * lq, d,
           BLOCK_R=64, BLOCK_D=bd)
    flags = dict(CAUSAL=params["causal"], IEEE=q.dtype in (D.float32, D.float64),
                 INTERPRETER_BF16=cuda.EMULATED and q.dtype is D.bfloat16, BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=bd)
    options = {"num_warps": warps, "num_stages": stages}
    common = (pointer(q), pointer(k), pointer(v), pointer(g), pointer(lse), pointer(delta))
    launch(src.attn_bwd_dkdv_kernel, (-(-s // bn), bh), *common, pointer(dk), pointer(dv), lq, s, d,
           params["scale"], options=options, **flags)
    launch(src.attn_bwd_dq_kernel, (-(-lq // bm), bh), *common, pointer(dq), lq, s, d, params["scale"],
           options=options, **flags)


def _bwd_tiles(dtype: D.DType, d: int):
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) of the backward kernels: 64 x 64 tiles (each
    program holds two [64, D] float32 accumulators). For 16-bit inputs, 3 stages: a sweep of 11
    configs on the H200 (8x16x1024x64, 2026-11-29) had it fastest, 3-10% ahead of 2 stages."""
    if dtype in (D.float16, D.bfloat16) and d <= 64:
        return 64, 64, 4, 3
    return 32, 32, 4, 1


_dispatch.register("flash_attention_backward", "cuda", (D.float16, D.bfloat16, D.float32))(flash_attention_backward)
