"""The op table: one ``OpInfo`` per public op, driving the generic tests in ``tests/``.

An entry says what the op is (the tensorkit callable), what it should compute (a numpy
float64 reference, or an exact integer formula), which inputs exercise it (samples: same
shape, broadcasting, Python scalars, 0-d, empty and non-contiguous operands, nan/inf), which
inputs must fail and how (error inputs), the dtypes it supports (read from the dispatcher's
declarations, not re-typed), its in-place and ``out=`` variants and its tolerances.

Tests never compare tensorkit with itself: references get the *same* element values as the
tensorkit inputs (rounded to the input dtype first), widened to float64 / int64.

Sample sizes are tiny, and the full set of layouts and scalar kinds runs only for the
``REPRESENTATIVE`` dtypes; the other dtypes get contiguous same-shape and scalar samples.
Numba compiles one kernel per (op, operand dtypes, layout), so this bounds the suite's
compile time without losing a dtype.

This module must not import torch (``torch_fn`` is called with the module by the tests).
"""
from __future__ import annotations

import inspect
import math
import zlib
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

import tensorkit as tk

from .. import _dispatch
from .. import dtypes as D
from ..ops import pointwise as P

__all__ = ["OpInfo", "SampleInput", "ErrorInput", "op_db", "make_tensor", "noncontiguous", "REPRESENTATIVE",
           "ref_args"]

REPRESENTATIVE = (D.float32, D.float64, D.int64, D.bool_, D.bfloat16)
FLOATS = D.FLOAT_DTYPES
_HALF = (D.float16, D.bfloat16)


# ---- samples -------------------------------------------------------------------------------------
@dataclass
class SampleInput:
    """``op(input, *args, **kwargs)``. ``reduction_len``: elements folded into each output
    (scales atol). ``ref_kwargs``: extra keyword arguments for the reference only."""

    input: object
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    name: str = ""
    reduction_len: int = 1
    ref_kwargs: dict = field(default_factory=dict)

    def tensors(self) -> list:
        return [a for a in (self.input, *self.args, *self.kwargs.values()) if isinstance(a, tk.Tensor)]

    def map_tensors(self, fn) -> "SampleInput":
        f = lambda a: fn(a) if isinstance(a, tk.Tensor) else a
        return SampleInput(f(self.input), tuple(f(a) for a in self.args), {k: f(v) for k, v in self.kwargs.items()},
                           self.name, self.reduction_len, self.ref_kwargs)

    def __repr__(self) -> str:
        def d(a):
            if isinstance(a, tk.Tensor):
                return f"T{list(a.shape)}:{a.dtype.name}" + ("" if a.is_contiguous() else f"/strides{list(a.stride())}")
            return repr(a)
        kw = ", ".join(f"{k}={d(v)}" for k, v in self.kwargs.items())
        return f"<{self.name}: ({', '.join(d(a) for a in (self.input, *self.args))}{', ' + kw if kw else ''})>"


@dataclass
class ErrorInput:
    """A sample that must raise ``error`` with a message matching the regex ``match``."""

    sample: SampleInput
    error: type
    match: str


def _int_range(dtype: D.DType, low, high) -> tuple[int, int]:
    info = np.iinfo(dtype.numpy)
    lo = -9 if low is None else math.ceil(low)
    hi = 9 if high is None else math.floor(high)
    return max(lo, int(info.min)), min(hi, int(info.max))


def _values(shape, dtype: D.DType, rng, low=None, high=None, exclude_zero=False) -> np.ndarray:
    """Random elements of ``dtype`` in [low, high] (default [-9, 9]), as a numpy array."""
    if dtype is D.bool_:
        a = np.array(rng.random(shape) < 0.5)
        if exclude_zero:
            a[...] = True
        return a
    if dtype.is_integer:
        lo, hi = _int_range(dtype, low, high)
        a = np.array(rng.integers(lo, hi + 1, size=shape))
        if exclude_zero:
            a[a == 0] = 1 if hi >= 1 else lo
        return a.astype(dtype.numpy)
    lo, hi = (-9.0 if low is None else low), (9.0 if high is None else high)
    a = np.array(rng.uniform(lo, hi, size=shape))
    if exclude_zero:
        a[np.abs(a) < 0.25] = 1.0 if hi >= 1.0 else hi
    return a.astype(dtype.numpy)


def make_tensor(shape, dtype: D.DType, device="cpu", *, rng=None, low=None, high=None, exclude_zero=False,
                layout: str = "contiguous") -> "tk.Tensor":
    """A random tensor for tests. ``layout``: 'contiguous', 'transposed' (last two dims
    swapped in memory), 'step' (every other element of the last dim) or 'expanded' (dim 0
    broadcast from size 1)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    shape = tuple(shape)
    vals = lambda s: np.asarray(_values(s, dtype, rng, low, high, exclude_zero), dtype.numpy)
    if layout == "contiguous":
        return tk.from_numpy(vals(shape)).to(device)
    if layout == "transposed":
        return tk.from_numpy(vals(shape[:-2] + shape[-2:][::-1])).to(device).transpose(-1, -2)
    if layout == "step":
        return tk.from_numpy(vals(shape[:-1] + (2 * shape[-1],))).to(device)[..., ::2]
    if layout == "expanded":
        return tk.from_numpy(vals((1,) + shape[1:])).to(device).expand(shape)
    raise ValueError(f"unknown layout {layout!r}")


def noncontiguous(t: "tk.Tensor") -> "tk.Tensor":
    """A non-contiguous tensor with ``t``'s values in fresh memory (every other element of a
    buffer whose other elements are garbage), the way PyTorch's OpInfo builds them."""
    a = np.array(t._host())
    big = np.empty(a.shape + (2,), a.dtype)
    big[..., 0] = a
    big[..., 1] = np.ones((), a.dtype) * (7 if a.dtype != np.bool_ else True)
    return tk.from_numpy(big).to(t.device).select(-1, 0)


def ref_args(x):
    """Reference operands: float tensors as float64 arrays, integer ones as int64, bool as
    bool (numpy's bool arithmetic is PyTorch's: add is or, mul is and)."""
    if isinstance(x, tk.Tensor):
        a = np.array(x._host())
        if x.dtype.is_floating_point:
            return a.astype(np.float64)
        return a.astype(np.int64) if x.dtype.is_integer else a
    if isinstance(x, (tuple, list)):
        return type(x)(ref_args(v) for v in x)
    return x


# ---- the entry ---------------------------------------------------------------------------------------
class _Like:
    """A stand-in operand with only a dtype and a rank, to ask a primitive its promotion."""

    def __init__(self, dtype):
        self.dtype, self.ndim = dtype, 1


def declared_input_dtypes(name: str, device_type: str) -> tuple:
    """Input dtypes the dispatcher accepts for primitive ``name``: for pointwise primitives,
    those whose promoted dtype (int -> float for ``exp``) has a kernel; otherwise the dtypes
    registered for it."""
    have = set(_dispatch.supported_dtypes(name, device_type))
    prim = getattr(P, name, None)
    if isinstance(prim, P.Pointwise):
        return tuple(d for d in D.ALL_DTYPES if prim.dtypes([_Like(d)] * prim.nin)[0] in have)
    return tuple(d for d in D.ALL_DTYPES if d in have)


@dataclass
class OpInfo:
    """One op of the table. See the module docstring."""

    name: str
    op: Callable
    ref: Callable | None
    sample_inputs: Callable                  # (info, device, dtype, rng) -> Iterable[SampleInput]
    declared: tuple = ()                     # dispatcher ops whose declarations bound the dtypes
    restrict: tuple | None = None            # dtypes the op itself further limits to (with its own error)
    error_inputs: Callable | None = None     # (info, device) -> Iterable[ErrorInput]
    torch_fn: Callable | None = None         # torch -> the same op in torch
    inplace: str | None = None               # method name of the in-place form, e.g. "add_"
    tol: dict = field(default_factory=dict)  # dtype -> (rtol, atol); each override says why
    torch_tol: dict = field(default_factory=dict)  # the same, for parity with PyTorch only
    kind: str = "pointwise"                  # pointwise | reduction | linalg
    # sample options
    domain: tuple = (None, None)             # range of the first operand
    other_domain: tuple = (None, None)       # range of the other operands
    other_nonzero: bool = False              # keep divisors away from zero
    scalars: tuple = (int, float, bool)      # Python scalar kinds the op accepts as `other`
    special: bool = True                     # also run nan / inf samples (floating dtypes)
    promotes_ints: bool = False              # int/bool inputs are cast to a float first (softmax)
    # dtypes tensorkit accepts where PyTorch raises, each a deliberate extension: {dtypes: why}
    torch_rejects: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    # gradients: gradcheck / gradgradcheck in float64 on the CPU, and every device vs the CPU
    supports_grad: bool = True               # False: no floating output (comparisons, argmax, ...)
    supports_gradgrad: bool = True
    grad_skip: dict = field(default_factory=dict)  # sample name (substring) -> why its gradient is not checked

    def __post_init__(self):
        if not self.declared:
            self.declared = (self.name,)
        if self.torch_fn is None:
            self.torch_fn = lambda torch, _n=self.name: getattr(torch, _n)

    @property
    def supports_out(self) -> bool:
        try:
            return "out" in inspect.signature(self.op).parameters
        except (TypeError, ValueError):
            return False

    def supported_dtypes(self, device: str) -> tuple:
        dtype_sets = [set(declared_input_dtypes(n, tk.device(device).type)) for n in self.declared]
        ok = set.intersection(*dtype_sets)
        if self.promotes_ints and ok & set(FLOATS):
            ok |= {d for d in D.ALL_DTYPES if not d.is_floating_point}
        if self.restrict is not None:
            ok &= set(self.restrict)
        return tuple(d for d in D.ALL_DTYPES if d in ok)

    def supported_devices(self) -> list[str]:
        """The test devices (``testing.devices()``) with kernels for every primitive the entry
        declares; the generic tests run the entry on these only (reductions, matmul and indexing
        have Triton kernels, so they run on 'cuda' too)."""
        from . import devices
        return [d for d in devices()
                if all(_dispatch.supported_dtypes(n, tk.device(d).type) for n in self.declared)]

    def samples(self, device: str, dtype: D.DType) -> Iterable[SampleInput]:
        rng = np.random.default_rng(zlib.crc32(f"{self.name}/{dtype.name}".encode()))
        return self.sample_inputs(self, device, dtype, rng)

    def errors(self, device: str) -> Iterable[ErrorInput]:
        return self.error_inputs(self, device) if self.error_inputs else ()

    def grad_samples(self, device: str, dtype: D.DType, limit: int | None = None, where=None) -> list[SampleInput]:
        """Samples to check gradients on: finite values only (no nan/inf samples), not those in
        ``grad_skip``, those ``where(sample)`` accepts; with ``limit``, the first ``limit`` of
        them plus the first strided one."""
        out = []
        for s in self.samples(device, dtype):
            if any(k in s.name for k in self.grad_skip) or not _all_finite(s) or (where and not where(s)):
                continue
            out.append(s)
        if limit is not None and len(out) > limit:
            strided = [s for s in out[limit:] if any(not t.is_contiguous() for t in _tensors_in(s))]
            out = out[:limit] + strided[:1]
        return out


