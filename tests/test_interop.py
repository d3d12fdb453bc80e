"""Zero-copy interop: DLPack (``__dlpack__`` / ``tk.from_dlpack``) and ``__cuda_array_interface__``.

CPU exchange is tested against numpy and (where importable) PyTorch: sharing is proven by equal
addresses and by a write on one side seen on the other. The emulated cuda device must refuse to
hand its host memory out as CUDA memory. Tests marked ``real_gpu`` exchange CUDA memory with
cuda.core and Numba (torch is not importable in the GPU run).
"""
import ctypes
import gc
import weakref

import ml_dtypes
import numpy as np
import pytest

import tensorkit as tk
from tensorkit import _dlpack
from tensorkit._storage import Storage
from tensorkit._tensor import Tensor

EMULATED = tk.cuda.EMULATED
HAVE_CUDA = tk.cuda.is_available()
real_gpu = pytest.mark.skipif(EMULATED or not HAVE_CUDA, reason="needs a real GPU (the emulated device's "
                              "memory is host memory and is never exported as CUDA memory)")
emulated = pytest.mark.skipif(not EMULATED, reason="emulated device only")

NUMPY_DTYPES = [np.bool_, np.uint8, np.int8, np.int16, np.int32, np.int64, np.float16, np.float32, np.float64]


def _values(dtype, shape):
    n = int(np.prod(shape))
    return (np.arange(n) % 2 == 1).reshape(shape) if dtype == np.bool_ else \
        np.arange(1, n + 1).reshape(shape).astype(dtype)


def _capsule_name(capsule) -> str:
    return repr(capsule).split('"')[1]


def _torch():
    return pytest.importorskip("torch", reason="torch is the reference consumer/producer here")


# ---- numpy, both ways --------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", NUMPY_DTYPES, ids=lambda d: np.dtype(d).name)
def test_numpy_to_tensorkit_shares_memory(dtype):
    a = _values(dtype, (2, 3))
    t = tk.from_dlpack(a)
    assert t.dtype.numpy == np.dtype(dtype)
    assert t.shape == (2, 3) and t.stride() == (3, 1) and t.device == tk.device("cpu")
    assert t.data_ptr() == a.ctypes.data
    a[1, 2] = 0
    assert t.tolist() == a.tolist()
    t.fill_(1)                                      # a tensorkit kernel writes, numpy sees it
    assert (a == 1).all()


@pytest.mark.parametrize("dtype", NUMPY_DTYPES, ids=lambda d: np.dtype(d).name)
def test_tensorkit_to_numpy_shares_memory(dtype):
    t = tk.tensor(_values(dtype, (3, 2)))
    a = np.from_dlpack(t)
    assert a.dtype == np.dtype(dtype) and a.shape == (3, 2) and a.ctypes.data == t.data_ptr()
    np.testing.assert_array_equal(a, _values(dtype, (3, 2)))
    t.fill_(0)
    assert not a.any()
    a[0, 1] = 1
    assert t.tolist()[0][1] == 1


