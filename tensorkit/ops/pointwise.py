"""Pointwise primitives: one table of scalar bodies.

Each entry is one op, defined once: its name, its scalar body (rendered into Numba and
Triton kernels by ``kernels/codegen.py``), its promotion rule and the dtypes it is declared
for. ``Pointwise.__call__`` is the whole eager path: promotion and broadcasting (the meta
rule), allocation, dispatch to the device's pointwise launcher, observers.

float16/bfloat16 compute in float32 and store in their own dtype.
"""
from __future__ import annotations

import math

from .. import _dispatch
from .. import dtypes as D
from ..amp.autocast import active as _autocast_active, cast_pointwise, mark_pointwise
from .._tensor import Tensor
from ..kernels.codegen import Node, Program
from .creation import new_tensor, resize_out

# promotion rules: how the computation and result dtypes follow from the common dtype
SAME = "same"                  # result in the common dtype
INT_TO_FLOAT = "int_to_float"  # integral/bool inputs compute in the default float dtype
TO_BOOL = "to_bool"            # computed in the common dtype, result bool

BOOL = (D.bool_,)
INTS = D.INTEGER_DTYPES
FLOATS = D.FLOAT_DTYPES
NUMERIC = INTS + FLOATS
ALL = BOOL + NUMERIC
_HALF = (D.float16, D.bfloat16)


def broadcast_shapes(*shapes) -> tuple:
    """The broadcast of several shapes, PyTorch's error naming the mismatching sizes."""
    if len(shapes) == 1:
        return tuple(shapes[0])
    ndim = max(len(s) for s in shapes)
    out = [1] * ndim
    for s in shapes:
        # right to left, so the dim reported is the one PyTorch reports (the last mismatch)
        for i, size in reversed(list(enumerate(s, ndim - len(s)))):
            if size != out[i]:
                if out[i] == 1:
                    out[i] = size
                elif size != 1:
                    raise RuntimeError(
                        f"The size of tensor a ({out[i]}) must match the size of tensor b ({size}) at "
                        f"non-singleton dimension {i}; shapes: " + ", ".join(str(list(x)) for x in shapes))
    return tuple(out)


