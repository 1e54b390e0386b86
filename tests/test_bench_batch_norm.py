"""benchmarks/batch_norm.py: the Keras-BN clone it times kseg's BN against is the same network."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from benchmarks import batch_norm  # noqa: E402


def test_clone_has_keras_bn_same_weights_same_outputs():
    import kseg
    from kseg.layers import BatchNormalization

    model = kseg.SegNetBasic(num_classes=5, input_shape=(16, 24, 3))
    clone = batch_norm.keras_bn_clone(model)
    kinds = [(type(a), type(b)) for a, b in zip(model.layers, clone.layers)]
    assert kinds.count((BatchNormalization, keras.layers.BatchNormalization)) == 8
    assert all(a is b for a, b in kinds if a is not BatchNormalization)
    x = np.random.default_rng(0).uniform(0, 255, (2, 16, 24, 3)).astype("float32")
    np.testing.assert_array_equal(model(x, training=False), clone(x, training=False))
    np.testing.assert_allclose(model(x, training=True), clone(x, training=True), rtol=1e-4, atol=1e-4)
