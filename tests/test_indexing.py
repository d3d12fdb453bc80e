"""Indexing (``x[...]``, ``x[...] = v``) and the gather/scatter family against numpy and PyTorch.

The op table cannot express index tuples, so they are fuzzed here: hypothesis draws shapes
and index tuples (ints, stepped slices, None, Ellipsis, int lists/tensors, bool masks,
bools) for getitem and setitem. The numpy reference applies ints first (as PyTorch does:
an int is a select, not an advanced index), then numpy's advanced indexing on the rest.
"""
import re

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tensorkit as tk

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None

DTYPES = [tk.bool, tk.uint8, tk.int8, tk.int16, tk.int32, tk.int64, tk.float16, tk.bfloat16, tk.float32,
          tk.float64]
NUMERIC = DTYPES[1:]
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")


def _data(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    if dtype is tk.bool:
        return np.asarray(rng.random(shape) < 0.5)
    if dtype.is_floating_point:
        return np.asarray(rng.integers(-8, 8, shape) / 2)        # exact in every float dtype
    return np.asarray(rng.integers(0 if dtype is tk.uint8 else -8, 8, shape))


def _t(a, dtype=None):
    return tk.tensor(np.asarray(a), dtype=dtype)


def _np(t):
    a = t.numpy()
    return a.astype(np.float64) if a.dtype in (np.float16, ml_dtypes.bfloat16) else a


def _torch(a, dtype: tk.dtype):
    return torch.tensor(np.asarray(a, np.float64 if dtype.is_floating_point else None)).to(getattr(torch, dtype.name))


def _close(t, ref):
    got, ref = _np(t), np.asarray(ref)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    np.testing.assert_array_equal(got, ref.astype(got.dtype) if got.dtype == np.float64 else ref)


# ---- index tuples ---------------------------------------------------------------------------------
@st.composite
def _case(draw):
    """(shape, index items). Items: ('int', i) | ('slice', s) | ('none',) | ('ell',) | ('list', l)
    | ('tensor', array) | ('mask', array) | ('bool', b)."""
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=0, max_size=4)))
    items, d, ell = [], 0, False
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["int", "slice", "none", "ell", "list", "tensor", "mask", "bool"]))
        if kind == "none":
            items.append(("none",))
        elif kind == "bool":
            items.append(("bool", draw(st.booleans())))
        elif kind == "ell":
            if not ell:
                ell = True
                items.append(("ell",))
        elif d < len(shape):
            n = shape[d]
            if kind == "int" and n:
                items.append(("int", draw(st.integers(-n, n - 1))))
            elif kind == "slice":
                bound = st.none() | st.integers(-n - 2, n + 2)
                items.append(("slice", slice(draw(bound), draw(bound), draw(st.none() | st.integers(1, 3)))))
            elif kind in ("list", "tensor") and n:
                size = tuple(draw(st.lists(st.integers(0, 3), max_size=2 if kind == "tensor" else 1, min_size=1)))
                idx = np.array(draw(st.lists(st.integers(-n, n - 1), min_size=int(np.prod(size)),
                                             max_size=int(np.prod(size)))), np.int64).reshape(size)
                items.append((kind, idx.tolist() if kind == "list" else idx))
            elif kind == "mask" and not ell:      # (after `...` its dims are not known here)
                k = draw(st.integers(1, min(2, len(shape) - d)))
                items.append(("mask", np.array(draw(st.lists(st.booleans(), min_size=int(np.prod(shape[d:d + k])),
                                                              max_size=int(np.prod(shape[d:d + k]))))
                                                 , bool).reshape(shape[d:d + k])))
                d += k - 1
            else:
                continue
            d += 1
    return shape, items


def _tk_index(items):
    conv = {"int": lambda v: v, "slice": lambda v: v, "none": lambda: None, "ell": lambda: Ellipsis,
            "list": lambda v: v, "tensor": lambda v: tk.tensor(v, dtype=tk.int64),
            "mask": lambda v: tk.tensor(v), "bool": lambda v: v}
    return tuple(conv[k](*rest) for k, *rest in items)


