"""``tk.nn.functional``: the functional forms of the layers (``linear``, ``relu``,
``cross_entropy``, ``conv2d``, ...), as PyTorch's ``torch.nn.functional``.

Most are composites over tensorkit ops: no kernels and no backward of their own, so they
run on every device and autograd differentiates them. Where a composite would make several
passes over memory, the function calls a fused primitive from ``ops/`` instead (convolution,
pooling, normalization, attention). Sections below are owned by the families named in their
headers.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from .. import dtypes as D
from .. import functional as _T
from .._tensor import Tensor
from ..amp.autocast import autocast_to
from ..ops import creation as _C
from ..ops import indexing as _I
from ..ops import linalg as _L
from ..ops import norm as _N
from ..ops import reduction as _R
from ..ops import shape as _S
from ..ops import view as _V

sigmoid = _T.sigmoid
tanh = _T.tanh


def _shape(t: Tensor) -> list:
    return list(t.shape)


def _apply_inplace(input: Tensor, result: Tensor, inplace: bool) -> Tensor:
    """``inplace=True``: write ``result`` into ``input`` and return it, as PyTorch's in-place forms."""
    return input.copy_(result) if inplace else result


# ---- linear --------------------------------------------------------------------------------------------------------
@autocast_to("lower")
def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``input @ weight.T + bias``: ``input`` is ``(*, in_features)``, ``weight`` is
    ``(out_features, in_features)``, the result ``(*, out_features)``.

    Example::

        >>> F.linear(tk.ones(2, 3), tk.ones(4, 3)).shape
        tk.Size([2, 4])
    """
    if input.ndim == 0:
        raise RuntimeError(f"linear: expected an input of shape (*, {weight.shape[-1]}), got a 0-d tensor")
    if weight.ndim not in (1, 2):
        raise RuntimeError(f"linear: weight must be 1-D or 2-D (out_features, in_features), got shape {_shape(weight)}")
    if input.shape[-1] != weight.shape[-1]:
        raise RuntimeError(f"linear: expected input with last dimension {weight.shape[-1]} (the in_features of weight "
                           f"{_shape(weight)}), got input of shape {_shape(input)}")
    out = _L.matmul(input, weight.T if weight.ndim == 2 else weight)
    return out if bias is None else out + bias


@autocast_to("promote")
def bilinear(input1: Tensor, input2: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``y[..., k] = input1 @ weight[k] @ input2 + bias[k]``: ``weight`` is ``(out, in1, in2)``,
    inputs ``(*, in1)`` and ``(*, in2)`` with the same leading dims."""
    if weight.ndim != 3:
        raise RuntimeError(f"bilinear: weight must be 3-D (out_features, in1_features, in2_features), "
                           f"got shape {_shape(weight)}")
    k, n1, n2 = weight.shape
    if input1.ndim == 0 or input1.shape[-1] != n1 or input2.ndim == 0 or input2.shape[-1] != n2:
        raise RuntimeError(f"bilinear: expected inputs of shapes (*, {n1}) and (*, {n2}) for weight "
                           f"{_shape(weight)}, got {_shape(input1)} and {_shape(input2)}")
    if input1.shape[:-1] != input2.shape[:-1]:
        raise RuntimeError(f"bilinear: input1 and input2 must have the same leading dims, got {_shape(input1)} "
                           f"and {_shape(input2)}")
    lead = input1.shape[:-1]
    x1, x2 = input1.reshape(-1, n1), input2.reshape(-1, n2)
    # (B, n1) @ (n1, k * n2) -> (B, k, n2), then contract n2 with input2: one matmul, one reduction
    t = _L.matmul(x1, weight.permute(1, 0, 2).reshape(n1, k * n2)).reshape(-1, k, n2)
    out = (t * x2.unsqueeze(1)).sum(-1).reshape(*lead, k)
    return out if bias is None else out + bias


# ---- activations ---------------------------------------------------------------------------------------------------
def relu(input: Tensor, inplace: bool = False) -> Tensor:
    """``max(input, 0)``; its gradient at 0 is 0, as PyTorch's."""
    return _apply_inplace(input, _T.relu(input), inplace)


def relu6(input: Tensor, inplace: bool = False) -> Tensor:
    """``min(max(input, 0), 6)``."""
    return hardtanh(input, 0.0, 6.0, inplace)


def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    """``input`` where positive, else ``negative_slope * input``."""
    return _apply_inplace(input, _T.where(input > 0, input, input * negative_slope), inplace)


def elu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    """``input`` where positive, else ``alpha * (exp(input) - 1)``."""
    neg = _T.clamp(input, max=0.0)       # the branch not taken must not overflow (inf * 0 gradients are NaN)
    return _apply_inplace(input, _T.where(input > 0, input, _T.expm1(neg) * alpha), inplace)


def selu(input: Tensor, inplace: bool = False) -> Tensor:
    """``scale * elu(input, alpha)`` with SELU's constants."""
    alpha, scale = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
    return _apply_inplace(input, elu(input, alpha) * scale, inplace)


