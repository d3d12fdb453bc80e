"""Triton matrix products on the cuda device: the host side of ``kernels/src/matmul.py``.

``matmul(a, b, out)`` (the dispatcher's "matmul" kernel; see ``ops/linalg.py``) gets ``a``
expanded to ``batch + (M, K)``, ``b`` to ``batch + (K, N)`` (broadcast batch dims have stride
0, either operand may be transposed or sliced) and a fresh contiguous ``out``. Nothing is
copied: every stride goes to the kernel.

A call goes: plan (``_plan``: coalesce the batch dims; fold a batch into M when ``b`` is
shared by all batches, so ``(batch, M, K) @ (K, N)`` is one tall product) -> pick a tile
config -> launch (``_run``). Configs are autotuned per key (``_key``: batch, M, N, K rounded
up to powers of two, dtype, operand layouts, float32 precision, whether the TMA kernel
applies) by timing the candidates (``candidates``) on the real inputs, once per key
(``tune``): the winner is kept in memory and in a JSON file under the cache directory, one
file per GPU name and Triton version, so a later process does not tune again. Small products
(under ``TUNE_MIN_WORK`` multiply-adds) are launch-bound: they take the smallest candidate
untimed. On the emulated device nothing is tuned: one small config keeps the interpreter
fast.

float16/bfloat16 accumulate in float32 and round once on the store (as cuBLAS does); float64
uses float64 tensor cores (DMMA) on sm80/sm90. float32 follows
``tk.get_float32_matmul_precision()``: exact IEEE products by default (as PyTorch), TF32
tensor cores when it is "high" or "medium" (``tk.backends.cuda.matmul.allow_tf32``). Integer
matmul is not registered (PyTorch has none on CUDA either): the dispatcher names
op/device/dtype.

Kernels here know nothing about autograd; Triton is imported at the first launch.
"""
from __future__ import annotations

import functools
import json
import math
import os
import re
import tempfile
import warnings
from typing import Callable, NamedTuple

import numpy as np

from .. import _dispatch, backends, cuda
from .. import dtypes as D
from .._tensor import Tensor
from ..ops.creation import new_tensor
from .codegen import cache_dir, coalesce
from ._launch import launch, pointer, prepare, triton_source
from .pointwise import copy_into

DTYPES = (D.float16, D.bfloat16, D.float32, D.float64)
_CACHE_VERSION = 1          # bump when kernels or Config change meaning: old tuning results are ignored


class Config(NamedTuple):
    """One tile configuration. ``kernel``: "ptr" (``matmul_kernel``, any layout) or "tma"
    (``matmul_kernel_tma``, sm90+, see ``_tma_strides``)."""

    kernel: str
    block_m: int
    block_n: int
    block_k: int
    group_m: int = 8
    num_warps: int = 4
    num_stages: int = 3
    split_store: bool = False


# The interpreter runs every program in Python: the smallest tile tl.dot takes.
EMULATED_CONFIG = Config("ptr", 16, 16, 16, group_m=8, num_warps=1, num_stages=1)


def _configs(kind, tiles, stages_warps):
    return [Config(kind, m, n, k, 8, w, s, *extra) for (m, n, k, *extra), (s, w) in zip(tiles, stages_warps)]


# Candidates per (dtype family, GPU generation). Tile sizes from the Triton tutorials
# (03 matmul, 09 persistent matmul) and what they tune to on H100/A100: 128x256 / 256x128
# tiles with 8 warps feed Hopper's wgmma best for big products; 64-wide tiles keep all SMs
# busy when M or N is small (64 x 32 tiles, deep in K, when M is so small that the product
# is a read of B: e.g. 64 x 4096 x 4096); float32 takes half the K depth (4-byte elements,
# same shared memory per stage).
_HOPPER_HALF = (
    _configs("tma", [(128, 256, 64), (128, 256, 64, True), (256, 128, 64), (128, 128, 64), (64, 128, 64)],
             [(3, 8), (4, 8), (3, 8), (4, 8), (4, 4)])
    + _configs("ptr", [(128, 256, 64), (256, 128, 64), (128, 128, 64), (64, 128, 64), (64, 32, 128), (64, 64, 64)],
               [(3, 8), (3, 8), (4, 4), (4, 4), (4, 4), (4, 4)]))
