"""Pinned (page-locked) host memory and non_blocking copies; ``tk.device`` objects everywhere.

Without a GPU: pin_memory is an error (as in PyTorch), and on the emulated device an ordinary
copy that does not claim to be pinned. On a real GPU (tests marked ``real_gpu``): pinned memory
is page-locked, copies from / to it return before they are done (proven by the stream still
being busy when they return), and their values are right after synchronising.
"""
import gc

import numpy as np
import pytest

import tensorkit as tk

EMULATED = tk.cuda.EMULATED
HAVE_CUDA = tk.cuda.is_available()
any_cuda = pytest.mark.skipif(not HAVE_CUDA, reason="needs a CUDA device (real or TENSORKIT_INTERPRET=1)")
real_gpu = pytest.mark.skipif(EMULATED or not HAVE_CUDA, reason="needs a real GPU (page-locked memory)")
emulated = pytest.mark.skipif(not EMULATED, reason="emulated device only")


def test_pin_memory_without_cuda_raises(monkeypatch):
    monkeypatch.setattr(tk.cuda, "EMULATED", False)
    monkeypatch.setattr(tk.cuda, "device_count", lambda: 0)
    t = tk.ones(3)
    with pytest.raises(RuntimeError, match="pin_memory: page-locked memory needs a CUDA device"):
        t.pin_memory()
    assert t.is_pinned() is False


@emulated
def test_pin_memory_on_emulated_device_is_a_plain_copy():
    t = tk.arange(6, dtype=tk.float32).reshape(2, 3).T
    p = t.pin_memory()
    assert p is not t and p.device == tk.device("cpu") and p.is_pinned() is False
    assert p.tolist() == t.tolist()
    t.fill_(0)
    assert p.tolist() == [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]]       # a copy, not a view
    y = p.to("cuda", non_blocking=True)
    assert y.is_cuda and y.tolist() == p.tolist()
    h = y.to("cpu", non_blocking=True)
    assert h.tolist() == p.tolist()


@any_cuda
def test_pin_memory_needs_a_cpu_tensor():
    with pytest.raises(RuntimeError, match="only dense CPU tensors can be pinned"):
        tk.ones(2, device="cuda").pin_memory()
    assert tk.ones(2, device="cuda").is_pinned() is False


@any_cuda
def test_non_blocking_copy_into_cpu_tensor_is_complete():
    # copy_ reads the moved data with a CPU kernel right away: it must never see it half-copied
    src = tk.arange(1000, dtype=tk.float32, device="cuda") * 2
    if not EMULATED:
        _busy()                             # the copy starts milliseconds later: an early read sees garbage
    dst = tk.empty(1000, dtype=tk.float64)
    dst.copy_(src, non_blocking=True)
    np.testing.assert_array_equal(dst.numpy(), np.arange(1000) * 2.0)
    if not EMULATED:
        _busy()
    h = src.to("cpu", tk.float64, non_blocking=True)         # a cast: the same path
    np.testing.assert_array_equal(h.numpy(), np.arange(1000) * 2.0)


@any_cuda
def test_device_objects_everywhere():
    d = tk.device("cuda:0")
    made = [tk.zeros(2, device=d), tk.ones(2, device=d), tk.empty(2, device=d), tk.full((2,), 3.0, device=d),
            tk.arange(2, device=d), tk.tensor([1, 2], device=d), tk.eye(2, device=d), tk.linspace(0, 1, 2, device=d),
            tk.zeros_like(tk.ones(2), device=d), tk.ones(2).new_zeros(2, device=d), tk.as_tensor([1.0], device=d),
            tk.ones(2).to(d), tk.ones(2).to(device=d), tk.ones(2).to(d, tk.float16), tk.ones(2).cuda(d),
            tk.ones(2).to(tk.device("cuda")), tk.from_dlpack(np.ones(2), device=d)]
    for t in made:
        assert t.device == d and t.is_cuda and str(t.device) == "cuda:0"
    x = made[0]
    assert x.to(d) is x and x.to("cuda") is x and x.to(tk.device("cuda")) is x
    assert x.to(tk.device("cpu")).device == tk.device("cpu")
    assert tk.ones(2).to(x).device == d                         # to(other_tensor)
    assert tk.cuda.current_stream(d).device == d and tk.cuda.Stream(device=d).device == d
    tk.cuda.synchronize(d)
    with tk.cuda.device(d):
        assert tk.cuda.current_device() == 0
    assert tk.cuda.memory_allocated(d) == tk.cuda.memory_allocated(0)


