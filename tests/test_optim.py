"""tk.optim against PyTorch: every optimizer and option from the same weights and gradients for
10 steps, state_dict round trips, scheduler lr sequences, and PyTorch's error messages."""
import warnings

import numpy as np
import pytest

import tensorkit as tk

torch = pytest.importorskip("torch")

_RNG = np.random.default_rng(0)
_W0 = [_RNG.standard_normal((3, 4)).astype(np.float32), _RNG.standard_normal(4).astype(np.float32)]
_GRADS = [[_RNG.standard_normal(w.shape).astype(np.float32) for w in _W0] for _ in range(10)]

CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.05)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, maximize=True)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1, amsgrad=True)),
    ("Adam", dict(lr=0.01, maximize=True, eps=1e-6)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1, amsgrad=True, maximize=True)),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.1, initial_accumulator_value=0.5, maximize=True)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, alpha=0.9, momentum=0.9, centered=True, weight_decay=0.1)),
    ("RMSprop", dict(lr=0.01, centered=True, maximize=True)),
    ("Adadelta", dict()),
    ("Adadelta", dict(lr=0.5, rho=0.8, weight_decay=0.1, maximize=True)),
]


def _np(t):
    return t.detach().numpy() if isinstance(t, torch.Tensor) else np.asarray(t.detach())


def _params(mod, values=_W0, device="cpu"):
    return [mod.nn.Parameter(mod.tensor(v.copy(), device=device)) for v in values]


def _steps(mod, opt, params, grads, device="cpu"):
    for g in grads:
        for p, gi in zip(params, g):
            p.grad = mod.tensor(gi, device=device)
        opt.step()


def _torch_run(cls, kw, n=10):
    ps = _params(torch)
    opt = getattr(torch.optim, cls)(ps, **kw)
    _steps(torch, opt, ps, _GRADS[:n])
    return ps, opt


@pytest.mark.parametrize("cls,kw", CASES, ids=[f"{c}-{i}" for i, (c, _) in enumerate(CASES)])
def test_matches_torch_and_state_dict_round_trip(cls, kw):
    ref, ref_opt = _torch_run(cls, kw)
    ps = _params(tk)
    opt = getattr(tk.optim, cls)(ps, **kw)
    _steps(tk, opt, ps, _GRADS)
    for a, b in zip(ps, ref):
        np.testing.assert_allclose(_np(a), _np(b), rtol=1e-5, atol=1e-6)

    # state_dict layout: 'state' keyed by parameter index, same state names and values as PyTorch's
    sd, ref_sd = opt.state_dict(), ref_opt.state_dict()
    assert sorted(sd["state"]) == sorted(ref_sd["state"]) == ([0, 1] if ref_sd["state"] else [])
    assert [g["params"] for g in sd["param_groups"]] == [g["params"] for g in ref_sd["param_groups"]]
    for i in sd["state"]:
        assert sorted(sd["state"][i]) == sorted(ref_sd["state"][i])
        for k, v in sd["state"][i].items():
            np.testing.assert_allclose(_np(v), _np(ref_sd["state"][i][k]), rtol=1e-5, atol=1e-6)
    for g, rg in zip(sd["param_groups"], ref_sd["param_groups"]):
        assert {k: g[k] for k in kw} == {k: rg[k] for k in kw}

    # round trip: 5 steps, save, load into a fresh optimizer over copies, 5 more == 10 steps straight
    ps = _params(tk)
    opt = getattr(tk.optim, cls)(ps, **kw)
    _steps(tk, opt, ps, _GRADS[:5])
    sd = opt.state_dict()
    ps2 = [tk.nn.Parameter(p.detach().clone()) for p in ps]
    opt2 = getattr(tk.optim, cls)(ps2, **kw)
    opt2.load_state_dict(sd)
    _steps(tk, opt, ps, [[g * 0 for g in gs] for gs in _GRADS[5:6]])  # the copy must not share state
    _steps(tk, opt2, ps2, _GRADS[5:])
    for a, b in zip(ps2, ref):
        np.testing.assert_allclose(_np(a), _np(b), rtol=1e-5, atol=1e-6)


