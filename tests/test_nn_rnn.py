"""Recurrent layers against PyTorch with the same weights (loaded by state-dict key): outputs,
final states and every gradient, for each mode, layer count, direction and input layout."""
from __future__ import annotations

import numpy as np
import pytest

import tensorkit as tk
from tensorkit.testing.compare import assert_close

torch = pytest.importorskip("torch")


def _pair(name, *args, **kwargs):
    torch.manual_seed(0)
    theirs = getattr(torch.nn, name)(*args, **kwargs).double()
    ours = getattr(tk.nn, name)(*args, **kwargs)
    assert list(ours.state_dict()) == list(theirs.state_dict()), "state-dict keys (and order) must be PyTorch's"
    ours.load_state_dict({k: tk.tensor(v.numpy()) for k, v in theirs.state_dict().items()})
    return ours, theirs


def _flat(r):
    return [t for x in (r if isinstance(r, tuple) else (r,)) for t in (x if isinstance(x, tuple) else (x,))]


def _check(ours, theirs, x_np, state=None, device="cpu"):
    """Outputs, input gradient and parameter gradients of ``sum(out * rand)`` vs torch."""
    xt = torch.tensor(x_np, requires_grad=True)
    st = tuple(torch.tensor(s) for s in state) if state is not None else None
    rt = theirs(xt, (st if len(st) > 1 else st[0]) if st else None)
    ours = ours.to(device).double()
    x = tk.tensor(x_np, device=device, requires_grad=True)
    s = tuple(tk.tensor(a, device=device) for a in state) if state is not None else None
    r = ours(x, (s if len(s) > 1 else s[0]) if s else None)
    outs, touts = _flat(r), _flat(rt)
    assert len(outs) == len(touts)
    rng = np.random.default_rng(1)
    weights = [rng.standard_normal(tuple(t.shape)) for t in touts]
    sum((t * torch.tensor(w)).sum() for t, w in zip(touts, weights)).backward()
    sum((o * tk.tensor(w, device=device)).sum() for o, w in zip(outs, weights)).backward()
    for i, (o, t) in enumerate(zip(outs, touts)):
        assert tuple(o.shape) == tuple(t.shape), f"output {i}: shape {list(o.shape)}, torch {list(t.shape)}"
        assert_close(o.cpu(), t.detach().numpy(), msg=f"output {i}")
    assert_close(x.grad.cpu(), xt.grad.numpy(), msg="input gradient")
    theirs_p = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        assert_close(p.grad.cpu(), theirs_p[name].grad.numpy(), msg=f"gradient of {name}")


@pytest.mark.parametrize("name,kwargs", [
    ("RNN", {}), ("RNN", {"nonlinearity": "relu", "num_layers": 2, "bias": False}),
    ("LSTM", {"num_layers": 2, "bidirectional": True}), ("LSTM", {"batch_first": True}),
    ("GRU", {"num_layers": 2, "batch_first": True, "bidirectional": True}), ("GRU", {})])
def test_recurrent_layers_match_torch(name, kwargs):
    ours, theirs = _pair(name, 3, 4, **kwargs)
    rng = np.random.default_rng(0)
    _check(ours, theirs, rng.standard_normal((2, 3, 3)))
    # with initial states
    dirs = 2 if kwargs.get("bidirectional") else 1
    n_states = 2 if name == "LSTM" else 1
    state = [rng.standard_normal((kwargs.get("num_layers", 1) * dirs, 2 if kwargs.get("batch_first") else 3, 4))
             for _ in range(n_states)]
    ours.zero_grad()
    theirs.zero_grad()
    _check(ours, theirs, rng.standard_normal((2, 3, 3)) if not kwargs.get("batch_first") else
           rng.standard_normal((2, 3, 3)), state)


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_unbatched_input(name):
    ours, theirs = _pair(name, 3, 4, num_layers=2)
    rng = np.random.default_rng(0)
    n_states = 2 if name == "LSTM" else 1
    _check(ours, theirs, rng.standard_normal((5, 3)), [rng.standard_normal((2, 4)) for _ in range(n_states)])


@pytest.mark.parametrize("name", ["RNNCell", "LSTMCell", "GRUCell"])
def test_cells_match_torch(name):
    ours, theirs = _pair(name, 3, 5)
    rng = np.random.default_rng(0)
    _check(ours, theirs, rng.standard_normal((2, 3)))
    n_states = 2 if name == "LSTMCell" else 1
    ours.zero_grad()
    theirs.zero_grad()
    _check(ours, theirs, rng.standard_normal((3,)), [rng.standard_normal((5,)) for _ in range(n_states)])