def _tensors_in(x) -> list:
    """Every tensor in a sample (or a nested list/tuple/dict of arguments), in order."""
    if isinstance(x, SampleInput):
        return _tensors_in([x.input, list(x.args), x.kwargs])
    if isinstance(x, tk.Tensor):
        return [x]
    if isinstance(x, (list, tuple)):
        return [t for v in x for t in _tensors_in(v)]
    if isinstance(x, dict):
        return [t for v in x.values() for t in _tensors_in(v)]
    return []


def _all_finite(s: SampleInput) -> bool:
    return all(bool(np.isfinite(np.asarray(t._host(), np.float64)).all()) for t in _tensors_in(s)
               if t.dtype.is_floating_point)


# ---- sample generators ------------------------------------------------------------------------------------
def _mk(info, device, dtype, rng, shape, layout="contiguous", *, other=False):
    lo, hi = info.other_domain if other else info.domain
    return make_tensor(shape, dtype, device, rng=rng, low=lo, high=hi, layout=layout,
                       exclude_zero=other and info.other_nonzero)


def _scalar(info, kind, dtype):
    """A Python scalar operand inside ``info.other_domain`` (exactly representable in every dtype)."""
    lo, hi = info.other_domain
    lo, hi = (-9 if lo is None else lo), (9 if hi is None else hi)
    if kind is bool:
        return True
    if kind is int:
        v = 3 if lo <= 3 <= hi else math.ceil(lo)
        return v if v != 0 or not info.other_nonzero else 1
    v = 2.5 if lo <= 2.5 <= hi else (lo + hi) / 2
    return float(np.float16(v))                 # representable in every float dtype


def sample_unary(info, device, dtype, rng, **kwargs):
    mk = lambda shape, layout="contiguous": _mk(info, device, dtype, rng, shape, layout)
    yield SampleInput(mk((3, 4)), kwargs=dict(kwargs), name="contiguous")
    if dtype not in REPRESENTATIVE:
        return
    yield SampleInput(mk(()), kwargs=dict(kwargs), name="0-d")
    yield SampleInput(mk((0, 3)), kwargs=dict(kwargs), name="empty")
    yield SampleInput(mk((3, 4), "transposed"), kwargs=dict(kwargs), name="transposed")
    yield SampleInput(mk((2, 3), "step"), kwargs=dict(kwargs), name="step")
    yield SampleInput(mk((3, 4), "expanded"), kwargs=dict(kwargs), name="expanded")
    if info.special and dtype.is_floating_point:
        x = tk.tensor([math.nan, math.inf, -math.inf, 0.0, -0.0, 0.5], dtype=dtype, device=device)
        yield SampleInput(x, kwargs=dict(kwargs), name="nan/inf")


def sample_binary(info, device, dtype, rng, **kwargs):
    a = lambda shape, layout="contiguous": _mk(info, device, dtype, rng, shape, layout)
    b = lambda shape, layout="contiguous", dt=dtype: _mk(info, device, dt, rng, shape, layout, other=True)
    kw = lambda: dict(kwargs)
    yield SampleInput(a((3, 4)), (b((3, 4)),), kw(), "same shape")
    if int in info.scalars:
        yield SampleInput(a((3, 4)), (_scalar(info, int, dtype),), kw(), "python int")
    if dtype not in REPRESENTATIVE:
        return
    yield SampleInput(a((3, 1)), (b((1, 4)),), kw(), "broadcast both")
    yield SampleInput(a((2, 3, 4)), (b((4,)),), kw(), "broadcast rank")
    yield SampleInput(a((3,)), (b(()),), kw(), "0-d other")
    yield SampleInput(a(()), (b((3,)),), kw(), "0-d input")
    yield SampleInput(a(()), (b(()),), kw(), "both 0-d")
    yield SampleInput(a((0, 4)), (b((4,)),), kw(), "empty")
    for kind in (float, bool):
        if kind in info.scalars:
            yield SampleInput(a((3, 4)), (_scalar(info, kind, dtype),), kw(), f"python {kind.__name__}")
    yield SampleInput(a((3, 4), "transposed"), (b((3, 4)),), kw(), "transposed input")
    yield SampleInput(a((2, 3)), (b((2, 3), "step"),), kw(), "step other")
    yield SampleInput(a((3, 4), "expanded"), (b((3, 4), "transposed"),), kw(), "expanded input")
    mixed = D.int32 if dtype.is_floating_point else D.float32
    if info.options.get("mixed", True) and (mixed in info.supported_dtypes(device) or info.options.get("mixed")):
        yield SampleInput(a((3, 4)), (b((3, 4), dt=mixed),), kw(), f"mixed with {mixed.name}")
    if info.special and dtype.is_floating_point:
        x = tk.tensor([math.nan, math.inf, -math.inf, 0.0, 2.0, math.inf], dtype=dtype, device=device)
        y = tk.tensor([1.0, 2.0, math.inf, math.nan, math.inf, -math.inf], dtype=dtype, device=device)
        yield SampleInput(x, (y,), kw(), "nan/inf")


def sample_where(info, device, dtype, rng):
    cond = lambda shape, layout="contiguous": make_tensor(shape, D.bool_, device, rng=rng, layout=layout)
    v = lambda shape, layout="contiguous": _mk(info, device, dtype, rng, shape, layout)
    yield SampleInput(cond((3, 4)), (v((3, 4)), v((3, 4))), name="same shape")
    if dtype not in REPRESENTATIVE:
        return
    yield SampleInput(cond((3, 1)), (v((1, 4)), v((3, 4))), name="broadcast")
    yield SampleInput(cond((3, 4)), (v(()), v((4,))), name="0-d")
    yield SampleInput(cond((0, 4)), (v((4,)), v((0, 4))), name="empty")
    yield SampleInput(cond((3, 4), "transposed"), (v((3, 4), "step"), v((3, 4), "expanded")), name="strided")
    yield SampleInput(cond((3, 4)), (v((3, 4)), 2), name="python int")
    yield SampleInput(cond((3, 4)), (v((3, 4)), 2.5), name="python float")


def sample_clamp(info, device, dtype, rng):
    x = lambda shape, layout="contiguous": _mk(info, device, dtype, rng, shape, layout)
    lo, hi = (-3, 4) if dtype is not D.uint8 else (2, 6)
    yield SampleInput(x((3, 4)), (lo, hi), name="int bounds")
    if dtype not in REPRESENTATIVE:
        return
    yield SampleInput(x((3, 4)), kwargs={"min": lo}, name="min only")
    yield SampleInput(x((3, 4)), kwargs={"max": hi}, name="max only")
    yield SampleInput(x((3, 4)), (-2.5, 3.5), name="float bounds")
    yield SampleInput(x((3, 4)), (4, -3), name="min > max")
    yield SampleInput(x((3, 4), "transposed"), (x((4,)) - 1 if dtype is not D.bool_ else x((4,)), x((3, 1))),
                      name="tensor bounds")
    yield SampleInput(x(()), (x(()), x(())), name="0-d tensor bounds")
    yield SampleInput(x((0, 2)), (lo, hi), name="empty")
    if dtype.is_floating_point:
        yield SampleInput(tk.tensor([math.nan, math.inf, -math.inf, 1.0], dtype=dtype, device=device), (lo, hi),
                          name="nan/inf")


def sample_lerp(info, device, dtype, rng):
    x = lambda shape, layout="contiguous": _mk(info, device, dtype, rng, shape, layout)
    w = lambda shape: make_tensor(shape, dtype, device, rng=rng, low=0.0, high=1.0)
    yield SampleInput(x((3, 4)), (x((3, 4)), 0.25), name="scalar weight")
    if dtype not in REPRESENTATIVE:
        return
    yield SampleInput(x((3, 4)), (x((4,)), w((3, 1))), name="tensor weight, broadcast")
    yield SampleInput(x((3, 4), "transposed"), (x((3, 4), "step"), 0.75), name="strided")
    yield SampleInput(x(()), (x(()), w(())), name="0-d")
    yield SampleInput(x((0, 3)), (x((0, 3)), 0.5), name="empty")


def sample_cast(info, device, dtype, rng):
    for target in D.ALL_DTYPES:
        # float -> uint8 of a negative number is undefined in C (and differs across PyTorch backends)
        low = 0 if target is D.uint8 else None
        yield SampleInput(make_tensor((3, 4), dtype, device, rng=rng, low=low), kwargs={"dtype": target},
                          name=f"to {target.name}")
    if dtype not in REPRESENTATIVE:
        return
    for target in (D.float32, D.int64, D.bool_, D.bfloat16):
        low = 0 if target is D.uint8 else None
        yield SampleInput(make_tensor((3, 4), dtype, device, rng=rng, low=low, layout="transposed"),
                          kwargs={"dtype": target}, name=f"transposed to {target.name}")
    if dtype.is_floating_point:
        yield SampleInput(tk.tensor([math.nan, math.inf, -math.inf, -0.0], dtype=dtype, device=device),
                          kwargs={"dtype": D.float64 if dtype is not D.float64 else D.float16}, name="nan/inf")


def sample_nan_to_num(info, device, dtype, rng):
    # the default replacements are the extremes of the input's dtype: the reference needs it
    for s in sample_unary(info, device, dtype, rng):
        s.ref_kwargs = {"dtype": dtype}
        yield s
        if s.name == "nan/inf":
            yield SampleInput(s.input, kwargs={"nan": 1.5, "posinf": 100.0, "neginf": -100.0}, name="explicit",
                              ref_kwargs={"dtype": dtype})


# ---- reductions ---------------------------------------------------------------------------------------------
def _red_len(shape, dim) -> int:
    if dim is None or dim == ():
        return max(1, int(np.prod(shape)))
    dims = dim if isinstance(dim, tuple) else (dim,)
    return max(1, int(np.prod([shape[d] for d in dims]))) if shape else 1