def _torch_index(items):
    def conv(i):
        if isinstance(i, tk.Tensor):
            return torch.from_numpy(i.numpy().copy())
        return torch.tensor(i, dtype=torch.int64) if isinstance(i, list) else i
    return tuple(conv(i) for i in _tk_index(items))


def _ref_split(a, items):
    """numpy reference with PyTorch's rule: ints (and the dims of new bool axes) first as basic
    indexing, then numpy's advanced indexing of the rest. Returns (basic view, advanced key)."""
    consumed = sum(v.ndim if k == "mask" else 1 for k, *r in items for v in r[:1] or [None]
                   if k in ("int", "slice", "list", "tensor", "mask"))
    expanded = []
    for k, *r in items:
        expanded += [("slice", slice(None))] * (a.ndim - consumed) if k == "ell" else [(k, *r)]
    if not any(k == "ell" for k, *_ in items):
        expanded += [("slice", slice(None))] * (a.ndim - consumed)
    basic, adv = [], []
    for k, *r in expanded:
        if k == "int":
            basic.append(r[0])
        elif k in ("slice", "none"):
            basic.append(r[0] if k == "slice" else None)
            adv.append(slice(None))
        elif k == "bool":
            basic.append(None)
            adv.append(np.array([0] if r[0] else [], np.int64))
        else:
            v = np.asarray(r[0], np.int64 if k != "mask" else bool)
            basic += [slice(None)] * (v.ndim if k == "mask" else 1)
            adv.append(v)
    has_adv = any(not isinstance(i, slice) for i in adv)
    return a[tuple(basic) + (Ellipsis,)], (tuple(adv) if has_adv else None)   # `...`: a view even of one element


def _ref_getitem(a, items):
    view, adv = _ref_split(a, items)
    return view if adv is None else view[adv]


def _ref_setitem(a, items, value):
    """A copy of ``a`` with ``a[items] = value`` done by the numpy reference."""
    ref = a.copy()
    view, adv = _ref_split(ref, items)
    if adv is None:
        view[...] = value
    else:
        view[adv] = value
    return ref


def _numpy_ok(a, items):
    """Whether numpy and PyTorch accept the index."""
    try:
        _ref_getitem(a, items)
        if torch is not None:
            torch.tensor(a)[_torch_index(items)]
        return True
    except IndexError:
        return False


@settings(max_examples=250, deadline=None)
@given(_case(), st.booleans())
def test_getitem_fuzz(case, transposed):
    shape, items = case
    a = _data(shape, tk.float32)
    x = tk.tensor(a)
    if transposed and len(shape) >= 2:      # a non-contiguous tensor with the same logical shape
        x = tk.tensor(np.ascontiguousarray(a.swapaxes(0, 1))).transpose(0, 1)
    if not _numpy_ok(a, items):
        with pytest.raises(IndexError):
            x[_tk_index(items)]
        return
    ref = _ref_getitem(a, items)
    got = x[_tk_index(items)]
    _close(got, ref)
    if torch is not None:
        _close(got, torch.tensor(a)[_torch_index(items)].numpy())


