"""Joining and rearranging: ``cat`` (the primitive: one kernel copies every piece into its
slot), and composites over it and over views: ``stack``, ``hstack``, ``vstack``, ``roll``,
``flip``, ``tril``, ``triu``."""
from __future__ import annotations

from .. import _dispatch
from .. import dtypes as D
from .._tensor import Tensor, _wrap_dim
from . import pointwise as P
from .creation import arange, empty, resize_out


def cat(tensors, dim: int = 0, *, out: Tensor | None = None) -> Tensor:
    """Join tensors along an existing dim; they are promoted to a common dtype.

    As in PyTorch, 1-D empty tensors (shape ``[0]``) are skipped whatever the other shapes.
    """
    tensors = list(tensors)
    if not tensors:
        raise RuntimeError("cat(): expected a non-empty list of Tensors")
    for i, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            raise TypeError(f"cat(): expected a sequence of Tensors, but item {i} is {type(t).__name__}")
    parts = [t for t in tensors if not (t.ndim == 1 and t.shape[0] == 0)] or tensors[:1]
    ref = parts[0]
    if ref.ndim == 0:
        raise RuntimeError("cat(): zero-dimensional tensor (at position 0) cannot be concatenated")
    d = _wrap_dim(dim, ref.ndim, "cat")
    for i, t in enumerate(parts):
        if t.ndim != ref.ndim:
            raise RuntimeError(f"cat(): tensors must have same number of dimensions: got {ref.ndim} and {t.ndim}")
        for k in range(ref.ndim):
            if k != d and t.shape[k] != ref.shape[k]:
                raise RuntimeError(f"cat(): sizes of tensors must match except in dimension {d}: expected size "
                                   f"{ref.shape[k]} but got size {t.shape[k]} for tensor number {i} in the list "
                                   f"(shapes {[list(x.shape) for x in parts]})")
        if t.device != ref.device:
            raise RuntimeError(f"cat(): expected all tensors to be on the same device, but found {ref.device} and {t.device}")
    dtype = D.result_type(*parts) if len(parts) > 1 else ref.dtype
    shape = list(ref.shape)
    shape[d] = sum(t.shape[d] for t in parts)
    r = empty(tuple(shape), dtype=dtype, device=ref.device)
    _dispatch.lookup("cat", ref.device.type, dtype)(parts, d, r)
    if _dispatch.observers:
        _dispatch.notify("cat", tuple(parts), (r,), {"dim": d})
    if out is not None:
        resize_out(out, r.shape)
        return out.copy_(r)
    return r


concat = concatenate = cat


def stack(tensors, dim: int = 0, *, out=None) -> Tensor:
    """Join tensors of equal shape along a new dim."""
    tensors = list(tensors)
    if not tensors:
        raise RuntimeError("stack expects a non-empty TensorList")
    for i, t in enumerate(tensors):
        if tuple(t.shape) != tuple(tensors[0].shape):
            raise RuntimeError(f"stack expects each tensor to be equal size, but got {list(tensors[0].shape)} at "
                               f"entry 0 and {list(t.shape)} at entry {i}")
    d = _wrap_dim(dim, tensors[0].ndim + 1, "stack")
    return cat([t.unsqueeze(d) for t in tensors], d, out=out)


def hstack(tensors) -> Tensor:
    """Join along the columns (dim 1), or along dim 0 for 1-D tensors; 0-d tensors count as 1-D."""
    tensors = [t.reshape(1) if t.ndim == 0 else t for t in tensors]
    if not tensors:
        raise RuntimeError("hstack expects a non-empty TensorList")
    return cat(tensors, 0 if tensors[0].ndim == 1 else 1)


def vstack(tensors) -> Tensor:
    """Join along dim 0; 0-d and 1-d tensors count as rows ([1, n])."""
    tensors = list(tensors)
    if not tensors:
        raise RuntimeError("vstack expects a non-empty TensorList")
    return cat([t.reshape(1, -1) if t.ndim < 2 else t for t in tensors], 0)


def roll(input: Tensor, shifts, dims=None) -> Tensor:
    """Rotate elements along ``dims`` by ``shifts`` (flattened first when ``dims`` is None)."""
    if dims is None:
        return roll(input.flatten(), shifts, 0).view(input.shape)
    shifts = (shifts,) if isinstance(shifts, int) else tuple(shifts)
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    if len(shifts) != len(dims):
        raise RuntimeError(f"roll: shifts {list(shifts)} and dims {list(dims)} must have the same length")
    x = input
    for s, d in zip(shifts, dims):
        d = _wrap_dim(d, x.ndim, "roll")
        n = x.shape[d]
        if n == 0:
            continue
        s %= n
        if s:
            x = cat([x.narrow(d, n - s, s), x.narrow(d, 0, n - s)], d)
    return x if x is not input else input.clone()


def flip(input: Tensor, dims) -> Tensor:
    """Reverse the order of elements along ``dims`` (a copy, as in PyTorch)."""
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    x = input
    for d in dims:
        d = _wrap_dim(d, x.ndim, "flip")
        n = x.shape[d]
        x = x.index_select(d, arange(n - 1, -1, -1, device=x.device))
    return x if x is not input else input.clone()


def _triangle(input: Tensor, diagonal: int, lower: bool, op: str) -> Tensor:
    if input.ndim < 2:
        raise RuntimeError(f"{op}: input tensor must have at least 2 dimensions, got {input.ndim}")
    n, m = input.shape[-2:]
    rows = arange(n, device=input.device).unsqueeze(1)
    cols = arange(m, device=input.device).unsqueeze(0)
    keep = (cols - rows <= diagonal) if lower else (cols - rows >= diagonal)
    return P.where(keep, input, 0).to(input.dtype)


def tril(input: Tensor, diagonal: int = 0) -> Tensor:
    """The lower triangle of the last two dims (elements with ``col - row <= diagonal``)."""
    return _triangle(input, diagonal, True, "tril")


def triu(input: Tensor, diagonal: int = 0) -> Tensor:
    """The upper triangle of the last two dims (elements with ``col - row >= diagonal``)."""
    return _triangle(input, diagonal, False, "triu")


@_dispatch.defvjp("cat", inputs=False)
def _cat_vjp(g, node):
    d, start, grads = node.params["dim"], 0, []
    for shape in node.shapes:
        grads.append(g.narrow(d, start, shape[d]))
        start += shape[d]
    return tuple(grads)
