"""View ops (metadata only, shared memory) and the joining/rearranging ops of ops/shape.py,
checked against numpy values and PyTorch's shapes and strides."""
import numpy as np
import pytest

import tensorkit as tk

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is the reference here")


def arange(*shape, dtype=np.float32):
    """A tensorkit tensor and an independent numpy copy of the same values."""
    a = np.arange(int(np.prod(shape))).reshape(shape).astype(dtype)
    return tk.from_numpy(a.copy()), a


def strided(shape, strides, offset=0, n=None):
    """The same strided layout over 0..n-1 in tensorkit and in torch (when present)."""
    n = n or offset + 1 + sum((s - 1) * st for s, st in zip(shape, strides))
    base = tk.arange(n, dtype=tk.float32)
    t = tk.as_strided(base, shape, strides, offset)
    r = torch.as_strided(torch.arange(n, dtype=torch.float32), shape, strides, offset) if torch else None
    return t, r


def shares(a: tk.Tensor, b: tk.Tensor) -> bool:
    return a.untyped_storage() is b.untyped_storage()


def check_shared(base: tk.Tensor, view: tk.Tensor):
    """A write through the view is seen in the base and a write to the base in the view."""
    assert shares(base, view)
    before = base.numpy().copy()
    view.mul_(0).add_(-7)                      # a tensorkit in-place op on the view
    after = base.numpy()
    changed = after != before
    assert changed.sum() >= min(view.numel(), 1) or view.numel() == 0
    assert np.all(after[changed] == -7)
    base.fill_(3)                              # and on the base
    assert np.all(view.numpy() == 3)


