"""The cuda device's reduction kernels (kernels/reduction.py): what the op table's tiny samples
do not reach. Every strategy (split full and column reductions, rows longer than a step,
several column tiles, softmax's online path, scans with a carry) is reached with small tensors
by lowering the thresholds; plus layouts that need a copy, NaN and tie rules of the index
reductions, half-precision and int64 accumulation. References: numpy in float64 / int64, or
the CPU backend (an independent implementation).

On the emulated device every launch runs in Triton's interpreter: shapes stay small.
"""
import math

import numpy as np
import pytest

import tensorkit as tk
from tensorkit.kernels import reduction as R
from tensorkit.testing.compare import assert_close

pytestmark = pytest.mark.skipif(not tk.cuda.is_available(), reason="needs a CUDA device (or TENSORKIT_INTERPRET=1)")


@pytest.fixture
def thresholds(monkeypatch):
    """Set kernels.reduction's strategy thresholds for one test (plans are cached: cleared)."""
    def set_(**values):
        for name, v in values.items():
            assert hasattr(R, name), name
            monkeypatch.setattr(R, name, v)
        R.clear_caches()
    yield set_
    R.clear_caches()


def _dev(a):
    return tk.from_numpy(np.ascontiguousarray(a)).cuda()


def _vs_cpu(fn, x, reduction_len=1):
    """fn on the cuda tensor x vs fn on its CPU copy: dtypes, shapes and values."""
    got, want = fn(x), fn(x.cpu())
    got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
    for g, w in zip(got, want):
        assert g.device.type == "cuda" and g.dtype is w.dtype and g.shape == w.shape
        assert_close(g.cpu(), w, reduction_len=reduction_len)


def _plan(x, dims):
    g = R._geometry(x, dims)
    return R._reduce_plan(g.outer, g.n, g.inner, g.strides)


# ---- strategies, reached by lowering the thresholds ----------------------------------------------------
def test_split_full_reduction(thresholds):
    thresholds(ROW_BLOCK=16, SPLIT_MIN=32, SPLIT_PROGRAMS=8)
    rng = np.random.default_rng(0)
    a = rng.uniform(-2, 2, 300)
    a[[7, 250]] = a.max() + 1                    # a tie for the maximum, in the first and the last chunk
    x = _dev(a)
    plan = _plan(x, (0,))
    assert plan.chunks > 2 and plan.chunk % plan.block_n == 0, plan
    np.testing.assert_allclose(tk.sum(x).cpu().numpy(), a.sum(), rtol=1e-12)
    np.testing.assert_allclose(tk.prod(x / 50 + 1).cpu().numpy(), np.prod(a / 50 + 1), rtol=1e-12)
    assert tk.amax(x).item() == a.max() and tk.amin(x).item() == a.min()
    assert tk.argmax(x).item() == 7 and tk.argmin(x).item() == int(np.argmin(a))
    v, i = tk.max(x, 0)
    assert v.item() == a.max() and i.item() == 7
    np.testing.assert_allclose(tk.var(x).cpu().numpy(), a.var(ddof=1), rtol=1e-12)
    np.testing.assert_allclose(tk.logsumexp(x, 0).cpu().numpy(), np.log(np.exp(a).sum()), rtol=1e-12)
    for p in (2, 1, 3.5, 0, math.inf, -math.inf):
        ref = np.linalg.norm(a, p) if p != 0 else np.count_nonzero(a)
        np.testing.assert_allclose(tk.norm(x, p).cpu().numpy(), ref, rtol=1e-12, err_msg=f"p={p}")
    mask = _dev(a > -1.9)
    assert tk.all(mask).item() == bool((a > -1.9).all()) and tk.any(_dev(a > 2.9)).item() is True
    assert tk.all(_dev(np.ones(300, bool))).item() is True and tk.any(_dev(np.zeros(300, np.uint8))).item() == 0


