"""The Triton matmul on the cuda device (``kernels/matmul.py``), beyond what the op table checks.

Runs on the emulated device in CI (Triton's interpreter) and natively on a GPU. Results are
compared with numpy in float64 on the same (already rounded) inputs, within the rounding
error bound of the computation (``_bound``); the TF32 switch, both kernels on multi-tile
grids, batch broadcasting, the autotuner and its cache on disk are tested here.
"""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

import tensorkit as tk
from tensorkit import dtypes as D
from tensorkit.kernels import matmul as MM

pytestmark = pytest.mark.skipif(not tk.cuda.is_available(), reason="no CUDA device (real or emulated)")
EMULATED = tk.cuda.EMULATED
FLOATS = (D.float16, D.bfloat16, D.float32, D.float64)

# unit roundoff of each dtype (half an ulp of 1)
_U = {D.float16: 2.0 ** -11, D.bfloat16: 2.0 ** -8, D.float32: 2.0 ** -24, D.float64: 2.0 ** -53}


def _rand(shape, dtype, seed=0):
    """Values in [-2, 2) as ``dtype`` on the cpu (rounded once, so the reference sees the same)."""
    return tk.from_numpy(np.random.default_rng(seed).uniform(-2, 2, shape)).to(dtype)


def _ref(a: tk.Tensor, b: tk.Tensor) -> np.ndarray:
    return np.matmul(np.asarray(a.cpu().double().numpy()), np.asarray(b.cpu().double().numpy()))


def _bound(a: tk.Tensor, b: tk.Tensor, dtype: D.DType, tf32: bool = False) -> np.ndarray:
    """Rounding error bound of each output element: K products summed in the accumulator
    (float32; float64 for float64) lose at most K * u_acc * sum|a_i b_i| (the classic
    gamma_K bound), then one rounding to ``dtype`` adds u * |c|. TF32 first cuts each input
    to 10 mantissa bits (truncated, not rounded, on some paths): 2 * 2**-10 relative per product."""
    absprod = np.matmul(np.abs(a.cpu().double().numpy()), np.abs(b.cpu().double().numpy()))
    k = a.shape[-1]
    u_acc = 2.0 ** -53 if dtype is D.float64 else 2.0 ** -24
    per_product = 2 * 2.0 ** -10 if tf32 else 0.0
    return (k * u_acc + per_product) * absprod + _U[dtype] * np.abs(_ref(a, b)) + 1e-300


def _check(out: tk.Tensor, a: tk.Tensor, b: tk.Tensor, tf32: bool = False) -> None:
    ref = _ref(a, b)
    got = np.asarray(out.cpu().double().numpy())
    assert got.shape == ref.shape, f"shape {got.shape}, expected {ref.shape}"
    err = np.abs(got - ref)
    bound = _bound(a, b, out.dtype, tf32)
    assert (err <= bound).all(), f"{out.dtype}: error {err.max():.3g} above the bound at {np.argwhere(err > bound)[:3].tolist()}"


def _mm(a, b):
    return tk.matmul(a.cuda(), b.cuda())


# ---- dtypes, shapes, layouts -------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: d.name)
def test_dtypes_odd_sizes(dtype):
    # 37 x 29 output: ragged tiles in M and N; K = 45 ragged in K (16-wide tiles when emulated)
    a, b = _rand((37, 45), dtype, 1), _rand((45, 29), dtype, 2)
    out = _mm(a, b)
    assert out.dtype is dtype and out.device.type == "cuda"
    _check(out, a, b)


