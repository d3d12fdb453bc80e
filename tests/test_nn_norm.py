"""Normalization layers and the fused cross-entropy, against PyTorch (weights loaded by
state-dict key) where it is installed, numpy otherwise: forward, gradients, train/eval and
running statistics, bad input. The primitives themselves are in the op table (test_ops.py).
"""
from __future__ import annotations

import numpy as np
import pytest

import tensorkit as tk
from tensorkit.kernels import norm as gpu_norm
from tensorkit.ops.norm import cross_entropy
from tensorkit.testing.compare import assert_close

torch = pytest.importorskip("torch")
DEVICES = ["cpu", "cuda"]


def _tk(t, device="cpu", grad=False):
    x = tk.tensor(t.detach().numpy(), device=device)
    return x.requires_grad_() if grad else x


def _load(ours, theirs, device):
    ours.load_state_dict({k: tk.tensor(v.detach().numpy()) for k, v in theirs.state_dict().items()})
    return ours.to(device)


def _compare_module(ours, theirs, x_np, device, atol=1e-5):
    """Forward output and the gradients of the input and of every parameter, vs torch."""
    xt = torch.tensor(x_np, requires_grad=True)
    yt = theirs(xt)
    g = np.random.default_rng(1).standard_normal(tuple(yt.shape)).astype(np.float32)
    yt.backward(torch.tensor(g))
    x = tk.tensor(x_np, device=device, requires_grad=True)
    y = ours(x)
    y.backward(tk.tensor(g, device=device))
    assert_close(y.cpu(), yt.detach().numpy(), rtol=1e-5, atol=atol, msg="output")
    assert_close(x.grad.cpu(), xt.grad.numpy(), rtol=1e-4, atol=atol, msg="input gradient")
    theirs_p = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        assert_close(p.grad.cpu(), theirs_p[name].grad.numpy(), rtol=1e-4, atol=atol * 10, msg=f"grad of {name}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["layer", "layer 2-D no bias", "rms", "group"])
def test_norm_layers_match_torch(kind, device):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    if kind == "layer":
        theirs, ours, shape = torch.nn.LayerNorm(6), tk.nn.LayerNorm(6), (3, 6)
    elif kind == "layer 2-D no bias":
        theirs, ours, shape = torch.nn.LayerNorm((2, 3), bias=False), tk.nn.LayerNorm((2, 3), bias=False), (4, 2, 3)
    elif kind == "rms":
        theirs, ours, shape = torch.nn.RMSNorm(5, eps=1e-6), tk.nn.RMSNorm(5, eps=1e-6), (2, 3, 5)
    else:
        theirs, ours, shape = torch.nn.GroupNorm(2, 4), tk.nn.GroupNorm(2, 4), (2, 4, 3)
    with torch.no_grad():                   # non-trivial affine parameters
        for p in theirs.parameters():
            p.copy_(torch.randn(p.shape))
    assert set(ours.state_dict()) == set(theirs.state_dict())
    _compare_module(_load(ours, theirs, device), theirs, rng.standard_normal(shape).astype(np.float32), device)


def test_layer_norm_long_rows_on_the_loop_path(monkeypatch):
    """Rows longer than one register tile take the Triton kernels' sweeping path (thresholds
    lowered so the interpreter stays fast), and the backward's partial sums span several programs."""
    monkeypatch.setattr(gpu_norm, "SINGLE_MAX", 4)
    monkeypatch.setattr(gpu_norm, "LOOP_BLOCK", 4)
    monkeypatch.setattr(gpu_norm, "BWD_PROGRAMS", 2)
    monkeypatch.setattr(gpu_norm, "CE_BLOCK", 4)
    rng = np.random.default_rng(0)
    x_np, w_np, b_np = rng.standard_normal((5, 10)), rng.standard_normal(10), rng.standard_normal(10)
    for rms in (False, True):
        theirs = [torch.tensor(a, requires_grad=True) for a in (x_np, w_np, b_np)]
        if rms:
            yt = torch.nn.functional.rms_norm(theirs[0], (10,), theirs[1], 1e-5) + theirs[2]
        else:
            yt = torch.nn.functional.layer_norm(*theirs[:1], (10,), *theirs[1:])
        yt.sum().backward()
        ours = [tk.tensor(a, device="cuda", requires_grad=True) for a in (x_np, w_np, b_np)]
        y = (tk.nn.functional.rms_norm(ours[0], (10,), ours[1], 1e-5) + ours[2] if rms
             else tk.nn.functional.layer_norm(ours[0], (10,), ours[1], ours[2]))
        y.sum().backward()
        assert_close(y.cpu(), yt.detach().numpy(), msg=f"rms={rms} forward")
        for o, t in zip(ours, theirs):
            assert_close(o.grad.cpu(), t.grad.numpy(), msg=f"rms={rms} gradient")
    t_np = np.array([0, 9, 3, -100, 7])
    xt = torch.tensor(x_np, requires_grad=True)
    lt = torch.nn.functional.cross_entropy(xt, torch.tensor(t_np), label_smoothing=0.1)
    lt.backward()
    x = tk.tensor(x_np, device="cuda", requires_grad=True)
    loss = cross_entropy(x, tk.tensor(t_np, device="cuda"), label_smoothing=0.1)
    loss.backward()
    assert_close(loss.cpu(), lt.detach().numpy(), msg="cross_entropy forward")
    assert_close(x.grad.cpu(), xt.grad.numpy(), msg="cross_entropy gradient")


def _second_order_matches_torch(ours_fn, theirs_fn, arrays):
    """Gradients of the squared first-order gradients (of a non-trivial loss), taken through
    ``create_graph=True``, vs PyTorch's, for every argument."""
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    ours = [tk.tensor(a, requires_grad=True) for a in arrays]
    yt = theirs_fn(*theirs)
    gt = torch.autograd.grad((yt * yt.detach().sin()).sum(), theirs, create_graph=True)
    sum(g.square().sum() for g in gt).backward()
    y = ours_fn(*ours)
    g = tk.autograd.grad((y * y.detach().sin()).sum(), ours, create_graph=True)
    sum(t.square().sum() for t in g).backward()
    for o, t in zip(ours, theirs):          # the bias's gradient does not depend on the bias: None in torch
        expected = t.grad.numpy() if t.grad is not None else np.zeros(t.shape)
        assert_close(o.grad if o.grad is not None else tk.zeros(o.shape, dtype=o.dtype), expected,
                     msg="second-order gradient")


def test_layer_norm_double_backward_matches_torch():
    rng = np.random.default_rng(0)
    _second_order_matches_torch(lambda x, w, b: tk.nn.functional.layer_norm(x, (4,), w, b),
                                lambda x, w, b: torch.nn.functional.layer_norm(x, (4,), w, b),
                                (rng.standard_normal((3, 4)), rng.standard_normal(4), rng.standard_normal(4)))


# ---- 16-bit input, float32 parameters (PyTorch's mix: bf16 activations, fp32 norm parameters) ---------------------
_MIXED = {"layer": ((3, 5), (5,)), "layer 2-D": ((2, 3, 4), (3, 4)), "rms": ((3, 5), (5,)),
          "group": ((2, 4, 3), (4,))}


def _mixed_norm(lib, kind, x, w, b):
    F = lib.nn.functional
    if kind == "rms":
        return F.rms_norm(x, tuple(w.shape), w, 1e-5)
    if kind == "group":
        return F.group_norm(x, 2, w, b)
    return F.layer_norm(x, tuple(w.shape), w, b)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("kind", list(_MIXED))
def test_norms_half_input_with_float32_parameters(kind, dtype):
    """A float16 / bfloat16 input with float32 weight and bias: output and input gradient in the
    input's dtype, the parameters' gradients in float32; all match PyTorch's CPU kernels (which
    compute in float32), and the emulated cuda device matches the CPU."""
    rng = np.random.default_rng(0)
    shape, pshape = _MIXED[kind]
    x_np, g_np = ((rng.standard_normal(shape) * 2 + 1).astype(np.float32) for _ in range(2))
    w_np, b_np = (rng.standard_normal(pshape).astype(np.float32) for _ in range(2))
    names = ["output", "grad of input", "grad of weight"] + ([] if kind == "rms" else ["grad of bias"])
    half = getattr(tk, dtype)

    def run(lib, device=None):
        on = {} if lib is torch else {"device": device}
        x = lib.tensor(x_np, **on).to(getattr(lib, dtype)).requires_grad_()
        w, b = (lib.tensor(a, **on).requires_grad_() for a in (w_np, b_np))
        y = _mixed_norm(lib, kind, x, w, b)
        y.backward(lib.tensor(g_np, **on).to(y.dtype))
        return [y.detach(), x.grad, w.grad] + ([] if kind == "rms" else [b.grad])

    theirs = run(torch)
    tol = 3e-2 if dtype == "bfloat16" else 4e-3       # PyTorch rounds dweight / dbias to 16 bits on the way
    ours = {device: run(tk, device) for device in DEVICES}
    for device, got in ours.items():
        assert [t.dtype for t in got] == [half, half] + [tk.float32] * (len(got) - 2), device
        for name, o, t in zip(names, got, theirs):
            assert_close(o.cpu().float(), t.float().numpy(), rtol=tol, atol=tol, msg=f"{device}: {name}")
    near = 1e-2 if dtype == "bfloat16" else 1e-3        # an ulp of the 16-bit values the sums are over
    for name, c, g in zip(names, ours["cpu"], ours["cuda"]):
        assert_close(g.cpu().float(), c.float().numpy(), rtol=near, atol=near, msg=f"cuda vs cpu: {name}")


@pytest.mark.parametrize("device", DEVICES)
def test_layer_norm_half_input_float32_bias_only(device):
    """No weight, a float32 bias: the bias's gradient is the float32 sum of the (bfloat16)
    output gradient over rows (PyTorch's CPU backward raises on this mix: numpy is the reference)."""
    rng = np.random.default_rng(0)
    x_np, g_np, b_np = rng.standard_normal((3, 5)), rng.standard_normal((3, 5)), rng.standard_normal(5)
    x = tk.tensor(x_np, device=device).to(tk.bfloat16).requires_grad_()
    b = tk.tensor(b_np, dtype=tk.float32, device=device, requires_grad=True)
    y = tk.nn.functional.layer_norm(x, (5,), None, b)
    g = tk.tensor(g_np, device=device).to(tk.bfloat16)
    y.backward(g)
    yt = torch.nn.functional.layer_norm(torch.tensor(x_np).bfloat16(), (5,), None, torch.tensor(b_np).float())
    assert y.dtype is tk.bfloat16 and b.grad.dtype is tk.float32
    assert_close(y.cpu().float(), yt.float().numpy(), rtol=1e-2, atol=1e-2, msg="output")
    assert_close(b.grad.cpu(), g.cpu().double().numpy().sum(0), rtol=1e-6, atol=1e-6, msg="grad of bias")


def test_layer_norm_module_in_float32_fed_bfloat16():
    """An nn.LayerNorm left in float32 (the usual hand-written mixed precision) takes a bfloat16
    input: bfloat16 out, float32 parameter gradients, as PyTorch's."""
    torch.manual_seed(0)
    theirs = torch.nn.LayerNorm(6)
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.randn(p.shape))
    ours = _load(tk.nn.LayerNorm(6), theirs, "cpu")
    x_np = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    yt = theirs(torch.tensor(x_np).bfloat16())
    yt.float().square().sum().backward()
    y = ours(tk.tensor(x_np).to(tk.bfloat16))
    y.float().square().sum().backward()
    assert y.dtype is tk.bfloat16 and ours.weight.grad.dtype is tk.float32 and ours.bias.grad.dtype is tk.float32
    assert_close(y.float(), yt.detach().float().numpy(), rtol=1e-2, atol=1e-2, msg="output")
    for name in ("weight", "bias"):
        assert_close(getattr(ours, name).grad, getattr(theirs, name).grad.numpy(), rtol=3e-2, atol=3e-2, msg=name)


