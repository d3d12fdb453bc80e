"""Numba pointwise kernels, generated from ``kernels.codegen`` Programs.

Two loop shapes per Program, each written once to a cache file and compiled lazily:

* ``flat``: every tensor operand is contiguous with the output's shape (or is a single
  element); the loop is ``for i in prange(n)`` over 1-D buffers - the fast path, and one
  specialization per dtype combination whatever the rank.
* ``strided``: anything else (broadcasting, transposes, slices, in-place into views). Dims
  are coalesced first; the kernel walks rows of the collapsed shape, each row a strided
  inner loop. Shapes and strides travel as int64 arrays, so rank is not a specialization.

Each kernel has a serial and a ``parallel=True`` twin; small inputs take the serial one so
they do not pay for waking threads. float16/bfloat16 operands are computed in float32:
they are converted on the way in and rounded (to nearest even) on the way out.
Kernels here know nothing about autograd or dtype promotion.
"""
from __future__ import annotations

import numpy as np

from .. import _dispatch
from . import _vecmath
from .. import dtypes as D
from .._tensor import Tensor, contiguous_strides
from ..kernels.codegen import (MathNamespace, Node, Program, Val, broadcast_strides, coalesce, load_source,
                               render)

PARALLEL_MIN_NUMEL = 1 << 17      # below this, thread wake-up costs more than it saves
_HALF = (D.float16, D.bfloat16)


def _np_type(d: D.DType) -> str:
    return "np.bool_" if d is D.bool_ else f"np.{d.name}"


class NumbaMath(MathNamespace):
    """Scalar bodies rendered as Numba-compilable Python expressions."""

    name = "numba"

    def const(self, value, dtype):
        if dtype is D.bool_:
            return Val("True" if value else "False", dtype, self)
        if isinstance(value, float) and value != value:
            text = "np.nan"
        elif isinstance(value, float) and value in (float("inf"), float("-inf")):
            text = "np.inf" if value > 0 else "(-np.inf)"
        else:
            text = repr(value) if not dtype.is_floating_point else repr(float(value))
        return Val(f"{_np_type(dtype)}({text})", dtype, self)

    def cast(self, x, dtype):
        if dtype is D.bool_:
            return Val(f"({x.text} != 0)", dtype, self)
        return Val(f"{_np_type(dtype)}({x.text})", dtype, self)

    def where(self, c, a, b):
        return Val(f"({a.text} if {c.text} else {b.text})", a.dtype, self)

    def __getattr__(self, fn):
        # m.exp(x) -> np.exp(x): numba types numpy ufuncs on scalars (float32 stays float32).
        if fn.startswith("_"):
            raise AttributeError(fn)
        return lambda *args: self.call(f"np.{fn}", *args)

    # Functions whose text is not just np.<name>(...) or whose semantics are dtype-dependent.
    def isnan(self, x):
        return Val(f"({x.text} != {x.text})", D.bool_, self) if x.dtype.is_floating_point else self.const(False, D.bool_)

    def isinf(self, x):
        return self.call("np.isinf", x, dtype=D.bool_) if x.dtype.is_floating_point else self.const(False, D.bool_)

    def isfinite(self, x):
        return self.call("np.isfinite", x, dtype=D.bool_) if x.dtype.is_floating_point else self.const(True, D.bool_)

    def floordiv(self, a, b):
        return Val(f"({a.text} // {b.text})", a.dtype, self)

    def remainder(self, a, b):          # Python's sign rule: the result takes b's sign
        return Val(f"({a.text} % {b.text})", a.dtype, self)

    def truncdiv(self, a, b):           # round toward zero; integers: floor, then correct
        if a.dtype.is_floating_point:
            return self.call("np.trunc", a / b)
        dtype, a, b = a.dtype, a.text, b.text
        return Val(f"({a} // {b} + ((({a} % {b}) != 0) & (({a} < 0) != ({b} < 0))))", dtype, self)

    def fmod(self, a, b):               # C's rule: the result takes a's sign
        if a.dtype.is_floating_point:
            return self.call("np.fmod", a, b)
        return Val(f"({a.text} - {b.text} * int({a.text} / {b.text}))", a.dtype, self)

    def pow(self, a, b):
        return Val(f"({a.text} ** {b.text})", a.dtype, self)

    def maximum(self, a, b):            # NaN propagates, as in PyTorch
        return Val(f"({a.text} if ({a.text} >= {b.text} or {a.text} != {a.text}) else {b.text})", a.dtype, self)

    def minimum(self, a, b):
        return Val(f"({a.text} if ({a.text} <= {b.text} or {a.text} != {a.text}) else {b.text})", a.dtype, self)

    def logical_not(self, x):
        return Val(f"(not {x.text})", D.bool_, self)

    def invert(self, x):
        return Val(f"(not {x.text})", D.bool_, self) if x.dtype is D.bool_ else Val(f"(~{x.text})", x.dtype, self)

    def shift_left(self, a, b):
        return Val(f"({a.text} << {b.text})", a.dtype, self)

    def shift_right(self, a, b):
        return Val(f"({a.text} >> {b.text})", a.dtype, self)

    def exp(self, x):                   # float32: vectorisable (see _vecmath)
        return self.call("exp_f32" if x.dtype is D.float32 else "np.exp", x)

    def erf(self, x):
        return self.call("math.erf", x)

    def erfc(self, x):
        return self.call("math.erfc", x)

    def round(self, x):                 # round half to even, as PyTorch
        return self.call("np.rint", x)

    def sign(self, x):
        if x.dtype is D.bool_:
            return x
        z = self.const(0, x.dtype)
        return Val(f"({x.text} > {z.text}) - ({x.text} < {z.text})", x.dtype, self)


