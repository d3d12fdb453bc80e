"""Raw CPU reduction kernels (tensorkit/cpu/reduction.py) against numpy float64 / PyTorch.

These test the kernels below the dispatcher (layout contract: x is (outer, n, inner),
reduced over axis 1), which the op table cannot reach directly: both loop shapes (rows,
columns), serial and parallel drivers, row chunking, strided and zero-stride views.
"""
import os
from pathlib import Path

os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".cache" / "numba"))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tensorkit.cpu import reduction as R  # noqa: E402

torch = pytest.importorskip("torch")

# Every dtype is also reached through the dispatcher by the op table (tests/test_ops.py); here a
# representative few keep the number of Numba compilations (and cold-cache CI time) down.
INTS = [np.bool_, np.int32, np.int64]
FLOATS = [np.float32, np.float64]
ALL = INTS + FLOATS
# (outer, n, inner): rows (inner == 1) and columns; n = 1; n past the pairwise leaf (1024)
# and the column row-block (64).
SHAPES = [(1, 1, 1), (3, 1, 4), (2, 5, 1), (4, 37, 1), (1, 3000, 1), (2, 19, 5), (2, 150, 33)]
# The dispatcher hands the kernels C-contiguous arrays only (cpu/reduction.py: _as3d).
LAYOUTS = ["contiguous"]


def _combos(dtypes):
    """(dtype, driver) pairs: every dtype through the serial drivers; the parallel drivers
    (same loop bodies, compiled again per dtype) for a float and an integer dtype."""
    return [(d, "serial") for d in dtypes] + [(d, "parallel") for d in dtypes if d in (np.float32, np.int64)]


@pytest.fixture
def threads(request, monkeypatch):
    """parallel: force the prange drivers, row chunking and several tiles even on tiny inputs."""
    if request.param == "parallel":
        monkeypatch.setattr(R, "_threads", lambda x: 2)
        monkeypatch.setattr(R, "_MIN_CHUNK", 2)
        monkeypatch.setattr(R, "_TILE", 16)
    return request.param


def _values(shape, dtype, rng, kind="normal"):
    if dtype == np.bool_:
        return rng.random(shape) < 0.7
    if np.issubdtype(dtype, np.integer):
        lo = 0 if np.issubdtype(dtype, np.unsignedinteger) else -4
        return rng.integers(lo, 5, shape).astype(dtype)  # small range: ties and exact sums
    if kind == "near1":
        return rng.uniform(0.7, 1.4, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def make(shape, dtype, layout, seed=0, kind="normal"):
    """An (outer, n, inner) input in the given memory layout."""
    rng = np.random.default_rng(seed)
    outer, n, inner = shape
    if layout == "contiguous":
        return _values(shape, dtype, rng, kind)
    if layout == "strided":  # every other element of a transposed buffer: no unit stride
        big = _values((2 * inner, 3 * n, 2 * outer), dtype, rng, kind)
        return big.transpose(2, 1, 0)[::2, ::3, ::2]
    row = _values((outer, 1, inner), dtype, rng, kind)  # stride 0 along n
    return np.broadcast_to(row, shape)


def assert_float_close(got, ref, abs_scale, dtype, factor=8.0):
    """|got - ref| <= factor * eps * abs_scale (the sum of |terms|); NaN and inf must match."""
    got = got.astype(np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_array_equal(got[np.isinf(ref)], ref[np.isinf(ref)])
    finite = np.isfinite(ref)
    err = np.abs(got - ref)[finite]
    assert (err <= factor * np.finfo(dtype).eps * abs_scale[finite]).all(), err.max()


def sum_out_dtype(dtype):
    return np.float64 if dtype == np.float64 else np.float32 if dtype == np.float32 else np.int64


# ---------------------------------------------------------------------------- sum, prod

@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES + [(3, 0, 2), (2, 0, 1)])
@pytest.mark.parametrize("dtype,threads", _combos(ALL), indirect=["threads"])
def test_sum(dtype, shape, layout, threads):
    x = make(shape, dtype, layout)
    out = np.empty((shape[0], shape[2]), sum_out_dtype(dtype))
    R.sum(x, out)
    ref = x.astype(np.float64).sum(1)
    if out.dtype.kind == "f":
        assert_float_close(out, ref, np.abs(x.astype(np.float64)).sum(1), out.dtype)
    else:
        np.testing.assert_array_equal(out, ref.astype(np.int64))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(2, 5, 1), (4, 37, 1), (2, 19, 5), (3, 0, 2)])
