"""The Tensor object itself: the numpy bridge, conversions to Python, repr suffixes, pickling,
``.to()`` and casts, layout queries, the requires_grad flag, hashing and version counters."""
import operator
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


def np_dtype(d):
    return ml_dtypes.bfloat16 if d is tk.bfloat16 else np.dtype(d.name if d is not tk.bool else "bool")


# ---- numpy bridge -------------------------------------------------------------------------------------------
def test_from_numpy_and_numpy_share_memory_both_ways():
    a = np.zeros(4, np.float32)
    t = tk.from_numpy(a)
    t.add_(1)                                   # tensorkit in-place: seen by numpy
    np.testing.assert_array_equal(a, np.ones(4))
    a += 1                                      # numpy in-place: seen by the tensor
    np.testing.assert_array_equal(t.numpy(), np.full(4, 2.0))
    assert t.tolist() == [2.0, 2.0, 2.0, 2.0]
    n = t.numpy()
    assert np.shares_memory(n, a)
    n[0] = 7
    assert a[0] == 7 and t.tolist()[0] == 7
    t.narrow(0, 1, 2).fill_(-1)                 # a view of the tensor writes into the array too
    np.testing.assert_array_equal(a, [7, -1, -1, 2])


def test_numpy_of_views_shares_memory():
    a = np.arange(12.0).reshape(3, 4)
    t = tk.from_numpy(a)
    for v, ref in [(t.t(), a.T), (t.narrow(1, 1, 2), a[:, 1:3]), (t.select(0, 2), a[2]), (t.diagonal(), None)]:
        n = v.numpy()
        assert np.shares_memory(n, a)
        if ref is not None:
            np.testing.assert_array_equal(n, ref)
            assert n.strides == ref.strides


def test_np_asarray_shares_np_array_copies():
    t = tk.arange(4.0)
    v = np.asarray(t)
    assert v.dtype == np.float32 and np.shares_memory(v, t.numpy())
    v[0] = 10
    assert t.tolist()[0] == 10
    c = np.array(t)                             # np.array copies, as for any array-like
    assert not np.shares_memory(c, t.numpy())
    c[1] = -5
    assert t.tolist()[1] == 1
    d = np.asarray(t, dtype=np.float64)
    assert d.dtype == np.float64 and d.tolist() == [10, 1, 2, 3]
    assert np.asarray(t, dtype=np.float32) .__array_interface__["data"][0] == t.data_ptr()


def test_numpy_dtypes_and_grad_rule():
    for d in ALL_DTYPES:
        assert tk.zeros(2, dtype=d).numpy().dtype == np_dtype(d)
    x = tk.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="detach"):
        x.numpy()
    np.testing.assert_array_equal(x.numpy(force=True), [1, 1])


# ---- Python conversions ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype, values, pytype", [
    (tk.float32, [[1.5, -2.0], [0.25, 3.0]], float), (tk.float64, [[0.1, 2.0]], float),
    (tk.float16, [[0.5, 2.0]], float), (tk.bfloat16, [[1.5, -8.0]], float), (tk.int64, [[1, -2], [3, 4]], int),
    (tk.int32, [[7]], int), (tk.uint8, [[255, 0]], int), (tk.int8, [[-128, 127]], int),
    (tk.bool, [[True, False]], bool)])
def test_tolist_and_item(dtype, values, pytype):
    t = tk.tensor(values, dtype=dtype)
    out = t.tolist()
    assert out == values
    assert all(type(v) is pytype for row in out for v in row)
    one = tk.tensor(values[0][0], dtype=dtype)
    assert one.tolist() == values[0][0] and type(one.tolist()) is pytype
    assert one.item() == values[0][0] and type(one.item()) is pytype
    assert tk.tensor([[values[0][0]]], dtype=dtype).item() == values[0][0]     # any one-element shape
    if torch is not None:
        r = torch.tensor(values, dtype=getattr(torch, dtype.name))
        assert r.tolist() == out


def test_item_and_number_conversions_of_many_elements_raise():
    t = tk.tensor([1.0, 2.0])
    with pytest.raises(RuntimeError, match="2 elements"):
        t.item()
    with pytest.raises(RuntimeError):
        float(t)
    with pytest.raises(RuntimeError):
        int(t)
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(t)
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(tk.zeros(0))
    with pytest.raises(RuntimeError):
        tk.zeros(0).item()


