"""kseg.convert.torch7: Torch7 binary files with known contents, hand-assembled byte by byte after
torch7's File.lua, written by write_t7, and cross-read by the independent `torchfile` package."""

import struct

import numpy as np
import pytest

from kseg.convert import ConversionError
from kseg.convert.torch7 import TorchFunction, TorchObject, TorchTensor, read_t7, write_t7


# ------------------------------------------------------------- hand-assembled bytes (File.lua)

def _i(v):
    return struct.pack("<i", v)


def _q(*v):
    return struct.pack(f"<{len(v)}q", *v)


def _s(b):
    b = b.encode() if isinstance(b, str) else b
    return _i(len(b)) + b


def _num(v):
    return _i(1) + struct.pack("<d", v)


def _str(v):
    return _i(2) + _s(v)


def test_hand_assembled_file(tmp_path):
    """A table {weight = CudaTensor 2x3 (transposed view of a 3x2 storage), w2 = same storage,
    name = "conv", flag = true, n = 2.5, fn = function, old = legacy unversioned nn.ReLU,
    [1] = table {...}, [2] = reference to table 1}."""
    storage = np.arange(6, dtype=np.float32)
    storage_obj = _i(4) + _i(3) + _s("V 1") + _s("torch.CudaStorage") + _q(6) + storage.tobytes()
    # 2x3 view with strides (1, 2) over storage offset 1: element [r, c] = storage[r + 2c]
    tensor = _i(4) + _i(2) + _s("V 1") + _s("torch.CudaTensor") + _i(2) + _q(2, 3) + _q(1, 2) + _q(1) + storage_obj
    tensor2 = (_i(4) + _i(4) + _s("V 1") + _s("torch.CudaTensor") + _i(1) + _q(4) + _q(1) + _q(3)
               + _i(4) + _i(3))                                   # reference to storage #3, offset 3
    func = _i(6) + _i(5) + _s(b"\x1bLJ\x01bytecode") + _i(3) + _i(6) + _i(0)   # upvalues: empty table
    legacy = _i(4) + _i(7) + _s("nn.ReLU") + _i(3) + _i(8) + _i(1) + _str("inplace") + _i(5) + _i(1)
    inner = _i(3) + _i(9) + _i(1) + _str("x") + _num(7)
    body = (_str("weight") + tensor + _str("w2") + tensor2 + _str("name") + _str("conv")
            + _str("flag") + _i(5) + _i(1) + _str("n") + _num(2.5) + _str("fn") + func
            + _str("old") + legacy + _num(1) + inner + _num(2) + _i(3) + _i(9) + _str("nil") + _i(0))
    data = _i(3) + _i(1) + _i(10) + body
    path = tmp_path / "hand.t7"
    path.write_bytes(data)

    obj = read_t7(path)
    w = obj["weight"]
    assert w.dtype == np.float32 and w.shape == (2, 3)
    np.testing.assert_array_equal(w, [[0, 2, 4], [1, 3, 5]])
    np.testing.assert_array_equal(obj["w2"], [2, 3, 4, 5])
    assert obj["name"] == "conv" and obj["flag"] is True and obj["n"] == 2.5 and obj["nil"] is None
    assert isinstance(obj["fn"], TorchFunction) and obj["fn"].dumped.startswith(b"\x1bLJ")
    assert obj["fn"].upvalues == {}
    assert obj["old"].class_name == "nn.ReLU" and obj["old"].version == 0 and obj["old"]["inplace"] is True
    assert obj[1] == {"x": 7} and obj[2] is obj[1]
    try:
        import torchfile
    except ImportError:
        return
    ref = torchfile.load(str(path), use_list_heuristic=False)
    np.testing.assert_array_equal(ref[b"weight"], w)
    np.testing.assert_array_equal(ref[b"w2"], obj["w2"])


# --------------------------------------------------------------------------- write_t7 round trips

