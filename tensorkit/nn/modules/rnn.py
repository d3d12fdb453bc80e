"""Recurrent layers: ``RNN``, ``LSTM``, ``GRU`` and their single-step ``RNNCell``, ``LSTMCell``,
``GRUCell``, with PyTorch's parameters (``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``,
``bias_hh_l0``, ``..._reverse``), gate order (LSTM: i, f, g, o; GRU: r, z, n) and initialization
(every weight and bias U(-1/sqrt(hidden), 1/sqrt(hidden))), so weights load by key.

The input projection of a whole sequence is one matmul per layer and direction, recorded as
usual; the recurrence over the steps of a layer and direction is ONE autograd node
(``_Sequence``, as cuDNN's RNN): per step a small matmul with the hidden state and one fused
cell launch forward, one fused cell-backward launch and one matmul backward, with the weight
gradient of all steps one GEMM at the end. At language-model sizes a step is bound by launches
(~15-20 us of host time each on a GPU), not memory. The single-step cells (``LSTMCell`` ...)
are composites over the fused primitives ``ops.rnn.lstm_cell`` / ``gru_cell``.
"""
from __future__ import annotations

import math

from ... import functional as TF
from ..._tensor import Tensor
from ...amp.autocast import autocast_to
from ...autograd.function import Function
from ...autograd.grad_mode import state as _grad_state
from ...ops.creation import empty, new_tensor, zeros
from ...ops.pointwise import where
from ...ops.rnn import (_gru_cell_backward_into, _gru_cell_into, _lstm_cell_backward_into, _lstm_cell_into,
                        _rnn_cell_backward_into, _rnn_cell_into, gru_cell, gru_cell_backward, lstm_cell,
                        lstm_cell_backward)
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


def _cell(mode: str, xw: Tensor, hw: Tensor, h: Tensor, c):
    """One recorded step from the input's projection ``xw`` (x W_ihᵀ + b_ih) and the hidden
    state's ``hw`` (h W_hhᵀ, + b_hh unless folded into ``xw``): ``(h', c')``, c' None unless LSTM."""
    if mode == "LSTM":
        return lstm_cell(xw, c, hw)                 # the two projections added in the kernel
    if mode == "GRU":
        return gru_cell(xw, hw, h), None            # (1 - z) n + z h, one fused launch
    pre = xw + hw
    return (TF.relu(pre) if mode == "RNN_RELU" else pre.tanh()), None


def _row(t: Tensor, i: int) -> Tensor:
    """``t[i]`` as a plain view, not recorded (the sequence ops' own operands; ~10x cheaper)."""
    return Tensor._make(t._storage, t._offset + i * t._strides[0], t._shape[1:], t._strides[1:], t.dtype)


def _rows(t: Tensor, start: int, stop: int) -> Tensor:
    return Tensor._make(t._storage, t._offset + start * t._strides[0], (stop - start,) + tuple(t._shape[1:]),
                        t._strides, t.dtype)


@autocast_to("lower")
def _layers(mode: str, x: Tensor, weights: list, h0: Tensor, c0, num_layers: int, dirs: int, dropout: float):
    """The stacked recurrence over ``x`` [T, N, H_in]: (last layer's output, h_n list, c_n list).
    ``weights``: (w_ih, w_hh, b_ih, b_hh) per layer and direction, flat. Under autocast every
    floating operand is cast to the autocast dtype, as PyTorch's lstm / gru / rnn ops are."""
    lstm = mode == "LSTM"
    hn, cn = [], []
    for layer in range(num_layers):
        outs = []
        for d in range(dirs):
            k = layer * dirs + d
            w_ih, w_hh, b_ih, b_hh = weights[4 * k:4 * k + 4]
            if b_hh is not None and mode != "GRU":          # one bias add per sequence, not per step
                b_ih, b_hh = b_ih + b_hh, None
            xw = _linear(x, w_ih, b_ih)                     # [T, N, gates]: all steps at once
            y, h, c = _Sequence.apply(mode, xw, w_hh, b_hh, h0[k], (c0[k] if lstm else None), bool(d))
            outs.append(y)                                  # one autograd node per layer and direction
            hn.append(h)
            cn.append(c)
        x = cat(outs, -1) if dirs == 2 else outs[0]
        if dropout and layer < num_layers - 1:
            x = F.dropout(x, dropout, training=True)
    return x, hn, cn


