"""The recorded graph: nodes (``grad_fn`` objects) and the dispatcher observer that makes them.

Every primitive tells the dispatcher's observers what it ran (``_dispatch.notify``). When
grad mode is on and an input requires grad, ``record`` makes one node for the call: it keeps
the primitive's VJP (``_dispatch.VJPS``), what the VJP asked to save (with the version of
each saved tensor, to detect later in-place changes), the inputs' shapes/dtypes/devices and
one edge ``(node, output_nr)`` per input (``next_functions``) to the node that produced it,
or to the ``AccumulateGrad`` node of a leaf. Outputs of integer or bool dtype never require
grad.

In-place writes (``x.mul_(2)``, ``x[i] = v``, ``out=``) replace the written tensor's history
with the new node; ``before_write`` refuses writes into leaves that require grad and keeps a
copy of the old value when the VJP needs it. A write into a *view* also rewrites its base's
history with a ``CopySlices`` node (as PyTorch does): the base's gradient flows through the
op for the view's elements and straight through for the others. Other views of that memory
are then stale: the next op that uses one first re-derives its history from the base
(``AsStridedBackward0``), so gradients stay right whichever alias was written.

The observer is installed lazily (``install``), the first time a tensor gets
``requires_grad=True`` or a Function is applied: programs that never ask for gradients pay
nothing for autograd.
"""
from __future__ import annotations

import threading
import traceback
import weakref

import numpy as np

from .. import _dispatch
from .._tensor import Tensor
from .grad_mode import state

VJPS = _dispatch.VJPS
_WRITES = frozenset(("index_put", "uniform_", "normal_", "bernoulli_", "random_"))   # in place, no `into` flag