# ---- view / reshape -------------------------------------------------------------------------------------
def test_view_values_shape_and_sharing():
    x, a = arange(2, 3, 4)
    for shape, args in [((6, 4), (6, 4)), ((24,), (-1,)), ((2, 12), ((2, -1),)), ((4, 3, 2), ([4, 3, 2],)),
                        ((1, 24, 1), (1, -1, 1))]:
        v = x.view(*args)
        assert tuple(v.shape) == shape
        np.testing.assert_array_equal(v.numpy(), a.reshape(shape))
        assert v.data_ptr() == x.data_ptr()
        assert v.stride() == tuple(np.array(a.reshape(shape).strides) // a.itemsize)
    check_shared(x, x.view(4, 6))


def test_view_zero_dim_and_empty():
    s = tk.tensor(5.0)
    assert tuple(s.view(1).shape) == (1,) and tuple(s.view(1, 1).shape) == (1, 1)
    assert tuple(s.view(1).view(()).shape) == ()
    e = tk.zeros(0, 3)
    assert tuple(e.view(3, 0).shape) == (3, 0)
    assert tuple(e.view(-1).shape) == (0,) and tuple(e.view(-1, 3).shape) == (0, 3)
    with pytest.raises(RuntimeError):
        e.view(-1, 0)              # as PyTorch: -1 next to a 0 could be any size


def test_view_incompatible_layout_says_reshape():
    x = tk.arange(6.0).view(2, 3).t()
    with pytest.raises(RuntimeError, match=r"reshape"):
        x.view(6)
    with pytest.raises(RuntimeError, match=r"invalid for input of size 6"):
        tk.arange(6.0).view(4, 2)
    with pytest.raises(RuntimeError, match="only one dimension can be inferred"):
        tk.arange(6.0).view(-1, -1)


LAYOUTS = [  # (shape, strides, offset, new shape)
    ((2, 3), (1, 2), 0, (6,)),
    ((2, 3), (1, 2), 0, (3, 2)),
    ((2, 3), (1, 2), 0, (2, 3, 1)),
    ((2, 3), (1, 2), 0, (1, 2, 1, 3)),
    ((4, 3), (6, 1), 0, (12,)),
    ((4, 3), (6, 1), 2, (2, 2, 3)),
    ((4, 3), (6, 1), 0, (4, 3, 1)),
    ((2, 3, 4), (24, 4, 1), 0, (2, 12)),
    ((2, 3, 4), (24, 4, 1), 0, (6, 4)),
    ((2, 3, 4), (12, 1, 3), 0, (6, 4)),
    ((2, 3, 4), (12, 1, 3), 0, (2, 12)),
    ((2, 1, 3), (3, 100, 1), 0, (6,)),
    ((2, 1, 3), (3, 100, 1), 0, (2, 3)),
    ((3, 4), (0, 1), 0, (12,)),
    ((3, 4), (0, 1), 0, (3, 2, 2)),
    ((3, 4), (1, 0), 0, (3, 2, 2)),
    ((6,), (2,), 1, (2, 3)),
    ((6,), (2,), 1, (6, 1)),
    ((1,), (5,), 0, ()),
    ((2, 2, 2), (8, 4, 1), 0, (4, 2)),
    ((2, 2, 2), (8, 4, 1), 0, (2, 4)),
]


@needs_torch
@pytest.mark.parametrize("shape, strides, offset, new", LAYOUTS)
def test_view_and_reshape_strides_match_torch(shape, strides, offset, new):
    t, r = strided(shape, strides, offset)
    try:
        rv = r.view(new)
    except RuntimeError:
        rv = None
    if rv is None:
        with pytest.raises(RuntimeError, match="reshape"):
            t.view(new)
    else:
        tv = t.view(new)
        assert tuple(tv.shape) == tuple(rv.shape) and tv.stride() == rv.stride()
        assert tv.storage_offset() == rv.storage_offset()
        np.testing.assert_array_equal(tv.numpy(), rv.numpy())
    tr, rr = t.reshape(new), r.reshape(new)
    np.testing.assert_array_equal(tr.numpy(), rr.numpy())
    assert shares(tr, t) == (rv is not None)             # a view exactly when PyTorch makes one
    if rv is not None:
        assert tr.stride() == rr.stride()


def test_reshape_view_when_possible_copy_when_not():
    x, a = arange(3, 4)
    v = x.reshape(2, 6)
    assert v.data_ptr() == x.data_ptr() and shares(v, x)
    check_shared(x, v)

    x, a = arange(3, 4)
    xt = x.t()                                          # (4, 3), strides (1, 4)
    c = xt.reshape(12)
    assert not shares(c, x) and c.is_contiguous()
    np.testing.assert_array_equal(c.numpy(), a.T.reshape(12))
    c.fill_(-1)                                         # the copy is independent both ways
    np.testing.assert_array_equal(x.numpy(), a)
    x.fill_(5)
    np.testing.assert_array_equal(c.numpy(), np.full(12, -1.0))


def test_view_as_reshape_as():
    x, a = arange(2, 6)
    other = tk.zeros(3, 4)
    np.testing.assert_array_equal(x.view_as(other).numpy(), a.reshape(3, 4))
    np.testing.assert_array_equal(x.t().reshape_as(other).numpy(), a.T.reshape(3, 4))


# ---- flatten / unflatten / squeeze / unsqueeze ---------------------------------------------------------------
@pytest.mark.parametrize("start, end", [(0, -1), (1, -1), (0, 1), (1, 2), (2, 2), (-2, -1), (0, 0)])
def test_flatten(start, end):
    x, a = arange(2, 3, 4, 5)
    f = x.flatten(start, end)
    s, e = start % 4, end % 4
    expected = a.reshape(a.shape[:s] + (-1,) + a.shape[e + 1:])
    assert tuple(f.shape) == expected.shape
    np.testing.assert_array_equal(f.numpy(), expected)
    assert shares(f, x)
    ft = tk.flatten(x.transpose(0, 3), start, end)           # non-contiguous: values still right
    at = a.transpose(3, 1, 2, 0)
    np.testing.assert_array_equal(ft.numpy(), at.reshape(at.shape[:s] + (-1,) + at.shape[e + 1:]))


def test_flatten_zero_dim_and_errors():
    f = tk.tensor(3.0).flatten()
    assert tuple(f.shape) == (1,) and f.item() == 3.0
    with pytest.raises(RuntimeError, match="start_dim"):
        tk.zeros(2, 3, 4).flatten(2, 1)
    with pytest.raises(IndexError, match=r"\[-3, 2\].*5"):
        tk.zeros(2, 3, 4).flatten(0, 5)


def test_unflatten():
    x, a = arange(2, 12)
    u = x.unflatten(1, (3, 4))
    np.testing.assert_array_equal(u.numpy(), a.reshape(2, 3, 4))
    assert shares(u, x)
    np.testing.assert_array_equal(x.unflatten(-1, (2, -1)).numpy(), a.reshape(2, 2, 6))
    np.testing.assert_array_equal(tk.unflatten(x, 0, (1, 2)).numpy(), a.reshape(1, 2, 12))
    with pytest.raises(RuntimeError):
        x.unflatten(1, (5, 3))


@pytest.mark.parametrize("dim, shape", [(None, (3, 4)), (0, (3, 1, 4)), (1, (1, 3, 1, 4)), (2, (1, 3, 4)),
                                        (-2, (1, 3, 4)), ((0, 2), (3, 4)), ((0, 1), (3, 1, 4)), ([2, -4], (3, 4))])
def test_squeeze(dim, shape):
    x, a = arange(1, 3, 1, 4)
    s = x.squeeze() if dim is None else x.squeeze(dim)
    assert tuple(s.shape) == shape
    np.testing.assert_array_equal(s.numpy(), a.reshape(shape))
    assert shares(s, x)
    if torch is not None:
        r = torch.zeros(1, 3, 1, 4)
        r = r.squeeze() if dim is None else r.squeeze(tuple(dim) if isinstance(dim, list) else dim)
        assert tuple(r.shape) == shape


def test_squeeze_zero_dim_and_errors():
    assert tuple(tk.tensor(1.0).squeeze().shape) == ()
    assert tuple(tk.tensor(1.0).squeeze(0).shape) == ()
    with pytest.raises(IndexError, match=r"\[-2, 1\].*2"):
        tk.zeros(1, 2).squeeze(2)
    with pytest.raises(IndexError, match=r"\[-2, 1\].*-3"):
        tk.zeros(1, 2).squeeze((0, -3))


@pytest.mark.parametrize("dim", [0, 1, 2, -1, -2, -3])
def test_unsqueeze_values_and_strides(dim):
    x, a = arange(3, 4)
    u = x.unsqueeze(dim)
    np.testing.assert_array_equal(u.numpy(), np.expand_dims(a, dim))
    assert shares(u, x)
    if torch is not None:
        for tt, rr in [(x, torch.zeros(3, 4)), (x.t(), torch.zeros(3, 4).t()),
                       (strided((3, 4), (10, 2))[0], torch.empty_strided((3, 4), (10, 2)))]:
            assert tt.unsqueeze(dim).stride() == rr.unsqueeze(dim).stride()


def test_unsqueeze_out_of_range_names_dim_and_range():
    with pytest.raises(IndexError, match=r"\[-3, 2\], but got 3"):
        tk.zeros(2, 3).unsqueeze(3)
    with pytest.raises(IndexError, match=r"\[-3, 2\], but got -4"):
        tk.zeros(2, 3).unsqueeze(-4)
    assert tuple(tk.tensor(1.0).unsqueeze(0).shape) == (1,)
    assert tuple(tk.tensor(1.0).unsqueeze(-1).shape) == (1,)


# ---- transpose / t / T / mT / permute / movedim ------------------------------------------------------------
def test_transpose_family_values_and_strides():
    x, a = arange(2, 3, 4)
    np.testing.assert_array_equal(x.transpose(0, 2).numpy(), a.swapaxes(0, 2))
    np.testing.assert_array_equal(x.transpose(-1, 1).numpy(), a.swapaxes(-1, 1))
    np.testing.assert_array_equal(tk.swapaxes(x, 0, 1).numpy(), a.swapaxes(0, 1))
    np.testing.assert_array_equal(x.permute(2, 0, 1).numpy(), a.transpose(2, 0, 1))
    np.testing.assert_array_equal(x.permute((1, 2, 0)).numpy(), a.transpose(1, 2, 0))
    np.testing.assert_array_equal(x.permute(-1, -3, -2).numpy(), a.transpose(2, 0, 1))
    np.testing.assert_array_equal(x.mT.numpy(), a.swapaxes(-1, -2))
    np.testing.assert_array_equal(x.T.numpy(), a.transpose(2, 1, 0))
    assert x.transpose(0, 2).stride() == (1, 4, 12)
    assert x.permute(2, 0, 1).stride() == (1, 12, 4)
    assert x.mT.stride() == (12, 1, 4)
    m, b = arange(3, 5)
    assert m.t().stride() == (1, 5) and tuple(m.t().shape) == (5, 3)
    np.testing.assert_array_equal(m.t().numpy(), b.T)
    np.testing.assert_array_equal(m.T.numpy(), b.T)
    v, c = arange(4)
    assert tuple(v.t().shape) == (4,) and tuple(v.T.shape) == (4,)
    assert tuple(tk.tensor(2.0).t().shape) == ()
    check_shared(x, x.permute(1, 2, 0))
    check_shared(m, m.t())


@needs_torch
def test_transpose_strides_match_torch_on_strided_input():
    t, r = strided((3, 4, 5), (40, 2, 8), 3)
    for f in [lambda z: z.t() if z.ndim == 2 else z.transpose(0, 1), lambda z: z.permute(2, 0, 1),
              lambda z: z.mT, lambda z: z.transpose(-1, 0), lambda z: z.movedim(0, -1)]:
        assert f(t).stride() == f(r).stride() and tuple(f(t).shape) == tuple(f(r).shape)
        assert f(t).storage_offset() == f(r).storage_offset()
        np.testing.assert_array_equal(f(t).numpy(), f(r).numpy())


def test_transpose_errors():
    with pytest.raises(RuntimeError, match="t\\(\\) expects a tensor with <= 2 dimensions"):
        tk.zeros(2, 3, 4).t()
    with pytest.raises(IndexError, match=r"\[-2, 1\], but got 5"):
        tk.zeros(2, 3).transpose(0, 5)
    with pytest.raises(RuntimeError, match="number of dims"):
        tk.zeros(2, 3).permute(0, 1, 2)
    with pytest.raises(RuntimeError, match="repeated dim"):
        tk.zeros(2, 3, 4).permute(0, 1, 1)
    with pytest.raises(RuntimeError, match="repeated dim"):
        tk.zeros(2, 3, 4).permute(0, 1, -2)
    with pytest.raises(IndexError, match=r"\[-3, 2\], but got 3"):
        tk.zeros(2, 3, 4).permute(0, 1, 3)


@pytest.mark.parametrize("src, dst", [(0, -1), (-1, 0), (1, 1), ((0, 1), (2, 3)), ((3, 0), (0, 3)),
                                      ([0, 2], [3, 1]), ((0, 1, 2), (2, 1, 0))])
def test_movedim(src, dst):
    x, a = arange(2, 3, 4, 5)
    m = x.movedim(src, dst)
    np.testing.assert_array_equal(m.numpy(), np.moveaxis(a, src, dst))
    np.testing.assert_array_equal(tk.moveaxis(x, src, dst).numpy(), np.moveaxis(a, src, dst))
    assert shares(m, x)


def test_movedim_errors():
    with pytest.raises(RuntimeError):
        tk.zeros(2, 3).movedim((0, 1), (1,))
    with pytest.raises(IndexError, match=r"\[-2, 1\], but got 2"):
        tk.zeros(2, 3).movedim(2, 0)


# ---- expand ---------------------------------------------------------------------------------------------------
def test_expand():
    x, a = arange(3, 1)
    e = x.expand(3, 4)
    assert tuple(e.shape) == (3, 4) and e.stride() == (1, 0)
    np.testing.assert_array_equal(e.numpy(), np.broadcast_to(a, (3, 4)))
    e2 = x.expand(2, -1, 5)                               # -1 keeps a dim, new dims go in front
    assert tuple(e2.shape) == (2, 3, 5) and e2.stride() == (0, 1, 0)
    np.testing.assert_array_equal(e2.numpy(), np.broadcast_to(a, (2, 3, 5)))
    e3 = x.expand((3, 1))
    assert e3.stride() == (1, 1) and tuple(e3.shape) == (3, 1)
    np.testing.assert_array_equal(x.expand_as(tk.zeros(2, 3, 6)).numpy(), np.broadcast_to(a, (2, 3, 6)))
    np.testing.assert_array_equal(tk.broadcast_to(x, (3, 2)).numpy(), np.broadcast_to(a, (3, 2)))
    s = tk.tensor(7.0).expand(2, 2)
    assert s.stride() == (0, 0)
    np.testing.assert_array_equal(s.numpy(), np.full((2, 2), 7.0))
    assert shares(e, x) and not e.is_contiguous()
    x.fill_(9)                                            # the base's change shows in every expanded element
    assert np.all(e2.numpy() == 9)
    c = e.contiguous()
    assert c.stride() == (4, 1) and not shares(c, x)
    np.testing.assert_array_equal(c.numpy(), np.full((3, 4), 9.0))


@needs_torch
def test_expand_strides_match_torch():
    t, r = strided((3, 1, 2), (1, 7, 3))
    for size in [(3, 4, 2), (5, 3, -1, 2), (-1, 6, -1)]:
        assert t.expand(*size).stride() == r.expand(*size).stride()
        np.testing.assert_array_equal(t.expand(*size).numpy(), r.expand(*size).numpy())


def test_expand_errors():
    with pytest.raises(RuntimeError, match=r"expanded size of the tensor \(4\) must match the existing size \(3\)"):
        tk.zeros(3, 1).expand(4, 2)
    with pytest.raises(RuntimeError, match="must be greater or equal"):
        tk.zeros(2, 3).expand(3)
    with pytest.raises(RuntimeError, match="-1"):
        tk.zeros(3).expand(-1, 3)


# ---- narrow / select / unbind ----------------------------------------------------------------------------------
def test_narrow():
    x, a = arange(4, 6)
    n = x.narrow(1, 2, 3)
    np.testing.assert_array_equal(n.numpy(), a[:, 2:5])
    assert n.data_ptr() == x.data_ptr() + 2 * x.element_size() and n.stride() == (6, 1)
    np.testing.assert_array_equal(x.narrow(0, -2, 2).numpy(), a[-2:])
    np.testing.assert_array_equal(x.narrow(-1, 0, 0).numpy(), a[:, 0:0])
    np.testing.assert_array_equal(tk.narrow(x, 0, 1, 3).numpy(), a[1:4])
    np.testing.assert_array_equal(x.narrow(0, tk.tensor(1), 2).numpy(), a[1:3])
    check_shared(x, x.narrow(1, 1, 2))
    with pytest.raises(IndexError, match="exceeds dimension size"):
        x.narrow(1, 4, 3)
    with pytest.raises(IndexError, match=r"\[-2, 1\], but got 2"):
        x.narrow(2, 0, 1)


def test_select_and_unbind():
    x, a = arange(3, 4, 5)
    for dim in range(-3, 3):
        for i in (0, 1, -1):
            s = x.select(dim, i)
            np.testing.assert_array_equal(s.numpy(), np.take(a, i, axis=dim))
            assert shares(s, x)
        parts = x.unbind(dim)
        assert isinstance(parts, tuple) and len(parts) == a.shape[dim]
        for i, p in enumerate(parts):
            np.testing.assert_array_equal(p.numpy(), np.take(a, i, axis=dim))
            assert shares(p, x)
    assert x.select(1, 2).data_ptr() == x.data_ptr() + 2 * 5 * 4
    check_shared(x, x.select(2, 3))
    with pytest.raises(IndexError, match="index 4 is out of bounds for dimension 1 with size 4"):
        x.select(1, 4)
    with pytest.raises(IndexError, match="out of bounds"):
        x.select(1, -5)
    with pytest.raises(IndexError, match=r"\[-3, 2\], but got 3"):
        x.select(3, 0)
    with pytest.raises(IndexError):
        tk.tensor(1.0).select(0, 0)
    p = tk.unbind(tk.zeros(0, 2), 0)
    assert p == ()


# ---- split / chunk / tensor_split ------------------------------------------------------------------------------
@pytest.mark.parametrize("n, size, dim", [(7, 2, 0), (6, 3, 0), (5, 5, 0), (4, 10, 0), (9, 4, 1), (0, 3, 0)])
def test_split_int(n, size, dim):
    shape = (n, 2) if dim == 0 else (2, n)
    x, a = arange(*shape)
    parts = x.split(size, dim)
    expected = [np.take(a, range(i, min(i + size, n)), axis=dim) for i in range(0, n, size)] or [a]
    assert len(parts) == len(expected)
    for p, e in zip(parts, expected):
        np.testing.assert_array_equal(p.numpy(), e)
        assert shares(p, x)
    if torch is not None:
        assert [tuple(p.shape) for p in parts] == [tuple(p.shape) for p in torch.zeros(shape).split(size, dim)]


def test_split_sections():
    x, a = arange(10, 3)
    parts = tk.split(x, [2, 5, 3])
    for p, e in zip(parts, np.split(a, [2, 7])):
        np.testing.assert_array_equal(p.numpy(), e)
    parts = x.split([1, 2], dim=1)
    np.testing.assert_array_equal(parts[1].numpy(), a[:, 1:])
    parts = x.split((0, 10))
    assert tuple(parts[0].shape) == (0, 3)
    with pytest.raises(RuntimeError, match="sum"):
        x.split([3, 3])
    with pytest.raises(RuntimeError):
        x.split(0)


@pytest.mark.parametrize("n, chunks", [(6, 4), (5, 3), (6, 3), (1, 5), (10, 3), (7, 7), (0, 2), (13, 4)])
def test_chunk_matches_torch_sizes(n, chunks):
    x, a = arange(n)
    parts = x.chunk(chunks)
    step = -(-n // chunks) if n else 1
    expected = [a[i:i + step] for i in range(0, n, step)] or [a] * chunks
    assert [p.numpy().tolist() for p in parts] == [e.tolist() for e in expected]
    if torch is not None:
        assert [p.numel() for p in parts] == [p.numel() for p in torch.arange(n).chunk(chunks)]
    with pytest.raises(RuntimeError, match="greater than 0"):
        x.chunk(0)


@pytest.mark.parametrize("arg", [3, 4, 1, 7, [2, 5], [0, 9], [3, 1], [-2], [-4, -1], [2, 2, 2], [12, 20], (4,)])
def test_tensor_split(arg):
    x, a = arange(9, 2)
    parts = x.tensor_split(arg)
    expected = np.array_split(a, arg)
    assert len(parts) == len(expected)
    for p, e in zip(parts, expected):
        assert tuple(p.shape) == e.shape
        np.testing.assert_array_equal(p.numpy(), e)
        assert shares(p, x)
    if torch is not None:
        r = torch.arange(18).view(9, 2).tensor_split(arg)
        assert [p.numpy().tolist() for p in parts] == [p.float().numpy().tolist() for p in r]


def test_tensor_split_dim():
    x, a = arange(2, 7)
    for p, e in zip(tk.tensor_split(x, 3, dim=1), np.array_split(a, 3, axis=1)):
        np.testing.assert_array_equal(p.numpy(), e)
    for p, e in zip(x.tensor_split([1, 4], dim=-1), np.array_split(a, [1, 4], axis=-1)):
        np.testing.assert_array_equal(p.numpy(), e)


# ---- diagonal / unfold / as_strided ----------------------------------------------------------------------------
@pytest.mark.parametrize("offset, d1, d2", [(0, 0, 1), (1, 0, 1), (-1, 0, 1), (2, 1, 2), (-2, 2, 0), (5, 0, 1),
                                            (-7, 0, 1), (0, -1, -2)])
def test_diagonal(offset, d1, d2):
    x, a = arange(3, 4, 5)
    d = x.diagonal(offset, d1, d2)
    np.testing.assert_array_equal(d.numpy(), np.diagonal(a, offset, d1, d2))
    assert shares(d, x)
    if torch is not None:
        t, r = strided((3, 4, 5), (30, 6, 1), 2)
        assert t.diagonal(offset, d1, d2).stride() == r.diagonal(offset, d1, d2).stride()
        np.testing.assert_array_equal(t.diagonal(offset, d1, d2).numpy(), r.diagonal(offset, d1, d2).numpy())


def test_diagonal_writes_and_errors():
    x = tk.zeros(3, 3)
    x.diagonal().fill_(1)
    np.testing.assert_array_equal(x.numpy(), np.eye(3))
    x.diagonal(1).add_(2)
    np.testing.assert_array_equal(x.numpy(), np.eye(3) + 2 * np.eye(3, k=1))
    with pytest.raises(RuntimeError, match="cannot be identical"):
        x.diagonal(0, 1, 1)
    with pytest.raises(RuntimeError, match="cannot be identical"):
        x.diagonal(0, 1, -1)
    with pytest.raises(IndexError, match=r"\[-2, 1\], but got 2"):
        x.diagonal(0, 0, 2)


@pytest.mark.parametrize("dim, size, step", [(0, 2, 1), (1, 3, 2), (-1, 1, 1), (1, 6, 1), (0, 4, 3), (1, 2, 5)])
def test_unfold(dim, size, step):
    x, a = arange(4, 6)
    u = x.unfold(dim, size, step)
    w = np.lib.stride_tricks.sliding_window_view(a, size, axis=dim)
    w = np.take(w, range(0, w.shape[dim], step), axis=dim)
    np.testing.assert_array_equal(u.numpy(), w)
    assert shares(u, x)
    if torch is not None:
        t, r = strided((4, 6), (1, 5), 1)
        assert t.unfold(dim, size, step).stride() == r.unfold(dim, size, step).stride()
        np.testing.assert_array_equal(t.unfold(dim, size, step).numpy(), r.unfold(dim, size, step).numpy())


def test_unfold_errors():
    with pytest.raises(RuntimeError, match="size is 7"):
        tk.zeros(6).unfold(0, 7, 1)
    with pytest.raises(RuntimeError, match="step"):
        tk.zeros(6).unfold(0, 2, 0)


def test_as_strided():
    base, a = arange(12)
    s = base.as_strided((3, 2), (3, 1))
    np.testing.assert_array_equal(s.numpy(), np.lib.stride_tricks.as_strided(a, (3, 2), (12, 4)))
    s = base.as_strided((2, 2), (1, 4), 5)
    np.testing.assert_array_equal(s.numpy(), [[5, 9], [6, 10]])
    assert s.storage_offset() == 5 and s.data_ptr() == base.data_ptr() + 20
    w = base.as_strided((4, 3), (2, 1))                    # overlapping windows
    np.testing.assert_array_equal(w.numpy(), [[0, 1, 2], [2, 3, 4], [4, 5, 6], [6, 7, 8]])
    v = base[2:]                                            # storage_offset is absolute, as in PyTorch
    np.testing.assert_array_equal(v.as_strided((2,), (1,)).numpy(), [2, 3])
    np.testing.assert_array_equal(v.as_strided((2,), (1,), 0).numpy(), [0, 1])
    check_shared(base, base.as_strided((2, 3), (1, 2), 1))
    with pytest.raises(RuntimeError, match="out of bounds"):
        base.as_strided((4, 4), (4, 1))
    with pytest.raises(RuntimeError):
        base.as_strided((2, 2), (1,))


# ---- contiguous / clone --------------------------------------------------------------------------------------
def test_is_contiguous_rules():
    x = tk.zeros(2, 3, 4)
    assert x.is_contiguous()
    assert not x.transpose(0, 1).is_contiguous()
    assert x.narrow(0, 1, 1).is_contiguous()
    assert not x.narrow(2, 1, 2).is_contiguous()
    assert x.unsqueeze(1).is_contiguous()
    assert tk.zeros(3, 1).expand(3, 1).is_contiguous()
    assert not tk.zeros(3, 1).expand(3, 2).is_contiguous()
    assert tk.zeros(0, 3).t().is_contiguous()              # empty tensors are contiguous
    assert tk.tensor(1.0).is_contiguous()
    t, _ = strided((2, 1, 3), (3, 100, 1))                 # a size-1 dim's stride does not matter
    assert t.is_contiguous()
    if torch is not None:
        for shape, strides in [((2, 3), (1, 2)), ((2, 1, 3), (3, 7, 1)), ((1, 4), (9, 1)), ((4, 1), (1, 1)),
                               ((2, 2), (2, 1)), ((2, 2), (4, 1)), ((3,), (2,))]:
            tt, rr = strided(shape, strides)
            assert tt.is_contiguous() == rr.is_contiguous(), (shape, strides)


def test_contiguous():
    x, a = arange(3, 4)
    assert x.contiguous() is x                             # already contiguous: itself, as PyTorch
    xt = x.t()
    c = xt.contiguous()
    assert c.is_contiguous() and c.stride() == (3, 1) and not shares(c, x)
    np.testing.assert_array_equal(c.numpy(), a.T)


def test_clone():
    x, a = arange(3, 4)
    for src, ref in [(x, a), (x.t(), a.T), (x.narrow(1, 1, 2), a[:, 1:3]), (tk.tensor(2.0), np.array(2.0))]:
        c = src.clone()
        assert tuple(c.shape) == ref.shape and c.dtype is src.dtype
        np.testing.assert_array_equal(c.numpy(), ref)
        assert not shares(c, src)
    c = tk.clone(x)
    c.fill_(0)
    np.testing.assert_array_equal(x.numpy(), a)


# ---- cat / stack / hstack / vstack ---------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [0, 1, 2, -1, -3])
def test_cat_values(dim):
    parts = [np.arange(24, dtype=np.float32).reshape(2, 3, 4) + 100 * i for i in range(3)]
    ts = [tk.from_numpy(p.copy()) for p in parts]
    r = tk.cat(ts, dim)
    np.testing.assert_array_equal(r.numpy(), np.concatenate(parts, dim))
    ts2 = [t.transpose(0, 2).contiguous().transpose(0, 2) for t in ts]  # non-contiguous inputs
    np.testing.assert_array_equal(tk.cat(ts2, dim).numpy(), np.concatenate(parts, dim))
    np.testing.assert_array_equal(tk.concat(tuple(ts), dim=dim).numpy(), np.concatenate(parts, dim))


def test_cat_does_not_share_and_skips_empty_1d():
    a, b = tk.arange(3.0), tk.arange(2.0)
    r = tk.cat([a, b])
    assert not shares(r, a)
    np.testing.assert_array_equal(r.numpy(), [0, 1, 2, 0, 1])
    x = tk.ones(2, 3)
    np.testing.assert_array_equal(tk.cat([tk.zeros(0), x, tk.zeros(0)]).numpy(), np.ones((2, 3)))
    np.testing.assert_array_equal(tk.cat([x, tk.zeros(0, 3)]).numpy(), np.ones((2, 3)))
    assert tuple(tk.cat([tk.zeros(0), tk.zeros(0)]).shape) == (0,)


@pytest.mark.parametrize("d1, d2", [(tk.int32, tk.float32), (tk.int8, tk.uint8), (tk.bool, tk.int16),
                                    (tk.float16, tk.bfloat16), (tk.int64, tk.float16), (tk.bool, tk.bool),
                                    (tk.float32, tk.float64), (tk.uint8, tk.int64)])
def test_cat_promotes_dtypes(d1, d2):
    a = tk.tensor([[1, 0]], dtype=d1)
    b = tk.tensor([[0, 1], [1, 1]], dtype=d2)
    r = tk.cat([a, b])
    expected = tk.promote_types(d1, d2)
    assert r.dtype is expected
    if torch is not None:
        rr = torch.cat([torch.tensor([[1, 0]], dtype=getattr(torch, d1.name)),
                        torch.tensor([[0, 1], [1, 1]], dtype=getattr(torch, d2.name))])
        assert str(rr.dtype) == "torch." + r.dtype.name
    np.testing.assert_array_equal(r.numpy().astype(np.float64), [[1, 0], [0, 1], [1, 1]])


def test_cat_zero_dim_promotion_like_dimensioned():
    # cat treats every input alike (no zero-dim/scalar priority): int64 with float16 gives float16
    r = tk.cat([tk.tensor([1000]), tk.tensor([1.5], dtype=tk.float16)])
    assert r.dtype is tk.float16


def test_cat_errors():
    with pytest.raises(RuntimeError, match="non-empty"):
        tk.cat([])
    with pytest.raises(RuntimeError, match="zero-dimensional"):
        tk.cat([tk.tensor(1.0), tk.tensor(2.0)])
    with pytest.raises(RuntimeError, match=r"must match except in dimension 0: expected size 3 but got size 4 "
                                           r"for tensor number 1"):
        tk.cat([tk.zeros(2, 3), tk.zeros(2, 4)])
    with pytest.raises(RuntimeError, match="same number of dimensions"):
        tk.cat([tk.zeros(2, 3), tk.zeros(3)])
    with pytest.raises(IndexError, match=r"\[-2, 1\], but got 2"):
        tk.cat([tk.zeros(2, 3), tk.zeros(2, 3)], 2)
    with pytest.raises(TypeError, match="item 1"):
        tk.cat([tk.zeros(2), [1, 2]])


def test_cat_out():
    out = tk.empty(5)
    r = tk.cat([tk.ones(2), tk.zeros(3)], out=out)
    assert r is out
    np.testing.assert_array_equal(out.numpy(), [1, 1, 0, 0, 0])


@pytest.mark.parametrize("dim", [0, 1, 2, -1, -3])
def test_stack(dim):
    parts = [np.arange(6, dtype=np.float32).reshape(2, 3) * (i + 1) for i in range(4)]
    r = tk.stack([tk.from_numpy(p.copy()) for p in parts], dim)
    np.testing.assert_array_equal(r.numpy(), np.stack(parts, dim))


def test_stack_errors_and_scalars():
    np.testing.assert_array_equal(tk.stack([tk.tensor(1), tk.tensor(2)]).numpy(), [1, 2])
    with pytest.raises(RuntimeError, match=r"equal size, but got \[2\] at entry 0 and \[3\] at entry 1"):
        tk.stack([tk.zeros(2), tk.zeros(3)])
    with pytest.raises(RuntimeError, match="non-empty"):
        tk.stack([])
    with pytest.raises(IndexError, match=r"\[-3, 2\], but got 3"):
        tk.stack([tk.zeros(2, 2)], 3)
    assert tk.stack([tk.zeros(2, dtype=tk.int32), tk.zeros(2)]).dtype is tk.float32


@pytest.mark.parametrize("shapes", [[(3,), (2,)], [(2, 3), (2, 1)], [(2, 2, 1), (2, 3, 1)], [(), ()], [(1,), ()]])
def test_hstack(shapes):
    arrays = [np.asarray(np.arange(int(np.prod(s)), dtype=np.float32).reshape(s) + 10 * i) for i, s in enumerate(shapes)]
    r = tk.hstack([tk.from_numpy(a.copy()) for a in arrays])
    np.testing.assert_array_equal(r.numpy(), np.hstack(arrays))


@pytest.mark.parametrize("shapes", [[(3,), (3,)], [(2, 3), (1, 3)], [(3,), (2, 3)], [(), ()], [(2, 2, 2), (1, 2, 2)]])
def test_vstack(shapes):
    arrays = [np.asarray(np.arange(int(np.prod(s)), dtype=np.float32).reshape(s) + 10 * i) for i, s in enumerate(shapes)]
    r = tk.vstack([tk.from_numpy(a.copy()) for a in arrays])
    np.testing.assert_array_equal(r.numpy(), np.vstack(arrays))


# ---- roll / flip / tril / triu ---------------------------------------------------------------------------------
@pytest.mark.parametrize("shifts, dims", [(2, None), (-3, None), (1, 0), (-1, 1), ((1, 2), (0, 1)), (7, 1),
                                          ((1, -1), (-1, 0)), (0, 0), (13, None), ((2, 2), (1, 1))])
def test_roll(shifts, dims):
    x, a = arange(3, 4)
    r = x.roll(shifts, dims) if hasattr(x, "roll") else tk.roll(x, shifts, dims)
    np.testing.assert_array_equal(r.numpy(), np.roll(a, shifts, dims))
    np.testing.assert_array_equal(tk.roll(x.t(), shifts, dims).numpy(), np.roll(a.T, shifts, dims))
    assert not shares(r, x)
    with pytest.raises(RuntimeError):
        tk.roll(x, (1, 2), 0)


@pytest.mark.parametrize("dims", [0, 1, -1, (0, 1), (1, 0, 2), [2]])
def test_flip(dims):
    x, a = arange(2, 3, 4)
    f = tk.flip(x, dims)
    np.testing.assert_array_equal(f.numpy(), np.flip(a, dims))
    assert not shares(f, x)
    np.testing.assert_array_equal(tk.flip(x.transpose(0, 2), dims).numpy(), np.flip(a.transpose(2, 1, 0), dims))


@pytest.mark.parametrize("k", [0, 1, -1, 2, -5, 5])
@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.bool_, np.float16, np.int8])
def test_tril_triu(k, dtype):
    x, a = arange(2, 3, 4, dtype=dtype)
    for fn, ref in [(tk.tril, np.tril), (tk.triu, np.triu)]:
        r = fn(x, k)
        assert r.dtype is x.dtype and not shares(r, x)
        np.testing.assert_array_equal(r.numpy(), ref(a, k))
        np.testing.assert_array_equal(fn(x.mT, k).numpy(), ref(a.swapaxes(-1, -2), k))
    np.testing.assert_array_equal(x.tril(k).numpy() if hasattr(x, "tril") else tk.tril(x, k).numpy(), np.tril(a, k))


