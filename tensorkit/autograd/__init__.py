"""Reverse-mode automatic differentiation: a Python graph recorded from the dispatcher.

* ``graph.py``: nodes (``grad_fn`` objects) and the dispatcher observer that records them;
* ``engine.py``: ``backward`` / ``grad``, the topological walk;
* ``grad_mode.py``: ``no_grad``, ``enable_grad``, ``set_grad_enabled``, ``inference_mode``,
  ``detect_anomaly``;
* ``function.py``: ``Function`` (custom forward/backward);
* ``gradcheck.py``: ``gradcheck`` / ``gradgradcheck``.

Each primitive's backward (VJP) is written next to its forward in ``ops/`` and registered in
``_dispatch.VJPS``; this package knows ops only through the dispatcher. It also gives
``Tensor`` its autograd methods (``backward``, ``detach``, ``register_hook``, ...).

Example::

    >>> x = tk.tensor(2., requires_grad=True)
    >>> y = x ** 2 + 5 * x + 2
    >>> y.backward(); x.grad          # 2x + 5
    tensor(9.)
"""
from __future__ import annotations

from .. import _tensor
from .._tensor import Tensor
from .engine import backward, grad
from .function import Function, once_differentiable
from .grad_mode import (detect_anomaly, enable_grad, inference_mode, is_anomaly_enabled, is_grad_enabled,
                        is_inference_mode_enabled, no_grad, set_detect_anomaly, set_grad_enabled)
from .gradcheck import GradcheckError, gradcheck, gradgradcheck
from .graph import AccumulateGrad, Node, RemovableHandle, install

__all__ = ["backward", "grad", "Function", "once_differentiable", "no_grad", "enable_grad", "set_grad_enabled",
           "inference_mode", "is_grad_enabled", "detect_anomaly", "set_detect_anomaly", "gradcheck", "gradgradcheck",
           "GradcheckError", "Node"]

_tensor._autograd_install = install      # the first requires_grad=True starts recording


# ---- Tensor methods -------------------------------------------------------------------------------------
def _backward(self: Tensor, gradient=None, retain_graph=None, create_graph: bool = False, inputs=None) -> None:
    """Accumulate the gradient of this tensor into the leaves' ``.grad`` (see ``tk.autograd.backward``).

    Args:
        gradient: d(loss)/d(self), of self's shape; may be omitted for a one-element tensor (1).
        retain_graph: keep the graph's saved tensors for another backward (default: create_graph).
        create_graph: record the backward itself, for higher-order derivatives.
    """
    backward(self, gradient, retain_graph, create_graph, inputs)


def _detach(self: Tensor) -> Tensor:
    """The same memory without history: requires no grad. (In-place changes through either are
    seen by both, and by the version counter.)"""
    return Tensor._make(self._storage, self._offset, self._shape, self._strides, self.dtype)


def _detach_(self: Tensor) -> Tensor:
    """Drop this tensor's history in place: it becomes a leaf that requires no grad."""
    if self._base is not None and self.grad_fn is not None:
        raise RuntimeError("Can't detach views in-place. Use detach() instead.")
    self.grad_fn, self._requires_grad = None, False
    return self


def _register_hook(self: Tensor, hook):
    """``hook(grad)`` runs when this tensor's gradient is computed; returning a tensor replaces
    the gradient. Returns a handle; ``handle.remove()`` takes the hook off.

    Example::

        >>> h = x.register_hook(lambda g: g * 2)     # doubles x's gradient
    """
    if not self._requires_grad:
        raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
    install()
    if self.grad_fn is None:
        return RemovableHandle(self.__dict__.setdefault("_hooks", {}), hook)
    return self.grad_fn._add_pre_hook(self.__dict__.get("_nr", 0), hook)


def _retain_grad(self: Tensor) -> None:
    """Keep this non-leaf tensor's gradient in ``.grad`` after backward (leaves always do)."""
    if not self._requires_grad:
        raise RuntimeError("can't retain_grad on Tensor that has requires_grad=False")
    if self.grad_fn is None or self.__dict__.get("_retains_grad"):
        return
    import weakref
    ref = weakref.ref(self)

    def retain(g):
        t = ref()
        if t is not None:
            g = g.detach() if not g._requires_grad else g
            t.grad = g.clone() if t.grad is None else t.grad + g
    self.__dict__["_retains_grad"] = True
    node = self.grad_fn
    if node._pre_hooks is None:
        node._pre_hooks = {}
    node._pre_hooks.setdefault(self.__dict__.get("_nr", 0), {})["retain"] = retain


Tensor.backward = _backward
Tensor.detach = _detach
Tensor.detach_ = _detach_
Tensor.register_hook = _register_hook
Tensor.retain_grad = _retain_grad
Tensor.retains_grad = property(lambda self: bool(self.__dict__.get("_retains_grad")) and self.grad_fn is not None)
def _set_data(self: Tensor, other: Tensor) -> None:
    """``t.data = other``: t now shows other's memory (shape, dtype), keeping its own autograd identity."""
    if not isinstance(other, Tensor):
        raise TypeError(f"data must be a Tensor, got {type(other).__name__}")
    self._storage, self._offset, self._shape, self._strides = other._storage, other._offset, other._shape, \
        other._strides
    self.dtype, self._contig, self._array = other.dtype, other._contig, None


Tensor.data = property(_detach, _set_data, doc="This tensor's memory without history (as ``detach()``); "
                                               "assigning replaces the memory, keeping the autograd identity.")