class _Sequence(Function):
    """One layer and direction of a recurrent layer over a whole sequence as ONE autograd node,
    as cuDNN's RNN. ``xw`` [T, N, G] is every step's input projection x W_ihᵀ + b_ih (+ b_hh,
    except for GRU, whose b_hh is ``b_hh`` here: r multiplies h's part), one GEMM outside whose
    ordinary autograd gives dx, dW_ih and the input biases' gradients from d(xw). Returns
    ``(output [T, N, H], h_n, c_n)`` (c_n None unless LSTM).

    Forward, per step: ``h W_hhᵀ`` (one matmul) and the fused cell (one launch), which writes
    h_t straight into its row of a [T + 1, N, H] buffer that also holds h0: the output is a view
    of it, and the previous states of all steps are one contiguous block. Backward, per step:
    the fused cell backward (one launch; it sums the gradients reaching h_t, from the output and
    from step t + 1, in the kernel), writing d(xw)_t and d(h W_hhᵀ)_t into rows of [T, N, G]
    buffers (one buffer unless GRU), and ``d(h W_hhᵀ)_t W_hh`` (one matmul). Then dW_hh is ONE
    GEMM over all steps, db_hh one sum, d(xw) the buffer. A step recorded op by op costs ~10
    launches backward, each ~15-20 us of host time on a GPU.

    Under ``create_graph`` the backward recomputes the forward with recorded ops and runs the
    same recurrence with recorded ops (the cells' backward primitives have VJPs), so higher
    derivatives are those of the step-by-step composition.
    """

    @staticmethod
    def forward(ctx, mode, xw, w_hh, b_hh, h0, c0, reverse):
        ctx.set_materialize_grads(False)
        t_len, batch, _ = xw.shape
        dev = xw._storage.device
        hbuf = new_tensor((t_len + 1, batch, h0.shape[-1]), xw.dtype, dev)     # h0 and every h_t
        _row(hbuf, t_len if reverse else 0).copy_(h0)
        w_t = w_hh.t()
        c, saved = c0, []
        for s in range(t_len):
            t = t_len - 1 - s if reverse else s
            h_prev, h_out = _row(hbuf, t + 1 if reverse else t), _row(hbuf, t if reverse else t + 1)
            hw = h_prev @ w_t
            if mode == "LSTM":
                c_new = new_tensor(c.shape, xw.dtype, dev)
                _lstm_cell_into(_row(xw, t), c, hw, h_out, c_new)
                saved += [c, hw]
                c = c_new
            elif mode == "GRU":
                _gru_cell_into(_row(xw, t), hw, b_hh, h_prev, h_out)
                saved.append(hw)
            else:
                _rnn_cell_into(_row(xw, t), hw, h_out, mode == "RNN_RELU")
        ctx.save_for_backward(xw, w_hh, b_hh, h0, c0, hbuf, *saved)       # freed by the engine after backward
        ctx.mode, ctx.reverse = mode, reverse
        out = _rows(hbuf, 0, t_len) if reverse else _rows(hbuf, 1, t_len + 1)
        return out, _row(hbuf, 0 if reverse else t_len), c

    @staticmethod
    def backward(ctx, dy, dh_n, dc_n):
        xw, w_hh, b_hh, h0, c0, hbuf, *steps = ctx.saved_tensors
        mode, reverse = ctx.mode, ctx.reverse
        if _grad_state.enabled:         # create_graph: a recorded, differentiable recurrence
            return (None,) + _sequence_recorded(mode, xw, w_hh, b_hh, h0, c0, reverse, dy, dh_n, dc_n) + (None,)
        t_len, batch, g = xw.shape
        dxw = new_tensor(xw.shape, xw.dtype, xw._storage.device)
        dhw = new_tensor(xw.shape, xw.dtype, xw._storage.device) if mode == "GRU" else dxw
        grads, dc = [dh_n], dc_n       # the gradients reaching h_t, summed in the cell's kernel
        for s in reversed(range(t_len)):
            t = t_len - 1 - s if reverse else s
            h_prev = _row(hbuf, t + 1 if reverse else t)
            grads = [d for d in grads + [_row(dy, t) if dy is not None else None] if d is not None]
            if mode == "LSTM":
                c_prev, hw = steps[2 * s], steps[2 * s + 1]
                dc, extra = _lstm_cell_backward_into(grads, dc, _row(xw, t), c_prev, hw, _row(dxw, t)), []
            elif mode == "GRU":
                extra = [_gru_cell_backward_into(grads, _row(xw, t), steps[s], b_hh, h_prev, _row(dxw, t),
                                                 _row(dhw, t))]
            else:
                _rnn_cell_backward_into(grads, _row(hbuf, t if reverse else t + 1), _row(dxw, t), mode == "RNN_RELU")
                extra = []
            grads = [_row(dhw, t) @ w_hh] + extra if s or ctx.needs_input_grad[4] else []
        dh0 = (grads[0] + grads[1] if len(grads) > 1 else grads[0]) if grads else None
        h_prev = _rows(hbuf, 1, t_len + 1) if reverse else _rows(hbuf, 0, t_len)
        flat = dhw.reshape(t_len * batch, g)
        dw = flat.t() @ h_prev.reshape(t_len * batch, h0.shape[-1]) if ctx.needs_input_grad[2] else None
        db = flat.sum(0) if ctx.needs_input_grad[3] else None
        return None, dxw, dw, db, dh0, (dc if ctx.needs_input_grad[5] else None), None


