"""Autocast: inside ``tk.autocast(...)`` listed ops run in a lower precision or in float32.

Each op is marked once, at its one definition in ``ops/`` (or ``nn/functional.py``), with the
policy PyTorch's autocast gives it:

* ``"lower"``   -- the autocast dtype (float16 / bfloat16): matmul, mm, bmm, addmm, baddbmm, mv,
  addmv, linear, conv1d/conv2d/conv_transpose2d, prelu, einsum, scaled_dot_product_attention;
* ``"float32"`` -- float32: exp, log, pow, rsqrt, reciprocal, sum, prod, cumsum, norm, softmax,
  log_softmax, layer_norm, group_norm, the losses, ...;
* ``"promote"`` -- the widest floating dtype among the inputs: dot, bilinear (atan2, also on
  PyTorch's list, promotes by itself);
* ``"keep"``    -- not listed, but a composite over listed ops (mean calls sum, mv calls
  matmul): it runs in its inputs' dtypes, as the native op does in PyTorch.

with the device types the policy applies to (PyTorch's CPU lists are shorter than its CUDA
lists: on the CPU, softmax or sum of bfloat16 stays bfloat16, and so does layer_norm / rms_norm /
group_norm of a bfloat16 input with float32 weights: their kernels take that mix, as PyTorch's do).
Pointwise primitives carry the policy as ``Pointwise.autocast``; everything else is wrapped by
``autocast_to``. On a device type the op is not listed for, it runs as ``"keep"``.

Only floating tensors on the autocast device type are cast; integer, bool and float64 tensors
and tensors on other devices are left alone, and so are calls with an explicit ``dtype=`` or
``out=`` and in-place ops (as in PyTorch). A cast is an ordinary differentiable ``.to(dtype)``,
so gradients reach float32 parameters in float32. While a listed op runs, the ops it calls are
not autocast again (PyTorch's autocast kernels redispatch below the autocast key).

Cost when autocast is off: ``active[0]`` (the count of enabled autocast regions in all
threads) is tested once per op call; the thread-local state is read only when it is
nonzero.

Where tensorkit differs from PyTorch, deliberately:

* a dtype other than float16/bfloat16, or an unknown device type, raises (PyTorch warns and
  silently disables autocast for a bad dtype);
* the weight-cast cache is keyed on the leaf's version counter and on grad mode: an in-place
  update of the weight inside the region (or a first use under ``no_grad``) does not hand out
  a stale copy, or a copy that is cut off from the graph, as PyTorch's cache does;
* ``binary_cross_entropy`` runs in float32 instead of raising on CUDA;
* ``dot`` promotes mixed inputs on the CPU too, where PyTorch raises;
* ``autocast("cuda")`` without a GPU is not disabled with a warning: it simply has no cuda
  tensors to cast;
* nn.LSTM / GRU / RNN run in the autocast dtype on both device types (``nn/modules/rnn.py``'s
  ``_layers`` is marked "lower"); PyTorch's CPU GRU, not on its CPU list, returns float32.

This module imports nothing from ``ops/`` at load time: ``ops/`` imports it.
"""
from __future__ import annotations

import functools
import inspect
import threading

from .. import dtypes as D

__all__ = ["autocast", "autocast_to", "custom_bwd", "custom_fwd", "is_autocast_enabled", "get_autocast_dtype"]

_DEVICE_TYPES = ("cuda", "cpu")
_DEFAULT_DTYPE = {"cuda": D.float16, "cpu": D.bfloat16}
_LOW = (D.float16, D.bfloat16)
POLICIES = ("lower", "float32", "promote", "keep")

# Enabled autocast regions, all threads together, in a list so ops can import it by name:
# ``active[0]`` is the one test an op makes when autocast is off.
active = [0]
_active_lock = threading.Lock()


class _State(threading.local):
    def __init__(self):
        self.enabled = {"cuda": False, "cpu": False}
        self.dtype = dict(_DEFAULT_DTYPE)
        self.cache_enabled = True
        self.nesting = 0          # autocast regions entered (enabled or not); the cache lives while > 0
        self.inside = False       # a listed op's body is running: the ops it calls are not cast again
        self.cache: dict = {}     # id(leaf) -> (leaf, version, dtype, grad mode, cast copy)


_state = _State()


def _device_type(device_type) -> str:
    if device_type not in _DEVICE_TYPES:
        hint = f"; use '{device_type.split(':')[0]}' (autocast applies to a device type, not one device)" \
            if isinstance(device_type, str) and ":" in device_type else ""
        raise ValueError(f"autocast: device_type must be 'cuda' or 'cpu', got {device_type!r}{hint}")
    return device_type


