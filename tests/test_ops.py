"""Generic op tests, driven by the op table in ``tensorkit.testing.opinfo``.

Every entry runs on every device of ``tensorkit.testing.devices()`` that has kernels for it
(``OpInfo.supported_devices``) and every dtype it declares: forward vs its float64 reference, result dtype and shape vs PyTorch's rule, undeclared
dtypes raise, non-contiguous inputs, in-place and ``out=`` variants, error inputs, parity with
PyTorch. A new op is a new table entry, not a new test here.
"""
from __future__ import annotations

import numpy as np
import pytest

import tensorkit as tk
from tensorkit import dtypes as D
from tensorkit.testing import noncontiguous, op_db
from tensorkit.testing.compare import assert_close, to_numpy
from tensorkit.testing.opinfo import REPRESENTATIVE, ref_args

try:
    import torch
except ImportError:          # parity tests skip; the rest still run
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")


def _cases(dtype_filter=None, cpu_only=False):
    """(entry, device, dtype) cases. ``cpu_only``: for checks that do not depend on the device
    (the meta rule vs PyTorch's): other devices are checked against the reference and the CPU."""
    out = []
    for info in op_db:
        for device in (["cpu"] if cpu_only else info.supported_devices()):
            for dtype in info.supported_dtypes(device):
                if dtype_filter is None or dtype_filter(info, dtype):
                    out.append(pytest.param(info, device, dtype, id=f"{info.name}-{device}-{dtype.name}"))
    return out


def _unsupported_cases():
    return [pytest.param(info, device, dtype, id=f"{info.name}-{device}-{dtype.name}")
            for info in op_db for device in info.supported_devices()
            for dtype in D.ALL_DTYPES if dtype not in info.supported_dtypes(device)]


def _call(info, s):
    return info.op(s.input, *s.args, **s.kwargs)


def _outputs(r) -> tuple:
    return tuple(r) if isinstance(r, tuple) else (r,)


def _tol(info, dtype):
    return info.tol.get(dtype, (None, None))


def _reference(info, s):
    with np.errstate(all="ignore"):
        r = info.ref(ref_args(s.input), *ref_args(s.args), **s.kwargs, **s.ref_kwargs)
    return tuple(np.asarray(x) for x in r) if isinstance(r, tuple) else (np.asarray(r),)


def _snapshot(s):
    return [(t, to_numpy(t)) for t in s.tensors()]


def _check_unmodified(snap, where):
    for t, before in snap:
        after = to_numpy(t)
        assert np.array_equal(after, before, equal_nan=after.dtype.kind == "f"), f"{where}: an input was modified"


# ---- 1. forward vs reference (and the result's shape vs the reference's) -------------------------------------
@pytest.mark.parametrize("info,device,dtype", _cases())
def test_forward(info, device, dtype):
    for s in info.samples(device, dtype):
        outs = _outputs(_call(info, s))
        refs = _reference(info, s)
        assert len(outs) == len(refs), f"{s}: {len(outs)} outputs, reference has {len(refs)}"
        for out, ref in zip(outs, refs):
            assert out.device.type == tk.device(device).type, f"{s}: result on {out.device}"
            rtol, atol = _tol(info, out.dtype)
            assert_close(out, ref, rtol=rtol, atol=atol, reduction_len=s.reduction_len, msg=f"{info.name} {s}")


# ---- 2. result dtype and shape follow PyTorch ------------------------------------------------------------------
def _to_torch(x):
    if isinstance(x, tk.Tensor):
        t = torch.from_numpy(np.array(to_numpy(x), order="C"))
        return t.to(getattr(torch, x.dtype.name)) if x.dtype in (D.float16, D.bfloat16) else t
    if isinstance(x, D.DType):
        return getattr(torch, x.name)
    if isinstance(x, (tuple, list)) and any(isinstance(v, tk.Tensor) for v in x):
        return type(x)(_to_torch(v) for v in x)
    return x


