"""The cuda device runtime: availability, memory statistics and out-of-memory, streams and
events, transfers, Triton driver hooks.

Runs on the emulated device (TENSORKIT_INTERPRET=1) in CI and natively on a GPU. Without
either, ``test_emulated_suite`` re-runs this file under TENSORKIT_INTERPRET=1 in a child
process. Tests marked ``real_gpu`` need a real GPU.
"""
import os
import subprocess
import sys
import time
import types

import numpy as np
import pytest

import tensorkit as tk
from tensorkit import _dispatch, _storage
from tensorkit.device import CPU, device as Device

EMULATED = tk.cuda.EMULATED
HAVE_CUDA = tk.cuda.is_available()
any_cuda = pytest.mark.skipif(not HAVE_CUDA, reason="needs a CUDA device (real or TENSORKIT_INTERPRET=1)")
real_gpu = pytest.mark.skipif(EMULATED or not HAVE_CUDA, reason="needs a real GPU")
emulated = pytest.mark.skipif(not EMULATED, reason="emulated device only")

DTYPES = [tk.float16, tk.bfloat16, tk.float32, tk.float64, tk.int8, tk.int16, tk.int32, tk.int64, tk.uint8, tk.bool]


@pytest.mark.skipif(HAVE_CUDA, reason="a CUDA device is here: the tests run directly")
def test_emulated_suite():
    env = dict(os.environ, TENSORKIT_INTERPRET="1")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                        "-p", "no:warnings", __file__], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]


# ---- availability ------------------------------------------------------------------------------
def test_not_available_without_cuda_core(monkeypatch):
    monkeypatch.setattr(tk.cuda, "EMULATED", False)
    monkeypatch.setattr(tk.cuda, "_RT", None)
    monkeypatch.delitem(sys.modules, "tensorkit.cuda._runtime", raising=False)
    monkeypatch.delattr(tk.cuda, "_runtime", raising=False)   # imported already on a GPU machine
    for name in ("cuda.core", "cuda.bindings", "cuda.bindings.driver"):
        monkeypatch.setitem(sys.modules, name, None)       # import raises ImportError
    assert tk.cuda.device_count() == 0
    assert tk.cuda.is_available() is False
    with pytest.raises(RuntimeError, match="no CUDA device is available"):
        tk.empty(2, device="cuda")


def test_not_available_without_driver(monkeypatch):
    rt = pytest.importorskip("tensorkit.cuda._runtime", reason="cuda-core not installed")

    def no_driver(flags):
        raise OSError("libcuda.so.1: cannot open shared object file")

    monkeypatch.setattr(tk.cuda, "EMULATED", False)
    monkeypatch.setattr(tk.cuda, "_RT", rt)
    monkeypatch.setattr(rt, "_count", None)
    monkeypatch.setattr(rt, "_drv", types.SimpleNamespace(cuInit=no_driver))
    assert tk.cuda.is_available() is False


@any_cuda
def test_queries():
    assert tk.cuda.device_count() >= 1
    assert isinstance(tk.cuda.get_device_name(), str) and tk.cuda.get_device_name(0)
    major, minor = tk.cuda.get_device_capability()
    assert major >= 1 and minor >= 0
    tk.cuda.synchronize()
    with pytest.raises(RuntimeError, match="invalid device ordinal"):
        tk.cuda.set_device(tk.cuda.device_count())
    with tk.cuda.device(0):
        assert tk.cuda.current_device() == 0


# ---- memory -----------------------------------------------------------------------------------------
@any_cuda
def test_memory_stats_follow_tensor_lifetimes():
    tk.cuda.synchronize()
    base = tk.cuda.memory_allocated()
    tk.cuda.reset_peak_memory_stats()
    assert tk.cuda.max_memory_allocated() == base
    a = tk.empty(1000, dtype=tk.float32, device="cuda")
    b = tk.empty(10, 10, dtype=tk.float64, device="cuda")
    assert tk.cuda.memory_allocated() == base + 4000 + 800
    view = a[10:20]             # views share storage: no new memory
    assert tk.cuda.memory_allocated() == base + 4800
    assert tk.cuda.memory_reserved() >= tk.cuda.memory_allocated()
    del a
    assert tk.cuda.memory_allocated() == base + 4800     # the view keeps the storage alive
    del view
    assert tk.cuda.memory_allocated() == base + 800
    del b
    assert tk.cuda.memory_allocated() == base
    assert tk.cuda.max_memory_allocated() == base + 4800
    tk.cuda.reset_peak_memory_stats()
    assert tk.cuda.max_memory_allocated() == base
    tk.cuda.empty_cache()
    assert tk.cuda.memory_reserved() >= tk.cuda.memory_allocated()
    text = tk.cuda.memory_summary()
    assert "allocated" in text and "reserved" in text
    free, total = tk.cuda.mem_get_info()
    assert 0 <= free <= total


