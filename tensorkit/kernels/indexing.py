"""Triton kernels of the indexing primitives on the cuda device: ``index`` (gather),
``index_put`` (scatter, with the reductions of ``scatter_reduce``) and ``nonzero``.

The GPU twin of ``cpu/indexing.py``, with the same semantics: float16/bfloat16 accumulate
in float32 and round once, bool 'sum' is a logical or and 'prod' a logical and, 'mean'
counts the values (and self when ``include_self``), integer 'mean' rounds down; plain writes
with duplicate indices keep one of the values. The ``@triton.jit`` functions are in
``kernels/src/indexing.py`` (imported on the first launch, so Triton stays optional).

Bounds. The CPU checks indices on the host before its kernels run; here that would copy
every index tensor to the host. Instead the kernels check each index as they read it and
mask the lanes out of range (they touch no memory). Then:

* ``index`` (the gather behind ``x[idx]``, ``index_select``, ``gather``, ``take``,
  ``F.embedding``) is asynchronous, like PyTorch's device-side assert: it notes bad indices
  in a small report on the device (per dim indexed: a flag and one bad value) and leaves a
  check in ``tensorkit.cuda._deferred`` without waiting for the device (a sync per gather
  costs ~80 us on an H200 and serialises host and device: once per step for a language
  model's embedding). The host's next wait for the device on that stream
  (``tk.cuda.synchronize()``, ``Stream.synchronize()``, any blocking copy to the host:
  ``.cpu()``, ``.item()``, ``.tolist()``, printing, ``tk.save``) reads the reports (8 bytes
  per dim indexed) and raises IndexError once, naming the index, the dim and its size as the
  CPU does, plus the op, the device and the indexed tensor's shape. Elements read through an
  index out of range are 0. Unlike PyTorch, the error names the op and the context stays
  usable (PyTorch's assert kills it).
* ``index_put`` must leave the destination unchanged on a bad index, so it checks every
  index before writing and the host reads its one-int flag after the launches (4 bytes,
  a sync); it returns whether the flag was set, and the op (``ops/indexing.py``) raises the
  CPU's IndexError at once.

Duplicate indices under a reduction are combined atomically:

* 'sum'/'mean' use ``atomic_add``, integer 'amax'/'amin' ``atomic_max``/``atomic_min``;
* 'prod', and float 'amax'/'amin' (NaN wins, as on the CPU, which the native float atomics
  do not guarantee), use a compare-and-swap loop on the element's bits;
* Triton has no atomics on 8/16-bit elements (only fp16/bf16 add, which would round every
  step), so bool/uint8/int8/int16 and float16/bfloat16 combine in a 32-bit staging buffer
  (int32 / float32) laid out like the destination and narrow once at the end; so does
  'mean' (its sums, then one division per element). Only the touched elements of the
  buffer are ever read or written.

Atomics combine duplicates in no fixed order: float sums may differ in their last bits from
run to run and from the CPU's sequential sums (as PyTorch's CUDA scatter_add does).

Launch costs (syncs are device->host reads that wait for the device):

* ``index``: one launch, no sync (its bounds report is read at the next synchronisation);
* ``index_put``: one bounds-check launch (a pass over the index tensors' elements, before
  anything is written, so a bad index leaves the destination unchanged), then 1
  launch (plain write, or a reduction in place), 2 (``include_self=False``: the touched
  elements start from the identity) or 3 (staged: init, combine, finish); one sync;
* ``nonzero``: the count is a per-block count and a one-program scan, then one sync (8
  bytes, the total: the output's size depends on the data, as in PyTorch); the fill reuses
  the scan and writes the coordinates in one launch.

Kernels know nothing about autograd or the user's arguments (``ops/indexing.py`` checks them).
"""
from __future__ import annotations

import contextlib
import functools
import threading

import numpy as np

from .. import _dispatch, cuda
from .. import dtypes as D
from .._tensor import Tensor
from ..device import device as Device
from ..ops.creation import new_tensor
from ._launch import launch, pointer, triton_source
from .codegen import broadcast_strides, coalesce

