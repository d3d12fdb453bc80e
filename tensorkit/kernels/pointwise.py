"""Triton pointwise kernels, generated from ``kernels.codegen`` Programs.

The Triton twin of ``cpu/pointwise.py``: the same Programs and scalar bodies, rendered with
``TritonMath`` into one of two scaffolds, each written once to a cache file (Triton needs
real source files) and compiled by Triton on first launch:

* ``flat``: every tensor operand is contiguous with the output's shape (or is a single
  element); 1-D blocks of ``BLOCK_SIZE`` elements over the flat index, the tail masked.
* ``strided``: anything else (broadcasting, transposes, slices, in-place into views). Dims
  are coalesced first (``codegen.coalesce``); the kernel is generated for that rank (at most
  ``MAX_RANK``) and takes the sizes and each operand's strides as scalar arguments; each
  element's offsets come from its flat index.

Python numbers and 0-d CPU tensors travel as scalar kernel arguments (their bit pattern as
an integer, so a float64 stays exact: Triton would pass a Python float as float32). A
one-element tensor on the device is loaded once per block, not read on the host (that would
wait for the device). float16/bfloat16 are loaded, cast up to float32, computed, and cast
down on the store (round to nearest even), as on the CPU.

Triton is imported when the first kernel is generated, not with tensorkit. Kernels here know
nothing about autograd or dtype promotion.
"""
from __future__ import annotations

import numpy as np

from .. import _dispatch, cuda
from .. import dtypes as D
from .._tensor import Tensor
from ..device import CPU
from .codegen import MathNamespace, Program, Val, broadcast_strides, coalesce, load_source, render
from ._launch import launch as _launch, pointer as _pointer, triton_source

MAX_RANK = 6          # strided kernels handle this many dims after coalescing; the rest loop on the host
MAX_BLOCK = 1024      # elements per program: 4 warps x 8 elements per thread on a GPU
_HALF = (D.float16, D.bfloat16)


def _tl(d: D.DType) -> str:
    return "tl.int1" if d is D.bool_ else f"tl.{d.name}"


