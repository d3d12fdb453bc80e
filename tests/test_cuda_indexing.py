"""The cuda device's indexing kernels (``kernels/indexing.py``, ``kernels/shape.py``; in CI the
emulated device runs them in Triton's interpreter): gathers and scatters with every reduction
and dtype, duplicate indices, masks, ``nonzero``, ``cat``, and bounds checks that raise the
CPU's IndexError without copying the indices to the host and leave the device usable: at once
for scatters (the tensor unchanged), at the next synchronisation for gathers (which never
wait for the device).

References: numpy, or the CPU backend where ``test_indexing.py`` checks it against numpy and
PyTorch (its helpers and index strategy are reused here). Shapes stay small: the interpreter
runs every program of a launch in Python.
"""
import re

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

import tensorkit as tk
from tensorkit.kernels import indexing as K
from test_indexing import DTYPES, _case, _data, _numpy_ok, _ref_getitem, _ref_setitem, _tk_index

pytestmark = pytest.mark.skipif(not tk.cuda.is_available(), reason="needs a CUDA device (or TENSORKIT_INTERPRET=1)")


def _np(t):
    """A tensor's values as numpy (halves widened to float64), from any device."""
    a = t.cpu().numpy()
    return a.astype(np.float64) if a.dtype.kind == "f" or a.dtype.name == "bfloat16" else a


def _same(got, want):
    """Exactly equal (NaN == NaN), same shape, got on cuda."""
    assert got.device.type == "cuda"
    g = _np(got)
    w = _np(want) if isinstance(want, tk.Tensor) else np.asarray(want)
    assert g.shape == w.shape, (g.shape, w.shape)
    np.testing.assert_array_equal(g, w.astype(g.dtype))


def _pair(a, dtype=None):
    """The same values on the CPU and on cuda."""
    x = tk.tensor(np.asarray(a), dtype=dtype)
    return x, x.cuda()


def _on_cuda(index):
    return tuple(i.cuda() if isinstance(i, tk.Tensor) else i for i in index)


