"""Tutorial 1: tensors on the CPU, for PyTorch users.

tensorkit follows PyTorch's names and semantics, so most of what you know carries over
with ``import tensorkit as tk``. This walk-through runs top to bottom and prints each
result with a short note:

    1. creating tensors             6. pointwise math
    2. dtypes and type promotion    7. reductions
    3. the zero-copy numpy bridge   8. linear algebra
    4. views                        9. printing large tensors
    5. indexing

Run it with ``make demo`` (or ``python tutorials/01_tensors.py``). The first run compiles
the CPU kernels it uses (Numba); later runs load them from the on-disk cache.
"""
import numpy as np

import tensorkit as tk

from _narrate import refused, section, show  # tutorials/_narrate.py: printing helpers


# ---------------------------------------------------------------------------------------------
section("1. Creating tensors")

show("From (nested) Python data; floats default to float32, ints to int64, as in PyTorch",
     tk.tensor([[1.0, 2.0], [3.0, 4.0]]))
show("tk.tensor([1, 2, 3]).dtype", tk.tensor([1, 2, 3]).dtype)
show("zeros / ones / full take a shape (as separate ints or one tuple)", tk.zeros(2, 3))
show("tk.full((2, 2), 7)", tk.full((2, 2), 7))
show("arange(start, end, step): end is excluded", tk.arange(0, 10, 3))
show("linspace(start, end, steps): both ends included", tk.linspace(0, 1, 5))
show("eye(n): the identity", tk.eye(3))

tk.manual_seed(0)
r1 = tk.rand(2, 3)
tk.manual_seed(0)
r2 = tk.rand(2, 3)
show("rand (uniform [0, 1)) and randn (normal); manual_seed makes them repeatable", r1)
show("same seed, same numbers: tk.equal(r1, r2)", tk.equal(r1, r2))
show("randn(2, 3)", tk.randn(2, 3))

x = tk.arange(6, dtype=tk.float32).reshape(2, 3)
show("*_like copies shape and dtype (and device) from another tensor: zeros_like(x)", tk.zeros_like(x))
show("ones_like(x, dtype=tk.int32)", tk.ones_like(x, dtype=tk.int32))
show("shape, dtype, device, number of elements",
     f"x.shape={x.shape}  x.dtype={x.dtype}  x.device={x.device}  x.numel()={x.numel()}")

# ---------------------------------------------------------------------------------------------
section("2. dtypes and type promotion (PyTorch's rules)")

i32 = tk.tensor([1, 2, 3], dtype=tk.int32)
h = tk.tensor([1.0, 2.0], dtype=tk.float16)
show("int32 tensor + Python float -> the default float dtype (float32), not float64",
     (i32 + 2.5).dtype)
show("float16 tensor + Python float -> stays float16 (a Python number never widens a tensor's kind)",
     (h + 2.5).dtype)
show("int / int is true division -> float32 (use // for floor division)", i32 / tk.tensor([2, 2, 2], dtype=tk.int32))
show("int32 tensor + int64 tensor -> int64 (two tensors: the wider one wins)",
     (i32 + tk.tensor([1, 1, 1])).dtype)
show("tk.promote_types(tk.int32, tk.float16)", tk.promote_types(tk.int32, tk.float16))
show(".to(dtype) and the shorthands .float() / .long() / .half() convert",
     f"{i32.float().dtype}, {i32.long().dtype}, {i32.half().dtype}")

counts = tk.tensor([1, 2, 3])
refused("In-place ops can't change a tensor's dtype: int64.add_(1.5) is refused, as in PyTorch",
        lambda: counts.add_(1.5))
counts.add_(1)
show("but an int64 result fits: counts.add_(1)", counts)

# ---------------------------------------------------------------------------------------------
section("3. The numpy bridge shares memory")

a = np.arange(4, dtype=np.float32)
t = tk.from_numpy(a)
a[0] = 100.0
show("tk.from_numpy(a) is zero-copy: after a[0] = 100 the tensor sees it", t)
t.mul_(2)
show("and in-place ops on the tensor change the numpy array: t.mul_(2); print(a)", a)
b = t.numpy()
b[1] = -1.0
show("t.numpy() shares memory too: b = t.numpy(); b[1] = -1", t)
c = tk.tensor(a)
a[2] = 0.0
show("tk.tensor(a) copies instead, like torch.tensor: after a[2] = 0 the copy still has 4.", c)

# ---------------------------------------------------------------------------------------------
section("4. Views: new shapes over the same memory")

base = tk.arange(12)
v = base.view(3, 4)
show("view(3, 4) reinterprets the 12 elements; no copy", v)
v[0, 0] = 99
show("writing through the view changes the base: base[0]", base[0])
show("reshape works like view when it can, and copies when it must", base.reshape(2, -1))
tr = v.transpose(0, 1)
show("transpose(0, 1) swaps strides: no data moves. v.stride() vs v.t().stride()",
     f"{v.stride()} vs {tr.stride()}")