@pytest.mark.parametrize("name,kwargs", [("LSTM", {"bidirectional": True}), ("GRU", {"num_layers": 2})])
def test_on_cuda_matches_torch(name, kwargs):
    ours, theirs = _pair(name, 2, 3, **kwargs)
    _check(ours, theirs, np.random.default_rng(0).standard_normal((2, 2, 2)), device="cuda")


def test_dropout_between_layers_only_in_training():
    ours, theirs = _pair("GRU", 3, 4, num_layers=2, dropout=0.5)
    x = np.random.default_rng(0).standard_normal((4, 2, 3))
    ours.eval()
    theirs.eval()
    _check(ours, theirs, x)                 # eval: no dropout, same as torch
    ours.train()
    ours.double()
    a = ours(tk.tensor(x))[0]
    b = ours(tk.tensor(x))[0]
    assert not np.allclose(a.detach().numpy(), b.detach().numpy()), "training mode must drop between layers"
    one = tk.nn.GRU(3, 4, num_layers=1, dropout=0.5).double()
    assert np.array_equal(one(tk.tensor(x))[0].detach().numpy(), one(tk.tensor(x))[0].detach().numpy()), \
        "a single layer has no dropout"


def test_default_init_is_uniform_in_bound():
    m = tk.nn.LSTM(8, 16)
    bound = 1 / 4
    for name, p in m.named_parameters():
        a = p.detach().numpy()
        assert a.min() >= -bound and a.max() <= bound and a.std() > bound / 3, name


def test_bad_input_names_shapes():
    lstm = tk.nn.LSTM(3, 4, num_layers=2)
    with pytest.raises(RuntimeError, match=r"input.size\(-1\) must be equal to input_size. Expected 3, got 5"):
        lstm(tk.randn(2, 1, 5))
    with pytest.raises(ValueError, match=r"expected input of 2 .* or 3 dims.*got shape \[2\]"):
        lstm(tk.randn(2))
    with pytest.raises(RuntimeError, match=r"expected h0 of shape \[2, 1, 4\], got \[1, 1, 4\]"):
        lstm(tk.randn(2, 1, 3), (tk.zeros(1, 1, 4), tk.zeros(2, 1, 4)))
    with pytest.raises(ValueError, match=r"GRUCell: expected input of shape \[N, 3\] or \[3\], got \[2, 4\]"):
        tk.nn.GRUCell(3, 4)(tk.randn(2, 4))


@pytest.mark.parametrize("name,cell", [("LSTM", "lstm_cell"), ("GRU", "gru_cell")])
def test_step_is_one_fused_op_each_way(name, cell):
    """The gates' pointwise part of every step is the fused cell forward and its backward
    primitive backward (one launch each), not a chain of sigmoid / tanh / mul."""
    from tensorkit import _dispatch
    seen = []
    record = lambda op, inputs, outputs, params: seen.append(op)
    rnn = getattr(tk.nn, name)(3, 4, num_layers=2)
    x = tk.randn(5, 2, 3)
    _dispatch.observers.append(record)
    try:
        out, _ = rnn(x)
        forward, seen[:] = list(seen), []
        out.sum().backward()
    finally:
        _dispatch.observers.remove(record)
    steps = 5 * 2
    assert forward.count(cell) == steps and seen.count(cell + "_backward") == steps
    for op in ("sigmoid", "tanh", "mul"):
        assert op not in forward and op not in seen, f"{op} ran outside the fused {name} cell"


@pytest.mark.parametrize("which", ["h", "c"])
def test_lstm_cell_gradient_of_one_output(which):
    """Only h' (or only c') reaches the loss: the fused backward takes the missing gradient as zero."""
    from tensorkit.ops.rnn import lstm_cell
    rng = np.random.default_rng(0)
    g, c = rng.standard_normal((2, 12)) * 2, rng.standard_normal((2, 3))
    gk, ck = tk.tensor(g, requires_grad=True), tk.tensor(c, requires_grad=True)
    h, c_new = lstm_cell(gk, ck)
    (h if which == "h" else c_new).sum().backward()
    gt, ct = torch.tensor(g, requires_grad=True), torch.tensor(c, requires_grad=True)
    i, f, gg, o = gt.chunk(4, -1)
    c_t = f.sigmoid() * ct + i.sigmoid() * gg.tanh()
    (o.sigmoid() * c_t.tanh() if which == "h" else c_t).sum().backward()
    assert_close(gk.grad, gt.grad.numpy(), msg="gradient of gates")
    assert_close(ck.grad, ct.grad.numpy(), msg="gradient of c")


