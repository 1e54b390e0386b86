"""Proof against Caffe *with the authors' preprocessing*: a model loaded with a preset's
transform, fed an RGB image in [0, 255], equals OpenCV's Caffe output on the blob the authors'
inference code makes from that image (BGR, minus their mean, / std, * scale).

``test_opencv_caffe.py`` feeds both sides kseg's own preprocessed tensor; here OpenCV gets the
authors' blob computed independently in numpy from the preset's fields, and kseg gets the raw RGB
image, so the ``preprocess`` layer is part of what is compared.
"""

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from kseg.convert.caffe import write_caffemodel  # noqa: E402
from kseg.layers.normalization import ImageNormalization  # noqa: E402
from kseg.models import registry  # noqa: E402
from kseg.models.weights import load_weights, set_preprocessing  # noqa: E402
from tests.convert import inverse, prototxts  # noqa: E402
from tests.convert.test_opencv_caffe import CASES, FAST_WIDTH, FULL_IS_FAST, TOLERANCE, _nchw, _output_model, \
    _width_kwargs  # noqa: E402


# The preset whose architecture the test case's prototxt is (default: the card's first).
PRESET = {"dilation8": "camvid", "segnet_basic": "camvid_caffe"}  # the authors' files


def authors_blob(rgb, preset):
    """What the authors' code feeds the net, from the preset's fields alone (NHWC)."""
    x = rgb[..., ::-1] if preset.channel_order == "BGR" else rgb
    x = (x * preset.input_scale - np.asarray(preset.mean, np.float64)) / np.asarray(preset.std, np.float64)
    return x.astype(np.float32)


@pytest.mark.parametrize("case", ["fcn8s", "segnet", "segnet_basic", "deeplab_v1", "deeplab_v2_vgg16", "parsenet",
                                  "crf_as_rnn", "dilation8"])
def test_preset_preprocessing_agrees_with_opencv(case, tmp_path):
    model_name, generator, k_out, cv_out, _, rename, hw, extra = CASES[case]
    card = registry.get(model_name)
    preset = next(p for p in card.presets if p.name == PRESET.get(case, p.name))
    width = 1.0 if case in FULL_IS_FAST else FAST_WIDTH
    kwargs = {**_width_kwargs(card.builder, width), **extra, "input_shape": (*hw, 3)}
    gen_kwargs = {"width": width, "input_hw": hw}
    if "num_classes" in extra:
        gen_kwargs["num_classes"] = extra["num_classes"]
    if model_name in ("deeplab_v1", "deeplab_v2_vgg16", "parsenet"):
        kwargs["fc_width"] = gen_kwargs["fc_width"] = prototxts.scale(1024, width)
    if model_name == "dilation8":
        kwargs["dropout"] = 0.5
    model = inverse.randomize(card.build(**kwargs), 0)
    if model_name == "parsenet":
        gen_kwargs["context_hw"] = tuple(model.get_layer("fc7").output.shape[1:3])
    caffemodel = str(tmp_path / f"{case}.caffemodel")
    write_caffemodel(caffemodel, inverse.caffe_layers(model, rename=rename, bn="BN"))

    image = np.random.default_rng(1).uniform(0, 255, (1, *hw, 3)).astype(np.float32)
    blob = authors_blob(image.astype(np.float64), preset)
    if model_name == "dilation8":
        # fyu/dilation@6f6a17a : predict.py subtracts the mean, then pads by reflection (186 + to the
        # stride); the padding (kseg's reflect_pad layer) is checked by test_opencv_caffe.py.
        blob = np.asarray(model.get_layer("reflect_pad")(blob))
        gen_kwargs["input_hw"] = blob.shape[1:3]
    reference = prototxts.run_opencv(generator(**gen_kwargs), str(tmp_path), caffemodel, _nchw(blob),
                                     [cv_out])[cv_out]
    del model
    span = float(reference.max() - reference.min())
    assert span > 0

    fresh = card.build(**kwargs)
    load_weights(fresh, caffemodel, card=card, preprocessing=preset.name)
    ours = _nchw(_output_model(fresh, k_out)(image, training=False))
    rel = float(np.abs(ours - reference).max()) / span
    # The builder's generic transform is not the authors' (FCN/DeepLab mean, SegNet raw BGR): it must differ
    # measurably (so the comparison above would catch a preset transform that is not applied).
    default = card.build(weights=caffemodel, **kwargs)
    rel_default = float(np.abs(_nchw(_output_model(default, k_out)(image, training=False)) - reference).max()) / span
    print(f"\nOPENCV-PREPROCESSED {case} preset={preset.name} width={width:g} input={hw[0]}x{hw[1]} "
          f"max|diff|/range={rel:.2e} (builder default transform: {rel_default:.2e}) range={span:.3g}")
    assert rel <= TOLERANCE
    assert rel_default > 3 * TOLERANCE  # ParseNet: (104, 117, 123) is near the Keras mean: 6.3e-4


def test_set_preprocessing_round_trips_through_keras_file(tmp_path):
    """The preset's transform is configuration: a saved .keras model reloads with it (safe_mode)."""
    import keras

    card = registry.get("fcn8s")
    model = inverse.randomize(card.build(width_multiplier=FAST_WIDTH, input_shape=(37, 45, 3)), 3)
    image = np.random.default_rng(2).uniform(0, 255, (1, 37, 45, 3)).astype(np.float32)
    before = np.asarray(model(image))
    set_preprocessing(model, "voc", card=card)
    after = np.asarray(model(image))
    assert not np.allclose(before, after)
    path = tmp_path / "fcn8s.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    layer = loaded.get_layer("preprocess")
    assert layer.mode == "custom" and layer.channel_order == "bgr"
    assert layer.mean == card.presets[0].mean
    np.testing.assert_allclose(np.asarray(loaded(image)), after, rtol=1e-5, atol=1e-5)


def test_set_preprocessing_rejects_unknown():
    model = registry.get("segnet_basic").build(width_multiplier=0.125, input_shape=(37, 45, 3))
    with pytest.raises(ValueError, match="unknown preprocessing 'nope'"):
        set_preprocessing(model, "nope")
    with pytest.raises(ValueError, match="3 values"):
        set_preprocessing(model, {"mean": (1.0, 2.0)})
    assert isinstance(model.get_layer("preprocess"), ImageNormalization)
    assert model.get_layer("preprocess").mode == "none"
