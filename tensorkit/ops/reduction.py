"""Reduction primitives (sum, prod, amax, argmax, var, all, logsumexp, norm, scans, softmax).

The meta rule is shared: normalise ``dim`` (int, tuple or None), compute the kept shape
and the result dtype (integer sums accumulate in int64, as PyTorch). Kernels receive the
input and outputs shaped with ``keepdim=True`` plus the sorted reduced dims, and look up
by (op, device, dtype of the input). ``mean``, ``std``, ``max(dim)`` and the like are
composites in ``functional`` terms, written here beside the primitives they use.
"""
from __future__ import annotations

import builtins
import math
from collections import namedtuple

from .. import _dispatch
from .. import dtypes as D
from .._tensor import Tensor, _wrap_dim
from ..amp.autocast import autocast_to
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
@autocast_to("float32", ("cuda",))
def sum(input: Tensor, dim=None, keepdim: bool = False, *, dtype=None, out=None) -> Tensor:
    """Sum over ``dim`` (all dims by default); integer and bool inputs sum in int64."""
    x = _cast_input(input, dtype)
    dims = _reduced_dims(x, dim, "sum")
    (r,) = _run("sum", x, dims, [_int_accumulate(x.dtype)], {}, keepdim)
    return _finish(r, out)


@autocast_to("float32")
def prod(input: Tensor, dim=None, keepdim: bool = False, *, dtype=None, out=None) -> Tensor:
    """Product over ``dim`` (one dim, or all); integer and bool inputs multiply in int64."""
    x = _cast_input(input, dtype)
    dims = _reduced_dims(x, dim, "prod")
    (r,) = _run("prod", x, dims, [_int_accumulate(x.dtype)], {}, keepdim)
    return _finish(r, out)


@autocast_to("keep")
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


@autocast_to("keep")
def nansum(input: Tensor, dim=None, keepdim: bool = False, *, dtype=None) -> Tensor:
    """Sum treating NaN as zero."""
    x = input.where(~input.isnan(), 0) if input.dtype.is_floating_point else input
    return sum(x, dim, keepdim, dtype=dtype)


@autocast_to("keep")
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


@autocast_to("float32", ("cuda",))
def logsumexp(input: Tensor, dim, keepdim: bool = False, *, out=None) -> Tensor:
    """``log(sum(exp(input)))`` over ``dim``, computed stably."""
    x = _float_input(input)
    dims = _reduced_dims(x, dim, "logsumexp")
    (r,) = _run("logsumexp", x, dims, [x.dtype], {}, keepdim)
    return _finish(r, out)


@autocast_to("float32", ("cuda",))
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


@autocast_to("float32", ("cuda",))
def cumsum(input: Tensor, dim: int, *, dtype=None, out=None) -> Tensor:
    """Running sum along ``dim``; integers accumulate in int64."""
    r = _along("cumsum", input, dim, dtype, _int_accumulate)
    return _finish(r, out)


@autocast_to("float32", ("cuda",))
def cumprod(input: Tensor, dim: int, *, dtype=None, out=None) -> Tensor:
    """Running product along ``dim``; integers accumulate in int64."""
    r = _along("cumprod", input, dim, dtype, _int_accumulate)
    return _finish(r, out)


@autocast_to("float32", ("cuda",))
def softmax(input: Tensor, dim: int, dtype=None) -> Tensor:
    """``exp(x - max) / sum(exp(x - max))`` along ``dim``, in one kernel."""
    x = _float_input(_cast_input(input, dtype))
    return _along("softmax", x, dim, None, lambda d: d)


@autocast_to("float32", ("cuda",))
def log_softmax(input: Tensor, dim: int, dtype=None) -> Tensor:
    """``x - logsumexp(x)`` along ``dim``, in one kernel."""
    x = _float_input(_cast_input(input, dtype))
    return _along("log_softmax", x, dim, None, lambda d: d)