def is_autocast_enabled(device_type: str | None = None) -> bool:
    """Whether autocast is on for ``device_type`` ('cuda' or 'cpu'; None means 'cuda', as
    PyTorch's argument-less form) in this thread.

    Example::

        >>> with tk.autocast("cpu"):
        ...     tk.is_autocast_enabled("cpu")
        True
    """
    return _state.enabled[_device_type("cuda" if device_type is None else device_type)]


def get_autocast_dtype(device_type: str) -> D.DType:
    """The dtype ``"lower"`` ops run in under autocast of ``device_type`` in this thread
    (float16 for 'cuda', bfloat16 for 'cpu' unless an enclosing ``autocast`` chose otherwise)."""
    return _state.dtype[_device_type(device_type)]


class autocast:
    """Context manager and decorator: run listed ops in mixed precision.

    Inside the region, ops on floating tensors of ``device_type`` run in ``dtype`` (matmuls,
    convolutions, linear, attention) or in float32 (reductions, softmax, norms, losses,
    exp/log/pow), per PyTorch's autocast op lists; see ``tensorkit.amp.autocast`` (the module)
    for the lists and the few deliberate differences from PyTorch. The state is thread-local;
    regions nest, and an inner ``autocast(..., enabled=False)`` turns it off. Run ``backward``
    outside the region (as in PyTorch): gradients get their parameters' dtypes either way.

    Args:
        device_type: 'cuda' or 'cpu'.
        dtype: float16 or bfloat16; default float16 for 'cuda', bfloat16 for 'cpu'.
        enabled: False makes the region turn autocast off.
        cache_enabled: within the outermost region, reuse the low-precision copy of a float32
            leaf that requires grad (a weight) instead of casting it at every use.

    Example::

        >>> model = tk.nn.Linear(4, 2)
        >>> with tk.autocast("cpu"):
        ...     y = model(tk.randn(3, 4))
        >>> y.dtype
        tensorkit.bfloat16
        >>> @tk.autocast("cpu")
        ... def forward(x): return model(x)
    """

    def __init__(self, device_type: str, dtype=None, enabled: bool = True, cache_enabled: bool = True):
        self.device_type = _device_type(device_type)
        if not isinstance(enabled, bool):
            raise TypeError(f"autocast: enabled must be a bool, got {type(enabled).__name__}")
        if dtype is None:
            dtype = _DEFAULT_DTYPE[self.device_type]
        else:
            given = dtype
            try:
                dtype = D.to_dtype(dtype)
            except Exception:
                dtype = None
            if dtype not in _LOW:
                raise ValueError(f"autocast: dtype must be tk.float16 or tk.bfloat16 (the lower precision the "
                                 f"listed ops run in), got {dtype if dtype is not None else repr(given)}")
        self.fast_dtype = dtype
        self.enabled = enabled
        self.cache_enabled = bool(cache_enabled)
        self._prev: list = []

    def __enter__(self) -> "autocast":
        s, dev = _state, self.device_type
        self._prev.append((s.enabled[dev], s.dtype[dev], s.cache_enabled))   # a stack: one instance may nest
        s.enabled[dev], s.dtype[dev], s.cache_enabled = self.enabled, self.fast_dtype, self.cache_enabled
        s.nesting += 1
        if self.enabled:
            with _active_lock:
                active[0] += 1
        return self

    def __exit__(self, *exc) -> None:
        s, dev = _state, self.device_type
        s.enabled[dev], s.dtype[dev], s.cache_enabled = self._prev.pop()
        s.nesting -= 1
        if s.nesting == 0:          # as PyTorch: the cast cache lives for the outermost region
            s.cache.clear()
        if self.enabled:
            with _active_lock:
                active[0] -= 1

    def __call__(self, fn):
        """Decorate ``fn``: each call runs in a fresh region with these settings."""
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with autocast(self.device_type, self.fast_dtype, self.enabled, self.cache_enabled):
                return fn(*args, **kwargs)
        return wrapper

    def __repr__(self) -> str:
        return f"autocast({self.device_type!r}, dtype={self.fast_dtype}, enabled={self.enabled})"


# ---- casting ------------------------------------------------------------------------------------------
def _tensor_type():
    from .._tensor import Tensor
    return Tensor


