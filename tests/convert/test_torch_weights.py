"""kseg.models.torch_weights: small kseg DeepMask / SharpMask / Fast R-CNN / MultiPathNet loaded from
.t7 files laid out like the authors' saved models (module trees built here after DeepMask.lua,
SharpMask.lua, fb.resnet.torch and multipathnet's models/*.lua, written with write_t7)."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from kseg.convert import ConversionError  # noqa: E402
from kseg.convert.torch7 import TorchObject as T  # noqa: E402
from kseg.convert.torch7 import TorchTensor, read_t7, write_t7  # noqa: E402
from kseg.models import torch_weights  # noqa: E402
from kseg.models.deepmask import DeepMask, SharpMask  # noqa: E402
from kseg.models.multipathnet import FastRCNN, MultiPathNet  # noqa: E402

M = 0.125            # width multiplier of the small models
DEPTHS = (1, 2, 1)


def _w(c):
    return max(1, int(round(c * M)))


class _Gen:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def t(self, *shape, cuda=True, scale=0.1):
        a = (self.rng.normal(size=shape) * scale).astype(np.float32)
        return TorchTensor(a, "torch.CudaTensor") if cuda else a

    def conv(self, cin, cout, k, bias=True, cls="cudnn.SpatialConvolution"):
        f = {"weight": self.t(cout, cin, k, k), "nInputPlane": cin, "nOutputPlane": cout, "kW": k, "kH": k,
             "gradWeight": TorchTensor(np.zeros(0, np.float32), "torch.CudaTensor")}
        if bias:
            f["bias"] = self.t(cout)
        return T(cls, f)

    def padded(self, conv):   # utils.updatePadding: Sequential(SpatialSymmetricPadding, conv)
        return T("nn.Sequential", {"modules": [T("nn.SpatialSymmetricPadding", {"pad_l": 1}), conv]})

    def affine(self, c):       # BNtoFixed's SpatialConstDiagonal
        return T("nn.SpatialConstDiagonal", {"a": self.t(1, c, 1, 1, scale=1.0), "b": self.t(1, c, 1, 1)})

    def linear(self, cin, cout):
        return T("nn.Linear", {"weight": self.t(cout, cin), "bias": self.t(cout)})


def _bottleneck(g, cin, mid, out, downsample):
    main = T("nn.Sequential", {"modules": [
        g.conv(cin, mid, 1, bias=False), g.affine(mid), T("cudnn.ReLU", {}),
        g.padded(g.conv(mid, mid, 3, bias=False)), g.affine(mid), T("cudnn.ReLU", {}),
        g.conv(mid, out, 1, bias=False), g.affine(out)]})
    short = (T("nn.Sequential", {"modules": [g.conv(cin, out, 1, bias=False), g.affine(out)]})
             if downsample else T("nn.Identity", {}))
    return T("nn.Sequential", {"modules": [T("nn.ConcatTable", {"modules": [main, short]}),
                                           T("nn.CAddTable", {}), T("cudnn.ReLU", {})]})


def _trunk(g, f_size):
    """fb.resnet.torch ResNet-50 up to layer3 + DeepMask's extra layers (DeepMask.lua createTrunk).
    conv1 keeps a real SpatialBatchNormalization and a conv bias (folded on load)."""
    c1 = _w(64)
    bn1 = T("cudnn.SpatialBatchNormalization", {
        "running_mean": g.t(c1), "running_var": TorchTensor(g.rng.uniform(0.5, 2, c1).astype(np.float32),
                                                            "torch.CudaTensor"),
        "weight": g.t(c1, scale=1.0), "bias": g.t(c1), "eps": 1e-5, "affine": True})
    mods = [g.padded(g.conv(3, c1, 7, bias=True)), bn1, T("cudnn.ReLU", {}), T("cudnn.SpatialMaxPooling", {})]
    cin = c1
    for (mid, out, stride), n in zip(((64, 256, 1), (128, 512, 2), (256, 1024, 2)), DEPTHS):
        blocks = []
        for i in range(n):
            blocks.append(_bottleneck(g, cin, _w(mid), _w(out), i == 0))
            cin = _w(out)
        mods.append(T("nn.Sequential", {"modules": blocks}))
    mods += [T("nn.SpatialZeroPadding", {"pad_l": -1}), g.conv(cin, _w(128), 1), T("cudnn.ReLU", {}),
             T("nn.View", {}), g.linear(_w(128) * f_size * f_size, 512)]
    return T("nn.Sequential", {"modules": mods})


def _score_branch(g):
    return T("nn.Sequential", {"modules": [T("nn.Dropout", {}), g.linear(512, 1024), T("nn.Threshold", {}),
                                           T("nn.Dropout", {}), g.linear(1024, 1)]})


def _deepmask_file(g, f_size=10, o_sz=56):
    mask = T("nn.Sequential", {"modules": [T("nn.Sequential", {"modules": [g.linear(512, o_sz * o_sz)]}),
                                           T("nn.Sequential", {"modules": [T("nn.Copy", {}), T("nn.View", {})]})]})
    dm = T("nn.DeepMask", {"trunk": _trunk(g, f_size), "maskBranch": mask, "scoreBranch": _score_branch(g),
                           "fSz": f_size})
    return {"model": dm, "config": {"iSz": 160, "oSz": o_sz, "gSz": 112, "batch": 32}}


def _sub(model, a, b):
    return keras.Model(model.get_layer(a).input if a else model.input, model.get_layer(b).output)


@pytest.fixture(scope="module")
def deepmask_pair(tmp_path_factory):
    g = _Gen(0)
    obj = _deepmask_file(g)
    path = write_t7(tmp_path_factory.mktemp("t7") / "deepmask.t7", obj)
    model = DeepMask(trunk="resnet50", width_multiplier=M, depths=DEPTHS)
    torch_weights.load_t7(model, path)
    return model, read_t7(path)


def test_deepmask_weights_land_in_place(deepmask_pair):
    model, obj = deepmask_pair
    dm = obj["model"]
    trunk = dm["trunk"]["modules"]
    # layer2 block 1 (second block), conv2 (3x3, wrapped with symmetric padding): HWIO of OIHW
    w = trunk[5]["modules"][1]["modules"][0]["modules"][0]["modules"][3]["modules"][1]["weight"]
    np.testing.assert_array_equal(model.get_layer("layer2_1_conv2").get_weights()[0], w.transpose(2, 3, 1, 0))
    # the shortcut of layer3's first block
    sc = trunk[6]["modules"][0]["modules"][0]["modules"][1]["modules"]
    np.testing.assert_array_equal(model.get_layer("layer3_0_downsample").get_weights()[0],
                                  sc[0]["weight"].transpose(2, 3, 1, 0))
    gamma, beta, mean, var = model.get_layer("layer3_0_downsample_bn").get_weights()
    np.testing.assert_array_equal(gamma, sc[1]["a"].reshape(-1))
    np.testing.assert_array_equal(beta, sc[1]["b"].reshape(-1))
    np.testing.assert_array_equal(mean, 0)
    # heads: mask Linear (512 -> 56*56) and the score Linears
    mask_lin = dm["maskBranch"]["modules"][0]["modules"][0]
    np.testing.assert_array_equal(model.get_layer("mask_fc").get_weights()[0], mask_lin["weight"].T)
    np.testing.assert_array_equal(model.get_layer("score").get_weights()[1], dm["scoreBranch"]["modules"][4]["bias"])
    np.testing.assert_array_equal(model.get_layer("score_fc1").get_weights()[0],
                                  dm["scoreBranch"]["modules"][1]["weight"].T)


def test_deepmask_affine_and_folded_bias_compute_torch(deepmask_pair):
    model, obj = deepmask_pair
    trunk = obj["model"]["trunk"]["modules"]
    x = np.random.default_rng(5).uniform(0, 255, (1, 192, 192, 3)).astype(np.float32)
    conv = _sub(model, None, "conv1")(x).numpy()               # kseg conv1 has no bias
    bn = _sub(model, None, "conv1_bn")(x).numpy()
    b = trunk[0]["modules"][1]["bias"]
    p = trunk[1]
    want = (conv + b - p["running_mean"]) / np.sqrt(p["running_var"] + 1e-5) * p["weight"] + p["bias"]
    np.testing.assert_allclose(bn, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    # ConstAffine: y = a x + b exactly (BN with mean 0, var 1 - eps)
    pre = _sub(model, None, "layer1_0_conv1")(x).numpy()
    post = _sub(model, None, "layer1_0_conv1_bn")(x).numpy()
    aff = trunk[4]["modules"][0]["modules"][0]["modules"][0]["modules"][1]
    np.testing.assert_allclose(post, pre * aff["a"].reshape(-1) + aff["b"].reshape(-1), rtol=1e-5, atol=1e-5)


def test_deepmask_trunk_fc_reads_torch_chw_flatten(deepmask_pair):
    """Torch's View flattens (C, H, W); the kseg Dense after Flatten must give the same numbers."""
    model, obj = deepmask_pair
    x = np.random.default_rng(6).uniform(0, 255, (1, 192, 192, 3)).astype(np.float32)
    feat = _sub(model, None, "trunk_conv")(x).numpy()[0]      # (10, 10, C) HWC
    got = _sub(model, None, "trunk_fc")(x).numpy()[0]
    lin = obj["model"]["trunk"]["modules"][-1]
    want = lin["weight"] @ feat.transpose(2, 0, 1).reshape(-1) + lin["bias"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_sharpmask_refinement_order_and_refine0_view(tmp_path):
    g = _Gen(1)
    f_size, km, ks = 10, 16, 16
    dmf = _deepmask_file(g)
    dm = dmf["model"]
    refs = {0: T("nn.Sequential", {"modules": [g.linear(512, f_size * f_size * km), T("nn.View", {})]})}
    skips = ((_w(1024), _w(64), 0), (_w(512), _w(64), -2), (_w(256), _w(64), -4), (_w(64), _w(32), -8))
    for i, (nhu1, nhu2, crop) in enumerate(skips, start=1):
        n_s, n_k = ks // 2 ** (i - 1), km // 2 ** (i - 1)
        h = [T("nn.SpatialZeroPadding", {})] if crop else []
        h += [T("nn.SpatialSymmetricPadding", {}), g.conv(nhu1, nhu2, 3), T("cudnn.ReLU", {}),
              T("nn.SpatialSymmetricPadding", {}), g.conv(nhu2, n_s, 3), T("cudnn.ReLU", {}),
              T("nn.SpatialSymmetricPadding", {}), g.conv(n_s, n_s // 2, 3)]
        v = [T("nn.SpatialSymmetricPadding", {}), g.conv(n_k, n_k, 3), T("cudnn.ReLU", {}),
             T("nn.SpatialSymmetricPadding", {}), g.conv(n_k, n_k // 2, 3)]
        par = T("nn.ParallelTable", {"modules": [T("nn.Sequential", {"modules": h}),
                                                 T("nn.Sequential", {"modules": v})]})
        refs[i] = T("nn.Sequential", {"modules": [par, T("nn.CAddTable", {}), T("cudnn.ReLU", {}),
                                                  T("nn.SpatialUpSamplingNearest", {})]})
    refs[4]["modules"] += [T("nn.SpatialSymmetricPadding", {}), g.conv(km // 16, 1, 3), T("nn.View", {})]
    sm = T("nn.SharpMask", {"trunk": dm["trunk"], "scoreBranch": dm["scoreBranch"],
                            "maskBranchDM": dm["maskBranch"], "refs": refs, "km": km, "ks": ks, "fSz": f_size,
                            "skpos": [8, 6, 5, 3]})
    path = write_t7(tmp_path / "sharpmask.t7", {"model": sm, "config": {"km": km, "ks": ks}})
    model = SharpMask(width_multiplier=M, depths=DEPTHS, km=km, ks=ks)
    torch_weights.load_t7(model, path)
    obj = read_t7(path)["model"]
    r3 = obj["refs"][3]["modules"][0]["modules"]
    np.testing.assert_array_equal(model.get_layer("refine3_h2").get_weights()[0],
                                  r3[0]["modules"][5]["weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(model.get_layer("refine3_v2").get_weights()[1], r3[1]["modules"][4]["bias"])
    np.testing.assert_array_equal(model.get_layer("refine_out").get_weights()[0],
                                  obj["refs"][4]["modules"][5]["weight"].transpose(2, 3, 1, 0))
    # refine0: Torch views the Linear's output as (km, 10, 10); kseg reshapes to (10, 10, km)
    x = np.random.default_rng(7).uniform(0, 255, (1, 192, 192, 3)).astype(np.float32)
    vec = _sub(model, None, "trunk_fc")(x).numpy()[0]
    got = _sub(model, None, "refine0_reshape")(x).numpy()[0]
    lin = obj["refs"][0]["modules"][0]
    want = (lin["weight"] @ vec + lin["bias"]).reshape(km, f_size, f_size).transpose(1, 2, 0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def _vgg_features(g):
    """Ross Girshick's VGG16 `features` as multipathnet loads it: 30 modules (conv, ReLU, pool)."""
    mods, cin = [], 3
    for b, n in enumerate((2, 2, 3, 3, 3), start=1):
        for i in range(n):
            c = _w((64, 128, 256, 512, 512)[b - 1])
            mods += [g.conv(cin, c, 3, cls="nn.SpatialConvolutionMM"), T("nn.ReLU", {})]
            cin = c
        if b < 5:
            mods.append(T("nn.SpatialMaxPooling", {}))
    return mods


def test_fast_rcnn_vgg16_layout(tmp_path):
    g = _Gen(2)
    feats = _vgg_features(g)
    for m in feats:   # SpatialConvolutionMM may hold (out, in*kh*kw) weights
        if "weight" in m:
            w = m["weight"].array
            m["weight"] = TorchTensor(w.reshape(w.shape[0], -1), "torch.CudaTensor")
    fc = 16
    top = T("nn.Sequential", {"modules": [g.linear(_w(512) * 49, fc), T("nn.ReLU", {}), T("nn.Dropout", {}),
                                          g.linear(fc, fc), T("nn.ReLU", {}), T("nn.Dropout", {})]})
    heads = T("nn.ConcatTable", {"modules": [g.linear(fc, 5), g.linear(fc, 20)]})
    data_parallel = T("nn.DataParallelTable", {"modules": [T("nn.Sequential", {"modules": feats}),
                                                           T("nn.Sequential", {"modules": feats})]})
    net = T("nn.Sequential", {"modules": [
        T("nn.ParallelTable", {"modules": [data_parallel, T("nn.Identity", {})]}),
        T("inn.ROIPooling", {}), T("nn.View", {}), top, heads]})
    path = write_t7(tmp_path / "vgg16_fast_rcnn.t7", net)
    model = FastRCNN(num_classes=5, fc_units=fc, width_multiplier=M, num_rois=2)
    torch_weights.load_t7(model, path)
    w = feats[2]["weight"].array.reshape(_w(64), _w(64), 3, 3)
    np.testing.assert_array_equal(model.get_layer("conv1_2").get_weights()[0], w.transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(model.get_layer("cls_score").get_weights()[0], heads["modules"][0]["weight"].array.T)
    np.testing.assert_array_equal(model.get_layer("bbox_pred").get_weights()[1], heads["modules"][1]["bias"].array)
    # fc6 columns permuted from Torch's (C, 7, 7) flatten to Keras' (7, 7, C)
    k = model.get_layer("fc6_r1").get_weights()[0]
    tw = top["modules"][0]["weight"].array            # (fc, C*49)
    c = _w(512)
    np.testing.assert_array_equal(k.reshape(7, 7, c, fc), tw.reshape(fc, c, 7, 7).transpose(2, 3, 1, 0))


def test_multipathnet_encoder_from_imagenet_vgg(tmp_path):
    g = _Gen(3)
    feats = _vgg_features(g)
    fc = 16
    top = T("nn.Sequential", {"modules": [g.linear(_w(512) * 49, fc), T("nn.ReLU", {}), T("nn.Dropout", {}),
                                          g.linear(fc, fc), T("nn.ReLU", {}), T("nn.Dropout", {}),
                                          g.linear(fc, 1000)]})
    path = write_t7(tmp_path / "imagenet_pretrained_vgg.t7",
                    {"features": T("nn.Sequential", {"modules": feats}), "top": top})
    model = MultiPathNet(num_classes=5, fc_units=fc, width_multiplier=M, num_rois=2)
    mix_before = model.get_layer("conv_mix_r2").get_weights()[0].copy()
    torch_weights.load_t7(model, path)
    np.testing.assert_array_equal(model.get_layer("conv5_3").get_weights()[0],
                                  feats[-2]["weight"].array.transpose(2, 3, 1, 0))
    for t in ("r1", "r2", "r3", "r4", "box"):
        np.testing.assert_array_equal(model.get_layer(f"fc7_{t}").get_weights()[0], top["modules"][3]["weight"].array.T)
    np.testing.assert_array_equal(model.get_layer("fc6_r4").get_weights()[0], model.get_layer("fc6_r1").get_weights()[0])
    np.testing.assert_array_equal(model.get_layer("conv_mix_r2").get_weights()[0], mix_before)   # not in the file


def test_mismatches_are_listed(tmp_path):
    g = _Gen(4)
    obj = _deepmask_file(g)
    obj["model"]["scoreBranch"]["modules"][1] = g.linear(512, 77)     # wrong width
    del obj["model"]["maskBranch"]["modules"][0]["modules"][0]         # a missing module
    path = write_t7(tmp_path / "bad_deepmask.t7", obj)
    model = DeepMask(trunk="resnet50", width_multiplier=M, depths=DEPTHS)
    before = model.get_layer("conv1").get_weights()[0].copy()
    with pytest.raises(ConversionError, match=r"bad_deepmask.t7.*weighted Torch modules for .* kseg layers"):
        torch_weights.load_t7(model, path)
    np.testing.assert_array_equal(model.get_layer("conv1").get_weights()[0], before)   # nothing set
    with pytest.raises(ConversionError, match="ResNet-50 trunk only"):
        torch_weights.load_t7(DeepMask(trunk="vgg", width_multiplier=M, input_size=64), path)


# ------------------------------------------------------------------------------- kseg convert CLI

def test_cli_convert_t7_to_weights_h5(tmp_path, capsys):
    from kseg import cli

    g = _Gen(8)
    src = write_t7(tmp_path / "model.t7", _deepmask_file(g))
    out = tmp_path / "out" / "deepmask_resnet50.weights.h5"
    args = ["convert", "--model", "deepmask_resnet50", str(src), "--out", str(out),
            "--model-arg", "width_multiplier=0.125", "--model-arg", "depths=(1, 2, 1)"]
    assert cli.main(args) == 0
    assert out.is_file() and sorted(p.name for p in out.parent.iterdir()) == [out.name]   # no temp file left
    model = DeepMask(trunk="resnet50", width_multiplier=M, depths=DEPTHS)
    model.load_weights(str(out))
    want = read_t7(src)["model"]["maskBranch"]["modules"][0]["modules"][0]["weight"]
    np.testing.assert_array_equal(model.get_layer("mask_fc").get_weights()[0], want.T)

    # a file that does not fit: exit 2, one line naming the file, the old output untouched
    bad = _deepmask_file(_Gen(9))
    bad["model"]["scoreBranch"]["modules"][4] = g.linear(1024, 3)
    bad_path = write_t7(tmp_path / "bad.t7", bad)
    before = out.read_bytes()
    capsys.readouterr()
    args[3], args[5] = str(bad_path), str(out)
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.t7" in err and "score" in err
    assert out.read_bytes() == before and sorted(p.name for p in out.parent.iterdir()) == [out.name]
    assert cli.main(["convert", "--model", "deepmask_resnet50", str(tmp_path / "none.t7"),
                     "--out", str(tmp_path / "x.weights.h5")]) == 2
    assert "none.t7" in capsys.readouterr().err
