"""Pooling primitives: ``max_pool2d`` (values and indices), ``avg_pool2d`` and its backward.

A pooling reduces a window of each (n, c) plane per output element. Along each spatial axis
the window of output ``o`` is either *regular* (``kernel`` taps from ``o*stride - padding``,
``dilation`` apart) or *adaptive* (``[floor(o*In/Out), ceil((o+1)*In/Out))``, as PyTorch's
adaptive pools); taps outside the input are skipped. One geometry (``PoolGeometry``) serves
``max_pool2d``, ``max_pool1d``, ``adaptive_max_pool2d``, ``avg_pool2d`` and
``adaptive_avg_pool2d``; kernels compute each window from it (nothing is tabulated).

* ``max_pool2d``: the maximum (NaN wins, as PyTorch) and its index ``h*W + w`` in the plane.
  VJP: the gradient scattered (added) through the indices, with tensorkit ops.
* ``avg_pool2d``: the window sum over a divisor: ``divisor_override``, else the window size,
  counting the zero padding (``count_include_pad``) or not; adaptive windows count their taps.
  VJP: ``avg_pool2d_backward``, a primitive whose VJP is ``avg_pool2d`` again (the pair are
  each other's adjoints), so both are differentiable any number of times.

``adaptive_avg_pool2d`` to 1x1 is a mean (a tuned reduction); the rest are the primitives.
"""
from __future__ import annotations

import operator
from typing import NamedTuple

from .. import _dispatch
from .. import dtypes as D
from .._tensor import Tensor
from .creation import new_tensor, zeros
from .indexing import scatter_add
from .reduction import mean, values_indices


class PoolGeometry(NamedTuple):
    """Windows along height and width: (kernel, stride, padding, dilation) each, or ``adaptive``
    (window bounds from the input and output sizes). ``divisor``: avg's divisor_override (0: none)."""

    h: tuple
    w: tuple
    adaptive: bool = False
    count_include_pad: bool = True
    divisor: int = 0


FLOATS = D.FLOAT_DTYPES


def _ints(v, n: int, name: str, op: str, default=None) -> tuple:
    if v is None:
        v = default
    if isinstance(v, (tuple, list)):
        if len(v) == 1:
            v = tuple(v) * n
        if len(v) != n:
            raise RuntimeError(f"{op}: {name} must either be a single int, or a tuple of {n} ints, got {list(v)}")
        return tuple(operator.index(e) for e in v)
    return (operator.index(v),) * n


def _out_len(n: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    span = d * (k - 1) + 1
    o = (n + 2 * p - span + ((s - 1) if ceil_mode else 0)) // s + 1
    if ceil_mode and (o - 1) * s >= n + p:      # the last window must start inside the input or its left padding
        o -= 1
    return o


def _check_input(op: str, x: Tensor, dims: int = 2) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}(): argument 'input' must be a Tensor, not {type(x).__name__}")
    if x.ndim not in (dims + 1, dims + 2) or any(s == 0 for s in x.shape[-dims - 1:]):
        raise RuntimeError(f"{op}: Expected {dims + 1}D or {dims + 2}D (batch mode) tensor with optional 0 dim "
                           f"batch size for input, but got: {list(x.shape)}")


def _regular(op: str, x: Tensor, kernel_size, stride, padding, dilation, ceil_mode, is_avg: bool) -> tuple:
    """((k, s, p, d) per axis, output (Ho, Wo)) of a regular pooling, with PyTorch's checks."""
    k = _ints(kernel_size, 2, "kernel_size", op)
    s = _ints(stride, 2, "stride", op, default=k) if stride not in (None, (), []) else k
    p = _ints(padding, 2, "padding", op)
    d = _ints(dilation, 2, "dilation", op)
    if any(v <= 0 for v in k + s + d):
        raise RuntimeError(f"{op}: kernel_size, stride and dilation must be greater than zero, but got "
                           f"kernel_size={list(k)}, stride={list(s)}, dilation={list(d)}")
    for kk, pp, dd in zip(k, p, d):
        if pp < 0 or pp > (kk if is_avg else dd * (kk - 1) + 1) // 2:
            what = "kernel size" if is_avg else "effective kernel size"
            raise RuntimeError(f"{op}: pad should be at most half of {what}, but got pad={pp}, kernel_size={kk}"
                               + ("" if is_avg else f" and dilation={dd}"))
    H, W = x.shape[-2:]
    out = (_out_len(H, k[0], s[0], p[0], d[0], ceil_mode), _out_len(W, k[1], s[1], p[1], d[1], ceil_mode))
    if out[0] < 1 or out[1] < 1:
        raise RuntimeError(f"{op}: Given input size: ({x.shape[-3]}x{H}x{W}). Calculated output size: "
                           f"({x.shape[-3]}x{out[0]}x{out[1]}). Output size is too small")
    return tuple(zip(k, s, p, d)), out