def _torch_call(info, s):
    """(outputs, None) or (None, the exception torch raised)."""
    fn = info.torch_fn(torch)
    try:
        r = fn(_to_torch(s.input), *(_to_torch(a) for a in s.args), **{k: _to_torch(v) for k, v in s.kwargs.items()})
    except (RuntimeError, TypeError, ValueError, IndexError) as e:
        return None, e
    return (tuple(r) if isinstance(r, tuple) else (r,)), None


def _torch_dtype_name(t) -> str:
    return str(t.dtype).replace("torch.", "")


def _torch_numpy(t):
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()
    return t.numpy()


@needs_torch
@pytest.mark.parametrize("info,device,dtype", _cases(cpu_only=True))
def test_result_dtype_matches_torch(info, device, dtype):
    rejected = []
    for s in info.samples(device, dtype):
        outs = _outputs(_call(info, s))
        expected, err = _torch_call(info, s)
        if err is not None:
            rejected.append(f"{s}: {type(err).__name__}: {str(err).splitlines()[0]}")
            continue
        if any(dtype in dts for dts in info.torch_rejects):
            continue          # PyTorch has no rule for this dtype (an empty input may slip through its check)
        for out, t in zip(outs, expected):
            assert out.dtype.name == _torch_dtype_name(t), f"{info.name} {s}: dtype {out.dtype.name}, torch gives {t.dtype}"
            assert tuple(out.shape) == tuple(t.shape), f"{info.name} {s}: shape {list(out.shape)}, torch {list(t.shape)}"
    documented = any(dtype in dts for dts in info.torch_rejects)
    if rejected and not documented:
        pytest.fail("tensorkit accepts inputs PyTorch rejects (a deliberate extension goes in the entry's "
                    "torch_rejects, with its reason):\n" + "\n".join(rejected))
    if documented and not rejected:
        pytest.fail(f"{info.name}: torch_rejects lists {dtype.name}, but PyTorch accepts every sample: stale entry")


# ---- 3. undeclared dtypes raise ------------------------------------------------------------------------------------
@pytest.mark.parametrize("info,device,dtype", _unsupported_cases())
def test_unsupported_dtype_raises(info, device, dtype):
    s = next(iter(info.samples(device, dtype)))
    with pytest.raises(Exception) as excinfo:
        _call(info, s)
    e = excinfo.value
    if isinstance(e, NotImplementedError):
        msg = str(e)
        # ops that cast integer inputs to a float first report the float dtype they dispatched on
        named = dtype.name in msg or (info.promotes_ints and D.get_default_dtype().name in msg)
        assert any(n in msg for n in info.declared) and device in msg and named, \
            f"NotImplementedError should name op, device and dtype: {msg}"
        return
    # anything else must be PyTorch's own refusal of the same input
    assert isinstance(e, (RuntimeError, TypeError)), f"{type(e).__name__}: {e}"
    if torch is not None:
        _, terr = _torch_call(info, s)
        assert terr is not None, f"{info.name} {s}: tensorkit raises {type(e).__name__}({e}) but PyTorch accepts it"


# ---- 4. non-contiguous inputs; inputs never modified -------------------------------------------------------------------
@pytest.mark.parametrize("info,device,dtype", _cases(lambda info, dt: dt in REPRESENTATIVE))
def test_noncontiguous(info, device, dtype):
    for s in info.samples(device, dtype):
        snap = _snapshot(s)
        expected = _outputs(_call(info, s))
        _check_unmodified(snap, f"{info.name} {s}")
        nc = s.map_tensors(noncontiguous)
        snap = _snapshot(nc)
        actual = _outputs(_call(info, nc))
        _check_unmodified(snap, f"{info.name} {nc} (non-contiguous)")
        for a, e in zip(actual, expected):
            assert a.dtype is e.dtype
            # pointwise kernels compute each element the same way whatever the layout: exact
            exact = info.kind == "pointwise"
            assert_close(a, e, rtol=0 if exact else None, atol=0 if exact else None,
                         reduction_len=s.reduction_len, msg=f"{info.name} {nc} vs contiguous")


