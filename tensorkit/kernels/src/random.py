"""Philox random kernels: fill a contiguous tensor of ``n`` elements from a generator's (seed, offset).

Every kernel draws Triton's Philox4x32-10 (``tl.randint4x``): key = the 64-bit seed, counter =
(offset + c) as 64 bits in the counter's first two words. One counter gives four uint32 draws
(lanes); a call uses ``q`` counters (a multiple of 16) and lays the lanes out in four regions:

    element  lane * q + c   <-   lane ``lane`` of counter ``offset + c``,   c in [0, q)

(two regions when an element takes two draws: float64, wide integer ranges). Each program
runs ``BLOCK`` consecutive counters and writes ``BLOCK`` contiguous elements per region, so
stores are coalesced and no draw is wasted; the numbers depend on (seed, offset, n) only,
never on the block size or the GPU.

Draws to values (``r``: a uint32 draw):

* uniform [0, 1) in a dtype with ``BITS`` significant bits: ``(r >> (32 - BITS)) * 2**-BITS``
  (exact, at most ``1 - 2**-BITS``: never 1, also for float16/bfloat16, as PyTorch draws in the
  target's mantissa width). ``tl.rand`` is not used: it maps 31 bits through a float rounding
  (uneven bins near 1, and 0 twice as likely). float64 takes 53 bits from two draws, as numpy.
* normal: Box-Muller on pairs, ``sqrt(-2 log u1) * (cos, sin)(2 pi u2)`` with u1 in (0, 1]:
  four normals per counter (two for float64); ``tl.randn`` would spend a counter per normal.
* integers in [low, low + span): ``floor(r * span / 2**32)`` for span <= 2**16 (each value's
  probability is off by at most span / 2**32 relative); above, 64 random bits:
  ``floor(x * span / 2**64)`` (off by at most span / 2**64: under 2**-32 for spans up to 2**32).
* bernoulli(p): ``r < p * 2**32`` (resolution 2**-32), compared exactly in integers for a
  number p, in float64 for a tensor of probabilities.

Scalars that need 64 bits (seed, offset, float64 parameters) arrive as two int32 halves: a
Python int becomes an i32 or an i64 argument depending on its value, which would compile a
kernel per case (and a float becomes a float32).
"""
import triton
import triton.language as tl


# Scalars that change from call to call: no specialization (Triton would compile another kernel
# for a value of 1 or a multiple of 16)
_STATE = ["seed_lo", "seed_hi", "off_lo", "off_hi"]


@triton.jit
def _u64(lo, hi):
    """The uint64 whose halves are the int32 bit patterns ``lo``, ``hi``."""
    return (hi.to(tl.uint32, bitcast=True).to(tl.uint64) << 32) | lo.to(tl.uint32, bitcast=True).to(tl.uint64)


@triton.jit
def _f64(lo, hi):
    """The float64 whose bit pattern has the halves ``lo``, ``hi``."""
    return _u64(lo, hi).to(tl.float64, bitcast=True)


@triton.jit
def _draws(q, seed_lo, seed_hi, off_lo, off_hi, BLOCK: tl.constexpr):
    """This program's counters c (``live``: c < q; the last program runs past q) and their four
    draws, uint32 blocks: Philox4x32-10 of counters (offset + c) under key ``seed``."""
    c = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    r0, r1, r2, r3 = tl.randint4x(_u64(seed_lo, seed_hi), _u64(off_lo, off_hi) + c.to(tl.uint64))
    return c, c < q, r0, r1, r2, r3


@triton.jit
def _unit(r, BITS: tl.constexpr):
    """A float32 in [0, 1 - 2**-BITS], a multiple of 2**-BITS, from the top BITS bits of ``r``."""
    return (r >> (32 - BITS)).to(tl.float32) * (1.0 / (1 << BITS))


@triton.jit
def _unit53(a, b):
    """A float64 in [0, 1 - 2**-53] from 27 bits of ``a`` and 26 of ``b`` (numpy's construction)."""
    k = ((a >> 5).to(tl.uint64) << 26) | (b >> 6).to(tl.uint64)
    return k.to(tl.float64) * 1.1102230246251565e-16        # 2**-53


