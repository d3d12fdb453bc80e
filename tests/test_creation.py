"""Creating tensors: from data, from numpy, filled, ranges, random streams, the default dtype,
device objects and dtype aliases. References are numpy, exact values, or PyTorch where it imports."""
import math
import pickle

import ml_dtypes
import numpy as np
import pytest

import tensorkit as tk

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is the reference here")

ALL_DTYPES = [tk.bool, tk.uint8, tk.int8, tk.int16, tk.int32, tk.int64, tk.float16, tk.bfloat16, tk.float32,
              tk.float64]
NP_OF = {"bool": np.bool_, "uint8": np.uint8, "int8": np.int8, "int16": np.int16, "int32": np.int32,
         "int64": np.int64, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16, "float32": np.float32,
         "float64": np.float64}


def torch_dtype(d):
    return getattr(torch, d.name)


@pytest.fixture
def restore_default_dtype():
    old = tk.get_default_dtype()
    yield
    tk.set_default_dtype(old)


# ---- tensor / as_tensor ----------------------------------------------------------------------------
@pytest.mark.parametrize("data, dtype, shape", [
    (1.5, tk.float32, ()),
    (3, tk.int64, ()),
    (True, tk.bool, ()),
    ([1.0, 2.0], tk.float32, (2,)),
    ([1, 2.5], tk.float32, (2,)),              # ints mixed with floats: float
    ([1, 2], tk.int64, (2,)),
    ([True, False], tk.bool, (2,)),
    ([True, 2], tk.int64, (2,)),
    ([[1, 2, 3], [4, 5, 6]], tk.int64, (2, 3)),
    ([[[1.0]], [[2.0]]], tk.float32, (2, 1, 1)),
    ([], tk.float32, (0,)),
    ([[], []], tk.float32, (2, 0)),
    ((1, 2), tk.int64, (2,)),
])
def test_tensor_dtype_inference(data, dtype, shape):
    t = tk.tensor(data)
    assert t.dtype is dtype
    assert tuple(t.shape) == shape
    np.testing.assert_array_equal(t.numpy(), np.array(data, dtype=NP_OF[dtype.name]))


@pytest.mark.parametrize("np_dtype", [np.bool_, np.uint8, np.int8, np.int16, np.int32, np.int64, np.float16,
                                      ml_dtypes.bfloat16, np.float32, np.float64])
def test_tensor_from_numpy_keeps_dtype_and_copies(np_dtype):
    a = np.array([[0, 1, 2], [3, 4, 5]]).astype(np_dtype)
    t = tk.tensor(a)
    assert t.dtype.numpy == np.dtype(np_dtype)
    np.testing.assert_array_equal(t.numpy(), a)
    assert not np.shares_memory(t.numpy(), a)        # tensor() always copies
    a[0, 0] = 1
    assert t.numpy()[0, 0] == 0


def test_tensor_numpy_scalars_keep_dtype():
    # PyTorch: numpy scalars are typed; np.float64 stays float64 (not the default dtype)
    assert tk.tensor(np.float64(1.5)).dtype is tk.float64
    assert tk.tensor([np.float64(1.5), np.float64(2)]).dtype is tk.float64
    assert tk.tensor(np.int32(3)).dtype is tk.int32
    assert tk.tensor(np.float32(1.5)).dtype is tk.float32


def test_tensor_from_list_of_zero_dim_tensors():
    t = tk.tensor([tk.tensor(1.0), tk.tensor(2.5)])
    assert t.dtype is tk.float32 and tuple(t.shape) == (2,)
    np.testing.assert_array_equal(t.numpy(), [1.0, 2.5])
    t = tk.tensor([[tk.tensor(1), tk.tensor(2)], [tk.tensor(3), tk.tensor(4)]])
    assert t.dtype is tk.int64
    np.testing.assert_array_equal(t.numpy(), [[1, 2], [3, 4]])


def test_tensor_from_typed_tensors_keeps_their_dtype():
    # as PyTorch: the element dtypes are promoted together
    assert tk.tensor([tk.tensor(1.0, dtype=tk.float64), tk.tensor(2.0, dtype=tk.float64)]).dtype is tk.float64
    assert tk.tensor([tk.tensor(1, dtype=tk.int32), tk.tensor(2, dtype=tk.int32)]).dtype is tk.int32
    assert tk.tensor([tk.tensor(1, dtype=tk.int32), 2]).dtype is tk.int64
    assert tk.tensor([tk.tensor(1, dtype=tk.int32), 2.5]).dtype is tk.float32


def test_tensor_of_tensor_copies_and_keeps_dtype():
    src = tk.tensor([1, 2], dtype=tk.int16)
    t = tk.tensor(src)
    assert t.dtype is tk.int16
    assert t.data_ptr() != src.data_ptr()
    np.testing.assert_array_equal(t.numpy(), [1, 2])


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_tensor_explicit_dtype(dtype):
    t = tk.tensor([[0, 1], [2, 3]], dtype=dtype)
    assert t.dtype is dtype
    np.testing.assert_array_equal(t.numpy().astype(np.float64),
                                  np.array([[0, 1], [2, 3]]).astype(NP_OF[dtype.name]).astype(np.float64))


