"""The ``cuda`` device: runtime queries, memory, and host <-> device copies.

Two modes:

* real GPUs, through NVIDIA's ``cuda-core`` / ``cuda-bindings`` (``_runtime.py``; imported
  only when a CUDA tensor is first made, so ``import tensorkit`` stays cheap and works on
  machines without a driver);
* emulated, with ``TENSORKIT_INTERPRET=1``: device memory is host memory and every Triton
  kernel runs in Triton's interpreter (``TRITON_INTERPRET=1`` is set here, before Triton is
  imported). CI has no GPU; this is how it tests every Triton kernel.

Kernels for the device live in ``tensorkit/kernels/``; nothing here knows about ops.
"""
from __future__ import annotations

import os
import threading
import time
import weakref
from contextlib import contextmanager

import numpy as np

from .. import _storage
from ..device import device as Device

EMULATED = os.environ.get("TENSORKIT_INTERPRET", "") not in ("", "0")
if EMULATED:
    os.environ.setdefault("TRITON_INTERPRET", "1")
# The emulated device's memory size in bytes (unset: unlimited), so out-of-memory handling is
# tested without a GPU.
_EMULATED_LIMIT = int(os.environ.get("TENSORKIT_EMULATED_MEMORY_LIMIT", "0") or 0)


class OutOfMemoryError(RuntimeError):
    """Raised when the device has not enough free memory for an allocation; the process
    (and the device) keep working after it."""


_current = 0
_RT = None


def _rt():
    """The real-GPU runtime (imports cuda-core); raises ImportError / RuntimeError without one."""
    global _RT
    if _RT is None:
        from . import _runtime
        _RT = _runtime
    return _RT


def is_available() -> bool:
    """Whether a CUDA device (or the emulated one) can be used; never raises."""
    return device_count() > 0


def device_count() -> int:
    """Number of CUDA devices (1 when emulated, 0 without a driver, GPU or cuda-core)."""
    if EMULATED:
        return 1
    try:
        return _rt().device_count()
    except Exception:       # no driver, no cuda-core, no GPU: not available
        return 0


def current_device() -> int:
    return _current


def set_device(device) -> None:
    """Make ``device`` (an int, 'cuda:N' or a device) the current CUDA device: new CUDA tensors
    without an explicit index, streams and kernel launches go there."""
    global _current
    index = device if isinstance(device, int) else (Device(device).index or 0)
    n = device_count()
    if not 0 <= index < n:
        raise RuntimeError(f"set_device: invalid device ordinal {index}; {n} CUDA device(s) available")
    _current = index
    if not EMULATED:
        _rt().make_current(index)


class device:
    """Context manager that makes ``device`` current inside its block (``torch.cuda.device``)."""

    def __init__(self, device):
        self.index = None if device is None else _index(device)

    def __enter__(self):
        self._prev = _current
        if self.index is not None and self.index != _current:
            set_device(self.index)

    def __exit__(self, *exc):
        if self._prev != _current:
            set_device(self._prev)


def get_device_name(device=None) -> str:
    if EMULATED:
        return "tensorkit emulated CUDA device (Triton interpreter)"
    return _rt().device_name(_index(device))


def get_device_capability(device=None) -> tuple:
    """(major, minor) compute capability; the emulated device claims (8, 0)."""
    if EMULATED:
        return (8, 0)
    return _rt().capability(_index(device))


def synchronize(device=None) -> None:
    """Wait for all work queued on the device; then raise an error a kernel found meanwhile
    (``_deferred``: an earlier gather's index out of range)."""
    index = _index(device)
    if not EMULATED:
        _rt().synchronize(index)
    if _deferred:
        _check_deferred(index)


# ---- errors found by kernels, reported when the host next waits for the device ---------------------------
# A kernel that finds bad input (kernels/indexing.py's gather: an index out of range) cannot raise;
# reading its error flag at once would make the host wait for the device after every such op. It
# leaves a check here instead, keyed by (device index, stream handle): a callable that reads its
# flags and raises. Every point where the host waits for the device (``synchronize``, a stream's
# ``synchronize``, a blocking copy to the host: ``.cpu()``, ``.item()``, ``.tolist()``, printing,
# ``tk.save``) runs the checks of what it waited for, once. Empty on the usual path: one test.
# (``Event.synchronize`` does not: reading a flag would also wait for the work queued after the
# event; the next synchronisation of its stream or device reports it.)
_deferred: dict = {}


