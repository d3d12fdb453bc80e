"""Batch normalization: ``BatchNorm1d``, ``BatchNorm2d``.

Training normalizes with the batch's statistics and updates the running ones in place
(``running = (1 - momentum) * running + momentum * batch``, the batch variance unbiased, as
PyTorch; ``momentum=None``: the cumulative average over ``num_batches_tracked`` batches). Eval
normalizes with the running statistics. The math is ``nn.functional.batch_norm``.
"""
from __future__ import annotations

from ... import dtypes as D
from ...ops.creation import ones, tensor, zeros
from .. import functional as F
from ..parameter import Parameter
from .module import Module


class _BatchNorm(Module):
    _ranks: tuple = ()
    _layout: str = ""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = Parameter(ones(num_features, device=device, dtype=dtype))
            self.bias = Parameter(zeros(num_features, device=device, dtype=dtype))
        else:
            self.weight = self.bias = None
        if track_running_stats:
            self.register_buffer("running_mean", zeros(num_features, device=device, dtype=dtype))
            self.register_buffer("running_var", ones(num_features, device=device, dtype=dtype))
            self.register_buffer("num_batches_tracked", tensor(0, dtype=D.int64, device=device))
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def _check_input(self, input) -> None:
        if input.ndim not in self._ranks:
            raise ValueError(f"{type(self).__name__}: expected {' or '.join(f'{r}D' for r in self._ranks)} input "
                             f"{self._layout} (got {input.ndim}D input of shape {list(input.shape)})")
        if input.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}: expected input with {self.num_features} channels (dim 1), "
                             f"got shape {list(input.shape)}")

    def forward(self, input):
        self._check_input(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / int(self.num_batches_tracked.item()) if self.momentum is None else self.momentum
        use_batch = self.training or (self.running_mean is None and self.running_var is None)
        track = not self.training or self.track_running_stats
        return F.batch_norm(input, self.running_mean if track else None, self.running_var if track else None,
                            self.weight, self.bias, use_batch, factor, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch norm over ``[N, C]`` or ``[N, C, L]`` inputs, per channel C.

    Example::

        >>> bn = tk.nn.BatchNorm1d(4)
        >>> bn(tk.randn(8, 4)).shape
        tk.Size([8, 4])
    """

    _ranks = (2, 3)
    _layout = "[N, C] or [N, C, L]"


class BatchNorm2d(_BatchNorm):
    """Batch norm over ``[N, C, H, W]`` inputs, per channel C."""

    _ranks = (4,)
    _layout = "[N, C, H, W]"