# ---- real GPU ---------------------------------------------------------------------------------------
def _busy(n: int = 20):
    """Queue several milliseconds of work on the current stream (a 1 GiB tensor read and written n times)."""
    x = tk.ones(1 << 28, device="cuda")
    for _ in range(n):
        x.mul_(1.0)
    return x


@real_gpu
def test_pin_memory_is_page_locked_and_shared_with_numpy():
    t = tk.arange(12, dtype=tk.float32).reshape(3, 4)
    assert t.is_pinned() is False
    p = t.pin_memory()
    assert p.is_pinned() and p.device == tk.device("cpu") and p.tolist() == t.tolist()
    assert p.pin_memory() is p
    p.numpy()[0, 0] = 42
    assert p[0, 0].item() == 42 and t[0, 0].item() == 0
    assert p[1:, ::2].is_pinned()                                 # views of pinned memory are pinned
    for dtype in (tk.bfloat16, tk.bool, tk.int64):
        q = t.to(dtype).pin_memory()
        assert q.is_pinned() and q.dtype is dtype and q.tolist() == t.to(dtype).tolist()
    assert tk.zeros(0).pin_memory().shape == (0,)


@real_gpu
def test_pinned_memory_is_reused_after_the_last_reference_dies():
    p = tk.ones(1000).pin_memory()
    first = p.data_ptr()
    view = p.numpy()
    del p
    gc.collect()
    q = tk.zeros(1000).pin_memory()
    second = q.data_ptr()
    assert second != first, "pinned memory was reused while a numpy view still held it"
    del view, q
    gc.collect()
    assert tk.zeros(1000).pin_memory().data_ptr() in (first, second), "freed pinned blocks are not reused"
    tk.cuda.empty_cache()                                        # frees the cached pinned blocks too


@real_gpu
def test_host_to_device_from_pinned_memory_does_not_wait():
    expected = np.random.default_rng(0).standard_normal(1 << 20).astype(np.float32)
    p = tk.from_numpy(expected.copy()).pin_memory()
    tk.cuda.synchronize()
    _busy()
    y = p.to("cuda", non_blocking=True)
    assert not tk.cuda.current_stream().query(), "to('cuda', non_blocking=True) from pinned memory waited"
    del p                                   # the runtime keeps the source alive until the copy is done:
    gc.collect()
    junk = tk.full((1 << 20,), -7.0).pin_memory()       # so this can't get its block while the copy reads it
    tk.cuda.synchronize()
    assert junk.is_pinned()
    np.testing.assert_array_equal(y.cpu().numpy(), expected)


@real_gpu
def test_host_to_device_from_pageable_memory_is_synchronous():
    t = tk.arange(1 << 20, dtype=tk.float32)
    tk.cuda.synchronize()
    _busy()
    y = t.to("cuda", non_blocking=True)
    assert tk.cuda.current_stream().query(), "a copy from pageable memory returned before it was done"
    t.fill_(-1)                                             # the source may change at once
    np.testing.assert_array_equal(y.cpu().numpy(), np.arange(1 << 20, dtype=np.float32))


@real_gpu
def test_device_to_host_non_blocking_lands_in_pinned_memory():
    # Everything the timed part does runs once first, as in a training loop's second step: a
    # kernel's first launch in a process compiles it (or loads it from disk), and a new
    # page-locked block comes from cuMemHostAlloc, which waits for the device; either would let
    # the busy work finish before the copy is queued.
    warm = (tk.ones(1 << 12, device="cuda") + 1).to("cpu", non_blocking=True)
    del warm
    gc.collect()
    tk.cuda.synchronize()
    x = _busy()
    src = x[:4096] + 1                                      # written last, behind the busy work
    h = src.to("cpu", non_blocking=True)
    assert not tk.cuda.current_stream().query(), "to('cpu', non_blocking=True) waited"
    assert h.is_pinned() and h.device == tk.device("cpu") and h.shape == (4096,)
    tk.cuda.synchronize()
    assert h.numpy().min() == 2.0 and h.numpy().max() == 2.0
    b = src.to("cpu")                                       # blocking: pageable, complete on return
    assert not b.is_pinned() and b.numpy().min() == 2.0