def _check_deferred(index: int, handle: int | None = None) -> None:
    """Run and forget the deferred checks of device ``index``'s stream ``handle`` (all its
    streams when None); raise the first error, with the others' messages appended."""
    keys = [k for k in list(_deferred) if k[0] == index and (handle is None or k[1] == handle)]
    # forgotten before they run: their own flag reads copy to the host, which would run them again
    checks = [c for c in (_deferred.pop(k, None) for k in keys) if c is not None]
    errors = []
    for check in checks:
        try:
            check()
        except Exception as e:      # every check runs (each is reported once), then the first error is raised
            errors.append(e)
    if len(errors) > 1:
        raise type(errors[0])("\n".join(str(e) for e in errors)) from errors[0]
    if errors:
        raise errors[0]


def _index(device) -> int:
    if device is None:
        return _current
    if isinstance(device, int):
        return device
    index = Device(device).index
    return _current if index is None else index


# ---- streams and events --------------------------------------------------------------------------------
# Emulated mode runs every kernel synchronously on the host: streams are no-ops there, events
# read the host clock (which then measures the work between them).
class Stream:
    """An in-order queue of device work (``torch.cuda.Stream``). Make it current with
    ``tk.cuda.stream(s)``; kernels and copies then go on it.

    Example::

        >>> s = tk.cuda.Stream()
        >>> with tk.cuda.stream(s):
        ...     y = x * 2
        >>> tk.cuda.current_stream().wait_stream(s)
    """

    def __init__(self, device=None, priority: int = 0, *, _impl=None):
        self.device = Device("cuda", _index(device))
        self.priority = priority
        if _impl is None and not EMULATED:
            _impl = _rt().new_stream(self.device.index, priority)
        self._impl = _impl
        # the raw CUstream handle (0 when emulated); read on every kernel launch, so looked up once
        self.cuda_stream = 0 if _impl is None else _rt().stream_handle(_impl)

    def __cuda_stream__(self) -> tuple:
        return (0, self.cuda_stream)

    def synchronize(self) -> None:
        """Wait until all work queued on this stream is done; then raise an error a kernel found
        meanwhile (see ``synchronize``)."""
        if self._impl is not None:
            self._impl.sync()
        if _deferred:
            _check_deferred(self.device.index, self.cuda_stream)

    def query(self) -> bool:
        """Whether all work queued on this stream is done."""
        return self._impl is None or _rt().stream_query(self._impl)

    def record_event(self, event: "Event | None" = None) -> "Event":
        event = event or Event()
        event.record(self)
        return event

    def wait_event(self, event: "Event") -> None:
        """Make later work on this stream wait for ``event`` (without blocking the host)."""
        if self._impl is not None and event._impl is not None:
            self._impl.wait(event._impl)

    def wait_stream(self, stream: "Stream") -> None:
        """Make later work on this stream wait for all work queued on ``stream`` so far."""
        self.wait_event(stream.record_event())

    def __eq__(self, other) -> bool:
        if not isinstance(other, Stream):
            return NotImplemented
        return self is other or (self._impl is not None and self.device == other.device
                                 and self.cuda_stream == other.cuda_stream)

    def __hash__(self) -> int:
        return hash((self.device, self.cuda_stream)) if self._impl is not None else id(self)

    def __repr__(self) -> str:
        return f"<tk.cuda.Stream device={self.device} cuda_stream=0x{self.cuda_stream:x}>"


