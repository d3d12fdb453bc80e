"""Attention against PyTorch: scaled_dot_product_attention (masks, causal, scale), and
MultiheadAttention / TransformerEncoderLayer / TransformerEncoder with PyTorch's weights
loaded by state-dict key (outputs, attention weights, gradients)."""
from __future__ import annotations

import numpy as np
import pytest

import tensorkit as tk
from tensorkit.testing.compare import assert_close

torch = pytest.importorskip("torch")
F = tk.nn.functional


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("case", ["plain", "causal", "bool mask", "float mask", "scale", "gqa"])
def test_sdpa_matches_torch(case, device):
    rng = np.random.default_rng(0)
    q, k, v = rng.standard_normal((2, 2, 3, 4)), rng.standard_normal((2, 2, 5, 4)), rng.standard_normal((2, 2, 5, 3))
    kw, tkw = {}, {}
    if case == "causal":
        kw = tkw = {"is_causal": True}
    elif case == "bool mask":
        m = rng.random((3, 5)) < 0.6
        m[1] = False                            # a query that may attend to nothing: zeros (safe softmax)
        kw, tkw = {"attn_mask": tk.tensor(m, device=device)}, {"attn_mask": torch.tensor(m)}
    elif case == "float mask":
        m = rng.standard_normal((2, 1, 3, 5))
        kw, tkw = {"attn_mask": tk.tensor(m, device=device)}, {"attn_mask": torch.tensor(m)}
    elif case == "scale":
        kw = tkw = {"scale": 0.3}
    elif case == "gqa":                         # one key/value head serves both query heads
        k, v = k[:, :1], v[:, :1]
        kw = tkw = {"enable_gqa": True}
    ts = [torch.tensor(a, requires_grad=True) for a in (q, k, v)]
    ot = torch.nn.functional.scaled_dot_product_attention(*ts, **tkw)
    ot.backward(torch.tensor(np.cos(np.arange(ot.numel())).reshape(ot.shape)))
    xs = [tk.tensor(a, device=device, requires_grad=True) for a in (q, k, v)]
    o = F.scaled_dot_product_attention(*xs, **kw)
    o.backward(tk.tensor(np.cos(np.arange(ot.numel())).reshape(ot.shape), device=device))
    assert_close(o.cpu(), ot.detach().numpy(), msg=case)
    for name, x, t in zip("qkv", xs, ts):
        assert_close(x.grad.cpu(), t.grad.numpy(), msg=f"{case}: gradient of {name}")


@pytest.mark.parametrize("dtype,causal,shape,tiles", [
    ("float16", True, (2, 2, 20, 9, 12), None), ("float32", False, (1, 3, 5, 7, 16), None),
    ("bfloat16", False, (1, 2, 5, 7, 16), None), ("float32", True, (1, 1, 40, 37, 16), 16)])
