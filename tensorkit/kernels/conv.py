"""Triton convolutions on the cuda device: the host side of ``kernels/src/conv.py``.

The dispatcher's "conv2d", "conv2d_input_grad" and "conv2d_weight_grad" kernels (see
``ops/conv.py``) get the operands with any strides, a fresh contiguous result and the
geometry (``ops.conv.ConvGeometry``). The kernels take every stride, so nothing is copied
unless the tile config asks for it: a config's ``kernel`` field names the layout the
activations are read in, "nchw" (as given) or "nhwc" (first copied channels-last by
the copy primitive's tiled transpose (``kernels/pointwise.copy_into``), and the forward's and input-gradient's weight likewise, so a
tile's channel axis is contiguous: loads are vectorised, and float16/bfloat16 loads become
wide enough for cp.async, which Triton's software pipeline needs; NCHW gathers load one
2-byte element at a time and are not pipelined, as the sm_90 PTX shows). The forward's and
input-gradient's results are then written channels-last too and copied back (stores into NCHW
scatter a tile's channels a plane apart). One extra pass over the operands and the result,
which the autotuner weighs against the faster product.

Tile configs (``candidates``) are timed once per problem (``_key``: kind, dtype, precision,
exact shapes and geometry: a network has few distinct convolutions) with matmul's ``tune``,
which keeps the winner in memory and in a JSON file under the cache directory
(``cache_path``: one file per GPU name and Triton version), so a later process does not tune
again. Problems under ``TUNE_MIN_WORK`` multiply-adds take the smallest tile untimed. On the
emulated device nothing is tuned: one small config keeps the interpreter fast.

float16/bfloat16 accumulate in float32, float64 in float64. float32 follows
``tk.get_float32_matmul_precision()`` like matmul: exact by default, TF32 tensor cores when
it is "high"/"medium" (``tk.backends.cuda.matmul.allow_tf32``).

The weight-gradient reduces over N*P*Q products into a small result, so it is split into
``SPLIT`` chunks run by separate programs (enough programs to fill the GPU) whose float32
partial sums a second kernel adds in a fixed order: deterministic, no atomics.

Kernels here know nothing about autograd; Triton is imported at the first launch.
"""
from __future__ import annotations

import functools
import math
import os
import re
from typing import Callable

from .. import _dispatch, cuda
from .. import dtypes as D
from .._tensor import Tensor
from ..ops.creation import _scalar_tensor, new_tensor
from . import matmul as _mm
from ._launch import launch, pointer, prepare, triton_source
from .codegen import cache_dir
from .pointwise import copy_into

DTYPES = (D.float16, D.bfloat16, D.float32, D.float64)
Config = _mm.Config                  # kernel: the operands' layout, "nchw" | "nhwc"
_CACHE_VERSION = 2                   # 2: "nhwc" configs write a channels-last result

EMULATED_CONFIG = Config("nchw", 64, 16, 16, num_warps=1, num_stages=1)
TUNE_MIN_WORK = 1 << 24              # multiply-adds below which a convolution is not worth timing
WGRAD_PROGRAMS = 2                   # the weight-gradient splits until about this many programs per SM (two
                                     # 98 KB-shared-memory tiles fit an SM; more only grows the partial sums),
WGRAD_MIN_BLOCKS = 8                 # into chunks of at least this many K blocks (shorter ones spend more
                                     # on partial sums than they save)

_kernels = functools.partial(triton_source, "conv")


def _tiles(layouts, table):
    return [Config(layout, m, n, k, 8, w, s) for m, n, k, w, s in table for layout in layouts]


# (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages). Half and TF32: tensor-core tiles as in the matmul
# tables (BLOCK_K 64 for 2-byte elements, 32 for 4-byte); 64-wide tiles for the narrow layers
# (64 channels) and to keep every SM busy on 7x7 maps. Exact float32/float64 run on FMA units.
# Half precision is tuned channels-last only: its NCHW gathers are 2-byte loads, which cp.async
# cannot copy, so those loops are not pipelined (see the sm_90 PTX; test_conv checks it).
# Four-byte elements are pipelined either way: both layouts are timed.
_HALF = _tiles(("nhwc",), [(128, 128, 64, 8, 3), (128, 64, 64, 4, 4), (64, 128, 64, 4, 4), (64, 64, 64, 4, 4)])
_TF32 = _tiles(("nhwc", "nchw"), [(128, 128, 32, 8, 3), (128, 64, 32, 4, 4), (64, 64, 32, 4, 4)])
_IEEE = _tiles(("nchw", "nhwc"), [(128, 64, 16, 8, 3), (64, 64, 32, 4, 3)])
_F64 = _tiles(("nchw",), [(64, 64, 16, 4, 3), (32, 64, 16, 4, 3)])


