"""Convolution and pooling beyond the op table: every option combination against PyTorch on
the CPU (forward, every gradient, second order), conv_transpose2d's output sizes, pooling
indices and NaN, error messages, the layers' parameters and state-dict keys against
PyTorch's, and the Triton paths the table's tiny samples do not reach (channels-last
staging, split-K weight gradient, autotuning and its cache, empty batches).

The op table (``tensorkit/testing/opinfo_conv.py``) covers forward vs numpy, gradcheck and
cuda vs cpu for each op; tests here need torch as the reference and skip without it.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import tensorkit as tk
import tensorkit.nn.functional as F
from tensorkit.testing import assert_close

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def _pair(rng, *shapes):
    arrays = [rng.standard_normal(s) for s in shapes]
    return [tk.tensor(a, requires_grad=True) for a in arrays], [torch.tensor(a, requires_grad=True) for a in arrays]


def _check_grads(tk_out, t_out, tk_in, t_in, rng, what):
    assert tuple(tk_out.shape) == tuple(t_out.shape), f"{what}: shape {list(tk_out.shape)} vs {list(t_out.shape)}"
    assert_close(tk_out, t_out.detach().numpy(), rtol=1e-10, atol=1e-10, msg=what)
    g = rng.standard_normal(tuple(t_out.shape))
    tk_grads = tk.autograd.grad(tk_out, tk_in, tk.tensor(g))
    t_grads = torch.autograd.grad(t_out, t_in, torch.tensor(g))
    for i, (a, b) in enumerate(zip(tk_grads, t_grads)):
        assert_close(a, b.numpy(), rtol=1e-10, atol=1e-10, msg=f"{what}: gradient of input {i}")


# ---- convolutions: every option against PyTorch (float64, CPU) ------------------------------------------------------
_CONV2D_OPTIONS = list(itertools.product(
    [1, (2, 1)],                          # stride
    [0, 1, (1, 2), "same", "valid"],      # padding
    [1, (2, 1)],                          # dilation
    [1, 2],                               # groups
    [True, False],                        # bias
))


@pytest.mark.parametrize("stride,padding,dilation,groups,bias", _CONV2D_OPTIONS)
def test_conv2d_options_match_torch(stride, padding, dilation, groups, bias):
    if padding == "same" and stride != 1:
        return                            # PyTorch refuses it too (tested in test_conv_errors)
    rng = np.random.default_rng(0)
    shapes = [(2, 4, 6, 5), (6, 4 // groups, 3, 2)] + ([(6,)] if bias else [])
    kx, tx = _pair(rng, *shapes)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    _check_grads(F.conv2d(*kx, **kw), TF.conv2d(*tx, **kw), kx, tx, rng, f"conv2d {kw}")


@pytest.mark.parametrize("stride,padding,output_padding,dilation,groups", [
    (1, 0, 0, 1, 1), (2, 1, 1, 1, 1), ((2, 3), (0, 1), (1, 2), 1, 2), (2, 1, 0, 2, 1), (3, 2, (2, 1), (1, 2), 2),
    (1, 0, 1, 2, 1),                      # output_padding < dilation, not < stride: allowed
])
def test_conv_transpose2d_matches_torch(stride, padding, output_padding, dilation, groups):
    rng = np.random.default_rng(1)
    kx, tx = _pair(rng, (2, 4, 3, 4), (4, 6 // groups, 3, 2), (6,))
    kw = dict(stride=stride, padding=padding, output_padding=output_padding, groups=groups, dilation=dilation)
    _check_grads(F.conv_transpose2d(*kx, **kw), TF.conv_transpose2d(*tx, **kw), kx, tx, rng,
                 f"conv_transpose2d {kw}")


def test_conv_transpose2d_module_output_size():
    m = tk.nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1)
    x = tk.randn(1, 3, 4, 5)
    assert m(x).shape == (1, 2, 7, 9)
    assert m(x, output_size=[8, 10]).shape == (1, 2, 8, 10)
    with pytest.raises(ValueError, match="valid sizes range from 7 to 8"):
        m(x, output_size=(9, 9))


@pytest.mark.parametrize("stride,padding,dilation,groups", [(1, 0, 1, 1), (2, 1, 2, 2), (1, "same", 3, 1),
                                                            (3, "valid", 1, 2)])
def test_conv1d_matches_torch(stride, padding, dilation, groups):
    rng = np.random.default_rng(2)
    kx, tx = _pair(rng, (2, 4, 11), (6, 4 // groups, 3), (6,))
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    _check_grads(F.conv1d(*kx, **kw), TF.conv1d(*tx, **kw), kx, tx, rng, f"conv1d {kw}")


def test_conv2d_unbatched_matches_torch():
    rng = np.random.default_rng(3)
    kx, tx = _pair(rng, (3, 5, 5), (2, 3, 3, 3))
    _check_grads(F.conv2d(*kx, padding=1), TF.conv2d(*tx, padding=1), kx, tx, rng, "unbatched conv2d")


@pytest.mark.parametrize("op", ["conv2d", "conv_transpose2d"])
def test_conv_second_order_matches_torch(op):
    """grad of (grad of the conv . v) with respect to input and weight: the VJPs' own VJPs."""
    rng = np.random.default_rng(4)
    kw = dict(stride=2, padding=1, groups=2) if op == "conv2d" else dict(stride=2, padding=1, output_padding=1, groups=2)
    wshape = (4, 2, 3, 3)
    kx, tx = _pair(rng, (2, 4, 5, 5), wshape)
    out_k, out_t = getattr(F, op)(*kx, **kw), getattr(TF, op)(*tx, **kw)
    g = rng.standard_normal(tuple(out_t.shape))
    gk = tk.autograd.grad(out_k, kx, tk.tensor(g), create_graph=True)
    gt = torch.autograd.grad(out_t, tx, torch.tensor(g), create_graph=True)
    vs = [rng.standard_normal(tuple(t.shape)) for t in tx]
    sk = sum((a * tk.tensor(v)).sum() for a, v in zip(gk, vs))
    st = sum((a * torch.tensor(v)).sum() for a, v in zip(gt, vs))
    for i, (a, b) in enumerate(zip(tk.autograd.grad(sk, kx), torch.autograd.grad(st, tx))):
        assert_close(a, b.numpy(), rtol=1e-10, atol=1e-10, msg=f"{op}: second-order gradient of input {i}")


