"""GPU benchmarks: tensorkit vs PyTorch on the same GPU, in one process.

Sections (the issue's list):

- ceilings: a large device-to-device copy (GB/s, bytes read + written) and PyTorch's bf16
  matmul rate; every other row is set against them;
- pointwise on 256 MiB float32 operands (add, mul, exp, a 3-input where), contiguous and
  broadcast: time ratio and achieved GB/s as a share of the copy bandwidth;
- reductions on (16384, 4096) float32: full sum, row sum, column sum, softmax, log_softmax;
- matmul: bf16 / fp16 at 4096^3 and 8192x8192x1024, fp32 in TF32 mode and exact, small shapes;
- eager overhead: a 16-element add in a loop, microseconds per op.

Times are medians of ``triton.testing.do_bench`` (CUDA events, L2 flushed between runs)
through tensorkit's own Triton driver, so both libraries are timed by the same events on
the same (legacy default) stream. Every result is checked against PyTorch's before it is
timed; a case that raises or disagrees is reported, not timed. Inputs are random.
"""
from __future__ import annotations

import time

import numpy as np

import common

TITLE = "tensorkit GPU benchmarks"
POINTWISE_BYTES = 256 << 20                 # per float32 operand
RED_SHAPE = (16384, 4096)
TINY = 16


def _gpu():
    """(tk, torch) when a real GPU is usable by both, else None."""
    try:
        import torch

        import tensorkit as tk
    except ImportError:
        return None
    if not torch.cuda.is_available() or tk.cuda.EMULATED or not tk.cuda.is_available():
        return None
    return tk, torch


def versions() -> dict[str, str]:
    out = {}
    try:
        import triton
        out["triton"] = triton.__version__
        import cuda.core
        import torch
        out.update({"cuda-core": cuda.core.__version__, "torch": torch.__version__})
        if torch.cuda.is_available():
            out["GPU"] = torch.cuda.get_device_name()
    except ImportError:
        pass
    return out


def _first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


class _Bench:
    def __init__(self, tk, torch, quick: bool):
        import triton.testing

        from tensorkit.kernels import _driver
        _driver.ensure_driver()             # do_bench times through tensorkit's driver (tk.cuda events)
        self.tk, self.torch, self.do_bench = tk, torch, triton.testing.do_bench
        self.rep = 40 if quick else 200
        self.rng = np.random.default_rng(0)

    def time(self, fn) -> float:
        """Median seconds per call."""
        return self.do_bench(fn, warmup=10, rep=self.rep, return_mode="median") * 1e-3

    def pair(self, data: np.ndarray, dtype: str = "float32"):
        """The same values as a tensorkit and a torch CUDA tensor of ``dtype``."""
        tk, torch = self.tk, self.torch
        t = tk.tensor(data, device="cuda").to(getattr(tk, dtype))
        p = torch.from_numpy(data).cuda().to(getattr(torch, dtype))
        return t, p

    def compare(self, name, tk_fn, torch_fn, rtol, atol):
        """(tk seconds, torch seconds, error text): tk is timed only when it matches torch."""
        torch_s = self.time(torch_fn)
        try:
            got = tk_fn()
            want = torch_fn()
            got = got.cpu().float().numpy() if got.dtype.itemsize == 2 and got.dtype.is_floating_point \
                else got.cpu().numpy()
            want = want.float().cpu().numpy()
            common.check_close(f"tk {name}", got.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=atol)
        except Exception as e:  # noqa: BLE001  (a missing kernel or a wrong answer is a row, not a crash)
            return None, torch_s, _first_line(e)
        return self.time(tk_fn), torch_s, None


def _status(ok: bool | None) -> str:
    return "missed (failed)" if ok is None else ("met" if ok else "missed")


