"""Hand-written Triton kernels (``@triton.jit`` functions), one module per op family.

These modules import Triton at the top, so nothing imports them at ``import tensorkit``:
the host side in ``kernels/<family>.py`` imports ``kernels.src.<family>`` on its first launch
(Triton stays optional on machines without a GPU).
"""
