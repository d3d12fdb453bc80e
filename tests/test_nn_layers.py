"""tk.nn layers: forward and gradients against PyTorch with the same weights (copied by
state-dict key), state-dict keys and reprs equal to PyTorch's, train/eval behaviour, bad
input, default initialisation and nn.init distributions, nn.utils."""
from __future__ import annotations

import math

import numpy as np
import pytest

import tensorkit as tk
from tensorkit import nn

try:
    import torch
except ImportError:
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
RNG = np.random.default_rng(1)


def _copy_weights(ours, theirs) -> None:
    """Load PyTorch's state dict into ours by key (strict: the keys must be the same)."""
    ours.load_state_dict({k: tk.tensor(v.detach().numpy()) for k, v in theirs.state_dict().items()})


def _make(build):
    ours, theirs = build(nn, lambda a: tk.tensor(a)), build(torch.nn, lambda a: torch.tensor(a))
    return ours, theirs


def _run_both(ours, theirs, inputs, device="cpu"):
    """Call both modules on the same inputs (float arrays get gradients); compare outputs, input
    gradients and parameter gradients by name."""
    dt_tk, dt_t = (tk.float64, torch.float64) if device == "cpu" else (tk.float32, torch.float32)
    ours.to(dt_tk).to(device)
    theirs.to(dt_t)
    _copy_weights(ours, theirs)
    tk_in, t_in = [], []
    for a in inputs:
        if a.dtype.kind == "f":
            tk_in.append(tk.tensor(a, dtype=dt_tk, device=device, requires_grad=True))
            t_in.append(torch.tensor(a, dtype=dt_t, requires_grad=True))
        else:
            tk_in.append(tk.tensor(a, device=device))
            t_in.append(torch.tensor(a))
    y, ty = ours(*tk_in), theirs(*t_in)
    tol = dict(rtol=1e-7, atol=1e-9) if device == "cpu" else dict(rtol=3e-5, atol=3e-5)
    assert tuple(y.shape) == tuple(ty.shape)
    assert y.device.type == device
    np.testing.assert_allclose(y.detach().cpu().numpy(), ty.detach().numpy(), **tol)
    g = RNG.standard_normal(tuple(ty.shape))
    y.backward(tk.tensor(g, dtype=dt_tk, device=device))
    ty.backward(torch.tensor(g, dtype=dt_t))
    for a, b in zip(tk_in, t_in):
        if b.requires_grad:
            np.testing.assert_allclose(a.grad.cpu().numpy(), b.grad.numpy(), **tol, err_msg="input gradient")
    theirs_p = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        if theirs_p[name].grad is None:
            assert p.grad is None or not p.grad.cpu().numpy().any(), name
        else:
            np.testing.assert_allclose(p.grad.cpu().numpy(), theirs_p[name].grad.numpy(), **tol, err_msg=name)


def _x(*shape):
    return RNG.uniform(-2, 2, size=shape)


