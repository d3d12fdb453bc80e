"""Optimizer-update primitives: one multi-tensor update of a whole parameter group.

``fused_sgd_`` / ``fused_adam_`` write the parameters and the optimizer states of every row
in place with one kernel launch per group (the dispatcher's kernel for (op, device, dtype);
the cuda backend's is ``kernels/optim.py``). Each row is the tensors of one parameter:
``[param, grad, momentum_buffer or None]`` for SGD, ``[param, grad, exp_avg, exp_avg_sq,
max_exp_avg_sq or None]`` for Adam. Written tensors get their version bumped, as any in-place
op's; the update has no gradient (optimizers step under ``no_grad``).
"""
from __future__ import annotations

from .. import _dispatch
from .._tensor import Tensor


def fusable(op: str, tensors: list[Tensor]) -> bool:
    """Whether ``op`` can update ``tensors`` in one launch: a kernel is registered for their
    device and dtype, and they are contiguous, of one dtype, on one device."""
    first = tensors[0]
    dev, dtype = first._storage.device, first.dtype
    return (_dispatch.KERNELS.get((op, dev.type, dtype)) is not None
            and all(t.dtype is dtype and t._storage.device is dev and t.is_contiguous() for t in tensors))


def _update(op: str, rows: list, params: dict) -> None:
    tensors = [t for row in rows for t in row if t is not None]
    if not fusable(op, tensors):
        raise RuntimeError(f"{op}: expected contiguous tensors of one dtype on one device with a {op} kernel, got "
                           f"{sorted({(str(t.device), str(t.dtype)) for t in tensors})}")
    first = rows[0][0]
    _dispatch.lookup(op, first.device.type, first.dtype)(rows, **params)
    for row in rows:
        for i, t in enumerate(row):
            if t is not None and i != 1:            # everything but the gradient is written
                t._bump_version()
    if _dispatch.observers:
        _dispatch.notify(op, tuple(tensors), tuple(t for row in rows for i, t in enumerate(row)
                                                    if t is not None and i != 1), dict(params))


def fused_sgd_(rows: list, *, lr: float, momentum: float, dampening: float, wd: float, nesterov: bool,
               maximize: bool, first: bool) -> None:
    """SGD (PyTorch's formula) on every ``[param, grad, momentum_buffer or None]`` row; ``first``:
    the momentum buffers are new (they take the gradient)."""
    _update("fused_sgd_", rows, dict(lr=lr, momentum=momentum, dampening=dampening, wd=wd, nesterov=nesterov,
                                      maximize=maximize, first=first))


def fused_adam_(rows: list, *, step_size: float, bc2_sqrt: float, beta1: float, beta2: float, eps: float,
                wd: float, lr: float, decoupled: bool, amsgrad: bool, maximize: bool) -> None:
    """Adam / AdamW (``decoupled``; PyTorch's formulas) on every ``[param, grad, exp_avg,
    exp_avg_sq, max_exp_avg_sq or None]`` row, all at the same step."""
    _update("fused_adam_", rows, dict(step_size=step_size, bc2_sqrt=bc2_sqrt, beta1=beta1, beta2=beta2, eps=eps,
                                       wd=wd, lr=lr, decoupled=decoupled, amsgrad=amsgrad, maximize=maximize))