def test_split_column_reduction(thresholds):
    thresholds(COL_BLOCK=4, TILE=16, SPLIT_MIN=16, SPLIT_PROGRAMS=16)
    rng = np.random.default_rng(1)
    a = rng.uniform(-1, 1, (70, 6)).astype(np.float32)
    a[[3, 60], 2] = 5.0                           # a tie across chunks
    a[[10, 40], 4] = np.nan                       # the first NaN wins
    x = _dev(a)
    plan = _plan(x, (0,))
    assert plan.chunks > 1 and plan.strides[2] == 1, plan
    _vs_cpu(lambda t: tk.sum(t, 0), x, 70)
    _vs_cpu(lambda t: tk.amax(t, 0), x)
    _vs_cpu(lambda t: tk.var(t, 0), x, 70)
    _vs_cpu(lambda t: tk.logsumexp(t, 0), x, 70)
    v, i = tk.max(x, 0)
    assert i.cpu().tolist()[2] == 3 and i.cpu().tolist()[4] == 10 and math.isnan(v.cpu().tolist()[4])
    np.testing.assert_array_equal(tk.argmin(x, 0).cpu().numpy(), [int(np.argmin(a[:, k])) if k != 4 else 10
                                                                  for k in range(6)])


def test_long_rows_and_tiles(thresholds):
    """Rows longer than a step (full steps, then a masked tail); inner wider than a column tile."""
    thresholds(ROW_BLOCK=8, COL_BLOCK=4, TILE=32)
    rng = np.random.default_rng(2)
    rows = _dev(rng.standard_normal((5, 37)))         # 4 full steps of 8 and a tail of 5
    cols = _dev(rng.standard_normal((3, 9, 11)))      # inner 11: tiles of 4, the last one partial
    assert _plan(rows, (1,)).block_n == 8 and _plan(cols, (1,)).block_k == 4
    for fn in (lambda t, d: tk.sum(t, d), lambda t, d: tk.prod(t, d), lambda t, d: tk.amin(t, d),
               lambda t, d: tk.var(t, d, correction=0), lambda t, d: tk.logsumexp(t, d),
               lambda t, d: tk.norm(t, 3, d), lambda t, d: tk.argmax(t, d), lambda t, d: tk.min(t, d),
               lambda t, d: tk.all(t > -2, d)):
        _vs_cpu(lambda t: fn(t, 1), rows, 37)
        _vs_cpu(lambda t: fn(t, 1), cols, 9)


def test_softmax_online_path(thresholds):
    thresholds(SOFTMAX_BLOCK=8, ROW_BLOCK=8, COL_BLOCK=4, TILE=32)
    rng = np.random.default_rng(3)
    a = rng.uniform(-30, 30, (4, 21))
    a[1, 5] = np.nan
    a[2] = -np.inf                                 # all -inf: NaN, as PyTorch
    a[3, [0, 20]] = np.inf
    for t, dim in ((_dev(a), 1), (_dev(a.T), 0), (_dev(a.T).transpose(0, 1), 1)):
        g = R._geometry(t, (dim,))
        assert not R._along_plan(g, R.ROW_BLOCK, R.SOFTMAX_BLOCK).single
        for fn in (tk.softmax, tk.log_softmax):
            _vs_cpu(lambda u: fn(u, dim), t, 21)
    b = _dev(rng.standard_normal((3, 5)))           # rows that fit: one read, one write
    assert R._along_plan(R._geometry(b, (1,)), R.ROW_BLOCK, R.SOFTMAX_BLOCK).single
    _vs_cpu(lambda u: tk.log_softmax(u, 1), b, 5)