def _first_device_type(args, Tensor):
    """The device type an op on ``args`` runs on: its first tensor's, except that a 0-d CPU tensor
    (a scalar to ops on another device) only counts when no other tensor is there."""
    found = None
    for a in args:
        for t in (a if isinstance(a, (list, tuple)) else (a,)):
            if isinstance(t, Tensor):
                dev = t._storage.device.type
                if dev != "cpu" or t._shape:
                    return dev
                found = found or dev
    return found


def _cast(t, dtype, s):
    """``t.to(dtype)``; a float32 leaf weight's low-precision copy comes from the region's cache."""
    if t.dtype is dtype:
        return t
    if s.cache_enabled and dtype in _LOW and t.dtype is D.float32 and t._requires_grad and t.grad_fn is None:
        from ..autograd.grad_mode import state as grad
        hit = s.cache.get(id(t))
        version, mode = t._version, grad.enabled
        if hit is not None and hit[0] is t and hit[1] == version and hit[2] is dtype and hit[3] == mode:
            return hit[4]
        r = t.to(dtype)
        s.cache[id(t)] = (t, version, dtype, mode, r)     # holds t: its id is not reused while cached
        return r
    return t.to(dtype)


def _target(policy, args, dev, s, Tensor):
    """The dtype eligible tensors are cast to, or None (nothing to cast)."""
    if policy == "lower":
        return s.dtype[dev]
    if policy == "float32":
        return D.float32
    widest = None                           # promote: the widest eligible floating dtype
    for a in args:
        for t in (a if isinstance(a, (list, tuple)) else (a,)):
            if isinstance(t, Tensor) and t.dtype in (D.float16, D.bfloat16, D.float32) \
                    and t._storage.device.type == dev:
                widest = t.dtype if widest is None else D.promote_types(widest, t.dtype)
    return widest


def _cast_all(args, dtype, dev, s, Tensor):
    """``args`` with each eligible tensor (float16/bfloat16/float32 on ``dev``) cast to ``dtype``."""
    out = []
    for a in args:
        if isinstance(a, Tensor):
            if a.dtype is not dtype and a.dtype in (D.float16, D.bfloat16, D.float32) and \
                    a._storage.device.type == dev:
                a = _cast(a, dtype, s)
        elif isinstance(a, (list, tuple)) and any(isinstance(b, Tensor) for b in a):
            a = type(a)(_cast_all(a, dtype, dev, s, Tensor))
        out.append(a)
    return out


def _policy_for(spec, dev):
    policy, devices = spec
    return policy if dev in devices else "keep"


def cast_pointwise(spec, args) -> tuple:
    """The operands of a marked pointwise primitive under autocast (``args`` when nothing applies).
    ``spec``: (policy, device types); policy ``"rdiv"`` is float32 when the first operand is a
    Python number (``2 / x``, ``reciprocal``), as PyTorch's ``__rtruediv__``."""
    s = _state
    if s.inside:
        return args
    Tensor = _tensor_type()
    dev = _first_device_type(args, Tensor)
    if dev is None or not s.enabled.get(dev, False):
        return args
    policy = _policy_for(spec, dev)
    if policy == "rdiv":
        if isinstance(args[0], Tensor):
            return args
        policy = "float32"
    if policy == "keep":
        return args
    dtype = _target(policy, args, dev, s, Tensor)
    return args if dtype is None else tuple(_cast_all(args, dtype, dev, s, Tensor))


def _run(spec, fn, skip, args, kwargs):
    """Call ``fn`` under autocast: cast its operands per the policy, run its body with autocast off."""
    s = _state
    if s.inside:
        return fn(*args, **kwargs)
    Tensor = _tensor_type()
    dev = _first_device_type(args, Tensor) or _first_device_type(kwargs.values(), Tensor)
    if dev is None or not s.enabled.get(dev, False):
        return fn(*args, **kwargs)
    policy = _policy_for(spec, dev)
    explicit = any(kwargs.get(name) is not None or (i is not None and i < len(args) and args[i] is not None)
                   for name, i in skip)
    if policy != "keep" and not explicit:      # dtype= or out= given: run as asked (PyTorch)
        dtype = _target(policy, list(args) + list(kwargs.values()), dev, s, Tensor)
        if dtype is not None:
            args = _cast_all(args, dtype, dev, s, Tensor)
            kwargs = dict(zip(kwargs, _cast_all(kwargs.values(), dtype, dev, s, Tensor)))
    s.inside = True
    try:
        return fn(*args, **kwargs)
    finally:
        s.inside = False


