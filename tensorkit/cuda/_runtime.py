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
class DeviceArray(_storage.DeviceMemory):
    """Device memory from tensorkit's pool. When the last reference goes, the memory returns to
    the pool, stream-ordered on the device's current stream (as in PyTorch: work queued on
    another stream must be ordered before that by the user, e.g. with ``Stream.wait_stream``).
    """

    __slots__ = ("_buffer", "_block")

    def __init__(self, buffer, ptr: int, numel: int, dtype: np.dtype, device_index: int, block: int = 0):
        self._buffer, self.ptr, self.dtype = buffer, ptr, dtype
        self.shape, self.device_index, self._block = (numel,), device_index, block

    def __del__(self):
        buf, self._buffer = self._buffer, None
        if buf is None:
            return
        index, block = self.device_index, self._block
        try:
            _cuda._allocated[index] -= self.shape[0] * self.dtype.itemsize
            if block <= SMALL_BLOCK and _cached.get(index, 0) + block <= SMALL_CACHE_LIMIT:
                key = (index, _cuda._stream_handle(index), block)
                free = _blocks.get(key)
                if free is None:
                    free = _blocks[key] = []
                free.append((buf, self.ptr))
                _cached[index] = _cached.get(index, 0) + block
            else:
                buf.close(_stream(index))
        except Exception:       # interpreter shutdown (modules already torn down): the driver reclaims all
            pass


# Small blocks freed by tensors wait here for the next allocation of the same size on the same
# stream (safe in stream order, as the pool itself is) instead of going back to the pool: a
# pool round trip (cuMemAllocFromPoolAsync + cuMemFreeAsync + a cuda.core Buffer) costs several
# microseconds, which an eager op on a small tensor would pay every time. PyTorch's caching
# allocator does the same by hand. Sizes round up to 512 bytes so that more blocks are reused.
SMALL_BLOCK = 1 << 20                 # blocks up to this size are cached
SMALL_CACHE_LIMIT = 1 << 28           # bytes cached per device, at most
_blocks: dict = {}                    # (device index, stream handle, block bytes) -> [(Buffer, address)]
_cached: dict = {}                    # device index -> bytes held in _blocks


def _release_blocks(index: int) -> None:
    """Return the cached small blocks of device ``index`` to its pool; the device must be idle
    (synchronised), since they go back on the default stream, not on the one they were freed on."""
    for key in [k for k in _blocks if k[0] == index]:
        for buf, _ in _blocks.pop(key):
            buf.close(_cc.LEGACY_DEFAULT_STREAM)
    _cached[index] = 0


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
    dtype = np_dtype if isinstance(np_dtype, np.dtype) else np.dtype(np_dtype)
    nbytes = numel * dtype.itemsize
    if nbytes == 0:
        return _storage.Storage(DeviceArray(None, 0, numel, dtype, index), device)
    block = nbytes
    if nbytes <= SMALL_BLOCK:
        block = (nbytes + 511) & ~511
        free = _blocks.get((index, _cuda._stream_handle(index), block))
        if free:
            buf, ptr = free.pop()
            _cached[index] -= block
            _cuda._track(index, nbytes)
            return _storage.Storage(DeviceArray(buf, ptr, numel, dtype, index, block), device)
    make_current(index)
    mr, stream = _pool(index), _stream(index)
    try:
        buf = mr.allocate(block, stream=stream)
    except Exception as e:
        if not _is_oom(e):
            raise
        # blocks freed on other streams go back to the pool once the device is idle, and the
        # pool's cached blocks may be fragmented: wait, hand the cache back, retry once
        synchronize(index)
        _release_blocks(index)
        _trim(mr)
        try:
            buf = mr.allocate(block, stream=stream)
        except Exception as e2:
            if not _is_oom(e2):
                raise
            # a failed request can leave the pool grown by what it did reserve, and the pool
            # keeps what it reserves (see _pool): give that back, or the whole GPU stays taken
            _trim(mr)
            free, total = mem_get_info(index)
            raise _cuda.OutOfMemoryError(_cuda._oom_message(index, nbytes, free, total)) from None
    _cuda._track(index, nbytes)
    return _storage.Storage(DeviceArray(buf, int(buf.handle), numel, dtype, index, block), device)


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
        _release_blocks(index)
        _trim(mr)
    _free_host_cache()


def zero_(storage: _storage.Storage) -> None:
    """Set every byte of a device storage to 0 on the current stream (no kernel needed)."""
    arr = storage.data
    if arr.nbytes:
        make_current(arr.device_index)
        _check(_drv.cuMemsetD8Async(arr.ptr, 0, arr.nbytes, _stream(arr.device_index).handle), "cuMemsetD8Async")


