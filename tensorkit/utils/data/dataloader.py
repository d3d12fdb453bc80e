"""``DataLoader``: batches of a dataset, in the main process or in worker processes.

With ``num_workers > 0`` each worker is a process (``_worker.py``) with its own index queue
and result pipe. The main process keeps ``prefetch_factor * num_workers`` batches in flight,
handed to the workers round-robin, and yields them in sampler order whatever order they come
back in, so the batches are the same as with ``num_workers=0``. The main process waits on the
result pipes and on the workers' process sentinels together: a worker that dies (killed,
``os._exit``) is a RuntimeError naming it and its exit code at once, never a hang.
"""
from __future__ import annotations

import itertools
import multiprocessing as mp
import signal
import sys
import time
import warnings
import weakref
from multiprocessing import connection as mp_connection
from typing import Any, Callable

from ..._tensor import Tensor
from . import _worker
from ._worker import _END, _ExceptionWrapper, _IterableEnd, _fetch, _next_iterable
from .collate import default_collate, default_convert
from .dataset import Dataset, IterableDataset
from .sampler import BatchSampler, RandomSampler, Sampler, SequentialSampler, _seed_from

_SHUTDOWN_S = 2.0        # how long workers get to finish their current batch and exit before terminate()


class _InfiniteConstantSampler(Sampler):
    """The sampler of an IterableDataset: the keys mean nothing, the dataset's iterator decides."""

    def __iter__(self):
        while True:
            yield None


