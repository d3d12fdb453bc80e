"""Test session setup: runs before tensorkit is imported by any test module.

Numba's on-disk cache (and tensorkit's generated kernel sources) go under <repo>/.cache, so
a second run loads compiled kernels instead of compiling them again.
"""
import os

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(_ROOT, ".cache", "numba"))
os.environ.setdefault("TENSORKIT_CACHE_DIR", os.path.join(_ROOT, ".cache", "tensorkit"))

try:
    from hypothesis import settings

    # Numba compiles on first use: a deadline would flag the first example of every op.
    settings.register_profile("tensorkit", deadline=None, print_blob=True)
    settings.load_profile("tensorkit")
except ImportError:
    pass
