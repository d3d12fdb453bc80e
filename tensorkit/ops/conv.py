"""Convolution primitives: ``conv2d``, its input-gradient and its weight-gradient.

Three primitives, each with a meta rule, a kernel per device and a VJP written with the
other two (so convolutions are differentiable any number of times):

* ``conv2d(x, w)``:                        y[n, o, p, q] = sum_{c, r, s} x[n, c, p*sh - pt + r*dh, q*sw - pl + s*dw] * w[o, c, r, s]
* ``conv2d_input_grad(g, w, x_shape)``:    the adjoint of ``conv2d`` in ``x``: dx = d<g, conv2d(x, w)>/dx
* ``conv2d_weight_grad(x, g, w_shape)``:   the adjoint in ``w``:                 dw = d<g, conv2d(x, w)>/dw

(channel sums within a group: input channel ``c`` of group ``k`` meets output channels
``k*O/groups ...``). All three take the same geometry (``ConvGeometry``: stride, padding as
(top, bottom, left, right), dilation, groups); padding outside the input reads zeros.

``conv1d`` is ``conv2d`` over a height of 1; ``conv_transpose2d`` is ``conv2d_input_grad``
(the transposed convolution *is* the convolution's input gradient; ``output_padding`` picks
among the input sizes the stride maps to the same output size); bias is a broadcast add.
Meta rules raise PyTorch's errors, naming the shapes involved.
"""
from __future__ import annotations

import operator
from typing import NamedTuple

from .. import _dispatch
from .._tensor import Tensor
from ..amp.autocast import autocast_to
from .creation import new_tensor


class ConvGeometry(NamedTuple):
    """How a kernel slides over the input. ``padding``: zeros added (top, bottom, left, right);
    only the top/left pads move the window, bottom/right ones only make the output taller/wider."""

    stride: tuple
    padding: tuple
    dilation: tuple
    groups: int


def _tuple(v, n: int, name: str, op: str) -> tuple:
    """``v`` (an int or a sequence of ``n`` ints) as an ``n``-tuple of ints."""
    if isinstance(v, (tuple, list)):
        if len(v) == 1:
            v = tuple(v) * n
        if len(v) != n:
            raise RuntimeError(f"{op}: expected {name} to be a single integer value or a list of {n} values to "
                               f"match the convolution dimensions, but got {name}={list(v)}")
        return tuple(operator.index(e) for e in v)
    return (operator.index(v),) * n


def _check_operands(op: str, x: Tensor, w: Tensor, bias: Tensor | None = None) -> None:
    for name, t in (("input", x), ("weight", w)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}(): argument '{name}' must be a Tensor, not {type(t).__name__}")
    if bias is not None and not isinstance(bias, Tensor):
        raise TypeError(f"{op}(): argument 'bias' must be a Tensor or None, not {type(bias).__name__}")
    for name, t in (("weight", w), ("bias", bias)):
        if t is None:
            continue
        if t.dtype is not x.dtype:
            raise RuntimeError(f"{op}: expected input and {name} to have the same dtype, but got input {x.dtype} "
                               f"and {name} {t.dtype}")
        if t.device != x.device:
            raise RuntimeError(f"{op}: expected input and {name} to be on the same device, but got input on "
                               f"{x.device} and {name} on {t.device}")