class Pointwise:
    """A pointwise primitive. ``body(m, *args)`` is its scalar expression."""

    def __init__(self, name: str, body, promote: str = SAME, dtypes=ALL, *, promote_args=None,
                 check=None, any_cast=False, vjp=None):
        self.name = name
        self.body = body
        self.promote = promote
        self.nin = body.__code__.co_argcount - 1
        self.promote_args = promote_args       # indices of args taking part in promotion
        self.check = check                     # check(common_dtype, args) -> raises on bad input
        self.any_cast = any_cast               # may write into any dtype (copy/cast)
        self.vjp = vjp                         # _dispatch.VJP from _vjp(...): the backward
        self.autocast = None                   # (policy, device types) under tk.autocast (amp/autocast.py)
        if vjp is not None:
            _dispatch.VJPS[name] = vjp
        self._programs: dict = {}
        self._plans: dict = {}
        for device_type in ("cpu", "cuda"):
            _dispatch.register(name, device_type, dtypes)(_LAUNCH[device_type])

    def dtypes(self, args):
        """(common, compute, result) dtypes for these operands."""
        pa = args if self.promote_args is None else [args[i] for i in self.promote_args]
        common = D.result_type(*pa)
        if self.promote == INT_TO_FLOAT and common.category < 2:
            common = D.get_default_dtype()
        compute = D.float32 if common in _HALF else common
        return common, compute, (D.bool_ if self.promote == TO_BOOL else common)

    def program(self, args, compute: D.DType, result: D.DType) -> Program:
        """The one-node Program computing this op on ``args`` (cached)."""
        key = tuple(a.dtype if isinstance(a, Tensor) else type(a) for a in args) + (compute, result)
        prog = self._programs.get(key)
        if prog is None:
            inputs = tuple(("tensor", a.dtype) if isinstance(a, Tensor) else ("scalar", _scalar_dtype(a, compute))
                           for a in args)
            node = Node(self.name, self.body, tuple(range(len(args))), compute, result)
            prog = self._programs[key] = Program(inputs, (node,), (len(args),))
        return prog

    def _plan(self, args):
        """(common, compute, result, program), cached by the operands' dtypes, 0-d-ness and
        scalar types, and the default dtype (Python floats and int->float ops follow it): everything
        promotion looks at."""
        sig = tuple([(a.dtype, not a._shape) if isinstance(a, Tensor) else type(a) for a in args]) \
            + (D.get_default_dtype(),)
        plan = self._plans.get(sig)
        if plan is None:
            common, compute, result = self.dtypes(args)
            plan = self._plans[sig] = (common, compute, result, self.program(args, compute, result))
        return plan

    def __call__(self, *args, out: Tensor | None = None, _into: Tensor | None = None):
        """Run on tensors / Python numbers. ``out=``: PyTorch's out argument (resized if its
        shape differs). ``_into``: write into this tensor, which the inputs broadcast to
        (in-place ops and ``copy_``)."""
        if _autocast_active[0] and self.autocast is not None and out is None and _into is None:
            args = cast_pointwise(self.autocast, args)
        if out is None and _into is None and len(args) == self.nin and isinstance(args[0], Tensor):
            # the common eager call: tensors of one shape on one device, or Python numbers
            first = args[0]
            device, shape = first._storage.device, first._shape
            for a in args:
                if isinstance(a, Tensor):       # nn.Parameter too
                    if a._storage.device is not device or a._shape != shape:
                        break
                elif type(a) is not float and type(a) is not int and type(a) is not bool:
                    break
            else:
                common, compute, result, program = self._plan(args)
                if self.check is not None:
                    self.check(common, args)
                dest = new_tensor(shape, result, device)
                kernel = _dispatch.KERNELS.get((self.name, device.type, common)) or \
                    _dispatch.lookup(self.name, device.type, common)
                kernel(program, args, [dest], dest.numel())
                if _dispatch.observers:
                    _dispatch.notify(self.name, args, (dest,), {"into": False})
                return dest
        if len(args) != self.nin:
            raise TypeError(f"{self.name}() takes {self.nin} tensor arguments, got {len(args)}")
        tensors = [a for a in args if isinstance(a, Tensor)]
        if len(tensors) != len(args):
            for a in args:
                if not isinstance(a, (Tensor, int, float)):
                    raise TypeError(f"{self.name}(): expected Tensor or Python number arguments, "
                                    f"got {type(a).__name__}")
            if not tensors:
                raise TypeError(f"{self.name}(): at least one argument must be a Tensor")
        device = tensors[0]._storage.device
        dest = _into if _into is not None else out
        for t in tensors + ([dest] if dest is not None else []):
            if t._storage.device is not device and t._storage.device != device:
                args, device = _move_cpu_scalars(self.name, args, dest)
                break
        if out is not None and _into is None and any(a is out for a in args):
            _into, out = out, None                 # out= one of the inputs: in place, no resizing
        common, compute, result, program = self._plan(args)
        if self.check is not None:
            self.check(common, args)
        shape = tensors[0]._shape
        for t in tensors:
            if t._shape != shape:
                shape = broadcast_shapes(*[t._shape for t in tensors])
                break
        dest = _into if _into is not None else out
        if dest is not None:
            if _dispatch.write_observers:          # autograd: refuse writes into leaves, keep overwritten values
                _dispatch.notify_write(self.name, dest, args)
            if not self.any_cast and not D.can_cast(result, dest.dtype):
                raise RuntimeError(f"{self.name}: result type {result} can't be cast to the desired output "
                                   f"type {dest.dtype}")
            if dest._storage.device != device:
                raise RuntimeError(f"{self.name}: the output tensor is on {dest.device} but the inputs are on {device}")
            if _into is not None:
                if broadcast_shapes(_into._shape, shape) != tuple(_into._shape):
                    raise RuntimeError(f"{self.name}: output with shape {list(_into._shape)} doesn't match "
                                       f"the broadcast shape {list(broadcast_shapes(_into._shape, shape))}")
            else:
                resize_out(out, shape)
            if dest.dtype is not result:           # computed in `compute`, stored as dest's dtype
                program = self.program(args, compute, dest.dtype)
            args = _unalias(args, dest)
            dest._bump_version()
        else:
            dest = new_tensor(shape, result, device)
        kernel = _dispatch.KERNELS.get((self.name, device.type, common)) or \
            _dispatch.lookup(self.name, device.type, common)
        kernel(program, args, [dest], dest.numel())
        if _dispatch.observers:
            _dispatch.notify(self.name, args, (dest,), {"into": _into is not None})
        return dest

    def __repr__(self) -> str:
        return f"<pointwise primitive {self.name}>"


