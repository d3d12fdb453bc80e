"""The cuda device's pointwise path (Triton kernels; in CI the emulated device runs them in
Triton's interpreter): moving tensors, mixing devices, layouts the op table does not reach.
The op table (test_ops.py) covers every pointwise op on every dtype."""
import subprocess
import sys

import numpy as np
import pytest

import tensorkit as tk

pytestmark = pytest.mark.skipif(not tk.cuda.is_available(), reason="needs a CUDA device (or TENSORKIT_INTERPRET=1)")


def test_moves_between_devices():
    x = tk.tensor([[1.5, -2.0], [3.0, 4.25]])
    for y in (x.cuda(), x.to("cuda"), x.to(device="cuda")):
        assert y.device.type == "cuda" and y.dtype is tk.float32
        back = y.cpu()
        assert back.device.type == "cpu" and np.array_equal(back.numpy(), x.numpy())
    t = x.T.cuda()                               # a non-contiguous source
    assert np.array_equal(t.cpu().numpy(), x.numpy().T)
    h = x.cuda().to(tk.bfloat16)                 # a cast on the device
    assert h.device.type == "cuda" and np.array_equal(h.cpu().float().numpy(), x.numpy())


def test_ones_plus_one():
    r = tk.ones(3, device="cuda") + 1
    assert r.device.type == "cuda" and r.cpu().tolist() == [2.0, 2.0, 2.0]


def test_mix_with_0d_cpu_tensor():
    x = tk.tensor([1.0, 2.0, 3.0], device="cuda")
    for s, expected in ((tk.tensor(2.0), [3.0, 4.0, 5.0]), (tk.tensor(2, dtype=tk.int8), [3.0, 4.0, 5.0])):
        r = x + s
        assert r.device.type == "cuda" and r.cpu().tolist() == expected
    assert (tk.tensor(0.5) * x).cpu().tolist() == [0.5, 1.0, 1.5]
    x.mul_(tk.tensor(3.0))
    assert x.cpu().tolist() == [3.0, 6.0, 9.0]


def test_mix_with_1d_cpu_tensor_raises():
    x = tk.tensor([1.0, 2.0, 3.0], device="cuda")
    with pytest.raises(RuntimeError, match=r"(?=.*cpu)(?=.*cuda)"):
        x + tk.tensor([1.0, 2.0, 3.0])
    with pytest.raises(RuntimeError, match=r"(?=.*cpu)(?=.*cuda)"):
        tk.add(tk.ones(3), tk.ones(3), out=x)


def test_high_rank_and_exact_scalars():
    # 8 dims that do not coalesce: the strided kernel takes the last 6, the rest loop on the host
    a = np.arange(2 ** 8, dtype=np.float64).reshape((2,) * 8)
    x = tk.from_numpy(a).cuda().permute(7, 6, 5, 4, 3, 2, 1, 0)
    np.testing.assert_array_equal((x + 0.1).cpu().numpy(), a.transpose() + 0.1)   # float64 scalar stays exact
    big = tk.tensor([1], dtype=tk.int64, device="cuda") + (2 ** 40 + 1)
    assert big.cpu().tolist() == [2 ** 40 + 2]


def test_import_does_not_load_triton():
    code = "import sys, tensorkit; assert 'triton' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("dtype", [tk.float32, tk.bfloat16, tk.int64])
def test_transposing_copies_take_the_tiled_path(dtype, monkeypatch):
    """A copy whose source runs along another axis than its destination (.contiguous() of a
    transpose, a permute with a batch dim) is tiled, and lands every element where numpy does."""
    from tensorkit.kernels import pointwise as KP
    tiled = []
    monkeypatch.setattr(KP, "_transpose_copy", lambda *a, _f=KP._transpose_copy: tiled.append(a[2]) or _f(*a))
    rng = np.random.default_rng(3)
    a = rng.integers(-100, 100, (3, 40, 50)).astype(np.float32)
    x = tk.tensor(a, device="cuda").to(dtype)
    for view, ref in ((x[1].T, a[1].T), (x.permute(0, 2, 1), a.transpose(0, 2, 1)),
                      (x[:, 2:38, 5:45].transpose(1, 2), a[:, 2:38, 5:45].transpose(0, 2, 1))):
        got = view.contiguous()
        assert got.is_contiguous()
        np.testing.assert_array_equal(got.cpu().to(tk.float64).numpy(), ref)
    assert len(tiled) == 3
    small = x[0, :8, :8].T.contiguous()              # short axes: the elementwise copy
    np.testing.assert_array_equal(small.cpu().to(tk.float64).numpy(), a[0, :8, :8].T)
    assert len(tiled) == 3
