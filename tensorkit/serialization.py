"""``tk.save`` / ``tk.load``: tensors and nested structures in a file that loading cannot run.

The format is safetensors' (https://github.com/huggingface/safetensors), nothing more:

    8 bytes    N, the header length (unsigned, little-endian)
    N bytes    JSON: {"__metadata__": {str: str}, name: {"dtype": "F32", "shape": [..],
                                                     "data_offsets": [begin, end]}, ...}
    the rest   every tensor's elements, row-major, little-endian, at its offsets

The tensors of the saved object are its leaves. The object's structure (nested dict / list /
tuple, numbers, strings, None, and where each tensor goes) is JSON in the metadata entry
``tensorkit.structure``. A flat ``{str: Tensor}`` dict names each tensor by its key, so the
file is a plain ``.safetensors`` file that PyTorch, JAX, numpy or Rust read by key; and any
``.safetensors`` file, whoever wrote it, loads as a ``{name: Tensor}`` dict.

Loading parses JSON and copies bytes: it never unpickles, so it cannot run code. Whole Python
objects (an ``nn.Module``) go through cloudpickle only when asked (``tk.save(..., pickle=True)``
and ``tk.load(..., weights_only=False)``), and that load runs code from the file.

This module must not import torch.
"""
from __future__ import annotations

import builtins
import io
import json
import math
import os
import pickle as _pickle
import struct
import sys
import tempfile
from collections import OrderedDict
from typing import IO, Any, Callable, Union

import numpy as np

from . import dtypes as D
from ._tensor import Size, Tensor
from .device import device as Device

__all__ = ["save", "load", "SerializationError"]

FileLike = Union[str, os.PathLike, IO[bytes]]

_FORMAT_KEY = "tensorkit.format"            # metadata entries tensorkit writes
_STRUCTURE_KEY = "tensorkit.structure"
_FORMAT_VERSION = "1"

# safetensors' dtype names <-> ours (the names it defines that tensorkit has no dtype for, e.g.
# U16, F8_E4M3, C64, are refused by name on load)
_TO_ST = {D.float64: "F64", D.float32: "F32", D.float16: "F16", D.bfloat16: "BF16", D.int64: "I64",
          D.int32: "I32", D.int16: "I16", D.int8: "I8", D.uint8: "U8", D.bool_: "BOOL"}
_FROM_ST = {v: k for k, v in _TO_ST.items()}
_ST_NOT_SUPPORTED = ("U16", "U32", "U64", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2",
                     "C64", "C128")

_MAX_HEADER = 100 * 1024 * 1024             # safetensors' own limit on the JSON header
_CHUNK = 64 * 1024 * 1024                   # bytes per write/read call on large tensors


class SerializationError(RuntimeError):
    """A file ``tk.load`` cannot read (corrupt, truncated, or a format it refuses); the message
    names the file and what is wrong with it."""


# ---- save -----------------------------------------------------------------------------------------


def save(obj: Any, f: FileLike, *, pickle: builtins.bool = False) -> None:
    """Save ``obj`` to a path or a binary file object.

    ``obj`` is a tensor, or nested ``dict`` / ``list`` / ``tuple`` of tensors, Python numbers
    (including inf and nan), strings, ``None``, ``tk.dtype`` and ``tk.device``: a model's or an
    optimizer's ``state_dict``, a checkpoint dict. Dict keys are strings or ints (optimizer
    state is keyed by parameter index). The file is a ``.safetensors`` file; a flat
    ``{str: Tensor}`` dict is a plain one that other frameworks read by key
    (``safetensors.torch.load_file``).

    Each tensor is saved as a contiguous copy of its elements with its dtype, shape and device;
    ``requires_grad`` and autograd history are not saved (as PyTorch's ``state_dict``). Views of
    one storage are saved as separate tensors (shared storage is not preserved, unlike
    ``torch.save``); the *same* tensor object referenced twice is saved once and loads as one
    object.

    A write to a path is atomic: the data goes to a temporary file in the same directory, is
    flushed and fsync'ed, then renamed over the target, so a failure or a crash mid-save leaves
    the previous file intact. A file object is written from its current position (it need not
    be seekable) and left open.

    Args:
        obj: what to save.
        f: a path (``str`` / ``os.PathLike``) or a binary file object open for writing.
        pickle: save any Python object (e.g. a whole ``nn.Module``) with cloudpickle instead.
            Such a file loads only with ``tk.load(f, weights_only=False)``, which runs code
            from the file; prefer saving ``module.state_dict()``.

    Example::

        >>> tk.save(model.state_dict(), "model.safetensors")
        >>> model.load_state_dict(tk.load("model.safetensors"))
    """
    if pickle:
        import cloudpickle
        data = [cloudpickle.dumps(obj, protocol=_pickle.HIGHEST_PROTOCOL)]
    else:
        header, arrays = _encode(obj)
        data = [header, *arrays]
    if isinstance(f, (str, bytes, os.PathLike)):
        _write_atomic(os.fsdecode(f), data)
    else:
        for chunk in data:
            _write_bytes(f, chunk)
        if hasattr(f, "flush"):
            f.flush()