def test_number_conversions():
    assert float(tk.tensor(2.5)) == 2.5 and type(float(tk.tensor(2))) is float
    assert int(tk.tensor(2.7)) == 2 and int(tk.tensor(-2.7)) == -2 and type(int(tk.tensor(2.7))) is int
    assert int(tk.tensor([[5]])) == 5
    assert bool(tk.tensor([0.0])) is False and bool(tk.tensor(3)) is True
    assert bool(tk.tensor(float("nan"))) is True
    assert f"{tk.tensor(2.5):.2f}" == "2.50"
    assert f"{tk.tensor(3):>4}" == "   3"


def test_len_iter_index():
    t = tk.tensor([[1, 2], [3, 4], [5, 6]])
    assert len(t) == 3 and len(tk.zeros(0, 4)) == 0
    rows = list(t)
    assert len(rows) == 3 and all(isinstance(r, tk.Tensor) for r in rows)
    assert [r.tolist() for r in rows] == [[1, 2], [3, 4], [5, 6]]
    assert [x.item() for x in tk.tensor([7, 8])] == [7, 8]
    with pytest.raises(TypeError, match="0-d"):
        len(tk.tensor(1))
    with pytest.raises(TypeError, match="0-d"):
        iter(tk.tensor(1))
    assert operator.index(tk.tensor(3)) == 3
    assert operator.index(tk.tensor([4], dtype=tk.int16)) == 4
    assert list(range(10))[tk.tensor(2)] == 2
    assert list(range(tk.tensor(3))) == [0, 1, 2]
    with pytest.raises(TypeError, match="integer tensors of a single element"):
        operator.index(tk.tensor(1.0))
    with pytest.raises(TypeError):
        operator.index(tk.tensor([1, 2]))


# ---- repr ----------------------------------------------------------------------------------------------------
REPR_CASES = [([1.5, -2.0], "float32"), ([1.5, -2.0], "float64"), ([1.5, -2.0], "float16"), ([1.5, -2.0], "bfloat16"),
              ([1, 2], "int64"), ([1, 2], "int32"), ([1, 2], "int16"), ([1, 2], "int8"), ([1, 2], "uint8"),
              ([True, False], "bool"), (3.25, "float32"), (3.25, "float16"), (7, "int64"), (7, "int32"),
              (True, "bool"), ([], "float32"), ([], "float16"), ([], "int32"), ([], "int64"), ([[1.0, 2.0]], "float64")]


@pytest.mark.parametrize("data, name", REPR_CASES)
def test_repr_dtype_suffix(data, name):
    t = tk.tensor(data, dtype=getattr(tk, name))
    text = repr(t)
    assert str(t) == text
    # no suffix for the default float dtype, int64 and bool; an empty int64 tensor names its dtype
    suffix = name not in ("float32", "int64", "bool") or (data == [] and name == "int64")
    assert (f"dtype=tk.{name}" in text) == suffix
    if torch is not None:
        r = torch.tensor(data, dtype=getattr(torch, name))
        assert text == repr(r).replace("torch.", "tk.")


@needs_torch
def test_repr_suffix_follows_default_dtype():
    old_tk, old_torch = tk.get_default_dtype(), torch.get_default_dtype()
    try:
        tk.set_default_dtype(tk.float64)
        torch.set_default_dtype(torch.float64)
        for data, name in [([1.5, 2.0], "float32"), ([1.5, 2.0], "float64"), (0.5, "float32")]:
            t, r = tk.tensor(data, dtype=getattr(tk, name)), torch.tensor(data, dtype=getattr(torch, name))
            assert repr(t) == repr(r).replace("torch.", "tk.")
        assert "dtype" not in repr(tk.tensor([1.5]))
        assert "dtype=tk.float32" in repr(tk.tensor([1.5], dtype=tk.float32))
    finally:
        tk.set_default_dtype(old_tk)
        torch.set_default_dtype(old_torch)


