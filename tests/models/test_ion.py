"""ION: parameter count from the paper's definition, training step (with the segmentation
regulariser) reaching every trainable weight, .keras round trip."""

import keras
import pytest
import numpy as np
import tensorflow as tf

import kseg
from kseg.inference.detection import detection_loss, heads_of
from kseg.models.ion import ION

TINY = dict(num_classes=5, num_rois=4, fc_units=16, width_multiplier=1 / 16, pool_size=2)


def conv(k, cin, cout):
    return k * k * cin * cout + cout


def ion_arithmetic(K=81, fc=4096, m=1.0, pool=7, units=512, seg=False):
    w = lambda c: max(1, int(round(c * m)))  # noqa: E731
    chans = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256), (256, 512),
             (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
    vgg = sum(conv(3, 3 if a == 3 else w(a), w(b)) for a, b in chans)
    u = w(units)
    irnn1 = w(512) * u + u + 4 * u * u  # shared 1x1 input conv + 4 identity-initialised recurrences
    irnn2 = 4 * u * u + u + 4 * u * u
    skips = w(256) + w(512) + w(512) + 4 * u  # one L2-norm scale per channel
    mix = conv(1, skips, w(512))
    fcs = w(512) * pool * pool * fc + fc + fc * fc + fc
    head = fc * K + K + fc * 4 * K + 4 * K
    return vgg + irnn1 + irnn2 + skips + mix + fcs + head + (conv(1, 4 * u, K) if seg else 0)


def test_param_count():
    assert ion_arithmetic() == ION.card.num_params == 141_036_501
    for seg in (False, True):
        keras.backend.clear_session()
        model = ION(**TINY, segmentation_loss=seg)
        assert kseg.count_params(model) == ion_arithmetic(K=5, fc=16, m=1 / 16, pool=2, seg=seg)


def test_training_step_and_round_trip(tmp_path):
    keras.utils.set_random_seed(0)
    model = ION(**TINY, segmentation_loss=True)
    rng = np.random.default_rng(1)
    inputs = {"image": rng.uniform(0, 255, (1, 64, 64, 3)).astype("float32"),
              "rois": np.array([[[0, 0, 32, 32], [10, 10, 60, 50], [20, 5, 40, 30], [0, 30, 64, 64]]], np.float32)}
    targets = {"labels": np.array([[1, 0, 3, 2]], np.int32), "ious": np.array([[0.8, 0.2, 0.55, 0.72]], np.float32),
               "box_targets": rng.normal(size=(1, 4, 4)).astype(np.float32),
               "seg": rng.integers(0, 5, (1, 4, 4)).astype(np.int32)}
    out = model(inputs)
    assert out["cls"].shape == (1, 4, 1, 5) and out["bbox"].shape == (1, 4, 5, 4) and out["seg"].shape == (1, 4, 4, 5)
    with tf.GradientTape() as tape:
        loss = detection_loss(targets, model(inputs, training=True), heads_of(model))[0]
    grads = tape.gradient(loss, model.trainable_variables)
    assert np.isfinite(float(loss))
    dead = [v.path for v, g in zip(model.trainable_variables, grads) if g is None or not np.any(g.numpy())]
    assert not dead, dead
    path = tmp_path / "ion.keras"
    model.save(path)
    back = keras.models.load_model(path, safe_mode=True)
    for k in ("cls", "bbox", "seg"):
        np.testing.assert_allclose(back(inputs)[k], model(inputs)[k], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_full_size_count():
    assert kseg.count_params(ION()) == 141_036_501
