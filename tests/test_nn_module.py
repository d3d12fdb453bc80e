"""nn.Module semantics: registration, naming and order, state dicts (keys equal PyTorch's),
load errors, hooks, modes, device/dtype moves, repr, containers."""
from __future__ import annotations

import copy

import numpy as np
import pytest

import tensorkit as tk
from tensorkit import nn

try:
    import torch
except ImportError:
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")


class Affine(nn.Module):
    def __init__(self, n_in, n_out):
        super().__init__()
        self.weight = nn.Parameter(tk.randn(n_out, n_in))
        self.bias = nn.Parameter(tk.zeros(n_out))
        self.register_buffer("steps", tk.zeros(1))
        self.register_buffer("scratch", tk.zeros(2), persistent=False)

    def forward(self, x):
        return x @ self.weight.T + self.bias

    def extra_repr(self):
        return f"in={self.weight.shape[1]}, out={self.weight.shape[0]}"


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = Affine(3, 4)
        self.body = nn.Sequential(Affine(4, 4), Affine(4, 2))
        self.scale = nn.Parameter(tk.ones(()))

    def forward(self, x):
        return self.body(self.a(x)) * self.scale


# ---- registration and walking ---------------------------------------------------------------------------
def test_registration_and_names_in_order():
    net = Net()
    assert [n for n, _ in net.named_parameters()] == [
        "scale", "a.weight", "a.bias", "body.0.weight", "body.0.bias", "body.1.weight", "body.1.bias"]
    assert [n for n, _ in net.named_buffers()] == ["a.steps", "a.scratch", "body.0.steps", "body.0.scratch",
                                                  "body.1.steps", "body.1.scratch"]
    assert [n for n, _ in net.named_modules()] == ["", "a", "body", "body.0", "body.1"]
    assert [n for n, _ in net.named_children()] == ["a", "body"]
    assert [n for n, _ in net.named_parameters(prefix="m", recurse=False)] == ["m.scale"]
    assert len(list(net.parameters())) == 7 and len(list(net.modules())) == 5
    assert net.get_submodule("body.1") is net.body[1]
    assert net.get_parameter("body.0.bias") is net.body[0].bias


def test_state_dict_keys_skip_non_persistent_buffers():
    assert list(Net().state_dict()) == ["scale", "a.weight", "a.bias", "a.steps", "body.0.weight", "body.0.bias",
                                        "body.0.steps", "body.1.weight", "body.1.bias", "body.1.steps"]


def test_shared_parameters_and_modules_once():
    m = nn.Module()
    lin = Affine(2, 2)
    m.first, m.second = lin, lin
    m.tied = lin.weight
    assert [n for n, _ in m.named_parameters()] == ["tied", "first.bias"]     # first.weight is tied
    assert len(list(m.named_parameters(remove_duplicate=False))) == 5
    assert [n for n, _ in m.named_modules()] == ["", "first"]
    assert list(m.state_dict()) == ["tied", "first.weight", "first.bias", "first.steps", "second.weight",
                                    "second.bias", "second.steps"]