# ---- 5. out-of-place vs in-place vs out= -----------------------------------------------------------------------------------
def _overlaps(t) -> bool:
    return any(st == 0 and n > 1 for n, st in zip(t.shape, t.stride()))


@pytest.mark.parametrize("info,device,dtype", _cases(lambda info, dt: info.inplace or info.supports_out))
def test_inplace_and_out(info, device, dtype):
    for s in info.samples(device, dtype):
        expected = _outputs(_call(info, s))
        if info.inplace and isinstance(s.input, tk.Tensor) and not _overlaps(s.input):
            r = expected[0]
            selves = [s.input.clone()]
            if dtype in REPRESENTATIVE:
                selves.append(noncontiguous(s.input))
            for x in selves:
                call = lambda: getattr(x, info.inplace)(*s.args, **s.kwargs)
                if tuple(r.shape) != tuple(x.shape) or not D.can_cast(r.dtype, x.dtype):
                    with pytest.raises(RuntimeError):
                        call()
                    continue
                version = x._version
                y = call()
                assert y is x, f"{info.inplace} must return self"
                assert x._version > version, f"{info.inplace} must bump the version counter"
                assert_close(x, r.to(x.dtype), rtol=0, atol=0, msg=f"{info.inplace} {s}")
        if info.supports_out and len(expected) == 1:
            r = expected[0]
            for out in (tk.empty(r.shape, dtype=r.dtype, device=device), tk.empty(0, dtype=r.dtype, device=device)):
                y = info.op(s.input, *s.args, out=out, **s.kwargs)
                assert y is out, "out= must return out"
                assert_close(out, r, rtol=0, atol=0, msg=f"{info.name}(out=) {s}")


# ---- 6. error inputs --------------------------------------------------------------------------------------------------------
_ERROR_CASES = [pytest.param(info, device, id=f"{info.name}-{device}")
                for info in op_db for device in info.supported_devices() if info.error_inputs]


@pytest.mark.parametrize("info,device", _ERROR_CASES)
def test_error_inputs(info, device):
    for e in info.errors(device):
        with pytest.raises(e.error, match=e.match):
            _call(info, e.sample)


# ---- 7. parity with PyTorch on the same inputs ---------------------------------------------------------------------------------
@needs_torch
@pytest.mark.parametrize("info,device,dtype", _cases(cpu_only=True))
def test_torch_parity(info, device, dtype):
    for s in info.samples(device, dtype):
        outs = _outputs(_call(info, s))
        expected, err = _torch_call(info, s)
        if err is not None:
            continue          # reported by test_result_dtype_matches_torch
        for out, t in zip(outs, expected):
            rtol, atol = info.torch_tol.get(out.dtype, _tol(info, out.dtype))
            assert_close(out, _torch_numpy(t), dtype=out.dtype, rtol=rtol, atol=atol,
                         reduction_len=s.reduction_len, msg=f"{info.name} {s} vs torch")


# ---- 8. the device against the CPU --------------------------------------------------------------------------------------------
_DEVICE_CASES = [pytest.param(info, device, id=f"{info.name}-{device}") for info in op_db
                 for device in info.supported_devices() if device != "cpu" and D.float32 in info.supported_dtypes(device)]


@pytest.mark.parametrize("info,device", _DEVICE_CASES)
def test_device_matches_cpu(info, device):
    for s in info.samples(device, D.float32):
        outs = _outputs(_call(info, s))
        expected = _outputs(_call(info, s.map_tensors(lambda t: t.cpu())))
        for out, e in zip(outs, expected):
            assert out.device.type == device and out.dtype is e.dtype and out.shape == e.shape
            assert_close(out.cpu(), e, msg=f"{info.name} {s}: {device} vs cpu")


# ---- hypothesis: broadcasting and strides ------------------------------------------------------------------------------------------
try:
    from hypothesis import given, settings, strategies as st
except ImportError:           # pragma: no cover
    given = None

