"""Timing helpers and markdown tables shared by the benchmark suites.

Nothing here knows about tensorkit: a suite hands in callables and gets back seconds,
and hands in rows and gets back markdown. Timings are medians of many samples, each
sample the mean of a batch of calls long enough that a scheduler tick (~4 ms on small
shared machines) is one of many in it rather than the whole measurement.
"""
from __future__ import annotations

import datetime
import math
import os
import platform
import socket
import statistics
import sys
import time

import numpy as np


def measure(fns: dict, *, budget_s: float = 1.0, sample_s: float = 0.02, min_samples: int = 7,
            max_samples: int = 200) -> dict:
    """Median seconds per call of each ``fns[name]()``.

    Calls are batched so each sample lasts about ``sample_s``. Samples of the different
    functions are interleaved (one of each per round), so a change in machine load while
    measuring hits them all alike; rounds run until ``budget_s`` per function is spent (at
    least ``min_samples``, at most ``max_samples``).
    """
    numbers, rounds = {}, max_samples
    for name, fn in fns.items():
        fn()                               # warm-up: compilation, allocator, caches
        t0 = time.perf_counter()
        fn()
        once = max(time.perf_counter() - t0, 1e-7)
        numbers[name] = max(1, round(sample_s / once))
        rounds = min(rounds, max(min_samples, int(budget_s / (once * numbers[name]))))
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            number = numbers[name]
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            times[name].append((time.perf_counter() - t0) / number)
    return {name: statistics.median(ts) for name, ts in times.items()}


def check_close(name: str, got, want, *, rtol: float, atol: float = 0.0) -> None:
    """Raise AssertionError unless ``got`` (any array-like) matches the numpy ``want``."""
    got = np.asarray(got)
    if got.shape != np.shape(want):
        raise AssertionError(f"{name}: shape {got.shape}, expected {np.shape(want)}")
    if not np.allclose(got, want, rtol=rtol, atol=atol):
        err = np.max(np.abs(got.astype(np.float64) - np.asarray(want, np.float64)))
        raise AssertionError(f"{name}: max abs error {err:.3g} (rtol={rtol}, atol={atol})")


def fmt_time(seconds: float | None, unit: str = "ms") -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "—"
    scale = {"s": 1.0, "ms": 1e3, "us": 1e6}[unit]
    v = seconds * scale
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def fmt_ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A markdown table (columns padded so it also reads as plain text)."""
    cells = [headers] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_tag() -> str:
    """'ci' on CI machines, else the host name: the results file is named after it."""
    return "ci" if os.environ.get("CI") else socket.gethostname().split(".")[0]


def header(title: str, versions: dict[str, str]) -> str:
    """Markdown header naming the machine, date and library versions."""
    try:
        with open("/proc/loadavg") as f:
            loads = f.read().split()[:3]
        load = " / ".join(loads)
        if float(loads[0]) > 0.5 * (os.cpu_count() or 1):
            # Another process holds a core: threaded kernels wait for their slowest thread.
            load += " **(machine busy: multi-threaded timings are unreliable)**"
    except (OSError, ValueError, IndexError):
        load = "n/a"
    lines = [f"# {title}", "",
             f"- machine: `{machine_tag()}`, {cpu_model()}, {os.cpu_count()} cores",
             f"- date: {datetime.date.today().isoformat()}",
             f"- load average at start (1/5/15 min): {load}",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in
                                        {"python": platform.python_version(), **versions}.items())]
    return "\n".join(lines)


def log(msg: str) -> None:
    """Progress goes to stderr so stdout stays the table."""
    print(msg, file=sys.stderr, flush=True)


def log_row(row: list) -> None:
    """A finished table row to stderr as it is measured, so a run cut short keeps its figures."""
    log("  row: | " + " | ".join(map(str, row)) + " |")


def bench_sections() -> list[str]:
    """The lower-case words of ``TK_BENCH_SECTIONS`` (comma-separated): a suite's partial run
    while working on one part; empty for all. Each suite says what its words select."""
    return [w.strip().lower() for w in os.environ.get("TK_BENCH_SECTIONS", "").split(",") if w.strip()]
