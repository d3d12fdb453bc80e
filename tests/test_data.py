"""tk.utils.data: datasets, samplers, collation and the DataLoader, in the main process and with
worker processes. References are written-out expected values, and torch.utils.data where installed.
Worker tests keep datasets tiny: their cost is process start-up."""
import collections
import gc
import os
import time

import numpy as np
import pytest

import tensorkit as tk
from tensorkit.utils.data import (BatchSampler, ConcatDataset, DataLoader, Dataset, IterableDataset, RandomSampler,
                                  SequentialSampler, Subset, TensorDataset, WeightedRandomSampler, default_collate,
                                  get_worker_info, random_split)

Point = collections.namedtuple("Point", "x y")


def _rows(n=10, d=2):
    return TensorDataset(tk.arange(n * d, dtype=tk.float32).reshape(n, d), tk.arange(n))


def _labels(loader):
    return [b[1].tolist() for b in loader]


class Squares(Dataset):
    """Sample i is a dict, so collation of dicts, tensors and numbers crosses the process boundary."""

    def __len__(self):
        return 12

    def __getitem__(self, i):
        return {"x": tk.full((3,), float(i)), "i": i, "name": f"s{i}"}


class Raises(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        if i == 5:
            raise ValueError(f"bad sample {i}")
        return i


class Dies(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        if i == 3:
            os._exit(3)
        return i


class Slow(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        time.sleep(5)
        return i


class Pids(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return os.getpid()


class Shards(IterableDataset):
    """0..n-1, each worker taking every num_workers-th item (PyTorch's documented sharding)."""

    def __init__(self, n):
        self.n = n

    def __iter__(self):
        info = get_worker_info()
        start, step = (0, 1) if info is None else (info.id, info.num_workers)
        return iter(range(start, self.n, step))

    def __len__(self):
        return self.n


# ---- datasets --------------------------------------------------------------------------------------------
def test_tensor_dataset_and_errors():
    ds = _rows(5)
    x, y = ds[3]
    assert len(ds) == 5 and x.tolist() == [6.0, 7.0] and y.item() == 3
    with pytest.raises(ValueError, match="first dimension"):
        TensorDataset(tk.zeros(3, 2), tk.zeros(4))


def test_concat_and_subset():
    a, b = _rows(3), _rows(4)
    c = ConcatDataset([a, b])
    assert len(c) == 7 and c.cumulative_sizes == [3, 7]
    assert [int(c[i][1]) for i in range(7)] == [0, 1, 2, 0, 1, 2, 3] and int(c[-1][1]) == 3
    with pytest.raises(IndexError):
        c[7]
    s = Subset(b, [3, 1])
    assert len(s) == 2 and int(s[0][1]) == 3 and int(s[1][1]) == 1
    assert len(a + b) == 7


def test_random_split_lengths_fractions_and_generator():
    parts = random_split(range(10), [3, 7], generator=tk.Generator().manual_seed(1))
    again = random_split(range(10), [3, 7], generator=tk.Generator().manual_seed(1))
    assert [len(p) for p in parts] == [3, 7]
    assert sorted(list(parts[0]) + list(parts[1])) == list(range(10))
    assert [list(p) for p in parts] == [list(p) for p in again]
    # fractions: floor(10 * f) = 3, 3, 3, and the remainder goes round-robin from the first (PyTorch's rule)
    assert [len(p) for p in random_split(range(10), [0.33, 0.33, 0.34])] == [4, 3, 3]
    with pytest.raises(ValueError, match="sum of input lengths"):
        random_split(range(10), [3, 3])


def test_random_split_lengths_as_torch():
    data = pytest.importorskip("torch.utils.data")
    for fracs in ([0.33, 0.33, 0.34], [0.5, 0.5], [0.1, 0.2, 0.7], [0.25] * 4):
        for n in (7, 10, 13):
            want = [len(p) for p in data.random_split(range(n), fracs)]
            assert [len(p) for p in random_split(range(n), fracs)] == want, (fracs, n)


# ---- samplers --------------------------------------------------------------------------------------------
def test_sequential_and_batch_sampler():
    assert list(SequentialSampler(range(4))) == [0, 1, 2, 3]
    assert list(BatchSampler(range(5), 2, drop_last=False)) == [[0, 1], [2, 3], [4]]
    assert list(BatchSampler(range(5), 2, drop_last=True)) == [[0, 1], [2, 3]]
    assert len(BatchSampler(range(5), 2, False)) == 3 and len(BatchSampler(range(5), 2, True)) == 2
    with pytest.raises(ValueError, match="batch_size"):
        BatchSampler(range(5), 0, False)


def test_random_sampler_permutation_and_replacement():
    g = tk.Generator().manual_seed(3)
    order = list(RandomSampler(range(50), generator=g))
    assert sorted(order) == list(range(50)) and order != list(range(50))
    assert list(RandomSampler(range(50), generator=tk.Generator().manual_seed(3))) == order
    # num_samples > len without replacement: whole passes, then a partial one
    more = list(RandomSampler(range(5), num_samples=12, generator=g))
    assert len(more) == 12 and sorted(more[:5]) == sorted(more[5:10]) == list(range(5))
    # with replacement: uniform over the keys (chi-square, 9 dof, 99.9% quantile 27.9)
    draws = np.array(list(RandomSampler(range(10), replacement=True, num_samples=20000, generator=g)))
    counts = np.bincount(draws, minlength=10)
    assert ((counts - 2000) ** 2 / 2000).sum() < 27.9


def test_weighted_random_sampler_distribution():
    w = [1.0, 0.0, 2.0, 7.0]
    draws = np.array(list(WeightedRandomSampler(w, 20000, generator=tk.Generator().manual_seed(0))))
    freq = np.bincount(draws, minlength=4) / 20000
    np.testing.assert_allclose(freq, np.array(w) / 10, atol=0.015)
    assert freq[1] == 0
    once = list(WeightedRandomSampler(w, 3, replacement=False, generator=tk.Generator().manual_seed(0)))
    assert sorted(once) == [0, 2, 3]
    # without replacement the first draw follows the weights: key 3 first about 70% of the time
    firsts = [next(iter(WeightedRandomSampler(w, 1, replacement=False, generator=tk.Generator().manual_seed(s))))
              for s in range(600)]
    assert abs(firsts.count(3) / 600 - 0.7) < 0.07
    with pytest.raises(RuntimeError):
        WeightedRandomSampler(w, 4, replacement=False)


# ---- collation -------------------------------------------------------------------------------------------
def test_default_collate_types():
    out = default_collate([(tk.tensor([1.0, 2.0]), 0, 0.5, "a"), (tk.tensor([3.0, 4.0]), 1, 1.5, "b")])
    assert isinstance(out, list) and len(out) == 4            # tuples become lists, as PyTorch
    assert out[0].tolist() == [[1.0, 2.0], [3.0, 4.0]] and out[0].dtype == tk.float32
    assert out[1].tolist() == [0, 1] and out[1].dtype == tk.int64
    assert out[2].tolist() == [0.5, 1.5] and out[2].dtype == tk.float64
    assert out[3] == ["a", "b"]
    d = default_collate([{"a": np.zeros(2, np.float32), "b": np.int32(3)},
                         {"a": np.ones(2, np.float32), "b": np.int32(4)}])
    assert d["a"].tolist() == [[0, 0], [1, 1]] and d["a"].dtype == tk.float32
    assert d["b"].tolist() == [3, 4] and d["b"].dtype == tk.int32
    p = default_collate([Point(1, 2.0), Point(3, 4.0)])
    assert isinstance(p, Point) and p.x.tolist() == [1, 3] and p.y.dtype == tk.float64
    assert default_collate([True, False]).dtype == tk.bool
    with pytest.raises(RuntimeError, match="equal size"):
        default_collate([[1, 2], [3]])
    with pytest.raises(TypeError, match="default_collate"):
        default_collate([object(), object()])


def test_default_collate_as_torch():
    torch = pytest.importorskip("torch")
    from torch.utils.data import default_collate as tdc
    batch = [{"x": np.arange(6, dtype=np.float32).reshape(2, 3) + k, "n": k, "f": k / 2, "s": "x", "t": (k, [k, 1.0])}
             for k in range(3)]
    got, want = default_collate(batch), tdc(batch)

    def same(a, b):
        if isinstance(b, torch.Tensor):
            assert str(a.dtype).split(".")[-1] == str(b.dtype).split(".")[-1]
            np.testing.assert_array_equal(a.numpy(), b.numpy())
        elif isinstance(b, dict):
            assert a.keys() == b.keys()
            for k in b:
                same(a[k], b[k])
        elif isinstance(b, (list, tuple)) and not isinstance(b, str):
            assert type(a) is type(b) and len(a) == len(b)
            for x, y in zip(a, b):
                same(x, y)
        else:
            assert a == b

    same(got, want)


# ---- DataLoader in the main process ----------------------------------------------------------------------
def test_loader_order_shapes_and_drop_last():
    ds = _rows(10)
    batches = list(DataLoader(ds, batch_size=4))
    assert [b[0].shape for b in batches] == [(4, 2), (4, 2), (2, 2)]
    assert batches[1][0].tolist() == [[8, 9], [10, 11], [12, 13], [14, 15]]
    assert _labels(DataLoader(ds, batch_size=4, drop_last=True)) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert len(DataLoader(ds, batch_size=4)) == 3 and len(DataLoader(ds, batch_size=4, drop_last=True)) == 2
    single = list(DataLoader(ds, batch_size=None))
    assert len(single) == 10 and single[2][0].tolist() == [4.0, 5.0]
    custom = DataLoader(ds, batch_sampler=[[9, 0], [3]])
    assert _labels(custom) == [[9, 0], [3]]
    # TensorDataset + default_collate gathers rows in one index_select: same batches as collating samples
    slow = DataLoader(ds, batch_size=4, collate_fn=lambda b: default_collate(b))
    for fast_b, slow_b in zip(batches, slow, strict=True):
        assert [t.tolist() for t in fast_b] == [t.tolist() for t in slow_b]
        assert [t.dtype for t in fast_b] == [t.dtype for t in slow_b]
    with pytest.raises(ValueError, match="mutually exclusive"):
        DataLoader(ds, sampler=SequentialSampler(ds), shuffle=True)


def test_loader_as_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal((11, 3)).astype(np.float32)
    ours = DataLoader(TensorDataset(tk.tensor(x), tk.arange(11)), batch_size=4)
    theirs = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.tensor(x), torch.arange(11)),
                                         batch_size=4)
    for (a, i), (b, j) in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
        np.testing.assert_array_equal(i.numpy(), j.numpy())


def test_shuffle_generator_reproducible():
    ds = _rows(20)

    def epoch(seed):
        return sum(_labels(DataLoader(ds, batch_size=6, shuffle=True, generator=tk.Generator().manual_seed(seed))), [])

    a = epoch(7)
    assert sorted(a) == list(range(20)) and a != list(range(20))
    assert epoch(7) == a and epoch(8) != a
    tk.manual_seed(5)
    b = sum(_labels(DataLoader(ds, batch_size=6, shuffle=True)), [])
    tk.manual_seed(5)
    assert sum(_labels(DataLoader(ds, batch_size=6, shuffle=True)), []) == b


def test_iterable_dataset_main_process():
    assert _flat(DataLoader(Shards(7), batch_size=3)) == list(range(7))
    assert [b.tolist() for b in DataLoader(Shards(7), batch_size=3, drop_last=True)] == [[0, 1, 2], [3, 4, 5]]
    assert len(DataLoader(Shards(7), batch_size=3)) == 3
    with pytest.raises(ValueError, match="shuffle"):
        DataLoader(Shards(7), shuffle=True)


def _flat(loader):
    return sum((b.tolist() for b in loader), [])


def test_pin_memory_without_cuda_warns(monkeypatch):
    monkeypatch.setattr(tk.cuda, "is_available", lambda: False)
    with pytest.warns(UserWarning, match="pin_memory"):
        batches = list(DataLoader(_rows(4), batch_size=2, pin_memory=True))
    assert _labels_of(batches) == [[0, 1], [2, 3]]


def test_pin_memory_with_cuda_pins_each_tensor(monkeypatch):
    calls = []
    monkeypatch.setattr(tk.cuda, "is_available", lambda: True)
    monkeypatch.setattr(tk.Tensor, "pin_memory", lambda self, *a: calls.append(self.shape) or self)
    batches = list(DataLoader(_rows(4), batch_size=2, pin_memory=True))
    assert _labels_of(batches) == [[0, 1], [2, 3]] and len(calls) == 4


def _labels_of(batches):
    return [b[1].tolist() for b in batches]


# ---- worker processes ------------------------------------------------------------------------------------
def test_workers_same_batches_as_main_process():
    ds = Squares()

    def run(workers):
        loader = DataLoader(ds, batch_size=5, shuffle=True, num_workers=workers,
                            generator=tk.Generator().manual_seed(2))
        return [(b["x"].tolist(), b["i"].tolist(), b["name"]) for b in loader]

    main = run(0)
    assert sorted(sum((i for _, i, _ in main), [])) == list(range(12)) and len(main) == 3
    assert run(2) == main


def test_workers_lambda_collate_fn_fork_and_spawn():
    ds = _rows(6)
    for ctx in ("fork", "spawn"):
        loader = DataLoader(ds, batch_size=4, num_workers=2, multiprocessing_context=ctx,
                            collate_fn=lambda b: [int(y) * 10 for _, y in b])
        assert list(loader) == [[0, 10, 20, 30], [40, 50]], ctx


def test_worker_exception_shows_worker_traceback():
    loader = DataLoader(Raises(), batch_size=2, num_workers=2)
    with pytest.raises(ValueError) as e:
        list(loader)
    msg = str(e.value)
    assert "DataLoader worker process" in msg and "Traceback" in msg and "__getitem__" in msg
    assert "bad sample 5" in msg


def test_worker_that_dies_is_an_error_not_a_hang():
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="exit code 3"):
        list(DataLoader(Dies(), batch_size=2, num_workers=2))
    assert time.monotonic() - start < 10


def test_timeout():
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="timed out after 0.3 seconds"):
        next(iter(DataLoader(Slow(), batch_size=2, num_workers=1, timeout=0.3)))
    assert time.monotonic() - start < 4.5       # includes terminating the sleeping worker


