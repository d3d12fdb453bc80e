"""CPU benchmarks: tensorkit vs numpy vs PyTorch (CPU), in one process per measurement.

Sections:

- large ops (pointwise, reductions, softmax, matmul), run in one subprocess per thread
  count, with NUMBA_NUM_THREADS / OMP_NUM_THREADS / torch.set_num_threads set before any
  import, then merged into one table;
- per-op overhead on 2-element tensors, in this process;
- first call in a fresh process, with a cold and then a warm Numba/tensorkit cache.

Every result is checked against numpy before it is timed; a case that raises or gives a
wrong answer is reported, not timed. Inputs are random (never zeros).

Run through ``benchmarks/run.py``; ``python bench_cpu.py --large --threads N`` is the
child entry point (prints JSON).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap

import numpy as np

import common

TITLE = "tensorkit CPU benchmarks"
N_POINTWISE = 1 << 22           # 4M float32 = 16 MiB per operand: beyond L2, memory-bound
ROWS, COLS = 4096, 1024         # reductions and softmax
MATMUL_N = 1024

# The targets: (max tk/numpy ratio, wording).
POINTWISE_TARGET = (1.0, "tk/np <= 1.0 @2T")
MATMUL_TARGET = (1.1, "tk/np <= 1.1 @2T")
TINY_TARGET_US = 10.0           # per-op overhead on tiny tensors (PyTorch CPU: ~4 us)


def versions() -> dict[str, str]:
    import numba
    import torch
    return {"numpy": np.__version__, "numba": numba.__version__, "torch": torch.__version__}


def _first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


# ---- large ops (child process) ------------------------------------------------------------
def _large_cases():
    """(name, shape text, numpy fn, torch fn, tensorkit fn, tolerances, target) for each case."""
    import torch

    import tensorkit as tk

    rng = np.random.default_rng(0)
    a = rng.standard_normal(N_POINTWISE, dtype=np.float32)
    b = rng.standard_normal(N_POINTWISE, dtype=np.float32)
    x = rng.standard_normal((ROWS, COLS), dtype=np.float32)
    m1 = rng.standard_normal((MATMUL_N, MATMUL_N), dtype=np.float32)
    m2 = rng.standard_normal((MATMUL_N, MATMUL_N), dtype=np.float32)
    ta, tb, tx, tm1, tm2 = map(tk.from_numpy, (a, b, x, m1, m2))
    pa, pb, px, pm1, pm2 = map(torch.from_numpy, (a, b, x, m1, m2))

    def np_softmax(v):
        e = np.exp(v - v.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    # Float32 sums differ from numpy's pairwise sum by summation order: bound by eps * sum|x|.
    row_atol = 1e-5 * float(np.abs(x).sum(axis=-1).max())
    full_atol = 1e-5 * float(np.abs(x).sum())
    pw = f"{N_POINTWISE // (1 << 20)}M f32"
    red = f"({ROWS}, {COLS}) f32"
    return [
        ("a + b", pw, lambda: a + b, lambda: pa + pb, lambda: ta + tb, (1e-6, 0), POINTWISE_TARGET),
        ("a * b", pw, lambda: a * b, lambda: pa * pb, lambda: ta * tb, (1e-6, 0), POINTWISE_TARGET),
        ("exp(a)", pw, lambda: np.exp(a), lambda: torch.exp(pa), lambda: tk.exp(ta), (1e-5, 0), POINTWISE_TARGET),
        ("x.sum(dim=-1)", red, lambda: x.sum(axis=-1), lambda: px.sum(dim=-1), lambda: tx.sum(dim=-1),
         (1e-5, row_atol), POINTWISE_TARGET),
        ("x.sum()", red, lambda: x.sum(), lambda: px.sum(), lambda: tx.sum(), (1e-5, full_atol), POINTWISE_TARGET),
        ("softmax(x, dim=-1)", red, lambda: np_softmax(x), lambda: torch.softmax(px, -1), lambda: tk.softmax(tx, -1),
         (1e-4, 1e-6), POINTWISE_TARGET),
        ("matmul a @ b", f"{MATMUL_N}x{MATMUL_N} f32", lambda: m1 @ m2, lambda: pm1 @ pm2, lambda: tm1 @ tm2,
         (1e-4, 1e-3), MATMUL_TARGET),
    ]


def _checked(name, want, fns, tol):
    """The subset of ``fns`` ({lib: (fn, to_numpy)}) whose result matches ``want``, and
    {lib: error} for the others."""
    ok, errors = {}, {}
    for lib, (fn, to_numpy) in fns.items():
        try:
            common.check_close(f"{lib} {name}", to_numpy(fn()), want, rtol=tol[0], atol=tol[1])
            ok[lib] = fn
        except Exception as e:  # noqa: BLE001  (a missing kernel or a wrong answer is a row, not a crash)
            errors[lib] = _first_line(e)
    return ok, errors


def run_large_child(threads: int, budget_s: float) -> list[dict]:
    import torch
    torch.set_num_threads(threads)
    results = []
    for name, shape, np_fn, torch_fn, tk_fn, tol, target in _large_cases():
        common.log(f"  [{threads}T] {name}")
        as_np = lambda t: t.numpy()
        ok, errors = _checked(name, np_fn(), {"tk": (tk_fn, as_np), "numpy": (np_fn, np.asarray),
                                              "torch": (torch_fn, as_np)}, tol)
        times = common.measure(ok, budget_s=budget_s)
        results.append({"name": name, "shape": shape, "threads": threads, "target": target, "errors": errors,
                        **{lib: times.get(lib) for lib in ("tk", "numpy", "torch")}})
    return results


def _thread_env(threads: int) -> dict:
    env = dict(os.environ)
    for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    # All three libraries interleave in one process; torch's OpenMP threads spin after each
    # op by default and would slow whichever library is timed next. Passive waiting for all
    # (tensorkit sets it for itself anyway) keeps the comparison about the ops.
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    return env


def large_table(budget_s: float) -> str:
    thread_counts = sorted({1, min(2, os.cpu_count() or 1)})
    rows_by_threads = {}
    for n in thread_counts:
        common.log(f"large ops, {n} thread(s) (subprocess)")
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--large", "--threads", str(n),
                               "--budget", str(budget_s)], env=_thread_env(n), capture_output=True, text=True)
        sys.stderr.write(proc.stderr)
        if proc.returncode != 0:
            raise RuntimeError(f"large-op benchmark with {n} threads failed (exit {proc.returncode})")
        rows_by_threads[n] = json.loads(proc.stdout.strip().splitlines()[-1])
    rows, notes = [], []
    for i in range(len(rows_by_threads[thread_counts[0]])):
        for n in thread_counts:
            r = rows_by_threads[n][i]
            limit, wording = r["target"]
            judged = n == thread_counts[-1]
            if r["tk"] is None:
                status = "missed (failed)" if judged else "—"
            elif judged:
                status = "met" if r["tk"] / r["numpy"] <= limit else "missed"
            else:
                status = "—"
            rows.append([r["name"], r["shape"], str(n), common.fmt_time(r["tk"]), common.fmt_time(r["numpy"]),
                         common.fmt_time(r["torch"]), common.fmt_ratio(r["tk"], r["numpy"]),
                         common.fmt_ratio(r["tk"], r["torch"]), wording if judged else "", status])
            for lib, err in r["errors"].items():
                notes.append(f"- {r['name']} ({n}T), {lib}: {err}")
    out = common.table(["op", "size", "threads", "tk ms", "numpy ms", "torch ms", "tk/numpy", "tk/torch",
                        "target", "status"], rows)
    return out + ("\n\nNot timed:\n" + "\n".join(notes) if notes else "")


# ---- per-op overhead on tiny tensors (this process) ----------------------------------------
def tiny_table(budget_s: float) -> str:
    import torch

    import tensorkit as tk

    a = np.array([1.5, -2.25], dtype=np.float32)
    b = np.array([0.5, 3.0], dtype=np.float32)
    ta, tb, pa, pb = tk.from_numpy(a), tk.from_numpy(b), torch.from_numpy(a), torch.from_numpy(b)
    cases = [("a + b", lambda: a + b, lambda: pa + pb, lambda: ta + tb),
             ("a.sum()", lambda: a.sum(), lambda: pa.sum(), lambda: ta.sum())]
    rows, notes = [], []
    for name, np_fn, torch_fn, tk_fn in cases:
        common.log(f"tiny {name}")
        to_np = lambda t: t.numpy()
        ok, errors = _checked(name, np_fn(), {"tk": (tk_fn, to_np), "numpy": (np_fn, np.asarray),
                                              "torch": (torch_fn, to_np)}, (1e-6, 0))
        t = common.measure(ok, budget_s=budget_s, sample_s=0.005)
        notes += [f"- {name}, {lib}: {err}" for lib, err in errors.items()]
        tk_t = t.get("tk")
        status = "missed (failed)" if tk_t is None else ("met" if tk_t * 1e6 <= TINY_TARGET_US else "missed")
        rows.append([name, "2 f32", common.fmt_time(tk_t, "us"), common.fmt_time(t.get("numpy"), "us"),
                     common.fmt_time(t.get("torch"), "us"), common.fmt_ratio(tk_t, t.get("numpy")),
                     common.fmt_ratio(tk_t, t.get("torch")), f"tk <= {TINY_TARGET_US:g} us", status])
    out = common.table(["op", "size", "tk us", "numpy us", "torch us", "tk/numpy", "tk/torch", "target", "status"],
                       rows)
    return out + ("\n\nNot timed:\n" + "\n".join(notes) if notes else "")


# ---- first call in a fresh process ---------------------------------------------------------
_FIRST_CALL = textwrap.dedent("""
    import json, time
    t0 = time.perf_counter()
    import tensorkit as tk
    res = {"import tensorkit": time.perf_counter() - t0}
    import numpy as np
    a = tk.from_numpy(np.array([1.5, -2.25, 0.5], dtype=np.float32))
    b = tk.from_numpy(np.array([0.25, 3.0, -1.0], dtype=np.float32))
    for name, fn in (("first a + b", lambda: a + b), ("first a.sum()", lambda: a.sum()),
                     ("first tk.exp(a)", lambda: tk.exp(a))):
        t0 = time.perf_counter()
        try:
            fn()
            res[name] = time.perf_counter() - t0
        except Exception as e:
            res[name] = type(e).__name__ + ": " + str(e).splitlines()[0]
    print(json.dumps(res))