def test_layer_norm_mixed_double_backward():
    """create_graph=True with a bfloat16 input and float32 weight and bias: the composite
    dweight / dbias and the backward's VJP compute in float32; second-order gradients vs
    PyTorch's in float64 on the same (bfloat16) values."""
    rng = np.random.default_rng(0)
    x_np = torch.tensor(rng.standard_normal((3, 4))).bfloat16().double().numpy()
    w_np, b_np = rng.standard_normal(4), rng.standard_normal(4)

    def run(lib, x_dtype, p_dtype):
        x = lib.tensor(x_np).to(x_dtype).requires_grad_()
        w, b = (lib.tensor(a).to(p_dtype).requires_grad_() for a in (w_np, b_np))
        y = lib.nn.functional.layer_norm(x, (4,), w, b)
        grads = lib.autograd.grad((y.double() * y.detach().double().sin()).sum(), [x, w, b], create_graph=True)
        sum(g.double().square().sum() for g in grads).backward()
        return [x.grad, w.grad]

    ours = run(tk, tk.bfloat16, tk.float32)
    assert [t.dtype for t in ours] == [tk.bfloat16, tk.float32]
    for name, o, t in zip(("input", "weight"), ours, run(torch, torch.float64, torch.float64)):
        scale = float(t.abs().max())
        assert_close(o.double(), t.numpy(), rtol=2e-2, atol=2e-2 * scale, msg=f"second-order gradient of {name}")


