import numpy as np
import pytest

import keras

from kseg.layers import L2Normalization


def reference(x, gamma, eps=1e-10):
    return x / np.sqrt((x ** 2).sum(-1, keepdims=True) + eps) * gamma


def test_matches_numpy_reference_and_starts_at_scale_10():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 4, 6)).astype("float32") * 7
    layer = L2Normalization()
    y = np.asarray(layer(x))
    np.testing.assert_allclose(np.asarray(layer.gamma), np.full(6, 10.0))
    np.testing.assert_allclose(y, reference(x, 10.0), rtol=1e-5, atol=1e-6)
    # every position's feature vector has norm 10 (the initial scale) whatever its input norm
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), 10.0, rtol=1e-5)


def test_per_channel_scale_is_learned_weight():
    x = np.random.default_rng(1).normal(size=(1, 3, 3, 4)).astype("float32")
    layer = L2Normalization(scale_init=1.0)
    layer.build(x.shape)
    gamma = np.array([1.0, 2.0, 3.0, 4.0], "float32")
    layer.gamma.assign(gamma)
    np.testing.assert_allclose(np.asarray(layer(x)), reference(x, gamma), rtol=1e-5, atol=1e-6)
    assert [w.name for w in layer.trainable_weights] == ["gamma"]


def test_zero_vector_is_finite_and_global_pooled_input_works():
    x = np.zeros((1, 1, 1, 3), "float32")
    assert np.isfinite(np.asarray(L2Normalization()(x))).all()


def test_serialization_round_trip():
    layer = L2Normalization(scale_init=20.0, epsilon=1e-6, name="conv4_3_norm")
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert (clone.scale_init, clone.epsilon, clone.name) == (20.0, 1e-6, "conv4_3_norm")


def test_bad_arguments():
    with pytest.raises(ValueError, match="scale_init must be > 0, got 0"):
        L2Normalization(scale_init=0)
