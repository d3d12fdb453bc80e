"""Attention: ``scaled_dot_product_attention`` and ``multi_head_attention_forward``.

On the GPU, attention without a mask (or causal) and without dropout runs the fused
``flash_attention`` primitive: the ``[L, S]`` scores are never stored, forward or backward
(``flash_attention_backward``: FlashAttention-2's dk/dv and dq kernels). When a graph of the
backward is being built (``create_graph=True``), the gradients come from a composite instead
(recomputed scores, matmul + softmax), which is differentiable again. Everything else (masks,
dropout, the CPU) is the composite matmul + softmax.

``scaled_dot_product_attention`` follows PyTorch's math backend, including its "safe
softmax": a query row whose keys are all masked out gets zeros, not NaN.
"""
from __future__ import annotations

import math

from .. import _dispatch
from .. import dtypes as D
from .._tensor import Tensor
from ..amp.autocast import autocast_to
from .creation import new_tensor

FLASH_MAX_HEAD_DIM = 256         # the fused kernel holds a [BLOCK_M, head_dim] accumulator per program


def _dropout(x: Tensor, p: float) -> Tensor:
    if p <= 0.0:
        return x
    if p >= 1.0:
        return x * 0.0
    from .creation import rand
    keep = rand(x.shape, dtype=x.dtype, device=x.device) >= p
    return keep.where(x, 0.0) * (1.0 / (1.0 - p))


def _causal(lq: int, s: int, device) -> Tensor:
    """True where key j comes after query i (j > i): what a causal mask hides (top-left aligned)."""
    from .creation import arange
    return arange(s, device=device).unsqueeze(0) > arange(lq, device=device).unsqueeze(1)


@autocast_to("lower")
def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None = None,
                                 dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
                                 enable_gqa: bool = False) -> Tensor:
    """``softmax(q kᵀ · scale + mask) v`` over the last two dims (``[..., L, E]``, ``[..., S, E]``,
    ``[..., S, Ev]``). ``attn_mask``: bool (True = may attend) or float (added), broadcast to
    ``[..., L, S]``; ``is_causal``: query i sees keys j <= i; ``scale`` defaults to 1/sqrt(E).

    Example::

        >>> q = k = v = tk.randn(2, 4, 16, 8)
        >>> tk.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True).shape
        tk.Size([2, 4, 16, 8])
    """
    if query.ndim < 2 or key.ndim < 2 or value.ndim < 2:
        raise RuntimeError(f"scaled_dot_product_attention: expected query, key, value of at least 2 dims, got "
                           f"{list(query.shape)}, {list(key.shape)}, {list(value.shape)}")
    if query.shape[-1] != key.shape[-1] or key.shape[-2] != value.shape[-2]:
        raise RuntimeError(f"scaled_dot_product_attention: query [..., L, E] {list(query.shape)}, key [..., S, E] "
                           f"{list(key.shape)} and value [..., S, Ev] {list(value.shape)} do not match")
    if is_causal and attn_mask is not None:
        raise RuntimeError("scaled_dot_product_attention: pass either attn_mask or is_causal=True, not both")
    if enable_gqa and query.ndim >= 3 and key.shape[-3] != query.shape[-3]:
        rep = query.shape[-3] // key.shape[-3]
        # each key/value head serves `rep` consecutive query heads (PyTorch's repeat_interleave)
        key, value = [t.unsqueeze(-3).expand(*t.shape[:-2], rep, *t.shape[-2:]).reshape(
            *t.shape[:-3], t.shape[-3] * rep, *t.shape[-2:]) for t in (key, value)]
    lq, s = query.shape[-2], key.shape[-2]
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    if attn_mask is None and dropout_p == 0.0 and _flash_ok(query, key, value):
        return flash_attention(query, key, value, scale, is_causal)
    scores = (query * scale) @ key.transpose(-2, -1)
    masked = None
    if is_causal:
        masked = _causal(lq, s, query.device)
    elif attn_mask is not None:
        if attn_mask.dtype is D.bool_:
            masked = ~attn_mask
        else:
            scores = scores + attn_mask
    if masked is not None:
        scores = scores.masked_fill(masked, -math.inf)
    attn = scores.softmax(-1)
    if masked is not None or attn_mask is not None:
        # PyTorch's safe softmax: a row with every key masked attends to nothing (zeros, not NaN)
        attn = (scores == -math.inf).all(-1, keepdim=True).where(0.0, attn)
    attn = _dropout(attn, dropout_p)
    return attn @ value


def _as_additive(mask: Tensor | None, dtype) -> Tensor | None:
    """A bool mask (True = masked out, MultiheadAttention's convention) as 0 / -inf to add."""
    if mask is None:
        return None
    if mask.dtype is D.bool_:
        from .creation import zeros
        return zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, -math.inf)
    if not mask.dtype.is_floating_point:
        raise RuntimeError(f"multi_head_attention_forward: expected a bool or floating mask, got {mask.dtype}")
    return mask.to(dtype)