def test_setattr_rules():
    m = Affine(2, 3)
    with pytest.raises(TypeError, match="cannot assign 'Tensor' as parameter 'weight'"):
        m.weight = tk.zeros(3, 2)
    m.weight = None
    assert m.weight is None and "weight" in m._parameters
    m.steps = tk.ones(1)                       # a buffer stays a buffer
    assert "steps" in m._buffers and m.steps.item() == 1
    m.child = Affine(1, 1)
    m.child = None
    assert m.child is None and "child" in m._modules
    with pytest.raises(AttributeError, match="'Affine' object has no attribute 'nothing'"):
        m.nothing
    del m.steps
    assert "steps" not in m._buffers
    m.extra = nn.Buffer(tk.ones(2), persistent=False)          # torch.nn.Buffer's way to register a buffer
    assert type(m.extra) is tk.Tensor and "extra" in m._buffers and "extra" not in m.state_dict()
    with pytest.raises(KeyError, match="attribute 'bias' already exists"):
        m.register_buffer("bias", tk.zeros(1))
    with pytest.raises(KeyError, match='contain ".", got: a.b'):
        m.register_parameter("a.b", None)

    class Early(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(tk.zeros(1))
    with pytest.raises(AttributeError, match="before Module.__init__"):
        Early()


def test_parameter():
    p = nn.Parameter(tk.tensor([1.0, 2.0]))
    assert p.requires_grad and p.is_leaf and isinstance(p, tk.Tensor) and type(p) is nn.Parameter
    assert repr(p).startswith("Parameter containing:\ntensor([1., 2.], requires_grad=True)")
    assert not nn.Parameter(tk.zeros(1), requires_grad=False).requires_grad
    q = p * 2                                  # ops give plain tensors and are recorded
    assert type(q) is tk.Tensor and q.requires_grad
    q.sum().backward()
    np.testing.assert_array_equal(p.grad.numpy(), [2.0, 2.0])
    c = copy.deepcopy(p)
    assert type(c) is nn.Parameter and c.requires_grad and c.data_ptr() != p.data_ptr()


# ---- forward, backward, hooks -----------------------------------------------------------------------------
def test_call_runs_forward_and_gradients_reach_parameters():
    net = Net()
    x = tk.randn(5, 3)
    y = net(x)
    a, b0, b1 = net.a, net.body[0], net.body[1]
    ref = ((x.numpy() @ a.weight.detach().numpy().T) @ b0.weight.detach().numpy().T) @ b1.weight.detach().numpy().T
    np.testing.assert_allclose(y.detach().numpy(), ref, rtol=1e-5, atol=1e-5)
    y.sum().backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in net.parameters())
    net.zero_grad(set_to_none=False)
    assert all(float(abs(p.grad).sum()) == 0 for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_missing_forward():
    with pytest.raises(NotImplementedError, match='Module \\[Module\\] is missing the required "forward"'):
        nn.Module()(1)


def test_forward_hooks():
    m = Affine(2, 2)
    calls = []
    h1 = m.register_forward_pre_hook(lambda mod, args: (args[0] * 0,))
    h2 = m.register_forward_hook(lambda mod, args, out: calls.append(out.shape) or out + 1)
    h3 = m.register_forward_hook(lambda mod, args, out: calls.append("first"), prepend=True)
    y = m(tk.ones(3, 2))
    np.testing.assert_allclose(y.detach().numpy(), 1.0)       # input zeroed, bias 0, +1
    assert calls == ["first", tk.Size([3, 2])]
    h1.remove(); h2.remove(); h3.remove()
    np.testing.assert_allclose(m(tk.ones(1, 2)).detach().numpy(),
                               m.weight.detach().numpy().sum(1, keepdims=True).T, rtol=1e-6)
    with m.register_forward_pre_hook(lambda mod, args, kwargs: ((args[0] * 2,), kwargs), with_kwargs=True):
        np.testing.assert_allclose(m(tk.ones(1, 2)).detach().numpy(),
                                   2 * m.weight.detach().numpy().sum(1, keepdims=True).T, rtol=1e-6)
    assert not m._forward_pre_hooks


def test_always_call_hook_runs_when_forward_raises():
    class Boom(nn.Module):
        def forward(self, x):
            raise ValueError("boom")
    seen = []
    m = Boom()
    m.register_forward_hook(lambda mod, args, out: seen.append(("always", out)), always_call=True)
    m.register_forward_hook(lambda mod, args, out: seen.append("normal"))
    with pytest.raises(ValueError, match="boom"):
        m(1)
    assert seen == [("always", None)]


# ---- state dict ----------------------------------------------------------------------------------------
def test_state_dict_round_trip_and_sharing():
    a, b = Net(), Net()
    sd = a.state_dict()
    assert not sd["a.weight"].requires_grad and type(sd["a.weight"]) is tk.Tensor
    assert sd["a.weight"].data_ptr() == a.a.weight.data_ptr()           # shares memory
    assert a.state_dict(keep_vars=True)["a.weight"] is a.a.weight
    result = b.load_state_dict(sd)
    assert tuple(result) == ([], []) and repr(result) == "<All keys matched successfully>"
    for (n1, t1), (n2, t2) in zip(a.state_dict().items(), b.state_dict().items()):
        assert n1 == n2 and np.array_equal(t1.numpy(), t2.numpy())
    assert b.a.weight.requires_grad and type(b.a.weight) is nn.Parameter


def test_load_state_dict_errors_name_keys_and_shapes():
    net = Net()
    sd = net.state_dict()
    del sd["body.1.bias"]
    sd["body.2.weight"] = tk.zeros(1)
    sd["a.weight"] = tk.zeros(4, 5)
    with pytest.raises(RuntimeError) as e:
        net.load_state_dict(sd)
    msg = str(e.value)
    assert 'Missing key(s) in state_dict: "body.1.bias"' in msg
    assert 'Unexpected key(s) in state_dict: "body.2.weight"' in msg
    assert "size mismatch for a.weight: copying a param with shape [4, 5] from checkpoint, the shape in " \
           "current model is [4, 3]" in msg
    del sd["a.weight"]
    missing, unexpected = net.load_state_dict(sd, strict=False)
    assert missing == ["a.weight", "body.1.bias"] and unexpected == ["body.2.weight"]


def test_load_state_dict_across_devices_and_dtypes():
    src = Affine(2, 3).double()
    dst = Affine(2, 3).to("cuda")
    dst.load_state_dict(src.state_dict())                      # float64 cpu -> float32 cuda: copied and cast
    assert dst.weight.device.type == "cuda" and dst.weight.dtype is tk.float32
    np.testing.assert_allclose(dst.weight.detach().cpu().numpy(), src.weight.detach().numpy(), rtol=1e-6)


def test_load_from_state_dict_override_with_pytorchs_signature():
    class Renamed(Affine):
        def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
            old = prefix + "w"                      # an old checkpoint called the weight "w"
            if old in state_dict:
                state_dict[prefix + "weight"] = state_dict.pop(old)
            super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, unexpected, errors)

    holder = nn.Sequential(Renamed(2, 2))
    sd = {"0.w": tk.ones(2, 2), "0.bias": tk.zeros(2), "0.steps": tk.zeros(1)}
    holder.load_state_dict(sd)
    assert (holder[0].weight.detach().numpy() == 1).all() and "0.w" in sd         # the caller's dict is untouched