def test_strides_both_ways():
    a = np.arange(60, dtype=np.float32).reshape(5, 12)
    for view in (a.T, a[::2, 1::3], a[1:, ::5].T, a[:, 3]):
        t = tk.from_dlpack(view)
        assert t.stride() == tuple(s // 4 for s in view.strides)
        assert t.data_ptr() == view.ctypes.data
        np.testing.assert_array_equal(t.numpy(), view)
    t = tk.tensor(a)
    for view in (t.T, t[::2, 1::3], t[1:, ::5].T, t[:, 3]):
        b = np.from_dlpack(view)
        assert b.strides == tuple(4 * s for s in view.stride()) and b.ctypes.data == view.data_ptr()
        np.testing.assert_array_equal(b, view.numpy())
    expanded = tk.tensor([1.0, 2.0]).expand(3, 2)           # stride 0 is legal DLPack
    np.testing.assert_array_equal(np.from_dlpack(expanded), [[1, 2]] * 3)


def test_zero_dim_and_empty():
    a = np.array(2.5)
    t = tk.from_dlpack(a)
    assert t.shape == () and t.item() == 2.5
    a[()] = 4.0
    assert t.item() == 4.0
    b = np.from_dlpack(tk.tensor(7, dtype=tk.int16))
    assert b.shape == () and b.dtype == np.int16 and b[()] == 7
    for shape in [(0,), (2, 0), (0, 3, 1)]:
        assert tk.from_dlpack(np.zeros(shape, np.float32)).shape == shape
        assert np.from_dlpack(tk.zeros(shape)).shape == shape


def test_roundtrip_tensorkit_to_tensorkit():
    t = tk.arange(6, dtype=tk.int32).reshape(2, 3)
    u = tk.from_dlpack(t.T)
    assert u.data_ptr() == t.data_ptr() and u.stride() == (1, 3)
    t.fill_(5)
    assert u.tolist() == [[5, 5]] * 3


def test_legacy_and_versioned_capsules():
    t = tk.tensor([1.0, 2.0, 3.0], dtype=tk.bfloat16)
    assert _capsule_name(t.__dlpack__()) == "dltensor"
    assert _capsule_name(t.__dlpack__(max_version=(0, 8))) == "dltensor"
    for kwargs in ({}, {"max_version": (1, 0)}, {"max_version": (1, 3)}):
        capsule = t.__dlpack__(**kwargs)
        assert _capsule_name(capsule) == ("dltensor_versioned" if kwargs else "dltensor")
        u = tk.from_dlpack(capsule)
        assert _capsule_name(capsule).startswith("used_")
        assert u.dtype == tk.bfloat16 and u.data_ptr() == t.data_ptr() and u.tolist() == [1.0, 2.0, 3.0]
    a = np.arange(3.0)
    for capsule in (a.__dlpack__(), a.__dlpack__(max_version=(1, 0))):      # numpy-made capsules too
        assert tk.from_dlpack(capsule).data_ptr() == a.ctypes.data


def test_copy_and_device_arguments():
    t = tk.tensor([1.0, 2.0])
    b = np.from_dlpack(t, copy=True)                # numpy passes copy=True on to __dlpack__
    b[0] = 9
    assert t.tolist() == [1.0, 2.0]
    a = np.array([1, 2], np.int64)
    u = tk.from_dlpack(a, copy=True)
    a[0] = 7
    assert u.tolist() == [1, 2]
    with pytest.raises(BufferError, match="can't export a cpu tensor"):
        t.__dlpack__(dl_device=(2, 0))
    assert tk.from_dlpack(t.__dlpack__(dl_device=(1, 0))).data_ptr() == t.data_ptr()


# ---- PyTorch on the CPU: bfloat16, bool, and sharing both ways ---------------------------------------------
@pytest.mark.parametrize("name", ["bfloat16", "bool", "float16", "int64", "uint8"])
def test_torch_cpu_both_ways(name):
    torch = _torch()
    tdt, kdt = getattr(torch, name), getattr(tk, name)
    x = torch.arange(6).reshape(2, 3).to(tdt)
    t = tk.from_dlpack(x)
    assert t.dtype is kdt and t.shape == (2, 3) and t.data_ptr() == x.data_ptr()
    assert t.tolist() == x.tolist()
    x[0, 0] = 1
    assert t.tolist()[0][0] == x[0, 0].item()
    t.fill_(0)
    assert not x.any()
    y = torch.from_dlpack(t.T)
    assert y.dtype == tdt and y.data_ptr() == t.data_ptr() and y.stride() == (1, 3)
    y[2, 1] = 1
    assert t.tolist()[1][2] == 1
    assert torch.from_dlpack(tk.zeros(0, 2, dtype=kdt)).shape == (0, 2)
    assert tk.from_dlpack(torch.ones((), dtype=tdt)).item() == 1


def test_torch_consumes_both_capsule_kinds():
    torch = _torch()
    t = tk.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=tk.bfloat16)
    for capsule in (t.__dlpack__(), t.__dlpack__(max_version=(1, 0))):
        y = torch.from_dlpack(capsule)
        assert y.dtype == torch.bfloat16 and y.data_ptr() == t.data_ptr()
        assert y.tolist() == [[1.0, 2.0], [3.0, 4.0]]