@emulated
def test_out_of_memory_emulated(monkeypatch):
    monkeypatch.setattr(tk.cuda, "_EMULATED_LIMIT", tk.cuda.memory_allocated() + 4096)
    a = tk.empty(1000, dtype=tk.float32, device="cuda")
    before = tk.cuda.memory_allocated()
    with pytest.raises(tk.cuda.OutOfMemoryError) as info:
        tk.empty(2000, dtype=tk.float32, device="cuda")
    msg = str(info.value)
    assert "8000 bytes" in msg and f"({before} bytes) are allocated" in msg and "96 bytes free" in msg
    assert isinstance(info.value, RuntimeError)
    assert tk.cuda.memory_allocated() == before          # the failed allocation holds nothing
    b = tk.empty(24, dtype=tk.float32, device="cuda")    # and the process goes on
    assert tk.cuda.memory_allocated() == before + 96
    del a, b


def test_memory_limit_env_var():
    code = ("import tensorkit as tk\n"
            "try:\n    tk.empty(1000, device='cuda')\nexcept tk.cuda.OutOfMemoryError as e:\n    print('OOM', e)\n"
            "x = tk.empty(10, device='cuda'); print('after', tk.cuda.memory_allocated())\n")
    env = dict(os.environ, TENSORKIT_INTERPRET="1", TENSORKIT_EMULATED_MEMORY_LIMIT="1000")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "OOM CUDA out of memory on cuda:0: tried to allocate" in r.stdout and "after 40" in r.stdout


@real_gpu
def test_out_of_memory_real_gpu():
    free, total = tk.cuda.mem_get_info()
    with pytest.raises(tk.cuda.OutOfMemoryError, match=f"{2 * total} bytes"):
        tk.empty(2 * total, dtype=tk.uint8, device="cuda")
    # the failed request must not leave the pool holding what it reserved on the way
    assert tk.cuda.memory_reserved() < total // 4, tk.cuda.memory_summary()
    x = tk.empty(1 << 20, dtype=tk.uint8, device="cuda")
    assert x.data_ptr() != 0


@any_cuda
def test_data_ptr():
    host = tk.from_numpy(np.arange(6, dtype=np.float32))
    assert host.data_ptr() == host.numpy().ctypes.data
    assert host[2:].data_ptr() == host.data_ptr() + 8
    dev = tk.empty(6, dtype=tk.float32, device="cuda")
    assert dev.data_ptr() != 0 and dev[2:].data_ptr() == dev.data_ptr() + 8
    data = dev.untyped_storage().data
    assert (data.dtype, data.itemsize, data.nbytes) == (np.dtype(np.float32), 4, 24)


# ---- transfers ---------------------------------------------------------------------------------------
def _values(dtype, n=37):
    rng = np.random.default_rng(0)
    if dtype is tk.bool:
        return rng.random(n) < 0.5
    if dtype.is_floating_point:
        a = (rng.standard_normal(n) * 100).astype(dtype.numpy)
        a[:3] = [np.inf, -np.inf, np.nan]
        return a
    info = np.iinfo(dtype.numpy)
    return rng.integers(info.min, info.max, n, dtype=dtype.numpy, endpoint=True)


@any_cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_transfer_round_trip_exact(dtype):
    a = _values(dtype)
    host = _storage.Storage(a, CPU)
    up = _storage.TRANSFERS[("cpu", "cuda")](host, 5, 30, Device("cuda", 0), False)
    assert up.device == Device("cuda", 0) and up.nbytes == 30 * a.itemsize
    across = _storage.TRANSFERS[("cuda", "cuda")](up, 2, 25, Device("cuda", 0), False)
    down = _storage.TRANSFERS[("cuda", "cpu")](across, 1, 24, CPU, False)
    assert down.device == CPU and down.data.dtype == a.dtype
    # bit-exact: NaN payloads and signed zeros included
    assert down.data.view(np.uint8).tobytes() == a[8:32].view(np.uint8).tobytes()


