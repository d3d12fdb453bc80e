"""Triton pooling kernels: one program per BLOCK output elements (input elements for the
backward), each looping over its window; windows as in ``ops/pool.py``: along an axis, output
``o`` reads ``count`` taps from ``start``, ``step`` apart (regular: o*s - p, k, d; adaptive:
[floor(o*In/Out), ceil((o+1)*In/Out)), step 1), skipping taps outside the input.

* ``max_pool_kernel``: y = max over the window (NaN wins), idx = h*W + w of the maximum.
* ``avg_pool_kernel``: y = sum over the window / divisor (see ``_divisor``).
* ``avg_pool_backward_kernel``: dx[h, w] = sum over the outputs (oh, ow) whose windows hold
  (h, w) of dy[oh, ow] / divisor(oh, ow): a gather (no atomics). Those outputs form a range
  per axis: regular [ceil((h + p - k + 1) / s), floor((h + p) / s)], adaptive
  [floor(h*Out/In), ceil((h+1)*Out/In) - 1].

Sums accumulate in float32 (float64 for float64). Outputs are contiguous (N, C, Ho, Wo);
inputs take any strides.
"""
import triton
import triton.language as tl


@triton.jit
def _window(o, n_in, n_out, k, s, p, d, ADAPTIVE: tl.constexpr):
    """(start, count, step) of output o's window along one axis."""
    if ADAPTIVE:
        start = (o * n_in) // n_out
        count = ((o + 1) * n_in + n_out - 1) // n_out - start
        return start, count, 1
    return o * s - p, k + 0 * o, d


@triton.jit
def _divisor(oh, ow, H, W, Ho, Wo, kh, sh, ph, kw, sw, pw,
             ADAPTIVE: tl.constexpr, COUNT_PAD: tl.constexpr, DIVISOR: tl.constexpr):
    if DIVISOR != 0:
        return tl.full(oh.shape, DIVISOR, tl.int32)
    if ADAPTIVE:
        _h0, ch, _sh = _window(oh, H, Ho, kh, sh, ph, 1, True)
        _w0, cw, _sw = _window(ow, W, Wo, kw, sw, pw, 1, True)
        return ch * cw
    h0 = oh * sh - ph
    w0 = ow * sw - pw
    h1 = tl.minimum(h0 + kh, H + ph)              # ceil_mode windows stop at the padding
    w1 = tl.minimum(w0 + kw, W + pw)
    if COUNT_PAD:
        return (h1 - h0) * (w1 - w0)
    return (tl.minimum(h1, H) - tl.maximum(h0, 0)) * (tl.minimum(w1, W) - tl.maximum(w0, 0))