def test_tensor_float_to_int_dtype_truncates():
    np.testing.assert_array_equal(tk.tensor([1.7, -1.7, 2.5], dtype=tk.int64).numpy(), [1, -1, 2])


def test_tensor_ragged_input_raises():
    with pytest.raises(ValueError, match="ragged"):
        tk.tensor([[1, 2], [3]])
    with pytest.raises(ValueError):
        tk.tensor([[1, 2], 3])


@pytest.mark.parametrize("bad", ["abc", ["a", "b"], [[1, "x"]], None, {"a": 1}, [object()]])
def test_tensor_non_numeric_raises_type_error(bad):
    with pytest.raises(TypeError):
        tk.tensor(bad)


def test_tensor_complex_raises():
    with pytest.raises(TypeError, match="complex"):
        tk.tensor([1 + 2j])


def test_tensor_requires_grad_and_device():
    t = tk.tensor([1.0, 2.0], requires_grad=True, device="cpu")
    assert t.requires_grad and t.device == tk.device("cpu") and t.is_leaf
    with pytest.raises(RuntimeError, match="floating point"):
        tk.tensor([1, 2], requires_grad=True)


def test_as_tensor_shares_numpy_memory_when_possible():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = tk.as_tensor(a)
    assert t.dtype is tk.float32
    a[1, 2] = 42
    assert t.numpy()[1, 2] == 42                      # no copy
    t2 = tk.as_tensor(a, dtype=tk.float64)            # another dtype: a copy
    assert t2.dtype is tk.float64
    a[0, 0] = -1
    assert t2.numpy()[0, 0] == 0
    t3 = tk.as_tensor(a[:, ::2])                      # non-contiguous positive strides: still shared
    a[0, 2] = 7
    assert t3.numpy()[0, 1] == 7
    t4 = tk.as_tensor(a[:, ::-1])                     # negative strides: copied, values right
    np.testing.assert_array_equal(t4.numpy(), a[:, ::-1])


def test_as_tensor_of_tensor_returns_it_unless_converting():
    x = tk.tensor([1.0, 2.0])
    assert tk.as_tensor(x) is x
    y = tk.as_tensor(x, dtype=tk.float64)
    assert y.dtype is tk.float64 and y is not x
    np.testing.assert_array_equal(y.numpy(), [1.0, 2.0])


def test_as_tensor_from_list():
    t = tk.as_tensor([1, 2, 3])
    assert t.dtype is tk.int64
    np.testing.assert_array_equal(t.numpy(), [1, 2, 3])


# ---- from_numpy ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("np_dtype", [np.bool_, np.uint8, np.int8, np.int16, np.int32, np.int64, np.float16,
                                      ml_dtypes.bfloat16, np.float32, np.float64])
def test_from_numpy_every_dtype_shares_memory(np_dtype):
    a = (np.arange(12).reshape(3, 4) % 2 == 0).astype(np_dtype) if np_dtype is np.bool_ else \
        np.arange(12).reshape(3, 4).astype(np_dtype)
    t = tk.from_numpy(a)
    assert t.dtype.numpy == np.dtype(np_dtype)
    assert tuple(t.shape) == (3, 4) and t.stride() == (4, 1)
    assert t.data_ptr() == a.ctypes.data
    np.testing.assert_array_equal(t.numpy(), a)
    a[2, 3] = 1
    assert t.numpy()[2, 3] == 1


