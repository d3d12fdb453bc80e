"""CPU matrix products: BLAS through numpy's matmul (float32/float64 go to sgemm/dgemm,
transposed views included, batches loop over BLAS calls). float16/bfloat16 are widened to
float32 and rounded back; integers use numpy's own loops."""
from __future__ import annotations

import numpy as np

from .. import _dispatch
from .. import dtypes as D

DTYPES = D.INTEGER_DTYPES + D.FLOAT_DTYPES   # numpy has no bool matmul; neither has PyTorch on CPU


@_dispatch.register("matmul", "cpu", DTYPES)
def matmul(a, b, out) -> None:
    x, y = a._np(), b._np()
    if a.dtype in (D.float16, D.bfloat16):
        out._np()[...] = np.matmul(x.astype(np.float32), y.astype(np.float32))
    else:
        np.matmul(x, y, out=out._np())
