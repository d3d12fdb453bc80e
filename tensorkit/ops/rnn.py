"""Fused recurrent-cell primitives: ``lstm_cell``, ``gru_cell`` and their backward primitives.

Why primitives: an LSTM step's pointwise part (three sigmoids, two tanh, the cell update and
the output gate) is ~10 kernels as a composition and more backward; at the sizes of language
models a step is bound by launches, not memory. Each primitive here is ONE launch of the
pointwise codegen (``kernels/codegen.py``): a multi-output ``Program`` whose nodes reuse the
scalar bodies of the pointwise primitives (``sigmoid``'s stable body, ``tanh``, ...), whose
inputs are the four chunks of ``gates`` (strided views, no copy; ``hidden_gates``' too, added
in the kernel) and whose outputs are written straight into their tensors
(``lstm_cell_backward`` into the four chunks of one ``dgates``). float16/bfloat16 compute in
float32, as every pointwise kernel.

Gradients. ``lstm_cell`` has two outputs with a gradient each (a ``multi_output`` VJP); its
VJP is the fused ``lstm_cell_backward``, which recomputes the activations from ``gates`` and
``c`` (nothing but the inputs is saved). ``lstm_cell_backward``'s own VJP is a composite of
tensorkit ops, so higher derivatives exist. ``gru_cell`` (one output) is built the same way.

For a whole sequence (``nn.LSTM`` / ``GRU`` / ``RNN``, whose recurrence is one autograd node
with a hand-written backward) the private ``_*_into`` variants run the same programs writing
into given tensors (a step's row of the output, of the gradient buffers), sum several
gradients of h' in the kernel, and are not recorded; ``rnn_cell`` is the Elman step's.
"""
from __future__ import annotations

from .. import _dispatch
from .. import dtypes as D
from .._tensor import Tensor
from ..kernels.codegen import Node, Program
from .creation import new_tensor
from .pointwise import _LAUNCH, FLOATS, add, copy, mul, sigmoid, sub, tanh

for _op in ("lstm_cell", "lstm_cell_backward", "gru_cell", "gru_cell_backward", "rnn_cell", "rnn_cell_backward"):
    for _dev in ("cpu", "cuda"):
        _dispatch.register(_op, _dev, FLOATS)(_LAUNCH[_dev])
del _op, _dev

_HALF = (D.float16, D.bfloat16)


class _Builder:
    """A Program under construction: ``b(prim, *values)`` appends a node computing the
    pointwise primitive ``prim``'s scalar body on earlier values (indices) and returns its index."""

    def __init__(self, inputs, compute: D.DType):
        self.inputs, self.compute, self.nodes = tuple(inputs), compute, []

    def __call__(self, prim, *args, dtype=None) -> int:
        self.nodes.append(Node(prim.name, prim.body, args, self.compute, dtype or self.compute))
        return len(self.inputs) + len(self.nodes) - 1

    def program(self, outputs, dtypes) -> Program:
        """Outputs cast to their dtypes (half results are stored rounded, computed in float32)."""
        outs = [k if dt is self.compute else self(copy, k, dtype=dt) for k, dt in zip(outputs, dtypes)]
        return Program(self.inputs, tuple(self.nodes), tuple(outs))


class _Body:
    """A scalar body for a node that is no pointwise primitive (a Node needs a name and a body)."""

    def __init__(self, name, body):
        self.name, self.body = name, body


# derivative factors, from the activation's value: sigmoid' = s (1 - s), tanh' = 1 - t^2
_SIGMOID_GRAD = _Body("sigmoid_grad", lambda m, s: s * (1 - s))
_TANH_GRAD = _Body("tanh_grad", lambda m, t: 1 - t * t)