def test_conv_half_precision_cpu_matches_torch():
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((2, 8, 6, 6)), rng.standard_normal((4, 8, 3, 3))
    for dt, tdt in ((tk.float16, torch.float16), (tk.bfloat16, torch.bfloat16)):
        r = F.conv2d(tk.tensor(x).to(dt), tk.tensor(w).to(dt), padding=1)
        e = TF.conv2d(torch.tensor(x).to(tdt).float(), torch.tensor(w).to(tdt).float(), padding=1).to(tdt)
        assert r.dtype is dt
        assert_close(r, e.float().numpy(), reduction_len=72, msg=f"conv2d {dt}")


# ---- errors -------------------------------------------------------------------------------------------------------
def test_conv_errors():
    x, w = tk.randn(2, 3, 5, 5), tk.randn(4, 3, 3, 3)
    with pytest.raises(RuntimeError, match=r"weight of size \[4, 3, 3, 3\], expected input\[2, 5, 5, 5\] to have 3 "
                                           r"channels, but got 5 channels instead"):
        F.conv2d(tk.randn(2, 5, 5, 5), w)
    with pytest.raises(RuntimeError, match=r"Expected 3D \(unbatched\) or 4D \(batched\) input to conv2d, but got "
                                           r"input of size: \[2, 3, 5, 5, 1\]"):
        F.conv2d(tk.randn(2, 3, 5, 5, 1), w)
    with pytest.raises(RuntimeError, match=r"Expected 4-dimensional weight .* got 3-dimensional weight of size \[4, 3, 3\]"):
        F.conv2d(x, tk.randn(4, 3, 3))
    with pytest.raises(RuntimeError, match="expected weight to be divisible by 2"):
        F.conv2d(tk.randn(2, 4, 5, 5), tk.randn(3, 2, 3, 3), groups=2)
    with pytest.raises(RuntimeError, match="padding='same' is not supported for strided"):
        F.conv2d(x, w, stride=2, padding="same")
    with pytest.raises(RuntimeError, match="negative padding"):
        F.conv2d(x, w, padding=-1)
    with pytest.raises(RuntimeError, match="non-positive stride"):
        F.conv2d(x, w, stride=0)
    with pytest.raises(ValueError, match="invalid padding string 'full'"):
        F.conv2d(x, w, padding="full")
    with pytest.raises(RuntimeError, match="output padding must be smaller than either stride or dilation"):
        F.conv_transpose2d(x, tk.randn(3, 2, 3, 3), stride=2, output_padding=2)
    with pytest.raises(RuntimeError, match=r"Given transposed=1, weight of size \[4, 2, 3, 3\], expected input"
                                           r"\[2, 3, 5, 5\] to have 4 channels"):
        F.conv_transpose2d(x, tk.randn(4, 2, 3, 3))
    with pytest.raises(NotImplementedError, match="conv2d.*int64.*cpu|conv2d.*cpu.*int64"):
        F.conv2d(tk.ones(1, 1, 3, 3, dtype=tk.int64), tk.ones(1, 1, 1, 1, dtype=tk.int64))
    with pytest.raises(ValueError, match="in_channels must be divisible by groups"):
        tk.nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(NotImplementedError, match="padding_mode='reflect'"):
        tk.nn.Conv2d(3, 4, 3, padding_mode="reflect")


