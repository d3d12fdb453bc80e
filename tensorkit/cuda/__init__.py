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
import weakref

import numpy as np

from .. import _storage
from ..device import device as Device

EMULATED = os.environ.get("TENSORKIT_INTERPRET", "") not in ("", "0")
if EMULATED:
    os.environ.setdefault("TRITON_INTERPRET", "1")


class OutOfMemoryError(RuntimeError):
    """Raised when the device has not enough free memory for an allocation; the process
    (and the device) keep working after it."""


_current = 0
_allocated = 0          # bytes held by live tensors
_peak = 0


def is_available() -> bool:
    """Whether a CUDA device (or the emulated one) can be used; never raises."""
    return device_count() > 0


def device_count() -> int:
    """Number of CUDA devices (1 when emulated, 0 without a driver)."""
    if EMULATED:
        return 1
    try:
        from . import _runtime
        return _runtime.device_count()
    except Exception:       # no driver, no cuda-core, no GPU: not available
        return 0


def current_device() -> int:
    return _current


def set_device(device) -> None:
    """Make ``device`` (an int, 'cuda:N' or a device) the current CUDA device."""
    global _current
    index = device if isinstance(device, int) else (Device(device).index or 0)
    n = device_count()
    if not 0 <= index < n:
        raise RuntimeError(f"set_device: invalid device ordinal {index}; {n} CUDA device(s) available")
    _current = index


def get_device_name(device=None) -> str:
    if EMULATED:
        return "tensorkit emulated CUDA device (Triton interpreter)"
    from . import _runtime
    return _runtime.device_name(_index(device))


def synchronize(device=None) -> None:
    """Wait for all work queued on the device."""
    if not EMULATED:
        from . import _runtime
        _runtime.synchronize(_index(device))


def _index(device) -> int:
    if device is None:
        return _current
    return device if isinstance(device, int) else (Device(device).index or _current)


# ---- memory -------------------------------------------------------------------------------------------
def memory_allocated(device=None) -> int:
    """Bytes held by live CUDA tensors."""
    return _allocated


def max_memory_allocated(device=None) -> int:
    """Peak of ``memory_allocated`` since the start or the last ``reset_peak_memory_stats``."""
    return _peak


def reset_peak_memory_stats(device=None) -> None:
    global _peak
    _peak = _allocated


def _track(nbytes: int) -> None:
    global _allocated, _peak
    _allocated += nbytes
    _peak = max(_peak, _allocated)


def _allocate(numel: int, np_dtype, device: Device) -> _storage.Storage:
    index = _current if device.index is None else device.index
    if not EMULATED:
        if not is_available():
            raise RuntimeError(f"can't allocate on {device}: no CUDA device is available (no GPU or driver, or "
                               f"the 'cuda' extra (cuda-core, triton) is not installed); set TENSORKIT_INTERPRET=1 "
                               f"to emulate one on the CPU")
        from . import _runtime
        return _runtime.allocate(numel, np_dtype, Device("cuda", index))
    st = _storage.Storage(np.empty(numel, np_dtype), Device("cuda", index))
    _track(st.nbytes)
    weakref.finalize(st, _track, -st.nbytes)
    return st


def _emulated_copy(src: _storage.Storage, offset: int, numel: int, device: Device, non_blocking: bool):
    """Host memory to host memory: the emulated device's transfers in every direction."""
    dst = _storage.allocate(numel, src.data.dtype, device)
    dst.data[:] = src.data[offset:offset + numel]
    return dst


_storage.ALLOCATORS["cuda"] = _allocate
if EMULATED:
    for _pair in (("cpu", "cuda"), ("cuda", "cpu"), ("cuda", "cuda")):
        _storage.TRANSFERS[_pair] = _emulated_copy