def _unalias(args, dest: Tensor):
    """Inputs that share memory with ``dest`` other than as the very same view would be
    overwritten while still being read (``x[1:].copy_(x[:-1])``): read them from a copy.
    (PyTorch raises for such partial overlaps; a copy gives the answer the user meant.)"""
    st = dest._storage
    for a in args:
        if isinstance(a, Tensor) and a._storage is st and not (
                a._offset == dest._offset and a._strides == dest._strides and a._shape == dest._shape):
            from .creation import clone
            return [clone(a) if isinstance(a, Tensor) and a._storage is st and a is not dest else a for a in args]
    return args


def _launch_on(device_type: str):
    """The kernel registered for every pointwise op on ``device_type``: that backend's
    launcher, found at the first call (backends register after this module loads), which then
    takes this stand-in's place in the dispatcher (one call less on every later op)."""
    def launch(program, args, outs, numel):
        real = _dispatch.pointwise_launcher(device_type)
        for key, fn in list(_dispatch.KERNELS.items()):
            if fn is launch:
                _dispatch.KERNELS[key] = real
        real(program, args, outs, numel)
    return launch


_LAUNCH = {d: _launch_on(d) for d in ("cpu", "cuda")}


def _scalar_dtype(value, compute: D.DType) -> D.DType:
    # Python scalars enter the kernel in the compute dtype, except ints for integer ops,
    # which travel as int64 and wrap into the compute dtype inside the kernel (PyTorch's wrap).
    if compute.category == 1 and not isinstance(value, bool):
        return D.int64
    return compute


def _move_cpu_scalars(name, args, dest):
    """Mixing devices is an error, except 0-d CPU tensors, which act as scalars (as in PyTorch).
    Returns the args and the device the op runs on."""
    devices = {a.device for a in args if isinstance(a, Tensor) and not (a.ndim == 0 and a.device.type == "cpu")}
    if dest is not None:
        devices.add(dest.device)
    if len(devices) > 1:
        a, b = sorted(map(str, devices))[:2]
        raise RuntimeError(f"{name}: expected all tensors to be on the same device, but found at least two "
                           f"devices, {a} and {b}")
    (device,) = devices
    return args, device         # launchers read 0-d host tensors as scalars


# ---- input checks ------------------------------------------------------------------------
def _no_bool(msg):
    def check(common, args):
        if common is D.bool_:
            raise RuntimeError(msg)
    return check


def _int_div_check(common, args):
    if common.category == 1:
        b = args[1]
        zero = (b == 0) if isinstance(b, (int, float, bool)) else bool(_nonzero_free(b))
        if zero:
            raise ZeroDivisionError("integer division by zero")


def _nonzero_free(t: Tensor) -> bool:
    """Whether an integer tensor has a zero (host read: integer division checks it first)."""
    return bool((t._host() == 0).any())


def _pow_check(common, args):
    base, exp = args
    if common.category == 1:
        if isinstance(exp, int) and exp < 0 or isinstance(exp, Tensor) and exp.dtype.category == 1 \
                and bool((exp._host() < 0).any()):
            raise RuntimeError("pow: integers to negative integer powers are not allowed")


# ---- backward ------------------------------------------------------------------------------
# A pointwise VJP is fn(g, *inputs, out) -> one gradient per input, written with tensorkit ops
# (so it runs on every device and is differentiable again). Gradients may keep the broadcast
# shape and the computation dtype: the engine sums them back to each input's shape and casts
# to its dtype. Inputs the VJP does not save arrive as None (Python numbers always arrive).
def _vjp(fn, inputs=True, out=False):
    """Declare a pointwise VJP; ``inputs`` (True, False or the positions) and ``out`` say what
    the node saves."""
    return _dispatch.VJP(fn, inputs, out, pointwise=True)


def _num(x) -> bool:
    """A Python number operand: it gets no gradient (none is computed)."""
    return isinstance(x, (int, float, bool))


def _zeros(g, *args):
    from .creation import zeros_like
    return tuple(None if _num(a) else zeros_like(g) for a in args[:-1])