# ---- lifetimes ----------------------------------------------------------------------------------------
def _memory(t):
    """A weak reference to the numpy array that owns ``t``'s host memory (views keep it, not the Storage)."""
    a = t._storage.data
    while isinstance(a.base, np.ndarray):
        a = a.base
    return weakref.ref(a)


def _churn():
    gc.collect()
    return [np.full(4096, -1.0) for _ in range(50)]     # reuse freed memory, if any was freed


def test_producer_deleted_data_still_valid():
    torch = _torch()
    for dtype in (torch.float32, torch.bfloat16):       # numpy's importer, and ours
        x = torch.arange(1000, dtype=dtype)
        expected = x.float().numpy().copy()
        t = tk.from_dlpack(x)
        del x
        _churn()
        np.testing.assert_array_equal(t.numpy().astype(np.float32), expected)
    a = np.arange(1000.0)
    t = tk.from_dlpack(a)
    del a
    _churn()
    assert t.numpy()[-1] == 999.0


@pytest.mark.parametrize("dtype", [tk.float32, tk.bfloat16], ids=str)
@pytest.mark.parametrize("versioned", [False, True])
def test_import_keeps_export_alive_and_releases_it(dtype, versioned):
    # our export (numpy's deleter) and our import (the owner calling it) working together
    t = tk.arange(8, dtype=dtype)
    alive = _memory(t)
    u = tk.from_dlpack(t.__dlpack__(max_version=(1, 0) if versioned else None))
    del t
    _churn()
    assert alive() is not None and u.tolist() == list(range(8))
    del u
    gc.collect()
    assert alive() is None, "the producer's deleter was not called when the last view died"


def test_capsule_keeps_storage_until_consumer_releases():
    torch = _torch()
    t = tk.ones(4)
    alive = _memory(t)
    capsule = t.__dlpack__()
    del t
    gc.collect()
    assert alive() is not None
    y = torch.from_dlpack(capsule)
    del capsule
    gc.collect()
    assert alive() is not None and y.tolist() == [1.0] * 4
    del y
    gc.collect()
    assert alive() is None


def test_unconsumed_capsule_releases_storage():
    t = tk.ones(4)
    alive = _memory(t)
    for kwargs in ({}, {"max_version": (1, 0)}):
        capsule = t.__dlpack__(**kwargs)
        del capsule
    del t
    gc.collect()
    assert alive() is None


# ---- errors -------------------------------------------------------------------------------------------
def test_capsule_consumed_twice():
    a = np.arange(3.0)
    capsule = a.__dlpack__()
    tk.from_dlpack(capsule)
    with pytest.raises(RuntimeError, match="consumed only once"):
        tk.from_dlpack(capsule)
    capsule = tk.ones(2, dtype=tk.bfloat16).__dlpack__(max_version=(1, 0))
    tk.from_dlpack(capsule)
    with pytest.raises(RuntimeError, match="consumed only once"):
        tk.from_dlpack(capsule)


@pytest.mark.parametrize("dtype", [np.complex64, np.uint16, np.uint64], ids=lambda d: np.dtype(d).name)
def test_unsupported_dtype(dtype):
    a = np.zeros(3, dtype)
    with pytest.raises(RuntimeError, match=f"unsupported DLPack dtype {np.dtype(dtype).name}"):
        tk.from_dlpack(a)
    capsule = a.__dlpack__()
    with pytest.raises(RuntimeError, match="unsupported DLPack dtype"):
        tk.from_dlpack(capsule)
    assert _capsule_name(capsule) == "dltensor"     # refused without consuming: the producer still frees it
    assert np.from_dlpack(_dlpack._Capsule(capsule, (1, 0))).dtype == dtype