def test_tril_triu_errors():
    with pytest.raises(RuntimeError, match="at least 2 dimensions"):
        tk.tril(tk.zeros(3))
    with pytest.raises(RuntimeError, match="at least 2 dimensions"):
        tk.triu(tk.tensor(1.0))


# ---- edge cases checked against PyTorch's behaviour ------------------------------------------------------------
def test_view_edge_cases():
    u = tk.tensor(5.0).unfold(0, 1, 1)                    # PyTorch: a 0-d tensor is one window
    assert tuple(u.shape) == (1,) and u.tolist() == [5.0]
    with pytest.raises(RuntimeError, match=r"repeated dim in `source`"):
        tk.zeros(2, 3, 4).movedim((0, 0), (1, 2))
    with pytest.raises(RuntimeError, match=r"repeated dim in `destination`"):
        tk.zeros(2, 3, 4).movedim((0, 1), (2, -1))
    with pytest.raises(IndexError, match=r"start out of range \(expected to be in range of \[-5, 5\], but got -6\)"):
        tk.arange(5).narrow(0, -6, 1)
    with pytest.raises(RuntimeError, match="non-negative"):
        tk.arange(5).split([-1, 6])
    with pytest.raises(IndexError, match="0-dim"):
        tk.tensor(1.0).unbind()
    with pytest.raises(TypeError):
        tk.zeros(4).view(2.0, 2)
    with pytest.raises(TypeError):
        tk.zeros(4).reshape((2, 2.5))
    with pytest.raises(TypeError):
        tk.zeros(4).select(0, 1.5)
    assert tuple(tk.zeros(6).view(tk.tensor(2), 3).shape) == (2, 3)   # int tensors are fine as sizes
    with pytest.raises(RuntimeError, match="non-empty"):
        tk.hstack([])
    with pytest.raises(RuntimeError, match="non-empty"):
        tk.vstack([])