def test_norm_parameter_dtype_errors():
    """Parameters in the input's dtype or, for a 16-bit input, float32; anything else names both."""
    F = tk.nn.functional
    with pytest.raises(RuntimeError, match=r"layer_norm: expected weight of dtype tk.float32 \(the input's\), "
                                           r"got tk.float64"):
        F.layer_norm(tk.randn(2, 3), (3,), tk.ones(3, dtype=tk.float64))
    with pytest.raises(RuntimeError, match=r"layer_norm: expected bias of dtype tk.float32 \(the input's\), "
                                           r"got tk.bfloat16"):
        F.layer_norm(tk.randn(2, 3), (3,), None, tk.ones(3, dtype=tk.bfloat16))
    with pytest.raises(RuntimeError, match=r"rms_norm: expected weight of dtype tk.bfloat16 \(the input's\) or "
                                           r"tk.float32, got tk.float16"):
        F.rms_norm(tk.randn(2, 3).to(tk.bfloat16), (3,), tk.ones(3, dtype=tk.float16))
    with pytest.raises(RuntimeError, match=r"group_norm: expected weight of dtype tk.float16 \(the input's\) or "
                                           r"tk.float32, got tk.float64"):
        F.group_norm(tk.randn(2, 4, 3, device="cuda").to(tk.float16), 2, tk.ones(4, dtype=tk.float64, device="cuda"))
    with pytest.raises(RuntimeError, match=r"layer_norm: expected weight and bias of the same dtype, got tk.bfloat16 "
                                           r"and tk.float32"):
        F.layer_norm(tk.randn(2, 3).to(tk.bfloat16), (3,), tk.ones(3, dtype=tk.bfloat16), tk.zeros(3))
    with pytest.raises(RuntimeError, match=r"group_norm: expected weight and bias of the same dtype, got tk.float32 "
                                           r"and tk.float16"):
        F.group_norm(tk.randn(2, 4).to(tk.float16), 2, tk.ones(4), tk.zeros(4, dtype=tk.float16))


