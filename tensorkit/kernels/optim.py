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


def _tables(rows: list[list[Tensor | None]], device) -> tuple:
    table = np.zeros((len(rows), 6), np.int64)
    chunks = []
    for i, row in enumerate(rows):
        for j, t in enumerate(row):
            if t is not None:
                table[i, j] = t.data_ptr()
        n = row[0].numel()
        table[i, 5] = n
        chunks += [(i, s) for s in range(0, n, BLOCK)]
    chunks = np.asarray(chunks, np.int64).reshape(-1, 2)
    return pointer(from_numpy(table).to(device)), pointer(from_numpy(chunks).to(device)), len(chunks)


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
