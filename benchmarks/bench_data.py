"""DataLoader throughput: samples per second, tensorkit vs ``torch.utils.data``, on the same data.

A TensorDataset of 60000 x 784 float32 rows with int64 labels (MNIST's shape), batch 64,
``shuffle=True``, with 0 and 2 worker processes (each library's default start method: fork on
Linux). The same numpy arrays back both libraries' tensors. A run is one epoch (a fixed number of
batches with ``--quick``); throughput counts the batches after the first, and the first batch's
latency (worker start-up included) is reported on its own. Before timing, both loaders' first
batches without shuffling are checked equal.

What differs: for a TensorDataset with the default collate_fn, tensorkit gathers a batch's rows
with one ``index_select`` per tensor (the same batch as stacking the samples); torch indexes and
stacks sample by sample. With workers both libraries pickle each batch through a pipe (torch
through shared memory), which on a dataset this cheap costs more than the fetch itself.

Run through ``benchmarks/run.py --suite data``.
"""
from __future__ import annotations

import time

import numpy as np

import common

TITLE = "tensorkit DataLoader benchmarks"
ROWS, FEATURES, BATCH = 60000, 784, 64
WORKERS = (0, 2)


def versions() -> dict[str, str]:
    import torch
    return {"numpy": np.__version__, "torch": torch.__version__}


def _loaders(x: np.ndarray, y: np.ndarray):
    import tensorkit as tk
    import torch
    import torch.utils.data as tdata
    from tensorkit.utils import data as kdata
    tk_ds = kdata.TensorDataset(tk.from_numpy(x), tk.from_numpy(y))
    torch_ds = tdata.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    return {"tensorkit": (kdata.DataLoader, tk_ds, lambda s: tk.Generator().manual_seed(s), kdata.default_collate),
            "torch": (tdata.DataLoader, torch_ds, lambda s: torch.Generator().manual_seed(s), tdata.default_collate)}


def _epoch(loader_cls, ds, gen, workers: int, max_batches: int | None, collate_fn) -> tuple[float, float]:
    """(seconds to the first batch, samples/s over the batches after it)."""
    t0 = time.perf_counter()
    n, t1 = 0, None
    for i, (xb, _) in enumerate(loader_cls(ds, batch_size=BATCH, shuffle=True, num_workers=workers,
                                           generator=gen, collate_fn=collate_fn)):
        if t1 is None:
            t1 = time.perf_counter()
        else:
            n += xb.shape[0]
        if max_batches is not None and i + 1 >= max_batches:
            break
    return t1 - t0, n / (time.perf_counter() - t1)


def run(quick: bool = False) -> str:
    """The data suite as markdown (without the machine header; run.py adds it)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((ROWS, FEATURES), dtype=np.float32)
    y = rng.integers(0, 10, ROWS, dtype=np.int64)
    libs = _loaders(x, y)
    firsts = {name: next(iter(lib[0](lib[1], batch_size=BATCH))) for name, lib in libs.items()}
    for k in range(2):
        common.check_close(f"first batch [{k}]", firsts["tensorkit"][k].numpy(), firsts["torch"][k].numpy(),
                           rtol=0)
    max_batches = 200 if quick else None
    repeats = 1 if quick else 3
    rows = []
    # "per sample": a collate_fn that only calls default_collate hides the dataset's type, so both
    # libraries index sample by sample and stack (the general path any Dataset takes)
    for how in ("default", "per sample"):
        for workers in WORKERS:
            result = {}
            for name, (cls, ds, gen, collate) in libs.items():
                fn = None if how == "default" else (lambda b, c=collate: c(b))
                runs = [_epoch(cls, ds, gen(r), workers, max_batches, fn) for r in range(repeats)]
                result[name] = (min(r[0] for r in runs), max(r[1] for r in runs))
                common.log(f"data: {name} {how} {workers} workers: {result[name][1]:.0f} samples/s")
            tk_rate, torch_rate = result["tensorkit"][1], result["torch"][1]
            rows.append([how, str(workers), f"{tk_rate:,.0f}", f"{torch_rate:,.0f}", f"{tk_rate / torch_rate:.2f}",
                         f"{result['tensorkit'][0] * 1e3:.0f}", f"{result['torch'][0] * 1e3:.0f}"])
    note = (f"TensorDataset of {ROWS} x {FEATURES} float32 + int64 labels, batch {BATCH}, shuffle=True; "
            f"{'200 batches' if quick else f'one epoch, best of {repeats}'}. Throughput excludes the first batch; "
            "ratio > 1 means tensorkit is faster. collate 'default': the loader's default collate_fn (tensorkit "
            "gathers the rows of a TensorDataset in one index_select per tensor); 'per sample': "
            "`collate_fn=lambda b: default_collate(b)`, so both index and stack sample by sample.")
    body = common.table(["collate", "workers", "tensorkit samples/s", "torch samples/s", "tk / torch",
                         "tensorkit first batch ms", "torch first batch ms"], rows)
    return f"## DataLoader throughput (CPU)\n\n{note}\n\n{body}"
