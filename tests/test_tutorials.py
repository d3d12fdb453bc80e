"""Every tutorial runs to the end: each ``tutorials/*.py`` in a fresh interpreter, exit code 0.

The subprocess inherits the environment (NUMBA_CACHE_DIR included), so with a warm cache
each one takes a few seconds.
"""
import os
import pathlib
import subprocess
import sys

import pytest

TUTORIALS = sorted((pathlib.Path(__file__).resolve().parent.parent / "tutorials").glob("*.py"))


def test_there_are_tutorials():
    assert TUTORIALS, "no tutorials/*.py found"


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.name for p in TUTORIALS])
def test_tutorial_runs(path):
    proc = subprocess.run([sys.executable, str(path)], cwd=path.parent.parent, env=dict(os.environ),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{path.name} exited with {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
