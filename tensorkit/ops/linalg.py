"""Matrix products. ``matmul`` is the primitive (PyTorch's 1-D, 2-D and batched-broadcast
rules); ``mm``, ``bmm``, ``mv``, ``dot``, ``addmm``, ``outer`` are composites over it.
Operands must share a dtype (PyTorch does not promote here) and a device."""
from __future__ import annotations

from .. import _dispatch
from .. import dtypes as D
from .._tensor import Tensor
from ..amp.autocast import autocast_to
from .creation import empty, resize_out
from .pointwise import broadcast_shapes


def _check(op: str, a: Tensor, b: Tensor) -> None:
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise TypeError(f"{op}(): arguments must be Tensors, got {type(a).__name__} and {type(b).__name__}")
    if a.dtype is not b.dtype:
        raise RuntimeError(f"{op}: expected both operands to have the same dtype, but got {a.dtype} and {b.dtype}")
    if a.device != b.device:
        raise RuntimeError(f"{op}: expected both operands to be on the same device, but got {a.device} and {b.device}")
    if a.ndim == 0 or b.ndim == 0:
        raise RuntimeError(f"{op}: both arguments need at least 1 dimension, got {a.ndim}D and {b.ndim}D")


@autocast_to("lower")
def matmul(input: Tensor, other: Tensor, *, out: Tensor | None = None) -> Tensor:
    """Matrix product with PyTorch's rules: 1-D x 1-D is a dot product, a 1-D operand is
    treated as a row (left) or column (right) vector and that dim is dropped, and leading
    batch dims broadcast.

    Example::

        >>> tk.ones(5, 2, 3) @ tk.ones(3, 4)    # shape (5, 2, 4)
    """
    _check("matmul", input, other)
    a = input.unsqueeze(0) if input.ndim == 1 else input
    b = other.unsqueeze(-1) if other.ndim == 1 else other
    n, k = a.shape[-2:]
    k2, m = b.shape[-2:]
    if k != k2:
        raise RuntimeError(f"matmul: shapes cannot be multiplied ({'x'.join(map(str, input.shape))} and "
                           f"{'x'.join(map(str, other.shape))}): inner sizes {k} and {k2} differ")
    batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
    r = empty(batch + (n, m), dtype=a.dtype, device=a.device)
    full_a, full_b = batch + (n, k), batch + (k, m)       # expand only what needs it: a view costs ~5 us
    _dispatch.lookup("matmul", a.device.type, a.dtype)(a if a.shape == full_a else a.expand(full_a),
                                                       b if b.shape == full_b else b.expand(full_b), r)
    if _dispatch.observers:
        _dispatch.notify("matmul", (a, b), (r,), {})
    if input.ndim == 1:
        r = r.squeeze(-2)
    if other.ndim == 1:
        r = r.squeeze(-1)
    if out is not None:
        resize_out(out, r.shape)
        return out.copy_(r)
    return r


@autocast_to("lower")
def mm(input: Tensor, mat2: Tensor, *, out=None) -> Tensor:
    """Product of two matrices."""
    _check("mm", input, mat2)
    if input.ndim != 2 or mat2.ndim != 2:
        raise RuntimeError(f"mm: expected 2-D matrices, got {input.ndim}D and {mat2.ndim}D")
    return matmul(input, mat2, out=out)


@autocast_to("lower")
def bmm(input: Tensor, mat2: Tensor, *, out=None) -> Tensor:
    """Batched product of (b, n, k) and (b, k, m); batch sizes must match (no broadcasting)."""
    _check("bmm", input, mat2)
    if input.ndim != 3 or mat2.ndim != 3:
        raise RuntimeError(f"bmm: expected 3-D tensors, got {input.ndim}D and {mat2.ndim}D")
    if input.shape[0] != mat2.shape[0]:
        raise RuntimeError(f"bmm: batch sizes differ: {list(input.shape)} and {list(mat2.shape)}")
    return matmul(input, mat2, out=out)


@autocast_to("lower", ("cuda",))
def mv(input: Tensor, vec: Tensor, *, out=None) -> Tensor:
    """Matrix-vector product."""
    _check("mv", input, vec)
    if input.ndim != 2 or vec.ndim != 1:
        raise RuntimeError(f"mv: expected a 2-D matrix and a 1-D vector, got {input.ndim}D and {vec.ndim}D")
    return matmul(input, vec, out=out)


@autocast_to("promote")
def dot(input: Tensor, other: Tensor, *, out=None) -> Tensor:
    """Inner product of two 1-D tensors of the same size."""
    _check("dot", input, other)
    if input.ndim != 1 or other.ndim != 1:
        raise RuntimeError(f"1D tensors expected, but got {input.ndim}D and {other.ndim}D tensors")
    if input.shape[0] != other.shape[0]:
        raise RuntimeError(f"inconsistent tensor size, expected tensor [{input.shape[0]}] and src "
                           f"[{other.shape[0]}] to have the same number of elements, but got "
                           f"{input.shape[0]} and {other.shape[0]} elements respectively")
    return matmul(input, other, out=out)


inner = vdot = dot


def outer(input: Tensor, vec2: Tensor) -> Tensor:
    """Outer product of two 1-D tensors."""
    if input.ndim != 1 or vec2.ndim != 1:
        raise RuntimeError(f"outer: expected 1-D tensors, got {input.ndim}D and {vec2.ndim}D")
    return input.unsqueeze(1) * vec2.unsqueeze(0)


ger = outer


@autocast_to("lower")
def addmm(input: Tensor, mat1: Tensor, mat2: Tensor, *, beta=1, alpha=1, out=None) -> Tensor:
    """``beta * input + alpha * (mat1 @ mat2)``."""
    p = mm(mat1, mat2)
    if alpha != 1:
        p = p * alpha
    if beta == 0:               # PyTorch: input is ignored (NaN in it does not propagate)
        r = p
    else:
        r = p + (input if beta == 1 else input * beta)
    if out is not None:
        resize_out(out, r.shape)
        return out.copy_(r)
    return r


@autocast_to("lower", ("cuda",))
def addmv(input, mat, vec, *, beta=1, alpha=1):
    p = mv(mat, vec)
    p = p * alpha if alpha != 1 else p
    return p if beta == 0 else p + (input if beta == 1 else input * beta)


@autocast_to("lower")
def baddbmm(input, batch1, batch2, *, beta=1, alpha=1):
    p = bmm(batch1, batch2)
    p = p * alpha if alpha != 1 else p
    return p if beta == 0 else p + (input if beta == 1 else input * beta)


# ---- backward ---------------------------------------------------------------------------------------
@_dispatch.defvjp("matmul")
def _matmul_vjp(g, node):
    # batch dims that were broadcast are summed back by the engine (to each input's shape)
    a, b = node.inputs
    needs = node.needs
    ga = matmul(g, b.mT) if needs[0] else None
    if not needs[1]:
        return ga, None
    if b.ndim == 2 and a.ndim > 2 and g.ndim == a.ndim:
        # a matrix shared by every batch (a linear layer on (*, in) input): one product over the
        # batch rows, not a per-batch (k, m) gradient for the engine to sum (batch times the
        # memory and a reduction: 0.9 GB for the LSTM LM's decoder)
        return ga, matmul(a.reshape(-1, a.shape[-1]).mT, g.reshape(-1, g.shape[-1]))
    return ga, matmul(a.mT, g)
