"""Tutorial 4: one two-layer network three ways -- numpy, tensorkit by hand, tensorkit autograd.

This is the warm-up from PyTorch's "Learning PyTorch with Examples": a fully connected ReLU
network with one hidden layer, trained to fit random data by minimising the sum of squared
errors with plain gradient descent:

    x: (64, 1000)  ->  h = relu(x @ w1): (64, 100)  ->  y_pred = h @ w2: (64, 10)
    loss = sum((y_pred - y)^2)          lr = 1e-6, 500 steps

We train it three times from the same starting weights, in float32:

    1. numpy, with the gradients worked out by hand;
    2. tensorkit, with the same hand-written gradients: the code is the numpy code with
       tensorkit's (PyTorch's) names -- ``.mm``, ``.t()``, ``.clamp(min=0)``;
    3. tensorkit with autograd: ``loss.backward()`` computes the gradients.

All three see the same numbers and do the same float32 operations, so their losses and
weights agree to float32 rounding; the script asserts it. It runs on a real GPU when there
is one (the tensorkit runs; numpy stays on the CPU), else on the CPU, in about a second.
"""
import os
import time

import numpy as np

import tensorkit as tk

N, D_in, H, D_out = 64, 1000, 100, 10     # batch, input, hidden and output sizes
LR, STEPS = 1e-6, 500


def section(title: str) -> None:
    print(f"\n{'=' * 78}\n{title}\n{'=' * 78}")


real_gpu = tk.cuda.is_available() and os.environ.get("TENSORKIT_INTERPRET") != "1"
device = tk.device("cuda" if real_gpu else "cpu")

# One set of random data and initial weights, shared by all three runs.
rng = np.random.default_rng(0)
x0 = rng.standard_normal((N, D_in), dtype=np.float32)
y0 = rng.standard_normal((N, D_out), dtype=np.float32)
w1_0 = rng.standard_normal((D_in, H), dtype=np.float32)
w2_0 = rng.standard_normal((H, D_out), dtype=np.float32)
print(f"data x {x0.shape}, targets y {y0.shape}, weights w1 {w1_0.shape}, w2 {w2_0.shape}; tensorkit on {device}")

# ---------------------------------------------------------------------------------------------
section("1. numpy, gradients by hand")

x, y, w1, w2 = x0.copy(), y0.copy(), w1_0.copy(), w2_0.copy()
losses_np = []
start = time.perf_counter()
for t in range(STEPS):
    # forward
    h = x.dot(w1)
    h_relu = np.maximum(h, 0)
    y_pred = h_relu.dot(w2)
    loss = np.square(y_pred - y).sum()
    losses_np.append(float(loss))
    # backward: the chain rule, one line per forward line, in reverse
    grad_y_pred = 2.0 * (y_pred - y)
    grad_w2 = h_relu.T.dot(grad_y_pred)
    grad_h_relu = grad_y_pred.dot(w2.T)
    grad_h = grad_h_relu.copy()
    grad_h[h < 0] = 0
    grad_w1 = x.T.dot(grad_h)
    # gradient descent
    w1 -= LR * grad_w1
    w2 -= LR * grad_w2
time_np = time.perf_counter() - start
w1_np, w2_np = w1, w2
print(f"loss {losses_np[0]:.4g} at step 0 -> {losses_np[-1]:.4g} at step {STEPS - 1} ({time_np:.2f} s)")

# ---------------------------------------------------------------------------------------------
section("2. tensorkit, the same gradients by hand")

# tk.tensor copies (tk.from_numpy would share memory, and the in-place updates below would
# then change the numpy arrays too).
x, y = tk.tensor(x0, device=device), tk.tensor(y0, device=device)
w1, w2 = tk.tensor(w1_0, device=device), tk.tensor(w2_0, device=device)
losses_manual = []
start = time.perf_counter()
for t in range(STEPS):
    h = x.mm(w1)
    h_relu = h.clamp(min=0)
    y_pred = h_relu.mm(w2)
    loss = (y_pred - y).pow(2).sum()
    losses_manual.append(loss.item())

    grad_y_pred = 2.0 * (y_pred - y)
    grad_w2 = h_relu.t().mm(grad_y_pred)
    grad_h_relu = grad_y_pred.mm(w2.t())
    grad_h = grad_h_relu.clone()
    grad_h[h < 0] = 0
    grad_w1 = x.t().mm(grad_h)

    w1 -= LR * grad_w1
    w2 -= LR * grad_w2
