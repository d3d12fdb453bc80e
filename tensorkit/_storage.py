"""Raw memory behind tensors.

A Storage is a flat buffer of one dtype plus the device it lives on. CPU storage is a
1-D numpy array (so ``from_numpy`` / ``numpy()`` share memory); device storage is provided
by the runtime registered for that device type (``tensorkit.cuda``), through ``ALLOCATORS``.
Storages are shared by all views of a tensor, and so is their version counter, which
autograd uses to detect in-place changes to saved tensors.
"""
from __future__ import annotations

import numpy as np

from .device import device as Device


class Storage:
    """A flat, typed buffer. ``data`` is a 1-D numpy array for host memory (also for the
    emulated cuda device), or for GPU memory an array-like with ``dtype``, ``itemsize``,
    ``nbytes``, ``shape`` and ``ptr`` (``tensorkit.cuda._runtime.DeviceArray``)."""

    __slots__ = ("data", "device", "version", "__weakref__")

    def __init__(self, data, device: Device):
        self.data = data
        self.device = device
        self.version = 0

    @property
    def nbytes(self) -> int:
        return self.data.nbytes

    def data_ptr(self) -> int:
        """Address of the first element (a device address for GPU memory)."""
        data = self.data
        return data.ctypes.data if isinstance(data, np.ndarray) else data.ptr


class DeviceMemory:
    """A flat array of one dtype in device memory, as a device Storage's ``data``: numpy's
    ``dtype`` / ``itemsize`` / ``nbytes`` / ``shape`` / ``size`` and a ``ptr`` (the device
    address). Subclasses say who owns the memory: tensorkit's pool
    (``cuda._runtime.DeviceArray``) or another library (``_dlpack.ForeignDeviceArray``)."""

    __slots__ = ("ptr", "dtype", "shape", "device_index")
    ndim = 1

    itemsize = property(lambda self: self.dtype.itemsize)
    size = property(lambda self: self.shape[0])
    nbytes = property(lambda self: self.shape[0] * self.dtype.itemsize)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.size} x {self.dtype} at 0x{self.ptr:x} on cuda:{self.device_index})"

    @property
    def __cuda_array_interface__(self) -> dict:
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.ptr, False), "version": 3,
                "strides": None}


def _host_allocate(numel: int, np_dtype, device: Device) -> Storage:
    return Storage(np.empty(numel, np_dtype), device)


# device type -> allocate(numel, numpy dtype, device) -> Storage; tensorkit.cuda adds "cuda".
ALLOCATORS = {"cpu": _host_allocate}

# (from type, to type) -> copy(storage, offset, numel, device, non_blocking) -> a new Storage on
# `device` holding those `numel` elements; device runtimes register theirs (tensorkit.cuda).
TRANSFERS: dict = {}

# Page-locked ("pinned") host memory, from the device runtime that can use it (tensorkit.cuda):
# "allocate": (numel, numpy dtype) -> a CPU Storage; "is_pinned": (host address) -> bool.
PINNED: dict = {}


def allocate(numel: int, np_dtype, device: Device) -> Storage:
    if device.type == "cpu":
        return Storage(np.empty(numel, np_dtype), device)
    try:
        alloc = ALLOCATORS[device.type]
    except KeyError:
        raise RuntimeError(f"no memory allocator for device '{device}': is its backend installed?") from None
    return alloc(numel, np_dtype, device)