@pytest.mark.parametrize("layout", ["a.T", "b.T", "both.T", "sliced", "offset"])
def test_strided_inputs_without_copies(layout):
    a, b = _rand((24, 40), D.float32, 3).cuda(), _rand((40, 20), D.float32, 4).cuda()
    if layout in ("a.T", "both.T"):
        a = a.T.contiguous().T                  # column-major A
    if layout in ("b.T", "both.T"):
        b = b.T.contiguous().T
    if layout == "sliced":
        a = _rand((24, 80), D.float32, 5).cuda()[:, ::2]      # column stride 2
        b = _rand((60, 20), D.float32, 6).cuda()[10:50]       # rows 10..49
    if layout == "offset":
        a = _rand((30, 45), D.float32, 7).cuda()[3:27, 5:]    # storage offset, row stride 45
    before = [a.cpu().numpy().copy(), b.cpu().numpy().copy()]
    _check(tk.matmul(a, b), a, b)
    assert np.array_equal(a.cpu().numpy(), before[0]) and np.array_equal(b.cpu().numpy(), before[1])


@pytest.mark.parametrize("shapes", [
    ((2, 1, 5, 7), (3, 7, 4)),          # both broadcast (stride-0 batch dims on both sides)
    ((3, 5, 7), (7, 4)),                # B shared by every batch: folded into one (15 x 7) product
    ((5, 7), (3, 7, 4)),                # A shared: a stride-0 batch of A
    ((2, 4, 3, 5, 7), (4, 1, 7, 6)),    # three batch dims
], ids=["both", "fold", "a-broadcast", "3-batch"])
def test_batch_broadcast(shapes):
    a, b = _rand(shapes[0], D.float32, 8), _rand(shapes[1], D.float32, 9)
    _check(_mm(a, b), a, b)


def test_batch_dims_that_do_not_coalesce():
    # batch (2, 4, 3) where A is broadcast along dim 1 and B along dims 0 and 2: no two batch
    # dims merge, so the third runs as a host loop
    a = _rand((2, 1, 3, 5, 7), D.float32, 10).cuda().expand(2, 4, 3, 5, 7)
    b = _rand((1, 4, 1, 7, 6), D.float32, 11).cuda().expand(2, 4, 3, 7, 6)
    plan = MM._plan(a, b, tk.empty(2, 4, 3, 5, 6, device="cuda"))
    assert plan.outer == (2,) and plan.batch == (4, 3)
    _check(tk.matmul(a, b), a, b)


def test_bmm_and_batched_transposed():
    a = _rand((3, 9, 6), D.float32, 12).cuda().transpose(1, 2)      # (3, 6, 9), column-major per batch
    b = _rand((3, 9, 5), D.float32, 13).cuda()
    _check(tk.bmm(a, b), a, b)


@pytest.mark.parametrize("shapes", [((7,), (7,)), ((7,), (7, 3)), ((4, 7), (7,)), ((7,), (2, 7, 3)), ((2, 4, 7), (7,))],
                         ids=["dot", "vec@mat", "mat@vec", "vec@batch", "batch@vec"])
def test_one_dimensional_operands(shapes):
    a, b = _rand(shapes[0], D.float32, 14), _rand(shapes[1], D.float32, 15)
    _check(_mm(a, b), a, b)