class TritonMath(MathNamespace):
    """Scalar bodies rendered as Triton expressions (``tl`` ops; ``tm`` is ``kernels/_tlmath``)."""

    name = "triton"

    def const(self, value, dtype):
        if dtype is D.bool_:
            text = "True" if value else "False"
        elif dtype.is_floating_point:
            value = float(value)
            text = "NAN" if value != value else "INF" if value == float("inf") else "-INF" \
                if value == float("-inf") else repr(value)
        else:
            text = repr(int(value))
        return Val(f"tl.full((), {text}, {_tl(dtype)})", dtype, self)

    def cast(self, x, dtype):
        if x.dtype is dtype:
            return x
        text = x.text
        if x.dtype in _HALF and dtype is not D.float32:     # half <-> anything goes through float32
            text, x = f"{text}.to(tl.float32)", Val(f"{text}.to(tl.float32)", D.float32, self)
        if dtype is D.bool_:
            return Val(f"({text} != 0)", dtype, self)
        if dtype in _HALF and x.dtype is not D.float32:
            text = f"{text}.to(tl.float32)"
        return Val(f"{text}.to({_tl(dtype)})", dtype, self)

    def binary(self, op, a, b, dtype):
        # Triton's int1 arithmetic wraps (True + True is False); PyTorch's bool + and * are or / and
        if a.dtype is D.bool_ and op in "+*":
            op = "|" if op == "+" else "&"
        return super().binary(op, a, b, dtype)

    def where(self, c, a, b):
        return Val(f"tl.where({c.text}, {a.text}, {b.text})", a.dtype, self)

    def _lib(self, fn, *args):
        return self.call(f"libdevice.{fn}", *args)

    # transcendental functions: libdevice (numpy under the interpreter); always float32/float64 here
    def exp(self, x): return self._lib("exp", x)
    def exp2(self, x): return self._lib("exp2", x)
    def expm1(self, x): return self._lib("expm1", x)
    def log(self, x): return self._lib("log", x)
    def log2(self, x): return self._lib("log2", x)
    def log10(self, x): return self._lib("log10", x)
    def log1p(self, x): return self._lib("log1p", x)
    def sin(self, x): return self._lib("sin", x)
    def cos(self, x): return self._lib("cos", x)
    def tan(self, x): return self._lib("tan", x)
    def arcsin(self, x): return self._lib("asin", x)
    def arccos(self, x): return self._lib("acos", x)
    def arctan(self, x): return self._lib("atan", x)
    def arctan2(self, a, b): return self._lib("atan2", a, b)
    def sinh(self, x): return self._lib("sinh", x)
    def cosh(self, x): return self._lib("cosh", x)
    def tanh(self, x): return self._lib("tanh", x)
    def erf(self, x): return self._lib("erf", x)
    def erfc(self, x): return self._lib("erfc", x)
    def trunc(self, x): return self._lib("trunc", x)
    def round(self, x): return self._lib("rint", x)         # round half to even, as PyTorch

    def sqrt(self, x):      # IEEE-rounded, as numpy (float64's tl.sqrt already is; float32's is approximate)
        return self.call("tl.sqrt_rn" if x.dtype is D.float32 else "tl.sqrt", x)

    def floor(self, x): return self.call("tl.floor", x)
    def ceil(self, x): return self.call("tl.ceil", x)
    def abs(self, x): return self.call("tl.abs", x)

    def isnan(self, x):
        return Val(f"({x.text} != {x.text})", D.bool_, self) if x.dtype.is_floating_point else self.const(False, D.bool_)

    def isinf(self, x):       # x - x is NaN exactly for inf and NaN
        if not x.dtype.is_floating_point:
            return self.const(False, D.bool_)
        return Val(f"(({x.text} == {x.text}) & (({x.text} - {x.text}) != 0))", D.bool_, self)

    def isfinite(self, x):
        if not x.dtype.is_floating_point:
            return self.const(True, D.bool_)
        return Val(f"(({x.text} - {x.text}) == 0)", D.bool_, self)

    def floordiv(self, a, b):
        return self.call("tm.floordiv_float" if a.dtype.is_floating_point else "tm.floordiv_int", a, b)

    def remainder(self, a, b):          # Python's sign rule: the result takes b's sign
        return self.call("tm.remainder_float" if a.dtype.is_floating_point else "tm.remainder_int", a, b)

    def truncdiv(self, a, b):           # Triton's integer // already truncates
        if a.dtype.is_floating_point:
            return self.trunc(a / b)
        return Val(f"({a.text} // {b.text})", a.dtype, self)

    def fmod(self, a, b):               # C's rule: libdevice for floats (a GPU's frem is approximate), srem for ints
        if a.dtype.is_floating_point:
            return self._lib("fmod", a, b)
        return Val(f"({a.text} % {b.text})", a.dtype, self)

    def pow(self, a, b):
        return self._lib("pow", a, b) if a.dtype.is_floating_point else self.call("tm.ipow", a, b)

    def maximum(self, a, b):            # NaN propagates, as in PyTorch (and the CPU kernels)
        return Val(f"tl.where(({a.text} >= {b.text}) | ({a.text} != {a.text}), {a.text}, {b.text})", a.dtype, self)

    def minimum(self, a, b):
        return Val(f"tl.where(({a.text} <= {b.text}) | ({a.text} != {a.text}), {a.text}, {b.text})", a.dtype, self)

    def logical_not(self, x):
        return Val(f"({x.text} == 0)", D.bool_, self)

    def invert(self, x):
        return self.logical_not(x) if x.dtype is D.bool_ else Val(f"(~{x.text})", x.dtype, self)

    def shift_left(self, a, b):
        return Val(f"({a.text} << {b.text})", a.dtype, self)

    def shift_right(self, a, b):
        return Val(f"({a.text} >> {b.text})", a.dtype, self)

    def sign(self, x):
        if x.dtype is D.bool_:
            return x
        t = _tl(x.dtype)
        return Val(f"(({x.text} > 0).to({t}) - ({x.text} < 0).to({t}))", x.dtype, self)