@pytest.mark.parametrize("cls,shape", [("BatchNorm1d", (6, 3)), ("BatchNorm1d", (4, 3, 2)), ("BatchNorm2d", (2, 3, 2, 2))])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_batch_norm_train_then_eval_matches_torch(cls, shape, momentum):
    torch.manual_seed(0)
    theirs = getattr(torch.nn, cls)(3, momentum=momentum)
    with torch.no_grad():
        theirs.weight.copy_(torch.randn(3))
        theirs.bias.copy_(torch.randn(3))
    ours = _load(getattr(tk.nn, cls)(3, momentum=momentum), theirs, "cpu")
    assert set(ours.state_dict()) == set(theirs.state_dict())
    rng = np.random.default_rng(0)
    for step in range(2):            # two training steps: running stats and num_batches_tracked move
        _compare_module(ours, theirs, (rng.standard_normal(shape) * 2 + 1).astype(np.float32), "cpu")
        for p in list(ours.parameters()) + list(theirs.parameters()):
            p.grad = None
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert_close(getattr(ours, name), getattr(theirs, name).numpy(), rtol=1e-5, atol=1e-6, msg=name)
    ours.eval()
    theirs.eval()
    x_np = rng.standard_normal(shape).astype(np.float32)
    before = ours.running_mean.numpy().copy()
    _compare_module(ours, theirs, x_np, "cpu")
    assert np.array_equal(ours.running_mean.numpy(), before), "eval must not update the running statistics"
    assert int(ours.num_batches_tracked.item()) == 2


def test_batch_norm_without_running_stats_and_on_cuda():
    torch.manual_seed(0)
    theirs = torch.nn.BatchNorm2d(2, affine=False, track_running_stats=False)
    ours = tk.nn.BatchNorm2d(2, affine=False, track_running_stats=False)
    assert ours.state_dict() == {} and ours.running_mean is None
    x_np = np.random.default_rng(0).standard_normal((3, 2, 2, 2)).astype(np.float32)
    ours.eval()
    theirs.eval()                     # no running stats: batch statistics even in eval
    _compare_module(ours, theirs, x_np, "cpu")
    theirs = torch.nn.BatchNorm1d(2)
    _compare_module(_load(tk.nn.BatchNorm1d(2), theirs, "cuda"), theirs, x_np[:, :, 0, 0], "cuda")