@pytest.mark.parametrize("dtype,threads", _combos(ALL), indirect=["threads"])
def test_prod(dtype, shape, layout, threads):
    x = make(shape, dtype, layout, kind="near1")
    if np.issubdtype(dtype, np.integer):
        x = np.clip(x, -2, 2).astype(dtype)  # |prod| <= 2**37 stays exact in int64 and float64
    out = np.empty((shape[0], shape[2]), sum_out_dtype(dtype))
    R.prod(x, out)
    ref = x.astype(np.float64).prod(1)
    if out.dtype.kind == "f":
        np.testing.assert_allclose(out, ref, rtol=64 * np.finfo(out.dtype).eps)
    else:
        np.testing.assert_array_equal(out, ref.astype(np.int64))


def test_sum_is_accurate_on_long_float32_rows():
    # 1e6 terms: a plain running float32 sum is off by ~1e-3 relative; pairwise is ~1e-7.
    x = np.random.default_rng(1).uniform(0, 1, (1, 1_000_000, 1)).astype(np.float32)
    out = np.empty((1, 1), np.float32)
    R.sum(x, out)
    ref = x.astype(np.float64).sum()
    assert abs(out[0, 0] - ref) / ref < 1e-6


@pytest.mark.parametrize("threads", ["serial", "parallel"], indirect=True)
def test_sum_propagates_nan_and_inf(threads):
    x = np.ones((4, 40, 1), np.float32)
    x[0, 3], x[1, 5], x[2, 1], x[2, 7] = np.nan, np.inf, np.inf, -np.inf
    out = np.empty((4, 1), np.float32)
    R.sum(x, out)
    np.testing.assert_array_equal(out[:, 0], [np.nan, np.inf, np.nan, 40])
    xc = np.ascontiguousarray(x.transpose(2, 1, 0))  # same slices along columns
    outc = np.empty((1, 4), np.float32)
    R.sum(xc, outc)
    np.testing.assert_array_equal(outc[0], [np.nan, np.inf, np.nan, 40])


# ---------------------------------------------------------------------------- extremes

@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype,threads", _combos(ALL), indirect=["threads"])
def test_extremes_and_indices(dtype, shape, layout, threads):
    x = make(shape, dtype, layout)
    o_shape = (shape[0], shape[2])
    for fn, ref_val, ref_idx, with_idx, arg in [
        (R.amax, np.max, np.argmax, R.max_with_indices, R.argmax),
        (R.amin, np.min, np.argmin, R.min_with_indices, R.argmin),
    ]:
        out = np.empty(o_shape, dtype)
        np.testing.assert_array_equal(fn(x, out), ref_val(x, axis=1))
        values, indices = np.empty(o_shape, dtype), np.empty(o_shape, np.int64)
        with_idx(x, values, indices)
        np.testing.assert_array_equal(values, ref_val(x, axis=1))
        np.testing.assert_array_equal(indices, ref_idx(x, axis=1))  # numpy: first occurrence
        np.testing.assert_array_equal(arg(x, np.empty(o_shape, np.int64)), ref_idx(x, axis=1))


@pytest.mark.parametrize("inner", [1, 3])
@pytest.mark.parametrize("threads", ["serial", "parallel"], indirect=True)
def test_extremes_nan_inf_and_ties(inner, threads):
    rows = np.array([
        [1.0, 3.0, 3.0, -2.0, 3.0, 0.0],         # tie: first index wins
        [np.nan, 5.0, np.nan, -9.0, 1.0, 2.0],   # NaN is the extreme, first NaN's index
        [1.0, 2.0, np.inf, np.nan, -np.inf, 0.0],
        [-np.inf, -np.inf, -np.inf, -np.inf, -np.inf, -np.inf],
        [0.0, -1.0, -1.0, 7.0, 7.0, np.nan],
    ])
    for dtype in FLOATS:
        x = np.repeat(rows[:, :, None], inner, axis=2).astype(dtype)
        t = torch.from_numpy(np.ascontiguousarray(x))
        o_shape = (x.shape[0], inner)
        for fn, with_idx, arg, tfn in [(R.amax, R.max_with_indices, R.argmax, torch.max),
                                       (R.amin, R.min_with_indices, R.argmin, torch.min)]:
            tv, ti = tfn(t, dim=1)
            np.testing.assert_array_equal(fn(x, np.empty(o_shape, dtype)), tv.numpy())
            values, indices = with_idx(x, np.empty(o_shape, dtype), np.empty(o_shape, np.int64))
            np.testing.assert_array_equal(values, tv.numpy())
            np.testing.assert_array_equal(indices, ti.numpy())
            np.testing.assert_array_equal(arg(x, np.empty(o_shape, np.int64)), ti.numpy())