def test_flash_attention_path_matches_torch(monkeypatch, dtype, causal, shape, tiles):
    """On the GPU, unmasked / causal attention runs the fused kernels, forward and backward (head
    dim and lengths not multiples of the tiles; ``tiles``: 16 x 16 tiles, so the loops over key
    and query blocks and the causal bounds run several steps). With create_graph the gradients
    come from the composite, differentiable twice."""
    from tensorkit import _dispatch
    from tensorkit.kernels import attention as gpu_attention
    from tensorkit.ops import attention
    calls = []
    monkeypatch.setattr(attention, "flash_attention", lambda *a: calls.append("fwd") or _original_flash(*a))
    key = ("flash_attention_backward", "cuda", getattr(tk, dtype))
    bwd = _dispatch.KERNELS[key]
    monkeypatch.setitem(_dispatch.KERNELS, key, lambda *a: calls.append("bwd") or bwd(*a))
    if tiles:
        monkeypatch.setattr(gpu_attention, "_tiles", lambda dt, d: (tiles, tiles, 4, 1))
        monkeypatch.setattr(gpu_attention, "_bwd_tiles", lambda dt, d: (tiles, tiles, 4, 1))
    b, h, lq, s, d = shape
    rng = np.random.default_rng(0)
    arrays = rng.standard_normal((b, h, lq, d)), rng.standard_normal((b, h, s, d)), rng.standard_normal((b, h, s, d))
    ts = [torch.tensor(a, dtype=torch.float32, requires_grad=True) for a in arrays]
    scores = ts[0] @ ts[1].transpose(-2, -1) / np.sqrt(d)      # torch's CPU kernel has no double backward
    if causal:
        scores = scores.masked_fill(torch.ones(lq, s, dtype=torch.bool).triu(1), -np.inf)
    ot = scores.softmax(-1) @ ts[2]
    gt = torch.autograd.grad((ot * ot.detach().cos()).sum(), ts, create_graph=True)
    sum((g * g).sum() for g in gt).backward()
    xs = [tk.tensor(a, device="cuda").to(getattr(tk, dtype)).requires_grad_() for a in arrays]
    o = F.scaled_dot_product_attention(*xs, is_causal=causal)
    tol = {"float16": {"rtol": 2e-3, "atol": 2e-3}, "bfloat16": {"rtol": 2e-2, "atol": 2e-2}}.get(dtype, {})
    assert_close(o.detach().cpu().float(), ot.detach().numpy(), **tol, msg="flash forward")
    g = tk.autograd.grad((o * o.detach().cos()).sum(), xs, retain_graph=True)
    assert calls == ["fwd", "bwd"], f"fused kernels used: {calls}"
    for name, a, e in zip("qkv", g, gt):
        assert_close(a.cpu().float(), e.detach().numpy(), **tol, msg=f"gradient of {name}")
    if dtype == "float32" and not tiles:
        g = tk.autograd.grad((o * o.detach().cos()).sum(), xs, create_graph=True)
        sum((t * t).sum() for t in g).backward()
        for name, x, t in zip("qkv", xs, ts):
            assert_close(x.grad.cpu(), t.grad.numpy(), rtol=1e-4, atol=1e-4, msg=f"second-order gradient of {name}")


from tensorkit.ops.attention import flash_attention as _original_flash  # noqa: E402


def test_sdpa_dropout_and_errors():
    x = tk.ones(2, 8, 4)
    out = F.scaled_dot_product_attention(x, x, x, dropout_p=0.5)
    assert (out.numpy() != 1).any()                      # dropped and rescaled weights
    assert_close(F.scaled_dot_product_attention(x, x, x, dropout_p=0.0), np.ones((2, 8, 4)))
    with pytest.raises(RuntimeError, match=r"query \[\.\.\., L, E\] \[2, 8, 4\], key \[\.\.\., S, E\] \[2, 8, 3\]"):
        F.scaled_dot_product_attention(x, tk.ones(2, 8, 3), x)


def _mha_pair(**kw):
    torch.manual_seed(0)
    theirs = torch.nn.MultiheadAttention(8, 2, **kw).double()
    ours = tk.nn.MultiheadAttention(8, 2, **kw)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict({k: tk.tensor(v.numpy()) for k, v in theirs.state_dict().items()})
    return ours.double(), theirs


@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")   # torch's, on the mixed masks case
@pytest.mark.parametrize("case", ["self", "cross, batch_first", "masks", "per-head weights", "unbatched", "kdim"])
def test_multihead_attention_matches_torch(case):
    rng = np.random.default_rng(0)
    kw = {"batch_first": True} if "batch_first" in case else ({"kdim": 6, "vdim": 5} if case == "kdim" else {})
    ours, theirs = _mha_pair(**kw)
    lq, s, n = 3, 4, 2
    shape = lambda length, e=8: ((n, length, e) if kw.get("batch_first") else (length, n, e))
    if case == "self":
        q = rng.standard_normal(shape(s))
        k = v = q
        s = lq = 4
    elif case == "unbatched":
        q, k, v = rng.standard_normal((lq, 8)), rng.standard_normal((s, 8)), rng.standard_normal((s, 8))
    else:
        q, k, v = rng.standard_normal(shape(lq)), rng.standard_normal(shape(s, kw.get("kdim", 8))), \
            rng.standard_normal(shape(s, kw.get("vdim", 8)))
    call = {}
    if case == "masks":
        call = {"key_padding_mask": np.array([[False, False, True, False], [False, True, True, False]]),
                "attn_mask": rng.standard_normal((lq, s))}
    if case == "per-head weights":
        call = {"average_attn_weights": False, "attn_mask": np.triu(np.ones((lq, s), bool), 1)}
    ts = [torch.tensor(a, requires_grad=True) for a in (q, k, v)]
    ot, wt = theirs(*ts, **{key: torch.tensor(m) for key, m in call.items() if not isinstance(m, bool)},
                    **{key: m for key, m in call.items() if isinstance(m, bool)})
    xs = [tk.tensor(a, requires_grad=True) for a in (q, k, v)]
    o, w = ours(*xs, **{key: tk.tensor(m) for key, m in call.items() if not isinstance(m, bool)},
                **{key: m for key, m in call.items() if isinstance(m, bool)})
    assert_close(o, ot.detach().numpy(), msg=f"{case}: output")
    assert_close(w, wt.detach().numpy(), msg=f"{case}: weights")
    (ot.sum() + (wt * wt).sum()).backward()
    (o.sum() + (w * w).sum()).backward()
    theirs_p = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        assert_close(p.grad, theirs_p[name].grad.numpy(), msg=f"{case}: gradient of {name}")
    for x, t in zip(xs, ts):
        if t.grad is not None:
            assert_close(x.grad, t.grad.numpy(), msg=f"{case}: input gradient")