@pytest.mark.parametrize("make", [
    lambda a: a[::2],
    lambda a: a[:, 1::3],
    lambda a: a.T,
    lambda a: a[1:, 2:5].T,
    lambda a: np.broadcast_to(a[:1], (4, 12)),       # zero strides
    lambda a: a[2],
])
def test_from_numpy_non_contiguous(make):
    base = np.arange(60, dtype=np.float64).reshape(5, 12)
    a = make(base)
    t = tk.from_numpy(a)
    assert tuple(t.shape) == a.shape
    assert t.stride() == tuple(s // a.itemsize for s in a.strides)
    assert t.data_ptr() == a.ctypes.data
    np.testing.assert_array_equal(t.numpy(), a)
    np.testing.assert_array_equal(t.contiguous().numpy(), a)
    if a.flags.writeable:
        base[...] = -base                              # a write to the base is seen through the tensor
        np.testing.assert_array_equal(t.numpy(), a)


def test_from_numpy_zero_dim_and_empty():
    a = np.array(2.5)
    t = tk.from_numpy(a)
    assert tuple(t.shape) == () and t.item() == 2.5
    a[()] = 3.5
    assert t.item() == 3.5
    e = tk.from_numpy(np.zeros((0, 3), np.int32))
    assert tuple(e.shape) == (0, 3) and e.dtype is tk.int32 and e.numel() == 0


def test_from_numpy_negative_strides_raise():
    a = np.arange(5.0)[::-1]
    with pytest.raises(ValueError, match="negative"):
        tk.from_numpy(a)


def test_from_numpy_rejects_bad_input():
    with pytest.raises(TypeError, match="ndarray"):
        tk.from_numpy([1, 2, 3])
    with pytest.raises(TypeError, match="complex128|not supported"):
        tk.from_numpy(np.zeros(2, np.complex128))
    with pytest.raises((TypeError, ValueError)):
        tk.from_numpy(np.zeros(2, ">f4"))           # non-native byte order must not be read as native


# ---- filled ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fn, value", [(tk.zeros, 0), (tk.ones, 1)])
def test_zeros_ones_size_forms(fn, value):
    for args in [(2, 3), ((2, 3),), ([2, 3],), (tk.Size([2, 3]),)]:
        t = fn(*args)
        assert tuple(t.shape) == (2, 3) and t.dtype is tk.float32 and t.stride() == (3, 1)
        np.testing.assert_array_equal(t.numpy(), np.full((2, 3), value, np.float32))
    assert tuple(fn().shape) == ()
    assert tuple(fn(0).shape) == (0,)
    for dtype in ALL_DTYPES:
        t = fn(3, dtype=dtype)
        assert t.dtype is dtype
        np.testing.assert_array_equal(t.numpy().astype(np.float64), np.full(3, float(value)))


def test_empty_shapes_and_dtypes():
    t = tk.empty(2, 3, dtype=tk.int16)
    assert tuple(t.shape) == (2, 3) and t.dtype is tk.int16 and t.is_contiguous()
    assert tuple(tk.empty((4,)).shape) == (4,)
    assert tk.empty(2).dtype is tk.float32


@pytest.mark.parametrize("fn", [tk.zeros, tk.ones, tk.empty])
def test_negative_or_non_int_sizes_raise(fn):
    with pytest.raises(RuntimeError, match="negative dimension -1"):
        fn(2, -1)
    with pytest.raises(TypeError):
        fn(2.5)


@pytest.mark.parametrize("value, dtype", [(1.5, tk.float32), (2, tk.int64), (True, tk.bool), (-3, tk.int64)])
def test_full_infers_dtype_from_value(value, dtype):
    t = tk.full((2, 3), value)
    assert t.dtype is dtype
    np.testing.assert_array_equal(t.numpy(), np.full((2, 3), value))


def test_full_explicit_dtype():
    t = tk.full((2,), 2.7, dtype=tk.int32)
    assert t.dtype is tk.int32
    np.testing.assert_array_equal(t.numpy(), [2, 2])
    t = tk.full([3], 0.1, dtype=tk.float64)
    assert t.numpy()[0] == 0.1          # filled in float64, not rounded through float32


def test_requires_grad_on_filled():
    assert tk.zeros(2, requires_grad=True).requires_grad
    assert tk.full((2,), 1.0, requires_grad=True).requires_grad
    with pytest.raises(RuntimeError):
        tk.ones(2, dtype=tk.int64, requires_grad=True)


# ---- ranges -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, dtype", [
    ((5,), tk.int64),
    ((2, 7), tk.int64),
    ((0, 10, 3), tk.int64),
    ((10, 0, -3), tk.int64),
    ((5, 0, -1), tk.int64),
    ((-4, 4, 2), tk.int64),
    ((5.0,), tk.float32),
    ((0, 1, 0.1), tk.float32),
    ((1, 2.2, 0.2), tk.float32),           # (2.2 - 1) / 0.2 = 6.000000000000001: 7 elements, as PyTorch
    ((0, 5, 0.5), tk.float32),
    ((1.0, -1.0, -0.25), tk.float32),
    ((-1.5, 1.5, 0.5), tk.float32),
    ((0, 0), tk.int64),
    ((3, 3, 1), tk.int64),
])
def test_arange_dtype_and_length(args, dtype):
    t = tk.arange(*args)
    assert t.dtype is dtype
    start, end, step = (0, args[0], 1) if len(args) == 1 else (args + (1,))[:3]
    n = max(math.ceil((end - start) / step), 0)       # PyTorch's length rule
    assert tuple(t.shape) == (n,)
    expected = start + np.arange(n, dtype=np.float64) * step
    np.testing.assert_allclose(t.numpy().astype(np.float64), expected, rtol=1e-6, atol=1e-7)
    if torch is not None:
        r = torch.arange(*args)
        assert tuple(r.shape) == tuple(t.shape) and str(r.dtype).split(".")[1] == dtype.name
        np.testing.assert_allclose(t.numpy(), r.numpy(), rtol=1e-6, atol=1e-7)


def test_arange_dtype_argument_and_big_ints():
    t = tk.arange(0, 5, dtype=tk.float64)
    assert t.dtype is tk.float64
    np.testing.assert_array_equal(t.numpy(), [0, 1, 2, 3, 4])
    big = 2 ** 53 + 1
    np.testing.assert_array_equal(tk.arange(big, big + 3).numpy(), np.array([big, big + 1, big + 2], np.int64))
    t = tk.arange(tk.tensor(4))
    np.testing.assert_array_equal(t.numpy(), [0, 1, 2, 3])


