"""tensorkit's Triton driver: Triton's CUDA driver with its torch hooks replaced by tensorkit's runtime.

Triton's stock ``CudaDriver`` asks torch for the current device and stream (Triton 3.6
imports torch in ``GPUDriver.__init__`` and in ``is_active``; 3.9 still does for the device
interface, the benchmark's L2-flush buffer and profile scratch). ``ensure_driver()``
installs ``TensorkitCudaDriver`` with ``triton.runtime.driver.set_active`` the first time a
CUDA kernel runs, so launches go on ``tk.cuda.current_stream()`` and torch is never
imported. Nothing here runs at ``import tensorkit``: Triton is imported lazily.

Emulated mode (``TENSORKIT_INTERPRET=1``) needs no driver: Triton's interpreter runs kernels.
"""
from __future__ import annotations

import numpy as np

_installed = None


def _driver_class():
    from triton.backends.nvidia import driver as nv

    from .. import _storage, cuda
    from ..device import device as Device

    class TensorkitCudaDriver(nv.CudaDriver):
        """``CudaDriver`` whose device, stream and capability come from ``tensorkit.cuda``."""

        def __init__(self):
            # CudaDriver.__init__ would call GPUDriver.__init__, which imports torch (3.6; 3.9 when
            # torch is loaded): set what it sets, with our hooks.
            self.utils = nv.CudaUtils()
            self.launcher_cls = nv.CudaLauncher

        def get_current_device(self) -> int:
            index = cuda.current_device()
            cuda._rt().make_current(index)      # launches and module loads use this thread's context
            return index

        def set_current_device(self, device) -> None:
            cuda.set_device(device)

        def get_current_stream(self, device=None) -> int:
            return cuda.current_stream(device).cuda_stream

        def get_device_capability(self, device=None) -> tuple:
            return cuda.get_device_capability(device)

        @staticmethod
        def is_active() -> bool:
            return cuda.is_available() and not cuda.EMULATED

        def get_active_torch_device(self):
            # Triton only passes it back to allocation helpers; a tensorkit device serves them
            return Device("cuda", cuda.current_device())

        def get_device_interface(self):
            # do_bench uses .synchronize(), .Event(enable_timing=True), .current_device(): tk.cuda has them
            return cuda

        def get_empty_cache_for_benchmark(self):
            # 256 MB written before each timed run so that L2 holds none of the inputs
            return _storage.allocate(256 * 1024 * 1024 // 4, np.int32, Device("cuda", cuda.current_device()))

        def clear_cache(self, cache) -> None:
            cuda._rt().zero_(cache)

        def allocate_default_profile_scratch(self, size: int, alignment: int, stream):
            scratch = _storage.allocate(size, np.int8, Device("cuda", cuda.current_device()))
            cuda._rt().zero_(scratch)
            return scratch      # a Storage: has data_ptr(), which is all Triton reads

    return TensorkitCudaDriver


def _scratch_allocator(size: int, alignment: int, stream):
    # Global scratch for kernels that need it (e.g. TMA descriptors); pool blocks are 256-byte
    # aligned at least, above what Triton asks for.
    from .. import _storage, cuda
    from ..device import device as Device
    return _storage.allocate(size, np.int8, Device("cuda", cuda.current_device()))


def ensure_driver():
    """Make tensorkit's driver Triton's active one (once); returns it. No-op (None) when emulated.

    The Triton backend calls this before its first CUDA launch.
    """
    global _installed
    from .. import cuda
    if cuda.EMULATED:
        return None
    if _installed is None:
        import triton
        from triton.runtime import driver
        drv = _driver_class()()
        driver.set_active(drv)
        if hasattr(triton, "set_allocator"):
            triton.set_allocator(_scratch_allocator)
        _installed = drv
    return _installed