@settings(max_examples=200, deadline=None)
@given(_case(), st.sampled_from(["scalar", "full", "broadcast"]), st.booleans())
def test_setitem_fuzz(case, value_kind, transposed):
    shape, items = case
    a = _data(shape, tk.float32)
    x = tk.tensor(a)
    if transposed and len(shape) >= 2:
        x = tk.tensor(np.ascontiguousarray(a.swapaxes(0, 1))).transpose(0, 1)
    if not _numpy_ok(a, items):
        with pytest.raises(IndexError):
            x[_tk_index(items)] = 1.0
        _close(x, a)                      # a bad index writes nothing
        return
    target_shape = _ref_getitem(a, items).shape
    if value_kind == "scalar":
        value, tvalue = 7.5, 7.5
    else:
        vshape = target_shape if value_kind == "full" else target_shape[len(target_shape) // 2:]
        value = np.arange(np.prod(vshape), dtype=np.float32).reshape(vshape) + 100
        tvalue = tk.tensor(value)
    ref = _ref_setitem(a, items, value)
    x[_tk_index(items)] = tvalue
    _close(x, ref)


# ---- basic indexing: views ---------------------------------------------------------------------
def test_basic_indexing_is_a_view():
    x = tk.zeros(4, 5)
    v = x[1:, ::2][None, ..., 1]
    assert v.shape == (1, 3) and v._storage is x._storage
    v[0, 1] = 3.0                                   # writes through
    assert x[2, 2].item() == 3.0
    x[::3, 4] = tk.tensor([1.0, 2.0])               # setitem through a stepped view
    assert x[:, 4].tolist() == [1.0, 0.0, 0.0, 2.0]
    c = x[[0, 1]]                                    # advanced: a copy
    c[0, 0] = 9.0
    assert x[0, 0].item() == 0.0 and c._storage is not x._storage


def test_setitem_casts_and_drops_leading_ones():
    x = tk.zeros(3, dtype=tk.int64)
    x[tk.tensor([0, 2])] = tk.tensor([2.7, -1.2])   # PyTorch refuses the dtype; tensorkit casts
    assert x.tolist() == [2, 0, -1]
    y = tk.zeros(2, 3)
    y[[0, 1]] = tk.ones(1, 1, 2, 3)
    y[0:1] = tk.full((1, 1, 3), 2.0)
    assert y.tolist() == [[2.0] * 3, [1.0] * 3]


def test_setitem_from_itself():
    x = tk.arange(5)
    x[tk.tensor([4, 3, 2, 1, 0])] = x
    assert x.tolist() == [4, 3, 2, 1, 0]
    x[1:] = x[:-1]                                   # overlapping basic views
    assert x.tolist() == [4, 4, 3, 2, 1]


@pytest.mark.parametrize("dtype", DTYPES)
def test_getitem_setitem_dtypes(dtype):
    a = _data((3, 4), dtype)
    x = tk.tensor(a, dtype=dtype)
    ref = tk.tensor(a, dtype=dtype).numpy()
    _close(x[[2, 0], 1:], ref[[2, 0], 1:])
    _close(x[_t(a != 0)], ref[a != 0])
    v = _data((2,), dtype, seed=1)
    x[[1, 2], [3, 0]] = tk.tensor(v, dtype=dtype)
    ref[[1, 2], [3, 0]] = tk.tensor(v, dtype=dtype).numpy()
    _close(x, ref)


@needs_torch
@pytest.mark.parametrize("index", [
    "0, :, [0, 1]", "[0, 1], :, 0", "..., None, [1, 2]", "True, [0, 1]", "[1, 0], True, [0, 1]",
    "torch.tensor(1), :, [0, 2]", "torch.tensor(True)", "torch.tensor(False), 0", "..., False",
    "[[0, 1], [1, 0]], None, [[2], [1]]", "mask2", "1, mask2[0]", "[]", "None, [0], :, [[1]]",
])
def test_getitem_vs_torch_cases(index):
    a = np.arange(24.0).reshape(2, 3, 4)
    mask2 = np.array([[True, False, True], [False, True, True]])
    x, tx = tk.tensor(a), torch.tensor(a)
    got = eval(f"x[{index}]", {"x": x, "torch": tk, "mask2": tk.tensor(mask2)})
    want = eval(f"x[{index}]", {"x": tx, "torch": torch, "mask2": torch.tensor(mask2)})
    _close(got, want.numpy())


# ---- errors ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("index, message", [
    (5, "index 5 is out of bounds for dimension 0 with size 3"),
    ((0, 4), "index 4 is out of bounds for dimension 1 with size 4"),
    ([0, 3], "index 3 is out of bounds for dimension 0 with size 3"),
    ((slice(None), tk.tensor([-5])), "index -5 is out of bounds for dimension 1 with size 4"),
    (tk.tensor([True, False]), "The shape of the mask [2] at index 0 does not match the shape of the indexed "
                               "tensor [3, 4] at index 0"),
    (tk.tensor([0.0]), "tensors used as indices must be long, int, byte or bool tensors"),
    (tk.tensor([0], dtype=tk.int16), "tensors used as indices must be long, int, byte or bool tensors"),
    (([0, 1], [0, 1, 2]), "shape mismatch: indexing tensors could not be broadcast together with shapes [2], [3]"),
    ((0, 0, 0), "too many indices for tensor of dimension 2"),
    ((Ellipsis, 0, Ellipsis), "an index can only have a single ellipsis"),
])
def test_index_errors_leave_tensor_unchanged(index, message):
    x = tk.arange(12.0).reshape(3, 4)
    with pytest.raises(IndexError, match=re.escape(message)):
        x[index]
    with pytest.raises(IndexError, match=re.escape(message)):
        x[index] = 0.0
    assert x.tolist() == np.arange(12.0).reshape(3, 4).tolist()


