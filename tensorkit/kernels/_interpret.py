"""Running tensorkit's Triton kernels in Triton's interpreter (the emulated ``cuda`` device).

Triton's interpreter (``TRITON_INTERPRET=1``) runs a kernel with numpy on the host. It
takes tensor arguments the way it takes torch tensors: it copies each argument's storage
"to the host" (``untyped_storage().cpu()``), rebuilds a host view (``new_empty`` +
``set_``), runs the kernel on raw addresses (``data_ptr()``) and copies the storage back
(``copy_``). An emulated device tensor already lives in host memory, so ``HostPointer``
answers those calls without copying: the kernel reads and writes the tensor's numpy buffer
in place.

The interpreter also has no libdevice (its extern calls raise); ``libdevice`` here gives the
functions the generated kernels call, computed with numpy / scipy in the argument's dtype.

Only ``kernels/`` uses this module, and only when the interpreter is on.
"""
from __future__ import annotations

import numpy as np
import scipy.special
import triton.language as tl
from triton.runtime.interpreter import TensorHandle


class _HostStorage:
    """A numpy buffer seen as a torch ``UntypedStorage`` by the interpreter."""

    __slots__ = ("data",)

    def __init__(self, data: np.ndarray):
        self.data = data

    def data_ptr(self) -> int:
        return self.data.ctypes.data

    def cpu(self) -> "_HostStorage":
        return self                      # already host memory: no copy

    def copy_(self, other: "_HostStorage") -> "_HostStorage":
        if other.data is not self.data:
            self.data[:] = other.data
        return self


class HostPointer:
    """A kernel argument pointing at element ``offset`` of a host buffer, typed ``dtype`` (a
    tensorkit dtype: ``str(dtype)`` ends in the Triton type name, e.g. ``tk.float32``)."""

    __slots__ = ("_storage", "_offset", "dtype")

    def __init__(self, data: np.ndarray | None, offset: int, dtype):
        self._storage = None if data is None else _HostStorage(data)
        self._offset = offset
        self.dtype = dtype

    def data_ptr(self) -> int:
        return self._storage.data_ptr() + self._offset * self._storage.data.itemsize

    def untyped_storage(self) -> _HostStorage:
        return self._storage

    def storage_offset(self) -> int:
        return self._offset

    def size(self):
        return (self._storage.data.shape[0] - self._offset,)

    def stride(self):
        return (1,)

    def new_empty(self, *size, device=None) -> "HostPointer":
        return HostPointer(None, 0, self.dtype)

    def set_(self, storage: _HostStorage, offset: int, size, stride) -> "HostPointer":
        self._storage, self._offset = storage, offset
        return self


# ---- libdevice for the interpreter ------------------------------------------------------------------
def _wrap(fn):
    def call(*args, _semantic=None):
        blocks = [a for a in args if isinstance(a.type, tl.block_type)]
        ty = (blocks[0] if blocks else args[0]).type
        dtype = np.dtype(args[0].handle.data.dtype)
        with np.errstate(all="ignore"):
            out = np.asarray(fn(*np.broadcast_arrays(*[a.handle.data for a in args])), dtype=dtype)
        return tl.core.tensor(TensorHandle(out, ty.scalar), ty)
    return call


class _Libdevice:
    """The subset of ``triton.language.extra.libdevice`` the pointwise codegen uses."""


libdevice = _Libdevice()
for _name, _fn in {
    "exp": np.exp, "exp2": np.exp2, "expm1": np.expm1, "log": np.log, "log2": np.log2, "log10": np.log10,
    "log1p": np.log1p, "sin": np.sin, "cos": np.cos, "tan": np.tan, "asin": np.arcsin, "acos": np.arccos,
    "atan": np.arctan, "atan2": np.arctan2, "sinh": np.sinh, "cosh": np.cosh, "tanh": np.tanh,
    "erf": scipy.special.erf, "erfc": scipy.special.erfc, "pow": np.power, "fmod": np.fmod, "trunc": np.trunc, "rint": np.rint,
}.items():
    setattr(libdevice, _name, _wrap(_fn))
del _name, _fn


# ---- nested @triton.jit calls -------------------------------------------------------------------
def call_helpers_directly(module) -> None:
    """Emulated device only: make the module's ``@triton.jit`` helpers plain calls.

    At every call of a ``@triton.jit`` function from a kernel, Triton's interpreter patches
    ``triton.language`` again (~10 ms, most of a small launch). A kernel's launch has already
    patched the language modules its module imports (``tl`` and ``tl.core`` here), which is
    all the module's own helpers and Triton's reductions use. The kernels are untouched; on a
    GPU this does not run (``_launch.triton_source`` calls it on the emulated device only)."""
    try:
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:             # another Triton: leave the helpers as they are (slower, same results)
        return

    class Direct:
        def __init__(self, f):
            self._f, self.fn = f, f.fn          # .fn: what the interpreter's tl.reduce calls

        def __call__(self, *args, **kwargs):
            return self._f.rewrite()(*args, **kwargs)

    for name, f in list(vars(module).items()):
        if name.startswith("_") and isinstance(f, InterpretedFunction) and hasattr(f, "rewrite"):
            setattr(module, name, Direct(f))


# ---- float32 -> bfloat16 rounding -------------------------------------------------------------------
# The interpreter converts float32 to bfloat16 by cutting the low 16 bits (and its round-to-
# nearest-even mode forgets the carry into the exponent); a GPU's conversion rounds to nearest
# even. Converting with ml_dtypes makes emulated bfloat16 results the GPU's, bit for bit.
def _patch_bfloat16_rounding() -> None:
    import ml_dtypes
    from triton.runtime import interpreter

    convert = interpreter._convert_float
    if getattr(convert, "_tensorkit", False):
        return

    def _convert_float(input, input_dtype, output_dtype, rounding_mode):
        if input_dtype == tl.float32 and output_dtype == tl.bfloat16:
            return np.asarray(input, np.float32).astype(ml_dtypes.bfloat16).view(np.uint16)
        return convert(input, input_dtype, output_dtype, rounding_mode)

    _convert_float._tensorkit = True
    interpreter._convert_float = _convert_float


_patch_bfloat16_rounding()
