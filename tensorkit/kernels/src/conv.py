"""Triton convolution kernels: implicit GEMM (no im2col buffer: each tile of the virtual
im2col matrix is gathered straight from the input as it is multiplied).

For ``x`` (N, C, H, W), ``w`` (O, C/G, R, S) and ``y`` (N, O, P, Q) (any strides), per group
of channels (C/G in, O/G out):

* ``conv2d_fwd_kernel``:   y[n, o, p, q] = sum_{c, r, s} x[n, c, p*sh - ph + r*dh, q*sw - pw + s*dw] * w[o, c, r, s]
  GEMM rows = (n, p, q) (N*P*Q), columns = o (O/G), reduction = (r, s, c) (R*S*C/G).
* ``conv2d_dgrad_kernel``: dx[n, c, h, w'] = sum_{o, r, s} dy[n, o, p, q] * w[o, c, r, s]
  over the (p, q) with p*sh - ph + r*dh = h and q*sw - pw + s*dw = w' (the derivative of the
  forward in x). Rows = (n, h, w'), columns = c (C/G), reduction = (r, s, o). With a stride,
  tap r reaches row h only when h + ph - r*dh is a multiple of sh: the host launches one
  GEMM per stride phase (rows with the same (h + ph) mod sh, and likewise w), each looping
  over just the taps that reach its rows, so no product is spent on a zero (stride 2: a
  quarter of the rows and of the taps per launch).
* ``conv2d_wgrad_kernel``: dw[o, c, r, s] = sum_{n, p, q} dy[n, o, p, q] * x[n, c, p*sh - ph + r*dh, q*sw - pw + s*dw]
  (the derivative in w). Rows = o (O/G), columns = (c, r, s) (C/G*R*S), reduction = (n, p, q);
  the reduction is long and the output small, so it is split over ``SPLIT`` programs that
  write float32 partial sums, added by matmul's ``splitk_sum_kernel`` (deterministic: no atomics).

Each operand tile is loaded with its contiguous axis last and transposed in registers where
the product needs the other orientation (``tl.trans``): Triton's coalescing pass picks a
load's thread order from the pointer's provable contiguity, and an im2col gather has none
(its indices come from divisions), so it falls back to the last axis; loading along the
axis that is contiguous in memory keeps a warp's accesses together. NCHW pixels are
contiguous: activations and gradients are read as (channels, pixels) and results stored
that way; with ``CHANNELS_LAST`` (the host staged a channels-last copy) as (pixels,
channels). Padding reads zeros (masked loads). Products accumulate in float32 (float64 for float64) and
are rounded once on the store. The reduction runs as one flat loop over (tap, channel block):
one loop is what Triton's software pipeliner overlaps (``num_stages``). Programs are numbered
with the column tiles fastest, so the programs that run together share their input rows.

``PRECISION``: ``tl.dot``'s input_precision for float32 ("ieee" exact, or "tf32").
``INTERPRETER_BF16``: the emulated device only (see ``kernels/src/matmul.py``): the
interpreter's dot mishandles bfloat16, so operands are widened first (same result).
"""
import triton
import triton.language as tl


