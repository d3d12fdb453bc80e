"""Tensor math composites: plain functions over the primitives in ``ops/``.

Composites have no kernels and no backward of their own; they get every device,
gradients and JIT fusion from the primitives they call. This module also gives the
primitives their public PyTorch signatures (``alpha=``, ``rounding_mode=``, in-place ``_``
forms, ``out=``).
"""
from __future__ import annotations

import builtins

from . import dtypes as D
from ._tensor import Tensor
from .ops import pointwise as P
from .ops.creation import resize_out

_Number = (int, float, bool)


def _inplace(prim, self, *args):
    return prim(self, *args, _into=self)


# ---- arithmetic ------------------------------------------------------------------------------
def _scaled(input, other, alpha):
    """``alpha * other`` for add/sub, keeping the dtype PyTorch's ``add(..., alpha=)`` has:
    alpha takes no part in promotion (bool + 2 * bool stays bool)."""
    if alpha == 1:
        return other
    if not isinstance(other, Tensor):
        return other * alpha
    common = D.result_type(input, other)
    if common.category < 2 and isinstance(alpha, float):
        raise RuntimeError("For integral input tensors, argument alpha must not be a floating point number.")
    if common is D.bool_:
        return other if alpha else P.mul(other, False)
    return P.mul(other, alpha)


def add(input, other, *, alpha=1, out=None) -> Tensor:
    """``input + alpha * other``, broadcasting and promoting as PyTorch."""
    return P.add(input, _scaled(input, other, alpha), out=out)


def sub(input, other, *, alpha=1, out=None) -> Tensor:
    """``input - alpha * other``."""
    return P.sub(input, _scaled(input, other, alpha), out=out)


subtract = sub


def rsub(input, other, *, alpha=1) -> Tensor:
    return sub(other, input, alpha=alpha)


def mul(input, other, *, out=None) -> Tensor:
    """``input * other``."""
    return P.mul(input, other, out=out)


multiply = mul


def div(input, other, *, rounding_mode=None, out=None) -> Tensor:
    """``input / other``: true division (ints give floats), or ``rounding_mode='floor'|'trunc'``."""
    if rounding_mode is None:
        return P.div(input, other, out=out)
    if rounding_mode == "floor":
        return P.floor_divide(input, other, out=out)
    if rounding_mode == "trunc":
        return P.trunc_divide(input, other, out=out)
    raise ValueError(f"div expected rounding_mode to be one of None, 'trunc', or 'floor' but found '{rounding_mode}'")


divide = true_divide = div


def floor_divide(input, other, *, out=None) -> Tensor:
    """``input // other`` rounded toward minus infinity (Python's ``//``)."""
    return P.floor_divide(input, other, out=out)


def remainder(input, other, *, out=None) -> Tensor:
    """Python's ``%``: the result has the sign of ``other``."""
    return P.remainder(input, other, out=out)


def fmod(input, other, *, out=None) -> Tensor:
    """C's ``fmod``: the result has the sign of ``input``."""
    return P.fmod(input, other, out=out)


def pow(input, exponent, *, out=None) -> Tensor:
    """``input ** exponent``."""
    return P.pow(input, exponent, out=out)


def float_power(input, exponent) -> Tensor:
    """``pow`` computed in float64."""
    cast = lambda x: x.double() if isinstance(x, Tensor) else float(x)
    return P.pow(cast(input), cast(exponent))


def neg(input, *, out=None) -> Tensor:
    return P.neg(input, out=out)


negative = neg


def positive(input) -> Tensor:
    return input


def reciprocal(input, *, out=None) -> Tensor:
    """``1 / input`` (ints give floats)."""
    return P.div(1, input, out=out)


def square(input, *, out=None) -> Tensor:
    """``input * input``; bool squares to int64, as PyTorch's ``pow(input, 2)``."""
    if input.dtype is D.bool_:
        input = input.to(D.int64)
    return P.mul(input, input, out=out)


def atan2(input, other, *, out=None) -> Tensor:
    return P.atan2(input, other, out=out)


