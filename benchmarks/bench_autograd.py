"""Autograd benchmarks: forward + backward of small models, tensorkit vs PyTorch eager, in one
process, on the CPU and (when both libraries see one) the GPU; and the engine's own cost per node.

Sections:

- models: a 3-layer MLP (batch 64, width 1024, relu) and an LSTM cell unrolled 50 steps
  (batch 32, input and hidden 256), float32; one iteration is forward, ``loss.backward()``,
  and dropping the gradients. The same code runs with ``lib = tensorkit`` and ``lib = torch``
  from the same random weights; the gradients of both are compared before anything is timed.
  On the GPU each iteration ends with a device synchronisation.
- engine overhead: backward through a chain of N one-element ``mul`` nodes, minus the time
  the chain's N gradient ``mul`` ops take when run eagerly (the work the VJPs do), per node.

Run through ``benchmarks/run.py --suite autograd``.
"""
from __future__ import annotations

import os
import statistics
import time

import numpy as np

import common

TITLE = "tensorkit autograd benchmarks"
MLP = dict(batch=64, width=1024, layers=3)
LSTM = dict(batch=32, size=256, steps=50)
CHAIN = 2000                     # nodes in the engine-overhead chain
ENGINE_TARGET_US = 15.0          # the target for the engine's own cost per node (CPU)


def versions() -> dict[str, str]:
    import torch
    return {"numpy": np.__version__, "torch": torch.__version__}


# ---- the models: one body for both libraries --------------------------------------------------------------
def _mlp_params(rng):
    w, n = MLP["width"], MLP["layers"]
    return [rng.standard_normal((w, w), dtype=np.float32) / np.float32(np.sqrt(w)) for _ in range(n)] + \
           [rng.standard_normal(w, dtype=np.float32) * 0.1 for _ in range(n)]


def _mlp_loss(lib, x, params):
    n = MLP["layers"]
    h = x
    for w, b in zip(params[:n], params[n:]):
        h = lib.relu(h @ w + b)
    return (h * h).mean()


def _lstm_params(rng):
    s = LSTM["size"]
    return [rng.standard_normal((s, 4 * s), dtype=np.float32) / np.float32(np.sqrt(s)),
            rng.standard_normal((s, 4 * s), dtype=np.float32) / np.float32(np.sqrt(s)),
            rng.standard_normal(4 * s, dtype=np.float32) * 0.1]


def _lstm_loss(lib, xs, params):
    wx, wh, b = params
    batch, s = LSTM["batch"], LSTM["size"]
    h = c = lib.zeros(batch, s, device=xs.device)
    for t in range(LSTM["steps"]):
        i, f, g, o = (xs[t] @ wx + h @ wh + b).chunk(4, 1)
        c = lib.sigmoid(f) * c + lib.sigmoid(i) * lib.tanh(g)
        h = lib.sigmoid(o) * lib.tanh(c)
    return h.sum()


_MODELS = {
    f"MLP {MLP['layers']}x{MLP['width']}, batch {MLP['batch']}":
        (lambda rng: rng.standard_normal((MLP["batch"], MLP["width"]), dtype=np.float32), _mlp_params, _mlp_loss),
    f"LSTM cell {LSTM['size']}, {LSTM['steps']} steps, batch {LSTM['batch']}":
        (lambda rng: rng.standard_normal((LSTM["steps"], LSTM["batch"], LSTM["size"]), dtype=np.float32),
         _lstm_params, _lstm_loss),
}


def _setup(lib, device: str, x: np.ndarray, params: list):
    """x and the parameters (requiring grad) as ``lib`` tensors on ``device``."""
    to = (lambda a: lib.tensor(a, device=device)) if lib.__name__ == "tensorkit" else \
        (lambda a: lib.from_numpy(a).to(device))
    return to(x), [to(p).requires_grad_() for p in params]


def _step(lib, loss_fn, x, params):
    """One training iteration without the update: forward, backward, gradients dropped."""
    loss = loss_fn(lib, x, params)
    loss.backward()
    grads = [p.grad for p in params]
    for p in params:
        p.grad = None
    return loss, grads


def _time(fn, sync, budget_s: float) -> float:
    """Median seconds per call, each call synchronised (at least 5 calls, about ``budget_s``)."""
    fn()
    sync()
    times = []
    start = time.perf_counter()
    while len(times) < 5 or time.perf_counter() - start < budget_s:
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
        if len(times) >= 200:
            break
    return statistics.median(times)


def _devices(tk, torch) -> list[str]:
    out = ["cpu"]
    if torch.cuda.is_available() and tk.cuda.is_available() and not tk.cuda.EMULATED:
        out.append("cuda")
    return out