@triton.jit
def _to(x, ty: tl.constexpr):
    """``x`` as ``ty``; float16/bfloat16 through float32 (no direct int / float64 conversions)."""
    if ty == tl.bfloat16 or ty == tl.float16:
        return x.to(tl.float32).to(ty)
    return x.to(ty)


@triton.jit
def _store(out, lane, q, c, live, n, v):
    """Store ``v`` (values for counters c) into lane ``lane``'s region of ``out``."""
    i = lane * q + c
    tl.store(out + i, _to(v, out.dtype.element_ty), mask=live & (i < n))   # live: c < q


@triton.jit
def _affine_store(out, lane, q, c, live, n, u, a, span, b):
    """Store a + span * u rounded to out's dtype; where rounding reaches b, store a (as PyTorch),
    so uniform_(a, b) stays in [a, b)."""
    v = _to(a + span * u, out.dtype.element_ty)
    v = tl.where(v.to(u.dtype) >= b, _to(a, out.dtype.element_ty), v)
    i = lane * q + c
    tl.store(out + i, v, mask=live & (i < n))


@triton.jit(do_not_specialize=[*_STATE, "a_lo", "a_hi", "s_lo", "s_hi", "b_lo", "b_hi"])
def uniform_kernel(out, n, q, seed_lo, seed_hi, off_lo, off_hi, a_lo, a_hi, s_lo, s_hi, b_lo, b_hi,
                   BITS: tl.constexpr, BLOCK: tl.constexpr):
    # out: n contiguous floats; a, s = b - a, b: float64 halves; BITS: the dtype's significant
    # bits (53: float64, two draws per element)
    c, live, r0, r1, r2, r3 = _draws(q, seed_lo, seed_hi, off_lo, off_hi, BLOCK)
    a, span, b = _f64(a_lo, a_hi), _f64(s_lo, s_hi), _f64(b_lo, b_hi)
    if BITS == 53:
        _affine_store(out, 0, q, c, live, n, _unit53(r0, r1), a, span, b)
        _affine_store(out, 1, q, c, live, n, _unit53(r2, r3), a, span, b)
    else:
        a, span, b = a.to(tl.float32), span.to(tl.float32), b.to(tl.float32)
        _affine_store(out, 0, q, c, live, n, _unit(r0, BITS), a, span, b)
        _affine_store(out, 1, q, c, live, n, _unit(r1, BITS), a, span, b)
        _affine_store(out, 2, q, c, live, n, _unit(r2, BITS), a, span, b)
        _affine_store(out, 3, q, c, live, n, _unit(r3, BITS), a, span, b)


@triton.jit
def _box_muller32(r1, r2):
    """Two independent N(0, 1) float32 from two draws: u1 in (0, 1] (so log u1 is finite; |z|
    reaches 6.7), u2 in [0, 1)."""
    u1 = r1.to(tl.float32) * 2.3283064365386963e-10 + 1.1641532182693481e-10    # r * 2**-32 + 2**-33
    theta = r2.to(tl.float32) * 1.4629180792671596e-09                        # 2 pi * r * 2**-32
    # a GPU's fast log (lg2.approx) has an absolute error: just below 1 it may be positive
    rad = tl.sqrt(tl.maximum(-2.0 * tl.log(u1), 0.0))
    return rad * tl.cos(theta), rad * tl.sin(theta)


@triton.jit(do_not_specialize=[*_STATE, "m_lo", "m_hi", "s_lo", "s_hi"])
def normal_kernel(out, n, q, seed_lo, seed_hi, off_lo, off_hi, m_lo, m_hi, s_lo, s_hi,
                  WIDE: tl.constexpr, BLOCK: tl.constexpr):
    # out: n contiguous floats = mean + std * z; mean, std: float64 halves; WIDE: float64 output
    # (one pair of 53-bit uniforms per counter, two normals)
    c, live, r0, r1, r2, r3 = _draws(q, seed_lo, seed_hi, off_lo, off_hi, BLOCK)
    mean, std = _f64(m_lo, m_hi), _f64(s_lo, s_hi)
    if WIDE:
        u1 = 1.0 - _unit53(r0, r1)           # (0, 1]
        theta = _unit53(r2, r3) * 6.283185307179586
        rad = tl.sqrt(-2.0 * tl.log(u1))
        _store(out, 0, q, c, live, n, mean + std * (rad * tl.cos(theta)))
        _store(out, 1, q, c, live, n, mean + std * (rad * tl.sin(theta)))
    else:
        mean, std = mean.to(tl.float32), std.to(tl.float32)
        z0, z1 = _box_muller32(r0, r1)
        z2, z3 = _box_muller32(r2, r3)
        _store(out, 0, q, c, live, n, mean + std * z0)
        _store(out, 1, q, c, live, n, mean + std * z1)
        _store(out, 2, q, c, live, n, mean + std * z2)
        _store(out, 3, q, c, live, n, mean + std * z3)