if given is not None:
    _FUZZ_OPS = {"add": (tk.add, np.add), "mul": (tk.mul, np.multiply), "maximum": (tk.maximum, np.maximum),
                 "sub": (tk.sub, np.subtract)}

    @st.composite
    def _operand(draw, shape, dtype):
        """A tensor and the numpy array it equals: ``shape`` with some dims dropped from the
        front or set to 1, laid out as a transpose and/or a step slice of a bigger buffer."""
        nd = draw(st.integers(0, len(shape)))
        s = [1 if draw(st.booleans()) else n for n in shape[len(shape) - nd:]]
        steps = [draw(st.sampled_from([1, 2])) for _ in s]
        perm = draw(st.permutations(range(len(s))))
        base_shape = [s[p] * steps[p] for p in perm]            # memory order
        base = np.asarray(np.arange(int(np.prod(base_shape))).reshape(base_shape) % 11 - 5)
        base = base.astype(dtype.numpy)
        inv = np.argsort(perm) if len(s) else []
        t = tk.from_numpy(base.copy())
        a = base
        if len(s):
            t, a = t.permute(tuple(int(i) for i in inv)), a.transpose(inv)
            idx = tuple(slice(None, None, k) for k in steps)
            t, a = t[idx], a[idx]
        return t, a

    @settings(max_examples=60)
    @given(data=st.data(), op=st.sampled_from(sorted(_FUZZ_OPS)), dtype=st.sampled_from([D.float32, D.int64]),
           shape=st.lists(st.integers(0, 3), min_size=0, max_size=4))
    def test_broadcasting_fuzz(data, op, dtype, shape):
        tk_fn, np_fn = _FUZZ_OPS[op]
        x, xa = data.draw(_operand(shape, dtype))
        y, ya = data.draw(_operand(shape, dtype))
        assert np.array_equal(np.asarray(x._host()), xa) and np.array_equal(np.asarray(y._host()), ya)
        expected = np_fn(xa, ya)
        r = tk_fn(x, y)
        assert tuple(r.shape) == expected.shape
        assert_close(r, expected, rtol=0, atol=0, msg=f"{op} {list(x.shape)}/{x.stride()} {list(y.shape)}/{y.stride()}")
        # in-place into a strided view whose shape is the broadcast shape
        if tuple(x.shape) == expected.shape and not any(n > 1 and s == 0 for n, s in zip(x.shape, x.stride())):
            getattr(x, op + "_")(y)
            assert_close(x, expected, rtol=0, atol=0, msg=f"{op}_ in place")


# ---- 9. gradients: finite differences on the CPU (float64), every device against the CPU ----------------------------
from tensorkit.testing.opinfo import SampleInput, _tensors_in, grad_db  # noqa: E402

_GRAD_INFOS = [i for i in op_db + grad_db if i.supports_grad]


def _map_tree(x, fn):
    if isinstance(x, tk.Tensor):
        return fn(x)
    if isinstance(x, (list, tuple)):
        return type(x)(_map_tree(v, fn) for v in x)
    if isinstance(x, dict):
        return {k: _map_tree(v, fn) for k, v in x.items()}
    return x


def _differentiable(info, s, dtype):
    """(fn, inputs): the sample's tensors of ``dtype`` (floating) require grad and become fn's
    arguments; fn calls the op with them (a fresh call each time, as gradcheck needs)."""
    wrt = list({id(t): t for t in _tensors_in(s) if t.dtype is dtype}.values())
    for t in wrt:
        t.requires_grad_()

    def fn(*xs):
        sub = {id(t): x for t, x in zip(wrt, xs)}
        call = _map_tree([s.input, list(s.args), s.kwargs], lambda t: sub.get(id(t), t))
        return info.op(call[0], *call[1], **call[2])
    return fn, tuple(wrt)


def _float_outputs(r, dtype) -> list:
    return [o for o in _outputs(r) if isinstance(o, tk.Tensor) and o.dtype.is_floating_point]


def _grad_param(info, device="cpu"):
    return pytest.param(info, id=f"{info.name}") if device == "cpu" else \
        pytest.param(info, device, id=f"{info.name}-{device}")