def sample_reduction(info, device, dtype, rng):
    """dims: info.options['dims'] among 'none' (dim omitted), 'int', 'tuple'; 'required' if
    the op needs a dim; extra kwargs from info.options['kwargs'] (a list of dicts)."""
    kinds = info.options.get("dims", ("none", "int", "tuple"))
    extra = info.options.get("kwargs", [{}])
    x = lambda shape, layout="contiguous": _mk(info, device, dtype, rng, shape, layout)

    def s(t, dim="omit", keepdim=None, name="", **kw):
        kwargs = dict(kw)
        if keepdim is not None and not info.options.get("scan"):     # scans keep every dim
            kwargs["keepdim"] = keepdim
        args = () if dim == "omit" else (dim,)
        n = _red_len(tuple(t.shape), None if dim == "omit" else dim)
        return SampleInput(t, args, kwargs, name, reduction_len=n)

    cases = []
    if "none" in kinds:
        cases += [(x((3, 4)), "omit", None, "all")]
    if "int" in kinds:
        cases += [(x((3, 4)), 1, None, "dim 1"), (x((3, 4)), 0, True, "dim 0 keepdim")]
    if "tuple" in kinds:
        cases += [(x((2, 3, 4)), (0, 2), None, "dims (0, 2)")]
    full = dtype in REPRESENTATIVE
    if full:
        if "int" in kinds:
            cases += [(x((2, 3, 4)), -1, False, "dim -1"), (x(()), 0, None, "0-d, dim 0"),
                      (x((3, 4), "transposed"), 1, None, "transposed"), (x((3, 6), "step"), 0, True, "step")]
            if info.options.get("empty", True):
                cases += [(x((0, 3)), 1, None, "empty, reduce nonempty dim")]
            if info.options.get("empty_dim", True):
                cases += [(x((0, 3)), 0, None, "empty, reduce empty dim")]
        if "none" in kinds:
            cases += [(x(()), "omit", None, "0-d"), (x((3, 4), "expanded"), "omit", None, "expanded")]
        if "tuple" in kinds:
            cases += [(x((3, 4)), (0, 1), True, "dims (0, 1) keepdim"), (x((2, 3, 4), "transposed"), (-1, 0), None,
                                                                         "transposed, dims (-1, 0)")]
    for i, (t, dim, keepdim, name) in enumerate(cases):
        # the first case runs every extra kwargs set; the others cycle through them
        for kw in (extra if i == 0 else [extra[i % len(extra)]]):
            yield s(t, dim, keepdim, name + (f" {kw}" if kw else ""), **kw)
    if full and info.options.get("dtype_kw"):
        target = D.float64 if dtype.is_floating_point else D.float32
        if "int" in kinds:
            yield s(x((3, 4)), 1, None, f"dtype={target.name}", dtype=target)
        else:
            yield s(x((3, 4)), "omit", None, f"dtype={target.name}", dtype=target)
    if full and info.special and dtype.is_floating_point:
        t = tk.tensor([[1.0, math.nan, 2.0, 0.5], [math.inf, 3.0, -1.0, 2.0], [-math.inf, 1.0, 0.0, math.inf]],
                      dtype=dtype, device=device)
        dim = 1 if ("int" in kinds or "required" in kinds) else "omit"
        yield s(t, dim, None, "nan/inf", **extra[0])


def _axis(x, dim):
    if x.ndim == 0 or dim is None or dim == ():
        return None
    return dim


def _reducer(fn, *, int_acc=True):
    """A reference for ``op(x, dim=None, keepdim=False, dtype=None)`` from a numpy reducer."""
    def ref(x, dim=None, keepdim=False, dtype=None):
        if dtype is not None:
            x = x.astype(dtype.numpy).astype(np.float64 if dtype.is_floating_point else np.int64)
        elif int_acc and x.dtype == np.bool_:
            x = x.astype(np.int64)
        with np.errstate(all="ignore"):
            r = fn(x, axis=_axis(x, dim), keepdims=keepdim)
        return np.asarray(r).reshape(()) if x.ndim == 0 else np.asarray(r)
    return ref


def _ref_var(x, dim=None, keepdim=False, correction=1):
    with np.errstate(all="ignore"):
        r = np.var(x, axis=_axis(x, dim), ddof=correction, keepdims=keepdim)
    return np.asarray(r).reshape(()) if x.ndim == 0 else np.asarray(r)


def _ref_norm(x, dim=None, keepdim=False, p=2):
    ax = _axis(x, dim)
    a = np.abs(x)
    with np.errstate(all="ignore"):
        if p == math.inf:
            r = np.max(a, axis=ax, keepdims=keepdim)
        elif p == -math.inf:
            r = np.min(a, axis=ax, keepdims=keepdim)
        elif p == 0:
            r = np.sum(a != 0, axis=ax, keepdims=keepdim).astype(np.float64)
        else:
            r = np.sum(a ** p, axis=ax, keepdims=keepdim) ** (1.0 / p)
    return np.asarray(r).reshape(()) if x.ndim == 0 else np.asarray(r)


def _ref_logsumexp(x, dim, keepdim=False):
    x = x.astype(np.float64)
    ax = _axis(x, dim)
    with np.errstate(all="ignore"):
        m = np.max(x, axis=ax, keepdims=True, initial=-np.inf)
        m = np.where(np.isfinite(m), m, 0.0)      # an inf max: let exp() carry it (log(inf) = inf)
        r = np.log(np.sum(np.exp(x - m), axis=ax, keepdims=True)) + m
    if not keepdim and ax is not None:
        r = np.squeeze(r, axis=ax)
    return r.reshape(()) if x.ndim == 0 else r


def _ref_with_index(vals, idx):
    def ref(x, dim, keepdim=False):
        ax = _axis(x, dim)
        v = vals(x, axis=ax, keepdims=keepdim)
        i = idx(x, axis=ax, keepdims=keepdim)
        if x.ndim == 0:
            return np.asarray(v).reshape(()), np.asarray(i).reshape(())
        return v, i
    return ref


def _ref_arg(fn):
    def ref(x, dim=None, keepdim=False):
        if dim is None:
            r = fn(x.reshape(-1))
            return np.asarray(r).reshape((1,) * x.ndim if keepdim else ())
        if x.ndim == 0:
            return np.asarray(0)
        return fn(x, axis=dim, keepdims=keepdim)
    return ref


def _ref_scan(fn):
    def ref(x, dim, dtype=None):
        if dtype is not None:
            x = x.astype(dtype.numpy).astype(np.float64 if dtype.is_floating_point else np.int64)
        elif x.dtype == np.bool_:
            x = x.astype(np.int64)
        if x.ndim == 0:
            return x.copy()
        with np.errstate(all="ignore"):
            return fn(x, axis=dim)
    return ref


def _ref_softmax(log):
    def ref(x, dim, dtype=None):
        x = x.astype(np.float64)
        if x.ndim == 0:
            return np.asarray(0.0 if log else 1.0)
        with np.errstate(all="ignore"):
            z = x - np.max(x, axis=dim, keepdims=True, initial=-np.inf)
            if log:
                return z - np.log(np.sum(np.exp(z), axis=dim, keepdims=True))
            e = np.exp(z)
            return e / np.sum(e, axis=dim, keepdims=True)
    return ref


# ---- reference formulas for pointwise ops ------------------------------------------------------------------
def _f64(fn):
    """``fn`` with bool arrays widened first: numpy evaluates float functions of bools in
    float16 (``np.sin(True)`` is a float16), PyTorch in the default float dtype."""
    def ref(*args, **kwargs):
        return fn(*[a.astype(np.float64) if isinstance(a, np.ndarray) and a.dtype == np.bool_ else a for a in args],
                  **kwargs)
    return ref


def _trunc_div(a, b):
    if np.asarray(a).dtype.kind in "iub" and np.asarray(b).dtype.kind in "iub" and not isinstance(b, float):
        a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
        q = a // b
        return q + (((a % b) != 0) & ((a < 0) != (b < 0)))
    return np.trunc(np.true_divide(a, b))


def _sign(x):
    # PyTorch: sign(nan) = 0 (numpy says nan)
    return np.where(np.isnan(x), 0.0, np.sign(x)) if np.asarray(x).dtype.kind == "f" else np.sign(x)


def _round_half_even(x, decimals=0):
    return np.round(x, decimals)


def _nan_to_num_ref(x, nan=0.0, posinf=None, neginf=None, *, dtype):
    if not dtype.is_floating_point:
        return x
    import ml_dtypes
    info = ml_dtypes.finfo(dtype.numpy)
    return np.nan_to_num(x, nan=nan, posinf=float(info.max) if posinf is None else posinf,
                         neginf=float(info.min) if neginf is None else neginf)


def _clamp_ref(x, min=None, max=None):
    r = x
    with np.errstate(all="ignore"):
        if min is not None:
            r = np.where(np.isnan(r), r, np.maximum(r, min))
        if max is not None:
            r = np.where(np.isnan(r), r, np.minimum(r, max))
    return r


def _shift_left(a, b):
    return np.left_shift(np.asarray(a, np.int64), b)


def _isclose_ref(a, b, rtol=1e-5, atol=1e-8, equal_nan=False):
    return np.isclose(a, b, rtol=rtol, atol=atol, equal_nan=equal_nan)


# ---- error inputs ---------------------------------------------------------------------------------------
def errors_binary(info, device):
    dt = D.float32 if D.float32 in info.supported_dtypes(device) else info.supported_dtypes(device)[0]
    a = make_tensor((3,), dt, device)
    b = make_tensor((4,), dt, device)
    swap = (lambda x, y: (y, x)) if info.name == "rsub" else (lambda x, y: (x, y))   # rsub computes b - a
    yield ErrorInput(SampleInput(a, (b,), name="shape mismatch"), RuntimeError,
                     r"size of tensor a \(%s\) must match the size of tensor b \(%s\).*\[%s\], \[%s\]"
                     % (swap(3, 4) + swap(3, 4)))
    yield ErrorInput(SampleInput(make_tensor((2, 3), dt, device), (make_tensor((3, 2), dt, device),),
                                 name="2-D shape mismatch"), RuntimeError,
                     r"size of tensor a \(%s\) must match the size of tensor b \(%s\) at non-singleton dimension 1.*"
                     r"\[%s\], \[%s\]" % (swap(3, 2) + swap("2, 3", "3, 2")))
    if info.supports_out:
        r = info.op(a, a)
        if r.dtype.category > 0:
            bad = tk.empty(3, dtype=D.bool_ if r.dtype.category == 1 else D.int64, device=device)
            yield ErrorInput(SampleInput(a, (a,), {"out": bad}, name="out of a narrower category"), RuntimeError,
                             rf"can't be cast to the desired output type tk\.{bad.dtype.name}")


def errors_unary(info, device):
    if info.supports_out:
        dt = D.float32 if D.float32 in info.supported_dtypes(device) else info.supported_dtypes(device)[-1]
        a = make_tensor((3,), dt, device)
        r = info.op(a)
        if r.dtype.category > 0:
            bad = tk.empty(3, dtype=D.bool_ if r.dtype.category == 1 else D.int64, device=device)
            yield ErrorInput(SampleInput(a, (), {"out": bad}, name="out of a narrower category"), RuntimeError,
                             "can't be cast to the desired output type")


def _with(base, *extra):
    def gen(info, device):
        if base is not None:
            yield from base(info, device)
        for make in extra:
            yield make(device)
    return gen


def _err(make_sample, error, match):
    return lambda device: ErrorInput(make_sample(device), error, match)


_f32 = lambda shape, device, dtype=D.float32: make_tensor(shape, dtype, device)


