"""Indexing: ``x[...]``, ``x[...] = v`` and the gather/scatter family.

Three primitives, each with one kernel per device:

* ``index(input, indices)``: ``input[i0, :, i2, ...]`` for integer index tensors that
  broadcast together (masks are first turned into their ``nonzero()`` coordinates);
* ``index_put_(input, indices, values, accumulate)``: the same positions written in place,
  or combined with what is there (privately also by ``prod``/``mean``/``amax``/``amin``,
  which is all ``scatter_reduce`` needs);
* ``nonzero(input)``: the coordinates of the nonzero elements, ``(n, ndim)`` int64.

Everything else is a composite over them and over views: ``x[idx]`` is a basic-indexing
view (ints, slices, None: no copy) followed by ``index`` when tensors, lists or bools remain;
``gather``/``scatter`` index every dim, ``arange`` broadcast along the others; ``masked_*``,
``take``, ``index_select``/``index_add``/``index_fill``/``index_copy`` likewise.

A bad index raises IndexError and leaves the destination unchanged (``_run_checked``): on
the CPU the host checks the index tensors before the kernel runs; device kernels check
each index as they read it (a host check would copy every index tensor off the device).
On cuda a gather's (``index``) bad index raises at the host's next synchronisation instead
(``.cpu()``, ``.item()``, ``tk.cuda.synchronize()``, ...: see ``kernels/indexing.py``), so
that gathers never wait for the device; scatters still raise at once.
Nothing here touches numpy arrays of tensor data: kernels (``cpu/indexing.py``) do.
"""
from __future__ import annotations

import numpy as np

from .. import _dispatch
from .. import dtypes as D
from .._tensor import Tensor, _wrap_dim
from . import pointwise as P
from .creation import arange, clone, empty, full, tensor
from .view import _view, expand

_INDEX_DTYPES = (D.int32, D.int64)
_MASK_DTYPES = (D.bool_, D.uint8)     # uint8 index tensors are masks, as in PyTorch (which deprecates it)
_REDUCES = (None, "sum", "prod", "mean", "amax", "amin")


# ---- index checks (host side) -----------------------------------------------------------------
def _check_bounds(index: Tensor, size: int, dim: int, negative: bool = True, op: str = "") -> None:
    """IndexError naming the first index outside [-size, size) (or [0, size))."""
    if index.numel() == 0:
        return
    a = index._host()
    lo = -size if negative else 0
    if a.min() < lo or a.max() >= size:
        bad = a[(a < lo) | (a >= size)].flat[0]
        raise IndexError(f"{op + ': ' if op else ''}index {bad} is out of bounds for dimension {dim} with size {size}")


def _check_index_dtype(index: Tensor, op: str) -> None:
    if not isinstance(index, Tensor):
        raise TypeError(f"{op}(): index must be a Tensor, got {type(index).__name__}")
    if index.dtype not in _INDEX_DTYPES:
        raise RuntimeError(f"{op}(): Expected dtype int32/int64 for index, got {index.dtype}")


def _as_index(i, device):
    """A list / numpy array index as a tensor (an empty list is an empty int64 index)."""
    if isinstance(i, np.ndarray):
        return tensor(i, device=device)
    if isinstance(i, (list, tuple)):
        return tensor(i, dtype=D.int64 if len(i) == 0 else None, device=device)
    return i


def _per_dim(input: Tensor, indices, op: str) -> list:
    """PyTorch's index list (None, integer tensors consuming one dim, masks consuming k dims)
    as one entry per dim of ``input``: None or an integer tensor; masks become nonzero()."""
    out, d = [], 0
    for i in indices:
        i = _as_index(i, input.device)
        if i is None:
            out.append(None)
            d += 1
            continue
        if not isinstance(i, Tensor):
            raise TypeError(f"{op}: indices must be Tensors or None, got {type(i).__name__}")
        if i.device != input.device:
            i = i.to(input.device)
        if i.dtype in _MASK_DTYPES:
            if i.ndim == 0:
                raise IndexError(f"{op}: a 0-d mask in an index list is not supported; index with x[mask]")
            if d + i.ndim > input.ndim:
                raise IndexError(f"too many indices for tensor of dimension {input.ndim}")
            for j in range(i.ndim):
                if i.shape[j] != input.shape[d + j]:
                    raise IndexError(f"The shape of the mask {list(i.shape)} at index {j} does not match the shape "
                                     f"of the indexed tensor {list(input.shape)} at index {d + j}")
            out += list(nonzero(i, as_tuple=True))
            d += i.ndim
        elif i.dtype in _INDEX_DTYPES:
            out.append(i)
            d += 1
        else:
            raise IndexError(f"tensors used as indices must be long, int, byte or bool tensors, got {i.dtype}")
    if len(out) > input.ndim:
        raise IndexError(f"too many indices for tensor of dimension {input.ndim} (got {len(out)})")
    return out