def test_load_state_dict_assign():
    m = Affine(2, 2)
    w = tk.ones(2, 2)
    sd = dict(m.state_dict(), weight=w)
    m.load_state_dict(sd, assign=True)
    assert type(m.weight) is nn.Parameter and m.weight.data_ptr() == w.data_ptr()


# ---- modes, devices, dtypes --------------------------------------------------------------------------------
def test_train_eval_requires_grad():
    net = Net()
    assert net.training and net.body[1].training
    assert net.eval() is net and not net.body[1].training and not net.a.training
    net.train()
    assert net.body[0].training
    net.requires_grad_(False)
    assert not any(p.requires_grad for p in net.parameters())
    with pytest.raises(ValueError):
        net.train("yes")


def test_to_dtype_keeps_parameter_objects():
    net = Net()
    w = net.a.weight
    net.to(tk.float64)
    assert net.a.weight is w and w.dtype is tk.float64 and net.a.steps.dtype is tk.float64
    net.half()
    assert w.dtype is tk.float16
    net.float()
    assert w.dtype is tk.float32
    net.bfloat16()
    assert w.dtype is tk.bfloat16
    net.double()
    assert w.dtype is tk.float64
    m = nn.Module()
    m.register_buffer("idx", tk.arange(3))
    m.to(tk.float32)
    assert m.idx.dtype is tk.int64                 # integer buffers keep their dtype
    with pytest.raises(TypeError, match="only accepts floating point"):
        m.to(tk.int32)


def test_to_device_and_back():
    net = Net()
    w = net.a.weight
    assert net.to("cuda") is net and w.device.type == "cuda" and net.a.steps.device.type == "cuda"
    y = net(tk.randn(2, 3, device="cuda"))
    y.sum().backward()
    assert w.grad.device.type == "cuda"
    net.cpu()
    assert w.device.type == "cpu" and w.grad.device.type == "cpu"
    net.cuda()
    assert w.device.type == "cuda"
    net.to(tk.zeros(1, dtype=tk.float64))                  # to(tensor): its device and dtype
    assert w.device.type == "cpu" and w.dtype is tk.float64


def test_apply_visits_children_first():
    order = []
    Net().apply(lambda m: order.append(type(m).__name__))
    assert order == ["Affine", "Affine", "Affine", "Sequential", "Net"]


def test_repr():
    assert repr(Net()) == (
        "Net(\n"
        "  (a): Affine(in=3, out=4)\n"
        "  (body): Sequential(\n"
        "    (0): Affine(in=4, out=4)\n"
        "    (1): Affine(in=4, out=2)\n"
        "  )\n"
        ")")
    assert repr(nn.Module()) == "Module()"


