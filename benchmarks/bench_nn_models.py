"""Whole-model GPU benchmark section (``bench_nn.py`` includes it; ``TK_BENCH_SECTIONS=models``
selects it alone): one training step of four tutorial models, tensorkit vs PyTorch eager on the
same GPU, issue 5's target (time ratio <= 1.5, goal 1.0), with the peak GPU memory of a step.

- the PyTorch MNIST example's Net (conv 1->32 3x3, conv 32->64 3x3, max_pool 2, dropout,
  fc 9216->128, fc 128->10, log_softmax, nll_loss), batch 64, 28x28;
- ResNet-18 for 32x32 inputs (CIFAR style: 3x3 stem conv, BasicBlocks [2, 2, 2, 2],
  BatchNorm, global average pool, fc to 10 classes), batch 128;
- a 2-layer LSTM language model (PyTorch's word_language_model example, medium size:
  embedding 10000 x 650, LSTM 650 hidden, dropout 0.5, linear decoder), seq 35, batch 20;
- a 6-layer TransformerEncoder (d_model 512, nhead 8, dim_feedforward 2048, batch_first), mean
  over the sequence, a linear head to 10 classes; seq 256, batch 32.

Each model is written once, as a function of ``lib`` (tensorkit or torch), so both libraries
build the same architecture with the same state-dict keys; the torch model's weights are copied
into the tensorkit one by key. Before timing, the loss and a few parameter gradients of one step
are compared (float32, TF32 off on both sides; train mode, i.e. BatchNorm with batch statistics,
with every dropout rate set to 0). A gradient is judged against a float64 run of the same torch
model (``reference_grads``): tensorkit's relative L2 error must be within ``GRAD_TOL``, or at
most ``GRAD_VS_TORCH`` times PyTorch's own float32 error. Train-mode BatchNorm amplifies float32
rounding: ResNet-18's gradients at batch 128 are 0.3-0.6% from float64 for both libraries on the
CPU, and cuDNN's happen to be closer on the H200 (layer4.1.conv1: tensorkit 0.36%, torch 0.07%),
hence 1% (a wrong kernel is off by far more). A model that fails the check (or raises) is reported under
"Not timed" with the error, never timed.

A step is forward, loss, ``loss.backward()`` and the gradients set to None (no optimizer), in
train mode, float32 with TF32 off on both sides (exact float32 matmuls and convolutions);
times are medians of CUDA-synchronised wall-clock steps (as ``bench_autograd._time``). Peak
memory: ``max_memory_allocated`` after ``reset_peak_memory_stats`` around one step (weights,
activations and gradients), each library's own counter.

``smoke_check`` runs the same models at tiny sizes on the CPU (``tests/test_bench_nn_models.py``).
"""
from __future__ import annotations

import contextlib
import copy
import os
import time

import numpy as np

import common
from bench_autograd import _time          # CUDA-synchronised wall-clock medians
from bench_gpu import _first_line

TARGET = 1.5
# the models at the sizes (keyword arguments of the builders below)
MNIST = dict(c1=32, c2=64, hidden=128, size=28, dropout=True)
RESNET = dict(width=64, blocks=(2, 2, 2, 2))
LSTM_LM = dict(ntoken=10000, ninp=650, nhid=650, nlayers=2, dropout=0.5)
TRANSFORMER = dict(d_model=512, nhead=8, dim_feedforward=2048, num_layers=6, dropout=0.1)
BATCH = {"mnist": 64, "resnet": 128, "lstm": 20, "transformer": 32}
SEQ = {"lstm": 35, "transformer": 256}
LOSS_RTOL = 1e-4          # loss: float32 sums in different orders
GRAD_TOL = 1e-2           # |tk - float64| / |float64| (L2) per gradient tensor, or at most ...
GRAD_VS_TORCH = 4.0       # ... this many times torch's float32 error against the same float64 reference


