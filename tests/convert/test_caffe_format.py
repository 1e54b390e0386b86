"""kseg.convert.caffe: the caffemodel wire format checked against two independent implementations
(Google's protobuf runtime with caffe.proto's messages declared here, and OpenCV's Caffe importer),
plus the prototxt text parser."""

import os

import numpy as np
import pytest

from kseg.convert import ConversionError
from kseg.convert.caffe import CaffeLayer, parse_prototxt, read_caffemodel, read_prototxt, write_caffemodel


# ------------------------------------------------------------------ protobuf runtime as a reference

def _caffe_messages():
    """The caffe.proto messages the converter touches, declared at runtime (field numbers from
    BVLC caffe.proto), so Google's protobuf implementation encodes/decodes them independently."""
    pb = pytest.importorskip("google.protobuf")
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="kseg_test_caffe.proto", package="kseg_test_caffe",
                                             syntax="proto2")

    def msg(name, fields):
        m = fdp.message_type.add(name=name)
        for fname, num, ftype, label, type_name, packed in fields:
            f = m.field.add(name=fname, number=num, type=ftype, label=label)
            if type_name:
                f.type_name = ".kseg_test_caffe." + type_name
            if packed:
                f.options.packed = True

    OPT, REP = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    msg("BlobShape", [("dim", 1, F.TYPE_INT64, REP, None, True)])
    msg("BlobProto", [
        ("num", 1, F.TYPE_INT32, OPT, None, False), ("channels", 2, F.TYPE_INT32, OPT, None, False),
        ("height", 3, F.TYPE_INT32, OPT, None, False), ("width", 4, F.TYPE_INT32, OPT, None, False),
        ("data", 5, F.TYPE_FLOAT, REP, None, True), ("diff", 6, F.TYPE_FLOAT, REP, None, True),
        ("shape", 7, F.TYPE_MESSAGE, OPT, "BlobShape", False),
        ("double_data", 8, F.TYPE_DOUBLE, REP, None, True)])
    msg("LayerParameter", [
        ("name", 1, F.TYPE_STRING, OPT, None, False), ("type", 2, F.TYPE_STRING, OPT, None, False),
        ("bottom", 3, F.TYPE_STRING, REP, None, False), ("top", 4, F.TYPE_STRING, REP, None, False),
        ("blobs", 7, F.TYPE_MESSAGE, REP, "BlobProto", False)])
    msg("V1LayerParameter", [
        ("bottom", 2, F.TYPE_STRING, REP, None, False), ("top", 3, F.TYPE_STRING, REP, None, False),
        ("name", 4, F.TYPE_STRING, OPT, None, False), ("type", 5, F.TYPE_INT32, OPT, None, False),
        ("blobs", 6, F.TYPE_MESSAGE, REP, "BlobProto", False)])
    msg("NetParameter", [
        ("name", 1, F.TYPE_STRING, OPT, None, False),
        ("layers", 2, F.TYPE_MESSAGE, REP, "V1LayerParameter", False),
        ("layer", 100, F.TYPE_MESSAGE, REP, "LayerParameter", False)])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"kseg_test_caffe.{n}"))
            for n in ("NetParameter", "BlobProto")}


@pytest.fixture(scope="module")
def proto():
    return _caffe_messages()


def _layers(seed=0):
    rng = np.random.default_rng(seed)
    return [
        ("conv1_1", "Convolution", [rng.normal(size=(4, 3, 3, 3)), rng.normal(size=4)]),
        ("relu1_1", "ReLU", []),
        ("fc6", "InnerProduct", [rng.normal(size=(5, 36)), rng.normal(size=5)]),
        ("upscore", "Deconvolution", [rng.normal(size=(5, 5, 4, 4))]),
        ("bn", "BN", [rng.normal(size=5), rng.uniform(1, 2, size=5), np.array([3.0])]),
    ]


@pytest.mark.parametrize("v1", [False, True])
@pytest.mark.parametrize("double", [False, True])
def test_writer_output_parses_with_protobuf(tmp_path, proto, v1, double):
    path = write_caffemodel(tmp_path / "m.caffemodel", _layers(), v1=v1, double=double, name="tiny")
    net = proto["NetParameter"]()
    net.ParseFromString(open(path, "rb").read())
    assert net.name == "tiny"
    entries = net.layers if v1 else net.layer
    assert [e.name for e in entries] == ["conv1_1", "relu1_1", "fc6", "upscore", "bn"]
    if v1:
        assert [e.type for e in entries][:4] == [4, 18, 14, 39]
    else:
        assert [e.type for e in entries] == ["Convolution", "ReLU", "InnerProduct", "Deconvolution", "BN"]
    blob = entries[2].blobs[0]
    want = _layers()[2][2][0]
    if v1:
        assert (blob.num, blob.channels, blob.height, blob.width) == (1, 1, 5, 36)
    else:
        assert list(blob.shape.dim) == [5, 36]
    values = np.array(blob.double_data if double else blob.data)
    assert len(blob.data if double else blob.double_data) == 0
    np.testing.assert_allclose(values, want.reshape(-1).astype(np.float64 if double else np.float32), rtol=0)