@pytest.mark.parametrize("norm_first,activation", [(False, "relu"), (True, "gelu")])
def test_transformer_encoder_matches_torch(norm_first, activation):
    torch.manual_seed(0)
    kw = dict(d_model=8, nhead=2, dim_feedforward=16, dropout=0.1, activation=activation, batch_first=True,
              norm_first=norm_first)
    theirs = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(**kw), num_layers=2,
                                         norm=torch.nn.LayerNorm(8), enable_nested_tensor=False).double()
    ours = tk.nn.TransformerEncoder(tk.nn.TransformerEncoderLayer(**kw), num_layers=2, norm=tk.nn.LayerNorm(8))
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict({k: tk.tensor(v.numpy()) for k, v in theirs.state_dict().items()})
    ours.double()
    ours.eval()
    theirs.eval()                                   # eval: dropout off, both deterministic
    x = np.random.default_rng(0).standard_normal((2, 5, 8))
    pad = np.array([[False] * 5, [False, False, False, True, True]])
    xt = torch.tensor(x, requires_grad=True)
    ot = theirs(xt, src_key_padding_mask=torch.tensor(pad))
    xk = tk.tensor(x, requires_grad=True)
    o = ours(xk, src_key_padding_mask=tk.tensor(pad))
    keep = ~pad                                     # PyTorch's fast path may zero padded positions
    assert_close(tk.tensor(o.detach().numpy()[keep]), ot.detach().numpy()[keep], msg="encoder output")
    # gradients: torch's training path (its eval fast path does not record a graph)
    theirs.train()
    ours.train()
    for m in list(theirs.modules()) + list(ours.modules()):
        if hasattr(m, "p"):
            m.p = 0.0
        if isinstance(m, (torch.nn.MultiheadAttention, tk.nn.MultiheadAttention)):
            m.dropout = 0.0
    ot = theirs(xt, mask=torch.nn.Transformer.generate_square_subsequent_mask(5, dtype=torch.float64))
    (ot * ot).sum().backward()
    o = ours(xk, mask=tk.tensor(torch.nn.Transformer.generate_square_subsequent_mask(5, dtype=torch.float64).numpy()))
    (o * o).sum().backward()
    assert_close(o, ot.detach().numpy(), msg="causal output")
    assert_close(xk.grad, xt.grad.numpy(), msg="input gradient")
    theirs_p = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        assert_close(p.grad, theirs_p[name].grad.numpy(), msg=f"gradient of {name}")


def test_bad_input_names_shapes():
    mha = tk.nn.MultiheadAttention(8, 2)
    x = tk.randn(3, 2, 8)
    with pytest.raises(RuntimeError, match=r"expected query with embed_dim 8 \(last dim\), got \[3, 2, 6\]"):
        mha(tk.randn(3, 2, 6), x, x)
    with pytest.raises(RuntimeError, match=r"key_padding_mask of shape \[2, 3\], got \[3, 2\]"):
        mha(x, x, x, key_padding_mask=tk.zeros(3, 2, dtype=tk.bool))
    with pytest.raises(RuntimeError, match=r"2D attn_mask is \[2, 2\], but should be \[3, 3\]"):
        mha(x, x, x, attn_mask=tk.zeros(2, 2))
    with pytest.raises(ValueError, match=r"embed_dim \(8\) must be a positive multiple of num_heads \(3\)"):
        tk.nn.MultiheadAttention(8, 3)
