"""``GradScaler``: dynamic loss scaling for float16 training, as ``torch.amp.GradScaler``.

float16 gradients of small magnitude flush to zero. The scaler multiplies the loss by a large
factor (the scale) before ``backward``, so the gradients are scaled by it too, divides it out
of the gradients before the optimizer step (``unscale_``), and skips the step when a gradient
is inf or NaN (the scale was too large), halving the scale; after ``growth_interval`` steps
without inf/NaN it doubles it.

The scale, the growth tracker and the found-inf flags stay device tensors: ``step`` reads the
flag once (the one host sync of an iteration); ``update`` computes the next scale on the
device. ``unscale_`` multiplies each gradient in place by ``1 / scale`` and tests it for
non-finite values with existing ops (three launches a gradient, a few per device after that);
there is no fused multi-tensor kernel.

Differences from PyTorch: a bad ``growth_factor`` / ``backoff_factor`` / ``growth_interval``
raises ``ValueError`` (PyTorch asserts); ``update(new_scale=tensor)`` checks with a message
instead of an assert.
"""
from __future__ import annotations

import warnings
from collections import defaultdict

from .. import dtypes as D
from .._tensor import Tensor

__all__ = ["GradScaler"]

_READY, _UNSCALED, _STEPPED = 0, 1, 2
_FIX = "This may indicate your script did not use scaler.scale(loss or outputs) earlier in the iteration."


def _fresh_state() -> dict:
    return {"stage": _READY, "found_inf_per_device": {}}


