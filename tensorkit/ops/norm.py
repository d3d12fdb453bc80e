"""Fused normalization and loss primitives: layer_norm, rms_norm, cross_entropy (from logits),
batch_norm, their backward primitives, and the norm composite built beside them (group_norm).

Why primitives: as compositions, layer norm reads its input three times (mean, variance,
normalize) and its backward five; cross-entropy materializes log_softmax. Each primitive here
is one pass over memory per direction (see ``kernels/norm.py`` and ``cpu/norm.py``).

Shapes the kernels see: rows. ``layer_norm`` / ``rms_norm`` view the input as ``[M, N]``
(N = the normalized elements), ``cross_entropy`` its logits as ``[M, C]`` (the class dim
moved last). Inputs reach the kernels contiguous (``contiguous()``, a recorded op, so
gradients flow through it).

Gradients. The forward's VJP calls the backward primitive (dx, plus dweight / dbias from
per-program partial sums reduced once). The backward primitive's own VJP is a composite of
tensorkit ops, so higher derivatives exist. The saved statistics (mean, rstd, logsumexp)
are functions of the input: the backward VJPs differentiate through them analytically and
give them no gradient of their own. Multi-output primitives route every output's gradient
to their first output, so the statistics are never handed to users, and when a graph is being
built (``create_graph=True``), dweight / dbias come from composites instead of the fused
kernel's extra outputs.

``batch_norm`` (training) is a primitive too, on ``[N, C, *]`` viewed as ``[N, C, HW]``: one
pass for the per-channel statistics, one to write y, the running statistics updated by the
kernels; its backward ``batch_norm_backward`` is one pass for Σ g and Σ g·x̂ per channel and
one to write dx. Eval batch norm is one pointwise launch (``batch_norm_eval``).
``group_norm`` is the fused layer_norm over (sample, group) rows plus a per-channel affine step.
"""
from __future__ import annotations

import math

from .. import _dispatch
from .. import dtypes as D
from .._tensor import Tensor
from ..amp.autocast import autocast_to
from .creation import new_tensor
from .pointwise import FLOATS, Pointwise
from .pointwise import _vjp as _pointwise_vjp


def _acc(dtype: D.DType) -> D.DType:
    """The statistics' dtype: float32 for half inputs (as PyTorch), else the input's."""
    return D.float32 if dtype in (D.float16, D.bfloat16) else dtype


# torch.finfo(dtype).eps: rms_norm's default eps
_MACHINE_EPS = {D.float16: 2.0 ** -10, D.bfloat16: 2.0 ** -7, D.float32: 2.0 ** -23, D.float64: 2.0 ** -52}


def _kernel(op: str, x: Tensor):
    dev = x._storage.device.type
    return _dispatch.KERNELS.get((op, dev, x.dtype)) or _dispatch.lookup(op, dev, x.dtype)


