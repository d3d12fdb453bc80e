"""CPU kernels: Numba loops (and BLAS through numpy), registered with the dispatcher on import.

Kernels here see tensors' memory layout only; they know nothing about autograd or promotion.
"""
from . import indexing, linalg, pointwise, reduction, shape  # noqa: F401  (registration)
