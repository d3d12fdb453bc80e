"""Zero-copy exchange with other array libraries: DLPack and ``__cuda_array_interface__``.

DLPack (https://dmlc.github.io/dlpack/latest/, and the array API's data interchange page) passes
a C struct inside a PyCapsule: a data pointer, the device, the dtype, shape and strides (in
elements), and a deleter that the consumer calls when it no longer needs the memory. A capsule
is named "dltensor" (the legacy ``DLManagedTensor``) or, when the consumer asks with
``max_version >= (1, 0)``, "dltensor_versioned" (``DLManagedTensorVersioned``, with a version and
flags). The consumer renames it "used_..." when it takes ownership; a capsule that nobody
consumed calls the deleter when it is garbage collected.

Exporting: numpy writes the capsule. We hand numpy an array over the tensor's memory (a host
view, or for CUDA memory an array that only describes the device address and is never read),
call its ``__dlpack__``, and then set the two fields numpy cannot know: the device (kDLCUDA) and
the bfloat16 type code (numpy sees uint16). numpy's C deleter and capsule destructor then keep
our Storage alive until the consumer is done. (Writing them as ctypes callbacks instead would run
Python code inside a capsule destructor, which CPython may call while an exception is being
raised; ctypes then loses that exception.)

Importing: host memory goes through ``np.from_dlpack`` (numpy calls the producer's deleter when
the array dies). bfloat16, which numpy cannot import, and CUDA memory are read here with ctypes:
the Storage holds an owner object that calls the producer's deleter when the last tensor over the
memory dies.

The emulated cuda device (TENSORKIT_INTERPRET=1) keeps "device" memory in host memory. Handing
that out as CUDA memory would make a real CUDA consumer read a host address as a device one, so
its tensors refuse DLPack export (BufferError) and have no ``__cuda_array_interface__``
(AttributeError, as for CPU tensors); importing CUDA memory there is refused too.
"""
from __future__ import annotations

import builtins
import ctypes

import numpy as np

from . import cuda as _cuda
from . import dtypes as D
from ._storage import DeviceMemory, Storage
from ._tensor import Tensor, contiguous_strides
from .device import CPU, device as Device

# DLPack device types (dlpack.h). Host-addressable kinds are imported as CPU tensors, as numpy does.
kDLCPU, kDLCUDA, kDLCUDAHost, kDLCUDAManaged = 1, 2, 3, 13
_HOST_KINDS = (kDLCPU, kDLCUDAHost, kDLCUDAManaged)
_READ_ONLY, _IS_COPIED = 1, 2           # DLManagedTensorVersioned.flags bits

# tensorkit dtype <-> DLPack (type code, bits); lanes are always 1
_CODES = {D.bool_: (6, 8), D.uint8: (1, 8), D.int8: (0, 8), D.int16: (0, 16), D.int32: (0, 32), D.int64: (0, 64),
          D.float16: (2, 16), D.bfloat16: (4, 16), D.float32: (2, 32), D.float64: (2, 64)}
_DTYPES = {code: dt for dt, code in _CODES.items()}
_CODE_NAMES = {0: "int", 1: "uint", 2: "float", 3: "opaque handle", 4: "bfloat", 5: "complex", 6: "bool"}


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32), ("dtype", _DLDataType),
                ("shape", ctypes.POINTER(ctypes.c_int64)), ("strides", ctypes.POINTER(ctypes.c_int64)),
                ("byte_offset", ctypes.c_uint64)]


_Deleter = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


class _DLManagedTensor(ctypes.Structure):              # in a "dltensor" capsule
    _fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", _Deleter)]


class _DLManagedTensorVersioned(ctypes.Structure):     # in a "dltensor_versioned" capsule (DLPack >= 1.0)
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32), ("manager_ctx", ctypes.c_void_p),
                ("deleter", _Deleter), ("flags", ctypes.c_uint64), ("dl_tensor", _DLTensor)]


def _capi(name: str, restype, *argtypes):
    # PYFUNCTYPE: called with the GIL held, and a Python error the call sets is raised
    return ctypes.PYFUNCTYPE(restype, *argtypes)((name, ctypes.pythonapi))


_capsule_is_valid = _capi("PyCapsule_IsValid", ctypes.c_int, ctypes.py_object, ctypes.c_char_p)
_capsule_pointer = _capi("PyCapsule_GetPointer", ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)
_capsule_set_name = _capi("PyCapsule_SetName", ctypes.c_int, ctypes.py_object, ctypes.c_char_p)
_LEGACY, _VERSIONED = b"dltensor", b"dltensor_versioned"
_USED = {_LEGACY: b"used_dltensor", _VERSIONED: b"used_dltensor_versioned"}
# A capsule keeps the name pointer it was given, and may outlive this module at interpreter exit:
# the used-names are never freed.
for _name in _USED.values():
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(_name))