TILE = 4096           # elements per program (rows x columns): enough work to hide memory latency
MAX_COLS = 1024       # columns per tile; wider rows take several programs
CHECK_BLOCK = 1024    # index elements per program of the bounds check
NONZERO_BLOCK = 4096  # elements per program of nonzero's count and fill (8 warps)
SCAN_BLOCK = 4096     # block counts per step of nonzero's one-program scan: 2**30 elements take 64 steps
_EIGHT_WARPS = {"num_warps": 8}

# Work dtype of the reductions: where Triton has no atomics for the dtype, a staging buffer of this one.
_WORK = {D.float16: D.float32, D.bfloat16: D.float32, D.bool_: D.int32, D.uint8: D.int32, D.int8: D.int32,
         D.int16: D.int32}
_OPS = {None: 0, "sum": 1, "mean": 1, "prod": 2, "amax": 3, "amin": 4}       # src.STORE, ADD, MUL, MAX, MIN
_BOOL_OPS = {"sum": 3, "mean": 3, "prod": 4}                                # or = max, and = min on 0/1
_INIT, _COMBINE, _FINISH = 0, 1, 2         # src.INIT, COMBINE, FINISH (src imports Triton: not at import time)

_kernels = functools.partial(triton_source, "indexing")   # the @triton.jit functions, on first use



def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def _identity(op: int, dtype: D.DType):
    """The identity of combine op ``op`` (``_OPS``) in ``dtype``: where touched elements start
    when ``include_self=False``."""
    if op in (0, 1):
        return 0
    if op == 2:
        return 1
    if dtype.is_floating_point:
        return float("-inf") if op == 3 else float("inf")
    info = np.iinfo(dtype.numpy)
    return int(info.min) if op == 3 else int(info.max)


