"""Random numbers on the CPU: the fill primitives of ``ops/creation.py`` with numpy's generators.

A CPU ``Generator`` holds a ``numpy.random.Generator`` on numpy's Philox bit generator
(``generator._np``). Each kernel fills a contiguous output; samples are drawn in the output
dtype's precision (float32 for float32/float16/bfloat16, float64 for float64) and stored
with numpy's rounding. The streams are not PyTorch's (its CPU generator is a Mersenne
twister), nor the cuda device's (Philox4x32-10, ``kernels/random.py``).

Kernels here know nothing about autograd, broadcasting or argument checks.
"""
from __future__ import annotations

import numpy as np

from .. import _dispatch
from .. import dtypes as D
from .._storage import Storage
from .._tensor import Tensor
from ..device import CPU


def _sample_dtype(dtype: D.DType):
    return np.float64 if dtype is D.float64 else np.float32


@_dispatch.register("uniform_", "cpu", D.FLOAT_DTYPES)
def uniform_(out: Tensor, low: float, high: float, generator) -> None:
    u = generator._np.random(out._shape, dtype=_sample_dtype(out.dtype))
    if out.dtype in (D.float16, D.bfloat16):
        # multiples of 2**-digits (as PyTorch): rounding a float32 sample could give exactly 1
        digits = 11 if out.dtype is D.float16 else 8
        u = np.floor(u * 2.0 ** digits) * 2.0 ** -digits
    v = np.asarray(low + (high - low) * np.asarray(u, np.float64)).astype(out.dtype.numpy)   # 0-d too
    # a value that rounded to high (or past it) becomes low, as in PyTorch and on cuda: [low, high)
    v[v.astype(_sample_dtype(out.dtype)) >= _sample_dtype(out.dtype)(high)] = low
    out._np()[...] = v


@_dispatch.register("normal_", "cpu", D.FLOAT_DTYPES)
def normal_(out: Tensor, mean: float, std: float, generator) -> None:
    out._np()[...] = mean + std * generator._np.standard_normal(out._shape, dtype=_sample_dtype(out.dtype))


@_dispatch.register("random_", "cpu", D.ALL_DTYPES)
def random_(out: Tensor, low: int, high: int, generator) -> None:
    out._np()[...] = generator._np.integers(low, high, out._shape)


@_dispatch.register("bernoulli_", "cpu", D.ALL_DTYPES)
def bernoulli_(out: Tensor, p, generator) -> None:
    probs = p._np().astype(np.float64) if isinstance(p, Tensor) else p
    out._np()[...] = generator._np.random(out._shape) < probs


@_dispatch.register("randperm", "cpu", (D.int64,))
def randperm(n: int, generator, device) -> Tensor:
    return Tensor._make(Storage(generator._np.permutation(n), CPU), 0, (n,), (1,), D.int64)
