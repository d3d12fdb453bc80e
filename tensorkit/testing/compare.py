"""Comparing a tensorkit result with a reference (numpy, a formula, or another tensor).

Tolerances follow ``torch.testing.assert_close``'s default table, keyed by the dtype of the
*actual* result and applied against a float64 reference:

    |actual - expected| <= atol + rtol * |expected|        (NaN == NaN, inf == inf of one sign)

Integer and bool results must match exactly (the reference is cast to the result's dtype
first, which wraps the way integer arithmetic does). For reductions, ``atol`` is multiplied by
the number of elements folded into each output (rounding error grows with it; a sum that
cancels to ~0 has no relative precision left).

This module must not import torch.
"""
from __future__ import annotations

import numpy as np

from .. import dtypes as D

__all__ = ["DEFAULT_TOLERANCES", "tolerance", "to_numpy", "assert_close"]

# torch.testing._comparison's default (rtol, atol) per dtype.
DEFAULT_TOLERANCES = {
    D.float16: (1e-3, 1e-5),
    D.bfloat16: (1.6e-2, 1e-5),
    D.float32: (1.3e-6, 1e-5),
    D.float64: (1e-7, 1e-7),
}


def tolerance(dtype: D.DType, overrides: dict | None = None) -> tuple[float, float]:
    """(rtol, atol) for results of ``dtype``: ``overrides[dtype]`` if given, else the default."""
    if overrides and dtype in overrides:
        return overrides[dtype]
    return DEFAULT_TOLERANCES.get(dtype, (0.0, 0.0))


def to_numpy(x) -> np.ndarray:
    """A host numpy copy of a tensor (half types widened to float32, which is exact)."""
    if hasattr(x, "_host"):
        a = np.array(x._host())
        if x.dtype in (D.float16, D.bfloat16):
            a = a.astype(np.float32)
        return a
    return np.asarray(x)


def assert_close(actual, expected, *, dtype: D.DType | None = None, rtol: float | None = None,
                 atol: float | None = None, reduction_len: int = 1, check_shape: bool = True,
                 msg: str = "") -> None:
    """Raise AssertionError unless ``actual`` (a Tensor or array) matches ``expected``.

    ``dtype`` (default: ``actual.dtype``) picks the tolerance; ``rtol``/``atol`` override it.
    """
    dtype = dtype or getattr(actual, "dtype", None)
    if dtype is None:
        dtype = D.from_numpy_dtype(np.asarray(actual).dtype)
    a = to_numpy(actual)
    e = to_numpy(expected)
    where = f"{msg}: " if msg else ""
    if check_shape and tuple(a.shape) != tuple(e.shape):
        raise AssertionError(f"{where}shape mismatch: actual {list(a.shape)}, expected {list(e.shape)}")
    e = np.broadcast_to(e, a.shape)
    if not dtype.is_floating_point:
        if e.dtype.kind == "f" and not np.isfinite(e).all():
            raise AssertionError(f"{where}the reference has non-finite values for a {dtype} result")
        e_cast = e.astype(dtype.numpy)
        bad = a != e_cast
        if bad.any():
            raise AssertionError(_report(where, a, e_cast, bad, f"exact match required for {dtype}"))
        return
    d_rtol, d_atol = tolerance(dtype)
    rtol = d_rtol if rtol is None else rtol
    atol = (d_atol if atol is None else atol) * max(1, reduction_len)
    a64, e64 = a.astype(np.float64), e.astype(np.float64)
    with np.errstate(all="ignore"):
        both_nan = np.isnan(a64) & np.isnan(e64)
        same_inf = np.isinf(a64) & (a64 == e64)
        close = np.abs(a64 - e64) <= atol + rtol * np.abs(e64)
    bad = ~(close | both_nan | same_inf)
    if bad.any():
        raise AssertionError(_report(where, a64, e64, bad, f"rtol={rtol:g}, atol={atol:g} ({dtype})"))


def _report(where, a, e, bad, tol) -> str:
    idx = np.argwhere(bad)
    n = len(idx)
    lines = [f"{where}{n} of {a.size} elements differ ({tol})"]
    with np.errstate(all="ignore"):
        if a.dtype.kind == "f":
            diff = np.abs(a - e)[bad]
            finite = diff[np.isfinite(diff)]
            if finite.size:
                lines.append(f"greatest absolute difference: {finite.max():g}")
    for i in idx[:5]:
        i = tuple(int(v) for v in i)
        lines.append(f"  at {list(i)}: actual {a[i]!r}, expected {e[i]!r}")
    return "\n".join(lines)
