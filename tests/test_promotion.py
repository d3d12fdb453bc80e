"""Type promotion matches PyTorch's, for every pair of dtypes and every operand kind.

Dimensioned operands are empty (shape (0,)), so the result dtype is computed by the meta rule
with no kernel compiled; 0-d operands have one element. Values are covered by test_ops.
"""
from __future__ import annotations

import itertools

import pytest

import tensorkit as tk
from tensorkit import dtypes as D

torch = pytest.importorskip("torch")

DTYPES = D.ALL_DTYPES
OPS = {"add": lambda a, b: a + b, "mul": lambda a, b: a * b, "div": lambda a, b: a / b}
SCALARS = [3, 2.5, True]


def _tk(dtype, shape):
    return tk.zeros(shape, dtype=dtype)


def _torch(dtype, shape):
    return torch.zeros(shape, dtype=getattr(torch, dtype.name))


def _name(t) -> str:
    return str(t).replace("torch.", "").replace("tk.", "")


def _same_outcome(tk_fn, torch_fn):
    """tensorkit's result dtype equals torch's, or both raise."""
    try:
        expected = _name(torch_fn().dtype)
    except RuntimeError:
        with pytest.raises((RuntimeError, TypeError)):
            tk_fn()
        return
    assert _name(tk_fn().dtype) == expected


@pytest.mark.parametrize("a,b", list(itertools.product(DTYPES, DTYPES)), ids=lambda d: d.name)
def test_tensor_pairs(a, b):
    assert _name(tk.promote_types(a, b)) == _name(torch.promote_types(getattr(torch, a.name), getattr(torch, b.name)))
    for shape_a, shape_b in [((0,), (0,)), ((0,), ()), ((), (0,))]:
        x, y = _tk(a, shape_a), _tk(b, shape_b)
        tx, ty = _torch(a, shape_a), _torch(b, shape_b)
        assert _name(tk.result_type(x, y)) == _name(torch.result_type(tx, ty)), (shape_a, shape_b)
        for name, op in OPS.items():
            _same_outcome(lambda: op(x, y), lambda: op(tx, ty))


@pytest.mark.parametrize("a,b", list(itertools.product(DTYPES, DTYPES)), ids=lambda d: d.name)
def test_zero_dim_pairs(a, b):
    # 0-d with 0-d: both in the same priority group
    x, y = _tk(a, ()), _tk(b, ())
    tx, ty = _torch(a, ()), _torch(b, ())
    assert _name(tk.result_type(x, y)) == _name(torch.result_type(tx, ty))


@pytest.mark.parametrize("scalar", SCALARS, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("shape", [(0,), ()], ids=["dim", "0-d"])
def test_tensor_with_python_scalar(dtype, scalar, shape):
    x, tx = _tk(dtype, shape), _torch(dtype, shape)
    assert _name(tk.result_type(x, scalar)) == _name(torch.result_type(tx, scalar))
    for name, op in OPS.items():
        _same_outcome(lambda: op(x, scalar), lambda: op(tx, scalar))
        _same_outcome(lambda: op(scalar, x), lambda: op(scalar, tx))


def test_python_scalars_follow_default_dtype():
    x = tk.zeros(2, dtype=tk.int32)
    old = tk.get_default_dtype()
    try:
        tk.set_default_dtype(tk.float64)
        assert (x + 2.5).dtype is tk.float64
        assert (x / 2).dtype is tk.float64
    finally:
        tk.set_default_dtype(old)
    assert (x + 2.5).dtype is old


@pytest.mark.parametrize("a,b", list(itertools.product(DTYPES, DTYPES)), ids=lambda d: d.name)
def test_inplace_refuses_what_torch_refuses(a, b):
    x, y = _tk(a, (0,)), _tk(b, (0,))
    tx, ty = _torch(a, (0,)), _torch(b, (0,))
    for name in ("add_", "mul_", "div_"):
        try:
            getattr(tx, name)(ty)
        except RuntimeError:
            with pytest.raises(RuntimeError, match="can't be cast to the desired output type"):
                getattr(x, name)(y)
            continue
        assert getattr(x, name)(y) is x
        assert x.dtype is a


def test_inplace_int_with_float_scalar_raises():
    x = tk.zeros(3, dtype=tk.int64)
    with pytest.raises(RuntimeError, match=r"result type tk\.float32 can't be cast to the desired output type tk\.int64"):
        x.add_(1.5)
    with pytest.raises(RuntimeError, match="can't be cast"):
        x.div_(2)
    with pytest.raises(RuntimeError, match="can't be cast"):
        x += 0.5
    assert x.tolist() == [0, 0, 0], "a refused in-place op must leave its input alone"


@pytest.mark.parametrize("dtype", D.INTEGER_DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("op", ["floor_divide", "remainder", "fmod", "div_floor", "div_trunc"])
def test_integer_division_by_zero_raises(op, dtype):
    fn = {"div_floor": lambda a, b: tk.div(a, b, rounding_mode="floor"),
          "div_trunc": lambda a, b: tk.div(a, b, rounding_mode="trunc")}.get(op, getattr(tk, op, None))
    x = tk.tensor([4, 5, 6], dtype=dtype)
    with pytest.raises(ZeroDivisionError):
        fn(x, 0)
    with pytest.raises(ZeroDivisionError):
        fn(x, tk.tensor([1, 0, 2], dtype=dtype))


def test_float_division_by_zero_is_inf():
    r = tk.tensor([1.0, -1.0, 0.0]) / 0
    assert r.tolist()[:2] == [float("inf"), float("-inf")]
    assert r.isnan().tolist() == [False, False, True]
    assert (tk.tensor([1, 0]) / 0).isnan().tolist() == [False, True]    # true division of ints: floats