class DataLoader:
    """Iterate over ``dataset`` in batches, as ``torch.utils.data.DataLoader``.

    Args:
        dataset: a map-style ``Dataset`` (``__getitem__``, ``__len__``) or an ``IterableDataset``.
        batch_size: samples per batch (``None``: no batching; samples are only converted).
        shuffle: a new random order every epoch (a ``RandomSampler``).
        sampler: the keys to load, in order (excludes ``shuffle``).
        batch_sampler: yields lists of keys (excludes ``batch_size``, ``shuffle``, ``sampler``,
            ``drop_last``).
        num_workers: worker processes (0: load in the main process).
        collate_fn: list of samples -> batch (default ``default_collate``).
        pin_memory: put batches in page-locked memory (``Tensor.pin_memory``) when CUDA is
            available; without CUDA it warns and does nothing, as PyTorch.
        drop_last: drop the last batch if it is short.
        timeout: seconds to wait for a batch from the workers before a RuntimeError (0: no limit;
            dead workers are detected either way).
        worker_init_fn: called with the worker id in each worker, after seeding.
        multiprocessing_context: start method or context. Default: ``fork`` on Linux while that is
            safe (no CUDA context and no GNU OpenMP thread pool in this process yet), else a
            ``forkserver`` preloaded with tensorkit, else ``spawn``. Other than under ``fork`` the
            dataset, ``collate_fn`` and ``worker_init_fn`` travel through cloudpickle, so lambdas
            work; the main script is imported again in the workers, so guard it with
            ``if __name__ == '__main__':``.
        generator: ``tk.Generator`` for the shuffle order and the workers' base seed.
        prefetch_factor: batches in flight per worker (default 2 with workers).
        persistent_workers: keep the workers between epochs.

    Each worker seeds ``random``, numpy's global generator and tensorkit's with ``base_seed +
    worker_id`` (``base_seed`` drawn from ``generator`` per epoch), so random augmentation differs
    between workers, unlike a plain fork. A worker's exception is re-raised here with its type and
    the worker's traceback in the message.

    Example::

        >>> ds = TensorDataset(tk.randn(100, 3), tk.arange(100))
        >>> for x, y in DataLoader(ds, batch_size=32, shuffle=True, num_workers=2):
        ...     pass
    """

    def __init__(self, dataset: Dataset, batch_size: int | None = 1, shuffle: bool | None = None,
                 sampler: Sampler | None = None, batch_sampler: Sampler | None = None, num_workers: int = 0,
                 collate_fn: Callable | None = None, pin_memory: bool = False, drop_last: bool = False,
                 timeout: float = 0, worker_init_fn: Callable | None = None, multiprocessing_context=None,
                 generator=None, *, prefetch_factor: int | None = None, persistent_workers: bool = False,
                 pin_memory_device: str = ""):
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"DataLoader: num_workers option should be a non-negative integer, got {num_workers!r}")
        if timeout < 0:
            raise ValueError(f"DataLoader: timeout option should be non-negative, got {timeout}")
        if num_workers == 0 and prefetch_factor is not None:
            raise ValueError("DataLoader: prefetch_factor option could only be specified in multiprocessing; "
                             "let num_workers > 0 to enable multiprocessing, otherwise set prefetch_factor to None")
        if num_workers > 0 and prefetch_factor is None:
            prefetch_factor = 2
        if prefetch_factor is not None and prefetch_factor < 1:
            raise ValueError(f"DataLoader: prefetch_factor should be a positive integer, got {prefetch_factor}")
        if persistent_workers and num_workers == 0:
            raise ValueError("DataLoader: persistent_workers option needs num_workers > 0")

        self._iterable = isinstance(dataset, IterableDataset)
        if self._iterable:
            if shuffle not in (None, False):
                raise ValueError(f"DataLoader with IterableDataset: expected unspecified shuffle option, "
                                 f"but got shuffle={shuffle}")
            if sampler is not None:
                raise ValueError("DataLoader with IterableDataset: expected unspecified sampler option")
            if batch_sampler is not None:
                raise ValueError("DataLoader with IterableDataset: expected unspecified batch_sampler option")
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: sampler option is mutually exclusive with shuffle")
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ValueError("DataLoader: batch_sampler option is mutually exclusive with batch_size, shuffle, "
                                 "sampler, and drop_last")
            batch_size, drop_last = None, False
        elif batch_size is None and drop_last:
            raise ValueError("DataLoader: batch_size=None option disables auto-batching and is mutually exclusive "
                             "with drop_last")
        if sampler is None:
            if self._iterable:
                sampler = _InfiniteConstantSampler()
            elif shuffle:
                sampler = RandomSampler(dataset, generator=generator)
            else:
                sampler = SequentialSampler(dataset)
        if batch_size is not None and batch_sampler is None:
            batch_sampler = BatchSampler(sampler, batch_size, drop_last)

        self.dataset, self.batch_size, self.drop_last = dataset, batch_size, drop_last
        self.sampler, self.batch_sampler = sampler, batch_sampler
        self.num_workers, self.prefetch_factor, self.persistent_workers = num_workers, prefetch_factor, \
            persistent_workers
        self.collate_fn = collate_fn if collate_fn is not None else \
            (default_collate if batch_sampler is not None else default_convert)
        self.pin_memory, self.pin_memory_device = pin_memory, pin_memory_device
        self.timeout, self.worker_init_fn, self.generator = timeout, worker_init_fn, generator
        self.multiprocessing_context = multiprocessing_context
        self._iterator = None

    @property
    def _auto_collation(self) -> bool:
        return self.batch_sampler is not None

    @property
    def _index_sampler(self):
        return self.batch_sampler if self._auto_collation else self.sampler

    def __iter__(self):
        if self.num_workers == 0:
            return _SingleProcessIter(self)
        if not self.persistent_workers:
            return _MultiProcessIter(self)
        if self._iterator is None or self._iterator._pool.closed:
            self._iterator = _MultiProcessIter(self)
        else:
            self._iterator._reset()
        return self._iterator

    def __len__(self) -> int:
        if self._iterable:
            n = len(self.dataset)        # TypeError if the stream has no length, as PyTorch
            if self.batch_size is not None:
                n = n // self.batch_size if self.drop_last else -(-n // self.batch_size)
            return n
        return len(self._index_sampler)


def _pin(data):
    """``data`` with every tensor in page-locked memory (containers rebuilt as default_collate makes them)."""
    if isinstance(data, Tensor):
        return data.pin_memory()
    if isinstance(data, dict):
        return type(data)({k: _pin(v) for k, v in data.items()})
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return type(data)(*(_pin(v) for v in data))
    if isinstance(data, (list, tuple)):
        return type(data)(_pin(v) for v in data)
    return data


class _BaseIter:
    def __init__(self, loader: DataLoader):
        self._loader = loader
        self._base_seed = _seed_from(loader.generator)
        self._pin_memory = loader.pin_memory
        if loader.pin_memory:
            from ... import cuda
            if not cuda.is_available():
                warnings.warn("'pin_memory' argument is set as true but no accelerator is found, then device pinned "
                              "memory won't be used.", stacklevel=3)
                self._pin_memory = False

    def __iter__(self):
        return self

    def __len__(self) -> int:
        return len(self._loader)

    def _finish(self, data):
        return _pin(data) if self._pin_memory else data


