"""The DataLoader's worker process: fetch the batches the main process asks for, send them back.

Protocol. The main process puts tasks ``(epoch, idx, index)`` on this worker's index queue
(``index`` is a list of keys, one key, or for iterable datasets the batch size); the worker
answers ``(epoch, idx, data)`` on its own result pipe, in task order. ``data`` is the batch, an
``_ExceptionWrapper`` (the dataset or collate_fn raised) or an ``_IterableEnd`` (its copy of an
iterable dataset is exhausted). A new ``epoch`` restarts the iterable dataset's iterator (persistent
workers). ``None`` on the queue, the done event, or the parent going away ends the loop.
One pipe per worker (not a shared queue) means a worker that dies holds no lock the others need.
"""
from __future__ import annotations

import os
import pickle
import queue
import random
import sys
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np

from ... import dtypes as D
from ...ops.creation import tensor
from ...ops.indexing import index_select
from .collate import default_collate
from .dataset import TensorDataset

_POLL_S = 1.0                   # how often an idle worker checks that its parent is still there
_worker_info = None


@dataclass(frozen=True)
class WorkerInfo:
    """What ``get_worker_info()`` returns inside a worker process."""
    id: int
    num_workers: int
    seed: int
    dataset: Any


def get_worker_info() -> WorkerInfo | None:
    """In a DataLoader worker process, its ``WorkerInfo`` (``id``, ``num_workers``, ``seed`` and the
    worker's own copy of ``dataset``); ``None`` in the main process. Use it to shard an
    ``IterableDataset`` or to seed other libraries in ``worker_init_fn``."""
    return _worker_info


_END = object()


class _IterableEnd:
    """A worker's copy of the iterable dataset is exhausted."""

    def __init__(self, worker_id: int):
        self.worker_id = worker_id


class _ExceptionWrapper:
    """An exception raised in a worker, carried to the main process with its formatted traceback
    and re-raised there with the same type (RuntimeError when the type cannot be rebuilt)."""

    def __init__(self, where: str):
        exc_type, exc, _ = sys.exc_info()
        self.exc_type = exc_type
        self.msg = f"Caught {exc_type.__name__} {where}.\nOriginal {''.join(traceback.format_exc())}"
        try:
            pickle.dumps(exc_type)
        except Exception:          # a class defined in a function: the main process cannot name it
            self.exc_type = RuntimeError

    def reraise(self):
        msg = self.msg
        if self.exc_type is KeyError:        # KeyError's str() is the repr of its argument: keep newlines
            msg = _KeyErrorMessage(msg)
        try:
            exc = self.exc_type(msg)
        except Exception:
            exc = None
        if not isinstance(exc, BaseException):
            raise RuntimeError(msg) from None
        raise exc


class _KeyErrorMessage(str):
    def __repr__(self):
        return self


def _loop(payload, index_queue, result_conn, done_event, worker_id: int, num_workers: int, base_seed: int,
          is_iterable: bool, auto_collation: bool, drop_last: bool, parent_pid: int) -> None:
    global _worker_info
    import tensorkit as tk

    where = f"in DataLoader worker process {worker_id}"
    init_error = None
    dataset = collate_fn = None
    try:
        if isinstance(payload, bytes):       # spawned worker: the objects come through cloudpickle
            payload = pickle.loads(payload)
        dataset, collate_fn, worker_init_fn = payload
        seed = base_seed + worker_id
        random.seed(seed)
        tk.manual_seed(seed)
        np.random.seed(np.random.SeedSequence([worker_id, base_seed]).generate_state(4))
        _worker_info = WorkerInfo(worker_id, num_workers, seed, dataset)
        if worker_init_fn is not None:
            worker_init_fn(worker_id)
    except Exception:
        init_error = _ExceptionWrapper(where)

    epoch, it, exhausted = None, None, False
    while True:
        try:
            task = index_queue.get(timeout=_POLL_S)
        except queue.Empty:
            if done_event.is_set() or os.getppid() != parent_pid:
                return
            continue
        if task is None:
            return
        if done_event.is_set():
            continue
        task_epoch, idx, index = task
        if init_error is not None:
            data = init_error
        else:
            if is_iterable and task_epoch != epoch:
                epoch, it, exhausted = task_epoch, None, False
            try:
                if is_iterable:
                    if it is None:
                        it = iter(dataset)
                    data = _next_iterable(it, index, auto_collation, drop_last, collate_fn) if not exhausted else _END
                    if data is _END:
                        exhausted, data = True, _IterableEnd(worker_id)
                else:
                    data = _fetch(dataset, index, auto_collation, collate_fn)
            except Exception:
                data = _ExceptionWrapper(where)
        try:
            result_conn.send((task_epoch, idx, data))
        except (BrokenPipeError, EOFError, OSError):
            return                  # the main process stopped listening
        except Exception:           # the batch does not pickle
            try:
                result_conn.send((task_epoch, idx, _ExceptionWrapper(where + " while sending a batch")))
            except Exception:
                return
        del data


def _fetch(dataset, index, auto_collation: bool, collate_fn):
    """A batch (the keys ``index``) or, without auto-collation, one sample of a map-style dataset."""
    if not auto_collation:
        return collate_fn(dataset[index])
    if collate_fn is default_collate and type(dataset) is TensorDataset and index and min(index) >= 0:
        # Stacking rows of a tensor is gathering them: one index_select per tensor gives the same
        # batch as default_collate of the samples without making a view per sample.
        keys = tensor(index, dtype=D.int64)
        return [index_select(t, 0, keys if t.device.type == "cpu" else keys.to(t.device)) for t in dataset.tensors]
    getitems = getattr(dataset, "__getitems__", None)    # a batched fetch, as PyTorch's fetcher
    return collate_fn(getitems(index) if callable(getitems) else [dataset[i] for i in index])


def _next_iterable(it, batch_size, auto_collation: bool, drop_last: bool, collate_fn):
    """The next (collated) batch of ``it``, or _END when it is exhausted."""
    if not auto_collation:
        for sample in it:
            return collate_fn(sample)
        return _END
    batch = [s for _, s in zip(range(batch_size), it)]
    if not batch or (drop_last and len(batch) < batch_size):
        return _END
    return collate_fn(batch)