LAYERS = {
    "Linear": (lambda nn, T: nn.Linear(4, 3), [_x(2, 5, 4)]),
    "Linear_nobias": (lambda nn, T: nn.Linear(4, 3, bias=False), [_x(5, 4)]),
    "Linear_1d": (lambda nn, T: nn.Linear(4, 2), [_x(4)]),
    "Bilinear": (lambda nn, T: nn.Bilinear(2, 3, 4), [_x(5, 2), _x(5, 3)]),
    "Identity": (lambda nn, T: nn.Identity(7, foo=1), [_x(2, 3)]),
    "Flatten": (lambda nn, T: nn.Flatten(), [_x(2, 3, 2, 2)]),
    "Flatten_0_1": (lambda nn, T: nn.Flatten(0, 1), [_x(2, 3, 2)]),
    "Unflatten": (lambda nn, T: nn.Unflatten(1, (2, 3)), [_x(4, 6)]),
    "ReLU": (lambda nn, T: nn.ReLU(), [_x(3, 4)]),
    "LeakyReLU": (lambda nn, T: nn.LeakyReLU(0.2), [_x(3, 4)]),
    "ELU": (lambda nn, T: nn.ELU(0.5), [_x(3, 4)]),
    "GELU": (lambda nn, T: nn.GELU(), [_x(3, 4)]),
    "GELU_tanh": (lambda nn, T: nn.GELU("tanh"), [_x(3, 4)]),
    "SiLU": (lambda nn, T: nn.SiLU(), [_x(3, 4)]),
    "Mish": (lambda nn, T: nn.Mish(), [_x(3, 4)]),
    "Softplus": (lambda nn, T: nn.Softplus(2.0, 1.5), [_x(3, 4)]),
    "Hardtanh": (lambda nn, T: nn.Hardtanh(-0.5, 0.5), [_x(3, 4)]),
    "Sigmoid": (lambda nn, T: nn.Sigmoid(), [_x(3, 4)]),
    "Tanh": (lambda nn, T: nn.Tanh(), [_x(3, 4)]),
    "Softmax": (lambda nn, T: nn.Softmax(dim=1), [_x(3, 4)]),
    "LogSoftmax": (lambda nn, T: nn.LogSoftmax(dim=0), [_x(3, 4)]),
    "PReLU": (lambda nn, T: nn.PReLU(3), [_x(2, 3, 4)]),
    "Dropout_eval": (lambda nn, T: nn.Dropout(0.5).eval(), [_x(3, 4)]),
    "Dropout2d_eval": (lambda nn, T: nn.Dropout2d(0.5).eval(), [_x(2, 3, 2, 2)]),
    "Embedding": (lambda nn, T: nn.Embedding(10, 3), [RNG.integers(0, 10, (2, 5))]),
    "Embedding_padding": (lambda nn, T: nn.Embedding(6, 3, padding_idx=1), [np.array([[1, 2, 1], [0, 5, 1]])]),
    "MSELoss": (lambda nn, T: nn.MSELoss(), [_x(3, 4), _x(3, 4)]),
    "L1Loss_sum": (lambda nn, T: nn.L1Loss(reduction="sum"), [_x(3, 4), _x(3, 4)]),
    "SmoothL1Loss": (lambda nn, T: nn.SmoothL1Loss(beta=0.5), [_x(3, 4), _x(3, 4)]),
    "HuberLoss_none": (lambda nn, T: nn.HuberLoss(reduction="none", delta=0.3), [_x(3, 4), _x(3, 4)]),
    "NLLLoss": (lambda nn, T: nn.NLLLoss(weight=T([1.0, 2.0, 0.5]), ignore_index=0),
                [_x(4, 3), np.array([0, 1, 2, 2])]),
    "CrossEntropyLoss": (lambda nn, T: nn.CrossEntropyLoss(weight=T([1.0, 2.0, 0.5]), label_smoothing=0.1),
                         [_x(4, 3), np.array([0, 1, 2, 2])]),
    "CrossEntropyLoss_probs": (lambda nn, T: nn.CrossEntropyLoss(reduction="sum"),
                               [_x(4, 3), RNG.dirichlet(np.ones(3), 4)]),
    "BCELoss": (lambda nn, T: nn.BCELoss(weight=T([1.0, 2.0, 0.5])),
                [RNG.uniform(0.05, 0.95, (4, 3)), RNG.uniform(0, 1, (4, 3))]),
    "BCEWithLogitsLoss": (lambda nn, T: nn.BCEWithLogitsLoss(pos_weight=T([1.0, 3.0, 0.5])),
                          [_x(4, 3), RNG.uniform(0, 1, (4, 3))]),
    "KLDivLoss": (lambda nn, T: nn.KLDivLoss(reduction="batchmean", log_target=True),
                  [np.log(RNG.dirichlet(np.ones(3), 4)), np.log(RNG.dirichlet(np.ones(3), 4))]),
}