def _geometry(op: str, x_shape, w_shape, stride, padding, dilation, groups, transposed=False) -> ConvGeometry:
    """Validate a 2-D convolution's arguments (PyTorch's errors) and normalise them."""
    stride = _tuple(stride, 2, "stride", op)
    dilation = _tuple(dilation, 2, "dilation", op)
    groups = operator.index(groups)
    if any(s <= 0 for s in stride):
        raise RuntimeError(f"{op}: non-positive stride is not supported (got stride={list(stride)})")
    if any(d <= 0 for d in dilation):
        raise RuntimeError(f"{op}: dilation should be greater than zero (got dilation={list(dilation)})")
    if groups <= 0:
        raise RuntimeError(f"{op}: non-positive groups is not supported (got groups={groups})")
    k = w_shape[2:]
    if isinstance(padding, str):
        if padding == "valid":
            pads = (0, 0, 0, 0)
        elif padding == "same":
            if any(s != 1 for s in stride):
                raise RuntimeError(f"{op}: padding='same' is not supported for strided convolutions")
            pads = ()
            for d, kk in zip(dilation, k):          # an odd total puts the extra zero after (PyTorch)
                total = d * (kk - 1)
                pads += (total // 2, total - total // 2)
        else:
            raise ValueError(f"{op}: invalid padding string {padding!r}, should be one of {{'valid', 'same'}}")
    else:
        ph, pw = _tuple(padding, 2, "padding", op)
        if ph < 0 or pw < 0:
            raise RuntimeError(f"{op}: negative padding is not supported (got padding={[ph, pw]})")
        pads = (ph, ph, pw, pw)
    if w_shape[0] % groups:
        raise RuntimeError(f"Given groups={groups}, expected weight to be divisible by {groups} at dimension 0, "
                           f"but got weight of size {list(w_shape)} instead")
    return ConvGeometry(stride, pads, dilation, groups)


def _out_size(op: str, x_shape, w_shape, geom: ConvGeometry) -> tuple:
    """(N, O, Ho, Wo) of ``conv2d(x, w)``; PyTorch's error when the kernel does not fit."""
    pt, pb, pl, pr = geom.padding
    padded = (x_shape[2] + pt + pb, x_shape[3] + pl + pr)
    span = tuple(d * (k - 1) + 1 for d, k in zip(geom.dilation, w_shape[2:]))
    if any(p < s for p, s in zip(padded, span)):
        raise RuntimeError(f"{op}: Calculated padded input size per channel: ({padded[0]} x {padded[1]}). Kernel "
                           f"size: ({span[0]} x {span[1]}). Kernel size can't be greater than actual input size")
    return (x_shape[0], w_shape[0]) + tuple((p - s) // st + 1 for p, s, st in zip(padded, span, geom.stride))


def _check_channels(x_shape, w_shape, groups: int, shown_x=None) -> None:
    if x_shape[1] != w_shape[1] * groups:
        raise RuntimeError(f"Given groups={groups}, weight of size {list(w_shape)}, expected input"
                           f"{list(shown_x or x_shape)} to have {w_shape[1] * groups} channels, but got "
                           f"{x_shape[1]} channels instead")


def _kernel(op: str, t: Tensor):
    return _dispatch.lookup(op, t._storage.device.type, t.dtype)


# ---- the primitives -----------------------------------------------------------------------------------------
def conv2d_primitive(x: Tensor, w: Tensor, geom: ConvGeometry) -> Tensor:
    """``conv2d`` of a 4-D ``x`` (N, C, H, W) and ``w`` (O, C / groups, kh, kw), no bias."""
    out = new_tensor(_out_size("conv2d", x._shape, w._shape, geom), x.dtype, x._storage.device)
    _kernel("conv2d", x)(x, w, out, geom)
    if _dispatch.observers:
        _dispatch.notify("conv2d", (x, w), (out,), {"geometry": geom})
    return out


def conv2d_input_grad(grad_output: Tensor, weight: Tensor, input_size, geom: ConvGeometry) -> Tensor:
    """The gradient of ``conv2d(x, weight)`` with respect to ``x`` (of shape ``input_size``),
    given the gradient ``grad_output`` of its result; also the transposed convolution."""
    shape = tuple(input_size)
    expect = _out_size("conv2d_input_grad", shape, weight._shape, geom)
    if tuple(grad_output._shape) != expect:
        raise RuntimeError(f"conv2d_input_grad: grad_output of size {list(grad_output.shape)} does not match "
                           f"input size {list(shape)} and weight {list(weight.shape)}: expected {list(expect)}")
    out = new_tensor(shape, grad_output.dtype, grad_output._storage.device)
    _kernel("conv2d_input_grad", grad_output)(grad_output, weight, out, geom)
    if _dispatch.observers:
        _dispatch.notify("conv2d_input_grad", (grad_output, weight), (out,), {"geometry": geom, "input_size": shape})
    return out


def conv2d_weight_grad(input: Tensor, grad_output: Tensor, weight_size, geom: ConvGeometry) -> Tensor:
    """The gradient of ``conv2d(input, w)`` with respect to ``w`` (of shape ``weight_size``),
    given the gradient ``grad_output`` of its result."""
    shape = tuple(weight_size)
    expect = _out_size("conv2d_weight_grad", input._shape, shape, geom)
    if tuple(grad_output._shape) != expect:
        raise RuntimeError(f"conv2d_weight_grad: grad_output of size {list(grad_output.shape)} does not match "
                           f"input {list(input.shape)} and weight size {list(shape)}: expected {list(expect)}")
    out = new_tensor(shape, input.dtype, input._storage.device)
    _kernel("conv2d_weight_grad", input)(input, grad_output, out, geom)
    if _dispatch.observers:
        _dispatch.notify("conv2d_weight_grad", (input, grad_output), (out,), {"geometry": geom, "weight_size": shape})
    return out


@_dispatch.defvjp("conv2d")
def _conv2d_vjp(g, node):
    x, w = node.inputs
    geom = node.params["geometry"]
    needs = node.needs
    return (conv2d_input_grad(g, w, x.shape, geom) if needs[0] else None,
            conv2d_weight_grad(x, g, w.shape, geom) if needs[1] else None)


@_dispatch.defvjp("conv2d_input_grad")
def _conv2d_input_grad_vjp(h, node):
    # out = dx(g, w) is bilinear: d<h, out>/dg = conv2d(h, w); d<h, out>/dw = dw(h, g)
    g, w = node.inputs
    geom = node.params["geometry"]
    needs = node.needs
    return (conv2d_primitive(h, w, geom) if needs[0] else None,
            conv2d_weight_grad(h, g, w.shape, geom) if needs[1] else None)


@_dispatch.defvjp("conv2d_weight_grad")
def _conv2d_weight_grad_vjp(h, node):
    # out = dw(x, g): d<h, out>/dx = dx(g, h); d<h, out>/dg = conv2d(x, h)
    x, g = node.inputs
    geom = node.params["geometry"]
    needs = node.needs
    return (conv2d_input_grad(g, h, x.shape, geom) if needs[0] else None,
            conv2d_primitive(x, h, geom) if needs[1] else None)


# ---- the public functions (composites) -------------------------------------------------------------------------
def _add_bias(y: Tensor, bias: Tensor | None, w_shape, op: str, channels: int) -> Tensor:
    if bias is None:
        return y
    if bias.ndim != 1 or bias.shape[0] != channels:
        raise RuntimeError(f"{op}: Given weight of size {list(w_shape)}, expected bias to be 1-dimensional with "
                           f"{channels} elements, but got bias of size {list(bias.shape)} instead")
    return y + bias.view(channels, *([1] * (y.ndim - 2)))


def _batched(op: str, x: Tensor, w: Tensor, dims: int) -> tuple[Tensor, bool]:
    """(x with a batch dim, whether one was added); PyTorch's rank errors."""
    if x.ndim not in (dims + 1, dims + 2):
        raise RuntimeError(f"Expected {dims + 1}D (unbatched) or {dims + 2}D (batched) input to {op}, but got input "
                           f"of size: {list(x.shape)}")
    if w.ndim != dims + 2:
        raise RuntimeError(f"{op}: Expected {dims + 2}-dimensional weight for {dims + 2}-dimensional input "
                           f"{list(x.shape if x.ndim == dims + 2 else (1, *x.shape))}, but got {w.ndim}-dimensional "
                           f"weight of size {list(w.shape)}")
    return (x, False) if x.ndim == dims + 2 else (x.unsqueeze(0), True)


@autocast_to("lower")
def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0, dilation=1,
           groups: int = 1) -> Tensor:
    """2-D convolution (cross-correlation, as in PyTorch) of ``input`` (N, C, H, W) or (C, H, W)
    with ``weight`` (O, C / groups, kh, kw), plus ``bias`` (O,).

    ``padding``: an int, a pair, ``'valid'`` (none) or ``'same'`` (output as large as the
    input; stride 1 only; an odd total pad puts the extra zero on the bottom/right, as
    PyTorch does).

    Example::

        >>> x = tk.randn(2, 3, 8, 8); w = tk.randn(4, 3, 3, 3)
        >>> tk.nn.functional.conv2d(x, w, padding=1).shape
        tk.Size([2, 4, 8, 8])
    """
    _check_operands("conv2d", input, weight, bias)
    x, unbatched = _batched("conv2d", input, weight, 2)
    geom = _geometry("conv2d", x.shape, weight.shape, stride, padding, dilation, groups)
    _check_channels(x.shape, weight.shape, geom.groups, input.shape)
    y = _add_bias(conv2d_primitive(x, weight, geom), bias, weight.shape, "conv2d", weight.shape[0])
    return y.squeeze(0) if unbatched else y


@autocast_to("lower")
def conv1d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0, dilation=1,
           groups: int = 1) -> Tensor:
    """1-D convolution of ``input`` (N, C, L) or (C, L) with ``weight`` (O, C / groups, k): ``conv2d``
    over a height of 1."""
    _check_operands("conv1d", input, weight, bias)
    x, unbatched = _batched("conv1d", input, weight, 1)
    pad = padding if isinstance(padding, str) else (0, _tuple(padding, 1, "padding", "conv1d")[0])
    y = conv2d(x.unsqueeze(2), weight.unsqueeze(2), bias, (1, _tuple(stride, 1, "stride", "conv1d")[0]), pad,
               (1, _tuple(dilation, 1, "dilation", "conv1d")[0]), groups).squeeze(2)
    return y.squeeze(0) if unbatched else y