def test_arange_errors():
    with pytest.raises(RuntimeError, match="step"):
        tk.arange(0, 5, 0)
    with pytest.raises(RuntimeError, match="inconsistent"):
        tk.arange(10, 0)
    with pytest.raises(RuntimeError, match="inconsistent"):
        tk.arange(0, 10, -1)


@pytest.mark.parametrize("start, end, steps", [(0, 1, 5), (-3, 7, 6), (1, 1, 3), (2, -2, 9), (0, 1, 1),
                                                (0, 1, 0), (0.5, 10.25, 100)])
def test_linspace(start, end, steps):
    t = tk.linspace(start, end, steps)
    assert t.dtype is tk.float32 and tuple(t.shape) == (steps,)
    np.testing.assert_allclose(t.numpy(), np.linspace(start, end, steps), rtol=1e-6, atol=1e-6)
    if steps:
        assert t.numpy()[0] == np.float32(start)
        assert t.numpy()[-1] == np.float32(end if steps > 1 else start)


@needs_torch
@pytest.mark.parametrize("start, end, steps, dtype", [(0, 10, 4, tk.int64), (0, 10, 5, tk.int64),
                                                      (-3, 7, 6, tk.int32), (0, 1, 7, tk.float64),
                                                      (-1, 1, 11, tk.float16)])
def test_linspace_matches_torch(start, end, steps, dtype):
    t = tk.linspace(start, end, steps, dtype=dtype)
    r = torch.linspace(start, end, steps, dtype=torch_dtype(dtype))
    assert t.dtype is dtype
    if dtype is tk.float16:
        # PyTorch steps in half precision (off by an ulp); tensorkit rounds the exact value once
        np.testing.assert_array_equal(t.numpy(), np.linspace(start, end, steps).astype(np.float16))
        np.testing.assert_allclose(t.numpy().astype(np.float64), r.double().numpy(), rtol=2e-3)
    else:
        np.testing.assert_allclose(t.numpy().astype(np.float64), r.double().numpy(), rtol=1e-12)


def test_linspace_negative_steps_raise():
    with pytest.raises(RuntimeError, match="non-negative"):
        tk.linspace(0, 1, -1)


def test_logspace():
    np.testing.assert_allclose(tk.logspace(0, 2, 3).numpy(), [1, 10, 100], rtol=1e-6)
    np.testing.assert_allclose(tk.logspace(0, 4, 5, base=2).numpy(), [1, 2, 4, 8, 16], rtol=1e-6)
    t = tk.logspace(-1, 1, 7, dtype=tk.float64)
    assert t.dtype is tk.float64
    np.testing.assert_allclose(t.numpy(), np.logspace(-1, 1, 7), rtol=1e-12)


@pytest.mark.parametrize("n, m", [(3, None), (2, 4), (4, 2), (0, None), (1, 1)])
def test_eye(n, m):
    t = tk.eye(n) if m is None else tk.eye(n, m)
    assert t.dtype is tk.float32
    np.testing.assert_array_equal(t.numpy(), np.eye(n, m))
    ti = tk.eye(n, m, dtype=tk.int32)
    assert ti.dtype is tk.int32
    np.testing.assert_array_equal(ti.numpy(), np.eye(n, m, dtype=np.int32))


def test_eye_bool():
    np.testing.assert_array_equal(tk.eye(3, dtype=tk.bool).numpy(), np.eye(3, dtype=bool))


# ---- *_like and new_* -------------------------------------------------------------------------------------------
def test_like_functions():
    x = tk.tensor([[1, 2, 3], [4, 5, 6]], dtype=tk.int16)
    for fn, value in [(tk.zeros_like, 0), (tk.ones_like, 1)]:
        t = fn(x)
        assert t.dtype is tk.int16 and tuple(t.shape) == (2, 3) and t.data_ptr() != x.data_ptr()
        np.testing.assert_array_equal(t.numpy(), np.full((2, 3), value))
        t = fn(x, dtype=tk.float64)
        assert t.dtype is tk.float64
    e = tk.empty_like(x)
    assert e.dtype is tk.int16 and tuple(e.shape) == (2, 3)
    f = tk.full_like(x, 7)
    assert f.dtype is tk.int16
    np.testing.assert_array_equal(f.numpy(), np.full((2, 3), 7))
    f = tk.full_like(x, 2.7)                   # PyTorch: the input's dtype wins, the value is truncated
    assert f.dtype is tk.int16
    np.testing.assert_array_equal(f.numpy(), np.full((2, 3), 2))
    f = tk.full_like(x, 2.5, dtype=tk.float32)
    np.testing.assert_array_equal(f.numpy(), np.full((2, 3), 2.5))
    y = tk.zeros(3, 2).t()                      # a non-contiguous input: same shape
    assert tuple(tk.ones_like(y).shape) == (2, 3)
    assert tk.zeros_like(tk.zeros(2), requires_grad=True).requires_grad