def sum_to_size(input: Tensor, *size) -> Tensor:
    """Sum ``input`` down to ``size``, a shape it broadcasts from: the leading dims it lacks
    and its size-1 dims are summed (how gradients undo broadcasting).

    Example::

        >>> tk.ones(2, 3, 4).sum_to_size(3, 1).shape
        tk.Size([3, 1])
    """
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = size[0]
    size = tuple(size)
    lead = input.ndim - len(size)
    if lead < 0 or builtins.any(s != 1 and s != n for s, n in zip(size, input.shape[lead:])):
        raise RuntimeError(f"sum_to_size: size {list(size)} is not expandable to the tensor's size "
                           f"{list(input.shape)}")
    dims = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(size) if s == 1 and input.shape[lead + i] != 1)
    if not dims:
        return input
    r = sum(input, dims, keepdim=True)
    return r.reshape(size) if lead else r


# ---- backward (see _dispatch.VJP: fn(g, node) -> one gradient per input) ------------------------------
def _keep(t: Tensor, node) -> Tensor:
    """A reduction's result (or its gradient) with the reduced dims back as size-1 dims."""
    if node.params["keepdim"]:
        return t
    shape = list(node.shapes[0])
    for d in node.params["dims"]:
        shape[d] = 1
    return t.reshape(shape)


def _count(node) -> int:
    n = 1
    for d in node.params["dims"]:
        n *= node.shapes[0][d]
    return n


@_dispatch.defvjp("sum", inputs=False)
def _sum_vjp(g, node):
    return (_keep(g, node).expand(node.shapes[0]),)


def _exclusive_cumprod(x: Tensor) -> Tensor:
    """Along the last dim: ``out[i] = x[0] * ... * x[i-1]`` (1 for i = 0), exact with zeros."""
    from .creation import ones
    one = ones(x.shape[:-1] + (1,), dtype=x.dtype, device=x.device)
    from .shape import cat
    return cat([one, cumprod(x[..., :-1], -1)], -1)


@_dispatch.defvjp("prod")
def _prod_vjp(g, node):
    # d prod / d x_i = the product of the other elements: (product before i) * (product after i),
    # exact when some are zero (g * out / x is not)
    x, dims = node.inputs[0], node.params["dims"]
    g = _keep(g, node)
    if not dims:
        return (g,)
    if x.numel() == 0:
        from .creation import zeros_like
        return (zeros_like(x),)
    order = [d for d in range(x.ndim) if d not in dims] + list(dims)
    xt = x.permute(order)
    flat = xt.reshape(tuple(xt.shape[:x.ndim - len(dims)]) + (-1,))
    from .shape import flip
    others = _exclusive_cumprod(flat) * flip(_exclusive_cumprod(flip(flat, -1)), -1)
    inverse = [order.index(d) for d in range(x.ndim)]
    return (g * others.reshape(xt.shape).permute(inverse),)


@_dispatch.defvjp("var")
def _var_vjp(g, node):
    x, dims = node.inputs[0], node.params["dims"]
    n = _count(node) - node.params["correction"]
    scale = 2.0 / n if n else math.inf
    return (_keep(g, node) * (x - mean(x, dims, keepdim=True)) * scale,)


def _extreme_vjp(g, node):
    # PyTorch's amax/amin backward: ties share the gradient evenly
    x, out, dims = node.inputs[0], _keep(node.outputs[0], node), node.params["dims"]
    mask = x == out
    return (mask.where(_keep(g, node) / sum(mask, dims, keepdim=True), 0.0),)


_dispatch.defvjp("amax", outputs=True)(_extreme_vjp)
_dispatch.defvjp("amin", outputs=True)(_extreme_vjp)