@needs_torch
@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_vs_torch(name):
    build, inputs = LAYERS[name]
    ours, theirs = _make(build)
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    _run_both(ours, theirs, inputs)


@needs_torch
@pytest.mark.parametrize("name", ["Linear", "Bilinear", "Embedding_padding", "CrossEntropyLoss", "GELU_tanh"])
def test_layer_vs_torch_cuda(name):
    build, inputs = LAYERS[name]
    _run_both(*_make(build), inputs, device="cuda")


class _Model:
    """The same model in either framework: state-dict keys must agree."""

    @staticmethod
    def build(nn):
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = nn.Embedding(7, 4, padding_idx=0)
                self.body = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Dropout(0.1), nn.Linear(8, 8))
                self.heads = nn.ModuleList([nn.Linear(8, 3), nn.Linear(8, 2, bias=False)])
                self.extra = nn.ModuleDict({"bil": nn.Bilinear(8, 8, 2)})
                self.scales = nn.ParameterList([nn.Parameter(nn.init.ones_(self.emb.weight.new_empty(3)))])
                self.loss = nn.CrossEntropyLoss(weight=nn.init.ones_(self.emb.weight.new_empty(3)))
                self.register_buffer("steps", nn.init.zeros_(self.emb.weight.new_empty(1)))

            def forward(self, idx, target):
                h = self.body(self.emb(idx)).mean(1)
                return self.loss(self.heads[0](h) * self.scales[0], target) + self.extra["bil"](h, h).sum()
        return Net()


@needs_torch
def test_model_state_dict_keys_shapes_and_repr_equal_pytorch():
    ours, theirs = _Model.build(nn), _Model.build(torch.nn)
    assert [(k, tuple(v.shape)) for k, v in ours.state_dict().items()] == \
        [(k, tuple(v.shape)) for k, v in theirs.state_dict().items()]
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    assert repr(ours).replace("tk.", "torch.") == repr(theirs)
    ours.eval(), theirs.eval()
    idx, target = np.array([[1, 0, 3], [6, 2, 0]]), np.array([2, 0])
    _run_both(ours, theirs, [idx, target])


# ---- numpy references (run without PyTorch) --------------------------------------------------------------------
def _erf(a):
    return np.vectorize(math.erf)(a)


NUMPY_LAYERS = {
    "ReLU": (nn.ReLU(), lambda x: np.maximum(x, 0)),
    "LeakyReLU": (nn.LeakyReLU(0.3), lambda x: np.where(x > 0, x, 0.3 * x)),
    "ELU": (nn.ELU(0.5), lambda x: np.where(x > 0, x, 0.5 * np.expm1(np.minimum(x, 0)))),
    "GELU": (nn.GELU(), lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2)))),
    "GELU_tanh": (nn.GELU("tanh"), lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))),
    "SiLU": (nn.SiLU(), lambda x: x / (1 + np.exp(-x))),
    "Mish": (nn.Mish(), lambda x: x * np.tanh(np.log1p(np.exp(x)))),
    "Softplus": (nn.Softplus(2.0, 3.0), lambda x: np.where(2 * x > 3, x, np.log1p(np.exp(2 * x)) / 2)),
    "Hardtanh": (nn.Hardtanh(-0.5, 0.25), lambda x: np.clip(x, -0.5, 0.25)),
    "Sigmoid": (nn.Sigmoid(), lambda x: 1 / (1 + np.exp(-x))),
    "Tanh": (nn.Tanh(), np.tanh),
    "Softmax": (nn.Softmax(dim=-1), lambda x: np.exp(x) / np.exp(x).sum(-1, keepdims=True)),
    "LogSoftmax": (nn.LogSoftmax(dim=1), lambda x: x - np.log(np.exp(x).sum(1, keepdims=True))),
    "Flatten": (nn.Flatten(), lambda x: x.reshape(x.shape[0], -1)),
    "Unflatten": (nn.Unflatten(-1, (2, 2)), lambda x: x.reshape(*x.shape[:-1], 2, 2)),
}