@pytest.mark.parametrize("v1", [False, True])
@pytest.mark.parametrize("double", [False, True])
def test_reader_on_protobuf_written_files(tmp_path, proto, v1, double):
    net = proto["NetParameter"](name="ref")
    rng = np.random.default_rng(3)
    w = rng.normal(size=(6, 2, 3, 1))
    b = rng.normal(size=6)
    layer = net.layers.add() if v1 else net.layer.add()
    layer.name = "conv"
    layer.type = 4 if v1 else "Convolution"
    for arr in (w, b):
        blob = layer.blobs.add()
        if v1:
            shape4 = (1,) * (4 - arr.ndim) + arr.shape
            blob.num, blob.channels, blob.height, blob.width = shape4
        else:
            blob.shape.dim.extend(arr.shape)
        (blob.double_data if double else blob.data).extend(arr.reshape(-1).tolist())
        blob.diff.extend([1.0] * arr.size)          # gradients are skipped, not mistaken for data
    layer = net.layers.add() if v1 else net.layer.add()
    layer.name = "up"
    layer.type = 39 if v1 else "Deconvolution"
    layer.blobs.add().data.extend([1.0, 2.0])       # no shape at all: 1-d
    path = tmp_path / "ref.caffemodel"
    path.write_bytes(net.SerializeToString())

    layers = read_caffemodel(path)
    assert list(layers) == ["conv", "up"]
    conv = layers["conv"]
    assert conv.type == "Convolution" and layers["up"].type == "Deconvolution"
    assert conv.blobs[0].shape == (6, 2, 3, 1)
    assert conv.blobs[1].shape == ((1, 1, 1, 6) if v1 else (6,))   # legacy 4-d kept 4-d
    assert all(blob.dtype == np.float32 for blob in conv.blobs)
    np.testing.assert_array_equal(conv.blobs[0], w.astype(np.float32))
    np.testing.assert_array_equal(conv.blobs[1].reshape(-1), b.astype(np.float32))
    np.testing.assert_array_equal(layers["up"].blobs[0], [1.0, 2.0])


def test_unpacked_float_data_is_read(tmp_path):
    """proto2 writers may emit `repeated float data` unpacked (one fixed32 per value)."""
    import struct

    def varint(v):
        out = b""
        while True:
            b, v = v & 0x7F, v >> 7
            out += bytes([b | 0x80]) if v else bytes([b])
            if not v:
                return out

    blob = varint(1 << 3) + varint(2) + varint(2 << 3) + varint(1)            # num 2, channels 1
    blob += varint(3 << 3) + varint(1) + varint(4 << 3) + varint(1)
    blob += b"".join(varint(5 << 3 | 5) + struct.pack("<f", v) for v in (1.5, -2.0))
    layer = varint(1 << 3 | 2) + varint(2) + b"ip" + varint(2 << 3 | 2) + varint(12) + b"InnerProduct"
    layer += varint(7 << 3 | 2) + varint(len(blob)) + blob
    data = varint(100 << 3 | 2) + varint(len(layer)) + layer
    (tmp_path / "u.caffemodel").write_bytes(data)
    got = read_caffemodel(tmp_path / "u.caffemodel")["ip"].blobs[0]
    assert got.shape == (2, 1, 1, 1)
    np.testing.assert_array_equal(got.reshape(-1), [1.5, -2.0])


def test_double_data_converted_in_pieces(tmp_path, monkeypatch):
    from kseg.convert import caffe

    monkeypatch.setattr(caffe, "_CHUNK_VALUES", 7)      # many pieces, a ragged last one
    w = np.random.default_rng(2).normal(size=(5, 3, 2, 2))
    got = read_caffemodel(write_caffemodel(tmp_path / "d.caffemodel", [("c", "Convolution", [w])], double=True))
    np.testing.assert_array_equal(got["c"].blobs[0], w.astype(np.float32))


