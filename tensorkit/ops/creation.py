"""Creating tensors: from data, filled, ranges, random; moving between devices and dtypes.

Random numbers come from ``Generator`` objects, one default per device (numpy's Philox bit
generator on the CPU, Philox4x32-10 counters on each cuda device); ``tk.manual_seed`` reseeds
them all so programs are reproducible. The streams are not PyTorch's (same distributions,
other numbers).
"""
from __future__ import annotations

import builtins
import math
import threading
import warnings

import numpy as np

from .. import _dispatch
from .. import dtypes as D
from .._storage import PINNED, TRANSFERS, Storage, allocate
from .._tensor import Size, Tensor, contiguous_strides
from ..device import CPU, device as Device


def _device(device) -> Device:
    return CPU if device is None else Device(device)


def _size(size, op: str) -> tuple:
    """Accept f(2, 3), f((2, 3)), f([2, 3]) and f(tk.Size(...))."""
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = size[0]
    out = []
    for s in size:
        if isinstance(s, Tensor):
            s = s.__index__()
        if not isinstance(s, (int, np.integer)) or isinstance(s, bool):
            raise TypeError(f"{op}(): size must be a sequence of ints, got {type(s).__name__} in {list(size)}")
        if s < 0:
            raise RuntimeError(f"{op}(): trying to create tensor with negative dimension {s}: {list(size)}")
        out.append(int(s))
    return tuple(out)


_layouts: dict = {}      # shape -> (numel, Size, contiguous strides); a program repeats its shapes


def new_tensor(shape: tuple, dtype: D.DType, device: Device) -> Tensor:
    """A contiguous tensor with uninitialised memory (internal fast path: arguments checked)."""
    layout = _layouts.get(shape) if type(shape) is not list else None
    if layout is None:
        n = 1
        for s in shape:
            n *= s
        if len(_layouts) >= 4096:
            _layouts.clear()
        layout = _layouts[tuple(shape)] = (n, Size(shape), contiguous_strides(shape))
    n, size, strides = layout
    t = Tensor._make(allocate(n, dtype.numpy, device), 0, size, strides, dtype)
    t._contig = True
    return t


