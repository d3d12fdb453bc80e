"""``Optimizer``: the base class of tk.optim (param groups, per-parameter state, state_dicts).

Updates run under ``no_grad`` as in-place tensorkit ops, so one update rule serves every device.
The state_dict layout is PyTorch's: ``'state'`` keyed by parameter index (numbered across groups
in order), ``'param_groups'`` holding each group's options and ``'params'`` as index lists.
"""
from __future__ import annotations

from collections import defaultdict
from itertools import chain

from .._tensor import Tensor
from ..autograd import enable_grad, no_grad


class _RequiredParameter:
    def __repr__(self) -> str:
        return "<required parameter>"


required = _RequiredParameter()


def _addcmul_(t: Tensor, a: Tensor, b: Tensor, value: float = 1) -> Tensor:
    """``t += value * a * b``, evaluated as PyTorch's CPU kernel does: ``(value * a) * b``."""
    return t.add_(a * b if value == 1 else (a * value) * b)


def _addcdiv_(t: Tensor, a: Tensor, b: Tensor, value: float = 1) -> Tensor:
    """``t += value * a / b``, evaluated as ``(value * a) / b``."""
    return t.add_(a / b if value == 1 else (a * value) / b)


def _bump_step(state: dict) -> float:
    """``state['step'] += 1``; returns the new count. The step is a 0-d float32 tensor, as in PyTorch's
    state_dicts; on the CPU it is bumped in its numpy buffer (an op costs ~10 us a parameter)."""
    step = state["step"]
    if step.device.type == "cpu" and step.numel() == 1:
        buf = step._storage.data
        buf[step._offset] += 1
        return float(buf[step._offset])
    return step.add_(1).item()


def _check_lr_eps(lr, eps=None, weight_decay=None) -> None:
    if lr < 0.0:
        raise ValueError(f"Invalid learning rate: {lr}")
    if eps is not None and eps < 0.0:
        raise ValueError(f"Invalid epsilon value: {eps}")
    if weight_decay is not None and weight_decay < 0.0:
        raise ValueError(f"Invalid weight_decay value: {weight_decay}")


def _clone_state(value, param: Tensor | None = None, key=None):
    """A fresh copy of a state value; tensors other than ``step`` take the parameter's dtype and device."""
    if isinstance(value, Tensor):
        if param is not None and key != "step":
            dtype = param.dtype if param.dtype.is_floating_point and value.dtype.is_floating_point else value.dtype
            return value.to(device=param.device, dtype=dtype).clone()
        return value.clone()
    if isinstance(value, dict):
        return {k: _clone_state(v, param, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_clone_state(v, param, key) for v in value)
    return value


class Optimizer:
    """Base class of all optimizers.

    Args:
        params: an iterable of tensors, or of dicts (parameter groups with their own options).
        defaults: the default options of a parameter group.

    Subclasses implement ``_step_group(group)``, which runs under ``no_grad``.
    """

    def __init__(self, params, defaults: dict) -> None:
        self.defaults = defaults
        if isinstance(params, Tensor):
            raise TypeError("params argument given to the optimizer should be an iterable of Tensors or dicts, "
                            f"but got {type(params).__name__}")
        self.state: defaultdict = defaultdict(dict)
        self.param_groups: list[dict] = []
        param_groups = list(params)
        if len(param_groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(param_groups[0], dict):
            param_groups = [{"params": param_groups}]
        for group in param_groups:
            self.add_param_group(group)

    def __getstate__(self) -> dict:
        return {"defaults": self.defaults, "state": self.state, "param_groups": self.param_groups}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        lines = [self.__class__.__name__ + " ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {group[k]}" for k in sorted(group) if k != "params"]
        return "\n".join(lines + [")"])

    def add_param_group(self, param_group: dict) -> None:
        """Add a group of parameters with its own options (missing options take the defaults)."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        params = param_group["params"]
        if isinstance(params, Tensor):
            param_group["params"] = [params]
        elif isinstance(params, set):
            raise TypeError("optimizer parameters need to be organized in ordered collections, but the ordering "
                            "of tensors in sets will change between runs. Please use a list instead.")
        else:
            param_group["params"] = list(params)
        for p in param_group["params"]:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, but one of the params is {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError("can't optimize a non-leaf Tensor")
        for name, default in self.defaults.items():
            if default is required and name not in param_group:
                raise ValueError(f"parameter group didn't specify a value of required optimization parameter {name}")
            param_group.setdefault(name, default)
        if len({id(p) for p in param_group["params"]}) != len(param_group["params"]):
            raise ValueError("optimizer contains a parameter group with duplicate parameters")
        seen = {id(p) for group in self.param_groups for p in group["params"]}
        if any(id(p) in seen for p in param_group["params"]):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients of all parameters: to ``None`` (default) or to zeros."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    if set_to_none:
                        p.grad = None
                    else:
                        with no_grad():
                            p.grad.zero_()

    def step(self, closure=None):
        """Update the parameters once; ``closure`` (re-evaluates the model, returns the loss) is optional."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        with no_grad():
            for group in self.param_groups:
                self._step_group(group)
        return loss

    def _step_group(self, group: dict) -> None:
        raise NotImplementedError

    def _grads(self, group: dict):
        """(param, grad) for the parameters of ``group`` that have a gradient; ``grad`` is negated
        under ``maximize``."""
        for p in group["params"]:
            if p.grad is None:
                continue
            grad = p.grad
            if group.get("maximize", False):
                grad = -grad
            yield p, grad

    def _fused(self, group: dict, op: str, tensors: list) -> bool:
        """Whether ``group``'s update can run as the one-launch primitive ``op``
        (``ops/optim.py``): ``fused`` not False and a kernel for the tensors' device and dtype."""
        if group.get("fused") is False or not tensors:
            return False
        from ..ops.optim import fusable
        return fusable(op, tensors)

    def state_dict(self) -> dict:
        """``{'state': {index: {...}}, 'param_groups': [{..., 'params': [indices]}]}``, PyTorch's layout.
        The state tensors are the optimizer's own (not copies), as in PyTorch."""
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            for p in group["params"]:
                index.setdefault(id(p), len(index))
            packed["params"] = [index[id(p)] for p in group["params"]]
            groups.append(packed)
        state = {index[id(p)] if isinstance(p, Tensor) else p: v for p, v in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a state_dict from :meth:`state_dict` (copied: the optimizer does not share its tensors)."""
        groups, saved_groups = self.param_groups, state_dict["param_groups"]
        if len(groups) != len(saved_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        if any(len(g["params"]) != len(s["params"]) for g, s in zip(groups, saved_groups)):
            raise ValueError("loaded state dict contains a parameter group that doesn't match the size of "
                             "optimizer's group")
        id_map = dict(zip(chain.from_iterable(s["params"] for s in saved_groups),
                          chain.from_iterable(g["params"] for g in groups)))
        state: defaultdict = defaultdict(dict)
        for k, v in state_dict["state"].items():
            if k in id_map:
                state[id_map[k]] = _clone_state(v, id_map[k])
            else:
                state[k] = _clone_state(v)
        self.state = state
        self.param_groups = [{**_clone_state({k: v for k, v in s.items() if k != "params"}), "params": g["params"]}
                             for g, s in zip(groups, saved_groups)]