# ---- x[index], x[index] = v: placement, broadcasting, masks ----------------------------------------------
@settings(max_examples=40, deadline=None)
@given(_case(), st.booleans(), st.booleans())
@example(((1,), [("list", [0, 0])]), False, False)        # a duplicate index (found on an H200)
@example(((4, 3, 2, 0), [("ell",), ("list", [3, 0])]), True, False)   # a bad index, nothing gathered (found by CI)
@example(((4, 3, 2, 0), [("list", []), ("none",)]), False, False)     # no index at all: nothing to report
def test_getitem_setitem_fuzz(case, transposed, broadcast_value):
    shape, items = case
    a = _data(shape, tk.float32)
    x = tk.tensor(a, device="cuda")
    if transposed and len(shape) >= 2:
        x = tk.tensor(np.ascontiguousarray(a.swapaxes(0, 1)), device="cuda").transpose(0, 1)
    index = _on_cuda(_tk_index(items))
    if not _numpy_ok(a, items):
        with pytest.raises(IndexError):
            x[index].cpu()                   # a gather's bad index is raised at the next synchronisation
        with pytest.raises(IndexError):
            x[index] = 1.0
        _same(x, a)                          # a bad index writes nothing
        return
    _same(x[index], _ref_getitem(a, items))
    vshape = _ref_getitem(a, items).shape
    vshape = vshape[len(vshape) // 2:] if broadcast_value else vshape
    value = np.arange(np.prod(vshape), dtype=np.float32).reshape(vshape) + 100
    ref = _ref_setitem(a, items, value)
    x[index] = tk.tensor(value, device="cuda")
    # duplicate indices keep one of their values, which one is unspecified (as in PyTorch on a
    # GPU; numpy's last-wins is one valid answer): elements written once must match exactly
    targets = _ref_getitem(np.arange(a.size).reshape(a.shape), items)     # where each value lands
    written = np.broadcast_to(value, targets.shape)
    counts = np.bincount(targets.reshape(-1), minlength=a.size)
    got, want = _np(x).reshape(-1), ref.reshape(-1)
    np.testing.assert_array_equal(got[counts <= 1], want[counts <= 1])
    for t in np.flatnonzero(counts > 1):
        assert got[t] in written[targets == t], (t, got[t], written[targets == t])


@pytest.mark.parametrize("index", [
    "0, :, [0, 1]", "[0, 1], :, 0", "..., None, [1, 2]", "True, [0, 1]", "[1, 0], True, [0, 1]",
    "[[0, 1], [1, 0]], None, [[2], [1]]", "mask2", "1, mask2[0]", "[]", "None, [0], :, [[1]]",
    ":, [[0], [2]], [3, 1, -1]", "[[1], [0]], :, [-2, 0, 3]", "0, x[0] > 5", "..., [True, False, True, True]",
])
def test_getitem_placement_vs_cpu(index):
    a = np.arange(24.0).reshape(2, 3, 4)
    mask2 = np.array([[True, False, True], [False, True, True]])
    results = []
    for device in ("cpu", "cuda"):
        x = tk.tensor(a, device=device)
        results.append(eval(f"x[{index}]", {"x": x, "mask2": tk.tensor(mask2, device=device)}))
    _same(results[1], results[0])


def test_setitem_broadcasting_and_masks():
    a = np.arange(12.0).reshape(3, 4)
    x = tk.tensor(a, device="cuda")
    ref = a.copy()
    x[[0, 2]] = tk.tensor([1.0, 2.0, 3.0, 4.0], device="cuda")                # a row broadcast to two rows
    ref[[0, 2]] = [1.0, 2.0, 3.0, 4.0]
    x[:, [3, 0]] = tk.tensor([[7.0], [8.0], [9.0]], device="cuda")           # a column broadcast
    ref[:, [3, 0]] = [[7.0], [8.0], [9.0]]
    x[x > 8] = -1.0
    ref[ref > 8] = -1.0
    m = np.array([True, False, True])
    x[tk.tensor(m, device="cuda")] = tk.tensor([5.0, 6.0, 7.0, 8.0], device="cuda")
    ref[m] = [5.0, 6.0, 7.0, 8.0]
    x[[1, 1], [2, 2]] = tk.tensor(3.0, device="cuda")
    ref[[1, 1], [2, 2]] = 3.0
    _same(x, ref)
    _same(x.masked_select(tk.tensor([True, False, False, True], device="cuda")), ref[:, [0, 3]].reshape(-1))


@pytest.mark.parametrize("dtype", DTYPES)
def test_getitem_setitem_dtypes(dtype):
    a = _data((3, 4), dtype)
    c, x = _pair(a, dtype)
    _same(x[[2, 0], 1:], c[[2, 0], 1:])
    _same(x[x != 0], c[c != 0])
    v = tk.tensor(_data((2,), dtype, seed=1), dtype=dtype)
    x[[1, 2], [3, -4]] = v.cuda()
    c[[1, 2], [3, -4]] = v
    _same(x, c)


# ---- accumulate and reduce with duplicate indices -------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_index_put_accumulate_duplicates(dtype):
    c, x = _pair(_data((5, 3), dtype), dtype)
    idx = tk.tensor([0, 4, 0, 0, 2, 4, 0])
    v = tk.tensor(_data((7, 3), dtype, seed=2), dtype=dtype)
    _same(x.index_put((idx.cuda(),), v.cuda(), accumulate=True), c.index_put((idx,), v, accumulate=True))
    rows, cols = tk.tensor([1, 1, 3, 1]), tk.tensor([2, 2, 0, -1], dtype=tk.int32)
    w = tk.tensor(_data((4,), dtype, seed=3), dtype=dtype)
    _same(x.T.index_put_((cols.cuda(), rows.cuda()), w.cuda(), accumulate=True),   # into a transposed view
          c.T.index_put_((cols, rows), w, accumulate=True))
    _same(x, c)


def test_half_accumulates_in_float32():
    for dtype in (tk.float16, tk.bfloat16):
        h = tk.zeros(2, dtype=dtype, device="cuda")
        h.index_put_((tk.zeros(2100, dtype=tk.int64, device="cuda"),), tk.ones(2100, dtype=dtype, device="cuda"),
                     accumulate=True)
        # one rounding at the end (bfloat16 keeps 8 bits: 2100 rounds to 2096); per-step rounding stops at 2048 / 256
        assert h.cpu().tolist() == [2100.0 if dtype is tk.float16 else 2096.0, 0.0]


# one dtype per path: bool (or/and), int8 (int32 staging, wrapping mean), int64 (native atomics),
# bfloat16 (float32 staging), float32 / float64 (native add, compare-and-swap loops)
@pytest.mark.parametrize("dtype", [tk.bool, tk.int8, tk.int64, tk.bfloat16, tk.float32, tk.float64])
@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("reduce", ["sum", "prod", "mean", "amax", "amin"])
def test_scatter_reduce(reduce, include_self, dtype):
    a = _data((3, 4), dtype)
    src = _data((5, 4), dtype, seed=4)
    if dtype.is_floating_point and reduce in ("amax", "amin"):
        a[1, 1], src[2, 3] = np.nan, np.nan                       # NaN wins, as on the CPU
    idx = np.array([[0, 2, 2, 1], [0, 0, 2, 1], [2, 0, 2, 1], [0, 0, 0, 1], [2, 2, 2, 2]])
    c, x = _pair(a, dtype)
    s = tk.tensor(src, dtype=dtype)
    want = c.scatter_reduce(0, tk.tensor(idx), s, reduce, include_self=include_self)
    got = x.scatter_reduce(0, tk.tensor(idx, device="cuda"), s.cuda(), reduce, include_self=include_self)
    if reduce == "mean" and dtype.is_floating_point:     # one division, in float32 (the CPU's in float64): an ulp
        np.testing.assert_allclose(_np(got), _np(want), rtol={tk.float16: 1e-3, tk.bfloat16: 8e-3}.get(dtype, 1e-6))
    else:
        _same(got, want)


def test_scatter_reduce_into_strided_view():
    """The staging buffer of a reduction is laid out like the destination, here a strided view."""
    base_c, base_x = _pair(_data((4, 6), tk.float16), tk.float16)
    idx = tk.tensor([[0, 1, 2], [0, 0, 2], [1, 1, 1]])
    src = tk.tensor(_data((3, 3), tk.float16, seed=5), dtype=tk.float16)
    for reduce in ("sum", "mean", "amin"):
        want = base_c[1:, ::2].scatter_reduce_(0, idx, src, reduce, include_self=False)
        got = base_x[1:, ::2].scatter_reduce_(0, idx.cuda(), src.cuda(), reduce, include_self=False)
        np.testing.assert_allclose(_np(got), _np(want), rtol=1e-3)
    np.testing.assert_allclose(_np(base_x), _np(base_c), rtol=1e-3)          # nothing outside the view changed


def test_scatter_add_index_add_many_duplicates():
    c, x = _pair(np.zeros((4, 3), np.float32))
    idx = tk.tensor(np.random.default_rng(0).integers(0, 4, 600))
    src = tk.tensor(np.random.default_rng(1).integers(-3, 4, (600, 3)).astype(np.float32))
    _same(x.index_add(0, idx.cuda(), src.cuda(), alpha=2), c.index_add(0, idx, src, alpha=2))
    ii = idx.reshape(600, 1).expand(600, 3)
    _same(x.scatter_add(0, ii.cuda(), src.cuda()), c.scatter_add(0, ii, src))
    _same(tk.zeros(3, dtype=tk.bool, device="cuda").scatter_add(0, tk.tensor([0, 0], device="cuda"),
                                                               tk.tensor([True, False], device="cuda")),
          [True, False, False])


# ---- gathers -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [tk.bool, tk.int8, tk.int64, tk.bfloat16, tk.float32, tk.float64])
def test_gather_family(dtype):
    c, x = _pair(_data((3, 5, 4), dtype), dtype)
    c, x = c.transpose(0, 2), x.transpose(0, 2)                # non-contiguous (4, 5, 3)
    rng = np.random.default_rng(6)
    for dim in (0, 1, -1):
        idx = tk.tensor(rng.integers(0, c.shape[dim], (2, 3, 3)), dtype=tk.int32)
        _same(x.gather(dim, idx.cuda()), c.gather(dim, idx))
        _same(x.index_select(dim, idx[0, 0].cuda()), c.index_select(dim, idx[0, 0]))
    flat = tk.tensor([[0, -1], [7, 59]])
    _same(x.take(flat.cuda()), c.take(flat))
    _same(tk.take_along_dim(x, tk.tensor([[[2, 0]]], device="cuda"), 2), tk.take_along_dim(c, tk.tensor([[[2, 0]]]), 2))
    s = tk.tensor(_data((4, 2, 3), dtype, seed=7), dtype=dtype)
    _same(x.index_copy(1, tk.tensor([4, 0], device="cuda"), s.cuda()), c.index_copy(1, tk.tensor([4, 0]), s))
    _same(x.index_fill(1, tk.tensor([-1, 1], device="cuda"), 1), c.index_fill(1, tk.tensor([-1, 1]), 1))


def test_embedding_rows():
    """table[idx] moves whole rows: the rows' columns are the tile's, over several column
    blocks (wide rows) or many row blocks (narrow rows)."""
    rng = np.random.default_rng(8)
    wide = rng.standard_normal((6, K.MAX_COLS + 77)).astype(np.float32)
    idx = np.array([5, 0, 5, 2])
    _same(tk.tensor(wide, device="cuda")[tk.tensor(idx, device="cuda")], wide[idx])
    narrow = rng.standard_normal((7, 3)).astype(np.float32)
    idx = rng.integers(-7, 7, 2 * K.TILE // 4 + 5)
    _same(tk.tensor(narrow, device="cuda")[tk.tensor(idx, device="cuda")], narrow[idx])
    lay = K._Layout(tk.tensor(wide, device="cuda"), [tk.tensor(idx[:4], device="cuda")],
                    tk.empty(4, wide.shape[1], device="cuda"))
    assert not lay.col_indexed and lay.x_st[-1] == 1 and lay.n_cols == wide.shape[1]


def test_index_aliasing_its_own_tensor():
    c, x = _pair(np.array([3, 0, 2, 1, 4]))
    x[x[:3]] = x[1:4] * 10
    c[c[:3]] = c[1:4] * 10
    _same(x, c)


# ---- nonzero ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(), (0,), (7,), (3, 0, 2), (9, 20)])
@pytest.mark.parametrize("dtype", [tk.bool, tk.uint8, tk.float32, tk.bfloat16, tk.int64])
def test_nonzero(shape, dtype, monkeypatch):
    monkeypatch.setattr(K, "NONZERO_BLOCK", 64)            # many blocks ...
    monkeypatch.setattr(K, "SCAN_BLOCK", 4)                # ... scanned in several steps
    a = _data(shape, dtype, seed=9)
    c, x = _pair(a, dtype)
    _same(x.nonzero(), np.argwhere(c.numpy()))
    for got, want in zip(tk.nonzero(x, as_tuple=True), tk.nonzero(c, as_tuple=True)):
        _same(got, want)
    if len(shape) == 2:
        _same(x.T.nonzero(), np.argwhere(c.numpy().T))                            # non-contiguous
        _same(x[:1].expand(4, shape[1]).nonzero(), np.argwhere(np.broadcast_to(c.numpy()[:1], (4, shape[1]))))


def test_nonzero_all_and_none():
    for fill, n in ((True, 60), (False, 0)):
        x = tk.full((3, 20), fill, device="cuda")
        _same(x.nonzero(), np.argwhere(np.full((3, 20), fill)))
        assert x.nonzero().shape == (n, 2)
    _same(tk.tensor(5.0, device="cuda").nonzero(), np.zeros((1, 0), np.int64))
    _same(tk.tensor(0, device="cuda").nonzero(), np.zeros((0, 0), np.int64))


# ---- cat ----------------------------------------------------------------------------------------------------
def test_cat():
    a = np.arange(12.0).reshape(3, 4)
    x = tk.tensor(a, device="cuda")
    t = tk.tensor(np.ascontiguousarray(a.T), device="cuda").T                   # same values, transposed layout
    _same(tk.cat([x, t[1:], x[:, :0].reshape(0, 4)]), np.concatenate([a, a[1:]]))
    _same(tk.cat([x, t[:, ::2], tk.empty(0, device="cuda")], dim=-1), np.concatenate([a, a[:, ::2]], 1))
    i = tk.tensor([[1, 2], [3, 4], [5, 6]], dtype=tk.int8, device="cuda")
    r = tk.cat([i, x.to(tk.float16)], 1)                                        # promoted to float16
    assert r.dtype is tk.float16
    _same(r, np.concatenate([[[1, 2], [3, 4], [5, 6]], a], 1))
    b = tk.tensor([True, False], device="cuda")
    _same(tk.cat([b, b[:0], ~b]), [True, False, False, True])
    _same(tk.stack([x, t], 1), np.stack([a, a], 1))


# ---- bounds ------------------------------------------------------------------------------------------------
# gathers (x[idx], gather, index_select, take) and the op each error names; on cuda they raise later
_BAD_GATHERS = [
    (lambda x, i: x[i([0, 3])], "x[indices]"),
    (lambda x, i: x[i([-4])], "x[indices]"),
    (lambda x, i: x[:, i([1, -5])], "x[indices]"),
    (lambda x, i: x[i([0, 1]), i([1, 4])], "x[indices]"),
    (lambda x, i: x.gather(1, i([[0, 4]])), "gather"),
    (lambda x, i: x.gather(0, i([[-1]])), "gather"),          # gather and index_select refuse negative indices
    (lambda x, i: x.index_select(0, i([-1])), "index_select"),
    (lambda x, i: x.index_select(1, i([4])), "index_select"),
    (lambda x, i: x.take(i([12])), "take"),
    (lambda x, i: x.take(i([-13])), "take"),
    (lambda x, i: x[:0][:, i([4])], "x[indices]"),            # nothing gathered, the index still checked
]
# scatters raise at once: they check every index before writing, so the tensor stays unchanged
_BAD_SCATTERS = [
    lambda x, i: x.__setitem__(i([2, 3]), 1.0),
    lambda x, i: x.__setitem__((slice(None), i([-5])), 1.0),
    lambda x, i: x.index_put_((i([0, 0, 7]),), tk.ones(1, device=x.device), accumulate=True),
    lambda x, i: x.index_put_((i([1]), i([9])), tk.ones(1, device=x.device), accumulate=True),
    lambda x, i: x.scatter_(0, i([[3]]), 1.0),
    lambda x, i: x.scatter_add_(1, i([[0, 0, 5]]), tk.ones(1, 3, device=x.device)),
    lambda x, i: x.scatter_reduce_(0, i([[0, -1]]), tk.ones(1, 2, device=x.device), "amax", include_self=False),
    lambda x, i: x.index_add_(1, i([0, 4]), tk.ones(3, 2, device=x.device)),
    lambda x, i: x.index_copy_(0, i([3]), tk.ones(1, 4, device=x.device)),
    lambda x, i: x.index_fill_(1, i([-5]), 2.0),
]
_BOUNDS = r"index -?\d+ is out of bounds for dimension \d with size \d+"
_LATER = "(detected at this synchronisation; CUDA launches are asynchronous: the error comes from an earlier " \
         "indexing call)"


@pytest.fixture(autouse=True)
def _nothing_left_pending():
    """Every test consumes the gather errors it causes (one left behind would raise in the next test)."""
    yield
    try:
        tk.cuda.synchronize()
    except IndexError as e:
        pytest.fail(f"the test left a gather's index error pending: {e}")


def _bad_gather(i=4):
    """A cuda tensor 0..11 (3, 4) and a gather of it with index ``i`` on dim 1: no error yet."""
    x = tk.arange(12.0, device="cuda").reshape(3, 4)
    return x, x.index_select(1, tk.tensor([0, i], device="cuda"))


@pytest.mark.parametrize("call", _BAD_SCATTERS)
def test_scatter_out_of_range_raises_at_once_and_changes_nothing(call):
    messages = []
    for device in ("cpu", "cuda"):
        x = tk.arange(12.0, device=device).reshape(3, 4)
        with pytest.raises(IndexError, match=_BOUNDS) as e:
            call(x, lambda v: tk.tensor(v, device=device))
        messages.append(str(e.value))
        assert x.cpu().tolist() == np.arange(12.0).reshape(3, 4).tolist()
    assert messages[0] == messages[1]
    x = tk.arange(12.0, device="cuda").reshape(3, 4)          # the device is still usable, the flag reset
    _same(x[tk.tensor([2, -1], device="cuda")], np.arange(12.0).reshape(3, 4)[[2, -1]])


@pytest.mark.parametrize("call, op", _BAD_GATHERS)
def test_gather_out_of_range_raises_at_the_next_synchronisation(call, op):
    """The CPU raises at once; cuda at the next host read, with the CPU's words plus the op, the
    device and the indexed tensor's shape, once, and the device stays usable."""
    with pytest.raises(IndexError, match=_BOUNDS) as cpu:
        call(tk.arange(12.0).reshape(3, 4), tk.tensor)
    x = tk.arange(12.0, device="cuda").reshape(3, 4)
    y = call(x, lambda v: tk.tensor(v, device="cuda"))       # launched, not waited for: nothing raised yet
    assert tk.cuda._deferred
    with pytest.raises(IndexError) as e:
        y.cpu()
    message = str(e.value)
    assert message.startswith(f"index out of range: {cpu.value} (in {op} on cuda:0, indexing a tensor of shape ")
    assert message.endswith(_LATER)
    assert not tk.cuda._deferred
    y.cpu()                                                    # reported once
    assert x.cpu().tolist() == np.arange(12.0).reshape(3, 4).tolist()
    _same(x[tk.tensor([2, -1], device="cuda")], np.arange(12.0).reshape(3, 4)[[2, -1]])


def test_out_of_range_elements_are_zero():
    x, y = _bad_gather()
    with pytest.raises(IndexError, match="index 4 is out of bounds for dimension 1 with size 4"):
        tk.cuda.synchronize()
    _same(y, [[0, 0], [4, 0], [8, 0]])
    z = x[tk.tensor([0, 1, 2], device="cuda"), tk.tensor([1, 4, -5], device="cuda")]   # an index per element
    with pytest.raises(IndexError, match="index (4|-5) is out of bounds for dimension 1 with size 4"):
        z.cpu()
    _same(z, [1, 0, 0])


@pytest.mark.parametrize("sync", [
    lambda y: y.cpu(), lambda y: y.numpy(force=True), lambda y: y[0, 0].item(), lambda y: y.tolist(), repr,
    lambda y: tk.cuda.synchronize(), lambda y: tk.cuda.current_stream().synchronize(),
    lambda y: tk.zeros(1, device="cuda").item(),               # any host read on the stream, not just y's
])
def test_error_surfaces_at_each_synchronisation_once(sync):
    x, y = _bad_gather()
    with pytest.raises(IndexError, match=re.escape("index 4 is out of bounds for dimension 1 with size 4 (in "
                                                   "index_select on cuda:0, indexing a tensor of shape [3, 4]")):
        sync(y)
    sync(y)                                                    # a second synchronisation does not raise again
    tk.cuda.synchronize()
    _same(x.index_select(1, tk.tensor([3, 0], device="cuda")), [[3, 0], [7, 4], [11, 8]])   # later gathers work


def test_error_surfaces_at_save(tmp_path):
    _, y = _bad_gather()
    with pytest.raises(IndexError, match="index 4 is out of bounds"):
        tk.save({"y": y}, tmp_path / "y.pt")


def _host_reads(monkeypatch) -> list:
    """The sizes (elements) of every copy from the device to the host from now on."""
    reads = []
    to_host = tk.cuda._device_to_host

    def spy(src, offset, numel, device, non_blocking):
        reads.append(numel)
        return to_host(src, offset, numel, device, non_blocking)

    monkeypatch.setattr(tk.cuda, "_device_to_host", spy)
    return reads


def test_gathers_never_wait_for_the_device(monkeypatch):
    """A gather, good or bad, copies nothing to the host; the next host read reads one small
    report per kind of gather (op, shape, dims) since the last synchronisation."""
    reads = _host_reads(monkeypatch)
    x = tk.zeros(50, 3, device="cuda")
    idx = tk.tensor(np.arange(100) % 50, device="cuda")
    w = tk.ones(10, 4, device="cuda")
    for _ in range(3):
        x[idx]
        x.index_select(0, idx)
        x.gather(0, tk.zeros(2, 3, dtype=tk.int64, device="cuda"))
        x.take(idx)
        tk.nn.functional.embedding(tk.tensor([[1, 2], [3, 9]], device="cuda"), w)
        x[idx + 1]                                             # bad: still no read
    assert reads == []
    with pytest.raises(IndexError, match="index 50 is out of bounds for dimension 0 with size 50 .*in x\\[indices\\]"):
        x.sum().item()
    # the value, then a report per kind of gather: 2 int64 per dim indexed (x[idx] and x[idx + 1] share one)
    assert reads[0] == 1 and sorted(reads[1:]) == [2, 2, 2, 2, 4], reads


def test_scatter_checks_read_only_a_flag(monkeypatch):
    """index_put checks every index in a kernel before writing: the host reads a 4-byte flag per
    op, and the indices only on the error path, to name the first bad one."""
    reads = _host_reads(monkeypatch)
    x = tk.zeros(50, 3, device="cuda")
    idx = tk.tensor(np.arange(100) % 50, device="cuda")
    x.index_put_((idx,), tk.ones(100, 3, device="cuda"), accumulate=True)
    assert reads == [1]
    with pytest.raises(IndexError, match="index 50 is out of bounds for dimension 0 with size 50"):
        x.index_put_((idx + 1,), tk.ones(100, 3, device="cuda"), accumulate=True)
    assert max(reads) == 100


def test_embedding_bad_token_raises_at_the_next_copy():
    w = tk.tensor(np.arange(15.0).reshape(5, 3), device="cuda")
    out = tk.nn.functional.embedding(tk.tensor([[1, 7], [0, 4]], device="cuda"), w)
    loss = out.sum()
    with pytest.raises(IndexError, match=re.escape("index 7 is out of bounds for dimension 0 with size 5 (in "
                                                   "index_select on cuda:0, indexing a tensor of shape [5, 3]")):
        loss.cpu()
    emb = tk.nn.Embedding(5, 3).cuda()
    tok = tk.tensor([4, 0, 2], device="cuda")
    _same(emb(tok).detach(), emb.weight.detach().cpu().numpy()[[4, 0, 2]])


def test_a_pending_error_does_not_disturb_scatters():
    """index_put's own flag read is a synchronisation that raises only index_put's errors: a
    scatter after a bad gather writes (and bumps the version for autograd) as usual."""
    x, y = _bad_gather()
    v = x._version
    x.index_put_((tk.tensor([0], device="cuda"),), tk.full((4,), -1.0, device="cuda"))
    assert x._version == v + 1
    with pytest.raises(IndexError, match="index 4 is out of bounds"):
        x.cpu()
    _same(x, [[-1, -1, -1, -1], [4, 5, 6, 7], [8, 9, 10, 11]])


def test_several_bad_gathers_one_error():
    """Bad gathers of different kinds before one synchronisation are reported together, once;
    repeats of one kind share a report (the pending state does not grow with the gathers)."""
    x = tk.arange(12.0, device="cuda").reshape(3, 4)
    for _ in range(5):
        x.index_select(1, tk.tensor([4], device="cuda"))
        x.take(tk.tensor([12], device="cuda"))
    (check,) = tk.cuda._deferred.values()
    assert len(check.reports) == 2
    with pytest.raises(IndexError) as e:
        tk.cuda.synchronize()
    assert str(e.value).count("is out of bounds") == 2 and "index_select" in str(e.value) and "take" in str(e.value)
    tk.cuda.synchronize()


def test_valid_gathers_leave_nothing_pending_after_a_sync():
    x = tk.arange(12.0, device="cuda").reshape(3, 4)
    y = x[tk.tensor([2, 0], device="cuda")]
    assert tk.cuda._deferred                  # a check waits for the next synchronisation...
    _same(y, np.arange(12.0).reshape(3, 4)[[2, 0]])
    assert not tk.cuda._deferred              # ...which finds nothing wrong and forgets it
    tk.cuda.synchronize()
    x.index_select(1, tk.tensor([1], device="cuda"))
    tk.cuda.synchronize()
    assert not tk.cuda._deferred