@triton.jit
def _position(i, C, rows, cols, ptr, s_n, s_c):
    """(row, column) of element i of a contiguous (N, C, rows, cols) result, and the pointer to its
    (n, c) plane in the operand ``ptr`` (batch and channel strides s_n, s_c)."""
    col = i % cols
    row = (i // cols) % rows
    nc = i // (cols * rows)
    return row, col, ptr + (nc // C).to(tl.int64) * s_n + (nc % C).to(tl.int64) * s_c


@triton.jit
def max_pool_kernel(
    x_ptr, y_ptr, idx_ptr,               # input (N, C, H, W) any strides; maxima, indices: contiguous (N, C, Ho, Wo)
    total, C, H, W, Ho, Wo,
    sxn, sxc, sxh, sxw,
    kh, sh, ph, dh, kw, sw, pw, dw,
    KH_MAX, KW_MAX,                      # the longest window along each axis (loop bounds)
    ADAPTIVE: tl.constexpr,
    ACC: tl.constexpr,                   # compared in float32 (float64): exact, and the emulated device's
                                         # bfloat16 compares raw bits
    BLOCK: tl.constexpr,
):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = i < total
    oh, ow, base = _position(i, C, Ho, Wo, x_ptr, sxn, sxc)
    h0, ch, sth = _window(oh, H, Ho, kh, sh, ph, dh, ADAPTIVE)
    w0, cw, stw = _window(ow, W, Wo, kw, sw, pw, dw, ADAPTIVE)
    best = tl.full((BLOCK,), float("-inf"), ACC)
    at = tl.full((BLOCK,), -1, tl.int64)
    for a in range(0, KH_MAX):
        h = h0 + a * sth
        for b in range(0, KW_MAX):
            w = w0 + b * stw
            ok = live & (a < ch) & (b < cw) & (h >= 0) & (h < H) & (w >= 0) & (w < W)
            v = tl.load(base + h * sxh + w * sxw, mask=ok, other=0.0).to(ACC)
            take = ok & ((at < 0) | (v > best) | (v != v))      # NaN wins, as in PyTorch
            best = tl.where(take, v, best)
            at = tl.where(take, (h * W + w).to(tl.int64), at)
    tl.store(y_ptr + i, best.to(y_ptr.dtype.element_ty), mask=live)
    tl.store(idx_ptr + i, at, mask=live)


@triton.jit
def avg_pool_kernel(
    x_ptr, y_ptr,                        # input (N, C, H, W) any strides; output contiguous (N, C, Ho, Wo)
    total, C, H, W, Ho, Wo,
    sxn, sxc, sxh, sxw,
    kh, sh, ph, kw, sw, pw,
    KH_MAX, KW_MAX,
    ADAPTIVE: tl.constexpr, COUNT_PAD: tl.constexpr, DIVISOR: tl.constexpr,
    ACC: tl.constexpr, BLOCK: tl.constexpr,
):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = i < total
    oh, ow, base = _position(i, C, Ho, Wo, x_ptr, sxn, sxc)
    h0, ch, _sth = _window(oh, H, Ho, kh, sh, ph, 1, ADAPTIVE)
    w0, cw, _stw = _window(ow, W, Wo, kw, sw, pw, 1, ADAPTIVE)
    acc = tl.zeros((BLOCK,), ACC)
    for a in range(0, KH_MAX):
        h = h0 + a
        for b in range(0, KW_MAX):
            w = w0 + b
            ok = live & (a < ch) & (b < cw) & (h >= 0) & (h < H) & (w >= 0) & (w < W)
            acc += tl.load(base + h * sxh + w * sxw, mask=ok, other=0.0).to(ACC)
    div = _divisor(oh, ow, H, W, Ho, Wo, kh, sh, ph, kw, sw, pw, ADAPTIVE, COUNT_PAD, DIVISOR)
    tl.store(y_ptr + i, (acc / div.to(ACC)).to(y_ptr.dtype.element_ty), mask=live)


@triton.jit
def _outputs_holding(i, n_in, n_out, k, s, p, ADAPTIVE: tl.constexpr):
    """(first, last) output along one axis whose window holds input position i."""
    if ADAPTIVE:
        return (i * n_out) // n_in, ((i + 1) * n_out + n_in - 1) // n_in - 1
    num = i + p - k + 1
    first = tl.where(num > 0, (tl.maximum(num, 0) + s - 1) // s, 0)
    return first, tl.minimum((i + p) // s, n_out - 1)


@triton.jit
def avg_pool_backward_kernel(
    g_ptr, dx_ptr,                       # grad of the output (N, C, Ho, Wo) any strides; dx contiguous (N, C, H, W)
    total, C, H, W, Ho, Wo,
    sgn, sgc, sgh, sgw,
    kh, sh, ph, kw, sw, pw,
    OH_MAX, OW_MAX,                      # the most outputs one input position belongs to, per axis
    ADAPTIVE: tl.constexpr, COUNT_PAD: tl.constexpr, DIVISOR: tl.constexpr,
    ACC: tl.constexpr, BLOCK: tl.constexpr,
):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = i < total
    h, w, base = _position(i, C, H, W, g_ptr, sgn, sgc)
    oh0, oh1 = _outputs_holding(h, H, Ho, kh, sh, ph, ADAPTIVE)
    ow0, ow1 = _outputs_holding(w, W, Wo, kw, sw, pw, ADAPTIVE)
    acc = tl.zeros((BLOCK,), ACC)
    for a in range(0, OH_MAX):
        oh = oh0 + a
        for b in range(0, OW_MAX):
            ow = ow0 + b
            ok = live & (oh <= oh1) & (ow <= ow1)
            v = tl.load(base + oh * sgh + ow * sgw, mask=ok, other=0.0).to(ACC)
            div = _divisor(oh, ow, H, W, Ho, Wo, kh, sh, ph, kw, sw, pw, ADAPTIVE, COUNT_PAD, DIVISOR)
            acc += tl.where(ok, v / div.to(ACC), 0.0)
    tl.store(dx_ptr + i, acc.to(dx_ptr.dtype.element_ty), mask=live)
