"""What every Triton kernel module needs to launch: the driver, tensors as kernel arguments,
and a launch path without Triton's per-call bookkeeping.

``prepare()`` before a launch makes tensorkit's Triton driver the active one (a no-op after
the first call and in emulated mode). ``pointer(t)`` is what a kernel takes for tensor ``t``:
on a GPU the tensor itself (Triton reads ``data_ptr()`` and ``dtype``); on the emulated
device a ``HostPointer`` the interpreter reads in place. Pass ``offset`` (in elements) to
point at another element of the same storage.

``launch(fn, grid, *args, **constexprs)`` is ``fn[grid](*args, **constexprs)``, fast.
Triton's ``JITFunction.run`` binds the arguments, computes their specialization and a
cache key, and checks globals on every call (~20 us); an eager op on a tiny tensor would
spend most of its time there. ``launch`` keeps the compiled kernel of each specialization
it has seen and calls its launcher directly, the same call ``JITFunction.run`` makes.
"""
from __future__ import annotations

import functools
import importlib
import threading

import numpy as np

from .. import cuda
from .._tensor import Tensor
from . import _driver


def prepare() -> None:
    """Install tensorkit's Triton driver before the first launch (launches then go on
    ``tk.cuda.current_stream()``)."""
    if _driver._installed is None:
        _driver.ensure_driver()


@functools.cache
def triton_source(family: str):
    """``tensorkit.kernels.src.<family>``, the family's ``@triton.jit`` functions (importing it
    imports Triton: call this at the first launch, not at import; later calls return the same
    module). On the emulated device its helpers become plain calls
    (``_interpret.call_helpers_directly``: the interpreter would re-patch ``triton.language``
    at each nested call)."""
    module = importlib.import_module(f"{__package__}.src.{family}")
    if cuda.EMULATED:
        from ._interpret import call_helpers_directly
        call_helpers_directly(module)
    return module


def pointer(t: Tensor, offset: int | None = None):
    """Tensor ``t`` (at element ``offset`` of its storage, default its own) as a kernel argument."""
    offset = t._offset if offset is None else offset
    if cuda.EMULATED:
        from ._interpret import HostPointer
        return HostPointer(t._storage.data, offset, t.dtype)
    return t if offset == t._offset else Tensor._make(t._storage, offset, (1,), (1,), t.dtype)


_compiled: dict = {}        # (fn, thread, device, argument signature, constexprs) -> CompiledKernel
_knobs = None               # triton.knobs.runtime (launch hooks), once Triton is loaded


def _signature(args: tuple) -> tuple:
    """What Triton specializes a kernel on, for each argument, and the argument as the
    launcher takes it (pointers as integers). At least as fine as Triton's own key: pointer
    dtype and 16-byte alignment; integer width class, == 1 and divisibility by 16."""
    sig, raw = [], []
    for a in args:
        if type(a) is Tensor or isinstance(a, Tensor):
            p = a.data_ptr()
            sig.append((a.dtype, p & 15 == 0))
            raw.append(p)
        elif type(a) is int or isinstance(a, np.integer):
            a = int(a)
            width = 0 if -2 ** 31 <= a < 2 ** 31 else (1 if -2 ** 63 <= a < 2 ** 63 else 2)
            sig.append((width, a == 1, a & 15 == 0))
            raw.append(a)
        elif type(a) is float or type(a) is bool or a is None:
            sig.append((type(a), a) if type(a) is bool or a is None else float)
            raw.append(a)
        elif type(a) is tuple:                  # Triton specializes each element; the launcher nests
            inner, values = _signature(a)
            if inner is None:
                return None, None
            sig.append((tuple, inner))
            raw.append(tuple(values))
        else:
            return None, None                  # something else: Triton's own path decides
    return tuple(sig), raw


def _hooked(hook) -> bool:
    """Whether a launch hook (a profiler's) is set: Triton >= 3.4 keeps an always-present
    ``HookChain`` that is empty unless one is added; older versions keep None."""
    return hook is not None and bool(getattr(hook, "calls", True))


_NO_OPTIONS: dict = {}
_thread_id = threading.get_ident


def launch(fn, grid: tuple, *args, options: dict | None = None, **constexprs) -> None:
    """``fn[grid](*args, **constexprs, **options)`` on the current device and stream. ``args``
    are the kernel's leading parameters, ``constexprs`` all the rest, by name; ``options``
    Triton's compile options (``num_warps``, ``num_stages``)."""
    if options is None:
        options = _NO_OPTIONS
    if cuda.EMULATED:
        fn[grid](*args, **constexprs, **options)
        return
    global _knobs
    sig, raw = _signature(args)
    device = cuda._current
    # per thread: Triton's own path (taken first in each thread) makes the device's context current
    key = (fn, _thread_id(), device, sig, tuple(constexprs.values()), tuple(options.items()) if options else ())
    kernel = _compiled.get(key) if sig is not None else None
    if kernel is None or _hooked(_knobs.launch_enter_hook) or _hooked(_knobs.launch_exit_hook):
        prepare()
        kernel = fn[grid](*args, **constexprs, **options)
        if sig is not None and list(constexprs) == fn.arg_names[len(args):]:
            _compiled[key] = kernel
            if _knobs is None:
                from triton import knobs
                _knobs = knobs.runtime
        return
    g1 = grid[1] if len(grid) > 1 else 1
    g2 = grid[2] if len(grid) > 2 else 1
    kernel.run(grid[0], g1, g2, cuda._stream_handle(device), kernel.function, kernel.packed_metadata,
               None, None, None, *raw, *constexprs.values())