@pytest.mark.skipif("cuda" not in tk.testing.devices(), reason="no cuda device (real or emulated)")
def test_conv_device_mismatch():
    with pytest.raises(RuntimeError, match="same device.*cpu.*cuda"):
        F.conv2d(tk.randn(1, 3, 5, 5), tk.randn(4, 3, 3, 3, device="cuda"))


def test_pool_errors():
    with pytest.raises(RuntimeError, match=r"pad should be at most half of effective kernel size, but got pad=2, "
                                           r"kernel_size=3 and dilation=1"):
        F.max_pool2d(tk.randn(1, 1, 6, 6), 3, 1, 2)
    with pytest.raises(RuntimeError, match=r"pad should be at most half of kernel size, but got pad=2, kernel_size=3"):
        F.avg_pool2d(tk.randn(1, 1, 6, 6), 3, 1, 2)
    with pytest.raises(RuntimeError, match=r"Given input size: \(1x2x2\). Calculated output size: \(1x0x0\)"):
        F.max_pool2d(tk.randn(1, 1, 2, 2), 3)
    with pytest.raises(RuntimeError, match=r"Expected 3D or 4D .* but got: \[1, 1, 1, 2, 2\]"):
        F.avg_pool2d(tk.randn(1, 1, 1, 2, 2), 2)
    with pytest.raises(RuntimeError, match="divisor must be not zero"):
        F.avg_pool2d(tk.randn(1, 1, 4, 4), 2, divisor_override=0)


# ---- pooling: options, indices, NaN ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kernel,stride,padding,dilation,ceil_mode", [
    (2, None, 0, 1, False), (3, 2, 1, 1, True), ((3, 2), (2, 1), (1, 0), (2, 1), False), (3, 3, 1, 2, True),
    (2, 2, 1, 1, True),
])
def test_max_pool2d_matches_torch(kernel, stride, padding, dilation, ceil_mode):
    rng = np.random.default_rng(6)
    kx, tx = _pair(rng, (2, 3, 7, 6))
    (a, ai), (b, bi) = (F.max_pool2d(kx[0], kernel, stride, padding, dilation, ceil_mode, True),
                        TF.max_pool2d(tx[0], kernel, stride, padding, dilation, ceil_mode, True))
    assert ai.dtype is tk.int64 and np.array_equal(ai.numpy(), bi.numpy())
    _check_grads(a, b, kx, tx, rng, f"max_pool2d {kernel, stride, padding, dilation, ceil_mode}")


@pytest.mark.parametrize("kernel,stride,padding,ceil_mode,count_include_pad,divisor", list(itertools.product(
    [3, (2, 3)], [None, 2], [0, 1], [False, True], [False, True], [None, 5])))
def test_avg_pool2d_matches_torch(kernel, stride, padding, ceil_mode, count_include_pad, divisor):
    rng = np.random.default_rng(7)
    kx, tx = _pair(rng, (2, 3, 7, 6))
    args = (kernel, stride, padding, ceil_mode, count_include_pad, divisor)
    _check_grads(F.avg_pool2d(kx[0], *args), TF.avg_pool2d(tx[0], *args), kx, tx, rng, f"avg_pool2d {args}")