NUMBA = NumbaMath()

_HEADER = ("import math\nimport numba\nimport numpy as np\n"
           f"from tensorkit.cpu._vecmath import exp_f32  # vecmath v{_vecmath.VERSION}\n\n")
_JIT = "@numba.njit(cache=True, error_model='numpy', nogil=True{par})\n"


def _scaffold(program: Program, modes: tuple[str, ...], parallel: bool, strided: bool) -> str:
    """Source of one kernel. ``modes[i]`` is 'flat', 'strided' or 'scalar' (a number, or a
    one-element tensor read on the host) for input i. Outputs are 'flat' in the flat kernel, 'strided' otherwise."""
    loop = "numba.prange" if parallel else "range"
    ins = [f"x{i}" for i in range(len(program.inputs))]
    outs = [f"o{j}" for j in range(len(program.outputs))]
    name = "kernel_" + ("par" if parallel else "ser")
    if not strided:
        loaded = [f"x{i}[i]" if mode == "flat" else f"x{i}" for i, mode in enumerate(modes)]
        lines, results = render(program, NUMBA, loaded)
        body = [f"    for i in {loop}(n):"] + [f"        {l}" for l in lines]
        body += [f"        {o}[i] = {r}" for o, r in zip(outs, results)]
        return _JIT.format(par=", parallel=True" if parallel else "") + \
            f"def {name}(n, {', '.join(outs + ins)}):\n" + "\n".join(body) + "\n"
    # strided: every tensor operand is (buffer, offset, strides[rank]); row-major walk over shape.
    args, pre, offs, loaded = [], [], [], []
    for j, o in enumerate(outs):
        args += [o, f"{o}_off", f"{o}_st"]
        offs.append(o)
    for i, mode in enumerate(modes):
        if mode == "scalar":
            args.append(f"x{i}")
            loaded.append(f"x{i}")
        else:
            args += [f"x{i}", f"x{i}_off", f"x{i}_st"]
            offs.append(f"x{i}")
            loaded.append(f"x{i}[p_x{i} + j * s_x{i}]")
    lines, results = render(program, NUMBA, loaded)
    body = [f"    last = rank - 1", f"    ncols = shape[last]"]
    body += [f"    for row in {loop}(nrows):"]
    body += [f"        p_{b} = {b}_off" for b in offs]
    # row -> per-dim index through row_div (products of the outer sizes after each dim): Numba's
    # prange forbids updating a copy of the loop index
    body += ["        for d in range(last):", "            idx = (row // row_div[d]) % shape[d]"]
    body += [f"            p_{b} += idx * {b}_st[d]" for b in offs]
    body += [f"        s_{b} = {b}_st[last]" for b in offs]
    body += ["        for j in range(ncols):"] + [f"            {l}" for l in lines]
    body += [f"            {o}[p_{o} + j * s_{o}] = {r}" for o, r in zip(outs, results)]
    return _JIT.format(par=", parallel=True" if parallel else "") + \
        f"def {name}(nrows, rank, shape, row_div, {', '.join(args)}):\n" + "\n".join(body) + "\n"


_kernels: dict = {}


def _kernel(program: Program, modes: tuple[str, ...], parallel: bool, strided: bool = False):
    key = (program, modes, parallel, strided)
    fn = _kernels.get(key)
    if fn is None:
        source = _HEADER + _scaffold(program, modes, parallel, strided)
        fn = _kernels[key] = getattr(load_source(source, "numba_pointwise"), "kernel_par" if parallel else "kernel_ser")
    return fn


def launch(program: Program, args: list, outs: list, numel: int) -> None:
    """Run ``program`` on ``args`` (Tensors or Python scalars) writing ``outs`` (Tensors of
    the broadcast shape and of the program's output dtypes)."""
    if numel == 0:
        return
    program = _widened.get(program) or _widen(program)
    out_shape = outs[0]._shape
    parallel = numel >= PARALLEL_MIN_NUMEL
    # fast path: contiguous full-size or single-element operands, no half types
    for o in outs:
        if o.dtype in _HALF or not o.is_contiguous():
            return _launch_strided(program, args, outs, numel, parallel)
    modes, call = [], [o._storage.data[o._offset:o._offset + numel] for o in outs]
    for a, (_, dt) in zip(args, program.inputs):
        if not isinstance(a, Tensor):
            modes.append("scalar")
            call.append(dt.numpy.type(a))
        elif a.dtype in _HALF:
            return _launch_strided(program, args, outs, numel, parallel)
        elif a._shape == out_shape and a.is_contiguous():
            modes.append("flat")
            call.append(a._storage.data[a._offset:a._offset + numel])
        elif a.numel() == 1:                     # read on the host: one kernel shape for scalars
            modes.append("scalar")
            call.append(a._storage.data[a._offset])
        else:
            return _launch_strided(program, args, outs, numel, parallel)
    key = (program, tuple(modes), parallel, False)
    (_kernels.get(key) or _kernel(*key))(numel, *call)


