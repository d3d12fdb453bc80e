"""Real CUDA GPUs through NVIDIA's ``cuda-core`` / ``cuda-bindings``: devices, the
stream-ordered memory pool, streams, events, and host <-> device copies.

``tensorkit.cuda`` imports this module lazily (first CUDA tensor, stream or query) and never
in emulated mode, so ``import tensorkit`` works without a driver. Streams, events and memory
statistics as users see them live in ``tensorkit.cuda``; this module holds the driver
calls behind them. It knows nothing about tensors or ops: it hands out ``DeviceArray``s
inside Storages.

Memory comes from one owned stream-ordered pool per device (``cuMemAllocFromPoolAsync``
through cuda.core's ``DeviceMemoryResource``): an op never pays a raw ``cudaMalloc``, and a
freed block goes back to the pool on the device's current stream, so the next op on that
stream can reuse it at once (PyTorch's caching allocator gets the same effect by hand).
"""
from __future__ import annotations

import threading
import warnings

import cuda.core as _cc
import numpy as np
from cuda.bindings import driver as _drv

from .. import _storage
from .. import cuda as _cuda     # the package: current streams, statistics, OutOfMemoryError
from ..device import CPU, device as Device

_OK = _drv.CUresult.CUDA_SUCCESS
_tls = threading.local()        # .ctx: the device whose primary context is current on this thread
_pools: dict = {}               # device index -> DeviceMemoryResource
_pending: list = []             # (event, host object) kept alive until an async copy from it is done
_count = None


def _check(result, what: str = "CUDA call"):
    """The value(s) of a cuda-bindings call, or a RuntimeError naming the driver's error."""
    err, *rest = result
    if err != _OK:
        _, text = _drv.cuGetErrorString(err)
        raise RuntimeError(f"{what} failed: {getattr(err, 'name', err)} "
                           f"({text.decode() if isinstance(text, bytes) else text})")
    return rest[0] if len(rest) == 1 else tuple(rest) or None


# ---- devices ------------------------------------------------------------------------------
def device_count() -> int:
    """Number of visible CUDA devices; raises if there is no driver (callers turn that into 0)."""
    global _count
    if _count is None:
        _check(_drv.cuInit(0), "cuInit")
        _count = int(_check(_drv.cuDeviceGetCount(), "cuDeviceGetCount"))
    return _count


def device_name(index: int) -> str:
    return _cc.Device(index).name


def capability(index: int) -> tuple:
    """(major, minor) compute capability."""
    cc = _cc.Device(index).compute_capability
    return int(cc[0]), int(cc[1])


def make_current(index: int):
    """The cuda.core Device ``index`` with its primary context current on this thread.

    Cached per thread: code that switches contexts behind tensorkit's back should go
    through ``tk.cuda.set_device``.
    """
    dev = _cc.Device(index)
    if getattr(_tls, "ctx", None) != index:
        dev.set_current()
        _tls.ctx = index
    return dev


def synchronize(index: int) -> None:
    make_current(index).sync()
    _reap()


def mem_get_info(index: int) -> tuple:
    """(free, total) bytes on the device, as the driver reports them."""
    make_current(index)
    free, total = _check(_drv.cuMemGetInfo(), "cuMemGetInfo")
    return int(free), int(total)


# ---- streams and events (tensorkit.cuda.Stream / Event hold these as ._impl) ----------------
def default_stream(index: int):
    # the legacy default stream: synchronises with every blocking stream, as PyTorch's does
    return _cc.LEGACY_DEFAULT_STREAM


def new_stream(index: int, priority: int = 0):
    opts = _cc.StreamOptions(nonblocking=True, priority=priority if priority else None)
    return make_current(index).create_stream(options=opts)


def stream_handle(impl) -> int:
    return int(impl.handle)


def stream_query(impl) -> bool:
    (err,) = _drv.cuStreamQuery(impl.handle)
    if err == _drv.CUresult.CUDA_ERROR_NOT_READY:
        return False
    _check((err,), "cuStreamQuery")
    return True


def new_event(index: int, timing: bool, blocking: bool):
    opts = _cc.EventOptions(timing_enabled=bool(timing), blocking_sync=bool(blocking))
    return make_current(index).create_event(options=opts)


