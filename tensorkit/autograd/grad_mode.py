"""Grad modes: whether ops are recorded for backward, per thread.

``no_grad``, ``enable_grad``, ``set_grad_enabled`` and ``inference_mode`` work as context
managers and as decorators, as in PyTorch; ``detect_anomaly`` makes backward name the op
whose gradient became NaN. The state is thread-local: a ``no_grad`` in one thread does not
stop recording in another.
"""
from __future__ import annotations

import functools
import threading


class _State(threading.local):
    enabled = True          # record ops for backward
    anomaly = False         # check every backward output for NaN, remember forward stacks


state = _State()


def is_grad_enabled() -> bool:
    """Whether ops run now are recorded for backward."""
    return state.enabled


class _Mode:
    """Base of the grad-mode context managers: sets ``state.enabled`` on entry, restores it on
    exit; an instance also decorates a function (a fresh mode per call, so it is re-entrant)."""

    _enabled: bool = True

    def __enter__(self):
        self._prev = state.enabled
        state.enabled = self._enabled
        return self

    def __exit__(self, *exc) -> None:
        state.enabled = self._prev

    def _clone(self):
        return type(self)()

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with self._clone():
                return fn(*args, **kwargs)
        return wrapper


class no_grad(_Mode):
    """Ops run inside are not recorded: their results do not require grad.

    Example::

        >>> with tk.no_grad():
        ...     y = x * 2          # y.requires_grad is False
    """

    _enabled = False


class enable_grad(_Mode):
    """Turn recording back on inside a ``no_grad`` block (or a function decorated with it)."""

    _enabled = True


class set_grad_enabled(_Mode):
    """``set_grad_enabled(False)`` is ``no_grad()``, ``set_grad_enabled(True)`` is
    ``enable_grad()``. Called as a plain function it sets the mode right away (as in PyTorch);
    used in a ``with`` it restores the previous mode on exit."""

    def __init__(self, mode: bool):
        self._prev = state.enabled
        self._enabled = bool(mode)
        state.enabled = self._enabled

    def __enter__(self):
        return self

    def _clone(self):
        return set_grad_enabled(self._enabled)

    def __call__(self, fn):
        state.enabled = self._prev          # as a decorator it only applies during calls
        return super().__call__(fn)


class inference_mode(_Mode):
    """``no_grad`` for inference: nothing is recorded. (PyTorch also skips version counters
    and forbids using the results in autograd later; tensorkit's version counters are cheap
    and its results are ordinary tensors, so this is ``no_grad`` under another name.)"""

    def __init__(self, mode: bool = True):
        self._enabled = not mode

    def _clone(self):
        return inference_mode(not self._enabled)


def is_inference_mode_enabled() -> bool:
    return not state.enabled


class detect_anomaly:
    """Inside, backward checks every gradient a node produces and raises RuntimeError naming
    the node (e.g. ``DivBackward0``) whose gradient has a NaN, with the stack of the forward
    call that recorded it. Slow: for debugging.

    Example::

        >>> with tk.autograd.detect_anomaly():
        ...     (x / 0 * 0).sum().backward()    # RuntimeError: Function 'DivBackward0' returned nan ...
    """

    def __init__(self, check_nan: bool = True):
        self.check_nan = check_nan

    def __enter__(self):
        self._prev = state.anomaly
        state.anomaly = self.check_nan
        return self

    def __exit__(self, *exc) -> None:
        state.anomaly = self._prev

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with detect_anomaly(self.check_nan):
                return fn(*args, **kwargs)
        return wrapper


def set_detect_anomaly(mode: bool) -> None:
    state.anomaly = bool(mode)


def is_anomaly_enabled() -> bool:
    return state.anomaly