class Event:
    """A marker in a stream's work (``torch.cuda.Event``): record it, wait for it, time between two.

    Example::

        >>> start, end = tk.cuda.Event(enable_timing=True), tk.cuda.Event(enable_timing=True)
        >>> start.record(); y = x @ x; end.record(); end.synchronize()
        >>> start.elapsed_time(end)    # milliseconds
    """

    def __init__(self, enable_timing: bool = False, blocking: bool = False, interprocess: bool = False):
        if interprocess:
            raise NotImplementedError("Event(interprocess=True) is not supported yet")
        self.enable_timing, self.blocking = enable_timing, blocking
        self.device = None      # set by the first record()
        self._impl = None
        self._time = None       # host clock at record(), emulated mode

    def record(self, stream: Stream | None = None) -> None:
        """Record the event on ``stream`` (default: the current stream)."""
        stream = stream or current_stream()
        if EMULATED:
            self._time = time.perf_counter()
        else:
            if self._impl is None:
                self._impl = _rt().new_event(stream.device.index, self.enable_timing, self.blocking)
            stream._impl.record(self._impl)
        self.device = stream.device

    def wait(self, stream: Stream | None = None) -> None:
        (stream or current_stream()).wait_event(self)

    def query(self) -> bool:
        """Whether the work before the last record() is done (True if never recorded)."""
        return self._impl is None or self._impl.is_done

    def synchronize(self) -> None:
        """Wait until the work before the last record() is done."""
        if self._impl is not None:
            self._impl.sync()

    def elapsed_time(self, end_event: "Event") -> float:
        """Milliseconds from this event to ``end_event`` (both recorded, with enable_timing=True).

        Unlike PyTorch, this waits for ``end_event`` instead of failing when it is not done yet.
        """
        if not (self.enable_timing and end_event.enable_timing):
            raise RuntimeError("elapsed_time: both events must be created with Event(enable_timing=True)")
        if self.device is None or end_event.device is None:
            raise RuntimeError("elapsed_time: both events must be recorded first (event.record())")
        if EMULATED:
            return (end_event._time - self._time) * 1000.0
        end_event.synchronize()
        return float(end_event._impl - self._impl)

    def __repr__(self) -> str:
        return f"<tk.cuda.Event device={self.device} timing={self.enable_timing}>"


_streams = threading.local()    # .current: {device index: Stream}, per thread as in PyTorch
_defaults: dict = {}


def default_stream(device=None) -> Stream:
    """The device's default (legacy) stream."""
    index = _index(device)
    s = _defaults.get(index)
    if s is None:
        s = _defaults[index] = Stream(index, _impl=None if EMULATED else _rt().default_stream(index))
    return s


def current_stream(device=None) -> Stream:
    """The stream work for ``device`` goes on in this thread (its default stream unless set)."""
    index = _index(device)
    current = getattr(_streams, "current", None)
    s = current.get(index) if current else None
    return s if s is not None else (_defaults.get(index) or default_stream(index))


def _stream_handle(index: int) -> int:
    """``current_stream(index).cuda_stream``: the raw handle every kernel launch and every
    allocation goes on (``current_stream`` without its argument parsing: this is on the path
    of every eager op, several times)."""
    if _only_defaults:
        s = _defaults.get(index)
    else:
        current = getattr(_streams, "current", None)
        s = current.get(index) if current else None
        if s is None:
            s = _defaults.get(index)
    return (s or default_stream(index)).cuda_stream


_only_defaults = True       # no thread has made a stream current yet: every current stream is a default


def set_stream(stream: Stream) -> None:
    global _only_defaults
    if not hasattr(_streams, "current"):
        _streams.current = {}
    _streams.current[stream.device.index] = stream
    _only_defaults = False


@contextmanager
def stream(stream: Stream | None):
    """Make ``stream`` current (and its device) inside the block; ``None`` does nothing."""
    if stream is None:
        yield
        return
    prev, prev_device = current_stream(stream.device), _current
    if stream.device.index != _current:
        set_device(stream.device.index)
    set_stream(stream)
    try:
        yield stream
    finally:
        set_stream(prev)
        if prev_device != _current:
            set_device(prev_device)


# ---- memory -------------------------------------------------------------------------------------------
_allocated: dict = {}    # device index -> bytes held by live tensors
_peak: dict = {}


def memory_allocated(device=None) -> int:
    """Bytes held by live CUDA tensors on the device."""
    return _allocated.get(_index(device), 0)


def max_memory_allocated(device=None) -> int:
    """Peak of ``memory_allocated`` since the start or the last ``reset_peak_memory_stats``."""
    return _peak.get(_index(device), 0)


def memory_reserved(device=None) -> int:
    """Bytes the memory pool holds from the driver: allocated plus cached for reuse. The emulated
    device caches nothing, so there it equals ``memory_allocated``."""
    if EMULATED or _RT is None:
        return memory_allocated(device)
    return _RT.memory_reserved(_index(device))


