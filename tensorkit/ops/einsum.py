"""Einstein summation, a composite: the equation is parsed here, then evaluated with views
(``diagonal``, ``squeeze``, ``permute``, ``reshape``), ``sum`` and ``matmul``. No kernel and
no backward of its own; gradients and both devices come from those ops.

Labels are letters (``str``) for subscripts and ``int`` for the dims an ellipsis covers,
numbered over the broadcast ellipsis shape (right-aligned across operands).
"""
from __future__ import annotations

import math
from collections import Counter

from .. import dtypes as D
from .._tensor import Tensor
from ..amp.autocast import autocast_to
from .linalg import matmul


def _parse(eq: str) -> tuple[list[list], list | None]:
    """Per-operand subscript lists and the output's (None in implicit mode); ``...`` is Ellipsis."""
    terms, output, i = [[]], None, 0
    while i < len(eq):
        cur = terms[-1] if output is None else output
        where = f"operand {len(terms) - 1}" if output is None else "the output"
        if eq[i] == " ":
            i += 1
        elif output is None and eq.startswith("->", i):
            output, i = [], i + 2
        elif output is None and eq[i] == ",":
            terms.append([])
            i += 1
        elif eq[i] == ".":
            if not eq.startswith("...", i):
                raise RuntimeError(f"einsum(): found '.' at index {i} of the equation for {where} that is not "
                                   f"part of an ellipsis '...'")
            if ... in cur:
                raise RuntimeError(f"einsum(): more than one ellipsis for {where} (the second at index {i})")
            cur.append(...)
            i += 3
        elif eq[i].isascii() and eq[i].isalpha():
            cur.append(eq[i])
            i += 1
        else:
            raise RuntimeError(f"einsum(): invalid subscript {eq[i]!r} at index {i} of the equation "
                               f"{eq!r}; subscripts must be in [a-zA-Z] (or '...')")
    return terms, output


def _name(label) -> str:
    return f"subscript {label}" if isinstance(label, str) else f"dimension {label} covered by the ellipsis"


def _prepare(x: Tensor, labels: list, sizes: dict) -> tuple[Tensor, list]:
    """Take the diagonal of repeated labels, then drop size-1 dims that broadcast against a larger size."""
    for label in dict.fromkeys(labels):
        while labels.count(label) > 1:
            a = labels.index(label)
            b = labels.index(label, a + 1)
            x = x.diagonal(0, a, b)                         # the diagonal becomes the last dim
            labels = [l for d, l in enumerate(labels) if d not in (a, b)] + [label]
    for d in reversed(range(len(labels))):
        if x.shape[d] == 1 and sizes[labels[d]] != 1:      # constant along the label: it broadcasts
            x = x.squeeze(d)
            labels = labels[:d] + labels[d + 1:]
    return x, labels


def _sum_out(x: Tensor, labels: list, keep: set) -> tuple[Tensor, list]:
    """Sum the dims whose labels are not in ``keep`` (integers stay in their dtype, as numpy's einsum)."""
    dims = [d for d, l in enumerate(labels) if l not in keep]
    if not dims:
        return x, labels
    r = x.sum(dims)
    return (r if r.dtype is x.dtype else r.to(x.dtype)), [l for l in labels if l in keep]


def _contract(x: Tensor, xl: list, y: Tensor, yl: list, keep: set) -> tuple[Tensor, list]:
    """One pair as a batched matmul: (batch, left, contracted) @ (batch, contracted, right)."""
    batch = [l for l in xl if l in yl and l in keep]
    con = [l for l in xl if l in yl and l not in keep]
    left = [l for l in xl if l not in yl]
    right = [l for l in yl if l not in xl]
    size = dict(zip(xl, x.shape)) | dict(zip(yl, y.shape))
    nb, nl, nc, nr = (math.prod(size[l] for l in group) for group in (batch, left, con, right))
    a = x.permute([xl.index(l) for l in batch + left + con]).reshape(nb, nl, nc)
    b = y.permute([yl.index(l) for l in batch + con + right]).reshape(nb, nc, nr)
    out = batch + left + right
    return matmul(a, b).reshape([size[l] for l in out]), out


