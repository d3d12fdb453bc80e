"""tensorkit._printing against PyTorch's own repr: every case builds a torch tensor, prints it with
PyTorch, and checks that format_tensor writes the same text from the tensor's numpy values."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tensorkit._printing import format_tensor, get_printoptions, set_printoptions

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _default_options():
    yield
    torch.set_printoptions(profile="default")
    set_printoptions(profile="default")


def _both(**options):
    torch.set_printoptions(**options)
    set_printoptions(**options)


def _check(t, extras=()):
    """format_tensor on t's values must give repr(t).

    The dtype is passed as PyTorch spells it ("torch.int32"), since the length of that text
    decides where lines break; only the dtype an empty tensor names itself is written "tk.".
    """
    values = (t.float() if t.dtype in (torch.float16, torch.bfloat16) else t).detach().numpy()
    kind = "float" if t.dtype.is_floating_point else "bool" if t.dtype == torch.bool else "int"
    implied = t.dtype in (torch.get_default_dtype(), torch.int64, torch.bool)
    dtype_suffix = None if implied else str(t.dtype)
    text = format_tensor(values, kind=kind, dtype_suffix=dtype_suffix, extras=list(extras))
    assert text.replace("dtype=tk.", "dtype=torch.") == repr(t)


def _randn(*shape, scale=1.0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(sum(shape) + len(shape))
    return (torch.randn(*shape, generator=generator, dtype=torch.float64) * scale).to(dtype)


def _ones_around(middle):
    return torch.cat([torch.ones(3), middle, torch.ones(3)])


CASES = {
    # floats, fixed notation
    "fixed": lambda: torch.tensor([1.5, -2.25, 3.125]),
    "integer_valued": lambda: torch.tensor([[1.0, 2.0], [-30.0, 4.0]]),
    "integer_valued_large": lambda: torch.tensor([1.0, 1000.0, 99999.0]),
    "rounding": lambda: torch.tensor([0.00015, 0.99999, 2.5]),
    "randn_2d": lambda: _randn(4, 5),
    "all_zero": lambda: torch.zeros(2, 3),
    "negative_zero": lambda: torch.tensor([1.0, -0.0, 2.0]),
    "only_zeros_signed": lambda: torch.tensor([0.0, -0.0]),
    "nonfinite": lambda: torch.tensor([float("nan"), float("inf"), -float("inf"), 1.5]),
    "nonfinite_int_valued": lambda: torch.tensor([float("nan"), -float("inf"), 2.0]),
    "only_nonfinite": lambda: torch.tensor([float("nan"), float("inf")]),
    "float64": lambda: torch.tensor([1.0 / 3, 2.0], dtype=torch.float64),
    "float16": lambda: torch.tensor([0.1, 65504.0, -3.0], dtype=torch.float16),
    "float16_fraction": lambda: torch.tensor([[0.1, 0.2], [0.3, 1.7]], dtype=torch.float16),
    "bfloat16": lambda: torch.tensor([1.0, 3.14159, -2.0], dtype=torch.bfloat16),
    # floats, scientific notation: large ratio, large, small magnitudes
    "sci_ratio": lambda: torch.tensor([1.0, 1001.0]),
    "sci_large": lambda: torch.tensor([1.0e9, 2.0e9]),
    "sci_small": lambda: torch.tensor([1.0e-5, 3.0e-5]),
    "sci_with_nonfinite": lambda: torch.tensor([1.0e-8, float("nan"), -float("inf"), 0.0]),
    "sci_randn": lambda: _randn(3, 4, scale=1.0e6),
    "sci_float16": lambda: torch.tensor([6.0e-5, 1.0e4], dtype=torch.float16),
    "sci_huge_float64": lambda: torch.tensor([1.0e300, -1.0e-300], dtype=torch.float64),
    # ints and bools
    "ints": lambda: torch.tensor([1, -20, 300]),
    "ints_2d": lambda: torch.tensor([[1, -2], [300, 4]]),
    "int32": lambda: torch.tensor([1, 2], dtype=torch.int32),
    "uint8": lambda: torch.tensor([[0, 255]], dtype=torch.uint8),
    "int64_extremes": lambda: torch.tensor([-(2**63), 2**63 - 1]),
    "bools": lambda: torch.tensor([True, False, True]),
    "bools_2d": lambda: torch.tensor([[True], [False]]),
    # 0-d
    "scalar_float": lambda: torch.tensor(3.5),
    "scalar_int_valued": lambda: torch.tensor(3.0),
    "scalar_sci": lambda: torch.tensor(1.0e-7),
    "scalar_nan": lambda: torch.tensor(float("nan")),
    "scalar_int": lambda: torch.tensor(-7),
    "scalar_bool": lambda: torch.tensor(True),
    "scalar_float16": lambda: torch.tensor(2.5, dtype=torch.float16),
    # empty
    "empty_1d": lambda: torch.tensor([]),
    "empty_2d": lambda: torch.zeros(0, 3),
    "empty_3d": lambda: torch.zeros(2, 0, 4),
    "empty_int": lambda: torch.zeros(0, dtype=torch.int64),
    "empty_int_2d": lambda: torch.zeros(3, 0, dtype=torch.int64),
    "empty_bool": lambda: torch.zeros(0, dtype=torch.bool),
    "empty_float16": lambda: torch.zeros(0, 2, dtype=torch.float16),
    "empty_int32": lambda: torch.zeros(0, dtype=torch.int32),
    # nesting and blank lines between blocks
    "3d": lambda: torch.arange(24.0).reshape(2, 3, 4),
    "4d": lambda: _randn(2, 2, 2, 3),
    "5d_int": lambda: torch.arange(32).reshape(2, 2, 2, 2, 2),
    "singleton_dims": lambda: torch.tensor([[[1.5]]]),
    # summarization: the width comes only from the shown elements
    "summary_1d": lambda: torch.arange(2000.0),
    "summary_1d_int": lambda: torch.arange(1001),
    "summary_2d": lambda: _randn(40, 50),
    "summary_3d": lambda: _randn(10, 20, 30),
    "summary_inner_dim_only": lambda: torch.arange(2 * 600).reshape(2, 600),
    "summary_hides_wide": lambda: _ones_around(torch.full((1000,), 123456.0)),
    "summary_hides_sci": lambda: _ones_around(torch.full((1000,), 1.0e-9)),
    # long rows wrap; continuation lines are indented to the bracket
    "wrap_1d": lambda: _randn(30),
    "wrap_2d": lambda: _randn(3, 25),
    "wrap_3d_int": lambda: torch.arange(2 * 2 * 40).reshape(2, 2, 40) * 1000,
    "wrap_sci": lambda: _randn(20, scale=1.0e-6),
    "wrap_bools": lambda: torch.arange(40) % 3 == 0,
    "wrap_float16": lambda: _randn(40, dtype=torch.float16),
    "wrap_zeros": lambda: torch.zeros(40),  # no nonzero finite element: width stays 1
    "wrap_nonfinite": lambda: torch.tensor([float("nan"), float("inf")] * 20),
    # suffixes that no longer fit on the last line move to their own line
    "suffix_wraps": lambda: torch.arange(10.0, dtype=torch.float64) + 0.5,
    "suffix_after_multiline": lambda: _randn(3, 3, dtype=torch.float16),
}


@pytest.mark.parametrize("name", CASES)
def test_matches_torch(name):
    _check(CASES[name]())


OPTIONS = {
    "precision_2": dict(precision=2),
    "precision_0": dict(precision=0),
    "precision_8": dict(precision=8),
    "threshold_5": dict(threshold=5),
    "threshold_0": dict(threshold=0),
    "edgeitems_1": dict(threshold=10, edgeitems=1),
    "edgeitems_0": dict(threshold=10, edgeitems=0),
    "linewidth_40": dict(linewidth=40),
    "linewidth_tiny": dict(linewidth=5),
    "sci_on": dict(sci_mode=True),
    "sci_off": dict(sci_mode=False),
    "profile_short": dict(profile="short"),
    "profile_full": dict(profile="full"),
    "profile_with_override": dict(profile="short", precision=6, linewidth=60),
}
TENSORS = {
    "fixed": lambda: _randn(4, 6),
    "wide_range": lambda: torch.tensor([1.0e-6, 1.0, 1.0e7]),
    "integer_valued": lambda: torch.arange(12.0).reshape(3, 4),
    "ints_3d": lambda: torch.arange(60).reshape(3, 4, 5),
    "long_row": lambda: _randn(2000),
    "scalar": lambda: torch.tensor(0.123456789),
    "empty": lambda: torch.zeros(0, 2, dtype=torch.int32),
    "zeros": lambda: torch.zeros(4),
}


@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("tensor", TENSORS)
def test_matches_torch_with_options(options, tensor):
    _both(**OPTIONS[options])
    _check(TENSORS[tensor]())


def test_extras_follow_dtype():
    _check(torch.tensor([1.0, 2.0], requires_grad=True), ["requires_grad=True"])
    # The 80th column is still free here, yet PyTorch moves the suffix to a new line.
    _check(torch.ones(13, requires_grad=True), ["requires_grad=True"])
    t = torch.tensor([[1.0, 2.0]], dtype=torch.float64, requires_grad=True) * 2
    _check(t.detach().requires_grad_(False), [])
    _check(t, ["grad_fn=<MulBackward0>"])
    _check(_randn(3, 30, dtype=torch.float16).requires_grad_(), ["requires_grad=True"])


def test_device_goes_before_dtype():
    # PyTorch's CPU build cannot print a cuda tensor; this is the text its docs show.
    values = np.array([1.0, 2.0], np.float32)
    extras = ["device='cuda:0'", "requires_grad=True"]
    assert (format_tensor(values, kind="float", dtype_suffix="tk.float16", extras=extras)
            == "tensor([1., 2.], device='cuda:0', dtype=tk.float16, requires_grad=True)")


def test_printoptions_roundtrip():
    for options in OPTIONS.values():
        _both(**options)
        assert get_printoptions() == torch._tensor_str.get_printoptions()
    saved = get_printoptions()
    set_printoptions(precision=1, threshold=3)
    set_printoptions(**saved)
    assert get_printoptions() == saved


def test_unknown_profile_is_an_error():
    with pytest.raises(ValueError, match="profile"):
        set_printoptions(profile="long")


def test_needs_no_torch():
    code = "import sys, tensorkit._printing; assert 'torch' not in sys.modules, 'torch imported'"
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)