# ---- batch_norm: the fused training primitive, eval's pointwise launch ---------------------------------------------
def _bn_pair(arrays, device, dtype=None):
    """(torch tensors, tensorkit tensors) of the same values; ``dtype`` for the first (the input)."""
    theirs = [torch.tensor(a) for a in arrays]
    ours = [tk.tensor(a, device=device) for a in arrays]
    if dtype is not None:
        theirs[0] = theirs[0].to(getattr(torch, dtype))
        ours[0] = ours[0].to(getattr(tk, dtype))
    return theirs, ours


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (3, 3, 2, 4)], ids=["[N, C]", "[N, C, L]", "[N, C, H, W]"])
def test_batch_norm_training_steps_match_torch(shape, device):
    """Three training steps of F.batch_norm (momentum 0.1, then 0.3, then 1.0): output, gradients
    of input, weight and bias, and the running statistics (updated in place, version bumped;
    the variance unbiased), then eval with them, forward and backward."""
    rng = np.random.default_rng(0)
    c = shape[1]
    w_np, b_np = rng.standard_normal(c).astype(np.float32), rng.standard_normal(c).astype(np.float32)
    (trm, trv), (rm, rv) = _bn_pair([np.zeros(c, np.float32), np.ones(c, np.float32)], device)
    for step, momentum in enumerate((0.1, 0.3, 1.0)):
        x_np = (rng.standard_normal(shape) * 3 + 5).astype(np.float32)       # |mean| > std
        g_np = rng.standard_normal(shape).astype(np.float32)
        (tx, tw, tb), (x, w, b) = _bn_pair([x_np, w_np, b_np], device)
        for t in (tx, tw, tb, x, w, b):
            t.requires_grad_()
        yt = torch.nn.functional.batch_norm(tx, trm, trv, tw, tb, True, momentum, 1e-5)
        yt.backward(torch.tensor(g_np))
        version = rm._version
        y = tk.nn.functional.batch_norm(x, rm, rv, w, b, True, momentum, 1e-5)
        assert rm._version > version and y.device.type == device
        y.backward(tk.tensor(g_np, device=device))
        assert_close(y.cpu(), yt.detach().numpy(), rtol=1e-5, atol=1e-5, msg=f"step {step}: output")
        for name, o, t in (("input", x, tx), ("weight", w, tw), ("bias", b, tb)):
            assert_close(o.grad.cpu(), t.grad.numpy(), rtol=1e-4, atol=1e-5, msg=f"step {step}: grad of {name}")
        assert_close(rm.cpu(), trm.numpy(), rtol=1e-6, atol=1e-6, msg=f"step {step}: running_mean")
        assert_close(rv.cpu(), trv.numpy(), rtol=1e-6, atol=1e-6, msg=f"step {step}: running_var")
    (tx, tw, tb), (x, w, b) = _bn_pair([x_np, w_np, b_np], device)
    for t in (tx, tw, tb, x, w, b):
        t.requires_grad_()
    yt = torch.nn.functional.batch_norm(tx, trm, trv, tw, tb, False)
    yt.backward(torch.tensor(g_np))
    before = rm.cpu().numpy().copy()
    y = tk.nn.functional.batch_norm(x, rm, rv, w, b, False)
    y.backward(tk.tensor(g_np, device=device))
    assert np.array_equal(rm.cpu().numpy(), before), "eval must not update the running statistics"
    assert_close(y.cpu(), yt.detach().numpy(), rtol=1e-5, atol=1e-5, msg="eval output")
    for name, o, t in (("input", x, tx), ("weight", w, tw), ("bias", b, tb)):
        assert_close(o.grad.cpu(), t.grad.numpy(), rtol=1e-4, atol=1e-5, msg=f"eval grad of {name}")


