"""Switches for how the backends compute, as in ``torch.backends``.

``tk.set_float32_matmul_precision`` / ``tk.get_float32_matmul_precision`` and
``tk.backends.cuda.matmul.allow_tf32`` are two views of one setting, linked as in PyTorch:
"highest" (the default) keeps float32 matrix products exact IEEE float32; "high" and "medium"
let them use TF32 tensor cores on the GPU (10-bit mantissa inputs, float32 accumulation:
several times faster, ~1e-3 relative error). Setting ``allow_tf32 = True`` makes the precision
read "high", ``False`` makes it "highest", and the reverse.

Kernels read the setting at each call; nothing here imports a kernel or Triton.
"""
from __future__ import annotations

_PRECISIONS = ("highest", "high", "medium")
_float32_matmul_precision = "highest"


def set_float32_matmul_precision(precision: str) -> None:
    """Set the internal precision of float32 matrix products (``torch.set_float32_matmul_precision``).

    Args:
        precision: "highest" (exact float32, the default), "high" or "medium" (TF32 tensor
            cores on the GPU; the CPU always computes in float32).

    Unlike PyTorch, which warns and ignores an unknown value, this raises ``ValueError``.
    PyTorch 2.9+ also refuses to report the precision after its legacy and new flags were
    mixed; here the two views simply stay linked.

    Example::

        >>> tk.set_float32_matmul_precision("high")
        >>> tk.backends.cuda.matmul.allow_tf32
        True
    """
    global _float32_matmul_precision
    if precision not in _PRECISIONS:
        raise ValueError(f"set_float32_matmul_precision: expected one of 'highest', 'high' or 'medium', "
                         f"got {precision!r}")
    _float32_matmul_precision = precision


def get_float32_matmul_precision() -> str:
    """The current float32 matmul precision: "highest", "high" or "medium"."""
    return _float32_matmul_precision


from . import cuda  # noqa: E402  (reads the functions above)
