"""DeconvNet against the authors' DeconvNet_inference_deploy.prototxt (HyeonwooNoh/DeconvNet@87dd133)."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import kseg


def w(c, width):
    return max(1, int(round(c * width)))


def conv(k, cin, cout):  # every conv / deconv of the prototxt has a bias
    return k * k * cin * cout + cout


def bn(c):  # BN: scale + shift (the running statistics are folded in the release / not parameters)
    return 2 * c


def deconvnet_params_from_prototxt(num_classes=21, width=1.0):
    enc = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
           (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
    dec = [(512, 512), (512, 512), (512, 512),   # deconv5_1 .. 5_3
           (512, 512), (512, 512), (512, 256),   # deconv4_1, 4_2, 4_3
           (256, 256), (256, 256), (256, 128),   # deconv3_1, 3_2, 3_3
           (128, 128), (128, 64),                # deconv2_1, 2_2
           (64, 64), (64, 64)]                   # deconv1_1, 1_2
    s = lambda c: 3 if c == 3 else w(c, width)  # noqa: E731
    fc = w(4096, width)
    total = sum(conv(3, s(i), s(o)) + bn(s(o)) for i, o in enc + dec)
    total += conv(7, s(512), fc) + bn(fc)        # fc6 + bnfc6
    total += conv(1, fc, fc) + bn(fc)            # fc7 + bnfc7
    total += conv(7, fc, s(512)) + bn(s(512))    # fc6-deconv + fc6-deconv-bn
    return total + conv(1, s(64), num_classes)   # seg-score-voc


# The arithmetic at 21 classes, written out: encoder convs + BN, fc6 + BN, fc7 + BN, fc6-deconv + BN,
# decoder deconvs + BN, classifier.
PROTOTXT_COUNT = (14_714_688 + 8_448) + (102_764_544 + 8_192) + (16_781_312 + 8_192) + (102_760_960 + 1_024) \
    + (14_749_376 + 7_552) + 1_365
TINY = 1 / 16


def test_card_count_matches_prototxt_arithmetic():
    assert deconvnet_params_from_prototxt(21) == PROTOTXT_COUNT == 251_805_653
    assert kseg.models.get("deconvnet").num_params == PROTOTXT_COUNT


def test_width_scaled_count_matches_prototxt_arithmetic():
    model = kseg.DeconvNet(num_classes=5, input_shape=(224, 224, 3), width=TINY)
    assert kseg.count_params(model) == deconvnet_params_from_prototxt(5, TINY)


@pytest.mark.slow
def test_full_size_count_matches_prototxt():
    model = kseg.DeconvNet(input_shape=(224, 224, 3))  # the prototxt's size (the default is any size)
    assert kseg.count_params(model) == PROTOTXT_COUNT
    assert model.get_layer("fc7").output.shape[1:3] == (1, 1)
    assert model.get_layer("fc6-deconv").output.shape[1:] == (7, 7, 512)
    assert model.output_shape == (None, 224, 224, 21)


def test_layers_follow_the_prototxt():
    model = kseg.DeconvNet(num_classes=21, input_shape=(224, 224, 3), width=TINY)
    shapes = {layer.name: layer.output.shape for layer in model.layers if not isinstance(layer.output, tuple)
              and not isinstance(layer.output, list)}
    # unpool_size of the prototxt: 14, 28, 56, 112, 224
    assert [shapes[f"unpool{b}"][1] for b in (5, 4, 3, 2, 1)] == [14, 28, 56, 112, 224]
    assert shapes["fc6"][1:3] == (1, 1) and shapes["fc6-deconv"][1:3] == (7, 7)
    widths = {n: shapes[n][-1] for n in ("deconv4_3", "deconv3_3", "deconv2_2", "deconv1_2")}
    assert widths == {"deconv4_3": 16, "deconv3_3": 8, "deconv2_2": 4, "deconv1_2": 4}
    names = set(shapes) | {layer.name for layer in model.layers}
    assert {"bn1_1", "bnfc6", "bnfc7", "fc6-deconv-bn", "debn5_1", "debn1_2", "seg-score-voc"} <= names
    assert not any(n.startswith("drop") for n in names)  # no dropout in DeconvNet
    assert isinstance(model.get_layer("deconv5_1"), keras.layers.Conv2DTranspose)
    assert isinstance(model.get_layer("pool3"), kseg.layers.MaxPoolingWithArgmax2D)
    assert isinstance(model.get_layer("unpool3"), kseg.layers.MaxUnpooling2D)
    np.testing.assert_allclose(np.asarray(model.get_layer("debn3_1").beta), 0.001)


def test_odd_sizes_and_minimum_size():
    model = kseg.DeconvNet(num_classes=3, input_shape=(None, None, 3), width=TINY)
    for h, wd in [(193, 193), (225, 250)]:
        out = model.predict(np.random.rand(1, h, wd, 3).astype("float32") * 255, verbose=0)
        assert out.shape == (1, h, wd, 3) and np.isfinite(out).all()
    with pytest.raises(ValueError, match="input sides >= 193"):
        kseg.DeconvNet(input_shape=(192, 224, 3))
    with pytest.raises(ValueError, match="num_classes must be >= 2, got 1"):
        kseg.DeconvNet(num_classes=1)


def test_unpooling_puts_decoder_values_at_encoder_maxima():
    # Sec. 3.2.1: after unpool1 the map is non-zero only where pool1 found its maxima.
    model = kseg.DeconvNet(num_classes=3, input_shape=(224, 224, 3), width=TINY)
    probe = keras.Model(model.input, [model.get_layer("unpool1").output, model.get_layer("pool1").output[1]])
    unpooled, mask = probe.predict(np.random.rand(1, 224, 224, 3).astype("float32") * 255, verbose=0)
    assert np.all(unpooled[mask == 0] == 0)
    assert mask.reshape(1, 112, 2, 112, 2, -1).sum(axis=(2, 4)).max() == 1


def test_save_load_keras_safe_mode(tmp_path):
    model = kseg.DeconvNet(num_classes=3, input_shape=(193, 193, 3), width=TINY)
    x = np.random.rand(2, 193, 193, 3).astype("float32") * 255
    rng = np.random.default_rng(0)
    for layer in model.layers:  # non-default BN statistics: the round trip must carry them
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(0, 1, layer.moving_mean.shape).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2, layer.moving_variance.shape).astype("float32"))
    path = tmp_path / "deconvnet.keras"
    model.save(path)
    clone = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(clone.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-4, atol=1e-4)


JAX_SCRIPT = textwrap.dedent("""
    import os, sys
    import keras, numpy as np
    assert keras.backend.backend() == "jax", keras.backend.backend()
    import kseg
    d = sys.argv[1]
    data = np.load(os.path.join(d, "io.npz"))
    fcn = kseg.FCN8sAtOnce(num_classes=3, input_shape=(40, 40, 3), width=1 / 16)
    fcn.load_weights(os.path.join(d, "fcn.weights.h5"))
    dec = kseg.DeconvNet(num_classes=3, input_shape=(193, 193, 3), width=1 / 16)
    dec.load_weights(os.path.join(d, "dec.weights.h5"))
    np.testing.assert_allclose(np.asarray(fcn(data["xf"])), data["yf"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(dec(data["xd"])), data["yd"], rtol=1e-4, atol=1e-4)
    print("JAX-OK")
""")


@pytest.mark.slow  # ~30-100 s of XLA compilation; build + predict on JAX is in tests/test_registry_models.py by default
def test_fcn_and_deconvnet_run_on_the_jax_backend(tmp_path):
    """Same weights, same input: the JAX backend reproduces the TensorFlow outputs."""
    keras.utils.set_random_seed(3)
    fcn = kseg.FCN8sAtOnce(num_classes=3, input_shape=(40, 40, 3), width=TINY)
    for name in ("score_fr", "score_pool4", "score_pool3"):
        k = fcn.get_layer(name).kernel
        k.assign(np.random.default_rng(0).normal(0, 0.1, k.shape).astype("float32"))
    dec = kseg.DeconvNet(num_classes=3, input_shape=(193, 193, 3), width=TINY)
    xf = np.random.rand(1, 40, 40, 3).astype("float32") * 255
    xd = np.random.rand(1, 193, 193, 3).astype("float32") * 255
    fcn.save_weights(tmp_path / "fcn.weights.h5")
    dec.save_weights(tmp_path / "dec.weights.h5")
    yf, yd = np.asarray(fcn(xf)), np.asarray(dec(xd))
    assert np.abs(yf).max() > 0 and np.abs(yd).max() > 0
    np.savez(tmp_path / "io.npz", xf=xf, yf=yf, xd=xd, yd=yd)
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
    res = subprocess.run([sys.executable, "-c", JAX_SCRIPT, str(tmp_path)], env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0 and "JAX-OK" in res.stdout, res.stderr[-3000:]