def models_table(budget_s: float) -> str:
    import torch

    import tensorkit as tk

    rows, notes = [], []
    for device in _devices(tk, torch):
        sync = {"cpu": lambda: None, "cuda": lambda: (tk.cuda.synchronize(), torch.cuda.synchronize())}[device]
        for name, (make_x, make_params, loss_fn) in _MODELS.items():
            common.log(f"autograd {name} on {device}")
            rng = np.random.default_rng(0)
            x, params = make_x(rng), make_params(rng)
            (tx, tp), (px, pp) = _setup(tk, device, x, params), _setup(torch, device, x, params)
            try:
                (tl, tg), (pl, pg) = _step(tk, loss_fn, tx, tp), _step(torch, loss_fn, px, pp)
                common.check_close(f"{name} loss", tl.item(), pl.item(), rtol=1e-3, atol=1e-5)
                for i, (a, b) in enumerate(zip(tg, pg)):
                    want = b.cpu().numpy()
                    common.check_close(f"{name} grad {i}", a.cpu().numpy(), want, rtol=2e-3,
                                       atol=2e-3 * float(np.abs(want).max()))
            except Exception as e:  # noqa: BLE001 - reported in the table's notes, not timed
                notes.append(f"- {name} on {device}: {type(e).__name__}: {str(e).splitlines()[0]}")
                continue
            t_tk = _time(lambda: _step(tk, loss_fn, tx, tp), sync, budget_s)
            t_torch = _time(lambda: _step(torch, loss_fn, px, pp), sync, budget_s)
            rows.append([name, device, common.fmt_time(t_tk), common.fmt_time(t_torch),
                         common.fmt_ratio(t_tk, t_torch)])
    out = common.table(["forward + backward", "device", "tk ms/iter", "torch ms/iter", "tk/torch"], rows)
    return out + ("\n\nNot timed (failed the check against PyTorch):\n" + "\n".join(notes) if notes else "")


# ---- the engine's own cost per node -------------------------------------------------------------------------
def _engine_overhead(lib, budget_s: float) -> tuple[float, float]:
    """(seconds per node of backward, seconds per node of the VJPs' own ops) on a chain of
    CHAIN one-element ``y = y * 1.0001`` nodes on the CPU."""
    x = lib.tensor([1.0], requires_grad=True)

    def chain():
        y = x
        for _ in range(CHAIN):
            y = y * 1.0001
        return y

    def backward():
        chain().backward()
        x.grad = None

    g = lib.tensor([1.0])

    def vjp_ops():                      # what the chain's VJPs compute: CHAIN muls by the constant
        y = g
        for _ in range(CHAIN):
            y = y * 1.0001
        return y

    with lib.no_grad():
        t_ops = _time(vjp_ops, lambda: None, budget_s)
    t_fwd = _time(chain, lambda: None, budget_s)
    t_all = _time(backward, lambda: None, budget_s)
    return (t_all - t_fwd) / CHAIN, t_ops / CHAIN


def engine_table(budget_s: float) -> str:
    import torch

    import tensorkit as tk

    common.log("autograd engine overhead")
    rows = []
    per = {}
    for name, lib in (("tk", tk), ("torch", torch)):
        try:
            per[name] = _engine_overhead(lib, budget_s)
        except Exception as e:  # noqa: BLE001
            per[name] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
    for name in ("tk", "torch"):
        v = per[name]
        if isinstance(v, str):
            rows.append([name, "failed", "", "", v])
            continue
        bwd, ops = v
        engine = bwd - ops
        status = "" if name == "torch" else ("met" if engine * 1e6 <= ENGINE_TARGET_US else "missed")
        rows.append([name, common.fmt_time(bwd, "us"), common.fmt_time(ops, "us"), common.fmt_time(engine, "us"),
                     f"<= {ENGINE_TARGET_US:g} us {status}" if status else ""])
    return common.table(["library", "backward us/node", "VJP ops us/node", "engine us/node", "target"], rows)


def run(quick: bool = False) -> str:
    """The autograd suite as markdown (without the machine header; run.py adds it)."""
    import torch
    torch.set_num_threads(os.cpu_count() or 1)     # as many threads as tensorkit's Numba and BLAS use
    budget = 0.5 if quick else 2.0
    sections = [
        ("Forward + backward", "Median time per iteration (forward, backward, gradients dropped); float32; "
                               "on the GPU each iteration ends with a synchronisation.", models_table(budget)),
        ("Engine overhead per node (CPU)",
         f"A chain of {CHAIN} one-element `y * 1.0001` nodes: backward time per node (backward minus forward), "
         "the eager time of the VJPs' own ops per node, and their difference, the engine's own cost.",
         engine_table(budget)),
    ]
    return "\n\n".join(f"## {title}\n\n" + (f"{note}\n\n" if note else "") + body for title, note, body in sections)
