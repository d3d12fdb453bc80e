"""``gradcheck`` / ``gradgradcheck``: backward against finite differences.

The numerical Jacobian perturbs one element of one input at a time by +-eps (central
differences, in float64, on fresh copies of the inputs, so strided and broadcast inputs are
perturbed element by element as the op sees them); the analytical one comes from one
backward per output element. They must agree within ``atol + rtol * |numerical|``.
"""
from __future__ import annotations

import warnings

import numpy as np

from .. import dtypes as D
from .._tensor import Tensor
from .engine import grad as _grad


class GradcheckError(RuntimeError):
    """The analytical and numerical Jacobians differ (raised by gradcheck)."""


def _as_tuple(x) -> tuple:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _diff_outputs(out) -> list:
    return [o for o in _as_tuple(out) if isinstance(o, Tensor) and o.dtype.is_floating_point]


def _values(outs) -> np.ndarray:
    return np.concatenate([np.asarray(o.detach()._host(), np.float64).reshape(-1) for o in outs]) if outs else \
        np.zeros(0)


def _replace(inputs: tuple, i: int, values: np.ndarray) -> tuple:
    from ..ops.creation import tensor
    t = inputs[i]
    new = tensor(values, dtype=t.dtype, device=t.device, requires_grad=t._requires_grad)
    return inputs[:i] + (new,) + inputs[i + 1:]


def _numerical(func, inputs: tuple, wrt: list, eps: float, n_out: int) -> list:
    """One (numel(input), n_out) Jacobian per input in ``wrt``: d output / d input by central differences."""
    jacobians = []
    for i in wrt:
        base = np.array(inputs[i].detach()._host(), np.float64)
        jac = np.zeros((base.size, n_out))
        for j in range(base.size):
            plus, minus = base.copy(), base.copy()
            plus.reshape(-1)[j] += eps
            minus.reshape(-1)[j] -= eps
            hi = _values(_diff_outputs(func(*_replace(inputs, i, plus))))
            lo = _values(_diff_outputs(func(*_replace(inputs, i, minus))))
            jac[j] = (hi - lo) / (2 * eps)
        jacobians.append(jac)
    return jacobians


def _analytical(outs: list, inputs: tuple, wrt: list) -> list:
    """The same Jacobians from backward: one one-hot gradient per output element."""
    from ..ops.creation import tensor
    n_out = sum(o.numel() for o in outs)
    jacobians = [np.zeros((inputs[i].numel(), n_out)) for i in wrt]
    col = 0
    for k, o in enumerate(outs):
        if not o._requires_grad:
            col += o.numel()
            continue
        for j in range(o.numel()):
            onehot = np.zeros(o.numel())
            onehot[j] = 1.0
            go = tensor(onehot.reshape(o.shape), dtype=o.dtype, device=o.device)
            gs = _grad([o], [inputs[i] for i in wrt], [go], retain_graph=True, allow_unused=True)
            for jac, g, i in zip(jacobians, gs, wrt):
                if g is not None:
                    jac[:, col] = np.asarray(g.detach()._host(), np.float64).reshape(-1)
            col += 1
    return jacobians


def gradcheck(func, inputs, *, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3,
              raise_exception: bool = True, **unused) -> bool:
    """Check the gradients of ``func`` at ``inputs`` against finite differences.

    Args:
        func: takes the inputs, returns a tensor or a tuple of tensors (non-floating ones
            are ignored).
        inputs: a tensor or a tuple; those with ``requires_grad=True`` are checked (use float64).
        eps, atol, rtol: step and tolerances (PyTorch's defaults).
        raise_exception: raise ``GradcheckError`` with both Jacobians on a mismatch (else
            return False).

    Example::

        >>> x = tk.randn(3, dtype=tk.float64, requires_grad=True)
        >>> tk.autograd.gradcheck(tk.sin, (x,))
        True
    """
    inputs = _as_tuple(inputs)
    wrt = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t._requires_grad]
    if not wrt:
        raise ValueError("gradcheck expects at least one input tensor with requires_grad=True")
    for i in wrt:
        if inputs[i].dtype is not D.float64:
            warnings.warn(f"gradcheck: input {i} is {inputs[i].dtype}, not float64: finite differences will "
                          f"likely fail; check in double precision", stacklevel=2)
    outs = _diff_outputs(func(*inputs))
    n_out = sum(o.numel() for o in outs)
    numerical = _numerical(func, inputs, wrt, eps, n_out)
    analytical = _analytical(outs, inputs, wrt)
    for i, num, ana in zip(wrt, numerical, analytical):
        if not np.allclose(ana, num, rtol=rtol, atol=atol, equal_nan=False):
            if not raise_exception:
                return False
            bad = np.argwhere(~np.isclose(ana, num, rtol=rtol, atol=atol))[0]
            raise GradcheckError(
                f"Jacobian mismatch for input {i} (rows: input elements, columns: output elements); first "
                f"difference at {tuple(int(b) for b in bad)}: analytical {ana[tuple(bad)]!r}, numerical "
                f"{num[tuple(bad)]!r}\nnumerical:\n{num}\nanalytical:\n{ana}")
    return True


def gradgradcheck(func, inputs, grad_outputs=None, *, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3,
                  raise_exception: bool = True, **unused) -> bool:
    """Check second derivatives: ``gradcheck`` of the map (inputs, grad_outputs) -> the
    gradients of ``func`` (computed with ``create_graph=True``). ``grad_outputs`` default to
    random float64 tensors."""
    from ..ops.creation import tensor
    inputs = _as_tuple(inputs)
    outs = _diff_outputs(func(*inputs))
    if grad_outputs is None:
        rng = np.random.default_rng(0)
        grad_outputs = tuple(tensor(rng.standard_normal(tuple(o.shape)), dtype=o.dtype, device=o.device,
                                    requires_grad=True) for o in outs)
    grad_outputs = _as_tuple(grad_outputs)
    n = len(inputs)
    wrt = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t._requires_grad]

    def first_derivatives(*args):
        ins = args[:n]
        pairs = [(o, g) for o, g in zip(_diff_outputs(func(*ins)), args[n:]) if o._requires_grad]
        if not pairs:
            return ()
        gs = _grad([o for o, _ in pairs], [ins[i] for i in wrt], [g for _, g in pairs], create_graph=True,
                   allow_unused=True)
        return tuple(g for g in gs if g is not None)

    return gradcheck(first_derivatives, inputs + grad_outputs, eps=eps, atol=atol, rtol=rtol,
                     raise_exception=raise_exception)
