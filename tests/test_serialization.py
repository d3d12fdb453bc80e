"""tk.save / tk.load: bit-exact round trips of every dtype and of nested structures, interop with
files that safetensors' own writers and readers make, atomic writes, and refusal of corrupt,
truncated and pickle files (the pickle ones without unpickling them)."""
from __future__ import annotations

import io
import json
import math
import os
import pickle
import struct
import zipfile
from collections import OrderedDict

import ml_dtypes
import numpy as np
import pytest

import tensorkit as tk
from tensorkit import nn, serialization
from tensorkit.serialization import SerializationError

# Every dtype with awkward values: NaN payloads, -0.0, inf, subnormals, extremes.
_F32_BITS = [0x7FC00001, 0xFFC12345, 0x7F800001, 0x80000000, 0x00000001, 0x7F800000, 0x3F800000]
_REFERENCE = {
    tk.float64: np.array([0x7FF8000000000123, 0xFFF0000000000001, 0x8000000000000000, 1, 0x3FF0000000000000],
                         np.uint64).view(np.float64),
    tk.float32: np.array(_F32_BITS, np.uint32).view(np.float32).reshape(7, 1),
    tk.float16: np.array([0x7E01, 0xFD03, 0x8000, 0x0001, 0x7C00, 0x3C00], np.uint16).view(np.float16).reshape(2, 3),
    tk.bfloat16: np.array([0x7FC1, 0xFF81, 0x8000, 0x0001, 0x7F80, 0x3F80], np.uint16).view(ml_dtypes.bfloat16),
    tk.int64: np.array([-2**63, 2**63 - 1, 0, -1], np.int64),
    tk.int32: np.array([-2**31, 2**31 - 1, 7], np.int32),
    tk.int16: np.array([-2**15, 2**15 - 1], np.int16),
    tk.int8: np.array([[-128, 127], [0, -1]], np.int8),
    tk.uint8: np.array([0, 255, 128], np.uint8),
    tk.bool: np.array([[True, False, True]]),
}


def _bits(a: np.ndarray) -> np.ndarray:
    """The raw bytes of an array, comparable with == (NaN payloads included)."""
    return np.ascontiguousarray(a).view(np.uint8)


def _host(t: tk.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _st_file(path, header: dict, data: bytes = b"", header_len: int | None = None) -> str:
    """A safetensors-layout file with the given header and data (for corrupt-file tests)."""
    raw = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw) if header_len is None else header_len) + raw + data)
    return str(path)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_every_dtype_round_trips_bit_exactly(tmp_path, device):
    saved = {d.name: tk.from_numpy(a.copy()).to(device) for d, a in _REFERENCE.items()}
    saved["scalar"] = tk.from_numpy(np.array(np.float32(-0.0))).to(device)
    saved["empty"] = tk.zeros(0, 3, dtype=tk.int16, device=device)
    tk.save(saved, tmp_path / "all.safetensors")
    loaded = tk.load(tmp_path / "all.safetensors")
    assert list(loaded) == list(saved)
    for d, ref in _REFERENCE.items():
        t = loaded[d.name]
        assert t.dtype == d and tuple(t.shape) == ref.shape and t.device.type == device
        np.testing.assert_array_equal(_bits(_host(t)), _bits(ref), err_msg=d.name)
    assert loaded["scalar"].shape == () and _bits(_host(loaded["scalar"])).tolist() == [0, 0, 0, 0x80]
    assert loaded["empty"].shape == (0, 3) and loaded["empty"].dtype == tk.int16


def test_views_save_their_elements_and_requires_grad_is_not_saved(tmp_path):
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    w = tk.from_numpy(base.copy()).requires_grad_()
    obj = {"t": w.T, "col": w[:, 1], "w": w}
    tk.save(obj, tmp_path / "v.safetensors")
    out = tk.load(tmp_path / "v.safetensors")
    np.testing.assert_array_equal(_host(out["t"]), base.T)
    np.testing.assert_array_equal(_host(out["col"]), base[:, 1])
    assert out["t"].is_contiguous() and not out["w"].requires_grad