def _check_param(op: str, name: str, p, x: Tensor, shape, mixed: bool = False) -> None:
    """``mixed``: float32 parameters are accepted with 16-bit inputs too (the norms, as PyTorch's
    ATen / cuDNN kernels: computed in float32, returned in the input's dtype)."""
    if p is None:
        return
    if not isinstance(p, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor or None, got {type(p).__name__}")
    if tuple(p.shape) != tuple(shape):
        raise RuntimeError(f"{op}: expected {name} of shape {list(shape)}, got {list(p.shape)}")
    if p.dtype is not x.dtype and not (mixed and p.dtype is _acc(x.dtype)):
        also = f" or {_acc(x.dtype)}" if mixed and _acc(x.dtype) is not x.dtype else ""
        raise RuntimeError(f"{op}: expected {name} of dtype {x.dtype} (the input's){also}, got {p.dtype}")
    if p.device != x.device:
        raise RuntimeError(f"{op}: expected {name} on {x.device} (the input's device), got {p.device}")


def _check_affine(op: str, weight, bias) -> None:
    """weight and bias of one dtype (as PyTorch's kernels want): both the input's, or both float32."""
    if weight is not None and bias is not None and weight.dtype is not bias.dtype:
        raise RuntimeError(f"{op}: expected weight and bias of the same dtype, got {weight.dtype} and {bias.dtype}")


def _normalized_shape(op: str, x: Tensor, normalized_shape) -> tuple:
    ns = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if not ns or tuple(x.shape[x.ndim - len(ns):]) != ns or x.ndim < len(ns):
        raise RuntimeError(f"{op}: given normalized_shape={list(ns)}, expected input with shape "
                           f"[*, {', '.join(map(str, ns))}], but got input of size {list(x.shape)}")
    if not x.dtype.is_floating_point:
        raise RuntimeError(f"{op}: expected a floating point input, got {x.dtype}")
    return ns


def _contiguous(t):
    return t.contiguous() if t is not None else None


def _notify(op, inputs, outputs, params):
    if _dispatch.observers:
        _dispatch.notify(op, inputs, outputs, params)


# ---- layer_norm / rms_norm --------------------------------------------------------------------------
@autocast_to("float32", ("cuda",))
def layer_norm(input: Tensor, normalized_shape, weight: Tensor | None = None, bias: Tensor | None = None,
               eps: float = 1e-5) -> Tensor:
    """``(x - mean) / sqrt(var + eps) * weight + bias`` over the last ``len(normalized_shape)``
    dims (biased variance), one pass over memory forward and one backward. As PyTorch's, a
    float16 / bfloat16 input may come with float32 ``weight`` / ``bias`` (computed in float32,
    returned in the input's dtype; their gradients are float32).

    Example::

        >>> y = tk.layer_norm(tk.randn(8, 16), (16,))
    """
    ns = _normalized_shape("layer_norm", input, normalized_shape)
    _check_param("layer_norm", "weight", weight, input, ns, mixed=True)
    _check_param("layer_norm", "bias", bias, input, ns, mixed=True)
    _check_affine("layer_norm", weight, bias)
    x, weight, bias = _contiguous(input), _contiguous(weight), _contiguous(bias)
    n = math.prod(ns)
    m = x.numel() // n if n else 0
    acc = _acc(x.dtype)
    outs = [new_tensor(x.shape, x.dtype, x._storage.device), new_tensor((m,), acc, x._storage.device),
            new_tensor((m,), acc, x._storage.device)]
    params = {"eps": float(eps), "n": n, "rms": False}
    _kernel("layer_norm", x)(x, weight, bias, outs, params)
    _notify("layer_norm", (x, weight, bias), tuple(outs), params)
    return outs[0]


@autocast_to("float32", ("cuda",))
def rms_norm(input: Tensor, normalized_shape, weight: Tensor | None = None, eps: float | None = None) -> Tensor:
    """``x / sqrt(mean(x**2) + eps) * weight`` over the last ``len(normalized_shape)`` dims;
    ``eps`` defaults to the dtype's machine epsilon, as PyTorch's. A float16 / bfloat16 input may
    come with a float32 ``weight``, as for ``layer_norm``."""
    ns = _normalized_shape("rms_norm", input, normalized_shape)
    _check_param("rms_norm", "weight", weight, input, ns, mixed=True)
    if eps is None:
        eps = _MACHINE_EPS[input.dtype]
    x, weight = _contiguous(input), _contiguous(weight)
    n = math.prod(ns)
    m = x.numel() // n if n else 0
    outs = [new_tensor(x.shape, x.dtype, x._storage.device), new_tensor((m,), _acc(x.dtype), x._storage.device)]
    params = {"eps": float(eps), "n": n, "rms": True}
    _kernel("rms_norm", x)(x, weight, None, [outs[0], None, outs[1]], params)
    _notify("rms_norm", (x, weight), tuple(outs), params)
    return outs[0]


def _norm_backward(g: Tensor, x: Tensor, w, mean, rstd, params) -> list:
    """The backward primitive: ``[dx]`` plus ``dweight, dbias`` (flat, length n) when ``w``."""
    rms = params["rms"]
    op = "rms_norm_backward" if rms else "layer_norm_backward"
    g = g.contiguous()
    dev = x._storage.device
    n = params["n"]
    outs = [new_tensor(x.shape, x.dtype, dev)]
    if w is not None:
        outs.append(new_tensor((n,), w.dtype, dev))                # dweight
        if not rms:
            outs.append(new_tensor((n,), w.dtype, dev))            # dbias
    _kernel(op, x)(g, x, w, mean, rstd, outs, params)
    inputs = (g, x, w, rstd) if rms else (g, x, w, mean, rstd)
    _notify(op, inputs, tuple(outs), params)
    return outs


def _rows(t: Tensor, n: int) -> Tensor:
    return t.reshape(-1, n)


def _stats(x2: Tensor, eps: float, rms: bool):
    """(x̂, rstd) of [M, N] rows as composites (differentiable: used when building a graph)."""
    if rms:
        r = ((x2 * x2).mean(-1, keepdim=True) + eps).rsqrt()
        return x2 * r, r
    c = x2 - x2.mean(-1, keepdim=True)
    r = ((c * c).mean(-1, keepdim=True) + eps).rsqrt()
    return c * r, r


@_dispatch.defvjp("layer_norm", inputs=(0, 1), outputs=(1, 2))
def _layer_norm_vjp(g, node):
    x, w = node.inputs[0], node.inputs[1]
    _, mean, rstd = node.outputs
    return _affine_norm_vjp(g, node, x, w, mean, rstd, has_b=node.shapes[2] is not None)


@_dispatch.defvjp("rms_norm", inputs=(0, 1), outputs=(1,))
def _rms_norm_vjp(g, node):
    x, w = node.inputs[0], node.inputs[1]
    return _affine_norm_vjp(g, node, x, w, None, node.outputs[1], has_b=False)[:2]


def _affine_norm_vjp(g, node, x, w, mean, rstd, has_b):
    p = node.params
    outs = _norm_backward(g, x, w, mean, rstd, p)
    dx = outs[0]
    dw = db = None
    if w is not None:
        if dx._requires_grad:       # a graph is being built: dweight / dbias differentiable too
            n = p["n"]
            # float32 parameters of a 16-bit input: their gradients accumulate in float32
            xh, _ = _stats(_rows(x, n).to(w.dtype), p["eps"], p["rms"])
            g2 = _rows(g, n).to(w.dtype)
            dw = (g2 * xh).sum(0)
            db = g2.sum(0) if has_b else None
        else:
            dw = outs[1]
            db = outs[2] if has_b else None
        dw = dw.reshape(w.shape)
        db = db.reshape(w.shape) if db is not None else None
    elif has_b:
        db = _rows(g, p["n"]).sum(0, dtype=_acc(g.dtype))     # the engine casts it to the bias's dtype
        db = db.reshape(node.shapes[2])
    return (dx, dw, db)


def _norm_backward_vjp(u, node):
    """Gradients of ``dx = r * center(g * w)`` (``center(t) = t - mean(t) - x̂ mean(t x̂)``; RMS
    norm: no ``mean(t)`` term) with respect to g, x and w, given ``u``, the gradient of dx.
    With B = mean(gy x̂), C = sum(u x̂), D = sum(u dx / r) and v = -r (B u + C gy / N):
    d/dgy = r center(u);  d/dx = r center(v) - D r² x̂ / N  (x̂ and r are recomputed from x
    here, so the statistics need no gradient of their own)."""
    p = node.params
    n, rms = p["n"], p["rms"]
    g, x, w = node.inputs[0], node.inputs[1], node.inputs[2]
    shape = x.shape
    acc = w.dtype if w is not None else x.dtype     # a float32 weight of a 16-bit input: all in float32
    x2, g2, u2 = (_rows(t, n).to(acc) for t in (x, g, u.contiguous() if not u.is_contiguous() else u))
    w1 = w.reshape(n) if w is not None else None
    xh, r = _stats(x2, p["eps"], rms)

    def mean(t):
        return t.mean(-1, keepdim=True)

    def center(t):
        t = t - xh * mean(t * xh)
        return t if rms else t - mean(t)

    gy = g2 * w1 if w1 is not None else g2
    b = mean(gy * xh)
    dxr = gy - xh * b if rms else gy - mean(gy) - xh * b
    c = (u2 * xh).sum(-1, keepdim=True)
    d = (u2 * dxr).sum(-1, keepdim=True)
    v = -r * (b * u2 + c * gy / n)
    grad_x = r * center(v) - d * r * r * xh / n
    grad_gy = r * center(u2)
    grad_g = grad_gy * w1 if w1 is not None else grad_gy
    grad_w = (grad_gy * g2).sum(0).reshape(w.shape) if w is not None else None
    rest = (None,) if rms else (None, None)
    return (grad_g.reshape(shape), grad_x.reshape(shape), grad_w) + rest


_dispatch.defvjp("layer_norm_backward", inputs=(0, 1, 2))(_norm_backward_vjp)
_dispatch.defvjp("rms_norm_backward", inputs=(0, 1, 2))(_norm_backward_vjp)


# ---- cross_entropy from logits -----------------------------------------------------------------------------
def cross_entropy_rows(logits: Tensor, target: Tensor, weight: Tensor | None = None, ignore_index: int = -100,
                       label_smoothing: float = 0.0) -> Tensor:
    """The fused primitive: per-row loss of ``logits`` ``[M, C]`` against class indices
    ``target`` ``[M]``: ``(1 - ε) w[t] (lse - x[t]) + ε / C · Σ_c w[c] (lse - x[c])``, 0 where
    ``target == ignore_index``. One pass over the logits (log-softmax never materialized).
    ``nn.functional.cross_entropy`` reshapes and reduces around it.

    On the CPU a target outside ``[0, C)`` (other than ``ignore_index``) raises IndexError; on a
    GPU, where checking at once would cost a synchronization, that row's loss is NaN and the
    IndexError comes at the next synchronization (as PyTorch's asynchronous device assert, but
    naming the op and keeping the device usable)."""
    if logits.ndim != 2 or target.ndim != 1 or target.shape[0] != logits.shape[0]:
        raise RuntimeError(f"cross_entropy: expected logits [M, C] and target [M], got {list(logits.shape)} and "
                           f"{list(target.shape)}")
    if target.dtype.is_floating_point or target.dtype is D.bool_:
        raise RuntimeError(f"cross_entropy: expected target of an integer dtype (class indices), got {target.dtype}")
    if not logits.dtype.is_floating_point:
        raise RuntimeError(f"cross_entropy: expected floating point logits, got {logits.dtype}")
    if target.device != logits.device:
        raise RuntimeError(f"cross_entropy: expected target on {logits.device} (the logits' device), "
                           f"got {target.device}")
    c = logits.shape[1]
    if c == 0:
        raise RuntimeError(f"cross_entropy: expected at least one class, got logits of shape {list(logits.shape)}")
    _check_param("cross_entropy", "weight", weight, logits, (c,))
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    x, t, weight = logits.contiguous(), target.to(D.int64).contiguous(), _contiguous(weight)
    dev = x._storage.device
    outs = [new_tensor((x.shape[0],), x.dtype, dev), new_tensor((x.shape[0],), _acc(x.dtype), dev)]
    params = {"ignore_index": int(ignore_index), "label_smoothing": float(label_smoothing)}
    _kernel("cross_entropy", x)(x, t, weight, outs, params)
    _notify("cross_entropy", (x, t, weight), tuple(outs), params)
    return outs[0]


@_dispatch.defvjp("cross_entropy", outputs=(1,))
def _cross_entropy_vjp(g, node):
    x, t, w = node.inputs
    g = g.contiguous()
    dx = new_tensor(x.shape, x.dtype, x._storage.device)
    lse = node.outputs[1]
    _kernel("cross_entropy_backward", x)(g, x, t, w, lse, dx, node.params)
    _notify("cross_entropy_backward", (g, x, t, w, lse), (dx,), node.params)
    return (dx, None, None)


@_dispatch.defvjp("cross_entropy_backward", inputs=(0, 1, 2, 3))
def _cross_entropy_backward_vjp(u, node):
    """``dx = g · (a p - b)`` per row, p = softmax(x), a = (1-ε) w[t] + ε W / C (W = Σ w),
    b = (1-ε) w[t] onehot(t) + ε w / C (both 0 on ignored rows). So
    d/dg = a Σ(u p) - Σ(u b) and d/dx = g a · p (u - Σ(u p)) (softmax's VJP)."""
    g, x, t, w = node.inputs[:4]
    p = node.params
    eps, c = p["label_smoothing"], x.shape[1]
    from .creation import arange
    valid = (t != p["ignore_index"])
    tc = valid.where(t, 0)
    wv = w.to(x.dtype) if w is not None else None
    wt = wv.index_select(0, tc) if wv is not None else valid.to(x.dtype)
    wt = valid.where(wt, 0.0).to(x.dtype)
    total = wv.sum() if wv is not None else float(c)
    a = ((1 - eps) * wt + valid.to(x.dtype) * (eps / c) * total).unsqueeze(1)
    onehot = (arange(c, device=x.device) == tc.unsqueeze(1)).to(x.dtype)
    smooth = (wv.unsqueeze(0) if wv is not None else 1.0) * (eps / c) * valid.to(x.dtype).unsqueeze(1)
    b = (1 - eps) * wt.unsqueeze(1) * onehot + smooth
    prob = x.softmax(-1)
    up = (u * prob).sum(-1, keepdim=True)
    grad_g = (a * up - (u * b).sum(-1, keepdim=True)).squeeze(1)
    grad_x = g.unsqueeze(1) * a * prob * (u - up)
    return (grad_g, grad_x, None, None, None)


# ---- group_norm: a composite over the fused layer_norm -----------------------------------------------------
@autocast_to("float32", ("cuda",))
def group_norm(input: Tensor, num_groups: int, weight: Tensor | None = None, bias: Tensor | None = None,
               eps: float = 1e-5) -> Tensor:
    """Normalize ``[N, C, *]`` over groups of ``C // num_groups`` channels (and all spatial
    positions), then scale and shift per channel: the fused layer_norm over (sample, group) rows,
    then the affine step. As PyTorch's, a float16 / bfloat16 input may come with float32
    ``weight`` / ``bias``: the affine step then runs in float32 (so their gradients accumulate in
    float32) and the result is rounded to the input's dtype."""
    if input.ndim < 2:
        raise RuntimeError(f"group_norm: expected an input of shape [N, C, *], got {list(input.shape)}")
    nb, ch = input.shape[0], input.shape[1]
    if num_groups <= 0 or ch % num_groups:
        raise RuntimeError(f"group_norm: expected the number of channels ({ch}) to be divisible by num_groups "
                           f"({num_groups}); input shape {list(input.shape)}")
    _check_param("group_norm", "weight", weight, input, (ch,), mixed=True)
    _check_param("group_norm", "bias", bias, input, (ch,), mixed=True)
    _check_affine("group_norm", weight, bias)
    # each (sample, group) is one row of the fused layer_norm (no affine: it is per channel here)
    per_group = (ch // num_groups) * math.prod(input.shape[2:])
    x = input.reshape(nb, num_groups, per_group)
    y = layer_norm(x, (per_group,), eps=eps).reshape(input.shape)
    pshape = (1, ch) + (1,) * (input.ndim - 2)
    if weight is not None:
        y = y * weight.reshape(pshape)
    if bias is not None:
        y = y + bias.reshape(pshape)
    return y.to(input.dtype)


# ---- batch_norm --------------------------------------------------------------------------------------------
def batch_norm(input: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
               weight: Tensor | None = None, bias: Tensor | None = None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Normalize ``[N, C, *]`` per channel: with the batch's statistics when ``training`` (and
    then, as PyTorch, ``running = (1 - momentum) * running + momentum * batch`` in place, with
    the *unbiased* batch variance), else with ``running_mean`` / ``running_var``.

    Training is the fused primitive ``batch_norm`` (one pass for the statistics, one to write
    y, the running statistics updated on the device: no host synchronization); its backward
    is the fused ``batch_norm_backward``. Eval is one pointwise launch,
    ``(x - running_mean) / sqrt(running_var + eps) * weight + bias``. As PyTorch's cuDNN path,
    16-bit inputs may come with float32 weight, bias and running statistics; the output has
    the input's dtype.

    Example::

        >>> x, rm, rv = tk.randn(8, 3, 4, 4), tk.zeros(3), tk.ones(3)
        >>> y = tk.nn.functional.batch_norm(x, rm, rv, training=True)
    """
    if input.ndim < 2:
        raise RuntimeError(f"batch_norm: expected an input of shape [N, C, *], got {list(input.shape)}")
    if not input.dtype.is_floating_point:
        raise RuntimeError(f"batch_norm: expected a floating point input, got {input.dtype}")
    ch = input.shape[1]
    for name, p in (("running_mean", running_mean), ("running_var", running_var)):
        if p is not None and tuple(p.shape) != (ch,):
            raise RuntimeError(f"batch_norm: expected {name} of shape [{ch}] (the input's channels; input shape "
                               f"{list(input.shape)}), got {list(p.shape)}")
        if p is not None and (not p.dtype.is_floating_point or p.device != input.device):
            raise RuntimeError(f"batch_norm: expected {name} of a floating dtype on {input.device} (the input's "
                               f"device), got {p.dtype} on {p.device}")
    _check_param("batch_norm", "weight", weight, input, (ch,), mixed=True)
    _check_param("batch_norm", "bias", bias, input, (ch,), mixed=True)
    if training:
        count = input.numel() // ch if ch else 0
        if count <= 1:
            raise ValueError(f"batch_norm: expected more than 1 value per channel when training, got input size "
                             f"{list(input.shape)}")
        return _batch_norm_train(input, weight, bias, running_mean, running_var, momentum, eps)
    if running_mean is None or running_var is None:
        raise RuntimeError("batch_norm: running_mean and running_var are needed when not training")
    # eval: one launch, (x - mean) / sqrt(var + eps) * w + b with the per-channel operands broadcast
    # (cheaper on the host than the [C] math as separate ops: eval is launch-bound at ResNet sizes)
    pshape = (1, ch) + (1,) * (input.ndim - 2)
    per_channel = lambda t, default: t.reshape(pshape) if t is not None else default
    return _bn_eval(input, running_mean.reshape(pshape), running_var.reshape(pshape), per_channel(weight, 1.0),
                    per_channel(bias, 0.0), float(eps))


def _bn_eval_vjp(g, x, mean, var, w, b, eps, out):
    """Only the operands that want a gradient get one (mean and var are usually running buffers)."""
    want = lambda t: isinstance(t, Tensor) and t._requires_grad
    r = (var + eps).rsqrt()
    gw = g * (r * w if isinstance(w, Tensor) else r)
    xc = x - mean if want(var) or want(w) else None
    grad_var = gw * xc * (r * r * -0.5) if want(var) else None
    return (gw if want(x) else None, -gw if want(mean) else None, grad_var,
            g * xc * r if want(w) else None, g if want(b) else None, None)


# eval batch norm: one launch of the pointwise codegen, the [1, C, 1..] operands broadcast; the input's
# dtype decides the result's (float32 statistics and parameters with 16-bit inputs: computed in float32)
_bn_eval = Pointwise("batch_norm_eval", lambda m, x, mean, var, w, b, eps: (x - mean) / m.sqrt(var + eps) * w + b,
                     dtypes=FLOATS, promote_args=(0,), vjp=_pointwise_vjp(_bn_eval_vjp))


def _batch_norm_train(input, weight, bias, running_mean, running_var, momentum, eps):
    """The fused training forward: ``y``, and the saved per-channel ``mean`` and ``invstd`` (in
    the statistics' dtype) for backward. The kernel updates the running statistics in place
    (a non-contiguous buffer through a contiguous copy, copied back); their versions are bumped
    as any in-place op's. They are not differentiated (PyTorch: buffers)."""
    x, weight, bias = input.contiguous(), _contiguous(weight), _contiguous(bias)
    ch = x.shape[1]
    dev = x._storage.device
    acc = _acc(x.dtype)
    outs = [new_tensor(x.shape, x.dtype, dev), new_tensor((ch,), acc, dev), new_tensor((ch,), acc, dev)]
    bufs = [t if t is None or t.is_contiguous() else t.contiguous() for t in (running_mean, running_var)]
    params = {"eps": float(eps), "momentum": float(momentum), "count": x.numel() // ch}
    _kernel("batch_norm", x)(x, weight, bias, bufs[0], bufs[1], outs, params)
    for buf, written in zip((running_mean, running_var), bufs):
        if buf is not None:
            if written is buf:
                buf._bump_version()
            else:
                buf.copy_(written)
    _notify("batch_norm", (x, weight, bias, running_mean, running_var), tuple(outs), params)
    return outs[0]


def _bn_dims(x: Tensor):
    """(reduced dims, per-channel broadcast shape) of an ``[N, C, *]`` tensor."""
    return (0,) + tuple(range(2, x.ndim)), (1, x.shape[1]) + (1,) * (x.ndim - 2)


def _bn_stats(x: Tensor, eps: float):
    """(x̂, invstd) as composites (differentiable: used when building a graph), in the
    statistics' dtype."""
    dims, _ = _bn_dims(x)
    x = x.to(_acc(x.dtype))
    c = x - x.mean(dims, keepdim=True)
    r = ((c * c).mean(dims, keepdim=True) + eps).rsqrt()
    return c * r, r


def _bn_backward(g: Tensor, x: Tensor, w, mean, invstd, params) -> list:
    """The backward primitive: ``[dx, Σ g·x̂, Σ g]`` (the last two per channel, statistics' dtype)."""
    g = g.contiguous()
    dev = x._storage.device
    ch = x.shape[1]
    acc = _acc(x.dtype)
    outs = [new_tensor(x.shape, x.dtype, dev), new_tensor((ch,), acc, dev), new_tensor((ch,), acc, dev)]
    _kernel("batch_norm_backward", x)(g, x, w, mean, invstd, outs, params)
    _notify("batch_norm_backward", (g, x, w, mean, invstd), tuple(outs), params)
    return outs


@_dispatch.defvjp("batch_norm", inputs=(0, 1), outputs=(1, 2))
def _batch_norm_vjp(g, node):
    x, w = node.inputs[0], node.inputs[1]
    _, mean, invstd = node.outputs
    dx, dw, db = _bn_backward(g, x, w, mean, invstd, node.params)
    if dx._requires_grad:           # a graph is being built: dweight / dbias differentiable too
        dims, _ = _bn_dims(x)
        dw = (g * _bn_stats(x, node.params["eps"])[0]).sum(dims)
        db = g.sum(dims)
    # the engine casts Σ g·x̂ and Σ g (statistics' dtype) to the parameters' dtypes
    return (dx, dw if w is not None else None, db if node.shapes[2] is not None else None, None, None)


@_dispatch.defvjp("batch_norm_backward", inputs=(0, 1, 2))
def _batch_norm_backward_vjp(u, node):
    """Gradients of ``dx = r · center(g w)`` (per channel, ``center(t) = t - mean(t) - x̂ mean(t x̂)``,
    means over N and the spatial dims) with respect to g, x and w, given ``u``, the gradient of
    dx: layer norm's formulas (``_norm_backward_vjp``) with the means taken per channel, and x̂, r
    recomputed from x."""
    g, x, w = node.inputs[0], node.inputs[1], node.inputs[2]
    dims, pshape = _bn_dims(x)
    n = x.numel() // x.shape[1]
    xh, r = _bn_stats(x, node.params["eps"])
    acc = xh.dtype
    g2, u2 = g.to(acc), u.to(acc)
    w1 = w.to(acc).reshape(pshape) if w is not None else None

    def mean(t):
        return t.mean(dims, keepdim=True)

    def center(t):
        return t - mean(t) - xh * mean(t * xh)

    gy = g2 * w1 if w1 is not None else g2
    b = mean(gy * xh)
    dxr = gy - mean(gy) - xh * b
    c = (u2 * xh).sum(dims, keepdim=True)
    d = (u2 * dxr).sum(dims, keepdim=True)
    v = -r * (b * u2 + c * gy / n)
    grad_x = r * center(v) - d * r * r * xh / n
    grad_gy = r * center(u2)
    grad_g = grad_gy * w1 if w1 is not None else grad_gy
    grad_w = (grad_gy * g2).sum(dims) if w is not None else None
    return (grad_g, grad_x, grad_w, None, None)


# ---- cross_entropy: PyTorch's functional form around the fused rows ------------------------------------------
@autocast_to("float32")
def cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None, ignore_index: int = -100,
                  reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy of logits ``input`` (``[C]``, ``[N, C]`` or ``[N, C, d1, ...]``) against class
    indices (``[]``, ``[N]``, ``[N, d1, ...]``: the fused primitive ``cross_entropy_rows``) or
    class probabilities (same shape as ``input``: a composite over log_softmax), with PyTorch's
    ``weight``, ``ignore_index``, ``label_smoothing`` and ``reduction`` ('mean' divides by the
    summed weights of the counted targets)."""
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"cross_entropy: {reduction!r} is not a valid value for reduction "
                         f"(expected 'mean', 'sum' or 'none')")
    if input.ndim == 0:
        raise RuntimeError("cross_entropy: expected input of shape [C], [N, C] or [N, C, d1, ...], got a 0-d tensor")
    cdim = 0 if input.ndim == 1 else 1
    c = input.shape[cdim]
    if target.dtype.is_floating_point:
        return _cross_entropy_probs(input, target, weight, reduction, label_smoothing, cdim)
    expected = tuple(s for i, s in enumerate(input.shape) if i != cdim)
    if tuple(target.shape) != expected:
        raise RuntimeError(f"cross_entropy: expected target of shape {list(expected)} for input of shape "
                           f"{list(input.shape)} (class dim {cdim}), got {list(target.shape)}")
    logits = input.movedim(cdim, -1).reshape(-1, c) if input.ndim > 2 or cdim == 0 else input
    t = target.reshape(-1)
    loss = cross_entropy_rows(logits, t, weight, ignore_index, label_smoothing)
    if reduction == "none":
        return loss.reshape(expected)
    if reduction == "sum":
        return loss.sum()
    valid = t != ignore_index
    if weight is None:
        return loss.sum() / valid.sum().to(loss.dtype)
    wt = valid.where(weight.index_select(0, valid.where(t, 0)), 0.0)
    return loss.sum() / wt.sum()


def _cross_entropy_probs(input, target, weight, reduction, label_smoothing, cdim):
    if tuple(target.shape) != tuple(input.shape):
        raise RuntimeError(f"cross_entropy: class-probability target must have the input's shape "
                           f"{list(input.shape)}, got {list(target.shape)}")
    c = input.shape[cdim]
    if label_smoothing > 0:
        target = target * (1 - label_smoothing) + label_smoothing / c
    logp = input.log_softmax(cdim)
    if weight is not None:
        logp = logp * weight.reshape((c,) + (1,) * (input.ndim - cdim - 1))
    loss = -(logp * target).sum(cdim)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.mean()          # PyTorch: over every position, not over the targets' weights
