"""Autograd engine rules the op table cannot express: the engine, grad modes, hooks, Function,
retain_graph, version counters, in-place writes into views, deep graphs.

Each test compares with a formula, numpy, or finite differences (gradcheck), never with
tensorkit itself. Per-op gradients are checked by the op table (tests/test_ops.py).
"""
import math
import subprocess
import sys
import threading
import weakref

import numpy as np
import pytest

import tensorkit as tk
import tensorkit.testing
from tensorkit.autograd import Function, gradcheck, gradgradcheck

F64 = tk.float64


def t(values, **kw):
    return tk.tensor(values, dtype=kw.pop("dtype", F64), **kw)


def close(a, b, tol=1e-10):
    a = a.detach().numpy() if isinstance(a, tk.Tensor) else np.asarray(a)
    np.testing.assert_allclose(a, np.asarray(b, np.float64), rtol=tol, atol=tol)


# ---- the seed examples -------------------------------------------------------------------------------------
def test_seed_polynomial():
    x = t([-2.0, 0.5, 3.0], requires_grad=True)
    y = x ** 2 + 5 * x + 2
    y.sum().backward()
    close(x.grad, 2 * np.array([-2.0, 0.5, 3.0]) + 5)


def test_seed_scalar_and_grad_fn():
    x = tk.tensor(2.0, requires_grad=True)
    y = x ** 2 + 5 * x + 2
    assert repr(y.grad_fn).startswith("<AddBackward0 object at 0x")
    assert "grad_fn=<AddBackward0>" in repr(y)
    add_fn, _ = y.grad_fn.next_functions[0]
    assert type(add_fn).__name__ == "AddBackward0" and y.grad_fn.next_functions[1] == (None, 0)
    leaf_fns = {type(f).__name__ for f, _ in add_fn.next_functions[0][0].next_functions if f is not None}
    assert leaf_fns == {"AccumulateGrad"}                    # x ** 2 -> x's AccumulateGrad
    y.backward()
    assert x.grad.item() == 9.0


def test_rnn_cell_against_numpy_bptt():
    rng = np.random.default_rng(0)
    steps, n, d, h = 4, 3, 5, 4
    xs = rng.standard_normal((steps, n, d))
    wx, wh, b = rng.standard_normal((d, h)) * 0.5, rng.standard_normal((h, h)) * 0.5, rng.standard_normal(h)
    Wx, Wh, B = (tk.tensor(a, requires_grad=True) for a in (wx, wh, b))
    state = tk.zeros(n, h, dtype=F64)
    for s in range(steps):
        state = tk.tanh(tk.mm(tk.tensor(xs[s]), Wx) + tk.mm(state, Wh) + B)
    state.backward(tk.ones(n, h, dtype=F64))
    # numpy: forward keeping states, then backpropagation through time
    hs = [np.zeros((n, h))]
    for s in range(steps):
        hs.append(np.tanh(xs[s] @ wx + hs[-1] @ wh + b))
    gx, gh, gb = np.zeros_like(wx), np.zeros_like(wh), np.zeros_like(b)
    g = np.ones((n, h))
    for s in reversed(range(steps)):
        pre = g * (1 - hs[s + 1] ** 2)
        gx += xs[s].T @ pre
        gh += hs[s].T @ pre
        gb += pre.sum(0)
        g = pre @ wh.T
    close(Wx.grad, gx)
    close(Wh.grad, gh)
    close(B.grad, gb)


def test_third_order_derivatives():
    x = t([0.3, -1.2, 2.0], requires_grad=True)
    a = x.detach().numpy().copy()
    (d1,) = tk.autograd.grad((x ** 4).sum(), x, create_graph=True)
    (d2,) = tk.autograd.grad(d1.sum(), x, create_graph=True)
    (d3,) = tk.autograd.grad(d2.sum(), x, create_graph=True)
    (d4,) = tk.autograd.grad(d3.sum(), x)
    close(d1, 4 * a ** 3)
    close(d2, 12 * a ** 2)
    close(d3, 24 * a)
    close(d4, np.full(3, 24.0))
    (s1,) = tk.autograd.grad(x.sin().sum(), x, create_graph=True)
    (s2,) = tk.autograd.grad(s1.sum(), x, create_graph=True)
    (s3,) = tk.autograd.grad(s2.sum(), x)
    close(s3, -np.cos(a))


