"""FCN-32s/16s/8s/8s-atonce against the authors' voc-fcn* definitions (fcn.berkeleyvision.org@1305c73)."""

import numpy as np
import pytest

import kseg
from kseg.initializers import bilinear_kernel
from kseg.models import fcn


def w(c, width):
    return max(1, int(round(c * width)))


def conv(k, cin, cout, bias=True):
    return k * k * cin * cout + (cout if bias else 0)


def deconv(k, c):  # full CxC Deconvolution, bias_term: false
    return k * k * c * c


def vgg16_fc_params(width=1.0):
    """conv1_1 .. conv5_3 (3x3, pad 1 / 100) + fc6 (7x7, 4096) + fc7 (1x1, 4096), all with bias."""
    chans = [3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    chans = [3] + [w(c, width) for c in chans[1:]]
    convs = sum(conv(3, a, b) for a, b in zip(chans[:-1], chans[1:]))
    fc = w(4096, width)
    return convs + conv(7, chans[-1], fc) + conv(1, fc, fc)


def fcn_params_from_prototxt(variant, num_classes=21, width=1.0):
    n = num_classes
    total = vgg16_fc_params(width) + conv(1, w(4096, width), n)  # score_fr
    if variant == "fcn32s":
        return total + deconv(64, n)  # upscore 64x64 s32
    total += deconv(4, n) + conv(1, w(512, width), n)  # upscore2, score_pool4
    if variant == "fcn16s":
        return total + deconv(32, n)  # upscore16 32x32 s16
    total += deconv(4, n) + conv(1, w(256, width), n) + deconv(16, n)  # upscore_pool4, score_pool3, upscore8
    if variant == "fcn8s_atonce":
        total += w(512, width) + w(256, width)  # scale_pool4, scale_pool3 (Scale, one weight per channel)
    return total


PROTOTXT_COUNTS = {  # the arithmetic above at 21 classes, written out
    "fcn32s": 14_714_688 + 102_764_544 + 16_781_312 + 86_037 + 1_806_336,
    "fcn16s": 14_714_688 + 102_764_544 + 16_781_312 + 86_037 + 7_056 + 10_773 + 451_584,
    "fcn8s": 14_714_688 + 102_764_544 + 16_781_312 + 86_037 + 7_056 + 10_773 + 7_056 + 5_397 + 112_896,
    "fcn8s_atonce": 14_714_688 + 102_764_544 + 16_781_312 + 86_037 + 7_056 + 10_773 + 7_056 + 5_397 + 112_896
    + 512 + 256,
}
BUILDERS = {"fcn32s": kseg.FCN32s, "fcn16s": kseg.FCN16s, "fcn8s": kseg.FCN8s, "fcn8s_atonce": kseg.FCN8sAtOnce}
TINY = 1 / 16


@pytest.mark.parametrize("variant", list(BUILDERS))
def test_card_count_matches_prototxt_arithmetic(variant):
    assert fcn_params_from_prototxt(variant, 21) == PROTOTXT_COUNTS[variant]
    card = kseg.models.get(variant)
    assert card.num_params == PROTOTXT_COUNTS[variant]
    assert card.default_num_classes == 21 and card.builder is BUILDERS[variant]


@pytest.mark.parametrize("variant", list(BUILDERS))
def test_width_scaled_model_count_matches_prototxt_arithmetic(variant):
    model = BUILDERS[variant](num_classes=5, input_shape=(32, 32, 3), width=TINY)
    assert kseg.count_params(model) == fcn_params_from_prototxt(variant, 5, TINY)


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(BUILDERS))
def test_full_size_count_matches_prototxt(variant):
    model = BUILDERS[variant](input_shape=(500, 500, 3))  # 21 classes, the prototxt's 500x500 (the default is any size)
    assert kseg.count_params(model) == PROTOTXT_COUNTS[variant]
    assert model.get_layer("fc6").output.shape[1:3] == (16, 16)
    assert model.output_shape == (None, 500, 500, 21)