def _index_meta(input: Tensor, indices: list) -> tuple:
    """(dims indexed, the shape of ``input[indices]``); bounds are checked when the kernel runs
    (``_run_checked``). PyTorch's (and numpy's) rule: adjacent index tensors replace their dims
    in place, otherwise the broadcast index dims go first."""
    dims = [d for d, t in enumerate(indices) if t is not None]
    if not dims:
        return dims, tuple(input.shape)
    try:
        bshape = P.broadcast_shapes(*[indices[d].shape for d in dims])
    except RuntimeError:
        raise IndexError("shape mismatch: indexing tensors could not be broadcast together with shapes "
                         + ", ".join(str(list(indices[d].shape)) for d in dims)) from None
    if dims == list(range(dims[0], dims[-1] + 1)):
        return dims, tuple(input.shape[:dims[0]]) + bshape + tuple(input.shape[dims[-1] + 1:])
    return dims, bshape + tuple(input.shape[d] for d in range(input.ndim) if d not in dims)


def _run_checked(op: str, input: Tensor, indices: list, dims: list, negative: bool, *args, name: str = "") -> None:
    """Run the ``index``/``index_put`` kernel on ``input, indices, *args`` with the indices'
    bounds checked: an index outside [-size, size) (or [0, size) when not ``negative``)
    raises ``_check_bounds``'s IndexError and nothing is written. Unchecked when the indices
    broadcast to nothing (no element is read, as in PyTorch and numpy).

    On the CPU the host checks the index tensors before the kernel runs. On a device that
    would copy every index tensor to the host, so its kernels take ``negative`` and check each
    index as they read it (out-of-range lanes touch no memory). The cuda gather (``index``)
    raises the error itself, naming the user's op ``name``, when the host next waits for the
    device (see ``kernels/indexing.py``). ``index_put`` checks them all before writing and
    returns whether one was out of range; only then does the host read the indices, to raise
    the same error as the CPU."""
    kernel = _dispatch.lookup(op, input.device.type, input.dtype)
    if input.device.type == "cpu":
        if all(indices[d].numel() for d in dims):
            for d in dims:
                _check_bounds(indices[d], input.shape[d], d, negative)
        kernel(input, indices, *args)
    elif op == "index":
        kernel(input, indices, *args, negative=negative, op=name or op)
    elif kernel(input, indices, *args, negative=negative):
        checks = [(indices[d], input.shape[d], d, negative) for d in dims] \
            if all(indices[d].numel() for d in dims) else []
        for c in checks:
            _check_bounds(*c)
        raise RuntimeError(f"{op}: the {input.device} kernel reported an index out of range, but the host "
                           f"check found none")


# ---- primitives ----------------------------------------------------------------------------------
def index(input: Tensor, indices, *, _negative: bool = True, _op: str = "index") -> Tensor:
    """``input[indices]`` for PyTorch's index list: per leading dim None (all of it), an
    int32/int64 tensor, or a bool mask (consuming as many dims as it has). A copy.
    (``_negative=False``: negative indices are out of range, for gather / index_select;
    ``_op``: the user's op, named by a bad index's error on cuda, which is deferred.)"""
    indices = _per_dim(input, indices, "index")
    dims, shape = _index_meta(input, indices)
    out = empty(shape, dtype=input.dtype, device=input.device)
    _run_checked("index", input, indices, dims, _negative, out, name=_op)
    if _dispatch.observers:
        _dispatch.notify("index", (input, *[indices[d] for d in dims]), (out,), {"dims": tuple(dims)})
    return out


