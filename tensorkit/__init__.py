"""tensorkit: a PyTorch-style tensor framework (Triton kernels on the GPU, Numba on the CPU).

    >>> import tensorkit as tk
    >>> x = tk.tensor([[1., 2.], [3., 4.]])
    >>> (x @ x.T).sum()
    tensor(54.)
"""
from . import dtypes as _dtypes
from .dtypes import (DType as dtype, bfloat16, float16, float32, float64, get_default_dtype, int8, int16,
                     int32, int64, promote_types, result_type, set_default_dtype, uint8, can_cast)
from .dtypes import bool_ as bool  # noqa: A001  (tk.bool, as torch.bool)
from .device import device
from ._tensor import Size, Tensor
from . import cpu as _cpu  # noqa: F401  (registers the CPU kernels)
from . import kernels as _kernels  # noqa: F401  (registers the Triton kernels; Triton loads lazily)
from . import cuda
from . import backends
from .backends import get_float32_matmul_precision, set_float32_matmul_precision
from .ops.creation import (Generator, arange, as_tensor, bernoulli, default_generator, empty, empty_like, eye,
                           from_numpy, full, full_like, get_rng_state, initial_seed, linspace, logspace,
                           manual_seed, normal, ones, ones_like, rand, rand_like, randint, randint_like, randn,
                           randn_like, randperm, seed,
                           set_rng_state, tensor, zeros, zeros_like, clone)
from .ops.pointwise import broadcast_shapes
from .ops.view import (as_strided, broadcast_to, chunk, diagonal, flatten, movedim, moveaxis, narrow, permute,
                       reshape, select, split, squeeze, swapaxes, swapdims, t, tensor_split, transpose, unbind,
                       unflatten, unsqueeze)
from .ops.reduction import (all, amax, amin, aminmax, any, argmax, argmin, count_nonzero, cumprod, cumsum,
                            log_softmax, logsumexp, max, mean, min, nanmean, nansum, norm, prod, softmax, std,
                            std_mean, sum, var, var_mean)
from .ops.linalg import addmm, addmv, baddbmm, bmm, dot, ger, inner, matmul, mm, mv, outer, vdot
from .ops.shape import cat, concat, concatenate, stack, hstack, vstack, flip, roll, tril, triu
from .ops.einsum import einsum
from .ops.indexing import (argwhere, gather, index_add, index_copy, index_fill, index_put, index_put_, index_select,
                           masked_fill, masked_select, nonzero, scatter, scatter_add, scatter_reduce, take,
                           take_along_dim)
from .functional import (abs, absolute, acos, add, allclose, arccos, arcsin, arctan, arctan2, asin, atan, atan2,
                         bitwise_and, bitwise_left_shift, bitwise_not, bitwise_or, bitwise_right_shift,
                         bitwise_xor, ceil, clamp, clamp_max, clamp_min, clip, cos, cosh, div, divide, eq, equal,
                         erf, erfc, exp, exp2, expm1, fix, float_power, floor, floor_divide, fmax, fmin, fmod,
                         frac, ge, greater, greater_equal, gt, isclose, isfinite, isinf, isnan, le, lerp, less,
                         less_equal, log, log1p, log2, log10, logical_and, logical_not, logical_or, logical_xor,
                         lt, maximum, minimum, mul, multiply, nan_to_num, ne, neg, negative, not_equal, positive,
                         pow, reciprocal, relu, remainder, round, rsqrt, rsub, sigmoid, sign, sin, sinh, sqrt,
                         square, sub, subtract, tan, tanh, true_divide, trunc, where)
from ._printing import get_printoptions, set_printoptions
from ._dlpack import from_dlpack
from . import _methods  # noqa: F401  (binds methods and operators onto Tensor)
from . import autograd
from .autograd import (enable_grad, inference_mode, is_grad_enabled, is_inference_mode_enabled, no_grad,
                       set_grad_enabled)
from . import nn
from . import optim
from . import amp
from .amp import autocast, get_autocast_dtype, is_autocast_enabled
from . import serialization
from . import utils
from .serialization import load, save

float = float32  # noqa: A001
double = float64
half = float16
long = int64
int = int32  # noqa: A001
short = int16
uint8 = uint8

__version__ = "0.1.0"


def is_tensor(obj) -> "builtins.bool":
    """Whether ``obj`` is a tensorkit Tensor."""
    return isinstance(obj, Tensor)


def numel(input: Tensor) -> "builtins.int":
    return input.numel()


def is_floating_point(input: Tensor) -> "builtins.bool":
    return input.dtype.is_floating_point