def _authors_like_model(rng):
    """nn.Sequential(SpatialConvolution, ReLU, ConcatTable(Sequential(conv, BN), conv), Linear) with
    cudnn/CUDA types, as DeepMask's trunk/heads are saved."""
    conv1 = TorchObject("cudnn.SpatialConvolution", {
        "weight": TorchTensor(rng.normal(size=(8, 3, 3, 3)).astype(np.float32), "torch.CudaTensor"),
        "bias": TorchTensor(rng.normal(size=8).astype(np.float32), "torch.CudaTensor"),
        "nInputPlane": 3, "nOutputPlane": 8, "kW": 3, "kH": 3, "dW": 1, "dH": 1, "padW": 1, "padH": 1,
        "train": False, "gradInput": TorchTensor(np.zeros(0, np.float32), "torch.CudaTensor")})
    bn = TorchObject("nn.SpatialBatchNormalization", {
        "running_mean": rng.normal(size=4).astype(np.float32),
        "running_var": rng.uniform(1, 2, size=4).astype(np.float32),
        "weight": rng.normal(size=4).astype(np.float32), "bias": rng.normal(size=4).astype(np.float32),
        "eps": 1e-5, "momentum": 0.1, "affine": True})
    conv2 = TorchObject("nn.SpatialConvolutionMM", {
        "weight": rng.normal(size=(4, 8 * 9)).astype(np.float64), "bias": rng.normal(size=4),
        "kW": 3, "kH": 3, "nInputPlane": 8})
    branch = TorchObject("nn.Sequential", {"modules": [conv2, bn]})
    concat = TorchObject("nn.ConcatTable", {"modules": [branch, conv1]})   # conv1 shared
    lin = TorchObject("nn.Linear", {"weight": TorchTensor(rng.normal(size=(5, 6)).astype(np.float16),
                                                          "torch.CudaHalfTensor"),
                                    "bias": np.arange(5, dtype=np.int64)})
    return TorchObject("nn.Sequential", {"modules": [conv1, TorchObject("nn.ReLU", {}), concat, lin],
                                         "train": False}), (conv1, conv2, bn, lin)


def test_nested_model_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    model, (conv1, conv2, bn, lin) = _authors_like_model(rng)
    path = write_t7(tmp_path / "model.t7", {"model": model, "config": {"iSz": 160, "name": "dm"}})
    got = read_t7(path)
    m = got["model"]
    assert m.class_name == "nn.Sequential" and len(m["modules"]) == 4
    c1, relu, concat, lin2 = m["modules"]
    assert c1.class_name == "cudnn.SpatialConvolution" and relu.class_name == "nn.ReLU"
    assert concat["modules"][1] is c1                        # shared module stays one object
    np.testing.assert_array_equal(c1["weight"], conv1["weight"].array)
    assert c1["weight"].dtype == np.float32 and c1["gradInput"].shape == (0,)
    assert c1["nInputPlane"] == 3 and isinstance(c1["nInputPlane"], int) and c1["train"] is False
    br_conv, br_bn = concat["modules"][0]["modules"]
    np.testing.assert_array_equal(br_conv["weight"], conv2["weight"])
    assert br_conv["weight"].dtype == np.float64
    for k in ("running_mean", "running_var", "weight", "bias"):
        np.testing.assert_array_equal(br_bn[k], bn[k])
    assert br_bn["eps"] == 1e-5
    assert lin2["weight"].dtype == np.float16
    np.testing.assert_array_equal(lin2["weight"], lin["weight"].array)
    np.testing.assert_array_equal(lin2["bias"], np.arange(5))
    assert got["config"] == {"iSz": 160, "name": "dm"}