@pytest.mark.parametrize("name", list(NUMPY_LAYERS))
def test_layer_vs_numpy(name):
    layer, ref = NUMPY_LAYERS[name]
    x = _x(3, 2, 4)
    np.testing.assert_allclose(layer(tk.tensor(x)).numpy(), ref(x), rtol=1e-12, atol=1e-14)


def test_linear_bilinear_embedding_vs_numpy():
    lin = nn.Linear(4, 3).double()
    w, b = lin.weight.detach().numpy(), lin.bias.detach().numpy()
    x = _x(2, 5, 4)
    xt = tk.tensor(x, requires_grad=True)
    y = lin(xt)
    np.testing.assert_allclose(y.detach().numpy(), x @ w.T + b, rtol=1e-12)
    y.sum().backward()
    np.testing.assert_allclose(lin.weight.grad.numpy(), np.ones((10, 3)).T @ x.reshape(10, 4), rtol=1e-12)
    np.testing.assert_allclose(lin.bias.grad.numpy(), [10.0] * 3)
    np.testing.assert_allclose(xt.grad.numpy(), np.broadcast_to(w.sum(0), (2, 5, 4)), rtol=1e-12)
    bil = nn.Bilinear(2, 3, 4).double()
    a, c = _x(5, 2), _x(5, 3)
    ref = np.einsum("ni,kij,nj->nk", a, bil.weight.detach().numpy(), c) + bil.bias.detach().numpy()
    np.testing.assert_allclose(bil(tk.tensor(a), tk.tensor(c)).detach().numpy(), ref, rtol=1e-12)
    emb = nn.Embedding(6, 2)
    idx = np.array([[5, 0], [2, 2]])
    np.testing.assert_array_equal(emb(tk.tensor(idx)).detach().numpy(), emb.weight.detach().numpy()[idx])


# ---- train / eval -----------------------------------------------------------------------------------------------
def test_dropout_modules_train_and_eval():
    x = tk.ones(100, 40)
    d = nn.Dropout(0.25)
    y = d(x).numpy()
    assert abs((y == 0).mean() - 0.25) < 0.03 and np.allclose(y[y != 0], 1 / 0.75)
    d.eval()
    assert d(x) is x
    d2 = nn.Dropout2d(0.5)
    y = d2(tk.ones(8, 50, 2, 3)).numpy().reshape(8, 50, 6)
    assert (y == y[:, :, :1]).all() and 0.35 < (y[:, :, 0] != 0).mean() < 0.65
    assert nn.Sequential(d2).eval()[0](x[:2, :3].reshape(1, 2, 3, 1)) is not None
    with pytest.raises(ValueError, match="between 0 and 1, but got -0.1"):
        nn.Dropout(-0.1)


def test_embedding_padding_and_pretrained():
    e = nn.Embedding(5, 3, padding_idx=-1)
    assert e.padding_idx == 4 and not e.weight.detach().numpy()[4].any()
    out = e(tk.tensor([4, 0, 4]))
    out.sum().backward()
    np.testing.assert_array_equal(e.weight.grad.numpy()[:, 0], [1, 0, 0, 0, 0])
    pre = nn.Embedding.from_pretrained(tk.eye(3))
    assert not pre.weight.requires_grad
    np.testing.assert_array_equal(pre(tk.tensor([2])).numpy(), [[0, 0, 1]])
    with pytest.raises(NotImplementedError, match="max_norm"):
        nn.Embedding(3, 2, max_norm=1.0)
    with pytest.raises(RuntimeError, match="integer indices"):
        e(tk.tensor([0.0]))