def _adaptive_size(op: str, x: Tensor, output_size) -> tuple:
    if isinstance(output_size, (tuple, list)):
        if len(output_size) != 2:
            raise RuntimeError(f"{op}: output_size must be 2, got {list(output_size)}")
        out = tuple(x.shape[-2 + i] if v is None else operator.index(v) for i, v in enumerate(output_size))
    else:
        out = (operator.index(output_size),) * 2
    if any(v < 0 for v in out):
        raise RuntimeError(f"{op}: output_size must be non-negative, got {list(out)}")
    return out


def _planes(x: Tensor) -> tuple[Tensor, bool]:
    return (x, False) if x.ndim == 4 else (x.unsqueeze(0), True)


# ---- the primitives -------------------------------------------------------------------------------------------
def _kernel(op: str, t: Tensor):
    return _dispatch.lookup(op, t._storage.device.type, t.dtype)


def max_pool2d_primitive(x: Tensor, out_hw: tuple, geom: PoolGeometry) -> tuple[Tensor, Tensor]:
    """(maxima, indices) of 4-D ``x`` over the windows of ``geom``."""
    shape = tuple(x.shape[:2]) + tuple(out_hw)
    out = new_tensor(shape, x.dtype, x._storage.device)
    idx = new_tensor(shape, D.int64, x._storage.device)
    _kernel("max_pool2d", x)(x, out, idx, geom)
    if _dispatch.observers:
        _dispatch.notify("max_pool2d", (x,), (out, idx), {"geometry": geom})
    return out, idx


def avg_pool2d_primitive(x: Tensor, out_hw: tuple, geom: PoolGeometry) -> Tensor:
    out = new_tensor(tuple(x.shape[:2]) + tuple(out_hw), x.dtype, x._storage.device)
    _kernel("avg_pool2d", x)(x, out, geom)
    if _dispatch.observers:
        _dispatch.notify("avg_pool2d", (x,), (out,), {"geometry": geom})
    return out


def avg_pool2d_backward(grad_output: Tensor, input_size, geom: PoolGeometry) -> Tensor:
    """The gradient of ``avg_pool2d`` with respect to its input (of ``input_size``): each output's
    gradient, over its divisor, added to every input element of its window."""
    gx = new_tensor(tuple(input_size), grad_output.dtype, grad_output._storage.device)
    _kernel("avg_pool2d_backward", grad_output)(grad_output, gx, geom)
    if _dispatch.observers:
        _dispatch.notify("avg_pool2d_backward", (grad_output,), (gx,), {"geometry": geom, "input_size": tuple(input_size)})
    return gx


@_dispatch.defvjp("max_pool2d", inputs=False, outputs=(1,))
def _max_pool2d_vjp(g, node):
    N, C, H, W = node.shapes[0]
    idx = node.outputs[1]
    flat = zeros((N, C, H * W), dtype=g.dtype, device=g.device)
    return (scatter_add(flat, 2, idx.reshape(N, C, -1), g.reshape(N, C, -1)).view(N, C, H, W),)


@_dispatch.defvjp("avg_pool2d", inputs=False)
def _avg_pool2d_vjp(g, node):
    return (avg_pool2d_backward(g, node.shapes[0], node.params["geometry"]),)


@_dispatch.defvjp("avg_pool2d_backward", inputs=False)
def _avg_pool2d_backward_vjp(h, node):
    return (avg_pool2d_primitive(h, node.shapes[0][2:], node.params["geometry"]),)


