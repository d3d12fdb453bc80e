"""Adam and AdamW (amsgrad, L2 or decoupled weight decay, maximize), PyTorch's single-tensor update."""
from __future__ import annotations

from ..ops.creation import tensor, zeros_like
from ..ops.optim import fused_adam_
from ..functional import maximum
from .optimizer import Optimizer, _addcdiv_, _addcmul_, _bump_step, _check_lr_eps


class Adam(Optimizer):
    """Adam, as ``torch.optim.Adam``::

        g = -grad if maximize else grad;  g = g + weight_decay * p   (AdamW: p = p * (1 - lr * weight_decay))
        m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g * g   (amsgrad: v_max = max(v_max, v))
        p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    On cuda, a group of float32 parameters at the same step is updated by one multi-tensor
    launch (the ``ops.optim.fused_adam_`` primitive) unless ``fused=False``; other groups op by op.

    Example::

        >>> opt = tk.optim.Adam(model.parameters(), lr=1e-3)
    """

    _decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, amsgrad: bool = False, *, maximize: bool = False, foreach=None,
                 capturable: bool = False, differentiable: bool = False, fused=None) -> None:
        _check_lr_eps(lr, eps, weight_decay)
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize, foreach=foreach, capturable=capturable,
                                      differentiable=differentiable, fused=fused))

    def _step_group(self, group: dict) -> None:
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        params = [p for p in group["params"] if p.grad is not None]
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = tensor(0.0)
                state["exp_avg"] = zeros_like(p)
                state["exp_avg_sq"] = zeros_like(p)
                if group["amsgrad"]:
                    state["max_exp_avg_sq"] = zeros_like(p)
        steps_each = [_bump_step(self.state[p]) for p in params]
        steps = set(steps_each)
        rows = [[p, p.grad, *(self.state[p].get(k) for k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"))]
                for p in params]
        if len(steps) == 1 and self._fused(group, "fused_adam_", [t for r in rows for t in r if t is not None]):
            step = steps.pop()
            fused_adam_(rows, step_size=lr / (1 - beta1 ** step), bc2_sqrt=(1 - beta2 ** step) ** 0.5, beta1=beta1,
                        beta2=beta2, eps=eps, wd=wd, lr=lr, decoupled=self._decoupled, amsgrad=group["amsgrad"],
                        maximize=group["maximize"])
            return
        for (p, grad), step in zip(self._grads(group), steps_each):
            state = self.state[p]
            if wd != 0:
                if self._decoupled:
                    p.mul_(1 - lr * wd)
                else:
                    grad = grad.add(p, alpha=wd)
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            exp_avg.lerp_(grad, 1 - beta1)
            _addcmul_(exp_avg_sq.mul_(beta2), grad, grad, 1 - beta2)
            step_size = lr / (1 - beta1 ** step)
            bias_correction2_sqrt = (1 - beta2 ** step) ** 0.5
            if group["amsgrad"]:
                maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
                exp_avg_sq = state["max_exp_avg_sq"]
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
            _addcdiv_(p, exp_avg, denom, -step_size)


class AdamW(Adam):
    """Adam with decoupled weight decay, as ``torch.optim.AdamW`` (default ``weight_decay=1e-2``):
    the parameter is first scaled by ``1 - lr * weight_decay``, then takes Adam's step."""

    _decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False, foreach=None,
                 capturable: bool = False, differentiable: bool = False, fused=None) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize, foreach=foreach,
                         capturable=capturable, differentiable=differentiable, fused=fused)
