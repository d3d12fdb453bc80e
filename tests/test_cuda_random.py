"""Random numbers on the cuda device (Philox kernels; in CI the emulated device runs them in
Triton's interpreter): the exact values against an independent numpy Philox4x32-10 (itself
checked on Random123's known-answer vectors), generator state and streams, ranges, error
messages, and distributions (fixed seeds: a failure is a real change, not bad luck).

Layout of a call's draws (see ``kernels/src/random.py``): n elements, k elements per counter
(4, or 2 when an element takes two 32-bit draws), q = ceil(n / 16k) * 16 counters from the
generator's offset; element lane * q + c comes from counter offset + c, draw ``lane`` (or
draws 2 lane, 2 lane + 1).
"""
import math
import subprocess
import sys

import numpy as np
import pytest

import tensorkit as tk

pytestmark = pytest.mark.skipif(not tk.cuda.is_available(), reason="needs a CUDA device (or TENSORKIT_INTERPRET=1)")

M32 = 0xFFFFFFFF


# ---- an independent Philox4x32-10 (Salmon et al. 2011, Random123) ------------------------------------------
def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Ten rounds on uint64 arrays holding 32-bit words; returns the four output words."""
    c0, c1, c2, c3 = (np.asarray(c, np.uint64) for c in (c0, c1, c2, c3))
    k0, k1 = np.uint64(k0), np.uint64(k1)
    for _ in range(10):
        p0 = np.uint64(0xD2511F53) * c0          # products of 32-bit words fit in 64 bits
        p1 = np.uint64(0xCD9E8D57) * c2
        c0, c1, c2, c3 = (p1 >> np.uint64(32)) ^ c1 ^ k0, p1 & np.uint64(M32), \
            (p0 >> np.uint64(32)) ^ c3 ^ k1, p0 & np.uint64(M32)
        k0 = (k0 + np.uint64(0x9E3779B9)) & np.uint64(M32)
        k1 = (k1 + np.uint64(0xBB67AE85)) & np.uint64(M32)
    return c0, c1, c2, c3


@pytest.mark.parametrize("ctr, key, expected", [
    # Random123's kat_vectors for philox4x32 with 10 rounds
    ((0, 0, 0, 0), (0, 0), (0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8)),
    ((M32,) * 4, (M32, M32), (0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd)),
    ((0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344), (0xa4093822, 0x299f31d0),
     (0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1)),
])
def test_reference_philox_known_answers(ctr, key, expected):
    out = philox4x32_10(*([x] for x in ctr), *key)
    assert tuple(int(w[0]) for w in out) == expected


def draws(n, per_counter, seed, offset=0):
    """The draws behind a call: (list of 4 uint64 arrays of length q, q)."""
    q = -(-n // (per_counter * 16)) * 16
    ctr = np.arange(offset, offset + q, dtype=np.uint64)
    words = philox4x32_10(ctr & np.uint64(M32), ctr >> np.uint64(32), 0, 0, seed & M32, seed >> 32)
    return list(words), q


def per_element(words, n, per_counter):
    """Element i's draw (k = 4) or pair of draws (k = 2) in the kernels' layout."""
    if per_counter == 4:
        return np.concatenate(words)[:n]
    return np.concatenate([words[0], words[2]])[:n], np.concatenate([words[1], words[3]])[:n]


def unit53(a, b):
    return ((a >> np.uint64(5)).astype(np.float64) * 2.0 ** 26 + (b >> np.uint64(6)).astype(np.float64)) * 2.0 ** -53


def host(t):
    assert t.device.type == "cuda"
    return t.cpu().numpy()


def gen(seed):
    return tk.Generator(device="cuda").manual_seed(seed)


SEED = 0x1234_5678_9ABC_DEF0              # both key words non-zero


# ---- exact values -------------------------------------------------------------------------------------------
BITS = {tk.float16: 11, tk.bfloat16: 8, tk.float32: 24}


@pytest.mark.parametrize("dtype", [tk.float32, tk.float16, tk.bfloat16, tk.float64])
def test_rand_is_philox(dtype):
    g = gen(SEED)
    n = 3000                                            # several counters per lane, a ragged end
    first, second = host(tk.rand(n, device="cuda", dtype=dtype, generator=g)), \
        host(tk.rand(n, device="cuda", dtype=dtype, generator=g))
    k = 2 if dtype is tk.float64 else 4
    for got, offset in ((first, 0), (second, draws(n, k, SEED)[1])):
        words, _ = draws(n, k, SEED, offset)
        if dtype is tk.float64:
            expected = unit53(*per_element(words, n, 2))
        else:
            r = per_element(words, n, 4)
            expected = (r >> np.uint64(32 - BITS[dtype])).astype(np.float64) * 2.0 ** -BITS[dtype]
        np.testing.assert_array_equal(got.astype(np.float64), expected)


@pytest.mark.parametrize("dtype", [tk.float32, tk.float16, tk.bfloat16])
def test_uniform_in_place_is_philox(dtype):
    n, lo, hi = 1000, -2.0, 3.0
    x = tk.empty(n, dtype=dtype, device="cuda").uniform_(lo, hi, generator=gen(7))
    bits = BITS[dtype]
    r = per_element(draws(n, 4, 7)[0], n, 4)
    u = (r >> np.uint64(32 - bits)).astype(np.float32) * np.float32(2.0 ** -bits)
    v = (np.float32(lo) + np.float32(hi - lo) * u).astype(dtype.numpy)       # float32, rounded to nearest even
    expected = np.where(v.astype(np.float32) >= np.float32(hi), np.array(lo, dtype.numpy), v).astype(np.float64)
    if tk.cuda.EMULATED:
        np.testing.assert_array_equal(host(x).astype(np.float64), expected)
    else:                                         # a GPU may fuse a + s * u into an fma: an ulp apart
        np.testing.assert_allclose(host(x).astype(np.float64), expected, rtol=2.0 ** -bits, atol=1e-6)


def test_randn_is_philox_box_muller():
    n = 2000
    got = host(tk.randn(n, device="cuda", generator=gen(SEED)))
    r = draws(n, 4, SEED)[0]
    z, radii = [], []
    for a, b in ((r[0], r[1]), (r[2], r[3])):
        # as the kernel: u1 = r * 2**-32 + 2**-33 in (0, 1], theta = 2 pi r * 2**-32, in float32
        u1 = a.astype(np.float32) * np.float32(2.0 ** -32) + np.float32(2.0 ** -33)
        theta = b.astype(np.float32) * np.float32(2 * np.pi * 2.0 ** -32)
        rad = np.sqrt(-2.0 * np.log(u1.astype(np.float64)))
        z += [rad * np.cos(theta.astype(np.float64)), rad * np.sin(theta.astype(np.float64))]
        radii += [rad, rad]
    z, radii = np.concatenate(z)[:n], np.concatenate(radii)[:n]
    # a GPU's fast log/sin/cos are off by ~1e-7 absolute: fine, except for the radius sqrt(-2 log u1)
    # of u1 within 1e-4 of 1 (a few in 10**5 draws), where that is a large relative error
    close = np.isclose(got, z, rtol=1e-5, atol=3e-5) | (radii < 1e-2)
    assert close.all(), (got[~close], z[~close])
    assert np.isclose(got, z, rtol=1e-5, atol=3e-5).mean() > 0.999
    got = host(tk.normal(1.0, 2.0, (n,), dtype=tk.float64, device="cuda", generator=gen(SEED)))
    w = draws(n, 2, SEED)[0]
    u1, theta = 1.0 - unit53(w[0], w[1]), unit53(w[2], w[3]) * 2 * np.pi
    rad = np.sqrt(-2.0 * np.log(u1))
    expected = 1.0 + 2.0 * np.concatenate([rad * np.cos(theta), rad * np.sin(theta)])[:n]
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("low, high, dtype", [(0, 10, tk.int64), (-5, 7, tk.int8), (0, 256, tk.uint8),
                                              (3, 3 + (1 << 16), tk.int32), (0, 2, tk.bool),
                                              (-1000, 1000, tk.float32),
                                              (-(1 << 40), 1 << 40, tk.int64),          # 64 random bits
                                              (-(1 << 63), (1 << 63) - 1, tk.int64)])
def test_randint_is_philox(low, high, dtype):
    n, span = 1000, high - low
    got = host(tk.randint(low, high, (n,), dtype=dtype, device="cuda", generator=gen(SEED)))
    assert got.dtype == dtype.numpy
    if span <= 1 << 16:                  # floor(r * span / 2**32)
        r = per_element(draws(n, 4, SEED)[0], n, 4)
        expected = [low + (int(x) * span >> 32) for x in r]
    else:                                # floor(x * span / 2**64), x = 64 bits from two draws
        a, b = per_element(draws(n, 2, SEED)[0], n, 2)
        expected = [low + (((int(x) << 32 | int(y)) * span) >> 64) for x, y in zip(a, b)]
    np.testing.assert_array_equal(got, np.array(expected).astype(dtype.numpy))
    assert got.astype(np.float64).min() >= low and got.astype(np.float64).max() < high


def test_bernoulli_is_philox():
    n = 1000
    r = per_element(draws(n, 4, SEED)[0], n, 4)
    got = host(tk.bernoulli(tk.zeros(n, device="cuda"), 0.3, generator=gen(SEED)))
    np.testing.assert_array_equal(got, (r < math.ceil(0.3 * 2 ** 32)).astype(np.float32))
    p = np.linspace(0, 1, n)
    got = host(tk.bernoulli(tk.tensor(p, device="cuda"), generator=gen(SEED)))      # float64 probabilities
    np.testing.assert_array_equal(got, (r.astype(np.float64) < p * 2.0 ** 32).astype(np.float64))
    mask = tk.empty(n, dtype=tk.bool, device="cuda")
    tk.ops.creation.bernoulli_(mask, 0.9, generator=gen(SEED))                      # dropout's mask path
    np.testing.assert_array_equal(host(mask), r < math.ceil(0.9 * 2 ** 32))


# ---- generator state and streams --------------------------------------------------------------------------------
def _draw(generator=None):
    return np.concatenate([host(tk.rand(5, device="cuda", generator=generator)).astype(np.float64),
                           host(tk.randn(5, device="cuda", generator=generator)).astype(np.float64),
                           host(tk.randint(0, 1000, (5,), device="cuda", generator=generator)).astype(np.float64),
                           host(tk.randperm(8, device="cuda", generator=generator)).astype(np.float64)])


def test_manual_seed_reproducible_and_calls_differ():
    tk.manual_seed(123)
    a = _draw()
    tk.manual_seed(123)
    np.testing.assert_array_equal(_draw(), a)
    tk.cuda.manual_seed(123)
    np.testing.assert_array_equal(_draw(), a)
    assert tk.cuda.initial_seed() == 123
    tk.manual_seed(124)
    assert not np.array_equal(_draw()[:10], a[:10])
    tk.manual_seed(0)
    assert not np.array_equal(host(tk.rand(10, device="cuda")), host(tk.rand(10, device="cuda")))


def test_offset_advances_by_the_counters_used():
    g = gen(5)
    assert g.get_state().tolist() == [5] + [0] * 15
    tk.rand(1000, device="cuda", generator=g)                     # 250 counters -> 256
    tk.rand(1, dtype=tk.float64, device="cuda", generator=g)      # 16
    seed, offset = np.array(g.get_state().tolist(), np.uint8).view("<u8")
    assert (seed, offset) == (5, 272)


def test_rng_state_replays():
    tk.cuda.manual_seed(3)
    tk.rand(7, device="cuda")
    s = tk.cuda.get_rng_state()
    assert s.dtype is tk.uint8 and s.device.type == "cpu" and tuple(s.shape) == (16,)
    a = _draw()
    tk.cuda.manual_seed(77)
    tk.cuda.set_rng_state(s)
    np.testing.assert_array_equal(_draw(), a)
    g = gen(1)
    g.set_state(s)                                               # a state moves between generators
    np.testing.assert_array_equal(_draw(g), a)
    assert g.initial_seed() == 3
    assert len(tk.cuda.get_rng_state_all()) == tk.cuda.device_count()


def test_generators_are_independent():
    tk.manual_seed(0)
    tk.rand(3, device="cuda")
    expected = host(tk.rand(3, device="cuda"))
    cpu_expected = tk.rand(3).numpy()
    tk.manual_seed(0)
    tk.rand(3, device="cuda")
    _draw(gen(0))                                           # a Generator object leaves the default alone
    tk.rand(100)                                            # so do CPU draws
    tk.randn(10, generator=tk.Generator().manual_seed(1))
    np.testing.assert_array_equal(host(tk.rand(3, device="cuda")), expected)
    tk.manual_seed(0)                                       # and cuda draws leave the CPU stream alone
    tk.rand(1000, device="cuda")
    tk.cuda.manual_seed(99)
    np.testing.assert_array_equal(tk.rand(3).numpy(), cpu_expected)
    np.testing.assert_array_equal(_draw(gen(42)), _draw(gen(42)))
    assert not np.array_equal(_draw(gen(42))[:10], _draw(gen(43))[:10])


def test_seed_functions():
    tk.manual_seed(5)
    assert tk.cuda.initial_seed() == 5 and tk.initial_seed() == 5
    s = tk.seed()                                           # as PyTorch: reseeds the devices too
    assert tk.cuda.initial_seed() == s
    tk.cuda.seed()
    assert tk.cuda.initial_seed() != s and tk.initial_seed() == s
    tk.cuda.manual_seed_all(11)
    assert tk.cuda.initial_seed() == 11
    tk.cuda.seed_all()
    assert tk.cuda.initial_seed() != 11
    tk.cuda.manual_seed(-1)                                 # seeds are taken modulo 2**64, as PyTorch
    assert tk.cuda.initial_seed() == 2 ** 64 - 1
    g = tk.Generator(device="cuda")
    assert g.device == tk.device("cuda:0") and g.initial_seed() == 67280421310721
    assert g.manual_seed(4) is g and g.seed() == g.initial_seed()


def test_state_errors():
    with pytest.raises(RuntimeError, match="16"):
        tk.cuda.set_rng_state(tk.get_rng_state())           # a CPU state is not a cuda one
    with pytest.raises(RuntimeError, match="uint8"):
        gen(0).set_state(tk.zeros(16))


# ---- every random function on cuda: shapes, dtypes, ranges ------------------------------------------------------
def test_shapes_dtypes_devices():
    for t in (tk.rand(2, 3, device="cuda"), tk.randn((2, 3), device="cuda"), tk.randint(5, (2, 3), device="cuda"),
              tk.normal(0.0, 1.0, (2, 3), device="cuda"), tk.rand_like(tk.zeros(2, 3, device="cuda")),
              tk.randn_like(tk.zeros(2, 3, device="cuda")), tk.randint_like(tk.zeros(2, 3, device="cuda"), 4)):
        assert t.device.type == "cuda" and tuple(t.shape) == (2, 3)
    assert tk.rand(3, device="cuda").dtype is tk.float32 and tk.randint(3, (2,), device="cuda").dtype is tk.int64
    assert tuple(tk.rand((), device="cuda").shape) == () and tuple(tk.rand(0, 4, device="cuda").shape) == (0, 4)
    assert tk.rand(2, device="cuda", requires_grad=True).requires_grad
    assert tk.randint_like(tk.zeros(3, dtype=tk.int16, device="cuda"), 1, 9).dtype is tk.int16
    x = tk.rand_like(tk.zeros(4))                           # the CPU too
    assert x.device.type == "cpu" and x.dtype is tk.float32


@pytest.mark.parametrize("dtype", [tk.float16, tk.bfloat16, tk.float32])
def test_rand_below_one_in_short_dtypes(dtype):
    a = host(tk.rand(20_000, dtype=dtype, device="cuda", generator=gen(1))).astype(np.float64)
    assert a.min() >= 0 and a.max() < 1
    assert a.max() == 1 - 2.0 ** -BITS[dtype] or dtype is tk.float32     # the top value is reached
    assert np.all(a * 2 ** BITS[dtype] == np.floor(a * 2 ** BITS[dtype]))


@pytest.mark.parametrize("dtype, high", [(tk.float16, 1.0015), (tk.bfloat16, 1.015), (tk.float32, 1 + 2 ** -22),
                                         (tk.float64, 1 + 2 ** -50)])
@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_uniform_stays_below_the_upper_bound(dtype, high, device):
    # a + (b - a) * u rounds to the dtype's value at or past b for part of the draws (2% to 25%
    # here): those must become a (PyTorch's rule), never b
    g = gen(2) if device == "cuda" else tk.Generator().manual_seed(2)
    a = tk.empty(4000, dtype=dtype, device=device).uniform_(1.0, high, generator=g).cpu().numpy().astype(np.float64)
    assert a.min() >= 1.0 and a.max() < high
    assert 0.3 < np.mean(a > 1.0) < 0.999


def test_in_place_on_views_and_versions():
    base = tk.zeros(4, 6, device="cuda")
    v = base._version
    base.t().uniform_(5.0, 6.0, generator=gen(3))           # non-contiguous target: every element written
    a = host(base)
    assert a.min() >= 5 and a.max() < 6 and base._version > v
    base[1:3].normal_(100.0, 1.0)
    a = host(base)
    assert np.all(np.abs(a[1:3] - 100) < 10) and np.all(a[[0, 3]] < 6)


def test_normal_overloads():
    tk.manual_seed(5)
    mean = tk.tensor([[0.0], [100.0]], device="cuda")       # (2, 1)
    std = tk.tensor([1.0, 0.0, 2.0], device="cuda")           # (3,)
    t = tk.normal(mean, std)
    assert tuple(t.shape) == (2, 3) and t.dtype is tk.float32 and t.device.type == "cuda"
    a = host(t)
    assert a[0, 1] == 0.0 and a[1, 1] == 100.0                # std 0: exactly the mean
    b = host(tk.normal(tk.full((4000,), 5.0, dtype=tk.float64, device="cuda"), 0.5))
    assert b.dtype == np.float64 and abs(b.mean() - 5) < 0.05 and abs(b.std() - 0.5) < 0.05
    c = host(tk.normal(2.0, tk.full((4000,), 3.0, device="cuda")))
    assert abs(c.mean() - 2) < 0.3 and abs(c.std() - 3) < 0.3
    d = tk.normal(0.0, 1.0, size=(2, 3), dtype=tk.float64, device="cuda")
    assert d.dtype is tk.float64 and d.device.type == "cuda"
    g1, g2 = gen(8), gen(8)                                   # generator= reaches every overload
    np.testing.assert_array_equal(host(tk.normal(mean, std, generator=g1)), host(tk.normal(mean, std, generator=g2)))


def test_randperm_on_cuda():
    tk.manual_seed(3)
    cpu_next = tk.rand(4).numpy()
    tk.manual_seed(3)
    p = tk.randperm(500, device="cuda")
    assert p.dtype is tk.int64 and p.device.type == "cuda"
    a = host(p)
    np.testing.assert_array_equal(np.sort(a), np.arange(500))
    assert not np.array_equal(a, np.arange(500))
    np.testing.assert_array_equal(tk.rand(4).numpy(), cpu_next)       # drawn from the cuda generator
    np.testing.assert_array_equal(host(tk.randperm(500, device="cuda", generator=gen(1))),
                                  host(tk.randperm(500, device="cuda", generator=gen(1))))
    assert tk.randperm(5, dtype=tk.int32, device="cuda").dtype is tk.int32
    assert tuple(tk.randperm(0, device="cuda").shape) == (0,)


# ---- errors -----------------------------------------------------------------------------------------------------
def test_errors():
    with pytest.raises(RuntimeError, match="int64"):
        tk.rand(3, dtype=tk.int64, device="cuda")
    with pytest.raises(RuntimeError, match="int32"):
        tk.randn(3, dtype=tk.int32, device="cuda")
    with pytest.raises(RuntimeError, match="from=5 >= to=5"):
        tk.randint(5, 5, (2,), device="cuda")
    with pytest.raises(RuntimeError, match="uint8"):
        tk.randint(0, 300, (2,), dtype=tk.uint8, device="cuda")
    with pytest.raises(RuntimeError, match="int8"):
        tk.randint(-129, 0, (2,), dtype=tk.int8)               # the same check on the CPU
    with pytest.raises(RuntimeError, match=r"\[0, 1\]"):
        tk.bernoulli(tk.zeros(3, device="cuda"), 1.5)
    with pytest.raises(RuntimeError, match="std"):
        tk.normal(0.0, -1.0, (3,), device="cuda")
    with pytest.raises(RuntimeError, match="std"):
        tk.zeros(3, device="cuda").normal_(0.0, -1.0)
    with pytest.raises(RuntimeError, match="from=2.0 > to=1.0"):
        tk.zeros(3, device="cuda").uniform_(2.0, 1.0)
    with pytest.raises(NotImplementedError, match="int64"):
        tk.zeros(3, dtype=tk.int64, device="cuda").uniform_()
    with pytest.raises(RuntimeError, match="device type 'cuda'.*cpu"):
        tk.rand(3, device="cuda", generator=tk.Generator())
    with pytest.raises(RuntimeError, match="device type 'cpu'.*cuda"):
        tk.rand(3, generator=gen(0))
    with pytest.raises(RuntimeError, match="cpu"):
        tk.ops.creation.bernoulli_(tk.zeros(3, device="cuda"), tk.full((3,), 0.5))


# ---- distributions (fixed seeds, sizes the interpreter runs in well under a second) ------------------------------
N = 100_000


@pytest.mark.parametrize("dtype", [tk.float32, tk.float64])
def test_uniform_distribution(dtype):
    from scipy import stats
    a = host(tk.rand(N, dtype=dtype, device="cuda", generator=gen(11))).astype(np.float64)
    assert abs(a.mean() - 0.5) < 0.005 and abs(a.var() - 1 / 12) < 0.002
    assert stats.kstest(a, "uniform").pvalue > 1e-3
    # consecutive elements (and lanes of one counter) are independent
    assert abs(np.corrcoef(a[:-1], a[1:])[0, 1]) < 0.02
    q = N // 4
    assert abs(np.corrcoef(a[:q], a[q:2 * q])[0, 1]) < 0.02


@pytest.mark.parametrize("dtype", [tk.float32, tk.float64, tk.bfloat16])
def test_normal_distribution(dtype):
    from scipy import stats
    a = host(tk.randn(N, dtype=dtype, device="cuda", generator=gen(12))).astype(np.float64)
    assert abs(a.mean()) < 0.015 and abs(a.std() - 1) < 0.015
    if dtype is not tk.bfloat16:                        # bfloat16's 8 bits make steps KS would see
        assert stats.kstest(a, "norm").pvalue > 1e-3
    assert abs(np.mean(np.abs(a) < 1) - 0.6827) < 0.01
    q = N // 4                                          # the two normals of one Box-Muller pair
    assert abs(np.corrcoef(a[:q], a[q:2 * q])[0, 1]) < 0.02


@pytest.mark.parametrize("high", [10, 1 << 20, 3 << 30])
def test_randint_distribution(high):
    from scipy import stats
    a = host(tk.randint(0, high, (N,), device="cuda", generator=gen(13)))
    assert a.min() >= 0 and a.max() < high
    counts = np.bincount(a * 10 // high, minlength=10)   # ten equal bins of the range
    assert stats.chisquare(counts).pvalue > 1e-3


def test_bernoulli_frequency():
    a = host(tk.bernoulli(tk.full((N,), 0.3, device="cuda"), generator=gen(14)))
    assert set(np.unique(a)) <= {0.0, 1.0}
    assert abs(a.mean() - 0.3) < 0.006                  # 4 standard deviations
    b = host(tk.bernoulli(tk.zeros(N, device="cuda"), 0.7, generator=gen(15)))
    assert abs(b.mean() - 0.7) < 0.006
    np.testing.assert_array_equal(host(tk.bernoulli(tk.zeros(100, device="cuda"))), np.zeros(100))
    np.testing.assert_array_equal(host(tk.bernoulli(tk.ones(100, device="cuda"))), np.ones(100))


# ---- the kernels compile for a real GPU ------------------------------------------------------------------------
_COMPILE = r"""
import sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
sys.path.insert(0, sys.argv[1])
from tensorkit.kernels.src import random as R