_ZERO = _vjp(_zeros, inputs=False)      # piecewise constant (floor, sign, ...): zero almost everywhere


def _div_vjp(g, a, b, out):
    return (None if _num(a) else g / b), (None if _num(b) else -g * a / (b * b))


def _pow_vjp(g, a, b, out):
    ga = gb = None
    if not _num(a):   # PyTorch: exponent 0 gives gradient 0 (not 0 * a**-1, which is nan at a = 0)
        ga = (g * 0 if b == 0 else g * b * pow(a, b - 1)) if _num(b) else where(b == 0, 0.0, g * b * pow(a, b - 1))
    if not _num(b):   # d/db a**b = a**b log(a); PyTorch takes 0 where a = 0 and b >= 0
        if _num(a):
            gb = g * pow(a, b) * (math.log(a) if a > 0 else math.nan) if a != 0 else where(b >= 0, 0.0, g * math.inf)
        else:
            gb = where(logical_and(a == 0, b >= 0), 0.0, g * pow(a, b) * log(a))
    return ga, gb


def _atan2_vjp(g, a, b, out):
    scale = g / (a * a + b * b)
    return (None if _num(a) else scale * b), (None if _num(b) else -scale * a)


def _extreme_vjp(win, lose):
    """maximum/minimum: PyTorch splits the gradient of ties evenly between both operands. A
    Python number bound (clamp) is not an operand of torch.maximum: as PyTorch's clamp, the
    tensor takes the whole gradient at the bound."""
    def fn(g, a, b, out):
        if _num(b):
            return where(win(a, b) | (a == b), g, 0.0), None
        if _num(a):
            return None, where(win(b, a) | (a == b), g, 0.0)
        half = where(a == b, g / 2, g)
        return where(lose(a, b), 0.0, half), where(win(a, b), 0.0, half)
    return _vjp(fn)


def _where_vjp(g, c, a, b, out):
    return None, (None if _num(a) else where(c, g, 0.0)), (None if _num(b) else where(c, 0.0, g))


_LN2, _LN10, _2_SQRT_PI = math.log(2.0), math.log(10.0), 2.0 / math.sqrt(math.pi)

# ---- the table -----------------------------------------------------------------------------
add = Pointwise("add", lambda m, a, b: a + b, vjp=_vjp(lambda g, a, b, out: (g, None if _num(b) else g), False))
sub = Pointwise("sub", lambda m, a, b: a - b, check=_no_bool(
    "Subtraction, the `-` operator, with two bool tensors is not supported. "
    "Use the `^` or `logical_xor()` operator instead."),
    vjp=_vjp(lambda g, a, b, out: (None if _num(a) else g, None if _num(b) else -g), False))
mul = Pointwise("mul", lambda m, a, b: a * b,
                vjp=_vjp(lambda g, a, b, out: (None if _num(a) else g * b, None if _num(b) else g * a)))
div = Pointwise("div", lambda m, a, b: a / b, INT_TO_FLOAT, FLOATS, vjp=_vjp(_div_vjp))
floor_divide = Pointwise("floor_divide", lambda m, a, b: m.floordiv(a, b), SAME, NUMERIC, check=_int_div_check,
                         vjp=_ZERO)
trunc_divide = Pointwise("trunc_divide", lambda m, a, b: m.truncdiv(a, b), SAME, NUMERIC, check=_int_div_check,
                         vjp=_ZERO)
# a % b = a - floor(a / b) * b, fmod(a, b) = a - trunc(a / b) * b: the quotient is piecewise constant
remainder = Pointwise("remainder", lambda m, a, b: m.remainder(a, b), SAME, NUMERIC, check=_int_div_check,
                      vjp=_vjp(lambda g, a, b, out: (g, None if _num(b) else -g * floor_divide(a, b))))
fmod = Pointwise("fmod", lambda m, a, b: m.fmod(a, b), SAME, NUMERIC, check=_int_div_check,
                 vjp=_vjp(lambda g, a, b, out: (g, None if _num(b) else -g * trunc_divide(a, b))))
