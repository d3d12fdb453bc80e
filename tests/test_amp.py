"""Mixed precision: tk.autocast (op lists, nesting, threads, the weight-cast cache, gradients)
and tk.amp.GradScaler (skipping, backoff, growth, unscale_, state_dict), against PyTorch's
autocast and GradScaler on the CPU where torch is installed. The emulated cuda cases are few
and tiny: their kernels run in Triton's interpreter."""
import math
import sys
import threading

import numpy as np
import pytest

import tensorkit as tk
import tensorkit.amp.autocast  # noqa: F401  (tk.amp.autocast is the class; its module is below)
import tensorkit.nn.functional as F

AC = sys.modules["tensorkit.amp.autocast"]           # the module: its state, for the cache tests

bf16, fp16, fp32, fp64 = tk.bfloat16, tk.float16, tk.float32, tk.float64


def rnd(*shape, dtype=fp32, device="cpu", seed=0, requires_grad=False):
    a = np.random.default_rng(seed + len(shape)).standard_normal(shape).astype(np.float32)
    return tk.tensor(a, device=device).to(dtype).requires_grad_(requires_grad)


# ---- the op lists on the CPU (bfloat16), as PyTorch's CPU lists --------------------------------------------------
def _lower_cases(dev, dt=fp32):
    a, b, v = rnd(3, 4, dtype=dt, device=dev), rnd(4, 5, dtype=dt, device=dev), rnd(4, dtype=dt, device=dev)
    b3, c3 = rnd(2, 3, 4, dtype=dt, device=dev), rnd(2, 4, 3, dtype=dt, device=dev)
    x4, w4 = rnd(1, 2, 5, 5, dtype=dt, device=dev), rnd(3, 2, 3, 3, dtype=dt, device=dev)
    return {
        "matmul": lambda: a @ b, "mm": lambda: tk.mm(a, b), "bmm": lambda: tk.bmm(b3, c3),
        "addmm": lambda: tk.addmm(rnd(3, 5, dtype=dt, device=dev), a, b),
        "baddbmm": lambda: tk.baddbmm(rnd(2, 3, 3, dtype=dt, device=dev), b3, c3),
        "linear": lambda: F.linear(a, rnd(2, 4, dtype=dt, device=dev), rnd(2, dtype=dt, device=dev)),
        "conv1d": lambda: F.conv1d(b3, rnd(2, 3, 2, dtype=dt, device=dev)),
        "conv2d": lambda: F.conv2d(x4, w4),
        "conv_transpose2d": lambda: F.conv_transpose2d(x4, rnd(2, 3, 2, 2, dtype=dt, device=dev)),
        "prelu": lambda: F.prelu(a, rnd(1, dtype=dt, device=dev)),
        "einsum": lambda: tk.einsum("ij,jk->ik", a, b),
        "sdpa": lambda: F.scaled_dot_product_attention(b3, b3, b3),
        "matvec": lambda: a @ v,
    }


def test_lower_precision_ops_cpu():
    with tk.autocast("cpu"):
        for name, fn in _lower_cases("cpu").items():
            assert fn().dtype is bf16, name
        a = rnd(3, 4)
        assert tk.mv(a, rnd(4)).dtype is fp32          # mv / addmv / dot: CUDA list only
        assert tk.addmv(rnd(3), a, rnd(4)).dtype is fp32
        assert tk.dot(rnd(4), rnd(4)).dtype is fp32
        assert F.relu(a).dtype is fp32 and (a + 1).dtype is fp32    # not listed: inputs' dtypes
    with tk.autocast("cpu", dtype=fp16):
        assert tk.mm(rnd(2, 2), rnd(2, 2)).dtype is fp16


