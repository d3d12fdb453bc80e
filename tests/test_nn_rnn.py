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