def _emulated_error(what: str) -> str:
    return (f"{what}: the emulated CUDA device (TENSORKIT_INTERPRET=1) keeps its memory in host memory, which a "
            f"CUDA consumer must not read as device memory; exchange a .cpu() copy instead (or run on a real GPU)")


# ---- export ------------------------------------------------------------------------------------
def dlpack_device(t: Tensor) -> tuple:
    """``(kDLCPU, 0)`` or ``(kDLCUDA, index)``."""
    dev = t.device
    return (kDLCUDA, dev.index) if dev.type == "cuda" else (kDLCPU, 0)


def to_dlpack(t: Tensor, *, stream=None, max_version=None, dl_device=None, copy=None):
    """A DLPack capsule of ``t`` (``Tensor.__dlpack__``; the arguments are the array API's)."""
    if t.requires_grad:
        raise BufferError("Can't export tensors that require gradient, use tensor.detach()")
    if t.is_cuda and _cuda.EMULATED:
        raise BufferError(_emulated_error("__dlpack__"))
    own = dlpack_device(t)
    copied = False
    if dl_device is not None and tuple(dl_device) != own:
        if tuple(dl_device) != (kDLCPU, 0) or not t.is_cuda:
            raise BufferError(f"__dlpack__: can't export a {t.device} tensor to DLPack device {tuple(dl_device)}; "
                              f"only {own} or, by copying a CUDA tensor, (kDLCPU=1, 0)")
        if copy is False:
            raise BufferError(f"__dlpack__: exporting a {t.device} tensor to the CPU needs a copy, and copy=False "
                              f"forbids it")
        t, copied = t.cpu(), True           # a synchronous copy: the data is there on return
    elif copy:
        t, copied = t.clone(), True
    if t.is_cuda:
        _order_before_consumer(t.device.index, stream)
    elif stream is not None and stream != -1:
        raise BufferError(f"__dlpack__: stream must be None for a CPU tensor, got {stream!r}")
    versioned = max_version is not None and tuple(max_version)[0] >= 1
    return _capsule(t, versioned, copied)


def _order_before_consumer(index: int, stream) -> None:
    """Make the consumer's stream wait for the work queued so far on ours (device-side, no host
    wait). DLPack's stream values: None = the legacy default stream (1), 2 = per-thread default,
    -1 = don't synchronise, 0 = disallowed (ambiguous), else a CUstream handle."""
    if stream == -1:
        return
    if stream is not None and (type(stream) is not int or stream == 0):
        raise BufferError(f"__dlpack__: stream must be None, -1 or a CUDA stream handle other than 0 "
                          f"(1 is the legacy default stream), got {stream!r}")
    _cuda._wait_for_current(index, 1 if stream is None else stream)


class _DeviceMemory:
    """An ``__array_interface__`` describing device memory, for numpy's DLPack export only: the
    array numpy builds from it is never read, and it keeps the Storage alive."""

    def __init__(self, t: Tensor, typestr: str):
        self.storage = t._storage
        isz = t.dtype.itemsize
        self.__array_interface__ = {"shape": tuple(t.shape), "typestr": typestr, "data": (t.data_ptr(), False),
                                    "strides": tuple(s * isz for s in t.stride()), "version": 3}


def _capsule(t: Tensor, versioned: bool, copied: bool):
    bf16 = t.dtype is D.bfloat16
    if t.is_cuda:
        arr = np.asarray(_DeviceMemory(t, "<u2" if bf16 else t.dtype.numpy.str))
    else:
        arr = t._np().view(np.uint16) if bf16 else t._np()
    if versioned:
        try:
            capsule = arr.__dlpack__(max_version=(1, 0))
        except TypeError:               # numpy < 2.1 only writes legacy capsules (the spec allows that)
            capsule, versioned = arr.__dlpack__(), False
    else:
        capsule = arr.__dlpack__()
    struct, name = (_DLManagedTensorVersioned, _VERSIONED) if versioned else (_DLManagedTensor, _LEGACY)
    managed = struct.from_address(_capsule_pointer(capsule, name))
    dl = managed.dl_tensor
    if bf16:
        dl.dtype.code = 4
    if t.is_cuda:
        dl.device.device_type, dl.device.device_id = kDLCUDA, t.device.index
        dl.data, dl.byte_offset = t.data_ptr(), 0      # numpy gives size-0 arrays a host buffer of its own
    if copied and versioned:
        managed.flags |= _IS_COPIED
    return capsule