def candidates(kind: str, dtype: D.DType, precision: str, M: int, N: int, K: int) -> list[Config]:
    """The configs to time for a GEMM of M x N over K (per group): tiles shrunk to the problem
    (powers of two, at least 16: tl.dot's minimum), duplicates dropped."""
    table = _F64 if dtype is D.float64 else _IEEE if dtype is D.float32 and precision == "ieee" else \
        _TF32 if dtype is D.float32 else _HALF
    fit = lambda block, n: min(block, max(16, _mm._bucket(n)))
    out = []
    for c in table:
        c = c._replace(block_m=fit(c.block_m, M), block_n=fit(c.block_n, N), block_k=fit(c.block_k, K))
        if c not in out:
            out.append(c)
    return out


def cache_path(device_name: str) -> str:
    """The JSON file of tuned conv configs for this GPU and Triton version."""
    import triton
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", device_name).strip("_")
    return os.path.join(cache_dir("autotune"), f"conv-v{_CACHE_VERSION}-{slug}-triton-{triton.__version__}.json")


# ---- operands as the kernels read them --------------------------------------------------------------------
def _channels_last(t: Tensor) -> Tensor:
    """``t`` (N, C, H, W) with the same values, stored (N, H, W, C): channels contiguous."""
    N, C, H, W = t._shape
    if _is_channels_last(t):
        return t
    buf = new_tensor((N, H, W, C), t.dtype, t._storage.device)
    sn, sc, sh, sw = t._strides
    copy_into(Tensor._make(t._storage, t._offset, (N, H, W, C), (sn, sh, sw, sc), t.dtype), buf)  # a tiled transpose
    return Tensor._make(buf._storage, 0, (N, C, H, W), (H * W * C, 1, W * C, C), t.dtype)


def _channels_last_result(out: Tensor) -> Tensor:
    """Where an "nhwc" kernel writes ``out`` (N, C, H, W): ``out`` itself if it is stored
    channels-last, else a channels-last buffer that ``_finish`` copies into it. A tile stored into
    NCHW puts each of its channels a plane apart, one 2-byte element per memory sector (the stores
    ran at ~150 GB/s on the H200, most of the forward's time); channels-last stores are contiguous."""
    if _is_channels_last(out):
        return out
    N, C, H, W = out._shape
    buf = new_tensor((N, H, W, C), out.dtype, out._storage.device)
    return Tensor._make(buf._storage, 0, (N, C, H, W), (H * W * C, 1, W * C, C), out.dtype)


def _is_channels_last(t: Tensor) -> bool:
    N, C, H, W = t._shape
    return t._strides[1] == 1 and t._strides[3] == C and t._strides[2] == W * C


def _finish(result: Tensor, out: Tensor) -> None:
    """Copy a channels-last ``result`` into ``out`` (a tiled transpose) unless they are one."""
    if result is not out:
        copy_into(result, out)


def _strides(t: Tensor) -> tuple:
    return tuple(t._strides)


def _common(geom) -> tuple:
    (sh, sw), (ph, _, pw, _), (dh, dw) = geom.stride, geom.padding, geom.dilation
    return sh, sw, ph, pw, dh, dw


def _constexprs(out: Tensor, config: Config, R: int, S: int, precision: str, channels_last=None) -> dict:
    """The kernels' constexprs, in their order (``launch`` caches by it); ``channels_last`` for the
    kernels that take it."""
    src = _kernels()
    layout = {} if channels_last is None else {"CHANNELS_LAST": channels_last}
    return dict(R=R, S=S, **layout, BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k,
                PRECISION=precision, ACC=src.tl.float64 if out.dtype is D.float64 else src.tl.float32,
                INTERPRETER_BF16=cuda.EMULATED and out.dtype is D.bfloat16)


