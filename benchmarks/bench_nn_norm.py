"""GPU benchmark sections for normalization, fused losses, embedding and attention
(``bench_nn.py`` includes them): tensorkit vs PyTorch on the same GPU, issue 5's targets
(time ratio <= 1.2).

- layer_norm forward and forward+backward, (32768, 1024) bf16 and (8192, 4096) f32;
- batch_norm (training: batch statistics, running statistics updated) forward and forward+backward
  at ResNet-18's first and third stage shapes, [128, 64, 32, 32] and [128, 256, 8, 8], f32, and
  bf16 input with f32 weight / bias / running statistics (as autocast runs it);
- softmax + cross-entropy from logits, forward and forward+backward, (8192, 32000) f32 and bf16
  (tensorkit's fused primitive, ``ops.norm.cross_entropy``, vs ``torch.nn.functional.cross_entropy``);
- embedding forward+backward, 50257 x 768 f32, 8192 lookups;
- scaled_dot_product_attention, batch 8, 16 heads, seq 1024, head dim 64, bf16/fp16, causal and
  not, forward and forward+backward (tensorkit: fused flash forward and backward kernels).

Every case is checked against PyTorch before it is timed (a mismatch is a row with the
error, not a time). Times: ``triton.testing.do_bench`` medians.
"""
from __future__ import annotations

import numpy as np

import common
from bench_gpu import _first_line

TARGET = 1.2
LN_CASES = [((32768, 1024), "bfloat16"), ((8192, 4096), "float32")]
BN_CASES = [((128, 64, 32, 32), "float32"), ((128, 64, 32, 32), "bfloat16"), ((128, 256, 8, 8), "float32"),
            ((128, 256, 8, 8), "bfloat16")]
CE_SHAPE = (8192, 32000)
EMB_SHAPE = (50257, 768, 8192)                  # vocabulary, dim, lookups
ATTN_SHAPE = (8, 16, 1024, 64)                  # batch, heads, seq, head dim


def _np(t):
    t = t.detach() if hasattr(t, "detach") else t
    return t.cpu().float().numpy().astype(np.float64) if hasattr(t, "float") else np.asarray(t, np.float64)


def _row(b, name: str, shape: str, tk_fn, torch_fn, check, rows: list, notes: list) -> None:
    """Check (``check()`` compares the two results), then time both; a failure is a row."""
    common.log(f"nn {name} {shape}")
    torch_s = b.time(torch_fn)
    try:
        check()
    except Exception as e:  # noqa: BLE001  (a missing kernel or a wrong answer is a row, not a crash)
        notes.append(f"- {name} {shape}: {_first_line(e)}")
        rows.append([name, shape, "—", common.fmt_time(torch_s), "—", f"<= {TARGET}", "missed (failed)"])
        return
    tk_s = b.time(tk_fn)
    rows.append([name, shape, common.fmt_time(tk_s), common.fmt_time(torch_s), common.fmt_ratio(tk_s, torch_s),
                 f"<= {TARGET}", "met" if tk_s / torch_s <= TARGET else "missed"])


def _close(name, got, want, rtol, atol):
    common.check_close(name, _np(got), _np(want), rtol=rtol, atol=atol)


def _layer_norm(b, rows, notes) -> None:
    tk, torch = b.tk, b.torch
    for (m, n), dtype in LN_CASES:
        shape = f"({m}, {n}) {dtype}"
        tol = 2e-2 if dtype == "bfloat16" else 1e-4
        x, px = b.pair(b.rng.standard_normal((m, n), dtype=np.float32), dtype, grad=True)
        w, pw = b.pair(b.rng.standard_normal(n, dtype=np.float32), dtype, grad=True)
        bias, pb = b.pair(b.rng.standard_normal(n, dtype=np.float32), dtype, grad=True)
        g, pg = b.pair(b.rng.standard_normal((m, n), dtype=np.float32), dtype)
        fwd = lambda: tk.nn.functional.layer_norm(x, (n,), w, bias)
        tfwd = lambda: torch.nn.functional.layer_norm(px, (n,), pw, pb)
        _norm_rows(b, "layer_norm", shape, fwd, tfwd, (x, w, bias), (px, pw, pb), g, pg, tol, rows, notes)