def test_mask_error_message_one_dim():
    with pytest.raises(IndexError, match=r"The shape of the mask \[3\] at index 0 does not match the shape of the "
                                         r"indexed tensor \[4\] at index 0"):
        tk.zeros(4)[tk.tensor([True, False, True])]


def test_setitem_bad_value_shape_writes_nothing():
    x = tk.zeros(2, 3)
    with pytest.raises(RuntimeError, match=r"value tensor of shape \[3, 3\] cannot be broadcast to indexing "
                                           r"result of shape \[2, 3\]"):
        x[[0, 1]] = tk.ones(3, 3)
    assert x.tolist() == [[0.0] * 3] * 2


def test_zero_dim():
    x = tk.tensor(5.0)
    assert x[None].shape == (1,) and x[...].shape == () and x[True].shape == (1,) and x[False].shape == (0,)
    assert x[tk.tensor(True)].tolist() == [5.0]
    with pytest.raises(IndexError, match="invalid index of a 0-dim tensor"):
        x[0]
    x[True] = 2.0
    assert x.item() == 2.0


# ---- gather / scatter --------------------------------------------------------------------------
def _ref_gather(a, dim, idx):
    out = np.empty(idx.shape, a.dtype)
    for p in np.ndindex(idx.shape):
        q = list(p)
        q[dim] = idx[p]
        out[p] = a[tuple(q)]
    return out


def _ref_scatter(a, dim, idx, src, reduce=None, include_self=True):
    """PyTorch's scatter_reduce, element by element in float64 (or int64)."""
    wide = np.float64 if a.dtype.kind == "f" or a.dtype == ml_dtypes.bfloat16 else np.int64
    out, seen = a.astype(wide), {}
    for p in np.ndindex(idx.shape):
        q = list(p)
        q[dim] = idx[p]
        q, v = tuple(q), wide(src[p])
        if q not in seen:
            seen[q] = [out[q]] if include_self else []
        seen[q].append(v)
    for q, vs in seen.items():
        if reduce is None:
            out[q] = vs[-1]
        elif reduce == "sum":
            out[q] = sum(vs)
        elif reduce == "prod":
            out[q] = np.prod(vs)
        elif reduce == "mean":
            out[q] = np.sum(vs) / len(vs) if wide is np.float64 else np.sum(vs) // len(vs)
        else:
            out[q] = max(vs) if reduce == "amax" else min(vs)
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_gather(dtype, dim):
    a = _data((3, 4, 2), dtype)
    rng = np.random.default_rng(1)
    idx = rng.integers(0, a.shape[dim], (2, 3, 2))
    x = tk.tensor(a, dtype=dtype)
    got = tk.gather(x, dim, tk.tensor(idx))
    _close(got, _ref_gather(x.numpy(), dim % 3, idx))
    if torch is not None:
        _close(got, torch.gather(_torch(a, dtype), dim, torch.tensor(idx)).float().numpy().astype(_np(got).dtype))
    _close(x.gather(dim, tk.tensor(idx, dtype=tk.int32)), _np(got))


