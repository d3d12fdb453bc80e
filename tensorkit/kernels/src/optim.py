"""Triton multi-tensor optimizer updates (host side: ``kernels/optim.py``).

One launch updates every parameter of a group. ``table`` is an int64 ``[T, 6]`` tensor, one
row per parameter: the addresses of param, grad and three state buffers, then the numel.
``chunks`` is an int64 ``[C, 2]`` tensor of (row of ``table``, first element): program ``c``
updates ``BLOCK`` elements of one parameter, the tail masked. Everything is float32.

Adam / AdamW (``adam_kernel``), PyTorch's single-tensor order of operations::

    g = -grad if MAXIMIZE else grad;  p = p * decay (DECOUPLED)  or  g = g + wd * p (L2)
    m = m + (1 - beta1) * (g - m)                         (torch.lerp, weight < 0.5)
    v = v * beta2 + ((1 - beta2) * g) * g;  v_max = max(v_max, v) (AMSGRAD)
    p = p + (-step_size * m) / (sqrt(v) / bc2_sqrt + eps)

SGD (``sgd_kernel``): g = g + wd * p;  b = g (FIRST) or b * momentum + (1 - dampening) * g;
g = g + momentum * b (NESTEROV) or b;  p = p + (-lr) * g.
"""
import triton
import triton.language as tl


@triton.jit
def _row(table, chunks, BLOCK: tl.constexpr):
    """This program's parameter row, its element offsets and mask."""
    c = tl.program_id(0)
    t = tl.load(chunks + 2 * c)                  # row of the pointer table
    start = tl.load(chunks + 2 * c + 1)          # first element of this chunk
    n = tl.load(table + 6 * t + 5)               # numel of that parameter
    offs = start + tl.arange(0, BLOCK)
    return table + 6 * t, offs, offs < n


@triton.jit
def _ptr(row, i):
    return tl.load(row + i).to(tl.pointer_type(tl.float32))


@triton.jit
def adam_kernel(table,        # int64 [T, 6]: param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, numel
                chunks,       # int64 [C, 2]: (row, start)
                step_size, bc2_sqrt, beta1w, beta2, beta2w, eps, wd, decay,   # float32 scalars
                WD: tl.constexpr, DECOUPLED: tl.constexpr, AMSGRAD: tl.constexpr, MAXIMIZE: tl.constexpr,
                BLOCK: tl.constexpr):
    row, offs, mask = _row(table, chunks, BLOCK)
    pp, gp, mp, vp = _ptr(row, 0), _ptr(row, 1), _ptr(row, 2), _ptr(row, 3)
    p = tl.load(pp + offs, mask=mask)
    g = tl.load(gp + offs, mask=mask)
    m = tl.load(mp + offs, mask=mask)
    v = tl.load(vp + offs, mask=mask)
    if MAXIMIZE:
        g = -g
    if WD:
        if DECOUPLED:
            p = p * decay
        else:
            g = g + wd * p
    m = m + beta1w * (g - m)
    v = v * beta2 + (beta2w * g) * g
    tl.store(mp + offs, m, mask=mask)
    tl.store(vp + offs, v, mask=mask)
    if AMSGRAD:
        xp = _ptr(row, 4)
        v = tl.maximum(tl.load(xp + offs, mask=mask), v)
        tl.store(xp + offs, v, mask=mask)
    denom = tl.sqrt_rn(v) / bc2_sqrt + eps
    tl.store(pp + offs, p + (-step_size * m) / denom, mask=mask)


@triton.jit
def sgd_kernel(table,         # int64 [T, 6]: param, grad, momentum_buffer, -, -, numel
               chunks,        # int64 [C, 2]: (row, start)
               lr, momentum, dampw, wd,                 # float32 scalars (dampw = 1 - dampening)
               WD: tl.constexpr, MOMENTUM: tl.constexpr, FIRST: tl.constexpr, NESTEROV: tl.constexpr,
               MAXIMIZE: tl.constexpr, BLOCK: tl.constexpr):
    row, offs, mask = _row(table, chunks, BLOCK)
    pp, gp = _ptr(row, 0), _ptr(row, 1)
    p = tl.load(pp + offs, mask=mask)
    g = tl.load(gp + offs, mask=mask)
    if MAXIMIZE:
        g = -g
    if WD:
        g = g + wd * p
    if MOMENTUM:
        bp = _ptr(row, 2)
        if FIRST:
            b = g
        else:
            b = tl.load(bp + offs, mask=mask) * momentum + dampw * g
        tl.store(bp + offs, b, mask=mask)
        if NESTEROV:
            g = g + momentum * b
        else:
            g = b
    tl.store(pp + offs, p + (-lr) * g, mask=mask)
