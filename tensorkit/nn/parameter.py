"""``nn.Parameter``: a tensor that a ``Module`` registers as one of its weights.

A Parameter is a leaf tensor that requires grad (unless told otherwise) and shares memory
with the tensor it was made from. Ops on it return plain tensors, as in PyTorch.
"""
from __future__ import annotations

from .._tensor import Tensor
from ..ops.creation import empty


class Parameter(Tensor):
    """A tensor that is a module's parameter: assigning one to a module attribute registers it.

    Args:
        data: the values (memory is shared, not copied); an empty tensor if omitted.
        requires_grad: whether it requires grad (default True).

    Example::

        >>> w = tk.nn.Parameter(tk.zeros(2, 3))
        >>> w.requires_grad
        True
    """

    def __new__(cls, data: Tensor | None = None, requires_grad: bool = True):
        if data is None:
            data = empty(0)
        if not isinstance(data, Tensor):
            raise TypeError(f"Parameter: data must be a Tensor, got {type(data).__name__}")
        p = cls._make(data._storage, data._offset, data._shape, data._strides, data.dtype)
        if requires_grad:
            p.requires_grad_()
        return p

    def __init__(self, data: Tensor | None = None, requires_grad: bool = True):
        pass

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()

    __str__ = __repr__

    def __deepcopy__(self, memo):
        if id(self) in memo:
            return memo[id(self)]
        p = Parameter(self.detach().clone(), self.requires_grad)
        memo[id(self)] = p
        return p

    def __reduce_ex__(self, protocol):
        return (Parameter, (self.detach().clone(), self.requires_grad))


class Buffer(Tensor):
    """Marks a tensor as a buffer when assigned to a module attribute (``self.x = Buffer(t)``),
    as ``torch.nn.Buffer``; the module stores ``t`` itself, a plain tensor."""

    def __new__(cls, data: Tensor, *, persistent: bool = True):
        b = cls._make(data._storage, data._offset, data._shape, data._strides, data.dtype)
        b._data, b.persistent = data, persistent
        return b

    def __init__(self, data: Tensor, *, persistent: bool = True):
        pass