def _sequence_recorded(mode, xw, w_hh, b_hh, h0, c0, reverse, dy, dh_n, dc_n):
    """``_Sequence``'s gradients (xw, W_hh, b_hh, h0, c0) with every op recorded, for create_graph:
    the forward recomputed step by step, then the recurrence of the backward."""
    t_len = xw.shape[0]
    order = list(reversed(range(t_len))) if reverse else list(range(t_len))
    w_t = w_hh.t()
    h, c, steps = h0, c0, []
    for t in order:
        hw = _hidden(h, w_t, b_hh)
        h_new, c_new = _cell(mode, xw[t], hw, h, c)
        steps.append((h, c, hw, h_new))
        h, c = h_new, c_new
    dh, dc, dxs, dhws, h_prevs = dh_n, dc_n, [None] * t_len, [None] * t_len, [None] * t_len
    for t, (h_prev, c_prev, hw, h) in zip(reversed(order), reversed(steps)):
        g = dh if dy is None else (dy[t] if dh is None else dh + dy[t])
        extra = None
        if mode == "LSTM":
            dxs[t], dc = lstm_cell_backward(g, dc, xw[t], c_prev, hw)
        elif mode == "GRU":
            dxs[t], dhws[t], extra = gru_cell_backward(g, xw[t], hw, h_prev)
        else:
            dxs[t] = where(h > 0, g, 0.0) if mode == "RNN_RELU" else g * (1 - h * h)
        dhws[t] = dhws[t] if mode == "GRU" else dxs[t]
        dh = dhws[t] @ w_hh if extra is None else extra + dhws[t] @ w_hh
        h_prevs[t] = h_prev
    dhw = stack(dhws, 0).reshape(-1, xw.shape[-1])
    dw = dhw.t() @ stack(h_prevs, 0).reshape(-1, h0.shape[-1])
    return stack(dxs, 0), dw, (dhw.sum(0) if b_hh is not None else None), dh, dc


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
        dirs = 2 if self.bidirectional else 1
        weights = [w for layer in range(self.num_layers) for d in range(dirs) for w in self._weights(layer, d)]
        x, hn, cn = _layers(self.mode, x, weights, h0, c0, self.num_layers, dirs,
                            self.dropout if self.training else 0.0)
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
        h0 = hs[0]
        hw = _hidden(h0, self.weight_hh.t(), self.bias_hh)
        h, c = _cell(self._mode, _linear(x, self.weight_ih, self.bias_ih), hw, h0, hs[1] if len(hs) > 1 else None)
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