_strided_plans: dict = {}


def _launch_strided(program: Program, args: list, outs: list, numel: int, parallel: bool) -> None:
    out_shape = outs[0]._shape
    # Without half types, everything but the buffers and offsets follows from the operands'
    # shapes and strides, which repeat (a bias added to every batch): planned once per layout.
    key = (program, parallel, out_shape, tuple(o._strides for o in outs) + tuple(
        (a._shape, a._strides) if isinstance(a, Tensor) and a.numel() != 1 else None for a in args))
    plan = _strided_plans.get(key)
    if plan is not None:
        fn, head, tail = plan
        call = []
        for o, strides in zip(outs, tail[:len(outs)]):
            call += [o._storage.data, o._offset, strides]
        k = len(outs)
        for a, (_, dt) in zip(args, program.inputs):
            if not isinstance(a, Tensor):
                call.append(dt.numpy.type(a))
            elif a.numel() == 1:
                call.append(a._storage.data[a._offset])
            else:
                call += [a._storage.data, a._offset, tail[k]]
                k += 1
        fn(*head, *call)
        return
    half = any(o.dtype in _HALF for o in outs) or any(isinstance(a, Tensor) and a.dtype in _HALF for a in args)
    targets = [np.empty(out_shape, np.float32) if o.dtype in _HALF else None for o in outs]
    out_ops = [(t.reshape(-1), 0, contiguous_strides(out_shape)) if t is not None
               else (o._storage.data, o._offset, o._strides) for t, o in zip(targets, outs)]
    modes, stride_lists, call_in = [], [list(st) for _, _, st in out_ops], []
    for a, (_, dt) in zip(args, program.inputs):
        if not isinstance(a, Tensor) or a.numel() == 1:
            modes.append("scalar")
            call_in.append(dt.numpy.type(a) if not isinstance(a, Tensor) else
                           np.float32(a._np().reshape(())) if a.dtype in _HALF else a._storage.data[a._offset])
            continue
        buf, off, shape, strides = _operand(a)
        modes.append("strided")
        stride_lists.append(broadcast_strides(shape, strides, out_shape))
        call_in.append((buf, off))
    shape, strides = coalesce(out_shape, stride_lists)
    fn = _kernel(program, tuple(modes), parallel, True)
    call, k = [], 0
    for buf, off, _ in out_ops:
        call += [buf, off, np.asarray(strides[k], np.int64)]
        k += 1
    for m, x in zip(modes, call_in):
        if m == "scalar":
            call.append(x)
        else:
            call += [x[0], x[1], np.asarray(strides[k], np.int64)]
            k += 1
    row_div = np.ones(len(shape), np.int64)
    for d in range(len(shape) - 3, -1, -1):
        row_div[d] = row_div[d + 1] * shape[d + 1]
    head = (numel // shape[-1], len(shape), np.asarray(shape, np.int64), row_div)
    if not half:
        if len(_strided_plans) > 4096:           # shapes that never repeat: keep the cache bounded
            _strided_plans.clear()
        _strided_plans[key] = (fn, head, [np.asarray(st, np.int64) for st in strides])
    fn(*head, *call)
    with np.errstate(over="ignore"):         # rounding to half overflows to inf, silently as in PyTorch
        for t, o in zip(targets, outs):
            if t is not None:
                o._np()[...] = t


def _operand(t):
    """(buffer, offset, shape, strides) of a tensor, half types widened to float32."""
    if t.dtype in _HALF:
        a = np.ascontiguousarray(t._np(), dtype=np.float32)
        return a.reshape(-1), 0, t._shape, contiguous_strides(t._shape)
    return t._storage.data, t._offset, t._shape, t._strides


_widened: dict = {}


def _widen(program: Program) -> Program:
    """The program with float16/bfloat16 replaced by float32 (Numba has no half arithmetic;
    half operands are widened on load and rounded on store by ``launch``)."""
    w = _widened.get(program)
    if w is None:
        f = lambda d: D.float32 if d in _HALF else d
        w = _widened[program] = Program(
            tuple((k, f(d)) for k, d in program.inputs),
            tuple(Node(n.name, n.body, n.args, f(n.compute), f(n.dtype)) for n in program.nodes),
            program.outputs)
    return w


_dispatch.pointwise_launchers["cpu"] = launch