@triton.jit
def conv2d_fwd_kernel(
    x_ptr, w_ptr, y_ptr,                 # input (N, C, H, W), weight (O, C/G, R, S), output (N, O, P, Q)
    N, H, W, P, Q,
    CG, OG,                              # channels per group: in, out
    sxn, sxc, sxh, sxw,                  # strides of x, w, y (elements)
    swo, swc, swr, sws,
    syn, syo, syp, syq,
    sh, sw, ph, pw, dh, dw,              # stride, top/left padding, dilation
    R: tl.constexpr, S: tl.constexpr,    # kernel height, width
    CHANNELS_LAST: tl.constexpr,         # x's channels are contiguous (else its pixels are, NCHW)
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr, ACC: tl.constexpr, INTERPRETER_BF16: tl.constexpr,
):
    group = tl.program_id(1)
    num_n = tl.cdiv(OG, BLOCK_N)
    pid_m = tl.program_id(0) // num_n
    pid_n = tl.program_id(0) % num_n
    M = N * P * Q

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)      # output pixels (n, p, q)
    n = rows // (P * Q)
    p = (rows // Q) % P
    q = rows % Q
    row_ok = rows < M
    o = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)         # output channels of this group
    o_ok = o < OG
    offs_k = tl.arange(0, BLOCK_K)                      # input channels of one block

    x_rows = x_ptr + n.to(tl.int64) * sxn + (group * CG).to(tl.int64) * sxc
    w_cols = w_ptr + (group * OG + o).to(tl.int64) * swo

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    c_blocks = tl.cdiv(CG, BLOCK_K)
    for kk in range(0, R * S * c_blocks):
        rs = kk // c_blocks
        r = rs // S
        s = rs % S
        c = (kk % c_blocks) * BLOCK_K + offs_k
        c_ok = c < CG
        h = p * sh - ph + r * dh
        w_ = q * sw - pw + s * dw
        inside = row_ok & (h >= 0) & (h < H) & (w_ >= 0) & (w_ < W)   # the padding reads zeros
        pix = h * sxh + w_ * sxw
        if CHANNELS_LAST:
            a = tl.load(x_rows[:, None] + pix[:, None] + c[None, :] * sxc,
                        mask=inside[:, None] & c_ok[None, :], other=0.0)
        else:                            # (channels, pixels): the contiguous axis last (see the module docstring)
            a = tl.trans(tl.load(x_rows[None, :] + pix[None, :] + c[:, None] * sxc,
                                 mask=inside[None, :] & c_ok[:, None], other=0.0))
        b = tl.trans(tl.load(w_cols[:, None] + c[None, :] * swc + (r * swr + s * sws),
                             mask=o_ok[:, None] & c_ok[None, :], other=0.0))
        if INTERPRETER_BF16:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=PRECISION, out_dtype=ACC)

    # stored as (channels, pixels): an NCHW output's pixels are contiguous
    y_ptrs = (y_ptr + (n.to(tl.int64) * syn + p * syp + q * syq)[None, :]
              + (group * OG + o).to(tl.int64)[:, None] * syo)
    tl.store(y_ptrs, tl.trans(acc).to(y_ptr.dtype.element_ty), mask=row_ok[None, :] & o_ok[:, None])