@pytest.mark.parametrize("device", DEVICES)
def test_batch_norm_momentum_none_is_the_cumulative_average(device):
    """BatchNorm's momentum=None: factor 1 / num_batches_tracked, so after k steps the running
    mean is the plain average of the k batch means (PyTorch's module semantics)."""
    torch.manual_seed(0)
    theirs = torch.nn.BatchNorm1d(3, momentum=None)
    ours = _load(tk.nn.BatchNorm1d(3, momentum=None), theirs, device)
    rng = np.random.default_rng(0)
    means = []
    for _ in range(3):
        x_np = (rng.standard_normal((5, 3, 2)) + rng.standard_normal(3)[:, None] * 4).astype(np.float32)
        means.append(x_np.mean((0, 2)))
        theirs(torch.tensor(x_np))
        ours(tk.tensor(x_np, device=device))
    for name in ("running_mean", "running_var"):
        assert_close(getattr(ours, name).cpu(), getattr(theirs, name).numpy(), rtol=1e-5, atol=1e-6, msg=name)
    assert_close(ours.running_mean.cpu(), np.mean(means, 0), rtol=1e-5, atol=1e-6, msg="cumulative average")
    assert int(ours.num_batches_tracked.item()) == 3


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_batch_norm_half_input_with_float32_parameters(dtype, device):
    """cuDNN's (and autocast's) mix: 16-bit input, float32 weight, bias and running statistics.
    The output and the input's gradient are in the input's dtype, the parameters' gradients and
    the running statistics in float32; all match PyTorch's CPU kernel on the same values."""
    rng = np.random.default_rng(0)
    shape, c = (4, 3, 2, 3), 3
    x_np = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
    g_np = rng.standard_normal(shape).astype(np.float32)
    arrays = [x_np, rng.standard_normal(c).astype(np.float32), rng.standard_normal(c).astype(np.float32),
              np.zeros(c, np.float32), np.ones(c, np.float32)]
    (tx, tw, tb, trm, trv), (x, w, b, rm, rv) = _bn_pair(arrays, device, dtype)
    for t in (tx, tw, tb, x, w, b):
        t.requires_grad_()
    yt = torch.nn.functional.batch_norm(tx, trm, trv, tw, tb, True)
    yt.backward(torch.tensor(g_np).to(yt.dtype))
    y = tk.nn.functional.batch_norm(x, rm, rv, w, b, True)
    y.backward(tk.tensor(g_np, device=device).to(y.dtype))
    assert y.dtype is getattr(tk, dtype) and x.grad.dtype is y.dtype and w.grad.dtype is tk.float32
    tol = 3e-2 if dtype == "bfloat16" else 4e-3         # PyTorch's rounding differs (see the op table)
    assert_close(y.cpu().float(), yt.detach().float().numpy(), rtol=tol, atol=tol, msg="output")
    assert_close(x.grad.cpu().float(), tx.grad.float().numpy(), rtol=tol, atol=tol, msg="grad of input")
    for name, o, t in (("weight", w, tw), ("bias", b, tb), ("running_mean", rm, trm), ("running_var", rv, trv)):
        o = o.grad if name in ("weight", "bias") else o
        t = t.grad if name in ("weight", "bias") else t
        assert_close(o.cpu(), t.numpy(), rtol=1e-3, atol=1e-3, msg=name)
    ye = tk.nn.functional.batch_norm(x.detach(), rm, rv, w.detach(), b.detach(), False)
    yte = torch.nn.functional.batch_norm(tx.detach(), trm, trv, tw.detach(), tb.detach(), False)
    assert ye.dtype is getattr(tk, dtype)
    assert_close(ye.cpu().float(), yte.float().numpy(), rtol=tol, atol=tol, msg="eval output")


def test_batch_norm_double_backward():
    """gradgradcheck (float64) through the fused backward's composite VJP, and the second-order
    gradients vs PyTorch's."""
    rng = np.random.default_rng(0)
    arrays = rng.standard_normal((4, 3, 2)) * 2 + 1, rng.standard_normal(3), rng.standard_normal(3)
    ours = [tk.tensor(a, requires_grad=True) for a in arrays]
    assert tk.autograd.gradgradcheck(lambda x, w, b: tk.nn.functional.batch_norm(x, None, None, w, b, True), ours)
    _second_order_matches_torch(lambda x, w, b: tk.nn.functional.batch_norm(x, None, None, w, b, True),
                                lambda x, w, b: torch.nn.functional.batch_norm(x, None, None, w, b, True), arrays)