def _options(config: Config) -> dict:
    return {"num_warps": config.num_warps, "num_stages": config.num_stages}


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _run_fwd(x: Tensor, w: Tensor, out: Tensor, geom, config: Config, precision: str) -> None:
    N, C, H, W = x._shape
    O, CG, R, S = w._shape
    _, _, P, Q = out._shape
    G, OG = geom.groups, O // geom.groups
    y = out
    if config.kernel == "nhwc":
        x, w, y = _channels_last(x), _channels_last(w), _channels_last_result(out)
    grid = (_cdiv(N * P * Q, config.block_m) * _cdiv(OG, config.block_n), G)
    launch(_kernels().conv2d_fwd_kernel, grid, pointer(x), pointer(w), pointer(y), N, H, W, P, Q, CG, OG,
           *_strides(x), *_strides(w), *_strides(y), *_common(geom),
           options=_options(config), **_constexprs(out, config, R, S, precision, config.kernel == "nhwc"))
    _finish(y, out)


def _phases(n_in: int, stride: int, pad: int, dilation: int, taps: int) -> list[tuple]:
    """Per stride phase along one axis: (first row, rows, first tap, tap step, taps). Rows
    h = first + i*stride share (h + pad) mod stride; tap r reaches them iff r*dilation has that
    residue too, which repeats every stride / gcd(stride, dilation) taps."""
    step = stride // math.gcd(stride, dilation)
    out = []
    for first in range(min(stride, n_in)):
        phase = (first + pad) % stride
        r0 = next((r for r in range(min(step, taps)) if (r * dilation) % stride == phase), taps)
        out.append((first, _cdiv(n_in - first, stride), r0, step, _cdiv(taps - r0, step) if r0 < taps else 0))
    return out


def _run_dgrad(g: Tensor, w: Tensor, out: Tensor, geom, config: Config, precision: str) -> None:
    N, C, H, W = out._shape
    O, CG, R, S = w._shape
    _, _, P, Q = g._shape
    G, OG = geom.groups, O // geom.groups
    dx = out
    if config.kernel == "nhwc":
        g, dx = _channels_last(g), _channels_last_result(out)
        # the weight tile is (output channels, input channels): make the input channels contiguous
        wt = new_tensor((R, S, O, CG), w.dtype, w._storage.device)
        view = Tensor._make(wt._storage, 0, (O, CG, R, S), (CG, 1, S * O * CG, O * CG), w.dtype)
        copy_into(w, view)
        w = view
    sh, sw, ph, pw, dh, dw = _common(geom)
    constexprs = _constexprs(out, config, R, S, precision, config.kernel == "nhwc")
    del constexprs["R"], constexprs["S"]
    for h0, HP, r0, step_r, RP in _phases(H, sh, ph, dh, R):
        for w0, WP, s0, step_s, SP in _phases(W, sw, pw, dw, S):
            grid = (_cdiv(N * HP * WP, config.block_m) * _cdiv(CG, config.block_n), G)
            launch(_kernels().conv2d_dgrad_kernel, grid, pointer(g), pointer(w), pointer(dx), N, P, Q, CG, OG,
                   *_strides(g), *_strides(w), *_strides(dx), sh, sw, ph, pw, dh, dw,
                   HP, WP, h0, w0, r0, step_r, RP, s0, step_s, SP, options=_options(config), **constexprs)
    _finish(dx, out)