def ptx(fn, ptrs, consts):
    # pointers, n and q as Triton specializes them for aligned tensors and sizes (divisible by 16)
    names = fn.arg_names
    sig = {a: "constexpr" if a in consts else "*" + ptrs[a] if a in ptrs else "i32" for a in names}
    attrs = {(names.index(a),): [["tt.divisibility", 16]] for a in names if a in ptrs or a in ("n", "q")}
    src = ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32)).asm["ptx"]

B = {"BLOCK": 512}
code = ptx(R.uniform_kernel, {"out": "fp32"}, {"BITS": 24, **B})
assert code.count("st.global.v4") == 4, "float32 uniforms: one 16-byte store per thread and lane"
for out, bits in (("bf16", 8), ("fp64", 53)):
    ptx(R.uniform_kernel, {"out": out}, {"BITS": bits, **B})
for out, wide in (("fp32", False), ("fp64", True)):
    ptx(R.normal_kernel, {"out": out}, {"WIDE": wide, **B})
for out, wide in (("i64", False), ("i64", True), ("i1", False), ("bf16", True)):
    ptx(R.random_kernel, {"out": out}, {"WIDE": wide, **B})
for out, p, tensor in (("i1", "i1", False), ("fp16", "bf16", True), ("u8", "fp64", True)):
    ptx(R.bernoulli_kernel, {"out": out, "p": p}, {"P_TENSOR": tensor, **B})
"""


@pytest.mark.skipif(not tk.cuda.EMULATED, reason="on a GPU the tests above run the compiled kernels")
def test_kernels_compile_for_sm90():
    """The interpreter runs kernels a GPU compiler would reject (types, conversions): compile each
    variant to PTX for an H100 (no GPU needed; Triton ships ptxas)."""
    pytest.importorskip("triton.backends.nvidia")
    import os
    root = os.path.dirname(os.path.dirname(os.path.abspath(tk.__file__)))
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "TENSORKIT_INTERPRET")}
    subprocess.run([sys.executable, "-c", _COMPILE, root], check=True, env=env)