def index_put_(input: Tensor, indices, values: Tensor, accumulate: bool = False, *, _reduce=None,
               _include_self: bool = True, _negative: bool = True) -> Tensor:
    """Write ``values`` (broadcast to the shape of ``input[indices]``) at ``input[indices]``,
    in place; with ``accumulate=True`` add them instead, duplicates adding up. Without it,
    duplicate indices keep one of their values (which one is unspecified, as in PyTorch).

    Example::

        >>> x = tk.zeros(3); x.index_put_((tk.tensor([0, 0, 2]),), tk.tensor(1.), accumulate=True)
        tensor([2., 0., 1.])
    """
    reduce = "sum" if accumulate and _reduce is None else _reduce
    if reduce not in _REDUCES:
        raise RuntimeError(f"reduce argument must be one of 'sum', 'prod', 'mean', 'amax', 'amin', got {reduce!r}")
    if not isinstance(values, Tensor):
        raise TypeError(f"index_put_(): values must be a Tensor, got {type(values).__name__}")
    if values.dtype is not input.dtype:
        raise RuntimeError(f"Index put requires the source and destination dtypes match, got {input.dtype} for "
                           f"the destination and {values.dtype} for the source.")
    indices = _per_dim(input, indices, "index_put_")
    dims, shape = _index_meta(input, indices)
    if not _broadcasts_to(values.shape, shape):
        raise RuntimeError(f"shape mismatch: value tensor of shape {list(values.shape)} cannot be broadcast to "
                           f"indexing result of shape {list(shape)}")
    if values.device != input.device:
        values = values.to(input.device)
    if values._storage is input._storage:     # x[i] = x[j]: read everything before writing
        values = clone(values)
    indices = [clone(i) if i is not None and i._storage is input._storage else i for i in indices]   # x[x] = v
    if _dispatch.write_observers:       # autograd: refuse writes into leaves that require grad
        _dispatch.notify_write("index_put", input, (input, values))
    _run_checked("index_put", input, indices, dims, _negative, expand(values, shape), reduce, _include_self)
    input._bump_version()
    if _dispatch.observers:
        _dispatch.notify("index_put", (input, values, *[indices[d] for d in dims]), (input,),
                         {"dims": tuple(dims), "reduce": reduce, "include_self": _include_self})
    return input


_index = index      # the functions below take an argument named `index`, as PyTorch's do


def _index_list(node, first: int) -> list:
    """The index tensors of an index / index_put node as a per-dim list (None: the whole dim)."""
    dims = node.params["dims"]
    out = [None] * (dims[-1] + 1 if dims else 0)
    for d, t in zip(dims, node.inputs[first:]):
        out[d] = t
    return out


@_dispatch.defvjp("index", inputs=slice(1, None))
def _index_vjp(g, node):
    # every element picked gets its gradient; an element picked twice gets both (accumulate)
    z = full(node.shapes[0], 0, dtype=g.dtype, device=g.device)
    idx = _index_list(node, 1)
    return (index_put_(z, idx, g, accumulate=True),) + (None,) * (len(node.inputs) - 1)


@_dispatch.defvjp("index_put", inputs=slice(2, None))
def _index_put_vjp(g, node):
    # written positions: the values' gradient is g there, the old input's is 0 (or g, when
    # accumulate added the values to the old ones)
    reduce, idx = node.params["reduce"], _index_list(node, 2)
    if reduce not in (None, "sum"):
        raise NotImplementedError(f"the derivative of index_put/scatter_reduce with reduce='{reduce}' is not "
                                  f"implemented (only plain writes and 'sum')")
    if reduce == "sum" and node.params["include_self"]:
        g_input = g
    else:
        g_input = index_put_(clone(g), idx, full((), 0, dtype=g.dtype, device=g.device))
    return (g_input, _index(g, idx)) + (None,) * (len(node.inputs) - 2)


def _broadcasts_to(shape, target) -> bool:
    return len(shape) <= len(target) and all(s in (1, t) for s, t in zip(reversed(shape), reversed(target)))