def empty(*size, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """A tensor with uninitialised memory."""
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = size[0]
    shape = size if all(type(s) is int and s >= 0 for s in size) else _size(size, "empty")
    dtype = D.get_default_dtype() if dtype is None else D.to_dtype(dtype)
    t = new_tensor(shape, dtype, device if type(device) is Device else _device(device))
    if requires_grad:
        t.requires_grad_()
    return t


def resize_out(out: Tensor, shape) -> None:
    """Give an ``out=`` tensor the result's shape, as PyTorch does (reallocating if needed)."""
    if tuple(out._shape) == tuple(shape):
        return
    if out.numel() != 0:
        warnings.warn(f"An output with one or more elements was resized since it had shape {list(out._shape)}, "
                      f"which does not match the required output shape {list(shape)}.", stacklevel=3)
    n = 1
    for s in shape:
        n *= s
    out._storage = allocate(n, out.dtype.numpy, out.device)
    out._offset, out._shape, out._strides = 0, Size(shape), contiguous_strides(shape)
    out._contig = out._array = None


def full(size, fill_value, *, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """A tensor of ``size`` filled with ``fill_value`` (dtype inferred from it, as PyTorch)."""
    if dtype is None:
        dtype = D.scalar_dtype(fill_value)
    t = _fresh(fill_(empty(_size((size,), "full"), dtype=dtype, device=device), fill_value))
    return t.requires_grad_() if requires_grad else t


def _fresh(t: Tensor) -> Tensor:
    """``t`` was just allocated and filled here: no one else has seen its storage, so its version
    counter starts at 0, as a new tensor's does in PyTorch (the fill's bump does not count)."""
    t._storage.version = 0
    return t


def zeros(*size, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """A tensor of zeros."""
    return full(_size(size, "zeros"), 0, dtype=dtype or D.get_default_dtype(), device=device,
                requires_grad=requires_grad)


def ones(*size, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """A tensor of ones."""
    return full(_size(size, "ones"), 1, dtype=dtype or D.get_default_dtype(), device=device,
                requires_grad=requires_grad)


def _like(fn, input, dtype, device, requires_grad, *args):
    return fn(input.shape, *args, dtype=dtype or input.dtype, device=device or input.device,
              requires_grad=requires_grad)


def empty_like(input, *, dtype=None, device=None, requires_grad=False):
    return _like(empty, input, dtype, device, requires_grad)


def zeros_like(input, *, dtype=None, device=None, requires_grad=False):
    return _like(zeros, input, dtype, device, requires_grad)


def ones_like(input, *, dtype=None, device=None, requires_grad=False):
    return _like(ones, input, dtype, device, requires_grad)


def full_like(input, fill_value, *, dtype=None, device=None, requires_grad=False):
    return _like(lambda s, *a, **k: full(s, fill_value, **k), input, dtype, device, requires_grad)


def fill_(input: Tensor, value) -> Tensor:
    """Fill ``input`` with ``value`` in place."""
    from .pointwise import copy
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise RuntimeError(f"fill_ only supports 0-dimension value tensor but got tensor with {value.ndim} dimensions")
        value = value.item()
    copy(_scalar_tensor(value, input.dtype), _into=input)
    return input


def zero_(input: Tensor) -> Tensor:
    return fill_(input, 0)


def _scalar_tensor(value, dtype: D.DType) -> Tensor:
    # a host 0-d tensor holding value in dtype: the source of fills (acts as a scalar on any device)
    a = np.empty((), dtype.numpy)
    a[()] = value
    return Tensor._make(Storage(a.reshape(1), CPU), 0, (), (), dtype)


# ---- from data --------------------------------------------------------------------------------
def _from_host(array: np.ndarray, dtype: D.DType, device=None, requires_grad: bool = False) -> Tensor:
    """A new tensor owning a copy of ``array`` converted to ``dtype``, on ``device``."""
    a = np.array(array, dtype=dtype.numpy, order="C", copy=True)
    t = Tensor._make(Storage(a.reshape(-1), CPU), 0, a.shape, contiguous_strides(a.shape), dtype)
    dev = _device(device)
    if dev.type != "cpu":
        t = to(t, dev)
    return t.requires_grad_() if requires_grad else t


def _to_numpy_data(data):
    """Python data (nested lists of numbers / tensors, numpy arrays) as a numpy array and the
    dtype PyTorch infers for it (None: numpy's, with Python floats taking the default dtype)."""
    if isinstance(data, Tensor):
        return data._host(), data.dtype
    if isinstance(data, (np.ndarray, np.generic)):
        return np.asarray(data), None if data.dtype.kind == "c" else D.from_numpy_dtype(data.dtype)
    typed = None
    if isinstance(data, (list, tuple)):
        leaves = list(_flat_items(data))
        if any(isinstance(x, (Tensor, np.ndarray, np.generic)) for x in leaves):
            typed = _promote_leaves(leaves)     # as PyTorch: the elements' dtypes promoted together
            if any(isinstance(x, Tensor) for x in leaves):
                data = _tensors_to_lists(data)
    try:
        a = np.array(data)
    except ValueError as e:
        raise ValueError(f"tensor(): could not build a tensor from ragged or mixed data ({e})") from None
    if a.dtype == object or a.dtype.kind in "USV":
        raise TypeError(f"tensor(): can't convert data of type {type(data).__name__} to a tensor; "
                        f"expected numbers or nested sequences of numbers")
    return a, typed


def _promote_leaves(leaves) -> D.DType | None:
    out = None
    for x in leaves:
        if isinstance(x, Tensor):
            dt = x.dtype
        elif isinstance(x, (np.ndarray, np.generic)):
            if x.dtype not in D._BY_NUMPY:
                return None                     # let the numpy conversion report it
            dt = D.from_numpy_dtype(x.dtype)
        else:
            try:
                dt = D.scalar_dtype(x)
            except TypeError:
                return None
        out = dt if out is None else D.promote_types(out, dt)
    return out


def _flat_items(data):
    for x in data:
        if isinstance(x, (list, tuple)):
            yield from _flat_items(x)
        else:
            yield x


def _tensors_to_lists(data):
    if isinstance(data, Tensor):
        return data.tolist()
    if isinstance(data, (list, tuple)):
        return [_tensors_to_lists(x) for x in data]
    return data


def _infer_dtype(a: np.ndarray) -> D.DType:
    """The dtype of numpy-converted Python data: Python floats take the default dtype."""
    if a.dtype.kind == "f":
        return D.get_default_dtype()
    if a.dtype.kind == "c":
        raise TypeError("complex tensors are not supported")
    return D.from_numpy_dtype(a.dtype)


def tensor(data, *, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """A new tensor copying ``data`` (a number, nested sequences, a numpy array, a tensor).

    Python floats become the default dtype, ints int64, bools bool; numpy arrays keep theirs.

    Example::

        >>> tk.tensor([[1, 2], [3, 4]], dtype=tk.float16)
        tensor([[1., 2.],
                [3., 4.]], dtype=tk.float16)
    """
    a, inferred = _to_numpy_data(data)
    dt = D.to_dtype(dtype) if dtype is not None else inferred or _infer_dtype(a)
    if dt.category == 2 and a.dtype.kind in "iub":
        a = a.astype(np.float64)
    return _from_host(a, dt, device, requires_grad)


def as_tensor(data, dtype=None, device=None) -> Tensor:
    """Like ``tensor`` but shares memory when ``data`` already is a tensor or a numpy array of
    the requested dtype on the CPU (no copy)."""
    dt = None if dtype is None else D.to_dtype(dtype)
    dev = None if device is None else Device(device)
    if isinstance(data, Tensor):
        return to(data, device=dev, dtype=dt)
    if isinstance(data, np.ndarray) and (dev is None or dev.type == "cpu") and \
            (dt is None or dt.numpy == data.dtype) and data.dtype in D._BY_NUMPY:
        if all(s >= 0 for s in data.strides) and all(s % data.itemsize == 0 for s in data.strides):
            return from_numpy(data)
    return tensor(data, dtype=dt, device=dev)


def from_numpy(ndarray: np.ndarray) -> Tensor:
    """A CPU tensor sharing memory with ``ndarray``: writes through either are seen by both.

    Example::

        >>> a = np.zeros(3); t = tk.from_numpy(a); t[0] = 1; a[0]
        1.0
    """
    if not isinstance(ndarray, np.ndarray):
        raise TypeError(f"from_numpy(): expected np.ndarray, got {type(ndarray).__name__}")
    dt = D.from_numpy_dtype(ndarray.dtype)
    isz = ndarray.itemsize
    if any(s < 0 for s in ndarray.strides):
        raise ValueError("from_numpy(): at least one stride of the numpy array is negative; negative strides "
                         "are not supported, copy the array first (array.copy())")
    if any(s % isz for s in ndarray.strides):
        raise ValueError(f"from_numpy(): strides {ndarray.strides} are not a multiple of the element size {isz}")
    strides = tuple(s // isz for s in ndarray.strides)
    extent = 1 + builtins.sum((n - 1) * s for n, s in zip(ndarray.shape, strides)) if ndarray.size else 0
    # a 1-D view of the memory the array spans, starting at its first element
    flat = np.lib.stride_tricks.as_strided(ndarray, shape=(extent,), strides=(isz,)) if extent else \
        np.empty(0, ndarray.dtype)
    return Tensor._make(Storage(flat, CPU), 0, ndarray.shape, strides, dt)


# ---- ranges --------------------------------------------------------------------------------------
def arange(start, end=None, step=1, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Values from ``start`` to ``end`` (exclusive) by ``step``; int64 unless a bound is a float."""
    if end is None:
        start, end = 0, start
    start, end, step = (x.item() if isinstance(x, Tensor) else x for x in (start, end, step))
    if step == 0:
        raise RuntimeError("arange(): step must be nonzero")
    if (end - start) * step < 0:
        raise RuntimeError(f"arange(): upper bound and larger bound inconsistent with step sign "
                           f"(start={start}, end={end}, step={step})")
    if dtype is None:
        dtype = D.get_default_dtype() if any(isinstance(x, float) for x in (start, end, step)) else D.int64
    dtype = D.to_dtype(dtype)
    n = math.ceil((end - start) / step)
    values = start + np.arange(n, dtype=np.float64 if dtype.is_floating_point else np.int64) * step
    return _from_host(values, dtype, device, requires_grad)


def linspace(start, end, steps: int, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    """``steps`` values evenly spaced from ``start`` to ``end`` inclusive."""
    start, end = (x.item() if isinstance(x, Tensor) else x for x in (start, end))
    if steps < 0:
        raise RuntimeError(f"linspace(): number of steps must be non-negative, got {steps}")
    dtype = D.to_dtype(dtype) if dtype is not None else D.get_default_dtype()
    # PyTorch fills the first half from start and the second half back from end (symmetric rounding)
    i = np.arange(steps, dtype=np.float64)
    step = (end - start) / (steps - 1) if steps > 1 else 0.0
    values = np.where(i < steps // 2, start + step * i, end - step * (steps - 1 - i)) if steps > 1 else \
        np.full(steps, start, np.float64)
    if dtype.category < 2:
        values = np.trunc(values) if dtype.category == 1 else values
    return _from_host(values, dtype, device, requires_grad)


def logspace(start, end, steps: int, base: float = 10.0, *, dtype=None, device=None, requires_grad=False):
    """``base ** linspace(start, end, steps)``."""
    dtype = D.to_dtype(dtype) if dtype is not None else D.get_default_dtype()
    values = np.power(base, linspace(start, end, steps, dtype=D.float64)._np())
    return _from_host(values, dtype, device, requires_grad)


def eye(n: int, m: int | None = None, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    """An ``n x m`` matrix with ones on the diagonal."""
    dtype = D.to_dtype(dtype) if dtype is not None else D.get_default_dtype()
    if n < 0 or (m is not None and m < 0):
        raise RuntimeError(f"eye(): n and m must be greater or equal to 0, got n={n}, m={m}")
    return _from_host(np.eye(n, n if m is None else m), dtype, device, requires_grad)


# ---- random ------------------------------------------------------------------------------------
# Random ops fill a tensor through the dispatcher's fill primitives, each with a kernel per
# device: "uniform_" (uniform in [low, high)), "normal_" (mean + std * N(0, 1)), "random_"
# (integers in [low, high)), "bernoulli_" (p a number or a tensor of out's shape) and
# "randperm". Kernels take a contiguous output and the Generator of its device.
_DEFAULT_SEED = 67280421310721          # PyTorch's default seed
_MASK64 = (1 << 64) - 1


class Generator:
    """A random stream of one device, passed to random functions as ``generator=``.

    * ``cpu``: numpy's Philox counter-based bit generator (``cpu/random.py``). Not PyTorch's
      stream (its CPU generator is a Mersenne twister): same distributions, other numbers.
    * ``cuda``: Philox4x32-10 (``kernels/random.py``) with PyTorch's state: (seed, offset). A
      call uses the counters [offset, offset + used) and moves the offset past them (rounded up
      to a multiple of 4), so two calls never share numbers and ``get_state`` / ``set_state``
      replay exactly; the same seed gives the same numbers on every GPU (and the emulated
      device). Each cuda device has a default one (``tk.cuda.manual_seed``); it is independent
      of the CPU's. The numbers are not PyTorch's (another layout of the counters).

    Example::

        >>> g = tk.Generator().manual_seed(0); tk.rand(2, generator=g)
        >>> g = tk.Generator(device="cuda").manual_seed(0)
        >>> tk.randn(2, device="cuda", generator=g)
    """

    def __init__(self, device="cpu"):
        device = Device(device)
        if device.type != "cpu" and device.index is None:
            from ..cuda import current_device
            device = Device(device.type, current_device())
        self.device = device
        self._lock = threading.Lock()          # two threads must not get the same counters
        self.manual_seed(_DEFAULT_SEED)

    def manual_seed(self, seed: int) -> "Generator":
        """Restart the stream from ``seed``; returns the generator."""
        seed = int(seed)
        if self.device.type == "cpu":
            self._seed = seed
            self._np = np.random.Generator(np.random.Philox(seed & _MASK64))
        else:
            self._seed, self._offset = seed & _MASK64, 0
        return self

    def seed(self) -> int:
        """Reseed from the OS's entropy; returns the new seed."""
        s = int(np.random.SeedSequence().entropy) & ((1 << 63) - 1)
        self.manual_seed(s)
        return s

    def initial_seed(self) -> int:
        return self._seed

    def get_state(self) -> Tensor:
        """The stream's state as a uint8 CPU tensor (to restore with ``set_state``); for a cuda
        generator 16 bytes, the seed and the offset as little-endian uint64 (PyTorch's layout)."""
        if self.device.type != "cpu":
            with self._lock:
                return tensor(np.array([self._seed, self._offset], "<u8").view(np.uint8))
        import json
        text = json.dumps({"seed": self._seed, "state": self._np.bit_generator.state},
                          default=lambda o: o.tolist() if isinstance(o, np.ndarray) else int(o))
        return tensor(np.frombuffer(text.encode(), np.uint8).copy())

    def set_state(self, state: Tensor) -> "Generator":
        if self.device.type != "cpu":
            if not isinstance(state, Tensor) or state.dtype is not D.uint8 or state.numel() != 16:
                got = f"a {state.dtype} tensor of {state.numel()} elements" if isinstance(state, Tensor) else \
                    type(state).__name__
                raise RuntimeError(f"set_state: a {self.device.type} generator's state is a uint8 tensor of 16 "
                                   f"bytes (seed, offset), as get_state() returns; got {got}")
            seed, offset = (int(x) for x in np.ascontiguousarray(state._host()).reshape(16).view("<u8"))
            with self._lock:
                self._seed, self._offset = seed, offset
            return self
        import json
        d = json.loads(bytes(state._host()).decode())
        self._seed = d["seed"]
        bg = np.random.Philox()
        bg.state = d["state"]
        self._np = np.random.Generator(bg)
        return self

    def _philox(self, counters: int) -> tuple:
        """(seed, offset) for a call that uses ``counters`` Philox counters; moves the offset
        past them, rounded up to a multiple of 4 (as PyTorch). Device generators only."""
        with self._lock:
            offset = self._offset
            self._offset = (offset + counters + 3) // 4 * 4 & _MASK64
        return self._seed, offset

    def __repr__(self) -> str:
        return f"<tk.Generator device={self.device}>"


default_generator = Generator()
_device_generators: dict = {}   # Device("cuda", i) -> its default generator, made on first use
_device_seeds: dict = {}        # device type -> the seed its default generators start from


def default_generator_for(device) -> Generator:
    """The default generator of ``device`` (the CPU's, or one per cuda device, as PyTorch)."""
    device = Device(device)
    if device.type == "cpu":
        return default_generator
    if device.index is None:
        from ..cuda import current_device
        device = Device(device.type, current_device())
    g = _device_generators.get(device)
    if g is None:
        g = _device_generators[device] = Generator(device).manual_seed(_device_seeds.get(device.type, _DEFAULT_SEED))
    return g


def _seed_device_generators(device_type: str, seed: int) -> None:
    """Seed the default generators of every device of ``device_type`` (also those made later)."""
    _device_seeds[device_type] = int(seed)
    for device, g in list(_device_generators.items()):
        if device.type == device_type:
            g.manual_seed(seed)


def manual_seed(seed: int) -> Generator:
    """Seed the default random streams: the CPU's, and every device's (``tk.cuda.manual_seed_all``)."""
    for fn in _SEED_HOOKS:
        fn(int(seed))
    return default_generator.manual_seed(seed)


def seed() -> int:
    """Seed the default streams (CPU and devices, as ``manual_seed``) from the OS's entropy; returns the seed."""
    s = default_generator.seed()
    for fn in _SEED_HOOKS:
        fn(s)
    return s


def initial_seed() -> int:
    return default_generator.initial_seed()


def get_rng_state() -> Tensor:
    return default_generator.get_state()


def set_rng_state(state: Tensor) -> None:
    default_generator.set_state(state)


_SEED_HOOKS: list = []   # device backends reseed their generators through this (tensorkit.cuda)


def _generator_for(device: Device, generator, op: str) -> Generator:
    if generator is None:
        return default_generator_for(device)
    if not isinstance(generator, Generator):
        raise TypeError(f"{op}(): generator must be a tk.Generator, got {type(generator).__name__}")
    if generator.device.type != device.type:
        raise RuntimeError(f"{op}(): expected a generator of device type '{device.type}' for a tensor on {device}, "
                           f"got one of {generator.device}; make it with tk.Generator(device='{device.type}')")
    return generator


def _fill(prim: str, out: Tensor, *params, generator=None, op: str | None = None) -> Tensor:
    """Run the random fill primitive ``prim`` into ``out`` (through a contiguous buffer when
    ``out`` is a strided view); ``params`` as the kernels take them."""
    gen = _generator_for(out.device, generator, op or prim)
    if _dispatch.write_observers:        # autograd: refuse writes into leaves that require grad
        _dispatch.notify_write(prim, out, ())
    if out.numel():
        dest = out if out.is_contiguous() else new_tensor(out._shape, out.dtype, out.device)
        _dispatch.lookup(prim, out.device.type, out.dtype)(dest, *params, gen)
        if dest is not out:
            from .pointwise import copy
            copy(dest, _into=out)
    if _dispatch.observers:
        _dispatch.notify(prim, tuple(p for p in params if isinstance(p, Tensor)), (out,), {"params": params})
    return out


def _random_vjp(g, node):
    return (None,) * len(node.next_functions)       # random values: no gradient to anything


for _prim in ("uniform_", "normal_", "bernoulli_", "random_"):
    _dispatch.defvjp(_prim, inputs=False)(_random_vjp)


def _float_dtype(dtype, op: str) -> D.DType:
    dtype = D.to_dtype(dtype) if dtype is not None else D.get_default_dtype()
    if not dtype.is_floating_point:
        raise RuntimeError(f"{op}(): expected a floating point dtype, got {dtype}")
    return dtype


def _new_random(op: str, prim: str, size, dtype: D.DType, device, generator, requires_grad, *params) -> Tensor:
    out = _fill(prim, new_tensor(_size(size, op), dtype, _device(device)), *params, generator=generator, op=op)
    return out.requires_grad_() if requires_grad else out


def rand(*size, generator=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Uniform random numbers in [0, 1), never 1 (float16/bfloat16 draw multiples of 2**-11 /
    2**-8, as PyTorch, so rounding cannot reach 1).

    Example::

        >>> tk.manual_seed(0); tk.rand(2, 3, device="cuda")
    """
    return _new_random("rand", "uniform_", size, _float_dtype(dtype, "rand"), device, generator, requires_grad,
                       0.0, 1.0)


def randn(*size, generator=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Standard normal random numbers (on cuda: Box-Muller on Philox draws)."""
    return _new_random("randn", "normal_", size, _float_dtype(dtype, "randn"), device, generator, requires_grad,
                       0.0, 1.0)


def _check_int_range(op: str, low: int, high: int, dtype: D.DType) -> None:
    """[low, high) must be non-empty and its values fit ``dtype`` (and int64), as in PyTorch."""
    if high <= low:
        raise RuntimeError(f"{op}(): random_ expects 'from' to be less than 'to', but got from={low} >= to={high}")
    if dtype is D.bool_:
        lo, hi = 0, 1
    elif dtype.is_floating_point:
        lo, hi = -(1 << 63), (1 << 63) - 1
    else:
        info = np.iinfo(dtype.numpy)
        lo, hi = int(info.min), int(info.max)
    if low < lo or high - 1 > hi:
        raise RuntimeError(f"{op}(): the range [{low}, {high}) does not fit dtype {dtype}, whose values are "
                           f"{lo}..{hi}; pick a wider dtype (dtype=tk.int64)")


def randint(low, high=None, size=None, *, generator=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Random integers in [low, high) (``randint(high, size)`` starts at 0); int64 by default.

    On cuda, ranges up to 2**16 take 32 random bits per value and wider ones 64, so no value is
    more likely than another by more than 2**-16 (relative) for small ranges and 2**-32 for
    ranges up to 2**32 (ranges near 2**63 have more bias, as with PyTorch's modulo).
    """
    if size is None:
        if isinstance(high, (tuple, list)):
            low, high, size = 0, low, high
        else:
            raise TypeError("randint(): missing the size argument, e.g. randint(0, 10, (3,))")
    elif high is None:
        low, high = 0, low
    low, high = (x.__index__() if isinstance(x, Tensor) else x for x in (low, high))
    dtype = D.to_dtype(dtype) if dtype is not None else D.int64
    _check_int_range("randint", low, high, dtype)
    return _new_random("randint", "random_", (size,), dtype, device, generator, requires_grad, int(low), int(high))


def randperm(n: int, *, generator=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A random permutation of 0..n-1.

    On cuda the order of random keys drawn on the device, sorted on the host: unlike the other
    random functions, this waits for the device.
    """
    if n < 0:
        raise RuntimeError(f"randperm(): n must be non-negative, got {n}")
    dtype = D.to_dtype(dtype) if dtype is not None else D.int64
    dev = _device(device)
    perm = _dispatch.lookup("randperm", dev.type, D.int64)(int(n), _generator_for(dev, generator, "randperm"), dev)
    if dtype is not D.int64:
        perm = to(perm, dtype)
    return perm.requires_grad_() if requires_grad else perm


def normal(mean=0.0, std=1.0, size=None, *, generator=None, dtype=None, device=None, requires_grad=False):
    """Normal random numbers; ``mean`` and ``std`` may be tensors (broadcast together) or numbers
    (then give ``size``).

    A negative ``std`` is an error; in a cuda tensor it is not checked (that would wait for the
    device) and acts as its absolute value.
    """
    if not isinstance(mean, Tensor) and not isinstance(std, Tensor):
        if size is None:
            raise TypeError("normal(): with number mean and std, give a size")
        if std < 0:
            raise RuntimeError(f"normal(): std must be >= 0, got {std}")
        return _new_random("normal", "normal_", (size,), _float_dtype(dtype, "normal"), device, generator,
                           requires_grad, float(mean), float(std))
    ref = mean if isinstance(mean, Tensor) else std
    if isinstance(std, Tensor):
        if std.device.type == "cpu" and np.any(std._np() < 0):
            raise RuntimeError("normal(): std must be >= 0")
    elif std < 0:
        raise RuntimeError(f"normal(): std must be >= 0, got {std}")
    tensors = [t for t in (mean, std) if isinstance(t, Tensor)]
    dev = next((t.device for t in tensors if t.device.type != "cpu"), ref.device)
    shape = np.broadcast_shapes(*[tuple(t._shape) for t in tensors])
    from .pointwise import add, mul
    out = _fill("normal_", new_tensor(shape, _float_dtype(dtype or ref.dtype, "normal"), dev), 0.0, 1.0,
                generator=generator, op="normal")
    add(mul(out, std, _into=out), mean, _into=out)
    if device is not None:
        out = to(out, device)
    return out.requires_grad_() if requires_grad else out


def rand_like(input: Tensor, *, dtype=None, device=None, requires_grad=False, generator=None) -> Tensor:
    """``rand`` with ``input``'s shape (and its dtype and device unless given)."""
    return _like(lambda s, **k: rand(s, generator=generator, **k), input, dtype, device, requires_grad)


def randn_like(input: Tensor, *, dtype=None, device=None, requires_grad=False, generator=None) -> Tensor:
    """``randn`` with ``input``'s shape (and its dtype and device unless given)."""
    return _like(lambda s, **k: randn(s, generator=generator, **k), input, dtype, device, requires_grad)


def randint_like(input: Tensor, low, high=None, *, dtype=None, device=None, requires_grad=False,
                 generator=None) -> Tensor:
    """``randint`` with ``input``'s shape (and its dtype and device unless given);
    ``randint_like(x, high)`` starts at 0."""
    if high is None:
        low, high = 0, low
    return _like(lambda s, **k: randint(low, high, s, generator=generator, **k), input, dtype, device,
                 requires_grad)


def uniform_(input: Tensor, a: float = 0.0, b: float = 1.0, *, generator=None) -> Tensor:
    """Fill with uniform random numbers in [a, b) (a value that rounds to b in the tensor's
    dtype becomes a, as in PyTorch)."""
    if not a <= b:
        raise RuntimeError(f"uniform_(): expects a [from, to) range, but found from={a} > to={b}")
    input._bump_version()
    return _fill("uniform_", input, float(a), float(b), generator=generator)


def normal_(input: Tensor, mean: float = 0.0, std: float = 1.0, *, generator=None) -> Tensor:
    """Fill with normal random numbers."""
    if std < 0:
        raise RuntimeError(f"normal_(): std must be >= 0, got {std}")
    input._bump_version()
    return _fill("normal_", input, float(mean), float(std), generator=generator)


def _probabilities(p, out: Tensor, op: str):
    """bernoulli's p as its kernels take it: a number in [0, 1], or a contiguous tensor of
    ``out``'s shape on its device. A tensor's values are checked on the CPU only (on cuda that
    would wait for the device; there values above 1 act as 1, below 0 and NaN as 0)."""
    if not isinstance(p, Tensor):
        if not 0 <= p <= 1:
            raise RuntimeError(f"{op}: p must be in [0, 1], got {p}")
        return float(p)
    if p.device != out.device:
        raise RuntimeError(f"{op}: expected the probabilities on {out.device}, like the output, but they are on "
                           f"{p.device}")
    if p.device.type == "cpu":
        a = p._np()
        if np.any((a < 0) | (a > 1)):
            raise RuntimeError(f"{op}: all probabilities must be in [0, 1]")
    if p._shape != out._shape:
        from .view import broadcast_to
        p = broadcast_to(p, out._shape)
    return contiguous(p)


def bernoulli(input: Tensor, p=None, *, generator=None) -> Tensor:
    """0/1 samples with probabilities ``input`` (or the number ``p``), in ``input``'s dtype."""
    out = new_tensor(input._shape, input.dtype, input.device)
    return _fill("bernoulli_", out, _probabilities(input if p is None else p, out, "bernoulli"),
                 generator=generator, op="bernoulli")


def bernoulli_(input: Tensor, p=0.5, *, generator=None) -> Tensor:
    """Fill ``input`` (any dtype) with 1 with probability ``p`` (a number, or a tensor that
    broadcasts to it), else 0: the mask behind dropout."""
    probs = _probabilities(p, input, "bernoulli_")
    input._bump_version()
    return _fill("bernoulli_", input, probs, generator=generator)


# ---- copies, casts, devices ------------------------------------------------------------------------
def copy_(input: Tensor, src, non_blocking: bool = False) -> Tensor:
    """Copy ``src`` (broadcast to ``input``'s shape, cast to its dtype) into ``input``."""
    from .pointwise import copy
    if not isinstance(src, Tensor):
        src = _scalar_tensor(src, input.dtype)
    if src.device != input.device and not (src.ndim == 0 and src.device.type == "cpu"):
        transfer = TRANSFERS.get((src.device.type, input.device.type))
        if transfer is None:
            raise RuntimeError(f"copy_: no transfer from {src.device} to {input.device}: is the device's "
                               f"runtime available (tk.cuda.is_available())?")
        src = contiguous(src)
        # A CPU kernel reads the moved copy right away, so a copy into host memory must have landed;
        # into a device, the kernel is queued behind the transfer on the same stream.
        moved = transfer(src._storage, src._offset, src.numel(), input.device,
                         non_blocking and input.device.type != "cpu")
        moved = Tensor._make(moved, 0, src.shape, contiguous_strides(src.shape), src.dtype)
        if _dispatch.observers:
            _dispatch.notify("to_device", (src,), (moved,), {})
        src = moved
    copy(src, _into=input)
    return input


def to_args(args, device=None, dtype=None, non_blocking: bool = False) -> tuple:
    """(device, dtype, non_blocking) from the positional arguments of ``Tensor.to`` and
    ``Module.to``: a tensor (its device and dtype), a dtype, a device (str, device or int),
    a bool (non_blocking); keyword values given by the caller win over a tensor's."""
    for a in args:
        if isinstance(a, Tensor):
            dtype, device = dtype or a.dtype, device or a.device
        elif isinstance(a, D.DType) or a in (float, int, bool):
            dtype = a
        elif isinstance(a, bool):
            non_blocking = a
        elif isinstance(a, (str, Device, int)):
            device = a
        else:
            raise TypeError(f"to(): expected a device, a dtype or a tensor, got {a!r}")
    return device, dtype, non_blocking


def to(input: Tensor, *args, dtype=None, device=None, non_blocking: bool = False, copy: bool = False,
       memory_format=None) -> Tensor:
    """``to(dtype)``, ``to(device)``, ``to(device, dtype)``, ``to(other_tensor)``: returns
    ``input`` itself when nothing changes (unless ``copy=True``)."""
    device, dtype, non_blocking = to_args(args, device, dtype, non_blocking)
    dt = input.dtype if dtype is None else D.to_dtype(dtype)
    dev = input.device if device is None else Device(device)
    if dev.type == "cuda" and dev.index is None and input.device.type == "cuda":
        dev = input.device
    if dt is input.dtype and dev == input.device and not copy:
        return input
    transfer = TRANSFERS.get((input.device.type, dev.type)) if dev != input.device and dt is input.dtype else None
    if transfer is not None:          # a plain move: the transferred copy is the result, no kernel after it
        src = contiguous(input)
        moved = transfer(src._storage, src._offset, src.numel(), dev, non_blocking)
        r = _fresh(Tensor._make(moved, 0, src.shape, contiguous_strides(src.shape), dt))
        if _dispatch.observers:
            _dispatch.notify("to_device", (src,), (r,), {})
        return r
    out = empty(input.shape, dtype=dt, device=dev)
    return _fresh(copy_(out, input, non_blocking))


# a move between devices: the gradient moves back (the engine puts gradients on their input's device)
_dispatch.defvjp("to_device", inputs=False)(lambda g, node: (g,))


def pin_memory(input: Tensor, device=None) -> Tensor:
    """A copy of CPU tensor ``input`` in page-locked ("pinned") host memory (``input`` itself if it
    is pinned already). Copies between pinned memory and a GPU run asynchronously with
    ``non_blocking=True``; the result is an ordinary CPU tensor (``numpy()`` shares its memory), and
    the memory goes back to tensorkit's pinned cache when the last reference dies.

    Without CUDA this raises RuntimeError, as PyTorch does. On the emulated cuda device
    (TENSORKIT_INTERPRET=1), which has no page-locked memory and copies synchronously, it returns
    an ordinary copy and ``is_pinned()`` stays False: code written for a GPU runs unchanged, and
    nothing claims a pinning that did not happen.

    Example::

        >>> x = tk.randn(1024).pin_memory()
        >>> y = x.to("cuda", non_blocking=True)     # returns before the copy is done
    """
    if input.device.type != "cpu":
        raise RuntimeError(f"cannot pin '{input.type()}' only dense CPU tensors can be pinned")
    if is_pinned(input):
        return input
    out = Tensor._make(PINNED["allocate"](input.numel(), input.dtype.numpy), 0, input.shape,
                       contiguous_strides(input.shape), input.dtype)
    return _fresh(copy_(out, input))


def is_pinned(input: Tensor, device=None) -> bool:
    """Whether ``input`` is in page-locked host memory (False for device tensors, on the emulated
    device, and without CUDA)."""
    check = PINNED.get("is_pinned")
    return input.device.type == "cpu" and input.numel() > 0 and check is not None and check(input.data_ptr())


def contiguous(input: Tensor, memory_format=None) -> Tensor:
    """``input`` if it is contiguous, else a contiguous copy."""
    return input if input.is_contiguous() else clone(input)


def clone(input: Tensor, *, memory_format=None) -> Tensor:
    """A contiguous copy."""
    return _fresh(copy_(empty(input.shape, dtype=input.dtype, device=input.device), input))
