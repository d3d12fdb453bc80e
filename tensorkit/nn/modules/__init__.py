"""The layers of ``tk.nn``, one file per family (as PyTorch's ``torch/nn/modules``).

Each family's file adds its own import line here; ``nn/__init__.py`` re-exports everything
listed in ``__all__``.
"""
from .module import Module, RemovableHandle, register_module_forward_hook, register_module_forward_pre_hook
from .container import ModuleDict, ModuleList, ParameterDict, ParameterList, Sequential
from .normalization import GroupNorm, LayerNorm, RMSNorm
from .batchnorm import BatchNorm1d, BatchNorm2d
from .rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNBase, RNNCell
from .transformer import MultiheadAttention, TransformerEncoder, TransformerEncoderLayer

__all__ = [name for name in dir() if not name.startswith("_") and name[0].isupper()]