def test_nested_structure_round_trips(tmp_path):
    a = tk.from_numpy(np.array([1.5, -2.0], np.float32))
    obj = {
        "state": {0: {"step": tk.tensor(3.0), "exp_avg": a}, 7: {"momentum_buffer": None}},
        "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "amsgrad": False, "params": [0, 7],
                          "name": "déjà vu", "maximize": True}],
        "floats": [math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308, 0.1],
        "big": 2**80, "neg": -3, "none": None, "empty": ({}, [], ()),
        "ordered": OrderedDict([("z", 1), ("a", 2)]),
        "same": [a, a], "meta": (tk.bfloat16, tk.device("cpu"), tk.Size([2, 3])),
        "np": np.float32(0.25),
    }
    tk.save(obj, tmp_path / "n.safetensors")
    out = tk.load(tmp_path / "n.safetensors")
    assert set(out) == set(obj)
    assert list(out["state"]) == [0, 7] and out["state"][7] == {"momentum_buffer": None}
    np.testing.assert_array_equal(_host(out["state"][0]["exp_avg"]), [1.5, -2.0])
    assert out["state"][0]["step"].item() == 3.0 and out["state"][0]["step"].shape == ()
    assert out["param_groups"] == obj["param_groups"]
    assert type(out["param_groups"][0]["betas"]) is tuple and type(out["param_groups"][0]["params"]) is list
    fl = out["floats"]
    assert fl[:2] == [math.inf, -math.inf] and math.copysign(1, fl[2]) == -1 and fl[3:] == obj["floats"][3:]
    assert out["big"] == 2**80 and out["neg"] == -3 and out["none"] is None
    assert out["empty"] == ({}, [], ()) and type(out["empty"]) is tuple
    assert type(out["ordered"]) is OrderedDict and list(out["ordered"].items()) == [("z", 1), ("a", 2)]
    assert out["same"][0] is out["same"][1]          # one object saved once, loaded once
    assert out["meta"] == (tk.bfloat16, tk.device("cpu"), (2, 3)) and type(out["meta"][2]) is tk.Size
    assert out["np"] == 0.25 and type(out["np"]) is float
    nan_out = tk.load(_save_to_bytes({"x": math.nan, "t": (True, 1, 1.0)}))
    assert math.isnan(nan_out["x"]) and [type(v) for v in nan_out["t"]] == [bool, int, float]


def _save_to_bytes(obj) -> io.BytesIO:
    buf = io.BytesIO()
    tk.save(obj, buf)
    buf.seek(0)
    return buf


def test_single_tensor_and_file_objects(tmp_path):
    t = tk.from_numpy(np.arange(6, dtype=np.int32).reshape(2, 3))
    out = tk.load(_save_to_bytes(t))
    assert isinstance(out, tk.Tensor) and _host(out).tolist() == [[0, 1, 2], [3, 4, 5]]

    class WriteOnly:                   # a pipe-like sink: no seek, no tell
        def __init__(self):
            self.parts = []

        def write(self, b):
            self.parts.append(bytes(b))
            return len(b)

    class ReadOnly:
        def __init__(self, data):
            self._f = io.BytesIO(data)

        def read(self, n=-1):
            return self._f.read(n)

    sink = WriteOnly()
    tk.save({"t": t, "k": "v"}, sink)
    out = tk.load(ReadOnly(b"".join(sink.parts)))
    assert out["k"] == "v" and _host(out["t"]).tolist() == [[0, 1, 2], [3, 4, 5]]
    with open(tmp_path / "f.bin", "wb") as f:           # an open file, at an offset
        f.write(b"xyz")
        tk.save(t, f)
    with open(tmp_path / "f.bin", "rb") as f:
        f.read(3)
        assert _host(tk.load(f)).tolist() == [[0, 1, 2], [3, 4, 5]]


def test_state_dict_loads_into_a_fresh_model(tmp_path):
    tk.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    x = tk.randn(5, 4)
    net.train()
    net(x)                              # moves the running statistics off their initial values
    net.eval()
    expected = _host(net(x))
    tk.save(net.state_dict(), tmp_path / "net.safetensors")
    tk.manual_seed(1)
    fresh = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).eval()
    assert not np.array_equal(_host(fresh(x)), expected)
    sd = tk.load(tmp_path / "net.safetensors")
    assert list(sd) == list(net.state_dict())
    fresh.load_state_dict(sd)
    np.testing.assert_array_equal(_host(fresh(x)), expected)


