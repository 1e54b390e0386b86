"""Proof against Caffe: a converted kseg model computes what the authors' Caffe net computes.

For each Caffe-released system: a kseg model gets random weights; they are written as a real
``.caffemodel`` in the authors' layout (``tests/convert/inverse.py`` + ``write_caffemodel``);
OpenCV's dnn module (an independent implementation of Caffe's layers) runs the authors' deploy
net (``tests/convert/prototxts.py``) on that file; the converter (``read_caffemodel`` +
the builder's ``weights=path``) loads the same file into a *fresh* kseg model; the two
outputs must agree to 1e-4 of the output range, at a small odd input size.

Both sides are fed the same preprocessed image (kseg's ``preprocess`` output, and for Dilation the
reflection-padded image): this tests the conversion and the architecture, not the mean values (the
authors' means are on the presets, ``kseg/models/presets.py``).

The compared tensors: the net's output (FCN, SegNet, SegNet-Basic, DeconvNet); CRF-as-RNN's
``coarse`` (the FCN-8s scores before the CRF, which OpenCV lacks); DeepLab's stride-8 ``fc8``
(the authors' Interp / CRF run outside their test net); Dilation8's context-module output.

Full-width cases are ``slow`` (VGG16 with 4096-wide fc6/fc7: ~0.5 GB caffemodels); every system
also has a fast case whose generated prototxt and kseg model are scaled by the same width.
"""

import inspect

import keras
import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from kseg.convert.caffe import write_caffemodel  # noqa: E402
from kseg.models import registry  # noqa: E402
from tests.convert import inverse, prototxts  # noqa: E402

TOLERANCE = 1e-4  # of the output range

FAST_WIDTH = 1.0 / 16

# name, registry name, generator, kseg output layer, OpenCV output blob, kseg layer feeding OpenCV,
# rename {kseg: caffe}, input (H, W), extra builder kwargs, generator kwargs
CASES = {
    "fcn32s": ("fcn32s", lambda **k: prototxts.fcn("fcn32s", **k), None, "score", "preprocess", {}, (37, 45), {}),
    "fcn16s": ("fcn16s", lambda **k: prototxts.fcn("fcn16s", **k), None, "score", "preprocess", {}, (37, 45), {}),
    "fcn8s": ("fcn8s", lambda **k: prototxts.fcn("fcn8s", **k), None, "score", "preprocess", {}, (37, 45), {}),
    "fcn8s_atonce": ("fcn8s_atonce", lambda **k: prototxts.fcn("fcn8s_atonce", **k), None, "score", "preprocess",
                     {}, (37, 45), {}),
    "crf_as_rnn": ("crf_as_rnn", prototxts.crf_as_rnn, "coarse", "coarse", "preprocess", {}, (37, 45), {}),
    "segnet_basic": ("segnet_basic", prototxts.segnet_basic, None, "dense_softmax_inner_prod", "preprocess",
                     {"conv_classifier": "dense_softmax_inner_prod"}, (37, 45), {"num_classes": 11}),
    "segnet": ("segnet", prototxts.segnet, None, "conv1_1_D", "preprocess", {}, (37, 45), {"num_classes": 12}),
    "deconvnet": ("deconvnet", prototxts.deconvnet, None, "seg-score", "preprocess", {}, (197, 203), {}),
    "deeplab_v1": ("deeplab_v1", prototxts.deeplab_v1, "fc8", "fc8_voc12", "preprocess", {"fc8": "fc8_voc12"},
                   (37, 45), {}),
    "deeplab_v2_vgg16": ("deeplab_v2_vgg16", prototxts.deeplab_v2_vgg16, "fc8", "fc8_voc12", "preprocess",
                         {f"fc8_{k}": f"fc8_voc12_{k}" for k in range(1, 5)}, (37, 45), {}),
    "deeplab_v2_resnet101": ("deeplab_v2_resnet101", prototxts.deeplab_v2_resnet101, "fc1_voc12", "fc1_voc12",
                             "preprocess", {}, (37, 45), {}),
    "parsenet": ("parsenet", prototxts.parsenet, "fc8", "fc8", "preprocess", {}, (37, 45), {}),
    "dilation8": ("dilation8", prototxts.dilation8_camvid, "context", "ctx_final", "reflect_pad", {}, (17, 21),
                  {"num_classes": 11}),
}

# Files written in the old V1 format (NetParameter.layers, type enums, num/channels/height/width blob
# shapes), as the authors' Caffe saved them: HyeonwooNoh/caffe@d9e8494 src/caffe/net.cpp ToProto adds
# `layers`, its caffe.proto has BN = 43, DECONVOLUTION = 39 and BlobProto without `shape`.
V1_FILES = {"deconvnet"}

# Stock Caffe BatchNorm + Scale (MSRA ResNet) instead of caffe-segnet's folded BN.
BN_KIND = {"deeplab_v2_resnet101": "BatchNorm"}

# Full width is cheap enough for the default run here (small maps, few parameters).
FULL_IS_FAST = {"segnet_basic"}


def _width_kwargs(builder, width):
    params = inspect.signature(builder).parameters
    if width == 1.0:
        return {}
    for name in ("width_multiplier", "width"):
        if name in params:
            return {name: width}
    return None


def _nchw(x):
    return np.ascontiguousarray(np.transpose(np.asarray(x), (0, 3, 1, 2)))


def _output_model(model, layer_name):
    return model if layer_name is None else keras.Model(model.inputs, model.get_layer(layer_name).output)