def _stream(index: int):
    """The cuda.core stream that is current for device ``index`` (tk.cuda.current_stream)."""
    return _cuda.current_stream(index)._impl


# ---- memory --------------------------------------------------------------------------------
class DeviceArray:
    """A flat array of one dtype in device memory: what a cuda Storage's ``data`` holds.

    It has numpy's ``dtype`` / ``itemsize`` / ``nbytes`` / ``shape`` / ``size`` and a ``ptr``
    (the device address). When the last reference goes, its memory returns to the pool,
    stream-ordered on the device's current stream (as in PyTorch: work queued on another
    stream must be ordered before that by the user, e.g. with ``Stream.wait_stream``).
    """

    __slots__ = ("_buffer", "ptr", "dtype", "shape", "device_index")
    ndim = 1

    def __init__(self, buffer, ptr: int, numel: int, dtype: np.dtype, device_index: int):
        self._buffer, self.ptr, self.dtype = buffer, ptr, dtype
        self.shape, self.device_index = (numel,), device_index

    itemsize = property(lambda self: self.dtype.itemsize)
    size = property(lambda self: self.shape[0])
    nbytes = property(lambda self: self.shape[0] * self.dtype.itemsize)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"DeviceArray({self.size} x {self.dtype} at 0x{self.ptr:x} on cuda:{self.device_index})"

    @property
    def __cuda_array_interface__(self) -> dict:
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.ptr, False), "version": 3,
                "strides": None}

    def __del__(self):
        buf, self._buffer = self._buffer, None
        if buf is None:
            return
        try:
            buf.close(_stream(self.device_index))
        except Exception:       # interpreter shutdown: the driver reclaims everything anyway
            pass
        _cuda._track(self.device_index, -self.nbytes)


def _pool(index: int):
    mr = _pools.get(index)
    if mr is None:
        make_current(index)
        mr = _cc.DeviceMemoryResource(index, _cc.DeviceMemoryResourceOptions())
        # With the default release threshold (0) the pool hands its free blocks back to the
        # driver at every synchronize; keep them instead (tk.cuda.empty_cache() trims).
        try:
            _check(_drv.cuMemPoolSetAttribute(mr.handle, _drv.CUmemPool_attribute.CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                                              _drv.cuuint64_t(2 ** 64 - 1)), "cuMemPoolSetAttribute")
        except Exception as e:
            warnings.warn(f"tensorkit: could not make the CUDA memory pool keep freed memory ({e}); "
                          f"allocations still work but may be slower", RuntimeWarning)
        _pools[index] = mr
    return mr


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, MemoryError) or "OUT_OF_MEMORY" in str(e).upper().replace(" ", "_")


def allocate(numel: int, np_dtype, device: Device) -> _storage.Storage:
    """A Storage of ``numel`` uninitialised elements from device ``device.index``'s pool,
    allocated on its current stream; raises ``tk.cuda.OutOfMemoryError`` when full."""
    index = device.index
    dtype = np.dtype(np_dtype)
    nbytes = numel * dtype.itemsize
    if nbytes == 0:
        return _storage.Storage(DeviceArray(None, 0, numel, dtype, index), device)
    make_current(index)
    mr, stream = _pool(index), _stream(index)
    try:
        buf = mr.allocate(nbytes, stream=stream)
    except Exception as e:
        if not _is_oom(e):
            raise
        # blocks freed on other streams go back to the pool once the device is idle, and the
        # pool's cached blocks may be fragmented: wait, hand the cache back, retry once
        synchronize(index)
        _trim(mr)
        try:
            buf = mr.allocate(nbytes, stream=stream)
        except Exception as e2:
            if not _is_oom(e2):
                raise
            # a failed request can leave the pool grown by what it did reserve, and the pool
            # keeps what it reserves (see _pool): give that back, or the whole GPU stays taken
            _trim(mr)
            free, total = mem_get_info(index)
            raise _cuda.OutOfMemoryError(_cuda._oom_message(index, nbytes, free, total)) from None
    _cuda._track(index, nbytes)
    return _storage.Storage(DeviceArray(buf, int(buf.handle), numel, dtype, index), device)