# ---- the models: one definition for both libraries ----------------------------------------------------------
def mnist_net(lib, c1=32, c2=64, hidden=128, size=28, dropout=True):
    """The PyTorch MNIST example's Net (``size`` x ``size`` single-channel input, 10 classes)."""
    nn, F = lib.nn, lib.nn.functional

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, c1, 3, 1)
            self.conv2 = nn.Conv2d(c1, c2, 3, 1)
            self.dropout1 = nn.Dropout(0.25 if dropout else 0.0)
            self.dropout2 = nn.Dropout(0.5 if dropout else 0.0)
            self.fc1 = nn.Linear(c2 * ((size - 4) // 2) ** 2, hidden)
            self.fc2 = nn.Linear(hidden, 10)

        def forward(self, x):
            x = F.relu(self.conv1(x))
            x = F.relu(self.conv2(x))
            x = F.max_pool2d(x, 2)
            x = self.dropout1(x)
            x = lib.flatten(x, 1)
            x = F.relu(self.fc1(x))
            x = self.dropout2(x)
            return F.log_softmax(self.fc2(x), dim=1)

    return Net()


def resnet18(lib, width=64, blocks=(2, 2, 2, 2), num_classes=10):
    """ResNet-18 for 32x32 inputs (3x3 stem, no max pool; BasicBlocks; ``width`` channels in
    the first stage, doubling per stage)."""
    nn, F = lib.nn, lib.nn.functional

    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.shortcut = nn.Sequential()
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return F.relu(out + self.shortcut(x))

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            cin = width
            for i, n in enumerate(blocks):
                cout = width * 2 ** i
                layers = []
                for j in range(n):
                    layers.append(BasicBlock(cin, cout, 2 if (i > 0 and j == 0) else 1))
                    cin = cout
                setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
            self.linear = nn.Linear(cin, num_classes)
            self.stages = len(blocks)

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            for i in range(self.stages):
                out = getattr(self, f"layer{i + 1}")(out)
            out = lib.flatten(F.adaptive_avg_pool2d(out, 1), 1)
            return self.linear(out)

    return ResNet()


def lstm_lm(lib, ntoken=10000, ninp=650, nhid=650, nlayers=2, dropout=0.5):
    """PyTorch's word_language_model RNNModel (LSTM): embedding, dropout, LSTM, dropout, linear
    decoder; input (seq, batch) token ids, output (seq * batch, ntoken) logits."""
    nn = lib.nn

    class RNNModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.drop = nn.Dropout(dropout)
            self.encoder = nn.Embedding(ntoken, ninp)
            self.rnn = nn.LSTM(ninp, nhid, nlayers, dropout=dropout)
            self.decoder = nn.Linear(nhid, ntoken)
            self.ntoken = ntoken

        def forward(self, tokens):
            emb = self.drop(self.encoder(tokens))
            output, _ = self.rnn(emb)
            return self.decoder(self.drop(output)).view(-1, self.ntoken)

    return RNNModel()


def transformer(lib, d_model=512, nhead=8, dim_feedforward=2048, num_layers=6, dropout=0.1, num_classes=10):
    """A post-norm TransformerEncoder (batch_first) whose output, mean-pooled over the sequence,
    goes through a linear head."""
    nn = lib.nn

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, batch_first=True)
            kw = {"enable_nested_tensor": False} if lib.__name__ == "torch" else {}   # torch warns otherwise
            self.encoder = nn.TransformerEncoder(layer, num_layers, **kw)
            self.head = nn.Linear(d_model, num_classes)

        def forward(self, x):
            return self.head(self.encoder(x).mean(dim=1))

    return Encoder()


# ---- data, losses, the check and one step ---------------------------------------------------------------------
def _data(kind: str, rng, batch: int, cfg: dict, seq: int | None):
    """(input, target) numpy arrays for ``kind``."""
    if kind == "mnist":
        return (rng.standard_normal((batch, 1, cfg["size"], cfg["size"]), dtype=np.float32),
                rng.integers(0, 10, batch))
    if kind == "resnet":
        return rng.standard_normal((batch, 3, cfg.get("size", 32), cfg.get("size", 32)), dtype=np.float32), \
            rng.integers(0, 10, batch)
    if kind == "lstm":
        return rng.integers(0, cfg["ntoken"], (seq, batch)), rng.integers(0, cfg["ntoken"], seq * batch)
    if kind == "transformer":
        return rng.standard_normal((batch, seq, cfg["d_model"]), dtype=np.float32), rng.integers(0, 10, batch)
    raise ValueError(kind)


BUILDERS = {"mnist": mnist_net, "resnet": resnet18, "lstm": lstm_lm, "transformer": transformer}


def _loss(lib, kind, model, x, y):
    F = lib.nn.functional
    out = model(x)
    return F.nll_loss(out, y) if kind == "mnist" else F.cross_entropy(out, y)


@contextlib.contextmanager
def no_dropout(*models):
    """Every dropout rate of ``models`` (``Dropout`` modules, the ``dropout`` float of LSTM and
    MultiheadAttention) set to 0 inside the block: train mode without random masks."""
    saved = []
    for model in models:
        for m in model.modules():
            attr = "p" if type(m).__name__ == "Dropout" else "dropout"
            if isinstance(getattr(m, attr, None), float):
                saved.append((m, attr, getattr(m, attr)))
                setattr(m, attr, 0.0)
    try:
        yield
    finally:
        for m, attr, value in saved:
            setattr(m, attr, value)


def reference_grads(model, loss_fn, *inputs) -> dict:
    """{name: float64 numpy gradient} of ``loss_fn(model64, *inputs64)`` with a float64 copy of the
    torch ``model`` (floating inputs cast to float64): the reference both float32 results are
    judged against."""
    ref = copy.deepcopy(model).double()
    ref.zero_grad(set_to_none=True)
    loss_fn(ref, *(t.double() if t.is_floating_point() else t for t in inputs)).backward()
    return {k: p.grad.detach().cpu().numpy() for k, p in ref.named_parameters() if p.grad is not None}


def check_grad(what: str, got: np.ndarray, want: np.ndarray, ref: np.ndarray, floor: float = 0.0) -> None:
    """tensorkit's gradient ``got`` against the float64 ``ref``, in relative L2 norm: within GRAD_TOL,
    or at most GRAD_VS_TORCH times torch's (``want``) error; the scale is at least ``floor`` per
    element. Raises AssertionError. (Not the largest element's error: a ReLU input near 0 that
    float32 and float64 round to different sides moves single elements, e.g. 6.6% of ResNet-18's
    layer4.1.conv1 gradient for both libraries on the CPU, while the whole tensor moves ~0.4%.)"""
    got, want, ref = (np.asarray(a, np.float64) for a in (got, want, ref))
    if got.shape != ref.shape:
        raise AssertionError(f"{what}: shape {got.shape}, expected {ref.shape}")
    if got.size == 0:
        return
    scale = max(float(np.linalg.norm(ref)), floor * got.size ** 0.5, 1e-30)
    err_tk = float(np.linalg.norm(got - ref)) / scale
    err_pt = float(np.linalg.norm(want - ref)) / scale
    if not err_tk <= max(GRAD_TOL, GRAD_VS_TORCH * err_pt):
        raise AssertionError(f"{what}: relative L2 error vs float64 {err_tk:.3g} (torch float32: {err_pt:.3g}; "
                             f"tolerance {GRAD_TOL:g} or {GRAD_VS_TORCH:g}x torch's)")


class Case:
    """One model built with both libraries from the same weights and data on ``device``."""

    def __init__(self, tk, torch, kind: str, cfg: dict, batch: int, seq: int | None, device: str, seed: int = 0):
        self.tk, self.torch, self.kind, self.device = tk, torch, kind, device
        build_cfg = {k: v for k, v in cfg.items() if k != "size" or kind == "mnist"}
        torch.manual_seed(seed)
        self.pt_model = BUILDERS[kind](torch, **build_cfg)
        self.tk_model = BUILDERS[kind](tk, **build_cfg)
        # weights by state-dict key: the real test that both libraries name them alike
        self.tk_model.load_state_dict({k: tk.tensor(v.detach().cpu().numpy())
                                       for k, v in self.pt_model.state_dict().items()})
        self.pt_model.to(device)
        self.tk_model.to(device)
        x, y = _data(kind, np.random.default_rng(seed), batch, cfg, seq)
        self.pt_x, self.pt_y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
        self.tk_x, self.tk_y = tk.tensor(x, device=device), tk.tensor(y, device=device)

    def tk_step(self):
        loss = _loss(self.tk, self.kind, self.tk_model, self.tk_x, self.tk_y)
        loss.backward()
        return loss

    def pt_step(self):
        loss = _loss(self.torch, self.kind, self.pt_model, self.pt_x, self.pt_y)
        loss.backward()
        return loss

    def zero(self):
        self.tk_model.zero_grad(set_to_none=True)
        self.pt_model.zero_grad(set_to_none=True)

    def check(self, names=None, loss_rtol=None) -> list[str]:
        """Compare one step's loss and the gradients of ``names`` (default: the first, a middle
        and the last parameter, and the largest) with ``check_grad``, in train mode without dropout;
        raise AssertionError on a mismatch. Returns the names checked."""
        loss_rtol = LOSS_RTOL if loss_rtol is None else loss_rtol
        try:
            with no_dropout(self.tk_model, self.pt_model):
                self.zero()
                tl, pl = self.tk_step(), self.pt_step()
                ref = reference_grads(self.pt_model, lambda m, x, y: _loss(self.torch, self.kind, m, x, y),
                                      self.pt_x, self.pt_y)
            common.check_close(f"{self.kind} loss", tl.item(), pl.item(), rtol=loss_rtol, atol=1e-6)
            pt_params = dict(self.pt_model.named_parameters())
            tk_params = dict(self.tk_model.named_parameters())
            if list(tk_params) != list(pt_params):
                raise AssertionError(f"{self.kind}: parameter names differ: tk {list(tk_params)[:4]}..., "
                                     f"torch {list(pt_params)[:4]}...")
            keys = list(pt_params)
            if names is None:
                big = max(keys, key=lambda k: pt_params[k].numel())
                names = list(dict.fromkeys([keys[0], keys[len(keys) // 2], keys[-1], big]))
            for name in names:
                want, got = pt_params[name].grad, tk_params[name].grad
                if got is None:
                    raise AssertionError(f"{self.kind} {name}: no tensorkit gradient")
                check_grad(f"{self.kind} {name} grad", got.detach().cpu().numpy(), want.detach().cpu().numpy(),
                           ref[name])
            return names
        finally:
            self.zero()


def _tf32(tk, torch, on: bool) -> None:
    tk.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def smoke_check(tk, torch, kind: str, cfg: dict, batch: int = 2, seq: int | None = None, names=None):
    """``kind`` at a tiny ``cfg`` on the CPU: build both, copy weights by key, check loss and
    gradients (all of them unless ``names``). Raises AssertionError on a mismatch."""
    case = Case(tk, torch, kind, cfg, batch, seq, "cpu")
    return case.check(names=names if names is not None else list(dict(case.pt_model.named_parameters())))


# ---- the GPU section ----------------------------------------------------------------------------------------
MODELS = [
    ("MNIST Net", "mnist", MNIST, BATCH["mnist"], None, "batch 64, 1x28x28"),
    ("ResNet-18 (32x32)", "resnet", RESNET, BATCH["resnet"], None, "batch 128, 3x32x32"),
    ("LSTM LM 2x650", "lstm", LSTM_LM, BATCH["lstm"], SEQ["lstm"], "seq 35, batch 20, vocab 10000"),
    ("Transformer 6x512", "transformer", TRANSFORMER, BATCH["transformer"], SEQ["transformer"],
     "seq 256, batch 32, nhead 8, ff 2048"),
]


def _peak_mib(step, reset, peak, sync) -> float:
    sync()
    reset()
    step()
    sync()
    return peak() / 2 ** 20


def _mib(m) -> str:
    return "—" if m is None else f"{m:.0f}"


def models_section(tk, torch, quick: bool = False, models=MODELS, device: str = "cuda") -> str:
    """The table; ``device="cpu"`` (tiny ``models``) is the smoke mode the tests run: the same
    checks, timing and table, without memory numbers."""
    budget = 1.0 if quick else 3.0
    gpu = device == "cuda"
    sync = (lambda: (tk.cuda.synchronize(), torch.cuda.synchronize())) if gpu else (lambda: None)
    rows, notes = [], []
    saved = (tk.backends.cuda.matmul.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
             torch.backends.cudnn.allow_tf32)
    _tf32(tk, torch, False)                 # exact float32 on both sides, for the check and the timing
    try:
        _models_rows(tk, torch, models, device, budget, sync, rows, notes)
    finally:
        tk.backends.cuda.matmul.allow_tf32, torch.backends.cuda.matmul.allow_tf32, \
            torch.backends.cudnn.allow_tf32 = saved
    body = common.table(["model", "shape", "tk ms/step", "torch ms/step", "tk/torch", "tk peak MiB",
                         "torch peak MiB", "target", "status"], rows)
    return body + ("\n\nNot timed (failed the check against PyTorch):\n" + "\n".join(notes) if notes else "")


def _models_rows(tk, torch, models, device, budget, sync, rows, notes) -> None:
    gpu = device == "cuda"
    for name, kind, cfg, batch, seq, shape in models:
        common.log(f"nn models {name}")
        case, start = None, time.perf_counter()
        try:
            case = Case(tk, torch, kind, cfg, batch, seq, device)
            case.check()
            common.log(f"nn models {name}: checked against PyTorch in {time.perf_counter() - start:.0f} s")
        except Exception as e:  # noqa: BLE001  (a mismatch or an error is a note, never a time)
            notes.append(f"- {name}: {_first_line(e)}")
            rows.append([name, shape, "—", "—", "—", "—", "—", f"<= {TARGET}", "failed"])
            del case
            continue
        try:
            def tk_step():
                case.tk_step()
                case.tk_model.zero_grad(set_to_none=True)

            def pt_step():
                case.pt_step()
                case.pt_model.zero_grad(set_to_none=True)
            t_pt = _time(pt_step, sync, budget)
            start = time.perf_counter()
            t_tk = _time(tk_step, sync, budget)     # its first call tunes tensorkit's conv kernels
            common.log(f"nn models {name}: timed in {time.perf_counter() - start:.0f} s")
            m_tk = m_pt = None
            if gpu:
                m_tk = _peak_mib(tk_step, tk.cuda.reset_peak_memory_stats, tk.cuda.max_memory_allocated, sync)
                m_pt = _peak_mib(pt_step, torch.cuda.reset_peak_memory_stats, torch.cuda.max_memory_allocated, sync)
        except Exception as e:  # noqa: BLE001  (e.g. out of memory)
            notes.append(f"- {name} (timing): {_first_line(e)}")
            rows.append([name, shape, "—", "—", "—", "—", "—", f"<= {TARGET}", "failed"])
            del case
            continue
        rows.append([name, shape, common.fmt_time(t_tk), common.fmt_time(t_pt), common.fmt_ratio(t_tk, t_pt),
                     _mib(m_tk), _mib(m_pt), f"<= {TARGET}", "met" if t_tk / t_pt <= TARGET else "missed"])
        common.log_row(rows[-1])
        del case


def run_sections(tk, torch, quick: bool = False) -> list[tuple[str, str, str]]:
    """[(title, note, markdown)] of the whole-model section (bench_nn's SECTION_MODULES)."""
    if not (torch.cuda.is_available() and tk.cuda.is_available() and not tk.cuda.EMULATED):
        return [("Whole models (training step)", "", "skipped: no GPU")]
    return [("Whole models (training step)",
             "One step: forward, loss, backward, gradients set to None (no optimizer), train mode, float32 with "
             "TF32 off on both sides; CUDA-synchronised wall-clock medians. Checked first against PyTorch on the "
             "same weights (copied by state-dict key) and data: loss and a few parameter gradients. Peak memory: "
             "max_memory_allocated over one step, each library's counter. tensorkit's first step tunes its conv "
             "kernels (cached on disk).",
             models_section(tk, torch, quick))]


if __name__ == "__main__":
    import torch

    import tensorkit as tk
    for title, note, body in run_sections(tk, torch, quick=bool(os.environ.get("QUICK"))):
        print(f"## {title}\n\n{note}\n\n{body}")
