"""Training benchmarks (issue 6): whole training steps and optimizer steps, tensorkit vs PyTorch
eager on the same GPU in one process, as ratios; and DataLoader throughput to the GPU.

Sections:

- **Training step**: forward, loss (cross-entropy), ``optimizer.zero_grad()``, ``loss.backward()``,
  ``optimizer.step()``, in train mode, of

  - the digits CNN of tutorial 3 (``tutorials/03_digits_cnn.py``'s ``DigitsCNN``; ``digits_cnn``
    mirrors it, same layers and state-dict keys): conv 1->32 3x3 pad 1, BatchNorm, relu, conv
    32->64 3x3 pad 1, relu, max_pool 2, dropout 0.25, linear 1024->128, relu, linear 128->10, on
    sklearn's 8x8 digits shape (random data of shape (N, 1, 8, 8)), batch 64 and 512;
  - ResNet-18 for 32x32 inputs (``bench_nn_models.resnet18``), batch 128;

  each with SGD (lr 0.01, momentum 0.9, weight_decay 5e-4) and Adam (lr 1e-3), both libraries'
  defaults otherwise (on cuda: tensorkit's fused multi-tensor update, torch's foreach
  implementation), each in float32 (TF32 off on both sides: exact float32 matmuls and convolutions)
  and with bf16 autocast around forward and loss
  (``with lib.autocast(device_type="cuda", dtype=lib.bfloat16)``). Target: tk/torch <= 1.5
  (issue 5's model target).
- **Optimizer step alone**: ``optimizer.step()`` over 100 float32 parameters of mixed sizes (a
  reproducible log-uniform mix from 10 to 1M elements, 13.8M in all), gradients set: SGD (momentum
  0.9, weight_decay 5e-4) and Adam, both libraries' defaults (torch: foreach on cuda), and torch
  ``fused=True`` as extra rows. Target: tk/torch <= 1.0. The "tk path" column says whether
  tensorkit took its fused multi-tensor update (``ops.optim.fused_sgd_`` / ``fused_adam_``: one
  launch per parameter group when every tensor is a contiguous float32 cuda tensor), counted by a
  dispatcher observer during the check step.
- **DataLoader**: ``bench_data``'s CPU throughput table (called, not copied), and batches moved to
  the GPU: pageable ``.to("cuda")`` vs ``pin_memory=True`` with ``.to("cuda", non_blocking=True)``,
  0 and 2 workers.

Every row is checked against PyTorch before it is timed; a failed check (or an error) is a
"Not timed" note with the reason, never a time. Float32 training rows: both models get the same
weights (copied by state-dict key) and data; two steps in train mode (BatchNorm with batch
statistics) with dropout's rate set to 0 must give the same loss and every parameter gradient
must pass ``bench_nn_models.check_grad`` against a float64 run of the torch model (relative L2
error within its ``GRAD_TOL``, or at most a few times torch's own float32 error; the scale at
least ``GRAD_FLOOR`` of the model's largest gradient element per element: a bias followed by
BatchNorm has a zero gradient made of rounding noise); each step's optimizer
update is then taken from PyTorch's gradients (copied into tensorkit's) and the updated weights
must agree within ``WEIGHT_TOL`` of the largest update plus a few float32 ulps. (Taking the
update from the same gradients isolates the optimizer: Adam divides each gradient element by its
own magnitude, so a rounding-level difference in a near-zero gradient would otherwise become an
lr-sized weight difference.) Autocast rows: both libraries' logits must be bfloat16 and the losses agree within
``AMP_LOSS_RTOL``; if ``tk.autocast`` is missing the row says so. Optimizer rows: two steps from
the same parameters and gradients must give the same parameters (same tolerance).

Times are medians of CUDA-synchronised wall-clock calls (``bench_autograd._time``); a training
step's peak memory is ``max_memory_allocated`` over one step after ``reset_peak_memory_stats``
(weights, gradients, optimizer state and activations), each library's own counter. tensorkit's
first step of a shape tunes its conv kernels (cached on disk); timing starts after a warm-up step.

Run: ``python benchmarks/run.py --suite train [--quick] [--save]``. Without a GPU the suite says it
skipped; ``smoke()`` (``tests/test_bench_train.py``) runs every check and the tables on the CPU
at tiny sizes.
"""
from __future__ import annotations

