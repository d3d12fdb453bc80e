"""``tk.autograd.Function``: an op with a hand-written backward.

    class Exp(tk.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            y = x.exp()
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx, g):
            (y,) = ctx.saved_tensors
            return g * y

    y = Exp.apply(x)

``forward`` runs with grad mode off; its outputs get one node (``ExpBackward``), which is also
the ``ctx``. ``backward`` is written with tensorkit ops, so under ``create_graph=True`` it is
recorded and can be differentiated again.
"""
from __future__ import annotations

from .._tensor import Tensor
from .graph import FunctionNode, _FREED, _meta, edge, install
from .grad_mode import no_grad, state


class BackwardCFunction(FunctionNode):
    """The node of one ``Function.apply`` call, and the ``ctx`` its forward and backward see."""

    __slots__ = ("needs_input_grad", "_saved", "_versions", "_non_diff", "_outmeta", "_materialize",
                 "_freed", "__dict__")

    def save_for_backward(self, *tensors) -> None:
        """Keep tensors for backward (checked against later in-place changes); read them back
        with ``saved_tensors``."""
        for t in tensors:
            if t is not None and not isinstance(t, Tensor):
                raise TypeError(f"save_for_backward can only save tensors (or None), got {type(t).__name__}; "
                                f"keep other values as attributes of ctx")
        self._saved = tensors
        self._versions = tuple(t._storage.version if t is not None else None for t in tensors)

    @property
    def saved_tensors(self) -> tuple:
        if self._freed:
            raise RuntimeError(_FREED)
        for t, v in zip(self._saved, self._versions):
            if t is not None and t._storage.version != v:
                raise RuntimeError(
                    f"one of the variables needed for gradient computation has been modified by an inplace "
                    f"operation: [{t.dtype.name}{list(t.shape)}] is at version {t._storage.version}; expected "
                    f"version {v} instead. It was saved by {type(self).__name__}.")
        return self._saved

    def mark_non_differentiable(self, *tensors) -> None:
        """These outputs get no gradient (and do not require grad), e.g. indices."""
        self._non_diff = {id(t) for t in tensors}

    def set_materialize_grads(self, value: bool) -> None:
        """Whether gradients of outputs that got none arrive as zeros (default) or as None."""
        self._materialize = value

    def mark_dirty(self, *tensors) -> None:
        raise NotImplementedError("Function: in-place forward (mark_dirty) is not supported; return a new tensor")

    def apply(self, grads, create_graph):
        if self._freed:
            raise RuntimeError(_FREED)
        grads = list(grads) + [None] * (len(self._outmeta) - len(grads))
        if self._materialize:
            from ..ops.creation import zeros
            for i, (g, meta) in enumerate(zip(grads, self._outmeta)):
                if g is None and meta is not None:
                    grads[i] = zeros(meta[0], dtype=meta[1], device=meta[2])
        r = type(self)._function.backward(self, *grads)
        r = r if isinstance(r, tuple) else (r,)
        n = len(self.next_functions)
        if len(r) > n and all(g is None for g in r[n:]):
            r = r[:n]
        if len(r) != n:
            raise RuntimeError(f"function {type(self).__name__} returned an incorrect number of gradients "
                               f"(expected {n}, got {len(r)})")
        for i, g in enumerate(r):
            if g is not None and not isinstance(g, Tensor):
                raise TypeError(f"function {type(self).__name__} returned a {type(g).__name__} as gradient {i}; "
                                f"expected a Tensor or None")
        return r

    def release(self):
        self._saved, self._versions, self._freed = (), (), True


class Function:
    """Base class of ops with a hand-written backward; see the module docstring."""

    _node_class = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._node_class = type(f"{cls.__name__}Backward", (BackwardCFunction,), {"_function": cls})

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError("a Function subclass must define forward(ctx, ...)")

    @staticmethod
    def backward(ctx, *grads):
        raise NotImplementedError("a Function subclass must define backward(ctx, *grads)")

    @classmethod
    def apply(cls, *args, **kwargs):
        """Run ``forward`` and, when an input requires grad, record one node for backward."""
        install()
        if cls._node_class is None:
            raise TypeError("apply() must be called on a subclass of tk.autograd.Function")
        ctx = cls._node_class.__new__(cls._node_class)
        ctx.needs_input_grad = tuple(isinstance(a, Tensor) and a._requires_grad for a in args)
        ctx._saved, ctx._versions, ctx._non_diff = (), (), set()
        ctx._materialize, ctx._freed = True, False
        ctx._pre_hooks = ctx._trace = ctx._version = None
        with no_grad():
            out = cls.forward(ctx, *args, **kwargs)
        if not (state.enabled and any(ctx.needs_input_grad)):
            return out
        outs = out if isinstance(out, tuple) else (out,)
        ctx.next_functions = tuple(edge(a) for a in args)
        ctx._inmeta = tuple(_meta(a) for a in args)
        new, metas = [], []
        for i, o in enumerate(outs):
            if isinstance(o, Tensor) and o.dtype.is_floating_point and id(o) not in ctx._non_diff:
                if any(o is a for a in args) or o._requires_grad:     # an input returned as is: an alias
                    o = Tensor._make(o._storage, o._offset, o._shape, o._strides, o.dtype, o._base)
                o.grad_fn, o._requires_grad = ctx, True
                if i:
                    o.__dict__["_nr"] = i
            metas.append(_meta(o))          # None for non-tensors; zeros stand in for missing gradients
            new.append(o)
        ctx._outmeta = tuple(metas)
        return tuple(new) if isinstance(out, tuple) else new[0]


class once_differentiable:
    """Decorator for ``backward``: under create_graph, its result is not differentiable again
    (it runs with grad mode off)."""

    def __new__(cls, fn):
        import functools

        @functools.wraps(fn)
        def wrapper(ctx, *grads):
            with no_grad():
                return fn(ctx, *grads)
        return wrapper
