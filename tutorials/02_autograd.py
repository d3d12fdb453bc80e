"""Tutorial 2: autograd, for PyTorch users.

tensorkit records a graph of the ops that touch a tensor with ``requires_grad=True`` and
walks it backwards on ``.backward()``, as PyTorch does. Every primitive's backward is written
with tensorkit ops, so a backward pass can itself be recorded and differentiated again.
This walk-through runs top to bottom on the CPU in a few seconds:

    1. requires_grad, backward, .grad      6. hooks on tensors and modules
    2. gradients accumulate; zero them     7. no_grad, detach, inference_mode
    3. tk.autograd.grad                     8. a custom autograd.Function
    4. grad of grad (create_graph)          9. gradcheck: analytic vs finite differences
    5. a Hessian-vector product

Run it with ``python tutorials/02_autograd.py``.
"""
import tensorkit as tk
import tensorkit.nn as nn

from _narrate import refused, section, show  # tutorials/_narrate.py: printing helpers


def close(a: tk.Tensor, b, tol: float = 1e-5) -> bool:
    b = b if isinstance(b, tk.Tensor) else tk.tensor(b, dtype=a.dtype)
    return tk.allclose(a, b, rtol=tol, atol=tol)


# ---------------------------------------------------------------------------------------------
section("1. requires_grad, backward and .grad")

x = tk.tensor([1.0, 2.0, 3.0], requires_grad=True)
y = (x ** 2 + 5 * x).sum()          # y = sum(x^2 + 5x), so dy/dx = 2x + 5
show("y = (x ** 2 + 5 * x).sum() remembers how it was made: y.grad_fn", y.grad_fn)
show("a leaf (made by you) has no grad_fn; x.is_leaf, y.is_leaf", f"{x.is_leaf}, {y.is_leaf}")
y.backward()
show("y.backward() fills x.grad with dy/dx = 2x + 5", x.grad)
assert close(x.grad, [7.0, 9.0, 11.0])

w = tk.tensor([[1.0, -1.0], [2.0, 0.5]], requires_grad=True)
out = w @ tk.tensor([1.0, 2.0])
show("backward of a non-scalar needs the vector it is multiplied with (a vector-Jacobian product): "
     "out.backward(tk.tensor([1., 0.])) gives d(out[0])/dw", None)
out.backward(tk.tensor([1.0, 0.0]))
print(w.grad)
refused("without it, a non-scalar output is refused, as in PyTorch", lambda: (w * 2).backward())

# ---------------------------------------------------------------------------------------------
section("2. Gradients accumulate: zero them between steps")

a = tk.tensor(3.0, requires_grad=True)
(a * a).backward()
(a * a).backward()
show("two backward passes of a*a add up in a.grad: 2a + 2a", a.grad)
assert close(a.grad, 12.0)
a.grad = None                        # what optimizer.zero_grad() does (set_to_none=True)
(a * a).backward()
show("after a.grad = None (what optimizer.zero_grad() does), one pass gives 2a", a.grad)

z = x * 2
h = z.sum() * z.sum()
h.backward(retain_graph=True)
refused("the graph is freed after backward (its saved tensors too); a second pass needs retain_graph=True "
        "on the first. Here the first had it, so a second works; a third does not:",
        lambda: (h.backward(), h.backward()))

# ---------------------------------------------------------------------------------------------
section("3. tk.autograd.grad: gradients returned, not accumulated")

x = tk.tensor([0.5, 1.0, 2.0], requires_grad=True)
(g,) = tk.autograd.grad(tk.sin(x).sum(), x)
show("tk.autograd.grad(sin(x).sum(), x) returns (cos x,) and leaves x.grad alone", g)
assert close(g, tk.cos(x.detach())) and x.grad is None

# ---------------------------------------------------------------------------------------------
section("4. Higher-order gradients: create_graph=True")

x = tk.tensor(2.0, requires_grad=True)
f = x ** 4                                                   # f = x^4
(df,) = tk.autograd.grad(f, x, create_graph=True)           # 4x^3 = 32, and it has a graph
(d2f,) = tk.autograd.grad(df, x, create_graph=True)         # 12x^2 = 48
(d3f,) = tk.autograd.grad(d2f, x)                           # 24x = 48
show("f = x^4 at x = 2: with create_graph=True the backward is recorded, so we can go again",
     f"f'(2) = {df.item()} (4x^3), f''(2) = {d2f.item()} (12x^2), f'''(2) = {d3f.item()} (24x)")