def test_new_methods():
    x = tk.tensor([1.0, 2.0], dtype=tk.float64)
    for name, value in [("new_zeros", 0), ("new_ones", 1)]:
        for args in [(2, 3), ((2, 3),)]:
            t = getattr(x, name)(*args)
            assert t.dtype is tk.float64 and tuple(t.shape) == (2, 3)
            np.testing.assert_array_equal(t.numpy(), np.full((2, 3), value))
        assert getattr(x, name)(2, dtype=tk.int8).dtype is tk.int8
    e = x.new_empty(4)
    assert e.dtype is tk.float64 and tuple(e.shape) == (4,)
    f = x.new_full((2, 2), 3)
    assert f.dtype is tk.float64
    np.testing.assert_array_equal(f.numpy(), np.full((2, 2), 3.0))
    n = x.new_tensor([1, 2, 3])                 # PyTorch: the tensor's dtype, not the data's
    assert n.dtype is tk.float64
    np.testing.assert_array_equal(n.numpy(), [1, 2, 3])
    assert x.new_tensor([1, 2], dtype=tk.int32).dtype is tk.int32


# ---- random ----------------------------------------------------------------------------------------------------
N = 200_000


@pytest.mark.parametrize("dtype", [tk.float32, tk.float64, tk.float16, tk.bfloat16])
def test_rand_range_and_moments(dtype):
    tk.manual_seed(0)
    t = tk.rand(N, dtype=dtype)
    assert t.dtype is dtype and tuple(t.shape) == (N,)
    a = t.numpy().astype(np.float64)
    assert a.min() >= 0.0 and a.max() < 1.0           # [0, 1): never 1, even after rounding to a short dtype
    assert abs(a.mean() - 0.5) < 0.01
    assert abs(a.var() - 1 / 12) < 0.01
    assert len(np.unique(a)) > 100


def test_rand_shapes():
    assert tuple(tk.rand(2, 3).shape) == (2, 3)
    assert tuple(tk.rand((2, 3)).shape) == (2, 3)
    assert tuple(tk.randn([4]).shape) == (4,)
    assert tuple(tk.rand(()).shape) == ()
    assert tk.rand(3).dtype is tk.float32
    assert tk.rand(2, requires_grad=True).requires_grad
    with pytest.raises(RuntimeError):
        tk.rand(3, dtype=tk.int64)
    with pytest.raises(RuntimeError):
        tk.randn(3, dtype=tk.int32)


@pytest.mark.parametrize("dtype", [tk.float32, tk.float64, tk.bfloat16])
def test_randn_moments(dtype):
    tk.manual_seed(1)
    a = tk.randn(N, dtype=dtype).numpy().astype(np.float64)
    assert abs(a.mean()) < 0.02
    assert abs(a.std() - 1) < 0.02
    assert abs(np.mean(np.abs(a) < 1) - 0.6827) < 0.01   # the normal's 1-sigma mass


def test_randint():
    tk.manual_seed(2)
    t = tk.randint(0, 10, (N,))
    assert t.dtype is tk.int64 and tuple(t.shape) == (N,)
    a = t.numpy()
    assert a.min() == 0 and a.max() == 9
    np.testing.assert_allclose(np.bincount(a) / N, np.full(10, 0.1), atol=0.01)
    t = tk.randint(10, (3, 4))                    # randint(high, size)
    assert tuple(t.shape) == (3, 4) and t.numpy().min() >= 0 and t.numpy().max() < 10
    a = tk.randint(-5, 5, size=(1000,)).numpy()
    assert a.min() == -5 and a.max() == 4
    t = tk.randint(0, 3, (5,), dtype=tk.int32)
    assert t.dtype is tk.int32
    with pytest.raises(RuntimeError):
        tk.randint(5, 5, (2,))
    with pytest.raises(TypeError):
        tk.randint(0, 5)


def test_randperm():
    tk.manual_seed(3)
    t = tk.randperm(50)
    assert t.dtype is tk.int64
    np.testing.assert_array_equal(np.sort(t.numpy()), np.arange(50))
    assert not np.array_equal(t.numpy(), np.arange(50))
    assert tuple(tk.randperm(0).shape) == (0,)
    assert tk.randperm(5, dtype=tk.int32).dtype is tk.int32
    with pytest.raises(RuntimeError):
        tk.randperm(-1)


def test_normal_number_args():
    tk.manual_seed(4)
    t = tk.normal(2.0, 3.0, (N,))
    assert t.dtype is tk.float32 and tuple(t.shape) == (N,)
    a = t.numpy().astype(np.float64)
    assert abs(a.mean() - 2) < 0.05 and abs(a.std() - 3) < 0.05
    assert tk.normal(0.0, 1.0, size=(2, 3), dtype=tk.float64).dtype is tk.float64
    with pytest.raises(RuntimeError):
        tk.normal(0.0, -1.0, (3,))


