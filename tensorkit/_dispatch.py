"""The dispatcher: (op, device type, dtype) -> kernel, and the observers of every op call.

Every primitive in ``ops/`` finds its kernel here; nothing else calls kernels. Backends
(``cpu/``, ``kernels/``) register kernels with the dtypes they support; a lookup of an
undeclared combination raises NotImplementedError naming all three. There is no silent
fallback to another dtype or device.

``observers`` are called after each primitive runs (autograd records its graph there, the
JIT's tracer records its trace); the list is empty unless one is active.
"""
from __future__ import annotations

from typing import Callable

from .dtypes import DType

KERNELS: dict[tuple[str, str, DType], Callable] = {}
observers: list[Callable] = []


def register(op: str, device_type: str, dtypes) -> Callable:
    """Decorator: register ``fn`` as the kernel of ``op`` on ``device_type`` for each dtype."""
    def deco(fn: Callable) -> Callable:
        for d in dtypes:
            KERNELS[(op, device_type, d)] = fn
        return fn
    return deco


def lookup(op: str, device_type: str, dtype: DType) -> Callable:
    """The kernel for (op, device type, dtype); NotImplementedError names what is missing."""
    fn = KERNELS.get((op, device_type, dtype))
    if fn is None:
        have = supported_dtypes(op, device_type)
        if not have and device_type != "cpu" and not any(k[1] == device_type for k in KERNELS):
            raise NotImplementedError(f"{op}: no kernels are registered for device type '{device_type}' "
                                      f"(is its backend available?)")
        raise NotImplementedError(
            f"{op}: not implemented for dtype {dtype} on device type '{device_type}'"
            + (f"; supported dtypes: {', '.join(d.name for d in have)}" if have else ""))
    return fn


def supported_dtypes(op: str, device_type: str) -> list[DType]:
    """The dtypes with a kernel for ``op`` on ``device_type``."""
    return [d for (o, dev, d) in KERNELS if o == op and dev == device_type]


# device type -> launcher(program, args, outs, numel) running a pointwise Program there;
# registered by the backends (cpu/pointwise.py, kernels/pointwise.py).
pointwise_launchers: dict[str, Callable] = {}


def pointwise_launcher(device_type: str) -> Callable:
    try:
        return pointwise_launchers[device_type]
    except KeyError:
        raise NotImplementedError(f"no pointwise code generator is registered for device type '{device_type}' "
                                  f"(is its backend available?)") from None


def notify(op: str, inputs: tuple, outputs: tuple, params: dict) -> None:
    """Tell the observers (autograd, tracer) that ``op`` ran."""
    for fn in observers:
        fn(op, inputs, outputs, params)