def test_extremes_reject_empty():
    with pytest.raises(ValueError, match="empty"):
        R.amax(np.zeros((2, 0, 1), np.float32), np.empty((2, 1), np.float32))


# ---------------------------------------------------------------------------- var

@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype,threads", _combos([np.int32] + FLOATS), indirect=["threads"])
def test_var(dtype, shape, layout, threads):
    x = make(shape, dtype, layout) + (100 if dtype != np.int32 else 0)  # offset: cancellation
    x = x.astype(dtype)
    for correction in [0, 1]:
        out_dtype = np.float64 if dtype != np.float32 else np.float32
        out = np.empty((shape[0], shape[2]), out_dtype)
        R.var(x, out, correction)
        ref = torch.from_numpy(np.ascontiguousarray(x, np.float64)).var(dim=1, correction=correction)
        np.testing.assert_allclose(out, ref.numpy(), rtol=1e-4 if out_dtype == np.float32 else 1e-10,
                                   atol=1e-5 if out_dtype == np.float32 else 1e-10, equal_nan=True)


@pytest.mark.parametrize("inner", [1, 2])
def test_var_degenerate(inner):
    for n, correction, expect in [(1, 1, np.nan), (2, 3, np.inf), (0, 0, np.nan), (3, 3, np.inf)]:
        x = np.arange(3 * n * inner, dtype=np.float64).reshape(3, n, inner)
        out = np.empty((3, inner))
        R.var(x, out, correction)
        np.testing.assert_array_equal(out, np.full((3, inner), expect))


# ---------------------------------------------------------------------------- all, any

@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES + [(3, 0, 2), (2, 0, 1)])
@pytest.mark.parametrize("dtype,threads", _combos(ALL), indirect=["threads"])
def test_all_any(dtype, shape, layout, threads):
    x = make(shape, dtype, layout)
    if dtype != np.bool_:
        x = (x * (make(shape, np.bool_, layout, seed=2) | (np.arange(shape[1]) % 7 != 3)[:, None])).astype(dtype)
    for fn, ref in [(R.all, np.all), (R.any, np.any)]:
        out = np.empty((shape[0], shape[2]), np.bool_)
        np.testing.assert_array_equal(fn(x, out), ref(x != 0, axis=1))


def test_all_any_nan_is_true():
    x = np.array([[np.nan, 1.0], [np.nan, 0.0], [0.0, 0.0]])[:, :, None]
    np.testing.assert_array_equal(R.all(x, np.empty((3, 1), bool))[:, 0], [True, False, False])
    np.testing.assert_array_equal(R.any(x, np.empty((3, 1), bool))[:, 0], [True, True, False])


# ---------------------------------------------------------------------------- norm

@pytest.mark.parametrize("p", [2, 1, np.inf, -np.inf, 0, 3, 0.5, -1])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype,threads", _combos(FLOATS), indirect=["threads"])
def test_norm(dtype, shape, layout, p, threads):
    x = make(shape, dtype, layout)
    x = np.where(np.abs(x) < 0.3, 0, x).astype(dtype)  # zeros for p = 0 and p < 0
    out = np.empty((shape[0], shape[2]), dtype)
    R.norm(x, out, p)
    ref = np.linalg.norm(x.astype(np.float64), ord=p, axis=1)
    np.testing.assert_allclose(out, ref, rtol=4 * np.finfo(dtype).eps * 8, equal_nan=True)


@pytest.mark.parametrize("p", [2, 1, 0, 3, 0.5])   # inf and negative p have no identity: ops/ refuses them
def test_norm_empty_is_zero(p):
    out = np.full((3, 2), 7.0, np.float32)
    R.norm(np.empty((3, 0, 2), np.float32), out, p)
    np.testing.assert_array_equal(out, 0)


def test_norm_nan_inf():
    x = np.array([[np.nan, 1.0, 0.0], [np.inf, 1.0, 2.0], [0.0, 0.0, 0.0]], np.float32)
    t = torch.from_numpy(x)
    for p in [2, 1, np.inf, -np.inf, 0, 3]:
        out = R.norm(x[:, :, None], np.empty((3, 1), np.float32), p)[:, 0]
        np.testing.assert_array_equal(out, torch.linalg.vector_norm(t, p, dim=1).numpy())