def test_normal_tensor_args_broadcast():
    tk.manual_seed(5)
    mean = tk.tensor([[0.0], [100.0]])                  # (2, 1)
    std = tk.tensor([1.0, 0.0, 2.0])                      # (3,)
    t = tk.normal(mean, std)
    assert tuple(t.shape) == (2, 3) and t.dtype is tk.float32
    a = t.numpy()
    assert a[0, 1] == 0.0 and a[1, 1] == 100.0            # std 0: exactly the mean
    m = tk.full((N,), 5.0, dtype=tk.float64)
    b = tk.normal(m, 0.5).numpy()
    assert abs(b.mean() - 5) < 0.01 and abs(b.std() - 0.5) < 0.01
    with pytest.raises(RuntimeError):
        tk.normal(mean, tk.tensor([-1.0]))


def test_bernoulli():
    tk.manual_seed(6)
    p = tk.full((N,), 0.3)
    t = tk.bernoulli(p)
    assert t.dtype is tk.float32 and tuple(t.shape) == (N,)
    a = t.numpy()
    assert set(np.unique(a)) <= {0.0, 1.0}
    assert abs(a.mean() - 0.3) < 0.01
    np.testing.assert_array_equal(tk.bernoulli(tk.zeros(100)).numpy(), np.zeros(100))
    np.testing.assert_array_equal(tk.bernoulli(tk.ones(100)).numpy(), np.ones(100))
    b = tk.bernoulli(tk.zeros(N), 0.7).numpy()
    assert abs(b.mean() - 0.7) < 0.01
    assert abs(tk.zeros(N).bernoulli(0.2).numpy().mean() - 0.2) < 0.01
    with pytest.raises(RuntimeError):
        tk.bernoulli(tk.tensor([1.5]))


@pytest.mark.parametrize("dtype", [tk.float32, tk.float64])
def test_uniform_and_normal_in_place(dtype):
    tk.manual_seed(7)
    x = tk.empty(N, dtype=dtype)
    ptr, v = x.data_ptr(), x._version
    assert x.uniform_(-2.0, 3.0) is x
    assert x.data_ptr() == ptr and x._version > v
    a = x.numpy().astype(np.float64)
    assert a.min() >= -2 and a.max() < 3
    assert abs(a.mean() - 0.5) < 0.05 and abs(a.var() - 25 / 12) < 0.05
    assert x.normal_(1.0, 2.0) is x
    a = x.numpy().astype(np.float64)
    assert abs(a.mean() - 1) < 0.03 and abs(a.std() - 2) < 0.03


@pytest.mark.parametrize("dtype", [tk.float16, tk.bfloat16])
def test_uniform_in_place_half_stays_below_one(dtype):
    tk.manual_seed(8)
    a = tk.empty(100_000, dtype=dtype).uniform_().numpy().astype(np.float64)   # as PyTorch: [0, 1) here too
    assert a.min() >= 0 and a.max() < 1
    assert abs(a.mean() - 0.5) < 0.01


def test_uniform_in_place_on_a_view():
    base = tk.zeros(4, 6)
    base.t().uniform_(5.0, 6.0)                      # non-contiguous target: every element written
    a = base.numpy()
    assert a.min() >= 5 and a.max() < 6


# ---- seeds and generators ----------------------------------------------------------------------------------------
def _draw(generator=None):
    return np.concatenate([tk.rand(5, generator=generator).numpy().astype(np.float64),
                           tk.randn(5, generator=generator).numpy().astype(np.float64),
                           tk.randint(0, 1000, (5,), generator=generator).numpy().astype(np.float64),
                           tk.randperm(8, generator=generator).numpy().astype(np.float64)])


def test_manual_seed_reproducible():
    tk.manual_seed(123)
    a = _draw()
    tk.manual_seed(123)
    b = _draw()
    np.testing.assert_array_equal(a, b)
    tk.manual_seed(124)
    c = _draw()
    assert not np.array_equal(a[:10], c[:10])
    assert tk.initial_seed() == 124


def test_manual_seed_returns_generator():
    g = tk.manual_seed(9)
    assert isinstance(g, tk.Generator) and g.initial_seed() == 9


def test_stream_advances():
    tk.manual_seed(0)
    a, b = tk.rand(10).numpy(), tk.rand(10).numpy()
    assert not np.array_equal(a, b)


def test_generator_is_independent_of_default_stream():
    tk.manual_seed(0)
    tk.rand(3)
    expected = tk.rand(3).numpy()
    tk.manual_seed(0)
    tk.rand(3)
    g = tk.Generator().manual_seed(0)
    _draw(g)                                          # drawing from g does not move the default stream
    np.testing.assert_array_equal(tk.rand(3).numpy(), expected)