def errors_reduction(info, device):
    dtypes = info.supported_dtypes(device)
    dt = D.float32 if D.float32 in dtypes else (dtypes[0] if dtypes else D.float32)
    kinds = info.options.get("dims", ("none", "int", "tuple"))
    x = make_tensor((2, 3), dt, device)
    extra = info.options.get("kwargs", [{}])[0]
    if "int" in kinds or "required" in kinds:
        yield ErrorInput(SampleInput(x, (2,), dict(extra), name="dim out of range"), IndexError,
                         r"[Dd]imension out of range \(expected to be in range of \[-2, 1\], but got 2\)")
    if "tuple" in kinds:
        yield ErrorInput(SampleInput(x, ((0, -2),), dict(extra), name="repeated dim"), RuntimeError,
                         "appears multiple times")
    if info.options.get("empty_error"):
        e = make_tensor((0, 3), dt, device)
        if "none" in kinds:
            yield ErrorInput(SampleInput(e, (), name="empty, all dims"), RuntimeError,
                             r"non-empty.*\[0, 3\]|\[0, 3\].*non-empty")
        yield ErrorInput(SampleInput(e, (0,), name="empty dim"), IndexError, r"dim 0.*non-zero size|zero")


def errors_matmul_common(info, device):
    a, b = make_tensor((2, 3), D.float32, device), make_tensor((4, 5), D.float32, device)
    c = make_tensor((3, 2), D.float64, device)
    if info.name in ("matmul", "mm"):
        yield ErrorInput(SampleInput(a, (b,), name="inner mismatch"), RuntimeError,
                         r"shapes cannot be multiplied \(2x3 and 4x5\)")
        yield ErrorInput(SampleInput(a, (c,), name="dtype mismatch"), RuntimeError,
                         "same dtype.*float32.*float64")
    if info.name == "matmul":
        yield ErrorInput(SampleInput(make_tensor((), D.float32, device), (a,), name="0-d"), RuntimeError,
                         "at least 1 dimension")
    if info.name == "mm":
        yield ErrorInput(SampleInput(make_tensor((3,), D.float32, device), (c.float(),), name="1-D"), RuntimeError,
                         "2-D")
    if info.name == "bmm":
        yield ErrorInput(SampleInput(make_tensor((2, 2, 3), D.float32, device),
                                     (make_tensor((3, 3, 2), D.float32, device),), name="batch mismatch"),
                         RuntimeError, r"batch.*\[2, 2, 3\].*\[3, 3, 2\]")
        yield ErrorInput(SampleInput(a, (c.float(),), name="2-D"), RuntimeError, "3-D")
    if info.name == "dot":
        yield ErrorInput(SampleInput(make_tensor((3,), D.float32, device), (make_tensor((4,), D.float32, device),),
                                     name="size mismatch"), RuntimeError, "inconsistent tensor size")
        yield ErrorInput(SampleInput(a, (a,), name="2-D"), RuntimeError, "1D tensors expected")
    if info.name == "mv":
        yield ErrorInput(SampleInput(a, (make_tensor((4,), D.float32, device),), name="size mismatch"),
                         RuntimeError, r"2x3 and 4\b")
    if info.name == "outer":
        yield ErrorInput(SampleInput(a, (a,), name="2-D"), RuntimeError, "1-D")
    if info.name == "addmm":
        yield ErrorInput(SampleInput(make_tensor((2, 5), D.float32, device), (a, make_tensor((3, 4), D.float32, device)),
                                     name="input not broadcastable"), RuntimeError,
                         r"\(5\).*\(4\)|\(4\).*\(5\)")


# ---- linalg samples -------------------------------------------------------------------------------------------
def _linalg_samples(pairs):
    def gen(info, device, dtype, rng):
        for i, (sa, sb, la, lb, name) in enumerate(pairs):
            if dtype not in REPRESENTATIVE and i > 0:
                return
            a = make_tensor(sa, dtype, device, rng=rng, layout=la)
            b = make_tensor(sb, dtype, device, rng=rng, layout=lb)
            yield SampleInput(a, (b,), name=name, reduction_len=max(1, sa[-1]))
    return gen


_C = "contiguous"
_MATMUL_PAIRS = [
    ((3, 4), (4, 2), _C, _C, "2-D x 2-D"),
    ((4,), (4,), _C, _C, "1-D x 1-D"),
    ((4,), (4, 2), _C, _C, "1-D x 2-D"),
    ((3, 4), (4,), _C, _C, "2-D x 1-D"),
    ((2, 3, 4), (4, 2), _C, _C, "batched x 2-D"),
    ((2, 1, 3, 4), (5, 4, 2), _C, _C, "batch broadcast"),
    ((3,), (2, 3, 2), _C, _C, "1-D x batched"),
    ((3, 4), (4, 2), "transposed", "transposed", "transposed"),
    ((2, 3, 4), (2, 4, 3), "step", "expanded", "strided batch"),
    ((0, 4), (4, 2), _C, _C, "empty rows"),
    ((3, 0), (0, 2), _C, _C, "empty inner"),
]
_MM_PAIRS = [p for p in _MATMUL_PAIRS if len(p[0]) == 2 and len(p[1]) == 2]
_BMM_PAIRS = [((2, 3, 4), (2, 4, 2), _C, _C, "contiguous"), ((2, 3, 4), (2, 4, 3), "step", "expanded", "strided"),
              ((2, 3, 4), (2, 4, 2), "transposed", "transposed", "transposed"),
              ((0, 3, 4), (0, 4, 2), _C, _C, "empty batch")]
_DOT_PAIRS = [((4,), (4,), _C, _C, "contiguous"), ((3,), (3,), "step", "step", "step"),
              ((0,), (0,), _C, _C, "empty")]
_MV_PAIRS = [((3, 4), (4,), _C, _C, "contiguous"), ((3, 4), (4,), "transposed", "step", "strided"),
             ((0, 4), (4,), _C, _C, "empty")]
_OUTER_PAIRS = [((3,), (4,), _C, _C, "contiguous"), ((3,), (2,), "step", "step", "step"),
                ((0,), (4,), _C, _C, "empty")]


def sample_addmm(info, device, dtype, rng):
    m = lambda shape, layout=_C: make_tensor(shape, dtype, device, rng=rng, layout=layout)
    coef = (lambda f, i: f) if dtype.is_floating_point else (lambda f, i: i)
    yield SampleInput(m((3, 2)), (m((3, 4)), m((4, 2))), name="default", reduction_len=4)
    if dtype not in REPRESENTATIVE:
        return
    yield SampleInput(m((2,)), (m((3, 4)), m((4, 2))), {"beta": coef(0.5, 2), "alpha": coef(2.0, 3)},
                      name="broadcast input, beta/alpha", reduction_len=4)
    yield SampleInput(m((3, 2), "transposed"), (m((3, 4), "transposed"), m((4, 2), "step")), name="strided",
                      reduction_len=4)
    if dtype.is_floating_point:
        nan = tk.full((3, 2), math.nan, dtype=dtype, device=device)
        yield SampleInput(nan, (m((3, 4)), m((4, 2))), {"beta": 0}, name="beta=0 ignores nan input", reduction_len=4)


def _ref_addmm(input, m1, m2, beta=1, alpha=1):
    p = alpha * np.matmul(m1, m2)
    return p if beta == 0 else p + beta * input


# ---- the table ------------------------------------------------------------------------------------------------
def _torch_to(torch):
    return lambda x, dtype: x.to(dtype)


def _unary(name, ref, *, domain=(None, None), op=None, declared=None, inplace=True, **kw):
    return OpInfo(name, op or getattr(tk, name), ref, kw.pop("sample_inputs", sample_unary),
                  declared=declared or (name,), inplace=(f"{name}_" if inplace is True else inplace or None),
                  error_inputs=kw.pop("error_inputs", errors_unary), domain=domain, **kw)


def _binary(name, ref, *, op=None, declared=None, inplace=True, **kw):
    return OpInfo(name, op or getattr(tk, name), ref, kw.pop("sample_inputs", sample_binary),
                  declared=declared or (name,), inplace=(f"{name}_" if inplace is True else inplace or None),
                  error_inputs=kw.pop("error_inputs", errors_binary), **kw)


_DIV_DOMAIN = dict(other_nonzero=True)
_POS = (0.1, 9.0)
# Composites round every intermediate result to float16/bfloat16 (PyTorch computes the whole
# op in float32 and rounds once), so their error is a few roundings, not one.
_COMPOSITE_HALF_TOL = {D.float16: (4e-3, 1e-3), D.bfloat16: (3e-2, 1e-2)}

_CLAMP_BOOL = {(D.bool_,): "bool tensors clamped by bool tensor bounds stay bool (PyTorch has no bool kernel)"}

