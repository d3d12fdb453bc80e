"""Tutorial 5: mixed-precision training with ``tk.autocast`` and ``tk.amp.GradScaler``.

On a GPU, matmuls and convolutions in float16 or bfloat16 run several times faster than in
float32 and move half the bytes. Mixed precision gets that speed without training the whole
model in 16 bits: the weights stay float32, and inside ``tk.autocast(...)`` each op runs in
the precision that suits it -- matmuls / convolutions / linear layers in the low dtype,
reductions, softmax, norms and losses in float32. The API is PyTorch's ``torch.amp``:

    1. what autocast does to dtypes (matmul output low precision, loss float32, grads float32)
    2. why float16 needs loss scaling: small gradients underflow to zero
    3. GradScaler skipping a step whose gradient is inf, and lowering the scale
    4. training a small model: float32 vs autocast, from the same weights

On a real GPU it uses ``tk.autocast("cuda", dtype=tk.float16)`` with a GradScaler. Without
one it runs the same code with ``tk.autocast("cpu", dtype=tk.bfloat16)`` (bfloat16 has
float32's exponent range, so it needs no scaler; the scaler demo in section 3 runs on the CPU
anyway). Runs in seconds on the CPU.
"""
import os
import time

import numpy as np

import tensorkit as tk
import tensorkit.nn as nn
import tensorkit.nn.functional as F

from _narrate import section, show  # tutorials/_narrate.py: printing helpers


real_gpu = tk.cuda.is_available() and os.environ.get("TENSORKIT_INTERPRET") != "1"
device = tk.device("cuda" if real_gpu else "cpu")
# float16 on the GPU (fastest tensor-core dtype, needs the scaler); bfloat16 on the CPU.
amp_dtype = tk.float16 if real_gpu else tk.bfloat16
print(f"device: {device}, autocast dtype: {amp_dtype}")
if not real_gpu:
    print("(no GPU here: on a GPU this script would use tk.autocast('cuda', dtype=tk.float16) and a "
          "tk.amp.GradScaler('cuda'); below it runs the same loop with CPU bfloat16 autocast)")

# ---------------------------------------------------------------------------------------------
section("1. What autocast does to dtypes")

tk.manual_seed(0)
model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).to(device)
x = tk.randn(8, 16, device=device)
target = tk.randint(0, 4, (8,), device=device)
a, b = tk.randn(8, 8, device=device), tk.randn(8, 8, device=device)

with tk.autocast(device.type, dtype=amp_dtype):
    mm = a @ b
    logits = model(x)
    loss = F.cross_entropy(logits, target)
    show(f"inside tk.autocast({device.type!r}, dtype={amp_dtype}): is_autocast_enabled",
         tk.is_autocast_enabled(device.type))
show("a @ b of two float32 tensors runs in the low precision", mm.dtype)
show("so does a Linear layer: model(x) (its weights stay float32)", f"{logits.dtype}; weight {model[0].weight.dtype}")
show("the loss (cross_entropy) runs in float32: it reduces and takes logs", loss.dtype)
loss.backward()                  # backward outside the region, as in PyTorch
show("gradients come back in each parameter's dtype: model[0].weight.grad.dtype", model[0].weight.grad.dtype)
assert mm.dtype == amp_dtype and logits.dtype == amp_dtype
assert loss.dtype == tk.float32 and model[0].weight.grad.dtype == tk.float32
show("outside the region ops are float32 again: (a @ b).dtype", (a @ b).dtype)
with tk.autocast(device.type, dtype=amp_dtype):
    with tk.autocast(device.type, enabled=False):
        show("autocast(..., enabled=False) turns it off inside a region: (a @ b).dtype", (a @ b).dtype)
print(f"\nlargest difference, low-precision vs float32 matmul: {(mm.float() - a @ b).abs().max().item():.3g} "
      f"(bfloat16 keeps 8 bits of mantissa, float16 11; float32 24)")

# ---------------------------------------------------------------------------------------------
section("2. Why float16 needs a loss scale")

print(f"\nsmallest positive float16 (subnormal) ~6e-8, largest 65504; bfloat16 has float32's range "
      f"(~1e-38 .. 3e38) with fewer digits")
tiny = tk.tensor([1e-3, 1e-6, 1e-8, 1e-9])
show("gradients this small, cast to float16: the last two flush to zero (and 1e-6, a subnormal, keeps "
     "only a few bits)", tiny.to(tk.float16))
show("scaled by 2**16 first (what scaler.scale(loss) does to every gradient), they survive",
     (tiny * 2.0 ** 16).to(tk.float16))
show("and bfloat16 keeps them all without scaling (roughly: 3 significant digits)", tiny.to(tk.bfloat16))

# ---------------------------------------------------------------------------------------------
section("3. GradScaler skips a step with an inf gradient")

