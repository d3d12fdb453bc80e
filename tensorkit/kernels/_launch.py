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


# triton.knobs.runtime, once Triton is loaded: its launch hooks (a profiler's) are always-present
# HookChains in Triton >= 3.4, empty unless one is added; None in older versions when unset
_knobs = None


_int_sigs: dict = {}        # int argument -> its specialization (sizes and strides repeat)


def _signature(args: tuple) -> tuple:
    """What Triton specializes a kernel on, for each argument, and the argument as the
    launcher takes it (pointers as integers). At least as fine as Triton's own key: pointer
    dtype and 16-byte alignment; integer width class, == 1 and divisibility by 16."""
    sig, raw = [], list(args)
    add = sig.append
    for i, a in enumerate(args):
        if type(a) is Tensor or isinstance(a, Tensor):
            p = raw[i] = a._storage.data.ptr + a._offset * a.dtype.itemsize      # a.data_ptr(), inlined
            add((a.dtype, p & 15 == 0))
        elif type(a) is int or isinstance(a, np.integer):
            if type(a) is not int:
                a = raw[i] = int(a)
            s = _int_sigs.get(a)
            if s is None:
                if len(_int_sigs) >= 65536:
                    _int_sigs.clear()
                width = 0 if -2 ** 31 <= a < 2 ** 31 else (1 if -2 ** 63 <= a < 2 ** 63 else 2)
                s = _int_sigs[a] = (width, a == 1, a & 15 == 0)
            add(s)
        elif type(a) is float or type(a) is bool or a is None:
            add((type(a), a) if type(a) is bool or a is None else float)
        elif type(a) is tuple:                  # Triton specializes each element; the launcher nests
            inner, values = _signature(a)
            if inner is None:
                return None, None
            add((tuple, inner))
            raw[i] = tuple(values)
        else:
            return None, None                  # something else: Triton's own path decides
    return tuple(sig), raw


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
    # The compiled kernels of ``fn`` live on ``fn`` (hashing a JITFunction costs a Python call),
    # keyed per thread (Triton's own path, taken first in each thread, makes the device's
    # context current), device, argument signature, constexprs and options.
    compiled = fn.__dict__.get("_tk_compiled")
    if compiled is None:
        compiled = fn._tk_compiled = {}
    key = (_thread_id(), device, sig, tuple(constexprs.values()), tuple(options.items()) if options else ())
    entry = compiled.get(key) if sig is not None else None
    if entry is not None:
        enter, leave = _knobs.launch_enter_hook, _knobs.launch_exit_hook
        if (enter is not None and getattr(enter, "calls", True)) or (leave is not None and getattr(leave, "calls", True)):
            entry = None                        # a profiler's hooks: Triton's own path calls them
    if entry is None:
        prepare()
        kernel = fn[grid](*args, **constexprs, **options)
        if sig is not None and list(constexprs) == fn.arg_names[len(args):]:
            # what Triton's launch reads from the compiled kernel (``run`` is a property)
            compiled[key] = (kernel.run, kernel.function, kernel.packed_metadata)
            if _knobs is None:
                from triton import knobs
                _knobs = knobs.runtime
        return
    run, function, metadata = entry
    n = len(grid)
    run(grid[0], grid[1] if n > 1 else 1, grid[2] if n > 2 else 1, cuda._stream_handle(device), function, metadata,
        None, None, None, *raw, *constexprs.values())