_HOPPER_TF32 = (
    _configs("tma", [(128, 256, 32, True), (128, 128, 32), (128, 128, 32), (64, 128, 32)],
             [(3, 8), (4, 8), (4, 4), (4, 4)])
    + _configs("ptr", [(128, 256, 32), (128, 128, 32), (64, 128, 32), (64, 64, 32)],
               [(3, 8), (4, 4), (4, 4), (4, 4)]))
# exact float32 (and float64) products run on the FMA units: smaller tiles, registers bound
_FMA = _configs("ptr", [(128, 128, 16), (128, 64, 32), (64, 128, 32), (64, 64, 32), (32, 64, 32)],
                [(3, 8), (3, 4), (3, 4), (3, 4), (3, 4)])
_HOPPER_IEEE = _configs("tma", [(128, 128, 32), (128, 64, 32)], [(3, 8), (3, 4)]) + _FMA
_FLOAT64 = _configs("ptr", [(64, 64, 32), (128, 64, 16), (64, 128, 16), (128, 128, 16), (32, 64, 32)],
                    [(3, 4), (3, 4), (3, 4), (3, 8), (3, 4)])
_AMPERE_HALF = _configs("ptr", [(128, 256, 64), (256, 128, 32), (128, 128, 32), (128, 64, 32), (64, 128, 32),
                                (64, 64, 32), (64, 32, 32)],
                        [(3, 8), (3, 8), (4, 4), (4, 4), (4, 4), (4, 4), (5, 2)])
_AMPERE_TF32 = _configs("ptr", [(128, 128, 32), (128, 64, 32), (64, 128, 32), (64, 64, 32)],
                        [(3, 8), (4, 4), (4, 4), (4, 4)])


def _bucket(n: int) -> int:
    """``n`` rounded up to a power of two."""
    return 1 << max(0, n - 1).bit_length()


def candidates(dtype: D.DType, precision: str, capability: tuple, tma: bool, M: int, N: int, K: int) -> list[Config]:
    """The configs to time for a problem. Tiles larger than the problem are shrunk to it (a
    power of two, at least 16: tl.dot's minimum), fewer warps for small tiles, duplicates
    dropped; "tma" configs only where the TMA kernel applies (``tma``)."""
    hopper = capability[0] >= 9
    if dtype is D.float64:
        table = _FLOAT64
    elif dtype is D.float32 and precision == "ieee":
        table = _HOPPER_IEEE if hopper else _FMA
    elif dtype is D.float32:
        table = _HOPPER_TF32 if hopper else _AMPERE_TF32
    else:
        table = _HOPPER_HALF if hopper else _AMPERE_HALF
    fit = lambda block, n: min(block, max(16, _bucket(n)))
    out = []
    for c in table:
        if c.kernel == "tma" and not tma:
            continue
        m, n, k = fit(c.block_m, M), fit(c.block_n, N), fit(c.block_k, K)
        warps = c.num_warps if m * n >= 128 * 128 else min(c.num_warps, 4)
        c = c._replace(block_m=m, block_n=n, block_k=k, num_warps=warps,
                       split_store=c.split_store and n >= 32)
        if c not in out:
            out.append(c)
    return out


# ---- the plan: shapes and strides as the kernels take them --------------------------------------------------
class _Plan(NamedTuple):
    M: int
    N: int
    K: int
    outer: tuple            # batch dims looped over on the host (rare: > 2 batch dims left after coalescing)
    batch: tuple            # (B0, B1): the batch dims the kernel indexes (1 where absent)
    a: tuple                # per operand: (strides of outer dims, (s0, s1), (s_rows, s_cols))
    b: tuple
    c: tuple
    wide: bool              # some matrix spans 2**31 elements or more: int64 offsets