time_manual = time.perf_counter() - start
w1_manual, w2_manual = w1, w2
print(f"loss {losses_manual[0]:.4g} at step 0 -> {losses_manual[-1]:.4g} at step {STEPS - 1} ({time_manual:.2f} s)")

# ---------------------------------------------------------------------------------------------
section("3. tensorkit with autograd")

x, y = tk.tensor(x0, device=device), tk.tensor(y0, device=device)
w1 = tk.tensor(w1_0, device=device, requires_grad=True)
w2 = tk.tensor(w2_0, device=device, requires_grad=True)
losses_auto = []
start = time.perf_counter()
for t in range(STEPS):
    y_pred = x.mm(w1).clamp(min=0).mm(w2)   # no intermediates kept by hand: autograd saves what it needs
    loss = (y_pred - y).pow(2).sum()
    losses_auto.append(loss.item())
    loss.backward()                          # fills w1.grad and w2.grad
    with tk.no_grad():                       # the update itself must not be recorded
        w1 -= LR * w1.grad
        w2 -= LR * w2.grad
        w1.grad = None                       # gradients accumulate; clear them for the next step
        w2.grad = None
time_auto = time.perf_counter() - start
w1_auto, w2_auto = w1.detach(), w2.detach()
print(f"loss {losses_auto[0]:.4g} at step 0 -> {losses_auto[-1]:.4g} at step {STEPS - 1} ({time_auto:.2f} s)")

# ---------------------------------------------------------------------------------------------
section("4. The three runs agree")

print(f"\n{'step':>5} {'numpy':>14} {'tk by hand':>14} {'tk autograd':>14}")
for t in (0, 1, 2, 5, 10, 50, 100, 200, 300, 400, STEPS - 1):
    print(f"{t:5d} {losses_np[t]:14.6g} {losses_manual[t]:14.6g} {losses_auto[t]:14.6g}")
print(f"\ntime for {STEPS} steps: numpy {time_np:.2f} s, tensorkit by hand {time_manual:.2f} s, "
      f"tensorkit autograd {time_auto:.2f} s")
print("(tensorkit's first steps include loading compiled kernels; small ops on the CPU pay Python "
      "overhead per call that numpy does not)")

# Every step's loss, relative to the starting loss: the loss falls ~10 orders of magnitude, so
# late values are compared on the scale of the problem, not on their own.
scale = losses_np[0]
for name, losses in (("tensorkit by hand", losses_manual), ("tensorkit autograd", losses_auto)):
    worst = max(abs(a - b) for a, b in zip(losses, losses_np)) / scale
    print(f"largest loss difference, {name} vs numpy: {worst:.1e} of the initial loss")
    assert worst < 1e-5, f"{name}: losses differ from numpy's by {worst:.1e} of the initial loss"

# The weights, elementwise: float32 has 24 bits (~6e-8 relative); 500 steps of rounding
# differences in the summation order of the matmuls stay within a few parts in 1e5.
for name, (a1, a2) in (("by hand", (w1_manual, w2_manual)), ("autograd", (w1_auto, w2_auto))):
    for label, ours, ref in (("w1", a1, w1_np), ("w2", a2, w2_np)):
        diff = np.abs(ours.cpu().numpy() - ref).max() / np.abs(ref).max()
        print(f"weights {label}, tensorkit {name} vs numpy: largest difference {diff:.1e} of max |{label}|")
        np.testing.assert_allclose(ours.cpu().numpy(), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())

print(f"\nfinal loss {losses_auto[-1]:.3g} (from {losses_auto[0]:.3g}): the network has memorised the random targets.")
print("\nDone.")