def test_float32_ops_cpu():
    x, y = rnd(4, 5, dtype=bf16), rnd(4, 5, dtype=bf16, seed=1)
    t = tk.tensor([0, 1, 4, 2])
    with tk.autocast("cpu"):
        fp32_ops = {
            "mse_loss": lambda: F.mse_loss(x, y), "l1_loss": lambda: F.l1_loss(x, y),
            "smooth_l1_loss": lambda: F.smooth_l1_loss(x, y), "huber_loss": lambda: F.huber_loss(x, y),
            "cross_entropy": lambda: F.cross_entropy(x, t), "nll_loss": lambda: F.nll_loss(x, t),
            "kl_div": lambda: F.kl_div(x, y, reduction="sum"),
            "bce_with_logits": lambda: F.binary_cross_entropy_with_logits(x, y.sigmoid()),
            "bce": lambda: F.binary_cross_entropy(x.sigmoid(), y.sigmoid()),
            "poisson_nll_loss": lambda: F.poisson_nll_loss(x, y.abs()), "prod": lambda: x.prod(),
        }
        for name, fn in fp32_ops.items():
            assert fn().dtype is fp32, name
        # PyTorch's CPU lists leave these in bfloat16 (they are float32 under CUDA autocast only)
        for name, fn in {"exp": x.exp, "sum": x.sum, "softmax": lambda: x.softmax(0),
                         "layer_norm": lambda: F.layer_norm(x, (5,)), "pow": lambda: x ** 2,
                         "mean": x.mean, "reciprocal": x.reciprocal}.items():
            assert fn().dtype is bf16, name
        # explicit dtype= is respected
        assert x.prod(dtype=bf16).dtype is bf16