# ---- containers ---------------------------------------------------------------------------------------------
def test_sequential():
    layers = [Affine(2, 3), Affine(3, 3), Affine(3, 1)]
    s = nn.Sequential(*layers)
    assert len(s) == 3 and s[0] is layers[0] and s[-1] is layers[2] and list(s) == layers
    sub = s[1:]
    assert type(sub) is nn.Sequential and list(sub) == layers[1:] and list(sub._modules) == ["1", "2"]
    s.append(Affine(1, 1))
    assert len(s) == 4 and [n for n, _ in s.named_children()] == ["0", "1", "2", "3"]
    del s[1]
    assert [n for n, _ in s.named_children()] == ["0", "1", "2"] and s[1] is layers[2]
    with pytest.raises(IndexError, match="index 5 is out of range for a Sequential of length 3"):
        s[5]
    extra = Affine(3, 3)
    s.insert(1, extra)
    assert [n for n, _ in s.named_children()] == ["0", "1", "2", "3"] and s[1] is extra
    assert s.pop(1) is extra and len(s) == 3
    s[0] = extra
    assert s[0] is extra and s._modules["0"] is extra
    with pytest.raises(TypeError, match="extend should be called with an iterable"):
        nn.ModuleList().extend(Affine(1, 1))
    from collections import OrderedDict
    named = nn.Sequential(OrderedDict([("enc", Affine(2, 2)), ("dec", Affine(2, 1))]))
    assert list(named.state_dict())[:2] == ["enc.weight", "enc.bias"]
    assert named(tk.ones(4, 2)).shape == (4, 1)


def test_module_list_dict_parameter_list_dict():
    ml = nn.ModuleList([Affine(1, 1), Affine(1, 1)])
    ml.append(Affine(1, 1))
    ml += [Affine(1, 1)]
    assert len(ml) == 4 and [n for n, _ in ml.named_parameters()][-1] == "3.bias"
    assert isinstance(ml[1:3], nn.ModuleList) and len(ml[1:3]) == 2
    md = nn.ModuleDict({"x": Affine(1, 1)})
    md["y"] = Affine(1, 1)
    assert list(md.keys()) == ["x", "y"] and "y" in md and len(md) == 2
    assert [n for n, _ in md.named_parameters()] == ["x.weight", "x.bias", "y.weight", "y.bias"]
    pl = nn.ParameterList([tk.zeros(2), nn.Parameter(tk.ones(3))])
    assert all(type(p) is nn.Parameter for p in pl) and len(pl) == 2
    assert [n for n, _ in pl.named_parameters()] == ["0", "1"]
    assert repr(pl) == ("ParameterList(\n    (0): Parameter containing: [tk.float32 of size 2]\n"
                        "    (1): Parameter containing: [tk.float32 of size 3]\n)")
    pd = nn.ParameterDict({"a": tk.zeros(1)})
    pd["b"] = tk.ones(2)
    assert list(pd.keys()) == ["a", "b"] and type(pd["b"]) is nn.Parameter
    assert [n for n, _ in pd.named_parameters()] == ["a", "b"]
    holder = nn.Module()
    holder.layers = ml
    holder.params = pl
    assert "layers.0.weight" in holder.state_dict() and "params.1" in holder.state_dict()


def test_deepcopy_and_pickle_module():
    import pickle
    net = Net()
    net.tied = net.a.weight
    p = pickle.loads(pickle.dumps(net))
    assert type(p.a.weight) is nn.Parameter and p.a.weight.requires_grad
    np.testing.assert_array_equal(p.a.weight.detach().numpy(), net.a.weight.detach().numpy())
    c = copy.deepcopy(net)
    assert c.tied is c.a.weight                      # sharing survives the copy
    assert c.a.weight is not net.a.weight and type(c.a.weight) is nn.Parameter
    np.testing.assert_array_equal(c.a.weight.detach().numpy(), net.a.weight.detach().numpy())
    assert list(c.state_dict()) == list(net.state_dict())


# ---- backward hooks (vs PyTorch) ---------------------------------------------------------------------------
def _np(g):
    return None if g is None else g.detach().cpu().numpy()


def _recorder(log, name):
    """A (pre, full) pair of backward hooks appending what they see to ``log``."""
    return (lambda m, go: log.append((name, "pre", [_np(g) for g in go])),
            lambda m, gi, go: log.append((name, "full", [_np(g) for g in gi], [_np(g) for g in go])))