def test_other_import_errors():
    with pytest.raises(TypeError, match="expected an object with __dlpack__"):
        tk.from_dlpack([1, 2])
    with pytest.raises(ValueError, match="negative strides"):
        tk.from_dlpack(np.arange(4.0)[::-1])
    ro = np.arange(3.0)
    ro.flags.writeable = False
    with pytest.raises(BufferError, match="read-only"):
        tk.from_dlpack(ro)
    with pytest.raises(ValueError, match="copy=False"):
        tk.from_dlpack(np.arange(2.0), device="cuda", copy=False)


def test_export_errors():
    t = tk.ones(2, requires_grad=True)
    with pytest.raises(BufferError, match="require gradient"):
        t.__dlpack__()
    with pytest.raises(BufferError, match="stream must be None"):
        tk.ones(2).__dlpack__(stream=5)


# ---- the cuda device without a GPU --------------------------------------------------------------------------
@emulated
def test_emulated_device_refuses_to_export_host_memory_as_cuda():
    t = tk.ones(3, device="cuda")
    assert t.__dlpack_device__() == (2, 0)
    assert not hasattr(t, "__cuda_array_interface__")
    with pytest.raises(AttributeError, match="emulated CUDA device"):
        t.__cuda_array_interface__
    with pytest.raises(BufferError, match="emulated CUDA device"):
        t.__dlpack__()
    with pytest.raises(BufferError, match="emulated CUDA device"):
        np.from_dlpack(t)
    u = tk.from_dlpack(np.arange(3.0), device="cuda")     # a copy onto the device is fine
    assert u.is_cuda and u.tolist() == [0.0, 1.0, 2.0]


def test_cpu_tensor_has_no_cuda_array_interface():
    t = tk.ones(2)
    assert not hasattr(t, "__cuda_array_interface__")
    with pytest.raises(AttributeError, match="Can't get __cuda_array_interface__ on non-CUDA tensor type"):
        t.__cuda_array_interface__


def _fake_cuda_tensor(ptr, numel, dtype, shape, strides, offset=0):
    # CUDA export and import without a GPU: a made-up device address that nothing may read
    data = _dlpack.ForeignDeviceArray(ptr, numel, dtype.numpy, 0, None)
    return Tensor._make(Storage(data, tk.device("cuda:0")), offset, shape, strides, dtype)


@pytest.mark.parametrize("versioned", [False, True])
@pytest.mark.parametrize("dtype", [tk.float32, tk.bfloat16, tk.bool], ids=str)
def test_cuda_capsule_layout_and_lifetime_without_gpu(monkeypatch, versioned, dtype):
    src = _fake_cuda_tensor(0x7F0000100000, 64, dtype, (3, 4), (1, 5), offset=2)
    alive = weakref.ref(src._storage)
    capsule = _dlpack._capsule(src, versioned, False)
    name = b"dltensor_versioned" if versioned else b"dltensor"
    struct = _dlpack._DLManagedTensorVersioned if versioned else _dlpack._DLManagedTensor
    dl = struct.from_address(_dlpack._capsule_pointer(capsule, name)).dl_tensor
    assert (dl.device.device_type, dl.device.device_id) == (2, 0)
    assert (dl.dtype.code, dl.dtype.bits, dl.dtype.lanes) == (*_dlpack._CODES[dtype], 1)
    assert dl.data + dl.byte_offset == 0x7F0000100000 + 2 * dtype.itemsize
    assert [dl.shape[i] for i in range(2)] == [3, 4] and [dl.strides[i] for i in range(2)] == [1, 5]

    if EMULATED or not HAVE_CUDA:
        with pytest.raises(BufferError, match="emulated CUDA device" if EMULATED else "no CUDA device"):
            tk.from_dlpack(capsule)                 # refused on this machine, capsule left unconsumed
    monkeypatch.setattr(_dlpack, "_check_cuda_import", lambda index: None)
    u = tk.from_dlpack(capsule)
    assert u.device == tk.device("cuda:0") and u.dtype is dtype and u.shape == (3, 4) and u.stride() == (1, 5)
    assert u.data_ptr() == src.data_ptr() and isinstance(u._storage.data, _dlpack.ForeignDeviceArray)
    assert u._storage.data.nbytes == (1 + 2 * 1 + 3 * 5) * dtype.itemsize
    del src
    gc.collect()
    assert alive() is not None
    del u
    gc.collect()
    assert alive() is None


