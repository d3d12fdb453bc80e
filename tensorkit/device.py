"""Devices: ``tk.device("cpu")``, ``tk.device("cuda:0")``.

A Device is a (type, index) pair; the CPU has no index, CUDA devices default to the
current one. This module knows nothing about the CUDA runtime (that is ``tensorkit.cuda``).
"""
from __future__ import annotations

_TYPES = ("cpu", "cuda")
_interned: dict = {}        # (type, index) -> device


class device:
    """A device, constructed from a string (``"cuda:1"``), a type and an index, or another device.

    Example::

        >>> tk.device("cuda:0")
        device(type='cuda', index=0)
    """

    __slots__ = ("type", "index")

    def __new__(cls, type_or_str, index: int | None = None):
        if isinstance(type_or_str, device):
            return type_or_str
        if isinstance(type_or_str, int) and index is None:   # a bare ordinal means CUDA
            type_or_str, index = "cuda", type_or_str
        if not isinstance(type_or_str, str):
            raise TypeError(f"device(): expected a string, an int or a device, got {type(type_or_str).__name__}")
        text = type_or_str.strip()
        if ":" in text:
            if index is not None:
                raise ValueError(f"device(): index given twice in device('{text}', {index})")
            text, _, idx = text.partition(":")
            if not idx.isdigit():
                raise ValueError(f"device(): invalid device string '{type_or_str}'; expected e.g. 'cpu', 'cuda' or 'cuda:0'")
            index = int(idx)
        if text not in _TYPES:
            raise ValueError(f"device(): unknown device type '{text}' in '{type_or_str}'; expected one of {', '.join(_TYPES)}")
        if text == "cpu" and index not in (None, 0):
            raise ValueError(f"device(): the cpu device has no index {index}")
        index = None if text == "cpu" else index
        self = _interned.get((text, index))
        if self is None:        # one object per device: ops compare devices by identity first
            self = _interned[(text, index)] = object.__new__(cls)
            object.__setattr__(self, "type", text)
            object.__setattr__(self, "index", index)
        return self

    def __setattr__(self, name, value):
        raise AttributeError("device objects are immutable")

    def __eq__(self, other) -> bool:
        if isinstance(other, str):
            other = device(other)
        return isinstance(other, device) and self.type == other.type and self.index == other.index

    def __hash__(self) -> int:
        return hash((self.type, self.index))

    def __repr__(self) -> str:
        if self.index is None:
            return f"device(type='{self.type}')"
        return f"device(type='{self.type}', index={self.index})"

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __reduce__(self):
        return (device, (str(self),))


CPU = device("cpu")
