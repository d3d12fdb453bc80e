"""CPU kernels (Numba) of the fused norm and loss primitives in ``ops/norm.py``: layer_norm and
rms_norm forward / backward, cross_entropy forward / backward, batch_norm forward / backward
(``[N, C, HW]``, a ``prange`` task per channel; the running statistics updated in place).

Rows: inputs arrive contiguous and are viewed as ``[M, N]`` (``[M, C]`` logits). float16 and
bfloat16 compute in float32 copies, rounded once on the way out; their weight and bias may be
float32 already (PyTorch's mix), and then so are dweight / dbias, written as summed. Each row
is one task of a ``prange``; the backward's dweight / dbias are summed per chunk of rows into
a ``[chunks, N]`` partial buffer, then over chunks (deterministic, no atomics).

Kernels here know nothing about autograd or argument checking beyond what only they can do
(a class index out of range).
"""
from __future__ import annotations

import math
import types

import numba
import numpy as np
from numba import prange

from .. import _dispatch
from .. import dtypes as D
from ._vecmath import vexp
from .reduction import _threads

_HALF = (D.float16, D.bfloat16)
_EMPTY = np.zeros(0, np.float32)


def _serial_and_parallel(body):
    """(serial, parallel) kernels from one body, as ``cpu/reduction.py``'s, compiled with
    ``reassoc`` so LLVM vectorises the row sums (NaN and inf still propagate)."""
    copy = types.FunctionType(body.__code__, body.__globals__, body.__name__ + "_parallel",
                              body.__defaults__, body.__closure__)
    copy.__qualname__ = body.__qualname__ + "_parallel"
    opts = dict(cache=True, error_model="numpy", fastmath={"reassoc"})
    return numba.njit(**opts)(body), numba.njit(parallel=True, **opts)(copy)


def _arr(t, n: int | None = None) -> np.ndarray:
    """``t``'s elements as a float array (float32 for halves), 2-D ``[-1, n]`` when ``n``."""
    if t is None:
        return _EMPTY
    a = t._np()
    if t.dtype in _HALF:
        a = a.astype(np.float32)
    a = np.ascontiguousarray(a)
    return a.reshape(-1, n) if n is not None else a.reshape(-1)


def _target(t, shape):
    """A float array to write ``t``'s result into (its own memory unless half)."""
    return np.empty(shape, np.float32) if t.dtype in _HALF else t._storage.data.reshape(shape)


def _store(t, a) -> None:
    if t.dtype in _HALF:
        t._np()[...] = a.reshape(t.shape)


# ---- layer_norm / rms_norm ---------------------------------------------------------------------------------
def _norm_fwd(x, w, b, y, mean, rstd, eps, inv_n, one, rms, has_w, has_b):
    # eps, inv_n = 1 / n and one come typed as x's dtype: a float64 scalar in the loops would
    # turn float32 rows into float64 arithmetic at half the SIMD width
    m, n = x.shape
    for i in prange(m):
        row = x[i]
        mu = one - one
        if not rms:
            for j in range(n):
                mu += row[j]
            mu *= inv_n
        v = one - one
        for j in range(n):
            d = row[j] - mu
            v += d * d
        r = one / np.sqrt(v * inv_n + eps)
        mean[i] = mu
        rstd[i] = r
        for j in range(n):
            h = (row[j] - mu) * r
            if has_w:
                h *= w[j]
            if has_b:
                h += b[j]
            y[i, j] = h