def _assert_logs_equal(ours, theirs):
    assert len(ours) == len(theirs), (ours, theirs)
    for a, b in zip(ours, theirs):
        assert a[:2] == b[:2]
        for xs, ys in zip(a[2:], b[2:]):
            assert len(xs) == len(ys)
            for x, y in zip(xs, ys):
                assert (x is None) == (y is None), (a, b)
                if x is not None:
                    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6)


def _both(build, run, hook_on=lambda m: [("m", m)]):
    """Build the same model in tensorkit and torch (same weights), hook the modules ``hook_on``
    names, run; the hooks' logs and all gradients must agree. Returns tensorkit's log."""
    ours, theirs = build(nn).double(), build(torch.nn).double()
    with torch.no_grad():
        for p, q in zip(ours.parameters(), theirs.parameters()):
            q.copy_(torch.tensor(p.detach().numpy()))
    logs, grads = [], []
    for model, mk in ((ours, lambda a, rg=True: tk.tensor(a, dtype=tk.float64, requires_grad=rg)),
                      (theirs, lambda a, rg=True: torch.tensor(a, dtype=torch.float64, requires_grad=rg))):
        log = []
        for name, m in hook_on(model):
            pre, full = _recorder(log, name)
            m.register_full_backward_pre_hook(pre)
            m.register_full_backward_hook(full)
        leaves = run(model, mk)
        logs.append(log)
        grads.append([_np(t.grad) for t in leaves] + [_np(p.grad) for p in model.parameters()])
    _assert_logs_equal(*logs)
    for a, b in zip(*grads):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    return logs[0]


_X = np.random.default_rng(0).standard_normal((4, 3))


@needs_torch
def test_full_backward_hook_linear_vs_torch():
    def run(m, mk):
        x = mk(_X)
        (m(x) ** 2).sum().backward()
        return [x]
    log = _both(lambda nn_: nn_.Linear(3, 2), run)
    assert [e[1] for e in log] == ["pre", "full"]         # once per backward, outputs' gradients first


class TwoIn(nn.Module):
    """Two tensor inputs, one of them maybe not requiring grad, and a Python number."""

    def forward(self, x, y, k):
        return x * y * k + y.sum()


class TwoInTorch(torch.nn.Module if torch else object):
    forward = TwoIn.forward


@needs_torch
@pytest.mark.parametrize("y_grad", [True, False])
def test_full_backward_hook_two_inputs_vs_torch(y_grad):
    def run(m, mk):
        x, y = mk(_X), mk(_X[::-1].copy(), y_grad)
        m(x, y, 3.0).sum().backward()
        return [x, y]
    # grad_input: one entry per positional argument; None for the number, zeros for a y that needs no grad
    log = _both(lambda nn_: TwoIn() if nn_ is nn else TwoInTorch(), run)
    gi = log[-1][2]
    assert gi[2] is None and (y_grad or not gi[1].any())


@needs_torch
def test_backward_hooks_nested_sequential_vs_torch():
    def run(m, mk):
        x = mk(_X)
        m(x).sum().backward()
        return [x]
    log = _both(lambda nn_: nn_.Sequential(nn_.Linear(3, 4), nn_.Tanh(), nn_.Linear(4, 2)), run,
                hook_on=lambda m: [("seq", m)] + [(str(i), c) for i, c in enumerate(m)])
    assert [e[:2] for e in log] == [("seq", "pre"), ("2", "pre"), ("2", "full"), ("1", "pre"), ("1", "full"),
                                    ("0", "pre"), ("0", "full"), ("seq", "full")]


@needs_torch
def test_hook_replacing_grad_input_and_pre_hook_replacing_grad_output_vs_torch():
    def run(m, mk):
        m.register_full_backward_pre_hook(lambda mod, go: (go[0] * 3,))
        m.register_full_backward_hook(lambda mod, gi, go: (gi[0] + 1,))
        x = mk(_X)
        (m(x) ** 2).sum().backward()        # weight/bias gradients see the tripled grad_output; x the +1
        return [x]
    log = _both(lambda nn_: nn_.Linear(3, 2), run, hook_on=lambda m: [])
    assert log == []