def test_scans_with_carry(thresholds):
    thresholds(SCAN_BLOCK=8, COL_BLOCK=4, TILE=32)
    rng = np.random.default_rng(4)
    a = rng.integers(-3, 4, (3, 29)).astype(np.int32)
    x = _dev(a)
    np.testing.assert_array_equal(tk.cumsum(x, 1).cpu().numpy(), np.cumsum(a.astype(np.int64), 1))
    np.testing.assert_array_equal(tk.cumprod(x[:, :12], 1).cpu().numpy(), np.cumprod(a[:, :12].astype(np.int64), 1))
    np.testing.assert_array_equal(tk.cumsum(x, 0).cpu().numpy(), np.cumsum(a.astype(np.int64), 0))
    f = rng.uniform(0.5, 1.5, (29, 10))
    for t, dim in ((_dev(f), 0), (_dev(f.T), 1), (_dev(f).transpose(0, 1), 1)):
        _vs_cpu(lambda u: tk.cumsum(u, dim), t, 29)
        _vs_cpu(lambda u: tk.cumprod(u, dim), t, 29)
    mask = rng.random(40) < 0.5
    np.testing.assert_array_equal(tk.cumsum(_dev(mask), 0).cpu().numpy(), np.cumsum(mask))


# ---- layouts -------------------------------------------------------------------------------------------
def test_layouts_without_and_with_copies():
    rng = np.random.default_rng(5)
    a = rng.standard_normal((3, 4, 5, 2))
    x = _dev(a)
    assert R._geometry(x, (1, 2)).copy is None                      # adjacent dims: a view
    assert R._geometry(x, (0, 2)).copy == (1, 3, 0, 2)               # apart: one permuted copy
    assert R._geometry(x.transpose(0, 3), (1, 2)).copy is None      # strided groups need no copy
    assert R._geometry(x[:1].expand(4, 4, 5, 2), (0, 1)).copy == "contiguous"
    cases = [(x, (0, 2)), (x, (1, 3)), (x, (0, 3)), (x.transpose(0, 3), (1, 2)), (x.transpose(1, 2), (0, 2)),
             (x[:, ::2, :, 1], (1,)), (x[..., 0].transpose(0, 2), (0,)), (x[:1].expand(4, 4, 5, 2), (0, 1)),
             (x[:, 1:3], ())]
    for t, dims in cases:
        n = int(np.prod([t.shape[d] for d in dims])) if dims else t.numel()
        _vs_cpu(lambda u: tk.sum(u, dims), t, n)
        _vs_cpu(lambda u: tk.amax(u, dims if dims else None), t)
        _vs_cpu(lambda u: tk.var(u, dims), t, n)
        _vs_cpu(lambda u: tk.logsumexp(u, dims if dims else tuple(range(u.ndim))), t, n)
    for t in (x.transpose(0, 3), x[:, ::2]):
        for d in range(t.ndim):
            _vs_cpu(lambda u: tk.softmax(u, d), t, t.shape[d])
            _vs_cpu(lambda u: tk.cumsum(u, d), t, t.shape[d])
            _vs_cpu(lambda u: tk.argmin(u, d), t)
    before = x.cpu().numpy().copy()
    tk.sum(x.transpose(0, 2), (0, 3))
    np.testing.assert_array_equal(x.cpu().numpy(), before)


def test_tiles_keep_int32_offsets():
    """Kernels compute offsets within a tile (and a step's advance) in int32: huge strides shrink
    the tile; strides of 2**31 and more reach the kernel as int64 and need not."""
    for n, inner in ((64, 2 ** 26 + 3), (64, 2 ** 28), (3, 2 ** 30)):
        p = R._reduce_plan(1, n, inner, (0, inner, 1))
        assert p.block_n * inner + p.block_k < 2 ** 31, p
    assert R._reduce_plan(1, 64, 2 ** 31, (0, 2 ** 31, 1)).block_n == 32
    g = R._Geometry(None, 1, 40, 2 ** 27, (0, 2 ** 27, 1))
    a = R._along_plan(g, R.ROW_BLOCK, R.SOFTMAX_BLOCK)
    assert a.plan.block_n * 2 ** 27 + a.plan.block_k < 2 ** 31 and not a.single, a