def test_param_groups_and_missing_grads():
    kw = [dict(lr=0.1, momentum=0.9), dict(lr=0.01)]
    res = []
    for mod in (torch, tk):
        w, b, unused = _params(mod, _W0 + [_W0[1]])
        opt = mod.optim.SGD([{"params": [w], **kw[0]}, {"params": b, **kw[1]}])
        opt.add_param_group({"params": [unused]})
        _steps(mod, opt, [w, b], _GRADS[:4])
        res.append([_np(w), _np(b), _np(unused)])
        assert opt.param_groups[2]["lr"] == 1e-3 and opt.param_groups[2]["momentum"] == 0
        assert [g["params"] for g in opt.state_dict()["param_groups"]] == [[0], [1], [2]]
        assert sorted(opt.state_dict()["state"]) == [0]
    for a, b in zip(*res):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_zero_grad_and_closure():
    w = tk.nn.Parameter(tk.tensor([1.0, -2.0]))
    opt = tk.optim.SGD([w], lr=0.5)

    def closure():
        opt.zero_grad()
        loss = (w * w).sum()
        loss.backward()
        return loss

    assert float(opt.step(closure)) == 5.0
    np.testing.assert_allclose(_np(w), [0.0, 0.0])
    assert w.requires_grad and w.grad is not None
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(_np(w.grad), [0.0, 0.0])
    opt.zero_grad()
    assert w.grad is None


@pytest.mark.parametrize("search", [None, "strong_wolfe"])
def test_lbfgs_matches_torch(search):
    # Rosenbrock from (-1.5, 2): far from converged after 3 x 5 iterations, so float32 noise
    # near the minimum cannot decide the line search's path
    res = []
    for mod in (torch, tk):
        w, = _params(mod, [np.array([-1.5, 2.0], np.float32)])
        opt = mod.optim.LBFGS([w], lr=1 if search else 0.1, max_iter=5, history_size=4, line_search_fn=search)

        def closure():
            opt.zero_grad()
            loss = (1 - w[0]) ** 2 + 100 * (w[1] - w[0] ** 2) ** 2
            loss.backward()
            return loss

        losses = [float(opt.step(closure).detach()) for _ in range(3)]
        res.append((losses, _np(w), opt.state_dict()["state"][0]["func_evals"]))
    (l0, w0, n0), (l1, w1, n1) = res
    np.testing.assert_allclose(l1, l0, rtol=1e-4)
    np.testing.assert_allclose(w1, w0, rtol=1e-4, atol=1e-5)
    assert n1 == n0


ERRORS = [
    ("SGD", dict(lr=-0.1)), ("SGD", dict(lr=0.1, momentum=-1)), ("SGD", dict(lr=0.1, nesterov=True)),
    ("SGD", dict(lr=0.1, weight_decay=-1)), ("Adam", dict(lr=-1)), ("Adam", dict(betas=(1.0, 0.9))),
    ("Adam", dict(betas=(0.9, -0.1))), ("AdamW", dict(eps=-1)), ("Adagrad", dict(lr_decay=-1)),
    ("RMSprop", dict(alpha=-1)), ("Adadelta", dict(rho=1.5)), ("LBFGS", dict(lr=-1)),
]


@pytest.mark.parametrize("cls,kw", ERRORS)
def test_errors_match_torch(cls, kw):
    with pytest.raises(ValueError) as ref:
        getattr(torch.optim, cls)(_params(torch), **kw)
    with pytest.raises(ValueError) as err:
        getattr(tk.optim, cls)(_params(tk), **kw)
    assert str(err.value) == str(ref.value)


def test_param_errors():
    with pytest.raises(ValueError, match="empty parameter list"):
        tk.optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match="iterable of Tensors"):
        tk.optim.SGD(tk.zeros(2), lr=0.1)
    w = tk.nn.Parameter(tk.zeros(2))
    with pytest.raises(ValueError, match="can't optimize a non-leaf Tensor"):
        tk.optim.SGD([w * 2], lr=0.1)
    opt = tk.optim.SGD([w], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [w]})
    with pytest.raises(ValueError, match="different number of parameter groups"):
        opt.load_state_dict({"state": {}, "param_groups": []})


SCHEDULERS = [
    ("StepLR", dict(step_size=4, gamma=0.5)),
    ("MultiStepLR", dict(milestones=[3, 7, 7, 20], gamma=0.3)),
    ("ExponentialLR", dict(gamma=0.9)),
    ("CosineAnnealingLR", dict(T_max=7, eta_min=0.001)),
    ("LambdaLR", dict(lr_lambda=lambda e: 0.95 ** e + 0.01 * e)),
    ("LinearLR", dict(start_factor=0.2, end_factor=0.9, total_iters=8)),
    ("MultiplicativeLR", dict(lr_lambda=lambda e: 0.9 if e % 2 else 1.05)),
    ("ConstantLR", dict(factor=0.25, total_iters=6)),
    ("PolynomialLR", dict(total_iters=20, power=2.0)),
    ("CosineAnnealingWarmRestarts", dict(T_0=4, T_mult=2, eta_min=0.01)),
    ("OneCycleLR", dict(max_lr=[0.5, 0.2], total_steps=31, pct_start=0.25)),
    ("OneCycleLR", dict(max_lr=0.5, total_steps=31, anneal_strategy="linear", three_phase=True)),
]