@pytest.mark.parametrize("dtype", DTYPES)
def test_scatter_dtypes(dtype):
    a = _data((3, 4), dtype)
    idx = np.array([[0, 1, 2, 0], [2, 0, 1, 1]])            # no duplicates along dim 0 per column
    src = _data((2, 5), dtype, seed=2)
    x, s = tk.tensor(a, dtype=dtype), tk.tensor(src, dtype=dtype)
    got = x.scatter(0, tk.tensor(idx), s)
    _close(got, _ref_scatter(x.numpy(), 0, idx, s.numpy()).astype(x.numpy().dtype))
    _close(x, tk.tensor(a, dtype=dtype).numpy())              # out of place
    x.scatter_(0, tk.tensor(idx), s)
    _close(x, _np(got))
    if dtype is not tk.bool:
        dup = np.array([[0, 0, 2, 2], [0, 0, 2, 0]])
        _close(tk.tensor(a, dtype=dtype).scatter_add(0, tk.tensor(dup), s),
               _ref_scatter(tk.tensor(a, dtype=dtype).numpy(), 0, dup, s.numpy(), "sum").astype(_np(got).dtype))


@pytest.mark.parametrize("reduce", ["sum", "prod", "mean", "amax", "amin"])
@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("dtype", [tk.float32, tk.float64, tk.int64, tk.int32, tk.float16, tk.bfloat16])
def test_scatter_reduce(reduce, include_self, dtype):
    a = _data((4, 3), dtype)
    idx = np.array([[0, 0, 3], [0, 2, 3], [1, 0, 3]])
    src = _data((3, 3), dtype, seed=3)
    x, s = tk.tensor(a, dtype=dtype), tk.tensor(src, dtype=dtype)
    got = x.scatter_reduce(0, tk.tensor(idx), s, reduce, include_self=include_self)
    ref = _ref_scatter(x.numpy(), 0, idx, s.numpy(), reduce, include_self)
    if dtype.is_floating_point:
        np.testing.assert_allclose(_np(got), ref, rtol=1e-2 if dtype in (tk.float16, tk.bfloat16) else 1e-6)
    else:
        _close(got, ref)
    if torch is not None:
        want = _torch(a, dtype).scatter_reduce(0, torch.tensor(idx), _torch(src, dtype), reduce,
                                               include_self=include_self)
        np.testing.assert_allclose(_np(got), want.double().numpy(), rtol=1e-2)


def test_scatter_value_and_legacy_reduce():
    x = tk.tensor([2.0, 6.0])
    assert x.scatter(0, tk.tensor([0, 0]), tk.tensor([3.0, 4.0]), reduce="multiply").tolist() == [24.0, 6.0]
    assert x.scatter(0, tk.tensor([0, 0]), 3.0, reduce="add").tolist() == [8.0, 6.0]
    assert x.scatter(0, tk.tensor([1]), value=5.0).tolist() == [2.0, 5.0]
    assert tk.tensor(3.0).scatter(0, tk.tensor(0), 5.0).item() == 5.0
    assert tk.zeros(3).gather(0, tk.tensor(1)).shape == ()
    assert tk.zeros(3, dtype=tk.bool).scatter_add(0, tk.tensor([0, 0]), tk.ones(2, dtype=tk.bool)).tolist() == \
        [True, False, False]


def test_gather_scatter_index_smaller_than_input():
    a = np.arange(20.0).reshape(4, 5)
    idx = np.array([[3, 0], [1, 1]])
    _close(tk.tensor(a).gather(1, tk.tensor(idx)), np.take_along_axis(a[:2], idx, 1))
    src = np.arange(100.0, 112.0).reshape(3, 4)
    _close(tk.tensor(a).scatter(1, tk.tensor(idx), tk.tensor(src)), _ref_scatter(a, 1, idx, src))