def _norm_rows(b, name, shape, fwd, tfwd, inputs, tinputs, g, pg, tol, rows, notes, extra_check=None) -> None:
    """The forward row and the forward+backward row of an affine norm: output, then the
    gradients of (input, weight, bias), each within ``tol`` of its largest magnitude."""
    tk, torch = b.tk, b.torch
    with tk.no_grad(), torch.no_grad():
        _row(b, f"{name} forward", shape, fwd, tfwd, lambda: _close(name, fwd(), tfwd(), tol, tol), rows, notes)

    def both():
        return tk.autograd.grad(fwd(), inputs, g)

    def tboth():
        return torch.autograd.grad(tfwd(), tinputs, pg)

    def check():
        for a, e, what in zip(both(), tboth(), ("dx", "dweight", "dbias")):
            _close(f"{name} {what}", a, e, tol, tol * float(np.abs(_np(e)).max()))
        if extra_check is not None:
            extra_check()
    _row(b, f"{name} forward+backward", shape, both, tboth, check, rows, notes)


def _batch_norm(b, rows, notes) -> None:
    tk, torch = b.tk, b.torch
    for shape, dtype in BN_CASES:
        c = shape[1]
        label = f"{list(shape)} {dtype}" + (" (f32 params)" if dtype != "float32" else "")
        tol = 3e-2 if dtype == "bfloat16" else 1e-4
        x, px = b.pair(b.rng.standard_normal(shape, dtype=np.float32) * 2 + 1, dtype, grad=True)
        w, pw = b.pair(b.rng.standard_normal(c, dtype=np.float32), "float32", grad=True)
        bias, pb = b.pair(b.rng.standard_normal(c, dtype=np.float32), "float32", grad=True)
        rm, prm = b.pair(np.zeros(c, np.float32), "float32")
        rv, prv = b.pair(np.ones(c, np.float32), "float32")
        g, pg = b.pair(b.rng.standard_normal(shape, dtype=np.float32), dtype)
        fwd = lambda: tk.nn.functional.batch_norm(x, rm, rv, w, bias, True)
        tfwd = lambda: torch.nn.functional.batch_norm(px, prm, prv, pw, pb, True)
        _norm_rows(b, "batch_norm", label, fwd, tfwd, (x, w, bias), (px, pw, pb), g, pg, tol, rows, notes,
                   lambda: _close("batch_norm running_var", rv, prv, 1e-4, 1e-4))


def _cross_entropy(b, rows, notes) -> None:
    tk, torch = b.tk, b.torch
    from tensorkit.ops.norm import cross_entropy
    m, c = CE_SHAPE
    for dtype in ("float32", "bfloat16"):
        shape = f"({m}, {c}) {dtype}"
        x, px = b.pair(b.rng.standard_normal((m, c), dtype=np.float32), dtype, grad=True)
        t, pt = b.pair(b.rng.integers(0, c, m), "int64")
        tol = 1e-2 if dtype == "bfloat16" else 1e-5
        fwd = lambda: cross_entropy(x, t)
        tfwd = lambda: torch.nn.functional.cross_entropy(px, pt)
        with tk.no_grad(), torch.no_grad():
            _row(b, "cross_entropy forward", shape, fwd, tfwd, lambda: _close("ce", fwd(), tfwd(), tol, tol),
                 rows, notes)
        both = lambda: tk.autograd.grad(fwd(), (x,))
        tboth = lambda: torch.autograd.grad(tfwd(), (px,))
        _row(b, "cross_entropy forward+backward", shape, both, tboth,
             lambda: _close("ce dx", both()[0], tboth()[0], tol, tol / m), rows, notes)