@triton.jit
def conv2d_dgrad_kernel(
    g_ptr, w_ptr, dx_ptr,                # grad of the output (N, O, P, Q), weight (O, C/G, R, S), dx (N, C, H, W)
    N, P, Q,
    CG, OG,
    sgn, sgo, sgp, sgq,
    swo, swc, swr, sws,
    sxn, sxc, sxh, sxw,                  # strides of dx
    sh, sw, ph, pw, dh, dw,
    # one stride phase: the rows h = h0 + i*sh (i < HP) and columns w = w0 + j*sw (j < WP), and
    # the taps that reach them from an output, r = r0 + a*step_r (a < RP), s = s0 + b*step_s (b < SP)
    HP, WP, h0, w0, r0, step_r, RP, s0, step_s, SP,
    CHANNELS_LAST: tl.constexpr,         # g's channels are contiguous (else its pixels are)
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr, ACC: tl.constexpr, INTERPRETER_BF16: tl.constexpr,
):
    group = tl.program_id(1)
    num_n = tl.cdiv(CG, BLOCK_N)
    pid_m = tl.program_id(0) // num_n
    pid_n = tl.program_id(0) % num_n
    M = N * HP * WP

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)      # input pixels (n, h, w) of this phase
    n = rows // (HP * WP)
    h = h0 + ((rows // WP) % HP) * sh
    w_ = w0 + (rows % WP) * sw
    row_ok = rows < M
    c = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)         # input channels of this group
    c_ok = c < CG
    offs_k = tl.arange(0, BLOCK_K)                      # output channels of one block

    g_rows = g_ptr + n.to(tl.int64) * sgn + (group * OG).to(tl.int64) * sgo
    w_cols = w_ptr + (group * OG).to(tl.int64) * swo + c * swc

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    o_blocks = tl.cdiv(OG, BLOCK_K)
    for kk in range(0, RP * SP * o_blocks):
        ab = kk // o_blocks
        r = r0 + (ab // SP) * step_r
        s = s0 + (ab % SP) * step_s
        o = (kk % o_blocks) * BLOCK_K + offs_k
        o_ok = o < OG
        # the output (p, q) whose tap (r, s) lands on (h, w): p*sh = h + ph - r*dh, a multiple of
        # sh by the choice of phase and taps; negative means no output (the division waits for it)
        hp = h + ph - r * dh
        wq = w_ + pw - s * dw
        p = tl.where(hp >= 0, hp, 0) // sh
        q = tl.where(wq >= 0, wq, 0) // sw
        hit = row_ok & (hp >= 0) & (wq >= 0) & (p < P) & (q < Q)
        pix = p * sgp + q * sgq
        if CHANNELS_LAST:
            a = tl.load(g_rows[:, None] + pix[:, None] + o[None, :] * sgo, mask=hit[:, None] & o_ok[None, :], other=0.0)
        else:
            a = tl.trans(tl.load(g_rows[None, :] + pix[None, :] + o[:, None] * sgo,
                                 mask=hit[None, :] & o_ok[:, None], other=0.0))
        b = tl.load(w_cols[None, :] + o[:, None] * swo + (r * swr + s * sws),
                    mask=o_ok[:, None] & c_ok[None, :], other=0.0)
        if INTERPRETER_BF16:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=PRECISION, out_dtype=ACC)

    dx_ptrs = (dx_ptr + (n.to(tl.int64) * sxn + h * sxh + w_ * sxw)[None, :]
               + (group * CG + c).to(tl.int64)[:, None] * sxc)
    tl.store(dx_ptrs, tl.trans(acc).to(dx_ptr.dtype.element_ty), mask=row_ok[None, :] & c_ok[:, None])


@triton.jit
def conv2d_wgrad_kernel(
    x_ptr, g_ptr, out_ptr,               # input (N, C, H, W), grad of the output (N, O, P, Q), result
    N, H, W, P, Q,
    CG, OG,
    sxn, sxc, sxh, sxw,
    sgn, sgo, sgp, sgq,
    out_split, out_o,                    # result strides: per split (partials), per output channel;
                                         # a row of the result is the contiguous (c, r, s) of one o
    sh, sw, ph, pw, dh, dw,
    chunk,                               # reduction elements (n, p, q) per split; a multiple of BLOCK_K
    R: tl.constexpr, S: tl.constexpr,
    CHANNELS_LAST: tl.constexpr,         # x and g are channels-last: the weight positions j run (r, s, c),
                                         # c fastest (contiguous in x), and g is read along o
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr, ACC: tl.constexpr, INTERPRETER_BF16: tl.constexpr,
):
    group = tl.program_id(1)
    split = tl.program_id(2)
    CRS = CG * R * S
    num_n = tl.cdiv(CRS, BLOCK_N)
    pid_m = tl.program_id(0) // num_n
    pid_n = tl.program_id(0) % num_n
    K = N * P * Q

    o = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)         # output channels of this group
    o_ok = o < OG
    j = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)         # a weight position (c, r, s)
    j_ok = j < CRS
    if CHANNELS_LAST:
        c = j % CG
        r = j // (S * CG)
        s = (j // CG) % S
    else:
        c = j // (R * S)
        r = (j // S) % R
        s = j % S
    offs_k = tl.arange(0, BLOCK_K)

    g_rows = g_ptr + (group * OG + o).to(tl.int64) * sgo
    x_cols = x_ptr + (group * CG + c).to(tl.int64) * sxc

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    k_end = tl.minimum(K, (split + 1) * chunk)
    for k0 in range(split * chunk, k_end, BLOCK_K):
        k = k0 + offs_k                                 # (n, p, q) of the reduction
        k_ok = k < k_end
        n = (k // (P * Q)).to(tl.int64)
        p = (k // Q) % P
        q = k % Q
        pix = n * sgn + p * sgp + q * sgq
        if CHANNELS_LAST:                # (reduction, output channels), channels contiguous
            a = tl.trans(tl.load(g_rows[None, :] + pix[:, None], mask=o_ok[None, :] & k_ok[:, None], other=0.0))
            h = p[:, None] * sh - ph + r[None, :] * dh
            w_ = q[:, None] * sw - pw + s[None, :] * dw
            inside = k_ok[:, None] & j_ok[None, :] & (h >= 0) & (h < H) & (w_ >= 0) & (w_ < W)
            b = tl.load(x_cols[None, :] + n[:, None] * sxn + h * sxh + w_ * sxw, mask=inside, other=0.0)
        else:                            # the reduction's pixels are contiguous: loaded last
            a = tl.load(g_rows[:, None] + pix[None, :], mask=o_ok[:, None] & k_ok[None, :], other=0.0)
            h = p[None, :] * sh - ph + r[:, None] * dh
            w_ = q[None, :] * sw - pw + s[:, None] * dw
            inside = j_ok[:, None] & k_ok[None, :] & (h >= 0) & (h < H) & (w_ >= 0) & (w_ < W)
            b = tl.trans(tl.load(x_cols[:, None] + n[None, :] * sxn + h * sxh + w_ * sxw, mask=inside, other=0.0))
        if INTERPRETER_BF16:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=PRECISION, out_dtype=ACC)

    out_ptrs = (out_ptr + split.to(tl.int64) * out_split + (group * OG + o).to(tl.int64)[:, None] * out_o
                + (c * (R * S) + r * S + s)[None, :])         # the result is (O, C/G, R, S) either way
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=o_ok[:, None] & j_ok[None, :])
