"""CPU pooling kernels (Numba): max (with indices), average, and the average's backward.

Windows come from ``ops.pool.PoolGeometry`` (see ``ops/pool.py``): along each axis, output
``o`` reads ``count`` taps from ``start``, ``step`` apart (regular: ``o*stride - padding``,
``kernel``, ``dilation``; adaptive: ``[floor(o*In/Out), ceil((o+1)*In/Out))``, step 1);
taps outside the input are skipped. Loops run in parallel over the (n, c) planes, each
thread owning its planes (no write conflicts). float16/bfloat16 are widened to float32.

Kernels here see arrays and the geometry only; ``ops/pool.py`` has checked every argument.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import prange

from .. import _dispatch
from .. import dtypes as D

DTYPES = (D.float16, D.bfloat16, D.float32, D.float64)

_jit = numba.njit(cache=True, error_model="numpy")
_pjit = numba.njit(cache=True, parallel=True, error_model="numpy")


@_jit
def _window(o, n_in, n_out, k, s, p, d, adaptive):
    """(start, count, step) of output ``o``'s window along one axis."""
    if adaptive:
        start = (o * n_in) // n_out
        return start, -((-(o + 1) * n_in) // n_out) - start, 1
    return o * s - p, k, d


@_jit
def _divisor(oh, ow, H, W, Ho, Wo, kh, sh, ph, kw, sw, pw, adaptive, count_include_pad, divisor):
    if divisor:
        return divisor
    if adaptive:
        _, ch, _ = _window(oh, H, Ho, 0, 0, 0, 1, True)
        _, cw, _ = _window(ow, W, Wo, 0, 0, 0, 1, True)
        return ch * cw
    h0, w0 = oh * sh - ph, ow * sw - pw
    h1, w1 = min(h0 + kh, H + ph), min(w0 + kw, W + pw)     # ceil_mode windows stop at the padding
    if count_include_pad:
        return (h1 - h0) * (w1 - w0)
    return (min(h1, H) - max(h0, 0)) * (min(w1, W) - max(w0, 0))


@_pjit
def _max_pool(x, out, idx, kh, sh, ph, dh, kw, sw, pw, dw, adaptive):
    N, C, H, W = x.shape
    Ho, Wo = out.shape[2:]
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        for oh in range(Ho):
            h0, ch, sth = _window(oh, H, Ho, kh, sh, ph, dh, adaptive)
            for ow in range(Wo):
                w0, cw, stw = _window(ow, W, Wo, kw, sw, pw, dw, adaptive)
                best = -np.inf
                at = -1
                for i in range(ch):
                    h = h0 + i * sth
                    if h < 0 or h >= H:
                        continue
                    for j in range(cw):
                        w = w0 + j * stw
                        if w < 0 or w >= W:
                            continue
                        v = x[n, c, h, w]
                        if at < 0 or v > best or np.isnan(v):      # NaN wins (PyTorch)
                            best, at = v, h * W + w
                out[n, c, oh, ow] = best
                idx[n, c, oh, ow] = at


@_pjit
def _avg_pool(x, out, kh, sh, ph, kw, sw, pw, adaptive, count_include_pad, divisor):
    N, C, H, W = x.shape
    Ho, Wo = out.shape[2:]
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        for oh in range(Ho):
            h0, ch, _ = _window(oh, H, Ho, kh, sh, ph, 1, adaptive)
            for ow in range(Wo):
                w0, cw, _ = _window(ow, W, Wo, kw, sw, pw, 1, adaptive)
                acc = 0.0
                for h in range(max(h0, 0), min(h0 + ch, H)):
                    for w in range(max(w0, 0), min(w0 + cw, W)):
                        acc += x[n, c, h, w]
                out[n, c, oh, ow] = acc / _divisor(oh, ow, H, W, Ho, Wo, kh, sh, ph, kw, sw, pw, adaptive,
                                                   count_include_pad, divisor)


@_pjit
def _avg_pool_backward(g, gx, kh, sh, ph, kw, sw, pw, adaptive, count_include_pad, divisor):
    """gx = the adjoint of _avg_pool: scatter each g / divisor over its window (one plane per thread)."""
    N, C, H, W = gx.shape
    Ho, Wo = g.shape[2:]
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        gx[n, c] = 0
        for oh in range(Ho):
            h0, ch, _ = _window(oh, H, Ho, kh, sh, ph, 1, adaptive)
            for ow in range(Wo):
                w0, cw, _ = _window(ow, W, Wo, kw, sw, pw, 1, adaptive)
                v = g[n, c, oh, ow] / _divisor(oh, ow, H, W, Ho, Wo, kh, sh, ph, kw, sw, pw, adaptive,
                                               count_include_pad, divisor)
                for h in range(max(h0, 0), min(h0 + ch, H)):
                    for w in range(max(w0, 0), min(w0 + cw, W)):
                        gx[n, c, h, w] += v


def _array(t) -> np.ndarray:
    a = t._np()
    return a.astype(np.float32) if t.dtype in (D.float16, D.bfloat16) else np.ascontiguousarray(a)


def _run(kernel, src, dst, *args) -> None:
    """``kernel(src array, result array, *args)`` into ``dst``; halves go through a float32 buffer."""
    if dst.numel() == 0:
        return
    half = dst.dtype in (D.float16, D.bfloat16)
    r = np.empty(dst.shape, np.float32) if half else dst._np()
    kernel(_array(src), r, *args)
    if half:
        dst._np()[...] = r


def _avg_args(geom) -> tuple:
    return (*geom.h[:3], *geom.w[:3], geom.adaptive, geom.count_include_pad, geom.divisor)


@_dispatch.register("max_pool2d", "cpu", DTYPES)
def max_pool2d(x, out, idx, geom) -> None:
    _run(_max_pool, x, out, idx._np(), *geom.h, *geom.w, geom.adaptive)


@_dispatch.register("avg_pool2d", "cpu", DTYPES)
def avg_pool2d(x, out, geom) -> None:
    _run(_avg_pool, x, out, *_avg_args(geom))


@_dispatch.register("avg_pool2d_backward", "cpu", DTYPES)
def avg_pool2d_backward(g, gx, geom) -> None:
    _run(_avg_pool_backward, g, gx, *_avg_args(geom))