def _encode(obj) -> tuple:
    """(8-byte length + JSON header, [little-endian bytes of each tensor]) of ``obj``."""
    entries, arrays, names, by_id = {}, [], set(), {}
    offset = 0

    def leaf(t: Tensor, path: tuple) -> dict:
        nonlocal offset
        name = by_id.get(id(t))
        if name is None:
            name = _unique_name(".".join(map(str, path)) or "tensor", names)
            a = np.ascontiguousarray(t.detach()._host())
            if sys.byteorder == "big":
                a = a.byteswap()
            raw = a.reshape(-1).view(np.uint8)
            entries[name] = {"dtype": _TO_ST[t.dtype], "shape": list(t.shape),
                             "data_offsets": [offset, offset + raw.nbytes]}
            offset += raw.nbytes
            arrays.append(raw)
            by_id[id(t)] = name
        return {"tensor": name, "device": str(t.device)}

    def enc(x, path: tuple):
        if isinstance(x, Tensor):
            return leaf(x, path)
        if x is None or isinstance(x, (builtins.bool, str)):
            return x
        if isinstance(x, (builtins.int, np.integer)) and not isinstance(x, np.bool_):
            return builtins.int(x)
        if isinstance(x, np.bool_):
            return builtins.bool(x)
        if isinstance(x, (builtins.float, np.floating)):
            x = builtins.float(x)       # float32/float16 scalars widen exactly
            return x if math.isfinite(x) else {"float": repr(x)}   # 'inf', '-inf', 'nan': not JSON numbers
        if isinstance(x, D.DType):
            return {"dtype": x.name}
        if isinstance(x, Device):
            return {"device": str(x)}
        if isinstance(x, Size):
            return {"size": list(x)}
        if isinstance(x, (list, tuple)) and type(x) in (list, tuple):
            items = [enc(v, path + (i,)) for i, v in enumerate(x)]
            return items if type(x) is list else {"tuple": items}
        if isinstance(x, dict) and type(x) in (dict, OrderedDict):
            pairs = []
            for k, v in x.items():
                if isinstance(k, builtins.bool) or not isinstance(k, (str, builtins.int)):
                    raise TypeError(f"tk.save: dict key {k!r} at {_where(path)} is a {type(k).__name__}; the safe "
                                    "format takes str or int keys (pass pickle=True to save arbitrary objects)")
                pairs.append([k, enc(v, path + (k,))])
            return {"odict" if type(x) is OrderedDict else "dict": pairs}
        raise TypeError(
            f"tk.save: can't save {type(x).__qualname__} at {_where(path)} in the safe format, which holds tensors, "
            "numbers, strings, None and dict/list/tuple of them. Save a module's or an optimizer's .state_dict() "
            "instead, or pass pickle=True to save the whole object with cloudpickle (loading that file needs "
            "tk.load(..., weights_only=False), which runs code from the file).")

    structure = enc(obj, ())
    metadata = {_FORMAT_KEY: _FORMAT_VERSION, _STRUCTURE_KEY: json.dumps(structure, separators=(",", ":"))}
    text = json.dumps({"__metadata__": metadata, **entries}, separators=(",", ":"), allow_nan=False)
    raw = text.encode("utf-8")
    raw += b" " * (-len(raw) % 8)           # pad, as safetensors does, so the data starts 8-aligned
    return struct.pack("<Q", len(raw)) + raw, arrays