show("permute reorders all dims: shape of tk.zeros(2, 3, 4).permute(2, 0, 1)", tk.zeros(2, 3, 4).permute(2, 0, 1).shape)
show("expand repeats size-1 dims without copying (stride 0)", tk.tensor([[1], [2]]).expand(2, 3))
show("narrow(dim, start, length): v.narrow(1, 1, 2)", v.narrow(1, 1, 2))
show("select(dim, index) drops the dim: v.select(0, 1)", v.select(0, 1))
show("unbind(dim) splits into a tuple of selects", v.unbind(0))
show("split(size, dim): pieces of a given size (the last may be smaller)", tk.arange(5).split(2))
show("chunk(n, dim): n pieces", tk.arange(6).chunk(3))
show("is_contiguous(): v vs its transpose", f"{v.is_contiguous()} vs {tr.is_contiguous()}")
refused("view() on a non-contiguous tensor cannot be expressed with strides; the error says what to do",
        lambda: tr.view(12))
show("tr.contiguous() copies into row-major order; then view works", tr.contiguous().view(12))

# ---------------------------------------------------------------------------------------------
section("5. Indexing")

m = tk.arange(12).reshape(3, 4)
show("m", m)
show("basic indexing (ints, slices with steps, None, ...) returns views: m[1:, ::2]", m[1:, ::2])
show("m[..., -1] (last column)", m[..., -1])
show("advanced indexing with integer tensors gathers (a copy): m[tk.tensor([2, 0])]", m[tk.tensor([2, 0])])
show("pairs of index tensors pick elements: m[[0, 2], [1, 3]]", m[[0, 2], [1, 3]])
show("a boolean mask selects the True elements, flattened: m[m % 2 == 0]", m[m % 2 == 0])
m[m > 8] = 0
show("setitem with a mask: m[m > 8] = 0", m)
m[:, 0] = tk.tensor([7, 8, 9])
show("setitem on a slice broadcasts the value: m[:, 0] = tk.tensor([7, 8, 9])", m)

# ---------------------------------------------------------------------------------------------
section("6. Pointwise math (broadcasting as in numpy/PyTorch)")

p = tk.tensor([[0.5, -1.0, 2.0]])
q = tk.tensor([[1.0], [2.0]])
show("(1, 3) + (2, 1) broadcasts to (2, 3)", p + q)
show("functions: tk.exp, p.sqrt(), p.abs(), p.clamp(min=0), p.sigmoid() ... e.g. tk.exp(p)", tk.exp(p))
show("p.clamp(min=0)", p.clamp(min=0))
show("comparisons give bool tensors: p > 0", p > 0)
show("tk.where(cond, a, b)", tk.where(p > 0, p, tk.zeros_like(p)))
show("sqrt of a negative is nan (no exception), as in PyTorch: p.sqrt()", p.sqrt())

# ---------------------------------------------------------------------------------------------
section("7. Reductions")

s = tk.tensor([[1.0, 5.0, 3.0], [4.0, 2.0, 6.0]])
show("s", s)
show("s.sum() over everything gives a 0-d tensor", s.sum())
show("s.sum(dim=0) and s.mean(dim=1, keepdim=True)", f"{s.sum(dim=0)}\n{s.mean(dim=1, keepdim=True)}")
values, indices = s.max(dim=1)
show("max(dim) returns (values, indices), as a named tuple", f"values={values}\nindices={indices}")
show("argmax(dim=1)", s.argmax(dim=1))
show("var and std are unbiased by default (correction=1): s.var(dim=1), s.std()",
     f"{s.var(dim=1)}\n{s.std()}")
show("softmax(dim): rows sum to 1", tk.softmax(s, dim=1))
show("cumsum(dim)", s.cumsum(dim=1))
show(".item() turns a one-element tensor into a Python number", s.sum().item())

# ---------------------------------------------------------------------------------------------
section("8. Linear algebra")

A = tk.arange(6, dtype=tk.float32).reshape(2, 3)
B = tk.ones(3, 2)
vec = tk.tensor([1.0, 0.0, -1.0])
show("A @ B (matmul goes to BLAS on the CPU)", A @ B)
show("matrix @ 1-D vector -> 1-D: A @ vec", A @ vec)
show("1-D @ 1-D -> 0-d dot product: vec @ vec", vec @ vec)
batch = tk.randn(4, 2, 3)
show("batched matmul broadcasts batch dims: (4, 2, 3) @ (3, 2) -> shape", (batch @ B).shape)
show("einsum: 'ij,jk->ik' is a matmul", tk.einsum("ij,jk->ik", A, B))
show("einsum: 'bij->bji' transposes each matrix; 'ii->' is a trace",
     f"{tk.einsum('bij->bji', batch).shape}, trace(eye(3)) = {tk.einsum('ii->', tk.eye(3))}")

# ---------------------------------------------------------------------------------------------
section("9. Printing large tensors")

big = tk.arange(10_000).reshape(100, 100)
show("Past 1000 elements (the threshold), tensors print summarised: 3 edge items and '...', as PyTorch", big)
saved = tk.get_printoptions()
tk.set_printoptions(precision=2, edgeitems=2)
show("tk.set_printoptions(precision=2, edgeitems=2), as torch.set_printoptions", tk.randn(50, 50))
tk.set_printoptions(**saved)          # get_printoptions() returns a dict that restores them

print("\nDone.")