def test_internal_copy_is_not_recorded():
    """The permuted copy is the kernel's own step: observers (autograd, the tracer) see only the reduction."""
    from tensorkit import _dispatch
    seen = []
    x = _dev(np.arange(24.0).reshape(2, 3, 4))
    _dispatch.observers.append(lambda op, *a: seen.append(op))
    try:
        r = tk.sum(x, (0, 2))
    finally:
        _dispatch.observers.pop()
    assert seen == ["sum"] and r.cpu().tolist() == np.arange(24.0).reshape(2, 3, 4).sum((0, 2)).tolist()


def test_empty_reductions():
    x = _dev(np.zeros((0, 3), np.float32))
    assert tk.sum(x, 0).cpu().tolist() == [0, 0, 0] and tk.prod(x, 0).cpu().tolist() == [1, 1, 1]
    assert tk.all(x, 0).cpu().tolist() == [True] * 3 and tk.any(x, 0).cpu().tolist() == [False] * 3
    assert tk.logsumexp(x, 0).cpu().tolist() == [-math.inf] * 3 and tk.norm(x, 2, 0).cpu().tolist() == [0] * 3
    assert all(math.isnan(v) for v in tk.var(x, 0).cpu().tolist())
    u = _dev(np.zeros((0, 3), np.uint8))
    assert tk.all(u, 0).dtype is tk.uint8 and tk.all(u, 0).cpu().tolist() == [1, 1, 1]
    assert tk.sum(x, 1).shape == (0,) and tk.softmax(x, 1).shape == (0, 3) and tk.cumsum(x, 0).shape == (0, 3)


# ---- NaN, ties, accumulation ---------------------------------------------------------------------------------
def test_index_reductions_nan_and_ties():
    nan = math.nan
    a = np.array([[1.0, 3.0, 3.0, 0.0, 3.0], [2.0, nan, 5.0, nan, 9.0], [-1.0, -1.0, -4.0, -4.0, -1.0],
                  [nan, 1.0, 2.0, 3.0, 4.0]])
    for t, dim in ((_dev(a), 1), (_dev(a.T), 0), (_dev(a.T).transpose(0, 1), 1)):
        assert tk.argmax(t, dim).cpu().tolist() == [1, 1, 0, 0]
        assert tk.argmin(t, dim).cpu().tolist() == [3, 1, 2, 0]
        v, i = tk.max(t, dim)
        assert i.cpu().tolist() == [1, 1, 0, 0] and np.array_equal(v.cpu().numpy(), [3, nan, -1, nan], equal_nan=True)
        v, i = tk.min(t, dim)
        assert i.cpu().tolist() == [3, 1, 2, 0] and np.array_equal(v.cpu().numpy(), [0, nan, -4, nan], equal_nan=True)
    assert tk.argmax(_dev(a)).item() == 6 and tk.argmin(_dev(a)).item() == 6      # the first NaN, flattened
    ints = np.array([[4, 7, 7, 1], [-3, -3, -3, -3]], np.int64)
    assert tk.argmax(_dev(ints), 1).cpu().tolist() == [1, 0] and tk.argmin(_dev(ints), 1).cpu().tolist() == [3, 0]
    m = np.array([[False, True, True], [False, False, False]])
    assert tk.argmax(_dev(m), 1).cpu().tolist() == [1, 0] and tk.amax(_dev(m), 1).cpu().tolist() == [True, False]
    assert math.isnan(tk.amax(_dev(a), 1).cpu().tolist()[1]) and math.isnan(tk.amin(_dev(a.T), 0).cpu().tolist()[3])


