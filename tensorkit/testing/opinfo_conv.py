"""Op-table entries for convolution and pooling (``ops/conv.py``, ``ops/pool.py``), added to
``opinfo.op_db``. References are numpy float64, written from PyTorch's documented definitions
(shifted, strided slices of the padded input per kernel tap), independent of the kernels.

Samples are tiny (batch 2, 3 channels, 5x5): the emulated cuda device runs each in Triton's
interpreter. This module must not import torch.
"""
from __future__ import annotations


import numpy as np

import tensorkit as tk

from .. import dtypes as D
from ..nn import functional as F
from ..ops import conv as _conv
from .opinfo import ErrorInput, OpInfo, SampleInput, make_tensor

# Products of values in [-3, 3] summed over C*kh*kw taps: atol scales with that length.
_DOMAIN = (-3.0, 3.0)


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _pads(padding, k, dilation):
    """((top, bottom), (left, right)) as PyTorch pads for ``padding``."""
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding == "same":
        return tuple((d * (kk - 1) // 2, d * (kk - 1) - d * (kk - 1) // 2) for d, kk in zip(dilation, k))
    return tuple((p, p) for p in _pair(padding))


def _taps(xp, k, stride, dilation, out):
    """(r, s, slice of xp that tap (r, s) meets at every output position)."""
    for r in range(k[0]):
        for s in range(k[1]):
            yield r, s, xp[..., r * dilation[0]: r * dilation[0] + stride[0] * (out[0] - 1) + 1: stride[0],
                           s * dilation[1]: s * dilation[1] + stride[1] * (out[1] - 1) + 1: stride[1]]


def _ref_conv2d(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1):
    unbatched = x.ndim == 3
    x = x[None] if unbatched else x
    stride, dilation, k = _pair(stride), _pair(dilation), w.shape[2:]
    (pt, pb), (pl, pr) = _pads(padding, k, dilation)
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    out = tuple((n - d * (kk - 1) - 1) // s + 1 for n, d, kk, s in zip(xp.shape[2:], dilation, k, stride))
    O, Cg = w.shape[:2]
    Og = O // groups
    y = np.zeros((x.shape[0], O) + out)
    for g in range(groups):
        xg = xp[:, g * Cg:(g + 1) * Cg]
        for r, s, patch in _taps(xg, k, stride, dilation, out):
            y[:, g * Og:(g + 1) * Og] += np.einsum("nchw,oc->nohw", patch, w[g * Og:(g + 1) * Og, :, r, s])
    if bias is not None:
        y += bias[:, None, None]
    return y[0] if unbatched else y


def _ref_conv1d(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1):
    one = lambda v: (1, v[0] if isinstance(v, (tuple, list)) else v)
    pad = padding if isinstance(padding, str) else (0, one(padding)[1])
    y = _ref_conv2d(x[..., None, :], w[:, :, None], bias, one(stride), pad, one(dilation), groups)
    return y[..., 0, :]


def _ref_conv_transpose2d(x, w, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    (sh, sw), (ph, pw), (oh, ow), (dh, dw) = map(_pair, (stride, padding, output_padding, dilation))
    N, C, H, W = x.shape
    Cin, Og, kh, kw = w.shape
    Cg = Cin // groups
    size = ((H - 1) * sh - 2 * ph + dh * (kh - 1) + oh + 1, (W - 1) * sw - 2 * pw + dw * (kw - 1) + ow + 1)
    full = np.zeros((N, Og * groups, (H - 1) * sh + dh * (kh - 1) + 1 + oh, (W - 1) * sw + dw * (kw - 1) + 1 + ow))
    for g in range(groups):                  # every input element adds its weighted kernel into the output
        for r in range(kh):
            for s in range(kw):
                full[:, g * Og:(g + 1) * Og, r * dh: r * dh + sh * (H - 1) + 1: sh, s * dw: s * dw + sw * (W - 1) + 1: sw] += \
                    np.einsum("nchw,co->nohw", x[:, g * Cg:(g + 1) * Cg], w[g * Cg:(g + 1) * Cg, :, r, s])
    y = full[:, :, ph:ph + size[0], pw:pw + size[1]]
    return y + bias[:, None, None] if bias is not None else y


def _ref_conv2d_weight(x, weight_size, g, stride=1, padding=0, dilation=1, groups=1):
    stride, dilation, k = _pair(stride), _pair(dilation), tuple(weight_size[2:])
    (pt, pb), (pl, pr) = _pads(padding, k, dilation)
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    O, Cg = weight_size[:2]
    Og = O // groups
    dw = np.zeros(tuple(weight_size))
    for grp in range(groups):
        for r, s, patch in _taps(xp[:, grp * Cg:(grp + 1) * Cg], k, stride, dilation, g.shape[2:]):
            dw[grp * Og:(grp + 1) * Og, :, r, s] = np.einsum("nchw,nohw->oc", patch, g[:, grp * Og:(grp + 1) * Og])
    return dw


# ---- pooling references: loops over the outputs, windows as PyTorch documents them ----------------------------------
def _pool_len(n, k, s, p, d, ceil_mode):
    o = (n + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
    return o - 1 if ceil_mode and (o - 1) * s >= n + p else o


def _ref_max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    unbatched = x.ndim == 3
    x = x[None] if unbatched else x
    k, p, d = _pair(kernel_size), _pair(padding), _pair(dilation)
    s = _pair(stride) if stride not in (None, ()) else k
    H, W = x.shape[2:]
    out = tuple(_pool_len(n, *a, ceil_mode) for n, a in zip((H, W), zip(k, s, p, d)))
    y = np.full(x.shape[:2] + out, -np.inf)
    idx = np.zeros(x.shape[:2] + out, np.int64)
    for i in range(out[0]):
        for j in range(out[1]):
            hs = [i * s[0] - p[0] + a * d[0] for a in range(k[0]) if 0 <= i * s[0] - p[0] + a * d[0] < H]
            ws = [j * s[1] - p[1] + b * d[1] for b in range(k[1]) if 0 <= j * s[1] - p[1] + b * d[1] < W]
            win = x[:, :, hs][:, :, :, ws].reshape(x.shape[:2] + (-1,))
            flat = np.array([h * W + w for h in hs for w in ws])
            y[:, :, i, j] = win.max(-1)
            idx[:, :, i, j] = flat[win.argmax(-1)]          # the first maximum in row-major order
    if unbatched:
        y, idx = y[0], idx[0]
    return (y, idx) if return_indices else y


def _ref_max_pool1d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    one = lambda v: (1, v[0] if isinstance(v, (tuple, list)) else v)
    r = _ref_max_pool2d(x[..., None, :], one(kernel_size), None if stride is None else one(stride),
                        (0, one(padding)[1]), one(dilation), ceil_mode, True)
    return (r[0][..., 0, :], r[1][..., 0, :]) if return_indices else r[0][..., 0, :]


def _ref_avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                    divisor_override=None):
    k, p = _pair(kernel_size), _pair(padding)
    s = _pair(stride) if stride not in (None, ()) else k
    H, W = x.shape[-2:]
    out = tuple(_pool_len(n, kk, ss, pp, 1, ceil_mode) for n, kk, ss, pp in zip((H, W), k, s, p))
    y = np.zeros(x.shape[:-2] + out)
    for i in range(out[0]):
        for j in range(out[1]):
            h0, w0 = i * s[0] - p[0], j * s[1] - p[1]
            h1, w1 = min(h0 + k[0], H + p[0]), min(w0 + k[1], W + p[1])
            size = (h1 - h0) * (w1 - w0)
            h0, w0, h1, w1 = max(h0, 0), max(w0, 0), min(h1, H), min(w1, W)
            if not count_include_pad:
                size = (h1 - h0) * (w1 - w0)
            y[..., i, j] = x[..., h0:h1, w0:w1].sum((-1, -2)) / (divisor_override or size)
    return y


def _adaptive_windows(n, o):
    return [(i * n // o, -(-(i + 1) * n // o)) for i in range(o)]


def _out_size(x, output_size):
    o = _pair(output_size)
    return tuple(x.shape[-2 + i] if v is None else v for i, v in enumerate(o))


def _ref_adaptive_avg_pool2d(x, output_size):
    oh, ow = _out_size(x, output_size)
    y = np.zeros(x.shape[:-2] + (oh, ow))
    for i, (h0, h1) in enumerate(_adaptive_windows(x.shape[-2], oh)):
        for j, (w0, w1) in enumerate(_adaptive_windows(x.shape[-1], ow)):
            y[..., i, j] = x[..., h0:h1, w0:w1].mean((-1, -2))
    return y


def _ref_adaptive_max_pool2d(x, output_size, return_indices=False):
    oh, ow = _out_size(x, output_size)
    W = x.shape[-1]
    y = np.zeros(x.shape[:-2] + (oh, ow))
    idx = np.zeros(x.shape[:-2] + (oh, ow), np.int64)
    for i, (h0, h1) in enumerate(_adaptive_windows(x.shape[-2], oh)):
        for j, (w0, w1) in enumerate(_adaptive_windows(W, ow)):
            win = x[..., h0:h1, w0:w1]
            flat = win.reshape(x.shape[:-2] + (-1,))
            a = flat.argmax(-1)
            y[..., i, j] = flat.max(-1)
            idx[..., i, j] = (h0 + a // (w1 - w0)) * W + w0 + a % (w1 - w0)
    return (y, idx) if return_indices else y


# ---- samples ---------------------------------------------------------------------------------------------------
def _gen(cases):
    """A sample generator from ``(name, build, reduction_len)``; ``build(mk)`` returns (input, args,
    kwargs), ``mk(shape, layout='contiguous')`` a tensor of the sampled dtype and device. Dtypes
    outside ``REPRESENTATIVE`` get the first case only."""
    from .opinfo import REPRESENTATIVE

    def gen(info, device, dtype, rng):
        mk = lambda shape, layout="contiguous": make_tensor(shape, dtype, device, rng=rng, low=_DOMAIN[0],
                                                            high=_DOMAIN[1], layout=layout)
        for i, (name, build, n) in enumerate(cases):
            if i and dtype not in REPRESENTATIVE:
                return
            inp, args, kwargs = build(mk)
            yield SampleInput(inp, tuple(args), dict(kwargs), name=name, reduction_len=n)
    return gen


_CONV2D = _gen([
    ("3x3 with bias", lambda mk: (mk((2, 3, 5, 5)), (mk((4, 3, 3, 3)), mk((4,))), {}), 27),
    ("stride, padding, dilation, groups", lambda mk: (mk((2, 4, 5, 6)), (mk((6, 2, 2, 3)),),
                                                      dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)), 12),
    ("same, even kernel, transposed input", lambda mk: (mk((2, 3, 5, 5), "transposed"), (mk((2, 3, 2, 2)),),
                                                        dict(padding="same")), 12),
    ("unbatched 1x1", lambda mk: (mk((3, 4, 5)), (mk((2, 3, 1, 1)),), {}), 3),
])
_CONV1D = _gen([
    ("bias, padding", lambda mk: (mk((2, 3, 7)), (mk((4, 3, 3)), mk((4,))), dict(padding=1)), 9),
    ("stride, dilation, groups", lambda mk: (mk((2, 4, 9)), (mk((2, 2, 2)),), dict(stride=2, dilation=3, groups=2)), 4),
])
_CONV_T = _gen([
    ("3x3 with bias", lambda mk: (mk((2, 3, 4, 4)), (mk((3, 2, 3, 3)), mk((2,))), {}), 27),
    ("stride, padding, output_padding, groups, dilation",
     lambda mk: (mk((2, 4, 3, 4)), (mk((4, 1, 3, 2)),), dict(stride=(2, 3), padding=1, output_padding=(1, 2),
                                                             groups=2, dilation=(1, 2))), 12),
])
_CONV_W = _gen([
    ("3x3", lambda mk: (mk((2, 3, 5, 5)), ((4, 3, 3, 3), mk((2, 4, 3, 3))), {}), 18),
    ("strided groups", lambda mk: (mk((2, 4, 5, 6)), ((6, 2, 2, 3), mk((2, 6, 3, 6))),
                                   dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)), 12),
])
_MAXPOOL = _gen([
    ("3x3 stride 2 pad 1", lambda mk: (mk((2, 3, 5, 5)), (3, 2, 1), dict(return_indices=True)), 1),
    ("dilation, ceil_mode", lambda mk: (mk((2, 3, 5, 6)), ((2, 3), (2, 1), (1, 1), (2, 1), True), {}), 1),
    ("unbatched, default stride", lambda mk: (mk((3, 4, 5), "transposed"), (2,), dict(return_indices=True)), 1),
])
_MAXPOOL1D = _gen([
    ("3 stride 2 pad 1", lambda mk: (mk((2, 3, 9)), (3, 2, 1), dict(return_indices=True)), 1),
])
_AVGPOOL = _gen([
    ("3x3 stride 2 pad 1", lambda mk: (mk((2, 3, 5, 5)), (3, 2, 1), {}), 9),
    ("exclude pad, ceil_mode", lambda mk: (mk((2, 3, 5, 6)), ((2, 3), (2, 2), (1, 1), True, False), {}), 6),
    ("divisor_override, unbatched", lambda mk: (mk((3, 5, 4), "transposed"), (2,), dict(divisor_override=3)), 4),
])
_ADAPTIVE_AVG = _gen([
    ("uneven windows", lambda mk: (mk((2, 3, 5, 7)), ((3, 4),), {}), 6),
    ("to 1x1", lambda mk: (mk((2, 3, 5, 5)), (1,), {}), 25),
    ("larger than the input, None", lambda mk: (mk((2, 3, 3, 4)), ((5, None),), {}), 1),
])
_ADAPTIVE_MAX = _gen([
    ("uneven windows", lambda mk: (mk((2, 3, 5, 7)), ((3, 4), True), {}), 1),
    ("to 1x1", lambda mk: (mk((2, 3, 5, 5)), (1,), {}), 1),
])


# ---- error inputs ------------------------------------------------------------------------------------------------
def _errors(cases):
    def gen(info, device):
        f = lambda shape, dtype=D.float32: make_tensor(shape, dtype, device)
        for name, build, error, match in cases:
            inp, *args = build(f)
            yield ErrorInput(SampleInput(inp, tuple(args), name=name), error, match)
    return gen


_CONV2D_ERRORS = _errors([
    ("channel mismatch", lambda f: (f((2, 5, 5, 5)), f((4, 3, 3, 3))), RuntimeError,
     r"weight of size \[4, 3, 3, 3\], expected input\[2, 5, 5, 5\] to have 3 channels, but got 5 channels"),
    ("wrong rank", lambda f: (f((5, 5)), f((4, 3, 3, 3))), RuntimeError,
     r"Expected 3D \(unbatched\) or 4D \(batched\) input to conv2d, but got input of size: \[5, 5\]"),
    ("groups do not divide out channels", lambda f: (f((2, 4, 5, 5)), f((3, 2, 3, 3)), None, 1, 0, 1, 2),
     RuntimeError, r"groups=2, expected weight to be divisible by 2 at dimension 0.*\[3, 2, 3, 3\]"),
    ("kernel larger than input", lambda f: (f((1, 3, 2, 2)), f((4, 3, 3, 3))), RuntimeError,
     r"padded input size per channel: \(2 x 2\). Kernel size: \(3 x 3\)"),
    ("same with stride", lambda f: (f((1, 3, 5, 5)), f((4, 3, 3, 3)), None, 2, "same"), RuntimeError,
     "padding='same' is not supported for strided convolutions"),
    ("bias size", lambda f: (f((1, 3, 5, 5)), f((4, 3, 3, 3)), f((5,))), RuntimeError,
     r"expected bias to be 1-dimensional with 4 elements, but got bias of size \[5\]"),
    ("dtype mismatch", lambda f: (f((1, 3, 5, 5)), f((4, 3, 3, 3), D.float64)), RuntimeError,
     "same dtype.*float32.*float64"),
])
_POOL_ERRORS = _errors([
    ("wrong rank", lambda f: (f((5, 5)), 2), RuntimeError, r"Expected 3D or 4D .*got: \[5, 5\]"),
    ("pad over half the window", lambda f: (f((1, 1, 5, 5)), 2, 1, 2), RuntimeError, "pad should be at most half"),
    ("output too small", lambda f: (f((1, 1, 2, 2)), 3), RuntimeError, "Output size is too small"),
])


def _nn(name):
    return lambda torch: getattr(torch.nn.functional, name)


# float16/bfloat16: the bias is added after the convolution's result is rounded, so two roundings,
# the first at the magnitude of the sum before the bias (PyTorch's CPU kernels round the same way)
_HALF_SUM = {D.float16: (1e-3, 1e-3), D.bfloat16: (1.6e-2, 8e-3)}

conv_db = [
    OpInfo("conv2d", F.conv2d, _ref_conv2d, _CONV2D, kind="linalg", error_inputs=_CONV2D_ERRORS,
           torch_fn=_nn("conv2d"), tol=_HALF_SUM, torch_tol=_HALF_SUM),
    OpInfo("conv1d", F.conv1d, _ref_conv1d, _CONV1D, declared=("conv2d",), kind="linalg", torch_fn=_nn("conv1d"),
           tol=_HALF_SUM, torch_tol=_HALF_SUM),
    OpInfo("conv_transpose2d", F.conv_transpose2d, _ref_conv_transpose2d, _CONV_T, declared=("conv2d_input_grad",),
           kind="linalg", torch_fn=_nn("conv_transpose2d"), tol=_HALF_SUM, torch_tol=_HALF_SUM),
    OpInfo("conv2d_weight", _conv.conv2d_weight, _ref_conv2d_weight, _CONV_W, declared=("conv2d_weight_grad",),
           kind="linalg", torch_fn=lambda torch: torch.nn.grad.conv2d_weight, torch_tol=_HALF_SUM),
    OpInfo("max_pool2d", F.max_pool2d, _ref_max_pool2d, _MAXPOOL, kind="reduction", error_inputs=_POOL_ERRORS,
           torch_fn=_nn("max_pool2d")),
    OpInfo("max_pool1d", F.max_pool1d, _ref_max_pool1d, _MAXPOOL1D, declared=("max_pool2d",), kind="reduction",
           torch_fn=_nn("max_pool1d")),
    OpInfo("avg_pool2d", F.avg_pool2d, _ref_avg_pool2d, _AVGPOOL, kind="reduction", torch_fn=_nn("avg_pool2d"),
           torch_tol=_HALF_SUM),
    OpInfo("adaptive_avg_pool2d", F.adaptive_avg_pool2d, _ref_adaptive_avg_pool2d, _ADAPTIVE_AVG,
           declared=("avg_pool2d", "sum"), kind="reduction", torch_fn=_nn("adaptive_avg_pool2d"), torch_tol=_HALF_SUM),
    OpInfo("adaptive_max_pool2d", F.adaptive_max_pool2d, _ref_adaptive_max_pool2d, _ADAPTIVE_MAX,
           declared=("max_pool2d",), kind="reduction", torch_fn=_nn("adaptive_max_pool2d")),
]