@autocast_to("lower")
def einsum(equation: str, *operands: Tensor) -> Tensor:
    """Sum of products of the operands' elements, as described by ``equation`` (Einstein notation).

    ``equation`` names each operand's dims with letters (``[a-zA-Z]``), operands separated by
    commas; ``->`` is followed by the output's letters. Without ``->`` (implicit mode) the output
    is every letter that appears exactly once, in alphabetical order (upper case first). A letter
    repeated within one operand takes the diagonal; letters missing from the output are summed.
    ``...`` stands for the remaining dims, which broadcast across operands; a size-1 dim of any
    letter broadcasts too, as in PyTorch. Operands are contracted pairwise, left to right.

    Differences from PyTorch, where its behaviour is inconsistent: operands of different dtypes
    are always promoted (``tk.result_type``; PyTorch promotes for products without a summed
    letter and raises for the others), and the result always has that dtype (PyTorch returns
    int64 for some integer equations, such as ``'ij->'``, and the operands' dtype for others).

    Args:
        equation: the subscripts, e.g. ``'bij,bjk->bik'``; spaces are ignored.
        operands: the tensors, as separate arguments or as one list.

    Returns:
        The result; a view of the operand when ``equation`` only permutes or takes diagonals.

    Example::

        >>> a, b = tk.randn(2, 3), tk.randn(3, 4)
        >>> tk.einsum('ij,jk->ik', a, b).shape      # a @ b
        tk.Size([2, 4])
        >>> tk.einsum('ii', tk.eye(3))              # trace
        tensor(3.)
    """
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    if not operands:
        raise ValueError("einsum(): must provide the equation and at least one operand")
    for k, x in enumerate(operands):
        if not isinstance(x, Tensor):
            raise TypeError(f"einsum(): operand {k} must be a Tensor, got {type(x).__name__}")
    terms, output = _parse(equation)
    if len(terms) != len(operands):
        raise RuntimeError(f"einsum(): the equation {equation!r} has subscripts for {len(terms)} operand(s) but "
                           f"{len(operands)} operand(s) were given")

    n_ell = max((x.ndim - len(t) + 1 for t, x in zip(terms, operands) if ... in t), default=0)
    labels, sizes, seen_in = [], {}, {}
    for k, (t, x) in enumerate(zip(terms, operands)):
        n = len(t) - (... in t)
        if n > x.ndim or (n != x.ndim and ... not in t):
            raise RuntimeError(
                f"einsum(): the number of subscripts ({n}) for operand {k} does not match its number of dimensions "
                f"({x.ndim}, shape {list(x.shape)})" + ("" if ... in t else " and no ellipsis was given"))
        e = x.ndim - n
        ls = [l for s in t for l in (range(n_ell - e, n_ell) if s is ... else [s])]
        own = {}
        for l, size in zip(ls, x.shape):
            if own.setdefault(l, size) != size:
                raise RuntimeError(f"einsum(): {_name(l)} is repeated for operand {k} but the sizes don't match, "
                                   f"{own[l]} != {size}")
            prev = sizes.setdefault(l, size)
            if size != prev and 1 not in (size, prev):
                raise RuntimeError(f"einsum(): {_name(l)} has size {size} for operand {k}, which does not broadcast "
                                   f"with size {prev} for operand {seen_in[l]}")
            sizes[l] = size if prev == 1 else prev
            seen_in.setdefault(l, k)
        labels.append(ls)

    if output is None:
        counts = Counter(s for t in terms for s in t if s is not ...)
        out = list(range(n_ell)) + sorted(l for l, c in counts.items() if c == 1)
    else:
        for s, c in Counter(output).items():
            if s is not ... and s not in sizes:
                raise RuntimeError(f"einsum(): output subscript {s} does not appear in the equation for any "
                                   f"input operand")
            if c > 1:
                raise RuntimeError(f"einsum(): output subscript {s} appears more than once in the output")
        out = [l for s in output for l in (range(n_ell) if s is ... else [s])]

    dtype = D.result_type(*operands)
    ops = [_prepare(x.to(dtype), ls, sizes) for x, ls in zip(operands, labels)]
    x, xl = ops[0]
    for k, (y, yl) in enumerate(ops[1:], 1):
        keep = set(out).union(*(ls for _, ls in ops[k + 1:]))     # labels still needed after this pair
        x, xl = _sum_out(x, xl, keep | set(yl))
        y, yl = _sum_out(y, yl, keep | set(xl))
        x, xl = _contract(x, xl, y, yl, keep)
    x, xl = _sum_out(x, xl, set(out))
    return x.permute([xl.index(l) for l in out])