@needs_torch
def test_tuple_output_with_an_unused_output_and_a_non_tensor_vs_torch():
    class Split(nn.Module):
        def forward(self, x):
            return x * 2, x.exp(), "label"

    class SplitTorch(torch.nn.Module):
        forward = Split.forward

    def run(m, mk):
        x = mk(_X)
        a, _, label = m(x)
        assert label == "label"
        a.sum().backward()
        return [x]
    log = _both(lambda nn_: Split() if nn_ is nn else SplitTorch(), run)
    assert log[0][2][1] is None and log[0][2][2] is None          # grad_output: None for the unused and the str


@needs_torch
def test_no_input_requires_grad_hook_fires_at_outputs_with_warning():
    def run(m, mk):
        with pytest.warns(UserWarning, match="no inputs require gradients"):
            m(mk(_X, False)).sum().backward()
        return []
    log = _both(lambda nn_: nn_.Linear(3, 2), run)
    assert [e[1] for e in log] == ["pre", "full"] and log[1][2] == [None]
    lin = nn.Linear(3, 2)
    lin.register_full_backward_hook(lambda m, gi, go: (tk.ones(4, 3),))
    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match="should always return None"):
        lin(tk.ones(4, 3)).sum().backward()


def test_backward_hooks_prepend_order_and_removal():
    lin, order = nn.Linear(3, 2), []
    h1 = lin.register_full_backward_hook(lambda *a: order.append(1))
    h2 = lin.register_full_backward_hook(lambda *a: order.append(2))
    h3 = lin.register_full_backward_hook(lambda *a: order.append(3), prepend=True)
    p1 = lin.register_full_backward_pre_hook(lambda *a: order.append("p1"))
    p0 = lin.register_full_backward_pre_hook(lambda *a: order.append("p0"), prepend=True)
    x = tk.randn(4, 3, requires_grad=True)
    lin(x).sum().backward()
    assert order == ["p0", "p1", 3, 1, 2]
    order.clear(); h1.remove(); p1.remove()
    lin(x).sum().backward()
    assert order == ["p0", 3, 2]
    y = lin(x)                                  # as PyTorch: the hooks of a call are those set at its forward
    order.clear(); h2.remove(); h3.remove(); p0.remove()
    y.sum().backward()
    assert order == ["p0", 3, 2]
    order.clear()
    lin(x).sum().backward()
    assert order == [] and "BackwardHook" not in lin(x).grad_fn.name()


def test_module_without_backward_hooks_is_not_wrapped():
    lin = nn.Linear(3, 2)
    x = tk.randn(4, 3, requires_grad=True)
    plain = type(lin(x).grad_fn).__name__
    assert "BackwardHook" not in plain
    with lin.register_full_backward_hook(lambda *a: None):
        assert lin(x).grad_fn.name() == "BackwardHookFunctionBackward"
    assert type(lin(x).grad_fn).__name__ == plain


def test_backward_hooks_not_called_under_no_grad_or_without_grad_at_outputs():
    lin, calls = nn.Linear(3, 2), []
    lin.register_full_backward_hook(lambda *a: calls.append(a))
    lin.register_full_backward_pre_hook(lambda *a: calls.append(a))
    with tk.no_grad():
        y = lin(tk.randn(4, 3, requires_grad=True))
    assert not y.requires_grad and y.grad_fn is None

    class Detached(nn.Module):
        def forward(self, x):
            return x.detach() * 2
    d = Detached()
    d.register_full_backward_hook(lambda *a: calls.append(a))
    x = tk.randn(2, requires_grad=True)
    (d(x).sum() + x.sum()).backward()
    assert calls == []


def test_in_place_writes_into_hooked_inputs_or_outputs_raise():
    lin = nn.Linear(3, 3)
    lin.register_full_backward_hook(lambda *a: None)
    x = tk.randn(2, 3, requires_grad=True)
    with pytest.raises(RuntimeError, match="backward hooks watch.*in place"):
        lin(x).mul_(2)
    with pytest.raises(RuntimeError, match="backward hooks watch"):
        lin(x)[0].zero_()                                           # a view of the output too
    with pytest.raises(RuntimeError, match="backward hooks watch"):  # PyTorch raises here too
        nn.ReLU(inplace=True)(lin(x))
    relu = nn.ReLU(inplace=True)
    relu.register_full_backward_hook(lambda *a: None)
    with pytest.raises(RuntimeError, match="backward hooks watch"):   # the input, written inside forward
        relu(x * 1)
    y = lin(x).clone().mul_(2)                                      # the documented way out
    y.sum().backward()
    assert x.grad is not None