op_db: list[OpInfo] = [
    # -- arithmetic
    _binary("add", np.add),
    _binary("add_alpha", lambda a, b, alpha: a + alpha * b, op=tk.add, declared=("add", "mul"),
            inplace="add_", torch_fn=lambda torch: torch.add, scalars=(int,),
            sample_inputs=lambda i, d, t, r: sample_binary(i, d, t, r, alpha=2)),
    _binary("sub", np.subtract, scalars=(int, float), restrict=tuple(d for d in D.ALL_DTYPES if d is not D.bool_)),
    _binary("rsub", lambda a, b: b - a, inplace=False, declared=("sub",), scalars=(int, float),
            restrict=tuple(d for d in D.ALL_DTYPES if d is not D.bool_)),
    _binary("mul", np.multiply),
    _binary("div", _f64(np.true_divide), **_DIV_DOMAIN),
    _binary("div_floor", lambda a, b, rounding_mode: np.floor_divide(a, b), op=tk.div, declared=("floor_divide",), inplace="div_",
            torch_fn=lambda torch: torch.div, scalars=(int, float),
            sample_inputs=lambda i, d, t, r: sample_binary(i, d, t, r, rounding_mode="floor"), **_DIV_DOMAIN),
    _binary("div_trunc", lambda a, b, rounding_mode: _trunc_div(a, b), op=tk.div, declared=("trunc_divide",), inplace="div_",
            torch_fn=lambda torch: torch.div, scalars=(int, float),
            sample_inputs=lambda i, d, t, r: sample_binary(i, d, t, r, rounding_mode="trunc"), **_DIV_DOMAIN),
    _binary("floor_divide", np.floor_divide, scalars=(int, float), **_DIV_DOMAIN),
    _binary("remainder", np.remainder, scalars=(int, float), **_DIV_DOMAIN),
    _binary("fmod", np.fmod, scalars=(int, float), **_DIV_DOMAIN),
    # integer powers: small bases and non-negative exponents keep int8 exact; float bases > 0
    _binary("pow", np.power, domain=(0.5, 4), other_domain=(0, 3), scalars=(int, float)),
    _binary("float_power", lambda a, b: np.power(np.asarray(a, np.float64), b), inplace=False, declared=("pow",), promotes_ints=True,
            domain=(0.5, 4), other_domain=(0, 3), scalars=(int, float)),
    _binary("atan2", _f64(np.arctan2), scalars=()),   # torch.atan2 takes tensors only
    _binary("maximum", np.maximum, scalars=()),
    _binary("minimum", np.minimum, scalars=()),
    _binary("fmax", np.fmax, scalars=(), inplace=False, declared=("maximum", "isnan", "where")),
    _binary("fmin", np.fmin, scalars=(), inplace=False, declared=("minimum", "isnan", "where")),
    # -- comparisons and logic
    *[_binary(n, f, inplace=True) for n, f in [("eq", np.equal), ("ne", np.not_equal), ("lt", np.less),
                                                ("le", np.less_equal), ("gt", np.greater), ("ge", np.greater_equal)]],
    *[_binary(n, f, scalars=()) for n, f in [("logical_and", np.logical_and), ("logical_or", np.logical_or),
                                 ("logical_xor", np.logical_xor)]],
    *[_binary(n, f, scalars=(int, bool), special=False)
      for n, f in [("bitwise_and", np.bitwise_and), ("bitwise_or", np.bitwise_or), ("bitwise_xor", np.bitwise_xor)]],
    _binary("bitwise_left_shift", _shift_left, scalars=(int,), domain=(-4, 4), other_domain=(0, 3), inplace=False),
    _binary("bitwise_right_shift", np.right_shift, scalars=(int,), other_domain=(0, 3), inplace=False),
    _binary("isclose", _isclose_ref, inplace=False, declared=("eq",), scalars=(), error_inputs=None,
            options={"mixed": False}),   # torch.isclose refuses operands of different dtypes
    # -- unary
    _unary("neg", np.negative, restrict=tuple(d for d in D.ALL_DTYPES if d is not D.bool_)),
    _unary("abs", np.abs),
    _unary("sign", lambda x: x if x.dtype == np.bool_ else _sign(x)),
    _unary("exp", _f64(np.exp)), _unary("exp2", _f64(np.exp2)), _unary("expm1", _f64(np.expm1)),
    _unary("log", _f64(np.log), domain=_POS), _unary("log2", _f64(np.log2), domain=_POS), _unary("log10", _f64(np.log10), domain=_POS),
    _unary("log1p", _f64(np.log1p), domain=(-0.9, 9.0)),
    _unary("sqrt", _f64(np.sqrt), domain=_POS),
    _unary("rsqrt", _f64(lambda x: 1 / np.sqrt(x)), domain=(1, 9)),
    _unary("reciprocal", lambda x: 1 / x, declared=("div",), domain=(0.5, 9)),
    _unary("square", lambda x: x * x if x.dtype != np.bool_ else x, declared=("mul",)),
    _unary("sin", _f64(np.sin)), _unary("cos", _f64(np.cos)),
    _unary("tan", _f64(np.tan), domain=(-1.4, 1.4)),
    _unary("asin", _f64(np.arcsin), domain=(-1, 1)), _unary("acos", _f64(np.arccos), domain=(-1, 1)),
    _unary("atan", _f64(np.arctan)),
    _unary("sinh", _f64(np.sinh)), _unary("cosh", _f64(np.cosh)), _unary("tanh", _f64(np.tanh)),
    _unary("erf", _f64(lambda x: _special("erf", x)), domain=(-3, 3)),
    _unary("erfc", _f64(lambda x: _special("erfc", x)), domain=(-3, 3)),
    _unary("floor", np.floor), _unary("ceil", np.ceil), _unary("trunc", np.trunc),
    _unary("round", _round_half_even),
    _unary("round_decimals", _f64(lambda x, decimals: np.round(x, decimals)), op=tk.round, declared=("mul", "div"),
           inplace="round_", torch_fn=lambda torch: torch.round,
           torch_rejects={D.INTEGER_DTYPES + (D.bool_,): "decimals= scales in float, so integers give floats"},
           # the composite scales, rounds and divides: a double rounding PyTorch shares in float32
           tol={**_COMPOSITE_HALF_TOL},
           sample_inputs=lambda i, d, t, r: sample_unary(i, d, t, r, decimals=2)),
    _unary("frac", lambda x: x - np.trunc(x), declared=("sub", "trunc"),
           torch_rejects={D.INTEGER_DTYPES: "frac of an integer is 0; PyTorch has no integer kernel"}),
    _unary("sigmoid", lambda x: 1 / (1 + np.exp(-np.asarray(x, np.float64)))),
    _unary("relu", lambda x: np.where(np.isnan(x), x, np.maximum(x, 0)) if x.dtype.kind == "f" else np.maximum(x, 0),
           declared=("where", "le"), restrict=tuple(d for d in D.ALL_DTYPES if d is not D.bool_)),
    _unary("isnan", np.isnan, inplace=False), _unary("isinf", np.isinf, inplace=False),
    _unary("isfinite", np.isfinite, inplace=False),
    _unary("logical_not", np.logical_not),
    _unary("bitwise_not", np.invert, special=False),
    _unary("nan_to_num", _nan_to_num_ref, declared=("where", "isnan", "eq"), sample_inputs=sample_nan_to_num),
    OpInfo("to", lambda x, dtype: x.to(dtype), lambda x, dtype: x.astype(dtype.numpy), sample_cast,
           declared=("copy",), torch_fn=_torch_to),
    # -- clamp, where, lerp
    OpInfo("clamp", tk.clamp, _clamp_ref, sample_clamp, declared=("maximum", "minimum"), inplace="clamp_",
           torch_rejects=_CLAMP_BOOL,
           error_inputs=_with(None, _err(lambda d: SampleInput(_f32((3,), d), name="no bounds"), RuntimeError,
                                         "at least one of 'min' or 'max'"))),
    OpInfo("clip", tk.clip, _clamp_ref, sample_clamp, declared=("maximum", "minimum"), inplace="clip_",
           torch_rejects=_CLAMP_BOOL),
    OpInfo("clamp_min", tk.clamp_min, lambda x, m: _clamp_ref(x, min=m),
           lambda i, d, t, r: (SampleInput(s.input, s.args[:1], name=s.name) for s in sample_clamp(i, d, t, r)
                               if len(s.args) == 2),
           declared=("maximum",), inplace="clamp_min_"),
    OpInfo("clamp_max", tk.clamp_max, lambda x, m: _clamp_ref(x, max=m),
           lambda i, d, t, r: (SampleInput(s.input, s.args[1:], name=s.name) for s in sample_clamp(i, d, t, r)
                               if len(s.args) == 2),
           declared=("minimum",), inplace="clamp_max_"),
    OpInfo("where", tk.where, lambda c, a, b: np.where(c, a, b), sample_where, declared=("where",),
           error_inputs=_with(None, _err(lambda d: SampleInput(_f32((3,), d), (_f32((3,), d), _f32((3,), d)),
                                                               name="float condition"),
                                         RuntimeError, "where expected condition to be a boolean tensor"),
                              _err(lambda d: SampleInput(make_tensor((3,), D.bool_, d), (_f32((3,), d), _f32((4,), d)),
                                                         name="shape mismatch"),
                                   RuntimeError, r"\(3\).*\(4\)"))),
    OpInfo("lerp", tk.lerp, lambda a, b, w: a + w * (b - a), sample_lerp, declared=("add", "mul", "sub"),
           restrict=FLOATS, inplace="lerp_", tol={**_COMPOSITE_HALF_TOL}),
]


def _special(name, x):
    import scipy.special
    return getattr(scipy.special, name)(x)


# ---- reductions ----------------------------------------------------------------------------------------------
def _red(name, ref, *, declared=None, dims=("none", "int", "tuple"), op=None, **kw):
    options = dict(kw.pop("options", {}), dims=dims)
    return OpInfo(name, op or getattr(tk, name), ref, kw.pop("sample_inputs", sample_reduction),
                  declared=declared or (name,), kind="reduction",
                  error_inputs=kw.pop("error_inputs", errors_reduction), options=options, **kw)


_WITH_DTYPE = {"dtype_kw": True}
_ARG_BOOL = {(D.bool_,): "argmax of a mask is the first True (False < True); PyTorch has no bool kernel"}
op_db += [
    _red("sum", _reducer(np.sum), options=_WITH_DTYPE),
    _red("mean", _reducer(np.mean), declared=("sum",), restrict=FLOATS, options=_WITH_DTYPE),
    # a product of 12 values in [-9, 9] overflows float16: keep factors near 1
    _red("prod", _reducer(np.prod), dims=("none", "int"), domain=(-2, 2), options=_WITH_DTYPE),
    _red("amax", _reducer(np.max, int_acc=False), options={"empty_dim": False, "empty_error": True}),
    _red("amin", _reducer(np.min, int_acc=False), options={"empty_dim": False, "empty_error": True}),
    _red("max_dim", _ref_with_index(np.max, np.argmax), op=tk.max, declared=("max_with_indices",), dims=("int",),
         torch_fn=lambda torch: torch.max, options={"empty_dim": False}),
    _red("min_dim", _ref_with_index(np.min, np.argmin), op=tk.min, declared=("min_with_indices",), dims=("int",),
         torch_fn=lambda torch: torch.min, options={"empty_dim": False}),
    _red("max", _reducer(np.max, int_acc=False), declared=("amax",), dims=("none",),
         options={"empty_error": True}),
    _red("min", _reducer(np.min, int_acc=False), declared=("amin",), dims=("none",),
         options={"empty_error": True}),
    _red("argmax", _ref_arg(np.argmax), dims=("none", "int"), options={"empty_dim": False}, torch_rejects=_ARG_BOOL),
    _red("argmin", _ref_arg(np.argmin), dims=("none", "int"), options={"empty_dim": False}, torch_rejects=_ARG_BOOL),
    _red("var", _ref_var, restrict=FLOATS,
         options={"kwargs": [{}, {"correction": 0}, {"correction": 2}]}),
    _red("std", lambda *a, **k: np.sqrt(_ref_var(*a, **k)), declared=("var", "sqrt"), restrict=FLOATS,
         options={"kwargs": [{}, {"correction": 0}]}),
    _red("norm", _ref_norm, restrict=FLOATS, op=lambda x, *a, p=2, **k: tk.norm(x, p, *a, **k),
         torch_fn=lambda torch: lambda x, *a, p=2, **k: torch.norm(x, p, *a, **k),
         options={"kwargs": [{}, {"p": 1}, {"p": math.inf}, {"p": 3}, {"p": 0}, {"p": -math.inf}]}),
    _red("logsumexp", _ref_logsumexp, dims=("int", "tuple"), promotes_ints=True),
    _red("all", _reducer(np.all, int_acc=False)),
    _red("any", _reducer(np.any, int_acc=False)),
    _red("cumsum", _ref_scan(np.cumsum), dims=("int",), options={**_WITH_DTYPE, "scan": True}),
    _red("cumprod", _ref_scan(np.cumprod), dims=("int",), domain=(-2, 2), options={**_WITH_DTYPE, "scan": True}),
    _red("softmax", _ref_softmax(False), dims=("int",), options={"scan": True}, promotes_ints=True,
         torch_rejects={D.INTEGER_DTYPES + (D.bool_,): "integers are cast to the default float dtype first"}),
    _red("log_softmax", _ref_softmax(True), dims=("int",), options={"scan": True}, promotes_ints=True,
         # x - logsumexp(x) cancels near the max; PyTorch's CPU float16 kernel keeps ~1 half ulp of
         # logsumexp (~5e-4 for values near 1) in the difference, where tensorkit rounds once at the end
         torch_tol={D.float16: (1e-3, 5e-4), D.bfloat16: (1.6e-2, 4e-3)},
         torch_rejects={D.INTEGER_DTYPES + (D.bool_,): "integers are cast to the default float dtype first"}),
]