import contextlib
import os
import time

import numpy as np

import bench_data
import common
from bench_autograd import _time                      # CUDA-synchronised wall-clock medians
from bench_gpu import _first_line, _gpu
from bench_nn import versions                         # noqa: F401  (run.py's suite interface)
from bench_nn_models import RESNET, _mib, _peak_mib, _tf32, check_grad, no_dropout, reference_grads, resnet18

TITLE = "tensorkit training benchmarks (GPU)"
STEP_TARGET = 1.5
OPT_TARGET = 1.0
DIGITS = dict(c1=32, c2=64, hidden=128, size=8, dropout=0.25)
OPTIMIZERS = {"SGD": dict(lr=0.01, momentum=0.9, weight_decay=5e-4), "Adam": dict(lr=1e-3)}
LOSS_RTOL = 1e-4          # loss: float32 sums in different orders
GRAD_FLOOR = 1e-3         # a gradient's error is measured against at least this much of the model's largest element
WEIGHT_TOL = 1e-4         # updated weights: of the largest update of the tensor, plus ULPS float32 ulps
ULPS = 4
AMP_LOSS_RTOL = 3e-2      # bf16 autocast: each library rounds its own intermediates to 8 mantissa bits
CHECK_STEPS = 2           # the second step exercises momentum buffers and Adam's running moments


