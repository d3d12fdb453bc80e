"""Recurrent layers: ``RNN``, ``LSTM``, ``GRU`` and their single-step ``RNNCell``, ``LSTMCell``,
``GRUCell``, with PyTorch's parameters (``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``,
``bias_hh_l0``, ``..._reverse``), gate order (LSTM: i, f, g, o; GRU: r, z, n) and initialization
(every weight and bias U(-1/sqrt(hidden), 1/sqrt(hidden))), so weights load by key.

The layers are composites: the input projection of a whole sequence is one matmul per layer
and direction; each time step is a small matmul with the hidden state plus pointwise gates.
An LSTM (GRU) step's gates are the fused primitive ``ops.rnn.lstm_cell`` (``gru_cell``): one
launch forward, one backward; at language-model sizes a step is bound by launches, not memory.
"""
from __future__ import annotations

import math

from ... import functional as TF
from ...ops.creation import empty, zeros
from ...ops.rnn import gru_cell, lstm_cell
from ...ops.shape import cat, stack
from .. import functional as F
from ..parameter import Parameter
from .module import Module

_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


def _uniform(shape, bound: float, device, dtype) -> Parameter:
    return Parameter(empty(shape, device=device, dtype=dtype).uniform_(-bound, bound))


def _linear(x, w, b):
    y = x @ w.t()
    return y + b if b is not None else y


def _hidden(h, w_hh_t, b_hh):
    y = h @ w_hh_t
    return y + b_hh if b_hh is not None else y


# one step of each cell: ``xw`` is the input's projection (x W_ih^T + b_ih), h (and c) the state,
# ``w_hh_t`` is W_hh^T (transposed once per sequence, not per step); ``b_hh`` is None where the
# caller folded it into ``xw`` (it adds to the gates directly in RNN and LSTM, not in GRU)
def _rnn_step(xw, h, c, w_hh_t, b_hh, relu: bool):
    pre = xw + _hidden(h, w_hh_t, b_hh)
    return (TF.relu(pre) if relu else pre.tanh()), None


def _lstm_step(xw, h, c, w_hh_t, b_hh, relu=False):
    return lstm_cell(xw, c, _hidden(h, w_hh_t, b_hh))        # the two projections added in the kernel


def _gru_step(xw, h, c, w_hh_t, b_hh, relu=False):
    return gru_cell(xw, _hidden(h, w_hh_t, b_hh), h), None       # (1 - z) n + z h, one fused launch


_STEPS = {"RNN_TANH": _rnn_step, "RNN_RELU": _rnn_step, "LSTM": _lstm_step, "GRU": _gru_step}


class RNNBase(Module):
    """The shared machinery of ``RNN``, ``LSTM`` and ``GRU`` (see those)."""

    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0,
                 device=None, dtype=None) -> None:
        super().__init__()
        if proj_size:
            raise NotImplementedError(f"{type(self).__name__}: proj_size is not supported")
        if not 0 <= dropout <= 1:
            raise ValueError(f"{type(self).__name__}: dropout should be a number in [0, 1], got {dropout}")
        if hidden_size <= 0 or num_layers <= 0:
            raise ValueError(f"{type(self).__name__}: hidden_size and num_layers must be positive, got "
                             f"{hidden_size} and {num_layers}")
        self.mode, self.input_size, self.hidden_size, self.num_layers = mode, input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout, self.bidirectional = bias, batch_first, float(dropout), bidirectional
        self.proj_size = 0
        dirs = 2 if bidirectional else 1
        gates = _GATES[mode] * hidden_size
        bound = 1.0 / math.sqrt(hidden_size)
        for layer in range(num_layers):
            for d in range(dirs):
                sfx = f"l{layer}" + ("_reverse" if d else "")
                width = input_size if layer == 0 else hidden_size * dirs
                setattr(self, f"weight_ih_{sfx}", _uniform((gates, width), bound, device, dtype))
                setattr(self, f"weight_hh_{sfx}", _uniform((gates, hidden_size), bound, device, dtype))
                if bias:
                    setattr(self, f"bias_ih_{sfx}", _uniform((gates,), bound, device, dtype))
                    setattr(self, f"bias_hh_{sfx}", _uniform((gates,), bound, device, dtype))

    def flatten_parameters(self) -> None:
        """A no-op: PyTorch packs the weights into one buffer for cuDNN; tensorkit has none to pack
        (kept so ported scripts that call it run)."""

    def _weights(self, layer: int, d: int):
        sfx = f"l{layer}" + ("_reverse" if d else "")
        get = lambda n: getattr(self, f"{n}_{sfx}") if (self.bias or n.startswith("weight")) else None
        return get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh")

    def _state_shape(self, batch):
        dirs = 2 if self.bidirectional else 1
        return (self.num_layers * dirs,) + ((batch,) if batch is not None else ()) + (self.hidden_size,)

    def _check_state(self, name, h, batch):
        expected = self._state_shape(batch)
        if tuple(h.shape) != expected:
            raise RuntimeError(f"{type(self).__name__}: expected {name} of shape {list(expected)}, got "
                               f"{list(h.shape)}")

    def forward(self, input, hx=None):
        name = type(self).__name__
        if input.ndim not in (2, 3):
            raise ValueError(f"{name}: expected input of 2 (unbatched [L, H_in]) or 3 dims ([L, N, H_in], or "
                             f"[N, L, H_in] with batch_first), got shape {list(input.shape)}")
        if input.shape[-1] != self.input_size:
            raise RuntimeError(f"{name}: input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                               f"got {input.shape[-1]} (input shape {list(input.shape)})")
        batched = input.ndim == 3
        x = input if not batched or not self.batch_first else input.transpose(0, 1)
        if not batched:
            x = x.unsqueeze(1)
        batch = x.shape[1] if batched else None
        lstm = self.mode == "LSTM"
        h0 = c0 = None
        if hx is not None:
            h0, c0 = hx if lstm else (hx, None)
            self._check_state("h0" if lstm else "hx", h0, batch)
            if lstm:
                self._check_state("c0", c0, batch)
            if not batched:
                h0, c0 = h0.unsqueeze(1), (c0.unsqueeze(1) if c0 is not None else None)
        if h0 is None:
            h0 = zeros(self._state_shape(x.shape[1]), dtype=x.dtype, device=x.device)
            c0 = h0 if lstm else None
        step = _STEPS[self.mode]
        relu = self.mode == "RNN_RELU"
        dirs = 2 if self.bidirectional else 1
        t_len = x.shape[0]
        hn, cn = [], []
        for layer in range(self.num_layers):
            outs = []
            for d in range(dirs):
                w_ih, w_hh, b_ih, b_hh = self._weights(layer, d)
                if b_hh is not None and self.mode != "GRU":     # one bias add per sequence, not per step
                    b_ih, b_hh = b_ih + b_hh, None
                xw = _linear(x, w_ih, b_ih)                 # [T, N, gates]: all steps at once
                w_hh_t = w_hh.t()
                k = layer * dirs + d
                h, c = h0[k], (c0[k] if lstm else None)
                ys = [None] * t_len
                for t in (reversed(range(t_len)) if d else range(t_len)):
                    h, c = step(xw[t], h, c, w_hh_t, b_hh, relu)
                    ys[t] = h
                outs.append(stack(ys, 0))
                hn.append(h)
                cn.append(c)
            x = cat(outs, -1) if dirs == 2 else outs[0]
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)
        out = x if batched else x.squeeze(1)
        if batched and self.batch_first:
            out = out.transpose(0, 1)
        h_n = stack(hn, 0)
        c_n = stack(cn, 0) if lstm else None
        if not batched:
            h_n = h_n.squeeze(1)
            c_n = c_n.squeeze(1) if lstm else None
        return out, ((h_n, c_n) if lstm else h_n)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s


