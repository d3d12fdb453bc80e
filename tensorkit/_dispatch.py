"""The dispatcher: (op, device type, dtype) -> kernel, and the observers of every op call.

Every primitive in ``ops/`` finds its kernel here; nothing else calls kernels. Backends
(``cpu/``, ``kernels/``) register kernels with the dtypes they support; a lookup of an
undeclared combination raises NotImplementedError naming all three. There is no silent
fallback to another dtype or device.

``observers`` are called after each primitive runs (autograd records its graph there, the
JIT's tracer records its trace); the list is empty unless one is active. ``write_observers``
are called before an op writes into an existing tensor (in-place ops, ``out=``), so autograd
can refuse the write or keep the value it overwrites.

``VJPS`` holds each primitive's backward (vector-Jacobian product), registered next to the
op's definition in ``ops/`` with ``defvjp``; it lives here, below autograd, so ops never
import autograd. A VJP is written with tensorkit ops, so it runs on every device and is
itself differentiable.
"""
from __future__ import annotations

from typing import Callable

from .dtypes import DType

KERNELS: dict[tuple[str, str, DType], Callable] = {}
observers: list[Callable] = []
write_observers: list[Callable] = []


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


def notify_write(op: str, dest, inputs: tuple) -> None:
    """Tell the write observers (autograd) that ``op`` is about to write into ``dest``."""
    for fn in write_observers:
        fn(op, dest, inputs)


class VJP:
    """The backward of one primitive: ``fn(g, node)`` returns one gradient (or None) per input.

    ``node`` gives ``node.inputs`` (the inputs; tensors the VJP did not ask to save are None),
    ``node.outputs`` (the outputs, when saved), ``node.params`` (what the op passed to
    ``notify``) and ``node.shapes`` (each input's shape, or None for a number). ``g`` is the
    gradient of the first output. ``save_inputs`` / ``save_outputs``: what the node keeps for
    backward (only that is saved, and checked against in-place changes). ``view``: the op's
    output shares its input's memory; a slicing view's VJP may return an ``ops.view.SliceGrad``
    (the values and their region of the input) instead of a full-size gradient, which the
    engine adds into one buffer per input. ``pointwise``: ``fn(g, *inputs, out)`` instead, and the
    gradients may have the broadcast shape (the engine sums them back to each input's shape).
    ``multi_output``: each output has a gradient of its own: ``fn(grads, node)``, ``grads[k]``
    the gradient of output k or None (the list may be shorter than the outputs). Otherwise
    every output's gradient is summed into the first's.
    """

    __slots__ = ("fn", "save_inputs", "save_outputs", "view", "pointwise", "multi_output")

    def __init__(self, fn, save_inputs=True, save_outputs=False, view=False, pointwise=False, multi_output=False):
        self.fn, self.save_inputs, self.save_outputs = fn, save_inputs, save_outputs
        self.view, self.pointwise, self.multi_output = view, pointwise, multi_output


VJPS: dict[str, VJP] = {}


def defvjp(op: str, *, inputs: bool = True, outputs: bool = False, view: bool = False,
           multi_output: bool = False) -> Callable:
    """Decorator: register ``fn(g, node)`` (``fn(grads, node)`` with ``multi_output``) as the VJP
    of primitive ``op`` (see ``VJP``)."""
    def deco(fn: Callable) -> Callable:
        VJPS[op] = VJP(fn, inputs, outputs, view, multi_output=multi_output)
        return fn
    return deco