# ---- import ------------------------------------------------------------------------------------
class _Capsule:
    """Hands an already obtained capsule to ``np.from_dlpack``, which wants an exporting object."""

    def __init__(self, capsule, device: tuple):
        self.capsule, self.device = capsule, device

    def __dlpack__(self, **kwargs):
        return self.capsule

    def __dlpack_device__(self) -> tuple:
        return self.device


class _Owner:
    """Owns a consumed DLPack struct: calls the producer's deleter when the last tensor over its
    memory dies (this object is referenced by that memory's Storage)."""

    def __init__(self, address: int, managed):
        self.address, self.deleter = address, managed.deleter

    def __del__(self):
        deleter, self.deleter = self.deleter, None
        if deleter:
            deleter(self.address)


class ForeignDeviceArray(DeviceMemory):
    """CUDA memory owned by another library, imported through DLPack. It is not part of
    tensorkit's memory pool or statistics; when the last tensor over it dies, the producer's
    deleter runs (the producer frees it, ordered as it orders its own frees)."""

    __slots__ = ("_owner",)

    def __init__(self, ptr: int, numel: int, dtype: np.dtype, device_index: int, owner: _Owner):
        self.ptr, self.dtype, self.shape = ptr, dtype, (numel,)
        self.device_index, self._owner = device_index, owner


def from_dlpack(ext_tensor, *, device=None, copy: bool | None = None) -> Tensor:
    """A tensor sharing memory with ``ext_tensor``: any object with ``__dlpack__`` (numpy, PyTorch,
    CuPy, JAX, cuda.core, tensorkit) or a DLPack capsule. Writes through either side are seen by both.

    The producer's memory stays alive as long as a tensor over it does. CUDA producers are asked
    to order their pending work before ``tk.cuda.current_stream()``.

    Args:
        ext_tensor: the array to view, or a capsule (each capsule can be imported once).
        device: where the result should be; a different device than the data's makes a copy.
        copy: True always copies, False never does (an error if ``device`` needs one), None copies
            only when ``device`` asks for it.

    Example::

        >>> a = np.arange(3.0); t = tk.from_dlpack(a); t[0] = 7; a[0]
        7.0
    """
    if hasattr(ext_tensor, "__dlpack__"):
        kind, index = (int(x) for x in ext_tensor.__dlpack_device__())
        kwargs = {"max_version": (1, 0)}
        if kind == kDLCUDA:
            _check_cuda_import(index)
            kwargs["stream"] = _cuda._dlpack_stream(index)
        try:
            capsule = ext_tensor.__dlpack__(**kwargs)
        except TypeError:           # a producer from before DLPack 1.0: legacy capsules only
            kwargs.pop("max_version")
            capsule = ext_tensor.__dlpack__(**kwargs)
    elif type(ext_tensor).__name__ == "PyCapsule":
        capsule = ext_tensor
    else:
        raise TypeError(f"from_dlpack: expected an object with __dlpack__ (e.g. a numpy array or a PyTorch tensor) "
                        f"or a DLPack capsule, got {type(ext_tensor).__name__}")
    out = _import_capsule(capsule)
    target = out.device if device is None else Device(device)
    if target.type == "cuda" and target.index is None:
        target = Device("cuda", _cuda.current_device())
    if target != out.device:
        if copy is False:
            raise ValueError(f"from_dlpack: the data is on {out.device}; moving it to {target} needs a copy, "
                             f"and copy=False forbids it")
        return out.to(target)
    return out.clone() if copy else out


def _check_cuda_import(index: int) -> None:
    if _cuda.EMULATED:
        raise BufferError(_emulated_error("from_dlpack: can't import CUDA memory"))
    if not _cuda.is_available():
        raise BufferError(f"from_dlpack: the data is CUDA memory (device {index}), but no CUDA device is available "
                          f"to tensorkit (no GPU or driver, or cuda-core is not installed)")


