"""Triton matmul kernels: ``C[b] = A[b] @ B[b]`` for each batch index ``b``.

``A[b]`` is (M, K), ``B[b]`` is (K, N), ``C[b]`` is (M, N); products are accumulated in
float32 (float64 for float64 inputs) and rounded once to C's dtype on the store. Two kernels:

* ``matmul_kernel``: any strides (transposed, sliced, batch strides 0 for broadcast), up to
  two batch dims. One program per (batch, output tile); pointer loads, masked along K.
* ``matmul_kernel_tma``: Hopper and newer (sm90+). Persistent (one program per SM, looping
  over output tiles) and loading through TMA tensor descriptors, which also zero-fill the
  ragged edges (no masks). Needs each operand to have unit stride in one of its two dims and
  16-byte aligned rows; no batch (the host folds a batch into M where it can).

Both walk output tiles in grouped order (``_tile``) so that consecutive programs reuse the
same A rows and B columns while they are still in L2.

``PRECISION`` is ``tl.dot``'s ``input_precision``: "ieee" (exact float32 products) or "tf32";
it is ignored for float16/bfloat16/float64 inputs.

``INTERPRETER_BF16`` works around a bug of Triton's interpreter with bfloat16 (the host sets
it for bfloat16 on the emulated device only; on a GPU it is never set): its dot multiplies the
raw uint16 bits, so the operands are cast to float32 first (same result: a bfloat16 product is
exact in float32, and the sum is float32 either way). (Its float32 -> bfloat16 cast, which
truncates, is fixed for every kernel in ``kernels/_interpret.py``.)
"""
import triton
import triton.language as tl


@triton.jit
def _tile(tile_id, num_pid_m, num_pid_n, GROUP_M: tl.constexpr):
    """(row tile, column tile) of the ``tile_id``-th tile in grouped order: GROUP_M row tiles
    sweep the columns together, so the B column tiles they share are read from L2, not DRAM
    (the Triton tutorial's "L2 cache optimizations")."""
    in_group = GROUP_M * num_pid_n
    first_m = (tile_id // in_group) * GROUP_M
    group_m = min(num_pid_m - first_m, GROUP_M)       # the last group may be short
    pid_m = first_m + (tile_id % in_group) % group_m
    pid_n = (tile_id % in_group) // group_m
    return pid_m, pid_n


@triton.jit
def matmul_kernel(
    a_ptr, b_ptr, c_ptr,                 # A, B, C: first element of batch 0 (any strides, in elements)
    M, N, K,                             # C[b] is M x N; the reduction is over K
    B1,                                  # size of the inner batch dim (batch index b = b0 * B1 + b1)
    stride_a0, stride_a1, stride_am, stride_ak,   # A's strides: batch dims 0, 1 (0 = broadcast), rows, cols
    stride_b0, stride_b1, stride_bk, stride_bn,
    stride_c0, stride_c1, stride_cm, stride_cn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,               # row tiles per group of the tile order (see _tile)
    PRECISION: tl.constexpr,             # tl.dot input_precision for float32: "ieee" | "tf32"
    ACC: tl.constexpr,                   # accumulator dtype: tl.float32, or tl.float64 for float64
    WIDE: tl.constexpr,                  # offsets within one matrix can pass 2**31: index in int64
    INTERPRETER_BF16: tl.constexpr,      # emulated device only (see the module docstring)
):
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    tiles = num_pid_m * num_pid_n
    batch = pid // tiles                 # the batch is the slowest index: its tiles run together
    pid_m, pid_n = _tile(pid % tiles, num_pid_m, num_pid_n, GROUP_M)
    b0 = (batch // B1).to(tl.int64)      # batch offsets in int64: a batch of big matrices passes 2**31
    b1 = (batch % B1).to(tl.int64)
    a_ptr += b0 * stride_a0 + b1 * stride_a1
    b_ptr += b0 * stride_b0 + b1 * stride_b1
    c_ptr += b0 * stride_c0 + b1 * stride_c1

    # Rows past M (columns past N) of the last tile wrap to valid ones: their loads need no mask
    # and their results are dropped by the store's mask.
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)) % M
    offs_n = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)) % N
    offs_k = tl.arange(0, BLOCK_K)
    if WIDE:
        offs_m = offs_m.to(tl.int64)
        offs_n = offs_n.to(tl.int64)
        offs_k = offs_k.to(tl.int64)
    a_ptrs = a_ptr + offs_m[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = b_ptr + offs_k[:, None] * stride_bk + offs_n[None, :] * stride_bn

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        k_left = K - k * BLOCK_K         # the last K block is ragged: zeros add nothing
        a = tl.load(a_ptrs, mask=offs_k[None, :] < k_left, other=0.0)
        b = tl.load(b_ptrs, mask=offs_k[:, None] < k_left, other=0.0)
        if INTERPRETER_BF16:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=PRECISION, out_dtype=ACC)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    if WIDE:
        rows = rows.to(tl.int64)
        cols = cols.to(tl.int64)
    c_ptrs = c_ptr + rows[:, None] * stride_cm + cols[None, :] * stride_cn
    c = acc.to(c_ptr.dtype.element_ty)
    tl.store(c_ptrs, c, mask=(rows[:, None] < M) & (cols[None, :] < N))