# ---- bad input ----------------------------------------------------------------------------------------------------
def test_bad_input_names_expected_and_actual_shapes():
    with pytest.raises(RuntimeError, match=r"last dimension 4 \(the in_features of weight \[3, 4\]\), got input of "
                                           r"shape \[2, 5\]"):
        nn.Linear(4, 3)(tk.ones(2, 5))
    with pytest.raises(RuntimeError, match=r"\(\*, 4\), got a 0-d tensor"):
        nn.Linear(4, 3)(tk.tensor(1.0))
    with pytest.raises(RuntimeError, match=r"shapes \(\*, 2\) and \(\*, 3\) .*got \[5, 2\] and \[5, 4\]"):
        nn.Bilinear(2, 3, 4)(tk.ones(5, 2), tk.ones(5, 4))
    with pytest.raises(RuntimeError, match=r"expected target of shape \[4\] for input of shape \[4, 3\].*\[4, 1\]"):
        nn.CrossEntropyLoss()(tk.ones(4, 3), tk.zeros(4, 1, dtype=tk.int64))
    with pytest.raises(RuntimeError, match=r"weight should be a 1-D tensor of the 3 classes, got shape \[2\]"):
        nn.NLLLoss(weight=tk.ones(2))(tk.ones(4, 3), tk.zeros(4, dtype=tk.int64))
    with pytest.raises(RuntimeError, match="Unflatten|unflatten"):
        nn.Unflatten(1, (4, 4))(tk.ones(2, 6))
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh'"):
        nn.GELU("fast")


# ---- initialisation -----------------------------------------------------------------------------------------------
def _uniform_ok(a: np.ndarray, bound: float) -> None:
    assert a.min() >= -bound and a.max() <= bound
    assert a.min() < -0.95 * bound and a.max() > 0.95 * bound             # fills the interval
    np.testing.assert_allclose(a.var(), bound ** 2 / 3, rtol=0.05)
    assert abs(a.mean()) < 4 * bound / math.sqrt(3 * a.size)


def test_default_init_matches_pytorch_distributions():
    lin = nn.Linear(400, 300)
    _uniform_ok(lin.weight.detach().numpy(), 1 / math.sqrt(400))
    b = lin.bias.detach().numpy()
    assert np.abs(b).max() <= 1 / math.sqrt(400) and np.abs(b).max() > 0.9 / math.sqrt(400)
    bil = nn.Bilinear(50, 20, 40)
    _uniform_ok(bil.weight.detach().numpy(), 1 / math.sqrt(50))
    emb = nn.Embedding(300, 200, padding_idx=3).weight.detach().numpy()
    assert not emb[3].any()
    rest = np.delete(emb, 3, axis=0)
    assert abs(rest.mean()) < 0.01 and abs(rest.std() - 1) < 0.01
    assert (nn.PReLU(4).weight.detach().numpy() == 0.25).all()


def test_init_functions_moments_and_bounds():
    g = tk.Generator().manual_seed(3)
    w = tk.empty(300, 200)
    nn.init.xavier_uniform_(w, gain=2.0, generator=g)
    _uniform_ok(w.numpy(), 2.0 * math.sqrt(6 / 500))
    nn.init.xavier_normal_(w, generator=g)
    np.testing.assert_allclose(w.numpy().std(), math.sqrt(2 / 500), rtol=0.02)
    nn.init.kaiming_uniform_(w, a=0.1, mode="fan_out", nonlinearity="leaky_relu", generator=g)
    _uniform_ok(w.numpy(), math.sqrt(2 / 1.01) * math.sqrt(3 / 300))
    nn.init.kaiming_normal_(w, nonlinearity="relu", generator=g)
    np.testing.assert_allclose(w.numpy().std(), math.sqrt(2) / math.sqrt(200), rtol=0.02)
    conv = tk.empty(16, 8, 3, 3)
    nn.init.kaiming_uniform_(conv, generator=g)                 # fan_in = 8 * 3 * 3
    _uniform_ok(conv.numpy(), math.sqrt(2) * math.sqrt(3 / 72))
    nn.init.uniform_(w, -0.5, 2.0, generator=g)
    assert w.numpy().min() >= -0.5 and w.numpy().max() < 2.0
    nn.init.normal_(w, 3.0, 0.5, generator=g)
    assert abs(w.numpy().mean() - 3) < 0.01 and abs(w.numpy().std() - 0.5) < 0.01
    nn.init.constant_(w, 0.3)
    assert (w.numpy() == np.float32(0.3)).all()