# ---- the whole-sequence node (one layer-direction of an LSTM / GRU as one autograd node) ---------------
def _functional(mod, params):
    """``mod``'s forward with its parameters replaced by ``params`` (gradcheck needs them as inputs)."""
    names = [n for n, _ in mod.named_parameters()]

    def fn(x, h0, *rest):
        state, ps = ((h0, rest[0]), rest[1:]) if isinstance(mod, tk.nn.LSTM) else (h0, rest)
        saved = dict(mod._parameters)
        try:
            mod._parameters.update(zip(names, ps))
            return tuple(_flat(mod(x, state)))
        finally:
            mod._parameters.update(saved)
    return fn


_MODES = ["LSTM", "GRU", "RNN", "RNN_relu"]


def _layer(name, *args, **kwargs):
    """``tk.nn.<name>`` (or ``torch.nn``'s with ``lib``); ``RNN_relu`` is an RNN with relu."""
    lib = kwargs.pop("lib", tk)
    if name == "RNN_relu":
        return lib.nn.RNN(*args, nonlinearity="relu", **kwargs)
    return getattr(lib.nn, name)(*args, **kwargs)


def _leaves(name, dirs, rng):
    mod = _layer(name, 2, 2, bidirectional=dirs == 2).double()
    leaf = lambda a: tk.tensor(a, requires_grad=True)
    states = [leaf(rng.standard_normal((dirs, 2, 2))) for _ in range(2 if name == "LSTM" else 1)]
    params = [leaf(p.detach().numpy().copy()) for p in mod.parameters()]
    return mod, [leaf(rng.standard_normal((3, 2, 2)))] + states + params


@pytest.mark.parametrize("name", _MODES)
@pytest.mark.parametrize("dirs", [1, 2])
def test_sequence_node_gradcheck_and_gradgradcheck(name, dirs):
    """First and second derivatives of the sequence node (its fast backward; under create_graph
    the recorded recurrence) against finite differences, for x, the states and every weight."""
    from tensorkit.autograd.gradcheck import gradcheck, gradgradcheck
    mod, inputs = _leaves(name, dirs, np.random.default_rng(0))
    fn = _functional(mod, inputs)
    assert gradcheck(fn, inputs)
    assert gradgradcheck(fn, inputs)


@pytest.mark.parametrize("name", _MODES)
def test_sequence_node_create_graph_gives_the_same_gradients(name):
    """The recorded recurrence (create_graph) and the fast backward agree on first derivatives."""
    rng = np.random.default_rng(0)
    mod, inputs = _leaves(name, 1, rng)
    outs = _functional(mod, inputs)(*inputs)
    assert type(outs[0].grad_fn).__name__ == "_SequenceBackward", "the layer must be one sequence node"
    gos = [tk.tensor(rng.standard_normal(tuple(o.shape))) for o in outs]
    fast = tk.autograd.grad(outs, inputs, gos, retain_graph=True)
    slow = tk.autograd.grad(outs, inputs, gos, create_graph=True)
    for i, (a, b) in enumerate(zip(fast, slow)):
        assert_close(a, b.detach().numpy(), msg=f"gradient {i}")


@pytest.mark.parametrize("name,which", [("LSTM", 1), ("LSTM", 2), ("GRU", 1), ("RNN", 1)])
def test_sequence_node_gradient_of_final_state_only(name, which):
    """Only h_n (or only c_n) reaches the loss: the output's gradient is missing, not zeros."""
    ours, theirs = _pair(name, 3, 4, num_layers=2, bidirectional=True)
    x = np.random.default_rng(0).standard_normal((4, 2, 3))
    xt, xk = torch.tensor(x, requires_grad=True), tk.tensor(x, requires_grad=True)
    pick = lambda r: _flat(r)[which]
    (pick(theirs(xt)) ** 2).sum().backward()
    (pick(ours.double()(xk)) ** 2).sum().backward()
    assert_close(xk.grad, xt.grad.numpy(), msg="input gradient")
    theirs_p = dict(theirs.named_parameters())
    for n, p in ours.named_parameters():
        assert_close(p.grad, theirs_p[n].grad.numpy(), msg=f"gradient of {n}")