def _activations(b: _Builder, gates: int, hidden: int | None, c: int):
    """i, f, g, o and c' = f c + i g, t = tanh(c'), as program values, from the four chunks
    of gates (inputs from index ``gates`` on), plus those of hidden_gates when given."""
    pre = [gates + k if hidden is None else b(add, gates + k, hidden + k) for k in range(4)]
    i, f, g, o = b(sigmoid, pre[0]), b(sigmoid, pre[1]), b(tanh, pre[2]), b(sigmoid, pre[3])
    c_new = b(add, b(mul, f, c), b(mul, i, g))
    return i, f, g, o, c_new, b(tanh, c_new)


_programs: dict = {}


def _gate_inputs(gates, hidden) -> list:
    return [("tensor", gates.dtype)] * 4 + ([("tensor", hidden.dtype)] * 4 if hidden is not None else [])


def _forward_program(gates, hidden, c_dtype, compute, result) -> Program:
    """inputs: the i, f, g, o chunks of gates (and of hidden_gates), c; outputs: h = o tanh(c'),
    c' = f c + i g."""
    ins = _gate_inputs(gates, hidden) + [("tensor", c_dtype)]
    key = ("fwd", *ins, compute, result)
    prog = _programs.get(key)
    if prog is None:
        b = _Builder(ins, compute)
        i, f, g, o, c_new, t = _activations(b, 0, None if hidden is None else 4, len(ins) - 1)
        prog = _programs[key] = b.program([b(mul, o, t), c_new], [result, result])
    return prog


def _backward_program(dh, dc, gates, hidden, c_dtype, compute, result, extra=()) -> Program:
    """inputs: dh, dc' (tensors, or the number 0 for a missing gradient), the gate chunks (and
    hidden_gates'), c, then more gradients of h' of the dtypes ``extra``, added to dh in the
    kernel (a sequence's); outputs: the four chunks of dgates and dc.

        A = dc' + dh o (1 - t^2)                       (the whole gradient reaching c')
        d ai = A g i (1 - i),  d af = A c f (1 - f),  d ag = A i (1 - g^2),  d ao = dh t o (1 - o)
        dc = A f
    """
    kind = lambda x: ("tensor", x.dtype) if isinstance(x, Tensor) else ("scalar", compute)
    ins = [kind(dh), kind(dc)] + _gate_inputs(gates, hidden) + [("tensor", c_dtype)]
    ins += [("tensor", d) for d in extra]
    key = ("bwd", *ins, compute, result)
    prog = _programs.get(key)
    if prog is None:
        b = _Builder(ins, compute)
        c = 10 if hidden is not None else 6
        i, f, g, o, _, t = _activations(b, 2, None if hidden is None else 6, c)
        dh_all = 0
        for k in range(len(extra)):
            dh_all = b(add, dh_all, c + 1 + k)
        a = b(add, 1, b(mul, b(mul, dh_all, o), b(_TANH_GRAD, t)))
        dai = b(mul, b(mul, a, g), b(_SIGMOID_GRAD, i))
        daf = b(mul, b(mul, a, c), b(_SIGMOID_GRAD, f))
        dag = b(mul, b(mul, a, i), b(_TANH_GRAD, g))
        dao = b(mul, b(mul, dh_all, t), b(_SIGMOID_GRAD, o))
        prog = _programs[key] = b.program([dai, daf, dag, dao, b(mul, a, f)], [result] * 5)
    return prog


def _chunks(gates: Tensor, n: int, count: int = 4) -> list:
    """The ``count`` gate chunks of ``gates`` [..., count H] as [..., H] views (not recorded: kernel operands)."""
    step = n * gates._strides[-1]
    return [Tensor._make(gates._storage, gates._offset + k * step, gates._shape[:-1] + (n,), gates._strides,
                         gates.dtype, gates) for k in range(count)]