def _has_float64_gradient(info):
    """Samples whose op has a float64 input and only float64 floating outputs (finite differences
    need float64; int operands and casts to float32 have nothing to check)."""
    def keep(s):
        fn, inputs = _differentiable(info, s, D.float64)
        with tk.no_grad():
            outs = _float_outputs(fn(*inputs), D.float64) if inputs else []
        return bool(outs) and all(o.dtype is D.float64 for o in outs)
    return keep


def _check_float64(info, check, limit):
    """Run ``check(fn, inputs)`` (gradcheck or gradgradcheck) on up to ``limit`` (+1 strided) samples."""
    samples = info.grad_samples("cpu", D.float64, limit=limit, where=_has_float64_gradient(info))
    assert samples, f"{info.name}: no sample has a float64 gradient to check (mark the entry supports_grad=False?)"
    for s in samples:
        try:
            check(*_differentiable(info, s, D.float64))
        except tk.autograd.GradcheckError as e:
            pytest.fail(f"{info.name} {s}: {e}")


@pytest.mark.parametrize("info", [_grad_param(i) for i in _GRAD_INFOS if D.float64 in i.supported_dtypes("cpu")])
def test_gradcheck(info):
    _check_float64(info, tk.autograd.gradcheck, limit=4)


@pytest.mark.parametrize("info", [_grad_param(i) for i in _GRAD_INFOS
                                  if i.supports_gradgrad and D.float64 in i.supported_dtypes("cpu")])
def test_gradgradcheck(info):
    _check_float64(info, tk.autograd.gradgradcheck, limit=1)


@pytest.mark.parametrize("info", [pytest.param(i, id=i.name) for i in op_db if not i.supports_grad])
def test_no_grad_entries_have_no_floating_output(info):
    dtype = D.float64 if D.float64 in info.supported_dtypes("cpu") else info.supported_dtypes("cpu")[0]
    for s in info.samples("cpu", dtype):
        assert not _float_outputs(_call(info, s), dtype), f"{info.name} {s}: a floating output: check its gradient"


_GRAD_DEVICE_CASES = [_grad_param(i, d) for i in _GRAD_INFOS for d in i.supported_devices()
                      if d != "cpu" and D.float32 in i.supported_dtypes(d)]


@pytest.mark.parametrize("info,device", _GRAD_DEVICE_CASES)
def test_grad_device_matches_cpu(info, device):
    rng = np.random.default_rng(0)
    checked = 0
    for s in info.grad_samples(device, D.float32, limit=1)[:2]:
        fn, inputs = _differentiable(info, s, D.float32)
        outs = _float_outputs(fn(*inputs), D.float32) if inputs else []
        outs = [o for o in outs if o.requires_grad]
        if not outs:
            continue
        checked += 1
        gos = [rng.standard_normal(tuple(o.shape)).astype(np.float32) for o in outs]
        grads = tk.autograd.grad(outs, inputs, [tk.tensor(g, device=device) for g in gos], allow_unused=True)
        on_cpu = _map_tree([s.input, list(s.args), s.kwargs], lambda t: t.detach().cpu())
        cpu_fn, cpu_inputs = _differentiable(info, SampleInput(on_cpu[0], tuple(on_cpu[1]), on_cpu[2]), D.float32)
        cpu_outs = [o for o in _float_outputs(cpu_fn(*cpu_inputs), D.float32) if o.requires_grad]
        expected = tk.autograd.grad(cpu_outs, cpu_inputs, [tk.tensor(g) for g in gos], allow_unused=True)
        for i, (g, e) in enumerate(zip(grads, expected)):
            assert (g is None) == (e is None), f"{info.name} {s}: input {i} has a gradient on one device only"
            if g is not None:
                assert g.device.type == device
                assert_close(g.cpu(), e, rtol=1e-4, atol=1e-4, msg=f"{info.name} {s}: gradient of input {i}, "
                                                                    f"{device} vs cpu")
    assert checked, f"{info.name}: no sample had a float32 gradient on {device}"