def test_generator_same_seed_same_stream():
    g1, g2 = tk.Generator().manual_seed(42), tk.Generator().manual_seed(42)
    np.testing.assert_array_equal(_draw(g1), _draw(g2))
    g3 = tk.Generator().manual_seed(43)
    assert not np.array_equal(_draw(tk.Generator().manual_seed(42))[:10], _draw(g3)[:10])
    g4 = tk.Generator()
    assert g4.manual_seed(1) is g4 and g4.initial_seed() == 1
    # every random function takes generator=
    gen = tk.Generator().manual_seed(5)
    x = tk.normal(0.0, 1.0, (4,), generator=gen).numpy()
    y = tk.bernoulli(tk.full((4,), 0.5), generator=gen).numpy()
    z = tk.empty(4).uniform_(generator=gen).numpy()
    w = tk.empty(4).normal_(generator=gen).numpy()
    gen.manual_seed(5)
    np.testing.assert_array_equal(tk.normal(0.0, 1.0, (4,), generator=gen).numpy(), x)
    np.testing.assert_array_equal(tk.bernoulli(tk.full((4,), 0.5), generator=gen).numpy(), y)
    np.testing.assert_array_equal(tk.empty(4).uniform_(generator=gen).numpy(), z)
    np.testing.assert_array_equal(tk.empty(4).normal_(generator=gen).numpy(), w)


def test_generator_state_round_trip():
    g = tk.Generator().manual_seed(11)
    _draw(g)
    state = g.get_state()
    assert isinstance(state, tk.Tensor) and state.dtype is tk.uint8 and state.ndim == 1
    a = _draw(g)
    g.set_state(state)
    np.testing.assert_array_equal(_draw(g), a)
    g2 = tk.Generator().manual_seed(999)               # a state moves between generators
    g2.set_state(state)
    np.testing.assert_array_equal(_draw(g2), a)
    assert g2.initial_seed() == 11


def test_default_rng_state_round_trip():
    tk.manual_seed(3)
    s = tk.get_rng_state()
    a = _draw()
    tk.manual_seed(77)
    tk.set_rng_state(s)
    np.testing.assert_array_equal(_draw(), a)


def test_seed_reseeds_randomly():
    s1 = tk.seed()
    a = tk.rand(8).numpy()
    s2 = tk.seed()
    assert s1 != s2 and tk.initial_seed() == s2
    assert not np.array_equal(a, tk.rand(8).numpy())


# ---- default dtype ------------------------------------------------------------------------------------------------
def test_default_dtype(restore_default_dtype):
    assert tk.get_default_dtype() is tk.float32
    tk.set_default_dtype(tk.float64)
    assert tk.get_default_dtype() is tk.float64
    assert tk.tensor([1.5]).dtype is tk.float64
    assert tk.tensor(1.5).dtype is tk.float64
    assert tk.zeros(2).dtype is tk.float64
    assert tk.ones(2).dtype is tk.float64
    assert tk.empty(2).dtype is tk.float64
    assert tk.full((2,), 0.5).dtype is tk.float64
    assert tk.arange(0.0, 1.0, 0.5).dtype is tk.float64
    assert tk.linspace(0, 1, 3).dtype is tk.float64
    assert tk.eye(2).dtype is tk.float64
    assert tk.rand(2).dtype is tk.float64
    assert tk.randn(2).dtype is tk.float64
    assert tk.tensor([1, 2]).dtype is tk.int64          # ints are not affected
    assert tk.arange(3).dtype is tk.int64
    assert tk.full((2,), 1).dtype is tk.int64
    assert tk.tensor(np.float32(1.0)).dtype is tk.float32
    x = tk.tensor([0.1])
    assert x.numpy()[0] == 0.1                           # the Python float kept all its digits


def test_set_default_dtype_rejects_non_float(restore_default_dtype):
    with pytest.raises(TypeError, match="floating"):
        tk.set_default_dtype(tk.int32)
    assert tk.get_default_dtype() is tk.float32


# ---- devices ---------------------------------------------------------------------------------------------------------
def test_device_parsing():
    cpu = tk.device("cpu")
    assert cpu.type == "cpu" and cpu.index is None
    assert str(cpu) == "cpu" and repr(cpu) == "device(type='cpu')"
    d = tk.device("cuda:0")
    assert d.type == "cuda" and d.index == 0
    assert str(d) == "cuda:0" and repr(d) == "device(type='cuda', index=0)"
    assert tk.device("cuda", 1) == tk.device("cuda:1")
    assert tk.device("cuda").index is None
    assert tk.device(2) == tk.device("cuda:2")          # a bare ordinal means CUDA, as PyTorch
    assert tk.device(cpu) is cpu
    assert d == "cuda:0" and d != "cuda:1" and cpu != d
    assert hash(tk.device("cuda:3")) == hash(tk.device("cuda", 3))
    assert {tk.device("cpu"): 1}[tk.device("cpu")] == 1
    assert pickle.loads(pickle.dumps(d)) == d
    with pytest.raises(AttributeError):
        d.index = 3


@needs_torch
@pytest.mark.parametrize("spec", ["cpu", "cuda", "cuda:0", "cuda:7"])
def test_device_matches_torch(spec):
    t, r = tk.device(spec), torch.device(spec)
    assert (t.type, t.index) == (r.type, r.index)
    assert str(t) == str(r) and repr(t) == repr(r)


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "cuda:", "cuda:-1", "CUDA0", "cuda:0:1", "", "tpu:0"])
def test_bad_device_strings(bad):
    with pytest.raises(ValueError) as e:
        tk.device(bad)
    assert repr(bad) in str(e.value) or f"'{bad}'" in str(e.value)