# ---- matrix products ---------------------------------------------------------------------------------------------
op_db += [
    OpInfo(n, getattr(tk, n), ref, _linalg_samples(pairs), declared=("matmul",) + extra, kind="linalg",
           error_inputs=errors_matmul_common)
    for n, ref, pairs, extra in [
        ("matmul", np.matmul, _MATMUL_PAIRS, ()), ("mm", np.matmul, _MM_PAIRS, ()),
        ("bmm", np.matmul, _BMM_PAIRS, ()), ("dot", np.dot, _DOT_PAIRS, ()), ("mv", np.matmul, _MV_PAIRS, ()),
    ]
]
op_db += [
    OpInfo("outer", tk.outer, np.outer, _linalg_samples(_OUTER_PAIRS), declared=("mul",), kind="linalg",
           error_inputs=errors_matmul_common),
    OpInfo("addmm", tk.addmm, _ref_addmm, sample_addmm, declared=("matmul", "add", "mul"), kind="linalg",
           error_inputs=errors_matmul_common),
]

# ---- fused norms and losses (ops/norm.py) ----------------------------------------------------------------------
def _ref_layer_norm(x, ns, w=None, b=None, eps=1e-5, rms=False):
    ns = (ns,) if isinstance(ns, int) else ns
    axes = tuple(range(x.ndim - len(ns), x.ndim))
    c = x if rms else x - x.mean(axes, keepdims=True)
    y = c / np.sqrt((c * c).mean(axes, keepdims=True) + eps) if x.size else c
    return y * (1.0 if w is None else w) + (0.0 if b is None else b)