def celu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    """``max(0, x) + min(0, alpha * (exp(x / alpha) - 1))``."""
    return _apply_inplace(input, _T.where(input > 0, input, _T.expm1(_T.clamp(input, max=0.0) / alpha) * alpha),
                          inplace)


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    """``x * Phi(x)`` (``approximate='none'``, with erf) or its tanh approximation
    ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`` (``approximate='tanh'``)."""
    if approximate == "none":
        return input * (_T.erf(input * (1.0 / math.sqrt(2.0))) + 1.0) * 0.5
    if approximate == "tanh":
        inner = (input + input * input * input * 0.044715) * math.sqrt(2.0 / math.pi)
        return input * (_T.tanh(inner) + 1.0) * 0.5
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


def _softplus_neg(x: Tensor) -> Tensor:
    """``log(1 + exp(-x))`` without overflow, with the exact gradient ``-sigmoid(-x)``
    everywhere (each branch only ever exponentiates a non-positive number)."""
    pos = x >= 0
    xp, xn = _T.where(pos, x, 0.0), _T.where(pos, 0.0, x)
    return _T.where(pos, _T.log1p(_T.exp(-xp)), _T.log1p(_T.exp(xn)) - xn)


@autocast_to("keep")
def logsigmoid(input: Tensor) -> Tensor:
    """``log(sigmoid(input))``, computed stably."""
    return -_softplus_neg(input)


@autocast_to("float32", ("cuda",))
def softplus(input: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """``log(1 + exp(beta * x)) / beta``; where ``beta * x > threshold``, ``x`` itself (as PyTorch)."""
    bx = input * beta
    return _T.where(bx > threshold, input, _softplus_neg(-bx) / beta)


def silu(input: Tensor, inplace: bool = False) -> Tensor:
    """``x * sigmoid(x)`` (swish)."""
    return _apply_inplace(input, input * _T.sigmoid(input), inplace)


@autocast_to("keep")
def mish(input: Tensor, inplace: bool = False) -> Tensor:
    """``x * tanh(softplus(x))``."""
    return _apply_inplace(input, input * _T.tanh(softplus(input)), inplace)


def hardtanh(input: Tensor, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False) -> Tensor:
    """``clamp(input, min_val, max_val)``; the gradient is 0 at and beyond the bounds, as PyTorch's."""
    if min_val > max_val:
        raise ValueError(f"hardtanh: min_val ({min_val}) cannot be greater than max_val ({max_val})")
    out = _T.where(input <= min_val, min_val, _T.where(input >= max_val, max_val, input))
    return _apply_inplace(input, out, inplace)


def hardsigmoid(input: Tensor, inplace: bool = False) -> Tensor:
    """``relu6(x + 3) / 6``."""
    return _apply_inplace(input, hardtanh(input + 3.0, 0.0, 6.0) / 6.0, inplace)


def hardswish(input: Tensor, inplace: bool = False) -> Tensor:
    """``x * relu6(x + 3) / 6``."""
    return _apply_inplace(input, input * hardsigmoid(input), inplace)


def softsign(input: Tensor) -> Tensor:
    """``x / (1 + |x|)``."""
    return input / (_T.abs(input) + 1.0)


def tanhshrink(input: Tensor) -> Tensor:
    return input - _T.tanh(input)


def glu(input: Tensor, dim: int = -1) -> Tensor:
    """``a * sigmoid(b)`` for the halves ``a, b`` of ``input`` along ``dim``."""
    n = input.shape[dim] if input.ndim else 0
    if n % 2:
        raise RuntimeError(f"glu: halving dimension must be even, but dimension {dim} is size {n}")
    a, b = _V.chunk(input, 2, dim)
    return a * _T.sigmoid(b)


@autocast_to("lower")
def prelu(input: Tensor, weight: Tensor) -> Tensor:
    """``x`` where positive, else ``weight * x``; ``weight`` has one element or one per channel (dim 1)."""
    if weight.numel() != 1:
        channels = input.shape[1] if input.ndim >= 2 else input.shape[0] if input.ndim == 1 else 1
        if weight.numel() != channels:
            raise RuntimeError(f"prelu: weight has {weight.numel()} elements, expected 1 or the {channels} channels "
                               f"of input {_shape(input)}")
        if input.ndim >= 2:
            weight = weight.reshape([channels] + [1] * (input.ndim - 2))
    return _T.where(input > 0, input, input * weight)


def _implicit_dim(name: str, ndim: int) -> int:
    warnings.warn(f"Implicit dimension choice for {name} has been deprecated. Change the call to include dim=X "
                  f"as an argument.", stacklevel=3)
    return 0 if ndim in (0, 1, 3) else 1


def softmax(input: Tensor, dim: int | None = None, _stacklevel: int = 3, dtype=None) -> Tensor:
    """``exp(x) / sum(exp(x))`` along ``dim`` (one fused kernel)."""
    if dim is None:
        dim = _implicit_dim("softmax", input.ndim)
    return _R.softmax(input, dim, dtype=dtype)


def softmin(input: Tensor, dim: int | None = None, _stacklevel: int = 3, dtype=None) -> Tensor:
    if dim is None:
        dim = _implicit_dim("softmin", input.ndim)
    return _R.softmax(-input, dim, dtype=dtype)


def log_softmax(input: Tensor, dim: int | None = None, _stacklevel: int = 3, dtype=None) -> Tensor:
    """``x - logsumexp(x)`` along ``dim`` (one fused kernel)."""
    if dim is None:
        dim = _implicit_dim("log_softmax", input.ndim)
    return _R.log_softmax(input, dim, dtype=dtype)


# ---- dropout -------------------------------------------------------------------------------------------------------
def _check_p(p: float, name: str) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} probability has to be between 0 and 1, but got {p}")