def wait_for(consumer: int, producer: int, index: int) -> None:
    """Make stream ``consumer`` wait, on the device, for the work queued so far on stream
    ``producer`` (raw CUstream handles of device ``index``; 1 is the legacy default stream): a
    DLPack consumer's stream ordered after our writes. The host does not wait.

    The event is a raw one, created, recorded, waited on and destroyed here. (A cuda.core Event
    dies with its Python object and ``Event.handle`` does not keep it alive, so
    ``cuStreamWaitEvent(s, stream.record().handle, 0)`` waits on a destroyed event:
    CUDA_ERROR_CONTEXT_IS_DESTROYED.) Destroying it once the wait is queued is allowed: the
    driver releases it when the wait is done, and the wait still happens.
    """
    # The legacy default stream (1) is the *current* context's, and the event must be recorded in
    # the producer's context: make the device's primary context current for certain, whatever
    # make_current's per-thread cache says (the consumer's library may have switched contexts).
    _cc.Device(index).set_current()
    _tls.ctx = index
    event = _check(_drv.cuEventCreate(_drv.CUevent_flags.CU_EVENT_DISABLE_TIMING), "cuEventCreate")
    try:
        _check(_drv.cuEventRecord(event, producer), "cuEventRecord")
        _check(_drv.cuStreamWaitEvent(consumer, event, 0), "cuStreamWaitEvent")
    finally:
        (err,) = _drv.cuEventDestroy(event)
    _check((err,), "cuEventDestroy")


# ---- page-locked host memory ------------------------------------------------------------------
# Pinning pages is slow (the OS locks every page) and cuMemFreeHost waits for the whole device, so
# freed blocks are kept for reuse, in power-of-two size classes as PyTorch's caching host
# allocator does; tk.cuda.empty_cache() frees them. (cuda.core's PinnedMemoryResource, a
# stream-ordered pool, would make a reused block ready only in stream order, while pin_memory()
# writes it from the host at once.) No block goes back while an async copy uses it: _memcpy keeps
# the host side of every non-blocking copy alive until the copy is done.
_host_cache: dict = {}          # size class in bytes -> [addresses of free page-locked blocks]


class _PinnedBlock:
    """A page-locked block as numpy sees it (``np.asarray(block)``: bytes); it returns to the
    cache when the last array over it dies."""

    def __init__(self, ptr: int, size: int, nbytes: int):
        self.ptr, self.size = ptr, size
        self.__array_interface__ = {"shape": (nbytes,), "typestr": "|u1", "data": (ptr, False), "version": 3}

    def __del__(self):
        _host_cache.setdefault(self.size, []).append(self.ptr)


def pinned_allocate(numel: int, np_dtype) -> _storage.Storage:
    """A CPU Storage of ``numel`` uninitialised elements in page-locked memory. A block not
    found in the cache costs a ``cuMemHostAlloc``, which also waits for the device to be idle
    (as ``cudaHostAlloc`` does for PyTorch's pinned allocator)."""
    dtype = np.dtype(np_dtype)
    nbytes = numel * dtype.itemsize
    if nbytes == 0:
        return _storage.Storage(np.empty(0, dtype), CPU)
    size = 1 << max(nbytes - 1, 511).bit_length()      # >= nbytes, at least 512 bytes
    try:
        ptr = _host_cache.get(size, []).pop()
    except IndexError:
        make_current(_cuda.current_device())
        flags = _drv.CU_MEMHOSTALLOC_PORTABLE             # pinned for every context, not only this one
        err, ptr = _drv.cuMemHostAlloc(size, flags)
        if err != _OK:              # maybe held by our cache in other size classes: free those, retry once
            _free_host_cache()
            ptr = _check(_drv.cuMemHostAlloc(size, flags), f"cuMemHostAlloc of {size} bytes (pin_memory)")
    block = _PinnedBlock(int(ptr), size, nbytes)
    return _storage.Storage(np.asarray(block).view(dtype), CPU)


def _free_host_cache() -> None:
    for ptrs in _host_cache.values():
        while ptrs:
            _check(_drv.cuMemFreeHost(ptrs.pop()), "cuMemFreeHost")


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
    """A host copy of the elements. Blocking: pageable memory, done on return. ``non_blocking``:
    a page-locked destination, returned while the copy still runs on the current stream (the user
    synchronises before reading it, as in PyTorch)."""
    arr = src.data
    out = pinned_allocate(numel, arr.dtype) if non_blocking else _storage.Storage(np.empty(numel, arr.dtype), CPU)
    if numel:
        make_current(arr.device_index)
        host = out.data.ctypes.data
        _memcpy(host, arr.ptr + offset * arr.itemsize, out.nbytes, _stream(arr.device_index), host, (src, out),
                non_blocking)
    return out


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