show("df has a grad_fn of its own (it was recorded):", df.grad_fn)
assert (df.item(), d2f.item(), d3f.item()) == (32.0, 48.0, 48.0)

# Through nonlinearities: d/dx tanh(x) = 1 - tanh^2, d2/dx2 = -2 tanh (1 - tanh^2)
x = tk.linspace(-2, 2, 5, requires_grad=True)
(g1,) = tk.autograd.grad(tk.tanh(x).sum(), x, create_graph=True)
(g2,) = tk.autograd.grad(g1.sum(), x)
t = tk.tanh(x.detach())
show("second derivative of tanh, elementwise (summing first gives the diagonal, as each output "
     "depends on one input):", g2)
assert close(g1.detach(), 1 - t * t) and close(g2, -2 * t * (1 - t * t))

# A gradient penalty, as in WGAN-GP: the loss contains a gradient, and we train through it.
net = nn.Linear(3, 1)
inp = tk.randn(8, 3, requires_grad=True)
(gi,) = tk.autograd.grad(net(inp).sum(), inp, create_graph=True)
penalty = ((gi.norm(dim=1) - 1) ** 2).mean()
penalty.backward()
show("a gradient penalty ((|d net/d input| - 1)^2).mean() backpropagates into the weights: "
     "net.weight.grad", net.weight.grad)

# ---------------------------------------------------------------------------------------------
section("5. A Hessian-vector product without forming the Hessian")

# f(w) = sum(log(1 + exp(A w)))  (a softplus loss); its Hessian is A^T diag(s(1-s)) A, s = sigmoid(A w).
# H v = d/dw (grad f . v): one grad with create_graph, a dot product, one more grad.
tk.manual_seed(0)
A = tk.randn(6, 4, dtype=tk.float64)
w = tk.randn(4, dtype=tk.float64, requires_grad=True)
v = tk.randn(4, dtype=tk.float64)


def loss_fn(w):
    return tk.nn.functional.softplus(A @ w).sum()


(grad_w,) = tk.autograd.grad(loss_fn(w), w, create_graph=True)
(hvp,) = tk.autograd.grad((grad_w * v).sum(), w, retain_graph=True)   # keep grad_w's graph for below
s = tk.sigmoid(A @ w.detach())
H = (A.T * (s * (1 - s))) @ A                            # the closed form A^T diag(.) A, for checking
show("H v by double backward", hvp)
show("H v from the closed-form Hessian A^T diag(s(1-s)) A", H @ v)
assert close(hvp, H @ v, 1e-10)

# The full Hessian, one row per basis vector (fine for 4 parameters; H v is what scales).
rows = [tk.autograd.grad(grad_w, w, grad_outputs=e, retain_graph=True)[0] for e in tk.eye(4, dtype=tk.float64)]
show("the whole Hessian, row by row: grad(grad_w, w, grad_outputs=e_i)", tk.stack(rows))
assert close(tk.stack(rows), H, 1e-10)

# ---------------------------------------------------------------------------------------------
section("6. Hooks")

x = tk.tensor([1.0, 2.0, 3.0], requires_grad=True)
seen = []
handle = x.register_hook(lambda g: seen.append(g.clone()))   # observe: returns None, changes nothing
(x * x).sum().backward()
show("x.register_hook(fn): fn sees the gradient as it flows (2x)", seen[0])
handle.remove()

x.grad = None
x.register_hook(lambda g: g.clamp(-1, 1))                     # returning a tensor replaces the gradient
(x * x).sum().backward()
show("a hook that returns a tensor replaces the gradient: clamp 2x to [-1, 1]", x.grad)
assert close(x.grad, [1.0, 1.0, 1.0])

hidden = tk.tensor([1.0, -2.0], requires_grad=True) * 3
hidden.retain_grad()                                          # non-leaves drop .grad unless asked
(hidden ** 2).sum().backward()
show("retain_grad() keeps a non-leaf's .grad (2 * hidden)", hidden.grad)

model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
acts, grads = {}, {}


def watch_relu(module, inputs, out):
    acts["relu"] = out.detach()


def watch_relu_grads(module, grad_input, grad_output):
    # one call per backward: d(loss)/d(input) and d(loss)/d(output), one entry per input / output
    grads["relu in"], grads["relu out"] = grad_input[0], grad_output[0]


model[1].register_forward_hook(watch_relu)
model[1].register_full_backward_hook(watch_relu_grads)    # returning a tuple would replace grad_input
model(tk.randn(5, 4)).sum().backward()
show("module hooks: register_forward_hook sees the ReLU output, register_full_backward_hook the gradients "
     "at its output and input (shapes)", f"{tuple(acts['relu'].shape)}, {tuple(grads['relu out'].shape)}")
