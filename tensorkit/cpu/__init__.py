"""CPU kernels: Numba loops (and BLAS through numpy), registered with the dispatcher on import.

Kernels here see tensors' memory layout only; they know nothing about autograd or promotion.
"""
import os

# Numba's OpenMP threads spin after each parallel kernel by default, stealing the cores
# from whatever runs next (BLAS's own threads in matmul ran 1.6x slower; any other busy
# process stalls them). Passive waiting costs a wake-up (microseconds) per parallel kernel.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from . import _numba_cache

_numba_cache.install()          # before any kernel compiles: several processes may share the cache

from . import conv, indexing, linalg, norm, pointwise, pool, random, reduction, shape  # noqa: F401  (registration)