# ---- the public functions ---------------------------------------------------------------------------------------
def _finish(r, unbatched: bool, return_indices: bool):
    out, idx = r
    if unbatched:
        out, idx = out.squeeze(0), idx.squeeze(0)
    return values_indices(out, idx) if return_indices else out


def max_pool2d(input: Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False,
               return_indices: bool = False):
    """2-D max pooling over ``input`` (N, C, H, W) or (C, H, W). ``stride`` defaults to
    ``kernel_size``; ``padding`` (at most half the window) is never the maximum; with
    ``return_indices`` also the flat index ``h * W + w`` of each maximum in its plane (what
    ``max_unpool2d`` takes). NaN counts as the maximum, as in PyTorch.

    Example::

        >>> tk.nn.functional.max_pool2d(tk.randn(1, 3, 8, 8), 2).shape
        tk.Size([1, 3, 4, 4])
    """
    _check_input("max_pool2d", input)
    x, unbatched = _planes(input)
    axes, out_hw = _regular("max_pool2d", x, kernel_size, stride, padding, dilation, ceil_mode, False)
    return _finish(max_pool2d_primitive(x, out_hw, PoolGeometry(*axes)), unbatched, return_indices)


def max_pool1d(input: Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False,
               return_indices: bool = False):
    """1-D max pooling over ``input`` (N, C, L) or (C, L): ``max_pool2d`` over a height of 1
    (indices are positions along L)."""
    _check_input("max_pool1d", input, 1)
    one = lambda v, name: None if v is None else (1, _ints(v, 1, name, "max_pool1d")[0])
    r = max_pool2d(input.unsqueeze(-2), one(kernel_size, "kernel_size"), one(stride, "stride") or None,
                   (0, _ints(padding, 1, "padding", "max_pool1d")[0]), one(dilation, "dilation"), ceil_mode, True)
    return _finish((r[0].squeeze(-2), r[1].squeeze(-2)), False, return_indices)


def adaptive_max_pool2d(input: Tensor, output_size, return_indices: bool = False):
    """Max pooling to a fixed ``output_size`` (an int, or a pair where None keeps the input's
    size): output (i, j) covers rows ``[floor(i*H/Ho), ceil((i+1)*H/Ho))`` and likewise columns."""
    _check_input("adaptive_max_pool2d", input)
    x, unbatched = _planes(input)
    out_hw = _adaptive_size("adaptive_max_pool2d", x, output_size)
    geom = PoolGeometry((0, 0, 0, 1), (0, 0, 0, 1), adaptive=True)
    return _finish(max_pool2d_primitive(x, out_hw, geom), unbatched, return_indices)


def avg_pool2d(input: Tensor, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: int | None = None) -> Tensor:
    """2-D average pooling. The divisor is ``divisor_override`` if given, else the window's size:
    counting the zero padding when ``count_include_pad`` (the default), else only the taps
    inside the input. With ``ceil_mode``, windows that hang past the padding count only the
    part inside it (PyTorch's rule)."""
    _check_input("avg_pool2d", input)
    if divisor_override is not None and divisor_override == 0:
        raise RuntimeError("avg_pool2d: divisor must be not zero")
    x, unbatched = _planes(input)
    axes, out_hw = _regular("avg_pool2d", x, kernel_size, stride, padding, 1, ceil_mode, True)
    geom = PoolGeometry(*axes, count_include_pad=bool(count_include_pad), divisor=divisor_override or 0)
    y = avg_pool2d_primitive(x, out_hw, geom)
    return y.squeeze(0) if unbatched else y


def adaptive_avg_pool2d(input: Tensor, output_size) -> Tensor:
    """Average pooling to a fixed ``output_size`` (windows as in ``adaptive_max_pool2d``); to 1x1
    it is the mean over each plane."""
    _check_input("adaptive_avg_pool2d", input)
    x, unbatched = _planes(input)
    out_hw = _adaptive_size("adaptive_avg_pool2d", x, output_size)
    if out_hw == (1, 1):
        y = mean(x, (2, 3), keepdim=True)
    else:
        y = avg_pool2d_primitive(x, out_hw, PoolGeometry((0, 0, 0, 1), (0, 0, 0, 1), adaptive=True))
    return y.squeeze(0) if unbatched else y