def _ceilings(b: _Bench) -> tuple[float, float, str]:
    torch = b.torch
    n = 1 << 30                                              # 1 GiB of float32
    src = torch.rand(n // 4, device="cuda")
    dst = torch.empty_like(src)
    t = b.time(lambda: dst.copy_(src))
    copy_gbs = 2 * n / t / 1e9
    x = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    y = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    t = b.time(lambda: x @ y)
    mm_tflops = 2 * 8192 ** 3 / t / 1e12
    del src, dst, x, y
    rows = [["device-to-device copy (torch), 1 GiB", f"{copy_gbs:.0f} GB/s (read + written)"],
            ["bf16 matmul 8192^3 (torch)", f"{mm_tflops:.0f} TFLOP/s"]]
    return copy_gbs, mm_tflops, common.table(["ceiling", "measured"], rows)


def _pointwise(b: _Bench, copy_gbs: float) -> str:
    tk, torch = b.tk, b.torch
    n = POINTWISE_BYTES // 4
    cols = 4096
    a, pa = b.pair(b.rng.standard_normal(n, dtype=np.float32))
    c, pc = b.pair(b.rng.standard_normal(n, dtype=np.float32))
    m, pm = b.pair(b.rng.random(n) < 0.5, "bool")
    row, prow = b.pair(b.rng.standard_normal(cols, dtype=np.float32))
    a2, pa2 = a.view(n // cols, cols), pa.view(n // cols, cols)
    cases = [   # name, layout, tk fn, torch fn, bytes moved
        ("a + b", "contiguous", lambda: a + c, lambda: pa + pc, 3 * 4 * n),
        ("a * b", "contiguous", lambda: a * c, lambda: pa * pc, 3 * 4 * n),
        ("exp(a)", "contiguous", lambda: tk.exp(a), lambda: torch.exp(pa), 2 * 4 * n),
        ("where(m, a, b)", "contiguous", lambda: tk.where(m, a, c), lambda: torch.where(pm, pa, pc), 4 * 3 * n + n),
        ("a + row", f"({n // cols}, {cols}) + ({cols},)", lambda: a2 + row, lambda: pa2 + prow, 2 * 4 * n),
        ("a * row", f"({n // cols}, {cols}) * ({cols},)", lambda: a2 * row, lambda: pa2 * prow, 2 * 4 * n),
    ]
    rows, notes = [], []
    for name, layout, tk_fn, torch_fn, nbytes in cases:
        common.log(f"pointwise {name} ({layout})")
        tk_s, torch_s, err = b.compare(name, tk_fn, torch_fn, 1e-6, 1e-6)
        gbs = nbytes / tk_s / 1e9 if tk_s else None
        ok = None if tk_s is None else (tk_s <= torch_s and gbs >= 0.85 * copy_gbs)
        rows.append([name, layout, common.fmt_time(tk_s), common.fmt_time(torch_s), common.fmt_ratio(tk_s, torch_s),
                     f"{gbs:.0f}" if gbs else "—", f"{gbs / copy_gbs:.0%}" if gbs else "—",
                     "<= 1.0 and >= 85%", _status(ok)])
        if err:
            notes.append(f"- {name} ({layout}): {err}")
    out = common.table(["op", "layout (256 MiB f32 operands)", "tk ms", "torch ms", "tk/torch", "tk GB/s",
                        "of copy", "target", "status"], rows)
    return out + ("\n\nNot timed:\n" + "\n".join(notes) if notes else "")


def _reductions(b: _Bench) -> str:
    tk, torch = b.tk, b.torch
    data = b.rng.standard_normal(RED_SHAPE, dtype=np.float32)
    x, px = b.pair(data)
    full_atol = 1e-5 * float(np.abs(data).sum())
    row_atol = 1e-5 * float(np.abs(data).sum(axis=-1).max())
    col_atol = 1e-5 * float(np.abs(data).sum(axis=0).max())
    cases = [
        ("x.sum()", lambda: x.sum(), lambda: px.sum(), full_atol),
        ("x.sum(dim=-1)", lambda: x.sum(dim=-1), lambda: px.sum(dim=-1), row_atol),
        ("x.sum(dim=0)", lambda: x.sum(dim=0), lambda: px.sum(dim=0), col_atol),
        ("softmax(x, -1)", lambda: tk.softmax(x, -1), lambda: torch.softmax(px, -1), 1e-6),
        ("log_softmax(x, -1)", lambda: tk.log_softmax(x, -1), lambda: torch.log_softmax(px, -1), 1e-4),
    ]
    rows, notes = [], []
    nbytes = data.nbytes
    for name, tk_fn, torch_fn, atol in cases:
        common.log(f"reduction {name}")
        tk_s, torch_s, err = b.compare(name, tk_fn, torch_fn, 1e-4, atol)
        moved = nbytes * (2 if "softmax" in name else 1)
        rows.append([name, common.fmt_time(tk_s), common.fmt_time(torch_s), common.fmt_ratio(tk_s, torch_s),
                     f"{moved / tk_s / 1e9:.0f}" if tk_s else "—", f"{moved / torch_s / 1e9:.0f}", "<= 1.0",
                     _status(None if tk_s is None else tk_s <= torch_s)])
        if err:
            notes.append(f"- {name}: {err}")
    out = common.table(["op on (16384, 4096) f32", "tk ms", "torch ms", "tk/torch", "tk GB/s", "torch GB/s",
                        "target", "status"], rows)
    return out + ("\n\nNot timed:\n" + "\n".join(notes) if notes else "")


def _matmul(b: _Bench, mm_tflops: float) -> str:
    tk, torch = b.tk, b.torch
    cases = [   # (batch, m, n, k), dtype, tf32, target ratio
        ((1, 4096, 4096, 4096), "bfloat16", False, 1.1), ((1, 4096, 4096, 4096), "float16", False, 1.1),
        ((1, 8192, 8192, 1024), "bfloat16", False, 1.1), ((1, 8192, 8192, 1024), "float16", False, 1.1),
        ((1, 4096, 4096, 4096), "float32", True, 1.2), ((1, 4096, 4096, 4096), "float32", False, None),
        ((1, 64, 4096, 4096), "bfloat16", False, None), ((32, 128, 128, 128), "bfloat16", False, None),
        ((32, 128, 128, 128), "float32", False, None),
    ]
    rows, notes = [], []
    for (batch, m, n, k), dtype, tf32, target in cases:
        shape = (f"{batch}x" if batch > 1 else "") + f"{m}x{n}x{k}"
        label = f"{dtype}{' (TF32)' if tf32 else ''}"
        common.log(f"matmul {shape} {label}")
        lead = (batch,) if batch > 1 else ()
        x, px = b.pair(b.rng.standard_normal(lead + (m, k), dtype=np.float32), dtype)
        y, py = b.pair(b.rng.standard_normal(lead + (k, n), dtype=np.float32), dtype)
        torch.backends.cuda.matmul.allow_tf32 = tf32
        try:
            tk.backends.cuda.matmul.allow_tf32 = tf32
        except AttributeError as e:
            notes.append(f"- {shape} {label}: tk.backends.cuda.matmul.allow_tf32: {_first_line(e)}")
        # half inputs: both sum in fp32 but in different orders and round the result to the dtype
        rtol = {"bfloat16": 2e-2, "float16": 5e-3}.get(dtype, 5e-3 if tf32 else 1e-4)
        tk_s, torch_s, err = b.compare(f"{shape} {label}", lambda: x @ y, lambda: px @ py, rtol, rtol * np.sqrt(k))
        flops = 2 * batch * m * n * k
        status = "reported" if target is None else _status(None if tk_s is None else tk_s / torch_s <= target)
        rows.append([shape, label, common.fmt_time(tk_s), common.fmt_time(torch_s), common.fmt_ratio(tk_s, torch_s),
                     f"{flops / tk_s / 1e12:.0f}" if tk_s else "—", f"{flops / torch_s / 1e12:.0f}",
                     f"<= {target}" if target else "", status])
        if err:
            notes.append(f"- {shape} {label}: {err}")
    torch.backends.cuda.matmul.allow_tf32 = False
    if hasattr(tk, "backends"):
        tk.backends.cuda.matmul.allow_tf32 = False
    out = common.table(["m x n x k", "dtype", "tk ms", "torch ms", "tk/torch", "tk TFLOP/s", "torch TFLOP/s",
                        "target", "status"], rows)
    out += f"\n\nCeiling: PyTorch bf16 8192^3 at {mm_tflops:.0f} TFLOP/s."
    return out + ("\n\nNot timed:\n" + "\n".join(notes) if notes else "")


def _overhead(b: _Bench, quick: bool) -> str:
    """Host time per op for a 16-element add issued in a loop (the launch path, not the GPU)."""
    tk, torch = b.tk, b.torch
    a, pa = b.pair(b.rng.standard_normal(TINY, dtype=np.float32))
    c, pc = b.pair(b.rng.standard_normal(TINY, dtype=np.float32))
    rows = []
    for name, tk_fn, torch_fn in [("a + b", lambda: a + c, lambda: pa + pc),
                                  ("a.sum()", lambda: a.sum(), lambda: pa.sum())]:
        common.log(f"overhead {name}")
        per = {}
        for lib, fn in (("torch", torch_fn), ("tk", tk_fn)):
            try:
                fn()
            except Exception as e:  # noqa: BLE001
                per[lib] = _first_line(e)
                continue
            n = 2000 if quick else 20000
            best = float("inf")
            for _ in range(5):
                torch.cuda.synchronize()
                tk.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(n):
                    fn()
                torch.cuda.synchronize()
                tk.cuda.synchronize()
                best = min(best, (time.perf_counter() - t0) / n)
            per[lib] = best
        tk_t, torch_t = per.get("tk"), per.get("torch")
        ok = isinstance(tk_t, float) and tk_t <= 2 * torch_t
        rows.append([name, f"{TINY} f32", common.fmt_time(tk_t, "us") if isinstance(tk_t, float) else tk_t,
                     common.fmt_time(torch_t, "us"),
                     common.fmt_ratio(tk_t, torch_t) if isinstance(tk_t, float) else "—", "<= 2x torch",
                     _status(ok if isinstance(tk_t, float) else None)])
    return common.table(["op", "size", "tk us/op", "torch us/op", "tk/torch", "target", "status"], rows)


def run(quick: bool = False) -> str:
    """The whole GPU suite as markdown (without the machine header; run.py adds it)."""
    env = _gpu()
    if env is None:
        return "Skipped: needs a real CUDA GPU usable by both tensorkit and PyTorch (not the emulated device)."
    b = _Bench(*env, quick)
    copy_gbs, mm_tflops, ceilings = _ceilings(b)
    sections = [("Ceilings", "", lambda: ceilings),
                ("Pointwise", "GB/s counts bytes read + written once each.", lambda: _pointwise(b, copy_gbs)),
                ("Reductions", "", lambda: _reductions(b)),
                ("Matmul", "", lambda: _matmul(b, mm_tflops)),
                ("Eager overhead", "Host time per op in a loop of issued ops, synchronised at the end (best of 5).",
                 lambda: _overhead(b, quick))]
    # TK_BENCH_SECTIONS=matmul,reductions: a partial run while working on one kernel family
    only = common.bench_sections()
    sections = [(t, note, fn()) for t, note, fn in sections if not only or t.lower().split()[0] in only + ["ceilings"]]
    return "\n\n".join(f"## {title}\n\n" + (f"{note}\n\n" if note else "") + body for title, note, body in sections)
