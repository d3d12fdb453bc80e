"""Triton norm and loss kernels on the cuda device: the host side of ``kernels/src/norm.py``.

The GPU twin of ``cpu/norm.py``, registered for the same ops and dtypes. Inputs arrive
contiguous, viewed as rows (``[M, N]`` for the norms, ``[M, C]`` logits). Block sizes: a row
of up to ``SINGLE_MAX`` elements is one register tile (one read, one write); longer rows are
swept in ``LOOP_BLOCK`` steps. The backward runs ``min(M, BWD_PROGRAMS)`` programs, each over
a contiguous block of rows, and reduces their ``[programs, N]`` dweight / dbias partial sums
with the reduction kernels (a step of this op, not an op autograd sees). Batch norm views its
input as ``[N, C, HW]`` and runs three launches per direction (statistics, per-channel finalize,
apply): see ``_bn_plan``.
"""
from __future__ import annotations

import functools

from .. import _dispatch
from .. import dtypes as D
from .._tensor import Tensor
from ._launch import launch, pointer, triton_source
from .indexing import deferred_report
from .pointwise import copy_into

SINGLE_MAX = 8192       # a row up to this long is held in registers (8192 float32: 32 KB per program)
LOOP_BLOCK = 2048       # longer rows: sweeps of this many elements
BWD_PROGRAMS = 1024     # backward programs (~8 per SM on an H100/H200); partial sums cost ~4% of the traffic
CE_BLOCK = 4096         # cross-entropy sweeps the classes in blocks of this many
BN_TILE = 2048          # batch norm: elements per tile (8 warps x 8 per thread: a few vector loads in flight)
BN_HW_MAX = 1024        # batch norm: spatial positions per tile at most (more: several spatial blocks)
BN_PROGRAMS = 1024      # batch norm: programs per pass to aim for (~8 per SM on an H100/H200)
BN_MAX_SPLITS = 256     # batch norm: programs per channel block at most (the finalize reads them all)
BN_FIN_S, BN_FIN_C = 128, 32    # batch norm finalize: [splits, channels] tile of the partial sums

_kernels = functools.partial(triton_source, "norm")


def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def _acc(dtype: D.DType) -> D.DType:
    return D.float32 if dtype in (D.float16, D.bfloat16) else dtype


def _new(shape, dtype, like: Tensor) -> Tensor:
    from ..ops.creation import new_tensor
    return new_tensor(shape, dtype, like._storage.device)


