"""View primitives: new shape/strides/offset over the same storage, no kernel, no copy.

Each view op computes its metadata here (its meta rule *is* its implementation) and is
announced to the dispatcher's observers like any other op, so autograd and the tracer see
it. ``reshape``/``flatten`` return views when the layout allows and copy otherwise, as
PyTorch does; ``view`` never copies and says so when it can't.
"""
from __future__ import annotations

import operator

import numpy as np

from .. import _dispatch
from .._tensor import Tensor, _wrap_dim, contiguous_strides
from .creation import contiguous


def _view(base: Tensor, shape, strides, offset: int, op: str, params=None) -> Tensor:
    t = Tensor._make(base._storage, offset, shape, strides, base.dtype, base if base._base is None else base._base)
    if _dispatch.observers:
        _dispatch.notify(op, (base,), (t,), params or {})
    return t


def _dims(dims, op: str) -> tuple:
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = dims[0]
    try:
        return tuple(operator.index(d) for d in dims)      # ints (or int tensors); 2.0 is an error
    except TypeError:
        raise TypeError(f"{op}: expected a sequence of ints, got {list(dims)}") from None


def _infer_shape(shape, numel: int, op: str) -> tuple:
    shape = list(shape)
    neg = [i for i, s in enumerate(shape) if s == -1]
    if len(neg) > 1:
        raise RuntimeError(f"{op}: only one dimension can be inferred (-1) in shape {shape}")
    known = 1
    for s in shape:
        if s != -1:
            if s < 0:
                raise RuntimeError(f"{op}: invalid shape dimension {s} in {shape}")
            known *= s
    if neg:
        if known == 0 or numel % known:
            raise RuntimeError(f"{op}: shape {shape} is invalid for input of size {numel}")
        shape[neg[0]] = numel // known
    elif known != numel:
        raise RuntimeError(f"{op}: shape {shape} is invalid for input of size {numel}")
    return tuple(shape)


def _view_strides(old_shape, old_strides, new_shape):
    """Strides that view ``old`` as ``new_shape`` without copying, or None (PyTorch's rule)."""
    if not old_shape:
        old_shape, old_strides = (1,), (1,)
    if 0 in old_shape:
        return contiguous_strides(new_shape)
    new_strides = [0] * len(new_shape)
    view_d = len(new_shape) - 1
    chunk_base = old_strides[-1]
    tensor_numel = view_numel = 1
    for d in range(len(old_shape) - 1, -1, -1):
        tensor_numel *= old_shape[d]
        if d == 0 or (old_shape[d - 1] != 1 and old_strides[d - 1] != tensor_numel * chunk_base):
            while view_d >= 0 and (view_numel < tensor_numel or new_shape[view_d] == 1):
                new_strides[view_d] = view_numel * chunk_base
                view_numel *= new_shape[view_d]
                view_d -= 1
            if view_numel != tensor_numel:
                return None
            if d > 0:
                chunk_base = old_strides[d - 1]
                tensor_numel = view_numel = 1
    return tuple(new_strides) if view_d == -1 else None


def view(input: Tensor, *shape) -> Tensor:
    """The same data with another shape; never copies (use ``reshape`` when it must)."""
    shape = _infer_shape(_dims(shape, "view"), input.numel(), "view")
    strides = _view_strides(input._shape, input._strides, shape)
    if strides is None:
        raise RuntimeError(
            f"view: shape {list(shape)} is not compatible with the input's shape {list(input.shape)} and strides "
            f"{list(input._strides)} (a dimension spans two non-contiguous parts); use .reshape(...) instead")
    return _view(input, shape, strides, input._offset, "view", {"shape": shape})


def reshape(input: Tensor, *shape) -> Tensor:
    """The same data with another shape: a view when possible, else a copy."""
    shape = _infer_shape(_dims(shape, "reshape"), input.numel(), "reshape")
    strides = _view_strides(input._shape, input._strides, shape)
    if strides is None:
        return view(contiguous(input), shape)
    return _view(input, shape, strides, input._offset, "view", {"shape": shape})


def view_as(input: Tensor, other: Tensor) -> Tensor:
    return view(input, other.shape)


def reshape_as(input: Tensor, other: Tensor) -> Tensor:
    return reshape(input, other.shape)


