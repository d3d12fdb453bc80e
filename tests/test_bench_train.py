"""The training benchmark (benchmarks/bench_train.py) at tiny sizes on the CPU: its checks against
PyTorch pass on correct code and catch a wrong update (the second check step is what catches a
wrong momentum), the optimizer-step check passes and sees tensorkit's fused path on the (emulated)
cuda device, the tables come out with a "not timed" note instead of a time for a row that fails,
and the digits model mirrors tutorial 3's."""
import importlib.util
import os
import pathlib
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tensorkit as tk  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
try:
    import bench_train as B  # noqa: E402
finally:
    sys.path.pop(0)

TINY = {m[0]: m[1:] for m in B.TINY_MODELS}      # name -> (builder, config, batch, input shape)


def _case(name, opt, amp=False):
    builder, cfg, batch, in_shape = TINY[name]
    return B.TrainCase(tk, torch, builder, cfg, batch, in_shape, opt, amp, "cpu")


@pytest.mark.parametrize("opt", sorted(B.OPTIMIZERS))
@pytest.mark.parametrize("name", sorted(TINY))
def test_training_step_check_passes(name, opt):
    path = _case(name, opt).check()
    assert path.startswith("op by op")         # no fused kernel on the CPU; the path is reported


@pytest.mark.parametrize("change", [("lr", 0.0101), ("momentum", 0.8)])
def test_training_step_check_catches_a_wrong_update(change):
    """A 1% wrong learning rate fails at the first step; a wrong momentum only at the second (the
    first step's buffer is the gradient itself)."""
    case = _case("digits CNN", "SGD")
    case.tk_opt.param_groups[0][change[0]] = change[1]
    with pytest.raises(AssertionError, match=f"step {1 if change[0] == 'lr' else 2} .*updated weight"):
        case.check()


def test_training_step_check_catches_a_wrong_gradient(monkeypatch):
    import bench_nn_models
    monkeypatch.setattr(bench_nn_models, "GRAD_TOL", -1.0)
    monkeypatch.setattr(bench_nn_models, "GRAD_VS_TORCH", -1.0)
    with pytest.raises(AssertionError, match="grad: relative L2 error"):
        _case("digits CNN", "Adam").check()


@pytest.mark.parametrize("label, opt, torch_kw", B.OPT_ROWS)
def test_optimizer_check_passes(label, opt, torch_kw):
    assert B.OptCase(tk, torch, opt, torch_kw, B.TINY_SIZES, "cpu").check().startswith("op by op")


@pytest.mark.skipif(not tk.cuda.is_available(), reason="needs tensorkit's cuda device (real or emulated)")
@pytest.mark.parametrize("opt", sorted(B.OPTIMIZERS))
def test_optimizer_check_sees_the_fused_path(opt):
    """tensorkit on cuda (emulated in CI: the same fused Triton kernel, interpreted), torch on the
    CPU: the parameters agree and the path says one fused launch per step."""
    case = B.OptCase(tk, torch, opt, {}, [10, 300, 4160], "cpu", tk_device="cuda")
    assert case.check() == "fused (1 launch/step)"


def test_optimizer_check_catches_a_wrong_update():
    """Adam's first update does not depend on beta2 (bias correction cancels it): the second does."""
    case = B.OptCase(tk, torch, "Adam", {}, B.TINY_SIZES, "cpu")
    case.tk_opt.param_groups[0]["betas"] = (0.9, 0.99)
    with pytest.raises(AssertionError, match="step 2 .*updated weight"):
        case.check()


def test_param_sizes():
    sizes = B.param_sizes()
    assert len(sizes) == 100 and min(sizes) == 10 and max(sizes) == 1_000_000 and sizes == B.param_sizes()
    assert all(int(np.prod(B._shape(n))) == n for n in sizes)


def test_smoke_tables():
    """Every section's table on the CPU: float32 rows timed; an autocast row is timed or a "not
    timed" note with the reason (e.g. while tk.autocast does not exist); no section fails."""
    text = B.smoke(budget=0.0)
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| ")]
    train = [[c.strip() for c in r] for r in rows if len(r) == 12 and r[0].strip() in TINY]
    assert len(train) == len(TINY) * len(B.OPTIMIZERS) * 2, text
    for r in train:
        if r[3] == "float32":
            assert r[-1] in ("met", "missed"), text
        elif r[-1] == "failed":
            assert f"{r[0]} {r[1]} {r[2]} bf16 autocast: not timed: " in text, text
    if not hasattr(tk, "autocast"):
        assert "not timed: AttributeError: module 'tensorkit' has no attribute 'autocast'" in text
    opt = [[c.strip() for c in r] for r in rows if len(r) == 7 and r[0].strip() in {o[0] for o in B.OPT_ROWS}]
    assert len(opt) == len(B.OPT_ROWS) and all(r[-1] in ("met", "missed") for r in opt), text
    assert "| pageable, .to() | 0 " in text and "| pageable, .to() | 2 " in text, text
    if not torch.cuda.is_available():
        assert B.run(quick=True).startswith("Skipped")


def test_digits_model_mirrors_the_tutorial():
    """The same state-dict keys and shapes as tutorial 3's DigitsCNN (and in both libraries)."""
    pt_sd = B.digits_cnn(torch, **B.DIGITS).state_dict()
    tk_sd = B.digits_cnn(tk, **B.DIGITS).state_dict()
    shapes = {k: tuple(v.shape) for k, v in pt_sd.items()}
    assert {k: tuple(v.shape) for k, v in tk_sd.items()} == shapes
    path = ROOT / "tutorials" / "03_digits_cnn.py"
    if not path.exists():
        pytest.skip("tutorials/03_digits_cnn.py not there")
    spec = importlib.util.spec_from_file_location("_tutorial_03", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)                      # training runs only under __main__
    assert {k: tuple(v.shape) for k, v in mod.DigitsCNN().state_dict().items()} == shapes


def test_suite_is_registered():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import run
    finally:
        sys.path.pop(0)
    assert run.SUITES["train"] is B
    assert os.path.basename(B.__file__) == "bench_train.py"