# The scaler works on either device type; on the CPU it is only needed for float16.
lin = nn.Linear(4, 1).to(device)
opt = tk.optim.SGD(lin.parameters(), lr=0.1)
scaler = tk.amp.GradScaler(device.type, init_scale=2.0 ** 16)
before = lin.weight.detach().clone()

loss = lin(tk.randn(5, 4, device=device)).pow(2).mean()
scaler.scale(loss).backward()                        # gradients are scaled by 2**16
show("scaler.scale(loss).backward(): the gradient holds scale * d(loss)/dw", lin.weight.grad)
with tk.no_grad():
    lin.weight.grad[0, 0] = float("inf")              # as if float16 had overflowed
scaler.step(opt)                                      # finds the inf: does NOT call opt.step()
scaler.update()                                       # and halves the scale
show("after an inf in a gradient, scaler.step(opt) leaves the weights alone: unchanged?",
     tk.equal(lin.weight.detach(), before))
show("scaler.update() halved the scale: 2**16 ->", scaler.get_scale())
assert tk.equal(lin.weight.detach(), before) and scaler.get_scale() == 2.0 ** 15

opt.zero_grad()
loss = lin(tk.randn(5, 4, device=device)).pow(2).mean()
scaler.scale(loss).backward()
scaler.unscale_(opt)                                  # optional: true gradients, e.g. to clip them
show("scaler.unscale_(opt) divides the scale out (then clip_grad_norm_ would see true values)",
     lin.weight.grad)
scaler.step(opt)
scaler.update()
show("a finite step goes through: weights changed?", not tk.equal(lin.weight.detach(), before))
show("the scale grows again (x2) only after growth_interval (default 2000) good steps in a row",
     scaler.get_scale())

# ---------------------------------------------------------------------------------------------
section("4. Training a small model: float32 vs autocast")

# Data: 5 overlapping Gaussian clusters in 20 dimensions (a few percent of points are ambiguous).
rng = np.random.default_rng(0)
centers = rng.standard_normal((5, 20)).astype(np.float32)
Y = rng.integers(0, 5, 2048)
X = (centers[Y] + 1.2 * rng.standard_normal((2048, 20))).astype(np.float32)
X_tr, Y_tr = tk.tensor(X[:1536], device=device), tk.tensor(Y[:1536], device=device)
X_te, Y_te = tk.tensor(X[1536:], device=device), tk.tensor(Y[1536:], device=device)


def make_model() -> nn.Module:
    tk.manual_seed(1)                                  # the same initial weights for both runs
    return nn.Sequential(nn.Linear(20, 128), nn.ReLU(), nn.Linear(128, 5)).to(device)


def train(use_amp: bool, epochs: int = 6, batch: int = 128):
    model = make_model()
    opt = tk.optim.AdamW(model.parameters(), lr=3e-3)
    # One script for both: enabled=False makes the scaler a pass-through (bfloat16, or no amp).
    scaler = tk.amp.GradScaler(device.type, enabled=use_amp and amp_dtype == tk.float16)
    losses = []
    start = time.perf_counter()
    for epoch in range(epochs):
        perm = tk.randperm(X_tr.shape[0], device=device)
        for i in range(0, X_tr.shape[0], batch):
            idx = perm[i:i + batch]
            with tk.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                loss = F.cross_entropy(model(X_tr[idx]), Y_tr[idx])
            opt.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        losses.append(loss.item())
    elapsed = time.perf_counter() - start
    with tk.no_grad(), tk.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
        acc = (model(X_te).argmax(dim=1) == Y_te).float().mean().item()
    return losses, acc, elapsed, model


loss32, acc32, t32, m32 = train(use_amp=False)
loss16, acc16, t16, m16 = train(use_amp=True)
print(f"\n{'epoch':>5} {'float32 loss':>14} {'autocast loss':>14}   (last batch of each epoch)")
for e, (l1, l2) in enumerate(zip(loss32, loss16), 1):
    print(f"{e:5d} {l1:14.4f} {l2:14.4f}")
print(f"\nheld-out accuracy: float32 {acc32:.2%}, autocast ({amp_dtype}) {acc16:.2%}")
print(f"time: float32 {t32:.2f} s, autocast {t16:.2f} s"
      + ("  (a model this small is bound by kernel launches, not arithmetic: autocast pays off on "
         "large matmuls and convolutions)" if real_gpu else
         "  (on the CPU, low precision saves no time: the casts cost more than they save; the speed-up "
         "is a GPU's)"))
show("after training under autocast the weights are still float32", m16[0].weight.dtype)
assert m16[0].weight.dtype == tk.float32
assert loss16[-1] < 0.5 * loss16[0] and acc16 > 0.8, "training under autocast should learn"
assert abs(acc16 - acc32) < 0.05, "autocast should reach about the float32 accuracy"

print("\nDone.")
