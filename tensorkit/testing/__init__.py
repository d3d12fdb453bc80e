"""Testing support: the op table (``opinfo``), result comparison (``compare``) and the list
of devices the generic tests run on. Also usable to check users' own ops.

Nothing here imports torch; tests compare with it where it is installed.
"""
from __future__ import annotations

from .compare import assert_close, tolerance
from .opinfo import ErrorInput, OpInfo, SampleInput, make_tensor, noncontiguous, op_db

__all__ = ["devices", "assert_close", "tolerance", "OpInfo", "SampleInput", "ErrorInput", "op_db", "make_tensor",
           "noncontiguous"]


def devices() -> list[str]:
    """Device types the generic tests run on: 'cpu', plus 'cuda' when a (real or emulated)
    CUDA backend is available."""
    out = ["cpu"]
    try:
        from .. import cuda
    except ImportError:
        return out
    if getattr(cuda, "is_available", lambda: False)():
        out.append("cuda")
    return out