def nonzero(input: Tensor, *, as_tuple: bool = False):
    """Coordinates of the nonzero elements: an ``(n, input.ndim)`` int64 tensor in row-major
    order, or with ``as_tuple=True`` one 1-D tensor per dim (a 0-d input counts as 1-D)."""
    if as_tuple:
        r = nonzero(input.reshape(1) if input.ndim == 0 else input)
        if r.shape[0] == 0:     # (no column views of an empty buffer: their offsets lie past its end)
            return tuple(empty((0,), dtype=D.int64, device=input.device) for _ in range(r.shape[1]))
        return tuple(r[:, d] for d in range(r.shape[1]))
    # The output's size depends on the data: the kernel first counts (a host sync), then fills.
    kernel = _dispatch.lookup("nonzero", input.device.type, input.dtype)
    out = empty((kernel(input, None), input.ndim), dtype=D.int64, device=input.device)
    kernel(input, out)
    if _dispatch.observers:
        _dispatch.notify("nonzero", (input,), (out,), {})
    return out


def argwhere(input: Tensor) -> Tensor:
    """``nonzero(input)``: an ``(n, ndim)`` tensor of the coordinates of nonzero elements."""
    return nonzero(input)


# ---- x[index] and x[index] = value -------------------------------------------------------------
def _expand_ellipsis(index: tuple, ndim: int) -> tuple:
    consumed = sum(i.ndim if isinstance(i, Tensor) and i.dtype in _MASK_DTYPES else 1 for i in index
                   if not (i is None or i is Ellipsis or isinstance(i, bool)))
    n_ell = sum(1 for i in index if i is Ellipsis)
    if n_ell > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if consumed > ndim:
        raise IndexError(f"too many indices for tensor of dimension {ndim} (got {consumed})")
    if n_ell:
        k = next(j for j, i in enumerate(index) if i is Ellipsis)
        return index[:k] + (slice(None),) * (ndim - consumed) + index[k + 1:]
    return index + (slice(None),) * (ndim - consumed)