TRITON = TritonMath()

_HEADER = """import triton
import triton.language as tl

from tensorkit.kernels import _tlmath as tm
from tensorkit.kernels._tlmath import libdevice

NAN = tl.constexpr(float("nan"))
INF = tl.constexpr(float("inf"))

"""


def _scalar_text(i: int, dtype: D.DType) -> str:
    """A scalar argument (see ``_scalar_arg``) back as a value of ``dtype``, made a block (see
    ``_scaffold``)."""
    x = f"tl.broadcast_to(x{i}, (BLOCK_SIZE,))"
    if dtype is D.bool_:
        return f"({x} != 0)"
    if dtype is D.float64:
        return f"{x}.to(tl.int64).to(tl.float64, bitcast=True)"
    if dtype.is_floating_point:
        f32 = f"{x}.to(tl.int32).to(tl.float32, bitcast=True)"
        return f32 if dtype is D.float32 else f"{f32}.to({_tl(dtype)})"
    return f"{x}.to({_tl(dtype)})"


def _scalar_arg(value, dtype: D.DType) -> int:
    """A Python int carrying ``value`` as ``dtype``: floats as their bit pattern (float64 in
    64 bits, other floats as float32), integers and bools as themselves."""
    if dtype is D.bool_:
        return int(bool(value))
    if dtype is D.float64:
        return int(np.float64(value).view(np.int64))
    if dtype.is_floating_point:
        return int(np.float32(value).view(np.int32))
    return int(value)


def _scaffold(program: Program, modes: tuple[str, ...], rank: int) -> str:
    """Source of one kernel. ``modes[i]``: 'flat' | 'strided' (a tensor operand, loaded per
    element), 'one' (a one-element tensor, loaded once), 'scalar' (a kernel argument).
    ``rank`` 0 makes the flat kernel; otherwise the strided kernel over ``rank`` dims.

    Every operand is made a block before the body runs: the interpreter mistypes a 0-d
    comparison result that is broadcast later (its data keeps the operands' dtype); on a GPU
    the broadcast is free."""
    ins = [f"x{i}" for i in range(len(program.inputs))]
    outs = [f"o{j}" for j in range(len(program.outputs))]
    sizes = [f"size{d}" for d in range(rank)]
    st = lambda b: [f"{b}_st{d}" for d in range(rank)]
    args, doc = ["n"] + sizes, ["    # n: elements; size<d>: the (coalesced) shape" if rank else "    # n: elements"]
    body = ["    i = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)",
            "    mask = i < n                     # the last block runs past the end"]
    if rank:
        # flat index -> one index per dim, last dim fastest (row-major)
        body.append("    r = i")
        for d in range(rank - 1, 0, -1):
            body += [f"    i{d} = r % size{d}", f"    r = r // size{d}"]
        body.append("    i0 = r")
    offset = lambda b: " + ".join(f"i{d} * {b}_st{d}" for d in range(rank)) if rank else "i"
    for o in outs:
        args += [o] + (st(o) if rank else [])
    loaded, scalars = [], []
    for i, (mode, (_, dt)) in enumerate(zip(modes, program.inputs)):
        x = ins[i]
        if mode == "scalar":
            args.append(x)
            scalars.append(x)
            body.append(f"    a{i} = {_scalar_text(i, dt)}")
        elif mode == "one":
            args.append(x)
            body.append(f"    a{i} = tl.broadcast_to(tl.load({x}), (BLOCK_SIZE,))")
        else:
            args += [x] + (st(x) if rank else [])
            body.append(f"    a{i} = tl.load({x} + {offset(x)}, mask=mask)")
        loaded.append(f"a{i}")
    lines, results = render(program, TRITON, loaded)
    body += [f"    {l}" for l in lines]
    body += [f"    tl.store({o} + {offset(o)}, {r}, mask=mask)" for o, r in zip(outs, results)]
    doc.append(f"    # {', '.join(outs)}: outputs; {', '.join(ins)}: inputs ({', '.join(modes)})"
               + ("; <x>_st<d>: strides in elements" if rank else ""))
    # scalar arguments must not be specialized: an argument equal to 1 would become a constexpr
    jit = f"@triton.jit(do_not_specialize={scalars!r})\n" if scalars else "@triton.jit\n"
    return jit + f"def kernel({', '.join(args + ['BLOCK_SIZE: tl.constexpr'])}):\n" + "\n".join(doc + body) + "\n"