@autocast_to("lower")
def conv_transpose2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0,
                     output_padding=0, groups: int = 1, dilation=1) -> Tensor:
    """2-D transposed convolution ("deconvolution") of ``input`` (N, C, H, W) with ``weight``
    (C, O / groups, kh, kw): the gradient of ``conv2d`` with respect to its input. The output is
    ``(H - 1) * stride - 2 * padding + dilation * (kh - 1) + output_padding + 1`` high (and so
    wide); ``output_padding`` (< stride or < dilation) adds rows at the bottom/right."""
    op = "conv_transpose2d"
    _check_operands(op, input, weight, bias)
    x, unbatched = _batched(op, input, weight, 2)
    if isinstance(padding, str):
        raise ValueError(f"{op}: padding must be an int or a tuple of ints, not {padding!r}")
    geom = _geometry(op, x.shape, weight.shape, stride, padding, dilation, groups)
    opad = _tuple(output_padding, 2, "output_padding", op)
    for o, s, d in zip(opad, geom.stride, geom.dilation):
        if o < 0 or (o >= s and o >= d):
            raise RuntimeError(f"{op}: output padding must be smaller than either stride or dilation, but got "
                               f"output_padding={list(opad)}, stride={list(geom.stride)}, "
                               f"dilation={list(geom.dilation)}")
    if x.shape[1] != weight.shape[0]:
        raise RuntimeError(f"Given transposed=1, weight of size {list(weight.shape)}, expected input{list(input.shape)} "
                           f"to have {weight.shape[0]} channels, but got {x.shape[1]} channels instead")
    pt, _, pl, _ = geom.padding
    size = tuple((n - 1) * s - 2 * p + d * (k - 1) + o + 1
                 for n, s, p, d, k, o in zip(x.shape[2:], geom.stride, (pt, pl), geom.dilation, weight.shape[2:], opad))
    if any(n <= 0 for n in size):
        raise RuntimeError(f"{op}: the output size {list(size)} of input {list(input.shape)} is not positive")
    # output_padding rows belong to no window: a bottom/right padding of (padding - output_padding)
    # makes conv2d of the result exactly as large as ``input`` again (the VJPs rely on it)
    geom = geom._replace(padding=(pt, pt - opad[0], pl, pl - opad[1]))
    channels = weight.shape[1] * geom.groups
    y = conv2d_input_grad(x, weight, (x.shape[0], channels) + size, geom)
    y = _add_bias(y, bias, weight.shape, op, channels)
    return y.squeeze(0) if unbatched else y


