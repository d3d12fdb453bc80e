"""tensorkit.cpu._numba_cache: Numba's on-disk cache index under concurrent writers."""
from __future__ import annotations

import threading

import pytest

import tensorkit  # noqa: F401  (installs the locks)
from tensorkit.cpu import _numba_cache

caching = pytest.importorskip("numba.core.caching")
pytestmark = pytest.mark.skipif(_numba_cache.fcntl is None, reason="no fcntl (Windows): Numba left as it is")


def test_install_is_idempotent():
    _numba_cache.install()
    save, load = caching.IndexDataCacheFile.save, caching.IndexDataCacheFile.load
    _numba_cache.install()
    assert caching.IndexDataCacheFile.save is save and save._tk_locked and load._tk_locked


def test_concurrent_saves_keep_each_signature_with_its_code(tmp_path):
    """Two writers (two processes compiling different overloads of one function) that read the
    index at the same time would both take data file 1, leaving one signature mapped to the
    other's code; with the lock the second waits, takes file 2, and both load back their own."""
    a = caching.IndexDataCacheFile(str(tmp_path), "kernel", (1.0, 10))
    b = caching.IndexDataCacheFile(str(tmp_path), "kernel", (1.0, 10))
    entered, release = threading.Event(), threading.Event()
    real = a._save_index

    def paused_save_index(overloads):        # writer a stops between reading the index and writing it
        entered.set()
        release.wait(5)
        real(overloads)
    a._save_index = paused_save_index
    ta = threading.Thread(target=a.save, args=("sig-a", "code-a"))
    ta.start()
    assert entered.wait(5)
    tb = threading.Thread(target=b.save, args=("sig-b", "code-b"))
    tb.start()
    tb.join(0.3)
    b_waited = tb.is_alive()
    release.set()
    ta.join(5)
    tb.join(5)
    assert b_waited
    fresh = caching.IndexDataCacheFile(str(tmp_path), "kernel", (1.0, 10))
    assert fresh.load("sig-a") == "code-a" and fresh.load("sig-b") == "code-b"