def test_plain_safetensors_from_tk_save_is_read_by_safetensors_numpy(tmp_path):
    from safetensors.numpy import load_file
    ref = {d.name: a for d, a in _REFERENCE.items() if d is not tk.bfloat16}     # numpy has no bfloat16
    tk.save({k: tk.from_numpy(a.copy()) for k, a in ref.items()}, tmp_path / "p.safetensors")
    got = load_file(str(tmp_path / "p.safetensors"))
    assert set(got) == set(ref)
    for k, a in ref.items():
        assert got[k].dtype == a.dtype and got[k].shape == a.shape
        np.testing.assert_array_equal(_bits(got[k]), _bits(a), err_msg=k)


def test_file_from_safetensors_numpy_loads_by_key(tmp_path):
    from safetensors.numpy import save_file
    ref = {"layer.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "mask": np.array([True, False]),
           "ids": np.array([[3, -4]], np.int64), "h": _REFERENCE[tk.float16]}
    save_file(ref, str(tmp_path / "np.safetensors"), metadata={"format": "np"})
    out = tk.load(tmp_path / "np.safetensors")
    assert set(out) == set(ref)
    for k, a in ref.items():
        assert out[k].dtype == tk.dtypes.from_numpy_dtype(a.dtype)
        np.testing.assert_array_equal(_bits(_host(out[k])), _bits(a), err_msg=k)


