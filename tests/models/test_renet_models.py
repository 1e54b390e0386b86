import numpy as np
import pytest

import keras

import kseg
from kseg import export


def gru_keras(din, u):
    """Keras GRU, reset_after=True (cuDNN form): 3 gates x (input + recurrent kernels) + 2 x 3u biases."""
    return 3 * (din * u + u * u) + 6 * u


def gru_paper(din, u):
    """The papers' (Theano) GRU: one bias per gate."""
    return 3 * (din * u + u * u + u)


def renet_layer(din, u, gru):
    """Two GRUs sweep columns (input din), two sweep rows of their 2u-wide output."""
    return 2 * gru(din, u) + 2 * gru(2 * u, u)


def renet_cifar10(gru):
    """Table 1, CIFAR-10: 3 ReNet layers of 2x2 patches, 320 units; fc 4096 (ReLU); 10 classes."""
    u = 320
    total = renet_layer(2 * 2 * 3, u, gru) + 2 * renet_layer(2 * 2 * 2 * u, u, gru)
    return total + (4 * 4 * 2 * u) * 4096 + 4096 + 4096 * 10 + 10


def test_renet_classifier_parameters_against_table1():
    model = kseg.ReNetClassifier()
    assert model.output_shape == (None, 10)
    assert renet_cifar10(gru_keras) == 59_237_386
    assert kseg.count_params(model) == renet_cifar10(gru_keras)
    assert kseg.models.get("renet_classifier").num_params == renet_cifar10(gru_keras)
    # the papers' GRUs have one bias per gate: 12 GRUs x 3 x 320 fewer parameters
    assert renet_cifar10(gru_keras) - renet_cifar10(gru_paper) == 12 * 3 * 320
    small = kseg.ReNetClassifier(width=1 / 16)
    assert small.get_layer("renet1").output.shape == (None, 16, 16, 40)
    assert small.get_layer("fc1").units == 256


def reseg_params(c=11, gru=gru_keras):
    """fvisin/reseg evaluate_camvid.py: VGG16 to conv3_3, dim-proj [100, 100], 1x1 patches,
    out-nfilters [50, 50] with 2x2 filters of stride 2, then a 1x1 conv to the classes."""
    vgg = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256)]
    total = sum(9 * i * o + o for i, o in vgg)                       # conv1_1 .. conv3_3
    total += renet_layer(256, 100, gru) + renet_layer(200, 100, gru)  # 1x1 patches
    total += (4 * 200 * 50 + 50) + (4 * 50 * 50 + 50)                # two 2x2 stride-2 transposed convs of 50
    return total + 50 * c + c                                        # 1x1 classifier


def test_reseg_parameters():
    model = kseg.ReSeg(input_shape=(64, 64, 3))
    assert kseg.count_params(model) == reseg_params() == 2_544_549
    assert kseg.models.get("reseg").num_params == reseg_params()


def test_reseg_shapes_and_global_context():
    model = kseg.ReSeg(num_classes=3, input_shape=(16, 24, 3), renet_units=(4, 4), patch_sizes=((2, 2), (1, 1)),
                       upsample_filters=(4, 4, 4))
    assert model.output_shape == (None, 16, 24, 3)
    assert model.get_layer("renet1").output.shape == (None, 2, 3, 8)
    probe = keras.Model(model.input, model.get_layer("renet2").output)
    x = np.random.default_rng(0).uniform(0, 255, (1, 16, 24, 3)).astype("float32")
    x2 = x.copy()
    x2[:, :2, :2] = 0.0
    # the ReNet sweeps carry a top-left change to the bottom-right position of the coarse map
    far = np.abs(np.asarray(probe(x2))[:, -1, -1] - np.asarray(probe(x))[:, -1, -1]).max()
    assert far > 0


def test_round_trips_safe_mode(tmp_path):
    for model in [
        kseg.ReNetClassifier(input_shape=(16, 8, 3), renet_units=(3, 3), patch_sizes=(2, (2, 1)), fc_units=(8,),
                             cell="lstm"),
        kseg.ReSeg(num_classes=3, input_shape=(16, 8, 3), renet_units=(3, 3), upsample_filters=(4, 4), width=1 / 16),
    ]:
        path = str(tmp_path / f"{model.name}.keras")
        model.save(path)
        clone = keras.saving.load_model(path, safe_mode=True)
        x = np.random.default_rng(1).uniform(0, 255, (2, 16, 8, 3)).astype("float32")
        np.testing.assert_allclose(np.asarray(clone(x)), np.asarray(model(x)), atol=1e-5)


def test_reseg_saved_model_and_tflite(tmp_path):
    model = kseg.ReSeg(num_classes=3, input_shape=(8, 12, 3), renet_units=(3, 3), upsample_filters=(4, 4),
                       width=1 / 16)
    export.export_saved_model(model, tmp_path / "sm")
    path = export.export_tflite(model, tmp_path / "reseg.tflite")
    x = np.random.default_rng(2).uniform(0, 255, (1, 8, 12, 3)).astype("float32")
    assert export.verify_tflite(model, path, x) < 1e-3
    ops = {name for name, _ in export.tflite_operators(path)}
    assert "WHILE" in ops  # the GRU sweeps stay loops; every op is a builtin (export_tflite checks)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_classes must be >= 2, got 1"):
        kseg.ReSeg(num_classes=1)
    with pytest.raises(ValueError, match="cannot undo a total stride of 4x4"):
        kseg.ReSeg(input_shape=(16, 16, 3), upsample_filters=(4,))
    with pytest.raises(ValueError, match="one entry per ReNet layer"):
        kseg.ReNetClassifier(renet_units=(3, 3), patch_sizes=(2,))