def _dropout_mask(input: Tensor, shape, p: float) -> Tensor:
    """Kept elements scaled by ``1 / (1 - p)``, dropped ones 0, in ``shape`` (broadcast to input)."""
    if p == 1.0:
        return _C.zeros(shape, dtype=input.dtype, device=input.device)
    mask = _C.empty(shape, dtype=input.dtype, device=input.device).bernoulli_(1.0 - p)
    return mask * (1.0 / (1.0 - p))


def dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Zero each element with probability ``p`` and scale the rest by ``1 / (1 - p)`` (training
    only; in eval it is the identity)."""
    _check_p(p, "dropout")
    if not training or p == 0.0:
        return input
    return _apply_inplace(input, input * _dropout_mask(input, input.shape, p), inplace)


def _feature_dropout(input: Tensor, p: float, training: bool, inplace: bool, spatial: int, name: str) -> Tensor:
    """Zero whole channels: the mask has one value per (batch, channel), i.e. the input's shape
    with the last ``spatial`` dims set to 1; an unbatched input has one dim less."""
    _check_p(p, name)
    if input.ndim not in (spatial + 1, spatial + 2):
        raise RuntimeError(f"{name}: expected a {spatial + 1}-D (unbatched) or {spatial + 2}-D (batched) input, "
                           f"got shape {_shape(input)}")
    if not training or p == 0.0:
        return input
    shape = list(input.shape[:-spatial]) + [1] * spatial
    return _apply_inplace(input, input * _dropout_mask(input, shape, p), inplace)


def dropout1d(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Zero whole channels of ``(N, C, L)`` / ``(C, L)`` input with probability ``p``."""
    return _feature_dropout(input, p, training, inplace, 1, "dropout1d")