def test_iterable_dataset_sharded_across_workers():
    loader = DataLoader(Shards(11), batch_size=2, num_workers=2)
    # worker 0 has 0 2 4 6 8 10, worker 1 has 1 3 5 7 9; batches come back alternating (PyTorch's order)
    assert [b.tolist() for b in loader] == [[0, 2], [1, 3], [4, 6], [5, 7], [8, 10], [9]]
    assert get_worker_info() is None


def test_persistent_workers_reused_and_seeds():
    loader = DataLoader(Pids(), batch_size=1, num_workers=2, persistent_workers=True,
                        worker_init_fn=lambda w: np.random.seed(w))
    first = [int(b) for b in loader]
    second = [int(b) for b in loader]
    assert len(set(first)) == 2 and os.getpid() not in first
    assert first == second                               # same processes, same round-robin
    workers = loader._iterator._pool.workers
    assert all(p.is_alive() for p in workers)
    del loader
    gc.collect()                                         # loader <-> its persistent iterator is a cycle
    for p in workers:
        p.join(3)
        assert not p.is_alive()
    # iterable dataset, persistent: each epoch restarts every worker's iterator, also after a break
    loader = DataLoader(Shards(5), batch_size=2, num_workers=2, persistent_workers=True)
    assert _flat(loader) == [0, 2, 1, 3, 4]
    for b in loader:
        break
    assert _flat(loader) == [0, 2, 1, 3, 4]
    ds = _rows(10)
    loader = DataLoader(ds, batch_size=3, num_workers=2, persistent_workers=True)
    next(iter(loader))
    assert _labels(loader) == _labels(DataLoader(ds, batch_size=3))