@pytest.mark.parametrize("size", [(3, 4), 1, (5, 2), (7, 6), (9, 8), (None, 2), (2, None)])
def test_adaptive_pools_match_torch(size):
    rng = np.random.default_rng(8)
    kx, tx = _pair(rng, (2, 3, 7, 6))
    _check_grads(F.adaptive_avg_pool2d(kx[0], size), TF.adaptive_avg_pool2d(tx[0], size), kx, tx, rng,
                 f"adaptive_avg_pool2d {size}")
    (a, ai), (b, bi) = F.adaptive_max_pool2d(kx[0], size, True), TF.adaptive_max_pool2d(tx[0], size, True)
    assert np.array_equal(ai.numpy(), bi.numpy())
    _check_grads(a, b, kx, tx, rng, f"adaptive_max_pool2d {size}")


def test_max_pool1d_matches_torch():
    rng = np.random.default_rng(9)
    kx, tx = _pair(rng, (2, 3, 10))
    for args in [(3,), (3, 2, 1), (2, 1, 1, 2, True)]:
        (a, ai), (b, bi) = F.max_pool1d(kx[0], *args, return_indices=True), TF.max_pool1d(tx[0], *args, return_indices=True)
        assert np.array_equal(ai.numpy(), bi.numpy()), args
        _check_grads(a, b, kx, tx, rng, f"max_pool1d {args}")


@pytest.mark.parametrize("device", tk.testing.devices())
def test_max_pool_nan_and_ties(device):
    x = tk.tensor([[[[1.0, math.nan, 3.0, 2.0], [5.0, 5.0, -math.inf, -math.inf]]]], device=device)
    v, i = F.max_pool2d(x, (1, 2), return_indices=True)
    t = TF.max_pool2d(torch.tensor(x.cpu().numpy()), (1, 2), return_indices=True)
    assert_close(v.cpu(), t[0].numpy(), msg="NaN is the maximum; ties take the first")
    assert np.array_equal(i.cpu().numpy(), t[1].numpy())


def test_max_pool_gradient_of_overlapping_windows_adds():
    x = tk.tensor([[[[1.0, 9.0, 2.0, 0.0]]]], requires_grad=True)
    y = F.max_pool2d(x, (1, 2), stride=1)              # 9 is the maximum of two windows
    y.sum().backward()
    assert x.grad.tolist() == [[[[0.0, 2.0, 1.0, 0.0]]]]


# ---- layers ----------------------------------------------------------------------------------------------------------
def _torch_model():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.MaxPool2d(2),
                               torch.nn.Conv2d(8, 8, 3, stride=2, groups=2, bias=False), torch.nn.AvgPool2d(2),
                               torch.nn.ConvTranspose2d(8, 4, 3, stride=2, output_padding=1),
                               torch.nn.AdaptiveAvgPool2d((3, 2)), torch.nn.AdaptiveMaxPool2d(2))


def _tk_model():
    return tk.nn.Sequential(tk.nn.Conv2d(3, 8, 3, padding=1), tk.nn.MaxPool2d(2),
                            tk.nn.Conv2d(8, 8, 3, stride=2, groups=2, bias=False), tk.nn.AvgPool2d(2),
                            tk.nn.ConvTranspose2d(8, 4, 3, stride=2, output_padding=1),
                            tk.nn.AdaptiveAvgPool2d((3, 2)), tk.nn.AdaptiveMaxPool2d(2))


def test_layers_state_dict_and_outputs_match_torch():
    torch.manual_seed(0)
    tm, km = _torch_model().double(), _tk_model().double()
    tsd = tm.state_dict()
    ksd = km.state_dict()
    assert list(ksd) == list(tsd)
    assert all(tuple(ksd[k].shape) == tuple(tsd[k].shape) for k in tsd)
    km.load_state_dict({k: tk.tensor(v.numpy()) for k, v in tsd.items()})
    x = np.random.default_rng(10).standard_normal((2, 3, 16, 16))
    assert_close(km(tk.tensor(x)), tm(torch.tensor(x)).detach().numpy(), rtol=1e-10, atol=1e-10)


