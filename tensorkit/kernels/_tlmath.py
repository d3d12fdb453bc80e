"""Device functions the generated pointwise kernels call (``tm.<name>`` in their source).

Integer and float division with Python's sign rules, integer powers, and ``libdevice``:
NVIDIA's libdevice on a GPU (accurate to an ulp or two, unlike ``tl.exp``'s fast
approximation), numpy when Triton's interpreter runs the kernel (it has no libdevice). The
generated source is the same in both modes.

Triton's own ``//`` and ``%`` follow C: they truncate toward zero, and ``%`` (also on
floats, where it is ``fmod``) takes the dividend's sign.
"""
import os

import triton
import triton.language as tl

if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    from ._interpret import libdevice
else:
    from triton.language.extra import libdevice  # noqa: F401  (used by generated kernels)


@triton.jit
def _fix_sign(r, b):
    # C remainder -> Python's (the divisor's sign): whether to move r by one b
    return (r != 0) & ((r < 0) != (b < 0))


@triton.jit
def floordiv_int(a, b):
    """floor(a / b) for integers."""
    return a // b - _fix_sign(a % b, b).to(a.dtype)


@triton.jit
def remainder_int(a, b):
    """a - b * floor(a / b) for integers: the result takes b's sign."""
    r = a % b
    return r + _fix_sign(r, b).to(a.dtype) * b


@triton.jit
def remainder_float(a, b):
    """Python's float %: fmod moved into b's sign; a zero result takes b's sign (numpy's rule)."""
    r = libdevice.fmod(a, b)        # GPUs' float % is a fast approximation (inf % b gives inf)
    r = tl.where(_fix_sign(r, b), r + b, r)
    return tl.where(r == 0, tl.where(b < 0, -0.0, 0.0).to(r.dtype), r)


@triton.jit
def floordiv_float(a, b):
    """numpy's float floor_divide (npy_divmod): exact where floor(a / b) would round badly."""
    mod = libdevice.fmod(a, b)
    div = (a - mod) / b
    div = tl.where(_fix_sign(mod, b), div - 1, div)
    fl = tl.floor(div)
    fl = tl.where(div - fl > 0.5, fl + 1, fl)
    q = a / b
    fl = tl.where(div == 0, tl.where(q < 0, -0.0, 0.0).to(q.dtype), fl)
    return tl.where(b == 0, q, fl)


@triton.jit
def ipow(a, b):
    """a ** b for integers, b >= 0 (checked on the host), wrapping like repeated multiplication."""
    r = (a * 0 + b * 0 + 1).to(a.dtype)
    base = (a + b * 0).to(a.dtype)
    e = (b + a * 0).to(a.dtype)
    for _ in range(63):                 # square-and-multiply over the exponent's bits
        r = tl.where((e & 1) != 0, r * base, r)
        base = base * base
        e = e >> 1
    return r