def _trim(mr) -> None:
    _check(_drv.cuMemPoolTrimTo(mr.handle, 0), "cuMemPoolTrimTo")


def memory_reserved(index: int) -> int:
    mr = _pools.get(index)
    return int(mr.attributes.reserved_mem_current) if mr is not None else 0


def max_memory_reserved(index: int) -> int:
    mr = _pools.get(index)
    return int(mr.attributes.reserved_mem_high) if mr is not None else 0


def empty_cache() -> None:
    """Give the pools' unused memory back to the driver (for other processes)."""
    for index, mr in _pools.items():
        synchronize(index)      # frees still queued on streams are not yet unused
        _trim(mr)


def zero_(storage: _storage.Storage) -> None:
    """Set every byte of a device storage to 0 on the current stream (no kernel needed)."""
    arr = storage.data
    if arr.nbytes:
        make_current(arr.device_index)
        _check(_drv.cuMemsetD8Async(arr.ptr, 0, arr.nbytes, _stream(arr.device_index).handle), "cuMemsetD8Async")


# ---- transfers -----------------------------------------------------------------------------
def _is_pinned(ptr: int) -> bool:
    """Whether host address ``ptr`` is page-locked (registered with the driver)."""
    try:
        err, kind = _drv.cuPointerGetAttribute(_drv.CUpointer_attribute.CU_POINTER_ATTRIBUTE_MEMORY_TYPE, ptr)
        return err == _OK and int(kind) == int(_drv.CUmemorytype.CU_MEMORYTYPE_HOST)
    except Exception:
        return False


def _reap() -> None:
    """Drop host buffers whose async copies have completed."""
    _pending[:] = [(ev, obj) for ev, obj in _pending if not ev.is_done]


def _memcpy(dst: int, src: int, nbytes: int, stream, host_ptr: int, host_obj, non_blocking: bool) -> None:
    """Copy on ``stream``; return at once only when asked and the host side is pinned
    (pageable memory can't be read by DMA asynchronously, so the copy is made synchronous)."""
    _check(_drv.cuMemcpyAsync(dst, src, nbytes, stream.handle), "cuMemcpyAsync")
    if non_blocking and _is_pinned(host_ptr):
        _reap()
        _pending.append((stream.record(), host_obj))    # keep the host buffer alive until done
    else:
        stream.sync()


def host_to_device(src: _storage.Storage, offset: int, numel: int, device: Device, non_blocking: bool):
    a = src.data
    index = _cuda._index(device)
    dst = allocate(numel, a.dtype, Device("cuda", index))
    if numel:
        host = a.ctypes.data + offset * a.itemsize
        _memcpy(dst.data.ptr, host, dst.data.nbytes, _stream(index), host, src, non_blocking)
    return dst


def device_to_host(src: _storage.Storage, offset: int, numel: int, device: Device, non_blocking: bool):
    arr = src.data
    out = np.empty(numel, arr.dtype)
    if numel:
        make_current(arr.device_index)
        # numpy's memory is pageable: the copy completes before this returns
        _memcpy(out.ctypes.data, arr.ptr + offset * arr.itemsize, out.nbytes, _stream(arr.device_index),
                out.ctypes.data, out, False)
    return _storage.Storage(out, CPU)


def device_to_device(src: _storage.Storage, offset: int, numel: int, device: Device, non_blocking: bool):
    arr = src.data
    index = _cuda._index(device)
    dst = allocate(numel, arr.dtype, Device("cuda", index))
    if numel:
        src_ptr = arr.ptr + offset * arr.itemsize
        if index == arr.device_index:       # stream-ordered on the current stream: no wait
            _check(_drv.cuMemcpyAsync(dst.data.ptr, src_ptr, dst.data.nbytes, _stream(index).handle),
                   "cuMemcpyAsync")
        else:       # across devices: after the source's queued work, done before returning
            _stream(arr.device_index).sync()
            make_current(arr.device_index)
            _check(_drv.cuMemcpy(dst.data.ptr, src_ptr, dst.data.nbytes), "cuMemcpy")
            make_current(_cuda.current_device())
    return dst