class GradScaler:
    """Scale the loss, unscale the gradients, skip steps with inf/NaN gradients, adapt the scale.

    Args:
        device: the device type the scale lives on ('cuda' or 'cpu').
        init_scale: the first scale.
        growth_factor: the scale is multiplied by it after ``growth_interval`` steps in a row
            without inf/NaN gradients (> 1).
        backoff_factor: the scale is multiplied by it when a step finds inf/NaN (< 1).
        growth_interval: the number of good steps before the scale grows.
        enabled: False makes every method a pass-through (``scale`` returns its input, ``step``
            just calls ``optimizer.step()``), so one script runs with and without scaling.

    Example::

        >>> scaler = tk.amp.GradScaler("cuda")
        >>> for x, y in loader:
        ...     optimizer.zero_grad()
        ...     with tk.autocast("cuda"):
        ...         loss = loss_fn(model(x), y)
        ...     scaler.scale(loss).backward()
        ...     scaler.unscale_(optimizer)                 # optional: to clip the true gradients
        ...     tk.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        ...     scaler.step(optimizer)                     # skipped if a gradient is inf/NaN
        ...     scaler.update()
    """

    def __init__(self, device: str = "cuda", init_scale: float = 2.0 ** 16, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 2000, enabled: bool = True):
        if device not in ("cuda", "cpu"):
            raise ValueError(f"GradScaler: device must be 'cuda' or 'cpu', got {device!r}")
        self._device = device
        self._enabled = bool(enabled)
        if self._enabled and device == "cuda":
            from .. import cuda
            if not cuda.is_available():
                warnings.warn("GradScaler is enabled, but CUDA is not available. Disabling.")
                self._enabled = False
        if self._enabled:
            if not growth_factor > 1.0:
                raise ValueError(f"GradScaler: growth_factor must be > 1.0, got {growth_factor}")
            if not backoff_factor < 1.0:
                raise ValueError(f"GradScaler: backoff_factor must be < 1.0, got {backoff_factor}")
            if not isinstance(growth_interval, int) or growth_interval <= 0:
                raise ValueError(f"GradScaler: growth_interval must be a positive int, got {growth_interval!r}")
        self._init_scale = float(init_scale)
        self._scale: Tensor | None = None            # lazily created on the outputs' device
        self._growth_factor = float(growth_factor)
        self._backoff_factor = float(backoff_factor)
        self._growth_interval = growth_interval
        self._init_growth_tracker = 0
        self._growth_tracker: Tensor | None = None
        self._per_optimizer_states: dict = defaultdict(_fresh_state)

    # ---- the iteration -------------------------------------------------------------------------------
    def _lazy_init_scale_growth_tracker(self, device) -> None:
        from ..ops.creation import full
        self._scale = full((), self._init_scale, dtype=D.float32, device=device)
        self._growth_tracker = full((), self._init_growth_tracker, dtype=D.int32, device=device)

    def scale(self, outputs):
        """``outputs`` (a tensor, or nested lists/tuples of tensors) multiplied by the scale."""
        if not self._enabled:
            return outputs
        if isinstance(outputs, Tensor):
            if self._scale is None:
                self._lazy_init_scale_growth_tracker(outputs.device)
            return outputs * self._scale.to(outputs.device)

        def apply(v):
            if isinstance(v, Tensor):
                if self._scale is None:
                    self._lazy_init_scale_growth_tracker(v.device)
                return v * self._scale.to(v.device)
            if isinstance(v, (list, tuple)):
                return type(v)(apply(x) for x in v)
            raise ValueError(f"GradScaler.scale: outputs must be a Tensor or nested lists/tuples of Tensors, "
                             f"got {type(v).__name__}")
        return apply(outputs)

    def _check_scale_growth_tracker(self, funcname: str):
        if self._scale is None:
            raise RuntimeError(f"Attempted {funcname} but _scale is None.  " + _FIX)
        return self._scale, self._growth_tracker

    def _unscale_grads_(self, optimizer, inv_scale: Tensor, allow_fp16: bool) -> dict:
        """Multiply every gradient of ``optimizer`` by ``inv_scale`` in place; per device, a 0-d
        float32 tensor: 1.0 if some gradient there has an inf/NaN, else 0.0."""
        from ..autograd.grad_mode import no_grad
        from ..ops import pointwise as P
        from ..ops.shape import stack
        grads = defaultdict(list)
        for group in optimizer.param_groups:
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                if not allow_fp16 and g.dtype is D.float16:
                    raise ValueError("Attempting to unscale FP16 gradients.")
                grads[g.device].append(g)
        found = {}
        with no_grad():
            for device, gs in grads.items():
                inv = inv_scale.to(device)
                finite = []
                for g in gs:
                    P.mul(g, inv, _into=g)
                    finite.append(P.isfinite(g).all())
                found[device] = P.logical_not(stack(finite).all()).to(D.float32)
        return found

    def unscale_(self, optimizer) -> None:
        """Divide ``optimizer``'s gradients by the scale, in place (once per ``step``; ``step``
        does it if you do not). Call it before clipping or inspecting gradients.

        Raises ``ValueError`` for float16 gradients (keep float32 master parameters, as PyTorch
        requires) and ``RuntimeError`` when called twice before ``update()`` or after ``step``."""
        if not self._enabled:
            return
        self._check_scale_growth_tracker("unscale_")
        state = self._per_optimizer_states[id(optimizer)]
        if state["stage"] == _UNSCALED:
            raise RuntimeError("unscale_() has already been called on this optimizer since the last update().")
        if state["stage"] == _STEPPED:
            raise RuntimeError("unscale_() is being called after step().")
        # 1 / scale in float64, as PyTorch (exact for the usual powers of two either way)
        inv_scale = self._scale.double().reciprocal().float()
        state["found_inf_per_device"] = self._unscale_grads_(optimizer, inv_scale, False)
        state["stage"] = _UNSCALED

    def step(self, optimizer, *args, **kwargs):
        """``optimizer.step(*args, **kwargs)`` unless a gradient is inf/NaN (then skipped, returning
        None); unscales the gradients first if ``unscale_`` was not called. Reads one flag per
        device from the device: the iteration's host sync."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs:
            raise RuntimeError("Closure use is not currently supported if GradScaler is enabled.")
        self._check_scale_growth_tracker("step")
        state = self._per_optimizer_states[id(optimizer)]
        if state["stage"] == _STEPPED:
            raise RuntimeError("step() has already been called since the last update().")
        if state["stage"] == _READY:
            self.unscale_(optimizer)
        if not state["found_inf_per_device"]:
            raise RuntimeError("No inf checks were recorded for this optimizer (it has no gradients); "
                               "call backward on scaler.scale(loss) before step().")
        retval = None
        if not sum(v.item() for v in state["found_inf_per_device"].values()):
            retval = optimizer.step(*args, **kwargs)
        state["stage"] = _STEPPED
        return retval

    def update(self, new_scale=None) -> None:
        """Set the scale for the next iteration: ``backoff_factor`` times it if any optimizer
        stepped past inf/NaN gradients since the last update, ``growth_factor`` times it after
        ``growth_interval`` good iterations in a row, else unchanged. ``new_scale`` (a float or
        a one-element tensor on the scaler's device) sets it directly instead."""
        if not self._enabled:
            return
        scale, tracker = self._check_scale_growth_tracker("update")
        if new_scale is not None:
            if isinstance(new_scale, Tensor):
                if new_scale.device.type != self._device or new_scale.numel() != 1 or new_scale.requires_grad:
                    raise ValueError(f"GradScaler.update: new_scale must be a float or a one-element tensor on "
                                     f"'{self._device}' that does not require grad, got a tensor of shape "
                                     f"{list(new_scale.shape)} on {new_scale.device}")
                scale.copy_(new_scale.reshape(()))
            else:
                scale.fill_(float(new_scale))
        else:
            found = [f for s in self._per_optimizer_states.values() for f in s["found_inf_per_device"].values()]
            if not found:
                raise RuntimeError("No inf checks were recorded prior to update(); call scaler.step(optimizer) "
                                   "(or scaler.unscale_(optimizer)) first.")
            total = found[0]
            for f in found[1:]:
                total = total + f.to(total.device)
            self._update_scale(total.to(scale.device) > 0)
        self._per_optimizer_states = defaultdict(_fresh_state)

    def _update_scale(self, found_inf: Tensor) -> None:
        """PyTorch's ``_amp_update_scale_`` on the device: back off on inf/NaN (and restart the
        count); grow after ``growth_interval`` good steps if the grown scale is finite."""
        from ..autograd.grad_mode import no_grad
        from ..ops import pointwise as P
        with no_grad():
            scale, tracker = self._scale, self._growth_tracker
            counted = tracker + 1
            due = counted >= self._growth_interval
            grown = scale * self._growth_factor
            grow = P.logical_and(due, P.isfinite(grown))
            new_scale = P.where(found_inf, scale * self._backoff_factor, P.where(grow, grown, scale))
            new_tracker = P.where(P.logical_or(found_inf, due), 0, counted)
            scale.copy_(new_scale)
            tracker.copy_(new_tracker)

    # ---- settings and state ------------------------------------------------------------------------
    def get_scale(self) -> float:
        """The current scale (a host sync); 1.0 when disabled."""
        if not self._enabled:
            return 1.0
        return self._init_scale if self._scale is None else self._scale.item()

    def get_growth_factor(self) -> float:
        return self._growth_factor

    def set_growth_factor(self, new_factor: float) -> None:
        self._growth_factor = float(new_factor)

    def get_backoff_factor(self) -> float:
        return self._backoff_factor

    def set_backoff_factor(self, new_factor: float) -> None:
        self._backoff_factor = float(new_factor)

    def get_growth_interval(self) -> int:
        return self._growth_interval

    def set_growth_interval(self, new_interval: int) -> None:
        self._growth_interval = new_interval

    def _get_growth_tracker(self) -> int:
        if not self._enabled:
            return 0
        return self._init_growth_tracker if self._growth_tracker is None else int(self._growth_tracker.item())

    def is_enabled(self) -> bool:
        """Whether the scaler scales (False if built with ``enabled=False``)."""
        return self._enabled

    def state_dict(self) -> dict:
        """The scale, the factors, the interval and the growth tracker (empty when disabled),
        with PyTorch's keys, so a checkpoint loads in either library."""
        if not self._enabled:
            return {}
        return {"scale": self.get_scale(), "growth_factor": self._growth_factor,
                "backoff_factor": self._backoff_factor, "growth_interval": self._growth_interval,
                "_growth_tracker": self._get_growth_tracker()}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore what ``state_dict`` returned."""
        if not self._enabled:
            return
        if len(state_dict) == 0:
            raise RuntimeError("The source state dict is empty, possibly because it was saved from a disabled "
                               "instance of GradScaler.")
        self._init_scale = float(state_dict["scale"])
        if self._scale is not None:
            self._scale.fill_(self._init_scale)
        self._growth_factor = float(state_dict["growth_factor"])
        self._backoff_factor = float(state_dict["backoff_factor"])
        self._growth_interval = int(state_dict["growth_interval"])
        self._init_growth_tracker = int(state_dict["_growth_tracker"])
        if self._growth_tracker is not None:
            self._growth_tracker.fill_(self._init_growth_tracker)