def dropout2d(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Zero whole channels of ``(N, C, H, W)`` / ``(C, H, W)`` input with probability ``p``.
    (PyTorch treats a 3-D input as batched with a warning; here it is one unbatched image, as
    PyTorch's docs describe.)"""
    return _feature_dropout(input, p, training, inplace, 2, "dropout2d")


def dropout3d(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    return _feature_dropout(input, p, training, inplace, 3, "dropout3d")


# ---- sparse ------------------------------------------------------------------------------------------------------------
def embedding(input: Tensor, weight: Tensor, padding_idx: int | None = None, max_norm: float | None = None,
              norm_type: float = 2.0, scale_grad_by_freq: bool = False, sparse: bool = False) -> Tensor:
    """Rows of ``weight`` picked by the integer ``input``: the result is ``(*input.shape, dim)``.
    Lookups of ``padding_idx`` give no gradient to that row.

    ``max_norm``, ``scale_grad_by_freq`` and ``sparse`` are not supported (NotImplementedError)."""
    if max_norm is not None:
        raise NotImplementedError("embedding: max_norm is not supported (it renormalises weight rows in place); "
                                  "renormalise the weight yourself under tk.no_grad()")
    if scale_grad_by_freq or sparse:
        raise NotImplementedError("embedding: scale_grad_by_freq and sparse gradients are not supported")
    if input.dtype.category != 1:
        raise RuntimeError(f"embedding: expected integer indices (int64 or int32), got {input.dtype}")
    if weight.ndim != 2:
        raise RuntimeError(f"embedding: weight must be 2-D (num_embeddings, embedding_dim), got {_shape(weight)}")
    n = weight.shape[0]
    if padding_idx is not None:
        if not -n <= padding_idx < n:
            raise ValueError(f"embedding: padding_idx must be within num_embeddings ({n}), got {padding_idx}")
        padding_idx %= n
    out = _I.index_select(weight, 0, input.reshape(-1)).reshape(*input.shape, weight.shape[1])
    if padding_idx is not None and weight.requires_grad:
        out = _T.where((input == padding_idx).unsqueeze(-1), out.detach(), out)
    return out


def one_hot(tensor: Tensor, num_classes: int = -1) -> Tensor:
    """int64 one-hot vectors: ``(*tensor.shape, num_classes)``; ``num_classes=-1`` takes
    ``max + 1``."""
    if tensor.dtype is not D.int64:
        raise RuntimeError(f"one_hot is only applicable to index tensor of dtype int64, got {tensor.dtype}")
    if num_classes == -1:
        if tensor.numel() == 0:
            raise RuntimeError("one_hot: can not infer total number of classes from empty tensor")
        num_classes = int(tensor.max()) + 1
    elif tensor.numel() and tensor.device.type == "cpu":      # (a device check would wait for the device)
        lo, hi = int(tensor.min()), int(tensor.max())
        if lo < 0:
            raise RuntimeError("one_hot: class values must be non-negative")
        if hi >= num_classes:
            raise RuntimeError(f"one_hot: class values must be smaller than num_classes ({num_classes}), got {hi}")
    classes = _C.arange(num_classes, device=tensor.device)
    return (tensor.unsqueeze(-1) == classes).to(D.int64)


# ---- distances -----------------------------------------------------------------------------------------------------
@autocast_to("float32", ("cuda",))
def normalize(input: Tensor, p: float = 2.0, dim: int = 1, eps: float = 1e-12, out=None) -> Tensor:
    """``input / max(||input||_p, eps)`` along ``dim``."""
    r = input / _T.clamp(_R.norm(input, p, dim, keepdim=True), min=eps)
    return r if out is None else out.copy_(r)


@autocast_to("float32", ("cuda",))
def cosine_similarity(x1: Tensor, x2: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """``x1 . x2 / max(||x1|| ||x2||, eps)`` along ``dim`` (broadcasting)."""
    n1 = _R.norm(x1, 2, dim)
    n2 = _R.norm(x2, 2, dim)
    return (x1 * x2).sum(dim) / _T.clamp(n1 * n2, min=eps)


def pairwise_distance(x1: Tensor, x2: Tensor, p: float = 2.0, eps: float = 1e-6, keepdim: bool = False) -> Tensor:
    """``||x1 - x2 + eps||_p`` along the last dim."""
    return _R.norm(x1 - x2 + eps, p, -1, keepdim=keepdim)


# ---- padding and resampling ----------------------------------------------------------------------------------------
def _source_index(mode: str, n: int, lo: int, hi: int, dim: int, shape) -> np.ndarray:
    """For each position of a dim of size ``n`` padded by (lo, hi), the source position."""
    j = np.arange(-lo, n + hi)
    if mode == "reflect":
        if lo >= n or hi >= n:
            raise RuntimeError(f"pad: reflect padding ({lo}, {hi}) must be less than the size {n} of dimension {dim} "
                               f"of input {list(shape)}")
        j = np.abs(j)
        return np.where(j >= n, 2 * (n - 1) - j, j)
    if mode == "replicate":
        if n == 0:
            raise RuntimeError(f"pad: replicate padding of an empty dimension {dim} of input {list(shape)}")
        return np.clip(j, 0, n - 1)
    if lo > n or hi > n:
        raise RuntimeError(f"pad: circular padding ({lo}, {hi}) can be at most the size {n} of dimension {dim} "
                           f"of input {list(shape)}")
    return j % n


def pad(input: Tensor, pad, mode: str = "constant", value: float | None = None) -> Tensor:
    """Pad the last ``len(pad) // 2`` dims: ``pad = (left, right, top, bottom, ...)`` starts at
    the last dim. Negative padding crops. Modes: ``'constant'`` (with ``value``, default 0),
    ``'reflect'`` (mirror, edge not repeated), ``'replicate'`` (edge repeated), ``'circular'`` (wrap).

    Example::

        >>> F.pad(tk.tensor([[1., 2., 3.]]), (2, 1), mode="reflect")
        tensor([[3., 2., 1., 2., 3., 2.]])
    """
    pad = [int(p) for p in pad]
    if len(pad) % 2:
        raise ValueError(f"pad: padding length must be divisible by 2, got {len(pad)} values {pad}")
    k = len(pad) // 2
    if k > input.ndim:
        raise ValueError(f"pad: padding {pad} pads {k} dims but the input has only {input.ndim} (shape {_shape(input)})")
    if mode not in ("constant", "reflect", "replicate", "circular"):
        raise NotImplementedError(f"pad: mode {mode!r} is not supported; use 'constant', 'reflect', 'replicate' "
                                  f"or 'circular'")
    if mode != "constant":
        if value not in (None, 0):
            raise ValueError(f"pad: padding mode {mode!r} doesn't take in value argument")
        if input.ndim < k + 1:
            raise RuntimeError(f"pad: {mode} padding of the last {k} dims needs at least a {k + 1}-D input "
                               f"(batch or channel dims first), got shape {_shape(input)}")
    x = input
    for i in range(k):
        d = input.ndim - 1 - i
        lo, hi = pad[2 * i], pad[2 * i + 1]
        if lo == 0 and hi == 0:
            continue
        if mode == "constant":
            n = x.shape[d]
            if lo < 0 or hi < 0:            # negative padding crops
                start, stop = max(-lo, 0), n - max(-hi, 0)
                if stop < start:
                    raise RuntimeError(f"pad: padding {pad} crops dimension {d} of input {_shape(input)} below 0")
                x = _V.narrow(x, d, start, stop - start)
                lo, hi = max(lo, 0), max(hi, 0)
            parts = []
            for width in (lo, hi):
                shape = list(x.shape)
                shape[d] = width
                parts.append(_C.full(shape, 0 if value is None else value, dtype=x.dtype, device=x.device)
                             if width else None)
            x = _S.cat([p for p in (parts[0], x, parts[1]) if p is not None], d)
        else:
            idx = _source_index(mode, x.shape[d], lo, hi, d, input.shape)
            x = _I.index_select(x, d, _C.tensor(idx, dtype=D.int64, device=x.device))
    return x


def _output_size(input: Tensor, size, scale_factor, nd: int) -> tuple:
    spatial = input.shape[2:]
    if (size is None) == (scale_factor is None):
        raise ValueError("interpolate: give exactly one of size and scale_factor")
    if size is not None:
        size = [size] * nd if isinstance(size, int) else list(size)
        if len(size) != nd:
            raise ValueError(f"interpolate: size {size} must have {nd} values for input of shape {_shape(input)}")
        return tuple(int(s) for s in size), None
    scales = [float(scale_factor)] * nd if isinstance(scale_factor, (int, float)) else [float(s) for s in scale_factor]
    if len(scales) != nd:
        raise ValueError(f"interpolate: scale_factor {scale_factor} must have {nd} values for input of shape "
                         f"{_shape(input)}")
    return tuple(int(math.floor(n * s)) for n, s in zip(spatial, scales)), scales


def interpolate(input: Tensor, size=None, scale_factor=None, mode: str = "nearest", align_corners: bool | None = None,
                recompute_scale_factor: bool | None = None, antialias: bool = False) -> Tensor:
    """Resample the spatial dims (all after the first two) of ``input``: ``mode='nearest'``,
    ``'nearest-exact'``, ``'linear'`` (3-D), ``'bilinear'`` (4-D) or ``'trilinear'`` (5-D),
    to ``size`` or by ``scale_factor``. Source coordinates follow PyTorch exactly (given scale
    factors are used as given unless ``recompute_scale_factor``; ``align_corners`` as PyTorch).
    The gradient is always that of the forward's index map (PyTorch's 1-D / 3-D nearest backward
    uses another map when a dim's size is kept by a scale factor).

    Example::

        >>> F.interpolate(tk.ones(1, 3, 4, 4), scale_factor=2, mode="bilinear").shape
        tk.Size([1, 3, 8, 8])
    """
    nd = input.ndim - 2
    linear_modes = {"linear": 1, "bilinear": 2, "trilinear": 3}
    if mode in ("nearest", "nearest-exact"):
        if align_corners is not None:
            raise ValueError("align_corners option can only be set with the interpolating modes: "
                             "linear | bilinear | bicubic | trilinear")
        if nd not in (1, 2, 3):
            raise NotImplementedError(f"interpolate: nearest needs a 3-D, 4-D or 5-D input (N, C, *spatial), "
                                      f"got shape {_shape(input)}")
    elif mode in linear_modes:
        if nd != linear_modes[mode]:
            raise NotImplementedError(f"interpolate: mode {mode!r} needs a {linear_modes[mode] + 2}-D input "
                                      f"(N, C, *spatial), got shape {_shape(input)}")
        align_corners = bool(align_corners)
    else:
        raise NotImplementedError(f"interpolate: mode {mode!r} is not supported; use 'nearest', 'nearest-exact', "
                                  f"'linear', 'bilinear' or 'trilinear'")
    if antialias:
        raise NotImplementedError("interpolate: antialias=True is not supported")
    out_size, scales = _output_size(input, size, scale_factor, nd)
    if recompute_scale_factor:
        scales = None
    x = input
    for i, (n_in, n_out) in enumerate(zip(input.shape[2:], out_size)):
        d = 2 + i
        if n_out <= 0:
            raise ValueError(f"interpolate: output size {list(out_size)} must be positive (input {_shape(input)})")
        # PyTorch (CPU) copies a dim whose size is kept, whatever the scale factor says, except in its
        # nearest-exact and its 1-D / 3-D nearest kernels; we follow it so results agree exactly
        if n_in == n_out and (scales is None or "linear" in mode or mode == "nearest" and nd == 2):
            continue
        # PyTorch's scale: 1 / scale_factor when given, else in / out (computed in float32 for nearest)
        scale = (1.0 / scales[i]) if scales is not None else n_in / n_out
        dst = np.arange(n_out)
        if mode in ("nearest", "nearest-exact"):
            s32 = np.float32(scale)
            off = np.float32(0.5) if mode == "nearest-exact" else np.float32(0.0)
            src = np.minimum(np.floor((dst.astype(np.float32) + off) * s32).astype(np.int64), n_in - 1)
            if mode == "nearest" and nd == 2 and n_out == 2 * n_in:
                src = dst // 2           # PyTorch's 2-D nearest doubles exactly, whatever the scale factor says
            x = _I.index_select(x, d, _C.tensor(src, dtype=D.int64, device=x.device))
            continue
        if align_corners:
            src = dst * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(n_out)
        else:
            src = np.maximum((dst + 0.5) * scale - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        lam = (src - i0).astype(np.float64)
        shape = [1] * x.ndim
        shape[d] = n_out
        w1 = _C.tensor(lam.reshape(shape), dtype=x.dtype, device=x.device)
        a = _I.index_select(x, d, _C.tensor(i0, dtype=D.int64, device=x.device))
        b = _I.index_select(x, d, _C.tensor(i1, dtype=D.int64, device=x.device))
        x = a + (b - a) * w1
    return x if x is not input else input.clone()


def upsample(input, size=None, scale_factor=None, mode="nearest", align_corners=None) -> Tensor:
    return interpolate(input, size, scale_factor, mode, align_corners)


def _pair(v, name: str) -> tuple:
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(a) for a in v)
    if len(v) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {v}")
    return v


def _im2col_index(c: int, h: int, w: int, kernel, dilation, stride) -> tuple:
    """Flat positions in a (c, h, w) block of each (channel, kernel row, kernel col, output
    position), as unfold lays them out: ``(c * kh * kw, L)``; and the output grid (oh, ow)."""
    (kh, kw), (dh, dw), (sh, sw) = kernel, dilation, stride
    oh, ow = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
    if oh <= 0 or ow <= 0:
        raise RuntimeError(f"unfold: the kernel {list(kernel)} with dilation {list(dilation)} does not fit the "
                           f"padded input of spatial size [{h}, {w}]")
    ci, ki, kj, oi, oj = np.ix_(np.arange(c), np.arange(kh), np.arange(kw), np.arange(oh), np.arange(ow))
    flat = ci * (h * w) + (oi * sh + ki * dh) * w + (oj * sw + kj * dw)
    return flat.reshape(c * kh * kw, oh * ow), (oh, ow)


def unfold(input: Tensor, kernel_size, dilation=1, padding=0, stride=1) -> Tensor:
    """im2col: the sliding ``kernel_size`` blocks of a ``(N, C, H, W)`` input as columns,
    ``(N, C * kh * kw, L)`` with L the number of block positions. (A gather of the padded
    input, so it runs and differentiates on every device.)"""
    if input.ndim not in (3, 4):
        raise RuntimeError(f"unfold: expected a 3-D (unbatched) or 4-D (batched) input, got shape {_shape(input)}")
    batched = input.ndim == 4
    x = input if batched else input.unsqueeze(0)
    ph, pw = _pair(padding, "padding")
    if ph or pw:
        x = pad(x, (pw, pw, ph, ph))
    n, c, h, w = x.shape
    idx, _ = _im2col_index(c, h, w, _pair(kernel_size, "kernel_size"), _pair(dilation, "dilation"),
                           _pair(stride, "stride"))
    cols = _I.index_select(x.reshape(n, c * h * w), 1, _C.tensor(idx.reshape(-1), device=x.device))
    cols = cols.reshape(n, idx.shape[0], idx.shape[1])
    return cols if batched else cols.squeeze(0)


def fold(input: Tensor, output_size, kernel_size, dilation=1, padding=0, stride=1) -> Tensor:
    """col2im, the adjoint of :func:`unfold`: sums the columns ``(N, C * kh * kw, L)`` back into
    a ``(N, C, *output_size)`` image (overlapping blocks add up)."""
    if input.ndim not in (2, 3):
        raise RuntimeError(f"fold: expected a 2-D (unbatched) or 3-D (batched) input, got shape {_shape(input)}")
    batched = input.ndim == 3
    x = input if batched else input.unsqueeze(0)
    (kh, kw), (oh_, ow_) = _pair(kernel_size, "kernel_size"), _pair(output_size, "output_size")
    ph, pw = _pair(padding, "padding")
    n, ck, length = x.shape
    if ck % (kh * kw):
        raise RuntimeError(f"fold: expected size of input's dimension 1 to be divisible by the product of "
                           f"kernel_size ({kh * kw}), but got input of shape {_shape(input)}")
    c = ck // (kh * kw)
    h, w = oh_ + 2 * ph, ow_ + 2 * pw
    idx, (oh, ow) = _im2col_index(c, h, w, (kh, kw), _pair(dilation, "dilation"), _pair(stride, "stride"))
    if oh * ow != length:
        raise RuntimeError(f"fold: expected input's dimension 2 to match the {oh * ow} blocks ({oh} x {ow}) of "
                           f"output_size {[oh_, ow_]} with this kernel, padding, dilation and stride; got input of "
                           f"shape {_shape(input)}")
    out = _C.zeros(n, c * h * w, dtype=x.dtype, device=x.device)
    out = _I.index_add(out, 1, _C.tensor(idx.reshape(-1), device=x.device), x.reshape(n, -1))
    out = out.reshape(n, c, h, w)[:, :, ph:ph + oh_, pw:pw + ow_]
    return out if batched else out.squeeze(0)


# ---- losses --------------------------------------------------------------------------------------------------------
def _legacy_reduction(size_average, reduce, reduction: str) -> str:
    """PyTorch's deprecated ``size_average`` / ``reduce`` arguments, mapped to ``reduction``."""
    if size_average is None and reduce is None:
        return reduction
    warnings.warn("size_average and reduce args will be deprecated, please use reduction='...' instead.",
                  stacklevel=3)
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    return "none" if not reduce else ("mean" if size_average else "sum")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"{reduction} is not a valid value for reduction; use 'none', 'mean' or 'sum'")


def _check_same_size(name: str, input: Tensor, target: Tensor) -> None:
    if tuple(input.shape) != tuple(target.shape):
        warnings.warn(f"{name}: using a target size ({_shape(target)}) that is different to the input size "
                      f"({_shape(input)}). This will likely lead to incorrect results due to broadcasting. "
                      f"Please ensure they have the same size.", stacklevel=3)


@autocast_to("float32")
def mse_loss(input: Tensor, target: Tensor, size_average=None, reduce=None, reduction: str = "mean",
             weight: Tensor | None = None) -> Tensor:
    """``(input - target)^2``, reduced."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_same_size("mse_loss", input, target)
    d = input - target
    loss = d * d
    return _reduce(loss if weight is None else loss * weight, reduction)


@autocast_to("float32")
def l1_loss(input: Tensor, target: Tensor, size_average=None, reduce=None, reduction: str = "mean",
            weight: Tensor | None = None) -> Tensor:
    """``|input - target|``, reduced."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_same_size("l1_loss", input, target)
    loss = _T.abs(input - target)
    return _reduce(loss if weight is None else loss * weight, reduction)


@autocast_to("float32")
def smooth_l1_loss(input: Tensor, target: Tensor, size_average=None, reduce=None, reduction: str = "mean",
                   beta: float = 1.0) -> Tensor:
    """``0.5 d^2 / beta`` where ``|d| < beta``, else ``|d| - 0.5 beta`` (``d = input - target``)."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_same_size("smooth_l1_loss", input, target)
    if beta < 0:
        raise RuntimeError(f"smooth_l1_loss does not support negative values for beta, got {beta}")
    z = _T.abs(input - target)
    if beta == 0:
        return _reduce(z, reduction)
    return _reduce(_T.where(z < beta, z * z * (0.5 / beta), z - 0.5 * beta), reduction)


@autocast_to("float32")
def huber_loss(input: Tensor, target: Tensor, reduction: str = "mean", delta: float = 1.0,
               weight: Tensor | None = None) -> Tensor:
    """``0.5 d^2`` where ``|d| < delta``, else ``delta (|d| - 0.5 delta)``."""
    _check_same_size("huber_loss", input, target)
    if delta <= 0:
        raise RuntimeError(f"huber_loss does not support non-positive values for delta, got {delta}")
    z = _T.abs(input - target)
    loss = _T.where(z < delta, z * z * 0.5, (z - 0.5 * delta) * delta)
    return _reduce(loss if weight is None else loss * weight, reduction)


def _class_targets(name: str, input: Tensor, target: Tensor) -> None:
    """PyTorch's shape rules for class-index targets: input ``(N, C, d1, ...)`` with target
    ``(N, d1, ...)``, or input ``(C,)`` with a 0-d target."""
    if target.dtype.category != 1:
        raise RuntimeError(f"{name}: expected class indices of an integer dtype (int64) as target, got "
                           f"{target.dtype}; for class probabilities use cross_entropy with a float target "
                           f"of the input's shape")
    if input.ndim == 0:
        raise ValueError(f"{name}: expected an input of shape (N, C, ...) or (C,), got a 0-d tensor")
    expected = tuple(input.shape[:1]) + tuple(input.shape[2:]) if input.ndim >= 2 else ()
    if tuple(target.shape) != expected:
        raise ValueError(f"{name}: expected target of shape {list(expected)} for input of shape {_shape(input)} "
                         f"(classes in dim {1 if input.ndim >= 2 else 0}), got target of shape {_shape(target)}")


def _pick_classes(logp: Tensor, target: Tensor, class_dim: int, name: str) -> Tensor:
    """``logp`` at each target's class: ``(N, d1, ...)``. A target out of range raises at once on
    the CPU; on cuda at the next synchronisation, naming ``name`` (the gather's deferred check)."""
    try:
        return _I.gather(logp, class_dim, target.unsqueeze(class_dim), _op=f"{name} (target)").squeeze(class_dim)
    except IndexError as e:
        raise IndexError(f"{name}: a target is out of bounds for {logp.shape[class_dim]} classes ({e})") from None


@autocast_to("float32")
def nll_loss(input: Tensor, target: Tensor, weight: Tensor | None = None, size_average=None,
             ignore_index: int = -100, reduce=None, reduction: str = "mean") -> Tensor:
    """``-weight[t] * input[t]`` for each sample's target class ``t`` (``input`` holds
    log-probabilities). ``'mean'`` divides by the summed weights of the non-ignored targets
    (PyTorch's weighted mean); targets equal to ``ignore_index`` contribute nothing."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _class_targets("nll_loss", input, target)
    class_dim = 1 if input.ndim >= 2 else 0
    n_classes = input.shape[class_dim]
    if weight is not None and (weight.ndim != 1 or weight.shape[0] != n_classes):
        raise RuntimeError(f"nll_loss: weight should be a 1-D tensor of the {n_classes} classes, got shape "
                           f"{_shape(weight)}")
    ignored = target == ignore_index
    safe = _T.where(ignored, 0, target)
    if target.dtype is not D.int64:
        safe = safe.to(D.int64)
    picked = _pick_classes(input, safe, class_dim, "nll_loss")
    w = _I.index_select(weight, 0, safe.reshape(-1)).reshape(safe.shape) if weight is not None else \
        _C.ones(safe.shape, dtype=input.dtype, device=input.device)
    w = _T.where(ignored, 0.0, w)
    loss = -picked * w
    if reduction == "mean":
        return loss.sum() / w.sum()
    return _reduce(loss, reduction)


def cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None, size_average=None,
                  ignore_index: int = -100, reduce=None, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy of the logits ``input`` (``(N, C, d1, ...)`` or ``(C,)``) and ``target``:
    class indices (``(N, d1, ...)``, integer) or class probabilities (the input's shape, float).

    Args:
        weight: per-class weights ``(C,)``.
        ignore_index: targets with this class add nothing (class-index targets only).
        reduction: 'none' | 'mean' | 'sum'. For class indices 'mean' is the weighted mean
            (divided by the summed weights of the non-ignored targets); for probabilities it
            divides by the number of samples, as PyTorch.
        label_smoothing: mixes the targets with the uniform distribution over classes.

    Example::

        >>> F.cross_entropy(tk.randn(4, 10), tk.tensor([1, 0, 9, 3]))
    """
    reduction = _legacy_reduction(size_average, reduce, reduction)
    # one definition: ops.norm's (the fused one-pass primitive for class indices)
    return _N.cross_entropy(input, target, weight, ignore_index, reduction, label_smoothing)


def _safe_log(x: Tensor) -> Tensor:
    """``max(log(x), -100)`` (PyTorch's BCE clamp) with a finite gradient at ``x = 0``."""
    pos = x > 0
    return _T.where(pos, _T.clamp(_T.log(_T.where(pos, x, 1.0)), min=-100.0), -100.0)


@autocast_to("float32")
def binary_cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None, size_average=None,
                         reduce=None, reduction: str = "mean") -> Tensor:
    """``-(t log(x) + (1 - t) log(1 - x))`` for probabilities ``input``; the logs are clamped
    at -100, as PyTorch. (At exactly 0 or 1, where a log is clamped, the input's gradient is
    that of the clamped value, 0 from that term; PyTorch's hand-written backward divides by
    ``max(x (1 - x), 1e-12)`` there instead.)"""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if tuple(target.shape) != tuple(input.shape):
        raise ValueError(f"binary_cross_entropy: using a target size ({_shape(target)}) that is different to the "
                         f"input size ({_shape(input)}) is deprecated; please ensure they have the same size")
    if input.device.type == "cpu" and input.numel():
        a = input.detach()._np()
        if np.any((a < 0) | (a > 1)):
            raise RuntimeError("binary_cross_entropy: all elements of input should be between 0 and 1 "
                               "(apply sigmoid first, or use binary_cross_entropy_with_logits)")
    loss = -(target * _safe_log(input) + (1 - target) * _safe_log(1 - input))
    return _reduce(loss if weight is None else loss * weight, reduction)


@autocast_to("float32")
def binary_cross_entropy_with_logits(input: Tensor, target: Tensor, weight: Tensor | None = None,
                                     size_average=None, reduce=None, reduction: str = "mean",
                                     pos_weight: Tensor | None = None) -> Tensor:
    """``binary_cross_entropy(sigmoid(input), target)`` computed stably from the logits:
    ``(1 - t) x + (1 + (pos_weight - 1) t) log(1 + exp(-x))``. ``pos_weight`` (broadcast along
    the last dim) weighs the positive term."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if tuple(target.shape) != tuple(input.shape):
        raise ValueError(f"binary_cross_entropy_with_logits: target size ({_shape(target)}) must be the same as "
                         f"input size ({_shape(input)})")
    sp = _softplus_neg(input)
    if pos_weight is None:
        loss = (1 - target) * input + sp
    else:
        loss = (1 - target) * input + (target * (pos_weight - 1) + 1) * sp
    return _reduce(loss if weight is None else loss * weight, reduction)


@autocast_to("float32")
def kl_div(input: Tensor, target: Tensor, size_average=None, reduce=None, reduction: str = "mean",
           log_target: bool = False) -> Tensor:
    """``target * (log(target) - input)`` pointwise (``input`` holds log-probabilities; with
    ``log_target`` so does ``target``). ``reduction='batchmean'`` divides the sum by the batch
    size (the KL divergence); ``'mean'`` divides by the number of elements, as PyTorch (with its warning)."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if log_target:
        loss = _T.exp(target) * (target - input)
    else:
        pos = target > 0
        xlogy = _T.where(pos, target * _T.log(_T.where(pos, target, 1.0)), 0.0)
        loss = xlogy - target * input
    if reduction == "batchmean":
        return loss.sum() / (input.shape[0] if input.ndim else 1)
    if reduction == "mean":
        warnings.warn("reduction: 'mean' divides the total loss by both the batch size and the support size. "
                      "'batchmean' divides only by the batch size, and aligns with the KL div math definition.",
                      stacklevel=2)
    return _reduce(loss, reduction)


@autocast_to("float32")
def poisson_nll_loss(input: Tensor, target: Tensor, log_input: bool = True, full: bool = False, size_average=None,
                     eps: float = 1e-8, reduce=None, reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of ``target ~ Poisson(exp(input))`` (``log_input``) or ``Poisson(input)``."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    loss = _T.exp(input) - target * input if log_input else input - target * _T.log(input + eps)
    if full:
        stirling = target * _T.log(_T.where(target > 1, target, 1.0)) - target + \
            _T.log(_T.where(target > 1, target, 1.0) * (2 * math.pi)) * 0.5
        loss = loss + _T.where(target > 1, stirling, 0.0)
    return _reduce(loss, reduction)


# ---- convolution and pooling (ops/conv.py, ops/pool.py)
from ..ops.conv import conv1d, conv2d, conv_transpose2d  # noqa: E402  (primitives and their composites)
from ..ops.pool import (adaptive_avg_pool2d, adaptive_max_pool2d, avg_pool2d, max_pool1d,  # noqa: E402
                        max_pool2d)


# ---- normalization, attention, fused losses (ops/norm.py, ...)
# layer_norm / rms_norm and cross-entropy from class indices are fused primitives; group_norm and
# batch_norm are composites over reductions; attention is a composite (matmul + softmax).
# ``cross_entropy`` (the loss section's) is ``ops.norm.cross_entropy``: fused for class-index targets.
from ..ops.attention import multi_head_attention_forward, scaled_dot_product_attention  # noqa: E402,F401
from ..ops.norm import batch_norm, group_norm, layer_norm, rms_norm  # noqa: E402,F401