def test_linalg_composites_on_cuda():
    a, b = _rand((6, 5), D.float32, 16), _rand((5, 4), D.float32, 17)
    c, v, w = _rand((6, 4), D.float32, 18), _rand((5,), D.float32, 19), _rand((6,), D.float32, 20)
    A, B, C, V, W = (t.cuda() for t in (a, b, c, v, w))
    np.testing.assert_allclose(tk.mm(A, B).cpu().numpy(), _ref(a, b), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(tk.addmm(C, A, B, beta=0.5, alpha=2.0).cpu().numpy(),
                               0.5 * c.double().numpy() + 2.0 * _ref(a, b), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tk.mv(A, V).cpu().numpy(), _ref(a, v), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(tk.dot(W, W).cpu().numpy(), _ref(w, w), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(tk.outer(W, V).cpu().numpy(), np.outer(w.numpy(), v.numpy()), rtol=1e-6)
    np.testing.assert_allclose((A @ B).cpu().numpy(), _ref(a, b), rtol=1e-6, atol=1e-6)


# ---- zero sizes -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [D.float32, D.bfloat16], ids=lambda d: d.name)
def test_k_zero_writes_zeros(dtype):
    a, b = tk.empty(4, 0, dtype=dtype, device="cuda"), tk.empty(0, 3, dtype=dtype, device="cuda")
    out = tk.full((4, 3), math.nan, dtype=dtype, device="cuda")     # the kernel must overwrite it
    MM.matmul(a, b, out)
    assert np.array_equal(out.cpu().float().numpy(), np.zeros((4, 3), np.float32))
    assert np.array_equal(tk.matmul(a, b).cpu().float().numpy(), np.zeros((4, 3), np.float32))


@pytest.mark.parametrize("shapes", [((0, 5), (5, 3)), ((4, 5), (5, 0)), ((0, 4, 5), (0, 5, 3))])
def test_empty_output_launches_nothing(shapes, monkeypatch):
    def no_launch(*args, **kwargs):
        raise AssertionError("a kernel was launched for an empty output")
    monkeypatch.setattr(MM, "launch", no_launch)
    a, b = tk.empty(*shapes[0], device="cuda"), tk.empty(*shapes[1], device="cuda")
    assert tuple(tk.matmul(a, b).shape) == _ref(tk.empty(*shapes[0]), tk.empty(*shapes[1])).shape


# ---- errors --------------------------------------------------------------------------------------------------------------
def test_errors():
    a = tk.ones(2, 3, device="cuda")
    with pytest.raises(RuntimeError, match="same device.*cuda.*cpu|same device.*cpu.*cuda"):
        tk.matmul(a, tk.ones(3, 2))
    with pytest.raises(RuntimeError, match="same dtype.*float32.*float64"):
        tk.matmul(a, tk.ones(3, 2, dtype=tk.float64, device="cuda"))
    with pytest.raises(NotImplementedError, match="matmul.*int32.*cuda"):      # PyTorch has no CUDA int matmul either
        tk.matmul(tk.ones(2, 3, dtype=tk.int32, device="cuda"), tk.ones(3, 2, dtype=tk.int32, device="cuda"))


# ---- float32 precision: exact by default, TF32 on request ------------------------------------------------------------------
def test_precision_flags_are_linked():
    assert tk.get_float32_matmul_precision() == "highest" and tk.backends.cuda.matmul.allow_tf32 is False
    try:
        tk.set_float32_matmul_precision("high")
        assert tk.backends.cuda.matmul.allow_tf32 is True
        tk.set_float32_matmul_precision("medium")
        assert tk.backends.cuda.matmul.allow_tf32 is True
        tk.backends.cuda.matmul.allow_tf32 = False
        assert tk.get_float32_matmul_precision() == "highest"
        tk.backends.cuda.matmul.allow_tf32 = True
        assert tk.get_float32_matmul_precision() == "high"
        with pytest.raises(ValueError, match="'highest', 'high' or 'medium'.*'fast'"):
            tk.set_float32_matmul_precision("fast")
        with pytest.raises(AttributeError, match="allow_tf31"):
            tk.backends.cuda.matmul.allow_tf31 = True
    finally:
        tk.set_float32_matmul_precision("highest")


def _tf32_sensitive():
    # 1 + 2**-20 is a float32 but not a TF32 (10 mantissa bits): exact products give
    # 16 * (1 + 2**-20) = 16 + 2**-16, TF32 products give 16
    a = tk.full((16, 16), 1 + 2.0 ** -20, device="cuda")
    b = tk.ones(16, 16, device="cuda")
    return a, b


@pytest.mark.parametrize("setting", ["default", "allow_tf32", "high", "medium"])
def test_float32_precision_reaches_the_kernel(setting, monkeypatch):
    seen = []
    launch = MM.launch
    monkeypatch.setattr(MM, "launch", lambda *args, **kw: (seen.append(kw["PRECISION"]), launch(*args, **kw)))
    a, b = _tf32_sensitive()
    try:
        if setting == "allow_tf32":
            tk.backends.cuda.matmul.allow_tf32 = True
        elif setting != "default":
            tk.set_float32_matmul_precision(setting)
        out = tk.matmul(a, b).cpu().numpy()
        half = tk.matmul(a.half(), b.half())      # TF32 only concerns float32
    finally:
        tk.set_float32_matmul_precision("highest")
    tf32 = setting != "default"
    assert seen[-2:] == ["tf32" if tf32 else "ieee", "ieee"]
    exact = np.float32(16 + 2.0 ** -16)
    if not tf32:
        assert (out == exact).all(), "float32 matmul must be exact IEEE float32 by default"
    elif not EMULATED:                  # the interpreter computes exactly whatever the precision
        assert (out == 16).all(), "TF32 mode should round the inputs to 10 mantissa bits"
    assert (half.cpu().float().numpy() == 16).all()


def test_float32_default_is_tight():
    a, b = _rand((33, 70), D.float32, 21), _rand((70, 18), D.float32, 22)
    _check(_mm(a, b), a, b)             # the float32 bound: K * 2**-24 relative; TF32 would miss it by far


def test_tf32_accuracy():
    a, b = _rand((40, 96), D.float32, 27), _rand((96, 36), D.float32, 28)
    try:
        tk.set_float32_matmul_precision("high")
        out = _mm(a, b)
    finally:
        tk.set_float32_matmul_precision("highest")
    _check(out, a, b, tf32=True)        # inputs cut to 10 mantissa bits, sums still in float32


@pytest.mark.parametrize("shape,step", [((96, 80), 1), ((130, 257), 1), ((70, 200), 2)])
def test_k_major_staging(shape, step):
    """TF32 products copy a row-major B K-major first (wgmma reads float32 K-major only): the
    tiled transpose keeps every value, for ragged tiles and strided sources."""
    b = _rand(shape, D.float32, 31).cuda()[:, ::step]
    t = MM._k_major(b)
    assert t.stride() == (1, b.shape[0]) and np.array_equal(t.cpu().numpy(), b.cpu().numpy())


def test_tf32_product_with_k_major_staging(monkeypatch):
    a, b = _rand((300, 96), D.float32, 32), _rand((96, 80), D.float32, 33)
    staged = []
    monkeypatch.setattr(MM, "_k_major", lambda t, _f=MM._k_major: staged.append(t.shape) or _f(t))
    try:
        tk.set_float32_matmul_precision("high")
        out = _mm(a, b)
    finally:
        tk.set_float32_matmul_precision("highest")
    _check(out, a, b, tf32=True)
    if EMULATED or tk.cuda.get_device_capability()[0] >= 9:
        assert staged == [(96, 80)]


# ---- both kernels on multi-tile grids (forced configs) ------------------------------------------------------------------------
def _run_config(a, b, config, capability=(9, 0)):
    out = tk.empty(a.shape[0], b.shape[1], dtype=a.dtype, device="cuda")
    plan = MM._plan(a, b, out)
    tma = MM._tma_strides(plan, a, b, out, capability)
    if config.kernel == "tma":
        assert tma is not None, "the TMA kernel should apply to this layout"
    MM.prepare()
    MM._run(plan, tma, a, b, out, config, MM._precision(a.dtype))
    return out


_GRID_CASES = [
    # M x K @ K x N with ragged 16-tiles in every dim; group_m=2 exercises the grouped tile order
    ("ptr", D.float32, "k", "n"), ("ptr", D.float16, "m", "k"), ("ptr", D.float64, "k", "n"),
    ("tma", D.float32, "k", "n"), ("tma", D.bfloat16, "k", "k"), ("tma", D.float16, "m", "n"),
    ("tma", D.float32, "m", "k"),
]


@pytest.mark.parametrize("kernel,dtype,la,lb", _GRID_CASES, ids=[f"{k}-{d.name}-a{la}-b{lb}" for k, d, la, lb in _GRID_CASES])
@pytest.mark.parametrize("split", [False, True], ids=["", "split"])
def test_kernels_multi_tile(kernel, dtype, la, lb, split):
    if split and kernel != "tma":
        pytest.skip("split_store is a TMA-kernel option")
    if not EMULATED and kernel == "tma" and tk.cuda.get_device_capability()[0] < 9:
        pytest.skip("the TMA kernel needs sm90+")
    M, N, K = 56, 72, 40                 # 16-byte aligned rows for every dtype (TMA), ragged for 16-tiles
    a = _rand((M, K), dtype, 23).cuda()
    b = _rand((K, N), dtype, 24).cuda()
    if la == "m":
        a = a.T.contiguous().T
    if lb == "k":
        b = b.T.contiguous().T
    config = MM.Config(kernel, 16, 16, 16, group_m=2, num_warps=4, num_stages=2, split_store=split)
    _check(_run_config(a, b, config), a, b)


def test_tma_applies_only_where_it_can():
    out = lambda *s, dt=tk.float16: tk.empty(*s, dtype=dt, device="cuda")
    a, b = tk.ones(64, 32, dtype=tk.float16, device="cuda"), tk.ones(32, 48, dtype=tk.float16, device="cuda")
    tma = lambda a, b, o, cap=(9, 0): MM._tma_strides(MM._plan(a, b, o), a, b, o, cap)
    assert tma(a, b, out(64, 48)) == (32, True, 48, False)
    assert tma(a.T.contiguous().T, b.T.contiguous().T, out(64, 48)) == (64, False, 32, True)
    assert tma(a, b, out(64, 48), cap=(8, 0)) is None                                   # Ampere: no TMA
    assert tma(a[:, :30], b[:30], out(64, 48)) == (32, True, 48, False)                 # row stride 32, K = 30: fine...
    assert tma(a[:, 1:], b[1:], out(64, 48)) is None                                     # ...but not an unaligned start
    assert tma(a[:, ::2], b[::2], out(64, 48)) is None                                   # no unit stride
    c = tk.ones(64, 30, dtype=tk.float16, device="cuda")
    assert tma(c, tk.ones(30, 48, dtype=tk.float16, device="cuda"), out(64, 48)) is None  # 60-byte rows
    a3 = tk.ones(2, 64, 32, dtype=tk.float16, device="cuda")
    assert tma(a3, b.expand(2, 32, 48), out(2, 64, 48)) == (32, True, 48, False)         # batch folded into M
    assert tma(a3, tk.ones(2, 32, 48, dtype=tk.float16, device="cuda"), out(2, 64, 48)) is None   # a real batch
    a64 = tk.ones(64, 32, dtype=tk.float64, device="cuda")
    assert tma(a64, tk.ones(32, 48, dtype=tk.float64, device="cuda"), out(64, 48, dt=tk.float64)) is None


# ---- autotuning and its cache ----------------------------------------------------------------------------------------------
def _plan_for(shape_a, shape_b, dtype=D.float16, ta=False):
    a = tk.empty(*shape_a[::-1], dtype=dtype, device="cuda").T if ta else tk.empty(*shape_a, dtype=dtype, device="cuda")
    b = tk.empty(*shape_b, dtype=dtype, device="cuda")
    return MM._plan(a, b, tk.empty(*(shape_a[:-1] + shape_b[-1:]), dtype=dtype, device="cuda"))


def test_key():
    key = lambda plan, dt=D.float16, prec="ieee", tma=True: MM._key(plan, dt, prec, tma)
    base = key(_plan_for((4000, 1000), (1000, 3000)))
    assert base == "float16/ieee/batch1/M4096/N4096/K1024/ar/br/tma1"
    assert key(_plan_for((4096, 1024), (1024, 4096))) == base                    # same buckets, same config
    assert key(_plan_for((4000, 1000), (1000, 3000), ta=True)) != base           # layout
    assert key(_plan_for((4000, 1000), (1000, 3000)), D.bfloat16) != base       # dtype
    assert key(_plan_for((4000, 1000), (1000, 3000)), D.float32, "tf32") != key(
        _plan_for((4000, 1000), (1000, 3000)), D.float32, "ieee")               # precision
    assert key(_plan_for((4000, 1000), (1000, 3000)), tma=False) != base        # kernel eligibility
    assert "batch32/" in key(_plan_for((32, 128, 128), (32, 128, 128)))         # batch size


def test_candidates():
    for dtype in FLOATS:
        for prec in ("ieee", "tf32"):
            for cap in ((8, 0), (9, 0)):
                big = MM.candidates(dtype, prec, cap, True, 4096, 4096, 4096)
                assert big and len(set(big)) == len(big)
                assert any(c.kernel == "tma" for c in big) == (cap[0] >= 9 and dtype is not D.float64)
                assert not any(c.kernel == "tma" for c in MM.candidates(dtype, prec, cap, False, 4096, 4096, 4096))
                small = MM.candidates(dtype, prec, cap, True, 20, 5, 3)
                # tiles shrunk to the problem (powers of two, at least 16)
                assert small and all(c.block_m <= 32 and c.block_n == 16 and c.block_k == 16 for c in small)
                assert small[-1].kernel == "ptr"        # the untuned choice for small products


def _configs():
    return [MM.Config("ptr", 64, 64, 32), MM.Config("ptr", 32, 32, 32), MM.Config("tma", 128, 128, 64)]


def test_tune_picks_the_fastest_and_stores_it(tmp_path):
    path = str(tmp_path / "matmul.json")
    configs, ran = _configs(), []
    times = {configs[0]: 2.0, configs[1]: 1.0, configs[2]: 3.0}
    best = MM.tune("k1", configs, ran.append, path, timer=lambda c, fn: (fn(), times[c])[1])
    assert best == configs[1] and ran == configs                     # every candidate ran once
    stored = json.loads(open(path).read())
    assert stored["configs"] == {"k1": configs[1]._asdict()}
    assert os.listdir(tmp_path) == ["matmul.json"]                    # no temporary file left

    def no_timing(c, fn):
        raise AssertionError("a stored key must not be tuned again")
    assert MM.tune("k1", configs, ran.append, path, timer=no_timing) == configs[1]     # a second process
    MM.tune("k2", configs, ran.append, path, timer=lambda c, fn: times[c] if c.kernel == "ptr" else 0.5)
    assert set(MM.read_cache(path)) == {"k1", "k2"} and MM.read_cache(path)["k2"] == configs[2]


def test_tune_skips_failing_configs(tmp_path):
    path = str(tmp_path / "matmul.json")
    configs = _configs()

    def timer(c, fn):
        if c.kernel == "tma":
            raise RuntimeError("out of resources: shared memory")
        return c.block_m
    with pytest.warns(UserWarning, match="1 config.*failed.*out of resources"):
        assert MM.tune("k", configs, lambda c: None, path, timer=timer) == configs[1]
    with pytest.raises(RuntimeError, match="no tile config ran for k2"):
        MM.tune("k2", configs, lambda c: None, path, timer=lambda c, fn: 1 / 0)


def test_cache_write_is_atomic(tmp_path, monkeypatch):
    path = str(tmp_path / "matmul.json")
    MM.write_cache(path, "k1", _configs()[0])
    before = open(path).read()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt          # the process dies while writing
    monkeypatch.setattr(MM.json, "dump", crash)
    with pytest.raises(KeyboardInterrupt):
        MM.write_cache(path, "k2", _configs()[1])
    assert open(path).read() == before and os.listdir(tmp_path) == ["matmul.json"]
    monkeypatch.undo()
    open(path, "w").write('{"configs": {"k1": {"kernel": "pt')    # a file cut short by some other writer
    assert MM.read_cache(path) == {}
    open(path, "w").write('{"configs": {"k1": {"kernel": "ptr", "block_m": 16, "block_n": 16, "block_k": 16},'
                          ' "k2": {"no_such_field": 1}}}')
    assert MM.read_cache(path) == {"k1": MM.Config("ptr", 16, 16, 16)}


def test_cache_path_names_gpu_and_triton(monkeypatch, tmp_path):
    import triton
    monkeypatch.setenv("TENSORKIT_CACHE_DIR", str(tmp_path))
    path = MM.cache_path("NVIDIA H100 80GB HBM3")
    assert path.startswith(str(tmp_path)) and os.path.basename(path) == \
        f"matmul-v{MM._CACHE_VERSION}-NVIDIA_H100_80GB_HBM3-triton-{triton.__version__}.json"


def test_autotune_end_to_end(monkeypatch, tmp_path):
    """Through ``tk.matmul``: the first call times the candidates (a fake timer here, so the
    emulated device can tune) and writes the cache; after a restart (memo cleared) the
    stored config is used without timing."""
    monkeypatch.setenv("TENSORKIT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(MM, "_memo", {})
    monkeypatch.setattr(MM, "_calls", {})
    monkeypatch.setattr(MM, "TUNE_MIN_WORK", 0)
    timed = []

    def timer(c, fn):
        fn()                             # every candidate really runs (in the interpreter when emulated)
        timed.append(c)
        return 1.0 if c.block_k == 16 else 2.0
    monkeypatch.setattr(MM, "_timer", timer)
    a, b = _rand((20, 24), D.float32, 25).cuda(), _rand((24, 12), D.float32, 26).cuda()
    _check(tk.matmul(a, b), a, b)
    assert timed, "the first call should tune"
    name = tk.cuda.get_device_name()
    stored = MM.read_cache(MM.cache_path(name))
    assert len(stored) == 1 and next(iter(stored.values())).block_k == 16 and len(set(timed)) > 1
    _check(tk.matmul(a, b), a, b)
    assert len(timed) == len(set(timed)), "a key is tuned once per process"

    monkeypatch.setattr(MM, "_memo", {})                  # a new process
    monkeypatch.setattr(MM, "_calls", {})
    monkeypatch.setattr(MM, "_timer", lambda c, fn: pytest.fail("tuned again although the cache has the key"))
    _check(tk.matmul(a, b), a, b)


@pytest.mark.parametrize("kernel", ["ptr", "tma"])
def test_launch_takes_the_fast_path(kernel):
    """``_launch.launch`` caches the compiled kernel (skipping Triton's ~20 us per-call
    bookkeeping) only when the constexprs are passed by name in the kernel's order."""
    a, b = tk.ones(64, 32, dtype=tk.float16, device="cuda"), tk.ones(32, 48, dtype=tk.float16, device="cuda")
    out = tk.empty(64, 48, dtype=tk.float16, device="cuda")
    plan = MM._plan(a, b, out)
    config = MM.Config(kernel, 32, 32, 16)
    fn, grid, scalars, constexprs, options = MM._recipe(plan, MM._tma_strides(plan, a, b, out, (9, 0)), out,
                                                        config, "ieee")
    assert list(constexprs) == fn.arg_names[3 + len(scalars):]
    assert set(options) == {"num_warps", "num_stages"}


@pytest.mark.skipif(EMULATED, reason="the emulated device runs one config; this checks the real GPU's candidates")
@pytest.mark.parametrize("dtype,precision,transposed", [
    (D.float16, "ieee", False), (D.bfloat16, "ieee", False), (D.bfloat16, "ieee", True),
    (D.float32, "tf32", False), (D.float32, "tf32", True), (D.float32, "ieee", False), (D.float64, "ieee", False),
], ids=lambda v: getattr(v, "name", str(v)))
def test_every_candidate_is_correct_on_this_gpu(dtype, precision, transposed):
    """The tuner takes the fastest config whatever it computes: each candidate this GPU would
    time must compile and give right results (ragged edges in every dim, both kernels)."""
    M, N, K = 264, 200, 136             # multiples of 8 (TMA-aligned rows), not of any tile
    a, b = _rand((M, K), dtype, 29).cuda(), _rand((K, N), dtype, 30).cuda()
    if transposed:
        a, b = a.T.contiguous().T, b.T.contiguous().T
    out = tk.empty(M, N, dtype=dtype, device="cuda")
    plan = MM._plan(a, b, out)
    capability = tk.cuda.get_device_capability()
    tma = MM._tma_strides(plan, a, b, out, capability)
    assert (tma is not None) == (capability[0] >= 9 and dtype is not D.float64)
    MM.prepare()
    for config in MM.candidates(dtype, precision, capability, tma is not None, 4096, 4096, 4096):
        out = tk.full((M, N), math.nan, dtype=dtype, device="cuda")
        try:
            MM._run(plan, tma, a, b, out, config, precision)
        except Exception as e:          # too much shared memory for this GPU: the tuner skips it too
            if "resources" not in str(e).lower():
                raise
            continue
        _check(out, a, b, tf32=precision == "tf32")


# ---- split-K ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [D.float32, D.float64], ids=lambda d: d.name)
@pytest.mark.parametrize("layout", ["plain", "a.T", "b.T", "offset"])
def test_split_k_long_reduction(dtype, layout, monkeypatch):
    """A few output tiles over a long K run as a batch of products over chunks of K plus an
    ordered sum (two launches), on any strides, within the same rounding bound."""
    monkeypatch.setattr(MM, "SPLIT_K_MIN", 64)
    monkeypatch.setattr(MM, "SPLIT_K_CHUNK", 16)
    a, b = _rand((5, 96), dtype, 30).cuda(), _rand((96, 7), dtype, 31).cuda()
    if layout == "a.T":
        a = a.T.contiguous().T
    if layout == "b.T":
        b = b.T.contiguous().T
    if layout == "offset":
        a = _rand((9, 100), dtype, 32).cuda()[2:7, 4:]
    assert MM._split_k(a, tk.empty((5, 7), dtype=dtype, device="cuda")) == (4 if EMULATED else 6)  # 4 / 132 SMs
    launched = []
    real = MM.launch
    monkeypatch.setattr(MM, "launch", lambda fn, *args, **kw: (launched.append(fn.__name__), real(fn, *args, **kw)))
    _check(tk.matmul(a, b), a, b)
    assert launched == ["matmul_kernel", "splitk_sum_kernel"], launched


def test_split_k_only_where_it_pays(monkeypatch):
    monkeypatch.setattr(MM, "SPLIT_K_MIN", 64)
    monkeypatch.setattr(MM, "SPLIT_K_CHUNK", 16)
    out = lambda m, n, dtype=D.float32: tk.empty((m, n), dtype=dtype, device="cuda")
    a = lambda m, k, dtype=D.float32: tk.empty((m, k), dtype=dtype, device="cuda")
    assert MM._split_k(a(5, 97), out(5, 7)) == 1                # K prime: no divisor
    assert MM._split_k(a(5, 32), out(5, 7)) == 1                # K under SPLIT_K_MIN
    assert MM._split_k(a(5, 96, D.float16), out(5, 7, D.float16)) == 1   # 16-bit: not split
    sms = MM._device_info(0)[2] if not EMULATED else 4
    wide = MM.SPLIT_K_TILE * (sms + 1)
    assert MM._split_k(a(5, 96), out(5, wide)) == 1             # enough output tiles already
    assert MM._split_k(a(5, 96), out(5, 7)) > 1