def flatten(input: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """Merge dims ``start_dim..end_dim`` into one."""
    if input.ndim == 0:
        return reshape(input, 1)
    s, e = _wrap_dim(start_dim, input.ndim, "flatten"), _wrap_dim(end_dim, input.ndim, "flatten")
    if s > e:
        raise RuntimeError(f"flatten: start_dim ({start_dim}) cannot come after end_dim ({end_dim})")
    shape = input.shape
    n = 1
    for x in shape[s:e + 1]:
        n *= x
    return reshape(input, tuple(shape[:s]) + (n,) + tuple(shape[e + 1:]))


def unflatten(input: Tensor, dim: int, sizes) -> Tensor:
    """Split dim ``dim`` into ``sizes`` (one may be -1)."""
    d = _wrap_dim(dim, input.ndim, "unflatten")
    sizes = _infer_shape(sizes, input.shape[d], "unflatten")
    return view(input, tuple(input.shape[:d]) + sizes + tuple(input.shape[d + 1:]))


def squeeze(input: Tensor, dim=None) -> Tensor:
    """Remove size-1 dims (all, or the given ones if they have size 1)."""
    if dim is None:
        dims = {i for i, s in enumerate(input.shape) if s == 1}
    else:
        dims = {_wrap_dim(d, input.ndim, "squeeze") for d in (dim if isinstance(dim, (tuple, list)) else (dim,))}
        dims = {d for d in dims if input.ndim and input.shape[d] == 1}
    keep = [i for i in range(input.ndim) if i not in dims]
    return _view(input, tuple(input.shape[i] for i in keep), tuple(input._strides[i] for i in keep),
                 input._offset, "squeeze", {"dims": tuple(sorted(dims))})


def unsqueeze(input: Tensor, dim: int) -> Tensor:
    """Insert a size-1 dim at ``dim``."""
    d = _wrap_dim(dim, input.ndim + 1, "unsqueeze")
    shape, strides = list(input.shape), list(input._strides)
    stride = strides[d] * shape[d] if d < input.ndim else 1
    shape.insert(d, 1)
    strides.insert(d, stride)
    return _view(input, tuple(shape), tuple(strides), input._offset, "unsqueeze", {"dim": d})


def permute(input: Tensor, *dims) -> Tensor:
    """Reorder the dims."""
    dims = _dims(dims, "permute")
    if len(dims) != input.ndim:
        raise RuntimeError(f"permute: number of dims don't match: got {len(dims)} dims {list(dims)} for a "
                           f"tensor of {input.ndim} dims")
    dims = tuple(_wrap_dim(d, input.ndim, "permute") for d in dims)
    if len(set(dims)) != len(dims):
        raise RuntimeError(f"permute: repeated dim in {list(dims)}")
    return _view(input, tuple(input.shape[d] for d in dims), tuple(input._strides[d] for d in dims),
                 input._offset, "permute", {"dims": dims})


def transpose(input: Tensor, dim0: int, dim1: int) -> Tensor:
    """Swap two dims."""
    if input.ndim == 0:
        _wrap_dim(dim0, 0, "transpose"), _wrap_dim(dim1, 0, "transpose")
        return _view(input, (), (), input._offset, "permute", {"dims": ()})
    order = list(range(input.ndim))
    a, b = _wrap_dim(dim0, input.ndim, "transpose"), _wrap_dim(dim1, input.ndim, "transpose")
    order[a], order[b] = order[b], order[a]
    return permute(input, order)


swapaxes = swapdims = transpose


def t(input: Tensor) -> Tensor:
    """Transpose a matrix (0-d and 1-d tensors are returned as they are)."""
    if input.ndim > 2:
        raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, but self is {input.ndim}D; "
                           f"use .transpose(dim0, dim1) or .mT")
    return transpose(input, 0, 1) if input.ndim == 2 else permute(input, tuple(range(input.ndim)))


