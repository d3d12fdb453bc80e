"""SGD with momentum, dampening, Nesterov momentum, L2 weight decay and maximize (PyTorch's update)."""
from __future__ import annotations

from ..ops.creation import zeros_like
from ..ops.optim import fused_sgd_
from .optimizer import Optimizer, _check_lr_eps


class SGD(Optimizer):
    """Stochastic gradient descent, as ``torch.optim.SGD``::

        g = -grad if maximize else grad;  g = g + weight_decay * p
        b = g (first step) or momentum * b + (1 - dampening) * g
        g = g + momentum * b if nesterov else b;  p = p - lr * g

    On cuda, a group of float32 parameters is updated by one multi-tensor launch
    (the ``ops.optim.fused_sgd_`` primitive) unless ``fused=False``; other groups op by op.

    Example::

        >>> opt = tk.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        >>> opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step()
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0, dampening: float = 0,
                 weight_decay: float = 0, nesterov: bool = False, *, maximize: bool = False,
                 foreach=None, differentiable: bool = False, fused=None) -> None:
        _check_lr_eps(lr, weight_decay=weight_decay)
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov, maximize=maximize, foreach=foreach,
                                      differentiable=differentiable, fused=fused))

    def _step_group(self, group: dict) -> None:
        lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
        params = [p for p in group["params"] if p.grad is not None]
        bufs = [self.state[p].get("momentum_buffer") if momentum != 0 else None for p in params]
        first = all(b is None for b in bufs)
        if momentum != 0 and first:
            bufs = [zeros_like(p) for p in params]
        tensors = [t for r in zip(params, (p.grad for p in params), bufs) for t in r if t is not None]
        if (first or all(b is not None for b in bufs)) and self._fused(group, "fused_sgd_", tensors):
            fused_sgd_([[p, p.grad, b] for p, b in zip(params, bufs)], lr=lr, momentum=momentum,
                       dampening=group["dampening"], wd=wd, nesterov=group["nesterov"], maximize=group["maximize"],
                       first=first)
            if momentum != 0:
                for p, b in zip(params, bufs):
                    self.state[p]["momentum_buffer"] = b
            return
        for p, grad in self._grads(group):
            if wd != 0:
                grad = grad.add(p, alpha=wd)
            if momentum != 0:
                state = self.state[p]  # no state without momentum, as in PyTorch
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = grad.clone()
                else:
                    buf.mul_(momentum).add_(grad, alpha=1 - group["dampening"])
                grad = grad.add(buf, alpha=momentum) if group["nesterov"] else buf
            p.add_(grad, alpha=-lr)
