"""The backward engine: from the roots' gradients to the leaves', one node at a time.

    1. find every node reachable from the roots and count, for each, the edges into it
       (how many gradients it still waits for);
    2. start from the roots; run a node once all its gradients have arrived (their sum);
       send each input gradient along its edge, summing where paths meet;
    3. a node's saved tensors are freed once it ran, unless the graph is retained.

An explicit stack instead of recursion: a 10,000-step chain is fine. ``grad()`` runs the same
loop but captures the gradients of its ``inputs`` instead of accumulating into ``.grad``, and
skips nodes that lead to none of them. With ``create_graph=True`` the VJPs run with grad mode
on, so the gradients are recorded too and can be differentiated again.

Where paths meet, the first sum allocates a buffer the engine owns (``_Sum``); later gradients
are added into it in place. A slicing view's VJP returns a ``SliceGrad`` (its gradient and the
region of its base it belongs in), which is added into that region only: T slices of one
tensor cost one buffer and T small adds. Hooks, ``grad()``'s results and ``create_graph``
(whose sums must be recorded) see ordinary tensors.
"""
from __future__ import annotations

from .._tensor import Tensor
from ..ops.view import SliceGrad
from .graph import AccumulateGrad, edge
from .grad_mode import state


def _fit(g: Tensor, meta) -> Tensor:
    """``g`` with the shape (broadcasting undone by summing), dtype and device of the input."""
    shape, dtype, device = meta
    if g._shape != shape:
        from ..ops.reduction import sum_to_size
        g = sum_to_size(g, shape)
    if g.dtype is not dtype:
        g = g.to(dtype)
    if g._storage.device != device:
        g = g.to(device)
    return g


class _Sum:
    """A sum of gradients in a tensor the engine allocated: no one else holds it until the node
    it waits for runs, so the gradients that arrive later are added into it in place."""

    __slots__ = ("t",)

    def __init__(self, t: Tensor):
        self.t = t


def _add(old, g):
    """``old + g`` for a slot of gradients waiting for a node (grad mode off). ``old``: None, a
    Tensor (maybe shared: never written), a SliceGrad or a _Sum; ``g``: a Tensor or a SliceGrad.
    The sums are the old path's, term for term (``a + b`` is ``b + a`` in floating point)."""
    if old is None:
        return g
    if old.__class__ is not _Sum:
        if old.__class__ is not SliceGrad and g.__class__ is not SliceGrad:
            return _Sum(old + g)
        if old.__class__ is SliceGrad and g.__class__ is not SliceGrad:
            old, g = g, old
        old = _Sum(old.materialize() if old.__class__ is SliceGrad else old.clone())    # clone: contiguous
    if g.__class__ is SliceGrad:
        g.add_to(old.t)
    else:
        old.t.add_(g)
    return old


def _dense(g):
    """A slot's gradient as a Tensor."""
    c = g.__class__
    return g.t if c is _Sum else g.materialize() if c is SliceGrad else g


def _run_hooks(node, buf: list) -> None:
    """Tensor hooks: ``hook(grad)`` may return a replacement; ``retain_grad`` runs last."""
    if node.__class__ is AccumulateGrad:
        for h in list(node.hooks()):
            r = h(buf[0])
            if r is not None:
                buf[0] = r
    if node._pre_hooks:
        for nr, hooks in node._pre_hooks.items():
            if nr >= len(buf) or buf[nr] is None:
                continue
            for key, h in list(hooks.items()):
                if key != "retain":
                    r = h(buf[nr])
                    if r is not None:
                        buf[nr] = r
            retain = hooks.get("retain")
            if retain is not None:
                retain(buf[nr])


def _check_nan(node, grads) -> None:
    from ..ops.pointwise import isnan
    for i, g in enumerate(grads):
        if g.__class__ is SliceGrad:
            g = g.values
        if g is not None and g.dtype.is_floating_point and bool(isnan(g).any()):
            where = "".join(node._trace) if node._trace else \
                "(the forward ran outside detect_anomaly(): no stack was recorded)\n"
            raise RuntimeError(f"Function '{node.name()}' returned nan values in its {i}th output.\n"
                               f"The forward call that created it:\n{where}")


def _topological(roots, deps) -> list:
    """The nodes in an order where each comes before the nodes it sends gradients to."""
    left = dict(deps)
    order, ready = [], [n for n in roots if not left.get(n)]
    while ready:
        n = ready.pop()
        order.append(n)
        for m, _ in n.next_functions:
            if m is not None:
                left[m] -= 1
                if left[m] == 0:
                    ready.append(m)
    return order