@needs_torch
def test_backward_hook_double_backward_vs_torch():
    results = []
    for lib in (tk, torch):
        m, seen = lib.nn.Tanh(), []
        m.register_full_backward_hook(lambda mod, gi, go: seen.append((gi[0].requires_grad, go[0].requires_grad)))
        x = lib.tensor([0.3, -0.5, 1.2], dtype=lib.float64, requires_grad=True)
        (g,) = lib.autograd.grad(m(x).sum(), x, create_graph=True)
        (g ** 2).sum().backward()
        results.append((seen, _np(g), _np(x.grad)))
    (s1, g1, x1), (s2, g2, x2) = results
    assert s1 == s2 == [(True, False)]          # fires in the first backward only (as PyTorch)
    np.testing.assert_allclose(g1, g2, rtol=1e-12)
    np.testing.assert_allclose(x1, x2, rtol=1e-12)


def test_hook_returning_wrong_number_of_grads_raises():
    lin = nn.Linear(3, 2)
    lin.register_full_backward_hook(lambda m, gi, go: (gi[0], gi[0]))
    with pytest.raises(RuntimeError, match="invalid number of grad_input, got 2, but expected 1"):
        lin(tk.randn(1, 3, requires_grad=True)).sum().backward()
    lin = nn.Linear(3, 2)
    lin.register_full_backward_pre_hook(lambda m, go: ())
    with pytest.raises(RuntimeError, match="invalid number of grad_output, got 0, but expected 1"):
        lin(tk.randn(1, 3, requires_grad=True)).sum().backward()


def test_global_backward_hooks_run_first_for_every_module():
    from tensorkit.nn.modules import module as M
    order = []
    seq = nn.Sequential(nn.Linear(3, 3), nn.Tanh())
    seq[0].register_full_backward_hook(lambda m, gi, go: order.append(("own", type(m).__name__)))
    h = M.register_module_full_backward_hook(lambda m, gi, go: order.append(("global", type(m).__name__)))
    hp = M.register_module_full_backward_pre_hook(lambda m, go: order.append(("pre", type(m).__name__)))
    try:
        seq(tk.randn(2, 3, requires_grad=True)).sum().backward()
    finally:
        h.remove(); hp.remove()
    assert order == [("pre", "Sequential"), ("pre", "Tanh"), ("global", "Tanh"), ("pre", "Linear"),
                     ("global", "Linear"), ("own", "Linear"), ("global", "Sequential")]
    order.clear()
    seq(tk.randn(2, 3, requires_grad=True)).sum().backward()
    assert order == [("own", "Linear")]


def test_deprecated_register_backward_hook_runs_as_full_hook():
    lin, seen = nn.Linear(3, 2), []
    with pytest.warns(DeprecationWarning, match="register_full_backward_hook"):
        lin.register_backward_hook(lambda m, gi, go: seen.append([tuple(g.shape) for g in gi]))
    lin(tk.randn(4, 3, requires_grad=True)).sum().backward()
    assert seen == [[(4, 3)]]          # the module's input (PyTorch's old hook: addmm's bias, input, weight.T)


def test_backward_hooks_on_emulated_cuda_match_cpu():
    results, base = [], nn.Linear(3, 2)
    for dev in ("cpu", "cuda"):
        lin, seen = copy.deepcopy(base).to(dev), []
        lin.register_full_backward_pre_hook(lambda m, go: (go[0] * 2,))
        lin.register_full_backward_hook(lambda m, gi, go: seen.append((gi[0].device.type, _np(gi[0]), _np(go[0]))))
        x = tk.tensor(_X, dtype=tk.float32, device=dev, requires_grad=True)
        (lin(x) ** 2).sum().backward()
        results.append((seen, _np(x.grad), _np(lin.weight.grad)))
    (s_cpu, x_cpu, w_cpu), (s_cuda, x_cuda, w_cuda) = results
    assert s_cpu[0][0] == "cpu" and s_cuda[0][0] == "cuda" and len(s_cuda) == 1
    for a, b in [(s_cpu[0][1], s_cuda[0][1]), (s_cpu[0][2], s_cuda[0][2]), (x_cpu, x_cuda), (w_cpu, w_cuda)]:
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