def test_workers_shut_down_on_break_and_garbage_collection():
    it = iter(DataLoader(_rows(40), batch_size=2, num_workers=2))
    next(it)
    workers = list(it._pool.workers)
    del it
    for p in workers:
        p.join(3)
        assert not p.is_alive()
    loader = DataLoader(_rows(8), batch_size=2, num_workers=2)
    it = iter(loader)
    assert len(list(it)) == 4 and all(not p.is_alive() for p in it._pool.workers)


class RandomPerWorker(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        info = get_worker_info()
        return tk.rand(()).item(), info.id, info.seed


def test_worker_seeds_differ():
    out = list(DataLoader(RandomPerWorker(), batch_size=None, num_workers=2,
                          generator=tk.Generator().manual_seed(0)))
    draws = {w: r for r, w, _ in out}
    seeds = {w: s for _, w, s in out}
    assert draws[0] != draws[1] and seeds[1] == seeds[0] + 1


def test_start_method_avoids_fork_after_gnu_openmp(monkeypatch):
    import numba

    from tensorkit import cuda
    from tensorkit.utils.data import dataloader
    monkeypatch.setattr(cuda, "_RT", None)        # as before CUDA starts (on a GPU it may have, in this worker)
    monkeypatch.setattr(numba, "threading_layer", lambda: "omp")     # a parallel kernel has run here
    assert dataloader._context(None).get_start_method() in ("forkserver", "spawn")
    monkeypatch.setattr(numba, "threading_layer", lambda: "workqueue")
    assert dataloader._context(None).get_start_method() == "fork"
    assert dataloader._context("spawn").get_start_method() == "spawn"