def execute(root_edges: list, root_grads: list, keep_graph: bool, create_graph: bool,
            capture: list | None = None) -> list | None:
    """Backpropagate ``root_grads`` from ``root_edges``. With ``capture`` (a list of edges):
    return the gradient reaching each of them, touching no ``.grad``; else accumulate
    into the leaves' ``.grad``."""
    roots = list(dict.fromkeys(n for n, _ in root_edges))
    deps: dict = {}
    stack = list(roots)
    seen = set(roots)
    while stack:
        for m, _ in stack.pop().next_functions:
            if m is not None:
                deps[m] = deps.get(m, 0) + 1
                if m not in seen:
                    seen.add(m)
                    stack.append(m)

    needed = None
    targets: dict = {}
    if capture is not None:
        for i, (n, nr) in enumerate(capture):
            targets.setdefault(n, []).append((nr, i))
        needed = set()
        for n in reversed(_topological(roots, deps)):
            if n in targets or any(m in needed for m, _ in n.next_functions):
                needed.add(n)
    captured = [None] * len(capture) if capture is not None else None

    pending: dict = {}
    for (n, nr), g in zip(root_edges, root_grads):
        buf = pending.setdefault(n, [None])
        while len(buf) <= nr:
            buf.append(None)
        buf[nr] = g if buf[nr] is None else buf[nr] + g

    prev_mode = state.enabled
    state.enabled = create_graph
    try:
        ready = [n for n in roots if not deps.get(n)]
        while ready:
            node = ready.pop()
            buf = pending.pop(node, None) or [None]
            leaf = node.__class__ is AccumulateGrad
            hooked = node._pre_hooks or (leaf and node.hooks())
            if not leaf or hooked or capture is not None:     # else .grad takes the engine's own sum as is
                for i, g in enumerate(buf):
                    if g is not None and g.__class__ is not Tensor:
                        buf[i] = _dense(g)
            if hooked:
                _run_hooks(node, buf)
            if capture is not None:
                for nr, i in targets.get(node, ()):
                    captured[i] = buf[nr] if nr < len(buf) else None
                if node not in needed or leaf:
                    continue
            elif leaf:
                g = buf[0]
                if g is not None:
                    _accumulate(node.variable, g, create_graph)
                continue
            if any(g is not None for g in buf):
                grads = node.apply(buf, create_graph)
                if state.anomaly:
                    _check_nan(node, grads)
            else:
                grads = ()
            if not keep_graph:
                node.release()
            nexts, metas = node.next_functions, node._inmeta
            if len(grads) != len(nexts) and grads:
                raise RuntimeError(f"{node.name()} returned {len(grads)} gradients for {len(nexts)} inputs")
            for i, (m, nr) in enumerate(nexts):
                if m is None:
                    continue
                g = grads[i] if grads else None
                if g is not None:
                    meta = metas[i]
                    if g.__class__ is SliceGrad:        # fits: the base's shape, the view's dtype and device
                        if create_graph:
                            g = g.materialize()         # recorded, so the sums below are too
                    elif g._shape != meta[0] or g.dtype is not meta[1] or g._storage.device != meta[2]:
                        g = _fit(g, meta)
                    buf = pending.get(m)
                    if buf is None:
                        pending[m] = buf = [None]
                    if nr:
                        while len(buf) <= nr:
                            buf.append(None)
                    old = buf[nr]
                    buf[nr] = g if old is None else old + g if create_graph else _add(old, g)
                left = deps[m] - 1
                deps[m] = left
                if left == 0:
                    ready.append(m)
    finally:
        state.enabled = prev_mode
    return captured


def _accumulate(t: Tensor, g, create_graph: bool) -> None:
    """``t.grad += g``, always in a new tensor: ``g`` may be shared (a VJP passes its gradient on
    unchanged to several inputs, a user's gradient reaches a leaf as is), and ``.grad`` must
    neither alias it nor be an expanded view (the user may write into it). A _Sum or SliceGrad
    is the engine's own: it becomes the first ``.grad`` without a copy."""
    if g.__class__ is _Sum or g.__class__ is SliceGrad:
        g = _dense(g)
        if t.grad is None:
            t.grad = g
            return
    if not create_graph:
        g = g.detach()
    t.grad = g.clone() if t.grad is None else t.grad + g