assert close(grads["relu in"], grads["relu out"] * (acts["relu"] > 0).float())   # ReLU passes the active units
show("fraction of ReLU units active in this batch", (acts["relu"] > 0).float().mean().item())

# ---------------------------------------------------------------------------------------------
section("7. Not recording: no_grad, detach, inference_mode")

w = tk.randn(3, requires_grad=True)
with tk.no_grad():
    y = w * 2
show("under tk.no_grad() nothing is recorded: y.requires_grad, y.grad_fn", f"{y.requires_grad}, {y.grad_fn}")
with tk.no_grad():
    w -= 0.1 * tk.ones(3)             # a manual SGD step: in-place on a leaf, allowed under no_grad
show("in-place updates of leaves (a hand-written SGD step) go under no_grad; w is still a leaf", w.is_leaf)
refused("outside no_grad, an in-place op on a leaf that requires grad is refused",
        lambda: w.sub_(1.0))
show("w.detach(): the same memory, no history", w.detach().requires_grad)


@tk.no_grad()
def evaluate(m, x):
    return m(x)


show("no_grad is also a decorator: @tk.no_grad() def evaluate(...) -> requires_grad",
     evaluate(model, tk.randn(2, 4)).requires_grad)
with tk.inference_mode():
    y = model(tk.randn(2, 4))
show("tk.inference_mode(): like no_grad, for pure inference code", y.requires_grad)
with tk.no_grad():
    with tk.enable_grad():
        y = w * 2
show("tk.enable_grad() re-enables recording inside no_grad", y.requires_grad)

# ---------------------------------------------------------------------------------------------
section("8. A custom autograd.Function")


class SmoothClamp(tk.autograd.Function):
    """y = clamp(x, -1, 1) in the forward; in the backward, pretend it was tanh-like so that
    saturated units still get a (small) gradient: dy/dx = 1 / cosh(x)^2, a hand-written rule
    no composition of ops would give. (A straight-through estimator in the same spirit.)"""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)          # checked against later in-place changes
        return x.clamp(-1.0, 1.0)

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        return grad_out / tk.cosh(x) ** 2  # written with tensorkit ops: differentiable again


x = tk.tensor([-3.0, 0.0, 0.5, 3.0], requires_grad=True)
y = SmoothClamp.apply(x)
y.sum().backward()
show("SmoothClamp.apply(x): forward clamps", y)
show("its grad_fn is a node named after the class", y.grad_fn)
show("backward uses the hand-written rule 1/cosh(x)^2 (nonzero where clamp's would be 0)", x.grad)
assert close(x.grad, 1 / tk.cosh(x.detach()) ** 2)


class Cube(tk.autograd.Function):
    """y = x^3 with its derivative 3x^2 written by hand: gradcheck and gradgradcheck below check it."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 3 * g * x * x


x = tk.tensor(2.0, requires_grad=True)
(d1,) = tk.autograd.grad(Cube.apply(x), x, create_graph=True)
(d2,) = tk.autograd.grad(d1, x)
show("a Function's backward is recorded under create_graph too: Cube at 2 -> 3x^2, 6x",
     f"{d1.item()}, {d2.item()}")
assert (d1.item(), d2.item()) == (12.0, 12.0)

# ---------------------------------------------------------------------------------------------
section("9. gradcheck: analytic gradients vs finite differences (use float64)")

x = tk.randn(5, dtype=tk.float64, requires_grad=True)
show("tk.autograd.gradcheck(Cube.apply, (x,))", tk.autograd.gradcheck(Cube.apply, (x,)))
show("tk.autograd.gradgradcheck(Cube.apply, (x,)): second derivatives too",
     tk.autograd.gradgradcheck(Cube.apply, (x,)))
xin = tk.randn(3, 4, dtype=tk.float64, requires_grad=True)
lin = nn.Linear(4, 2).double()
show("any composition works: gradcheck of a Linear + log_softmax in float64",
     tk.autograd.gradcheck(lambda t: tk.log_softmax(lin(t), dim=1), (xin,)))


class WrongCube(Cube):
    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * g * x * x              # a bug: should be 3


try:
    tk.autograd.gradcheck(WrongCube.apply, (x,))
except tk.autograd.GradcheckError as e:
    show("and it catches a wrong backward (GradcheckError, first line):", str(e).splitlines()[0])
else:
    raise AssertionError("gradcheck should have failed")

print("\nDone.")