def _check(op: str, gates, c, hidden=None) -> int:
    for name, t in (("gates", gates), ("c", c)) + ((("hidden_gates", hidden),) if hidden is not None else ()):
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: expected {name} to be a Tensor, got {type(t).__name__}")
    if c.ndim == 0 or tuple(gates.shape) != tuple(c.shape[:-1]) + (4 * c.shape[-1],):
        raise RuntimeError(f"{op}: expected gates of shape [*, 4 * H] and c of shape [*, H] (the same leading "
                           f"dims; gates i, f, g, o along the last), got gates {list(gates.shape)} and c "
                           f"{list(c.shape)}")
    if hidden is not None and hidden.shape != gates.shape:
        raise RuntimeError(f"{op}: expected hidden_gates of the shape of gates {list(gates.shape)}, got "
                           f"{list(hidden.shape)}")
    if gates.device != c.device or (hidden is not None and hidden.device != c.device):
        raise RuntimeError(f"{op}: expected gates, hidden_gates and c on one device, got {gates.device}, "
                           f"{hidden.device if hidden is not None else None} and {c.device}")
    return c.shape[-1]


def _dtypes(*tensors):
    common = D.result_type(*tensors)
    return common, (D.float32 if common in _HALF else common)


def _run(op: str, program: Program, args: list, outs: list, common: D.DType) -> None:
    dev = outs[0]._storage.device.type
    kernel = _dispatch.KERNELS.get((op, dev, common)) or _dispatch.lookup(op, dev, common)
    kernel(program, args, outs, outs[0].numel())