def _unique_name(name: str, taken: set) -> str:
    base, n = name, 1
    while name in taken or name == "__metadata__":
        name, n = f"{base}#{n}", n + 1
    taken.add(name)
    return name


def _where(path: tuple) -> str:
    return "the top level" if not path else "key " + "".join(f"[{p!r}]" for p in path)


def _write_bytes(f, data) -> None:
    """Write all of ``data`` (bytes or a uint8 array) to ``f``, in chunks (one write call per
    chunk; some file objects write only part of what they are given)."""
    view = memoryview(data).cast("B")
    for start in range(0, len(view), _CHUNK):
        chunk = view[start:start + _CHUNK]
        while len(chunk):
            n = f.write(chunk)
            if n is None:               # unbuffered raw file objects may return None: assume all written
                break
            chunk = chunk[n:]


def _write_atomic(path: str, data: list) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in data:
                _write_bytes(f, chunk)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _new_file_mode(path))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:                                # make the rename itself durable (POSIX); best effort
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def _new_file_mode(path: str) -> int:
    # mkstemp makes 0600 files; give the file the mode an ordinary open() would (or keep the old one's)
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


# ---- load -----------------------------------------------------------------------------------------

MapLocation = Union[None, str, Device, dict, Callable]


def load(f: FileLike, map_location: MapLocation = None, *, weights_only: builtins.bool = True) -> Any:
    """Load what :func:`save` saved, or any ``.safetensors`` file.

    A file written by ``tk.save`` comes back as the object that was saved (dicts, lists, tuples,
    numbers, strings, None; tensors on the device they were saved from, ``requires_grad=False``).
    Any other ``.safetensors`` file (e.g. from PyTorch's ``safetensors.torch.save_file``) loads
    as a ``{name: Tensor}`` dict on the CPU, so pretrained weights move in by state-dict key.

    With ``weights_only=True`` (the default) loading only parses JSON and copies bytes, so it
    cannot run code. A pickle file (including PyTorch's ``torch.save`` zip archives) is refused
    without being unpickled.

    Args:
        f: a path or a binary file object open for reading.
        map_location: where tensors go, as in ``torch.load``: ``None`` (the device each was
            saved from), a device or a string (``"cpu"``, ``"cuda:0"``) for all of them, a dict
            mapping saved locations to new ones (``{"cuda:1": "cuda:0"}``; others stay), or a
            callable ``fn(tensor, location)`` given each tensor on the CPU and the string of its
            saved device, returning a tensor, a device, or ``None`` for the saved device.
        weights_only: ``False`` also loads files saved with ``tk.save(..., pickle=True)`` (or
            any pickle) through cloudpickle. **That runs code from the file**: use it only on
            files you trust. PyTorch's zip archives cannot be read either way.

    Raises:
        SerializationError: the file is truncated, corrupt, not a safetensors file, or a pickle
            refused by ``weights_only=True``; the message names the file and the problem.

    Example::

        >>> sd = tk.load("model.safetensors", map_location="cpu")
        >>> model.load_state_dict(sd)
    """
    if isinstance(f, (str, bytes, os.PathLike)):
        name = os.fsdecode(f)
        with open(f, "rb") as fh:
            return _load(fh, name, map_location, weights_only)
    name = getattr(f, "name", None)
    name = repr(name) if isinstance(name, str) else repr(f)
    if not _seekable(f):                # we need the file's size to check offsets against it
        f = io.BytesIO(f.read())
    return _load(f, name, map_location, weights_only)


def _seekable(f) -> builtins.bool:
    try:
        return f.seekable()
    except (AttributeError, ValueError, OSError):
        return False