@pytest.mark.parametrize("call, exc, message", [
    (lambda x: x.gather(0, tk.tensor([0, 1])), RuntimeError, "same number of dimensions"),
    (lambda x: x.gather(1, tk.tensor([[0]] * 5)), RuntimeError,
     "Size does not match at dimension 0 expected index [5, 1] to be no larger than self [3, 4] apart from "
     "dimension 1"),
    (lambda x: x.gather(0, tk.tensor([[3]])), IndexError, "index 3 is out of bounds for dimension 0 with size 3"),
    (lambda x: x.gather(0, tk.tensor([[-1]])), IndexError, "index -1 is out of bounds for dimension 0 with size 3"),
    (lambda x: x.gather(0, tk.tensor([[0.0]])), RuntimeError, "Expected dtype int32/int64 for index"),
    (lambda x: x.scatter_(1, tk.tensor([[0] * 5] * 2), tk.ones(2, 4)), RuntimeError,
     "Expected index [2, 5] to be no larger than self [3, 4] apart from dimension 1 and to be no larger size than "
     "src [2, 4]"),
    (lambda x: x.scatter_(0, tk.tensor([[3]]), 1.0), IndexError, "index 3 is out of bounds for dimension 0"),
    (lambda x: x.scatter_(0, tk.tensor([[0]]), tk.ones(1, 1, dtype=tk.float64)), RuntimeError,
     "Expected self.dtype to be equal to src.dtype"),
    (lambda x: x.scatter_(0, tk.tensor([[0]]), 1.0, reduce="max"), RuntimeError,
     "reduce argument must be either add or multiply"),
    (lambda x: x.scatter_reduce_(0, tk.tensor([[0]]), tk.ones(1, 1), "max"), RuntimeError, "reduce argument"),
    (lambda x: x.index_select(0, tk.tensor([[0]])), IndexError, "Index is supposed to be a vector"),
    (lambda x: x.index_select(1, tk.tensor([4])), IndexError, "index 4 is out of bounds for dimension 1 with size 4"),
    (lambda x: x.index_add_(0, tk.tensor([0, 1]), tk.ones(3, 4)), RuntimeError, "source of shape [3, 4]"),
    (lambda x: x.index_add_(0, tk.tensor([0]), tk.ones(1, 4, dtype=tk.float64)), RuntimeError,
     "must have the same scalar type"),
    (lambda x: x.index_fill_(0, tk.tensor([0]), tk.ones(1)), RuntimeError, "0-dimensional value tensor"),
    (lambda x: x.masked_fill_(tk.ones(3, 4), 1.0), RuntimeError, "only supports boolean masks"),
    (lambda x: x.masked_fill_(tk.ones(3, 4, dtype=tk.bool), tk.ones(1)), RuntimeError, "0-dimensional value tensor"),
    (lambda x: x.masked_fill_(tk.ones(2, 3, 4, dtype=tk.bool), 1.0), RuntimeError, "doesn't match the broadcast"),
    (lambda x: x.masked_select(tk.ones(3, 4)), RuntimeError, "expected BoolTensor for mask"),
    (lambda x: x.index_put_((tk.tensor([0]),), tk.ones(1, dtype=tk.float64)), RuntimeError,
     "Index put requires the source and destination dtypes match"),
    (lambda x: x.index_put_((tk.tensor([5]),), tk.ones(1)), IndexError, "index 5 is out of bounds"),
    (lambda x: x.index_put_((tk.tensor([0]),) * 3, tk.ones(1)), IndexError, "too many indices"),
    (lambda x: x.take(tk.tensor([12])), IndexError, "index 12 is out of bounds for dimension 0 with size 12"),
    (lambda x: x.take(tk.tensor([1], dtype=tk.int32)), RuntimeError, "Expected a long tensor"),
    (lambda x: x.take_along_dim(tk.tensor([0]), 1), RuntimeError, "same number of dimensions"),
])
def test_function_errors_leave_input_unchanged(call, exc, message):
    x = tk.arange(12.0).reshape(3, 4)
    with pytest.raises(exc, match=re.escape(message)):
        call(x)
    assert x.tolist() == np.arange(12.0).reshape(3, 4).tolist()