# ---- the public entry points --------------------------------------------------------------------------
def _as_tuple(x) -> tuple:
    if x is None:
        return ()
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _root_grads(outputs: tuple, grad_outputs: tuple, create_graph: bool) -> list:
    from ..ops.creation import ones_like
    if grad_outputs and len(grad_outputs) != len(outputs):
        raise RuntimeError(f"grad_outputs has {len(grad_outputs)} tensors but there are {len(outputs)} outputs")
    grads = []
    for i, out in enumerate(outputs):
        if not isinstance(out, Tensor):
            raise TypeError(f"backward: outputs must be Tensors, got {type(out).__name__} at position {i}")
        if not out._requires_grad:
            raise RuntimeError(f"element {i} of tensors does not require grad and does not have a grad_fn")
        g = grad_outputs[i] if grad_outputs else None
        if g is None:
            if out.numel() != 1:
                raise RuntimeError(f"grad can be implicitly created only for scalar outputs (output {i} has shape "
                                   f"{list(out.shape)}); pass a gradient of that shape")
            g = ones_like(out)
        elif not isinstance(g, Tensor):
            raise TypeError(f"gradients must be Tensors or None, got {type(g).__name__}")
        elif tuple(g.shape) != tuple(out.shape):
            raise RuntimeError(f"Mismatch in shape: grad_output[{i}] has a shape of {list(g.shape)} and output[{i}] "
                               f"has a shape of {list(out.shape)}.")
        elif g.dtype is not out.dtype or g.device != out.device:
            g = g.to(out.device, out.dtype)
        if not create_graph and g._requires_grad:
            g = g.detach()
        grads.append(g)
    return grads


def backward(tensors, grad_tensors=None, retain_graph: bool | None = None, create_graph: bool = False,
             inputs=None) -> None:
    """Accumulate into the leaves' ``.grad`` the gradients of ``tensors`` (weighted by
    ``grad_tensors``; a scalar's defaults to 1). The graph is freed unless ``retain_graph``
    (default: ``create_graph``). With ``inputs``, only those leaves' ``.grad`` change.

    Example::

        >>> x = tk.tensor([1., 2.], requires_grad=True)
        >>> tk.autograd.backward((x * x).sum()); x.grad
        tensor([2., 4.])
    """
    outputs = _as_tuple(tensors)
    grads = _root_grads(outputs, _as_tuple(grad_tensors), create_graph)
    keep = create_graph if retain_graph is None else retain_graph
    edges = [edge(t) for t in outputs]
    if inputs is None:
        execute(edges, grads, keep, create_graph)
        return
    inputs = _as_tuple(inputs)
    found = execute(edges, grads, keep, create_graph, capture=[_input_edge(t, i) for i, t in enumerate(inputs)])
    for t, g in zip(inputs, found):
        if g is not None:
            _accumulate(t, g, create_graph)


def _input_edge(t, i: int) -> tuple:
    if not isinstance(t, Tensor):
        raise TypeError(f"grad: inputs must be Tensors, got {type(t).__name__} at position {i}")
    if not t._requires_grad:
        raise RuntimeError(f"One of the differentiated Tensors (input {i}) does not require grad")
    return edge(t)


def grad(outputs, inputs, grad_outputs=None, retain_graph: bool | None = None, create_graph: bool = False,
         allow_unused: bool | None = None, materialize_grads: bool = False) -> tuple:
    """The gradients of ``outputs`` (weighted by ``grad_outputs``) with respect to ``inputs``,
    as a tuple; ``.grad`` fields are not touched. With ``create_graph=True`` the result is
    itself differentiable (higher-order derivatives).

    Args:
        allow_unused: an input the outputs do not depend on gets None (or zeros with
            ``materialize_grads``) instead of an error.

    Example::

        >>> x = tk.tensor(3., requires_grad=True)
        >>> (dx,) = tk.autograd.grad(x ** 3, x, create_graph=True)    # 3x^2 = 27
        >>> tk.autograd.grad(dx, x)                                    # 6x = 18
        (tensor(18.),)
    """
    outs = _as_tuple(outputs)
    ins = _as_tuple(inputs)
    if not ins:
        raise RuntimeError("grad requires at least one input")
    grads = _root_grads(outs, _as_tuple(grad_outputs), create_graph)
    keep = create_graph if retain_graph is None else retain_graph
    capture = [_input_edge(t, i) for i, t in enumerate(ins)]
    result = execute([edge(t) for t in outs], grads, keep, create_graph, capture=capture)
    if materialize_grads:
        allow_unused = True
    for i, g in enumerate(result):
        if g is None:
            if not allow_unused:
                raise RuntimeError(f"One of the differentiated Tensors (input {i}) appears to not have been used in "
                                   f"the graph. Set allow_unused=True if this is the desired behavior.")
            if materialize_grads:
                from ..ops.creation import zeros_like
                result[i] = zeros_like(ins[i])
    return tuple(result)
