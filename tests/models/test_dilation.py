import numpy as np
import pytest

import keras

import kseg
from kseg import export
from kseg.models.dilation import DILATION_MARGIN


def conv(k, cin, cout):
    return k * k * cin * cout + cout


def frontend_params_from_network_py(num_classes=21, width=1.0):
    """fyu/dilation network.py build_frontend_vgg: VGG16 convs, fc6 7x7 (dilation 4), fc7, final.

    `width` scales every channel count (the builders' test option); 1.0 is the authors' net.
    """
    w = lambda c: max(1, round(c * width))  # noqa: E731
    vgg = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
           (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
    total = sum(conv(3, i if i == 3 else w(i), w(o)) for i, o in vgg)  # 14,714,688 at width 1
    total += conv(7, w(512), w(4096)) + conv(1, w(4096), w(4096))       # fc6, fc7
    return total + conv(1, w(4096), num_classes)                        # final


def context_params_from_table1(c):
    """Basic module: seven 3x3 C->C convs (dilations 1, 1, 2, 4, 8, 16, 1) and a 1x1 C->C conv."""
    return 7 * conv(3, c, c) + conv(1, c, c)


def test_parameter_count_arithmetic_at_reduced_width():
    # the same arithmetic at a quarter of the widths (a full-size build needs ~2 GB: slow test below)
    for c in (11, 21):
        model = kseg.Dilation8(num_classes=c, input_shape=(24, 24, 3), width=0.25)
        context = sum(int(np.prod(w.shape)) for w in model.get_layer("context").weights)
        assert context == context_params_from_table1(c)
        assert kseg.count_params(model) == frontend_params_from_network_py(c, 0.25) + context_params_from_table1(c)
    assert frontend_params_from_network_py(21) == 134_346_581
    assert context_params_from_table1(11) == 7832  # the CamVid net's context module
    assert kseg.models.get("dilation_frontend").num_params == frontend_params_from_network_py(21)
    assert kseg.models.get("dilation8").num_params == 134_346_581 + context_params_from_table1(21) == 134_374_973
    # the front-end builder has exactly the layers of Dilation8 before the context module
    tiny = dict(num_classes=3, input_shape=(24, 24, 3), width=1 / 16)
    front_names = {l.name for l in kseg.DilatedFrontEnd(**tiny).layers if l.weights}  # noqa: E741
    full_names = {l.name for l in kseg.Dilation8(**tiny).layers if l.weights}  # noqa: E741
    assert full_names - front_names == {"context"}


@pytest.mark.slow
def test_parameter_counts_match_the_authors_nets_full_size():
    full = kseg.Dilation8(input_shape=(64, 64, 3))
    context = sum(int(np.prod(w.shape)) for w in full.get_layer("context").weights)
    assert kseg.count_params(full) - context == frontend_params_from_network_py(21) == 134_346_581
    assert kseg.count_params(full) == kseg.models.get("dilation8").num_params == 134_374_973
    del full
    front = kseg.DilatedFrontEnd(input_shape=(64, 64, 3))
    assert kseg.count_params(front) == kseg.models.get("dilation_frontend").num_params


def test_layers_follow_the_authors_front_end():
    model = kseg.Dilation8(num_classes=5, input_shape=(40, 48, 3), width=1 / 16)
    names = [layer.name for layer in model.layers]
    for gone in ("pool4", "pool5"):
        assert gone not in names
    for b in (1, 2, 3):
        assert model.get_layer(f"conv{b}_1").dilation_rate == (1, 1)
    for i in (1, 2, 3):
        assert model.get_layer(f"conv5_{i}").dilation_rate == (2, 2)
    fc6 = model.get_layer("fc6")
    assert fc6.kernel_size == (7, 7) and fc6.dilation_rate == (4, 4)
    assert all(model.get_layer(n).padding == "valid" for n in ("conv1_1", "conv4_3", "conv5_3", "fc6"))
    assert model.get_layer("reflect_pad").margin == DILATION_MARGIN == 186
    ctx = model.get_layer("context")
    assert [c.name for c in ctx.convs][0] == "ctx_conv1_1" and ctx.variant == "basic"
    # output stride 8: n scores with 8 (n - 1) + 1 >= H
    final = model.get_layer("final").output
    assert final.shape[1:3] == (6, 7)


def test_output_is_the_authors_zoom_of_the_stride8_scores():
    model = kseg.DilatedFrontEnd(num_classes=3, input_shape=(33, 41, 3), width=1 / 16, dropout=0)
    scores = keras.Model(model.input, model.get_layer("final").output)
    x = np.random.default_rng(0).uniform(0, 255, (1, 33, 41, 3)).astype("float32")
    y, s = np.asarray(model(x)), np.asarray(scores(x))
    assert y.shape == (1, 33, 41, 3)
    # predict.py interp_map: output pixel 8 j is score j, and in between a bilinear blend
    np.testing.assert_allclose(y[:, ::8, ::8], s[:, :5, :6], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(y[:, 4, 0], (s[:, 0, 0] + s[:, 1, 0]) / 2, rtol=1e-4, atol=1e-6)


def test_untrained_dilation8_predicts_its_front_end():
    shape = dict(num_classes=4, input_shape=(24, 24, 3), width=1 / 16, dropout=0)
    full, front = kseg.Dilation8(**shape), kseg.DilatedFrontEnd(**shape)
    for layer in front.layers:
        if layer.weights:
            layer.set_weights(full.get_layer(layer.name).get_weights())
    final = front.get_layer("final")
    kernel, bias = final.get_weights()
    final.set_weights([kernel, bias + 50.0])  # positive scores: the context ReLUs pass them
    full.get_layer("final").set_weights(final.get_weights())
    x = np.random.default_rng(1).uniform(0, 255, (2, 24, 24, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(full(x)), np.asarray(front(x)), rtol=1e-5, atol=1e-4)


def test_keras_round_trip_safe_mode(tmp_path):
    model = kseg.Dilation8(num_classes=3, input_shape=(24, 32, 3), width=1 / 16, context_variant="large")
    path = str(tmp_path / "dilation8.keras")
    model.save(path)
    clone = keras.saving.load_model(path, safe_mode=True)
    x = np.random.default_rng(2).uniform(0, 255, (1, 24, 32, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(clone(x)), np.asarray(model(x)), atol=1e-5)


def test_saved_model_and_tflite_builtins(tmp_path):
    model = kseg.Dilation8(num_classes=3, input_shape=(24, 24, 3), width=1 / 16)
    export.export_saved_model(model, tmp_path / "sm")
    path = export.export_tflite(model, tmp_path / "dilation8.tflite")
    x = np.random.default_rng(3).uniform(0, 255, (1, 24, 24, 3)).astype("float32")
    assert export.verify_tflite(model, path, x) < 1e-3


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_classes must be >= 2, got 1"):
        kseg.Dilation8(num_classes=1, input_shape=(24, 24, 3))
    with pytest.raises(ValueError, match=">= 2"):
        kseg.DilatedFrontEnd(input_shape=(1, 24, 3))
    with pytest.raises(ValueError, match="variant must be one of"):
        kseg.Dilation8(input_shape=(24, 24, 3), width=1 / 16, context_variant="huge")


@pytest.mark.parametrize("size", [(2, 3), (7, 5), (24, 33), (200, 9)])
def test_margin_padding_is_numpy_reflect_at_any_size(size):
    from kseg.models.dilation import MarginReflectionPadding2D

    layer = MarginReflectionPadding2D()
    x = np.random.default_rng(0).normal(size=(1, *size, 2)).astype("float32")
    extra = [layer.extra(n) for n in size]
    want = np.pad(x, ((0, 0), (186, 186 + extra[0]), (186, 186 + extra[1]), (0, 0)), mode="reflect")
    np.testing.assert_array_equal(np.asarray(layer(x)), want)
    assert all(7 <= e <= 14 for e in extra) and all((n + e) % 8 == 0 for n, e in zip(size, extra))


def test_one_model_takes_every_size():
    """(None, None, 3) builds, and gives what a model built at each size gives (same weights)."""
    anysize = kseg.Dilation8(num_classes=3, width_multiplier=1 / 16)
    assert anysize.input_shape == (None, None, None, 3)
    for size in ((24, 24), (33, 41)):
        fixed = kseg.Dilation8(num_classes=3, input_shape=(*size, 3), width_multiplier=1 / 16)
        fixed.set_weights(anysize.get_weights())
        x = np.random.default_rng(4).uniform(0, 255, (1, *size, 3)).astype("float32")
        y = np.asarray(anysize.predict(x, verbose=0))
        assert y.shape == (1, *size, 3)
        np.testing.assert_allclose(y, np.asarray(fixed(x)), rtol=1e-5, atol=1e-5)