# ---- the index_* family, masks, nonzero, take ------------------------------------------------------
@pytest.mark.parametrize("dtype", NUMERIC)
def test_index_select_add_copy_fill(dtype):
    a = _data((3, 4), dtype)
    x = tk.tensor(a, dtype=dtype)
    ref = x.numpy()
    idx = np.array([3, 0, 3])
    _close(x.index_select(1, tk.tensor(idx)), ref[:, idx])
    _close(tk.index_select(x, 0, tk.tensor(1)), ref[[1]])
    src = _data((3, 3), dtype, seed=4)
    s = tk.tensor(src, dtype=dtype)
    want = ref.astype(np.float64 if dtype.is_floating_point else np.int64)
    np.add.at(want, (slice(None), idx), 2 * s.numpy().astype(want.dtype))
    _close(x.index_add(1, tk.tensor(idx), s, alpha=2), want.astype(_np(x).dtype))
    want = ref.copy()
    want[:, [0, 2]] = s.numpy()[:, :2]
    _close(x.index_copy(1, tk.tensor([0, 2]), s[:, :2]), want)
    want = ref.copy()
    want[[0, 2]] = 5
    _close(x.index_fill(0, tk.tensor([0, -1]), 5), want)
    _close(x, ref)                                          # out-of-place forms leave x alone
    x.index_fill_(1, tk.tensor([1]), tk.tensor(3))
    assert (_np(x)[:, 1] == 3).all()


@needs_torch
def test_index_put_accumulate_vs_torch():
    x = tk.zeros(4, 3)
    idx = (tk.tensor([0, 0, 3, 0]), tk.tensor([1, 1, 2, 1]))
    v = tk.tensor([1.0, 2.0, 3.0, 4.0])
    got = x.index_put(idx, v, accumulate=True)
    want = torch.zeros(4, 3).index_put((torch.tensor([0, 0, 3, 0]), torch.tensor([1, 1, 2, 1])),
                                       torch.tensor([1.0, 2.0, 3.0, 4.0]), accumulate=True)
    _close(got, want.numpy())
    _close(x, np.zeros((4, 3)))
    x.index_put_((tk.tensor([True, False, False, True]),), tk.tensor([1.0, 2.0, 3.0]), accumulate=True)
    _close(x, np.array([[1.0, 2.0, 3.0], [0] * 3, [0] * 3, [1.0, 2.0, 3.0]]))
    h = tk.zeros(2, dtype=tk.float16).index_put_((tk.tensor([0] * 3000),), tk.ones(3000, dtype=tk.float16),
                                                 accumulate=True)
    assert h.tolist() == [3000.0, 0.0]   # accumulated in float32 (PyTorch's per-step rounding stops at 2048)


@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_fill_select(dtype):
    a = _data((2, 3), dtype)
    m = _data((3,), tk.bool, seed=5)
    x = tk.tensor(a, dtype=dtype)
    ref = x.numpy()
    want = ref.copy()
    want[:, m] = 1
    _close(x.masked_fill(tk.tensor(m), 1), want)
    _close(x.masked_fill(tk.tensor(m), tk.tensor(1)), want)
    _close(x.masked_select(tk.tensor(m)), np.broadcast_to(ref, (2, 3))[np.broadcast_to(m, (2, 3))])
    _close(tk.masked_select(tk.tensor(ref[0]), tk.tensor(np.stack([m, ~m]))),
           np.broadcast_to(ref[0], (2, 3))[np.stack([m, ~m])])
    assert tk.zeros(3).masked_fill(tk.ones(2, 3, dtype=tk.bool), 1).shape == (2, 3)   # broadcasts, as PyTorch
    x.masked_fill_(tk.tensor(m), 1)
    _close(x, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (5,), (3, 4), (2, 0, 3), (2, 3, 2)])
