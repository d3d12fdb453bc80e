"""tk.einsum against numpy.einsum in float64 (and torch.einsum where torch imports).

einsum is a composite, so it has no op-table entry of its own shape: the equation parser,
the ellipsis/broadcast rules and the error messages are what these tests cover.
"""
import numpy as np
import pytest

import tensorkit as tk

# (equation, operand shapes); numpy.einsum in float64 is the reference
CASES = [
    ("ij,jk->ik", [(2, 3), (3, 4)]),                      # matmul
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),             # batched matmul
    ("bhqd,bhkd->bhqk", [(2, 3, 4, 5), (2, 3, 6, 5)]),    # attention scores
    ("ij->ji", [(2, 3)]),                                 # transpose
    ("ii", [(3, 3)]),                                     # trace
    ("ii->i", [(3, 3)]),                                  # diagonal
    ("ij->", [(2, 3)]),                                   # sum
    ("ij->j", [(2, 3)]),
    ("i,j->ij", [(2,), (3,)]),                            # outer
    ("i,i", [(4,), (4,)]),                                # dot
    ("ij,ij->ij", [(2, 3), (2, 3)]),                      # Hadamard
    ("ij,ij->", [(2, 3), (2, 3)]),
    ("bn,anm,bm->ba", [(2, 3), (4, 3, 5), (2, 5)]),       # bilinear
    ("...ij,...jk->...ik", [(2, 1, 3, 4), (5, 4, 2)]),    # broadcasting batch dims
    ("...ij,...jk", [(3, 2, 4), (4, 5)]),                 # implicit with ellipsis
    ("...ii->...i", [(2, 3, 3)]),                         # batched diagonal
    ("i...j->j...i", [(2, 3, 4, 5)]),                     # ellipsis in the middle
    ("...,...->...", [(2, 3), (3,)]),
    ("ij,jk", [(2, 3), (3, 4)]),                          # implicit mode
    ("ba", [(2, 3)]),                                     # implicit: alphabetical, so a transpose
    ("Ab,bC", [(2, 3), (3, 4)]),                          # upper case, implicit order
    ("aB,Bc->ca", [(2, 3), (3, 4)]),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)]),           # three operands
    ("ab,bc,cd", [(2, 3), (3, 4), (4, 2)]),
    ("ij,ij,ij->i", [(2, 3), (2, 3), (2, 3)]),
    ("ij,jk,ik->", [(2, 3), (3, 4), (2, 4)]),
    ("iij,jk->ik", [(3, 3, 2), (2, 4)]),                  # diagonal, then contraction
    ("ijk,ikl->jl", [(2, 3, 4), (2, 4, 5)]),              # batch letter contracted away
    ("ij,kl->", [(2, 3), (4, 5)]),                        # letters summed before contracting
    ("ij,jk->ik", [(2, 1), (3, 4)]),                      # a size-1 letter broadcasts
    ("bij,bjk->bik", [(1, 2, 3), (4, 3, 2)]),
    ("i j , j k -> i k", [(2, 3), (3, 4)]),               # spaces
    (",ij->ij", [(), (2, 3)]),                            # 0-d operand
    ("", [()]),
    ("ij,jk->ik", [(0, 3), (3, 4)]),                      # empty dims
    ("ij,jk->ik", [(2, 0), (0, 4)]),
    ("ij->", [(0, 3)]),
]


def _arrays(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32) for s in shapes]