class _SingleProcessIter(_BaseIter):
    def __init__(self, loader: DataLoader):
        super().__init__(loader)
        self._it = iter(loader.dataset) if loader._iterable else None
        self._sampler_iter = None if loader._iterable else iter(loader._index_sampler)

    def __next__(self):
        ld = self._loader
        if ld._iterable:
            data = _next_iterable(self._it, ld.batch_size, ld._auto_collation, ld.drop_last, ld.collate_fn)
            if data is _END:
                raise StopIteration
            return self._finish(data)
        return self._finish(_fetch(ld.dataset, next(self._sampler_iter), ld._auto_collation, ld.collate_fn))


def _fork_is_safe() -> bool:
    """Whether a forked worker can run everything this process can."""
    from ... import cuda
    if cuda._RT is not None:                 # a CUDA context does not survive fork
        return False
    import numba
    try:
        # GNU OpenMP aborts a forked child at its first parallel region ("fork() called from a
        # process already using GNU OpenMP"), and Numba's 'omp' layer is GNU OpenMP on Linux.
        return numba.threading_layer() != "omp"
    except ValueError:                       # no parallel kernel has run yet
        return True


_forkserver_preloaded = False


def _context(spec):
    """The multiprocessing context: ``spec`` if given, else fork where it is safe and fast, else a
    fork server that has imported tensorkit (a worker then starts in tens of milliseconds, where
    spawn re-imports everything for each), else spawn."""
    global _forkserver_preloaded
    if spec is not None:
        return mp.get_context(spec) if isinstance(spec, str) else spec
    methods = mp.get_all_start_methods()
    if "fork" in methods and sys.platform == "linux" and _fork_is_safe():
        return mp.get_context("fork")
    if "forkserver" in methods:
        ctx = mp.get_context("forkserver")
        if not _forkserver_preloaded:
            ctx.set_forkserver_preload(["tensorkit"])
            _forkserver_preloaded = True
        return ctx
    return mp.get_context("spawn")