def test_batch_norm_split_tiles_on_the_gpu_path(monkeypatch):
    """Tiles smaller than a sample's channel (several spatial blocks, a partial last one), several
    channel blocks and splits, and a finalize sweeping its partial sums in several steps
    (thresholds lowered so the interpreter stays fast): forward, running statistics, backward."""
    monkeypatch.setattr(gpu_norm, "BN_TILE", 8)
    monkeypatch.setattr(gpu_norm, "BN_HW_MAX", 4)
    monkeypatch.setattr(gpu_norm, "BN_PROGRAMS", 16)
    monkeypatch.setattr(gpu_norm, "BN_FIN_S", 2)
    monkeypatch.setattr(gpu_norm, "BN_FIN_C", 2)
    plan = gpu_norm._bn_plan(tk.empty(5, 3, 7))
    assert plan["hw_blocks"] == 2 and plan["cblocks"] == 2 and plan["splits"] > 2
    rng = np.random.default_rng(0)
    for shape in ((5, 3, 7), (9, 5)):
        c = shape[1]
        arrays = [(rng.standard_normal(shape) * 2 - 3).astype(np.float32), rng.standard_normal(c).astype(np.float32),
                  rng.standard_normal(c).astype(np.float32), np.zeros(c, np.float32), np.ones(c, np.float32)]
        (tx, tw, tb, trm, trv), (x, w, b, rm, rv) = _bn_pair(arrays, "cuda")
        for t in (tx, tw, tb, x, w, b):
            t.requires_grad_()
        yt = torch.nn.functional.batch_norm(tx, trm, trv, tw, tb, True, 0.2)
        (yt * yt).sum().backward()
        y = tk.nn.functional.batch_norm(x, rm, rv, w, b, True, 0.2)
        (y * y).sum().backward()
        assert_close(y.cpu(), yt.detach().numpy(), rtol=1e-5, atol=1e-5, msg=f"{shape} output")
        for name, o, t in (("input", x.grad, tx.grad), ("weight", w.grad, tw.grad), ("bias", b.grad, tb.grad),
                           ("running_mean", rm, trm), ("running_var", rv, trv)):
            assert_close(o.cpu(), t.numpy(), rtol=1e-4, atol=1e-5, msg=f"{shape} {name}")


@pytest.mark.parametrize("device", DEVICES)
def test_batch_norm_strided_running_buffers_are_updated_in_place(device):
    """Running statistics that are views with a step: updated through a contiguous copy,
    written back into the caller's memory."""
    x_np = np.random.default_rng(0).standard_normal((4, 2, 3)).astype(np.float32)
    store = tk.zeros(4, device=device)
    rm = store[::2]
    tk.nn.functional.batch_norm(tk.tensor(x_np, device=device), rm, None, training=True, momentum=0.5)
    expected = np.zeros(4, np.float32)
    expected[::2] = 0.5 * x_np.mean((0, 2))
    assert_close(store.cpu(), expected, rtol=1e-6, atol=1e-6, msg="strided running_mean")
    with pytest.raises(RuntimeError, match=r"batch_norm: expected weight of dtype tk.bfloat16 \(the input's\) or "
                                           r"tk.float32, got tk.float64"):
        tk.nn.functional.batch_norm(tk.randn(4, 2, device=device).to(tk.bfloat16), None, None,
                                    tk.ones(2, dtype=tk.float64, device=device), training=True)


def test_cross_entropy_module_paths_match_torch():
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((3, 4, 2))
    t_np = np.array([[0, 3], [-1, 2], [1, 1]])
    w_np = np.array([1.0, 2.0, 0.5, 1.5])
    for kw in ({}, {"reduction": "sum", "label_smoothing": 0.2}, {"ignore_index": -1, "reduction": "none"}):
        for weight in (None, w_np):
            xt = torch.tensor(x_np, requires_grad=True)
            wt = torch.tensor(weight) if weight is not None else None
            tt = torch.tensor(np.where(t_np < 0, 0, t_np) if "ignore_index" not in kw else t_np)
            lt = torch.nn.functional.cross_entropy(xt, tt, wt, **kw)
            lt.sum().backward()
            x = tk.tensor(x_np, requires_grad=True)
            loss = cross_entropy(x, tk.tensor(tt.numpy()), tk.tensor(weight) if weight is not None else None, **kw)
            loss.sum().backward()
            assert_close(loss, lt.detach().numpy(), msg=f"{kw} weight={weight is not None}")
            assert_close(x.grad, xt.grad.numpy(), msg=f"{kw} weight={weight is not None}: gradient")
    probs = rng.dirichlet(np.ones(4), size=3)
    xt = torch.tensor(x_np[:, :, 0], requires_grad=True)
    lt = torch.nn.functional.cross_entropy(xt, torch.tensor(probs), label_smoothing=0.1)
    loss = cross_entropy(tk.tensor(x_np[:, :, 0]), tk.tensor(probs), label_smoothing=0.1)
    assert_close(loss, lt.detach().numpy(), msg="probability targets")