def _sched_run(mod, name, kw, n=30, split=None, opt_cls="SGD"):
    ps = _params(mod)
    okw = dict(lr=0.1, momentum=0.9) if opt_cls == "SGD" else dict(lr=0.1)
    opt = getattr(mod.optim, opt_cls)([{"params": [ps[0]]}, {"params": [ps[1]], "lr": 0.05}], **okw)
    make = getattr(mod.optim.lr_scheduler, name)
    sched = make(opt, **kw)
    momenta = lambda: [g.get("momentum", g.get("betas", (0,))[0]) for g in opt.param_groups]  # noqa: E731
    out = [list(sched.get_last_lr()) + momenta()]
    for i in range(n):
        opt.step()
        if i == split:  # continue with a fresh optimizer and scheduler loaded from state_dicts
            opt_sd, sd = opt.state_dict(), sched.state_dict()
            opt = getattr(mod.optim, opt_cls)([{"params": [ps[0]]}, {"params": [ps[1]]}], **okw)
            opt.load_state_dict(opt_sd)
            sched = make(opt, **{**kw, "last_epoch": sd["last_epoch"]}) if name != "OneCycleLR" else \
                make(opt, **kw, last_epoch=sd["last_epoch"])
            sched.load_state_dict(sd)
        sched.step()
        out.append(list(sched.get_last_lr()) + momenta())
    return out


@pytest.mark.parametrize("name,kw", SCHEDULERS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(SCHEDULERS)])
def test_scheduler_matches_torch(name, kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt_cls = "Adam" if name == "OneCycleLR" and "three_phase" in kw else "SGD"
        ref = _sched_run(torch, name, kw, opt_cls=opt_cls)
        got = _sched_run(tk, name, kw, opt_cls=opt_cls)
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=0)
        np.testing.assert_allclose(_sched_run(tk, name, kw, split=12, opt_cls=opt_cls), ref, rtol=1e-12, atol=0)


def _lr_sequence(mod, make, steps: int, split: int | None = None) -> list:
    """The lr before and after each of ``steps`` scheduler steps; at step ``split`` the scheduler
    is rebuilt and resumed from its state_dict."""
    opt = mod.optim.SGD(_params(mod), lr=0.1)
    S = mod.optim.lr_scheduler
    sched = make(S, opt)
    out = [sched.get_last_lr()[0]]
    for i in range(steps):
        opt.step()
        if i == split:
            sd = sched.state_dict()
            sched = make(S, opt)
            sched.load_state_dict(sd)
        sched.step()
        out.append(sched.get_last_lr()[0])
    return out


