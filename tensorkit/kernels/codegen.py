"""The one pointwise codegen: expression DAGs of scalar bodies -> kernel source.

A pointwise primitive is a *scalar body* ``body(m, *args)`` written once with Python
operators and ``m.<fn>`` calls. Rendering a body with a backend's math namespace
(``NUMBA`` here, the Triton one in ``kernels/pointwise.py``) and ``Val`` proxies yields
the backend's expression text. A ``Program`` is a DAG of such nodes over inputs
(tensors or scalars); backends wrap the rendered statements in their loop scaffolding
(strides, broadcasting, blocks). Eager mode renders DAGs of one node; the JIT's fuser
renders many.

This module imports neither Triton nor Numba, and knows nothing about Tensor.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from dataclasses import dataclass, field

from .. import dtypes as D


class Val:
    """A typed expression text; Python operators on it build larger expressions."""

    __slots__ = ("text", "dtype", "m")

    def __init__(self, text: str, dtype: D.DType, m: "MathNamespace"):
        self.text, self.dtype, self.m = text, dtype, m

    def _other(self, x) -> "Val":
        return x if isinstance(x, Val) else self.m.const(x, self.dtype)

    def _bin(self, op, x, out_dtype=None, swap=False):
        x = self._other(x)
        a, b = (x, self) if swap else (self, x)
        return self.m.binary(op, a, b, out_dtype or self.dtype)

    def __add__(self, x): return self._bin("+", x)
    def __radd__(self, x): return self._bin("+", x, swap=True)
    def __sub__(self, x): return self._bin("-", x)
    def __rsub__(self, x): return self._bin("-", x, swap=True)
    def __mul__(self, x): return self._bin("*", x)
    def __rmul__(self, x): return self._bin("*", x, swap=True)
    def __truediv__(self, x): return self._bin("/", x)
    def __rtruediv__(self, x): return self._bin("/", x, swap=True)
    def __and__(self, x): return self._bin("&", x)
    def __or__(self, x): return self._bin("|", x)
    def __xor__(self, x): return self._bin("^", x)
    def __lt__(self, x): return self._bin("<", x, D.bool_)
    def __le__(self, x): return self._bin("<=", x, D.bool_)
    def __gt__(self, x): return self._bin(">", x, D.bool_)
    def __ge__(self, x): return self._bin(">=", x, D.bool_)
    def __eq__(self, x): return self._bin("==", x, D.bool_)   # type: ignore[override]
    def __ne__(self, x): return self._bin("!=", x, D.bool_)   # type: ignore[override]
    def __neg__(self): return Val(f"(-{self.text})", self.dtype, self.m)
    __hash__ = None  # type: ignore[assignment]


class MathNamespace:
    """Backend vocabulary used by scalar bodies. Subclasses render each function as text."""

    name = "abstract"

    def const(self, value, dtype: D.DType) -> Val:
        raise NotImplementedError

    def cast(self, x: Val, dtype: D.DType) -> Val:
        raise NotImplementedError

    def binary(self, op: str, a: Val, b: Val, dtype: D.DType) -> Val:
        """``a <op> b`` for a Python operator ``op``, the result of ``dtype``."""
        return Val(f"({a.text} {op} {b.text})", dtype, self)

    def call(self, fn: str, *args: Val, dtype: D.DType | None = None) -> Val:
        return Val(f"{fn}({', '.join(a.text for a in args)})", dtype or args[0].dtype, self)


@dataclass(frozen=True)
class Node:
    """One pointwise op in a Program: ``out = body(m, *args)`` computed in ``compute`` dtype,
    stored as ``dtype``. ``args`` index into the program's values (inputs first, then nodes)."""

    name: str
    body: object = field(compare=False, hash=False)
    args: tuple
    compute: D.DType
    dtype: D.DType


@dataclass(frozen=True, eq=False)     # identity hash: programs are cached and reused
class Program:
    """A pointwise DAG: ``inputs`` are ('tensor' | 'scalar', dtype); ``outputs`` index values."""

    inputs: tuple
    nodes: tuple
    outputs: tuple

    def key(self) -> str:
        parts = [f"{k}:{d.name}" for k, d in self.inputs]
        parts += [f"{n.name}({','.join(map(str, n.args))}):{n.compute.name}->{n.dtype.name}" for n in self.nodes]
        return ";".join(parts) + "=>" + ",".join(map(str, self.outputs))

    def value_dtype(self, i: int) -> D.DType:
        return self.inputs[i][1] if i < len(self.inputs) else self.nodes[i - len(self.inputs)].dtype


def render(program: Program, m: MathNamespace, loaded: list[str]) -> tuple[list[str], list[str]]:
    """Statements computing every node from already-loaded input expressions.

    ``loaded[i]`` is the expression for input i (a local variable or a load). Returns the
    statements and, per program output, the expression holding its value (in its dtype).
    """
    values = [Val(t, dt, m) for t, (_, dt) in zip(loaded, program.inputs)]
    lines = []
    for k, node in enumerate(program.nodes):
        args = [values[i] if values[i].dtype is node.compute else m.cast(values[i], node.compute)
                for i in node.args]
        out = node.body(m, *args)
        if not isinstance(out, Val):                      # a body returning a constant
            out = m.const(out, node.compute)
        if out.dtype is not node.dtype:
            out = m.cast(out, node.dtype)
        lines.append(f"v{k} = {out.text}")
        values.append(Val(f"v{k}", node.dtype, m))
    return lines, [values[i].text for i in program.outputs]


# ---- layout helpers shared by the backends' strided scaffolds -------------------------------------
def coalesce(shape, stride_lists):
    """Merge adjacent dims that are contiguous for every operand; drop size-1 dims. Returns the
    collapsed shape (at least one dim) and each operand's strides over it."""
    dims = [(s, [st[d] for st in stride_lists]) for d, s in enumerate(shape) if s != 1]
    if not dims:
        return [1], [[0] for _ in stride_lists]
    out_shape, out_strides = [dims[0][0]], [[v] for v in dims[0][1]]
    for size, sts in dims[1:]:
        if all(prev[-1] == st * size for prev, st in zip(out_strides, sts)):
            out_shape[-1] *= size
            for prev, st in zip(out_strides, sts):
                prev[-1] = st
        else:
            out_shape.append(size)
            for prev, st in zip(out_strides, sts):
                prev.append(st)
    return out_shape, out_strides


def broadcast_strides(shape, strides, out_shape):
    """Strides of an operand of ``shape`` broadcast to ``out_shape`` (0 along broadcast dims)."""
    lead = len(out_shape) - len(shape)
    return [0] * lead + [0 if s == 1 and o != 1 else st for s, st, o in zip(shape, strides, out_shape[lead:])]


def cache_dir(kind: str) -> str:
    """Directory for generated sources (``TENSORKIT_CACHE_DIR``, default ~/.cache/tensorkit)."""
    root = os.environ.get("TENSORKIT_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "tensorkit")
    path = os.path.join(root, kind)
    os.makedirs(path, exist_ok=True)
    return path


def load_source(source: str, kind: str):
    """Write ``source`` to a content-addressed file in the cache (once, atomically, so its
    timestamp stays stable for Numba's and Triton's caches) and import it as a module."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:24]
    name = f"tensorkit_gen_{kind}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    path = os.path.join(cache_dir(kind), f"{name}.py")
    if not os.path.exists(path):
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(source)
        os.replace(tmp, path)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