def _block(n: int):
    """(SINGLE, BLOCK_N, num_warps) for rows of n elements."""
    if n <= SINGLE_MAX:
        b = _pow2(n)
        return True, b, max(1, min(16, b // 256))
    return False, LOOP_BLOCK, 8


def layer_norm(x, w, b, outs, params) -> None:
    y, mean, rstd = outs
    n = params["n"]
    m = rstd.numel()
    if m == 0 or n == 0:
        return
    single, block, warps = _block(n)
    launch(_kernels().norm_fwd_kernel, (m,), pointer(x), pointer(w if w is not None else x),
           pointer(b if b is not None else x), pointer(y), pointer(mean if mean is not None else rstd),
           pointer(rstd), n, params["eps"], options={"num_warps": warps}, RMS=params["rms"],
           HAS_W=w is not None, HAS_B=b is not None, SINGLE=single, BLOCK_N=block)


def norm_backward(g, x, w, mean, rstd, outs, params) -> None:
    n = params["n"]
    m = rstd.numel()
    if n == 0:
        return
    dx = outs[0]
    single, block, warps = _block(n)
    programs = min(m, BWD_PROGRAMS)            # no rows: no programs, and dweight sums to 0
    per = -(-m // programs) if m else 0
    programs = -(-m // per) if m else 0
    acc = _acc(x.dtype)
    has_w = w is not None
    dwp = _new((programs, n) if has_w else (1,), acc, x)
    dbp = _new((programs, n) if has_w else (1,), acc, x)
    if m:
        launch(_kernels().norm_bwd_kernel, (programs,), pointer(g), pointer(x), pointer(w if has_w else x),
               pointer(mean if mean is not None else rstd), pointer(rstd), pointer(dx), pointer(dwp),
               pointer(dbp), m, n, per, options={"num_warps": warps}, RMS=params["rms"], HAS_W=has_w,
               SINGLE=single, BLOCK_N=block)
    sum_kernel = _dispatch.lookup("sum", "cuda", acc)
    for out, part in zip(outs[1:], (dwp, dbp)):       # the parameters' dtype: float32 ones get the sums as they are
        if out.dtype is acc:
            sum_kernel("sum", part, [out], (0,), {})
        else:
            total = _new((n,), acc, x)
            sum_kernel("sum", part, [total], (0,), {})
            copy_into(total, out)


def cross_entropy(x, t, w, outs, params) -> None:
    loss, lse = outs
    m, c = x.shape
    if m == 0:
        return
    block = min(_pow2(c), CE_BLOCK)
    eps = params["label_smoothing"]
    # a target out of range: NaN in its row, and an IndexError at the next synchronisation
    report = deferred_report(x.device, "cross_entropy (target)", x.shape, (1,), (c,), False)
    launch(_kernels().ce_fwd_kernel, (m,), pointer(x), pointer(t), pointer(w if w is not None else x),
           pointer(loss), pointer(lse), pointer(report), c, params["ignore_index"], eps,
           options={"num_warps": max(1, min(16, block // 256))}, HAS_W=w is not None, SMOOTH=eps != 0.0,
           BLOCK_C=block)


def cross_entropy_backward(g, x, t, w, lse, dx, params) -> None:
    m, c = x.shape
    if m == 0:
        return
    block = min(_pow2(c), CE_BLOCK)
    launch(_kernels().ce_bwd_kernel, (m,), pointer(g), pointer(x), pointer(t), pointer(w if w is not None else x),
           pointer(lse), pointer(dx), c, params["ignore_index"], params["label_smoothing"],
           options={"num_warps": max(1, min(16, block // 256))}, HAS_W=w is not None, BLOCK_C=block)


# ---- batch_norm: [N, C, HW] in channel-block x sample tiles (see kernels/src/norm.py) ----------------------------
def _bn_plan(x) -> dict:
    """The tiling of ``x`` ``[N, C, *]``: a tile is BN_TILE elements of one sample, BLOCK_HW
    consecutive spatial positions (all of them up to BN_HW_MAX) of BLOCK_C channels, so a tile is
    one contiguous run when HW <= BN_HW_MAX ([128, 512, 4, 4]: 128 channels x 16) or BLOCK_C runs
    of 4 KB ([128, 64, 32, 32]: 2 channels x 1024). Splits: enough programs per channel block to
    make about BN_PROGRAMS in all (at most BN_MAX_SPLITS, so the finalize's sweep over them stays
    short: [4096, 512] is one channel block), each over a run of (sample, spatial block) items."""
    nb, c = x.shape[0], x.shape[1]
    hw = x.numel() // (nb * c)
    block_hw = min(_pow2(hw), BN_HW_MAX)
    block_c = min(_pow2(c), max(1, BN_TILE // block_hw))
    cblocks = -(-c // block_c)
    hw_blocks = -(-hw // block_hw)
    items = nb * hw_blocks
    per = -(-items // min(items, BN_MAX_SPLITS, max(1, -(-BN_PROGRAMS // cblocks))))
    return dict(c=c, hw=hw, block_c=block_c, block_hw=block_hw, cblocks=cblocks, hw_blocks=hw_blocks,
                items=items, per=per, splits=-(-items // per), warps=max(1, min(8, block_c * block_hw // 256)))


def _bn_pass(x, g, mean, params, bwd: bool):
    """The statistics pass and the per-channel reduction of its partial sums (finalize launched by
    the caller): returns (plan, partial sums [2, splits, C])."""
    p = _bn_plan(x)
    part = _new((2, p["splits"], p["c"]), _acc(x.dtype), x)
    launch(_kernels().bn_stats_kernel, (p["cblocks"], p["splits"]), pointer(x), pointer(g), pointer(mean),
           pointer(part), p["c"], p["hw"], p["items"], p["per"], p["hw_blocks"], p["splits"],
           options={"num_warps": p["warps"]}, BWD=bwd, BLOCK_C=p["block_c"], BLOCK_HW=p["block_hw"])
    return p, part


def _bn_finalize(p, x, part, mean, stat, out1, out2, rm, rv, params, bwd: bool) -> None:
    launch(_kernels().bn_finalize_kernel, (-(-p["c"] // BN_FIN_C),), pointer(x), pointer(part), pointer(mean),
           pointer(stat), pointer(out1), pointer(out2), pointer(rm if rm is not None else mean),
           pointer(rv if rv is not None else mean), p["c"], p["hw"], p["splits"], float(params["count"]),
           params["eps"], params.get("momentum", 0.0), options={"num_warps": 8}, BWD=bwd, HAS_RM=rm is not None,
           HAS_RV=rv is not None, BLOCK_S=min(_pow2(p["splits"]), BN_FIN_S), BLOCK_C=BN_FIN_C)


def _bn_apply(p, x, g, out, mean, invstd, w, b, s1, s2, params, bwd: bool) -> None:
    launch(_kernels().bn_apply_kernel, (p["cblocks"], p["splits"]), pointer(x), pointer(g), pointer(out),
           pointer(mean), pointer(invstd), pointer(w if w is not None else mean), pointer(b if b is not None else mean),
           pointer(s1), pointer(s2), p["c"], p["hw"], p["items"], p["per"], p["hw_blocks"], float(params["count"]),
           options={"num_warps": p["warps"]}, BWD=bwd, HAS_W=w is not None, HAS_B=b is not None,
           BLOCK_C=p["block_c"], BLOCK_HW=p["block_hw"])


def batch_norm(x, w, b, rm, rv, outs, params) -> None:
    y, mean, invstd = outs
    if x.numel() == 0:
        return
    p, part = _bn_pass(x, x, mean, params, False)
    _bn_finalize(p, x, part, mean, invstd, mean, mean, rm, rv, params, False)
    _bn_apply(p, x, x, y, mean, invstd, w, b, mean, mean, params, False)


def batch_norm_backward(g, x, w, mean, invstd, outs, params) -> None:
    dx, sgx, sg = outs
    if x.numel() == 0:
        return
    p, part = _bn_pass(x, g, mean, params, True)
    _bn_finalize(p, x, part, mean, invstd, sgx, sg, None, None, params, True)
    _bn_apply(p, x, g, dx, mean, invstd, w, None, sgx, sg, params, True)


_FLOATS = D.FLOAT_DTYPES
_dispatch.register("layer_norm", "cuda", _FLOATS)(layer_norm)
_dispatch.register("rms_norm", "cuda", _FLOATS)(layer_norm)
_dispatch.register("layer_norm_backward", "cuda", _FLOATS)(norm_backward)
_dispatch.register("rms_norm_backward", "cuda", _FLOATS)(norm_backward)
_dispatch.register("cross_entropy", "cuda", _FLOATS)(cross_entropy)
_dispatch.register("cross_entropy_backward", "cuda", _FLOATS)(cross_entropy_backward)
_dispatch.register("batch_norm", "cuda", _FLOATS)(batch_norm)
_dispatch.register("batch_norm_backward", "cuda", _FLOATS)(batch_norm_backward)