# ---------------------------------------------------------------------------- logsumexp, softmax

def _special_rows(dtype, inner):
    rows = np.array([
        [-np.inf, -np.inf, -np.inf, -np.inf],
        [np.inf, 1.0, 2.0, -np.inf],
        [np.nan, 1.0, 2.0, 3.0],
        [1000.0, 999.0, -1000.0, 1000.0],      # overflows without the max shift
        [-1000.0, -1001.0, -np.inf, -1000.5],  # underflows without it
    ])
    return np.repeat(rows[:, :, None], inner, axis=2).astype(dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES + [(3, 0, 2), (2, 0, 1)])
@pytest.mark.parametrize("dtype,threads", _combos(FLOATS), indirect=["threads"])
def test_logsumexp(dtype, shape, layout, threads):
    x = make(shape, dtype, layout) * 10
    out = np.empty((shape[0], shape[2]), dtype)
    R.logsumexp(x, out)
    x64 = x.astype(np.float64)
    ref = torch.logsumexp(torch.from_numpy(np.ascontiguousarray(x64)), dim=1).numpy()
    np.testing.assert_allclose(out, ref, rtol=8 * np.finfo(dtype).eps, atol=8 * np.finfo(dtype).eps)


@pytest.mark.parametrize("inner", [1, 3])
@pytest.mark.parametrize("dtype,threads", _combos(FLOATS), indirect=["threads"])
def test_logsumexp_special(dtype, inner, threads):
    x = _special_rows(dtype, inner)
    ref = torch.logsumexp(torch.from_numpy(np.ascontiguousarray(x, np.float64)), dim=1).numpy()
    out = R.logsumexp(x, np.empty((x.shape[0], inner), dtype))
    np.testing.assert_allclose(out, ref, rtol=8 * np.finfo(dtype).eps, equal_nan=True)


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES + [(3, 0, 2)])
@pytest.mark.parametrize("dtype,threads", _combos(FLOATS), indirect=["threads"])
def test_softmax(dtype, shape, layout, log, threads):
    x = make(shape, dtype, layout) * 5
    out = np.full(shape, np.nan, dtype)
    (R.log_softmax if log else R.softmax)(x, out)
    t = torch.from_numpy(np.ascontiguousarray(x, np.float64))
    ref = (torch.log_softmax if log else torch.softmax)(t, dim=1).numpy()
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(out, ref, rtol=16 * eps, atol=16 * eps)


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("inner", [1, 3])
@pytest.mark.parametrize("dtype,threads", _combos(FLOATS), indirect=["threads"])
def test_softmax_special(dtype, inner, log, threads):
    x = _special_rows(dtype, inner)
    t = torch.from_numpy(np.ascontiguousarray(x, np.float64))
    ref = (torch.log_softmax if log else torch.softmax)(t, dim=1).numpy()  # all -inf -> nan
    out = (R.log_softmax if log else R.softmax)(x, np.empty_like(x))
    np.testing.assert_allclose(out, ref, rtol=16 * np.finfo(dtype).eps, atol=16 * np.finfo(dtype).eps,
                               equal_nan=True)


# ---------------------------------------------------------------------------- scans

@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES + [(3, 0, 2)])
@pytest.mark.parametrize("dtype,threads", _combos(ALL), indirect=["threads"])
def test_cumsum_cumprod(dtype, shape, layout, threads):
    for fn, ref_fn, kind in [(R.cumsum, np.cumsum, "normal"), (R.cumprod, np.cumprod, "near1")]:
        x = make(shape, dtype, layout, kind=kind)
        if fn is R.cumprod:
            x = x[:, :40]  # long products overflow the reference
            if np.issubdtype(dtype, np.integer):
                x = np.clip(x, -2, 2).astype(dtype)
        out = np.empty(x.shape, sum_out_dtype(dtype))
        fn(x, out)
        ref = ref_fn(x.astype(np.float64), axis=1)
        if out.dtype.kind == "f":  # float64 accumulation: within one rounding of the exact prefix
            np.testing.assert_allclose(out, ref, rtol=2 * np.finfo(dtype).eps,
                                       atol=4 * np.finfo(dtype).eps * np.abs(ref).max(initial=1))
        else:
            np.testing.assert_array_equal(out, ref.astype(np.int64))
