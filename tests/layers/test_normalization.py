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


def _image_normalization():
    from kseg.layers.normalization import ImageNormalization

    return ImageNormalization


def test_image_normalization_custom_transform_against_numpy():
    """(reorder(x) * scale - mean) / std, mean and std in the network's channel order."""
    layer_cls = _image_normalization()
    x = np.random.default_rng(0).uniform(0, 255, (2, 5, 7, 3)).astype(np.float32)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    ours = np.asarray(layer_cls(mean=mean, std=std, channel_order="bgr", scale=1 / 255)(x))
    want = (x[..., ::-1] / 255 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(ours, want, rtol=1e-5, atol=1e-5)
    # The old modes are custom transforms too: "caffe" equals its explicit form.
    caffe = layer_cls("caffe")
    np.testing.assert_allclose(np.asarray(caffe(x)), np.asarray(layer_cls(**caffe.transform())(x)), atol=1e-4)
    torch = layer_cls("torch")
    np.testing.assert_allclose(np.asarray(torch(x)), np.asarray(layer_cls(**torch.transform())(x)), atol=1e-4)


def test_image_normalization_config_old_and_new():
    layer_cls = _image_normalization()
    old = layer_cls.from_config({"name": "preprocess", "mode": "caffe"})  # a config saved before "custom"
    assert old.mode == "caffe" and old.mean is None
    layer = layer_cls(mean=(104.0, 117.0, 123.0), channel_order="BGR", name="preprocess")
    config = layer.get_config()
    assert config["mode"] == "custom" and config["channel_order"] == "bgr" and config["scale"] == 1.0
    again = layer_cls.from_config(config)
    assert (again.mean, again.std, again.channel_order, again.scale) == (
        (104.0, 117.0, 123.0), (1.0, 1.0, 1.0), "bgr", 1.0)
    assert "mean" not in layer_cls("none").get_config()


@pytest.mark.parametrize("kwargs, message", [
    ({"mean": (1.0, 2.0)}, "3 values"),
    ({"std": (1.0, 0.0, 1.0)}, "non-zero"),
    ({"channel_order": "gbr"}, "'rgb' or 'bgr'"),
    ({"mode": "caffe", "mean": (1.0, 2.0, 3.0)}, "cannot be combined"),
    ({"mode": "imagenet"}, "mode must be one of"),
])
def test_image_normalization_rejects(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _image_normalization()(**kwargs)


def test_image_normalization_custom_other_channels():
    """Grey / RGB + depth inputs: the RGB channels get the transform, extra channels the mean statistics."""
    layer_cls = _image_normalization()
    layer = layer_cls(mean=(10.0, 20.0, 30.0), channel_order="bgr")
    x = np.random.default_rng(1).uniform(0, 255, (1, 3, 4, 4)).astype(np.float32)
    out = np.asarray(layer(x))
    np.testing.assert_allclose(out[..., :3], x[..., 2::-1] - np.array([10.0, 20.0, 30.0]), atol=1e-4)
    np.testing.assert_allclose(out[..., 3], x[..., 3] - 20.0, atol=1e-4)
    np.testing.assert_allclose(np.asarray(layer(x[..., :1])), x[..., :1] - 20.0, atol=1e-4)
