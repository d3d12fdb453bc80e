"""Tensor printing: the text of ``repr(tensor)``, character for character as PyTorch writes it.

The rules are those of PyTorch's ``torch/_tensor_str.py``: one formatter per tensor picks fixed
or scientific notation and a common column width from the elements that will be shown, rows
wrap at ``linewidth``, and large tensors are summarized with ``...``. This module works on a
numpy array of the tensor's values and knows nothing about devices, dtypes or autograd beyond
the suffix strings the caller hands it; it must never import torch.
"""
import math

import numpy as np

_PROFILES = {
    "default": dict(precision=4, threshold=1000, edgeitems=3, linewidth=80),
    "short": dict(precision=2, threshold=1000, edgeitems=2, linewidth=80),
    "full": dict(precision=4, threshold=math.inf, edgeitems=3, linewidth=80),
}
_options = dict(_PROFILES["default"], sci_mode=None)


def set_printoptions(precision: int | None = None, threshold: float | None = None,
                     edgeitems: int | None = None, linewidth: int | None = None,
                     profile: str | None = None, sci_mode: bool | None = None) -> None:
    r"""Set options for printing tensors, as ``torch.set_printoptions`` does.

    Args:
        precision: digits after the decimal point (default 4).
        threshold: number of elements above which a tensor is summarized (default 1000).
        edgeitems: items shown at the start and end of each summarized dimension (default 3).
        linewidth: characters per line before a row wraps (default 80).
        profile: ``'default'``, ``'short'`` or ``'full'``; applied first, the other
            arguments override it.
        sci_mode: ``True``/``False`` forces scientific/fixed notation; ``None`` lets each
            tensor choose. Like PyTorch, every call sets it, so omitting it resets it to ``None``.

    Example::

        >>> set_printoptions(precision=2)
        >>> format_tensor(np.array([1.12345], np.float32), kind="float", dtype_suffix=None)
        'tensor([1.12])'
        >>> set_printoptions(profile="default")
    """
    if profile is not None:
        if profile not in _PROFILES:
            # PyTorch silently ignores an unknown profile; a typo deserves an error.
            raise ValueError(f"set_printoptions: profile must be one of {list(_PROFILES)}, "
                             f"got {profile!r}")
        _options.update(_PROFILES[profile])
    given = dict(precision=precision, threshold=threshold, edgeitems=edgeitems, linewidth=linewidth)
    _options.update({name: value for name, value in given.items() if value is not None})
    _options["sci_mode"] = sci_mode


def get_printoptions() -> dict:
    r"""Return the current print options as a dict that can be passed to :func:`set_printoptions`.

    Example::

        >>> get_printoptions()
        {'precision': 4, 'threshold': 1000, 'edgeitems': 3, 'linewidth': 80, 'sci_mode': None}
    """
    return dict(_options)


def format_tensor(values: np.ndarray, *, kind: str, dtype_suffix: str | None,
                  extras: list[str] = ()) -> str:
    r"""Return the repr of a tensor, exactly as PyTorch prints it.

    Args:
        values: the tensor's elements, shaped like the tensor (float16/bfloat16 already
            converted to float32, ints as numpy ints, bools as ``np.bool_``).
        kind: ``'float'``, ``'int'`` or ``'bool'``: how the elements are written.
        dtype_suffix: the dtype's name, e.g. ``'tk.float16'``, or ``None`` when PyTorch would
            leave it implied (the default float dtype, int64, bool).
        extras: further suffixes, already formatted (``"device='cuda:0'"``,
            ``"requires_grad=True"``, ``"grad_fn=<AddBackward0>"``).

    Returns:
        The text, e.g. ``"tensor([[1., 2.]], dtype=tk.float16)"``.

    Example::

        >>> format_tensor(np.array([[1, 2]], np.float32), kind="float", dtype_suffix="tk.float16")
        'tensor([[1., 2.]], dtype=tk.float16)'
    """
    prefix = "tensor("
    # PyTorch puts device= before size=/dtype= and everything else (grad_fn=, ...) after them.
    suffixes = [extra for extra in extras if extra.startswith("device=")]
    if values.size == 0:
        body = "[]"
        if values.ndim != 1:
            suffixes.append(f"size={values.shape}")
        # An empty tensor has no elements that show its dtype, so int64 and bool are named too.
        if dtype_suffix is not None or kind != "float":
            suffixes.append(f"dtype={dtype_suffix or 'tk.' + values.dtype.name}")
    else:
        summarize = values.size > _options["threshold"]
        if not _options["edgeitems"]:
            suffixes.append(f"size={values.shape}")
        if dtype_suffix is not None:
            suffixes.append(f"dtype={dtype_suffix}")
        formatter = _Formatter(_shown(values, summarize), kind)
        body = _body(values, len(prefix), summarize, formatter)
    suffixes += [extra for extra in extras if not extra.startswith("device=")]
    return _add_suffixes(prefix + body, suffixes, indent=len(prefix))