def test_norms_keep_a_bfloat16_input_with_float32_weights_on_cpu():
    """PyTorch's CPU autocast leaves layer_norm / rms_norm / group_norm unlisted: a bfloat16 input
    with float32 weights goes to the native kernels as it is (bfloat16 out, float32 weight
    gradients); a float32 input with bfloat16 weights is refused, as PyTorch's kernel refuses it."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x_np, w_np, b_np = (rng.standard_normal(s).astype(np.float32) for s in ((2, 4, 3), (3,), (3,)))
    wg_np, bg_np = rng.standard_normal(4).astype(np.float32), rng.standard_normal(4).astype(np.float32)

    def run(lib, Fn, T):
        x = T(x_np).to(lib.bfloat16)
        ps = [T(a).requires_grad_() for a in (w_np, b_np, wg_np, bg_np)]
        with lib.autocast("cpu"):
            ys = [Fn.layer_norm(x, (3,), ps[0], ps[1]), Fn.rms_norm(x, (3,), ps[0], 1e-5),
                  Fn.group_norm(x, 2, ps[2], ps[3])]
        sum(y.float().square().sum() for y in ys).backward()
        return ys + [p.grad for p in ps]

    ours, theirs = run(tk, F, tk.tensor), run(torch, torch.nn.functional, torch.tensor)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert a.dtype.name == str(b.dtype).replace("torch.", ""), (i, a.dtype, b.dtype)
        np.testing.assert_allclose(a.detach().float().numpy(), b.detach().float().numpy(), rtol=3e-2, atol=3e-2,
                                   err_msg=str(i))
    with tk.autocast("cpu"), pytest.raises(RuntimeError, match=r"layer_norm: expected weight of dtype tk.float32 "
                                                                r"\(the input's\), got tk.bfloat16"):
        F.layer_norm(tk.tensor(x_np), (3,), tk.tensor(w_np).to(bf16))


def test_promote_and_ineligible_tensors():
    with tk.autocast("cpu"):
        assert tk.dot(rnd(3, dtype=bf16), rnd(3)).dtype is fp32                  # PyTorch's CPU dot raises here
        assert F.bilinear(rnd(2, 3, dtype=bf16), rnd(2, 4), rnd(5, 3, 4)).dtype is fp32
        assert tk.atan2(rnd(3, dtype=bf16), rnd(3)).dtype is fp32
        i = tk.tensor([[1, 2], [3, 4]])
        assert (i @ i).dtype is tk.int64                                        # integers: never cast
        d = rnd(2, 2).double()
        assert (d @ d).dtype is fp64                                            # float64: never lowered
        o = tk.empty(2, 2)
        r = tk.matmul(rnd(2, 2), rnd(2, 2), out=o)                              # out=: not cast
        assert r is o and o.dtype is fp32
    with tk.autocast("cuda"):                                                   # another device type
        assert tk.mm(rnd(2, 2), rnd(2, 2)).dtype is fp32


# ---- emulated cuda (float16 and bfloat16): a few tiny cases ----------------------------------------------------
@pytest.mark.parametrize("dt", [fp16, bf16])
def test_cuda_lists(dt):
    a = rnd(2, 3, device="cuda")
    h = a.to(dt)
    with tk.autocast("cuda", dtype=dt):
        assert tk.get_autocast_dtype("cuda") is dt
        assert (a @ rnd(3, 2, device="cuda")).dtype is dt                     # lower
        assert F.linear(a, rnd(2, 3, device="cuda")).dtype is dt
        assert h.exp().dtype is fp32                                         # float32 list (CUDA)
        assert h.sum().dtype is fp32 and h.sum(dtype=dt).dtype is dt
        assert (2 / h).dtype is fp32 and (h / 2).dtype is dt                  # __rtruediv__ only
        assert F.softmax(h, -1).dtype is fp32
        assert tk.dot(rnd(3, device="cuda").to(dt), rnd(3, device="cuda")).dtype is fp32      # promote
        assert (h + 1).dtype is dt                                           # not listed
        cpu = rnd(2, 2)
        assert (cpu @ cpu).dtype is fp32                                     # cpu tensors: cpu autocast


def test_cuda_values_and_grads():
    x = rnd(2, 3, device="cuda")
    w = rnd(4, 3, device="cuda", seed=3, requires_grad=True)
    with tk.autocast("cuda"):
        y = F.linear(x, w)
        loss = y.float().square().sum()
    assert y.dtype is fp16
    ref = x.cpu().numpy() @ w.detach().cpu().numpy().T
    np.testing.assert_allclose(y.detach().float().cpu().numpy(), ref, rtol=2e-3, atol=2e-3)
    loss.backward()
    assert w.grad.dtype is fp32
    np.testing.assert_allclose(w.grad.cpu().numpy(), 2 * ref.T @ x.cpu().numpy(), rtol=1e-2, atol=1e-2)


# ---- state: nesting, enabled=False, decorator, threads, errors --------------------------------------------------
def test_nesting_and_disable():
    assert not tk.is_autocast_enabled("cpu") and not tk.is_autocast_enabled("cuda")
    with tk.autocast("cuda"):
        assert tk.is_autocast_enabled() and tk.get_autocast_dtype("cuda") is fp16    # no argument: 'cuda'
    a = rnd(2, 2)
    with tk.autocast("cpu"):
        assert tk.is_autocast_enabled("cpu") and not tk.is_autocast_enabled("cuda")
        with tk.autocast("cpu", enabled=False):
            assert not tk.is_autocast_enabled("cpu")
            assert (a @ a).dtype is fp32
        with tk.amp.autocast("cpu", dtype=fp16):
            assert (a @ a).dtype is fp16 and tk.get_autocast_dtype("cpu") is fp16
        assert (a @ a).dtype is bf16 and tk.get_autocast_dtype("cpu") is bf16
    assert not tk.is_autocast_enabled("cpu") and AC.active[0] == 0
    assert (a @ a).dtype is fp32


def test_decorator_and_exceptions_restore_state():
    @tk.autocast("cpu")
    def f(x):
        assert tk.is_autocast_enabled("cpu")
        return x @ x

    assert f(rnd(2, 2)).dtype is bf16 and not tk.is_autocast_enabled("cpu")
    with pytest.raises(ZeroDivisionError):
        with tk.autocast("cpu"):
            1 / 0
    assert not tk.is_autocast_enabled("cpu") and AC.active[0] == 0


def test_one_instance_nests_and_modules_autocast():
    ac = tk.autocast("cpu")
    with ac:
        with ac:
            assert tk.is_autocast_enabled("cpu")
        assert tk.is_autocast_enabled("cpu")
    assert not tk.is_autocast_enabled("cpu")
    mha = tk.nn.MultiheadAttention(8, 2, batch_first=True)
    x = rnd(2, 3, 8)
    with tk.autocast("cpu"):
        assert mha(x, x, x)[0].dtype is bf16                   # as PyTorch's (its fused CPU op is listed)
        assert tk.nn.LayerNorm(8)(x.to(bf16)).dtype is bf16   # bf16 input, float32 weight: PyTorch's CPU kernel


def test_thread_local():
    seen = {}
    inside, done = threading.Event(), threading.Event()

    def other():
        inside.wait()
        a = rnd(2, 2)
        seen["enabled"], seen["dtype"] = tk.is_autocast_enabled("cpu"), (a @ a).dtype
        done.set()

    th = threading.Thread(target=other)
    th.start()
    with tk.autocast("cpu"):
        inside.set()
        done.wait(30)
        assert (rnd(2, 2) @ rnd(2, 2)).dtype is bf16
    th.join()
    assert seen == {"enabled": False, "dtype": fp32}


def test_errors_name_what_was_given():
    with pytest.raises(ValueError, match=r"dtype must be tk.float16 or tk.bfloat16.*got tk.float32"):
        tk.autocast("cpu", dtype=tk.float32)
    with pytest.raises(ValueError, match=r"got tk.int64"):
        tk.autocast("cuda", dtype=tk.int64)
    with pytest.raises(ValueError, match=r"device_type must be 'cuda' or 'cpu', got 'tpu'"):
        tk.autocast("tpu")
    with pytest.raises(ValueError, match=r"got 'cuda:0'; use 'cuda'"):
        tk.autocast("cuda:0")
    with pytest.raises(ValueError, match="device_type"):
        tk.is_autocast_enabled("mps")


# ---- gradients and the weight-cast cache --------------------------------------------------------------------
def test_gradients_reach_float32_params():
    model = tk.nn.Sequential(tk.nn.Linear(4, 8), tk.nn.ReLU(), tk.nn.Linear(8, 3))
    x, t = rnd(5, 4), tk.tensor([0, 2, 1, 1, 0])
    with tk.autocast("cpu"):
        out = model(x)
        loss = F.cross_entropy(out, t)
    assert out.dtype is bf16 and loss.dtype is fp32
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and g.dtype is fp32 for g in grads)
    ref = [p.grad.numpy().copy() for p in model.parameters()]
    for p in model.parameters():
        p.grad = None
    F.cross_entropy(model(x), t).backward()                  # float32 reference
    for g, r in zip(ref, [p.grad.numpy() for p in model.parameters()]):
        np.testing.assert_allclose(g, r, rtol=0.05, atol=0.02)


def test_cast_cache_reuse_and_invalidation():
    w = rnd(3, 4, requires_grad=True)
    x = rnd(2, 4)
    with tk.autocast("cpu"):
        y1 = F.linear(x, w)
        assert len(AC._state.cache) == 1
        (entry,) = AC._state.cache.values()
        F.linear(x, w)
        assert list(AC._state.cache.values())[0][4] is entry[4]            # reused, not cast again
        with tk.autocast("cpu", enabled=False):
            pass
        assert len(AC._state.cache) == 1                                 # inner exit keeps the cache
        with tk.no_grad():
            w.mul_(2.0)                                                  # in place: version bump
        y2 = F.linear(x, w)
        np.testing.assert_allclose(y2.detach().float().numpy(), 2 * y1.detach().float().numpy(), rtol=1e-2)
        assert list(AC._state.cache.values())[0][4] is not entry[4]
    assert AC._state.cache == {}                                         # outermost exit clears it
    with tk.autocast("cpu", cache_enabled=False):
        F.linear(x, w)
        assert AC._state.cache == {}


def test_cache_first_use_under_no_grad_does_not_cut_the_graph():
    # PyTorch's cache hands a copy made under no_grad to a later grad-mode use (no gradient)
    w = rnd(3, 4, requires_grad=True)
    x = rnd(2, 4)
    with tk.autocast("cpu"):
        with tk.no_grad():
            F.linear(x, w)
        y = F.linear(x, w)
    y.float().sum().backward()
    assert w.grad is not None and w.grad.dtype is fp32


def test_custom_fwd_bwd():
    seen = {}

    class Square(tk.autograd.Function):
        @staticmethod
        @tk.amp.custom_fwd(device_type="cpu", cast_inputs=tk.float32)
        def forward(ctx, x, y):
            seen["fwd"] = (x.dtype, tk.is_autocast_enabled("cpu"))
            ctx.save_for_backward(x)
            return x * x + (x @ y).sum()

        @staticmethod
        @tk.amp.custom_bwd(device_type="cpu")
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            seen["bwd"] = tk.is_autocast_enabled("cpu")
            return 2 * g * x, None

    class Plain(tk.autograd.Function):
        @staticmethod
        @tk.amp.custom_fwd(device_type="cpu")
        def forward(ctx, x):
            seen["plain"] = tk.is_autocast_enabled("cpu")
            return (x @ x).sum()

        @staticmethod
        @tk.amp.custom_bwd(device_type="cpu")
        def backward(ctx, g):
            seen["plain_bwd"] = tk.is_autocast_enabled("cpu")
            return g.expand(2, 2) * 0

    x = rnd(2, 2, dtype=bf16, requires_grad=True)
    with tk.autocast("cpu"):
        out = Square.apply(x, rnd(2, 2, dtype=bf16))
        p = Plain.apply(rnd(2, 2, requires_grad=True))
    assert seen["fwd"] == (fp32, False) and out.dtype is fp32 and p.dtype is bf16
    out.sum().backward()
    p.backward()
    assert seen["bwd"] is False and seen["plain"] is True and seen["plain_bwd"] is True
    assert x.grad.dtype is bf16


# ---- vs PyTorch's CPU autocast -------------------------------------------------------------------------------
def test_matches_torch_cpu_autocast():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    ws = {k: rng.standard_normal(s).astype(np.float32) * 0.5 for k, s in
          {"w1": (8, 6), "b1": (8,), "w2": (5, 8), "b2": (5,), "g": (5,), "c": (2, 3, 3, 3)}.items()}
    x_np = rng.standard_normal((4, 6)).astype(np.float32)
    img = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    target = np.array([0, 4, 2, 1])

    def run(lib, Fn, T):
        p = {k: T(v) for k, v in ws.items()}
        x = T(x_np)
        with lib.autocast("cpu"):
            h = Fn.relu(Fn.linear(x, p["w1"], p["b1"]))
            z = Fn.linear(h, p["w2"], p["b2"])
            n = Fn.layer_norm(z, (5,), p["g"])
            s = n.softmax(-1)
            loss = Fn.cross_entropy(z, T(target))
            c = Fn.conv2d(T(img), p["c"])
            mse = Fn.mse_loss(c, c * 0.5)
        return [h, z, n, s, loss, c, mse]

    ours = run(tk, F, lambda a: tk.tensor(a))
    theirs = run(torch, torch.nn.functional, lambda a: torch.tensor(a))
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert a.dtype.name == str(b.dtype).replace("torch.", ""), (i, a.dtype, b.dtype)
        np.testing.assert_allclose(a.float().numpy(), b.float().numpy(), rtol=2e-2, atol=2e-2, err_msg=str(i))


# ---- GradScaler -------------------------------------------------------------------------------------------------
def _setup(lr=0.1, **kw):
    p = tk.nn.Parameter(tk.tensor([1.0, -2.0, 3.0]))
    opt = tk.optim.SGD([p], lr=lr)
    return p, opt, tk.amp.GradScaler("cpu", **kw)


def _backward(scaler, p, bad=False):
    loss = (p * p).sum()
    scaler.scale(loss).backward()
    if bad:
        with tk.no_grad():
            p.grad[1] = math.inf


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN"])
def test_recurrent_layers_autocast_like_torch(mode):
    """nn.LSTM / GRU / RNN under CPU autocast: outputs and states in bfloat16, as PyTorch's lstm
    and rnn give, values close to PyTorch's; float32 parameters get float32 grads. PyTorch's CPU
    GRU is not on its CPU list and returns float32 (its composite's float32 state promotes);
    tensorkit runs every recurrent layer in the lower precision on both devices."""
    torch = pytest.importorskip("torch")
    m = getattr(tk.nn, mode)(8, 16, num_layers=2)
    tm = getattr(torch.nn, mode)(8, 16, num_layers=2)
    tm.load_state_dict({k: torch.tensor(v.detach().numpy()) for k, v in m.state_dict().items()})
    x = np.random.default_rng(3).standard_normal((5, 3, 8)).astype(np.float32)
    with tk.autocast("cpu", dtype=tk.bfloat16):
        y, state = m(tk.tensor(x))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ty, tstate = tm(torch.tensor(x))
    states, tstates = (state, tstate) if mode == "LSTM" else ((state,), (tstate,))
    for a, e in zip((y, *states), (ty, *tstates)):
        assert a.dtype is tk.bfloat16 and e.dtype is (torch.float32 if mode == "GRU" else torch.bfloat16)
        np.testing.assert_allclose(a.float().detach().numpy(), e.float().detach().numpy(), atol=3e-2)
    y.float().sum().backward()
    assert m.weight_hh_l0.grad.dtype is tk.float32 and m.weight_ih_l1.grad.dtype is tk.float32


def test_scaler_skips_inf_and_backs_off():
    p, opt, scaler = _setup(init_scale=1024.0)
    _backward(scaler, p, bad=True)
    assert scaler.step(opt) is None
    np.testing.assert_array_equal(p.detach().numpy(), [1.0, -2.0, 3.0])     # step skipped
    scaler.update()
    assert scaler.get_scale() == 512.0 and scaler._get_growth_tracker() == 0
    opt.zero_grad()
    _backward(scaler, p)
    scaler.step(opt)
    scaler.update()
    np.testing.assert_allclose(p.detach().numpy(), [1.0 - 0.2, -2.0 + 0.4, 3.0 - 0.6], rtol=1e-6)
    assert scaler.get_scale() == 512.0 and scaler._get_growth_tracker() == 1


def test_scaler_nan_is_found_too():
    p, opt, scaler = _setup(init_scale=8.0)
    _backward(scaler, p)
    with tk.no_grad():
        p.grad[0] = math.nan
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() == 4.0


def test_scaler_grows_after_interval():
    p, opt, scaler = _setup(init_scale=4.0, growth_interval=3)
    scales = []
    for _ in range(7):
        opt.zero_grad()
        _backward(scaler, p)
        scaler.step(opt)
        scaler.update()
        scales.append(scaler.get_scale())
    assert scales == [4.0, 4.0, 8.0, 8.0, 8.0, 16.0, 16.0]


def test_unscale_before_clipping():
    p, opt, scaler = _setup(init_scale=256.0)
    _backward(scaler, p)
    np.testing.assert_allclose(p.grad.numpy(), 256 * np.array([2.0, -4.0, 6.0]))
    scaler.unscale_(opt)
    np.testing.assert_allclose(p.grad.numpy(), [2.0, -4.0, 6.0])
    total = tk.nn.utils.clip_grad_norm_([p], max_norm=1.0)
    assert abs(float(total) - math.sqrt(56.0)) < 1e-4
    g = p.grad.numpy().copy()
    scaler.step(opt)                                         # does not unscale again
    np.testing.assert_allclose(p.detach().numpy(), np.array([1.0, -2.0, 3.0]) - 0.1 * g, rtol=1e-6)
    with pytest.raises(RuntimeError, match="unscale_\\(\\) is being called after step\\(\\)"):
        scaler.unscale_(opt)
    with pytest.raises(RuntimeError, match="step\\(\\) has already been called"):
        scaler.step(opt)
    scaler.update()


def test_scaler_errors():
    p, opt, scaler = _setup()
    with pytest.raises(RuntimeError, match="Attempted step but _scale is None"):
        scaler.step(opt)
    _backward(scaler, p)
    scaler.unscale_(opt)
    with pytest.raises(RuntimeError, match="unscale_\\(\\) has already been called on this optimizer since the "
                                           "last update\\(\\)"):
        scaler.unscale_(opt)
    h = tk.nn.Parameter(tk.tensor([1.0, 2.0]).half())
    h.grad = tk.tensor([1.0, 2.0]).half()
    with pytest.raises(ValueError, match="Attempting to unscale FP16 gradients."):
        scaler.unscale_(tk.optim.SGD([h], lr=0.1))
    with pytest.raises(ValueError, match="growth_factor must be > 1.0"):
        tk.amp.GradScaler("cpu", growth_factor=0.5)
    with pytest.raises(ValueError, match="device must be 'cuda' or 'cpu'"):
        tk.amp.GradScaler("tpu")


def test_scaler_disabled_is_a_pass_through():
    p, opt, _ = _setup()
    scaler = tk.amp.GradScaler("cpu", enabled=False)
    loss = (p * p).sum()
    assert scaler.scale(loss) is loss and not scaler.is_enabled()
    loss.backward()
    scaler.unscale_(opt)
    scaler.step(opt)
    scaler.update()
    np.testing.assert_allclose(p.detach().numpy(), [0.8, -1.6, 2.4], rtol=1e-6)
    assert scaler.get_scale() == 1.0 and scaler.state_dict() == {}


def test_scaler_scales_nested_outputs_and_new_scale():
    p, opt, scaler = _setup(init_scale=4.0)
    a, b = tk.tensor(1.0), tk.tensor([2.0])
    out = scaler.scale([a, (b, a)])
    assert isinstance(out, list) and isinstance(out[1], tuple)
    assert float(out[0]) == 4.0 and out[1][0].tolist() == [8.0]
    scaler.update(new_scale=32.0)
    assert scaler.get_scale() == 32.0
    scaler.update(new_scale=tk.tensor(2.0))
    assert scaler.get_scale() == 2.0
    with pytest.raises(ValueError, match="outputs must be a Tensor"):
        scaler.scale("loss")


def test_scaler_state_dict_round_trip():
    p, opt, scaler = _setup(init_scale=64.0, growth_interval=5)
    for bad in (False, True, False):
        opt.zero_grad()
        _backward(scaler, p, bad=bad)
        scaler.step(opt)
        scaler.update()
    sd = scaler.state_dict()
    assert sd == {"scale": 32.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 5,
                  "_growth_tracker": 1}
    fresh = tk.amp.GradScaler("cpu")
    fresh.load_state_dict(sd)
    assert fresh.state_dict() == sd
    assert (fresh.get_scale(), fresh.get_growth_factor(), fresh.get_backoff_factor(),
            fresh.get_growth_interval()) == (32.0, 2.0, 0.5, 5)
    fresh.set_growth_interval(7)
    fresh.set_growth_factor(4.0)
    fresh.set_backoff_factor(0.25)
    assert (fresh.get_growth_interval(), fresh.get_growth_factor(), fresh.get_backoff_factor()) == (7, 4.0, 0.25)
    with pytest.raises(RuntimeError, match="source state dict is empty"):
        fresh.load_state_dict({})


def test_scaler_matches_torch_scale_sequence():
    torch = pytest.importorskip("torch")
    pattern = [False, False, True, False, False, False, False, True, True, False, False, False, False]
    seqs = []
    for lib in ("tk", "torch"):
        if lib == "tk":
            p = tk.nn.Parameter(tk.tensor([1.0, -2.0]))
            opt, scaler = tk.optim.SGD([p], lr=0.01), tk.amp.GradScaler("cpu", init_scale=2.0 ** 10,
                                                                        growth_interval=3)
        else:
            p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
            opt, scaler = torch.optim.SGD([p], lr=0.01), torch.amp.GradScaler("cpu", init_scale=2.0 ** 10,
                                                                              growth_interval=3)
        seq = []
        for bad in pattern:
            opt.zero_grad()
            scaler.scale((p * p).sum()).backward()
            if bad:
                with (tk.no_grad() if lib == "tk" else torch.no_grad()):
                    p.grad[0] = math.inf
            scaler.step(opt)
            scaler.update()
            seq.append((scaler.get_scale(), scaler._get_growth_tracker(), p.detach().numpy().tolist()))
        seqs.append(seq)
    ours, theirs = seqs
    for (s1, t1, p1), (s2, t2, p2) in zip(ours, theirs):
        assert (s1, t1) == (s2, t2)
        np.testing.assert_allclose(p1, p2, rtol=1e-6)


def test_scaler_on_emulated_cuda():
    p = tk.nn.Parameter(tk.tensor([1.0, -2.0], device="cuda"))
    opt = tk.optim.SGD([p], lr=0.1)
    scaler = tk.amp.GradScaler("cuda", init_scale=16.0)
    scaler.scale((p * p).sum()).backward()
    assert scaler._scale.device.type == "cuda"
    scaler.step(opt)
    scaler.update()
    np.testing.assert_allclose(p.detach().cpu().numpy(), [0.8, -1.6], rtol=1e-6)
    assert scaler.get_scale() == 16.0