def test_backward_create_graph_then_grad_of_grad():
    x = t([1.5], requires_grad=True)
    (x ** 3).sum().backward(create_graph=True)
    assert x.grad.requires_grad
    close(x.grad, [3 * 1.5 ** 2])
    (g2,) = tk.autograd.grad(x.grad.sum(), x)
    close(g2, [6 * 1.5])


# ---- the engine ------------------------------------------------------------------------------------------------
def test_paths_sum_and_broadcasting_is_undone():
    x = t([[1.0], [2.0], [3.0]], requires_grad=True)      # (3, 1)
    y = t([0.5, -1.0, 2.0, 4.0], requires_grad=True)       # (4,)
    z = (x * y + x.exp() * x).sum()
    z.backward()
    xa, ya = np.array([[1.0], [2.0], [3.0]]), np.array([0.5, -1.0, 2.0, 4.0])
    close(x.grad, ya.sum() + 4 * (np.exp(xa) * xa + np.exp(xa)))
    close(y.grad, np.full(4, xa.sum()))
    assert x.grad.shape == (3, 1) and y.grad.shape == (4,)


def test_mixed_dtypes_and_integer_outputs():
    x = tk.tensor([1.0, 2.0], dtype=tk.float32, requires_grad=True)
    y = tk.tensor([3.0, 4.0], dtype=F64, requires_grad=True)
    (x * y).sum().backward()
    assert x.grad.dtype is tk.float32 and y.grad.dtype is F64
    close(x.grad, [3.0, 4.0], 1e-6)
    for r in (x > 1, x.argmax(), x.long(), tk.isnan(x)):
        assert not r.requires_grad and r.grad_fn is None
    with pytest.raises(RuntimeError, match="only floating point tensors can require gradients"):
        tk.tensor([1, 2]).requires_grad_()


def test_accumulation_across_calls_and_grad_leaves_grad_alone():
    x = t([1.0, 2.0], requires_grad=True)
    (x * 3).sum().backward()
    (x * 3).sum().backward()
    close(x.grad, [6.0, 6.0])
    (g,) = tk.autograd.grad((x * x).sum(), x)
    close(g, [2.0, 4.0])
    close(x.grad, [6.0, 6.0])
    # the stored gradient is not an alias of one another leaf's or of the caller's tensor
    a, b = t([1.0], requires_grad=True), t([2.0], requires_grad=True)
    (a + b).sum().backward()
    a.grad.zero_()
    close(b.grad, [1.0])
    v = t([5.0, 6.0])
    x.grad = None
    x.backward(v)
    v.zero_()
    close(x.grad, [5.0, 6.0])


def test_backward_inputs_and_data():
    x, y = t([1.0, 2.0], requires_grad=True), t([3.0], requires_grad=True)
    (x * y).sum().backward(inputs=[y])
    assert x.grad is None
    close(y.grad, [3.0])
    x.data = t([5.0, 6.0, 7.0])            # new memory, same leaf
    assert x.requires_grad and x.is_leaf and x.shape == (3,)
    (x * x).sum().backward()
    close(x.grad, [10.0, 12.0, 14.0])
    x.data.zero_()                         # .data writes bypass the leaf check
    close(x.detach(), [0.0, 0.0, 0.0])


def test_grad_allow_unused_and_errors():
    x, y = t([1.0], requires_grad=True), t([2.0], requires_grad=True)
    z = (x * 2).sum()
    with pytest.raises(RuntimeError, match="appears to not have been used in the graph.*allow_unused=True"):
        tk.autograd.grad(z, (x, y), retain_graph=True)
    gx, gy = tk.autograd.grad(z, (x, y), allow_unused=True, retain_graph=True)
    close(gx, [2.0])
    assert gy is None
    _, gy = tk.autograd.grad(z, (x, y), materialize_grads=True)
    close(gy, [0.0])
    with pytest.raises(RuntimeError, match="does not require grad"):
        tk.autograd.grad((x * 2).sum(), t([1.0]))