@triton.jit
def matmul_kernel_tma(
    a_ptr, b_ptr, c_ptr,                 # A, B, C (C: row-major M x N, row stride stride_c)
    M, N, K,
    stride_a,                            # A's non-unit stride: of its rows if A_K_MAJOR, else of its columns
    stride_b,                            # B's non-unit stride: of its columns if B_K_MAJOR, else of its rows
    stride_c,
    A_K_MAJOR: tl.constexpr,             # A is stored M x K with unit stride along K (else K x M)
    B_K_MAJOR: tl.constexpr,             # B is stored N x K with unit stride along K (else K x N)
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    NUM_SMS: tl.constexpr,               # programs launched: one per SM, each looping over tiles
    PRECISION: tl.constexpr,
    SPLIT_STORE: tl.constexpr,           # store C in two halves of BLOCK_N / 2 (less shared memory
                                         # for the store, more left for the pipeline's stages)
    INTERPRETER_BF16: tl.constexpr,      # emulated device only (see the module docstring)
):
    # TMA descriptors over each operand as laid out in memory; out-of-bounds reads give zeros.
    if A_K_MAJOR:
        a_desc = tl.make_tensor_descriptor(a_ptr, shape=[M, K], strides=[stride_a, 1], block_shape=[BLOCK_M, BLOCK_K])
    else:
        a_desc = tl.make_tensor_descriptor(a_ptr, shape=[K, M], strides=[stride_a, 1], block_shape=[BLOCK_K, BLOCK_M])
    if B_K_MAJOR:
        b_desc = tl.make_tensor_descriptor(b_ptr, shape=[N, K], strides=[stride_b, 1], block_shape=[BLOCK_N, BLOCK_K])
    else:
        b_desc = tl.make_tensor_descriptor(b_ptr, shape=[K, N], strides=[stride_b, 1], block_shape=[BLOCK_K, BLOCK_N])
    STORE_N: tl.constexpr = BLOCK_N // 2 if SPLIT_STORE else BLOCK_N
    c_desc = tl.make_tensor_descriptor(c_ptr, shape=[M, N], strides=[stride_c, 1], block_shape=[BLOCK_M, STORE_N])

    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    k_tiles = tl.cdiv(K, BLOCK_K)
    tile_c = tl.program_id(0) - NUM_SMS     # the store's own tile counter (see below)
    # flatten: one software pipeline over (tile, k) pairs, so the next tile's loads overlap
    # this tile's last products and its store
    for tile_id in tl.range(tl.program_id(0), num_pid_m * num_pid_n, NUM_SMS, flatten=True):
        pid_m, pid_n = _tile(tile_id, num_pid_m, num_pid_n, GROUP_M)
        off_m = pid_m * BLOCK_M
        off_n = pid_n * BLOCK_N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for ki in range(k_tiles):
            off_k = ki * BLOCK_K
            if A_K_MAJOR:
                a = a_desc.load([off_m, off_k])
            else:
                a = a_desc.load([off_k, off_m]).T
            if B_K_MAJOR:
                b = b_desc.load([off_n, off_k]).T
            else:
                b = b_desc.load([off_k, off_n])
            if INTERPRETER_BF16:
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
        # the same tile again, from a second counter: Triton's Blackwell pipeliner mishandles a
        # value used both by the loads and by the store of a flattened loop (tutorial 09)
        tile_c += NUM_SMS
        pid_m, pid_n = _tile(tile_c, num_pid_m, num_pid_n, GROUP_M)
        off_m = pid_m * BLOCK_M
        off_n = pid_n * BLOCK_N
        if SPLIT_STORE:
            halves = tl.permute(tl.reshape(acc, (BLOCK_M, 2, BLOCK_N // 2)), (0, 2, 1))
            c0, c1 = tl.split(halves)
            c_desc.store([off_m, off_n], c0.to(c_ptr.dtype.element_ty))
            c_desc.store([off_m, off_n + BLOCK_N // 2],
                         c1.to(c_ptr.dtype.element_ty))
        else:
            c_desc.store([off_m, off_n], acc.to(c_ptr.dtype.element_ty))


@triton.jit
def splitk_sum_kernel(part_ptr, out_ptr, numel, SPLIT, BLOCK: tl.constexpr):
    """out[i] = sum over the SPLIT partial results part[split, i] (contiguous), in order."""
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = i < numel
    acc = tl.load(part_ptr + i, mask=mask, other=0.0)
    for k in range(1, SPLIT):
        acc += tl.load(part_ptr + k * numel + i, mask=mask, other=0.0)
    tl.store(out_ptr + i, acc.to(out_ptr.dtype.element_ty), mask=mask)