def test_repr_requires_grad():
    assert repr(tk.tensor([1.0, 2.0], requires_grad=True)) == "tensor([1., 2.], requires_grad=True)"
    assert repr(tk.tensor(1.0, dtype=tk.float64, requires_grad=True)) == \
        "tensor(1., dtype=tk.float64, requires_grad=True)"


def test_size_repr():
    assert repr(tk.zeros(2, 3).shape) == "tk.Size([2, 3])"
    assert repr(tk.tensor(1).shape) == "tk.Size([])"


# ---- pickling ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_pickle_round_trip(dtype):
    base = np.arange(12).reshape(3, 4) % 5
    t = tk.tensor(base, dtype=dtype)
    for x, ref in [(t, base), (t.t(), base.T), (t.narrow(1, 1, 2), base[:, 1:3]), (t.select(0, 1), base[1])]:
        y = pickle.loads(pickle.dumps(x))
        assert type(y) is tk.Tensor and y.dtype is dtype and tuple(y.shape) == ref.shape
        np.testing.assert_array_equal(y.numpy().astype(np.float64), ref.astype(np_dtype(dtype)).astype(np.float64))
        assert y.untyped_storage() is not x.untyped_storage()
        assert y.device == tk.device("cpu")


def test_pickle_special_cases():
    for x in [tk.tensor(3.5), tk.zeros(0, 3), tk.tensor([1.0, 2.0], requires_grad=True),
              tk.tensor([float("nan"), float("inf")], dtype=tk.float64)]:
        y = pickle.loads(pickle.dumps(x, protocol=pickle.HIGHEST_PROTOCOL))
        assert tuple(y.shape) == tuple(x.shape) and y.dtype is x.dtype and y.requires_grad == x.requires_grad
        np.testing.assert_array_equal(y.numpy(force=True), x.numpy(force=True))
    y = pickle.loads(pickle.dumps(tk.tensor([1.0, 2.0])))
    y.add_(1)                                   # the copy is an ordinary writable tensor
    assert y.tolist() == [2.0, 3.0]


# ---- .to() and casts ----------------------------------------------------------------------------------------------
def test_to_forms():
    x = tk.tensor([1.5, -2.5, 3.0])
    assert x.to(tk.float32) is x                          # nothing changes: itself, as PyTorch
    assert x.to("cpu") is x and x.to(tk.device("cpu")) is x and x.to(dtype=tk.float32) is x
    assert x.to(x) is x and x.to("cpu", tk.float32) is x
    y = x.to(tk.float64)
    assert y.dtype is tk.float64 and y.tolist() == [1.5, -2.5, 3.0] and y.untyped_storage() is not x.untyped_storage()
    z = x.to("cpu", tk.int32)
    assert z.dtype is tk.int32 and z.tolist() == [1, -2, 3]
    w = x.to(device="cpu", dtype=tk.float16)
    assert w.dtype is tk.float16 and w.device == tk.device("cpu")
    o = x.to(tk.zeros(1, dtype=tk.int64))
    assert o.dtype is tk.int64 and o.tolist() == [1, -2, 3]
    c = x.to(copy=True)
    assert c is not x and c.dtype is tk.float32 and c.untyped_storage() is not x.untyped_storage()
    c.fill_(0)
    assert x.tolist() == [1.5, -2.5, 3.0]
    c2 = x.to(tk.float32, copy=True)
    assert c2.untyped_storage() is not x.untyped_storage()
    assert x.t().to(tk.float64).tolist() == [1.5, -2.5, 3.0]
    nc = tk.arange(6.0).view(2, 3).t().to(tk.int64)         # non-contiguous source
    assert nc.tolist() == [[0, 3], [1, 4], [2, 5]]
    assert x.cpu() is x


def test_to_errors():
    x = tk.zeros(2)
    with pytest.raises(ValueError, match="'gpu'"):
        x.to("gpu")
    with pytest.raises(TypeError):
        x.to(1.5)


CAST_METHODS = [("float", tk.float32), ("double", tk.float64), ("half", tk.float16), ("bfloat16", tk.bfloat16),
                ("long", tk.int64), ("int", tk.int32), ("short", tk.int16), ("char", tk.int8), ("byte", tk.uint8),
                ("bool", tk.bool)]