def _plan(a: Tensor, b: Tensor, out: Tensor) -> _Plan:
    M, K = a._shape[-2:]
    N = out._shape[-1]
    sa, sb, sc = a._strides, b._strides, out._strides
    nb = len(out._shape) - 2
    shape, (ba, bb, bc) = coalesce(out._shape[:-2], [sa[:nb], sb[:nb], sc[:nb]]) if nb else ([1], [[0], [0], [0]])
    if len(shape) == 1 and bb[0] == 0 and (ba[0] == M * sa[-2] or M == 1) and bc[0] == M * sc[-2]:
        # b is shared by every batch and a's batches continue its rows (as out's do): one
        # (batch*M) x K product, bigger tiles, fewer launches
        M, sa, sc = M * shape[0], (ba[0] if M == 1 else sa[-2], sa[-1]), (bc[0] if M == 1 else sc[-2], sc[-1])
        shape, ba, bb, bc = [1], [0], [0], [0]
    while len(shape) < 2:
        shape, ba, bb, bc = [1] + shape, [0] + ba, [0] + bb, [0] + bc
    k = len(shape) - 2
    split = lambda st, m: (tuple(st[:k]), tuple(st[k:]), tuple(m))
    span = lambda st, rows, cols: (rows - 1) * abs(st[-2]) + (cols - 1) * abs(st[-1])
    wide = max(span(sa, M, K), span(sb, K, N), span(sc, M, N)) >= 2 ** 31
    return _Plan(M, N, K, tuple(shape[:k]), tuple(shape[k:]),
                 split(ba, sa[-2:]), split(bb, sb[-2:]), split(bc, sc[-2:]), wide)


def _layout(s_rows: int, s_cols: int, rows: int, cols: int) -> str:
    """'r' if the operand's rows are contiguous (unit column stride), 'c' for columns, else 's'."""
    if s_cols == 1 or cols == 1:
        return "r"
    if s_rows == 1 or rows == 1:
        return "c"
    return "s"


def _tma_readable(s_inner: int, s_outer: int, inner: int, unit: int) -> bool:
    """Whether TMA can read a matrix stored as lines of ``inner`` elements: unit stride along a
    line, lines 16 bytes (``unit`` elements) apart and not overlapping."""
    return s_inner == 1 and s_outer % unit == 0 and s_outer >= inner


def _tma_strides(plan: _Plan, a: Tensor, b: Tensor, out: Tensor, capability: tuple):
    """(stride_a, A_K_MAJOR, stride_b, B_K_MAJOR) for ``matmul_kernel_tma``, or None where it
    does not apply: before sm90, float64 (no wgmma), a batch (the kernel takes 2-D
    operands), K == 0, or a layout TMA cannot read (see ``_tma_readable``; data pointers must
    be 16-byte aligned too)."""
    if capability[0] < 9 or a.dtype is D.float64 or plan.outer or plan.batch != (1, 1) or plan.K == 0:
        return None
    M, N, K = plan.M, plan.N, plan.K
    unit = 16 // a.dtype.itemsize
    (sam, sak), (sbk, sbn), (scm, scn) = plan.a[2], plan.b[2], plan.c[2]
    if any(t.data_ptr() % 16 for t in (a, b, out)) or not _tma_readable(scn, scm, N, unit):
        return None
    if _tma_readable(sak, sam, K, unit):
        a_desc = (sam, True)
    elif _tma_readable(sam, sak, M, unit):
        a_desc = (sak, False)
    else:
        return None
    if _tma_readable(sbn, sbk, N, unit):
        b_desc = (sbk, False)
    elif _tma_readable(sbk, sbn, K, unit):
        b_desc = (sbn, True)
    else:
        return None
    return a_desc + b_desc


def _batch(plan: _Plan) -> int:
    return math.prod(plan.outer) * plan.batch[0] * plan.batch[1]


def _key(plan: _Plan, dtype: D.DType, precision: str, tma: bool) -> str:
    """The autotune key: problems with the same key share a config."""
    la = _layout(*plan.a[2], plan.M, plan.K)
    lb = _layout(*plan.b[2], plan.K, plan.N)
    return (f"{dtype.name}/{precision}/batch{_bucket(_batch(plan))}/M{_bucket(plan.M)}/N{_bucket(plan.N)}"
            f"/K{_bucket(plan.K)}/a{la}/b{lb}/tma{int(tma)}")


def _precision(dtype: D.DType) -> str:
    """tl.dot's input_precision: TF32 for float32 when the user allowed it, else exact."""
    if dtype is D.float32 and backends.get_float32_matmul_precision() != "highest":
        return "tf32"
    return "ieee"


# ---- the device ---------------------------------------------------------------------------------------------------
_devices: dict = {}


