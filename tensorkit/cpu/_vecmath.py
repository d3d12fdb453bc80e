"""Vectorisable float32 math for the generated Numba kernels.

Numba calls libm's ``expf`` one element at a time unless LLVM has Intel's SVML, which
pip's llvmlite lacks; numpy's SIMD ``exp`` is then several times faster. ``exp_f32`` is
pure arithmetic (Cephes' range reduction and polynomial, 2**n built from its bits), so
LLVM vectorises loops over it. Accuracy: <= 1.5 ulp over the normal range; inf, -inf,
NaN, overflow and subnormal results as libm.
"""
import math

import llvmlite.ir as ir
import numba
import numpy as np
from numba.core import types
from numba.extending import intrinsic, overload

# Generated kernels embed this in their source, so Numba's on-disk cache (which does not
# track imported functions) is invalidated when the math here changes.
VERSION = 1


@intrinsic
def _bits_to_f32(typingctx, x):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


@numba.njit(inline="always", error_model="numpy", cache=True)
def exp_f32(x):
    # clamp so 2**n stays representable as two factors; NaN passes both tests and stays NaN
    xc = x
    if xc > np.float32(89.0):
        xc = np.float32(89.0)
    if xc < np.float32(-104.0):
        xc = np.float32(-104.0)
    n = np.floor(xc * np.float32(1.44269504088896341) + np.float32(0.5))
    r = xc - n * np.float32(0.693359375) - n * np.float32(-2.12194440e-4)   # ln 2 split in two
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    p = p * (r * r) + r + np.float32(1.0)
    k = np.int32(n)
    k1 = k >> 1                      # 2**n as 2**k1 * 2**k2: subnormal and overflowing results
    k2 = k - k1
    return p * _bits_to_f32((k1 + np.int32(127)) << 23) * _bits_to_f32((k2 + np.int32(127)) << 23)


def vexp(x):
    """``exp`` for jitted code that is generic over float32 / float64: the vectorisable
    ``exp_f32`` for float32, libm's for anything else."""
    return np.exp(x)


@overload(vexp, jit_options={"inline": "always"})
def _vexp(x):
    if x == types.float32:
        return lambda x: exp_f32(x)
    return lambda x: math.exp(x)
