"""Run the benchmark suites: print their markdown tables, and with --save keep them.

    python benchmarks/run.py                 # every suite available on this machine
    python benchmarks/run.py --save          # also write benchmarks/results/<suite>-<machine>-<date>.md
    python benchmarks/run.py --quick         # shorter timing budgets (a smoke run, not for the record)

A suite is a module with ``TITLE``, ``versions() -> dict`` and ``run(quick) -> str``
(markdown without the machine header, which this driver adds).
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

# Both libraries run their CPU work on OpenMP-style thread pools in one process; with the default
# (active) wait policy a pool's threads spin after each parallel region and take the cores the
# other library's next op needs. Set before any suite imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import bench_autograd
import bench_cpu
import bench_data
import bench_gpu
import bench_nn
import bench_train
import common

SUITES = {"cpu": bench_cpu, "gpu": bench_gpu, "autograd": bench_autograd, "nn": bench_nn, "data": bench_data,
          "train": bench_train}
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=sorted(SUITES), action="append", help="suite to run (default: all)")
    p.add_argument("--save", action="store_true", help="write the tables under benchmarks/results/")
    p.add_argument("--quick", action="store_true", help="short timing budgets")
    args = p.parse_args()
    for name in args.suite or list(SUITES):
        suite = SUITES[name]
        start = time.perf_counter()
        head = common.header(suite.TITLE, suite.versions())
        text = f"{head}\n\n{suite.run(quick=args.quick)}\n"
        common.log(f"{name} suite: {time.perf_counter() - start:.0f} s")
        print(text, flush=True)
        if args.save:
            os.makedirs(RESULTS, exist_ok=True)
            path = os.path.join(RESULTS, f"{name}-{common.machine_tag()}-{datetime.date.today().isoformat()}.md")
            with open(path, "w") as f:
                f.write(text)
            common.log(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