""")


def _first_call(cache: str) -> dict:
    env = dict(os.environ, TENSORKIT_CACHE_DIR=cache, NUMBA_CACHE_DIR=os.path.join(cache, "numba"))
    proc = subprocess.run([sys.executable, "-c", _FIRST_CALL], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"first-call subprocess failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def first_call_table() -> str:
    with tempfile.TemporaryDirectory(prefix="tk-bench-cache-") as cache:
        common.log("first call, cold cache (subprocess)")
        cold = _first_call(cache)
        common.log("first call, warm cache (subprocess)")
        warm = _first_call(cache)
    cell = lambda v: common.fmt_time(v) if isinstance(v, float) else "failed"
    rows = [[k, cell(cold[k]), cell(warm[k])] for k in cold]
    notes = sorted({f"- {k}: {v}" for run in (cold, warm) for k, v in run.items() if not isinstance(v, float)})
    out = common.table(["step (fresh process)", "cold cache ms", "warm cache ms"], rows)
    return out + ("\n\nFailed:\n" + "\n".join(notes) if notes else "")


# ---- the suite -----------------------------------------------------------------------------
def run(quick: bool = False) -> str:
    """The whole CPU suite as markdown (without the machine header; run.py adds it)."""
    budget = 0.3 if quick else 1.2
    sections = [
        ("Large ops (median time per call)",
         "Each thread count runs in its own process (OMP_WAIT_POLICY=PASSIVE, NUMBA_NUM_THREADS / OMP_NUM_THREADS / "
         "torch.set_num_threads set before import). numpy's pointwise ops and reductions are "
         "single-threaded; its matmul uses BLAS threads. Targets are judged on the 2-thread row.",
         large_table(budget)),
        ("Per-op overhead on 2-element tensors", "", tiny_table(min(budget, 0.5))),
        ("First call in a fresh process",
         "Cold: TENSORKIT_CACHE_DIR and NUMBA_CACHE_DIR point to a new empty directory; "
         "warm: a second process with the same directory.",
         first_call_table()),
    ]
    return "\n\n".join(f"## {title}\n\n" + (f"{note}\n\n" if note else "") + body for title, note, body in sections)


def _child_main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--large", action="store_true", required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--budget", type=float, default=1.2)
    args = p.parse_args()
    print(json.dumps(run_large_child(args.threads, args.budget)))


if __name__ == "__main__":
    _child_main()
