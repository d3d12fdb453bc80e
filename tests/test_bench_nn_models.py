"""The whole-model benchmark's models (benchmarks/bench_nn_models.py) at tiny sizes on the CPU:
each is built with tensorkit and with PyTorch, PyTorch's weights are copied into tensorkit's by
state-dict key, and one step's loss and every parameter gradient must match. This tests the
state-dict key compatibility and the layers together (conv, pooling, BatchNorm, dropout,
embedding, LSTM, attention, LayerNorm, the losses); the section's table code runs too."""
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tensorkit as tk  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
try:
    import bench_nn_models as M  # noqa: E402
finally:
    sys.path.pop(0)

TINY = {
    "mnist": (dict(c1=4, c2=6, hidden=8, size=12), {}),
    "resnet": (dict(width=4, blocks=(1, 1, 1, 1), size=16), {}),
    "lstm": (dict(ntoken=50, ninp=12, nhid=10, nlayers=2, dropout=0.5), dict(seq=5)),
    "transformer": (dict(d_model=16, nhead=2, dim_feedforward=24, num_layers=2, dropout=0.1), dict(seq=6)),
}


@pytest.mark.parametrize("kind", sorted(TINY))
def test_model_matches_torch(kind):
    cfg, kw = TINY[kind]
    checked = M.smoke_check(tk, torch, kind, cfg, batch=2, **kw)
    case = M.Case(tk, torch, kind, cfg, 2, kw.get("seq"), "cpu")
    assert list(case.tk_model.state_dict()) == list(case.pt_model.state_dict())
    assert checked == list(dict(case.pt_model.named_parameters()))       # every gradient was compared


def test_resnet_running_stats_match_torch():
    """A train-mode step updates BatchNorm's running statistics as PyTorch's does."""
    cfg, _ = TINY["resnet"]
    case = M.Case(tk, torch, "resnet", cfg, 2, None, "cpu")
    case.check()
    tk_sd, pt_sd = case.tk_model.state_dict(), case.pt_model.state_dict()
    for key in [k for k in pt_sd if "running" in k or "num_batches" in k]:
        np.testing.assert_allclose(tk_sd[key].numpy(), pt_sd[key].numpy(), rtol=1e-4, atol=1e-6, err_msg=key)


def test_full_size_state_dict_keys_and_shapes():
    """At the benchmark's sizes (built on the CPU, no step): the same keys and shapes, so the GPU
    run's by-key copy works."""
    for kind, cfg in [("mnist", M.MNIST), ("resnet", M.RESNET), ("lstm", M.LSTM_LM), ("transformer", M.TRANSFORMER)]:
        tk_sd = M.BUILDERS[kind](tk, **cfg).state_dict()
        pt_sd = M.BUILDERS[kind](torch, **cfg).state_dict()
        assert {k: tuple(v.shape) for k, v in tk_sd.items()} == {k: tuple(v.shape) for k, v in pt_sd.items()}


def test_section_smoke_and_not_timed(monkeypatch):
    """The section's table on the CPU at tiny sizes: rows with times; a model that fails its check
    is a "Not timed" note with the error and no time."""
    models = [(kind, kind, TINY[kind][0], 2, TINY[kind][1].get("seq"), "tiny") for kind in ("mnist", "lstm")]
    text = M.models_section(tk, torch, quick=True, models=models, device="cpu")
    rows = [line for line in text.splitlines() if line.startswith("| mnist") or line.startswith("| lstm")]
    assert len(rows) == 2 and "Not timed" not in text, text
    monkeypatch.setattr(M, "GRAD_TOL", -1.0)                     # every gradient check fails
    monkeypatch.setattr(M, "GRAD_VS_TORCH", -1.0)
    text = M.models_section(tk, torch, quick=True, models=models[:1], device="cpu")
    assert "Not timed" in text and "- mnist: AssertionError: mnist " in text and "failed" in text, text
    if not torch.cuda.is_available():
        assert M.run_sections(tk, torch, quick=True)[0][2] == "skipped: no GPU"


def test_check_grad_judges_against_float64():
    """A gradient passes within GRAD_TOL of the float64 reference (relative L2), or within
    GRAD_VS_TORCH times torch's own error; a 2% error where torch is exact fails and names both."""
    ref = np.linspace(-1.0, 1.0, 101)
    M.check_grad("g", ref * (1 + 5e-3), ref, ref)                              # within GRAD_TOL
    M.check_grad("g", ref * (1 + 4e-2), ref * (1 + 2e-2), ref)                 # 2x torch's error
    spike = ref.copy()
    spike[50] += 0.05                                                          # one element 5% of max off
    M.check_grad("g", spike, ref, ref)                                         # L2: 0.86%
    with pytest.raises(AssertionError, match=r"g: relative L2 error vs float64 0.02 .*torch float32: 0;"):
        M.check_grad("g", ref * (1 + 2e-2), ref, ref)
    with pytest.raises(AssertionError, match="shape"):
        M.check_grad("g", ref[:3], ref, ref)
    with pytest.raises(AssertionError, match="L2 error"):
        M.check_grad("g", ref * np.nan, ref, ref)                              # NaN never passes


def test_no_dropout_sets_every_rate_to_zero_and_restores_it():
    model = M.lstm_lm(tk, ntoken=20, ninp=6, nhid=6, nlayers=2, dropout=0.5)
    with M.no_dropout(model):
        assert model.drop.p == 0.0 and model.rnn.dropout == 0.0
    assert model.drop.p == 0.5 and model.rnn.dropout == 0.5
