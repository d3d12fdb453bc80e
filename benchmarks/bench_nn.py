"""nn benchmarks on the GPU: tensorkit vs PyTorch on the same GPU, in one process (issue 5).

Sections:

- conv2d (this file): ResNet-50's layer shapes at batch 32 (3x3 convolutions at 56x56x64,
  28x28x128, 14x14x256, 7x7x512; the 1x1 projections 56x56 64->256 and 28x28 256->512 with
  stride 2), forward and forward+backward (input and weight gradients), bfloat16, float16
  and float32: tensorkit's Triton implicit-GEMM kernels vs cuDNN. float32 is exact on both
  sides (tensorkit's default; ``torch.backends.cudnn.allow_tf32 = False``), a TF32 row per
  shape shows both with TF32 allowed. Target: tk/torch <= 1.5.
- further sections come from the modules in ``SECTION_MODULES`` (each has
  ``run_sections(tk, torch, quick) -> [(title, note, markdown)]``): normalization, losses,
  embedding and attention live in ``bench_nn_norm.py``; whole-model sections go the same way.

Every case is checked against PyTorch before it is timed (a mismatch or an error is a row
that says so, not a time). The first tensorkit call of a shape autotunes its kernels (the
choice is cached on disk); timing starts after it. Times are medians of
``triton.testing.do_bench`` (CUDA events, L2 flushed between runs).

Without a GPU the suite says it skipped; ``smoke()`` runs the conv section's code path
(checks and table) on the CPU at tiny sizes, so this file is tested without one.
"""
from __future__ import annotations

import importlib
import os
import time

import numpy as np

import common
from bench_gpu import _first_line, _gpu  # the same GPU check and error rows as the GPU suite

TITLE = "tensorkit nn benchmarks (GPU)"
TARGET = 1.5
BATCH = 32
# name, input (C, H, W), output channels, kernel, stride, padding
CONV_SHAPES = [
    ("3x3 56x56x64", (64, 56, 56), 64, 3, 1, 1),
    ("3x3 28x28x128", (128, 28, 28), 128, 3, 1, 1),
    ("3x3 14x14x256", (256, 14, 14), 256, 3, 1, 1),
    ("3x3 7x7x512", (512, 7, 7), 512, 3, 1, 1),
    ("1x1 56x56 64->256", (64, 56, 56), 256, 1, 1, 0),
    ("1x1 28x28 256->512 /2", (256, 28, 28), 512, 1, 2, 0),
]
CONV_DTYPES = ["bfloat16", "float16", "float32"]
# max |tk - torch| / max |torch|: one rounding of the output in half precision; float32 sums
# of up to 4608 products in different orders; TF32 keeps 10 mantissa bits
CONV_TOL = {"bfloat16": 2e-2, "float16": 4e-3, "float32": 1e-4, "tf32": 1e-2}
SECTION_MODULES = ["bench_nn_norm", "bench_nn_models"]


def versions() -> dict[str, str]:
    out = {}
    try:
        import triton
        out["triton"] = triton.__version__
        import torch
        out["torch"] = torch.__version__
        if torch.cuda.is_available():
            out["GPU"] = torch.cuda.get_device_name()
            out["cuDNN"] = str(torch.backends.cudnn.version())
    except ImportError:
        pass
    return out


def _rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))


def _np(t):
    """A tensorkit or torch tensor's values as a float64 numpy array."""
    if type(t).__module__.startswith("torch"):
        return t.detach().float().cpu().numpy()
    return t.detach().cpu().float().numpy()