def _norm_bwd(g, x, w, mean, rstd, dx, dwp, dbp, rms, has_w):
    m, n = x.shape
    chunks = dwp.shape[0]
    for c in prange(chunks):
        for i in range(c * m // chunks, (c + 1) * m // chunks):
            mu = 0.0 if rms else mean[i]
            r = rstd[i]
            a = 0.0
            bb = 0.0
            for j in range(n):
                xh = (x[i, j] - mu) * r
                gy = g[i, j] * w[j] if has_w else g[i, j]
                a += gy
                bb += gy * xh
                if has_w:
                    dwp[c, j] += g[i, j] * xh
                    dbp[c, j] += g[i, j]
            a = 0.0 if rms else a / n
            bb /= n
            for j in range(n):
                xh = (x[i, j] - mu) * r
                gy = g[i, j] * w[j] if has_w else g[i, j]
                dx[i, j] = r * (gy - a - xh * bb)


_norm_fwd, _norm_bwd = _serial_and_parallel(_norm_fwd), _serial_and_parallel(_norm_bwd)


def layer_norm(x, w, b, outs, params) -> None:
    y, mean, rstd = outs
    n = params["n"]
    m = rstd.numel()
    if m == 0 or n == 0:
        return
    xa = _arr(x, n)
    ya, sa = _target(y, (m, n)), _target(rstd, (m,))
    ma = _target(mean, (m,)) if mean is not None else np.empty(m, sa.dtype)
    t = xa.dtype.type
    _norm_fwd[_threads(xa) > 1](xa, _arr(w), _arr(b), ya, ma, sa, t(params["eps"]), t(1 / n), t(1), params["rms"],
                                w is not None, b is not None)
    for t, a in ((y, ya), (rstd, sa)) + (((mean, ma),) if mean is not None else ()):
        _store(t, a)


def norm_backward(g, x, w, mean, rstd, outs, params) -> None:
    n = params["n"]
    dx = outs[0]
    m = rstd.numel()
    if n == 0:
        return
    xa, ga = _arr(x, n), _arr(g, n)
    dxa = _target(dx, (m, n))
    chunks = max(1, min(_threads(xa), m)) if w is not None else 1
    part = np.zeros((2, chunks, n) if w is not None else (2, 1, 1), xa.dtype)
    mean_a = _arr(mean) if mean is not None else _arr(rstd)
    if m:
        _norm_bwd[chunks > 1 or _threads(xa) > 1](ga, xa, _arr(w), mean_a, _arr(rstd), dxa, part[0], part[1],
                                                  params["rms"], w is not None)
    _store(dx, dxa)
    for t, p in zip(outs[1:], (part[0], part[1])):
        s = p.sum(0)
        if t.dtype in _HALF:
            t._np()[...] = s
        else:
            t._storage.data.reshape(n)[...] = s


# ---- cross_entropy ------------------------------------------------------------------------------------------
def _ce_fwd(x, t, w, loss, lse, ignore, eps, has_w, zero):
    m, c = x.shape
    for i in prange(m):
        row = x[i]
        mx = row[0]                       # x's dtype (a float64 -inf start would make exp scalar)
        for k in range(1, c):
            if row[k] > mx or row[k] != row[k]:
                mx = row[k]
        shift = mx if abs(mx) < np.inf else zero      # zero: x's dtype, so exp stays float32
        s = 0.0
        for k in range(c):
            s += vexp(row[k] - shift)
        l = shift + math.log(s)
        lse[i] = l
        ti = t[i]
        if ti == ignore:
            loss[i] = 0.0
            continue
        wt = w[ti] if has_w else 1.0
        r = (1.0 - eps) * wt * (l - row[ti])
        if eps != 0.0:
            sm = 0.0
            for k in range(c):
                sm += (w[k] if has_w else 1.0) * (l - row[k])
            r += eps / c * sm
        loss[i] = r


def _ce_bwd(g, x, t, w, lse, dx, ignore, eps, has_w):
    m, c = x.shape
    total = 0.0
    if has_w:
        for k in range(c):
            total += w[k]
    else:
        total = c
    for i in prange(m):
        ti = t[i]
        if ti == ignore:
            for k in range(c):
                dx[i, k] = 0.0
            continue
        wt = w[ti] if has_w else 1.0
        a = (1.0 - eps) * wt + eps / c * total
        gi = g[i]
        li = lse[i]
        for k in range(c):
            p = vexp(x[i, k] - li)
            bk = eps / c * (w[k] if has_w else 1.0)
            if k == ti:
                bk += (1.0 - eps) * wt
            dx[i, k] = gi * (a * p - bk)


_ce_fwd, _ce_bwd = _serial_and_parallel(_ce_fwd), _serial_and_parallel(_ce_bwd)


def _check_targets(t: np.ndarray, c: int, ignore: int) -> None:
    bad = (t != ignore) & ((t < 0) | (t >= c))
    if bad.any():
        raise IndexError(f"cross_entropy: target {int(t[bad][0])} is out of bounds for {c} classes "
                         f"(expected 0 <= target < {c}, or ignore_index={ignore})")


def cross_entropy(x, t, w, outs, params) -> None:
    loss, lse = outs
    m, c = x.shape
    if m == 0:
        return
    xa, ta = _arr(x, c), t._np().reshape(-1)
    _check_targets(ta, c, params["ignore_index"])
    la, sa = _target(loss, (m,)), _target(lse, (m,))
    _ce_fwd[_threads(xa) > 1](xa, ta, _arr(w), la, sa, params["ignore_index"], params["label_smoothing"],
                              w is not None, xa.dtype.type(0))
    _store(loss, la)
    _store(lse, sa)


def cross_entropy_backward(g, x, t, w, lse, dx, params) -> None:
    m, c = x.shape
    if m == 0:
        return
    xa = _arr(x, c)
    dxa = _target(dx, (m, c))
    _ce_bwd[_threads(xa) > 1](_arr(g), xa, t._np().reshape(-1), _arr(w), _arr(lse), dxa, params["ignore_index"],
                              params["label_smoothing"], w is not None)
    _store(dx, dxa)


# ---- batch_norm ----------------------------------------------------------------------------------------------
def _bn_fwd(x, w, b, y, mean, var, invstd, eps, inv_count, has_w, has_b):
    # x, y [N, C, HW]; a task per channel. Statistics accumulate in float64 (a channel is up to
    # N * HW values), then y is written with the saved (rounded) mean and invstd, as backward reads them
    nb, c, hw = x.shape
    for ch in prange(c):
        s = 0.0
        for i in range(nb):
            for j in range(hw):
                s += x[i, ch, j]
        mu = s * inv_count
        v = 0.0
        for i in range(nb):
            for j in range(hw):
                d = x[i, ch, j] - mu
                v += d * d
        v *= inv_count
        mean[ch] = mu
        var[ch] = v
        invstd[ch] = 1.0 / np.sqrt(v + eps)
        m, a = mean[ch], invstd[ch]
        if has_w:
            a *= w[ch]
        sh = b[ch] if has_b else m - m
        for i in range(nb):
            for j in range(hw):
                y[i, ch, j] = (x[i, ch, j] - m) * a + sh


def _bn_bwd(g, x, w, mean, invstd, dx, sg, sgx, inv_count, has_w):
    nb, c, hw = x.shape
    for ch in prange(c):
        m, r = mean[ch], invstd[ch]
        s1 = 0.0
        s2 = 0.0
        for i in range(nb):
            for j in range(hw):
                s1 += g[i, ch, j]
                s2 += g[i, ch, j] * (x[i, ch, j] - m)
        s2 *= r
        sg[ch] = s1
        sgx[ch] = s2
        k = r * w[ch] if has_w else r
        c1 = s1 * inv_count
        c2 = s2 * inv_count * r
        for i in range(nb):
            for j in range(hw):
                dx[i, ch, j] = k * (g[i, ch, j] - c1 - (x[i, ch, j] - m) * c2)


_bn_fwd, _bn_bwd = _serial_and_parallel(_bn_fwd), _serial_and_parallel(_bn_bwd)


def _ncl(t) -> tuple:
    """``t``'s ``[N, C, *]`` shape as ``(N, C, HW)``."""
    nb, c = t.shape[0], t.shape[1]
    return nb, c, (t.numel() // (nb * c) if nb * c else 0)


def batch_norm(x, w, b, running_mean, running_var, outs, params) -> None:
    y, mean, invstd = outs
    shape = _ncl(x)
    if x.numel() == 0:
        return
    xa = _arr(x).reshape(shape)
    ya, ma, sa = _target(y, shape), _target(mean, (shape[1],)), _target(invstd, (shape[1],))
    var = np.empty(shape[1], ma.dtype)
    count = params["count"]
    _bn_fwd[_threads(xa) > 1](xa, _arr(w), _arr(b), ya, ma, var, sa, params["eps"], 1.0 / count,
                              w is not None, b is not None)
    for t, a in ((y, ya), (mean, ma), (invstd, sa)):
        _store(t, a)
    m = params["momentum"]
    for buf, stat in ((running_mean, ma), (running_var, var * (count / (count - 1)))):
        if buf is not None:                   # in place, in the buffer's dtype (PyTorch's update)
            a = buf._np()
            a[...] = (1 - m) * a.astype(ma.dtype) + m * stat


def batch_norm_backward(g, x, w, mean, invstd, outs, params) -> None:
    dx, sgx, sg = outs
    shape = _ncl(x)
    if x.numel() == 0:
        return
    xa = _arr(x).reshape(shape)
    dxa = _target(dx, shape)
    sga, sgxa = _target(sg, (shape[1],)), _target(sgx, (shape[1],))
    _bn_bwd[_threads(xa) > 1](_arr(g).reshape(shape), xa, _arr(w), _arr(mean), _arr(invstd), dxa, sga, sgxa,
                              1.0 / params["count"], w is not None)
    for t, a in ((dx, dxa), (sg, sga), (sgx, sgxa)):
        _store(t, a)


_FLOATS = D.FLOAT_DTYPES
_dispatch.register("layer_norm", "cpu", _FLOATS)(layer_norm)
_dispatch.register("rms_norm", "cpu", _FLOATS)(layer_norm)
_dispatch.register("layer_norm_backward", "cpu", _FLOATS)(norm_backward)
_dispatch.register("rms_norm_backward", "cpu", _FLOATS)(norm_backward)
_dispatch.register("cross_entropy", "cpu", _FLOATS)(cross_entropy)
_dispatch.register("cross_entropy_backward", "cpu", _FLOATS)(cross_entropy_backward)
_dispatch.register("batch_norm", "cpu", _FLOATS)(batch_norm)
_dispatch.register("batch_norm_backward", "cpu", _FLOATS)(batch_norm_backward)