@triton.jit(do_not_specialize=[*_STATE, "low_lo", "low_hi", "s_lo", "s_hi"])
def random_kernel(out, n, q, seed_lo, seed_hi, off_lo, off_hi, low_lo, low_hi, s_lo, s_hi,
                  WIDE: tl.constexpr, BLOCK: tl.constexpr):
    # out: n contiguous elements (any dtype) = low + an integer in [0, span); low: int64 halves,
    # span: uint64 halves; WIDE: span > 2**16 (64 random bits per element)
    c, live, r0, r1, r2, r3 = _draws(q, seed_lo, seed_hi, off_lo, off_hi, BLOCK)
    low = _u64(low_lo, low_hi).to(tl.int64, bitcast=True)
    span = _u64(s_lo, s_hi)
    if WIDE:
        x0 = (r0.to(tl.uint64) << 32) | r1.to(tl.uint64)
        x1 = (r2.to(tl.uint64) << 32) | r3.to(tl.uint64)
        # low + floor(x * span / 2**64), wrapping in int64 (low = -2**63 covers the whole range)
        _store(out, 0, q, c, live, n, low + tl.umulhi(x0, span).to(tl.int64, bitcast=True))
        _store(out, 1, q, c, live, n, low + tl.umulhi(x1, span).to(tl.int64, bitcast=True))
    else:
        s = span.to(tl.uint32)
        _store(out, 0, q, c, live, n, low + tl.umulhi(r0, s).to(tl.int64))
        _store(out, 1, q, c, live, n, low + tl.umulhi(r1, s).to(tl.int64))
        _store(out, 2, q, c, live, n, low + tl.umulhi(r2, s).to(tl.int64))
        _store(out, 3, q, c, live, n, low + tl.umulhi(r3, s).to(tl.int64))


@triton.jit
def _keep(r, p, lane, q, c, live, n, t, P_TENSOR: tl.constexpr):
    """Whether draw ``r`` falls below the probability: p[i] * 2**32 (a tensor) or ``t``."""
    if P_TENSOR:
        i = lane * q + c
        pv = tl.load(p + i, mask=live & (i < n), other=0.0)
        if p.dtype.element_ty != tl.float64:
            pv = pv.to(tl.float32)           # float16/bfloat16/ints: float32 holds them exactly
        return r.to(tl.float64) < pv.to(tl.float64) * 4294967296.0
    return r.to(tl.uint64) < t


@triton.jit(do_not_specialize=[*_STATE, "t_lo", "t_hi"])
def bernoulli_kernel(out, p, n, q, seed_lo, seed_hi, off_lo, off_hi, t_lo, t_hi,
                     P_TENSOR: tl.constexpr, BLOCK: tl.constexpr):
    # out: n contiguous elements (any dtype) set to 1 with probability p, else 0; p: a tensor of
    # probabilities laid out as out (P_TENSOR), or the threshold t = ceil(p * 2**32) (uint64 halves)
    c, live, r0, r1, r2, r3 = _draws(q, seed_lo, seed_hi, off_lo, off_hi, BLOCK)
    t = _u64(t_lo, t_hi)
    _store(out, 0, q, c, live, n, _keep(r0, p, 0, q, c, live, n, t, P_TENSOR))
    _store(out, 1, q, c, live, n, _keep(r1, p, 1, q, c, live, n, t, P_TENSOR))
    _store(out, 2, q, c, live, n, _keep(r2, p, 2, q, c, live, n, t, P_TENSOR))
    _store(out, 3, q, c, live, n, _keep(r3, p, 3, q, c, live, n, t, P_TENSOR))
