"""Reduction primitives (sum, prod, amax, argmax, var, all, logsumexp, norm, scans, softmax).

The meta rule is shared: normalise ``dim`` (int, tuple or None), compute the kept shape
and the result dtype (integer sums accumulate in int64, as PyTorch). Kernels receive the
input and outputs shaped with ``keepdim=True`` plus the sorted reduced dims, and look up
by (op, device, dtype of the input). ``mean``, ``std``, ``max(dim)`` and the like are
composites in ``functional`` terms, written here beside the primitives they use.
"""
from __future__ import annotations

import builtins
from collections import namedtuple

from .. import _dispatch
from .. import dtypes as D
from .._tensor import Tensor, _wrap_dim
from .creation import new_tensor, resize_out, to

ALL = D.ALL_DTYPES
FLOATS = D.FLOAT_DTYPES
NUMERIC = D.INTEGER_DTYPES + FLOATS

values_indices = namedtuple("values_indices", ["values", "indices"])


def _reduced_dims(x: Tensor, dim, op: str) -> tuple:
    if dim is None or (isinstance(dim, (tuple, list)) and len(dim) == 0):
        return tuple(range(x.ndim))
    dims = dim if isinstance(dim, (tuple, list)) else (dim,)
    out = sorted({_wrap_dim(d, x.ndim, op) for d in dims})
    if len(out) != len(dims):
        raise RuntimeError(f"{op}: dim {list(dims)} appears multiple times in the list of dims")
    return tuple(out) if x.ndim else ()        # a 0-d tensor accepts dim 0 / -1 and reduces nothing


def _finish(result: Tensor, out: Tensor | None) -> Tensor:
    if out is None:
        return result
    resize_out(out, result.shape)
    return out.copy_(result)


def _run(op: str, x: Tensor, dims, out_dtypes, params: dict, keepdim: bool = False, shape=None) -> list[Tensor]:
    """Allocate the outputs (reduced shape, or ``shape``), run the kernel, tell observers.
    Kernels see the input, the outputs and the sorted reduced dims."""
    if shape is None:
        shape = tuple(1 if i in dims else s for i, s in enumerate(x._shape)) if keepdim else \
            tuple(s for i, s in enumerate(x._shape) if i not in dims)
    outs = [new_tensor(shape, d, x._storage.device) for d in out_dtypes]
    kernel = _dispatch.KERNELS.get((op, x._storage.device.type, x.dtype)) or \
        _dispatch.lookup(op, x._storage.device.type, x.dtype)
    kernel(op, x, outs, dims, params)
    if _dispatch.observers:
        _dispatch.notify(op, (x,), tuple(outs), dict(params, dims=dims, keepdim=keepdim))
    return outs


def _check_nonempty(x: Tensor, dims, op: str) -> None:
    if x.numel():
        return
    if len(dims) == x.ndim:
        raise RuntimeError(f"{op}(): Expected reduction over a non-empty tensor; input shape {list(x.shape)}; "
                           f"specify a dim whose size is not zero")
    for d in dims:
        if x.shape[d] == 0:
            raise IndexError(f"{op}(): Expected reduction dim {d} to have non-zero size; input shape {list(x.shape)}")


def _cast_input(x: Tensor, dtype) -> Tensor:
    return x if dtype is None else to(x, D.to_dtype(dtype))


def _int_accumulate(dtype: D.DType) -> D.DType:
    return D.int64 if dtype.category < 2 else dtype


# ---- sum-like ----------------------------------------------------------------------------------
def sum(input: Tensor, dim=None, keepdim: bool = False, *, dtype=None, out=None) -> Tensor:
    """Sum over ``dim`` (all dims by default); integer and bool inputs sum in int64."""
    x = _cast_input(input, dtype)
    dims = _reduced_dims(x, dim, "sum")
    (r,) = _run("sum", x, dims, [_int_accumulate(x.dtype)], {}, keepdim)
    return _finish(r, out)


def prod(input: Tensor, dim=None, keepdim: bool = False, *, dtype=None, out=None) -> Tensor:
    """Product over ``dim`` (one dim, or all); integer and bool inputs multiply in int64."""
    x = _cast_input(input, dtype)
    dims = _reduced_dims(x, dim, "prod")
    (r,) = _run("prod", x, dims, [_int_accumulate(x.dtype)], {}, keepdim)
    return _finish(r, out)


def mean(input: Tensor, dim=None, keepdim: bool = False, *, dtype=None, out=None) -> Tensor:
    """Mean over ``dim``; needs a floating-point input (or ``dtype=``), as in PyTorch."""
    x = _cast_input(input, dtype)
    if not x.dtype.is_floating_point:
        raise RuntimeError(f"mean(): could not infer output dtype. Input dtype must be either a floating point "
                           f"or complex dtype. Got: {x.dtype}; pass dtype=tk.float32 or call .float() first")
    dims = _reduced_dims(x, dim, "mean")
    n = 1
    for d in dims:
        n *= x.shape[d]
    s = sum(x, dims, keepdim)
    r = s.div(n) if n else s.div(0.0)
    return _finish(r, out)


