"""CPU convolution kernels: im2col (Numba) into BLAS (numpy's matmul), and col2im back.

For ``x`` (N, C, H, W) and a (kh, kw) kernel, ``cols[n, c, r, s, p, q]`` is the input element
that kernel tap (r, s) of channel c meets at output position (p, q) (zero in the padding).
Per group, with K = C/groups * kh * kw and L = Ho * Wo:

* forward:        y[n, group]  = w[group] (O/g, K) @ cols[n, group] (K, L)
* input-gradient: cols[n, group] = w[group]^T @ g[n, group], then col2im sums each column
                  back onto the input element it came from
* weight-gradient: dw[group] = sum_n g[n, group] (O/g, L) @ cols[n, group]^T

float16/bfloat16 are widened to float32 (one rounding at the end, as PyTorch's CPU kernels);
float64 stays float64. A 1x1 kernel with stride 1 and no padding needs no im2col: cols is x.

Kernels here see arrays and the geometry (``ops.conv.ConvGeometry``) only; the meta rule in
``ops/conv.py`` has checked every argument.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import prange

from .. import _dispatch
from .. import dtypes as D

DTYPES = (D.float16, D.bfloat16, D.float32, D.float64)

_jit = numba.njit(cache=True, parallel=True, error_model="numpy")


@_jit
def _im2col(x, cols, sh, sw, ph, pw, dh, dw):
    """cols (N, C, R, S, Ho, Wo) from x (N, C, H, W)."""
    N, C, H, W = x.shape
    R, S, Ho, Wo = cols.shape[2:]
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        for r in range(R):
            for s in range(S):
                for p in range(Ho):
                    h = p * sh - ph + r * dh
                    if h < 0 or h >= H:
                        cols[n, c, r, s, p, :] = 0
                        continue
                    for q in range(Wo):
                        w = q * sw - pw + s * dw
                        cols[n, c, r, s, p, q] = x[n, c, h, w] if 0 <= w < W else 0


@_jit
def _col2im(cols, x, sh, sw, ph, pw, dh, dw):
    """x (N, C, H, W) = the sum of cols (N, C, R, S, Ho, Wo) at the input elements they came from."""
    N, C, H, W = x.shape
    R, S, Ho, Wo = cols.shape[2:]
    for nc in prange(N * C):             # one thread owns a whole (n, c) plane: no write conflicts
        n, c = nc // C, nc % C
        x[n, c] = 0
        for r in range(R):
            for s in range(S):
                for p in range(Ho):
                    h = p * sh - ph + r * dh
                    if h < 0 or h >= H:
                        continue
                    for q in range(Wo):
                        w = q * sw - pw + s * dw
                        if 0 <= w < W:
                            x[n, c, h, w] += cols[n, c, r, s, p, q]


def _array(t) -> np.ndarray:
    """``t`` as a C-contiguous float32/float64 array (halves widened)."""
    a = t._np()
    if t.dtype in (D.float16, D.bfloat16):
        return a.astype(np.float32)
    return np.ascontiguousarray(a)


def _gemms(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[n, g] = a[g] @ b[n, g]`` (a: (G, m, k), b: (N, G, k, l)), one BLAS call per (n, g):
    numpy's broadcast matmul over stacks ran 3x slower than these calls (measured, 2 cores)."""
    for n in range(b.shape[0]):
        for g in range(b.shape[1]):
            np.matmul(a[g], b[n, g], out=out[n, g])
    return out


def _trivial(w_shape, geom) -> bool:
    return tuple(w_shape[2:]) == (1, 1) and geom.stride == (1, 1) and not any(geom.padding)


def _cols(x: np.ndarray, w_shape, out_hw, geom) -> np.ndarray:
    """The (N, G, K, L) im2col matrix of ``x``."""
    N, C, H, W = x.shape
    G = geom.groups
    if _trivial(w_shape, geom):
        return x.reshape(N, G, C // G, H * W)
    (sh, sw), (ph, _, pw, _), (dh, dw) = geom.stride, geom.padding, geom.dilation
    cols = np.empty((N, C, w_shape[2], w_shape[3]) + tuple(out_hw), x.dtype)
    _im2col(x, cols, sh, sw, ph, pw, dh, dw)
    return cols.reshape(N, G, -1, out_hw[0] * out_hw[1])


@_dispatch.register("conv2d", "cpu", DTYPES)
def conv2d(x, w, out, geom) -> None:
    N, O, Ho, Wo = out.shape
    if out.numel() == 0:
        return
    G = geom.groups
    cols = _cols(_array(x), w.shape, (Ho, Wo), geom)
    wa = _array(w).reshape(G, O // G, -1)
    y = _gemms(wa, cols, np.empty((N, G, O // G, Ho * Wo), cols.dtype))
    out._np()[...] = y.reshape(N, O, Ho, Wo)


@_dispatch.register("conv2d_input_grad", "cpu", DTYPES)
def conv2d_input_grad(g, w, out, geom) -> None:
    N, C, H, W = out.shape
    if out.numel() == 0:
        return
    G = geom.groups
    _, O, Ho, Wo = g.shape
    ga = _array(g).reshape(N, G, O // G, Ho * Wo)
    wa = _array(w).reshape(G, O // G, -1)
    cols = _gemms(wa.transpose(0, 2, 1), ga, np.empty((N, G, wa.shape[2], Ho * Wo), ga.dtype))   # (N, G, K, L)
    if _trivial(w.shape, geom):
        out._np()[...] = cols.reshape(N, C, H, W)
        return
    (sh, sw), (ph, _, pw, _), (dh, dw) = geom.stride, geom.padding, geom.dilation
    gx = np.empty((N, C, H, W), cols.dtype)
    _col2im(cols.reshape(N, C, w.shape[2], w.shape[3], Ho, Wo), gx, sh, sw, ph, pw, dh, dw)
    out._np()[...] = gx


@_dispatch.register("conv2d_weight_grad", "cpu", DTYPES)
def conv2d_weight_grad(x, g, out, geom) -> None:
    O = out.shape[0]
    if out.numel() == 0:
        return
    if g.numel() == 0:                  # an empty batch: no product contributes
        out._np()[...] = 0
        return
    N, _, Ho, Wo = g.shape
    G = geom.groups
    cols = _cols(_array(x), out.shape, (Ho, Wo), geom)          # (N, G, K, L)
    ga = _array(g).reshape(N, G, O // G, Ho * Wo)
    # dw[g]^T = sum over n of cols (K, L) @ g^T (L, O/G): in this order BLAS ran 8x faster than
    # g @ cols^T (measured, OpenBLAS on 2 cores: the long L is the shared, contiguous axis of both)
    dwt = np.zeros((G, cols.shape[2], O // G), cols.dtype)
    for n in range(N):
        for g in range(G):
            dwt[g] += cols[n, g] @ ga[n, g].T
    out._np()[...] = dwt.transpose(0, 2, 1).reshape(out.shape)