def _load(f, name: str, map_location, weights_only: builtins.bool):
    start = f.tell()
    size = f.seek(0, io.SEEK_END) - start
    f.seek(start)
    head = f.read(9)

    def fail(what: str):
        raise SerializationError(f"tk.load: {name}: {what}")

    n = struct.unpack("<Q", head[:8])[0] if len(head) >= 8 else None
    looks_safetensors = n is not None and n <= size - 8 and head[8:9] == b"{"
    if not looks_safetensors:
        kind = _foreign_kind(head)
        if kind == "zip":
            fail("this is a zip archive (PyTorch's torch.save format, which pickles objects), not a safetensors "
                 "file. tensorkit does not read it, and refuses to unpickle it. In PyTorch, load it with "
                 "torch.load(path, weights_only=True) and write the state_dict with safetensors.torch.save_file; "
                 "tk.load reads that file.")
        if kind is not None:
            if weights_only:
                fail(f"this is a {kind}, not a safetensors file; refused without unpickling it, since unpickling "
                     "can run arbitrary code. weights_only=False would unpickle it and run code from the file: "
                     "pass it only for a file you trust.")
            import cloudpickle  # noqa: F401  (registers what cloudpickle-saved objects need)
            f.seek(start)
            return _pickle.load(f)
        if size == 0:
            fail("the file is empty")
        if n is None:
            fail(f"truncated: {size} bytes, but a safetensors file starts with an 8-byte header length")
        if n > size - 8:
            fail(f"header length {n} is beyond the file size ({size} bytes): the file is truncated, "
                 "or not a safetensors file")
        fail("the header does not start with '{': not a safetensors file")
    if n > _MAX_HEADER:
        fail(f"header length {n} exceeds safetensors' limit of {_MAX_HEADER} bytes")

    raw = head[8:] + f.read(n - 1)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        fail(f"the header is not valid JSON ({type(e).__name__}: {e})")
    if not isinstance(header, dict):
        fail(f"the header is a JSON {type(header).__name__}, expected an object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        fail("__metadata__ must be an object of strings")
    specs = _check_specs(header, size - 8 - n, fail)

    # Read the tensors in file order, one buffer each (np.empty: the tensor owns it afterwards).
    tensors, pos = {}, 0
    for key, dtype, shape, begin, end in sorted(specs, key=lambda s: s[3]):
        if begin > pos:
            f.read(begin - pos)
        buf = np.empty(end - begin, np.uint8)
        if _read_into(f, buf) != buf.nbytes:
            fail(f"truncated while reading tensor {key!r}")
        pos = end
        if dtype is D.bool_:
            buf = buf != 0              # a foreign file's bools may be any nonzero byte
        a = buf.view(dtype.numpy).reshape(shape)
        if sys.byteorder == "big":
            a = a.byteswap()
        tensors[key] = a

    structure = metadata.get(_STRUCTURE_KEY) if metadata.get(_FORMAT_KEY) else None
    if structure is None:               # a plain safetensors file: its tensors by name, in header order
        return {s[0]: _place(tensors[s[0]], "cpu", map_location, name) for s in specs}
    try:
        structure = json.loads(structure)
    except (json.JSONDecodeError, RecursionError) as e:
        fail(f"the {_STRUCTURE_KEY} metadata is not valid JSON ({type(e).__name__}: {e})")
    return _decode(structure, tensors, map_location, name, fail)


def _foreign_kind(head: bytes):
    """What a file that is not safetensors is, by its magic bytes (or None)."""
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if len(head) >= 2 and head[0] == 0x80 and head[1] <= 5:
        return f"pickle file (protocol {head[1]})"
    return None


def _check_specs(header: dict, data_size: int, fail) -> list:
    """[(name, dtype, shape, begin, end)] of the header's tensors, each checked."""
    specs = []
    for key, spec in header.items():
        if not isinstance(spec, dict) or not {"dtype", "shape", "data_offsets"} <= spec.keys():
            fail(f"tensor {key!r}: expected an object with dtype, shape and data_offsets, got {spec!r:.200}")
        st, shape, offs = spec["dtype"], spec["shape"], spec["data_offsets"]
        if st not in _FROM_ST:
            what = "is not supported by tensorkit" if st in _ST_NOT_SUPPORTED else "is unknown"
            fail(f"tensor {key!r}: dtype {st!r} {what}; supported: {', '.join(_FROM_ST)}")
        if (not isinstance(shape, list)
                or not all(type(s) is builtins.int and s >= 0 for s in shape)):
            fail(f"tensor {key!r}: shape must be a list of non-negative ints, got {shape!r:.200}")
        if (not isinstance(offs, list) or len(offs) != 2
                or not all(type(o) is builtins.int for o in offs) or not 0 <= offs[0] <= offs[1]):
            fail(f"tensor {key!r}: data_offsets must be [begin, end] with 0 <= begin <= end, got {offs!r:.200}")
        dtype = _FROM_ST[st]
        begin, end = offs
        expected = math.prod(shape) * dtype.itemsize
        if end - begin != expected:
            fail(f"tensor {key!r}: size mismatch: shape {shape} of {st} needs {expected} bytes, "
                 f"but data_offsets [{begin}, {end}] hold {end - begin}")
        if end > data_size:
            fail(f"tensor {key!r}: data_offsets [{begin}, {end}] are out of range: the data section holds "
                 f"{data_size} bytes (the file is truncated or corrupt)")
        specs.append((key, dtype, tuple(shape), begin, end))
    prev = None
    for s in sorted(specs, key=lambda s: (s[3], s[4])):
        if prev is not None and s[3] < prev[4]:
            fail(f"tensors {prev[0]!r} [{prev[3]}, {prev[4]}] and {s[0]!r} [{s[3]}, {s[4]}] overlap")
        if s[4] > s[3] or prev is None:
            prev = s
    return specs


def _read_into(f, buf: np.ndarray) -> builtins.int:
    view, got = memoryview(buf), 0
    while got < len(view):
        if hasattr(f, "readinto"):
            n = f.readinto(view[got:got + _CHUNK])
        else:
            data = f.read(min(_CHUNK, len(view) - got))
            n = len(data)
            view[got:got + n] = data
        if not n:
            break
        got += n
    return got


def _decode(structure, arrays: dict, map_location, name: str, fail):
    made = {}                           # one Tensor per saved tensor, however often it is referenced

    def dec(x):
        if x is None or isinstance(x, (builtins.bool, builtins.int, builtins.float, str)):
            return x
        if isinstance(x, list):
            return [dec(v) for v in x]
        if not isinstance(x, dict) or len(x) not in (1, 2):
            fail(f"unexpected entry {x!r:.200} in the {_STRUCTURE_KEY} metadata")
        if "tensor" in x:
            key = x["tensor"]
            if key not in arrays:
                fail(f"the {_STRUCTURE_KEY} metadata refers to tensor {key!r}, which the file does not hold")
            if key not in made:
                made[key] = _place(arrays[key], x.get("device", "cpu"), map_location, name)
            return made[key]
        (tag, v), = x.items()
        if tag == "tuple":
            return tuple(dec(i) for i in v)
        if tag in ("dict", "odict"):
            d = OrderedDict() if tag == "odict" else {}
            for k, item in v:
                d[k] = dec(item)
            return d
        if tag == "float":
            return builtins.float(v)
        if tag == "dtype":
            return D.to_dtype(v)
        if tag == "device":
            return Device(v)
        if tag == "size":
            return Size(v)
        fail(f"unknown entry {tag!r} in the {_STRUCTURE_KEY} metadata (written by a newer tensorkit?)")

    try:
        return dec(structure)
    except (TypeError, ValueError, KeyError, RecursionError) as e:
        fail(f"malformed {_STRUCTURE_KEY} metadata ({e})")


def _place(a: np.ndarray, location: str, map_location, name: str) -> Tensor:
    """The host array ``a`` as a tensor on the device ``map_location`` picks for ``location``."""
    from .ops.creation import from_numpy
    t = from_numpy(a)
    target = location
    if callable(map_location) and not isinstance(map_location, (str, Device)):
        out = map_location(t, location)
        if isinstance(out, Tensor):
            return out
        if out is not None:
            target = out
    elif isinstance(map_location, dict):
        target = map_location.get(location, location)
    elif map_location is not None:
        target = map_location
    target = Device(target)
    if target.type == "cpu":
        return t
    from . import cuda
    if not cuda.is_available():
        raise SerializationError(
            f"tk.load: {name}: a tensor saved on {location} goes to {target}, but CUDA is not available; "
            "pass map_location='cpu' to load it on the CPU")
    return t.to(target)
