"""Flattening parameters into one vector and back (as ``torch.nn.utils``)."""
from __future__ import annotations

from typing import Iterable

from ..._tensor import Tensor
from ...ops import shape as _S
from ..modules.module import _set_data


def _check_device(p: Tensor, device):
    if device is None:
        return p.device
    if p.device != device:
        raise TypeError(f"Found two parameters on different devices, this is currently not supported "
                        f"({device} and {p.device})")
    return device


def parameters_to_vector(parameters: Iterable[Tensor]) -> Tensor:
    """All parameters flattened and concatenated into one 1-D tensor (differentiable)."""
    device, flat = None, []
    for p in parameters:
        device = _check_device(p, device)
        flat.append(p.reshape(-1))
    return _S.cat(flat)


def vector_to_parameters(vec: Tensor, parameters: Iterable[Tensor]) -> None:
    """Make each parameter a view of its slice of ``vec`` (in order), as PyTorch's
    ``param.data = vec[...]``: the parameters then share ``vec``'s memory."""
    if not isinstance(vec, Tensor):
        raise TypeError(f"expected tk.Tensor, but got: {type(vec).__name__}")
    device, pointer = None, 0
    params = list(parameters)
    total = sum(p.numel() for p in params)
    if vec.ndim != 1 or vec.numel() != total:
        raise RuntimeError(f"vector_to_parameters: expected a 1-D vector of {total} elements (the parameters' "
                           f"total), got shape {list(vec.shape)}")
    for p in params:
        device = _check_device(p, device)
        n = p.numel()
        _set_data(p, vec.detach()[pointer:pointer + n].view(p.shape))
        pointer += n