def _wgrad_split(tiles: int, K: int, block_k: int, device_index: int) -> int:
    """Chunks to split the weight-gradient's reduction into: enough programs to fill the GPU,
    none shorter than WGRAD_MIN_BLOCKS blocks."""
    sms = 4 if cuda.EMULATED else _mm._device_info(device_index)[2]
    return max(1, min(_cdiv(WGRAD_PROGRAMS * sms, tiles), K // (WGRAD_MIN_BLOCKS * block_k)))


def _run_wgrad(x: Tensor, g: Tensor, out: Tensor, geom, config: Config, precision: str) -> None:
    N, C, H, W = x._shape
    O, CG, R, S = out._shape
    _, _, P, Q = g._shape
    G, OG = geom.groups, O // geom.groups
    K, CRS = N * P * Q, CG * R * S
    if config.kernel == "nhwc":
        x, g = _channels_last(x), _channels_last(g)
    tiles = _cdiv(OG, config.block_m) * _cdiv(CRS, config.block_n)
    split = _wgrad_split(tiles * G, K, config.block_k, out._storage.device.index or 0)
    chunk = _cdiv(_cdiv(K, split), config.block_k) * config.block_k
    split = _cdiv(K, chunk)
    acc_dtype = D.float64 if out.dtype is D.float64 else D.float32
    dest = out if split == 1 else new_tensor((split, O, CRS), acc_dtype, out._storage.device)
    launch(_kernels().conv2d_wgrad_kernel, (tiles, G, split), pointer(x), pointer(g), pointer(dest),
           N, H, W, P, Q, CG, OG, *_strides(x), *_strides(g), O * CRS, CRS, *_common(geom), chunk,
           options=_options(config), **_constexprs(out, config, R, S, precision, config.kernel == "nhwc"))
    if split > 1:
        _mm.splitk_sum(dest, out)


# ---- choosing a config -------------------------------------------------------------------------------------------
_RUNS = {"fwd": _run_fwd, "dgrad": _run_dgrad, "wgrad": _run_wgrad}
_memo: dict = {}    # (device index, kind, dtype, precision, shapes, geometry) -> Config chosen in this process
_timer: Callable | None = None  # tests set a fake timer to exercise tuning on the emulated device


def _gemm(kind: str, a: Tensor, b: Tensor, out: Tensor, groups: int) -> tuple:
    """(M, N, K) of the kind's GEMM (per group)."""
    if kind == "fwd":
        N, O, P, Q = out._shape
        return N * P * Q, O // groups, math.prod(b._shape[1:])
    if kind == "dgrad":
        N, C, H, W = out._shape
        O, CG, R, S = b._shape
        return N * H * W, CG, O // groups * R * S
    O, CG, R, S = out._shape
    N, _, P, Q = b._shape
    return O // groups, CG * R * S, N * P * Q


def _key(kind: str, a: Tensor, b: Tensor, out: Tensor, geom, precision: str) -> str:
    shape = lambda t: "x".join(map(str, t._shape))
    return (f"{kind}/{out.dtype.name}/{precision}/{shape(a)}/{shape(b)}/{shape(out)}/s{geom.stride}"
            f"/p{geom.padding}/d{geom.dilation}/g{geom.groups}").replace(" ", "")


def _config(kind: str, a: Tensor, b: Tensor, out: Tensor, geom, precision: str) -> Config:
    if cuda.EMULATED and _timer is None:
        return EMULATED_CONFIG
    # the memo's key is a tuple (cheap to hash); the cache file's is the readable string
    memo_key = (out._storage.device.index, kind, out.dtype, precision, a._shape, b._shape, out._shape, geom)
    config = _memo.get(memo_key)
    if config is None:
        prepare()
        name = _mm._device_info(out._storage.device.index or 0)[0]
        key = _key(kind, a, b, out, geom, precision)
        M, N, K = _gemm(kind, a, b, out, geom.groups)
        configs = candidates(kind, out.dtype, precision, M, N, K)
        run = lambda c: _RUNS[kind](a, b, out, geom, c, precision)
        if M * N * K * geom.groups < TUNE_MIN_WORK and _timer is None:
            # launch-bound: the smallest tile (most programs), in the given layout (no staging
            # copy) when there is no pipeline to feed anyway
            config = configs[-1]._replace(kernel="nchw")
        else:
            config = _mm.tune(key, configs, run, cache_path(name), timer=_timer or _mm._do_bench)
        _memo[memo_key] = config
    return config


def _conv(kind: str, a: Tensor, b: Tensor, out: Tensor, geom) -> None:
    if out.numel() == 0:
        return
    if a.numel() == 0 or b.numel() == 0:        # an empty reduction (no batch, no channels): zeros
        copy_into(_scalar_tensor(0, out.dtype), out)
        return
    precision = _mm._precision(out.dtype)
    _RUNS[kind](a, b, out, geom, _config(kind, a, b, out, geom, precision), precision)


@_dispatch.register("conv2d", "cuda", DTYPES)
def conv2d(x: Tensor, w: Tensor, out: Tensor, geom) -> None:
    _conv("fwd", x, w, out, geom)


@_dispatch.register("conv2d_input_grad", "cuda", DTYPES)
def conv2d_input_grad(g: Tensor, w: Tensor, out: Tensor, geom) -> None:
    _conv("dgrad", g, w, out, geom)


@_dispatch.register("conv2d_weight_grad", "cuda", DTYPES)
def conv2d_weight_grad(x: Tensor, g: Tensor, out: Tensor, geom) -> None:
    _conv("wgrad", x, g, out, geom)
