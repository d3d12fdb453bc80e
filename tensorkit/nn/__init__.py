"""``tk.nn``: modules, parameters, ``functional``, ``init`` and ``utils``, with PyTorch's names.

Layers are pure Python over tensorkit ops (their math is in ``nn/functional.py``), so they run
on every device and get gradients from autograd; this package launches no kernels itself.

Example::

    >>> import tensorkit as tk
    >>> net = tk.nn.Sequential(tk.nn.Linear(4, 8), tk.nn.ReLU(), tk.nn.Linear(8, 2))
    >>> net(tk.randn(3, 4)).shape
    tk.Size([3, 2])
"""
from .parameter import Buffer, Parameter
from .modules import *  # noqa: F401,F403  (every layer; the list is modules/__init__.py's __all__)
from . import functional, init, utils