def test_backward_errors():
    x = t([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="does not require grad and does not have a grad_fn"):
        t([1.0]).sum().backward()
    with pytest.raises(RuntimeError, match="grad can be implicitly created only for scalar outputs"):
        (x * 2).backward()
    with pytest.raises(RuntimeError, match=r"Mismatch in shape: grad_output\[0\] has a shape of \[3\]"):
        (x * 2).backward(t([1.0, 1.0, 1.0]))


def test_retain_graph():
    x = t([1.0, 2.0], requires_grad=True)
    y = (x.exp() * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    a = np.array([1.0, 2.0])
    close(x.grad, 2 * (np.exp(a) * a + np.exp(a)))
    with pytest.raises(RuntimeError, match="backward through the graph a second time.*retain_graph=True"):
        y.backward()


def test_saved_tensors_are_freed():
    x = t([1.0, 2.0], requires_grad=True)
    mid = x * 2
    z = mid.sin().sum()
    ref = weakref.ref(mid)
    node = z.grad_fn.next_functions[0][0]
    assert type(node).__name__ == "SinBackward0" and node.inputs[0] is mid
    del mid
    assert ref() is not None            # the graph keeps it for backward
    z.backward()
    assert node.inputs is None and ref() is None


def test_ten_thousand_node_chain():
    x = t([1.0], requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)                 # the engine must not recurse
    try:
        y.sum().backward()
    finally:
        sys.setrecursionlimit(limit)
    close(x.grad, [1.0001 ** 10_000], 1e-9)


def test_version_counter_error_names_the_op():
    x = t([1.0, 2.0], requires_grad=True)
    y = x * 2
    z = y.exp()              # saves its output
    z.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation.*ExpBackward0"):
        z.sum().backward()
    a = t([1.0, 2.0], requires_grad=True)
    b = a * 1
    c = b * b                # saves b
    b[0] = 5.0               # through a view of b's memory
    with pytest.raises(RuntimeError, match="modified by an inplace operation.*version 1; expected version 0.*"
                                           "MulBackward0"):
        c.sum().backward()


def test_inplace_on_leaf_is_refused_before_writing():
    x = t([1.0, 2.0], requires_grad=True)
    for write in (lambda: x.add_(1), lambda: x.mul_(2), lambda: x[0].fill_(3), lambda: x.__setitem__(1, 0.0),
                  lambda: tk.exp(t([0.0, 0.0]), out=x), lambda: x.uniform_()):
        with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
            write()
        close(x.detach(), [1.0, 2.0])
    with tk.no_grad():
        x.add_(1)
    close(x.detach(), [2.0, 3.0])


def test_inplace_ops_on_non_leaves():
    x = t([0.5, -1.5, 2.0], requires_grad=True)
    y = x * 1
    y.mul_(x)            # y = x^2: needs the old y for x's gradient
    y.sin_()             # sin(x^2)
    y.sum().backward()
    a = np.array([0.5, -1.5, 2.0])
    close(x.grad, np.cos(a ** 2) * 2 * a)


# ---- in-place writes into views --------------------------------------------------------------------------------------
def test_inplace_on_view_seed():
    x = t([1.0, 2.0, 3.0], requires_grad=True)
    y = x * 1
    y[1:].mul_(2)
    y.sum().backward()
    close(x.grad, [1.0, 2.0, 2.0])
    assert type(y.grad_fn).__name__ == "CopySlices"


def test_inplace_on_view_with_tensor_operand():
    x = t([1.0, 2.0, 3.0], requires_grad=True)
    w = t([4.0, 5.0], requires_grad=True)
    y = x * 1
    y[1:].mul_(w)
    (y * y).sum().backward()             # y = [x0, x1 w0, x2 w1]
    close(x.grad, [2.0, 2 * 2 * 16, 2 * 3 * 25])
    close(w.grad, [2 * 4 * 4, 2 * 5 * 9])


def test_views_taken_before_a_write_see_it():
    x = t([1.0, 2.0, 3.0], requires_grad=True)
    z = x * 2
    v = z[1:]            # a view taken before the base is written
    z.mul_(3)
    v.sum().backward()   # v = 6 x[1:]
    close(x.grad, [0.0, 6.0, 6.0])
    x.grad = None
    z = x * 1
    a, b = z[:2], z[1:]  # overlapping siblings
    a.mul_(10)
    (b * b).sum().backward()     # b = [10 x1, x2]
    close(x.grad, [0.0, 200 * 2.0, 2 * 3.0])


def test_setitem_into_a_tensor_without_history():
    x = t([1.0, 2.0, 3.0], requires_grad=True)
    y = tk.zeros(4, dtype=F64)
    y[1:] = x * 2
    y[0] = 7.0
    y[tk.tensor([3])] = x[:1] * x[:1]          # advanced index: index_put_ into a view
    assert y.requires_grad
    (y * t([1.0, 10.0, 100.0, 1000.0])).sum().backward()
    close(x.grad, [20.0 + 2000.0 * 1.0, 200.0, 0.0])
    close(y.detach(), [7.0, 2.0, 4.0, 1.0])


def test_inplace_on_view_gradcheck():
    def f(x, w):
        y = x * 1
        y[:, ::2].mul_(w)
        y[1].exp_()
        return y
    x = t(np.linspace(-1, 1, 12).reshape(3, 4), requires_grad=True)
    w = t([0.5, -2.0], requires_grad=True)
    assert gradcheck(f, (x, w))
    assert gradgradcheck(f, (x, w))


# ---- hooks, retain_grad, detach ---------------------------------------------------------------------------------------
def test_tensor_hooks():
    x = t([1.0, 2.0], requires_grad=True)
    seen = []
    h1 = x.register_hook(lambda g: seen.append(g.numpy().copy()))
    h2 = x.register_hook(lambda g: g * 10)
    y = x * 3
    hy = y.register_hook(lambda g: g + 1)          # a non-leaf's gradient replaced on its way
    y.sum().backward()
    close(seen[0], [6.0, 6.0])                     # y's gradient 1 + 1, times 3
    close(x.grad, [60.0, 60.0])                    # hooks run in order: the second one multiplies
    h1.remove(), h2.remove(), hy.remove()
    x.grad = None
    (x * 3).sum().backward()
    close(x.grad, [3.0, 3.0])
    with pytest.raises(RuntimeError, match="doesn't require gradient"):
        t([1.0]).register_hook(lambda g: g)


def test_retain_grad_and_detach():
    x = t([1.0, 2.0], requires_grad=True)
    y = x * x
    y.retain_grad()
    assert y.retains_grad and not x.retains_grad
    (y * 3).sum().backward()
    close(y.grad, [3.0, 3.0])
    close(x.grad, [6.0, 12.0])
    d = y.detach()
    assert not d.requires_grad and d.grad_fn is None and d.untyped_storage() is y.untyped_storage()
    z = x * 2
    z.detach_()
    assert z.is_leaf and not z.requires_grad
    with pytest.raises(RuntimeError, match="Can't detach views in-place"):
        (x * 2)[1:].detach_()


# ---- grad modes --------------------------------------------------------------------------------------------------------
def test_grad_modes():
    x = t([1.0], requires_grad=True)
    with tk.no_grad():
        assert not tk.is_grad_enabled() and not (x * 2).requires_grad
        with tk.enable_grad():
            assert (x * 2).requires_grad
    assert tk.is_grad_enabled()

    @tk.no_grad()
    def f(a):
        return a * 2
    assert not f(x).requires_grad and tk.is_grad_enabled()
    tk.set_grad_enabled(False)
    assert not (x * 2).requires_grad
    tk.set_grad_enabled(True)
    with tk.set_grad_enabled(False):
        assert not (x * 2).requires_grad
    assert (x * 2).requires_grad
    with tk.inference_mode():
        assert not (x * 2).requires_grad and tk.is_inference_mode_enabled()
    with tk.inference_mode(False):
        assert (x * 2).requires_grad


def test_grad_mode_is_thread_local():
    x = t([1.0], requires_grad=True)
    entered, release, result = threading.Event(), threading.Event(), {}

    def other():
        with tk.no_grad():
            entered.set()
            release.wait(5)
            result["other"] = (x * 2).requires_grad
    th = threading.Thread(target=other)
    th.start()
    entered.wait(5)
    result["main"] = (x * 2).requires_grad
    release.set()
    th.join()
    assert result == {"main": True, "other": False}


def test_requires_grad_on_creation():
    for make in (lambda: tk.zeros(2, requires_grad=True), lambda: tk.ones(2, requires_grad=True),
                 lambda: tk.full((2,), 1.5, requires_grad=True), lambda: tk.randn(2, requires_grad=True),
                 lambda: tk.rand(2, requires_grad=True), lambda: tk.tensor([1.0], requires_grad=True),
                 lambda: tk.arange(0.0, 2.0, requires_grad=True), lambda: tk.eye(2, requires_grad=True),
                 lambda: tk.linspace(0, 1, 3, requires_grad=True), lambda: tk.empty(2, requires_grad=True)):
        a = make()
        assert a.requires_grad and a.is_leaf and a.grad_fn is None


def test_observer_is_installed_lazily():
    code = ("import tensorkit as tk\nfrom tensorkit import _dispatch\n"
            "x = tk.ones(3) * 2 + 1\nassert not _dispatch.observers and not _dispatch.write_observers\n"
            "y = tk.ones(3, requires_grad=True)\nassert _dispatch.observers and _dispatch.write_observers\n"
            "print('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "ok", r.stderr


# ---- Function ------------------------------------------------------------------------------------------------------------
class Cube(Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.save_for_backward(x)
        ctx.scale = scale
        return x * x * x * scale

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * 3 * x * x * ctx.scale, None


class SortLike(Function):
    @staticmethod
    def forward(ctx, x):
        values, idx = x.max(0)
        ctx.mark_non_differentiable(idx)
        ctx.save_for_backward(idx)
        ctx.n = x.shape[0]
        return values * 2, idx

    @staticmethod
    def backward(ctx, g, g_idx):
        (idx,) = ctx.saved_tensors
        assert g_idx is not None        # materialized as zeros
        out = tk.zeros(ctx.n, g.shape[0], dtype=g.dtype)
        return out.scatter(0, idx.unsqueeze(0), (g * 2).unsqueeze(0))


def test_function():
    x = t([1.0, -2.0], requires_grad=True)
    y = Cube.apply(x, 2.0)
    assert type(y.grad_fn).__name__ == "CubeBackward"
    assert y.grad_fn.needs_input_grad == (True, False)
    y.sum().backward()
    close(x.grad, 6 * np.array([1.0, -2.0]) ** 2)
    assert gradcheck(lambda a: Cube.apply(a, 0.5), (x,))
    # create_graph: the backward is recorded (written with tensorkit ops)
    (g,) = tk.autograd.grad(Cube.apply(x, 1.0).sum(), x, create_graph=True)
    (gg,) = tk.autograd.grad(g.sum(), x)
    close(gg, 6 * np.array([1.0, -2.0]))
    assert gradgradcheck(lambda a: Cube.apply(a, 1.5), (x,))
    m = t([[1.0, 5.0], [3.0, 2.0]], requires_grad=True)
    v, i = SortLike.apply(m)
    assert not i.requires_grad and v.requires_grad
    v.sum().backward()
    close(m.grad, [[0.0, 2.0], [2.0, 0.0]])
    assert not Cube.apply(t([1.0]), 1.0).requires_grad


def test_function_errors():
    class Wrong(Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g, g

    with pytest.raises(RuntimeError, match="incorrect number of gradients"):
        Wrong.apply(t([1.0], requires_grad=True)).sum().backward()

    class Bad(Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g * 3            # wrong: the derivative is 2

    x = t([1.0, 2.0], requires_grad=True)
    assert gradcheck(lambda a: Bad.apply(a), (x,), raise_exception=False) is False
    with pytest.raises(tk.autograd.GradcheckError, match="Jacobian mismatch"):
        gradcheck(lambda a: Bad.apply(a), (x,))

    class Saves(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * 1

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * x

    a = t([1.0], requires_grad=True) * 1
    y = Saves.apply(a)
    a.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation.*SavesBackward"):
        y.sum().backward()


# ---- gradients of slices: summed in place into one buffer of the base's shape -------------------------------------------
def _slice_uses(x):
    """x [5, 4] used through slices (a repeated one, overlapping ones, views of views, several
    dims, split/chunk/unbind) and whole; with the gradient each use sends to x, from numpy."""
    w = np.arange(1.0, 21.0).reshape(5, 4)
    W = t(w, device=x.device)
    y = ((x[0] * W[0]).sum() + (x[0] * W[1]).sum()                          # x[0] twice
         + (x[1:4] * W[1:4]).sum() + (x.narrow(0, 2, 3) * 2).sum()          # overlapping rows 2, 3
         + (x[1:][2] * 3).sum() + (x.select(1, 3) * W[:, 0]).sum()          # a view of a view; a column
         + sum((p * (k + 1)).sum() for k, p in enumerate(x.split(2)))
         + (x.chunk(2, dim=1)[1] * 5).sum() + (x.unbind(0)[4] * 7).sum()
         + (x.diagonal() * 11).sum() + (x * W).sum())
    e = np.zeros((5, 4))
    e[0] += w[0] + w[1]
    e[1:4] += w[1:4]
    e[2:5] += 2
    e[3] += 3
    e[:, 3] += w[:, 0]
    e[0:2] += 1
    e[2:4] += 2
    e[4] += 3
    e[:, 2:] += 5
    e[4] += 7
    e[np.arange(4), np.arange(4)] += 11
    e += w
    return y, e


@pytest.mark.parametrize("device", tk.testing.devices())
def test_slice_gradients_sum_into_the_base(device):
    x = t(np.linspace(-1, 1, 20).reshape(5, 4), device=device, requires_grad=True)
    y, expected = _slice_uses(x)
    y.backward()
    assert x.grad.device.type == device.split(":")[0] and tuple(x.grad.shape) == (5, 4)
    close(x.grad.cpu(), expected)
    first = x.grad
    _slice_uses(x)[0].backward()                    # .grad accumulates into a new tensor
    close(x.grad.cpu(), 2 * expected)
    close(first.cpu(), expected)
    a = t(np.ones((5, 4)), device=device, requires_grad=True)
    z = a * 2                                       # a non-leaf base: the sum flows on to a's
    y, expected = _slice_uses(z)
    y.backward()
    close(a.grad.cpu(), 2 * expected)


@pytest.mark.parametrize("device", tk.testing.devices())
def test_slice_gradients_of_a_non_contiguous_base(device):
    a = t(np.arange(40.0).reshape(4, 10), device=device, requires_grad=True)
    for base, back in ((a.t(), lambda g: g.T), (a[:, ::2], None)):      # [10, 4] transposed; [4, 5] strided
        a.grad = None
        uses = [(base[k] * (k + 1)).sum() for k in range(base.shape[0])] + [(base[1:3] ** 2).sum(), base[0].sum()]
        sum(uses).backward()
        b = base.detach().cpu().numpy()
        e = np.arange(1.0, b.shape[0] + 1)[:, None] * np.ones_like(b)
        e[1:3] += 2 * b[1:3]
        e[0] += 1
        if back is not None:
            close(a.grad.cpu(), back(e))
        else:
            full = np.zeros((4, 10))
            full[:, ::2] = e
            close(a.grad.cpu(), full)


@pytest.mark.parametrize("device", tk.testing.devices())
def test_slice_gradients_with_create_graph(device):
    x = t([[1.0, -2.0], [0.5, 3.0], [2.0, 1.0]], device=device, requires_grad=True)
    y = (sum((x[k] ** 3).sum() for k in range(3)) + (x[0] ** 3).sum() + (x[0] ** 3).sum() + (x[1:] ** 3).sum()
         + 2 * (x[2] ** 3).sum())
    (g,) = tk.autograd.grad(y, x, create_graph=True)
    xn = x.detach().cpu().numpy()
    count = np.array([[3.0], [2.0], [4.0]])        # how many times each row is used
    close(g.detach().cpu(), 3 * count * xn ** 2)
    (gg,) = tk.autograd.grad((g * g).sum(), x)     # d/dx sum((3 c x^2)^2) = 36 c^2 x^3
    close(gg.cpu(), 36 * count ** 2 * xn ** 3)


@pytest.mark.parametrize("device", tk.testing.devices())
def test_hooks_and_retain_grad_see_the_whole_slice_gradient(device):
    a = t(np.ones((3, 2)), device=device, requires_grad=True)
    z = a * 1
    z.retain_grad()
    seen = []
    z.register_hook(lambda g: seen.append(g.detach().cpu().numpy().copy()))
    a.register_hook(lambda g: g * 10)               # a leaf's hook replaces its gradient
    ((z[0] * 2).sum() + (z[2] * 3).sum() + z[0].sum()).backward()
    e = np.array([[3.0, 3.0], [0.0, 0.0], [3.0, 3.0]])
    assert len(seen) == 1
    close(seen[0], e)
    close(z.grad.cpu(), e)
    close(a.grad.cpu(), 10 * e)
    seen_x = []
    x = t(np.ones((3, 2)), device=device, requires_grad=True)
    x.register_hook(lambda g: seen_x.append(g))
    (x[0].sum() + x[1].sum()).backward()
    assert tuple(seen_x[0].shape) == (3, 2)
    close(seen_x[0].cpu(), [[1.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    z = a * 1
    (gz,) = tk.autograd.grad(((z[1] * 4).sum() + z[1].sum()), z)        # grad() returns the whole gradient
    close(gz.cpu(), [[0.0, 0.0], [5.0, 5.0], [0.0, 0.0]])


def test_slice_gradients_cost_one_base_sized_write():
    """T slices of one tensor: one zeros of the base's shape and T adds into regions of it, not
    T base-sized zeros and T - 1 base-sized adds."""
    from tensorkit import _dispatch
    x = tk.randn(6, 3, requires_grad=True)
    y = sum((x[k] * (k + 1)).sum() for k in range(6))
    shapes = []
    record = lambda op, inputs, outputs, params: shapes.append(tuple(outputs[0].shape))
    _dispatch.observers.append(record)
    try:
        y.backward()
    finally:
        _dispatch.observers.remove(record)
    assert shapes.count((6, 3)) == 1
    close(x.grad, np.arange(1.0, 7.0)[:, None] * np.ones((6, 3)))


def test_slice_gradients_next_to_an_inplace_write_into_a_view():
    a = t(np.arange(1.0, 7.0).reshape(3, 2), requires_grad=True)
    z = a * 1
    z[1].mul_(3)                                    # z's history: CopySlices
    (z[0] * z[1]).sum().backward()                  # z[0] = a[0], z[1] = 3 a[1]
    an = a.detach().numpy()
    close(a.grad, [3 * an[1], 3 * an[0], [0.0, 0.0]])


# ---- anomaly detection, devices ---------------------------------------------------------------------------------------------
def test_detect_anomaly_names_the_op():
    x = t([0.0, 1.0], requires_grad=True)
    with tk.autograd.detect_anomaly():
        y = (x.sqrt() * 0).sum()       # sqrt'(0) = inf, times 0: nan
        with pytest.raises(RuntimeError, match="Function 'SqrtBackward0' returned nan values in its 0th output"):
            y.backward()
    y = (x.sqrt() * 0).sum()
    y.backward()                       # without detect_anomaly: no check
    assert math.isnan(x.grad[0].item())


def test_gradients_on_cuda_and_across_devices():
    if "cuda" not in tk.testing.devices():
        pytest.skip("no cuda device (real or emulated)")
    x = tk.tensor([-2.0, 0.5, 3.0], device="cuda", requires_grad=True)
    (x ** 2 + 5 * x + 2).sum().backward()
    assert x.grad.device.type == "cuda"
    close(x.grad.cpu(), [1.0, 6.0, 11.0], 1e-6)
    y = Cube.apply(x, 2.0)                          # a Function on the device, differentiated twice
    (g,) = tk.autograd.grad(y.sum(), x, create_graph=True)
    (gg,) = tk.autograd.grad(g.sum(), x)
    close(gg.cpu(), 12 * np.array([-2.0, 0.5, 3.0]), 1e-5)
    c = t([1.0, 2.0], requires_grad=True)          # a CPU leaf moved to the device
    (c.cuda() * tk.tensor([3.0, 4.0], dtype=F64, device="cuda")).sum().backward()
    assert c.grad.device.type == "cpu"
    close(c.grad, [3.0, 4.0])


# ---- gradients at non-differentiable points follow PyTorch -------------------------------------------------------------
def _grad_of(fn, values):
    x = t(values, requires_grad=True)
    fn(x).sum().backward()
    return x.grad.numpy()


def test_kinks_follow_pytorch():
    close(_grad_of(tk.relu, [-1.0, 0.0, 2.0]), [0.0, 0.0, 1.0])                 # relu'(0) = 0
    close(_grad_of(tk.abs, [-1.0, 0.0, 2.0]), [-1.0, 0.0, 1.0])                 # abs'(0) = 0
    close(_grad_of(lambda x: x.clamp(0.0, 1.0), [-1.0, 0.0, 0.5, 1.0, 2.0]), [0, 1, 1, 1, 0])   # bounds: inside
    close(_grad_of(lambda x: tk.maximum(x, t([0.0, 1.0, 5.0])), [0.0, 2.0, 1.0]), [0.5, 1.0, 0.0])  # ties split
    close(_grad_of(lambda x: tk.minimum(x, t([0.0, 1.0, 5.0])), [0.0, 2.0, 1.0]), [0.5, 0.0, 1.0])
    close(_grad_of(lambda x: x.amax(), [1.0, 3.0, 3.0, 3.0]), [0, 1 / 3, 1 / 3, 1 / 3])   # amax: evenly
    close(_grad_of(lambda x: x.max(), [1.0, 3.0, 3.0]), [0, 0.5, 0.5])
    close(_grad_of(lambda x: x.max(0).values, [3.0, 1.0, 3.0]), [1.0, 0.0, 0.0])  # max(dim): the index given
    close(_grad_of(lambda x: x.norm(), [0.0, 0.0]), [0.0, 0.0])                  # norm'(0) = 0
    close(_grad_of(lambda x: x.sqrt(), [4.0]), [0.25])
    close(_grad_of(lambda x: x ** 0, [0.0, 2.0]), [0.0, 0.0])                     # pow: exponent 0
    close(_grad_of(lambda x: x.prod(), [2.0, 0.0, 3.0]), [0.0, 6.0, 0.0])         # prod with a zero: exact
    close(_grad_of(lambda x: x.cumprod(0), [2.0, 0.0, 3.0]), [1.0, 2 + 2 * 3, 0.0])
    close(_grad_of(lambda x: tk.floor(x) + tk.sign(x), [1.5, -0.5]), [0.0, 0.0])


def test_kinks_match_torch():
    torch = pytest.importorskip("torch")
    cases = [(tk.relu, torch.relu), (tk.abs, torch.abs), (lambda x: x.amax(), lambda x: x.amax()),
             (lambda x: x.clamp(-1.0, 0.0), lambda x: x.clamp(-1.0, 0.0)),
             (lambda x: tk.maximum(x, tk.flip(x.detach(), 0)), lambda x: torch.maximum(x, x.detach().flip(0))),
             (lambda x: x.norm(float("inf")), lambda x: x.norm(float("inf")))]
    values = [-1.0, 0.0, 0.0, 2.0, 2.0, -1.0]
    for mine, theirs in cases:
        tx = torch.tensor(values, dtype=torch.float64, requires_grad=True)
        theirs(tx).sum().backward()
        close(_grad_of(mine, values), tx.grad.numpy())


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("a_shape", [(2, 3, 4, 5), (3, 4, 5)])
def test_matmul_shared_matrix_gradient_is_one_product(device, a_shape):
    """The gradient of a matrix shared by a batch (a linear layer on (*, in) input) is one product
    over all batch rows: no per-batch (k, m) gradient summed afterwards (batch times the memory).
    Values as numpy's, a non-contiguous input too; double backward still works."""
    if device == "cuda" and not tk.cuda.is_available():
        pytest.skip("no cuda device")
    from tensorkit import _dispatch
    rng = np.random.default_rng(0)
    a_np, b_np = rng.standard_normal(a_shape), rng.standard_normal((5, 6))
    g_np = rng.standard_normal(a_shape[:-1] + (6,))
    for transposed in (False, True):
        a = tk.tensor(a_np, device=device, requires_grad=True)
        if transposed:                            # the same values through a non-contiguous view
            a = tk.tensor(np.swapaxes(a_np, 0, 1).copy(), device=device, requires_grad=True)
            x = a.transpose(0, 1)
        else:
            x = a
        b = tk.tensor(b_np, device=device, requires_grad=True)
        out = x @ b
        shapes = []
        _dispatch.observers.append(lambda op, i, o, p: shapes.append(tuple(o[0].shape)) if op == "matmul" else None)
        try:
            ga, gb = tk.autograd.grad(out, (a, b), tk.tensor(g_np, device=device))
        finally:
            _dispatch.observers.pop()
        assert (5, 6) in shapes and not any(len(s) > 2 and s[-2:] == (5, 6) for s in shapes), shapes
        np.testing.assert_allclose(gb.cpu().numpy(), a_np.reshape(-1, 5).T @ g_np.reshape(-1, 6), rtol=1e-10)
        want_ga = g_np @ b_np.T
        np.testing.assert_allclose(ga.cpu().numpy(), np.swapaxes(want_ga, 0, 1) if transposed else want_ga,
                                   rtol=1e-10)
    if device == "cpu":                           # (slow under the emulated device's interpreter)
        a = tk.tensor(a_np[..., :2, :], requires_grad=True)
        b = tk.tensor(b_np, requires_grad=True)
        assert gradgradcheck(lambda a, b: a @ b, (a, b))
