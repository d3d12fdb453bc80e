"""GPU kernels: Triton, registered with the dispatcher on import (one module per op family),
and the pointwise codegen shared with the CPU backend (``codegen.py``).

Importing this package does not import Triton: generated kernels import it when they are
first built, so tensorkit runs on machines without Triton. Kernels here see tensors' memory
layout only; they know nothing about autograd or promotion.
"""
from . import attention, conv, indexing, matmul, norm, optim, pointwise, pool, random, reduction, shape  # noqa: F401  (registration)
