"""CPU kernel of ``cat``: numpy copies each piece into its slot of the output (casting)."""
from __future__ import annotations

from .. import _dispatch
from .. import dtypes as D


@_dispatch.register("cat", "cpu", D.ALL_DTYPES)
def cat(parts, dim: int, out) -> None:
    dst, start = out._np(), 0
    for t in parts:
        n = t.shape[dim]
        index = (slice(None),) * dim + (slice(start, start + n),)
        dst[index] = t._np()
        start += n
