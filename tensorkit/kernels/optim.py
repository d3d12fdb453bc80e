"""Launchers of the multi-tensor optimizer updates (kernels in ``kernels/src/optim.py``): one
launch per parameter group, whatever the number of parameters.

The pointer table and the chunk list are built on the host and copied to the device once per
step (two small copies); the kernels read the parameters' addresses from them. Only float32
parameters, gradients and states on one cuda device (``ops/optim.py`` checks). Registered
with the dispatcher as the cuda kernels of ``fused_sgd_`` / ``fused_adam_``; kernels here know
nothing about autograd.
"""
from __future__ import annotations

import functools

import numpy as np

from .. import _dispatch
from .. import dtypes as D
from .._tensor import Tensor
from ..ops.creation import from_numpy
from ._launch import launch, pointer, triton_source

BLOCK = 1024          # elements per program: a chunk of one parameter

_kernels = functools.partial(triton_source, "optim")


_TABLES: dict = {}    # (device, pointers, numels) -> the device pointer table of a recent step
_TABLES_KEPT = 8      # a few groups' tables (each optimizer's parameters keep their addresses)


@functools.lru_cache(maxsize=64)
def _chunk_table(numels: tuple, device) -> Tensor:
    """int64 [C, 2] on ``device``: (row, first element) of every BLOCK-element chunk of parameters
    of these sizes. Sizes do not change between steps: built and copied once."""
    n = np.asarray(numels, np.int64)
    counts = -(-n // BLOCK)
    rows = np.repeat(np.arange(len(n), dtype=np.int64), counts)
    starts = (np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)) * BLOCK
    return from_numpy(np.stack([rows, starts], 1)).to(device)


def _tables(rows: list[list[Tensor | None]], device) -> tuple:
    """(pointer table, chunk table, chunks) of ``rows``. The pointer table is copied to the device
    only when an address changed since a recent step (gradients set to None come back at the same
    addresses from the caching allocator), the chunk table only for new sizes: building them in
    Python for every step was milliseconds for a ResNet's parameters."""
    numels = tuple(row[0].numel() for row in rows)
    ptrs = tuple(0 if t is None else t.data_ptr() for row in rows for t in row)
    key = (device, ptrs, numels)
    table = _TABLES.get(key)
    if table is None:
        host = np.zeros((len(rows), 6), np.int64)
        host[:, :len(rows[0])] = np.asarray(ptrs, np.int64).reshape(len(rows), -1)
        host[:, 5] = numels
        table = from_numpy(host).to(device)
        if len(_TABLES) >= _TABLES_KEPT:
            del _TABLES[next(iter(_TABLES))]
        _TABLES[key] = table
    chunks = _chunk_table(numels, device)
    return pointer(table), pointer(chunks), chunks.shape[0]


def adam(rows, *, step_size, bc2_sqrt, beta1, beta2, eps, wd, lr, decoupled, amsgrad, maximize) -> None:
    """``rows``: [param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq or None] per parameter."""
    table, chunks, n = _tables(rows, rows[0][0].device)
    if n:
        launch(_kernels().adam_kernel, (n,), table, chunks, float(step_size), float(bc2_sqrt), float(1 - beta1),
               float(beta2), float(1 - beta2), float(eps), float(wd), float(1 - lr * wd), WD=wd != 0,
               DECOUPLED=bool(decoupled), AMSGRAD=bool(amsgrad), MAXIMIZE=bool(maximize), BLOCK=BLOCK)


def sgd(rows, *, lr, momentum, dampening, wd, nesterov, maximize, first) -> None:
    """``rows``: [param, grad, momentum_buffer or None] per parameter."""
    table, chunks, n = _tables(rows, rows[0][0].device)
    if n:
        launch(_kernels().sgd_kernel, (n,), table, chunks, float(lr), float(momentum), float(1 - dampening),
               float(wd), WD=wd != 0, MOMENTUM=momentum != 0, FIRST=bool(first), NESTEROV=bool(nesterov),
               MAXIMIZE=bool(maximize), BLOCK=BLOCK)


_dispatch.register("fused_sgd_", "cuda", (D.float32,))(sgd)
_dispatch.register("fused_adam_", "cuda", (D.float32,))(adam)