class _Pool:
    """The worker processes and their channels; ``shutdown`` is safe to call any number of times
    (at the end of an epoch, on error, from a finalizer at garbage collection or exit)."""

    def __init__(self, loader: DataLoader, base_seed: int):
        ctx = _context(loader.multiprocessing_context)
        payload: Any = (loader.dataset, loader.collate_fn, loader.worker_init_fn)
        if ctx.get_start_method() != "fork":
            import cloudpickle              # lambdas and local classes, which plain pickle refuses
            payload = cloudpickle.dumps(payload)
        self.closed = False
        self.start_method = ctx.get_start_method()
        self.done_event = ctx.Event()
        self.index_queues, self.readers, self.workers = [], [], []
        try:
            self._start(ctx, loader, payload, base_seed)
        except BaseException:
            self.shutdown()                  # the workers started so far
            raise

    def _start(self, ctx, loader: DataLoader, payload, base_seed: int) -> None:
        import os
        for w in range(loader.num_workers):
            q = ctx.Queue()
            q.cancel_join_thread()           # exit never waits on a feeder thread of a dead worker's queue
            reader, writer = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_worker._loop, daemon=True, name=f"tk-DataLoader-worker-{w}",
                            args=(payload, q, writer, self.done_event, w, loader.num_workers, base_seed,
                                  loader._iterable, loader._auto_collation, loader.drop_last, os.getpid()))
            p.start()
            writer.close()                   # the worker holds the write end now
            self.index_queues.append(q)
            self.readers.append(reader)
            self.workers.append(p)

    def dead_worker_error(self, w: int) -> RuntimeError:
        p = self.workers[w]
        p.join(0.5)
        code = p.exitcode
        how = f"exit code {code}"
        if code is not None and code < 0:
            try:
                how += f" (killed by signal {signal.Signals(-code).name})"
            except ValueError:
                pass
        hint = ""
        if self.start_method != "fork" and code == 1:
            hint = (f" Under the '{self.start_method}' start method each worker imports the main script again; "
                    "guard the script's code with `if __name__ == '__main__':`.")
        return RuntimeError(f"DataLoader worker {w} (pid {p.pid}) exited unexpectedly with {how}. The dataset, "
                            f"collate_fn or worker_init_fn ended the process (os._exit, a crash, or the OS killed it, "
                            f"e.g. out of memory).{hint}")

    def _drain(self, w: int) -> None:
        try:
            while self.readers[w].poll(0):
                self.readers[w].recv_bytes()
        except (EOFError, OSError):
            pass

    def shutdown(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.done_event.set()
        for q in self.index_queues:
            try:
                q.put(None)
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + _SHUTDOWN_S
        for w, p in enumerate(self.workers):
            while p.is_alive() and time.monotonic() < deadline:
                self._drain(w)               # a worker blocked sending a batch must get to read None
                p.join(0.02)
            if p.is_alive():
                p.terminate()
                p.join(1.0)
        for q in self.index_queues:
            q.close()
        for r in self.readers:
            r.close()


class _MultiProcessIter(_BaseIter):
    def __init__(self, loader: DataLoader):
        super().__init__(loader)
        self._n = loader.num_workers
        self._pool = _Pool(loader, self._base_seed)
        self._finalizer = weakref.finalize(self, self._pool.shutdown)
        self._epoch = -1
        self._reset()

    def _reset(self) -> None:
        """Start an epoch: a fresh sampler pass; results of an earlier epoch still in flight are dropped."""
        ld = self._loader
        self._epoch += 1
        self._sampler_iter = None if ld._iterable else iter(ld._index_sampler)
        self._send_idx = self._rcvd_idx = 0
        self._task_worker: dict[int, int] = {}
        self._results: dict[int, Any] = {}
        self._active = [True] * self._n
        self._worker_cycle = itertools.cycle(range(self._n))
        for _ in range(ld.prefetch_factor * self._n):
            self._try_put_index()

    def _try_put_index(self) -> None:
        ld = self._loader
        if ld._iterable:
            index = ld.batch_size
        else:
            try:
                index = next(self._sampler_iter)
            except StopIteration:
                return
        for _ in range(self._n):
            w = next(self._worker_cycle)
            if self._active[w]:
                break
        else:
            return
        self._pool.index_queues[w].put((self._epoch, self._send_idx, index))
        self._task_worker[self._send_idx] = w
        self._send_idx += 1

    def __next__(self):
        if self._pool.closed:
            raise StopIteration
        while True:
            # tasks of workers whose iterable dataset ran out will never be answered
            while self._rcvd_idx < self._send_idx and self._rcvd_idx not in self._results and \
                    not self._active[self._task_worker[self._rcvd_idx]]:
                del self._task_worker[self._rcvd_idx]
                self._rcvd_idx += 1
            if self._rcvd_idx >= self._send_idx:
                if not self._loader.persistent_workers:
                    self._shutdown()
                raise StopIteration
            if self._rcvd_idx in self._results:
                data = self._results.pop(self._rcvd_idx)
                del self._task_worker[self._rcvd_idx]
                self._rcvd_idx += 1
                self._try_put_index()
                if isinstance(data, _ExceptionWrapper):
                    data.reraise()
                return self._finish(data)
            self._receive()

    def _receive(self) -> None:
        """Wait until at least one result has arrived (or raise: timeout, dead worker)."""
        timeout = self._loader.timeout
        deadline = time.monotonic() + timeout if timeout > 0 else None
        readers, workers = self._pool.readers, self._pool.workers
        waitables = readers + [p.sentinel for p in workers]
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                self._shutdown()
                raise RuntimeError(f"DataLoader timed out after {timeout} seconds waiting for a batch from its "
                                   f"{self._n} worker(s); raise timeout= or make the dataset faster")
            ready = mp_connection.wait(waitables, remaining)
            got = False
            for w, r in enumerate(readers):
                try:
                    while r.poll(0):         # everything a worker sent before it died still counts
                        self._accept(*r.recv())
                        got = True
                except (EOFError, OSError):
                    pass
            if got:
                return
            for w, p in enumerate(workers):
                if p.sentinel in ready or not p.is_alive():
                    err = self._pool.dead_worker_error(w)
                    self._shutdown()
                    raise err

    def _accept(self, epoch: int, idx: int, data) -> None:
        if epoch != self._epoch:
            return                           # a late batch of an epoch that was broken off
        if isinstance(data, _IterableEnd):
            self._active[data.worker_id] = False
            self._try_put_index()
            return
        self._results[idx] = data

    def _shutdown(self) -> None:
        self._finalizer()

    def __del__(self):
        finalizer = getattr(self, "_finalizer", None)    # absent when the workers failed to start
        if finalizer is not None:
            finalizer()