class Node:
    """A step of backward: takes the gradients of its outputs, gives those of its inputs.

    ``next_functions``: one ``(node, output_nr)`` per input (``(None, 0)`` when that input
    needs no gradient), as in PyTorch. Printed as ``<MulBackward0 object at 0x...>``.
    """

    __slots__ = ("next_functions", "_inmeta", "_pre_hooks", "_version", "_trace", "__weakref__")
    _multi_output = False          # outputs have gradients of their own (Function, multi_output VJPs): tensors store their number
    _inplace_error = None          # a message: this node's outputs refuse in-place writes (nn.Module backward hooks)

    def name(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        return f"<{type(self).__name__} object at {hex(id(self))}>"

    def register_hook(self, fn):
        """``fn(grad_inputs, grad_outputs)`` after this node runs (PyTorch's Node.register_hook is
        not supported: use Tensor.register_hook)."""
        raise NotImplementedError("Node.register_hook is not supported; register hooks on tensors "
                                  "(Tensor.register_hook)")

    def _add_pre_hook(self, nr: int, fn) -> "RemovableHandle":
        if self._pre_hooks is None:
            self._pre_hooks = {}
        hooks = self._pre_hooks.setdefault(nr, {})
        return RemovableHandle(hooks, fn)

    def apply(self, grads: list, create_graph: bool) -> tuple:
        raise NotImplementedError

    def release(self) -> None:
        """Free saved tensors (after a backward without ``retain_graph``)."""


class RemovableHandle:
    """Returned by ``register_hook``; ``remove()`` takes the hook off again."""

    _next_id = 0

    def __init__(self, hooks: dict, fn):
        RemovableHandle._next_id += 1
        self.id = RemovableHandle._next_id
        self._hooks = hooks
        hooks[self.id] = fn

    def remove(self) -> None:
        self._hooks.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


_FREED = ("Trying to backward through the graph a second time (or directly access saved tensors after they have "
          "already been freed). Saved intermediate values of the graph are freed when you call .backward() or "
          "autograd.grad(). Specify retain_graph=True if you need to backward through the graph a second time or "
          "if you need to access saved tensors after calling backward.")


class OpNode(Node):
    """The node of one primitive call. It is also the VJP's view of the call: ``inputs``
    (saved ones; others None), ``outputs`` (saved ones), ``params``, ``shapes``, ``needs``
    (which inputs want a gradient)."""

    __slots__ = ("_vjp", "inputs", "outputs", "params", "_versions", "_freed")

    @property
    def shapes(self) -> tuple:
        return tuple(m[0] if m is not None else None for m in self._inmeta)

    @property
    def needs(self) -> tuple:
        return tuple(f is not None for f, _ in self.next_functions)

    def apply(self, grads, create_graph):
        vjp = self._vjp
        g = grads[0]
        if g is None and not vjp.multi_output:
            return (None,) * len(self.next_functions)
        if self._freed:
            raise RuntimeError(_FREED)
        if self._versions is not None:
            self._check_versions()
        if vjp.multi_output:        # saved outputs are passed without history (none needs it so far)
            return vjp.fn(grads, self)
        if vjp.pointwise:
            out = self.outputs[0] if self.outputs else None
            if out is not None and create_graph:
                out = _as_output_of(out, self)
            return vjp.fn(g, *self.inputs, out)
        if self.outputs and create_graph and self.outputs[0] is not None:
            self.outputs = (_as_output_of(self.outputs[0], self),) + self.outputs[1:]
        return vjp.fn(g, self)

    def _check_versions(self):
        for t, v in self._versions:
            if t._storage.version != v:
                raise RuntimeError(
                    f"one of the variables needed for gradient computation has been modified by an inplace "
                    f"operation: [{t.dtype.name}{list(t.shape)}] is at version {t._storage.version}; expected version "
                    f"{v} instead. It was saved by {type(self).__name__} (the backward of '{self._vjp_name()}'). "
                    f"Hint: clone the tensor before modifying it in place, or modify it after backward.")

    def _vjp_name(self) -> str:
        return _OP_OF.get(type(self), "?")

    def release(self):
        if self._versions is not None or self.outputs:
            self.inputs = self.outputs = None
            self._versions = None
            self._freed = True


def _as_output_of(out: Tensor, node: Node) -> Tensor:
    """A saved output, when the VJP runs under create_graph: the output again, with ``node`` as its
    grad_fn, so gradients of the VJP's result flow back through this node (saved outputs are kept
    without their grad_fn, which would be a reference cycle)."""
    if out.grad_fn is node or not out.dtype.is_floating_point:
        return out
    t = Tensor._make(out._storage, out._offset, out._shape, out._strides, out.dtype, out._base)
    t.grad_fn, t._requires_grad = node, True
    return t


class NotImplementedNode(Node):
    """The node of a primitive without a VJP: backward through it raises, naming the op."""

    __slots__ = ("op",)

    def apply(self, grads, create_graph):
        raise RuntimeError(f"the derivative for '{self.op}' is not implemented")


class AccumulateGrad(Node):
    """The node of a leaf tensor: adds the gradient into ``variable.grad``."""

    __slots__ = ("variable",)

    def __init__(self, variable: Tensor):
        self.next_functions = ()
        self._inmeta = ()
        self._pre_hooks = None
        self._trace = self._version = None
        self.variable = variable

    def hooks(self):
        hooks = self.variable.__dict__.get("_hooks")
        return hooks.values() if hooks else ()


def accumulate_grad(t: Tensor) -> AccumulateGrad:
    """The AccumulateGrad node of leaf ``t`` (one per tensor while the graph holds it, as in PyTorch)."""
    d = t.__dict__
    ref = d.get("_acc")
    acc = ref() if ref is not None else None
    if acc is None:
        acc = AccumulateGrad(t)
        d["_acc"] = weakref.ref(acc)
    return acc


_NO_EDGE = (None, 0)


def edge(t) -> tuple:
    """``(node, output_nr)`` that gradients for ``t`` flow into, or ``(None, 0)``."""
    if t.__class__ is not Tensor and not isinstance(t, Tensor):
        return _NO_EDGE
    fn = t.grad_fn
    if fn is not None:
        if t._base is not None and fn._version is not None and fn._version != t._storage.version:
            fn = _refresh_view(t)
            if fn is None:
                return _NO_EDGE
        return (fn, t.__dict__.get("_nr", 0)) if fn._multi_output else (fn, 0)
    if t._requires_grad:
        return (accumulate_grad(t), 0)
    return _NO_EDGE


# ---- node classes, one per op ---------------------------------------------------------------------------
_CLASSES: dict = {}
_OP_OF: dict = {}


def _node_class(op: str, multi_output: bool = False) -> type:
    cls = _CLASSES.get(op)
    if cls is None:
        name = "".join(p[:1].upper() + p[1:] for p in op.strip("_").split("_")) + "Backward0"
        cls = _CLASSES[op] = type(name, (OpNode,), {"__slots__": (), "_multi_output": multi_output})
        _OP_OF[cls] = op
    return cls


def _meta(a) -> tuple | None:
    return (a._shape, a.dtype, a._storage.device) if isinstance(a, Tensor) else None


def _alias(t: Tensor) -> Tensor:
    """``t`` without history: same memory, no grad_fn (what a node saves of its own outputs)."""
    return Tensor._make(t._storage, t._offset, t._shape, t._strides, t.dtype, t._base)


def _make_node(op: str, vjp, inputs, outputs, params, original=None) -> OpNode:
    """A node for ``op``: edges to the inputs' history, the saved tensors the VJP asked for
    (inputs not saved are None; Python numbers are always kept: VJPs skip their gradient).
    ``original``: (tensor, copy) when an in-place op overwrote an input its VJP needs."""
    cls = _CLASSES.get(op) or _node_class(op, vjp.multi_output)
    node = cls.__new__(cls)
    keep = vjp.save_inputs
    nexts, metas, saved, versions = [], [], [], []
    for i, a in enumerate(inputs):
        if isinstance(a, Tensor):
            nexts.append(edge(a) if a._requires_grad else _NO_EDGE)
            metas.append((a._shape, a.dtype, a._storage.device))
            if keep is True or (keep is not False and _saves(keep, i)):
                if original is not None and _same_view(a, original[0]):
                    a = original[1]
                versions.append((a, a._storage.version))
            else:
                a = None
        else:
            nexts.append(_NO_EDGE)
            metas.append(None)
        saved.append(a)
    node.next_functions = tuple(nexts)
    node._inmeta = tuple(metas)
    node.inputs = tuple(saved)
    keep = vjp.save_outputs
    if keep is not False:
        node.outputs = tuple([_alias(o) if _saves(keep, i) else None for i, o in enumerate(outputs)])
        versions += [(o, o._storage.version) for o in node.outputs if o is not None]
    else:
        node.outputs = None
    node._versions = versions or None
    node._pre_hooks = None
    node._version = outputs[0]._storage.version
    node._trace = traceback.format_stack()[:-3] if state.anomaly else None
    node._vjp = vjp
    node.params = params
    node._freed = False
    return node


def _saves(keep, i: int) -> bool:
    """Whether a VJP's ``inputs=`` / ``outputs=`` (True, False, a tuple of positions or a slice)
    saves position ``i``."""
    if keep is True or keep is False:
        return keep
    return i in keep if isinstance(keep, tuple) else i >= keep.start


def _not_implemented(op: str, inputs) -> NotImplementedNode:
    node = NotImplementedNode()
    node.next_functions = tuple([edge(a) for a in inputs])
    node._inmeta = tuple([_meta(a) for a in inputs])
    node._pre_hooks = node._trace = None
    node._version = None
    node.op = op
    return node


# ---- the observer -------------------------------------------------------------------------------------------
class _Pending(threading.local):
    original = None        # (dest, copy of its old value) from before_write, for the next record


_pending = _Pending()


def _has_history(t: Tensor) -> bool:
    base = t._base
    return t._requires_grad or (base is not None and base._requires_grad)


def record(op: str, inputs: tuple, outputs: tuple, params: dict) -> None:
    """The dispatcher observer: make the node of this call when it needs one."""
    if not state.enabled:
        return
    vjp = VJPS.get(op)
    out = outputs[0]
    if (vjp is None or not vjp.view) and (params.get("into") or op in _WRITES or out._requires_grad
                                          or out._base is not None):
        return _record_write(op, vjp, inputs, out, params)
    for a in inputs:
        if isinstance(a, Tensor) and a._requires_grad:
            break
    else:
        return
    if not out.dtype.is_floating_point and not any(o.dtype.is_floating_point for o in outputs):
        return                          # integer and bool results never require grad
    node = _make_node(op, vjp, inputs, outputs, params) if vjp is not None else _not_implemented(op, inputs)
    for i, o in enumerate(outputs):
        if o.dtype.is_floating_point:
            o.grad_fn, o._requires_grad = node, True
            if i and node._multi_output:
                o.__dict__["_nr"] = i


def _record_write(op, vjp, inputs, dest: Tensor, params) -> None:
    """An op wrote into ``dest`` (in place, or ``out=``): ``dest`` gets the new node as its history;
    if ``dest`` is a view, its base gets a CopySlices node."""
    original, _pending.original = _pending.original, None
    if original is not None and original[0] is not dest:
        original = None
    if not _has_history(dest):
        for a in inputs:
            if isinstance(a, Tensor) and a._requires_grad:
                break
        else:
            return
    if not dest.dtype.is_floating_point:
        return                          # integer results carry no gradient (x.to(tk.int64))
    make = (lambda: _make_node(op, vjp, inputs, (dest,), params, original)) if vjp is not None else \
        (lambda: _not_implemented(op, inputs))
    base = dest._base
    if base is not None:
        dest_slots = tuple(i for i, a in enumerate(inputs) if _same_view(a, dest))
        fn = make()                     # the base's copy of the node: CopySlices runs it itself
        cs = CopySlices(edge(base), _meta(base), base, dest, fn, dest_slots)
        base.grad_fn, base._requires_grad = cs, True
    node = make()
    dest.grad_fn, dest._requires_grad = node, True


def _same_view(a, dest: Tensor) -> bool:
    return a is dest or (isinstance(a, Tensor) and a._storage is dest._storage and a._offset == dest._offset
                         and a._shape == dest._shape and a._strides == dest._strides)


def before_write(op: str, dest: Tensor, inputs: tuple) -> None:
    """The dispatcher's write observer: runs before ``op`` writes into ``dest``. Refuses writes into
    leaves that require grad (and their views); keeps a copy of ``dest`` when the op's VJP needs
    the value the write destroys (``x.mul_(y)`` needs the old ``x`` for y's gradient)."""
    _pending.original = None
    if not state.enabled:
        return
    for t in (dest, dest._base):
        if t is not None and t.grad_fn is not None and t.grad_fn._inplace_error:
            raise RuntimeError(f"{op}: {t.grad_fn._inplace_error}")
    if dest._requires_grad and dest.grad_fn is None:
        raise RuntimeError(f"a leaf Variable that requires grad is being used in an in-place operation ({op}); "
                           f"do it under tk.no_grad(), or on a clone")
    base = dest._base
    if base is not None and base._requires_grad and base.grad_fn is None:
        raise RuntimeError(f"a view of a leaf Variable that requires grad is being used in an in-place operation "
                           f"({op}); do it under tk.no_grad(), or on a clone")
    vjp = VJPS.get(op)
    if vjp is None or vjp.save_inputs is False or not dest.dtype.is_floating_point:
        return
    if not (_has_history(dest) or any(isinstance(a, Tensor) and a._requires_grad for a in inputs)):
        return
    if any(_same_view(a, dest) for i, a in enumerate(inputs) if _saves(vjp.save_inputs, i)):
        from ..ops.creation import clone
        _pending.original = None
        original = clone(dest)          # recorded: its history is dest's old one (double backward needs it)
        _pending.original = (dest, original)


# ---- in-place writes into views ---------------------------------------------------------------------------
def _geometry(t: Tensor) -> tuple:
    return (t._offset, tuple(t._shape), t._strides, t._storage.device)


def _positions(base: tuple, view: tuple) -> Tensor:
    """An int64 tensor of the view's shape: for each element of the view, the flat (row-major)
    position of the same memory element in the base (both given by ``_geometry``). Raises if
    the view reaches memory outside the base's elements."""
    def flat(geometry):
        offset, shape, strides, _ = geometry
        idx = np.full(shape, offset, np.int64)
        for d, (n, st) in enumerate(zip(shape, strides)):
            dims = [1] * len(shape)
            dims[d] = n
            idx = idx + (np.arange(n, dtype=np.int64) * st).reshape(dims)
        return idx
    b, v = flat(base), flat(view)
    if v.size == 0:
        pos = np.zeros(v.shape, np.int64)
    else:
        lo = min(int(b.min()) if b.size else 0, int(v.min()))
        table = np.full(max(int(b.max()) if b.size else 0, int(v.max())) - lo + 1, -1, np.int64)
        table[(b - lo).reshape(-1)] = np.arange(b.size, dtype=np.int64)
        pos = table[v - lo]
        if (pos < 0).any():
            raise RuntimeError(f"autograd: a view (offset, shape, strides {view[:3]}) reaches memory outside its "
                               f"base ({base[:3]}); gradients through it are not supported")
    from ..ops.creation import tensor
    return tensor(pos, device=base[3])


def _scatter_into_base(g: Tensor, pos: Tensor, base_meta, accumulate=True) -> Tensor:
    """A tensor of the base's shape, zero except ``g`` added at ``pos``."""
    from ..ops.creation import zeros
    shape, dtype, device = base_meta
    z = zeros(shape, dtype=g.dtype, device=device).reshape(-1)
    return z.index_put_((pos.reshape(-1),), g.reshape(-1), accumulate=accumulate).reshape(shape)


class CopySlices(Node):
    """The base's history after an in-place op wrote into one of its views: the op's node
    (``fn``) runs on the view's part of the base's gradient; the rest passes through."""

    __slots__ = ("fn", "_pos", "_layouts", "_dest_slots")

    def __init__(self, base_edge, base_meta, base: Tensor, view: Tensor, fn: Node, dest_slots: tuple):
        self.fn = fn
        self._dest_slots = dest_slots
        self._layouts = (_geometry(base), _geometry(view))      # positions are found when backward needs them
        self._pos = None
        # edge 0: the base's old history; then the op's inputs other than the view it wrote
        self.next_functions = (base_edge,) + tuple(e for i, e in enumerate(fn.next_functions) if i not in dest_slots)
        self._inmeta = (base_meta,) + tuple(m for i, m in enumerate(fn._inmeta) if i not in dest_slots)
        self._pre_hooks = None
        self._version = None
        self._trace = fn._trace

    def _positions(self) -> Tensor:
        if self._pos is None:
            self._pos = _positions(*self._layouts)
        return self._pos

    def apply(self, grads, create_graph):
        g = grads[0]
        if g is None:
            return (None,) * len(self.next_functions)
        pos = self._positions()
        flat = g.reshape(-1)
        g_view = flat[pos]
        fn_grads = self.fn.apply([g_view], create_graph)
        g_old_view = None
        for i in self._dest_slots:
            gi = fn_grads[i]
            if gi is not None:
                if gi.shape != g_view.shape:
                    from ..ops.reduction import sum_to_size
                    gi = sum_to_size(gi, g_view.shape)
                g_old_view = gi if g_old_view is None else g_old_view + gi
        if g_old_view is None:
            from ..ops.creation import zeros_like
            g_old_view = zeros_like(g_view)
        g_base = flat.clone().index_put_((pos.reshape(-1),), g_old_view.reshape(-1).to(flat.dtype)).reshape(g.shape)
        return (g_base,) + tuple(gi for i, gi in enumerate(fn_grads) if i not in self._dest_slots)

    def release(self):
        self.fn.release()


class AsStridedBackward0(Node):
    """History of a view whose memory was written through another alias: the view's elements
    taken from its base's (current) history."""

    __slots__ = ("_pos",)

    def apply(self, grads, create_graph):
        g = grads[0]
        if g is None:
            return (None,)
        return (_scatter_into_base(g, self._pos, self._inmeta[0]),)


def _refresh_view(t: Tensor) -> Node:
    base = t._base
    node = AsStridedBackward0()
    node.next_functions = (edge(base),)
    node._inmeta = (_meta(base),)
    node._pre_hooks = node._trace = None
    node._pos = _positions(_geometry(base), _geometry(t))
    node._version = t._storage.version
    if node.next_functions[0][0] is None:      # the base has no history: neither has the view
        t.grad_fn, t._requires_grad = None, False
        return None
    t.grad_fn = node
    return node


# ---- Function nodes (tensorkit.autograd.Function) -----------------------------------------------------------
class FunctionNode(Node):
    """Base of the node classes made for ``Function`` subclasses; see ``function.py``."""

    __slots__ = ()
    _multi_output = True


# ---- installing the observers ------------------------------------------------------------------------------
_installed = False


def install() -> None:
    """Start recording: put ``record`` and ``before_write`` on the dispatcher (once)."""
    global _installed
    if not _installed:
        _installed = True
        _dispatch.observers.append(record)
        _dispatch.write_observers.append(before_write)
