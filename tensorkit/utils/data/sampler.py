"""Samplers: iterables of dataset keys (or of lists of keys, for ``BatchSampler``), as PyTorch's
``torch.utils.data.sampler``. Random samplers draw from a ``tk.Generator``, so an order is
reproduced by seeding it; without one, each epoch takes a fresh seed from the default generator."""
from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import numpy as np

from ..._tensor import Tensor
from ...ops.creation import Generator, rand, randint, randperm, tensor


class Sampler:
    """Base class: define ``__iter__`` (the keys) and, where known, ``__len__``."""

    def __init__(self, data_source=None):
        pass

    def __iter__(self) -> Iterator:
        raise NotImplementedError


def _seed_from(generator) -> int:
    """A 63-bit seed drawn from ``generator`` (the default generator when None)."""
    return int(randint(0, 2 ** 62, (), generator=generator).item())


def _epoch_generator(generator) -> Generator:
    return generator if generator is not None else Generator().manual_seed(_seed_from(None))


class SequentialSampler(Sampler):
    """0, 1, ..., len(data_source) - 1."""

    def __init__(self, data_source):
        self.data_source = data_source

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self.data_source)))

    def __len__(self) -> int:
        return len(self.data_source)


class RandomSampler(Sampler):
    """Random keys: a permutation (each key once per pass; ``num_samples`` > len takes several
    passes), or with ``replacement=True`` independent uniform draws.

    Args:
        data_source: the dataset (only its length is used).
        replacement: draw with replacement.
        num_samples: keys per epoch (default ``len(data_source)``).
        generator: a ``tk.Generator`` for a reproducible order.
    """

    def __init__(self, data_source, replacement: bool = False, num_samples: int | None = None, generator=None):
        if not isinstance(replacement, bool):
            raise TypeError(f"RandomSampler: replacement should be a boolean value, got {replacement!r}")
        self.data_source, self.replacement, self._num_samples, self.generator = \
            data_source, replacement, num_samples, generator
        if not isinstance(self.num_samples, int) or self.num_samples <= 0:
            raise ValueError(f"RandomSampler: num_samples should be a positive integer value, got {self.num_samples}")

    @property
    def num_samples(self) -> int:
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def __iter__(self) -> Iterator[int]:
        n, k = len(self.data_source), self.num_samples
        g = _epoch_generator(self.generator)
        if self.replacement:
            for start in range(0, k, 32768):
                yield from randint(0, n, (min(32768, k - start),), generator=g).tolist()
            return
        for _ in range(k // n):
            yield from randperm(n, generator=g).tolist()
        if k % n:
            yield from randperm(n, generator=g).tolist()[:k % n]

    def __len__(self) -> int:
        return self.num_samples


class SubsetRandomSampler(Sampler):
    """The given keys in a random order."""

    def __init__(self, indices: Sequence[int], generator=None):
        self.indices, self.generator = indices, generator

    def __iter__(self) -> Iterator[int]:
        for i in randperm(len(self.indices), generator=_epoch_generator(self.generator)).tolist():
            yield self.indices[i]

    def __len__(self) -> int:
        return len(self.indices)


class WeightedRandomSampler(Sampler):
    """Keys 0..len(weights)-1 drawn with probability proportional to ``weights``.

    With ``replacement=False`` a key is drawn at most once (``num_samples <= len(weights)``): the
    draw is weighted sampling without replacement (as ``torch.multinomial``), done by keeping the
    ``num_samples`` largest keys ``u ** (1 / w)`` of uniform ``u`` (Efraimidis-Spirakis).
    """

    def __init__(self, weights: Sequence[float], num_samples: int, replacement: bool = True, generator=None):
        if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples <= 0:
            raise ValueError(f"WeightedRandomSampler: num_samples should be a positive integer value, "
                             f"got {num_samples!r}")
        if not isinstance(replacement, bool):
            raise ValueError(f"WeightedRandomSampler: replacement should be a boolean value, got {replacement!r}")
        w = np.asarray(weights.numpy() if isinstance(weights, Tensor) else weights, dtype=np.float64)
        if w.ndim != 1:
            raise ValueError(f"WeightedRandomSampler: weights should be a 1-d sequence but given weights have "
                             f"shape {w.shape}")
        if not np.all(np.isfinite(w)) or np.any(w < 0) or not w.sum() > 0:
            raise RuntimeError("WeightedRandomSampler: weights must be finite, non-negative and not all zero")
        if not replacement and num_samples > np.count_nonzero(w):
            raise RuntimeError(f"WeightedRandomSampler: cannot draw {num_samples} samples without replacement "
                               f"from {np.count_nonzero(w)} non-zero weights")
        self.weights = tensor(w)
        self.num_samples, self.replacement, self.generator = num_samples, replacement, generator
        self._w = w

    def __iter__(self) -> Iterator[int]:
        g = _epoch_generator(self.generator)
        u = rand(self.num_samples if self.replacement else len(self._w), dtype="float64", generator=g).numpy()
        if self.replacement:
            cdf = np.cumsum(self._w)
            keys = np.searchsorted(cdf, u * cdf[-1], side="right")
            keys = np.minimum(keys, len(cdf) - 1)
        else:
            with np.errstate(divide="ignore"):
                score = np.log(u) / self._w           # log(u ** (1/w)); -inf for w == 0
            keys = np.argsort(-score, kind="stable")[:self.num_samples]
        return iter(keys.tolist())

    def __len__(self) -> int:
        return self.num_samples


class BatchSampler(Sampler):
    """Groups the keys of ``sampler`` into lists of ``batch_size``; ``drop_last`` drops a last
    shorter list.

    Example::

        >>> list(BatchSampler(SequentialSampler(range(5)), batch_size=2, drop_last=False))
        [[0, 1], [2, 3], [4]]
    """

    def __init__(self, sampler: Sampler | Iterable[int], batch_size: int, drop_last: bool):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise ValueError(f"BatchSampler: batch_size should be a positive integer value, got {batch_size!r}")
        if not isinstance(drop_last, bool):
            raise ValueError(f"BatchSampler: drop_last should be a boolean value, got {drop_last!r}")
        self.sampler, self.batch_size, self.drop_last = sampler, batch_size, drop_last

    def __iter__(self) -> Iterator[list[int]]:
        it = iter(self.sampler)
        while True:
            batch = [k for _, k in zip(range(self.batch_size), it)]
            if not batch or (self.drop_last and len(batch) < self.batch_size):
                return
            yield batch

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else (n + self.batch_size - 1) // self.batch_size
