"""``tk.backends.cuda``: switches of the CUDA backend (``torch.backends.cuda``)."""
from __future__ import annotations

from . import get_float32_matmul_precision, set_float32_matmul_precision


class _MatmulFlags:
    """``tk.backends.cuda.matmul``. ``allow_tf32`` (default False) lets float32 matrix
    products use TF32 tensor cores; it is linked to ``tk.set_float32_matmul_precision``
    (True reads as precision "high", False as "highest")."""

    __slots__ = ()

    @property
    def allow_tf32(self) -> bool:
        return get_float32_matmul_precision() != "highest"

    @allow_tf32.setter
    def allow_tf32(self, value: bool) -> None:
        set_float32_matmul_precision("high" if value else "highest")

    def __setattr__(self, name, value):
        if name != "allow_tf32":           # as PyTorch: a typo must not pass silently
            raise AttributeError(f"Unknown attribute {name}")
        object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        return f"tk.backends.cuda.matmul(allow_tf32={self.allow_tf32})"


matmul = _MatmulFlags()