# ---- the layout of an index / index_put launch --------------------------------------------------------
class _Layout:
    """``x[indices]`` over the result's elements: its coalesced dims split into rows x columns,
    each operand's strides over them (see ``kernels/src/indexing.py``) and the tile's blocks."""

    def __init__(self, x: Tensor, indices: list, result: Tensor):
        self.dims = dims = [d for d, t in enumerate(indices) if t is not None]
        self.indices = [indices[d] for d in dims]
        kept = [d for d in range(x.ndim) if d not in dims]
        nb = len(result._shape) - len(kept)              # dims of the indices' broadcast shape
        # PyTorch's placement: adjacent index dims stay in place, otherwise they go first
        start = dims[0] if dims and dims == list(range(dims[0], dims[-1] + 1)) else 0
        bshape = tuple(result._shape[start:start + nb])
        self.index_numel = int(np.prod(bshape, dtype=np.int64))
        x_st = [x._strides[d] for d in kept[:start]] + [0] * nb + [x._strides[d] for d in kept[start:]]
        idx_st = [[0] * start + broadcast_strides(t._shape, t._strides, bshape) + [0] * (len(kept) - start)
                  for t in self.indices]
        shape, strides = coalesce(result._shape, [result._strides, x_st, *idx_st])
        if len(shape) == 1:                              # at least one row dim (its size may be 1)
            shape, strides = [1] + shape, [[0] + st for st in strides]
        self.rows = tuple(int(s) for s in shape[:-1])
        self.n_cols = int(shape[-1])
        self.n_rows = int(np.prod(self.rows, dtype=np.int64))
        self.result_st, self.x_st = (tuple(int(s) for s in st) for st in strides[:2])
        self.idx_st = tuple(tuple(int(s) for s in st) for st in strides[2:])
        self.idx_size = tuple(int(x._shape[d]) for d in dims)
        self.idx_step = tuple(int(x._strides[d]) for d in dims)
        self.col_indexed = any(st[-1] != 0 for st in self.idx_st)
        self.block_c = min(_pow2(self.n_cols), MAX_COLS)
        self.block_r = min(_pow2(self.n_rows), max(1, TILE // self.block_c))
        self.grid = (-(-self.n_rows // self.block_r) * -(-self.n_cols // self.block_c),)
        self.num_warps = min(8, max(1, self.block_r * self.block_c // 256))

    def args(self) -> tuple:
        """The arguments both kernels take after their tensors (from ``idx`` to ``idx_step``)."""
        return (tuple(pointer(t) for t in self.indices), self.rows, self.n_rows, self.n_cols, self.x_st,
                self.result_st, self.idx_st, self.idx_size, self.idx_step)


# ---- the bounds flag ------------------------------------------------------------------------------------
_local = threading.local()


def _reset(t: Tensor) -> None:
    launch(_kernels().reset_kernel, (1,), pointer(t), t.numel(), BLOCK=max(16, _pow2(t.numel())))


def _read(t: Tensor) -> np.ndarray:
    """``t``'s elements on the host (waits for the current stream), without running the deferred
    checks: the flag and report reads below must not raise another op's error."""
    return cuda._device_to_host(t._storage, t._offset, t.numel(), Device("cpu"), False).data


def _error_flag(device) -> Tensor:
    """index_put's int32 on ``device`` that is 0 unless a kernel saw an index out of range: one
    per thread and stream (a launch and its read are ordered on the stream), allocated once;
    it is reset only after an error, so the usual path pays no launch for it."""
    flags = getattr(_local, "flags", None)
    if flags is None:
        flags = _local.flags = {}
    key = (device.index, cuda.current_stream(device))
    flag = flags.get(key)
    if flag is None:
        flag = flags[key] = new_tensor((1,), D.int32, device)
        _reset(flag)
    return flag


def _read_flag(flag: Tensor) -> bool:
    """Whether an index was out of range (waits for the launches before it), resetting the flag."""
    if not _read(flag)[0]:
        return False
    _reset(flag)
    return True


# ---- the gather's deferred bounds check -----------------------------------------------------------------
# Zeroed reports per (device index, length), for reuse: a report read back all zero goes here.
_free_reports: dict = {}


class _Deferred:
    """The bounds checks of the gathers launched on one stream since the host last waited for
    it: per gather context (op, shape, dims indexed, their sizes, whether negative indices
    count from the end) an int64 report (per dim: a flag and a bad value, ``src._report``)
    that every gather of that context writes to. ``tensorkit.cuda`` calls it (once) when the
    host next waits for the stream; it then reads each report and raises IndexError if one
    is set. Bounded by the number of distinct contexts between synchronisations, not gathers."""

    def __init__(self, device: Device, stream):
        self.device, self.stream = device, stream
        self.reports: dict = {}

    def report(self, context: tuple) -> Tensor:
        """The report of gathers of ``context`` (a zeroed one on its first gather)."""
        rep = self.reports.get(context)
        if rep is None:
            n = 2 * len(context[2])
            free = _free_reports.get((self.device.index, n))
            if free:
                rep = free.pop()
            else:
                rep = new_tensor((n,), D.int64, self.device)
                _reset(rep)
            self.reports[context] = rep
        return rep

    def __call__(self) -> None:
        errors = []
        # each read is ordered after that stream's gathers (entering a stream only when another one is
        # current: making one current takes every later launch off tensorkit.cuda's fast path)
        current = cuda.current_stream(self.device.index) == self.stream
        with contextlib.nullcontext() if current else cuda.stream(self.stream):
            for (op, shape, dims, sizes, negative), rep in self.reports.items():
                a = _read(rep)
                bad = [k for k in range(len(dims)) if a[2 * k]]
                if not bad:                      # still all zero: reusable
                    _free_reports.setdefault((self.device.index, len(a)), []).append(rep)
                    continue
                k = bad[0]                       # a set report is dropped, not reset and reused
                errors.append(f"index {int(a[2 * k + 1])} is out of bounds for dimension {dims[k]} with size "
                              f"{sizes[k]} (in {op} on {self.device}, indexing a tensor of shape {list(shape)}, "
                              f"valid indices in [{-sizes[k] if negative else 0}, {sizes[k]}))")
        if errors:
            raise IndexError("index out of range: " + "; ".join(errors) + " (detected at this synchronisation; "
                             "CUDA launches are asynchronous: the error comes from an earlier indexing call)")


def deferred_report(device, op: str, shape: tuple, dims: tuple, sizes: tuple, negative: bool) -> Tensor:
    """The int64 report (per dim of ``dims``: a flag and a bad value) that a kernel indexing a
    tensor of ``shape`` on ``device`` along ``dims`` (of ``sizes``) writes when an index is out of
    range, and its check left for the next synchronisation (``_Deferred``). Also for kernels that
    index in other ways (a loss's class targets)."""
    index = device.index
    key = (index, cuda._stream_handle(index))
    check = cuda._deferred.get(key)
    if check is None:
        check = cuda._deferred[key] = _Deferred(device, cuda.current_stream(index))
    return check.report((op, tuple(shape), tuple(dims), tuple(sizes), negative))


def _coalesced(t: Tensor) -> tuple:
    """(shape, strides) of ``t`` with its dims coalesced, as kernel arguments."""
    shape, (st,) = coalesce(t._shape, [t._strides])
    return tuple(int(s) for s in shape), tuple(int(s) for s in st)


def _check_indices(lay: _Layout, negative: bool, flag: Tensor, report: bool = False) -> None:
    """Set ``flag`` if an element of an index tensor is out of range (one launch for all); with
    ``report``, ``flag`` is a gather's report instead."""
    if not lay.indices:
        return
    n = max(t.numel() for t in lay.indices)
    layouts = [_coalesced(t) for t in lay.indices]
    launch(_kernels().check_kernel, (-(-n // CHECK_BLOCK),), tuple(pointer(t) for t in lay.indices),
           tuple(t.numel() for t in lay.indices), tuple(s for s, _ in layouts), tuple(st for _, st in layouts),
           lay.idx_size, pointer(flag), NEGATIVE=negative, REPORT=report, BLOCK=CHECK_BLOCK)


# ---- index: a gather ------------------------------------------------------------------------------------
@_dispatch.register("index", "cuda", D.ALL_DTYPES)
def index(input: Tensor, indices: list, out: Tensor, negative: bool = True, op: str = "index") -> bool:
    """``out = input[indices]`` (PyTorch's index list, one entry per leading dim: None or an
    int32/int64 tensor; ``out`` contiguous, of the result's shape). Indices outside
    [-size, size) (or [0, size) when not ``negative``) are not read (their elements are 0)
    and raise IndexError, naming ``op``, at the host's next synchronisation (see the module
    docstring); returns False (nothing to raise now). One launch, no sync."""
    lay = _Layout(input, indices, out)
    if lay.index_numel == 0:            # no index element is read (as in PyTorch and numpy)
        return False
    rep = deferred_report(input.device, op, input._shape, lay.dims, lay.idx_size, negative)
    if out.numel() == 0:                # nothing to gather, but the indices are still checked, as on the CPU
        _check_indices(lay, negative, rep, report=True)
    else:
        launch(_kernels().index_kernel, lay.grid, pointer(out), pointer(input), *lay.args(), pointer(rep),
               NEGATIVE=negative, COL_INDEXED=lay.col_indexed, BLOCK_R=lay.block_r, BLOCK_C=lay.block_c,
               options={"num_warps": lay.num_warps})
    return False


# ---- index_put: a scatter, plain or reducing -----------------------------------------------------------
@_dispatch.register("index_put", "cuda", D.ALL_DTYPES)
def index_put(input: Tensor, indices: list, values: Tensor, reduce, include_self: bool,
              negative: bool = True) -> bool:
    """``input[indices] (reduce)= values`` (values already broadcast to the indexed shape).
    Every index is checked before anything is written; returns whether one was out of range
    (then ``input`` is unchanged)."""
    lay = _Layout(input, indices, values)
    if lay.index_numel == 0:
        return False
    flag = _error_flag(input.device)
    _check_indices(lay, negative, flag)
    if values.numel():
        _scatter(input, values, lay, reduce, include_self, flag)
    return _read_flag(flag)


def _scatter(input: Tensor, values: Tensor, lay: _Layout, reduce, include_self: bool, flag: Tensor) -> None:
    dtype = input.dtype
    op = _BOOL_OPS.get(reduce, _OPS[reduce]) if dtype is D.bool_ else _OPS[reduce]
    work = _WORK.get(dtype, dtype)
    staged = reduce is not None and (work is not dtype or reduce == "mean")
    stage = count = input
    if staged:
        # laid out like input (same offsets from its first element): every stride of input, its extent
        extent = max(1, 1 + sum((n - 1) * st for n, st in zip(input._shape, input._strides)))
        stage = new_tensor((extent,), work, input.device)
        if reduce == "mean":
            count = new_tensor((extent,), D.int32, input.device)
    steps = [_COMBINE]
    if staged:
        steps = [_INIT, _COMBINE, _FINISH]
    elif reduce is not None and not include_self:
        steps = [_INIT, _COMBINE]
    fn = _kernels().index_put_kernel
    for step in steps:
        launch(fn, lay.grid, pointer(input), pointer(values), pointer(stage), pointer(count), *lay.args(),
               _identity(op, work), pointer(flag), STEP=step, OP=op, INCLUDE_SELF=include_self,
               COUNT=reduce == "mean", COL_INDEXED=lay.col_indexed, BLOCK_R=lay.block_r, BLOCK_C=lay.block_c,
               options={"num_warps": lay.num_warps})


# ---- nonzero ----------------------------------------------------------------------------------------------
def _block_starts(input: Tensor) -> Tensor:
    """Per block of NONZERO_BLOCK flat positions, how many nonzero elements precede it, and
    the total at the end (int64, blocks + 1 entries). Two launches, no sync."""
    k = _kernels()
    n = input.numel()
    blocks = -(-n // NONZERO_BLOCK)
    starts = new_tensor((blocks + 1,), D.int64, input.device)
    launch(k.nonzero_count_kernel, (blocks,), pointer(input), n, *_coalesced(input), pointer(starts),
           BLOCK=NONZERO_BLOCK, options=_EIGHT_WARPS)
    launch(k.exclusive_scan_kernel, (1,), pointer(starts), blocks, BLOCK=SCAN_BLOCK, options=_EIGHT_WARPS)
    return starts


@_dispatch.register("nonzero", "cuda", D.ALL_DTYPES)
def nonzero(input: Tensor, out):
    """With ``out=None``: the number of nonzero elements (one sync); else write their
    coordinates into ``out`` (``(count, ndim)`` int64), reusing the count's block offsets
    when ``out`` follows the count of the same tensor (as in ``ops.indexing.nonzero``)."""
    if input.numel() == 0:
        return 0 if out is None else None
    if out is None:
        starts = _block_starts(input)
        _local.nonzero = (input, input._storage.version, starts)
        return int(Tensor._make(starts._storage, starts.numel() - 1, (1,), (1,), D.int64)._host()[0])
    last = getattr(_local, "nonzero", None)
    _local.nonzero = None
    if last is not None and last[0] is input and last[1] == input._storage.version:
        starts = last[2]
    else:
        starts = _block_starts(input)
    if out.numel():                  # (a 0-d input has no coordinates to write)
        n = input.numel()
        launch(_kernels().nonzero_fill_kernel, (-(-n // NONZERO_BLOCK),), pointer(input), n, tuple(input._shape),
               *_coalesced(input), pointer(starts), pointer(out), BLOCK=NONZERO_BLOCK, options=_EIGHT_WARPS)
    return None