def _device_info(index: int) -> tuple:
    """(name, capability, SM count) of CUDA device ``index``, asked once."""
    info = _devices.get(index)
    if info is None:
        if cuda.EMULATED:
            # 4 "SMs": the persistent kernel's programs each loop over several tiles in tests
            info = (cuda.get_device_name(index), cuda.get_device_capability(index), 4)
        else:
            from . import _driver
            props = _driver.ensure_driver().utils.get_device_properties(index)
            info = (cuda.get_device_name(index), cuda.get_device_capability(index), props["multiprocessor_count"])
        _devices[index] = info
    return info


# ---- autotuning and its cache on disk --------------------------------------------------------------------------------
def cache_path(device_name: str) -> str:
    """The JSON file of tuned configs for this GPU and Triton version."""
    import triton
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", device_name).strip("_")
    return os.path.join(cache_dir("autotune"), f"matmul-v{_CACHE_VERSION}-{slug}-triton-{triton.__version__}.json")


def read_cache(path: str) -> dict[str, Config]:
    """The configs stored in ``path`` (empty if it is missing or unreadable; bad entries skipped)."""
    try:
        with open(path) as f:
            entries = json.load(f).get("configs", {})
    except (OSError, ValueError, AttributeError):
        return {}
    out = {}
    for key, fields in entries.items():
        try:
            out[key] = Config(**fields)
        except TypeError:
            pass
    return out


def write_cache(path: str, key: str, config: Config) -> None:
    """Add ``key -> config`` to ``path``: re-read it (another process may have added keys),
    then write a temporary file and rename it over the old one, so that a reader never sees
    a half-written file."""
    entries = read_cache(path)
    entries[key] = config
    data = {"version": _CACHE_VERSION, "configs": {k: c._asdict() for k, c in sorted(entries.items())}}
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".matmul-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _do_bench(config: Config, fn: Callable[[], None]) -> float:
    """Median time of ``fn`` in ms (Triton's benchmark: L2 flushed before each run)."""
    import triton.testing
    return triton.testing.do_bench(fn, warmup=10, rep=40, return_mode="median")


def tune(key: str, configs: list[Config], run: Callable[[Config], None], path: str,
         timer: Callable = _do_bench) -> Config:
    """The config for ``key``: the one stored in the file at ``path`` (by an earlier process),
    else the fastest of ``configs`` by ``timer(config, lambda: run(config))``, then stored
    there. A config that fails to compile or launch (e.g. too much shared memory for this
    GPU) is skipped."""
    config = read_cache(path).get(key)
    if config is not None:
        return config
    best, errors = math.inf, []
    for c in configs:
        try:
            t = timer(c, lambda c=c: run(c))
        except Exception as e:          # compile errors, out of resources: try the next one
            errors.append(f"{c}: {type(e).__name__}: {e}")
            continue
        if t < best:
            best, config = t, c
    if config is None:
        raise RuntimeError(f"matmul: no tile config ran for {key}:\n" + "\n".join(errors))
    if errors:
        warnings.warn(f"matmul autotune ({key}): {len(errors)} config(s) failed, e.g. {errors[0][:300]}")
    write_cache(path, key, config)
    return config


_memo: dict = {}        # (device name, key) -> Config chosen in this process


# ---- launching -----------------------------------------------------------------------------------------------------
_kernels = functools.partial(triton_source, "matmul")   # the @triton.jit functions, on first use



def _interpreter_bf16(out: Tensor) -> bool:
    """See ``kernels/src/matmul.py``: bfloat16 dots in Triton's interpreter only."""
    return cuda.EMULATED and out.dtype is D.bfloat16