def test_bad_input_names_shapes():
    with pytest.raises(RuntimeError, match=r"normalized_shape=\[6\].*\[\*, 6\].*\[2, 5\]"):
        tk.nn.LayerNorm(6)(tk.randn(2, 5))
    with pytest.raises(ValueError, match=r"expected input with 3 channels \(dim 1\), got shape \[4, 2\]"):
        tk.nn.BatchNorm1d(3)(tk.randn(4, 2))
    with pytest.raises(ValueError, match=r"expected 4D input \[N, C, H, W\] \(got 3D input of shape \[2, 3, 4\]\)"):
        tk.nn.BatchNorm2d(3)(tk.randn(2, 3, 4))
    with pytest.raises(ValueError, match=r"more than 1 value per channel.*\[1, 3\]"):
        tk.nn.BatchNorm1d(3)(tk.randn(1, 3))
    with pytest.raises(RuntimeError, match=r"GroupNorm: expected input of shape \[N, 4, \*\], got \[2, 3\]"):
        tk.nn.GroupNorm(2, 4)(tk.randn(2, 3))
    with pytest.raises(RuntimeError, match=r"expected target of shape \[2\] for input of shape \[2, 5\]"):
        cross_entropy(tk.randn(2, 5), tk.tensor([1, 2, 3]))
    with pytest.raises(RuntimeError, match=r"expected weight on cpu"):
        tk.nn.functional.layer_norm(tk.randn(2, 3), (3,), tk.ones(3, device="cuda"))


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_cross_entropy_target_out_of_range(device):
    """The CPU raises at once; cuda gives the row a NaN loss and raises at the next synchronisation,
    once, naming the op and the target; ignore_index (even outside [0, C)) is not an error, and
    valid targets leave nothing pending."""
    if device == "cuda" and not tk.cuda.is_available():
        pytest.skip("no cuda device")
    x = tk.randn(3, 5, device=device)
    bad = tk.tensor([1, 7, 2], device=device)
    if device == "cpu":
        with pytest.raises(IndexError):
            cross_entropy(x, bad)
        return
    loss = cross_entropy(x, bad, reduction="none")                  # no sync here
    assert tk.cuda._deferred
    with pytest.raises(IndexError, match=r"index 7 is out of bounds for dimension 1 with size 5 \(in cross_entropy "
                                         r"\(target\) on cuda:0, indexing a tensor of shape \[3, 5\]"):
        loss.cpu()
    assert np.isnan(loss.cpu().numpy()[1]) and np.isfinite(loss.cpu().numpy()[[0, 2]]).all()   # reported once
    ok = cross_entropy(x, tk.tensor([1, -100, 2], device=device), reduction="none")
    assert ok.cpu().numpy()[1] == 0.0
    tk.cuda.synchronize()
    assert not tk.cuda._deferred


def test_nll_loss_target_out_of_range_names_the_loss_on_cuda():
    if not tk.cuda.is_available():
        pytest.skip("no cuda device")
    logp = tk.randn(3, 5, device="cuda").log_softmax(1)
    loss = tk.nn.functional.nll_loss(logp, tk.tensor([1, 9, 2], device="cuda"))     # no sync here
    with pytest.raises(IndexError, match=r"index 9 is out of bounds for dimension 1 with size 5 \(in nll_loss "
                                         r"\(target\) on cuda:0"):
        loss.item()
    with pytest.raises(IndexError, match=r"nll_loss: a target is out of bounds for 5 classes"):
        tk.nn.functional.nll_loss(logp.cpu(), tk.tensor([1, 9, 2]))


def test_bench_nn_norm_smoke(monkeypatch):
    """The GPU benchmark sections (benchmarks/bench_nn_norm.py) run on the CPU at tiny sizes:
    every case passes its check against PyTorch and gets a row."""
    import os
    import sys
    monkeypatch.syspath_prepend(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
    import bench_nn_norm as bench
    monkeypatch.setattr(bench, "LN_CASES", [((8, 64), "bfloat16"), ((4, 32), "float32")])
    monkeypatch.setattr(bench, "BN_CASES", [((4, 3, 4, 4), "float32"), ((4, 5, 2, 2), "bfloat16")])
    monkeypatch.setattr(bench, "CE_SHAPE", (8, 40))
    monkeypatch.setattr(bench, "EMB_SHAPE", (50, 16, 12))
    monkeypatch.setattr(bench, "ATTN_SHAPE", (1, 2, 32, 16))
    sections = bench.run_sections(tk, torch, quick=True, device="cpu")
    assert [t for t, _, _ in sections] == ["Layer norm", "Batch norm", "Softmax + cross-entropy", "Embedding",
                                           "Attention"]
    for title, _, body in sections:
        assert "Not timed" not in body and "failed" not in body, f"{title}:\n{body}"
    assert sum(body.count("\n| ") for _, _, body in sections) == 4 + 4 + 4 + 2 + 8
    sys.modules.pop("bench_nn_norm", None)