def test_trunc_normal_moments():
    w = nn.init.trunc_normal_(tk.empty(200000, dtype=tk.float64), mean=1.0, std=2.0, a=-1.0, b=4.0,
                              generator=tk.Generator().manual_seed(0)).numpy()
    assert w.min() >= -1.0 and w.max() <= 4.0
    # moments of N(1, 2^2) truncated to [-1, 4]
    alpha, beta = (-1 - 1) / 2, (4 - 1) / 2
    phi = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    Phi = lambda z: (1 + math.erf(z / math.sqrt(2))) / 2
    Z = Phi(beta) - Phi(alpha)
    mean = 1 + 2 * (phi(alpha) - phi(beta)) / Z
    var = 4 * (1 + (alpha * phi(alpha) - beta * phi(beta)) / Z - ((phi(alpha) - phi(beta)) / Z) ** 2)
    assert abs(w.mean() - mean) < 0.01 and abs(w.var() - var) / var < 0.01
    hist, _ = np.histogram(w, bins=5, range=(-1, 4))
    expected = [Phi((e - 1) / 2) - Phi((s - 1) / 2) for s, e in zip(range(-1, 4), range(0, 5))]
    np.testing.assert_allclose(hist / w.size, np.array(expected) / Z, atol=0.005)


def test_orthogonal_eye_dirac_gain_generator():
    for shape in [(6, 4), (4, 6), (3, 2, 2)]:
        w = nn.init.orthogonal_(tk.empty(*shape, dtype=tk.float64), gain=2.0).numpy().reshape(shape[0], -1)
        small = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
        np.testing.assert_allclose(small, 4 * np.eye(min(w.shape)), atol=1e-10)
    np.testing.assert_array_equal(nn.init.eye_(tk.empty(2, 3)).numpy(), np.eye(2, 3))
    d = nn.init.dirac_(tk.empty(2, 2, 3, 3)).numpy()
    assert d[0, 0, 1, 1] == 1 and d[1, 1, 1, 1] == 1 and d.sum() == 2
    assert nn.init.calculate_gain("relu") == math.sqrt(2) and nn.init.calculate_gain("tanh") == 5 / 3
    assert nn.init.calculate_gain("leaky_relu", 0.2) == math.sqrt(2 / 1.04)
    assert nn.init.calculate_gain("conv2d") == 1 and nn.init.calculate_gain("selu") == 0.75
    with pytest.raises(ValueError, match="Unsupported nonlinearity"):
        nn.init.calculate_gain("swish")
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        nn.init.xavier_uniform_(tk.empty(3))
    a = nn.init.normal_(tk.empty(5), generator=tk.Generator().manual_seed(7)).numpy()
    b = nn.init.normal_(tk.empty(5), generator=tk.Generator().manual_seed(7)).numpy()
    np.testing.assert_array_equal(a, b)
    p = nn.Parameter(tk.zeros(3, 3))
    nn.init.kaiming_uniform_(p)                     # fills a parameter (under no_grad)
    assert p.requires_grad and p.grad_fn is None and p.numpy(force=True).any()


def test_init_on_cuda():
    w = nn.init.trunc_normal_(tk.empty(2000, device="cuda"), std=0.02, a=-0.04, b=0.04)
    a = w.cpu().numpy()
    assert np.abs(a).max() <= 0.04 and 0.012 < a.std() < 0.02
    lin = nn.Linear(50, 10, device="cuda")
    assert lin.weight.device.type == "cuda" and np.abs(lin.weight.detach().cpu().numpy()).max() <= 1 / math.sqrt(50)


# ---- nn.utils -----------------------------------------------------------------------------------------------------
def _with_grads(grads):
    params = []
    for g in grads:
        p = nn.Parameter(tk.zeros(*g.shape, dtype=tk.float64))
        p.grad = tk.tensor(g)
        params.append(p)
    return params