@pytest.mark.parametrize("method, dtype", CAST_METHODS)
def test_cast_methods(method, dtype):
    vals = [0.0, 0.5, 1.5, 2.7, 100.9, 1 / 3] + ([] if dtype is tk.uint8 else [-0.5, -2.7, -100.9])
    x = tk.tensor(vals, dtype=tk.float64)
    y = getattr(x, method)()
    assert y.dtype is dtype
    assert getattr(y, method)() is y                       # already that dtype: itself
    expected = np.array(vals).astype(np_dtype(dtype))      # C casts: truncation toward zero, nearest-even rounding
    np.testing.assert_array_equal(y.numpy(), expected)
    if torch is not None:
        r = getattr(torch.tensor(vals, dtype=torch.float64), method)()
        np.testing.assert_array_equal(y.numpy().astype(np.float64), r.double().numpy())


@needs_torch
@pytest.mark.parametrize("src, dst", [("int64", "uint8"), ("int64", "int8"), ("int32", "int16"), ("int64", "bool"),
                                      ("float32", "bool"), ("bool", "float32"), ("uint8", "int8"),
                                      ("float32", "bfloat16"), ("float64", "float16"), ("int64", "float16"),
                                      ("bfloat16", "float16")])
def test_casts_match_torch(src, dst):
    if src in ("int64", "int32", "uint8", "bool"):
        vals = [0, 1, -1, 200, -200, 300, 255, 127, -128, 65519, 2049] if src != "uint8" else [0, 1, 127, 128, 255]
        if src == "bool":
            vals = [True, False]
    else:
        vals = [0.0, -0.0, 0.1, 1 / 3, -7.77, 1e-8, 65504.0, 3.0e5, float("inf"), float("nan"), 1.00390625,
                1.01171875]
    r = torch.tensor(vals, dtype=getattr(torch, src)).to(getattr(torch, dst))
    t = tk.tensor(vals, dtype=getattr(tk, src)).to(getattr(tk, dst))
    assert t.dtype.name == dst
    np.testing.assert_array_equal(t.numpy().astype(np.float64), r.double().numpy())


def test_type_as_and_type():
    x = tk.tensor([1.7, -1.7])
    y = x.type_as(tk.zeros(1, dtype=tk.int32))
    assert y.dtype is tk.int32 and y.tolist() == [1, -1]
    z = x.type(tk.float64)
    assert z.dtype is tk.float64 and z.tolist() == pytest.approx([1.7, -1.7], rel=1e-6)
    assert isinstance(x.type(), str)


@needs_torch

def test_type_name_matches_torch():
    for d in ("float32", "int64", "bool", "float16"):
        assert tk.zeros(1, dtype=getattr(tk, d)).type() == \
            torch.zeros(1, dtype=getattr(torch, d)).type().replace("torch.", "tk.")


# ---- layout queries ------------------------------------------------------------------------------------------
def test_size_shape_stride():
    x = tk.zeros(2, 3, 4)
    assert x.size() == (2, 3, 4) and x.shape == (2, 3, 4) and isinstance(x.size(), tk.Size)
    assert isinstance(x.shape, tuple) and x.shape == x.size()
    assert x.size(0) == 2 and x.size(-1) == 4 and x.size(1) == 3
    assert x.stride() == (12, 4, 1) and x.stride(0) == 12 and x.stride(-1) == 1
    assert x.numel() == 24 and x.nelement() == 24 and tk.numel(x) == 24 and x.shape.numel() == 24
    assert x.dim() == 3 and x.ndim == 3
    with pytest.raises(IndexError, match=r"\[-3, 2\], but got 3"):
        x.size(3)
    with pytest.raises(IndexError, match=r"\[-3, 2\], but got -4"):
        x.stride(-4)
    s = tk.tensor(1.0)
    assert s.size() == () and s.stride() == () and s.numel() == 1 and s.dim() == 0
    e = tk.zeros(3, 0, 2)
    assert e.numel() == 0 and e.stride() == (2, 2, 1)      # PyTorch's strides for an empty tensor
    if torch is not None:
        assert e.stride() == torch.zeros(3, 0, 2).stride()
        assert tk.zeros(2, 1, 3).stride() == torch.zeros(2, 1, 3).stride()


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_element_size(dtype):
    x = tk.zeros(5, dtype=dtype)
    size = np.dtype(np_dtype(dtype)).itemsize
    assert x.element_size() == size and x.itemsize == size and x.nbytes == 5 * size
    if torch is not None:
        assert x.element_size() == torch.zeros(5, dtype=getattr(torch, dtype.name)).element_size()