def max_memory_reserved(device=None) -> int:
    if EMULATED or _RT is None:
        return max_memory_allocated(device)
    return _RT.max_memory_reserved(_index(device))


def reset_peak_memory_stats(device=None) -> None:
    index = _index(device)
    _peak[index] = _allocated.get(index, 0)


def empty_cache() -> None:
    """Return the memory pool's cached, unused memory to the driver (for other processes); live
    tensors keep theirs."""
    if not EMULATED and _RT is not None:
        _RT.empty_cache()


def mem_get_info(device=None) -> tuple:
    """(free, total) bytes of device memory."""
    index = _index(device)
    if not EMULATED:
        return _rt().mem_get_info(index)
    if _EMULATED_LIMIT:
        return max(_EMULATED_LIMIT - memory_allocated(index), 0), _EMULATED_LIMIT
    pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    return os.sysconf("SC_AVPHYS_PAGES") * size, pages * size


def _fmt(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024


def memory_summary(device=None, abbreviated: bool = False) -> str:
    """A readable table of the device's memory statistics."""
    index = _index(device)
    free, total = mem_get_info(index)
    rows = [("allocated (live tensors)", memory_allocated(index)),
            ("peak allocated", max_memory_allocated(index)),
            ("reserved (pool)", memory_reserved(index)),
            ("peak reserved", max_memory_reserved(index)),
            ("device free", free), ("device total", total)]
    kind = "emulated" if EMULATED else get_device_name(index)
    lines = [f"tensorkit CUDA memory summary, cuda:{index} ({kind})"]
    lines += [f"  {name:<26}{_fmt(v):>12}  ({v} bytes)" for name, v in rows]
    return "\n".join(lines)


def _track(index: int, nbytes: int) -> None:
    a = _allocated[index] = _allocated.get(index, 0) + nbytes
    if a > _peak.get(index, 0):
        _peak[index] = a


def _oom_message(index: int, nbytes: int, free: int, total: int) -> str:
    return (f"CUDA out of memory on cuda:{index}: tried to allocate {_fmt(nbytes)} ({nbytes} bytes); "
            f"{_fmt(memory_allocated(index))} ({memory_allocated(index)} bytes) are allocated by live "
            f"tensors, {memory_reserved(index)} bytes reserved by tensorkit's pool; the device has "
            f"{free} bytes free of {total} total. Free tensors you no longer need (drop references) or use "
            f"smaller sizes; the process can go on after this error.")


def _allocate(numel: int, np_dtype, device: Device) -> _storage.Storage:
    if _RT is not None and device.index is not None:      # the eager path, once the runtime is up
        return _RT.allocate(numel, np_dtype, device)
    index = _current if device.index is None else device.index
    if not EMULATED:
        if _RT is None and not is_available():
            raise RuntimeError(f"can't allocate on {device}: no CUDA device is available (no GPU or driver, or "
                               f"the 'cuda' extra (cuda-core, triton) is not installed); set TENSORKIT_INTERPRET=1 "
                               f"to emulate one on the CPU")
        return _rt().allocate(numel, np_dtype, device if device.index is not None else Device("cuda", index))
    nbytes = numel * np.dtype(np_dtype).itemsize
    if _EMULATED_LIMIT and memory_allocated(index) + nbytes > _EMULATED_LIMIT:
        free, total = mem_get_info(index)
        raise OutOfMemoryError(_oom_message(index, nbytes, free, total))
    st = _storage.Storage(np.empty(numel, np_dtype), Device("cuda", index))
    _track(index, st.nbytes)
    weakref.finalize(st, _track, index, -st.nbytes)
    return st


def _emulated_copy(src: _storage.Storage, offset: int, numel: int, device: Device, non_blocking: bool):
    """Host memory to host memory: the emulated device's transfers in every direction."""
    dst = _storage.allocate(numel, src.data.dtype, device)
    dst.data[:] = src.data[offset:offset + numel]
    return dst


def _real_transfer(name: str):
    # resolved at call time: the runtime (cuda-core) is imported on first use only
    return lambda *args: getattr(_rt(), name)(*args)


# ---- page-locked host memory, and streams as DLPack / the CUDA array interface name them ---------------
def _pinned_allocate(numel: int, np_dtype) -> _storage.Storage:
    """Host memory for ``Tensor.pin_memory()``: page-locked on a real GPU (so copies from and to it
    can run asynchronously). The emulated device has no page-locked memory and copies synchronously
    anyway: there it is ordinary host memory, and ``is_pinned()`` says False."""
    if EMULATED:
        return _storage.Storage(np.empty(numel, np_dtype), Device("cpu"))
    if not is_available():
        raise RuntimeError("pin_memory: page-locked memory needs a CUDA device, and none is available (no GPU or "
                           "driver, or cuda-core is not installed); without a GPU there is nothing to pin for")
    return _rt().pinned_allocate(numel, np_dtype)


def _is_pinned(address: int) -> bool:
    """Whether host ``address`` is page-locked memory the driver knows (False when emulated / without CUDA)."""
    if EMULATED or device_count() == 0:
        return False
    _rt().make_current(_current)
    return _rt()._is_pinned(address)


def _dlpack_stream(index: int) -> int:
    """Device ``index``'s current stream as DLPack and the CUDA array interface name streams: its
    handle, with 1 for the legacy default stream (0 is not allowed there)."""
    return current_stream(index).cuda_stream or 1


def _wait_for_current(index: int, handle: int) -> None:
    """Make the stream with raw handle ``handle`` (1: legacy default, 2: per-thread default) wait
    for the work queued so far on device ``index``'s current stream, without blocking the host."""
    producer = _dlpack_stream(index)
    if EMULATED or handle == producer:
        return
    _rt().wait_for(handle, producer, index)


# A copy to the host without the deferred checks: how those checks read their own flags.
_device_to_host = _emulated_copy if EMULATED else _real_transfer("device_to_host")


def _checked_device_to_host(src: _storage.Storage, offset: int, numel: int, device: Device, non_blocking: bool):
    """The device -> host transfer every host read goes through (``.cpu()``, ``.item()``, printing, ...):
    a blocking one has waited for the current stream, so it then runs that stream's deferred checks."""
    out = _device_to_host(src, offset, numel, device, non_blocking)
    if _deferred and not non_blocking:
        index = _current if src.device.index is None else src.device.index
        _check_deferred(index, _stream_handle(index))
    return out


_storage.PINNED.update(allocate=_pinned_allocate, is_pinned=_is_pinned)
_storage.ALLOCATORS["cuda"] = _allocate
for _pair, _name in ((("cpu", "cuda"), "host_to_device"), (("cuda", "cuda"), "device_to_device")):
    _storage.TRANSFERS[_pair] = _emulated_copy if EMULATED else _real_transfer(_name)
_storage.TRANSFERS[("cuda", "cpu")] = _checked_device_to_host


# ---- random number generators ---------------------------------------------------------------------------
# One default Philox generator per device, as PyTorch (tk.Generator objects of tensorkit.ops.creation, made
# on first use); tk.manual_seed and tk.seed seed them all.
def _generator(device=None):
    from ..ops.creation import default_generator_for
    return default_generator_for(Device("cuda", _index(device)))


def manual_seed(seed: int) -> None:
    """Seed the current device's default generator."""
    _generator().manual_seed(seed)


def manual_seed_all(seed: int) -> None:
    """Seed every device's default generator (also those of devices not used yet)."""
    from ..ops.creation import _seed_device_generators
    _seed_device_generators("cuda", seed)


def seed() -> None:
    """Seed the current device's default generator from the OS's entropy."""
    _generator().seed()


def seed_all() -> None:
    """Seed every device's default generator with one seed from the OS's entropy."""
    manual_seed_all(_generator().seed())


def initial_seed() -> int:
    """The seed of the current device's default generator."""
    return _generator().initial_seed()


def get_rng_state(device="cuda"):
    """The state of ``device``'s default generator: a uint8 CPU tensor of 16 bytes (seed, offset)."""
    return _generator(device).get_state()


def set_rng_state(new_state, device="cuda") -> None:
    """Restore ``device``'s default generator to a state from ``get_rng_state``."""
    _generator(device).set_state(new_state)


def get_rng_state_all() -> list:
    return [get_rng_state(i) for i in range(device_count())]


def set_rng_state_all(new_states) -> None:
    for i, state in enumerate(new_states):
        set_rng_state(state, i)


def _register_seed_hook() -> None:
    from ..ops import creation
    creation._SEED_HOOKS.append(manual_seed_all)


_register_seed_hook()