def _import_capsule(capsule) -> Tensor:
    if _capsule_is_valid(capsule, _VERSIONED):
        name, struct = _VERSIONED, _DLManagedTensorVersioned
    elif _capsule_is_valid(capsule, _LEGACY):
        name, struct = _LEGACY, _DLManagedTensor
    elif _capsule_is_valid(capsule, _USED[_LEGACY]) or _capsule_is_valid(capsule, _USED[_VERSIONED]):
        raise RuntimeError("from_dlpack received an invalid capsule. Note that DLTensor capsules can be consumed "
                           "only once, so you might have already constructed a tensor from it once.")
    else:
        raise TypeError("from_dlpack: this capsule is not a DLPack tensor (its name is neither 'dltensor' nor "
                        "'dltensor_versioned')")
    address = _capsule_pointer(capsule, name)
    managed = struct.from_address(address)
    # Until the capsule is renamed it stays the producer's: on any error below, its destructor frees it.
    if name == _VERSIONED:
        if managed.major != 1:
            raise BufferError(f"from_dlpack: DLPack version {managed.major}.{managed.minor} is not supported "
                              f"(tensorkit reads 1.x)")
        if managed.flags & _READ_ONLY:
            raise BufferError("from_dlpack: the producer marked this tensor read-only, and tensorkit tensors are "
                              "always writable; copy it on the producer's side first")
    dl = managed.dl_tensor
    kind, index = dl.device.device_type, dl.device.device_id
    code, bits, lanes = dl.dtype.code, dl.dtype.bits, dl.dtype.lanes
    dtype = _DTYPES.get((code, bits)) if lanes == 1 else None
    if dtype is None:
        what = f"{_CODE_NAMES.get(code, f'type code {code}')}{bits}" + (f" x{lanes} lanes" if lanes != 1 else "")
        raise RuntimeError(f"from_dlpack: unsupported DLPack dtype {what}; tensorkit supports "
                           f"{', '.join(d.name for d in D.ALL_DTYPES)}")
    if kind == kDLCUDA:
        _check_cuda_import(index)
    elif kind not in _HOST_KINDS:
        raise BufferError(f"from_dlpack: unsupported DLPack device type {kind}; tensorkit imports CPU (1), "
                          f"CUDA host (3), CUDA managed (13) and CUDA (2) memory")
    ndim = dl.ndim
    shape = tuple(dl.shape[i] for i in range(ndim))
    strides = tuple(dl.strides[i] for i in range(ndim)) if ndim and dl.strides else contiguous_strides(shape)
    if any(s < 0 for s in strides):
        raise ValueError(f"from_dlpack: negative strides {strides} are not supported; copy the array on the "
                         f"producer's side first")
    if kind != kDLCUDA and dtype is not D.bfloat16:
        # host memory numpy can name: numpy's importer (it consumes the capsule), then from_numpy
        from .ops.creation import from_numpy
        return from_numpy(np.from_dlpack(_Capsule(capsule, (kind, index))))

    # consume: from here the struct is ours, and the owner gives it back through its deleter
    _capsule_set_name(capsule, _USED[name])
    owner = _Owner(address, managed)
    numel = 1
    for n in shape:
        numel *= n
    extent = 1 + builtins.sum((n - 1) * s for n, s in zip(shape, strides)) if numel else 0
    base = (dl.data or 0) + dl.byte_offset
    if kind == kDLCUDA:
        storage = Storage(ForeignDeviceArray(base, extent, dtype.numpy, index, owner), Device("cuda", index))
    elif extent:                    # bfloat16 on the host: bytes through numpy, viewed as ml_dtypes.bfloat16
        owner.__array_interface__ = {"shape": (extent * 2,), "typestr": "|u1", "data": (base, False), "version": 3}
        storage = Storage(np.asarray(owner).view(dtype.numpy), CPU)
    else:
        storage = Storage(np.empty(0, dtype.numpy), CPU)
    return Tensor._make(storage, 0, shape, strides, dtype)


# ---- CUDA array interface ---------------------------------------------------------------------------
def cuda_array_interface(t: Tensor) -> dict:
    """``Tensor.__cuda_array_interface__`` (version 3)."""
    if not t.is_cuda:
        raise AttributeError(f"Can't get __cuda_array_interface__ on non-CUDA tensor type: {t.type()} "
                             f"If CUDA data is required use tensor.cuda() to copy tensor to device memory.")
    if _cuda.EMULATED:
        raise AttributeError(_emulated_error("Can't get __cuda_array_interface__"))
    if t.requires_grad:
        raise RuntimeError("Can't get __cuda_array_interface__ on Variable that requires grad. If gradients aren't "
                           "required, use var.detach() to get Variable that doesn't require grad.")
    isz = t.dtype.itemsize
    return {
        # bfloat16 has no array-interface letter: "<V2" (two raw bytes) is ml_dtypes' and PyTorch's choice
        "typestr": "<V2" if t.dtype is D.bfloat16 else t.dtype.numpy.str,
        "shape": tuple(t.shape),
        "strides": None if t.is_contiguous() else tuple(s * isz for s in t.stride()),
        "data": (t.data_ptr() if t.numel() else 0, False),
        "version": 3,
        # work queued on this stream writes the data: a consumer orders its own work after it
        "stream": _cuda._dlpack_stream(t.device.index),
    }