class _Formatter:
    """Writes every element of one tensor in a common notation, right-aligned to a common width.

    The notation and width come only from the elements that will be shown, and for floats
    only from the nonzero finite ones: nan, inf and 0 never switch a tensor to scientific mode.
    """

    def __init__(self, shown: np.ndarray, kind: str):
        self.kind, self.int_mode, self.sci_mode = kind, True, False
        if kind != "float":
            self.width = max((len(str(v)) for v in shown.ravel().tolist()), default=1)
            return
        nonzero = shown[np.isfinite(shown) & (shown != 0)].astype(np.float64)
        if nonzero.size:
            magnitude = np.abs(nonzero)
            low, high = float(magnitude.min()), float(magnitude.max())
            self.int_mode = bool(np.all(nonzero == np.ceil(nonzero)))
            self.sci_mode = (high / low > 1000.0 or high > 1.0e8 or low < 1.0e-4
                             if _options["sci_mode"] is None else _options["sci_mode"])
        self.width = max((len(self._text(v)) for v in nonzero.tolist()), default=1)

    def _text(self, value) -> str:
        precision = _options["precision"]
        if self.kind != "float":
            return str(value)
        if self.sci_mode:
            return f"{value:.{precision}e}"
        if self.int_mode:  # integer-valued floats print as "1." to show they are floats
            return f"{value:.0f}" + ("." if math.isfinite(value) else "")
        return f"{value:.{precision}f}"

    def __call__(self, value) -> str:
        return self._text(value).rjust(self.width)


def _kept(n: int, summarize: bool) -> list:
    """Indices shown along a dimension of length n, with None where '...' stands."""
    edge = _options["edgeitems"]
    if summarize and n > 2 * edge:
        return [*range(edge), None, *range(n - edge, n)]
    return list(range(n))


def _shown(values: np.ndarray, summarize: bool) -> np.ndarray:
    """The elements that will be printed; the formatter sees only these, as in PyTorch."""
    for axis, n in enumerate(values.shape):
        values = values.take([i for i in _kept(n, summarize) if i is not None], axis=axis)
    return values


def _body(values: np.ndarray, indent: int, summarize: bool, formatter: _Formatter) -> str:
    """The bracketed text of values whose first line starts at column indent."""
    if values.ndim == 0:
        return formatter(values.item())
    kept = _kept(values.shape[0], summarize)
    if values.ndim == 1:
        row = values.tolist()
        items = [" ..." if i is None else formatter(row[i]) for i in kept]
        if summarize and not _options["edgeitems"]:
            items = ["..."]  # PyTorch drops the leading space when nothing else is shown
        per_line = max(1, (_options["linewidth"] - indent) // (formatter.width + 2))
        lines = [", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
        return "[" + (",\n" + " " * (indent + 1)).join(lines) + "]"
    blocks = ["..." if i is None else _body(values[i], indent + 1, summarize, formatter)
              for i in kept]
    # Blocks of a d-dim tensor are separated by d - 2 blank lines.
    return "[" + ("," + "\n" * (values.ndim - 1) + " " * (indent + 1)).join(blocks) + "]"


def _add_suffixes(text: str, suffixes: list[str], indent: int) -> str:
    """Append ", suffix" items, starting a new line where one would pass linewidth."""
    # PyTorch counts the last line 2 characters longer than it is; copied so lines break alike.
    line_length = len(text) - text.rfind("\n") + 1
    for suffix in suffixes:
        if line_length + len(suffix) + 2 > _options["linewidth"]:
            text += ",\n" + " " * indent + suffix
            line_length = indent + len(suffix)
        else:
            text += ", " + suffix
            line_length += len(suffix) + 2
    return text + ")"
