"""LocalResponseNormalization (Caffe's cross-channel LRN) against a numpy reference, and its TFLite form."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from kseg.layers.normalization import LocalResponseNormalization  # noqa: E402


def caffe_lrn(x, local_size=5, alpha=1e-4, beta=0.75, k=1.0):
    """Caffe's LRN (ACROSS_CHANNELS), written channel by channel: channel c is divided by
    (k + alpha / n * sum of x^2 over channels c - n//2 .. c + n//2 that exist) ** beta."""
    x = np.asarray(x, np.float64)
    half, channels = local_size // 2, x.shape[-1]
    out = np.empty_like(x)
    for c in range(channels):
        lo, hi = max(0, c - half), min(channels, c + half + 1)
        scale = k + alpha / local_size * np.sum(x[..., lo:hi] ** 2, axis=-1)
        out[..., c] = x[..., c] * scale ** -beta  # Caffe: top = scale^-beta * bottom
    return out


@pytest.mark.parametrize("channels,local_size,alpha,beta,k", [
    (3, 5, 1e-4, 0.75, 1.0),   # SegNet-Basic's input norm: the window covers all 3 channels
    (7, 3, 1e-2, 0.5, 2.0),    # windows clipped at both edges and full ones in the middle
])
def test_matches_caffe_reference_on_pixel_range(channels, local_size, alpha, beta, k):
    x = np.random.default_rng(0).uniform(0, 255, (2, 5, 6, channels)).astype("float32")
    layer = LocalResponseNormalization(local_size, alpha, beta, k)
    np.testing.assert_allclose(np.asarray(layer(x)), caffe_lrn(x, local_size, alpha, beta, k), rtol=2e-5, atol=1e-4)


def test_config_round_trip_and_bad_size():
    layer = LocalResponseNormalization(3, 2e-4, 0.5, 2.0, name="n")
    again = LocalResponseNormalization.from_config(layer.get_config())
    assert (again.local_size, again.alpha, again.beta, again.k) == (3, 2e-4, 0.5, 2.0)
    with pytest.raises(ValueError, match="local_size must be a positive odd number, got 4"):
        LocalResponseNormalization(4)


def test_tflite_form_is_the_same_function():
    """kseg.export swaps the layer for TF's builtin LRN (alpha / n, depth radius n // 2) when
    converting to TFLite: in float the two forms must agree on values and gradients."""
    tf = pytest.importorskip("tensorflow")
    from kseg.export import _lrn_for_tflite

    rng = np.random.default_rng(1)
    for channels, args in ((3, (5, 1e-4, 0.75, 1.0)), (7, (3, 1e-2, 0.5, 2.0))):
        layer = LocalResponseNormalization(*args)
        tflite_form = _lrn_for_tflite().from_config(layer.get_config())
        x = tf.constant(rng.uniform(0, 255, (2, 4, 5, channels)).astype("float32"))
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            y, y_tflite = layer(x), tflite_form(x)
            loss, loss_tflite = tf.reduce_sum(y * y), tf.reduce_sum(y_tflite * y_tflite)
        np.testing.assert_allclose(y_tflite.numpy(), y.numpy(), rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(y_tflite.numpy(), caffe_lrn(x.numpy(), *args), rtol=2e-5, atol=1e-4)
        np.testing.assert_allclose(tape.gradient(loss_tflite, x).numpy(), tape.gradient(loss, x).numpy(),
                                   rtol=1e-4, atol=1e-5)