def test_nonzero(dtype, shape):
    a = _data(shape, dtype, seed=6)
    x = tk.tensor(a, dtype=dtype)
    nz = x.nonzero()
    assert nz.dtype is tk.int64
    _close(nz, np.argwhere(x.numpy()))
    _close(tk.argwhere(x), np.argwhere(x.numpy()))
    cols = tk.nonzero(x, as_tuple=True)
    ref = np.nonzero(x.numpy().reshape(-1) if x.ndim == 0 else x.numpy())
    assert len(cols) == len(ref)
    for c, r in zip(cols, ref):
        _close(c, r)


def test_take_and_take_along_dim():
    a = np.arange(12.0).reshape(3, 4)
    x = tk.tensor(a)
    _close(x.take(tk.tensor([[0, -1], [5, 11]])), a.reshape(-1)[[[0, -1], [5, 11]]])
    idx = np.array([[0], [3], [1]])
    _close(tk.take_along_dim(x, tk.tensor(idx), 1), np.take_along_axis(a, idx, 1))
    _close(x.take_along_dim(tk.tensor([[2, 0]])), a.reshape(-1)[[2, 0]])
    _close(tk.take_along_dim(x, tk.tensor([[1]]), 0), a[[1]])           # indices broadcast along dim 1
    if torch is not None:
        bi = torch.tensor([[[1]], [[0]]])                      # input (1, 3, 4), indices (2, 1, 1) -> (2, 3, 1)
        got = tk.take_along_dim(tk.tensor(a[None]), tk.tensor(bi.numpy()), 2)
        _close(got, torch.take_along_dim(torch.tensor(a[None]), bi, 2).numpy())


def test_flip_and_where_use_indexing():
    assert tk.flip(tk.arange(4), 0).tolist() == [3, 2, 1, 0]
    assert [t.tolist() for t in tk.where(tk.tensor([[0, 1], [1, 0]]))] == [[0, 1], [1, 0]]


def test_observers_see_primitives():
    from tensorkit import _dispatch
    seen = []
    _dispatch.observers.append(lambda op, inputs, outputs, params: seen.append(op))
    try:
        x = tk.arange(6.0).reshape(2, 3)
        x[x > 2]
        x[[0, 1], [1, 1]] = 0.0
    finally:
        _dispatch.observers.pop()
    assert {"nonzero", "index", "index_put"} <= set(seen)


@st.composite
def _gather_case(draw):
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    dim = draw(st.integers(0, len(shape) - 1))
    ishape = tuple(draw(st.integers(0, s)) if d != dim else draw(st.integers(0, 5)) for d, s in enumerate(shape))
    idx = np.array(draw(st.lists(st.integers(0, shape[dim] - 1), min_size=int(np.prod(ishape)),
                                 max_size=int(np.prod(ishape)))), np.int64).reshape(ishape)
    return shape, dim, idx


@settings(max_examples=100, deadline=None)
@given(_gather_case(), st.sampled_from([None, "sum", "prod", "mean", "amax", "amin"]), st.booleans())
def test_gather_scatter_fuzz(case, reduce, include_self):
    shape, dim, idx = case
    a, src = _data(shape, tk.float64), _data(idx.shape, tk.float64, seed=1)
    x = tk.tensor(a)
    _close(x.gather(dim, tk.tensor(idx)), _ref_gather(a, dim, idx))
    if reduce is None:       # duplicates keep an unspecified one of their values: compare without them
        flat = np.moveaxis(idx, dim, 0).reshape(idx.shape[dim], -1) if idx.size else np.zeros((0, 0))
        if any(len(set(col)) < len(col) for col in flat.T):
            return
        got = x.scatter(dim, tk.tensor(idx), tk.tensor(src))
    else:
        got = x.scatter_reduce(dim, tk.tensor(idx), tk.tensor(src), reduce, include_self=include_self)
    np.testing.assert_allclose(_np(got), _ref_scatter(a, dim, idx, src, reduce, include_self), rtol=1e-12)