@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf")])
def test_clip_grad_norm(norm_type):
    grads = [RNG.standard_normal((3, 4)), RNG.standard_normal(5)]
    flat = np.concatenate([g.ravel() for g in grads])
    total = np.linalg.norm(flat, ord=norm_type)
    params = _with_grads(grads)
    got = nn.utils.clip_grad_norm_(params, max_norm=0.5, norm_type=norm_type)
    np.testing.assert_allclose(got.item(), total, rtol=1e-12)
    scale = min(1.0, 0.5 / (total + 1e-6))
    for p, g in zip(params, grads):
        np.testing.assert_allclose(p.grad.numpy(), g * scale, rtol=1e-12)
    params = _with_grads(grads)
    nn.utils.clip_grad_norm_(params, max_norm=1e6, norm_type=norm_type)       # below the limit: unchanged
    np.testing.assert_allclose(params[0].grad.numpy(), grads[0], rtol=1e-12)


def test_clip_grad_errors_value_and_vectors():
    params = _with_grads([np.array([1.0, np.inf])])
    with pytest.raises(RuntimeError, match="non-finite"):
        nn.utils.clip_grad_norm_(params, 1.0, error_if_nonfinite=True)
    assert nn.utils.clip_grad_norm_([nn.Parameter(tk.zeros(2))], 1.0).item() == 0.0     # no grads
    params = _with_grads([np.array([-3.0, 0.5, 2.0])])
    nn.utils.clip_grad_value_(params, 1.0)
    np.testing.assert_array_equal(params[0].grad.numpy(), [-1.0, 0.5, 1.0])
    lin = nn.Linear(3, 2)
    vec = nn.utils.parameters_to_vector(lin.parameters())
    np.testing.assert_array_equal(vec.detach().numpy(), np.concatenate(
        [lin.weight.detach().numpy().ravel(), lin.bias.detach().numpy()]))
    nn.utils.vector_to_parameters(tk.arange(8.0), lin.parameters())
    np.testing.assert_array_equal(lin.weight.detach().numpy(), np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(lin.bias.detach().numpy(), [6.0, 7.0])
    assert type(lin.weight) is nn.Parameter and lin.weight.requires_grad
    with pytest.raises(RuntimeError, match="1-D vector of 8 elements"):
        nn.utils.vector_to_parameters(tk.zeros(7), lin.parameters())


@needs_torch
def test_clip_grad_norm_matches_torch_on_a_model():
    ours, theirs = nn.Linear(5, 4).double(), torch.nn.Linear(5, 4).double()
    _copy_weights(ours, theirs)
    x = RNG.standard_normal((6, 5))
    (ours(tk.tensor(x)) ** 2).sum().backward()
    (theirs(torch.tensor(x)) ** 2).sum().backward()
    a = nn.utils.clip_grad_norm_(ours.parameters(), 0.1)
    b = torch.nn.utils.clip_grad_norm_(theirs.parameters(), 0.1)
    np.testing.assert_allclose(a.item(), b.item(), rtol=1e-12)
    np.testing.assert_allclose(ours.weight.grad.numpy(), theirs.weight.grad.numpy(), rtol=1e-12)


def test_small_mlp_trains():
    """End to end: Sequential + CrossEntropyLoss + clip_grad_norm_ + a hand-written SGD step
    (under no_grad, in place on the Parameters) fit a separable problem."""
    tk.manual_seed(0)
    x = tk.tensor(RNG.standard_normal((64, 2)), dtype=tk.float32)
    y = tk.tensor((x.numpy()[:, 0] * x.numpy()[:, 1] > 0).astype(np.int64))
    model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2))
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    for _ in range(60):
        model.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        with tk.no_grad():
            for p in model.parameters():
                p.sub_(p.grad * 0.5)
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]
    assert all(type(p) is nn.Parameter and p.is_leaf for p in model.parameters())