def _grad_geometry(op: str, x_shape, w_shape, grad_output: Tensor, stride, padding, dilation,
                   groups) -> ConvGeometry:
    """The checked geometry of ``torch.nn.grad``'s conv2d_weight / conv2d_input: the input's and
    weight's shapes (one of them given as a size) and ``grad_output`` 4-D and consistent."""
    if len(x_shape) != 4 or len(w_shape) != 4 or grad_output.ndim != 4:
        raise RuntimeError(f"{op}: expected a 4-D input, weight and grad_output, got {list(x_shape)}, "
                           f"{list(w_shape)} and {list(grad_output.shape)}")
    geom = _geometry(op, x_shape, w_shape, stride, padding, dilation, groups)
    _check_channels(x_shape, w_shape, geom.groups)
    return geom


def conv2d_weight(input: Tensor, weight_size, grad_output: Tensor, stride=1, padding=0, dilation=1,
                  groups: int = 1) -> Tensor:
    """The gradient of ``conv2d(input, w, ...)`` with respect to ``w`` (of ``weight_size``), given
    the gradient ``grad_output`` of its result (``torch.nn.grad.conv2d_weight``)."""
    _check_operands("conv2d_weight", input, grad_output)
    geom = _grad_geometry("conv2d_weight", input.shape, weight_size, grad_output, stride, padding, dilation, groups)
    return conv2d_weight_grad(input, grad_output, weight_size, geom)


def conv2d_input(input_size, weight: Tensor, grad_output: Tensor, stride=1, padding=0, dilation=1,
                 groups: int = 1) -> Tensor:
    """The gradient of ``conv2d(x, weight, ...)`` with respect to ``x`` (of ``input_size``), given
    the gradient ``grad_output`` of its result (``torch.nn.grad.conv2d_input``)."""
    _check_operands("conv2d_input", grad_output, weight)
    geom = _grad_geometry("conv2d_input", input_size, weight.shape, grad_output, stride, padding, dilation, groups)
    return conv2d_input_grad(grad_output, weight, input_size, geom)
