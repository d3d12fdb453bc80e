"""Tensor methods and operators: the functional API bound onto ``Tensor``.

A function whose first parameter is the tensor becomes a method as it is (``x.sum(1)`` is
``sum(x, 1)``); in-place ``name_`` methods write the result into ``self``, refusing a
result dtype that cannot be cast back (``int64.add_(1.5)`` is an error, as in PyTorch).
"""
from __future__ import annotations

import inspect

from . import dtypes as D
from . import functional as F
from ._tensor import Tensor
from .ops import creation as C
from .ops import indexing as I
from .ops import linalg as L
from .ops import reduction as R
from .ops import view as V

_FUNCTIONS = {
    F: """add sub subtract rsub mul multiply div divide true_divide floor_divide remainder fmod pow float_power
          neg negative positive reciprocal square atan2 arctan2 maximum minimum fmax fmin abs absolute sign exp exp2
          expm1 log log2 log10 log1p sqrt rsqrt sin cos tan asin acos atan arcsin arccos arctan sinh cosh tanh
          erf erfc floor ceil trunc fix round frac sigmoid relu clamp clip clamp_min clamp_max where lerp
          nan_to_num isnan isinf isfinite logical_not bitwise_not eq ne lt le gt ge greater greater_equal less
          less_equal not_equal logical_and logical_or logical_xor bitwise_and bitwise_or bitwise_xor
          bitwise_left_shift bitwise_right_shift equal isclose allclose""",
    V: """view reshape view_as reshape_as flatten unflatten squeeze unsqueeze permute transpose swapaxes swapdims
          t movedim moveaxis expand expand_as broadcast_to narrow select unbind split tensor_split chunk
          as_strided diagonal unfold""",
    C: "to contiguous clone copy_ fill_ zero_ uniform_ normal_ bernoulli bernoulli_ pin_memory is_pinned",
    R: """sum prod mean nansum nanmean var std amax amin max min aminmax argmax argmin all any count_nonzero
          logsumexp norm cumsum cumprod softmax log_softmax""",
    L: "matmul mm bmm mv dot inner vdot outer ger addmm addmv baddbmm",
    I: """index_select gather scatter scatter_ scatter_add scatter_add_ scatter_reduce scatter_reduce_ index_put
          index_put_ index_add index_add_ index_copy index_copy_ index_fill index_fill_ masked_fill masked_fill_
          masked_select nonzero argwhere take take_along_dim""",
}

# in-place forms: name_ computes name(self, ...) and writes it into self
_INPLACE = """add sub mul div floor_divide remainder fmod pow neg abs sign exp exp2 expm1 log log2 log10 log1p
    sqrt rsqrt sin cos tan asin acos atan sinh cosh tanh erf erfc floor ceil trunc round frac sigmoid relu
    clamp clip clamp_min clamp_max lerp nan_to_num logical_not bitwise_not eq ne lt le gt ge logical_and
    logical_or logical_xor bitwise_and bitwise_or bitwise_xor reciprocal square atan2 maximum minimum""".split()


def _make_inplace(name: str, fn):
    takes_out = "out" in inspect.signature(fn).parameters

    def method(self, *args, **kwargs):
        if takes_out:
            return fn(self, *args, out=self, **kwargs)
        r = fn(self, *args, **kwargs)
        if not D.can_cast(r.dtype, self.dtype):
            raise RuntimeError(f"{name}_: result type {r.dtype} can't be cast to the desired output type {self.dtype}")
        return self.copy_(r)
    method.__name__ = method.__qualname__ = name + "_"
    method.__doc__ = f"In-place version of :func:`{name}`."
    return method


def _cast(dtype):
    def method(self, memory_format=None):
        return C.to(self, dtype)
    method.__name__ = dtype.name
    return method


_TYPE_NAMES = {"float32": "Float", "float64": "Double", "float16": "Half", "bfloat16": "BFloat16", "int64": "Long",
               "int32": "Int", "int16": "Short", "int8": "Char", "uint8": "Byte", "bool": "Bool"}


def _type(self, dtype=None, non_blocking=False):
    """``t.type()`` names the type; ``t.type(dtype)`` casts."""
    if dtype is None:
        return f"tk.{'cuda.' if self.is_cuda else ''}{_TYPE_NAMES[self.dtype.name]}Tensor"
    return C.to(self, dtype)


def _swap(fn):
    return lambda self, other: fn(other, self)


def _install() -> None:
    for module, names in _FUNCTIONS.items():
        for name in names.split():
            setattr(Tensor, name, getattr(module, name))
    for name in _INPLACE:
        setattr(Tensor, name + "_", _make_inplace(name, getattr(F, name)))
    for name, dt in [("float", D.float32), ("double", D.float64), ("half", D.float16), ("bfloat16", D.bfloat16),
                     ("long", D.int64), ("int", D.int32), ("short", D.int16), ("char", D.int8),
                     ("byte", D.uint8), ("bool", D.bool_)]:
        setattr(Tensor, name, _cast(dt))
    Tensor.type = _type
    Tensor.type_as = lambda self, other: C.to(self, other.dtype)
    Tensor.new_tensor = lambda self, data, dtype=None, device=None, requires_grad=False: C.tensor(
        data, dtype=dtype or self.dtype, device=device or self.device, requires_grad=requires_grad)
    for name in ("empty", "zeros", "ones"):
        fn = getattr(C, name)
        setattr(Tensor, f"new_{name}", lambda self, *size, _fn=fn, dtype=None, device=None, requires_grad=False:
                _fn(*size, dtype=dtype or self.dtype, device=device or self.device, requires_grad=requires_grad))
    Tensor.new_full = lambda self, size, fill_value, dtype=None, device=None, requires_grad=False: C.full(
        size, fill_value, dtype=dtype or self.dtype, device=device or self.device, requires_grad=requires_grad)
    Tensor.cpu = lambda self: C.to(self, "cpu")
    Tensor.cuda = lambda self, device=None, non_blocking=False: C.to(
        self, "cuda" if device is None else (f"cuda:{device}" if isinstance(device, int) else device),
        non_blocking=non_blocking)
    Tensor.T = property(lambda self: V.permute(self, tuple(range(self.ndim - 1, -1, -1))))
    Tensor.mT = property(lambda self: V.transpose(self, -2, -1))
    Tensor.__getitem__ = I.getitem
    Tensor.__setitem__ = I.setitem

    ops = {"add": F.add, "sub": F.sub, "mul": F.mul, "truediv": F.div, "floordiv": F.floor_divide,
           "mod": F.remainder, "pow": F.pow, "matmul": L.matmul, "and": F.bitwise_and, "or": F.bitwise_or,
           "xor": F.bitwise_xor, "lshift": F.bitwise_left_shift, "rshift": F.bitwise_right_shift}
    for name, fn in ops.items():
        setattr(Tensor, f"__{name}__", fn)
        setattr(Tensor, f"__r{name}__", _swap(fn))
        setattr(Tensor, f"__i{name}__", _make_inplace(name, fn))
    for name, fn in {"eq": F.eq, "ne": F.ne, "lt": F.lt, "le": F.le, "gt": F.gt, "ge": F.ge}.items():
        setattr(Tensor, f"__{name}__", fn)
    Tensor.__neg__ = F.neg
    Tensor.__pos__ = F.positive
    Tensor.__abs__ = F.abs
    Tensor.__invert__ = F.bitwise_not


_install()
