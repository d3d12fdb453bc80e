"""Random numbers on the ``cuda`` device: Philox kernels (``kernels/src/random.py``), host side.

The fill primitives of ``ops/creation.py`` land here for cuda tensors: ``uniform_``,
``normal_``, ``random_`` (integers in [low, high)), ``bernoulli_`` and ``randperm``. Each
takes a contiguous output, its parameters and a cuda ``Generator``, whose (seed, offset)
state says which Philox counters the call uses: ``Generator._philox(q)`` hands out
[offset, offset + q) and moves the offset past them, so two calls never share numbers and
a saved state replays exactly. The kernels read (seed, offset) as scalar arguments: nothing
here waits for the device (``randperm`` does: it sorts on the host, see there).

Kernels here know nothing about autograd, broadcasting or argument checks (``ops/`` did them).
"""
from __future__ import annotations

import functools
import math

import numpy as np

from .. import _dispatch
from .. import dtypes as D
from .._storage import TRANSFERS, Storage, allocate
from .._tensor import Tensor
from ..device import CPU
from ._launch import launch, pointer, triton_source

MAX_BLOCK = 512       # counters per program on a GPU: 4 warps x 4 counters per thread, 16 elements each
EMULATED_BLOCK = 8192  # in Triton's interpreter, whose cost is per program (the numbers are the same)
SMALL_SPAN = 1 << 16  # integer ranges up to this take 32 random bits per element, wider ones 64

_src = functools.partial(triton_source, "random")   # the @triton.jit functions, on first use



def _halves(x: int) -> tuple[int, int]:
    """A 64-bit pattern as two int32 kernel arguments (low, high), each in [-2**31, 2**31)."""
    x &= (1 << 64) - 1
    lo, hi = x & 0xFFFFFFFF, x >> 32
    return lo - (lo >> 31 << 32), hi - (hi >> 31 << 32)


def _float_halves(x: float) -> tuple[int, int]:
    return _halves(int(np.float64(x).view(np.uint64)))


def _launch(kernel, out: Tensor, per_counter: int, generator, scalars: tuple, probs=None, **meta) -> None:
    """Run ``kernel`` over ``out`` (contiguous, not empty), ``per_counter`` elements per Philox
    counter, on counters reserved from ``generator``; ``scalars`` are the kernel's own
    (int32) arguments, ``probs`` bernoulli's tensor of probabilities."""
    n = out.numel()
    # counters per lane region; a multiple of 16 keeps every region's start aligned for vector
    # stores (Triton specializes arguments divisible by 16) and the offset a multiple of 4
    q = -(-n // (per_counter * 16)) * 16
    seed, offset = generator._philox(q)
    from ..cuda import EMULATED
    block = min(EMULATED_BLOCK if EMULATED else MAX_BLOCK, 1 << (q - 1).bit_length())
    tensors = (pointer(out),) if probs is None else (pointer(out), pointer(probs))
    launch(kernel, (-(-q // block),), *tensors, n, q, *_halves(seed), *_halves(offset), *scalars, **meta,
           BLOCK=block)                      # constexprs in the kernel's order (launch's cache needs it)


# significant bits of each float dtype: uniforms are multiples of 2**-bits (53: two draws each)
_BITS = {D.float16: 11, D.bfloat16: 8, D.float32: 24, D.float64: 53}


@_dispatch.register("uniform_", "cuda", D.FLOAT_DTYPES)
def uniform_(out: Tensor, low: float, high: float, generator) -> None:
    """Fill ``out`` with uniform numbers in [low, high)."""
    bits = _BITS[out.dtype]
    scalars = (*_float_halves(low), *_float_halves(high - low), *_float_halves(high))
    _launch(_src().uniform_kernel, out, 2 if bits == 53 else 4, generator, scalars, BITS=bits)


@_dispatch.register("normal_", "cuda", D.FLOAT_DTYPES)
def normal_(out: Tensor, mean: float, std: float, generator) -> None:
    """Fill ``out`` with normal numbers of mean ``mean`` and standard deviation ``std``."""
    wide = out.dtype is D.float64
    _launch(_src().normal_kernel, out, 2 if wide else 4, generator, (*_float_halves(mean), *_float_halves(std)),
            WIDE=wide)


@_dispatch.register("random_", "cuda", D.ALL_DTYPES)
def random_(out: Tensor, low: int, high: int, generator) -> None:
    """Fill ``out`` with integers in [low, high) (``high - low`` at most 2**64 - 1)."""
    span = high - low
    wide = span > SMALL_SPAN
    _launch(_src().random_kernel, out, 2 if wide else 4, generator, (*_halves(low), *_halves(span)), WIDE=wide)


@_dispatch.register("bernoulli_", "cuda", D.ALL_DTYPES)
def bernoulli_(out: Tensor, p, generator) -> None:
    """Fill ``out`` with 1 where a draw falls below the probability, else 0. ``p``: a number in
    [0, 1], or a contiguous cuda tensor of out's shape (its values are not checked: that would
    wait for the device; above 1 acts as 1, below 0 or NaN as 0)."""
    if isinstance(p, Tensor):
        _launch(_src().bernoulli_kernel, out, 4, generator, (0, 0), probs=p, P_TENSOR=True)
    else:
        threshold = math.ceil(p * 4294967296.0)       # r < p * 2**32  <=>  r < ceil(p * 2**32)
        _launch(_src().bernoulli_kernel, out, 4, generator, _halves(threshold), probs=out, P_TENSOR=False)


@_dispatch.register("randperm", "cuda", (D.int64,))
def randperm(n: int, generator, device) -> Tensor:
    """A random permutation of 0..n-1 (int64): the order of n random 64-bit keys drawn on the
    device. The sort runs on the host (a stable argsort of the keys copied back), so this waits
    for the device, unlike the other random ops; the randomness is the cuda generator's."""
    keys = Tensor._make(allocate(n, np.int64, device), 0, (n,), (1,), D.int64)
    if n:
        random_(keys, -(1 << 63), (1 << 63) - 1, generator)
    host = TRANSFERS[("cuda", "cpu")](keys._storage, 0, n, CPU, False).data
    order = np.argsort(host, kind="stable")
    return Tensor._make(TRANSFERS[("cpu", "cuda")](Storage(order, CPU), 0, n, device, False), 0, (n,), (1,),
                        D.int64)