def test_foreign_device_capsule_refused():
    capsule = np.arange(3.0).__dlpack__()
    dl = _dlpack._DLManagedTensor.from_address(_dlpack._capsule_pointer(capsule, b"dltensor")).dl_tensor
    dl.device.device_type = 4           # kDLOpenCL
    with pytest.raises(BufferError, match="unsupported DLPack device type 4"):
        tk.from_dlpack(capsule)
    dl.device.device_type = 1


# ---- real GPU: exchange with cuda.core and Numba ---------------------------------------------------------------
@real_gpu
@pytest.mark.parametrize("dtype", [tk.float32, tk.float16, tk.bfloat16, tk.int64, tk.bool], ids=str)
def test_cuda_array_interface(dtype):
    t = tk.arange(12, device="cuda").reshape(3, 4).to(dtype)
    cai = t.__cuda_array_interface__
    assert cai["version"] == 3 and cai["shape"] == (3, 4) and cai["strides"] is None
    assert cai["data"] == (t.data_ptr(), False)
    assert cai["typestr"] == {tk.bfloat16: "<V2", tk.bool: "|b1"}.get(dtype, dtype.numpy.str)
    assert cai["stream"] == (tk.cuda.current_stream().cuda_stream or 1)
    assert t.T.__cuda_array_interface__["strides"] == (dtype.itemsize, 4 * dtype.itemsize)
    assert tk.zeros(0, device="cuda").__cuda_array_interface__["data"] == (0, False)
    s = tk.cuda.Stream()
    with tk.cuda.stream(s):
        assert t.__cuda_array_interface__["stream"] == s.cuda_stream


def _numba_cuda():
    try:
        from numba import cuda
        if cuda.is_available():
            return cuda
    except Exception:
        pass
    pytest.skip("numba's CUDA target is not usable here")


@real_gpu
def test_numba_consumes_cuda_array_interface():
    nb = _numba_cuda()
    t = tk.arange(12, dtype=tk.float32, device="cuda").reshape(3, 4)
    d = nb.as_cuda_array(t)
    assert d.shape == (3, 4) and d.device_ctypes_pointer.value == t.data_ptr()
    np.testing.assert_array_equal(d.copy_to_host(), np.arange(12, dtype=np.float32).reshape(3, 4))
    np.testing.assert_array_equal(nb.as_cuda_array(t.T).copy_to_host(), np.arange(12.0).reshape(3, 4).T)
    d.copy_to_device(np.full((3, 4), 5, np.float32))           # numba writes, tensorkit sees it
    tk.cuda.synchronize()
    assert t.cpu().tolist() == [[5.0] * 4] * 3


def _view_dlpack():
    """cuda.core's DLPack consumer: ``StridedMemoryView.from_dlpack(obj, stream_ptr)`` (older
    cuda.core: the constructor, which newer ones deprecate for DLPack objects)."""
    try:
        from cuda.core.utils import StridedMemoryView
    except ImportError:
        pytest.skip("cuda.core has no StridedMemoryView")
    return getattr(StridedMemoryView, "from_dlpack", StridedMemoryView)


@real_gpu
@pytest.mark.parametrize("dtype", [tk.float32, tk.bfloat16, tk.int8], ids=str)
def test_cuda_core_views_our_dlpack_export(dtype):
    view = _view_dlpack()
    t = tk.arange(12, device="cuda").reshape(3, 4).to(dtype)
    for x in (t, t.T, t[1:, ::2]):
        v = view(x, -1)
        assert v.ptr == x.data_ptr() and v.device_id == 0 and v.is_device_accessible
        assert v.shape == tuple(x.shape) and v.dtype == x.dtype.numpy
        assert v.strides in ((None, tuple(x.stride())) if x.is_contiguous() else (tuple(x.stride()),))
    s = tk.cuda.Stream()
    v = view(t, s.cuda_stream)                  # s waits for our stream's work (an event, device-side)
    assert v.ptr == t.data_ptr()
    with tk.cuda.stream(s):                     # the other way: our stream is s, the consumer's the
        v = view(t + 1, 1)                      # legacy default stream (DLPack's 1)
    s.synchronize()
    assert v.shape == (3, 4)