def test_torchfile_reads_what_write_t7_writes(tmp_path):
    torchfile = pytest.importorskip("torchfile")
    rng = np.random.default_rng(1)
    model, (conv1, conv2, bn, _) = _authors_like_model(rng)
    model["modules"][3]["weight"] = rng.normal(size=(5, 6)).astype(np.float32)  # torchfile lacks Half
    path = write_t7(tmp_path / "m.t7", model)
    ref = torchfile.load(str(path), use_list_heuristic=False)
    assert ref.torch_typename() == b"nn.Sequential"
    mods = ref[b"modules"]
    np.testing.assert_array_equal(mods[1][b"weight"], conv1["weight"].array)
    assert mods[1][b"weight"].dtype == np.float32
    branch = mods[3][b"modules"][1]
    np.testing.assert_array_equal(branch[b"modules"][2][b"running_var"], bn["running_var"])
    np.testing.assert_array_equal(branch[b"modules"][1][b"weight"], conv2["weight"])


def test_views_share_one_storage(tmp_path):
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    views = [base, base[1], base[:, 2], base[1:3, ::2], base.T]
    got = read_t7(write_t7(tmp_path / "v.t7", views))
    for a, b in zip(got, views):
        np.testing.assert_array_equal(a, b)
    assert np.shares_memory(got[0], got[1])          # contiguous views stay views on the storage
    raw = (tmp_path / "v.t7").read_bytes()
    assert raw.count(b"torch.FloatStorage") == 1      # one storage written, referenced 4 times
    torchfile = pytest.importorskip("torchfile")
    ref = torchfile.load(str(tmp_path / "v.t7"), use_list_heuristic=False)
    for i, b in enumerate(views):
        np.testing.assert_array_equal(ref[i + 1], b)


def test_every_tensor_type(tmp_path):
    types = {"torch.ByteTensor": np.uint8, "torch.CharTensor": np.int8, "torch.ShortTensor": np.int16,
             "torch.IntTensor": np.int32, "torch.LongTensor": np.int64, "torch.FloatTensor": np.float32,
             "torch.DoubleTensor": np.float64, "torch.HalfTensor": np.float16,
             "torch.CudaTensor": np.float32, "torch.CudaDoubleTensor": np.float64,
             "torch.CudaHalfTensor": np.float16, "torch.CudaByteTensor": np.uint8,
             "torch.CudaLongTensor": np.int64}
    obj = {name: TorchTensor(np.arange(6, dtype=dt).reshape(2, 3), name) for name, dt in types.items()}
    path = write_t7(tmp_path / "t.t7", obj)
    raw = path and (tmp_path / "t.t7").read_bytes()
    got = read_t7(path)
    for name, dt in types.items():
        assert got[name].dtype == dt, name
        np.testing.assert_array_equal(got[name], np.arange(6).reshape(2, 3))
        assert name.replace("Tensor", "Storage").encode() in raw


def test_cycles(tmp_path):
    t = {"name": "loop"}
    t["self"] = t
    lst = [1, 2]
    lst.append(lst)
    got = read_t7(write_t7(tmp_path / "c.t7", {"t": t, "l": lst}))
    assert got["t"]["self"] is got["t"]
    assert got["l"][2] is got["l"] and got["l"][:2] == [1, 2]


def test_errors_name_the_file(tmp_path):
    path = write_t7(tmp_path / "ok.t7", {"w": np.ones((3, 3), np.float32)})
    data = (tmp_path / "ok.t7").read_bytes()
    (tmp_path / "cut.t7").write_bytes(data[:-7])
    with pytest.raises(ConversionError, match="cut.t7"):
        read_t7(tmp_path / "cut.t7")
    (tmp_path / "tag.t7").write_bytes(struct.pack("<i", 42) + b"\0" * 8)
    with pytest.raises(ConversionError, match="tag.t7.*unknown type tag 42"):
        read_t7(tmp_path / "tag.t7")
    (tmp_path / "extra.t7").write_bytes(data + b"\0\0\0\0")
    with pytest.raises(ConversionError, match="extra.t7: 4 bytes left"):
        read_t7(tmp_path / "extra.t7")
    with pytest.raises(ConversionError, match="nope.t7: cannot open"):
        read_t7(tmp_path / "nope.t7")
    assert path.endswith("ok.t7")