class RNN(RNNBase):
    """Elman RNN: ``h_t = tanh(x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh)`` (or relu), per layer.

    Example::

        >>> rnn = tk.nn.RNN(10, 20, num_layers=2)
        >>> out, h_n = rnn(tk.randn(5, 3, 10))
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: unknown nonlinearity {nonlinearity!r} (expected 'tanh' or 'relu')")
        self.nonlinearity = nonlinearity
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size, hidden_size, num_layers,
                         bias, batch_first, dropout, bidirectional, 0, device, dtype)


class LSTM(RNNBase):
    """Long short-term memory; returns ``output, (h_n, c_n)``; gates i, f, g, o as PyTorch."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0,
                 device=None, dtype=None) -> None:
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         proj_size, device, dtype)


class GRU(RNNBase):
    """Gated recurrent unit; gates r, z, n as PyTorch (``n = tanh(x W_inᵀ + b_in + r (h W_hnᵀ + b_hn))``)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None) -> None:
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         0, device, dtype)


class _CellBase(Module):
    _mode = ""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        gates = _GATES[self._mode] * hidden_size
        bound = 1.0 / math.sqrt(hidden_size)
        self.weight_ih = _uniform((gates, input_size), bound, device, dtype)
        self.weight_hh = _uniform((gates, hidden_size), bound, device, dtype)
        if bias:
            self.bias_ih = _uniform((gates,), bound, device, dtype)
            self.bias_hh = _uniform((gates,), bound, device, dtype)
        else:
            self.bias_ih = self.bias_hh = None

    def _prepare(self, input, hx):
        name = type(self).__name__
        if input.ndim not in (1, 2) or input.shape[-1] != self.input_size:
            raise ValueError(f"{name}: expected input of shape [N, {self.input_size}] or [{self.input_size}], got "
                             f"{list(input.shape)}")
        batched = input.ndim == 2
        x = input if batched else input.unsqueeze(0)
        state = (x.shape[0], self.hidden_size)
        if hx is None:
            hs = [zeros(state, dtype=x.dtype, device=x.device)] * (2 if self._mode == "LSTM" else 1)
        else:
            hs = list(hx) if self._mode == "LSTM" else [hx]
            for h in hs:
                if tuple(h.shape) != (state if batched else state[1:]):
                    raise RuntimeError(f"{name}: expected hidden state of shape "
                                       f"{list(state if batched else state[1:])}, got {list(h.shape)}")
            if not batched:
                hs = [h.unsqueeze(0) for h in hs]
        return x, hs, batched

    def forward(self, input, hx=None):
        x, hs, batched = self._prepare(input, hx)
        step = _STEPS[self._mode]
        h, c = step(_linear(x, self.weight_ih, self.bias_ih), hs[0], hs[1] if len(hs) > 1 else None,
                    self.weight_hh.t(), self.bias_hh, self._mode == "RNN_RELU")
        if not batched:
            h, c = h.squeeze(0), (c.squeeze(0) if c is not None else None)
        return (h, c) if self._mode == "LSTM" else h

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")


class RNNCell(_CellBase):
    """One step of an Elman RNN: ``h' = tanh(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh)`` (or relu)."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh",
                 device=None, dtype=None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNNCell: unknown nonlinearity {nonlinearity!r} (expected 'tanh' or 'relu')")
        self.nonlinearity = nonlinearity
        self._mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
        super().__init__(input_size, hidden_size, bias, device, dtype)


class LSTMCell(_CellBase):
    """One LSTM step; returns ``(h', c')``."""

    _mode = "LSTM"


class GRUCell(_CellBase):
    """One GRU step; returns ``h'``."""

    _mode = "GRU"