def _embedding(b, rows, notes) -> None:
    tk, torch = b.tk, b.torch
    vocab, dim, n = EMB_SHAPE
    w, pw = b.pair(b.rng.standard_normal((vocab, dim), dtype=np.float32), "float32", grad=True)
    idx, pidx = b.pair(b.rng.integers(0, vocab, n), "int64")
    g, pg = b.pair(b.rng.standard_normal((n, dim), dtype=np.float32), "float32")
    fwd = lambda: tk.nn.functional.embedding(idx, w)
    tfwd = lambda: torch.nn.functional.embedding(pidx, pw)
    shape = f"{vocab} x {dim} f32, {n} lookups"
    with tk.no_grad(), torch.no_grad():
        _row(b, "embedding forward", shape, fwd, tfwd, lambda: _close("emb", fwd(), tfwd(), 0, 0), rows, notes)
    both = lambda: tk.autograd.grad(fwd(), (w,), g)
    tboth = lambda: torch.autograd.grad(tfwd(), (pw,), pg)
    _row(b, "embedding forward+backward", shape, both, tboth,
         lambda: _close("emb dweight", both()[0], tboth()[0], 1e-5, 1e-4), rows, notes)


def _attention(b, rows, notes) -> None:
    tk, torch = b.tk, b.torch
    batch, heads, seq, hd = ATTN_SHAPE
    for dtype in ("bfloat16", "float16"):
        q, pq = b.pair(b.rng.standard_normal((batch, heads, seq, hd), dtype=np.float32), dtype, grad=True)
        k, pk = b.pair(b.rng.standard_normal((batch, heads, seq, hd), dtype=np.float32), dtype, grad=True)
        v, pv = b.pair(b.rng.standard_normal((batch, heads, seq, hd), dtype=np.float32), dtype, grad=True)
        g, pg = b.pair(b.rng.standard_normal((batch, heads, seq, hd), dtype=np.float32), dtype)
        tol = 2e-2
        for causal in (False, True):
            shape = f"{batch}x{heads}x{seq}x{hd} {dtype}{' causal' if causal else ''}"
            fwd = lambda: tk.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
            tfwd = lambda: torch.nn.functional.scaled_dot_product_attention(pq, pk, pv, is_causal=causal)
            with tk.no_grad(), torch.no_grad():
                _row(b, "sdpa forward", shape, fwd, tfwd, lambda: _close("sdpa", fwd(), tfwd(), tol, tol), rows, notes)
            both = lambda: tk.autograd.grad(fwd(), (q, k, v), g)
            tboth = lambda: torch.autograd.grad(tfwd(), (pq, pk, pv), pg)

            def check():
                for a, e, what in zip(both(), tboth(), "qkv"):
                    _close(f"sdpa d{what}", a, e, 5e-2, 5e-2 * float(np.abs(_np(e)).max()))
            _row(b, "sdpa forward+backward", shape, both, tboth, check, rows, notes)
            del fwd, tfwd


def run_sections(tk, torch, quick: bool = False, device: str = "cuda") -> list[tuple[str, str, str]]:
    """[(title, note, markdown table)] of the norm / loss / embedding / attention sections
    (``bench_nn._Env`` times them: do_bench on a GPU)."""
    from bench_nn import _Env
    b = _Env(tk, torch, device, quick)
    out = []
    for title, note, fn in [
            ("Layer norm", "Fused forward; backward one pass plus the dweight/dbias partial-sum reduction.", _layer_norm),
            ("Batch norm", "Training mode. tensorkit: fused statistics pass, per-channel finalize (running statistics "
                           "updated on the device), apply pass; backward the same three launches.", _batch_norm),
            ("Softmax + cross-entropy", "tensorkit's fused primitive (ops.norm.cross_entropy), mean reduction.",
             _cross_entropy),
            ("Embedding", "", _embedding),
            ("Attention", "PyTorch: its flash / memory-efficient kernels. tensorkit: its Triton flash-attention "
                          "forward and backward kernels.", _attention)]:
        rows, notes = [], []
        try:
            fn(b, rows, notes)
        except Exception as e:  # noqa: BLE001  (e.g. out of memory: the section reports it)
            notes.append(f"- section failed: {_first_line(e)}")
        body = common.table(["op", "shape", "tk ms", "torch ms", "tk/torch", "target", "status"], rows)
        out.append((title, note, body + ("\n\nNot timed:\n" + "\n".join(notes) if notes else "")))
    return out
