"""``tk.nn.functional``: the functional forms of the layers (``linear``, ``relu``,
``cross_entropy``, ``conv2d``, ...), as PyTorch's ``torch.nn.functional``.

Most are composites over tensorkit ops: no kernels and no backward of their own, so they
run on every device and autograd differentiates them. Where a composite would make several
passes over memory, the function calls a fused primitive from ``ops/`` instead (convolution,
pooling, normalization, attention). Sections below are owned by the families named in their
headers.
"""
from __future__ import annotations

from .._tensor import Tensor  # noqa: F401


# ---- convolution and pooling (ops/conv.py, ops/pool.py)


# ---- normalization, attention, fused losses (ops/norm.py, ...)
# layer_norm / rms_norm and cross-entropy from class indices are fused primitives; group_norm and
# batch_norm are composites over reductions; attention is a composite (matmul + softmax).
# ``cross_entropy`` (the loss section's) can delegate to ``ops.norm.cross_entropy``: fused for
# class-index targets, with weight / ignore_index / label_smoothing / reduction.
from ..ops.attention import multi_head_attention_forward, scaled_dot_product_attention  # noqa: E402,F401
from ..ops.norm import batch_norm, group_norm, layer_norm, rms_norm  # noqa: E402,F401
