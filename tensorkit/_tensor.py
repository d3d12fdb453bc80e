"""Tensor: storage + offset + shape + strides + dtype + device (+ autograd fields).

This module holds the layout and the conversions out of a tensor (numpy, Python
numbers, lists). All math, shape ops and indexing are functions in ``ops/`` and
``functional.py``; ``_methods.py`` binds them as methods and operators. Strides and
offsets count elements, as in PyTorch.
"""
from __future__ import annotations

import numpy as np

from . import dtypes as D
from ._storage import Storage
from .device import device as Device


class Size(tuple):
    """The shape of a tensor: a tuple of ints that prints as ``tk.Size([2, 3])``."""

    def __repr__(self) -> str:
        return f"tk.Size([{', '.join(map(str, self))}])"

    def numel(self) -> int:
        n = 1
        for s in self:
            n *= s
        return n


def contiguous_strides(shape) -> tuple:
    """Row-major strides (in elements) of ``shape``."""
    n = len(shape)
    if n < 2:
        return (1,) if n else ()
    strides, acc = [0] * n, 1
    for i in range(len(shape) - 1, -1, -1):
        strides[i] = acc
        acc *= max(shape[i], 1)
    return tuple(strides)


class Tensor:
    """A strided, typed, n-dimensional array on a device, with PyTorch's API.

    Create tensors with ``tk.tensor``, ``tk.zeros``, ``tk.from_numpy`` and friends; the
    constructor itself is internal.
    """

    __slots__ = ("_storage", "_offset", "_shape", "_strides", "dtype", "_contig", "_array",
                 "_base", "_requires_grad", "grad", "grad_fn", "__dict__", "__weakref__")

    __array_priority__ = 1000    # numpy defers to our reflected operators

    @classmethod
    def _make(cls, storage: Storage, offset: int, shape, strides, dtype: D.DType, base=None) -> "Tensor":
        t = object.__new__(cls)
        t._storage = storage
        t._offset = offset
        t._shape = shape if type(shape) is Size else Size(shape)
        t._strides = tuple(strides)
        t.dtype = dtype
        t._contig = None
        t._array = None
        t._base = base
        t._requires_grad = False
        t.grad = None
        t.grad_fn = None
        return t

    # ---- layout -------------------------------------------------------------------------
    @property
    def shape(self) -> Size:
        return self._shape

    @property
    def ndim(self) -> int:
        return len(self._shape)

    def dim(self) -> int:
        """Number of dimensions."""
        return len(self._shape)

    def size(self, dim: int | None = None):
        """The shape, or the size of one dimension."""
        if dim is None:
            return self._shape
        return self._shape[_wrap_dim(dim, self.ndim, "size")]

    def stride(self, dim: int | None = None):
        """Strides in elements, or the stride of one dimension."""
        if dim is None:
            return self._strides
        return self._strides[_wrap_dim(dim, self.ndim, "stride")]

    def storage_offset(self) -> int:
        return self._offset

    def numel(self) -> int:
        """Number of elements."""
        n = 1
        for s in self._shape:
            n *= s
        return n

    nelement = numel

    def element_size(self) -> int:
        return self.dtype.itemsize

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.numel() * self.dtype.itemsize

    def is_contiguous(self, memory_format=None) -> bool:
        """Whether the elements are laid out row-major without gaps (size-1 dims ignored)."""
        c = self._contig
        if c is None:
            c = True
            if 0 not in self._shape:
                expected = 1
                for size, st in zip(reversed(self._shape), reversed(self._strides)):
                    if size != 1:
                        if st != expected:
                            c = False
                            break
                        expected *= size
            self._contig = c
        return c

    @property
    def device(self) -> Device:
        return self._storage.device

    @property
    def is_cuda(self) -> bool:
        return self._storage.device.type == "cuda"

    @property
    def is_cpu(self) -> bool:
        return self._storage.device.type == "cpu"

    def is_floating_point(self) -> bool:
        return self.dtype.is_floating_point

    def is_complex(self) -> bool:
        return False

    def data_ptr(self) -> int:
        """Address of the first element."""
        return self._storage.data_ptr() + self._offset * self.dtype.itemsize

    def untyped_storage(self) -> Storage:
        return self._storage

    # ---- zero-copy interop (tensorkit/_dlpack.py) ------------------------------------------
    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        """A DLPack capsule sharing this tensor's memory (what ``np.from_dlpack``,
        ``torch.from_dlpack`` and ``tk.from_dlpack`` call).

        Args:
            stream: the consumer's CUDA stream (None: the legacy default stream, -1: no
                synchronisation); our pending work on the data is ordered before it. None for CPU tensors.
            max_version: the newest DLPack version the consumer reads; >= (1, 0) gets a versioned capsule.
            dl_device: the DLPack device wanted; (1, 0) for a CUDA tensor exports a host copy.
            copy: True exports a copy, False never copies, None copies only for ``dl_device``.

        Raises BufferError for tensors that require grad and on the emulated cuda device (its memory
        is host memory; export a ``.cpu()`` copy).
        """
        from ._dlpack import to_dlpack
        return to_dlpack(self, stream=stream, max_version=max_version, dl_device=dl_device, copy=copy)

    def __dlpack_device__(self) -> tuple:
        """``(1, 0)`` (kDLCPU) or ``(2, index)`` (kDLCUDA)."""
        from ._dlpack import dlpack_device
        return dlpack_device(self)

    @property
    def __cuda_array_interface__(self) -> dict:
        """The CUDA array interface (version 3) of a CUDA tensor, for Numba, CuPy and cuda.core.

        Strides are in bytes (None when contiguous); ``stream`` is the current stream, on which
        work writing the data is queued. CPU tensors raise AttributeError (so ``hasattr`` says
        False), as in PyTorch, and so do tensors on the emulated cuda device, whose memory is host
        memory. bfloat16 has the typestr "<V2" (two raw bytes), as in PyTorch.
        """
        from ._dlpack import cuda_array_interface
        return cuda_array_interface(self)

    @property
    def _version(self) -> int:
        return self._storage.version

    def _bump_version(self) -> None:
        self._storage.version += 1

    # ---- autograd fields (the engine lives in tensorkit.autograd) --------------------------
    @property
    def requires_grad(self) -> bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        if value and not self.dtype.is_floating_point:
            raise RuntimeError(f"only floating point tensors can require gradients, got dtype {self.dtype}")
        if self.grad_fn is not None and not value:
            raise RuntimeError("you can only change requires_grad flags of leaf variables; use .detach() "
                               "to get a tensor that does not require grad")
        if value and _autograd_install is not None:
            _autograd_install()
        self._requires_grad = bool(value)

    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        self.requires_grad = requires_grad
        return self

    @property
    def is_leaf(self) -> bool:
        return self.grad_fn is None

    # ---- host views and conversions ---------------------------------------------------------
    def _np(self) -> np.ndarray:
        """The elements as a numpy view of host storage (internal: no device check)."""
        a = self._array
        if a is None:
            data = self._storage.data
            isz = data.itemsize
            if 0 in self._shape:                   # no elements: the offset may lie past the end
                a = np.empty(self._shape, data.dtype)
                self._array = a
                return a
            a = np.ndarray(self._shape, data.dtype, buffer=data.view(np.uint8), offset=self._offset * isz,
                           strides=[s * isz for s in self._strides])
            self._array = a
        return a

    def _host(self) -> np.ndarray:
        """The elements as a host numpy array (a copy for device tensors)."""
        if self.device.type == "cpu":
            return self._np()
        return self.cpu()._np()

    def numpy(self, *, force: bool = False) -> np.ndarray:
        """A numpy array sharing memory with this CPU tensor (bfloat16 as ``ml_dtypes.bfloat16``).

        PyTorch refuses bfloat16 here; tensorkit returns an ml_dtypes array instead.
        """
        if self.device.type != "cpu":
            if not force:
                raise TypeError(f"can't convert {self.device} tensor to numpy; use .cpu() to copy it to host memory first")
            return self.cpu().numpy()
        if self._requires_grad and not force:
            raise RuntimeError("can't call numpy() on a tensor that requires grad; use .detach().numpy()")
        return self._np()

    def __array__(self, dtype=None, copy=None):
        # numpy >= 2 passes copy: True must not hand out our memory (np.array(t) is a copy),
        # False must not copy (np.asarray(t, copy=False)), None copies only to convert.
        a = self._host()
        if dtype is not None and np.dtype(dtype) != a.dtype:
            if copy is False:
                raise ValueError(f"can't convert a {self.dtype} tensor to numpy dtype {np.dtype(dtype)} without a copy")
            return a.astype(dtype)
        if copy:
            return a.copy()
        if copy is False and self.device.type != "cpu":
            raise ValueError(f"can't give a {self.device} tensor's memory to numpy without a copy; use .cpu()")
        return a

    def tolist(self):
        """The elements as (nested) Python numbers."""
        a = self._host()
        if self.dtype in (D.bfloat16, D.float16):
            a = a.astype(np.float32)
        return a.tolist()

    def item(self):
        """The value of a one-element tensor as a Python number."""
        n = self.numel()
        if n != 1:
            raise RuntimeError(f"a Tensor with {n} elements cannot be converted to Scalar")
        a = self._host().reshape(())
        if self.dtype in (D.bfloat16, D.float16):
            return float(a.astype(np.float32))
        return a.item()

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __bool__(self) -> bool:
        n = self.numel()
        if n != 1:
            raise RuntimeError(f"Boolean value of Tensor with {n} elements is ambiguous")
        return bool(self.item())

    def __index__(self) -> int:
        if self.dtype.category != 1 or self.numel() != 1:
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self.item())

    def __len__(self) -> int:
        if not self._shape:
            raise TypeError("len() of a 0-d tensor")
        return self._shape[0]

    def __iter__(self):
        if not self._shape:
            raise TypeError("iteration over a 0-d tensor")
        return iter(self.unbind(0))

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        from ._printing import format_tensor
        a = self._host()
        kind = "bool" if self.dtype is D.bool_ else ("float" if self.dtype.is_floating_point else "int")
        if self.dtype in (D.bfloat16, D.float16):
            a = a.astype(np.float32)
        implied = self.dtype in (D.get_default_dtype(), D.int64, D.bool_)
        extras = []
        if self.device.type != "cpu":
            extras.append(f"device='{self.device}'")
        if self.grad_fn is not None:
            extras.append(f"grad_fn=<{type(self.grad_fn).__name__}>")
        elif self._requires_grad:
            extras.append("requires_grad=True")
        return format_tensor(a, kind=kind, dtype_suffix=None if implied else repr(self.dtype), extras=extras)

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        if self.ndim == 0 and spec:
            return format(self.item(), spec)
        return repr(self)

    def __reduce_ex__(self, protocol):
        # Pickling (DataLoader workers, multiprocessing) copies the data through numpy.
        from .ops.creation import _from_host
        return (_from_host, (np.array(self._host()), self.dtype, str(self.device), self._requires_grad))


# set by tensorkit.autograd: starts recording the graph (called on the first requires_grad=True, so
# that programs that never ask for gradients never pay for the recording observer)
_autograd_install = None


def _wrap_dim(dim: int, ndim: int, op: str = "") -> int:
    """A possibly negative dim as an index in [0, ndim); 0-d tensors accept -1 and 0."""
    if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool):
        raise TypeError(f"{op}: dim must be an int, got {type(dim).__name__}")
    n = max(ndim, 1)
    if not -n <= dim < n:
        raise IndexError(f"{op}: dimension out of range (expected to be in range of [{-n}, {n - 1}], but got {dim})")
    return dim + n if dim < 0 else dim
