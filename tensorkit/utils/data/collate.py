"""Turning a list of samples into a batch: ``default_collate`` (PyTorch's rules) and
``default_convert`` (the same conversions without batching, for ``batch_size=None``)."""
from __future__ import annotations

import collections.abc as abc

import numpy as np

from ... import dtypes as D
from ..._tensor import Tensor
from ...ops.creation import as_tensor, from_numpy, tensor
from ...ops.shape import stack


def _is_namedtuple(x) -> bool:
    return isinstance(x, tuple) and hasattr(x, "_fields")


def _numeric_array(a: np.ndarray) -> bool:
    return a.dtype.kind in "biufc"


def _stack(batch: list) -> Tensor:
    dtype = batch[0].dtype
    if dtype is not D.bfloat16 and all(t.dtype is dtype and t.device.type == "cpu" and not t.requires_grad
                                       for t in batch):
        # One numpy copy into a fresh buffer: the common case (rows of a dataset) without a
        # dispatcher call per sample.
        try:
            return from_numpy(np.stack([t._np() for t in batch]))
        except ValueError:
            shapes = sorted({tuple(t.shape) for t in batch})
            raise RuntimeError(f"default_collate: stack expects each tensor to be equal size, but got shapes "
                               f"{shapes}") from None
    return stack(batch, 0)


def default_collate(batch: list):
    """Collate a list of samples into a batch, by the type of the first sample (PyTorch's rules):

    * tensors -> stacked along a new first dimension;
    * numpy arrays and numpy scalars -> tensors, stacked; python floats -> a float64 tensor, ints ->
      int64, bools -> bool (PyTorch's dtypes);
    * strings and bytes -> left as a list;
    * mappings -> a mapping of the same keys, each collated; namedtuples -> the namedtuple of the
      collated fields; other sequences -> a list (tuples become lists, as PyTorch) of the collated
      positions, which must all have one length.

    Example::

        >>> default_collate([(tk.tensor([1., 2.]), 0), (tk.tensor([3., 4.]), 1)])
        [tensor([[1., 2.],
                [3., 4.]]), tensor([0, 1])]
    """
    elem = batch[0]
    if isinstance(elem, Tensor):
        return _stack(batch)
    if isinstance(elem, np.ndarray):
        if not _numeric_array(elem):
            raise TypeError(f"default_collate: batch must contain tensors, numpy arrays, numbers, dicts or lists; "
                            f"found a numpy array of dtype {elem.dtype}")
        return _stack([as_tensor(np.ascontiguousarray(b)) for b in batch])
    if isinstance(elem, np.generic) and not isinstance(elem, (np.str_, np.bytes_)):
        return tensor(np.array(batch))
    if isinstance(elem, bool):
        return tensor(batch, dtype=D.bool_)
    if isinstance(elem, float):
        return tensor(batch, dtype=D.float64)
    if isinstance(elem, int):
        return tensor(batch, dtype=D.int64)
    if isinstance(elem, (str, bytes)):
        return batch
    if isinstance(elem, abc.Mapping):
        out = {key: default_collate([d[key] for d in batch]) for key in elem}
        try:
            return type(elem)(out) if not isinstance(elem, dict) or type(elem) is not dict else out
        except TypeError:          # a mapping type that cannot be built from a dict
            return out
    if _is_namedtuple(elem):
        return type(elem)(*(default_collate(list(s)) for s in zip(*batch)))
    if isinstance(elem, abc.Sequence):
        n = len(elem)
        if any(len(s) != n for s in batch):
            raise RuntimeError("default_collate: each element in list of batch should be of equal size")
        columns = [default_collate(list(s)) for s in zip(*batch)]
        if isinstance(elem, tuple):
            return columns
        try:
            return type(elem)(columns)
        except TypeError:
            return columns
    raise TypeError(f"default_collate: batch must contain tensors, numpy arrays, numbers, dicts or lists; "
                    f"found {type(elem)}")


def default_convert(data):
    """The conversions of ``default_collate`` without batching: numpy arrays (numeric) become
    tensors, containers are converted element by element, everything else is left alone."""
    if isinstance(data, Tensor):
        return data
    if isinstance(data, np.ndarray):
        return as_tensor(data) if _numeric_array(data) else data
    if isinstance(data, np.generic) and not isinstance(data, (np.str_, np.bytes_)):
        return as_tensor(data)
    if isinstance(data, (str, bytes)):
        return data
    if isinstance(data, abc.Mapping):
        out = {k: default_convert(v) for k, v in data.items()}
        try:
            return type(data)(out) if type(data) is not dict else out
        except TypeError:
            return out
    if _is_namedtuple(data):
        return type(data)(*(default_convert(d) for d in data))
    if isinstance(data, tuple):
        return [default_convert(d) for d in data]
    if isinstance(data, abc.Sequence):
        try:
            return type(data)([default_convert(d) for d in data])
        except TypeError:
            return [default_convert(d) for d in data]
    return data