@autocast_to("lower")      # PyTorch: _native_multi_head_attention (CPU); linear + attention (CUDA)
def multi_head_attention_forward(query: Tensor, key: Tensor, value: Tensor, embed_dim_to_check: int, num_heads: int,
                                 in_proj_weight: Tensor | None, in_proj_bias: Tensor | None,
                                 bias_k: Tensor | None, bias_v: Tensor | None, add_zero_attn: bool,
                                 dropout_p: float, out_proj_weight: Tensor, out_proj_bias: Tensor | None,
                                 training: bool = True, key_padding_mask: Tensor | None = None,
                                 need_weights: bool = True, attn_mask: Tensor | None = None,
                                 use_separate_proj_weight: bool = False, q_proj_weight: Tensor | None = None,
                                 k_proj_weight: Tensor | None = None, v_proj_weight: Tensor | None = None,
                                 static_k: Tensor | None = None, static_v: Tensor | None = None,
                                 average_attn_weights: bool = True, is_causal: bool = False):
    """PyTorch's ``F.multi_head_attention_forward``: inputs ``[L, N, E]`` (or unbatched
    ``[L, E]``), masks with True = masked out (``key_padding_mask`` ``[N, S]``, ``attn_mask``
    ``[L, S]`` or ``[N * num_heads, L, S]``; float masks are added). Returns (output ``[L, N, E]``,
    attention weights ``[N, L, S]`` averaged over heads, per head ``[N, H, L, S]``, or None).
    ``bias_k`` / ``bias_v`` / ``add_zero_attn`` / ``static_k`` / ``static_v`` are not supported."""
    if bias_k is not None or bias_v is not None or add_zero_attn or static_k is not None or static_v is not None:
        raise NotImplementedError("multi_head_attention_forward: bias_k, bias_v, add_zero_attn, static_k and "
                                  "static_v are not supported")
    batched = query.ndim == 3
    if query.ndim not in (2, 3) or key.ndim != query.ndim or value.ndim != query.ndim:
        raise RuntimeError(f"multi_head_attention_forward: expected query, key, value of shape [L, N, E] (or "
                           f"unbatched [L, E]), got {list(query.shape)}, {list(key.shape)}, {list(value.shape)}")
    if not batched:
        query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask.unsqueeze(0)
    lq, n, e = query.shape
    s = key.shape[0]
    if e != embed_dim_to_check:
        raise RuntimeError(f"multi_head_attention_forward: expected query with embed_dim {embed_dim_to_check} "
                           f"(last dim), got {list(query.shape)}")
    if e % num_heads:
        raise RuntimeError(f"multi_head_attention_forward: embed_dim {e} is not divisible by num_heads {num_heads}")
    hd = e // num_heads
    if use_separate_proj_weight:
        ws = (q_proj_weight, k_proj_weight, v_proj_weight)
    else:
        ws = in_proj_weight.chunk(3, 0)
    bs = in_proj_bias.chunk(3, 0) if in_proj_bias is not None else (None, None, None)

    def proj(x, w, b):
        y = x @ w.t()
        return y + b if b is not None else y
    q, k, v = proj(query, ws[0], bs[0]), proj(key, ws[1], bs[1]), proj(value, ws[2], bs[2])
    # [L, N, E] -> [N, H, L, hd]
    q = q.reshape(lq, n, num_heads, hd).permute(1, 2, 0, 3)
    k = k.reshape(s, n, num_heads, hd).permute(1, 2, 0, 3)
    v = v.reshape(s, n, num_heads, hd).permute(1, 2, 0, 3)
    mask = None
    if is_causal and attn_mask is None and (need_weights or key_padding_mask is not None):
        attn_mask = _causal(lq, s, query.device)
    if attn_mask is not None:
        if attn_mask.ndim == 2:
            if tuple(attn_mask.shape) != (lq, s):
                raise RuntimeError(f"multi_head_attention_forward: the shape of the 2D attn_mask is "
                                   f"{list(attn_mask.shape)}, but should be {[lq, s]}")
            mask = _as_additive(attn_mask, q.dtype)
        elif attn_mask.ndim == 3:
            if tuple(attn_mask.shape) != (n * num_heads, lq, s):
                raise RuntimeError(f"multi_head_attention_forward: the shape of the 3D attn_mask is "
                                   f"{list(attn_mask.shape)}, but should be {[n * num_heads, lq, s]}")
            mask = _as_additive(attn_mask, q.dtype).reshape(n, num_heads, lq, s)
        else:
            raise RuntimeError(f"multi_head_attention_forward: attn_mask's dimension {attn_mask.ndim} is not "
                               f"supported (expected 2 or 3)")
    if key_padding_mask is not None:
        if tuple(key_padding_mask.shape) != (n, s):
            raise RuntimeError(f"multi_head_attention_forward: expected key_padding_mask of shape {[n, s]}, got "
                               f"{list(key_padding_mask.shape)}")
        kpm = _as_additive(key_padding_mask, q.dtype).reshape(n, 1, 1, s)
        mask = kpm if mask is None else mask + kpm
    if not need_weights:            # as PyTorch: through scaled_dot_product_attention (fused when it can be)
        ctx = scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p if training else 0.0,
                                           is_causal=is_causal and mask is None)
    else:
        scores = (q * (1.0 / math.sqrt(hd))) @ k.transpose(-2, -1)
        if mask is not None:
            scores = scores + mask
        attn = scores.softmax(-1)
        if training and dropout_p > 0.0:
            attn = _dropout(attn, dropout_p)
        ctx = attn @ v
    out = ctx.permute(2, 0, 1, 3).reshape(lq, n, e)
    out = out @ out_proj_weight.t()
    if out_proj_bias is not None:
        out = out + out_proj_bias
    weights = None
    if need_weights:
        weights = attn.mean(1) if average_attn_weights else attn
    if not batched:
        out = out.squeeze(1)
        weights = weights.squeeze(0) if weights is not None else None
    return out, weights


