"""Automatic mixed precision: ``autocast`` (run listed ops in float16/bfloat16 or float32) and
``GradScaler`` (scale the loss so float16 gradients do not underflow), as ``torch.amp``;
``custom_fwd`` / ``custom_bwd`` for ``tk.autograd.Function`` subclasses used under autocast.

Example::

    >>> scaler = tk.amp.GradScaler("cuda")
    >>> with tk.autocast("cuda"):
    ...     loss = loss_fn(model(x), y)
    >>> scaler.scale(loss).backward()
    >>> scaler.step(optimizer)
    >>> scaler.update()
"""
from .autocast import autocast, custom_bwd, custom_fwd, get_autocast_dtype, is_autocast_enabled
from .grad_scaler import GradScaler

__all__ = ["autocast", "GradScaler", "custom_bwd", "custom_fwd", "is_autocast_enabled", "get_autocast_dtype"]