def test_v0_layer_inside_v1(tmp_path):
    """Caffe of 2014 nested a V0LayerParameter (name 1, type 2 as a string, blobs 50) in field 1."""
    import struct

    def varint(v):
        out = b""
        while True:
            b, v = v & 0x7F, v >> 7
            out += bytes([b | 0x80]) if v else bytes([b])
            if not v:
                return out

    def ld(field, payload):
        return varint(field << 3 | 2) + varint(len(payload)) + payload

    data = struct.pack("<3f", 1.0, 2.0, 3.0)
    blob = varint(1 << 3) + varint(1) + varint(2 << 3) + varint(3) + varint(3 << 3) + varint(1) \
        + varint(4 << 3) + varint(1) + ld(5, data)
    v0 = ld(1, b"conv1") + ld(2, b"conv") + ld(50, blob)
    (tmp_path / "v0.caffemodel").write_bytes(ld(2, ld(1, v0)))
    layer = read_caffemodel(tmp_path / "v0.caffemodel")["conv1"]
    assert layer.type == "conv" and layer.blobs[0].shape == (1, 3, 1, 1)
    np.testing.assert_array_equal(layer.blobs[0].reshape(-1), [1, 2, 3])


def test_round_trip_and_order(tmp_path):
    layers = _layers(7)
    for v1 in (False, True):
        got = read_caffemodel(write_caffemodel(tmp_path / f"r{v1}.caffemodel", layers, v1=v1))
        assert list(got) == [n for n, _, _ in layers]
        for name, ltype, blobs in layers:
            assert isinstance(got[name], CaffeLayer) and got[name].type == ltype
            assert len(got[name].blobs) == len(blobs)
            for a, b in zip(got[name].blobs, blobs):
                np.testing.assert_array_equal(a.reshape(-1), np.float32(b).reshape(-1))
                if not v1:
                    assert a.shape == b.shape


def test_v1_fork_types_and_unknown_enum(tmp_path):
    # DeconvNet's fork (HyeonwooNoh/caffe): BN = 43, UNPOOLING = 42; unknown numbers stay visible
    path = write_caffemodel(tmp_path / "f.caffemodel",
                            [("bn1_1", 43, [np.ones(3)] * 4), ("unpool5", 42, []), ("odd", 77, [])], v1=True)
    got = read_caffemodel(path)
    assert [(l.name, l.type) for l in got.values()] == [("bn1_1", "BN"), ("unpool5", "Unpooling"),
                                                         ("odd", "V1LayerType77")]


def test_errors_name_the_file(tmp_path):
    bad = tmp_path / "truncated.caffemodel"
    good = write_caffemodel(tmp_path / "g.caffemodel", _layers())
    bad.write_bytes(open(good, "rb").read()[:-100])
    with pytest.raises(ConversionError, match="truncated.caffemodel"):
        read_caffemodel(bad)
    empty = tmp_path / "empty.caffemodel"
    empty.write_bytes(b"")
    with pytest.raises(ConversionError, match="empty.caffemodel: empty"):
        read_caffemodel(empty)
    with pytest.raises(ConversionError, match="missing.caffemodel: cannot open"):
        read_caffemodel(tmp_path / "missing.caffemodel")
    text = tmp_path / "text.caffemodel"
    text.write_text('name: "not binary"\nlayer { name: "a" }\n')
    with pytest.raises(ConversionError, match="text.caffemodel"):
        read_caffemodel(text)
    assert issubclass(ConversionError, ValueError)


def test_shape_mismatch_is_an_error(tmp_path, proto):
    net = proto["NetParameter"]()
    layer = net.layer.add(name="conv", type="Convolution")
    blob = layer.blobs.add()
    blob.shape.dim.extend([2, 3])
    blob.data.extend([0.0] * 5)
    (tmp_path / "s.caffemodel").write_bytes(net.SerializeToString())
    with pytest.raises(ConversionError, match=r"s.caffemodel.*'conv'.*\(2, 3\).*5 values"):
        read_caffemodel(tmp_path / "s.caffemodel")


def test_reader_copies_once_and_releases_the_file(tmp_path):
    path = write_caffemodel(tmp_path / "m.caffemodel", _layers())
    got = read_caffemodel(path)
    w = got["conv1_1"].blobs[0]
    assert w.flags.owndata or w.base is not None and w.base.flags.owndata
    assert w.flags.writeable
    os.replace(path, tmp_path / "moved.caffemodel")   # the map is closed: the file can go
    w[...] = 0  # arrays are ours, not views on a closed map


# ------------------------------------------------------------------------------- OpenCV's importer

_TINY_V2 = """
name: "tiny"
input: "data"
input_shape { dim: 1 dim: 3 dim: 7 dim: 6 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "fc" type: "InnerProduct" bottom: "conv1" top: "fc"
  inner_product_param { num_output: 5 } }
"""
_TINY_V1 = """
name: "tiny"
input: "data"
input_dim: 1 input_dim: 3 input_dim: 7 input_dim: 6
layers { name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layers { name: "relu1" type: RELU bottom: "conv1" top: "conv1" }
layers { name: "fc" type: INNER_PRODUCT bottom: "conv1" top: "fc"
  inner_product_param { num_output: 5 } }
"""