def test_any_input_size_gives_the_input_size_with_the_authors_crops():
    model = kseg.FCN8s(num_classes=3, input_shape=(None, None, 3), width=TINY)
    for h, wd in [(1, 1), (31, 33), (64, 100), (97, 13)]:
        out = model.predict(np.random.rand(1, h, wd, 3).astype("float32") * 255, verbose=0)
        assert out.shape == (1, h, wd, 3)


@pytest.mark.parametrize("variant", ["fcn32s", "fcn16s"])
def test_other_variants_keep_the_input_size(variant):
    model = BUILDERS[variant](num_classes=3, input_shape=(45, 71, 3), width=TINY)
    assert model.output_shape == (None, 45, 71, 3)


def test_layers_follow_the_prototxt():
    model = kseg.FCN8sAtOnce(num_classes=21, input_shape=(64, 64, 3), width=TINY)
    offsets = {n: model.get_layer(n).offset for n in ("score_pool4c", "score_pool3c", "score")}
    assert offsets == {"score_pool4c": (5, 5), "score_pool3c": (9, 9), "score": (31, 31)}
    assert kseg.FCN32s(input_shape=(64, 64, 3), width=TINY).get_layer("score").offset == (19, 19)
    fcn16 = kseg.FCN16s(input_shape=(64, 64, 3), width=TINY)
    assert fcn16.get_layer("score_pool4c").offset == (5, 5) and fcn16.get_layer("score").offset == (27, 27)
    assert model.get_layer("conv1_1_pad").padding == ((100, 100), (100, 100))
    assert model.get_layer("conv1_1").padding == "valid" and model.get_layer("fc6").kernel_size == (7, 7)
    assert model.get_layer("drop6").rate == 0.5 and model.get_layer("drop7").rate == 0.5
    # frozen bilinear deconvolutions, no bias, full CxC kernels
    for name, k in (("upscore2", 4), ("upscore_pool4", 4), ("upscore8", 16)):
        layer = model.get_layer(name)
        assert not layer.trainable and layer.bias is None and layer.strides == (k // 2, k // 2)
        kernel = np.asarray(layer.kernel)
        assert kernel.shape == (k, k, 21, 21)
        np.testing.assert_allclose(kernel[:, :, 4, 4], bilinear_kernel(k))
        assert np.count_nonzero(kernel[:, :, 4, 5]) == 0
    # fixed skip scales (Caffe Scale, lr_mult 0)
    for name, value, c in (("scale_pool4", 0.01, 32), ("scale_pool3", 0.0001, 16)):
        layer = model.get_layer(name)
        assert not layer.trainable and layer.count_params() == c
        np.testing.assert_allclose(np.asarray(layer.kernel), value)
    # zero-initialised scores: an untrained net predicts exactly 0 everywhere
    for name in ("score_fr", "score_pool4", "score_pool3"):
        assert not np.any(np.asarray(model.get_layer(name).kernel))
    assert not np.any(model.predict(np.full((1, 64, 64, 3), 128.0, "float32"), verbose=0))
    trainable = {v.path.split("/")[0] for v in model.trainable_weights}
    assert not trainable & {"upscore2", "upscore_pool4", "upscore8", "scale_pool4", "scale_pool3"}


def test_atonce_scales_the_skips():
    # With identical weights, FCN-8s at-once's score_pool4 input is exactly 0.01 * pool4.
    import keras

    model = kseg.FCN8sAtOnce(num_classes=3, input_shape=(40, 40, 3), width=TINY)
    probe = keras.Model(model.input, [model.get_layer("pool4").output, model.get_layer("scale_pool4").output,
                                      model.get_layer("pool3").output, model.get_layer("scale_pool3").output])
    p4, s4, p3, s3 = probe.predict(np.random.rand(1, 40, 40, 3).astype("float32") * 255, verbose=0)
    np.testing.assert_allclose(s4, 0.01 * p4, rtol=1e-6)
    np.testing.assert_allclose(s3, 1e-4 * p3, rtol=1e-6)


def test_unpadded_variant_aligns_and_keeps_the_size():
    model = kseg.FCN8s(num_classes=3, input_shape=(None, None, 3), width=TINY, pad100=False)
    names = {layer.name for layer in model.layers}
    assert "conv1_1_pad" not in names and model.get_layer("conv1_1").padding == "same"
    for h, wd in [(32, 32), (45, 77), (5, 9)]:
        assert model.predict(np.zeros((1, h, wd, 3), "float32"), verbose=0).shape == (1, h, wd, 3)
    # a constant score map upsampled by the bilinear deconvs stays constant away from the border
    score = kseg.FCN32s(num_classes=2, input_shape=(64, 64, 3), width=TINY, pad100=False)
    b = score.get_layer("score_fr")
    b.bias.assign(np.array([1.0, -1.0], "float32"))
    out = score.predict(np.zeros((1, 64, 64, 3), "float32"), verbose=0)[0]
    np.testing.assert_allclose(out[16:-16, 16:-16, 0], 1.0, atol=1e-6)


def test_save_load_keras_safe_mode(tmp_path):
    import keras

    model = kseg.FCN8sAtOnce(num_classes=4, input_shape=(24, 24, 3), width=TINY)
    for layer in ("score_fr", "score_pool4", "score_pool3"):  # non-zero so the comparison means something
        k = model.get_layer(layer).kernel
        k.assign(np.random.default_rng(0).normal(size=k.shape).astype("float32"))
    x = np.random.rand(2, 24, 24, 3).astype("float32") * 255
    path = tmp_path / "fcn8s.keras"
    model.save(path)
    clone = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(clone.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    assert not clone.get_layer("upscore8").trainable


def test_weights_argument_and_errors(tmp_path):
    model = kseg.FCN16s(num_classes=3, input_shape=(32, 32, 3), width=TINY)
    model.get_layer("score_fr").bias.assign(np.arange(3, dtype="float32"))
    path = tmp_path / "fcn16s.weights.h5"
    model.save_weights(path)
    again = kseg.FCN16s(num_classes=3, input_shape=(32, 32, 3), width=TINY, weights=str(path))
    np.testing.assert_array_equal(np.asarray(again.get_layer("score_fr").bias), [0, 1, 2])
    with pytest.raises(ValueError, match="num_classes must be >= 2, got 1"):
        kseg.FCN8s(num_classes=1)
    with pytest.raises(ValueError, match="input_shape"):
        kseg.FCN32s(input_shape=(32, 32))
    with pytest.raises(ValueError, match="width_multiplier must be > 0"):
        kseg.FCN8s(width=0)
    with pytest.raises(ValueError, match="encoder_weights need width_multiplier=1.0"):
        kseg.FCN8s(input_shape=(32, 32, 3), width=TINY, encoder_weights="imagenet")


def image_coords(tensor):
    """(a, b): index i of `tensor` (height axis) has its receptive-field centre at image row a*i + b.

    A minimal ``caffe.coord_map``: walks the Keras graph back to the input. Fused maps must agree,
    and the authors' crop offsets must bring the output back to (1, 0).
    """
    import keras

    from kseg.layers.crop import CropToReference

    layer, node_index, _ = tensor._keras_history
    if isinstance(layer, keras.layers.InputLayer):
        return (1.0, 0.0)
    inputs = layer._inbound_nodes[node_index].input_tensors
    if isinstance(layer, CropToReference):
        a, b = image_coords(inputs[0])
        return (a, b + a * layer.offset[0])
    if isinstance(layer, keras.layers.Add):
        maps = [image_coords(t) for t in inputs]
        assert all(np.allclose(m, maps[0]) for m in maps), f"{layer.name} fuses misaligned maps: {maps}"
        return maps[0]
    a, b = image_coords(inputs[0])
    if isinstance(layer, keras.layers.ZeroPadding2D):
        return (a, b - a * layer.padding[0][0])
    if isinstance(layer, keras.layers.MaxPooling2D):  # 2x2/s2, windows start at 0 (Caffe ceil mode)
        assert layer.pool_size == (2, 2) and layer.strides == (2, 2)
        return (2 * a, b + a * 0.5)
    if isinstance(layer, keras.layers.Conv2DTranspose):  # Caffe deconvolution, no padding
        assert layer.padding == "valid"
        k, s = layer.kernel_size[0], layer.strides[0]
        return (a / s, b - a * (k - 1) / (2 * s))
    if isinstance(layer, keras.layers.Conv2D) and not isinstance(layer, keras.layers.DepthwiseConv2D):
        assert layer.strides == (1, 1)
        k = layer.kernel_size[0]
        return (a, b + (a * (k - 1) / 2 if layer.padding == "valid" else 0.0))
    return (a, b)  # pointwise: ImageNormalization, ReLU, Dropout, 1x1 Scale


@pytest.mark.parametrize("variant", list(BUILDERS))
def test_authors_crop_offsets_align_every_fusion_and_the_output(variant):
    """The offsets 19 / 5, 27 / 5, 9, 31 are exactly what aligns our Keras layers' geometry."""
    model = BUILDERS[variant](num_classes=2, input_shape=(64, 64, 3), width=TINY)
    assert image_coords(model.get_layer("score_fr").output) == (32.0, 12.5)  # pad 100 shifts fc6's grid
    assert image_coords(model.output) == (1.0, 0.0)


def test_saved_model_export_matches_keras(tmp_path):
    import tensorflow as tf

    from kseg import export

    model = kseg.FCN8sAtOnce(num_classes=4, input_shape=(40, 40, 3), width=TINY)
    for name in ("score_fr", "score_pool4", "score_pool3"):
        k = model.get_layer(name).kernel
        k.assign(np.random.default_rng(1).normal(0, 0.05, k.shape).astype("float32"))
    images = np.random.default_rng(2).integers(0, 256, (2, 40, 40, 3)).astype("uint8")
    path = export.export_saved_model(model, tmp_path / "fcn8s_atonce_sm")
    served = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(images))
    logits = model.predict(images.astype("float32"), verbose=0)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    np.testing.assert_allclose(served["probabilities"].numpy(), probs, atol=1e-5)
    assert served["labels"].shape == (2, 40, 40)


@pytest.mark.slow
def test_fcn8s_atonce_matches_tensorflow_on_the_jax_backend(tmp_path):
    """Build + predict with KERAS_BACKEND=jax in a subprocess, with the TF model's weights: same logits.

    (DeconvNet's JAX check is slower and runs with -m slow: tests/models/test_deconvnet.py.)
    """
    import os
    import subprocess
    import sys
    import textwrap

    model = kseg.FCN8sAtOnce(num_classes=3, input_shape=(40, 40, 3), width=TINY)
    for name in ("score_fr", "score_pool4", "score_pool3"):
        k = model.get_layer(name).kernel
        k.assign(np.random.default_rng(0).normal(0, 0.1, k.shape).astype("float32"))
    x = np.random.default_rng(1).uniform(0, 255, (1, 40, 40, 3)).astype("float32")
    y = np.asarray(model(x))
    assert np.abs(y).max() > 0
    model.save_weights(tmp_path / "fcn.weights.h5")
    np.savez(tmp_path / "io.npz", x=x, y=y)
    script = textwrap.dedent("""
        import os, sys
        import keras, numpy as np
        assert keras.backend.backend() == "jax", keras.backend.backend()
        import kseg
        d = sys.argv[1]
        io = np.load(os.path.join(d, "io.npz"))
        model = kseg.FCN8sAtOnce(num_classes=3, input_shape=(40, 40, 3), width=1 / 16)
        model.load_weights(os.path.join(d, "fcn.weights.h5"))
        np.testing.assert_allclose(np.asarray(model(io["x"])), io["y"], rtol=1e-4, atol=1e-4)
        print("JAX-OK")
    """)
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
    res = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0 and "JAX-OK" in res.stdout, res.stderr[-3000:]