# ---- the fused primitive ----------------------------------------------------------------------------------
def _flash_ok(q: Tensor, k: Tensor, v: Tensor) -> bool:
    dev = q._storage.device.type
    return (q.ndim >= 3 and q.dtype is k.dtype is v.dtype and q.device == k.device == v.device
            and q.shape[-1] == v.shape[-1] and q.shape[-1] <= FLASH_MAX_HEAD_DIM
            and q.shape[:-2] == k.shape[:-2] == v.shape[:-2] and q.numel() > 0 and k.shape[-2] > 0
            and (("flash_attention", dev, q.dtype) in _dispatch.KERNELS))


def flash_attention(query: Tensor, key: Tensor, value: Tensor, scale: float, causal: bool = False) -> Tensor:
    """The fused primitive: ``softmax(q kᵀ · scale [causal]) v`` for ``[..., L, D]`` queries,
    ``[..., S, D]`` keys and values of one dtype (batch dims equal, not broadcast)."""
    lead = tuple(query.shape[:-2])
    lq, s, d = query.shape[-2], key.shape[-2], query.shape[-1]
    q, k, v = (t.reshape(-1, t.shape[-2], d).contiguous() for t in (query, key, value))
    dev = q._storage.device
    outs = [new_tensor(q.shape, q.dtype, dev), new_tensor(q.shape[:2], D.float32, dev)]
    params = {"scale": float(scale), "causal": bool(causal)}
    _dispatch.lookup("flash_attention", dev.type, q.dtype)(q, k, v, outs, params)
    if _dispatch.observers:
        _dispatch.notify("flash_attention", (q, k, v), tuple(outs), params)
    return outs[0].reshape(lead + (lq, d))


@_dispatch.defvjp("flash_attention", outputs=True)
def _flash_attention_vjp(g, node):
    q, k, v = node.inputs
    o, lse = node.outputs
    kernel = _dispatch.KERNELS.get(("flash_attention_backward", q._storage.device.type, q.dtype))
    if kernel is not None:
        dev = q._storage.device
        outs = [new_tensor(t.shape, t.dtype, dev) for t in (q, k, v)]
        kernel(g.contiguous(), q, k, v, o, lse, outs, node.params)
        if _dispatch.observers:
            _dispatch.notify("flash_attention_backward", (g, q, k, v, o, lse), tuple(outs), node.params)
        if not outs[0]._requires_grad:       # no graph is being built: the fused gradients are final
            return tuple(outs)
    return _flash_attention_composite_vjp(g, q, k, v, node.params)


def _flash_attention_composite_vjp(g, q, k, v, params):
    """With p = softmax(s), s = q kᵀ · scale: dv = pᵀ g, dp = g vᵀ, ds = p (dp - Σ dp p),
    dq = ds k · scale, dk = dsᵀ q · scale. Recomputes the scores (memory grows with L * S);
    used when building a graph (its ops are differentiable again) or without a fused kernel."""
    scale, causal = params["scale"], params["causal"]
    scores = (q * scale) @ k.transpose(-2, -1)
    if causal:
        scores = scores.masked_fill(_causal(q.shape[-2], k.shape[-2], q.device), -math.inf)
    p = scores.softmax(-1)
    dp = g @ v.transpose(-2, -1)
    ds = p * (dp - (dp * p).sum(-1, keepdim=True))
    return (ds @ k) * scale, (ds.transpose(-2, -1) @ q) * scale, p.transpose(-2, -1) @ g
