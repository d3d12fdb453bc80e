"""Every tutorial runs to the end: each ``tutorials/*.py`` in a fresh interpreter, exit code 0.

They run in their quick mode (``TENSORKIT_TUTORIAL_QUICK=1``: the digits CNN trains one epoch
on a subset and skips its accuracy target) and write their outputs to a temporary directory
(``TENSORKIT_TUTORIAL_OUT``). The subprocess inherits the rest of the environment
(NUMBA_CACHE_DIR included), so with a warm cache each one takes a few seconds. Tutorials
with outputs get those checked too: tutorial 3's plot is a PNG and its checkpoint loads
with ``tk.load`` into the model class imported from the script.
"""
import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

import tensorkit as tk

TUTORIALS = sorted((pathlib.Path(__file__).resolve().parent.parent / "tutorials").glob("[0-9]*.py"))  # _narrate.py is a helper, not a tutorial


def _import_path(path: pathlib.Path):
    """Import a script by path (its training sits under ``__main__``, so nothing runs)."""
    spec = importlib.util.spec_from_file_location(f"_tutorial_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_digits_cnn(path: pathlib.Path, out: pathlib.Path, stdout: str) -> None:
    png, ckpt = out / "digits_cnn.png", out / "digits_cnn.safetensors"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{png} is not a PNG"
    assert png.stat().st_size > 10_000, f"{png} is suspiciously small ({png.stat().st_size} bytes)"
    assert str(png) in stdout and str(ckpt) in stdout, "the script should say where its outputs went"
    state = tk.load(ckpt)
    assert state["epoch"] == 1 and 0.0 <= state["accuracy"] <= 1.0
    assert state["optimizer"]["state"], "the optimizer's state (Adam's moments) should be in the checkpoint"
    model = _import_path(path).DigitsCNN()
    model.load_state_dict(state["model"])          # strict: every key and shape matches the class
    assert model(tk.zeros(2, 1, 8, 8)).shape == (2, 10)


OUTPUT_CHECKS = {"03_digits_cnn.py": _check_digits_cnn}


def test_there_are_tutorials():
    assert TUTORIALS, "no tutorials/*.py found"
    assert set(OUTPUT_CHECKS) <= {p.name for p in TUTORIALS}


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.name for p in TUTORIALS])
def test_tutorial_runs(path, tmp_path):
    # One BLAS thread unless the caller says otherwise: next to other test workers, OpenBLAS's
    # spinning threads made tutorial 4's tiny matmuls ~25x slower on the 2-core VM (numpy's 500
    # steps: 22 s instead of 0.8 s).
    env = {"OPENBLAS_NUM_THREADS": "1", **os.environ,
           "TENSORKIT_TUTORIAL_QUICK": "1", "TENSORKIT_TUTORIAL_OUT": str(tmp_path), "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, str(path)], cwd=path.parent.parent, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{path.name} exited with {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    if path.name in OUTPUT_CHECKS:
        OUTPUT_CHECKS[path.name](path, tmp_path, proc.stdout)