def _assert_matches(got, want, rtol=1e-5, atol=1e-5):
    assert tuple(got.shape) == want.shape
    np.testing.assert_allclose(got.numpy(), want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("eq,shapes", CASES, ids=[f"{e!r}-{s}" for e, s in CASES])
def test_against_numpy(eq, shapes):
    arrays = _arrays(shapes)
    got = tk.einsum(eq, *[tk.from_numpy(a.copy()) for a in arrays])
    assert got.dtype is tk.float32
    _assert_matches(got, np.einsum(eq, *[a.astype(np.float64) for a in arrays]))


def test_operands_as_one_list():
    a, b = _arrays([(2, 3), (3, 4)])
    _assert_matches(tk.einsum("ij,jk->ik", [tk.from_numpy(a), tk.from_numpy(b)]), a.astype(np.float64) @ b)


def test_non_contiguous_operands_and_inputs_untouched():
    a, b = _arrays([(4, 3), (5, 4, 2)])
    ta, tb = tk.from_numpy(a.copy()), tk.from_numpy(b.copy())
    x, y = ta.T, tb.permute(1, 0, 2)[:, ::2]                  # (3, 4) and (4, 3, 2), both strided
    got = tk.einsum("ij,jbk->bik", x, y)
    _assert_matches(got, np.einsum("ij,jbk->bik", a.T.astype(np.float64), b.transpose(1, 0, 2)[:, ::2]))
    np.testing.assert_array_equal(ta.numpy(), a)
    np.testing.assert_array_equal(tb.numpy(), b)


def test_permutation_is_a_view():
    x = tk.from_numpy(np.arange(6, dtype=np.float32).reshape(2, 3))
    y = tk.einsum("ij->ji", x)
    x[0, 1] = 100.0
    assert y[1, 0].item() == 100.0


def test_ellipsis_dims_summed_when_the_output_omits_them():
    # numpy refuses '...ij->ij'; PyTorch sums the ellipsis dims
    (a,) = _arrays([(4, 2, 3)])
    _assert_matches(tk.einsum("...ij->ij", tk.from_numpy(a)), a.astype(np.float64).sum(0))


def test_integers_keep_their_dtype():
    rng = np.random.default_rng(1)
    a, b = rng.integers(-5, 5, (2, 3)).astype(np.int32), rng.integers(-5, 5, (3, 4)).astype(np.int32)
    got = tk.einsum("ij,jk->ik", tk.from_numpy(a), tk.from_numpy(b))
    assert got.dtype is tk.int32
    np.testing.assert_array_equal(got.numpy(), a.astype(np.int64) @ b)
    got = tk.einsum("ij,jk->", tk.from_numpy(a), tk.from_numpy(b))   # summed letters too (PyTorch: int64)
    assert got.dtype is tk.int32 and got.item() == int((a.astype(np.int64) @ b).sum())


@pytest.mark.parametrize("eq,shapes", [("ij,jk->ik", [(2, 3), (3, 4)]), ("i,j->ij", [(2,), (3,)])])
def test_mixed_dtypes_promote(eq, shapes):
    a, b = _arrays(shapes)
    got = tk.einsum(eq, tk.from_numpy(a), tk.from_numpy(b.astype(np.float64)))
    assert got.dtype is tk.float64
    _assert_matches(got, np.einsum(eq, a.astype(np.float64), b.astype(np.float64)), rtol=1e-12, atol=1e-12)


ERRORS = [
    ("ij,jk->ik", [(2, 3)], "has subscripts for 2 operand"),
    ("ij", [(2, 3), (3, 4)], "has subscripts for 1 operand"),
    ("ijk", [(2, 3)], r"number of subscripts \(3\) for operand 0 does not match .* no ellipsis"),
    ("i", [()], r"number of subscripts \(1\) for operand 0"),
    ("...ijk", [(2, 3)], r"number of subscripts \(3\) for operand 0"),
    ("ij,jk->ik", [(2, 3), (4, 5)], r"subscript j has size 4 for operand 1, which does not broadcast with size 3"),
    ("...i,...i", [(2, 3), (4, 3)], r"dimension 0 covered by the ellipsis has size 4 .* size 2"),
    ("ii", [(2, 3)], r"subscript i is repeated for operand 0 but the sizes don't match, 2 != 3"),
    ("ij#", [(2, 3)], r"invalid subscript '#' at index 2"),
    ("ij->i->j", [(2, 3)], r"invalid subscript '-' at index 5"),
    ("i1", [(2, 3)], r"invalid subscript '1'"),
    ("i.j", [(2, 3)], r"'\.' at index 1 .* not part of an ellipsis"),
    ("......", [(2, 3)], r"more than one ellipsis for operand 0"),
    ("ij->k", [(2, 3)], r"output subscript k does not appear in the equation"),
    ("ij->ii", [(2, 3)], r"output subscript i appears more than once"),
]


@pytest.mark.parametrize("eq,shapes,match", ERRORS, ids=[e for e, _, _ in ERRORS])
def test_errors(eq, shapes, match):
    with pytest.raises(RuntimeError, match=match):
        tk.einsum(eq, *[tk.zeros(s) for s in shapes])


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least one operand"):
        tk.einsum("->")
    with pytest.raises(TypeError, match="operand 1 must be a Tensor"):
        tk.einsum("i,i", tk.ones(3), [1.0, 2.0, 3.0])


# ---- parity with PyTorch ---------------------------------------------------------------------------

TORCH_ONLY = [("...ij->ij", [(4, 2, 3)]), ("ij,jk->ik", [(2, 1), (1, 4)]), ("ii->", [(1, 1)])]


@pytest.mark.parametrize("eq,shapes", CASES + TORCH_ONLY, ids=[f"{e!r}-{s}" for e, s in CASES + TORCH_ONLY])
def test_against_torch(eq, shapes):
    torch = pytest.importorskip("torch")
    arrays = _arrays(shapes, seed=2)
    want = torch.einsum(eq, *[torch.from_numpy(a) for a in arrays])
    got = tk.einsum(eq, *[tk.from_numpy(a) for a in arrays])
    assert got.dtype.name == str(want.dtype).removeprefix("torch.")
    _assert_matches(got, want.numpy())


@pytest.mark.parametrize("eq,shapes", [(e, s) for e, s, _ in ERRORS], ids=[e for e, _, _ in ERRORS])
def test_torch_rejects_the_same_equations(eq, shapes):
    torch = pytest.importorskip("torch")
    with pytest.raises(RuntimeError):
        torch.einsum(eq, *[torch.zeros(s) for s in shapes])