def test_conv1d_module_and_max_pool1d_module():
    torch.manual_seed(0)
    tm = torch.nn.Sequential(torch.nn.Conv1d(3, 5, 3, stride=2, padding=1), torch.nn.MaxPool1d(2)).double()
    km = tk.nn.Sequential(tk.nn.Conv1d(3, 5, 3, stride=2, padding=1), tk.nn.MaxPool1d(2)).double()
    km.load_state_dict({k: tk.tensor(v.numpy()) for k, v in tm.state_dict().items()})
    x = np.random.default_rng(11).standard_normal((2, 3, 12))
    assert_close(km(tk.tensor(x)), tm(torch.tensor(x)).detach().numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cls,args,fan_in", [(tk.nn.Conv2d, (6, 32, (3, 5)), 90), (tk.nn.Conv1d, (4, 64, 3, 1, 0, 1, 2), 6),
                                             (tk.nn.ConvTranspose2d, (8, 64, 3), 64 * 9)])
def test_default_init_is_torch_distribution(cls, args, fan_in):
    """kaiming_uniform_(a=sqrt(5)) and the bias are both U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (fan_in of
    a transposed conv's weight is its dim 1 times the kernel, as PyTorch computes it)."""
    m = cls(*args)
    bound = 1 / math.sqrt(fan_in)
    for p in (m.weight, m.bias):
        a = p.detach().numpy()
        assert np.abs(a).max() <= bound + 1e-7
        if a.size > 500:                  # uniform: the extremes are near the bound, the spread is bound / sqrt(3)
            assert np.abs(a).max() > 0.95 * bound and abs(a.std() - bound / math.sqrt(3)) < 0.1 * bound


def test_layer_repr_matches_torch():
    for args, kw in [((3, 8, 3), dict(padding=1)), ((4, 8, (3, 1)), dict(stride=2, groups=2, bias=False)),
                     ((3, 8, 3), dict(padding="same", dilation=2))]:
        assert repr(tk.nn.Conv2d(*args, **kw)) == repr(torch.nn.Conv2d(*args, **kw))


# ---- the Triton paths (emulated or real cuda) ------------------------------------------------------------------------
needs_cuda = pytest.mark.skipif("cuda" not in tk.testing.devices(), reason="no cuda device (real or emulated)")


def _conv_all(x, w, g, **kw):
    """(forward, input-gradient, weight-gradient) on x's device."""
    from tensorkit.ops import conv as C
    geom = C._geometry("conv2d", x.shape, w.shape, kw.get("stride", 1), kw.get("padding", 0),
                       kw.get("dilation", 1), kw.get("groups", 1))
    return (C.conv2d_primitive(x, w, geom), C.conv2d_input_grad(g, w, x.shape, geom),
            C.conv2d_weight_grad(x, g, w.shape, geom))