def test_device_bad_types():
    with pytest.raises(TypeError):
        tk.device(1.5)
    with pytest.raises(ValueError):
        tk.device("cuda:0", 1)


def test_tensor_device_argument():
    for dev in ("cpu", tk.device("cpu"), None):
        for t in (tk.zeros(2, device=dev), tk.tensor([1], device=dev), tk.arange(3, device=dev),
                  tk.rand(2, device=dev), tk.full((2,), 1, device=dev), tk.eye(2, device=dev)):
            assert t.device == tk.device("cpu") and t.device.type == "cpu" and t.is_cpu and not t.is_cuda


# ---- dtypes ----------------------------------------------------------------------------------------------------------
def test_dtype_aliases():
    assert tk.float is tk.float32
    assert tk.double is tk.float64
    assert tk.half is tk.float16
    assert tk.long is tk.int64
    assert tk.int is tk.int32
    assert tk.short is tk.int16
    assert tk.bool.name == "bool" and tk.bool.itemsize == 1
    assert isinstance(tk.float32, tk.dtype)
    assert repr(tk.float32) == "tk.float32" and repr(tk.bool) == "tk.bool"


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_dtype_properties(dtype):
    assert dtype.itemsize == np.dtype(NP_OF[dtype.name]).itemsize
    assert dtype.is_floating_point == (dtype.name.startswith("float") or dtype.name == "bfloat16")
    assert pickle.loads(pickle.dumps(dtype)) is dtype
    if torch is not None:
        r = torch_dtype(dtype)
        assert dtype.itemsize == r.itemsize and dtype.is_floating_point == r.is_floating_point


# ---- shapes and dtypes of the same calls in PyTorch ----------------------------------------------------------------------
CALLS = [
    ("tensor", ([[1, 2], [3, 4]],), {}),
    ("tensor", ([1.5, 2],), {}),
    ("tensor", ([[True], [False]],), {}),
    ("tensor", (np.arange(3, dtype=np.int16),), {}),
    ("tensor", (np.float64(2.5),), {}),
    ("tensor", ([np.float32(1.0), 2.0],), {}),
    ("tensor", ([],), {}),
    ("tensor", ([[1, 2]],), {"dtype": "float16"}),
    ("as_tensor", ([1, 2],), {}),
    ("zeros", (2, 3), {}),
    ("zeros", ((4,),), {"dtype": "int8"}),
    ("ones", ([1, 2, 3],), {}),
    ("empty", (0, 2), {}),
    ("full", ((2, 2), 3), {}),
    ("full", ((2, 2), 3.0), {}),
    ("full", ((2,), False), {}),
    ("full", ((2,), 1), {"dtype": "float64"}),
    ("arange", (10,), {}),
    ("arange", (1, 4.0), {}),
    ("arange", (0.5, 3, 0.7), {}),
    ("arange", (3, -3, -2), {}),
    ("arange", (0, 7, 3), {"dtype": "int32"}),
    ("linspace", (0, 1, 7), {}),
    ("logspace", (0, 1, 3), {}),
    ("eye", (3,), {}),
    ("eye", (2, 5), {"dtype": "bool"}),
    ("rand", (2, 3), {}),
    ("randn", ((3,),), {"dtype": "float64"}),
    ("randint", (0, 5, (2, 2)), {}),
    ("randint", (5, (3,)), {}),
    ("randperm", (4,), {}),
    ("normal", (0.0, 1.0, (3, 1)), {}),
]


@needs_torch
@pytest.mark.parametrize("name, args, kwargs", CALLS, ids=[f"{c[0]}{i}" for i, c in enumerate(CALLS)])
def test_creation_shapes_and_dtypes_match_torch(name, args, kwargs):
    t = getattr(tk, name)(*args, **{k: getattr(tk, v) for k, v in kwargs.items()})
    r = getattr(torch, name)(*args, **{k: getattr(torch, v) for k, v in kwargs.items()})
    assert tuple(t.shape) == tuple(r.shape)
    assert t.dtype.name == str(r.dtype).split(".")[1]
    if name not in ("empty", "rand", "randn", "randint", "randperm", "normal"):
        np.testing.assert_allclose(t.numpy().astype(np.float64), r.double().numpy(), rtol=1e-6, atol=1e-7)


@needs_torch
def test_python_type_dtype_arguments_match_torch():
    # PyTorch reads dtype=float as float64 (a Python float is a C double), int as int64, bool as bool.
    for pytype in (float, int, bool):
        assert tk.zeros(2, dtype=pytype).dtype.name == str(torch.zeros(2, dtype=pytype).dtype).split(".")[1]


def test_creation_edge_cases():
    np.testing.assert_allclose(tk.linspace(tk.tensor(0.0), tk.tensor(1.0), 3).numpy(), [0, 0.5, 1])
    with pytest.raises(RuntimeError, match="greater or equal to 0"):
        tk.eye(-1)
    with pytest.raises(RuntimeError, match="greater or equal to 0"):
        tk.eye(2, -3)