@any_cuda
def test_transfer_empty_and_non_blocking():
    a = np.arange(8, dtype=np.int32)
    up = _storage.TRANSFERS[("cpu", "cuda")](_storage.Storage(a, CPU), 0, 0, Device("cuda", 0), True)
    assert up.nbytes == 0
    up = _storage.TRANSFERS[("cpu", "cuda")](_storage.Storage(a, CPU), 0, 8, Device("cuda", 0), True)
    tk.cuda.synchronize()
    down = _storage.TRANSFERS[("cuda", "cpu")](up, 0, 8, CPU, True)
    np.testing.assert_array_equal(down.data, a)


@any_cuda
@pytest.mark.skipif("cuda" not in _dispatch.pointwise_launchers and not HAVE_CUDA,
                    reason="needs the cuda pointwise backend")
def test_tensor_round_trip():
    if "cuda" not in _dispatch.pointwise_launchers:
        try:
            import tensorkit.kernels.pointwise  # noqa: F401
        except Exception:
            pytest.skip("the cuda pointwise backend is not available yet")
    for dtype in DTYPES:
        a = _values(dtype).reshape(37, 1)
        t = tk.tensor(a, dtype=dtype).cuda()
        assert t.is_cuda and t.dtype is dtype
        back = t.cpu().numpy()
        assert back.view(np.uint8).tobytes() == a.view(np.uint8).tobytes()


# ---- streams and events -------------------------------------------------------------------------------
@any_cuda
def test_streams():
    default = tk.cuda.current_stream()
    assert default == tk.cuda.default_stream() and default.device == Device("cuda", 0)
    s1, s2 = tk.cuda.Stream(), tk.cuda.Stream(priority=-1)
    assert s1 != s2
    with tk.cuda.stream(s1):
        assert tk.cuda.current_stream() is s1
        x = tk.empty(100, device="cuda")        # allocated on s1 (stream-ordered)
        with tk.cuda.stream(s2):
            assert tk.cuda.current_stream() is s2
        assert tk.cuda.current_stream() is s1
        del x
    assert tk.cuda.current_stream() == default
    with tk.cuda.stream(None):
        assert tk.cuda.current_stream() == default
    default.wait_stream(s1)
    s1.synchronize()
    assert s1.query() and default.query()
    assert isinstance(s1.cuda_stream, int)
    assert s1.__cuda_stream__() == (0, s1.cuda_stream)


@any_cuda
def test_events():
    start, end = tk.cuda.Event(enable_timing=True), tk.cuda.Event(enable_timing=True)
    assert start.query()                         # never recorded: nothing to wait for
    with pytest.raises(RuntimeError, match="recorded"):
        start.elapsed_time(end)
    start.record()
    time.sleep(0.02)
    end.record(tk.cuda.current_stream())
    end.synchronize()
    assert end.query()
    ms = start.elapsed_time(end)
    assert isinstance(ms, float) and ms >= 0
    if EMULATED:                                 # host clock: the sleep is inside the interval
        assert 15 <= ms < 5000
    e = tk.cuda.Event()
    e.record()
    e.wait()
    with pytest.raises(RuntimeError, match="enable_timing"):
        e.elapsed_time(end)
    assert tk.cuda.current_stream().record_event().query() in (True, False)


# ---- Triton driver -------------------------------------------------------------------------------------
@emulated
def test_no_driver_when_emulated():
    from tensorkit.kernels import _driver
    assert _driver.ensure_driver() is None


@real_gpu
def test_driver_hooks_without_torch():
    code = ("import sys, tensorkit as tk\n"
            "from tensorkit.kernels._driver import ensure_driver\n"
            "d = ensure_driver(); assert ensure_driver() is d\n"
            "from triton.runtime import driver; assert driver.active is d\n"
            "assert d.get_current_device() == tk.cuda.current_device()\n"
            "s = tk.cuda.Stream()\n"
            "with tk.cuda.stream(s):\n    assert d.get_current_stream(0) == s.cuda_stream\n"
            "assert d.get_device_capability(0) == tk.cuda.get_device_capability(0)\n"
            "print(d.get_current_target())\n"
            "c = d.get_empty_cache_for_benchmark(); d.clear_cache(c); tk.cuda.synchronize()\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