_kernels: dict = {}


def _kernel(program: Program, modes: tuple[str, ...], rank: int):
    key = (program, modes, rank)
    fn = _kernels.get(key)
    if fn is None:
        fn = _kernels[key] = load_source(_HEADER + _scaffold(program, modes, rank), "triton_pointwise").kernel
    return fn


def _host_scalar(t: Tensor):
    a = t._host().reshape(())
    return float(a.astype(np.float32)) if t.dtype in _HALF else a.item()


_grids: dict = {}       # numel -> (grid, BLOCK_SIZE) of the flat kernel


def _block(numel: int) -> int:
    return min(MAX_BLOCK, max(16, 1 << (numel - 1).bit_length()))


def launch(program: Program, args: list, outs: list, numel: int) -> None:
    """Run ``program`` on ``args`` (Tensors or Python scalars) writing ``outs`` (Tensors of
    the broadcast shape and of the program's output dtypes)."""
    if numel == 0:
        return
    out_shape = outs[0]._shape
    modes, call, flat = [], [], True
    for o in outs:
        if not o.is_contiguous():
            flat = False
    for a, (_, dt) in zip(args, program.inputs):
        if isinstance(a, Tensor) and a._shape == out_shape and a._storage.device is not CPU and (
                a._contig or a.is_contiguous()):              # the common case first
            modes.append("flat")
            call.append(a)
        elif type(a) is not Tensor and not isinstance(a, Tensor):
            modes.append("scalar")
            call.append(_scalar_arg(a, dt))
        elif a._storage.device.type == "cpu":        # a 0-d CPU tensor in a device op: a number
            modes.append("scalar")
            call.append(_scalar_arg(_host_scalar(a), dt))
        elif a._shape == out_shape and a.is_contiguous():
            modes.append("flat")
            call.append(a)
        elif a.numel() == 1:
            modes.append("one")
            call.append(_pointer(a))
        else:
            modes.append("strided")
            call.append(a)
            flat = False
    grid = _grids.get(numel)
    if grid is None:
        if len(_grids) >= 4096:
            _grids.clear()
        block = _block(numel)
        grid = _grids[numel] = (-(-numel // block),), block
    grid, block = grid
    if flat:
        if cuda.EMULATED:
            call = [_pointer(o) for o in outs] + [_pointer(a) if m == "flat" else a for m, a in zip(modes, call)]
        else:
            call = outs + call          # on a GPU a tensor at its own offset is its own pointer
        fn = _kernels.get((program, tuple(modes), 0)) or _kernel(program, tuple(modes), 0)
        _launch(fn, grid, numel, *call, BLOCK_SIZE=block)
        return
    tensors = list(outs) + [a for m, a in zip(modes, call) if m in ("flat", "strided")]
    modes = tuple("strided" if m == "flat" else m for m in modes)
    # everything below the pointers follows from the operands' shapes and strides, which repeat
    # (a bias added to every batch): planned once per layout
    key = (program, modes, out_shape) + tuple((t._shape, t._strides) for t in tensors)
    plan = _strided_plans.get(key)
    if plan is None:
        if len(_strided_plans) >= 4096:
            _strided_plans.clear()
        plan = _strided_plans[key] = _plan_strided(program, modes, outs, out_shape, tensors)
    shape, strides, transposing, outer, fn, grid, inner, block = plan
    if transposing:
        _transpose_copy(tensors[1], outs[0], shape, strides[1])
        return
    for index in np.ndindex(*outer):
        ptrs = [_pointer(t, t._offset + sum(i * s for i, s in zip(index, st))) for t, st in zip(tensors, strides)]
        k, targs = len(outs), []
        for p, st in zip(ptrs[:k], strides):
            targs += [p, *st[len(outer):]]
        for m, a in zip(modes, call):
            if m == "strided":
                targs += [ptrs[k], *strides[k][len(outer):]]
                k += 1
            else:
                targs.append(a)
        _launch(fn, grid, inner, *shape, *targs, BLOCK_SIZE=block)


_strided_plans: dict = {}


def _plan_strided(program: Program, modes: tuple, outs: list, out_shape, tensors: list) -> tuple:
    """(coalesced shape, strides per tensor, whether it is a transposing copy, the dims looped
    on the host, kernel, grid, elements per launch, block) of a strided launch."""
    shape, strides = coalesce(out_shape, [broadcast_strides(t._shape, t._strides, out_shape) for t in tensors])
    if _is_transposing_copy(program, modes, outs, shape, strides):
        return shape, strides, True, None, None, None, None, None
    outer, shape = shape[:-MAX_RANK], shape[-MAX_RANK:]      # dims beyond MAX_RANK: a host loop
    inner = 1
    for s in shape:
        inner *= s
    block = _block(inner)
    return shape, strides, False, outer, _kernel(program, modes, len(shape)), (-(-inner // block),), inner, block


TRANSPOSE_MIN = 16       # both tile axes at least this long, or the elementwise copy is as good


def _is_transposing_copy(program: Program, modes, outs, shape, strides) -> bool:
    """A same-dtype copy into a contiguous tensor whose source runs along another axis: after
    coalescing, (B,) P, Q with the source contiguous along P and not along Q (the destination's)."""
    node = program.nodes[0]
    if len(program.nodes) != 1 or node.name != "copy" or program.inputs[0][1] is not node.dtype \
            or modes != ("strided",) or not outs[0].is_contiguous() or len(shape) not in (2, 3):
        return False
    src = strides[1]
    return src[-2] == 1 and src[-1] != 1 and min(shape[-2:]) >= TRANSPOSE_MIN


def _transpose_copy(src: Tensor, dst: Tensor, shape, src_strides) -> None:
    """``dst[...] = src`` by tiles (``kernels/src/shape.py``), for the copies ``_is_transposing_copy`` picks."""
    (b, p, q), (s_b, s_p, s_q) = ([1, *shape], [0, *src_strides]) if len(shape) == 2 else (shape, src_strides)
    block = 32 if cuda.EMULATED else 64
    _launch(triton_source("shape").transpose_copy_kernel, (-(-p // block), -(-q // block), b), _pointer(src),
            _pointer(dst), p, q, s_b, s_p, s_q, BLOCK_P=block, BLOCK_Q=block)


def copy_into(src: Tensor, dst: Tensor) -> None:
    """``dst[...] = src`` (broadcast, cast to dst's dtype) with the ``copy`` primitive's generated
    kernel, as a step inside another op's kernel (``cat``, a reduction's contiguous copy):
    launched directly, so autograd and the tracer see only that op."""
    from ..ops.pointwise import copy
    launch(copy.program([src], copy.dtypes([src])[1], dst.dtype), [src], [dst], dst.numel())


_dispatch.pointwise_launchers["cuda"] = launch
