"""Test session setup: runs before tensorkit is imported by any test module.

Numba's on-disk cache (and tensorkit's generated kernel sources) go under <repo>/.cache, so
a second run loads compiled kernels instead of compiling them again. The emulated ``cuda``
device is on unless the environment says ``TENSORKIT_INTERPRET=0``.
"""
import os

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(_ROOT, ".cache", "numba"))
os.environ.setdefault("TENSORKIT_CACHE_DIR", os.path.join(_ROOT, ".cache", "tensorkit"))
# No GPU in CI: the 'cuda' device is emulated and its Triton kernels run in Triton's interpreter,
# so the op table tests them too (tensorkit.cuda reads this on import). On a GPU machine, run
# with TENSORKIT_INTERPRET=0 to test the real device.
os.environ.setdefault("TENSORKIT_INTERPRET", "1")

# `make test-gpu` sets TENSORKIT_BLOCK_TORCH=1: torch then cannot be imported at all, which
# proves tensorkit's GPU path (its own Triton driver included) never needs it. Tests that use
# torch as a reference skip themselves through their `importorskip` / `torch is None` guards.
if os.environ.get("TENSORKIT_BLOCK_TORCH") == "1":
    import importlib.abc
    import sys

    class _BlockTorch(importlib.abc.MetaPathFinder):
        """``import torch`` raises ImportError. (A ``None`` in ``sys.modules`` would do that too,
        but libraries that look for an already-imported torch there, e.g. scipy's array API
        layer, then find a 'torch' entry and fail on it.)"""

        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ModuleNotFoundError(f"{name} is blocked (TENSORKIT_BLOCK_TORCH=1): tensorkit must not need it")
            return None

    sys.modules.pop("torch", None)
    sys.meta_path.insert(0, _BlockTorch())

try:
    from hypothesis import settings

    # Numba compiles on first use: a deadline would flag the first example of every op.
    settings.register_profile("tensorkit", deadline=None, print_blob=True)
    settings.load_profile("tensorkit")
except ImportError:
    pass