@needs_cuda
def test_cuda_conv_layouts_split_k_and_tuning(monkeypatch, tmp_path):
    """Both layouts ("nchw", "nhwc" staging) of all three kernels, a split-K weight gradient, a TF32 key: the tuner
    (a fake timer on the emulated device) times every candidate, keeps the winner in its cache
    file, and a fresh process (an empty memo) reads it back without timing again."""
    from tensorkit.kernels import conv as KC
    monkeypatch.setenv("TENSORKIT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(KC, "_memo", {})
    monkeypatch.setattr(KC, "WGRAD_MIN_BLOCKS", 1)         # split the weight-gradient's reduction (3 chunks)
    timed = []

    def timer(config, fn):
        fn()
        timed.append(config)
        return {"nhwc": 1.0, "nchw": 2.0}[config.kernel] + config.block_m / 1000

    monkeypatch.setattr(KC, "_timer", timer)
    monkeypatch.setattr(KC, "candidates", lambda kind, *a: [KC.Config(layout, 64, 16, 16, 8, 1, 1)
                                                             for layout in ("nchw", "nhwc")])
    assert KC._wgrad_split(2, 2 * 5 * 5, 16, 0) == 3, "the weight-gradient below must be split"
    rng = np.random.default_rng(12)
    x, w = rng.standard_normal((2, 3, 5, 5)).astype(np.float32), rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    g = rng.standard_normal((2, 4, 5, 5)).astype(np.float32)
    expected = TF.conv2d(torch.tensor(x), torch.tensor(w), padding=1)
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    egx, egw = torch.autograd.grad(TF.conv2d(tx, tw, padding=1), (tx, tw), torch.tensor(g))
    for precision in ("highest", "high"):
        tk.set_float32_matmul_precision(precision)
        try:
            got = _conv_all(tk.tensor(x, device="cuda"), tk.tensor(w, device="cuda"), tk.tensor(g, device="cuda"),
                            padding=1)
        finally:
            tk.set_float32_matmul_precision("highest")
        tol = 1e-4 if precision == "highest" else 2e-2          # TF32 keeps 10 mantissa bits
        for a, e, n in zip(got, (expected, egx, egw), ("forward", "input-gradient", "weight-gradient")):
            assert_close(a.cpu(), e.detach().numpy(), rtol=tol, atol=tol, reduction_len=27, msg=f"{n} {precision}")
    assert {c.kernel for c in timed} == {"nchw", "nhwc"} and len(timed) == 12
    cached = KC._mm.read_cache(KC.cache_path(tk.cuda.get_device_name(0)))
    assert len(cached) == 6 and any("tf32" in k for k in cached)
    assert all(c.kernel == "nhwc" for c in cached.values())
    monkeypatch.setattr(KC, "_memo", {})
    timed.clear()
    _conv_all(tk.tensor(x, device="cuda"), tk.tensor(w, device="cuda"), tk.tensor(g, device="cuda"), padding=1)
    assert timed == [], "a cached config must not be timed again"


@needs_cuda
def test_cuda_conv_empty_and_half():
    w = tk.randn(4, 3, 3, 3, device="cuda")
    x = tk.randn(0, 3, 5, 5, device="cuda")
    y, gx, gw = _conv_all(x, w, tk.randn(0, 4, 3, 3, device="cuda"))
    assert y.shape == (0, 4, 3, 3) and gx.shape == (0, 3, 5, 5)
    assert gw.shape == (4, 3, 3, 3) and not gw.cpu().numpy().any()
    rng = np.random.default_rng(13)
    xa, wa = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((4, 3, 3, 3))
    e = TF.conv2d(torch.tensor(xa).half().float(), torch.tensor(wa).half().float())
    r = F.conv2d(tk.tensor(xa, device="cuda").half(), tk.tensor(wa, device="cuda").half())
    assert r.dtype is tk.float16
    assert_close(r.cpu(), e.numpy(), reduction_len=27)


# ---- the benchmark's code path (benchmarks/bench_nn.py) --------------------------------------------------------------
def test_bench_nn_conv_smoke():
    """The conv section's checks and table on the CPU (the GPU run uses the same code)."""
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
    try:
        import bench_nn
    finally:
        sys.path.pop(0)
    text = bench_nn.smoke()
    rows = [line for line in text.splitlines() if line.startswith("| 3x3") or line.startswith("| 1x1")]
    assert len(rows) == 8 and "Not timed" not in text, text
    if bench_nn._gpu() is None:           # never the full benchmark from a test
        assert bench_nn.run(quick=True).startswith("Skipped: needs a real CUDA GPU")


@needs_cuda
@pytest.mark.parametrize("stride,dilation,padding,kernel", [
    ((2, 2), (1, 1), (0, 0), (1, 1)),      # a 1x1 projection's backward: a quarter of the pixels get a gradient
    ((3, 2), (3, 2), (2, 1), (3, 3)),      # gcd(stride, dilation) > 1: some phases meet no tap at all
    ((4, 1), (2, 1), (0, 0), (2, 1)),      # a stride larger than the kernel: rows no window covers
])
def test_cuda_input_gradient_stride_phases(stride, dilation, padding, kernel):
    """The input-gradient kernel runs one GEMM per stride phase over just the taps that reach it."""
    rng = np.random.default_rng(14)
    x = rng.standard_normal((2, 4, 9, 8))
    w = rng.standard_normal((6, 2) + kernel)
    tx = torch.tensor(x, requires_grad=True)
    y = TF.conv2d(tx, torch.tensor(w), stride=stride, padding=padding, dilation=dilation, groups=2)
    g = rng.standard_normal(tuple(y.shape))
    (expected,) = torch.autograd.grad(y, tx, torch.tensor(g))
    from tensorkit.ops.conv import conv2d_input
    got = conv2d_input(x.shape, tk.tensor(w, device="cuda", dtype=tk.float32), tk.tensor(g, device="cuda",
                       dtype=tk.float32), stride, padding, dilation, 2)
    assert_close(got.cpu(), expected.numpy(), rtol=1e-5, atol=1e-5, reduction_len=12)


@needs_cuda
def test_cuda_channels_last_staging_of_strided_inputs(monkeypatch):
    """The "nhwc" layout's staging copy of inputs whose pixels are not one strided run
    (transposed H/W, a column slice) and of a bfloat16 gradient, and its channels-last results
    copied back (stride 1 and 2), against the CPU."""
    from tensorkit.kernels import conv as KC
    monkeypatch.setattr(KC, "EMULATED_CONFIG", KC.EMULATED_CONFIG._replace(kernel="nhwc"))
    rng = np.random.default_rng(15)
    for make in (lambda a: tk.tensor(a.transpose(0, 1, 3, 2).copy()).transpose(2, 3),
                 lambda a: tk.tensor(np.concatenate([a, a], axis=3))[..., ::2]):
        a, w = rng.standard_normal((2, 3, 5, 6)), rng.standard_normal((4, 3, 3, 3))
        x = make(a)
        assert not x.is_contiguous()
        for dt in (tk.float32, tk.bfloat16):
            xc, wc = x.to(dt).requires_grad_(), tk.tensor(w).to(dt).requires_grad_()
            xg, wg = x.to("cuda").to(dt).requires_grad_(), tk.tensor(w, device="cuda").to(dt).requires_grad_()
            stride = 2 if dt is tk.bfloat16 else 1      # strided: the input-gradient's phases fill the result
            yc, yg = F.conv2d(xc, wc, padding=1, stride=stride), F.conv2d(xg, wg, padding=1, stride=stride)
            gy = tk.tensor(rng.standard_normal(tuple(yc.shape))).to(dt)
            expected = (yc, *tk.autograd.grad(yc, (xc, wc), gy))
            got = (yg, *tk.autograd.grad(yg, (xg, wg), gy.to("cuda")))
            for e, r in zip(expected, got):
                assert_close(r.cpu(), e, reduction_len=27, msg=f"{dt} {list(x.stride())}")


# ---- the kernels compile for a real GPU -------------------------------------------------------------------------------
_SM90_SCRIPT = r'''
import importlib.util, re, sys
import triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

def load(name):
    spec = importlib.util.spec_from_file_location(name, f"{sys.argv[1]}/tensorkit/kernels/src/{name}.py")
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m

conv, matmul, pool, shape = load("conv"), load("matmul"), load("pool"), load("shape")

def compile_(fn, ints, ptrs, constexprs, warps=4, stages=3):
    """Compile as a launch would specialise it: ints equal to 1 become constants, multiples of 16 say so."""
    sig, ce, attrs = {}, {}, {}
    for i, n in enumerate(fn.arg_names):
        if n in constexprs:
            sig[n], ce[(i,)] = "constexpr", constexprs[n]
        elif n in ptrs:
            sig[n], attrs[(i,)] = ptrs[n], [["tt.divisibility", 16]]
        elif ints[n] == 1:
            sig[n], ce[(i,)] = "constexpr", 1
        else:
            sig[n] = "i32"
            if ints[n] % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    k = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=ce, attrs=attrs), target=GPUTarget("cuda", 90, 32),
                       options={"num_warps": warps, "num_stages": stages})
    return k.asm["ptx"]

# a ResNet layer (32 x 64 x 56 x 56, 3x3, 64 out), channels-last operands, as "nhwc" configs launch them
N, C, H, W, O = 32, 64, 56, 56, 64
x = dict(sxn=H * W * C, sxc=1, sxh=W * C, sxw=C)
g = dict(sgn=H * W * O, sgo=1, sgp=W * O, sgq=O)
geo = dict(sh=1, sw=1, ph=1, pw=1, dh=1, dw=1)
for dt, prec, bk in (("fp16", "ieee", 64), ("bf16", "ieee", 64), ("fp32", "tf32", 32), ("fp32", "ieee", 16), ("fp64", "ieee", 16)):
    acc = tl.float64 if dt == "fp64" else tl.float32
    common = dict(PRECISION=prec, ACC=acc, INTERPRETER_BF16=False, BLOCK_K=bk)
    t = "*" + dt
    ptx = [compile_(conv.conv2d_fwd_kernel, dict(N=N, H=H, W=W, P=H, Q=W, CG=C, OG=O, **x, swo=9 * C, swc=1, swr=3 * C,
                                                 sws=C, syn=O * H * W, syo=H * W, syp=W, syq=1, **geo),
                    {"x_ptr": t, "w_ptr": t, "y_ptr": t}, dict(R=3, S=3, CHANNELS_LAST=True, BLOCK_M=128, BLOCK_N=64, **common)),
           compile_(conv.conv2d_dgrad_kernel, dict(N=N, P=H, Q=W, CG=C, OG=O, **g, swo=C, swc=1, swr=3 * O * C, sws=O * C,
                                                   sxn=C * H * W, sxc=H * W, sxh=W, sxw=1, **geo, HP=H, WP=W, h0=0, w0=0,
                                                   r0=0, step_r=1, RP=3, s0=0, step_s=1, SP=3),
                    {"g_ptr": t, "w_ptr": t, "dx_ptr": t}, dict(CHANNELS_LAST=True, BLOCK_M=128, BLOCK_N=64, **common)),
           compile_(conv.conv2d_wgrad_kernel, dict(N=N, H=H, W=W, P=H, Q=W, CG=C, OG=O, **x, **g, out_split=O * C * 9,
                                                   out_o=C * 9, **geo, chunk=3136),
                    {"x_ptr": t, "g_ptr": t, "out_ptr": "*fp64" if dt == "fp64" else "*fp32"},
                    dict(R=3, S=3, CHANNELS_LAST=True, BLOCK_M=64, BLOCK_N=64, **common))]
    if dt in ("fp16", "bf16"):
        for name, p in zip(("fwd", "dgrad", "wgrad"), ptx):
            assert "wgmma.mma_async" in p, f"{name} {dt}: no wgmma"
            assert re.search(r"cp\.async\.c[ag]", p), f"{name} {dt}: loads not pipelined (no cp.async)"
    compile_(matmul.splitk_sum_kernel, dict(numel=4096, SPLIT=4), {"part_ptr": "*fp64" if dt == "fp64" else "*fp32", "out_ptr": t},
             dict(BLOCK=1024))
    compile_(shape.transpose_copy_kernel, dict(P=H * W, Q=C, s_b=C * H * W, s_p=1, s_q=H * W),   # channels-last staging
             {"src": t, "dst": t}, dict(BLOCK_P=64, BLOCK_Q=64))
    ints = dict(total=N * C * 28 * 28, C=C, H=H, W=W, Ho=28, Wo=28, sxn=C * H * W, sxc=H * W, sxh=W, sxw=1, sgn=C * 784,
                sgc=784, sgh=28, sgw=1, kh=3, sh=2, ph=1, dh=1, kw=3, sw=2, pw=1, dw=1, KH_MAX=3, KW_MAX=3, OH_MAX=2, OW_MAX=2)
    for adaptive in (False, True):
        compile_(pool.max_pool_kernel, ints, {"x_ptr": t, "y_ptr": t, "idx_ptr": "*i64"}, dict(ADAPTIVE=adaptive, ACC=acc, BLOCK=256))
        avg = dict(ADAPTIVE=adaptive, COUNT_PAD=not adaptive, DIVISOR=0, ACC=acc, BLOCK=256)
        compile_(pool.avg_pool_kernel, ints, {"x_ptr": t, "y_ptr": t}, avg)
        compile_(pool.avg_pool_backward_kernel, ints, {"g_ptr": t, "dx_ptr": t}, dict(avg, DIVISOR=3))
print("compiled")
'''


def test_kernels_compile_for_sm90():
    """Every conv and pooling kernel compiles for sm_90 (a real target, not only the interpreter),
    and with channels-last operands the float16/bfloat16 conv loops use wgmma and pipeline their
    loads (cp.async in the PTX). Needs Triton's CUDA backend (its bundled ptxas), not a GPU."""
    import os
    import subprocess
    import sys
    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET",)}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", _SM90_SCRIPT, root], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "compiled" in r.stdout, r.stderr[-3000:]