def _basic(x: Tensor, index: tuple) -> Tensor:
    """Apply ints, slices and None: one view."""
    shape, strides, offset, d = [], [], x._offset, 0
    for i in index:
        if i is None:
            shape.append(1)
            strides.append(0)
            continue
        size, st = x.shape[d], x._strides[d]
        if isinstance(i, slice):
            start, stop, step = i.indices(size)
            if step <= 0:
                raise ValueError("step must be greater than zero (negative steps are not supported, as in PyTorch; "
                                 "use .flip(dim))")
            n = max(0, -(-(stop - start) // step))
            shape.append(n)
            strides.append(st * step)
            offset += start * st
        else:
            i = int(i)
            if not -size <= i < size:
                raise IndexError(f"index {i} is out of bounds for dimension {d} with size {size}")
            offset += (i + size if i < 0 else i) * st
        d += 1
    if 0 in shape:      # an empty view keeps x's offset: one past the end of the buffer is no valid offset
        offset = x._offset
    return _view(x, tuple(shape), tuple(strides), offset, "getitem", {"index": index})


def _item(i, device):
    """One index item in canonical form: int, slice, None, Ellipsis, bool or a Tensor."""
    i = _as_index(i, device)
    if isinstance(i, (bool, np.bool_)):
        return bool(i)
    if isinstance(i, Tensor) and i.ndim == 0:
        if i.dtype in _MASK_DTYPES:
            return bool(i)              # a 0-d mask adds a dim of size 1 (True) or 0 (False)
        if i.dtype.category == 1:
            return int(i)               # a 0-d integer tensor selects, as an int does (PyTorch)
    if isinstance(i, (int, np.integer, slice, Tensor)) or i is None or i is Ellipsis:
        return i
    raise IndexError(f"only integers, slices (`:`), ellipsis (`...`), None, bools and integer or boolean "
                     f"tensors/lists are valid indices, got {type(i).__name__}")


def _split(x: Tensor, index) -> tuple:
    """``x[index]`` as (a basic view of x, PyTorch's index list over the view or None).

    Ints select (they are not advanced indices, unlike numpy: ``x[0, :, [0, 1]]`` has shape
    ``(x.shape[1], 2)`` in PyTorch and here); a bool adds a dim indexed by ``[0]`` or ``[]``.
    """
    if not isinstance(index, tuple):
        index = (index,)
    index = tuple(_item(i, x.device) for i in index)
    if x.ndim == 0 and any(isinstance(i, (int, np.integer, slice)) and not isinstance(i, bool) for i in index):
        raise IndexError("invalid index of a 0-dim tensor; use tensor.item() to get the Python number")
    basic, advanced = [], []
    for i in _expand_ellipsis(index, x.ndim):
        if isinstance(i, bool):
            basic.append(None)
            advanced.append(tensor([0] if i else [], dtype=D.int64, device=x.device))
        elif isinstance(i, Tensor):
            basic += [slice(None)] * (i.ndim if i.dtype in _MASK_DTYPES else 1)
            advanced.append(i)
        elif i is None or isinstance(i, slice):
            basic.append(i)
            advanced.append(None)
        else:
            basic.append(i)
    view = _basic(x, tuple(basic))
    return view, (advanced if any(i is not None for i in advanced) else None)


@_dispatch.defvjp("getitem", inputs=False, view=True)
def _getitem_vjp(g, node):
    from .view import _embed
    return (_embed(g, node.shapes[0], lambda z: _basic(z, node.params["index"])),)


def getitem(x: Tensor, index) -> Tensor:
    """``x[index]``: ints, slices, None and ``...`` give a view sharing memory; integer or bool
    tensors / lists and bools (advanced indexing) give a copy."""
    view, advanced = _split(x, index)
    return view if advanced is None else _index(view, advanced, _op="x[indices]")


def setitem(x: Tensor, index, value) -> None:
    """``x[index] = value``: value (a number or tensor, cast to x's dtype) broadcasts to the
    indexed shape. PyTorch refuses a tensor value of another dtype with advanced indices;
    tensorkit casts it, as basic indexing does in both."""
    view, advanced = _split(x, index)
    if not isinstance(value, Tensor):
        value = full((), value, dtype=x.dtype, device=x.device)
    elif value._storage is x._storage:     # x[1:] = x[:-1]: read everything before writing
        value = clone(value)
    lead = 0
    while lead < value.ndim and value.shape[lead] == 1:    # leading 1s are dropped, as in PyTorch
        lead += 1
    if lead:
        value = value.reshape(value.shape[lead:])
    if advanced is None:
        view.copy_(value)
    else:
        index_put_(view, advanced, value.to(x.dtype, device=x.device))


# ---- composites along one dim ----------------------------------------------------------------
def _dim_indices(input: Tensor, dim: int, index: Tensor) -> list:
    """Index every dim of ``input``: ``index`` along ``dim``, an arange broadcast along the others
    (so that ``input[result]`` is ``gather(input, dim, index)``)."""
    out = []
    for d in range(index.ndim):
        if d == dim:
            out.append(index)
        else:
            shape = [1] * index.ndim
            shape[d] = index.shape[d]
            out.append(arange(index.shape[d], device=input.device).reshape(shape))
    return out


def _atleast_1d(t: Tensor) -> Tensor:
    return t.reshape(1) if t.ndim == 0 else t     # a view: scatter writes through it


def _gather_check(input: Tensor, dim: int, index: Tensor, op: str, src: Tensor | None = None) -> int:
    """PyTorch's shape rule for gather/scatter (0-d tensors count as 1-D); returns the dim.
    (Bounds: the index must lie in [0, size), checked by the primitive: ``_negative=False``.)"""
    _check_index_dtype(index, op)
    d = _wrap_dim(dim, input.ndim, op)
    if index.numel() == 0:
        return d
    ishape, sshape = index.shape or (1,), input.shape or (1,)
    if len(ishape) != len(sshape):
        raise RuntimeError(f"{op}(): Index tensor must have the same number of dimensions as "
                           f"{'input' if src is None else 'self'} tensor ({index.ndim} vs {input.ndim})")
    if src is None:
        for k in range(len(ishape)):
            if k != d and ishape[k] > sshape[k]:
                raise RuntimeError(f"Size does not match at dimension {k} expected index {list(index.shape)} to be no "
                                   f"larger than self {list(input.shape)} apart from dimension {d}")
    else:
        rshape = src.shape or (1,)
        if len(rshape) != len(ishape) or any(k != d and ishape[k] > sshape[k] or ishape[k] > rshape[k]
                                             for k in range(len(ishape))):
            raise RuntimeError(f"Expected index {list(index.shape)} to be no larger than self {list(input.shape)} "
                               f"apart from dimension {d} and to be no larger size than src {list(src.shape)}")
    return d


def gather(input: Tensor, dim: int, index: Tensor, *, sparse_grad: bool = False, _op: str = "gather") -> Tensor:
    """``out[i][j][k] = input[index[i][j][k]][j][k]`` (for ``dim=0``): values picked along
    ``dim``; ``index`` has input's number of dims and is no larger elsewhere. Result: index's shape.
    (``_op``: the op a bad index's deferred error names on cuda, for callers such as nll_loss.)

    Example::

        >>> tk.tensor([[1, 2], [3, 4]]).gather(1, tk.tensor([[0, 0], [1, 0]]))
        tensor([[1, 1],
                [4, 3]])
    """
    d = _gather_check(input, dim, index, "gather")
    if index.numel() == 0:
        return empty(index.shape, dtype=input.dtype, device=input.device)
    x, i = _atleast_1d(input), _atleast_1d(index)
    return _index(x, _dim_indices(x, d, i), _negative=False, _op=_op).reshape(index.shape)


def scatter_reduce_(input: Tensor, dim: int, index: Tensor, src: Tensor, reduce: str, *,
                    include_self: bool = True) -> Tensor:
    """``self[index[i][j]][j] = reduce(self[...], src[i][j])`` (for ``dim=0``), in place; reduce
    is 'sum', 'prod', 'mean', 'amax' or 'amin'. With ``include_self=False`` the elements
    scattered to are reduced over the scattered values only. Integer 'mean' rounds down."""
    if reduce not in _REDUCES[1:]:
        raise RuntimeError(f"reduce argument must be either sum, prod, mean, amax or amin, got {reduce}")
    return _scatter(input, dim, index, src, reduce, include_self, "scatter_reduce")


def _scatter(input, dim, index, src, reduce, include_self, op) -> Tensor:
    if not isinstance(src, Tensor):
        src = full(index.shape, src, dtype=input.dtype, device=input.device)
    elif src.dtype is not input.dtype:
        raise RuntimeError(f"{op}(): Expected self.dtype to be equal to src.dtype ({input.dtype} vs {src.dtype})")
    d = _gather_check(input, dim, index, op, src)
    if index.numel() == 0:
        return input
    x, i = _atleast_1d(input), _atleast_1d(index)
    src = _atleast_1d(src)[tuple(slice(0, n) for n in i.shape)]
    index_put_(x, _dim_indices(x, d, i), src, _reduce=reduce, _include_self=include_self, _negative=False)
    return input


def scatter_reduce(input: Tensor, dim: int, index: Tensor, src: Tensor, reduce: str, *,
                   include_self: bool = True) -> Tensor:
    """Out-of-place :func:`scatter_reduce_`."""
    return scatter_reduce_(clone(input), dim, index, src, reduce, include_self=include_self)


def scatter_(input: Tensor, dim: int, index: Tensor, src=None, *, value=None, reduce: str | None = None) -> Tensor:
    """``self[index[i][j]][j] = src[i][j]`` (for ``dim=0``), in place; ``src`` may be a number
    (or pass ``value=``). ``reduce='add'`` / ``'multiply'`` combine instead of writing. Duplicate
    indices without reduce keep one of the values (unspecified which, as in PyTorch)."""
    if reduce not in (None, "add", "multiply"):
        raise RuntimeError("reduce argument must be either add or multiply.")
    src = value if src is None else src
    if src is None:
        raise TypeError("scatter(): expected a src tensor or a value")
    return _scatter(input, dim, index, src, {None: None, "add": "sum", "multiply": "prod"}[reduce], True, "scatter")


def scatter(input: Tensor, dim: int, index: Tensor, src=None, *, value=None, reduce: str | None = None) -> Tensor:
    """Out-of-place :func:`scatter_`.

    Example::

        >>> tk.zeros(2, 3).scatter(1, tk.tensor([[2], [0]]), 1.)
        tensor([[0., 0., 1.],
                [1., 0., 0.]])
    """
    return scatter_(clone(input), dim, index, src, value=value, reduce=reduce)


def scatter_add_(input: Tensor, dim: int, index: Tensor, src: Tensor) -> Tensor:
    """``self[index[i][j]][j] += src[i][j]`` (for ``dim=0``), in place; duplicates add up."""
    return _scatter(input, dim, index, src, "sum", True, "scatter_add")


def scatter_add(input: Tensor, dim: int, index: Tensor, src: Tensor) -> Tensor:
    """Out-of-place :func:`scatter_add_`."""
    return scatter_add_(clone(input), dim, index, src)


def _vector_index(input: Tensor, dim: int, index: Tensor, op: str) -> tuple:
    """(dim, index as 1-D) for the index_* family: a vector (or scalar) of indices (their
    bounds are checked by the primitive they go to)."""
    _check_index_dtype(index, op)
    if index.ndim > 1:
        raise IndexError(f"{op}(): Index is supposed to be a vector, but got a tensor of shape {list(index.shape)}")
    d = _wrap_dim(dim, input.ndim, op)
    return d, index.reshape(-1)


def index_select(input: Tensor, dim: int, index: Tensor) -> Tensor:
    """The slices at ``index`` (a vector) along ``dim``: ``input[:, index]`` for ``dim=1``.

    An index outside [0, size) raises IndexError: at once on the CPU; on cuda (here and in
    ``x[idx]``, ``gather``, ``take``, ``F.embedding``) at the next synchronisation (``.cpu()``,
    ``.item()``, ``tk.cuda.synchronize()``, ...), so the lookup never waits for the device.
    That is asynchronous like PyTorch's device-side assert, but the error names the op, the
    index and the sizes, and the device stays usable.

    Example::

        >>> tk.tensor([[1, 2, 3], [4, 5, 6]]).index_select(1, tk.tensor([2, 0]))
        tensor([[3, 1],
                [6, 4]])
    """
    d, index = _vector_index(input, dim, index, "index_select")
    if input.ndim == 0:
        return _index(input.reshape(1), [index], _negative=False, _op="index_select").reshape(())
    return _index(input, [None] * d + [index], _negative=False, _op="index_select")


def _source_check(input: Tensor, d: int, index: Tensor, source: Tensor, op: str) -> None:
    if not isinstance(source, Tensor):
        raise TypeError(f"{op}(): source must be a Tensor, got {type(source).__name__}")
    if source.dtype is not input.dtype:
        raise RuntimeError(f"{op}(): self ({input.dtype}) and source ({source.dtype}) must have the same scalar type")
    expected = list(input.shape)
    if expected:
        expected[d] = index.numel()
    if list(source.shape) != expected and not (source.numel() == index.numel() == 1 and input.ndim <= 1):
        raise RuntimeError(f"{op}(): source of shape {list(source.shape)} doesn't match: expected {expected} (self's "
                           f"shape {list(input.shape)} with dim {d} of the number of indices, {index.numel()})")


def index_add_(input: Tensor, dim: int, index: Tensor, source: Tensor, *, alpha=1) -> Tensor:
    """``self[:, index[i]] += alpha * source[:, i]`` (for ``dim=1``), in place; duplicates add up."""
    d, index = _vector_index(input, dim, index, "index_add_")
    _source_check(input, d, index, source, "index_add_")
    if alpha != 1:
        source = P.mul(source, alpha).to(input.dtype)
    target = input.reshape(1) if input.ndim == 0 else input
    index_put_(target, [None] * d + [index], source.reshape(target.shape[:d] + (-1,) + target.shape[d + 1:]),
               accumulate=True, _negative=False)
    return input


def index_add(input: Tensor, dim: int, index: Tensor, source: Tensor, *, alpha=1) -> Tensor:
    """Out-of-place :func:`index_add_`."""
    return index_add_(clone(input), dim, index, source, alpha=alpha)


def index_copy_(input: Tensor, dim: int, index: Tensor, source: Tensor) -> Tensor:
    """``self[:, index[i]] = source[:, i]`` (for ``dim=1``), in place."""
    d, index = _vector_index(input, dim, index, "index_copy_")
    _source_check(input, d, index, source, "index_copy_")
    target = input.reshape(1) if input.ndim == 0 else input
    index_put_(target, [None] * d + [index], source.reshape(target.shape[:d] + (-1,) + target.shape[d + 1:]),
               _negative=False)
    return input


def index_copy(input: Tensor, dim: int, index: Tensor, source: Tensor) -> Tensor:
    """Out-of-place :func:`index_copy_`."""
    return index_copy_(clone(input), dim, index, source)


def _fill_value(input: Tensor, value, op: str) -> Tensor:
    """``value`` (a number or a 0-d tensor) as a 0-d tensor of input's dtype."""
    if isinstance(value, Tensor):
        if value.ndim != 0:
            raise RuntimeError(f"{op} only supports a 0-dimensional value tensor, but got tensor with "
                               f"{value.ndim} dimension(s).")
        return value.to(input.dtype)
    return full((), value, dtype=input.dtype, device=input.device)


def index_fill_(input: Tensor, dim: int, index: Tensor, value) -> Tensor:
    """``self[:, index] = value`` (for ``dim=1``), in place; negative indices count from the end."""
    d, index = _vector_index(input, dim, index, "index_fill_")
    value = _fill_value(input, value, "index_fill_")
    index_put_(input.reshape(1) if input.ndim == 0 else input, [None] * d + [index], value.to(device=input.device))
    return input


def index_fill(input: Tensor, dim: int, index: Tensor, value) -> Tensor:
    """Out-of-place :func:`index_fill_`."""
    return index_fill_(clone(input), dim, index, value)


def index_put(input: Tensor, indices, values: Tensor, accumulate: bool = False) -> Tensor:
    """Out-of-place :func:`index_put_`."""
    return index_put_(clone(input), indices, values, accumulate)


# ---- masks ------------------------------------------------------------------------------------------
def _check_mask(mask, op: str) -> None:
    if not isinstance(mask, Tensor) or mask.dtype is not D.bool_:
        raise RuntimeError(f"{op} only supports boolean masks, but got mask with dtype "
                           f"{getattr(mask, 'dtype', type(mask).__name__)}")


def masked_fill(input: Tensor, mask: Tensor, value) -> Tensor:
    """``value`` where ``mask`` (broadcast with input) is True, else ``input``; input's dtype.

    Example::

        >>> tk.tensor([1., 2., 3.]).masked_fill(tk.tensor([True, False, True]), 0)
        tensor([0., 2., 0.])
    """
    _check_mask(mask, "masked_fill")
    return P.where(mask, _fill_value(input, value, "masked_fill_"), input)


def masked_fill_(input: Tensor, mask: Tensor, value) -> Tensor:
    """In place :func:`masked_fill`; ``mask`` must broadcast to input's shape."""
    _check_mask(mask, "masked_fill_")
    return P.where(mask, _fill_value(input, value, "masked_fill_"), input, _into=input)


def masked_select(input: Tensor, mask: Tensor) -> Tensor:
    """The elements of ``input`` where ``mask`` is True (both broadcast), as a 1-D tensor."""
    if not isinstance(mask, Tensor) or mask.dtype is not D.bool_:
        raise RuntimeError("masked_select: expected BoolTensor for mask")
    shape = P.broadcast_shapes(input.shape, mask.shape)
    return _index(expand(input, shape), [expand(mask, shape)]) if shape else \
        _index(input.reshape(1), [mask.reshape(1)])


# ---- flat and along-dim picks -------------------------------------------------------------------
def take(input: Tensor, index: Tensor) -> Tensor:
    """``input.flatten()[index]``: result has index's shape; negative indices count from the end."""
    if not isinstance(index, Tensor) or index.dtype is not D.int64:
        raise RuntimeError(f"take(): Expected a long tensor for index, but got {getattr(index, 'dtype', type(index))}")
    return _index(input.reshape(-1), [index], _op="take")


def take_along_dim(input: Tensor, indices: Tensor, dim: int | None = None) -> Tensor:
    """``gather`` with input and indices broadcast against each other except along ``dim``;
    with ``dim=None`` both are flattened first."""
    if dim is None:
        return gather(input.reshape(-1), 0, indices.reshape(-1))
    if input.ndim != indices.ndim:
        raise RuntimeError(f"take_along_dim(): input and indices should have the same number of dimensions, but "
                           f"got {input.ndim} dimensions for input, and {indices.ndim} dimensions for indices")
    d = _wrap_dim(dim, input.ndim, "take_along_dim")
    ishape = P.broadcast_shapes(input.shape[:d] + (indices.shape[d],) + input.shape[d + 1:], indices.shape)
    sshape = P.broadcast_shapes(indices.shape[:d] + (input.shape[d],) + indices.shape[d + 1:], input.shape)
    return gather(expand(input, sshape), d, expand(indices, ishape))
