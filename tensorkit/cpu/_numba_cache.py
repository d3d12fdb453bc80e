"""Numba's on-disk cache, made safe for several processes filling it at once.

Numba keeps one index file per cached function (signature -> data file ``<name>.N.nbc``) and
updates it read-modify-write without a lock: two processes compiling different overloads of
one function at the same time (pytest-xdist workers, DataLoader workers, two training scripts
on a cold cache) can both take data file N, and the index one of them leaves then maps a
signature to the other one's machine code. A later process loads it for the wrong argument
types: on the H200, 16 test workers on a cold cache left float32 kernels that every later
process failed to call ("can't unbox array from PyObject"); with types of the same layout
it would run and compute garbage. Readers have a window too: ``save`` writes the index before
the data file, so a reader can pair a new index with an old generation's data file.

``install()`` wraps ``IndexDataCacheFile.save`` in an exclusive and ``load`` in a shared
``flock`` on a lock file beside the index (one per cached function): saves are serial and a
load never sees half of one. Only the first call of a signature in a process touches the
cache, so the locks cost nothing on the hot path. Where ``fcntl`` is missing (Windows) Numba
is left as it is.
"""
from __future__ import annotations

import contextlib
import functools

try:
    import fcntl
except ImportError:             # pragma: no cover  (Windows)
    fcntl = None


@contextlib.contextmanager
def _flock(path: str, mode: int):
    with open(path, "a") as f:
        fcntl.flock(f, mode)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _locked(method, mode_name: str):
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with _flock(self._index_path + ".lock", getattr(fcntl, mode_name)):
            return method(self, *args, **kwargs)
    wrapper._tk_locked = True
    return wrapper


def install() -> None:
    """Lock Numba's cache index files (idempotent)."""
    if fcntl is None:
        return
    from numba.core import caching
    cls = caching.IndexDataCacheFile
    if getattr(cls.save, "_tk_locked", False):
        return
    cls.save = _locked(cls.save, "LOCK_EX")
    cls.load = _locked(cls.load, "LOCK_SH")