@real_gpu
def test_cuda_import_keeps_memory_alive():
    x = tk.zeros(1024, device="cuda")
    alive = weakref.ref(x._storage)
    y = tk.from_dlpack(x)
    assert isinstance(y._storage.data, _dlpack.ForeignDeviceArray) and y.data_ptr() == x.data_ptr()
    y.fill_(3.0)
    assert x.cpu().tolist() == [3.0] * 1024
    # memory_allocated counts every live tensor of the process (garbage of earlier tests too, until
    # a collection): compare counts taken right after collections, around one event each
    gc.collect()
    held = tk.cuda.memory_allocated()
    del x
    gc.collect()
    assert alive() is not None, "the producer's storage died while an imported tensor still uses it"
    assert tk.cuda.memory_allocated() == held, "x's memory was released while y still uses it"
    assert (y * 2).cpu().tolist() == [6.0] * 1024
    gc.collect()
    held = tk.cuda.memory_allocated()
    del y
    gc.collect()
    assert alive() is None, "the producer's storage outlived the last imported tensor"
    assert tk.cuda.memory_allocated() == held - 4096


@real_gpu
@pytest.mark.parametrize("dtype", [tk.float32, tk.bfloat16, tk.bool, tk.uint8], ids=str)
def test_cuda_tensorkit_roundtrip(dtype):
    t = tk.arange(12, device="cuda").reshape(3, 4).to(dtype)
    for capsule in (t.__dlpack__(), t.__dlpack__(max_version=(1, 0)), t.__dlpack__(stream=-1)):
        u = tk.from_dlpack(capsule)
        assert u.device == t.device and u.dtype is dtype and u.data_ptr() == t.data_ptr()
    u = tk.from_dlpack(t.T)
    assert u.stride() == (1, 4) and u.data_ptr() == t.data_ptr()
    t.fill_(1)
    assert u.cpu().tolist() == [[True if dtype is tk.bool else 1] * 3] * 4
    assert tk.from_dlpack(tk.zeros((), device="cuda")).shape == ()
    assert tk.from_dlpack(tk.zeros(0, 3, device="cuda")).shape == (0, 3)
    capsule = tk.tensor([1.0, 2.0], device="cuda").__dlpack__(dl_device=(1, 0))   # a host copy
    h = np.from_dlpack(_dlpack._Capsule(capsule, (1, 0)))       # numpy takes objects, not bare capsules
    assert h.tolist() == [1.0, 2.0]
    with pytest.raises(BufferError, match="copy=False"):
        t.__dlpack__(dl_device=(1, 0), copy=False)
    with pytest.raises(BufferError, match="stream must be"):
        t.__dlpack__(stream=0)


def _busy(n: int = 20):
    """Queue several milliseconds of work on the current stream; returns the tensor it writes last."""
    x = tk.ones(1 << 28, device="cuda")          # 1 GiB: each pass reads and writes it
    for _ in range(n):
        x.mul_(1.0)
    return x


@real_gpu
def test_dlpack_orders_producer_work_before_consumer_stream():
    x = tk.zeros(1 << 20, device="cuda")
    tk.cuda.synchronize()
    s = tk.cuda.Stream()                         # a non-blocking stream: no implicit ordering
    _busy()
    x.fill_(7.0)                                 # the last write, on the default stream
    capsule = x.__dlpack__(stream=s.cuda_stream)     # s must wait for that write (device-side)
    assert not tk.cuda.default_stream().query(), "__dlpack__ waited on the host"
    with tk.cuda.stream(s):
        z = tk.from_dlpack(capsule) + 0          # read on s
    s.synchronize()
    assert z.cpu().numpy().min() == 7.0