# ---- the models ------------------------------------------------------------------------------------------------
def digits_cnn(lib, c1=32, c2=64, hidden=128, size=8, dropout=0.25, num_classes=10):
    """Tutorial 3's ``DigitsCNN`` for sklearn's 8x8 digits (mirrors ``tutorials/03_digits_cnn.py``,
    same layers and state-dict keys): conv 3x3 pad 1, BatchNorm, relu, conv 3x3 pad 1, relu, 2x2
    max pool, dropout, linear, relu, linear to 10 classes."""
    nn, F = lib.nn, lib.nn.functional

    class DigitsCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, c1, kernel_size=3, padding=1)
            self.bn1 = nn.BatchNorm2d(c1)
            self.conv2 = nn.Conv2d(c1, c2, kernel_size=3, padding=1)
            self.pool = nn.MaxPool2d(2)
            self.dropout = nn.Dropout(dropout)
            self.fc1 = nn.Linear(c2 * (size // 2) ** 2, hidden)
            self.fc2 = nn.Linear(hidden, num_classes)

        def forward(self, x):
            x = F.relu(self.bn1(self.conv1(x)))
            x = self.dropout(self.pool(F.relu(self.conv2(x))))
            x = F.relu(self.fc1(x.flatten(1)))
            return self.fc2(x)

    return DigitsCNN()


# name, builder, config, batch, input shape (C, H, W)
MODELS = [
    ("digits CNN", digits_cnn, DIGITS, 64, (1, 8, 8)),
    ("digits CNN", digits_cnn, DIGITS, 512, (1, 8, 8)),
    ("ResNet-18 (32x32)", resnet18, RESNET, 128, (3, 32, 32)),
]


# ---- helpers shared by the sections -------------------------------------------------------------------------------
def _np64(t) -> np.ndarray:
    return t.detach().cpu().float().numpy().astype(np.float64)


def _check_weights(what: str, got, want, before) -> None:
    """``got`` (tensorkit) and ``want`` (torch) parameters after an update from ``before`` (numpy)
    agree element by element within WEIGHT_TOL of the largest update plus ULPS ulps."""
    g, w = _np64(got), _np64(want)
    if g.shape != w.shape:
        raise AssertionError(f"{what}: shape {g.shape}, expected {w.shape}")
    update = float(np.max(np.abs(w - before))) if w.size else 0.0
    allowed = WEIGHT_TOL * update + ULPS * np.spacing(np.abs(w).astype(np.float32)).astype(np.float64)
    err = np.abs(g - w)
    if not np.all(err <= allowed):
        i = int(np.argmax(err - allowed))
        raise AssertionError(f"{what}: updated weight differs by {err.flat[i]:.3g} (largest update {update:.3g}, "
                             f"tolerance {WEIGHT_TOL:g} of it + {ULPS} ulps)")


@contextlib.contextmanager
def _count_fused(tk):
    """Count the fused optimizer primitives tensorkit runs inside the block (a dispatcher observer)."""
    from tensorkit import _dispatch
    calls = []

    def observe(op, inputs, outputs, params):
        if op in ("fused_sgd_", "fused_adam_"):
            calls.append(op)

    _dispatch.observers.append(observe)
    try:
        yield calls
    finally:
        _dispatch.observers.remove(observe)


def _path(calls: list, steps: int) -> str:
    if not calls:
        return "op by op (fused path NOT taken)"
    return f"fused ({len(calls) // steps} launch/step)"


def _sync(tk, torch, device: str):
    if device == "cuda":
        return lambda: (tk.cuda.synchronize(), torch.cuda.synchronize())
    return lambda: None


# ---- section 1: whole training steps ------------------------------------------------------------------------------
class TrainCase:
    """One model and optimizer built with both libraries from the same weights and data on ``device``;
    ``amp``: forward and loss under bf16 autocast."""

    def __init__(self, tk, torch, builder, cfg: dict, batch: int, in_shape: tuple, opt: str, amp: bool,
                 device: str, seed: int = 0):
        self.tk, self.torch, self.device, self.amp = tk, torch, device, amp
        torch.manual_seed(seed)
        self.pt_model = builder(torch, **cfg)
        self.tk_model = builder(tk, **cfg)
        # weights by state-dict key: the real test that both libraries name them alike
        self.tk_model.load_state_dict({k: tk.tensor(v.detach().cpu().numpy())
                                       for k, v in self.pt_model.state_dict().items()})
        self.pt_model.to(device)
        self.tk_model.to(device)
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((batch, *in_shape), dtype=np.float32)
        y = rng.integers(0, 10, batch)
        self.pt_x, self.pt_y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
        self.tk_x, self.tk_y = tk.tensor(x, device=device), tk.tensor(y, device=device)
        self.pt_opt = getattr(torch.optim, opt)(self.pt_model.parameters(), **OPTIMIZERS[opt])
        self.tk_opt = getattr(tk.optim, opt)(self.tk_model.parameters(), **OPTIMIZERS[opt])

    def _side(self, lib):
        if lib is self.tk:
            return self.tk_model, self.tk_opt, self.tk_x, self.tk_y
        return self.pt_model, self.pt_opt, self.pt_x, self.pt_y

    def _autocast(self, lib):
        if not self.amp:
            return contextlib.nullcontext()
        return lib.autocast(device_type=self.device, dtype=lib.bfloat16)

    def forward(self, lib):
        """(logits, loss) under the row's precision."""
        model, _, x, y = self._side(lib)
        with self._autocast(lib):
            out = model(x)
            loss = lib.nn.functional.cross_entropy(out, y)
        return out, loss

    def backward(self, lib):
        """Forward, loss, zero_grad, backward; returns the loss."""
        _, opt, _, _ = self._side(lib)
        _, loss = self.forward(lib)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        return loss

    def step(self, lib):
        """One training step: forward, loss, zero_grad, backward, optimizer.step()."""
        self.backward(lib)
        self._side(lib)[1].step()

    def tk_step(self):
        self.step(self.tk)

    def pt_step(self):
        self.step(self.torch)

    def check(self) -> str:
        """Compare with PyTorch (module docstring); raise AssertionError on a mismatch. Returns the
        path tensorkit's optimizer took."""
        tk, torch = self.tk, self.torch
        with no_dropout(self.tk_model, self.pt_model):   # train mode (BatchNorm's batch statistics), no masks
            if self.amp:
                return self._check_amp()
            tk_params = dict(self.tk_model.named_parameters())
            pt_params = dict(self.pt_model.named_parameters())
            if list(tk_params) != list(pt_params):
                raise AssertionError(f"parameter names differ: tk {list(tk_params)[:4]}..., "
                                     f"torch {list(pt_params)[:4]}...")
            calls = []
            for k in range(CHECK_STEPS):
                tl, pl = self.backward(tk), self.backward(torch)
                common.check_close(f"step {k + 1} loss", tl.item(), pl.item(), rtol=LOSS_RTOL, atol=1e-6)
                ref = reference_grads(self.pt_model,
                                      lambda m, x, y: torch.nn.functional.cross_entropy(m(x), y), self.pt_x, self.pt_y)
                before = {}
                # a bias followed by BatchNorm has a zero gradient, computed as rounding noise on both sides
                floor = GRAD_FLOOR * max(float(np.max(np.abs(g))) for g in ref.values())
                for name, p in pt_params.items():
                    q = tk_params[name]
                    if q.grad is None:
                        raise AssertionError(f"step {k + 1} {name}: no tensorkit gradient")
                    check_grad(f"step {k + 1} {name} grad", _np64(q.grad), _np64(p.grad), ref[name], floor)
                    with tk.no_grad():
                        q.grad.copy_(tk.tensor(p.grad.detach().cpu().numpy(), device=self.device))
                    before[name] = _np64(p)
                with _count_fused(tk) as fused:
                    self.tk_opt.step()
                calls += fused
                self.pt_opt.step()
                for name, p in pt_params.items():
                    _check_weights(f"step {k + 1} {name}", tk_params[name], p, before[name])
            return _path(calls, CHECK_STEPS)

    def _check_amp(self) -> str:
        tk, torch = self.tk, self.torch
        (to, tl), (po, pl) = self.forward(tk), self.forward(torch)
        if po.dtype != torch.bfloat16:
            raise AssertionError(f"torch autocast logits are {po.dtype}, expected bfloat16")
        if to.dtype != tk.bfloat16:
            raise AssertionError(f"tensorkit autocast logits are {to.dtype}, expected bfloat16")
        common.check_close("autocast loss", tl.item(), pl.item(), rtol=AMP_LOSS_RTOL, atol=1e-3)
        with _count_fused(tk) as fused:
            self.tk_step()
        if not np.isfinite(self.backward(tk).item()):
            raise AssertionError("tensorkit autocast: loss not finite after a step")
        return _path(fused, 1)


def train_section(tk, torch, quick: bool = False, models=MODELS, device: str = "cuda",
                  budget: float | None = None) -> str:
    """The training-step table; ``device="cpu"`` (tiny ``models``) is the smoke mode the tests run:
    the same checks, timing and table, without memory numbers."""
    budget = (1.0 if quick else 3.0) if budget is None else budget
    rows, notes = [], []
    saved = (tk.backends.cuda.matmul.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
             torch.backends.cudnn.allow_tf32)
    _tf32(tk, torch, False)                 # exact float32 on both sides; autocast rows run in bf16 anyway
    try:
        pick = os.environ.get("TK_BENCH_TRAIN_MODELS", "")
        for name, builder, cfg, batch, in_shape in models:
            if pick and pick.lower() not in name.lower():
                continue
            shape = f"batch {batch}, {'x'.join(map(str, in_shape))}"
            for opt in OPTIMIZERS:
                for amp in (False, True):
                    _train_row(tk, torch, name, shape, builder, cfg, batch, in_shape, opt, amp, device,
                               budget, rows, notes)
    finally:
        tk.backends.cuda.matmul.allow_tf32, torch.backends.cuda.matmul.allow_tf32, \
            torch.backends.cudnn.allow_tf32 = saved
    body = common.table(["model", "shape", "optimizer", "precision", "tk ms/step", "torch ms/step", "tk/torch",
                         "tk peak MiB", "torch peak MiB", "tk optimizer path", "target", "status"], rows)
    return body + ("\n\nNot timed:\n" + "\n".join(notes) if notes else "")


def _train_row(tk, torch, name, shape, builder, cfg, batch, in_shape, opt, amp, device, budget,
               rows, notes) -> None:
    precision = "bf16 autocast" if amp else "float32"
    label = f"{name} {shape} {opt} {precision}"
    common.log(f"train: {label}")
    failed = [name, shape, opt, precision, "—", "—", "—", "—", "—", "—", f"<= {STEP_TARGET}", "failed"]
    case = None
    try:
        case = TrainCase(tk, torch, builder, cfg, batch, in_shape, opt, amp, device)
        path = case.check()
    except Exception as e:  # noqa: BLE001  (a mismatch, a missing tk.autocast or an error: a note, never a time)
        notes.append(f"- {label}: not timed: {_first_line(e)}")
        rows.append(failed)
        del case
        return
    try:
        sync = _sync(tk, torch, device)
        t_pt = _time(case.pt_step, sync, budget)
        t_tk = _time(case.tk_step, sync, budget)     # its warm-up step tunes tensorkit's conv kernels
        m_tk = m_pt = None
        if device == "cuda":
            m_tk = _peak_mib(case.tk_step, tk.cuda.reset_peak_memory_stats, tk.cuda.max_memory_allocated, sync)
            m_pt = _peak_mib(case.pt_step, torch.cuda.reset_peak_memory_stats, torch.cuda.max_memory_allocated,
                             sync)
    except Exception as e:  # noqa: BLE001  (e.g. out of memory)
        notes.append(f"- {label} (timing): {_first_line(e)}")
        rows.append(failed)
        del case
        return
    rows.append([name, shape, opt, precision, common.fmt_time(t_tk), common.fmt_time(t_pt),
                 common.fmt_ratio(t_tk, t_pt), _mib(m_tk), _mib(m_pt), path, f"<= {STEP_TARGET}",
                 "met" if t_tk / t_pt <= STEP_TARGET else "missed"])
    common.log_row(rows[-1])
    del case


# ---- section 2: the optimizer step alone ----------------------------------------------------------------------------
def param_sizes(n: int = 100, lo: int = 10, hi: int = 1_000_000, seed: int = 0) -> list[int]:
    """``n`` reproducible sizes, log-uniform from ``lo`` to ``hi`` (both included)."""
    rng = np.random.default_rng(seed)
    sizes = np.round(np.exp(rng.uniform(np.log(lo), np.log(hi), n))).astype(int).tolist()
    sizes[0], sizes[-1] = lo, hi
    return sizes


def _shape(n: int) -> tuple:
    """Matrices for the larger sizes (as weights are), vectors for the small ones (as biases)."""
    return (n // 64, 64) if n >= 4096 and n % 64 == 0 else (n,)


# row label, optimizer, torch's extra keyword arguments
OPT_ROWS = [
    ("SGD momentum 0.9", "SGD", {}),
    ("SGD momentum 0.9 (torch fused=True)", "SGD", {"fused": True}),
    ("Adam", "Adam", {}),
    ("Adam (torch fused=True)", "Adam", {"fused": True}),
]


class OptCase:
    """The same parameters and gradients in both libraries, and an optimizer over each."""

    def __init__(self, tk, torch, opt: str, torch_kw: dict, sizes: list[int], device: str, seed: int = 0,
                 tk_device: str | None = None):
        self.rng = np.random.default_rng(seed)
        self.tk, self.torch, self.device = tk, torch, device
        self.tk_device = device if tk_device is None else tk_device       # tests: tensorkit's emulated cuda
        self.tk_params, self.pt_params = [], []
        for n in sizes:
            p = self.rng.standard_normal(_shape(n), dtype=np.float32)
            self.tk_params.append(tk.tensor(p, device=self.tk_device).requires_grad_())
            self.pt_params.append(torch.from_numpy(p).to(device).requires_grad_())
        self.new_grads()
        self.tk_opt = getattr(tk.optim, opt)(self.tk_params, **OPTIMIZERS[opt])
        self.pt_opt = getattr(torch.optim, opt)(self.pt_params, **OPTIMIZERS[opt], **torch_kw)

    def new_grads(self) -> None:
        """The same random gradients on both sides."""
        for q, r in zip(self.tk_params, self.pt_params):
            g = (self.rng.standard_normal(tuple(r.shape), dtype=np.float32) * 1e-2).astype(np.float32)
            q.grad = self.tk.tensor(g, device=self.tk_device)
            r.grad = self.torch.from_numpy(g).to(self.device)

    def check(self) -> str:
        """CHECK_STEPS steps from the same parameters and gradients (new ones each step: with a
        constant gradient Adam's step does not depend on its betas) give the same parameters;
        returns the path tensorkit took."""
        calls = []
        for k in range(CHECK_STEPS):
            if k:
                self.new_grads()
            before = [_np64(r) for r in self.pt_params]
            with _count_fused(self.tk) as fused:
                self.tk_opt.step()
            calls += fused
            self.pt_opt.step()
            for i, (q, r) in enumerate(zip(self.tk_params, self.pt_params)):
                _check_weights(f"step {k + 1} parameter {i} ({r.numel()} elements)", q, r, before[i])
        return _path(calls, CHECK_STEPS)


def optimizer_section(tk, torch, quick: bool = False, sizes: list[int] | None = None, device: str = "cuda",
                      budget: float | None = None) -> str:
    """The optimizer-step table (``device="cpu"`` with small ``sizes``: the smoke mode)."""
    budget = (1.0 if quick else 3.0) if budget is None else budget
    sizes = param_sizes() if sizes is None else sizes
    rows, notes = [], []
    sync = _sync(tk, torch, device)
    for label, opt, torch_kw in OPT_ROWS:
        common.log(f"train: optimizer step {label}")
        case = None
        try:
            case = OptCase(tk, torch, opt, torch_kw, sizes, device)
            path = case.check()
            t_pt = _time(case.pt_opt.step, sync, budget)
            t_tk = _time(case.tk_opt.step, sync, budget)
        except Exception as e:  # noqa: BLE001  (a mismatch or an error: a note, never a time)
            notes.append(f"- {label}: not timed: {_first_line(e)}")
            rows.append([label, "—", "—", "—", "—", f"<= {OPT_TARGET}", "failed"])
            del case
            continue
        rows.append([label, common.fmt_time(t_tk), common.fmt_time(t_pt), common.fmt_ratio(t_tk, t_pt), path,
                     f"<= {OPT_TARGET}", "met" if t_tk / t_pt <= OPT_TARGET else "missed"])
        common.log_row(rows[-1])
        del case
    body = common.table(["optimizer", "tk ms/step", "torch ms/step", "tk/torch", "tk path", "target", "status"],
                        rows)
    return body + ("\n\nNot timed:\n" + "\n".join(notes) if notes else "")


# ---- section 3: DataLoader batches to the GPU ---------------------------------------------------------------------
def _to_device_epoch(loader, device: str, sync, non_blocking: bool, max_batches: int | None) -> float:
    """Samples/s moving each batch to ``device`` (after the first batch; synchronised at the end)."""
    n, t1 = 0, None
    for i, (xb, yb) in enumerate(loader):
        xb, yb = xb.to(device, non_blocking=non_blocking), yb.to(device, non_blocking=non_blocking)
        if t1 is None:
            sync()
            t1 = time.perf_counter()
        else:
            n += xb.shape[0]
        if max_batches is not None and i + 1 >= max_batches:
            break
    sync()
    return n / (time.perf_counter() - t1)


def data_to_device_section(tk, torch, quick: bool = False, rows_n: int = bench_data.ROWS, device: str = "cuda") -> str:
    """bench_data's dataset and loaders, each batch moved to ``device``: pageable vs pinned memory."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows_n, bench_data.FEATURES), dtype=np.float32)
    y = rng.integers(0, 10, rows_n, dtype=np.int64)
    libs = bench_data._loaders(x, y)
    sync = _sync(tk, torch, device)
    pin_ok = device == "cuda"               # pinning needs an accelerator (both libraries warn and skip without)
    firsts = {}
    for name, (cls, ds, _, _) in libs.items():
        xb, yb = next(iter(cls(ds, batch_size=bench_data.BATCH, pin_memory=pin_ok)))
        firsts[name] = (xb.to(device, non_blocking=True), yb.to(device, non_blocking=True))
    sync()
    for k in range(2):
        common.check_close(f"first batch on {device} [{k}]", firsts["tensorkit"][k].cpu().numpy(),
                           firsts["torch"][k].cpu().numpy(), rtol=0)
    max_batches = 200 if quick else None
    repeats = 1 if quick else 3
    rows = []
    for pin in ((False, True) if pin_ok else (False,)):
        for workers in bench_data.WORKERS:
            rate = {}
            for name, (cls, ds, gen, _) in libs.items():
                rate[name] = max(_to_device_epoch(cls(ds, batch_size=bench_data.BATCH, shuffle=True,
                                                      num_workers=workers, generator=gen(r), pin_memory=pin),
                                                  device, sync, pin, max_batches) for r in range(repeats))
                common.log(f"train: data to {device} {name} pin={pin} {workers} workers: {rate[name]:.0f} samples/s")
            how = "pin_memory=True, .to(non_blocking=True)" if pin else "pageable, .to()"
            rows.append([how, str(workers), f"{rate['tensorkit']:,.0f}", f"{rate['torch']:,.0f}",
                         f"{rate['tensorkit'] / rate['torch']:.2f}"])
    return common.table(["batches", "workers", "tensorkit samples/s", "torch samples/s", "tk / torch"], rows)


# ---- the suite ------------------------------------------------------------------------------------------------------
def run(quick: bool = False) -> str:
    """The train suite as markdown (without the machine header; run.py adds it)."""
    env = _gpu()
    if env is None:
        return "Skipped: needs a real CUDA GPU usable by both tensorkit and PyTorch (not the emulated device)."
    tk, torch = env
    steps = "one epoch, best of 3" if not quick else "200 batches"
    parts = [
        ("Training step", "forward, loss, zero_grad, backward, optimizer.step(); train mode. float32 rows: TF32 off "
         "on both sides; bf16 rows: `lib.autocast(device_type=\"cuda\", dtype=lib.bfloat16)` around forward and "
         "loss. SGD: lr 0.01, momentum 0.9, weight_decay 5e-4; Adam: lr 1e-3; both libraries' defaults otherwise "
         "(torch: foreach). Checked first against PyTorch (same weights, data and, for the update, gradients; see "
         "bench_train.py). tk optimizer path: whether tensorkit's fused multi-tensor update ran. Peak memory: "
         "max_memory_allocated over one step, each library's counter. The first tensorkit step tunes its conv "
         "kernels (cached on disk).",
         lambda: train_section(tk, torch, quick)),
        ("Optimizer step alone", "`optimizer.step()` over 100 float32 cuda parameters, log-uniform sizes 10 .. 1M "
         f"elements ({sum(param_sizes()):,} in all), gradients set; checked first (two steps from the same "
         "parameters and gradients agree with torch). torch: its default (foreach) or fused=True as labelled; "
         "tensorkit: its default, which is its fused multi-tensor update (one launch per parameter group) when "
         "every tensor of the group is a contiguous float32 cuda tensor (`ops.optim.fusable`) and, for Adam, all "
         "are at the same step: 'tk path' says whether it ran, counted during the check.",
         lambda: optimizer_section(tk, torch, quick)),
        ("DataLoader throughput (CPU)", "bench_data's table (the 'data' suite), measured on this machine.",
         lambda: bench_data.run(quick).split("\n\n", 1)[1]),
        ("DataLoader batches to the GPU", f"bench_data's dataset, batch {bench_data.BATCH}, shuffle; each batch "
         f"(features and labels) moved to cuda; {steps}; synchronised at the end; ratio > 1: tensorkit faster.",
         lambda: data_to_device_section(tk, torch, quick)),
    ]
    # TK_BENCH_SECTIONS=training,optimizer: a partial run (words found in the section titles: "step" is in two);
    # TK_BENCH_TRAIN_MODELS=ResNet: only the training-step rows of the models whose name contains it
    only = common.bench_sections()
    parts = [p for p in parts if not only or any(w in p[0].lower() for w in only)]
    out = []
    for title, note, section in parts:
        start = time.perf_counter()
        try:
            body = section()
        except Exception as e:  # noqa: BLE001  (one broken section must not lose the others)
            body = f"section failed: {_first_line(e)}"
        common.log(f"train: {title}: {time.perf_counter() - start:.0f} s")
        out.append(f"## {title}\n\n{note}\n\n{body}")
    return "\n\n".join(out)


# tiny sizes for the CPU smoke run
TINY_MODELS = [
    ("digits CNN", digits_cnn, dict(c1=4, c2=6, hidden=8, size=8, dropout=0.25), 4, (1, 8, 8)),
    ("ResNet (tiny)", resnet18, dict(width=4, blocks=(1, 1, 1, 1)), 2, (3, 16, 16)),
]
TINY_SIZES = [10, 37, 100, 1000, 4096 + 64, 12000]


def smoke(budget: float = 0.02) -> str:
    """Every section's checks and table on the CPU at tiny sizes (tensorkit's Numba path vs PyTorch's
    CPU kernels; autocast with device_type="cpu"), for testing this file without a GPU."""
    import torch

    import tensorkit as tk
    return "\n\n".join([train_section(tk, torch, models=TINY_MODELS, device="cpu", budget=budget),
                        optimizer_section(tk, torch, sizes=TINY_SIZES, device="cpu", budget=budget),
                        data_to_device_section(tk, torch, quick=True, rows_n=2000, device="cpu")])


if __name__ == "__main__":
    print(run(bool(os.environ.get("QUICK"))) if _gpu() else smoke())