@pytest.mark.parametrize("name,kwargs", [("LSTM", {}), ("GRU", {}), ("RNN", {"nonlinearity": "relu"})])
def test_on_cuda_two_layers_bidirectional_batch_first(name, kwargs):
    ours, theirs = _pair(name, 2, 3, num_layers=2, bidirectional=True, batch_first=True, dropout=0.0, **kwargs)
    rng = np.random.default_rng(0)
    n_states = 2 if name == "LSTM" else 1
    _check(ours, theirs, rng.standard_normal((2, 3, 2)), [rng.standard_normal((4, 2, 3)) for _ in range(n_states)],
           device="cuda")


@pytest.mark.parametrize("name", _MODES)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_sequence_node_low_precision(name, dtype):
    """float16 / bfloat16 layers (cells computing in float32) stay near the float64 result."""
    torch.manual_seed(0)
    theirs = _layer(name, 3, 4, num_layers=2, lib=torch).double()
    ours = _layer(name, 3, 4, num_layers=2)
    ours.load_state_dict({k: tk.tensor(v.numpy()) for k, v in theirs.state_dict().items()})
    ours = ours.to(getattr(tk, dtype))
    x = np.random.default_rng(0).standard_normal((3, 2, 3))
    xt, xk = torch.tensor(x, requires_grad=True), tk.tensor(x, dtype=getattr(tk, dtype), requires_grad=True)
    out_t, out_k = theirs(xt)[0], ours(xk)[0]
    out_t.sum().backward()
    out_k.float().sum().backward()
    assert out_k.dtype is getattr(tk, dtype)
    tol = {"float16": 5e-3, "bfloat16": 3e-2, "float32": 1e-5}[dtype]
    np.testing.assert_allclose(out_k.detach().float().numpy(), out_t.detach().numpy(), atol=tol, rtol=tol)
    np.testing.assert_allclose(xk.grad.float().numpy(), xt.grad.numpy(), atol=tol, rtol=tol)
    np.testing.assert_allclose(ours.weight_hh_l1.grad.float().numpy(), theirs.weight_hh_l1.grad.numpy(),
                               atol=tol * 4, rtol=tol)


def _launches(mod, x):
    """The kernels launched on the (emulated) cuda device by ``mod(x)`` and by its backward."""
    from tensorkit import _dispatch
    mod(x)[0].sum().backward()          # warm: stand-in launchers replace themselves at their first call
    seen, saved = [], dict(_dispatch.KERNELS)
    count = lambda op, fn: lambda *a, **k: (seen.append(op), fn(*a, **k))[1]
    _dispatch.KERNELS.update({key: count(key[0], fn) for key, fn in saved.items() if key[1] == "cuda"})
    try:
        out = mod(x)[0]
        forward, seen[:] = list(seen), []
        out.sum().backward()
    finally:
        _dispatch.KERNELS.update(saved)
    return forward, seen


@pytest.mark.parametrize("name,cell", [("LSTM", "lstm_cell"), ("GRU", "gru_cell"), ("RNN", "rnn_cell"),
                                       ("RNN_relu", "rnn_cell")])
def test_launches_per_step_on_cuda(name, cell):
    """Per time step, forward: h W_hhᵀ and the fused cell; backward: the fused cell backward and
    dgates W_hh. Everything else (dW_hh, db_hh, d(xw)) is once per sequence."""
    from collections import Counter
    mod = _layer(name, 3, 4).to("cuda")
    runs = [_launches(mod, tk.randn(t, 2, 3, device="cuda", requires_grad=True)) for t in (2, 4)]
    per_step = lambda k: Counter({op: n / 2 for op, n in (Counter(runs[1][k]) - Counter(runs[0][k])).items()})
    assert per_step(0) == Counter({"matmul": 1, cell: 1}), per_step(0)
    assert per_step(1) == Counter({"matmul": 1, cell + "_backward": 1}), per_step(1)
    assert len(runs[1][1]) - len(runs[0][1]) == 4 and len(runs[1][0]) - len(runs[0][0]) == 4