def _recipe(plan: _Plan, tma, out: Tensor, config: Config, precision: str) -> tuple:
    """Everything a launch of ``config`` for ``plan`` takes but the operands' pointers:
    (kernel, grid, scalar arguments, constexprs, options). ``tma`` is ``_tma_strides``'s answer."""
    src = _kernels()
    M, N, K = plan.M, plan.N, plan.K
    options = {"num_warps": config.num_warps, "num_stages": config.num_stages}
    tiles = -(-M // config.block_m) * -(-N // config.block_n)
    blocks = dict(BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k, GROUP_M=config.group_m)
    if config.kernel == "tma":
        sms = _device_info(out._storage.device.index or 0)[2]
        stride_a, a_k_major, stride_b, b_k_major = tma
        return (src.matmul_kernel_tma, (min(sms, tiles),), (M, N, K, stride_a, stride_b, plan.c[2][0]),
                dict(A_K_MAJOR=a_k_major, B_K_MAJOR=b_k_major, **blocks, NUM_SMS=sms, PRECISION=precision,
                     SPLIT_STORE=config.split_store, INTERPRETER_BF16=_interpreter_bf16(out)), options)
    B0, B1 = plan.batch
    acc = src.tl.float64 if out.dtype is D.float64 else src.tl.float32
    return (src.matmul_kernel, (B0 * B1 * tiles,),
            (M, N, K, B1, *plan.a[1], *plan.a[2], *plan.b[1], *plan.b[2], *plan.c[1], *plan.c[2]),
            dict(**blocks, PRECISION=precision, ACC=acc, WIDE=plan.wide, INTERPRETER_BF16=_interpreter_bf16(out)),
            options)


def _launch(recipe: tuple, plan: _Plan, a: Tensor, b: Tensor, out: Tensor) -> None:
    fn, grid, scalars, constexprs, options = recipe
    if not plan.outer:
        launch(fn, grid, pointer(a), pointer(b), pointer(out), *scalars, options=options, **constexprs)
        return
    for idx in np.ndindex(*plan.outer):         # batch dims the kernel does not index
        ptrs = [pointer(t, t._offset + sum(i * s for i, s in zip(idx, p[0])))
                for t, p in ((a, plan.a), (b, plan.b), (out, plan.c))]
        launch(fn, grid, *ptrs, *scalars, options=options, **constexprs)


def _run(plan: _Plan, tma, a: Tensor, b: Tensor, out: Tensor, config: Config, precision: str) -> None:
    """Launch ``config``'s kernel for ``plan``; ``tma`` is ``_tma_strides``'s answer."""
    _launch(_recipe(plan, tma, out, config, precision), plan, a, b, out)


_timer: Callable | None = None      # tests set a fake timer to exercise tuning on the emulated device
TUNE_MIN_WORK = 1 << 24             # multiply-adds (256^3) below which a product is not worth timing


def _choose(name: str, capability: tuple, key: str, plan: _Plan, tma, a: Tensor, b: Tensor, out: Tensor,
            precision: str) -> Config:
    """The config for a new key: the smallest candidate for a small product, else tuned."""
    configs = candidates(out.dtype, precision, capability, tma is not None, plan.M, plan.N, plan.K)
    if _batch(plan) * plan.M * plan.N * plan.K < TUNE_MIN_WORK:
        return configs[-1]              # the smallest tile: most programs for a small output
    return tune(key, configs, lambda c: _run(plan, tma, a, b, out, c, precision), cache_path(name),
                timer=_timer or _do_bench)


_calls: dict = {}       # call geometry -> (plan, launch recipe): the host's decisions, made once per geometry


def splitk_sum(parts: Tensor, out: Tensor) -> None:
    """``out`` (contiguous) = the sum of the contiguous ``parts`` [split, *out.shape] over its
    first dim, in order (deterministic), rounded once to out's dtype."""
    numel, block = out.numel(), 1024
    launch(_kernels().splitk_sum_kernel, (-(-numel // block),), pointer(parts), pointer(out), numel,
           parts._shape[0], BLOCK=block)


# Split-K: a product with few output tiles and a long reduction (a linear layer's forward with
# a small batch: MNIST's fc1 is 64 x 128 over K = 9216) would run on a handful of SMs, each
# looping over all of K. It is run instead as a batch of SPLIT products over K/SPLIT each into
# float(32|64) partial results, which ``splitk_sum`` adds in order (no atomics: deterministic).
SPLIT_K_MIN = 2048                  # K below which a product is never split
SPLIT_K_CHUNK = 512                 # the shortest chunk of K a split product gets
SPLIT_K_TILE = 64                   # output tile edge assumed when counting a product's programs


def _split_k(a: Tensor, out: Tensor) -> int:
    """Chunks to split a 2-D float32/float64 product's K into (a divisor of K), 1 for none: when
    its output tiles fill under half of the GPU's SMs."""
    if len(out._shape) != 2 or out.dtype not in (D.float32, D.float64) or a._shape[1] < SPLIT_K_MIN:
        return 1
    (M, K), N = a._shape, out._shape[1]
    tiles = -(-M // SPLIT_K_TILE) * -(-N // SPLIT_K_TILE)
    sms = 4 if cuda.EMULATED else _device_info(out._storage.device.index or 0)[2]
    if 2 * tiles > sms:
        return 1
    most = min(-(-sms // tiles), K // SPLIT_K_CHUNK)
    return next((s for s in range(most, 1, -1) if K % s == 0), 1)


def _matmul_split_k(a: Tensor, b: Tensor, out: Tensor, split: int) -> None:
    """``out = a @ b`` as a batch of ``split`` products over consecutive chunks of K."""
    (M, K), N = a._shape, out._shape[1]
    kc = K // split
    (sam, sak), (sbk, sbn) = a._strides, b._strides
    parts = new_tensor((split, M, N), out.dtype, out._storage.device)
    matmul(Tensor._make(a._storage, a._offset, (split, M, kc), (kc * sak, sam, sak), a.dtype),
           Tensor._make(b._storage, b._offset, (split, kc, N), (kc * sbk, sbk, sbn), b.dtype), parts)
    splitk_sum(parts, out)


@_dispatch.register("matmul", "cuda", DTYPES)
def matmul(a: Tensor, b: Tensor, out: Tensor) -> None:
    """``out[...] = a @ b`` for ``a``: batch + (M, K), ``b``: batch + (K, N) (any strides),
    ``out``: contiguous batch + (M, N)."""
    if out.numel() == 0:
        return                          # K == 0 is not empty: the kernel writes the zeros
    split = _split_k(a, out)
    if split > 1:
        _matmul_split_k(a, b, out, split)
        return
    precision = _precision(out.dtype)
    if precision == "tf32" and len(out._shape) == 2 and _k_major_pays(a, b):
        b = _k_major(b)
    # with the operands' 16-byte alignment (TMA needs it)
    geometry = (out._storage.device.index, out.dtype, precision, a._shape, a._strides, b._shape, b._strides,
                out._strides, a.data_ptr() % 16, b.data_ptr() % 16, out.data_ptr() % 16)
    call = _calls.get(geometry)
    if call is None:
        if len(_calls) > 4096:          # many distinct shapes: start over rather than grow without end
            _calls.clear()
        call = _calls[geometry] = _decide(a, b, out, precision)
    _launch(call[1], call[0], a, b, out)


# TF32 tensor-core products (wgmma) read float32 operands only K-major: with a row-major B
# (N contiguous) Triton falls back to a slower path (measured on an H200, TF32 4096^3: 86
# TFLOP/s row-major B vs 356 K-major, cuBLAS 358). A K-major copy of B costs one pass over it
# (~0.03 ms for 4096^2 float32), far less than it saves once there are enough rows of A.
K_MAJOR_MIN_M = 256


def _k_major_pays(a: Tensor, b: Tensor) -> bool:
    """Whether to stage a row-major ``b`` K-major for a TF32 product with ``a`` (sm90+)."""
    K, N = b._shape
    return (a._shape[0] >= K_MAJOR_MIN_M and K >= 16 and N >= 16 and b._strides[1] == 1
            and (cuda.EMULATED or _device_info(b._storage.device.index or 0)[1][0] >= 9))


def _k_major(b: Tensor) -> Tensor:
    """``b`` (K, N) with the same values, stored K-major (column-major: strides (1, K))."""
    K, N = b._shape
    t = new_tensor((N, K), b.dtype, b._storage.device)
    copy_into(Tensor._make(b._storage, b._offset, (N, K), b._strides[::-1], b.dtype), t)   # a tiled transpose
    return Tensor._make(t._storage, 0, (K, N), (1, K), b.dtype)


def _decide(a: Tensor, b: Tensor, out: Tensor, precision: str) -> tuple:
    """(plan, recipe) of a call: its plan, and the launch of its config (tuned, or read from
    the cache, for a new key)."""
    prepare()
    name, capability, _ = _device_info(out._storage.device.index or 0)
    plan = _plan(a, b, out)
    tma = _tma_strides(plan, a, b, out, capability)
    if cuda.EMULATED and _timer is None:
        config = EMULATED_CONFIG
    else:
        key = _key(plan, out.dtype, precision, tma is not None)
        config = _memo.get((name, key))
        if config is None:
            config = _memo[name, key] = _choose(name, capability, key, plan, tma, a, b, out, precision)
    return plan, _recipe(plan, tma, out, config, precision)