def test_index_reductions_across_steps(thresholds):
    """Equal values that meet in one lane of the tile (BLOCK_N apart) keep the first index; a
    lane's first element wins over the identity it starts from, even when equal to it."""
    thresholds(ROW_BLOCK=8, COL_BLOCK=4, TILE=32)
    a = np.zeros((4, 37))
    a[0, [3, 11, 27]] = 5.0                       # 3, 11, 27: one lane of a step of 8
    a[1] = -math.inf
    a[2, [13, 29]] = math.nan
    a[3] = math.inf
    want_max, want_min = [3, 0, 13, 0], [0, 0, 13, 0]
    for t, dim in ((_dev(a), 1), (_dev(a.T), 0)):
        assert tk.argmax(t, dim).cpu().tolist() == want_max and tk.argmin(t, dim).cpu().tolist() == want_min
        assert tk.max(t, dim).indices.cpu().tolist() == want_max
    lo, hi = np.iinfo(np.int64).min, np.iinfo(np.int64).max
    assert tk.argmax(_dev(np.full((2, 20), lo)), 1).cpu().tolist() == [0, 0]
    assert tk.argmin(_dev(np.full((2, 20), hi)), 1).cpu().tolist() == [0, 0]
    assert tk.min(_dev(np.full(20, hi)), 0).values.item() == hi


def test_half_precision_accumulates_in_float32():
    # a float16 running sum of ones stops at 2048 (2049 rounds back), a bfloat16 one at 256
    for dtype in (tk.float16, tk.bfloat16):
        ones = tk.ones(2560, dtype=dtype, device="cuda")
        assert tk.sum(ones).item() == 2560 and tk.sum(ones).dtype is dtype
        assert tk.cumsum(ones, 0).cpu().float().numpy()[-1] == 2560
        assert tk.mean(ones).item() == 1.0
    rng = np.random.default_rng(6)
    a = rng.uniform(1, 2, (2, 700)).astype(np.float16)
    _vs_cpu(lambda t: tk.sum(t, 1), _dev(a), 700)
    _vs_cpu(lambda t: tk.var(t, 1), _dev(a), 700)
    _vs_cpu(lambda t: tk.softmax(t, 1), _dev(a), 700)
    b = _dev(a.astype(np.float32)).to(tk.bfloat16)
    _vs_cpu(lambda t: tk.norm(t, 2, 1), b, 700)
    _vs_cpu(lambda t: tk.logsumexp(t, 1), b, 700)


def test_int64_accumulation_beyond_int32():
    big = np.full((3, 5), 2 ** 31 - 1, np.int32)
    assert tk.sum(_dev(big)).item() == 15 * (2 ** 31 - 1)
    assert tk.sum(_dev(big), 0).cpu().tolist() == [3 * (2 ** 31 - 1)] * 5
    assert tk.cumsum(_dev(big), 1).cpu().numpy()[0, -1] == 5 * (2 ** 31 - 1)
    assert tk.prod(_dev(np.full(3, 1 << 20, np.int32))).item() == 1 << 60
    v = np.array([2 ** 40, -(2 ** 62), 2 ** 40, 2 ** 62 - 1], np.int64)
    assert tk.sum(_dev(v)).item() == 2 ** 41 - 1
    assert tk.amax(_dev(v)).item() == 2 ** 62 - 1 and tk.amin(_dev(v)).item() == -(2 ** 62)
    u = _dev(np.array([200, 100, 255], np.uint8))
    assert tk.sum(u).item() == 555 and tk.amax(u).item() == 255 and tk.argmin(u).item() == 1


def test_variance_is_stable():
    # a large mean: the one-pass E[x^2] - E[x]^2 would lose every digit in float32
    rng = np.random.default_rng(7)
    a = (1e4 + rng.standard_normal(2000)).astype(np.float32)
    want = a.astype(np.float64).var(ddof=1)
    assert abs(tk.var(_dev(a)).item() - want) < 1e-4 * want
    assert math.isnan(tk.var(_dev(np.ones(1, np.float32))).item())          # one element, correction 1
    assert tk.var(_dev(np.array([1.0, 3.0])), correction=2).item() == math.inf