def autocast_to(policy: str, devices: tuple = _DEVICE_TYPES):
    """Mark an op for autocast: decorator for the op's one definition.

    ``policy``: ``"lower"`` (the autocast dtype), ``"float32"``, ``"promote"`` (the widest floating
    input dtype) or ``"keep"`` (no cast, and the ops it calls are not cast either); ``devices``:
    the device types the policy applies to; elsewhere the op runs as ``"keep"``. With autocast off
    in every thread the wrapper costs one global test. A ``dtype`` or ``out`` argument that is
    given turns the cast off for that call, as in PyTorch.
    """
    if policy not in POLICIES:
        raise ValueError(f"autocast_to: policy must be one of {POLICIES}, got {policy!r}")
    spec = (policy, tuple(devices))

    def deco(fn):
        params = list(inspect.signature(fn).parameters.values())
        skip = tuple((p.name, i if p.kind is p.POSITIONAL_OR_KEYWORD else None)
                     for i, p in enumerate(params) if p.name in ("dtype", "out"))

        @functools.wraps(fn)
        def op(*args, **kwargs):
            if active[0]:
                return _run(spec, fn, skip, args, kwargs)
            return fn(*args, **kwargs)
        op.autocast = spec
        return op
    return deco


def mark_pointwise(policy: str, devices: tuple, *ops) -> None:
    """Give pointwise primitives an autocast policy (``Pointwise.__call__`` reads ``op.autocast``
    only while some autocast region is enabled)."""
    for op in ops:
        op.autocast = (policy, tuple(devices))


# ---- custom autograd Functions ----------------------------------------------------------------------------
def custom_fwd(fwd=None, *, device_type: str, cast_inputs=None):
    """Decorator for the ``forward`` of a ``tk.autograd.Function`` used under autocast.

    With ``cast_inputs=None`` the forward runs as called (autocast state included) and the
    state is remembered for ``custom_bwd``. With ``cast_inputs=dtype``, inside an enabled
    autocast region of ``device_type`` the floating tensors on that device type (not float64)
    among the arguments, also inside lists/tuples/dicts, are cast to ``dtype`` and the forward
    runs with autocast off (so it sees exactly that dtype), as ``torch.amp.custom_fwd``.

    Example::

        class MyMatmul(tk.autograd.Function):
            @staticmethod
            @tk.amp.custom_fwd(device_type="cuda", cast_inputs=tk.float32)
            def forward(ctx, a, b): ...

            @staticmethod
            @tk.amp.custom_bwd(device_type="cuda")
            def backward(ctx, g): ...
    """
    if fwd is None:
        return functools.partial(custom_fwd, device_type=device_type, cast_inputs=cast_inputs)
    dev = _device_type(device_type)
    dtype = None if cast_inputs is None else D.to_dtype(cast_inputs)

    @functools.wraps(fwd)
    def forward(ctx, *args, **kwargs):
        ctx._autocast_device_type = dev
        ctx._fwd_used_autocast = _state.enabled[dev]
        ctx._fwd_autocast_dtype = _state.dtype[dev]
        if dtype is None:
            return fwd(ctx, *args, **kwargs)
        if not ctx._fwd_used_autocast:
            return fwd(ctx, *args, **kwargs)
        ctx._fwd_used_autocast = False               # the forward runs with autocast off: so will backward
        args, kwargs = _cast_nested((args, kwargs), dtype, dev)
        with autocast(dev, enabled=False):
            return fwd(ctx, *args, **kwargs)
    return forward


def custom_bwd(bwd=None, *, device_type: str):
    """Decorator for the ``backward`` of a ``tk.autograd.Function`` whose forward has
    ``custom_fwd``: backward runs with the autocast state the forward ran with."""
    if bwd is None:
        return functools.partial(custom_bwd, device_type=device_type)
    _device_type(device_type)

    @functools.wraps(bwd)
    def backward(ctx, *args, **kwargs):
        with autocast(ctx._autocast_device_type, ctx._fwd_autocast_dtype, enabled=ctx._fwd_used_autocast):
            return bwd(ctx, *args, **kwargs)
    return backward


def _cast_nested(value, dtype, dev):
    Tensor = _tensor_type()
    if isinstance(value, Tensor):
        ok = value.dtype.is_floating_point and value.dtype is not D.float64 and value._storage.device.type == dev
        return value.to(dtype) if ok else value
    if isinstance(value, dict):
        return {k: _cast_nested(v, dtype, dev) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cast_nested(v, dtype, dev) for v in value)
    return value