def agreement(case, width, tmp_path, seed=0):
    """max |kseg - OpenCV| / (OpenCV output range) for `case` at channel `width`; also returns the range."""
    model_name, generator, k_out, cv_out, cv_in, rename, hw, extra = CASES[case]
    card = registry.get(model_name)
    kwargs = _width_kwargs(card.builder, width)
    if kwargs is None:
        pytest.skip(f"{model_name} has no width option")
    kwargs.update(extra)
    if model_name in ("deeplab_v1", "deeplab_v2_vgg16", "parsenet") and width != 1.0:
        kwargs["fc_width"] = prototxts.scale(1024, width)
    if model_name == "dilation8":
        kwargs.setdefault("dropout", 0.5)
    kwargs["input_shape"] = (*hw, 3)
    model = inverse.randomize(card.build(**kwargs), seed)
    gen_kwargs = {"width": width}
    if "num_classes" in extra:
        gen_kwargs["num_classes"] = extra["num_classes"]
    if model_name in ("deeplab_v1", "deeplab_v2_vgg16", "parsenet"):
        gen_kwargs["fc_width"] = kwargs.get("fc_width", 1024)

    image = np.random.default_rng(seed + 1).uniform(0, 255, (1, *hw, 3)).astype(np.float32)
    feed = _nchw(keras.Model(model.inputs, model.get_layer(cv_in).output)(image))
    if model_name == "parsenet":
        gen_kwargs["context_hw"] = tuple(model.get_layer("fc7").output.shape[1:3])
    net = generator(input_hw=feed.shape[2:], **gen_kwargs)

    caffemodel = str(tmp_path / f"{case}.caffemodel")
    write_caffemodel(caffemodel, inverse.caffe_layers(model, rename=rename, bn=BN_KIND.get(model_name, "BN"),
                                                      bn_scale_name=lambda n: "scale" + n[2:]),
                     v1=model_name in V1_FILES)
    reference = prototxts.run_opencv(net, str(tmp_path), caffemodel, feed, [cv_out])[cv_out]
    span = float(reference.max() - reference.min())
    assert span > 0, "degenerate output (all equal): the comparison would prove nothing"
    # The randomised model itself against OpenCV: the architecture and the written layout.
    direct = _nchw(_output_model(model, k_out)(image, training=False))
    assert direct.shape == reference.shape, (direct.shape, reference.shape)
    print(f"\nOPENCV-DIRECT {case} width={width:g} max|diff|/range={np.abs(direct - reference).max() / span:.2e}")
    del model
    # A fresh model built with weights=path (read_caffemodel + the card's mapping): what a user gets.
    needed = {caffe: ours for ours, caffe in rename.items()}
    have = dict(getattr(card, "caffe_rename", None) or {})
    missing = {c: k for c, k in needed.items() if have.get(c) != k}
    if missing:
        pytest.xfail(f"{model_name}: the card's caffe_rename lacks the authors' names {missing} (the architecture "
                     f"agrees with OpenCV: see OPENCV-DIRECT above)")
    fresh = card.build(weights=caffemodel, **kwargs)
    ours = _nchw(_output_model(fresh, k_out)(image, training=False))
    assert ours.shape == reference.shape, (ours.shape, reference.shape)
    return float(np.abs(ours - reference).max()) / span, span


def _report(case, width, rel, span, hw):
    print(f"\nOPENCV-AGREEMENT {case} width={width:g} input={hw[0]}x{hw[1]} max|diff|/range={rel:.2e} range={span:.3g}")


@pytest.mark.parametrize("case", sorted(CASES))
def test_agrees_with_opencv_reduced_width(case, tmp_path):
    width = 1.0 if case in FULL_IS_FAST else FAST_WIDTH
    rel, span = agreement(case, width, tmp_path)
    _report(case, width, rel, span, CASES[case][6])
    assert rel <= TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(set(CASES) - FULL_IS_FAST))
def test_agrees_with_opencv_full_width(case, tmp_path):
    rel, span = agreement(case, 1.0, tmp_path)
    _report(case, 1.0, rel, span, CASES[case][6])
    assert rel <= TOLERANCE


def test_unpool_switches_follow_caffe():
    """The numpy switches of run_opencv: first maximum per window (ceil mode), scattered back."""
    x = np.array([[[[1, 3, 2], [3, 0, 5], [4, 4, 1]]]], np.float32)
    idx = prototxts._switches(x, 2, 2, (2, 2))
    # windows: rows 0-1 x cols 0-1 -> 3 first at (0,1); cols 2 -> 5 at (1,2); row 2 cols 0-1 -> 4 at (2,0); (2,2)
    assert idx[0, 0].tolist() == [[1, 5], [6, 8]]
    up = prototxts._unpool(np.array([[[[10, 20], [30, 40]]]], np.float32), idx, (3, 3))
    assert up[0, 0].tolist() == [[0, 10, 0], [0, 0, 20], [30, 0, 40]]


def test_prototxt_is_read_by_opencv(tmp_path):
    """The generated text is a valid Caffe net for OpenCV (FCN-8s, reduced), with the authors' names and crops."""
    text = prototxts.fcn("fcn8s", width=FAST_WIDTH, input_hw=(37, 45)).prototxt()
    assert 'name: "score_pool4c"' in text and "offset: 5" in text and "offset: 31" in text
    path = tmp_path / "fcn8s.prototxt"
    path.write_text(text)
    names = cv2.dnn.readNetFromCaffe(str(path)).getLayerNames()
    assert "upscore8" in names and "fuse_pool3" in names