class _Env:
    """The two libraries on one device and a timer: ``do_bench`` on a GPU, ``common.measure``
    on the CPU (smoke runs)."""

    def __init__(self, tk, torch, device: str, quick: bool):
        self.tk, self.torch, self.device = tk, torch, device
        self.rng = np.random.default_rng(0)
        if device == "cuda":
            import triton.testing

            from tensorkit.kernels import _driver
            _driver.ensure_driver()          # do_bench times through tensorkit's driver (tk.cuda events)
            rep = 40 if quick else 200
            self.time = lambda fn: triton.testing.do_bench(fn, warmup=10, rep=rep, return_mode="median") * 1e-3
        else:
            self.time = lambda fn: common.measure({"f": fn}, budget_s=0.05 if quick else 0.3)["f"]

    def pair(self, data: np.ndarray, dtype: str, grad: bool = False):
        """The same values as a tensorkit and a torch tensor of ``dtype`` on the device."""
        tk, torch = self.tk, self.torch
        t = tk.tensor(data, device=self.device).to(getattr(tk, dtype))
        p = torch.from_numpy(data).to(self.device).to(getattr(torch, dtype))
        if grad:
            t.requires_grad_()
            p.requires_grad_()
        return t, p


def _conv_cases(env: _Env, shapes, dtypes, batch: int, rows: list, notes: list) -> None:
    tk, torch = env.tk, env.torch
    F, TF = tk.nn.functional, torch.nn.functional
    for name, (C, H, W), O, k, stride, pad in shapes:
        x_np = env.rng.standard_normal((batch, C, H, W), dtype=np.float32)
        w_np = (env.rng.standard_normal((O, C, k, k), dtype=np.float32) / np.sqrt(C * k * k)).astype(np.float32)
        for dtype in dtypes + (["tf32"] if "float32" in dtypes else []):
            tf32 = dtype == "tf32"
            real = "float32" if tf32 else dtype
            tk.set_float32_matmul_precision("high" if tf32 else "highest")
            torch.backends.cudnn.allow_tf32 = tf32
            torch.backends.cuda.matmul.allow_tf32 = tf32
            try:
                x, px = env.pair(x_np, real, grad=True)
                w, pw = env.pair(w_np, real, grad=True)
                y_shape = tuple(TF.conv2d(px.detach(), pw.detach(), stride=stride, padding=pad).shape)
                g, pg = env.pair(env.rng.standard_normal(y_shape, dtype=np.float32), real)
                fwd = lambda: F.conv2d(x, w, stride=stride, padding=pad)
                tfwd = lambda: TF.conv2d(px, pw, stride=stride, padding=pad)
                both = lambda: tk.autograd.grad(fwd(), (x, w), g)
                tboth = lambda: torch.autograd.grad(tfwd(), (px, pw), pg)
                for what, tk_fn, torch_fn in (("forward", fwd, tfwd), ("forward+backward", both, tboth)):
                    _conv_row(env, f"{name}", dtype, what, tk_fn, torch_fn, rows, notes)
                del x, px, w, pw, g, pg
            except Exception as e:  # noqa: BLE001  (out of memory etc.: a row, not a crash)
                notes.append(f"- {name} {dtype}: {_first_line(e)}")
            finally:
                tk.set_float32_matmul_precision("highest")
                torch.backends.cudnn.allow_tf32 = True
                torch.backends.cuda.matmul.allow_tf32 = False


def _conv_row(env: _Env, name, dtype, what, tk_fn, torch_fn, rows, notes) -> None:
    torch_s = env.time(torch_fn)
    try:
        got, want = tk_fn(), torch_fn()            # the first tensorkit call also tunes the kernels
        got = got if isinstance(got, tuple) else (got,)
        want = want if isinstance(want, tuple) else (want,)
        errs = [_rel_err(_np(a), _np(b)) for a, b in zip(got, want)]
        if max(errs) > CONV_TOL[dtype]:
            raise AssertionError(f"relative error {max(errs):.2g} > {CONV_TOL[dtype]:.2g} "
                                 f"(output, grads: {', '.join(f'{e:.1g}' for e in errs)})")
        tk_s = env.time(tk_fn)
    except Exception as e:  # noqa: BLE001  (a missing kernel or a wrong answer is a row, not a crash)
        notes.append(f"- {name} {dtype} {what}: {_first_line(e)}")
        tk_s = None
    ratio = None if tk_s is None else tk_s / torch_s
    status = "failed" if ratio is None else ("met" if ratio <= TARGET else "missed")
    rows.append([name, dtype, what, common.fmt_time(tk_s), common.fmt_time(torch_s), common.fmt_ratio(tk_s, torch_s),
                 f"<= {TARGET}", status])
    common.log_row(rows[-1])