def movedim(input: Tensor, source, destination) -> Tensor:
    """Move dims ``source`` to positions ``destination`` (ints or sequences)."""
    src = [source] if isinstance(source, int) else list(source)
    dst = [destination] if isinstance(destination, int) else list(destination)
    if len(src) != len(dst):
        raise RuntimeError(f"movedim: source {src} and destination {dst} must have the same number of dims")
    src = [_wrap_dim(d, input.ndim, "movedim") for d in src]
    dst = [_wrap_dim(d, input.ndim, "movedim") for d in dst]
    for name, ds in (("source", src), ("destination", dst)):
        if len(set(ds)) != len(ds):
            raise RuntimeError(f"movedim: repeated dim in `{name}` ({list(source if name == 'source' else destination)})")
    order = [d for d in range(input.ndim) if d not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return permute(input, order)


moveaxis = movedim


def expand(input: Tensor, *sizes) -> Tensor:
    """Broadcast to ``sizes`` without copying (-1 keeps a dim); new dims go in front."""
    sizes = _dims(sizes, "expand")
    if len(sizes) < input.ndim:
        raise RuntimeError(f"expand: the number of sizes provided ({len(sizes)}) must be greater or equal to the "
                           f"number of dimensions in the tensor ({input.ndim})")
    lead = len(sizes) - input.ndim
    shape, strides = [], []
    for i, s in enumerate(sizes):
        if i < lead:
            if s < 0:
                raise RuntimeError(f"expand: -1 is not allowed in a leading, non-existing dimension ({list(sizes)})")
            shape.append(s)
            strides.append(0)
            continue
        cur, st = input.shape[i - lead], input._strides[i - lead]
        if s == -1 or s == cur:
            shape.append(cur)
            strides.append(st)
        elif cur == 1:
            shape.append(s)
            strides.append(0)
        else:
            raise RuntimeError(f"expand: the expanded size of the tensor ({s}) must match the existing size ({cur}) "
                               f"at non-singleton dimension {i}; target sizes {list(sizes)}, tensor sizes "
                               f"{list(input.shape)}")
    return _view(input, tuple(shape), tuple(strides), input._offset, "expand", {"shape": tuple(shape)})


def expand_as(input: Tensor, other: Tensor) -> Tensor:
    return expand(input, other.shape)


def broadcast_to(input: Tensor, shape) -> Tensor:
    return expand(input, shape)


def narrow(input: Tensor, dim: int, start: int, length: int) -> Tensor:
    """Elements ``start..start+length`` along ``dim`` (a view)."""
    d = _wrap_dim(dim, input.ndim, "narrow")
    size = input.shape[d]
    if isinstance(start, Tensor):
        start = start.item()
    if not -size <= start <= size:
        raise IndexError(f"narrow: start out of range (expected to be in range of [{-size}, {size}], but got {start})")
    if start < 0:
        start += size
    if not (0 <= start <= size) or length < 0 or start + length > size:
        raise IndexError(f"narrow: start ({start}) + length ({length}) exceeds dimension size ({size}) of dim {d}")
    shape = list(input.shape)
    shape[d] = length
    return _view(input, tuple(shape), input._strides, input._offset + start * input._strides[d],
                 "narrow", {"dim": d, "start": start, "length": length})


def select(input: Tensor, dim: int, index: int) -> Tensor:
    """The slice at ``index`` along ``dim``, with that dim removed (a view)."""
    if input.ndim == 0:
        raise IndexError("select() cannot be applied to a 0-dim tensor")
    d = _wrap_dim(dim, input.ndim, "select")
    size = input.shape[d]
    index = operator.index(index)
    if not -size <= index < size:
        raise IndexError(f"index {index} is out of bounds for dimension {d} with size {size}")
    if index < 0:
        index += size
    shape = input.shape[:d] + input.shape[d + 1:]
    strides = input._strides[:d] + input._strides[d + 1:]
    return _view(input, shape, strides, input._offset + index * input._strides[d],
                 "select", {"dim": d, "index": index})


def unbind(input: Tensor, dim: int = 0) -> tuple:
    """All slices along ``dim``."""
    if input.ndim == 0:
        raise IndexError("unbind() cannot be applied to a 0-dim tensor")
    d = _wrap_dim(dim, input.ndim, "unbind")
    return tuple(select(input, d, i) for i in range(input.shape[d]))


def split(input: Tensor, split_size_or_sections, dim: int = 0) -> tuple:
    """Pieces of ``split_size`` (the last may be smaller) or of the given section sizes."""
    d = _wrap_dim(dim, input.ndim, "split")
    size = input.shape[d]
    if isinstance(split_size_or_sections, int):
        step = split_size_or_sections
        if step <= 0 and size:
            raise RuntimeError(f"split: split_size must be positive, got {step}")
        sections = [min(step, size - i) for i in range(0, size, step)] if size else [0]
    else:
        sections = list(split_size_or_sections)
        if any(n < 0 for n in sections):
            raise RuntimeError(f"split: split sizes must be non-negative, got {sections}")
        if sum(sections) != size:
            raise RuntimeError(f"split: split sizes {sections} don't sum to the size {size} of dim {d}")
    out, start = [], 0
    for n in sections:
        out.append(narrow(input, d, start, n))
        start += n
    return tuple(out)


def tensor_split(input: Tensor, indices_or_sections, dim: int = 0) -> tuple:
    """``n`` nearly equal pieces (the first ``size % n`` one longer), or the pieces between
    ``indices``, each taken as the Python slice ``x[prev:index]`` (negative indices wrap; an
    index before the previous one gives an empty piece), as in PyTorch and numpy."""
    d = _wrap_dim(dim, input.ndim, "tensor_split")
    size = input.shape[d]
    if isinstance(indices_or_sections, (int, np.integer)):
        n = int(indices_or_sections)
        if n <= 0:
            raise RuntimeError(f"tensor_split: number of sections must be larger than 0, got {n}")
        q, r = divmod(size, n)
        return split(input, [q + 1] * r + [q] * (n - r), d)
    bounds = [0] + [int(i) for i in indices_or_sections] + [size]
    out = []
    for a, b in zip(bounds, bounds[1:]):
        start, stop, _ = slice(a, b).indices(size)
        out.append(narrow(input, d, start, max(stop - start, 0)))
    return tuple(out)


def chunk(input: Tensor, chunks: int, dim: int = 0) -> tuple:
    """Split into ``chunks`` pieces of ceil(size / chunks) (fewer if the size runs out)."""
    if chunks <= 0:
        raise RuntimeError(f"chunk expects `chunks` to be greater than 0, got: {chunks}")
    d = _wrap_dim(dim, input.ndim, "chunk")
    size = input.shape[d]
    if size == 0:                      # PyTorch: `chunks` empty pieces
        return split(input, [0] * chunks, d)
    step = -(-size // chunks)
    return split(input, step, d)


def as_strided(input: Tensor, size, stride, storage_offset: int | None = None) -> Tensor:
    """A view with explicit size/stride/offset; bounds-checked against the storage."""
    size, stride = tuple(size), tuple(stride)
    offset = input._offset if storage_offset is None else storage_offset
    if len(size) != len(stride):
        raise RuntimeError(f"as_strided: size {list(size)} and stride {list(stride)} must have the same length")
    if any(s < 0 for s in stride):
        raise RuntimeError(f"as_strided: negative strides are not supported: {list(stride)}")
    if np.prod(size) > 0:
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= input._storage.data.shape[0]:
            raise RuntimeError(f"as_strided: size {list(size)} stride {list(stride)} offset {offset} is out of "
                               f"bounds for storage of {input._storage.data.shape[0]} elements")
    return _view(input, size, stride, offset, "as_strided", {"size": size, "stride": stride, "offset": offset})


def diagonal(input: Tensor, offset: int = 0, dim1: int = 0, dim2: int = 1) -> Tensor:
    """The diagonal of the (dim1, dim2) planes, as a view in the last dim."""
    a, b = _wrap_dim(dim1, input.ndim, "diagonal"), _wrap_dim(dim2, input.ndim, "diagonal")
    if a == b:
        raise RuntimeError(f"diagonal dimensions cannot be identical {dim1}, {dim2}")
    n_a, n_b = input.shape[a], input.shape[b]
    start = input._offset
    if offset >= 0:
        n = max(min(n_a, n_b - offset), 0)
        start += offset * input._strides[b] if n else 0
    else:
        n = max(min(n_a + offset, n_b), 0)
        start -= offset * input._strides[a] if n else 0
    keep = [i for i in range(input.ndim) if i not in (a, b)]
    shape = tuple(input.shape[i] for i in keep) + (n,)
    strides = tuple(input._strides[i] for i in keep) + (input._strides[a] + input._strides[b],)
    return _view(input, shape, strides, start, "diagonal", {"offset": offset, "dim1": a, "dim2": b})


def unfold(input: Tensor, dimension: int, size: int, step: int) -> Tensor:
    """All windows of ``size`` along ``dimension`` with ``step``, as a new last dim (a view)."""
    d = _wrap_dim(dimension, input.ndim, "unfold")
    n = input.shape[d] if input.ndim else 1
    if size > n:
        raise RuntimeError(f"unfold: maximum size for tensor at dimension {d} is {n} but size is {size}")
    if step <= 0:
        raise RuntimeError(f"unfold: step is {step} but must be > 0")
    if input.ndim == 0:                # a 0-d tensor unfolds as one window of its single element
        return _view(input, (size,), (1,), input._offset, "unfold", {"dim": d, "size": size, "step": step})
    shape = list(input.shape)
    strides = list(input._strides)
    shape[d] = (n - size) // step + 1
    strides[d] = strides[d] * step
    return _view(input, tuple(shape) + (size,), tuple(strides) + (input._strides[d],), input._offset,
                 "unfold", {"dim": d, "size": size, "step": step})


# ---- backward (see _dispatch.VJP: fn(g, node) -> one gradient per input) ------------------------------
# A view's gradient puts g back where the view took its elements from: a reshape or permute
# back for the bijective views, a SliceGrad (g and the region of the base it belongs in) for
# the slicing ones, and a scatter-add for views whose elements overlap (expand, unfold, as_strided).
@_dispatch.defvjp("view", inputs=False, view=True)
def _reshape_back(g, node):
    return (reshape(g, node.shapes[0]),)


_dispatch.defvjp("squeeze", inputs=False, view=True)(_reshape_back)
_dispatch.defvjp("unsqueeze", inputs=False, view=True)(_reshape_back)


@_dispatch.defvjp("permute", inputs=False, view=True)
def _permute_vjp(g, node):
    dims = node.params["dims"]
    return (permute(g, tuple(dims.index(d) for d in range(len(dims)))),)


@_dispatch.defvjp("expand", inputs=False, view=True)
def _expand_vjp(g, node):
    from .reduction import sum_to_size
    return (sum_to_size(g, node.shapes[0]),)


class SliceGrad:
    """The gradient of a slicing view (select, narrow, basic ``x[...]``, diagonal), not yet
    placed: ``values`` belong in ``take(z)`` of a tensor ``z`` of the base's ``shape``, and the
    rest is zero. The autograd engine sums these into one buffer of the base's shape, adding
    each into its region in place: T slices of one tensor (an RNN reading ``x[t]``, the pieces
    of ``split``/``chunk``/``unbind``) cost one zeros and T small adds in backward, not T
    tensors of the base's size and T full-size adds. Wherever else a gradient is needed (hooks,
    ``create_graph``, ``grad()``'s results) it is ``materialize()``d: zeros with the values in
    their region."""

    __slots__ = ("values", "shape", "take")

    def __init__(self, values: Tensor, shape: tuple, take):
        self.values, self.shape, self.take = values, shape, take      # take(z): a non-overlapping view of z

    def materialize(self) -> Tensor:
        from .creation import zeros
        z = zeros(self.shape, dtype=self.values.dtype, device=self.values.device)
        self.take(z).copy_(self.values)
        return z

    def add_to(self, buf: Tensor) -> None:
        """``buf`` (the base's shape, contiguous, written by no one else) += this gradient."""
        self.take(buf).add_(self.values)


def _embed(g: Tensor, shape, take) -> SliceGrad:
    """The gradient ``g`` of the view ``take(base)`` of a base of ``shape``."""
    return SliceGrad(g, tuple(shape), take)


@_dispatch.defvjp("narrow", inputs=False, view=True)
def _narrow_vjp(g, node):
    p = node.params
    return (_embed(g, node.shapes[0], lambda z: narrow(z, p["dim"], p["start"], p["length"])),)


@_dispatch.defvjp("select", inputs=False, view=True)
def _select_vjp(g, node):
    return (_embed(g, node.shapes[0], lambda z: select(z, node.params["dim"], node.params["index"])),)


@_dispatch.defvjp("diagonal", inputs=False, view=True)
def _diagonal_vjp(g, node):
    p = node.params
    return (_embed(g, node.shapes[0], lambda z: diagonal(z, p["offset"], p["dim1"], p["dim2"])),)


def _scatter_add(g: Tensor, shape, positions: Tensor) -> Tensor:
    """Zeros of ``shape`` (flat) with ``g`` added at the flat ``positions`` (duplicates add up)."""
    from .creation import zeros
    flat = zeros((int(np.prod(shape)),), dtype=g.dtype, device=g.device)
    return flat.index_put_((positions.reshape(-1),), g.reshape(-1), accumulate=True).reshape(shape)


@_dispatch.defvjp("unfold", inputs=False, view=True)
def _unfold_vjp(g, node):
    from .creation import arange
    shape, p = node.shapes[0], node.params
    pos = unfold(arange(int(np.prod(shape)), device=g.device).reshape(shape), p["dim"], p["size"], p["step"])
    return (_scatter_add(g, shape, pos),)


@_dispatch.defvjp("as_strided", view=True)
def _as_strided_vjp(g, node):
    # size/stride/offset address the storage: find which of the input's elements each view
    # element is, through a table of the storage (-1 where the input has no element)
    from .creation import arange, full
    x, p = node.inputs[0], node.params
    table = full((x._storage.data.shape[0],), -1, device=g.device)
    as_strided(table, x.shape, x.stride(), x.storage_offset()).copy_(arange(x.numel(), device=g.device).reshape(x.shape))
    pos = as_strided(table, p["size"], p["stride"], p["offset"])
    if pos.numel() and bool((pos < 0).any()):
        raise RuntimeError(f"as_strided backward: the view (size {list(p['size'])}, stride {list(p['stride'])}, offset "
                           f"{p['offset']}) reads memory outside its input (shape {list(x.shape)}, strides "
                           f"{list(x.stride())}, offset {x.storage_offset()}); its gradient is not defined")
    return (_scatter_add(g, tuple(x.shape), pos),)