def nansum(input: Tensor, dim=None, keepdim: bool = False, *, dtype=None) -> Tensor:
    """Sum treating NaN as zero."""
    x = input.where(~input.isnan(), 0) if input.dtype.is_floating_point else input
    return sum(x, dim, keepdim, dtype=dtype)


def nanmean(input: Tensor, dim=None, keepdim: bool = False, *, dtype=None) -> Tensor:
    """Mean over the non-NaN elements."""
    notnan = ~input.isnan()
    return nansum(input, dim, keepdim, dtype=dtype).div(sum(notnan, dim, keepdim))


def var(input: Tensor, dim=None, unbiased=None, keepdim: bool = False, *, correction=None, out=None) -> Tensor:
    """Variance over ``dim`` with Bessel's ``correction`` (default 1; ``unbiased=False`` means 0)."""
    if not input.dtype.is_floating_point:
        raise RuntimeError(f"var(): only supports floating point dtypes, got {input.dtype}")
    if isinstance(dim, bool):           # var(x, False): the old unbiased positional form
        dim, unbiased = None, dim
    if correction is None:
        correction = 1 if unbiased is None or unbiased else 0
    dims = _reduced_dims(input, dim, "var")
    (r,) = _run("var", input, dims, [input.dtype], {"correction": correction}, keepdim)
    return _finish(r, out)


def std(input: Tensor, dim=None, unbiased=None, keepdim: bool = False, *, correction=None, out=None) -> Tensor:
    """Standard deviation: ``sqrt(var(...))``."""
    r = var(input, dim, unbiased, keepdim, correction=correction).sqrt()
    return _finish(r, out)