def conv_section(env: _Env, shapes=CONV_SHAPES, dtypes=CONV_DTYPES, batch: int = BATCH) -> str:
    rows, notes = [], []
    _conv_cases(env, shapes, dtypes, batch, rows, notes)
    body = common.table(["shape (batch %d)" % batch, "dtype", "pass", "tk ms", "torch ms", "tk/torch", "target",
                         "status"], rows)
    return body + ("\n\nNot timed:\n" + "\n".join(notes) if notes else "")


def _conv_dtypes() -> list[str]:
    """CONV_DTYPES, or TK_BENCH_CONV_DTYPES=bfloat16,float16 (a run that stays inside a time limit
    while the first run of each dtype tunes)."""
    pick = [w.strip() for w in os.environ.get("TK_BENCH_CONV_DTYPES", "").split(",") if w.strip()]
    unknown = set(pick) - set(CONV_DTYPES)
    if unknown:
        raise ValueError(f"TK_BENCH_CONV_DTYPES: unknown {sorted(unknown)}; choose from {CONV_DTYPES}")
    return pick or CONV_DTYPES


def _other_sections(tk, torch, quick: bool, names=SECTION_MODULES) -> list[tuple[str, str, str]]:
    """The sections of ``names`` (each optional: a missing module is skipped)."""
    out = []
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        try:
            out += module.run_sections(tk, torch, quick)
        except Exception as e:  # noqa: BLE001
            out.append((name, "", f"section module failed: {_first_line(e)}"))
    return out


def run(quick: bool = False) -> str:
    """The whole nn suite as markdown (without the machine header; run.py adds it)."""
    env = _gpu()
    if env is None:
        return "Skipped: needs a real CUDA GPU usable by both tensorkit and PyTorch (not the emulated device)."
    tk, torch = env
    # TK_BENCH_SECTIONS=conv: this file's conv section only; =other: only SECTION_MODULES' sections
    only = set(common.bench_sections())
    sections = []
    if not only or "conv" in only:
        start = time.perf_counter()
        sections.append(("conv2d (ResNet-50 layers)",
                         "Forward+backward: input and weight gradients from one forward. float32: exact on both sides "
                         "(cuDNN with allow_tf32=False); tf32 rows: both with TF32 allowed. The first run tunes "
                         "tensorkit's tile configs (minutes; cached on disk for later runs).",
                         conv_section(_Env(tk, torch, "cuda", quick), dtypes=_conv_dtypes())))
        common.log(f"conv2d section: {time.perf_counter() - start:.0f} s")
    # =other: every SECTION_MODULES section; =norm, =models: bench_nn_norm's, bench_nn_models' alone
    picked = [m for m in SECTION_MODULES if not only or "other" in only or m.removeprefix("bench_nn_") in only]
    sections += _other_sections(tk, torch, quick, picked)
    return "\n\n".join(f"## {title}\n\n" + (f"{note}\n\n" if note else "") + body for title, note, body in sections)


def smoke() -> str:
    """The conv section on the CPU at tiny sizes (tensorkit's Numba path vs PyTorch's CPU
    kernels): the same checks and table, for testing this file without a GPU."""
    import torch

    import tensorkit as tk
    shapes = [(n, (c // 16, h // 8, w // 8), o // 16, k, s, p) for n, (c, h, w), o, k, s, p in CONV_SHAPES[:1] + CONV_SHAPES[-1:]]
    return conv_section(_Env(tk, torch, "cpu", quick=True), shapes, ["float32"], batch=2)


if __name__ == "__main__":
    print(run() if _gpu() else smoke())