arctan2 = atan2


def maximum(input, other, *, out=None) -> Tensor:
    """Elementwise max; NaN propagates."""
    _require_tensors("maximum", input, other)
    return P.maximum(input, other, out=out)


def minimum(input, other, *, out=None) -> Tensor:
    """Elementwise min; NaN propagates."""
    _require_tensors("minimum", input, other)
    return P.minimum(input, other, out=out)


def fmax(input, other) -> Tensor:
    """Elementwise max ignoring NaN (NaN only when both are NaN)."""
    return where(P.isnan(other), input, where(P.isnan(input), other, P.maximum(input, other)))


def fmin(input, other) -> Tensor:
    return where(P.isnan(other), input, where(P.isnan(input), other, P.minimum(input, other)))


def _require_tensors(name, *args):
    for a in args:
        if not isinstance(a, Tensor):
            raise TypeError(f"{name}(): argument must be a Tensor, not {type(a).__name__}")


# ---- unary -----------------------------------------------------------------------------------
def _unary(prim):
    def fn(input, *, out=None):
        return prim(input, out=out)
    fn.__name__ = fn.__qualname__ = prim.name
    fn.__doc__ = f"Elementwise ``{prim.name}``."
    return fn


abs = _unary(P.abs)
absolute = abs
sign = _unary(P.sign)
exp, exp2, expm1 = _unary(P.exp), _unary(P.exp2), _unary(P.expm1)
log, log2, log10, log1p = _unary(P.log), _unary(P.log2), _unary(P.log10), _unary(P.log1p)
sqrt, rsqrt = _unary(P.sqrt), _unary(P.rsqrt)
sin, cos, tan = _unary(P.sin), _unary(P.cos), _unary(P.tan)
asin, acos, atan = _unary(P.asin), _unary(P.acos), _unary(P.atan)
arcsin, arccos, arctan = asin, acos, atan
sinh, cosh, tanh = _unary(P.sinh), _unary(P.cosh), _unary(P.tanh)
erf, erfc = _unary(P.erf), _unary(P.erfc)
floor, ceil, trunc = _unary(P.floor), _unary(P.ceil), _unary(P.trunc)
fix = trunc
isnan, isinf, isfinite = _unary(P.isnan), _unary(P.isinf), _unary(P.isfinite)
logical_not = _unary(P.logical_not)
bitwise_not = _unary(P.bitwise_not)


def round(input, *, decimals: int = 0, out=None) -> Tensor:
    """Round half to even (``decimals`` digits after the point)."""
    if decimals == 0:
        return P.round(input, out=out)
    scale = 10.0 ** decimals
    return P.div(P.round(P.mul(input, scale)), scale, out=out)


def frac(input) -> Tensor:
    """``input - trunc(input)``."""
    return P.sub(input, P.trunc(input))


def sigmoid(input) -> Tensor:
    """``1 / (1 + exp(-input))``; integer and bool inputs give the default float dtype. A
    primitive (``ops.pointwise.sigmoid``), computed without overflow for any input, so its
    gradient ``out * (1 - out)`` is finite everywhere."""
    return P.sigmoid(input)


def relu(input) -> Tensor:
    """``max(input, 0)``; NaN stays NaN. Its gradient at 0 is 0, as PyTorch's."""
    if input.dtype is D.bool_:
        raise RuntimeError("Boolean inputs not supported for relu")
    return P.where(P.le(input, 0), 0, input)


def clamp(input, min=None, max=None, *, out=None) -> Tensor:
    """Limit to ``[min, max]`` (numbers or tensors); if ``min > max`` everything becomes ``max``."""
    if min is None and max is None:
        raise RuntimeError("clamp: at least one of 'min' or 'max' must not be None")
    x = input
    if min is not None:
        x = P.maximum(x, min, out=out if max is None else None)
    if max is not None:
        x = P.minimum(x, max, out=out)
    return x


clip = clamp


def clamp_min(input, min) -> Tensor:
    return clamp(input, min=min)