pow = Pointwise("pow", lambda m, a, b: m.pow(a, b), SAME, NUMERIC, check=_pow_check, vjp=_vjp(_pow_vjp))
atan2 = Pointwise("atan2", lambda m, a, b: m.arctan2(a, b), INT_TO_FLOAT, FLOATS, vjp=_vjp(_atan2_vjp))
maximum = Pointwise("maximum", lambda m, a, b: m.maximum(a, b), vjp=_extreme_vjp(lambda a, b: a > b, lambda a, b: a < b))
minimum = Pointwise("minimum", lambda m, a, b: m.minimum(a, b), vjp=_extreme_vjp(lambda a, b: a < b, lambda a, b: a > b))

neg = Pointwise("neg", lambda m, x: -x, SAME, NUMERIC, check=_no_bool(
    "Negation, the `-` operator, on a bool tensor is not supported. If you are trying to invert a mask, "
    "use the `~` or `logical_not()` operator instead."), vjp=_vjp(lambda g, x, out: (-g,), False))
abs = Pointwise("abs", lambda m, x: m.abs(x), SAME, NUMERIC, vjp=_vjp(lambda g, x, out: (g * sign(x),)))  # abs'(0) = 0
sign = Pointwise("sign", lambda m, x: m.sign(x), vjp=_ZERO)
floor = Pointwise("floor", lambda m, x: m.floor(x) if x.dtype.is_floating_point else x, SAME, NUMERIC, vjp=_ZERO)
ceil = Pointwise("ceil", lambda m, x: m.ceil(x) if x.dtype.is_floating_point else x, SAME, NUMERIC, vjp=_ZERO)
trunc = Pointwise("trunc", lambda m, x: m.trunc(x) if x.dtype.is_floating_point else x, SAME, NUMERIC, vjp=_ZERO)
round = Pointwise("round", lambda m, x: m.round(x) if x.dtype.is_floating_point else x, SAME, NUMERIC, vjp=_ZERO)

def _sigmoid_body(m, x):
    e = m.exp(-m.abs(x))
    return m.where(x >= 0, 1 / (e + 1), e / (e + 1))


# name: (scalar body, VJP)
_UNARY_FLOAT = {
    "exp": (lambda m, x: m.exp(x), _vjp(lambda g, x, out: (g * out,), False, True)),
    "exp2": (lambda m, x: m.exp2(x), _vjp(lambda g, x, out: (g * out * _LN2,), False, True)),
    "expm1": (lambda m, x: m.expm1(x), _vjp(lambda g, x, out: (g * (out + 1),), False, True)),
    "log": (lambda m, x: m.log(x), _vjp(lambda g, x, out: (g / x,))),
    "log2": (lambda m, x: m.log2(x), _vjp(lambda g, x, out: (g / (x * _LN2),))),
    "log10": (lambda m, x: m.log10(x), _vjp(lambda g, x, out: (g / (x * _LN10),))),
    "log1p": (lambda m, x: m.log1p(x), _vjp(lambda g, x, out: (g / (x + 1),))),
    "sqrt": (lambda m, x: m.sqrt(x), _vjp(lambda g, x, out: (g / (out * 2),), False, True)),
    "rsqrt": (lambda m, x: 1 / m.sqrt(x), _vjp(lambda g, x, out: (g * pow(out, 3) * -0.5,), False, True)),
    "sin": (lambda m, x: m.sin(x), _vjp(lambda g, x, out: (g * cos(x),))),
    "cos": (lambda m, x: m.cos(x), _vjp(lambda g, x, out: (-g * sin(x),))),
    "tan": (lambda m, x: m.tan(x), _vjp(lambda g, x, out: (g * (out * out + 1),), False, True)),
    "asin": (lambda m, x: m.arcsin(x), _vjp(lambda g, x, out: (g * rsqrt(1 - x * x),))),
    "acos": (lambda m, x: m.arccos(x), _vjp(lambda g, x, out: (-g * rsqrt(1 - x * x),))),
    "atan": (lambda m, x: m.arctan(x), _vjp(lambda g, x, out: (g / (x * x + 1),))),
    "sinh": (lambda m, x: m.sinh(x), _vjp(lambda g, x, out: (g * cosh(x),))),
    "cosh": (lambda m, x: m.cosh(x), _vjp(lambda g, x, out: (g * sinh(x),))),
    "tanh": (lambda m, x: m.tanh(x), _vjp(lambda g, x, out: (g * (1 - out * out),), False, True)),
    # 1 / (1 + exp(-x)) from e = exp(-|x|), branch-wise, so exp never overflows; a primitive (not
    # a composite) because LSTM/GRU gates call it 3x per step: one pass over memory, one node
    "sigmoid": (lambda m, x: _sigmoid_body(m, x), _vjp(lambda g, x, out: (g * out * (1 - out),), False, True)),
    "erf": (lambda m, x: m.erf(x), _vjp(lambda g, x, out: (g * exp(-x * x) * _2_SQRT_PI,))),
    "erfc": (lambda m, x: m.erfc(x), _vjp(lambda g, x, out: (g * exp(-x * x) * -_2_SQRT_PI,))),
}
_g = globals()
for _name, (_body, _grad) in _UNARY_FLOAT.items():
    _g[_name] = Pointwise(_name, _body, INT_TO_FLOAT, FLOATS, vjp=_grad)
