"""The layers of ``tk.nn``, one file per family (as PyTorch's ``torch/nn/modules``).

Each family's file adds its own import line here; ``nn/__init__.py`` re-exports everything
listed in ``__all__``.
"""
from .module import Module, RemovableHandle, register_module_forward_hook, register_module_forward_pre_hook
from .container import ModuleDict, ModuleList, ParameterDict, ParameterList, Sequential

__all__ = [name for name in dir() if not name.startswith("_") and name[0].isupper()]
