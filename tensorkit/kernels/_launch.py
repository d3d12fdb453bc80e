"""What every Triton kernel module needs to launch: the driver, and tensors as kernel arguments.

``prepare()`` before a launch makes tensorkit's Triton driver the active one (a no-op after
the first call and in emulated mode). ``pointer(t)`` is what a kernel takes for tensor ``t``:
on a GPU the tensor itself (Triton reads ``data_ptr()`` and ``dtype``); on the emulated
device a ``HostPointer`` the interpreter reads in place. Pass ``offset`` (in elements) to
point at another element of the same storage.
"""
from __future__ import annotations

from .._tensor import Tensor
from . import _driver


def prepare() -> None:
    """Install tensorkit's Triton driver before the first launch (launches then go on
    ``tk.cuda.current_stream()``)."""
    if _driver._installed is None:
        _driver.ensure_driver()


def pointer(t: Tensor, offset: int | None = None):
    """Tensor ``t`` (at element ``offset`` of its storage, default its own) as a kernel argument."""
    offset = t._offset if offset is None else offset
    from ..cuda import EMULATED
    if EMULATED:
        from ._interpret import HostPointer
        return HostPointer(t._storage.data, offset, t.dtype)
    return t if offset == t._offset else Tensor._make(t._storage, offset, (1,), (1,), t.dtype)