def _ref_cross_entropy(x, t, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    cdim = 0 if x.ndim == 1 else 1
    c = x.shape[cdim]
    logp = np.moveaxis(x, cdim, -1)
    logp = logp - np.log(np.exp(logp - logp.max(-1, keepdims=True)).sum(-1, keepdims=True)) - \
        logp.max(-1, keepdims=True)
    w = np.ones(c) if weight is None else weight
    valid = t != ignore_index
    tc = np.where(valid, t, 0)
    wt = np.where(valid, w[tc], 0.0)
    nll = -np.take_along_axis(logp, tc[..., None], -1)[..., 0]
    smooth = -(logp * w).sum(-1)
    loss = np.where(valid, (1 - label_smoothing) * wt * nll + label_smoothing / c * smooth, 0.0)
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.sum() / wt.sum()


def _sample_layer_norm(rms):
    def gen(info, device, dtype, rng):
        mk = lambda shape, layout=_C: make_tensor(shape, dtype, device, rng=rng, layout=layout)
        pos = lambda shape: make_tensor(shape, dtype, device, rng=rng, low=0.5, high=2.0)
        eps = {"eps": 1e-6} if rms else {}
        f32 = lambda shape, low=None, high=None: make_tensor(shape, D.float32, device, rng=rng, low=low, high=high)
        yield SampleInput(mk((3, 4)), ((4,), pos((4,))) + (() if rms else (mk((4,)),)), eps, "weight and bias",
                          reduction_len=4)
        if dtype in _HALF:          # float32 parameters, as PyTorch's kernels allow
            yield SampleInput(mk((3, 4)), ((4,), f32((4,), 0.5, 2.0)) + (() if rms else (f32((4,)),)), eps,
                              "float32 weight and bias", reduction_len=4)
        if dtype not in REPRESENTATIVE:
            return
        yield SampleInput(mk((2, 2, 3)), ((2, 3), pos((2, 3))), eps, "2-D normalized_shape", reduction_len=6)
        if dtype in _HALF:
            yield SampleInput(mk((2, 2, 3)), ((2, 3), f32((2, 3), 0.5, 2.0)), eps,
                              "2-D normalized_shape, float32 weight", reduction_len=6)
        yield SampleInput(mk((2, 5)), ((5,),), eps, "no weight", reduction_len=5)
        yield SampleInput(mk((3, 4), "transposed"), ((4,), pos((4,))), eps, "transposed", reduction_len=4)
        yield SampleInput(mk((0, 4)), ((4,), pos((4,))), eps, "no rows", reduction_len=4)
    return gen


def _errors_layer_norm(rms):
    op = "rms_norm" if rms else "layer_norm"
    return _with(None, _err(lambda d: SampleInput(_f32((2, 3), d), ((4,),), name="wrong normalized_shape"),
                            RuntimeError, rf"{op}: given normalized_shape=\[4\].*\[\*, 4\].*\[2, 3\]"),
                 _err(lambda d: SampleInput(_f32((2, 4), d), ((4,), _f32((3,), d)), name="wrong weight"),
                      RuntimeError, rf"{op}: expected weight of shape \[4\], got \[3\]"),
                 _err(lambda d: SampleInput(_f32((2, 4), d), ((4,), _f32((4,), d, D.float64)), name="weight dtype"),
                      RuntimeError, rf"{op}: expected weight of dtype tk.float32.*got tk.float64"),
                 _err(lambda d: SampleInput(_f32((2, 4), d, D.bfloat16), ((4,), _f32((4,), d, D.float16)),
                                            name="half weight of another half"),
                      RuntimeError, rf"{op}: expected weight of dtype tk.bfloat16 \(the input's\) or tk.float32, "
                                    r"got tk.float16"))


def _sample_cross_entropy(info, device, dtype, rng):
    mk = lambda shape, layout=_C: make_tensor(shape, dtype, device, rng=rng, low=-3, high=3, layout=layout)
    idx = lambda v: tk.tensor(v, dtype=D.int64, device=device)
    w = lambda: make_tensor((5,), dtype, device, rng=rng, low=0.5, high=2.0)
    yield SampleInput(mk((4, 5)), (idx([0, 4, 2, 2]),), name="mean", reduction_len=5)
    if dtype not in REPRESENTATIVE:
        return
    yield SampleInput(mk((4, 5)), (idx([0, -100, 2, 1]),), {"reduction": "none"}, "none, ignored row", reduction_len=5)
    yield SampleInput(mk((4, 5)), (idx([3, 4, 1, 2]),), {"reduction": "sum", "label_smoothing": 0.2}, "sum, smoothing",
                      reduction_len=20)
    yield SampleInput(mk((2, 5, 3)), (idx([[0, 1, 4], [2, 2, 3]]),), {"ignore_index": 4}, "spatial, ignore 4",
                      reduction_len=30)
    yield SampleInput(mk((5,)), (idx(3),), {"label_smoothing": 0.1}, "unbatched", reduction_len=5)
    yield SampleInput(mk((5, 4), "transposed"), (idx([1, 0, 3, 3, 2]),), name="transposed", reduction_len=5)
    if dtype.is_floating_point:
        yield SampleInput(mk((4, 5)), (idx([0, 4, -100, 1]), w()), {"label_smoothing": 0.3},
                          "class weight, smoothing, ignored", reduction_len=20)


def _errors_cross_entropy(info, device):
    idx = lambda v: tk.tensor(v, dtype=D.int64, device=device)
    yield ErrorInput(SampleInput(_f32((3, 5), device), (idx([0, 1]),), name="target length"), RuntimeError,
                     r"cross_entropy: expected target of shape \[3\].*\[3, 5\].*got \[2\]")
    yield ErrorInput(SampleInput(_f32((3, 5), device), (idx([0, 1, 2]), _f32((4,), device)),
                                 name="weight length"), RuntimeError, r"expected weight of shape \[5\], got \[4\]")
    if device == "cpu":         # a GPU gives NaN rather than synchronizing to check
        yield ErrorInput(SampleInput(_f32((3, 5), device), (idx([0, 5, 1]),), name="class 5 of 5"), IndexError,
                         r"target 5 is out of bounds for 5 classes")


def _ref_group_norm(x, groups, w=None, b=None, eps=1e-5):
    g = x.reshape(x.shape[0], groups, -1)
    y = ((g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + eps)).reshape(x.shape)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return y * (1.0 if w is None else w.reshape(shape)) + (0.0 if b is None else b.reshape(shape))


def _ref_batch_norm(x, mean, var, w=None, b=None, training=False, momentum=0.1, eps=1e-5):
    dims = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if training:
        mean, var = x.mean(dims), x.var(dims)
    y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    return y * (1.0 if w is None else w.reshape(shape)) + (0.0 if b is None else b.reshape(shape))


def _sample_group_batch_norm(batch):
    def gen(info, device, dtype, rng):
        mk = lambda shape, layout=_C: make_tensor(shape, dtype, device, rng=rng, layout=layout)
        pos = lambda shape: make_tensor(shape, dtype, device, rng=rng, low=0.5, high=2.0)
        if batch:       # training without running statistics (the table's inputs are not modified); eval
            yield SampleInput(mk((4, 3, 2)), (None, None, pos((3,)), mk((3,)), True), name="training",
                              reduction_len=8)
            yield SampleInput(mk((3, 4, 2)), (mk((4,)), pos((4,)), pos((4,)), mk((4,))), name="eval",
                              reduction_len=6)
            if dtype in REPRESENTATIVE:
                yield SampleInput(mk((5, 3)), (None, None, pos((3,)), None, True), name="training, [N, C], weight only",
                                  reduction_len=5)
                yield SampleInput(mk((2, 3, 2, 2), "transposed"), (None, None, None, None, True),
                                  name="training, 4-D, no affine", reduction_len=8)
            if dtype in (D.float16, D.bfloat16):        # float32 parameters, as cuDNN (and autocast) allow
                f32 = lambda shape, low=None, high=None: make_tensor(shape, D.float32, device, rng=rng, low=low,
                                                                     high=high)
                yield SampleInput(mk((4, 3, 2)), (None, None, f32((3,), 0.5, 2.0), f32((3,)), True),
                                  name="training, float32 weight and bias", reduction_len=8)
                yield SampleInput(mk((3, 4, 2)), (f32((4,)), f32((4,), 0.5, 2.0), f32((4,), 0.5, 2.0), f32((4,))),
                                  name="eval, float32 statistics and parameters", reduction_len=6)
            return
        yield SampleInput(mk((2, 4, 3)), (2, pos((4,)), mk((4,))), name="2 groups", reduction_len=6)
        if dtype in REPRESENTATIVE:
            yield SampleInput(mk((3, 6)), (3,), name="no affine, no spatial dims", reduction_len=2)
            yield SampleInput(mk((2, 2, 3, 2), "transposed"), (1, pos((2,)), mk((2,))), name="4-D transposed",
                              reduction_len=12)
        if dtype in _HALF:          # float32 weight and bias, as PyTorch's kernels allow
            yield SampleInput(mk((2, 4, 3)), (2, make_tensor((4,), D.float32, device, rng=rng, low=0.5, high=2.0),
                                              make_tensor((4,), D.float32, device, rng=rng)),
                              name="2 groups, float32 weight and bias", reduction_len=6)
    return gen


def _ref_attention(q, k, v, is_causal=False):
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if is_causal:
        s = np.where(np.triu(np.ones(s.shape[-2:], bool), 1), -np.inf, s)
    p = np.exp(s - s.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ v


def _fused_attention(q, k, v, is_causal=False):
    """The flash_attention primitive on the GPU; on the CPU, where it has no kernel, the composite
    (so the device-vs-CPU tests compare the fused kernels, forward and backward, with it)."""
    from ..ops import attention
    if q.device.type == "cpu":
        return attention.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
    return attention.flash_attention(q, k, v, 1.0 / math.sqrt(q.shape[-1]), is_causal)


def _sample_attention(info, device, dtype, rng):
    mk = lambda shape, layout=_C: make_tensor(shape, dtype, device, rng=rng, low=-2, high=2, layout=layout)
    yield SampleInput(mk((1, 2, 5, 16)), (mk((1, 2, 7, 16)), mk((1, 2, 7, 16))), name="L 5, S 7", reduction_len=16)
    if dtype in REPRESENTATIVE:
        yield SampleInput(mk((2, 6, 12)), (mk((2, 6, 12)), mk((2, 6, 12))), {"is_causal": True},
                          name="causal, head dim 12", reduction_len=12)
        yield SampleInput(mk((1, 4, 16), "transposed"), (mk((1, 3, 16)), mk((1, 3, 16), "transposed")),
                          name="strided", reduction_len=16)


def _norm_op(name):
    from ..ops import norm
    return getattr(norm, name)


op_db += [
    OpInfo("layer_norm", lambda *a, **k: _norm_op("layer_norm")(*a, **k), _ref_layer_norm, _sample_layer_norm(False),
           kind="reduction", error_inputs=_errors_layer_norm(False),
           torch_fn=lambda torch: torch.nn.functional.layer_norm),
    OpInfo("rms_norm", lambda *a, **k: _norm_op("rms_norm")(*a, **k),
           lambda x, ns, w=None, eps=None: _ref_layer_norm(x, ns, w, None, eps, rms=True), _sample_layer_norm(True),
           kind="reduction", error_inputs=_errors_layer_norm(True),
           torch_fn=lambda torch: torch.nn.functional.rms_norm),
    # group_norm: a composite over the fused layer_norm
    OpInfo("group_norm", lambda *a, **k: _norm_op("group_norm")(*a, **k), _ref_group_norm,
           _sample_group_batch_norm(False), declared=("layer_norm",), kind="reduction",
           torch_fn=lambda torch: torch.nn.functional.group_norm, tol={**_COMPOSITE_HALF_TOL}),
    # training: the fused batch_norm primitive (and batch_norm_backward); eval: one pointwise launch
    OpInfo("batch_norm", lambda *a, **k: _norm_op("batch_norm")(*a, **k), _ref_batch_norm,
           _sample_group_batch_norm(True), declared=("batch_norm", "batch_norm_backward"), kind="reduction",
           torch_fn=lambda torch: torch.nn.functional.batch_norm,
           # PyTorch's CPU kernel rounds x·a to 16 bits before adding the mean's share (x·a + c): up to
           # half an ulp of |x·a| off near zero; ours rounds once (checked against float64 at the default)
           torch_tol={D.float16: (4e-3, 4e-3), D.bfloat16: (3e-2, 3e-2)}),
    OpInfo("flash_attention", _fused_attention, _ref_attention, _sample_attention, kind="linalg",
           # p is rounded to the input dtype before its product with v, as FlashAttention does
           tol={D.float16: (2e-3, 2e-3), D.bfloat16: (2e-2, 2e-2)}),
    # the fused primitive behind nn.functional.cross_entropy's class-index path (ops.norm.cross_entropy)
    OpInfo("fused_cross_entropy", lambda *a, **k: _norm_op("cross_entropy")(*a, **k), _ref_cross_entropy,
           _sample_cross_entropy, declared=("cross_entropy",), kind="reduction", error_inputs=_errors_cross_entropy,
           torch_fn=lambda torch: torch.nn.functional.cross_entropy,
           grad_skip={"class weight": "class weights get no gradient (as in PyTorch)"}),
]


# ---- fused recurrent cells (ops/rnn.py): one launch of the pointwise codegen each way ------------------------------
def _ref_lstm_cell(gates, c, hidden_gates=None):
    i, f, g, o = np.split(gates if hidden_gates is None else gates + hidden_gates, 4, -1)
    sig = lambda x: 0.5 * (1 + np.tanh(0.5 * x))         # no overflow warnings at large |x|
    c_new = sig(f) * c + sig(i) * np.tanh(g)
    return sig(o) * np.tanh(c_new), c_new


def _torch_lstm_cell(torch):
    def fn(gates, c, hidden_gates=None):
        i, f, g, o = (gates if hidden_gates is None else gates + hidden_gates).chunk(4, -1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c_new), c_new
    return fn


def _sample_lstm_cell(info, device, dtype, rng):
    mk = lambda shape, layout=_C, r=4.0: make_tensor(shape, dtype, device, rng=rng, low=-r, high=r, layout=layout)
    yield SampleInput(mk((3, 8)), (mk((3, 2)), mk((3, 8))), name="batch, hidden gates")
    if dtype not in REPRESENTATIVE:
        return
    yield SampleInput(mk((8,)), (mk((2,)),), name="unbatched")
    yield SampleInput(mk((2, 3, 12), "transposed"), (mk((2, 3, 3), "step"),), name="strided gates and c")
    yield SampleInput(mk((2, 8), r=60.0), (mk((2, 2)),), name="saturated gates")    # the stable sigmoid: no inf / inf
    yield SampleInput(mk((0, 8)), (mk((0, 2)),), name="empty batch")


def _errors_lstm_cell(info, device):
    yield ErrorInput(SampleInput(_f32((3, 8), device), (_f32((3, 3), device),), name="gates not 4 H"), RuntimeError,
                     r"lstm_cell: expected gates of shape \[\*, 4 \* H\] and c of shape \[\*, H\].*got gates \[3, 8\] "
                     r"and c \[3, 3\]")
    yield ErrorInput(SampleInput(_f32((3, 8), device), (_f32((3, 2), device), _f32((1, 8), device)),
                                 name="hidden gates shape"), RuntimeError,
                     r"lstm_cell: expected hidden_gates of the shape of gates \[3, 8\], got \[1, 8\]")


def _lstm_cell_op(gates, c, hidden_gates=None):
    from ..ops.rnn import lstm_cell
    return lstm_cell(gates, c, hidden_gates)


def _ref_gru_cell(xw, hw, h):
    (xr, xz, xn), (hr, hz, hn) = np.split(xw, 3, -1), np.split(hw, 3, -1)
    sig = lambda x: 0.5 * (1 + np.tanh(0.5 * x))
    r, z = sig(xr + hr), sig(xz + hz)
    n = np.tanh(xn + r * hn)
    return n + z * (h - n)


def _torch_gru_cell(torch):
    def fn(xw, hw, h):
        (xr, xz, xn), (hr, hz, hn) = xw.chunk(3, -1), hw.chunk(3, -1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        return n + z * (h - n)
    return fn


def _sample_gru_cell(info, device, dtype, rng):
    mk = lambda shape, layout=_C, r=4.0: make_tensor(shape, dtype, device, rng=rng, low=-r, high=r, layout=layout)
    yield SampleInput(mk((3, 6)), (mk((3, 6)), mk((3, 2))), name="batch")
    if dtype not in REPRESENTATIVE:
        return
    yield SampleInput(mk((6,)), (mk((6,)), mk((2,))), name="unbatched")
    yield SampleInput(mk((2, 3, 9), "transposed"), (mk((2, 3, 9), "step"), mk((2, 3, 3), "transposed")),
                      name="strided")
    yield SampleInput(mk((2, 6), r=60.0), (mk((2, 6), r=60.0), mk((2, 2))), name="saturated gates")
    yield SampleInput(mk((0, 6)), (mk((0, 6)), mk((0, 2))), name="empty batch")


def _errors_gru_cell(info, device):
    yield ErrorInput(SampleInput(_f32((3, 6), device), (_f32((3, 9), device), _f32((3, 2), device)),
                                 name="hw not 3 H"), RuntimeError,
                     r"gru_cell: expected xw and hw of shape \[\*, 3 \* H\] and h of shape \[\*, H\].*got xw \[3, 6\], "
                     r"hw \[3, 9\] and h \[3, 2\]")


def _gru_cell_op(xw, hw, h):
    from ..ops.rnn import gru_cell
    return gru_cell(xw, hw, h)


op_db += [
    OpInfo("lstm_cell", _lstm_cell_op, _ref_lstm_cell, _sample_lstm_cell, declared=("lstm_cell", "lstm_cell_backward"),
           error_inputs=_errors_lstm_cell, torch_fn=_torch_lstm_cell,
           # PyTorch's composite rounds every intermediate (i, f, g, f c, i g) to 16 bits; ours rounds once: where
           # c' = f c + i g cancels, the two differ by an ulp or two of the terms (magnitude ~1)
           torch_tol={D.float16: (4e-3, 2e-3), D.bfloat16: (3e-2, 1.6e-2)}),
    OpInfo("gru_cell", _gru_cell_op, _ref_gru_cell, _sample_gru_cell, declared=("gru_cell", "gru_cell_backward"),
           error_inputs=_errors_gru_cell, torch_fn=_torch_gru_cell,
           # as lstm_cell's: PyTorch's composite rounds r, z, n, r h_n, h - n to 16 bits, ours once
           torch_tol={D.float16: (4e-3, 2e-3), D.bfloat16: (3e-2, 1.6e-2)}),
]

# ---- convolution and pooling (entries and references in opinfo_conv.py) -------------------------------------------
from .opinfo_conv import conv_db  # noqa: E402  (needs OpInfo, SampleInput, make_tensor from above)

op_db += conv_db

_BY_NAME = {info.name: info for info in op_db}
assert len(_BY_NAME) == len(op_db), "op table names must be unique"

# ---- gradients ----------------------------------------------------------------------------------------------------
# Entries without a floating output have no gradient (a test checks that they indeed have none).
_NO_GRAD = {"eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_xor", "bitwise_and", "bitwise_or",
            "bitwise_xor", "bitwise_left_shift", "bitwise_right_shift", "isclose", "isnan", "isinf", "isfinite",
            "logical_not", "bitwise_not", "argmax", "argmin", "all", "any"}
# An expanded input repeats its values: maxima tie, a point where the max has no derivative
# (finite differences see half the gradient that PyTorch's tie rule gives each element).
_TIES = {"expanded": "repeated values tie for the maximum: not differentiable there"}
for _info in op_db:
    if _info.name in _NO_GRAD:
        _info.supports_grad = False
    if _info.name in ("amax", "amin", "max", "min", "max_dim", "min_dim", "norm"):
        _info.grad_skip = dict(_TIES)


def _specs(*specs):
    """A sample generator from ``(name, build)`` pairs; ``build(mk, idx)`` returns the call's
    (input, *args): ``mk(shape, layout=..., low=..., high=...)`` makes a tensor of the sampled
    dtype and device, ``idx(values)`` an int64 index tensor there."""
    def gen(info, device, dtype, rng):
        def mk(shape, layout=_C, low=None, high=None):
            return make_tensor(shape, dtype, device, rng=rng, layout=layout, low=low, high=high)

        def idx(values):
            return tk.tensor(values, dtype=D.int64, device=device)
        for name, build in specs:
            inp, *args = build(mk, idx)
            yield SampleInput(inp, tuple(args), name=name)
    return gen


def _grad_entry(name, op, declared, *specs, **kw):
    return OpInfo(name, op, None, _specs(*specs), declared=declared, kind="grad", **kw)


def _setitem(x, index, value):
    y = x.clone()
    y[index] = value
    return y


def _inplace_on_view(x, y):
    z = x * 1
    z[1:].mul_(y)          # the base's history becomes CopySlices
    return z


def _inplace_chain(x, y):
    z = x.clone()
    z.mul_(y).add_(x).sin_()
    return z


def _view_then_base(x, y):
    z = x * 2
    v = z[:, 1:]           # taken before the base is written: re-derived from the base after
    z.add_(y)
    return v * v, z


_M = [[True, False, True, False], [False, False, True, True], [True, True, False, False]]

# Ops outside the op table (their forward is tested in test_views / test_indexing / test_einsum):
# views, joins, gather/scatter and in-place patterns, here for their gradients only.
grad_db: list[OpInfo] = [
    _grad_entry("view", lambda x, *s: x.view(*s), ("copy",), ("split dim", lambda mk, i: (mk((3, 4)), 2, 6)),
                ("-1", lambda mk, i: (mk((2, 3, 2)), -1))),
    _grad_entry("reshape", tk.reshape, ("copy",), ("copying", lambda mk, i: (mk((3, 4), "transposed"), (12,))),
                ("viewing", lambda mk, i: (mk((3, 4)), (4, 3)))),
    _grad_entry("flatten", tk.flatten, ("copy",), ("dims 1..2", lambda mk, i: (mk((2, 3, 2)), 1))),
    _grad_entry("squeeze", tk.squeeze, ("copy",), ("dim", lambda mk, i: (mk((3, 1, 4)), 1)),
                ("all", lambda mk, i: (mk((1, 3, 1)),))),
    _grad_entry("unsqueeze", tk.unsqueeze, ("copy",), ("dim", lambda mk, i: (mk((3, 4)), 1))),
    _grad_entry("permute", tk.permute, ("copy",), ("3-D", lambda mk, i: (mk((2, 3, 4)), (2, 0, 1)))),
    _grad_entry("transpose", tk.transpose, ("copy",), ("0, 2", lambda mk, i: (mk((2, 3, 2)), 0, 2))),
    _grad_entry("movedim", tk.movedim, ("copy",), ("0 -> 2", lambda mk, i: (mk((2, 3, 2)), 0, 2))),
    _grad_entry("expand", lambda x, *s: x.expand(*s), ("copy",), ("new dims", lambda mk, i: (mk((3, 1)), (2, 3, 4)))),
    _grad_entry("narrow", tk.narrow, ("copy",), ("dim 1", lambda mk, i: (mk((3, 4)), 1, 1, 2))),
    _grad_entry("split", tk.split, ("copy",), ("sizes", lambda mk, i: (mk((5, 2)), [2, 3])), ("step", lambda mk, i: (mk((5, 2)), 2))),
    _grad_entry("chunk", tk.chunk, ("copy",), ("3 chunks", lambda mk, i: (mk((2, 5)), 3, 1))),
    _grad_entry("select", tk.select, ("copy",), ("dim 1", lambda mk, i: (mk((3, 4)), 1, -1))),
    _grad_entry("unbind", tk.unbind, ("copy",), ("dim 0", lambda mk, i: (mk((3, 2)),))),
    _grad_entry("diagonal", tk.diagonal, ("copy",), ("offset 1", lambda mk, i: (mk((3, 4)), 1)),
                ("batched", lambda mk, i: (mk((2, 3, 3)), 0, 1, 2))),
    _grad_entry("unfold", lambda x, *a: x.unfold(*a), ("copy",), ("overlapping", lambda mk, i: (mk((5,)), 0, 3, 1)),
                ("gaps", lambda mk, i: (mk((2, 7)), 1, 2, 3))),
    _grad_entry("as_strided", tk.as_strided, ("copy",), ("overlapping", lambda mk, i: (mk((6,)), (2, 3), (1, 2))),
                ("offset", lambda mk, i: (mk((3, 4)), (2, 2), (4, 1), 1))),
    _grad_entry("getitem", lambda x, index: x[index], ("copy", "index"),
                *[(n, (lambda ix: lambda mk, i: (mk((3, 4)), ix(i)))(ix)) for n, ix in [
                    ("slices", lambda i: (slice(1, None), slice(None, None, 2))), ("int", lambda i: (1,)),
                    ("None, ..., int", lambda i: (None, Ellipsis, 0)), ("list", lambda i: ([0, 2, 0],)),
                    ("int tensor + slice", lambda i: (slice(None), i([[3, 0], [1, 1]]))),
                    ("mask", lambda i: (tk.tensor(_M, device=i([0]).device),)),
                    ("two tensors", lambda i: (i([0, 2, 2]), i([1, 1, 3])))]]),
    _grad_entry("setitem", _setitem, ("copy", "index_put"),
                ("slice = tensor", lambda mk, i: (mk((3, 4)), (slice(None), slice(1, 3)), mk((3, 2)))),
                ("int = broadcast", lambda mk, i: (mk((3, 4)), 1, mk((4,)))),
                ("index tensor = tensor", lambda mk, i: (mk((3, 4)), i([2, 0]), mk((2, 4)))),
                ("mask = number", lambda mk, i: (mk((3, 4)), tk.tensor(_M, device=i([0]).device), 0.5))),
    _grad_entry("inplace_on_view", _inplace_on_view, ("copy",), ("mul_ on a slice", lambda mk, i: (mk((3, 4)), mk((2, 4))))),
    _grad_entry("inplace_chain", _inplace_chain, ("copy",), ("mul_ add_ sin_", lambda mk, i: (mk((3, 4)), mk((4,))))),
    _grad_entry("view_then_base", _view_then_base, ("copy",), ("add_ to the base", lambda mk, i: (mk((3, 4)), mk((3, 4))))),
    _grad_entry("cat", lambda dim, *ts: tk.cat(ts, dim), ("cat",),
                ("dim 1", lambda mk, i: (1, mk((2, 3)), mk((2, 1)), mk((2, 2), "transposed"))),
                ("dim 0, promotes", lambda mk, i: (0, mk((1, 3)), tk.ones(2, 3, dtype=D.float32, device=i([0]).device))),
                ("skips 1-D empty", lambda mk, i: (0, mk((2,)), mk((0,))))),
    _grad_entry("stack", lambda *ts: tk.stack(ts, 1), ("cat",),
                ("3 tensors", lambda mk, i: (mk((2, 3)), mk((2, 3)), mk((2, 3))))),
    _grad_entry("flip", tk.flip, ("index",), ("dims 0, 1", lambda mk, i: (mk((3, 4)), (0, 1)))),
    _grad_entry("roll", tk.roll, ("cat",), ("2-D", lambda mk, i: (mk((3, 4)), (1, -1), (0, 1)))),
    _grad_entry("tril", tk.tril, ("where",), ("diagonal -1", lambda mk, i: (mk((3, 4)), -1))),
    _grad_entry("gather", tk.gather, ("index",),
                ("dim 1", lambda mk, i: (mk((3, 4)), 1, i([[0, 1], [3, 3], [2, 0]])))),
    _grad_entry("scatter", tk.scatter, ("index_put",),
                ("distinct", lambda mk, i: (mk((3, 4)), 1, i([[0, 1], [3, 2], [2, 0]]), mk((3, 2)))),
                ("value", lambda mk, i: (mk((3, 4)), 0, i([[2, 0, 1, 1]]), 1.5))),
    _grad_entry("scatter_add", tk.scatter_add, ("index_put",),
                ("duplicates", lambda mk, i: (mk((3, 4)), 1, i([[0, 0], [3, 2], [2, 2]]), mk((3, 2))))),
    _grad_entry("index_select", tk.index_select, ("index",),
                ("repeats", lambda mk, i: (mk((3, 4)), 1, i([2, 0, 2])))),
    _grad_entry("index_add", tk.index_add, ("index_put",),
                ("duplicates", lambda mk, i: (mk((3, 4)), 0, i([0, 2, 0]), mk((3, 4))))),
    _grad_entry("index_copy", tk.index_copy, ("index_put",),
                ("distinct", lambda mk, i: (mk((3, 4)), 1, i([3, 0]), mk((3, 2))))),
    _grad_entry("index_fill", tk.index_fill, ("index_put",),
                ("dim 1", lambda mk, i: (mk((3, 4)), 1, i([0, 2]), 1.5))),
    _grad_entry("index_put", tk.index_put, ("index_put",),
                ("write", lambda mk, i: (mk((3, 4)), (i([0, 2]),), mk((4,)))),
                ("accumulate duplicates", lambda mk, i: (mk((3, 4)), (i([0, 2, 0]), i([1, 1, 1])), mk(()), True))),
    _grad_entry("masked_fill", tk.masked_fill, ("where",),
                ("number", lambda mk, i: (mk((3, 4)), tk.tensor(_M, device=i([0]).device), 0.5))),
    _grad_entry("masked_select", tk.masked_select, ("index",),
                ("broadcast mask", lambda mk, i: (mk((3, 4)), tk.tensor(_M[0], device=i([0]).device)))),
    _grad_entry("take", tk.take, ("index",), ("2-D index", lambda mk, i: (mk((3, 4)), i([[0, 11], [5, 5]])))),
    _grad_entry("take_along_dim", tk.take_along_dim, ("index",),
                ("broadcast", lambda mk, i: (mk((3, 4)), i([[0], [3], [1]]), 1))),
    _grad_entry("einsum", tk.einsum, ("matmul",),
                ("matmul", lambda mk, i: ("ij,jk->ik", mk((2, 3)), mk((3, 2)))),
                ("trace", lambda mk, i: ("ii->", mk((3, 3)))),
                ("batched outer", lambda mk, i: ("bi,bj->bij", mk((2, 3)), mk((2, 2))))),
]
assert not {i.name for i in grad_db} & set(_BY_NAME), "grad_db names must differ from op_db's"