del _g, _name, _body, _grad

isnan = Pointwise("isnan", lambda m, x: m.isnan(x), TO_BOOL)
isinf = Pointwise("isinf", lambda m, x: m.isinf(x), TO_BOOL)
isfinite = Pointwise("isfinite", lambda m, x: m.isfinite(x), TO_BOOL)

eq = Pointwise("eq", lambda m, a, b: a == b, TO_BOOL)
ne = Pointwise("ne", lambda m, a, b: a != b, TO_BOOL)
lt = Pointwise("lt", lambda m, a, b: a < b, TO_BOOL)
le = Pointwise("le", lambda m, a, b: a <= b, TO_BOOL)
gt = Pointwise("gt", lambda m, a, b: a > b, TO_BOOL)
ge = Pointwise("ge", lambda m, a, b: a >= b, TO_BOOL)

logical_and = Pointwise("logical_and", lambda m, a, b: (a != 0) & (b != 0), TO_BOOL)
logical_or = Pointwise("logical_or", lambda m, a, b: (a != 0) | (b != 0), TO_BOOL)
logical_xor = Pointwise("logical_xor", lambda m, a, b: (a != 0) ^ (b != 0), TO_BOOL)
logical_not = Pointwise("logical_not", lambda m, x: m.logical_not(x != 0), TO_BOOL)

bitwise_and = Pointwise("bitwise_and", lambda m, a, b: a & b, SAME, BOOL + INTS)
bitwise_or = Pointwise("bitwise_or", lambda m, a, b: a | b, SAME, BOOL + INTS)
bitwise_xor = Pointwise("bitwise_xor", lambda m, a, b: a ^ b, SAME, BOOL + INTS)
bitwise_not = Pointwise("bitwise_not", lambda m, x: m.invert(x), SAME, BOOL + INTS)
bitwise_left_shift = Pointwise("bitwise_left_shift", lambda m, a, b: m.shift_left(a, b), SAME, INTS)
bitwise_right_shift = Pointwise("bitwise_right_shift", lambda m, a, b: m.shift_right(a, b), SAME, INTS)

# comparisons written in place into a floating tensor (x.eq_(y)): piecewise constant
for _op in (isnan, isinf, isfinite, eq, ne, lt, le, gt, ge, logical_and, logical_or, logical_xor, logical_not):
    _dispatch.VJPS[_op.name] = _ZERO
del _op

# where(cond, a, b): cond takes no part in promotion; it is cast to the compute dtype and tested.
where = Pointwise("where", lambda m, c, a, b: m.where(c != 0, a, b), promote_args=(1, 2),
                  vjp=_vjp(_where_vjp, inputs=(0,)))
# copy/cast: an identity body; the result dtype is the destination's (see ops.creation.copy_).
copy = Pointwise("copy", lambda m, x: x, any_cast=True, vjp=_vjp(lambda g, x, out: (g,), False))

# autocast (tensorkit.amp): PyTorch's CUDA float32 list; 2 / x and reciprocal are __rtruediv__
mark_pointwise("float32", ("cuda",), acos, asin, cosh, sinh, tan, exp, expm1, log, log2, log10, log1p, rsqrt, pow)
mark_pointwise("rdiv", ("cuda",), div)          # (atan2, on the promote list, promotes by itself)

__all__ = [n for n, v in globals().items() if isinstance(v, Pointwise)]
