"""The one builder signature (README, "Builder signature"), over the whole registry.

Every registered builder reads ``Name(num_classes=<paper's>, input_shape=(None, None, 3), weights=None,
encoder_weights=None, width_multiplier=1.0, input_tensor=None, name=<registry name>, **options)``.
Parametrised over ``kseg.models.list()``: a model registered later is covered without editing this
file (give it a TINY entry if its defaults are large).
"""

import inspect
import warnings

import keras
import numpy as np
import pytest

import kseg
from kseg import export
from kseg.precision import precision_scope
from kseg.convert import ConversionError
from kseg.models import weights as kweights

SIGNATURE = ("num_classes", "input_shape", "weights", "encoder_weights", "width_multiplier", "input_tensor", "name")
SIZE = (32, 40)

# Options that shrink a model (its parameters dominate the cost of building), when the builder has them.
SHRINK = {"width_multiplier": 1 / 16, "fc_width": 16, "fc_units": 16, "edge_channels": 4, "feature_dim": 16,
          "context_units": 4, "renet_units": 4, "upsample_filters": 4, "num_rois": 2, "km": 16, "ks": 16}
TINY = {
    "deeplab_v2_resnet101": {"depths": (1, 1, 1, 1)},
    "deepmask": {"input_size": 32, "mask_size": 8, "output_size": 16, "score_hidden": (8, 8)},
    "deepmask_resnet50": {"input_size": 32, "context": 16, "depths": (1, 1, 1), "mask_size": 8, "output_size": 16,
                          "score_hidden": (8,)},
    "sharpmask": {"input_size": 32, "context": 16, "depths": (1, 1, 1), "score_hidden": (8,)},
    "multipathnet": {"pool_size": 2},
    "ion": {"pool_size": 2},
}
# Sizes the models that cannot take any size are built at here (the card says why).
STATIC = {"renet_classifier": (32, 32)}
MIN_SIDE = {"deconvnet": 193, **{f"vgg_{c}": 224 for c in ("a", "a_lrn", "b", "c", "d", "e")}}


def card(name):
    return kseg.models.get(name)


def takes_any_size(name):
    return card(name).input_sizes == "any" or name in MIN_SIDE


def tiny_kwargs(name, channels=3):
    params = inspect.signature(card(name).builder).parameters
    kwargs = {}
    for key, value in SHRINK.items():
        if key in params:
            default = params[key].default
            kwargs[key] = tuple(value for _ in default) if isinstance(default, (tuple, list)) else value
    kwargs.update(TINY.get(name, {}))
    if name in STATIC:
        kwargs["input_shape"] = (*STATIC[name], channels)
    elif name in MIN_SIDE:
        kwargs["input_shape"] = (None, None, channels)
    elif channels != 3 and not name.startswith(("deepmask", "sharpmask")):
        kwargs["input_shape"] = (None, None, channels)
    elif channels != 3:
        window = kwargs["input_size"] + 2 * kwargs.get("context", 0)
        kwargs["input_shape"] = (window, window, channels)
    if card(name).task == "semantic":
        kwargs.setdefault("num_classes", 3)
    return kwargs


def feed(model, hw=SIZE, channels=None, seed=0):
    """Images in [0, 255] (and valid ROIs for detectors) for `model` at `hw` where its size is free."""
    rng = np.random.default_rng(seed)
    inputs = model.input if isinstance(model.input, dict) else {"image": model.input}
    image = inputs["image"]
    h, w = (s if s is not None else d for s, d in zip(image.shape[1:3], hw))
    c = image.shape[-1] if channels is None else channels
    out = {"image": rng.uniform(0, 255, (1, h, w, c)).astype("float32")}
    if "rois" in inputs:
        r = inputs["rois"].shape[1]
        y1, x1 = rng.uniform(0, h / 2, (1, r)), rng.uniform(0, w / 2, (1, r))
        out["rois"] = np.stack([y1, x1, y1 + h / 3, x1 + w / 3], -1).astype("float32")
        return out
    return out["image"]


def outputs_of(model, x):
    out = model(x, training=False)
    out = [out[k] for k in sorted(out)] if isinstance(out, dict) else [out]
    return [np.asarray(keras.ops.convert_to_numpy(o)) for o in out]


NAMES = kseg.models.list()


def test_registry_is_complete():
    assert len(NAMES) >= 28
    for config in ("vgg_a", "vgg_a_lrn", "vgg_b", "vgg_c", "vgg_d", "vgg_e"):
        assert config in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_one_signature(name):
    c = card(name)
    params = inspect.signature(c.builder).parameters
    assert tuple(params)[: len(SIGNATURE)] == SIGNATURE, f"{name}: {tuple(params)}"
    assert params["num_classes"].default == c.default_num_classes
    assert params["weights"].default is None and params["encoder_weights"].default is None
    assert params["input_tensor"].default is None
    assert isinstance(params["width_multiplier"].default, float) and params["width_multiplier"].default == 1.0
    assert params["name"].default == name
    assert "width" not in params
    if takes_any_size(name):
        assert params["input_shape"].default == (None, None, 3), name
    else:  # the card says which sizes work and why
        assert len(c.input_sizes) > 20, c.input_sizes


