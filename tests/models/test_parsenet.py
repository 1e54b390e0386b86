import numpy as np
import pytest

import keras

import kseg
from kseg import export

TINY = dict(num_classes=5, input_shape=(33, 41, 3), width_multiplier=1 / 16, fc_width=32)


def conv(k, cin, cout):
    return k * k * cin * cout + cout


def largefov_trunk_params():
    """DeepLab-LargeFOV train.prototxt up to fc7: 13 VGG16 convs, fc6 3x3 (dilation 12) 1024, fc7 1x1 1024."""
    vgg = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
           (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
    return sum(conv(3, i, o) for i, o in vgg) + conv(3, 512, 1024) + conv(1, 1024, 1024)


def test_parameter_counts_against_the_paper():
    c = 21
    assert largefov_trunk_params() == 20_483_904
    # early fusion: two L2 normalisation scales of 1024 + fc8 on the 2048-d concatenation
    early = largefov_trunk_params() + 1024 + 1024 + conv(1, 2048, c)
    model = kseg.ParseNet(input_shape=(65, 65, 3))
    assert kseg.count_params(model) == early == 20_528_981
    assert kseg.models.get("parsenet").num_params == early
    late = largefov_trunk_params() + 1024 + 1024 + 2 * conv(1, 1024, c)
    assert kseg.count_params(kseg.ParseNet(input_shape=(65, 65, 3), fusion="late")) == late
    # without context it is DeepLab-LargeFOV
    base = kseg.ParseNet(input_shape=(65, 65, 3), global_context=False)
    assert kseg.count_params(base) == largefov_trunk_params() + conv(1, 1024, c) == 20_505_429


def test_global_context_branch_structure_and_scale_init():
    model = kseg.ParseNet(**TINY)
    assert model.output_shape == (None, 33, 41, 5)
    assert model.get_layer("pool6").output.shape == (None, 1, 1, 32)
    assert model.get_layer("fc7_concat").output.shape == (None, 5, 6, 64)
    for name in ("fc7_norm", "pool6_norm"):
        np.testing.assert_allclose(np.asarray(model.get_layer(name).gamma), 10.0)
    # the unpooled context is the same vector at every position
    probe = keras.Model(model.input, model.get_layer("pool6_unpool").output)
    x = np.random.default_rng(0).uniform(0, 255, (2, 33, 41, 3)).astype("float32")
    u = np.asarray(probe(x))
    np.testing.assert_allclose(u, np.broadcast_to(u[:, :1, :1], u.shape), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(u, axis=-1), 10.0, rtol=1e-4)


def test_global_context_changes_every_position_when_a_far_region_changes():
    model = kseg.ParseNet(**TINY)
    x = np.random.default_rng(1).uniform(0, 255, (1, 33, 41, 3)).astype("float32")
    x2 = x.copy()
    x2[:, :8, :8] = 255.0 - x2[:, :8, :8]  # change the top-left corner only
    far = (slice(None), slice(28, None), slice(36, None))  # bottom-right
    assert np.abs(np.asarray(model(x2))[far] - np.asarray(model(x))[far]).max() > 1e-6


def test_keras_round_trip_and_late_fusion(tmp_path):
    model = kseg.ParseNet(**TINY, fusion="late")
    path = str(tmp_path / "parsenet.keras")
    model.save(path)
    clone = keras.saving.load_model(path, safe_mode=True)
    x = np.random.default_rng(2).uniform(0, 255, (1, 33, 41, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(clone(x)), np.asarray(model(x)), atol=1e-5)


def test_saved_model_and_tflite_builtins(tmp_path):
    model = kseg.ParseNet(**TINY)
    export.export_saved_model(model, tmp_path / "sm")
    path = export.export_tflite(model, tmp_path / "parsenet.tflite")
    x = np.random.default_rng(3).uniform(0, 255, (1, 33, 41, 3)).astype("float32")
    assert export.verify_tflite(model, path, x) < 1e-3


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_classes must be >= 2, got 1"):
        kseg.ParseNet(num_classes=1)
    with pytest.raises(ValueError, match="fusion must be 'early' or 'late', got 'middle'"):
        kseg.ParseNet(fusion="middle")