@pytest.mark.parametrize("make, steps", [
    (lambda S, o: S.SequentialLR(o, [S.LinearLR(o, start_factor=0.1, total_iters=5), S.ExponentialLR(o, gamma=0.9),
                                     S.StepLR(o, 3, 0.5)], milestones=[5, 12]), 30),
    (lambda S, o: S.ChainedScheduler([S.ConstantLR(o, factor=0.5, total_iters=4), S.ExponentialLR(o, gamma=0.9)]), 20),
], ids=["SequentialLR", "ChainedScheduler"])
def test_composite_schedulers_match_torch(make, steps):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = _lr_sequence(torch, make, steps)
        # resuming this way (a new scheduler on the live optimizer, then its state_dict) is what
        # PyTorch's state_dict gives: the new scheduler's constructor steps the lr once more
        ref_resumed = _lr_sequence(torch, make, steps, split=steps // 2)
    np.testing.assert_allclose(_lr_sequence(tk, make, steps), ref, rtol=1e-12)
    np.testing.assert_allclose(_lr_sequence(tk, make, steps, split=steps // 2), ref_resumed, rtol=1e-12)


def test_closed_form_epochs_match_torch():
    def run(mod):
        opt = mod.optim.SGD(_params(mod), lr=0.1)
        S = mod.optim.lr_scheduler
        out = []
        for sched in (S.StepLR(opt, 3, 0.5), S.CosineAnnealingWarmRestarts(opt, T_0=3, T_mult=2)):
            for e in (5, 2, 7.5, 11, 0):
                sched.step(e)
                out.append(sched.get_last_lr()[0])
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = run(torch)
        got = run(tk)
    np.testing.assert_allclose(got, ref, rtol=1e-12)


def test_reduce_lr_on_plateau_matches_torch():
    metrics = [1.0, 0.9, 0.9, 0.95, 0.91, 0.9, 0.8, 0.8, 0.8, 0.8, 0.8, 0.7] + [0.7] * 18

    def run(mod, **kw):
        opt = mod.optim.SGD(_params(mod), lr=0.1)
        sched = mod.optim.lr_scheduler.ReduceLROnPlateau(opt, **kw)
        out = []
        for m in metrics:
            sched.step(m)
            out.append(sched.get_last_lr()[0])
        return out, sched.state_dict()["num_bad_epochs"]
    for kw in (dict(patience=2), dict(mode="max", patience=1, cooldown=2, factor=0.5, min_lr=0.02),
               dict(threshold_mode="abs", threshold=0.05, patience=1)):
        assert run(tk, **kw) == run(torch, **kw)
    with pytest.raises(ValueError, match="Factor should be < 1.0."):
        tk.optim.lr_scheduler.ReduceLROnPlateau(tk.optim.SGD(_params(tk), lr=0.1), factor=1.0)


@pytest.mark.parametrize("cls,kw", [("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1)),
                                    ("Adam", dict(lr=0.01, amsgrad=True)), ("AdamW", dict(lr=0.01))])
def test_cuda(cls, kw):
    ref, _ = _torch_run(cls, kw, n=3)
    ps = _params(tk, device="cuda")
    opt = getattr(tk.optim, cls)(ps, **kw)
    _steps(tk, opt, ps, _GRADS[:3], device="cuda")
    for a, b in zip(ps, ref):
        assert a.device.type == "cuda"
        np.testing.assert_allclose(_np(a.cpu()), _np(b), rtol=1e-5, atol=1e-6)
    cpu_opt = getattr(tk.optim, cls)(_params(tk), **kw)
    cpu_opt.load_state_dict(opt.state_dict())  # cuda state moves to the parameters' device
    assert all(v.device.type == "cpu" for s in cpu_opt.state.values() for v in s.values())


@pytest.mark.parametrize("cls,kw", [("SGD", dict(lr=0.1, momentum=0.9, dampening=0.2, maximize=True)),
                                    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.1))])
def test_cuda_fused_one_launch_per_group(cls, kw, monkeypatch):
    from tensorkit.kernels import optim as K
    launches = []
    real = K.launch
    monkeypatch.setattr(K, "launch", lambda *a, **k: (launches.append(a[0]), real(*a, **k)))
    values = [_RNG.standard_normal(s).astype(np.float32) for s in [(3, 4), (1500,), (2, 3, 5)]]  # 1500: 2 chunks
    grads = [[_RNG.standard_normal(v.shape).astype(np.float32) for v in values] for _ in range(3)]
    res = []
    for mod, dev, extra in [(torch, "cpu", {}), (tk, "cuda", {}), (tk, "cuda", {"fused": False})]:
        ps = _params(mod, values, device=dev)
        opt = getattr(mod.optim, cls)(ps, **kw, **extra)
        _steps(mod, opt, ps, grads, device=dev)
        res.append([_np(p.cpu()) for p in ps])
    assert len(launches) == 3      # one per step for the whole group; none with fused=False
    for a, b, c in zip(*res):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(c, a, rtol=1e-5, atol=1e-6)


def test_fused_step_bumps_versions():
    """The one-launch update writes parameters in place like any in-place op: a graph that saved a
    parameter before the step refuses to backward through it afterwards."""
    w = tk.nn.Parameter(tk.ones(4, device="cuda"))
    loss = (w * w).sum()                       # mul saves w
    w.grad = tk.ones(4, device="cuda")
    before = w._version
    tk.optim.SGD([w], lr=0.1).step()           # fused on cuda
    assert w._version > before
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_fused_tables_follow_moved_gradients():
    """The pointer table is reused while the addresses stay, rebuilt when a gradient moves; the chunk
    table lists every BLOCK-element chunk of every parameter."""
    from tensorkit.kernels import optim as K
    chunks = K._chunk_table((3, 2 * K.BLOCK + 1, K.BLOCK), "cpu")
    assert _np(chunks).tolist() == [[0, 0], [1, 0], [1, K.BLOCK], [1, 2 * K.BLOCK], [2, 0]]
    w = tk.nn.Parameter(tk.zeros(1500, device="cuda"))
    opt = tk.optim.SGD([w], lr=1.0)
    grads = [tk.full((1500,), float(k), device="cuda") for k in (1, 2, 3)]
    w.grad = grads[0]
    opt.step()
    table = K._TABLES[next(k for k in K._TABLES if k[1][0] == w.data_ptr())]
    opt.step()                                   # same addresses: the same device table
    assert K._TABLES[next(k for k in K._TABLES if k[1][0] == w.data_ptr())] is table
    w.grad = grads[2]                            # a gradient at another address
    opt.step()
    np.testing.assert_array_equal(_np(w.cpu()), np.full(1500, -5.0, np.float32))