def var_mean(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    return var(input, dim, unbiased, keepdim, correction=correction), mean(input, dim, keepdim)


def std_mean(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    return std(input, dim, unbiased, keepdim, correction=correction), mean(input, dim, keepdim)


# ---- extremes ----------------------------------------------------------------------------------
def amax(input: Tensor, dim=(), keepdim: bool = False, *, out=None) -> Tensor:
    """Max over ``dim`` (all dims by default); NaN propagates."""
    dims = _reduced_dims(input, dim, "amax")
    _check_nonempty(input, dims, "amax")
    (r,) = _run("amax", input, dims, [input.dtype], {}, keepdim)
    return _finish(r, out)


def amin(input: Tensor, dim=(), keepdim: bool = False, *, out=None) -> Tensor:
    """Min over ``dim`` (all dims by default); NaN propagates."""
    dims = _reduced_dims(input, dim, "amin")
    _check_nonempty(input, dims, "amin")
    (r,) = _run("amin", input, dims, [input.dtype], {}, keepdim)
    return _finish(r, out)


def _extreme_with_index(op: str, input: Tensor, dim, keepdim: bool):
    d = _wrap_dim(dim, input.ndim, op)
    dims = (d,) if input.ndim else ()
    _check_nonempty(input, dims, op)
    v, i = _run(f"{op}_with_indices", input, dims, [input.dtype, D.int64], {}, keepdim)
    return values_indices(v, i)


def max(input: Tensor, dim=None, keepdim: bool = False, *, out=None):
    """``max(x)``: the largest element; ``max(x, dim)``: (values, indices); ``max(x, other)``: maximum."""
    if isinstance(dim, Tensor):
        return input.maximum(dim, out=out)
    if dim is None:
        return amax(input, out=out)
    r = _extreme_with_index("max", input, dim, keepdim)
    return r if out is None else values_indices(_finish(r.values, out[0]), _finish(r.indices, out[1]))


def min(input: Tensor, dim=None, keepdim: bool = False, *, out=None):
    """``min(x)``: the smallest element; ``min(x, dim)``: (values, indices); ``min(x, other)``: minimum."""
    if isinstance(dim, Tensor):
        return input.minimum(dim, out=out)
    if dim is None:
        return amin(input, out=out)
    r = _extreme_with_index("min", input, dim, keepdim)
    return r if out is None else values_indices(_finish(r.values, out[0]), _finish(r.indices, out[1]))


def aminmax(input: Tensor, *, dim=None, keepdim: bool = False):
    return namedtuple("aminmax", ["min", "max"])(amin(input, dim if dim is not None else (), keepdim),
                                                amax(input, dim if dim is not None else (), keepdim))


def _arg(op: str, input: Tensor, dim, keepdim: bool) -> Tensor:
    if dim is None:
        flat = input.reshape(-1)
        _check_nonempty(flat, (0,), op)
        (r,) = _run(op, flat, (0,), [D.int64], {})
        return r.reshape((1,) * input.ndim) if keepdim else r.reshape(())
    d = _wrap_dim(dim, input.ndim, op)
    dims = (d,) if input.ndim else ()
    _check_nonempty(input, dims, op)
    (r,) = _run(op, input, dims, [D.int64], {}, keepdim)
    return r


def argmax(input: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    """Index of the first maximum (NaN counts as the maximum), over all elements or along ``dim``."""
    return _arg("argmax", input, dim, keepdim)


def argmin(input: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    """Index of the first minimum (NaN counts as the minimum)."""
    return _arg("argmin", input, dim, keepdim)


# ---- logic -----------------------------------------------------------------------------------------
def _logical(op, input, dim, keepdim, out):
    dims = _reduced_dims(input, dim, op)
    rdt = D.uint8 if input.dtype is D.uint8 else D.bool_   # PyTorch keeps uint8 here
    (r,) = _run(op, input, dims, [rdt], {}, keepdim)
    return _finish(r, out)


def all(input: Tensor, dim=None, keepdim: bool = False, *, out=None) -> Tensor:
    """True where every element is nonzero."""
    return _logical("all", input, dim, keepdim, out)


def any(input: Tensor, dim=None, keepdim: bool = False, *, out=None) -> Tensor:
    """True where any element is nonzero."""
    return _logical("any", input, dim, keepdim, out)


def count_nonzero(input: Tensor, dim=None) -> Tensor:
    return sum(input.ne(0), dim)


# ---- float reductions ------------------------------------------------------------------------------
def _float_input(x: Tensor) -> Tensor:
    return x if x.dtype.is_floating_point else to(x, D.get_default_dtype())


def logsumexp(input: Tensor, dim, keepdim: bool = False, *, out=None) -> Tensor:
    """``log(sum(exp(input)))`` over ``dim``, computed stably."""
    x = _float_input(input)
    dims = _reduced_dims(x, dim, "logsumexp")
    (r,) = _run("logsumexp", x, dims, [x.dtype], {}, keepdim)
    return _finish(r, out)


def norm(input: Tensor, p="fro", dim=None, keepdim: bool = False, *, dtype=None, out=None) -> Tensor:
    """Vector p-norm over ``dim`` (p: 2/'fro', 1, inf, -inf, 0, any positive number)."""
    x = _cast_input(input, dtype)
    if not x.dtype.is_floating_point:
        raise RuntimeError(f"norm(): input dtype should be a floating point dtype, got {x.dtype}")
    if p in ("fro", None):
        p = 2
    if p == "nuc":
        raise NotImplementedError("norm(p='nuc') is not supported")
    dims = _reduced_dims(x, dim, "norm")
    if (p < 0 or p == float("inf")) and builtins.any(x.shape[d] == 0 for d in dims):
        raise RuntimeError(f"norm: cannot compute the {p} norm over an empty dim (input shape {list(x.shape)}): "
                           f"the operation has no identity")
    (r,) = _run("norm", x, dims, [x.dtype], {"p": float(p)}, keepdim)
    return _finish(r, out)


# ---- along one dim ---------------------------------------------------------------------------------
def _along(op: str, input: Tensor, dim: int, dtype, out_dtype_fn) -> Tensor:
    x = _cast_input(input, dtype)
    d = _wrap_dim(dim, x.ndim, op)
    (r,) = _run(op, x, (d,) if x.ndim else (), [out_dtype_fn(x.dtype)], {}, shape=x.shape)
    return r


def cumsum(input: Tensor, dim: int, *, dtype=None, out=None) -> Tensor:
    """Running sum along ``dim``; integers accumulate in int64."""
    r = _along("cumsum", input, dim, dtype, _int_accumulate)
    return _finish(r, out)


def cumprod(input: Tensor, dim: int, *, dtype=None, out=None) -> Tensor:
    """Running product along ``dim``; integers accumulate in int64."""
    r = _along("cumprod", input, dim, dtype, _int_accumulate)
    return _finish(r, out)


def softmax(input: Tensor, dim: int, dtype=None) -> Tensor:
    """``exp(x - max) / sum(exp(x - max))`` along ``dim``, in one kernel."""
    x = _float_input(_cast_input(input, dtype))
    return _along("softmax", x, dim, None, lambda d: d)


def log_softmax(input: Tensor, dim: int, dtype=None) -> Tensor:
    """``x - logsumexp(x)`` along ``dim``, in one kernel."""
    x = _float_input(_cast_input(input, dtype))
    return _along("log_softmax", x, dim, None, lambda d: d)