def _numpy_tiny(x, w1, b1, w2, b2):
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    conv = np.zeros((4, 7, 6))
    for y in range(7):
        for xx in range(6):
            conv[:, y, xx] = np.tensordot(w1, xp[:, y:y + 3, xx:xx + 3], axes=3) + b1
    return w2 @ np.maximum(conv, 0).reshape(-1) + b2


@pytest.mark.parametrize("v1", [False, True], ids=["V2", "V1"])
def test_opencv_runs_written_caffemodel(tmp_path, v1):
    """OpenCV's importer reads float `data` only (double_data trips its raw_data assertion), so
    the double path is checked against the protobuf runtime above."""
    cv2 = pytest.importorskip("cv2")
    double = False
    rng = np.random.default_rng(11)
    w1, b1 = rng.normal(size=(4, 3, 3, 3)), rng.normal(size=4)
    w2, b2 = rng.normal(size=(5, 4 * 7 * 6)) * 0.1, rng.normal(size=5)
    proto_path = tmp_path / "tiny.prototxt"
    proto_path.write_text(_TINY_V1 if v1 else _TINY_V2)
    model = write_caffemodel(tmp_path / "tiny.caffemodel",
                             [("conv1", "Convolution", [w1, b1]), ("relu1", "ReLU", []),
                              ("fc", "InnerProduct", [w2, b2])], v1=v1, double=double)
    net = cv2.dnn.readNetFromCaffe(str(proto_path), model)
    x = rng.normal(size=(3, 7, 6)).astype(np.float32)
    net.setInput(x[None])
    got = net.forward().reshape(-1)
    want = _numpy_tiny(x.astype(np.float64), np.float32(w1), np.float32(b1), np.float32(w2), np.float32(b2))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # and our reader agrees with what OpenCV loaded
    blobs = read_caffemodel(model)["conv1"].blobs
    np.testing.assert_array_equal(blobs[0], np.float32(w1))


# ------------------------------------------------------------------------------------- prototxt

def test_read_prototxt_v2_and_v1():
    v2 = read_prototxt(_TINY_V2)
    assert [(l["name"], l["type"]) for l in v2] == [("conv1", "Convolution"), ("relu1", "ReLU"),
                                                    ("fc", "InnerProduct")]
    assert v2[0]["bottom"] == ["data"] and v2[0]["top"] == ["conv1"]
    assert v2[0]["params"]["convolution_param"] == {"num_output": 4, "kernel_size": 3, "pad": 1}
    v1 = read_prototxt(_TINY_V1)
    assert [(l["name"], l["type"]) for l in v1] == [(l["name"], l["type"]) for l in v2]
    net = parse_prototxt(_TINY_V1)
    assert net["input_dim"] == [1, 3, 7, 6] and net["input"] == ["data"]


def test_read_prototxt_text_format_details(tmp_path):
    text = """
    # a comment
    name: 'DeconvNet' # trailing comment
    layers { bottom: 'conv1_1' top: 'conv1_1' name: 'bn1_1' type: BN
      bn_param { scale_filler { type: 'constant' value: 1 }
                 shift_filler { type: 'constant' value: 0.001 } bn_mode: INFERENCE } }
    layers {
      name: "pool1" type: POOLING bottom: "conv1_2" top: "pool1" top: "pool1_mask"
      pooling_param { pool: MAX kernel_size: 2 stride: 2 }
      param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
      include { phase: TEST }
      interp_param { zoom_factor: 8 } scale: -1.5e-3 flag: true
      desc: "a" "b"
      dims: [1, 2, 3]
    }
    """
    p = tmp_path / "deploy.prototxt"
    p.write_text(text)
    layers = read_prototxt(p)
    assert read_prototxt(str(p)) == layers
    bn, pool = layers
    assert bn["type"] == "BN"
    assert bn["params"]["bn_param"]["shift_filler"] == {"type": "constant", "value": 0.001}
    assert bn["params"]["bn_param"]["bn_mode"] == "INFERENCE"
    assert pool["top"] == ["pool1", "pool1_mask"]
    assert pool["params"]["pooling_param"] == {"pool": "MAX", "kernel_size": 2, "stride": 2}
    assert pool["params"]["param"] == [{"lr_mult": 1, "decay_mult": 1}, {"lr_mult": 2, "decay_mult": 0}]
    assert pool["params"]["include"] == {"phase": "TEST"}
    assert pool["params"]["scale"] == -1.5e-3 and pool["params"]["flag"] is True
    assert pool["params"]["desc"] == "ab" and pool["params"]["dims"] == [1, 2, 3]
    with pytest.raises(FileNotFoundError, match="nope.prototxt: cannot read"):
        read_prototxt(str(tmp_path / "nope.prototxt"))
    with pytest.raises(ValueError, match="line 3"):
        parse_prototxt('layer {\n name: "a"\n }}')
    with pytest.raises(ValueError, match="missing '}'"):
        parse_prototxt('layer { name: "a" ')