def _with_indices_vjp(g, node):
    # values picked by index: the gradient goes to the index reported (no splitting), as PyTorch
    dims = node.params["dims"]
    if not dims:
        return (g,)
    from .creation import zeros
    from .indexing import scatter
    z = zeros(node.shapes[0], dtype=g.dtype, device=g.device)
    return (scatter(z, dims[0], _keep(node.outputs[1], node), _keep(g, node)),)


_dispatch.defvjp("max_with_indices", inputs=False, outputs=(1,))(_with_indices_vjp)
_dispatch.defvjp("min_with_indices", inputs=False, outputs=(1,))(_with_indices_vjp)


@_dispatch.defvjp("logsumexp", outputs=True)
def _logsumexp_vjp(g, node):
    x = node.inputs[0]
    return (_keep(g, node) * (x - _keep(node.outputs[0], node)).exp(),)


@_dispatch.defvjp("norm", outputs=True)
def _norm_vjp(g, node):
    x, p, dims = node.inputs[0], node.params["p"], node.params["dims"]
    out, g = _keep(node.outputs[0], node), _keep(g, node)
    if p == 0:
        from .creation import zeros_like
        return (zeros_like(x),)
    if p == 1:
        return (g * x.sign(),)
    if math.isinf(p):           # as amax/amin of |x|: ties share the gradient
        mask = x.abs() == out
        return (mask.where(g * x.sign() / sum(mask, dims, keepdim=True), 0.0),)
    # d/dx (sum |x|^p)^(1/p) = sign(x) |x|^(p-1) / norm^(p-1); 0 where the norm is 0
    scaled = x if p == 2 else x.sign() * x.abs() ** (p - 1)
    return ((out == 0).where(0.0, g * scaled / (out if p == 2 else out ** (p - 1))),)


@_dispatch.defvjp("cumsum", inputs=False)
def _cumsum_vjp(g, node):
    if not node.params["dims"]:
        return (g,)
    from .shape import flip
    d = node.params["dims"][0]
    return (flip(cumsum(flip(g, d), d), d),)


_CUMPROD_SQUARE = 128    # dims up to this size take the exact O(n^2) backward (zeros allowed)


@_dispatch.defvjp("cumprod", outputs=True)
def _cumprod_vjp(g, node):
    # out_j = prod_{k<=j} x_k, so d out_j / d x_i = prod_{k<=j, k!=i} x_k for j >= i: with
    # M[i, k] = x_k (1 at k = i), that is cumprod(M)[i, j] -- exact with zeros, O(n^2) memory
    if not node.params["dims"]:
        return (g,)
    d = node.params["dims"][0]
    x, out = node.inputs[0], node.outputs[0]
    n = x.shape[d]
    if n > _CUMPROD_SQUARE:
        if bool((x == 0).any()):
            raise NotImplementedError(f"cumprod backward: a dim of {n} (> {_CUMPROD_SQUARE}) elements with zeros "
                                      f"in it is not supported")
        from .shape import flip
        return (flip(cumsum(flip(g * out, d), d), d) / x,)
    from .creation import arange
    xl, gl = x.movedim(d, -1), g.movedim(d, -1)
    i = arange(n, device=x.device)
    m = (i.unsqueeze(1) == i).where(1.0, xl.unsqueeze(-2)).to(x.dtype)      # [..., i, k]
    upper = i.unsqueeze(0) >= i.unsqueeze(1)                                 # j >= i
    grad = (upper.where(m.cumprod(-1) * gl.unsqueeze(-2), 0.0)).sum(-1)
    return (grad.movedim(-1, d),)


@_dispatch.defvjp("softmax", inputs=False, outputs=True)
def _softmax_vjp(g, node):
    out, dims = node.outputs[0], node.params["dims"]
    return (out * (g - sum(g * out, dims, keepdim=True)),)


@_dispatch.defvjp("log_softmax", inputs=False, outputs=True)
def _log_softmax_vjp(g, node):
    out, dims = node.outputs[0], node.params["dims"]
    return (g - out.exp() * sum(g, dims, keepdim=True),)