def clamp_max(input, max) -> Tensor:
    return clamp(input, max=max)


def where(condition, input=None, other=None) -> Tensor:
    """``input`` where ``condition`` else ``other`` (numbers allowed); ``where(cond)`` is ``nonzero(cond, as_tuple=True)``."""
    if input is None and other is None:
        from .ops.indexing import nonzero
        return nonzero(condition, as_tuple=True)
    if not isinstance(condition, Tensor):
        raise TypeError(f"where(): condition must be a Tensor, got {type(condition).__name__}")
    if condition.dtype is not D.bool_:
        raise RuntimeError(f"where expected condition to be a boolean tensor, but got a tensor with dtype {condition.dtype}")
    return P.where(condition, input, other)


def lerp(input, end, weight) -> Tensor:
    """``input + weight * (end - input)``; floating-point inputs only, as in PyTorch
    (``end - input`` of unsigned integers would wrap)."""
    if not input.dtype.is_floating_point:
        raise RuntimeError(f"lerp: expected a floating-point input, got {input.dtype}; convert it with .float()")
    return P.add(input, P.mul(weight, P.sub(end, input)))


def nan_to_num(input, nan: float = 0.0, posinf=None, neginf=None, *, out=None) -> Tensor:
    """Replace NaN, +inf and -inf with finite numbers (defaults: 0 and the dtype's extremes)."""
    if not input.dtype.is_floating_point:     # nothing to replace; out= and in-place still write
        if out is None:
            return input.clone()
        resize_out(out, input.shape)
        return out.copy_(input)
    import ml_dtypes
    info = ml_dtypes.finfo(input.dtype.numpy)
    hi = float(info.max) if posinf is None else posinf
    lo = float(info.min) if neginf is None else neginf
    x = P.where(P.isnan(input), nan, input)
    x = P.where(P.eq(x, float("inf")), hi, x)
    return P.where(P.eq(x, float("-inf")), lo, x, out=out)


# ---- comparisons and logic ------------------------------------------------------------------------
def _binary(prim):
    def fn(input, other, *, out=None):
        return prim(input, other, out=out)
    fn.__name__ = fn.__qualname__ = prim.name
    fn.__doc__ = f"Elementwise ``{prim.name}``, broadcasting."
    return fn


eq, ne, lt, le, gt, ge = (_binary(p) for p in (P.eq, P.ne, P.lt, P.le, P.gt, P.ge))
greater, greater_equal, less, less_equal, not_equal = gt, ge, lt, le, ne
logical_and, logical_or, logical_xor = (_binary(p) for p in (P.logical_and, P.logical_or, P.logical_xor))
bitwise_and, bitwise_or, bitwise_xor = (_binary(p) for p in (P.bitwise_and, P.bitwise_or, P.bitwise_xor))
bitwise_left_shift, bitwise_right_shift = _binary(P.bitwise_left_shift), _binary(P.bitwise_right_shift)


def equal(input, other) -> bool:
    """True if both tensors have the same shape and elements."""
    return tuple(input.shape) == tuple(other.shape) and bool(P.eq(input, other).all())


def isclose(input, other, rtol: float = 1e-05, atol: float = 1e-08, equal_nan: bool = False) -> Tensor:
    """``|input - other| <= atol + rtol * |other|`` elementwise."""
    if input.dtype is D.bool_ and other.dtype is D.bool_:
        return P.eq(input, other)
    diff = P.abs(P.sub(input, other))
    # an infinite difference is never close (inf <= rtol * inf would say so); equal infs are
    close = P.logical_and(P.isfinite(diff), P.le(diff, P.add(P.mul(P.abs(other), rtol), atol)))
    close = P.logical_or(close, P.eq(input, other))
    if equal_nan:
        close = P.logical_or(close, P.logical_and(P.isnan(input), P.isnan(other)))
    return close


def allclose(input, other, rtol: float = 1e-05, atol: float = 1e-08, equal_nan: bool = False) -> bool:
    return bool(isclose(input, other, rtol, atol, equal_nan).all())