def lstm_cell(gates: Tensor, c: Tensor, hidden_gates: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The pointwise part of an LSTM step, fused: from the pre-activation ``gates`` ``[*, 4H]``
    (chunks i, f, g, o in PyTorch's order: ``x W_ihᵀ + b_ih + h W_hhᵀ + b_hh``) and the cell
    state ``c`` ``[*, H]``, returns ``(h', c')`` with

        i, f, o = sigmoid(...), g = tanh(...),  c' = f c + i g,  h' = o tanh(c')

    in one kernel launch forward and one backward. ``hidden_gates`` (``[*, 4H]``, optional) is
    added to ``gates`` inside the kernel, as PyTorch's fused cell takes the input's and the
    hidden state's projections: a step then needs no separate add. dtypes promote as pointwise
    ops (float16/bfloat16 compute in float32). ``nn.LSTM`` and ``nn.LSTMCell`` use it.

    Example::

        >>> h, c = tk.ops.rnn.lstm_cell(tk.randn(2, 8), tk.zeros(2, 2))
    """
    _check("lstm_cell", gates, c, hidden_gates)
    common, _ = _dtypes(*[t for t in (gates, c, hidden_gates) if t is not None])
    dev = c._storage.device
    h, c_new = new_tensor(c.shape, common, dev), new_tensor(c.shape, common, dev)
    _lstm_cell_into(gates, c, hidden_gates, h, c_new)
    return h, c_new


def lstm_cell_backward(dh, dc, gates: Tensor, c: Tensor, hidden_gates: Tensor | None = None
                       ) -> tuple[Tensor, Tensor]:
    """The fused backward of ``lstm_cell``: ``(dgates, dc)`` from the gradients ``dh`` of h' and
    ``dc`` of c' (either may be None: no gradient), recomputing the activations from ``gates``
    (plus ``hidden_gates``) and ``c``. One kernel launch, writing the four chunks of ``dgates``
    and ``dc``; ``dgates`` is hidden_gates' gradient too."""
    _check("lstm_cell_backward", gates, c, hidden_gates)
    common, _ = _dtypes(*[t for t in (dh, dc, gates, c, hidden_gates) if isinstance(t, Tensor)])
    dgates = new_tensor(gates.shape, common, c._storage.device)
    return dgates, _lstm_cell_backward_into([] if dh is None else [dh], dc, gates, c, hidden_gates, dgates)


def _lstm_cell_into(gates: Tensor, c: Tensor, hidden_gates, h_out: Tensor, c_out: Tensor) -> None:
    """``lstm_cell`` writing h' and c' into the given tensors (``lstm_cell``'s fresh ones, or a
    step's row of a sequence's output for a whole-sequence op with a hand-written backward, where
    grad mode is off: the observers hear of it as an ``lstm_cell``)."""
    n = c.shape[-1]
    common, compute = _dtypes(*[t for t in (gates, c, hidden_gates) if t is not None])
    program = _forward_program(gates, hidden_gates, c.dtype, compute, common)
    _run("lstm_cell", program, _chunks(gates, n) + (_chunks(hidden_gates, n) if hidden_gates is not None else [])
         + [c], [h_out, c_out], common)
    if _dispatch.observers:
        _dispatch.notify("lstm_cell", (gates, c, hidden_gates), (h_out, c_out), {})


def _lstm_cell_backward_into(grads: list, dc, gates: Tensor, c: Tensor, hidden_gates,
                             dgates_out: Tensor) -> Tensor:
    """``lstm_cell_backward`` for the gradient ``sum(grads)`` of h' (summed in the kernel; none:
    zero) and ``dc`` of c' (or None), writing dgates into ``dgates_out``; returns dc (a new
    tensor). Recorded as an ``lstm_cell_backward`` of ``grads[0]`` only: more than one gradient
    only where grad mode is off, as in ``_lstm_cell_into``'s sequence op."""
    n = c.shape[-1]
    dh, dc = (grads[0] if grads else 0.0), (0.0 if dc is None else dc)
    common, compute = _dtypes(*[t for t in (*grads, dc, gates, c, hidden_gates) if isinstance(t, Tensor)])
    dc_prev = new_tensor(c.shape, common, c._storage.device)
    program = _backward_program(dh, dc, gates, hidden_gates, c.dtype, compute, common,
                                tuple(g.dtype for g in grads[1:]))
    _run("lstm_cell_backward", program, [dh, dc] + _chunks(gates, n)
         + (_chunks(hidden_gates, n) if hidden_gates is not None else []) + [c] + list(grads[1:]),
         _chunks(dgates_out, n) + [dc_prev], common)
    if _dispatch.observers:
        _dispatch.notify("lstm_cell_backward", (dh, dc, gates, c, hidden_gates), (dgates_out, dc_prev), {})
    return dc_prev


@_dispatch.defvjp("lstm_cell", multi_output=True)
def _lstm_cell_vjp(grads, node):
    gates, c, hidden = node.inputs
    dgates, dc = lstm_cell_backward(grads[0], grads[1] if len(grads) > 1 else None, gates, c, hidden)
    return dgates, dc, (dgates if hidden is not None else None)


@_dispatch.defvjp("lstm_cell_backward", multi_output=True)
def _lstm_cell_backward_vjp(grads, node):
    """Gradients of ``lstm_cell_backward``'s outputs (the formulas in ``_backward_program``) with
    respect to dh, dc', gates, c and hidden_gates (gates'), given u (the gradients of d ai, d af,
    d ag, d ao) and uc (of dc). With uA = ui g i' + uf c f' + ug i g' + uc f (what reaches A;
    i' = i (1 - i) ...):

        d/d dc' = uA,  d/d dh = uA o t' + uo t o'
        i: ui A g (1 - 2i) + ug A g',   f: uf A c (1 - 2f) + uc A,   g: ui A i' - 2 ug A i g
        o: uA dh t' + uo dh t (1 - 2o), t: -2 uA dh o t + uo dh o',  c: uf A f'
        then through c' = f c + i g, t = tanh(c') and the activations.
    """
    dh, dc, gates, c, hidden = node.inputs
    from .shape import cat
    ug = grads[0]
    uc = grads[1] if len(grads) > 1 and grads[1] is not None else 0.0
    ui, uf, ugg, uo = ug.chunk(4, -1) if ug is not None else (0.0,) * 4
    ai, af, ag, ao = (gates if hidden is None else gates + hidden).chunk(4, -1)
    i, f, g, o = sigmoid(ai), sigmoid(af), tanh(ag), sigmoid(ao)
    c_new = f * c + i * g
    t = tanh(c_new)
    di, df, dg, do, dt = i * (1 - i), f * (1 - f), 1 - g * g, o * (1 - o), 1 - t * t
    a = dc + dh * o * dt
    ua = ui * g * di + uf * c * df + ugg * i * dg + uc * f
    bar_o = ua * dh * dt + uo * dh * t * (1 - 2 * o)
    bar_cn = (ua * dh * o * t * -2 + uo * dh * do) * dt
    bar_i = ui * a * g * (1 - 2 * i) + ugg * a * dg + bar_cn * g
    bar_f = uf * a * c * (1 - 2 * f) + uc * a + bar_cn * c
    bar_g = ui * a * di - 2 * ugg * a * i * g + bar_cn * i
    bar_c = uf * a * df + bar_cn * f
    grad_gates = cat([bar_i * di, bar_f * df, bar_g * dg, bar_o * do], -1)
    grad_dh = ua * o * dt + uo * t * do if isinstance(dh, Tensor) else None
    return (grad_dh, (ua if isinstance(dc, Tensor) else None), grad_gates, bar_c,
            grad_gates if hidden is not None else None)


# ---- GRU ------------------------------------------------------------------------------------------------
def _gru_activations(b: _Builder, xr, xz, xn, hr, hz, hn):
    """r, z, n = tanh(x_n + r h_n), as program values."""
    r, z = b(sigmoid, b(add, xr, hr)), b(sigmoid, b(add, xz, hz))
    return r, z, b(tanh, b(add, xn, b(mul, r, hn)))


def _hidden_chunks(b: _Builder, hw: int, bias: int | None):
    """hw's r, z, n chunks (inputs from ``hw`` on), plus those of b_hh (from ``bias``) when given."""
    return [hw + k if bias is None else b(add, hw + k, bias + k) for k in range(3)]


def _gru_forward_program(x_dtype, hw_dtype, h_dtype, compute, result, b_dtype=None) -> Program:
    """inputs: the r, z, n chunks of xw and of hw, h (and b_hh's chunks, added to hw's, when
    ``b_dtype``); output: h' = n + z (h - n)."""
    key = ("gru_fwd", x_dtype, hw_dtype, h_dtype, compute, result, b_dtype)
    prog = _programs.get(key)
    if prog is None:
        b = _Builder([("tensor", x_dtype)] * 3 + [("tensor", hw_dtype)] * 3 + [("tensor", h_dtype)]
                     + ([("tensor", b_dtype)] * 3 if b_dtype is not None else []), compute)
        _, z, n = _gru_activations(b, 0, 1, 2, *_hidden_chunks(b, 3, None if b_dtype is None else 7))
        prog = _programs[key] = b.program([b(add, n, b(mul, z, b(sub, 6, n)))], [result])
    return prog


def _gru_backward_program(g_dtype, x_dtype, hw_dtype, h_dtype, compute, result, b_dtype=None,
                          extra=()) -> Program:
    """inputs: dh' (g), the chunks of xw and hw, h (then b_hh's chunks when ``b_dtype``, added
    to hw's, and more gradients of h' of the dtypes ``extra``, added to g); outputs: the three
    chunks of dxw, of dhw (its r and z chunks are dxw's, written twice) and dh:

        d an = g (1 - z)(1 - n^2),  d ar = d an h_n r (1 - r),  d az = g (h - n) z (1 - z)
        dxw = [d ar, d az, d an],  dhw = [d ar, d az, d an r],  dh = g z
    """
    key = ("gru_bwd", g_dtype, x_dtype, hw_dtype, h_dtype, compute, result, b_dtype, *extra)
    prog = _programs.get(key)
    if prog is None:
        ins = ([("tensor", g_dtype)] + [("tensor", x_dtype)] * 3 + [("tensor", hw_dtype)] * 3
               + [("tensor", h_dtype)] + ([("tensor", b_dtype)] * 3 if b_dtype is not None else []))
        first_extra = len(ins)
        b = _Builder(ins + [("tensor", d) for d in extra], compute)
        hr, hz, hn = _hidden_chunks(b, 4, None if b_dtype is None else 8)
        r, z, n = _gru_activations(b, 1, 2, 3, hr, hz, hn)
        g = 0
        for k in range(len(extra)):
            g = b(add, g, first_extra + k)
        dan = b(mul, b(sub, g, b(mul, g, z)), b(_TANH_GRAD, n))
        dar = b(mul, b(mul, dan, hn), b(_SIGMOID_GRAD, r))
        daz = b(mul, b(mul, g, b(sub, 7, n)), b(_SIGMOID_GRAD, z))
        prog = _programs[key] = b.program([dar, daz, dan, dar, daz, b(mul, dan, r), b(mul, g, z)], [result] * 7)
    return prog


def _check_gru(op: str, xw, hw, h) -> int:
    for name, t in (("xw", xw), ("hw", hw), ("h", h)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: expected {name} to be a Tensor, got {type(t).__name__}")
    if h.ndim == 0 or tuple(xw.shape) != tuple(h.shape[:-1]) + (3 * h.shape[-1],) or tuple(hw.shape) != tuple(xw.shape):
        raise RuntimeError(f"{op}: expected xw and hw of shape [*, 3 * H] and h of shape [*, H] (the same leading "
                           f"dims; gates r, z, n along the last), got xw {list(xw.shape)}, hw {list(hw.shape)} and "
                           f"h {list(h.shape)}")
    if not xw.device == hw.device == h.device:
        raise RuntimeError(f"{op}: expected xw, hw and h on one device, got {xw.device}, {hw.device} and {h.device}")
    return h.shape[-1]


def gru_cell(xw: Tensor, hw: Tensor, h: Tensor) -> Tensor:
    """The pointwise part of a GRU step, fused: from the input's projection ``xw`` ``[*, 3H]``
    (``x W_ihᵀ + b_ih``), the hidden state's ``hw`` ``[*, 3H]`` (``h W_hhᵀ + b_hh``; chunks r, z,
    n in PyTorch's order) and ``h`` ``[*, H]``, returns

        r, z = sigmoid(x_r + h_r), sigmoid(x_z + h_z),  n = tanh(x_n + r h_n),  h' = n + z (h - n)

    in one kernel launch forward and one backward. ``nn.GRU`` and ``nn.GRUCell`` use it.

    Example::

        >>> h = tk.ops.rnn.gru_cell(tk.randn(2, 6), tk.randn(2, 6), tk.zeros(2, 2))
    """
    _check_gru("gru_cell", xw, hw, h)
    out = new_tensor(h.shape, _dtypes(xw, hw, h)[0], h._storage.device)
    _gru_cell_into(xw, hw, None, h, out)
    return out


def gru_cell_backward(g: Tensor, xw: Tensor, hw: Tensor, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The fused backward of ``gru_cell``: ``(dxw, dhw, dh)`` from the gradient ``g`` of h',
    recomputing the activations. One kernel launch, writing the chunks of dxw and dhw, and dh."""
    _check_gru("gru_cell_backward", xw, hw, h)
    common, dev = _dtypes(g, xw, hw, h)[0], h._storage.device
    dxw, dhw = new_tensor(xw.shape, common, dev), new_tensor(hw.shape, common, dev)
    return dxw, dhw, _gru_cell_backward_into([g], xw, hw, None, h, dxw, dhw)


def _bias_chunks(bias: Tensor, like: Tensor, n: int) -> list:
    """The 3 chunks of ``bias`` [3H] broadcast to ``like``'s shape [*, H] (stride-0 views)."""
    st = bias._strides[0]
    strides = (0,) * (like.ndim - 1) + (st,)
    return [Tensor._make(bias._storage, bias._offset + k * n * st, like._shape, strides, bias.dtype)
            for k in range(3)]


def _gru_cell_into(xw: Tensor, hw: Tensor, bias, h: Tensor, out: Tensor) -> None:
    """``gru_cell(xw, hw + bias, h)`` writing h' into ``out`` (``gru_cell``'s fresh one, or a
    step's row of a sequence's output), b_hh (``bias``, [3H] or None) added in the kernel; the
    observers hear of it as a ``gru_cell`` (a bias only where grad mode is off)."""
    n = h.shape[-1]
    common, compute = _dtypes(*[t for t in (xw, hw, h, bias) if t is not None])
    program = _gru_forward_program(xw.dtype, hw.dtype, h.dtype, compute, common,
                                   bias.dtype if bias is not None else None)
    _run("gru_cell", program, _chunks(xw, n, 3) + _chunks(hw, n, 3) + [h]
         + (_bias_chunks(bias, h, n) if bias is not None else []), [out], common)
    if _dispatch.observers:
        _dispatch.notify("gru_cell", (xw, hw, h), (out,), {})


def _gru_cell_backward_into(grads: list, xw: Tensor, hw: Tensor, bias, h: Tensor, dxw_out: Tensor,
                            dhw_out: Tensor) -> Tensor:
    """``gru_cell_backward`` of ``_gru_cell_into`` for the gradient ``sum(grads)`` of h' (summed
    in the kernel: the output's, the next step's through h'W_hhᵀ and through z h), writing dxw and
    dhw (also b_hh's per-row gradient) into the given tensors; returns dh (the part through z h).
    Recorded as a ``gru_cell_backward`` of ``grads[0]``, as ``_lstm_cell_backward_into``."""
    n = h.shape[-1]
    tensors = [t for t in [*grads, xw, hw, h, bias] if t is not None]
    common, compute = _dtypes(*tensors)
    dh = new_tensor(h.shape, common, h._storage.device)
    program = _gru_backward_program(grads[0].dtype, xw.dtype, hw.dtype, h.dtype, compute, common,
                                    bias.dtype if bias is not None else None, tuple(g.dtype for g in grads[1:]))
    _run("gru_cell_backward", program, [grads[0]] + _chunks(xw, n, 3) + _chunks(hw, n, 3) + [h]
         + (_bias_chunks(bias, h, n) if bias is not None else []) + list(grads[1:]),
         _chunks(dxw_out, n, 3) + _chunks(dhw_out, n, 3) + [dh], common)
    if _dispatch.observers:
        _dispatch.notify("gru_cell_backward", (grads[0], xw, hw, h), (dxw_out, dhw_out, dh), {})
    return dh


@_dispatch.defvjp("gru_cell")
def _gru_cell_vjp(g, node):
    return gru_cell_backward(g, *node.inputs)


@_dispatch.defvjp("gru_cell_backward", multi_output=True)
def _gru_cell_backward_vjp(grads, node):
    """Gradients of ``gru_cell_backward``'s outputs (the formulas in ``_gru_backward_program``)
    with respect to g, xw, hw and h, given v (of dxw), w (of dhw) and vd (of dh). With
    s = 1 - z, q = 1 - n^2, p = r (1 - r), y = z (1 - z), d an = g s q, and the cotangents
    reaching d ar, d az, d an: Vr = v_r + w_r, Vz = v_z + w_z, K = Vr h_n p + v_n + w_n r:

        d/dg = s q K + Vz (h - n) y + vd z
        n: -2 K g s n - Vz g y,   z: -K g q + Vz g (h - n)(1 - 2z) + vd g,   h: Vz g y
        h_n: d an Vr p,   r: d an (Vr h_n (1 - 2r) + w_n)
        then through n = tanh(x_n + r h_n), r = sigmoid(x_r + h_r), z = sigmoid(x_z + h_z).
    """
    g, xw, hw, h = node.inputs
    from .shape import cat
    zero = (0.0,) * 3
    vr, vz, vn = grads[0].chunk(3, -1) if grads[0] is not None else zero
    wr, wz, wn = grads[1].chunk(3, -1) if len(grads) > 1 and grads[1] is not None else zero
    vd = grads[2] if len(grads) > 2 and grads[2] is not None else 0.0
    xr, xz, xn = xw.chunk(3, -1)
    hr, hz, hn = hw.chunk(3, -1)
    r, z = sigmoid(xr + hr), sigmoid(xz + hz)
    n = tanh(xn + r * hn)
    s, q, p, y = 1 - z, 1 - n * n, r * (1 - r), z * (1 - z)
    dan = g * s * q
    big_r, big_z = vr + wr, vz + wz
    k = big_r * hn * p + vn + wn * r
    grad_g = s * q * k + big_z * (h - n) * y + vd * z
    bar_an = (-2 * k * g * s * n - big_z * g * y) * q
    bar_z = -k * g * q + big_z * g * (h - n) * (1 - 2 * z) + vd * g
    bar_hn = dan * big_r * p + bar_an * r
    bar_ar = (dan * (big_r * hn * (1 - 2 * r) + wn) + bar_an * hn) * p
    bar_az = bar_z * y
    return grad_g, cat([bar_ar, bar_az, bar_an], -1), cat([bar_ar, bar_az, bar_hn], -1), big_z * g * y


# ---- Elman RNN: a sequence op's steps, not recorded (nn.RNN's _RNNSequence has the backward) ------------
_RELU = _Body("relu", lambda m, x, zero: m.where(x <= 0, zero, x))          # NaN stays NaN, as relu
_RELU_GRAD = _Body("relu_grad", lambda m, g, h, zero: m.where(h > 0, g, zero))


def _rnn_program(kind: str, dtypes: tuple, relu: bool, compute, result) -> Program:
    """forward, inputs (xw, hw, 0): h' = tanh(xw + hw) or relu(xw + hw); backward, inputs
    (h', 0, gradients of h'...): their sum times tanh' = 1 - h'^2 or relu' = [h' > 0]."""
    key = ("rnn", kind, dtypes, relu, compute, result)
    prog = _programs.get(key)
    if prog is None:
        b = _Builder([("tensor", d) for d in dtypes[:-1]] + [("scalar", compute)]
                     if kind == "fwd" else [("tensor", dtypes[0]), ("scalar", compute)]
                     + [("tensor", d) for d in dtypes[1:]], compute)
        if kind == "fwd":
            pre = b(add, 0, 1)
            out = b(_RELU, pre, 2) if relu else b(tanh, pre)
        else:
            g = 2
            for k in range(3, len(b.inputs)):
                g = b(add, g, k)
            out = b(_RELU_GRAD, g, 0, 1) if relu else b(mul, g, b(_TANH_GRAD, 0))
        prog = _programs[key] = b.program([out], [result])
    return prog


def _rnn_cell_into(xw: Tensor, hw: Tensor, out: Tensor, relu: bool) -> None:
    """h' = tanh(xw + hw) (or relu) written into ``out``: one launch."""
    common, compute = _dtypes(xw, hw)
    program = _rnn_program("fwd", (xw.dtype, hw.dtype, None), relu, compute, common)
    _run("rnn_cell", program, [xw, hw, 0.0], [out], common)
    if _dispatch.observers:
        _dispatch.notify("rnn_cell", (xw, hw), (out,), {})


def _rnn_cell_backward_into(grads: list, h: Tensor, out: Tensor, relu: bool) -> None:
    """The pre-activation's gradient, ``sum(grads)`` times the activation's derivative at h',
    written into ``out``: one launch."""
    common, compute = _dtypes(h, *grads)
    program = _rnn_program("bwd", (h.dtype,) + tuple(g.dtype for g in grads), relu, compute, common)
    _run("rnn_cell_backward", program, [h, 0.0] + list(grads), [out], common)
    if _dispatch.observers:
        _dispatch.notify("rnn_cell_backward", (h, *grads), (out,), {})