@pytest.mark.parametrize("name", NAMES)
def test_build_any_size_weights_round_trip_and_float32_logits(name, tmp_path):
    """One tiny build per model under mixed_bfloat16: logits float32, any size where allowed, and the
    weights round trip through weights=<.weights.h5>."""
    with precision_scope("mixed_bfloat16"):
        model = card(name).build(**tiny_kwargs(name))
    assert model.get_layer("preprocess").compute_dtype == "bfloat16"
    for out in model.outputs:
        assert out.dtype == "float32", (name, out.dtype)
    image = model.input["image"] if isinstance(model.input, dict) else model.input
    if card(name).input_sizes == "any":
        assert tuple(image.shape[1:3]) == (None, None), name
    rng = np.random.default_rng(0)
    for v in model.weights:
        if "moving_variance" in v.path:
            v.assign(rng.uniform(0.5, 2.0, v.shape).astype("float32"))
        else:
            v.assign(rng.normal(0, 0.05, v.shape).astype("float32"))
    path = tmp_path / f"{name}.weights.h5"
    model.save_weights(path)
    again = card(name).build(**tiny_kwargs(name), weights=str(path))
    for a, b in zip(model.weights, again.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    if card(name).task == "semantic" and name not in STATIC:
        hw_list = ((33, 41), (26, 29)) if name not in MIN_SIDE else ((MIN_SIDE[name], MIN_SIDE[name] + 3),)
        for hw in hw_list:
            (y,) = outputs_of(again, feed(again, hw))
            assert y.shape == (1, *hw, 3) and y.dtype == np.float32 and np.isfinite(y).all()


@pytest.mark.parametrize("channels", [1, 4])
@pytest.mark.parametrize("name", NAMES)
def test_other_channel_counts_build_without_pretrained_weights(name, channels):
    if channels == 1 and name not in ("segnet_basic", "fcn8s", "deeplab_v1", "dilation8", "deepmask_resnet50",
                                      "multipathnet", "vgg_a_lrn", "crf_as_rnn"):
        pytest.skip("1 channel: a representative subset (every preprocessing mode); 4 channels: every model")
    model = card(name).build(**tiny_kwargs(name, channels))
    x = feed(model, SIZE if name not in MIN_SIDE else (MIN_SIDE[name],) * 2)
    for out in outputs_of(model, x):
        assert np.isfinite(out).all()
    with pytest.raises(ValueError, match="3 channels|no pretrained encoder"):
        card(name).build(**tiny_kwargs(name, channels), encoder_weights="imagenet")


def test_fixed_size_models_say_which_sizes_work():
    with pytest.raises(ValueError, match="static input size.*domain transform"):
        kseg.DTEdgeNet(input_shape=(None, None, 3), dt_method="scan")
    with pytest.raises(ValueError, match="sizes that work"):
        kseg.ReNetClassifier(input_shape=(None, None, 3))
    with pytest.raises(ValueError, match="192x192"):
        kseg.DeepMaskResNet50(input_shape=(160, 160, 3))
    with pytest.raises(ValueError, match="sides >= 193"):
        kseg.DeconvNet(input_shape=(100, 300, 3))
    with pytest.raises(ValueError, match="sides >= 224"):
        kseg.VGGD(input_shape=(200, 200, 3))
    with pytest.raises(ValueError, match="patch"):
        kseg.ReSeg(input_shape=(None, None, 3), patch_sizes=((2, 2), (1, 1)), upsample_filters=(4, 4, 4))


def test_fcn8s_fixed_size_model_and_other_sizes():
    """The issue's report: FCN8s(input_shape=(160, 192, 3)).predict(a 333x417 image)."""
    image = np.random.default_rng(1).uniform(0, 255, (1, 333, 417, 3)).astype("float32")
    anysize = kseg.FCN8s(width_multiplier=1 / 16)  # the default: any size
    assert anysize.predict(image, verbose=0).shape == (1, 333, 417, 21)
    fixed = kseg.FCN8s(input_shape=(160, 192, 3), width_multiplier=1 / 16)
    fixed.set_weights(anysize.get_weights())
    with pytest.raises(ValueError, match="160, 192"):  # Keras names the size the model takes
        fixed.predict(image, verbose=0)
    resized = export.at_input_size(fixed, 333, 417)  # the same weights at the other size
    np.testing.assert_allclose(resized.predict(image, verbose=0), anysize.predict(image, verbose=0), atol=1e-4)


def test_width_multiplier_is_one_float():
    assert kseg.SegNetBasic(width_multiplier=0.125).get_layer("conv1").filters == 8
    assert kseg.SegNet(width_multiplier=0.5).get_layer("conv5_3").filters == 256
    with pytest.warns(DeprecationWarning, match="width_multiplier"):
        old = kseg.SegNetBasic(width=8)  # the old integer channel count
    assert old.get_layer("conv1").filters == 8
    with pytest.warns(DeprecationWarning):
        assert kseg.FCN32s(width=0.25).get_layer("conv1_1").filters == 16
    for bad in (0, -1.0, True, "1"):
        with pytest.raises(ValueError, match="width_multiplier must be > 0"):
            kseg.SegNetBasic(width_multiplier=bad)


def test_weights_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.weights.h5"):
        kseg.SegNetBasic(weights=str(tmp_path / "missing.weights.h5"))
    with pytest.raises(ValueError, match="unknown weights 'cityscapes'.*presets: camvid"):
        kseg.SegNetBasic(weights="cityscapes")
    with pytest.raises(ValueError, match="encoder_weights='imagenet'"):
        kseg.FCN8s(weights="imagenet", width_multiplier=1 / 16)
    other = kseg.SegNetBasic(num_classes=5, width_multiplier=0.125)
    path = tmp_path / "other.weights.h5"
    other.save_weights(path)
    with pytest.raises(ConversionError, match="other.weights.h5"):
        kseg.SegNetBasic(num_classes=3, width_multiplier=0.125, weights=str(path))
    bad = tmp_path / "weights.npz"
    bad.write_bytes(b"x")
    with pytest.raises(ValueError, match="none of"):
        kseg.SegNetBasic(weights=str(bad))
    with pytest.raises(ValueError, match="no pretrained encoder"):
        kseg.SegNetBasic(encoder_weights="imagenet")


def test_keras_file_weights_copy_by_layer_name(tmp_path):
    src = kseg.SegNetBasic(num_classes=3, width_multiplier=0.125)
    src.get_layer("conv_classifier").bias.assign([1.0, 2.0, 3.0])
    path = export.save_keras(src, tmp_path / "m.keras")
    dst = kseg.SegNetBasic(num_classes=3, width_multiplier=0.125, weights=path)
    np.testing.assert_array_equal(np.asarray(dst.get_layer("conv_classifier").bias), [1, 2, 3])
    with pytest.raises(ConversionError, match="mismatched layers.*conv1"):
        kseg.SegNetBasic(num_classes=3, width_multiplier=0.25, weights=path)


def test_channels_first_is_a_clear_error():
    previous = keras.config.image_data_format()
    keras.config.set_image_data_format("channels_first")
    try:
        for name in ("segnet_basic", "fcn8s", "deepmask", "multipathnet", "vgg_a"):
            with pytest.raises(ValueError, match="channels_last"):
                card(name).build()
    finally:
        keras.config.set_image_data_format(previous)


def test_mixed_precision_logits_predict_float32():
    with precision_scope("mixed_bfloat16"):
        model = kseg.SegNetBasic(num_classes=3, width_multiplier=0.125)
    y = model.predict(np.zeros((1, 16, 24, 3), "float32"), verbose=0)
    assert y.dtype == np.float32 and model.layers[-1].dtype_policy.name == "float32"
    assert model.get_layer("conv1").compute_dtype == "bfloat16"


def test_ignore_class_is_the_one_name():
    assert kseg.losses.segmentation_loss(ignore_class=11).ignore_class == 11
    with pytest.warns(DeprecationWarning, match="ignore_class"):
        assert kseg.losses.segmentation_loss(ignore_label=11).ignore_class == 11
    assert "ignore_class" in inspect.signature(kseg.training.train).parameters
    assert "ignore_class" in inspect.signature(kseg.data.segmentation_dataset).parameters
    assert "ignore_class" in inspect.signature(kseg.metrics.MeanIoU).parameters
    from kseg.cli import build_parser

    args = build_parser().parse_args(["evaluate", "--model-path", "m.keras", "--data", "d", "--ignore-class", "3"])
    assert args.ignore_class == 3
    old = build_parser().parse_args(["evaluate", "--model-path", "m.keras", "--data", "d", "--ignore-label", "4"])
    assert old.ignore_class == 4


def test_export_at_another_size_than_the_training_crop(tmp_path):
    """`kseg export best.keras --format tflite --input-size H W` for a model built at another crop."""
    from kseg.cli import main

    keras.utils.set_random_seed(3)
    model = kseg.SegNetBasic(num_classes=3, input_shape=(32, 48, 3), width_multiplier=1 / 16)
    path = export.save_keras(model, tmp_path / "best.keras")
    out = tmp_path / "m.tflite"
    assert main(["export", path, "--format", "tflite", "--out", str(out), "--input-size", "36", "52"]) == 0
    x = np.random.default_rng(2).uniform(0, 255, (1, 36, 52, 3)).astype("float32")
    got = export.run_tflite(str(out), x)
    want = export.at_input_size(model, 36, 52).predict(x, verbose=0)
    assert got.shape == (1, 36, 52, 3)
    # float32 rounding grows with the logits' size (up to ~170 here): compare relative to it
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_kseg_list_shows_presets(capsys):
    from kseg.cli import main

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "presets" in out
    line = next(ln for ln in out.splitlines() if ln.startswith("segnet_basic "))
    assert "camvid" in line
    assert card("segnet_basic").summary_row()["presets"] == [p.name for p in card("segnet_basic").presets]


def test_weights_module_is_public():
    assert kseg.models.weights.load_weights is kweights.load_weights