def test_data_ptr_with_offsets():
    a = np.arange(24, dtype=np.int32).reshape(4, 6)
    x = tk.from_numpy(a)
    assert x.data_ptr() == a.ctypes.data
    assert x.narrow(1, 2, 3).data_ptr() == a[:, 2:5].ctypes.data == a.ctypes.data + 8
    assert x.select(0, 3).data_ptr() == a[3].ctypes.data
    assert x[1:, 2:].data_ptr() == a[1:, 2:].ctypes.data
    assert x[1:].storage_offset() == 6 and x[1:, 2:].storage_offset() == 8
    assert x.diagonal(1).data_ptr() == a.ctypes.data + 4
    assert x.t().data_ptr() == x.data_ptr()
    y = tk.zeros(10, dtype=tk.float64)
    assert y[3:].data_ptr() - y.data_ptr() == 24


def test_device_queries():
    x = tk.zeros(2)
    assert x.device == tk.device("cpu") and x.is_cpu and not x.is_cuda
    assert x.is_floating_point() and not tk.zeros(2, dtype=tk.int32).is_floating_point() and not x.is_complex()
    assert tk.is_tensor(x) and not tk.is_tensor(np.zeros(2)) and tk.is_floating_point(x)


# ---- requires_grad, hashing, versions ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_requires_grad_only_for_float(dtype):
    x = tk.zeros(2, dtype=dtype)
    assert x.requires_grad is False and x.is_leaf and x.grad is None and x.grad_fn is None
    if dtype.is_floating_point:
        assert x.requires_grad_() is x and x.requires_grad
        x.requires_grad = False
        assert not x.requires_grad
        assert tk.ones(2, dtype=dtype, requires_grad=True).requires_grad
    else:
        with pytest.raises(RuntimeError, match="only floating point tensors can require gradients"):
            x.requires_grad_()
        with pytest.raises(RuntimeError, match="floating point"):
            x.requires_grad = True
        assert not x.requires_grad
        x.requires_grad_(False)                             # turning it off is always fine
        with pytest.raises(RuntimeError):
            tk.tensor([1, 2], dtype=dtype, requires_grad=True)


def test_hash_by_identity_and_dict_keys():
    a, b = tk.tensor([1.0, 2.0]), tk.tensor([1.0, 2.0])
    assert hash(a) == hash(a) and hash(a) != hash(b)
    d = {a: "a", b: "b"}
    assert d[a] == "a" and d[b] == "b" and len(d) == 2
    assert len({a, b, a}) == 2
    v = a.view(2)
    assert v not in {a: 1}                      # a view is another object
    a.add_(1)                                  # mutation does not change the hash
    assert d[a] == "a"


def test_in_place_ops_bump_version():
    x = tk.zeros(4)
    v0 = x._version
    assert v0 == 0
    steps = [lambda: x.add_(1), lambda: x.mul_(2), lambda: x.fill_(3), lambda: x.zero_(),
             lambda: x.copy_(tk.ones(4)), lambda: x.uniform_(), lambda: x.normal_(),
             lambda: x.__setitem__(0, 5.0), lambda: x.clamp_(0, 1), lambda: x.sub_(tk.ones(4))]
    last = v0
    for step in steps:
        step()
        assert x._version > last
        last = x._version
    y = x + 1                                   # out-of-place ops leave the version alone
    _ = x.view(2, 2), x.t(), x.clone(), x.to(tk.float64)
    assert x._version == last and y._version == 0


def test_views_share_the_version_counter():
    x = tk.zeros(3, 4)
    v = x.t()
    before = x._version
    v.add_(1)
    assert x._version > before and v._version == x._version
    before = v._version
    x.narrow(0, 0, 1).fill_(2)
    assert v._version > before
    c = x.clone()
    x.add_(1)
    assert c._version == 0


@needs_torch
def test_version_starts_like_torch():
    assert tk.zeros(2)._version == torch.zeros(2)._version == 0
