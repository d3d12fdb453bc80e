"""Adagrad, RMSprop and Adadelta: the accumulated-square family, PyTorch's single-tensor updates."""
from __future__ import annotations

from ..ops.creation import full_like, tensor, zeros_like
from .optimizer import Optimizer, _addcdiv_, _addcmul_, _bump_step, _check_lr_eps


class Adagrad(Optimizer):
    """Adagrad, as ``torch.optim.Adagrad``::

        g = g + weight_decay * p;  clr = lr / (1 + (t - 1) * lr_decay)
        s = s + g * g;  p = p - clr * g / (sqrt(s) + eps)
    """

    def __init__(self, params, lr: float = 1e-2, lr_decay: float = 0, weight_decay: float = 0,
                 initial_accumulator_value: float = 0, eps: float = 1e-10, foreach=None, *,
                 maximize: bool = False, differentiable: bool = False, fused=None) -> None:
        _check_lr_eps(lr, eps, weight_decay)
        if lr_decay < 0.0:
            raise ValueError(f"Invalid lr_decay value: {lr_decay}")
        if initial_accumulator_value < 0.0:
            raise ValueError(f"Invalid initial_accumulator_value value: {initial_accumulator_value}")
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, foreach=foreach,
                                      maximize=maximize, differentiable=differentiable, fused=fused))
        # PyTorch creates Adagrad's state eagerly, in the constructor
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["step"] = tensor(0.0)
                self.state[p]["sum"] = full_like(p, group["initial_accumulator_value"])

    def _step_group(self, group: dict) -> None:
        lr, wd = group["lr"], group["weight_decay"]
        for p, grad in self._grads(group):
            state = self.state[p]
            step = _bump_step(state)
            if wd != 0:
                grad = grad.add(p, alpha=wd)
            clr = lr / (1 + (step - 1) * group["lr_decay"])
            _addcmul_(state["sum"], grad, grad, 1)
            std = state["sum"].sqrt().add_(group["eps"])
            _addcdiv_(p, grad, std, -clr)


class RMSprop(Optimizer):
    """RMSprop, as ``torch.optim.RMSprop``::

        v = alpha * v + (1 - alpha) * g * g
        centered: m = lerp(m, g, 1 - alpha);  avg = sqrt(v - m * m) + eps, else avg = sqrt(v) + eps
        momentum: b = momentum * b + g / avg;  p = p - lr * b, else p = p - lr * g / avg
    """

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0,
                 momentum: float = 0, centered: bool = False, capturable: bool = False, foreach=None,
                 maximize: bool = False, differentiable: bool = False) -> None:
        _check_lr_eps(lr, eps, weight_decay)
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if alpha < 0.0:
            raise ValueError(f"Invalid alpha value: {alpha}")
        super().__init__(params, dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                                      weight_decay=weight_decay, capturable=capturable, foreach=foreach,
                                      maximize=maximize, differentiable=differentiable))

    def _step_group(self, group: dict) -> None:
        lr, alpha, wd, momentum = group["lr"], group["alpha"], group["weight_decay"], group["momentum"]
        for p, grad in self._grads(group):
            state = self.state[p]
            if not state:
                state["step"] = tensor(0.0)
                state["square_avg"] = zeros_like(p)
                if momentum > 0:
                    state["momentum_buffer"] = zeros_like(p)
                if group["centered"]:
                    state["grad_avg"] = zeros_like(p)
            _bump_step(state)
            if wd != 0:
                grad = grad.add(p, alpha=wd)
            square_avg = _addcmul_(state["square_avg"].mul_(alpha), grad, grad, 1 - alpha)
            if group["centered"]:
                grad_avg = state["grad_avg"].lerp_(grad, 1 - alpha)
                avg = (square_avg - grad_avg * grad_avg).sqrt_()
            else:
                avg = square_avg.sqrt()
            avg = avg.add_(group["eps"])
            if momentum > 0:
                buf = _addcdiv_(state["momentum_buffer"].mul_(momentum), grad, avg)
                p.add_(buf, alpha=-lr)
            else:
                _addcdiv_(p, grad, avg, -lr)


class Adadelta(Optimizer):
    """Adadelta, as ``torch.optim.Adadelta``::

        v = rho * v + (1 - rho) * g * g;  d = sqrt(u + eps) / sqrt(v + eps) * g
        u = rho * u + (1 - rho) * d * d;  p = p - lr * d
    """

    def __init__(self, params, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6, weight_decay: float = 0,
                 foreach=None, *, capturable: bool = False, maximize: bool = False,
                 differentiable: bool = False) -> None:
        _check_lr_eps(lr, eps, weight_decay)
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"Invalid rho value: {rho}")
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize,
                                      capturable=capturable, foreach=foreach, differentiable=differentiable))

    def _step_group(self, group: dict) -> None:
        lr, rho, eps, wd = group["lr"], group["rho"], group["eps"], group["weight_decay"]
        for p, grad in self._grads(group):
            state = self.state[p]
            if not state:
                state["step"] = tensor(0.0)
                state["square_avg"] = zeros_like(p)
                state["acc_delta"] = zeros_like(p)
            _bump_step(state)
            if wd != 0:
                grad = grad.add(p, alpha=wd)
            square_avg = _addcmul_(state["square_avg"].mul_(rho), grad, grad, 1 - rho)
            std = square_avg.add(eps).sqrt_()
            delta = state["acc_delta"].add(eps).sqrt_().div_(std).mul_(grad)
            _addcmul_(state["acc_delta"].mul_(rho), delta, delta, 1 - rho)
            p.add_(delta, alpha=-lr)