def test_file_from_pytorch_safetensors_loads_by_key(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file, save_file
    bf = torch.tensor([1.0, -2.5, float("nan")], dtype=torch.bfloat16)
    ref = {"fc.weight": torch.randn(3, 2), "fc.bias": torch.randn(3, dtype=torch.float64), "bf": bf,
           "half": torch.tensor([0.1, 65504.0], dtype=torch.float16), "u8": torch.tensor([0, 255], dtype=torch.uint8),
           "i8": torch.tensor([-128], dtype=torch.int8), "b": torch.tensor([True, False]),
           "steps": torch.tensor(7), "i16": torch.tensor([[-3]], dtype=torch.int16)}
    save_file(ref, str(tmp_path / "pt.safetensors"), metadata={"format": "pt"})
    out = tk.load(tmp_path / "pt.safetensors")
    assert set(out) == set(ref)
    for k, v in ref.items():
        assert out[k].dtype.name == str(v.dtype).replace("torch.", "") and tuple(out[k].shape) == tuple(v.shape)
        raw = v.contiguous().view(torch.uint8) if v.dim() else v.reshape(1).view(torch.uint8)
        np.testing.assert_array_equal(_bits(_host(out[k])).reshape(-1), raw.numpy().reshape(-1), err_msg=k)
    # ... and PyTorch reads tk.save's plain file, bfloat16 included
    tk.save({"bf": out["bf"], "w": out["fc.weight"]}, tmp_path / "back.safetensors")
    back = load_file(str(tmp_path / "back.safetensors"))
    assert torch.equal(back["w"], ref["fc.weight"])
    assert torch.equal(back["bf"].view(torch.int16), bf.view(torch.int16))


def test_write_to_a_path_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "ckpt.safetensors"
    tk.save({"w": tk.ones(4)}, target)
    old = target.read_bytes()
    real_write = serialization._write_bytes
    calls = []

    def failing_write(f, data):
        calls.append(1)
        if len(calls) == 2:                                # header written, then the disk fills mid-tensor
            real_write(f, memoryview(data).cast("B")[: len(memoryview(data).cast("B")) // 2])
            raise OSError(28, "No space left on device")
        real_write(f, data)

    monkeypatch.setattr(serialization, "_write_bytes", failing_write)
    with pytest.raises(OSError, match="No space left"):
        tk.save({"w": tk.zeros(1000)}, target)
    assert len(calls) == 2
    assert target.read_bytes() == old
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]       # the temporary file is gone
    monkeypatch.undo()
    tk.save({"w": tk.zeros(3)}, str(target))                  # and a later save replaces the file
    assert _host(tk.load(target)["w"]).tolist() == [0, 0, 0] and os.listdir(tmp_path) == ["ckpt.safetensors"]


def _good_bytes() -> bytes:
    return _save_to_bytes({"a": tk.arange(4, dtype=tk.float32), "b": tk.ones(2, dtype=tk.int64)}).getvalue()


def test_corrupt_and_truncated_files_name_the_file_and_the_problem(tmp_path):
    good = _good_bytes()
    n = struct.unpack("<Q", good[:8])[0]
    ok = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    cases = {
        "empty": (b"", "empty"),
        "short": (b"\x10\x00\x00", "truncated"),
        "cut_data": (good[:-5], "out of range"),
        "cut_header": (good[: 8 + n // 2], "beyond the file size"),
        "garbage": (np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(), "beyond the file size"),
        "text": (b"hello world, not a checkpoint at all", "beyond the file size"),
    }
    for name, (data, msg) in cases.items():
        (tmp_path / name).write_bytes(data)
    crafted = {
        "bad_json": (None, "not valid JSON"),
        "overlap": (_st_file(tmp_path / "overlap", {"x": ok, "y": {**ok, "data_offsets": [4, 12]}}, bytes(12)),
                    "overlap"),
        "out_of_range": (_st_file(tmp_path / "out_of_range", {"x": {**ok, "data_offsets": [8, 16]}}, bytes(8)),
                         "out of range"),
        "unknown_dtype": (_st_file(tmp_path / "unknown_dtype", {"x": {**ok, "dtype": "F33"}}, bytes(8)),
                          "'F33' is unknown"),
        "unsupported_dtype": (_st_file(tmp_path / "unsupported_dtype", {"x": {**ok, "dtype": "U32"}}, bytes(8)),
                              "not supported"),
        "size_mismatch": (_st_file(tmp_path / "size_mismatch", {"x": {**ok, "shape": [3]}}, bytes(8)),
                          "size mismatch"),
        "bad_shape": (_st_file(tmp_path / "bad_shape", {"x": {**ok, "shape": [-2]}}, bytes(8)), "shape"),
        "bad_structure": (_st_file(tmp_path / "bad_structure", {"__metadata__": {
            "tensorkit.format": "1", "tensorkit.structure": '{"tensor": "missing"}'}}), "missing"),
    }
    raw = b'{"x": {"dtype": "F32", '                        # JSON cut short inside a valid length
    (tmp_path / "bad_json").write_bytes(struct.pack("<Q", len(raw)) + raw)
    for name, (_, msg) in {**cases, **crafted}.items():
        path = str(tmp_path / name)
        with pytest.raises(SerializationError) as info:
            tk.load(path)
        assert path in str(info.value) and msg in str(info.value), (name, str(info.value))
    with pytest.raises(SerializationError, match="BytesIO"):  # a file object is named by its repr
        tk.load(io.BytesIO(good[:-1]))


class _Exploit:
    """Unpickling this creates a file: the stand-in for arbitrary code a pickle can run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pickle_files_are_refused_without_unpickling(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"weights": _Exploit(str(marker))}, protocol=protocol))
    with pytest.raises(SerializationError) as info:
        tk.load(path)
    msg = str(info.value)
    assert str(path) in msg and "pickle" in msg and "weights_only=False" in msg and "run" in msg
    assert not marker.exists()
    with pytest.raises(SerializationError, match="pickle"):
        tk.load(io.BytesIO(path.read_bytes()))
    assert not marker.exists()
    fh = tk.load(path, weights_only=False)["weights"]      # asked for explicitly: the code runs
    fh.close()
    assert marker.exists()


def test_zip_archives_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    with zipfile.ZipFile(path, "w") as z:                  # torch.save's layout: archive/data.pkl
        z.writestr("archive/data.pkl", pickle.dumps(_Exploit(str(marker))))
    for weights_only in (True, False):
        with pytest.raises(SerializationError, match="zip archive") as info:
            tk.load(path, weights_only=weights_only)
        assert str(path) in str(info.value) and "torch.save" in str(info.value)
    assert not marker.exists()


def test_torch_save_file_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "sd.pt"
    torch.save({"w": torch.ones(2)}, path)
    with pytest.raises(SerializationError, match="zip archive"):
        tk.load(path)
    torch.save({"w": torch.ones(2)}, path, _use_new_zipfile_serialization=False)   # the legacy pickle format
    with pytest.raises(SerializationError, match="pickle file"):
        tk.load(path)


def test_whole_module_only_with_pickle_and_weights_only_false(tmp_path):
    tk.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    x = tk.randn(2, 3)
    with pytest.raises(TypeError, match="state_dict.*pickle=True"):
        tk.save(net, tmp_path / "net.bin")
    assert not (tmp_path / "net.bin").exists()
    tk.save(net, tmp_path / "net.pkl", pickle=True)
    with pytest.raises(SerializationError, match="weights_only=False"):
        tk.load(tmp_path / "net.pkl")
    loaded = tk.load(tmp_path / "net.pkl", weights_only=False)
    assert type(loaded) is nn.Sequential and loaded is not net
    np.testing.assert_array_equal(_host(loaded(x)), _host(net(x)))
    with pytest.raises(TypeError, match="dict key"):
        tk.save({(1, 2): 3}, io.BytesIO())
    # weights_only=False still reads the safe format
    assert tk.load(_save_to_bytes({"n": 1}), weights_only=False) == {"n": 1}


def test_map_location(tmp_path):
    path = tmp_path / "m.safetensors"
    tk.save({"g": tk.arange(3, dtype=tk.float32, device="cuda"), "c": tk.ones(2)}, path)
    out = tk.load(path)
    assert out["g"].is_cuda and out["c"].device == tk.device("cpu")
    assert _host(out["g"]).tolist() == [0, 1, 2]
    for loc in ("cpu", tk.device("cpu"), {"cuda:0": "cpu"}):
        out = tk.load(path, map_location=loc)
        assert out["g"].device == tk.device("cpu") and out["c"].device == tk.device("cpu"), loc
    out = tk.load(path, map_location="cuda")
    assert out["g"].is_cuda and out["c"].is_cuda and _host(out["c"]).tolist() == [1, 1]
    out = tk.load(path, map_location={"cpu": "cuda:0"})
    assert out["g"].is_cuda and out["c"].is_cuda
    seen = []

    def fn(t, location):
        seen.append((location, t.device.type))
        return t if location == "cpu" else "cpu"

    out = tk.load(path, map_location=fn)
    assert sorted(seen) == [("cpu", "cpu"), ("cuda:0", "cpu")]
    assert out["g"].device == tk.device("cpu") and _host(out["g"]).tolist() == [0, 1, 2]
    out = tk.load(path, map_location=lambda t, loc: None)     # None: the saved device
    assert out["g"].is_cuda
    # a plain safetensors file has no devices: everything comes in on the CPU, or where map_location says
    assert tk.load(_st_file(tmp_path / "plain", {"x": {"dtype": "I8", "shape": [1], "data_offsets": [0, 1]}},
                            b"\x05"), map_location="cuda")["x"].is_cuda


def test_optimizer_state_dict_resumes_training(tmp_path):
    tk.manual_seed(0)
    net = nn.Linear(3, 2)
    opt = tk.optim.Adam(net.parameters(), lr=1e-2, amsgrad=True)
    x = tk.randn(4, 3)

    def step(model, optimizer):
        optimizer.zero_grad()
        model(x).pow(2).sum().backward()
        optimizer.step()

    step(net, opt)
    tk.save({"model": net.state_dict(), "optim": opt.state_dict(), "epoch": 1}, tmp_path / "ckpt.safetensors")
    ckpt = tk.load(tmp_path / "ckpt.safetensors")
    net2 = nn.Linear(3, 2)
    net2.load_state_dict(ckpt["model"])
    opt2 = tk.optim.Adam(net2.parameters(), lr=1.0)
    opt2.load_state_dict(ckpt["optim"])
    assert ckpt["epoch"] == 1 and opt2.param_groups[0]["lr"] == 1e-2 and opt2.param_groups[0]["betas"] == (0.9, 0.999)
    step(net, opt)
    step(net2, opt2)
    np.testing.assert_array_equal(_host(net2.weight), _host(net.weight))


def test_header_length_that_looks_like_pickle_magic_still_loads(tmp_path):
    # A header of 640 bytes starts the file with 80 02, pickle protocol 2's magic: the file's
    # size and the '{' after the length decide, not the first two bytes.
    header = json.dumps({"x": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}).encode()
    header += b" " * (640 - len(header))
    path = tmp_path / "st.safetensors"
    path.write_bytes(struct.pack("<Q", 640) + header + b"\x07\x09")
    assert path.read_bytes()[:2] == b"\x80\x02"
    assert _host(tk.load(path)["x"]).tolist() == [7, 9]


def test_deeply_nested_or_bytes_paths(tmp_path):
    bomb = b"{\"a\": " + b"[" * 100000
    (tmp_path / "deep").write_bytes(struct.pack("<Q", len(bomb)) + bomb)
    with pytest.raises(SerializationError, match="not valid JSON"):
        tk.load(tmp_path / "deep")
    tk.save({"a": 1}, os.fsencode(tmp_path / "b.safetensors"))
    assert tk.load(os.fsencode(tmp_path / "b.safetensors")) == {"a": 1}
