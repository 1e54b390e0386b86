import numpy as np
import pytest
import keras

import kseg
from kseg.backbones.deeplab_vgg import caffe_max_pool_3x3_s2, decimate_fc6, decimate_fc7, deeplab_vgg16_trunk
from kseg.models.deeplab import DeepLabV1, DeepLabV2, DeepLabV2ResNet101, DeepLabV2VGG16


def conv(k, cin, cout, bias=True):
    return k * k * cin * cout + (cout if bias else 0)


# VGG16 conv1_1 .. conv5_3 (3x3, bias) as in every DeepLab VGG prototxt.
VGG_CONVS = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
             (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]


def largefov_params(num_classes=21):
    """DeepLab-LargeFOV/train.prototxt: 13 convs, fc6 3x3 (hole 12) 512->1024, fc7 1x1 1024, fc8 1x1."""
    trunk = sum(conv(3, i, o) for i, o in VGG_CONVS)
    return trunk + conv(3, 512, 1024) + conv(1, 1024, 1024) + conv(1, 1024, num_classes)


def aspp_l_params(num_classes=21):
    """deeplab_largeFOV/train.prototxt of deeplab_v2 (ASPP-L): 4 x (fc6_k 3x3 512->1024, fc7_k, fc8_k)."""
    trunk = sum(conv(3, i, o) for i, o in VGG_CONVS)
    return trunk + 4 * (conv(3, 512, 1024) + conv(1, 1024, 1024) + conv(1, 1024, num_classes))


def resnet101_aspp_params(num_classes=21):
    """misc/deploy.prototxt: convs without bias, each with a Scale (gamma, beta); ASPP 4 x 3x3 2048->C + bias."""
    def conv_scale(k, cin, cout):
        return conv(k, cin, cout, bias=False) + 2 * cout

    total = conv_scale(7, 3, 64)  # conv1 + scale_conv1
    cin = 64
    for blocks, mid, out in ((3, 64, 256), (4, 128, 512), (23, 256, 1024), (3, 512, 2048)):
        for b in range(blocks):
            if b == 0:
                total += conv_scale(1, cin, out)  # branch1 (projection)
            total += conv_scale(1, cin, mid) + conv_scale(3, mid, mid) + conv_scale(1, mid, out)
            cin = out
    return total + 4 * conv(3, 2048, num_classes)


def test_parameter_counts_match_the_prototxts():
    assert largefov_params(21) == 20_505_429
    assert aspp_l_params(21) == 37_877_652
    assert resnet101_aspp_params(21) == 44_048_532
    for builder, expected, key in ((DeepLabV1, largefov_params(21), "deeplab_v1"),
                                   (DeepLabV2VGG16, aspp_l_params(21), "deeplab_v2_vgg16"),
                                   (DeepLabV2ResNet101, resnet101_aspp_params(21), "deeplab_v2_resnet101")):
        model = builder(num_classes=21, input_shape=(321, 321, 3))
        assert kseg.count_params(model) == expected, key
        assert kseg.models.get(key).num_params == expected
        assert model.output_shape == (None, 321, 321, 21)


def test_largefov_layers_follow_the_prototxt():
    model = DeepLabV1(num_classes=21, input_shape=(321, 321, 3))
    sizes = {n: model.get_layer(n).output.shape[1] for n in
             ("conv1_2", "pool1", "pool2", "pool3", "pool4", "pool5", "pool5a", "fc6", "fc7", "fc8")}
    # 321 -> 161 -> 81 -> 41 (the comment of the prototxt: n = 32k - 31), then stride 1
    assert sizes == {"conv1_2": 321, "pool1": 161, "pool2": 81, "pool3": 41, "pool4": 41, "pool5": 41,
                     "pool5a": 41, "fc6": 41, "fc7": 41, "fc8": 41}
    assert model.layers[1].name == "preprocess" and model.layers[1].mode == "caffe"
    for n in ("conv5_1", "conv5_2", "conv5_3"):
        assert model.get_layer(n).dilation_rate == (2, 2)
    assert model.get_layer("conv4_3").dilation_rate == (1, 1)
    fc6 = model.get_layer("fc6")
    assert fc6.dilation_rate == (12, 12) and fc6.kernel.shape == (3, 3, 512, 1024)
    assert model.get_layer("fc7").kernel.shape == (1, 1, 1024, 1024)
    assert isinstance(model.get_layer("pool5a"), keras.layers.AveragePooling2D)
    assert model.get_layer("pool4").strides == (1, 1) and model.get_layer("pool3").strides == (2, 2)
    assert model.get_layer("drop6").rate == 0.5 and model.get_layer("drop7").rate == 0.5
    assert isinstance(model.get_layer("fc8_interp"), kseg.layers.Interp)


def test_caffe_ceil_mode_sizes_for_even_inputs():
    # Caffe: ceil((H + 2 - 3) / 2) + 1: 360 -> 181 -> 91 -> 46, 480 -> 241 -> 121 -> 61
    model = DeepLabV1(num_classes=11, input_shape=(360, 480, 3), width_multiplier=1 / 16, fc_width=8)
    assert model.get_layer("pool3").output.shape[1:3] == (46, 61)
    assert model.get_layer("pool1").output.shape[1:3] == (181, 241)
    assert model.output_shape == (None, 360, 480, 11)


def caffe_max_pool_reference(x, k=3, s=2, pad=1):
    """Caffe PoolingLayer (MAX) forward: ceil output size, windows clipped to the image."""
    h, w = x.shape
    oh = int(np.ceil((h + 2 * pad - k) / s)) + 1
    ow = int(np.ceil((w + 2 * pad - k) / s)) + 1
    if (oh - 1) * s >= h + pad:
        oh -= 1
    if (ow - 1) * s >= w + pad:
        ow -= 1
    out = np.zeros((oh, ow))
    for i in range(oh):
        for j in range(ow):
            hs, ws = max(i * s - pad, 0), max(j * s - pad, 0)
            he, we = min(i * s - pad + k, h), min(j * s - pad + k, w)
            out[i, j] = x[hs:he, ws:we].max()
    return out


@pytest.mark.parametrize("shape", [(7, 7), (8, 10), (9, 4)])
def test_caffe_max_pool_matches_caffe_forward(shape):
    x = np.random.default_rng(0).random((1,) + shape + (1,)).astype("float32")  # post-ReLU: >= 0
    inp = keras.Input(shape[:2] + (1,))
    y = keras.Model(inp, caffe_max_pool_3x3_s2(inp, "pool"))(x)
    np.testing.assert_allclose(np.asarray(y)[0, :, :, 0], caffe_max_pool_reference(x[0, :, :, 0]), rtol=1e-6)


def test_pool5a_averages_like_caffe_counting_the_padding():
    model = DeepLabV1(num_classes=3, input_shape=(33, 33, 3), width_multiplier=1 / 32, fc_width=4)
    ones = np.ones((1, 5, 5, 2), "float32")
    y = np.asarray(model.get_layer("pool5a")(model.get_layer("pool5a_pad")(ones)))[0, :, :, 0]
    assert y[0, 0] == pytest.approx(4 / 9) and y[0, 2] == pytest.approx(6 / 9) and y[2, 2] == pytest.approx(1.0)


def test_fc_decimation_picks_every_4th_filter_and_every_3rd_tap():
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(7, 7, 2, 16))
    bias = np.arange(16.0)
    k6, b6 = decimate_fc6(kernel.reshape(7 * 7 * 2, 16), bias, taps=3, filters=4)  # Dense layout
    assert k6.shape == (3, 3, 2, 4) and b6.tolist() == [0, 4, 8, 12]
    assert np.array_equal(k6[1, 2, :, 3], kernel[3, 6, :, 12])
    k7, b7 = decimate_fc7(rng.normal(size=(16, 16)), bias, filters=4)
    assert k7.shape == (1, 1, 4, 4) and b7.tolist() == [0, 4, 8, 12]
    with pytest.raises(ValueError, match="cannot decimate"):
        decimate_fc6(kernel, bias, taps=3, filters=5)


def test_largefov_small_predict_save_and_load(tmp_path):
    model = DeepLabV1(num_classes=5, input_shape=(65, 65, 3), width_multiplier=1 / 16, fc_width=16)
    x = np.random.default_rng(1).random((2, 65, 65, 3)).astype("float32") * 255
    y = model.predict(x, verbose=0)
    assert y.shape == (2, 65, 65, 5) and np.isfinite(y).all()
    assert model.get_layer("fc8").output.shape[1:3] == (9, 9)
    path = tmp_path / "deeplab_v1.keras"
    model.save(path)
    again = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(again.predict(x, verbose=0), y, rtol=1e-5, atol=1e-5)


def test_upsampling_is_corner_aligned_bilinear_of_fc8():
    model = DeepLabV1(num_classes=3, input_shape=(33, 33, 3), width_multiplier=1 / 32, fc_width=4)
    x = np.random.default_rng(2).random((1, 33, 33, 3)).astype("float32") * 255
    fc8 = keras.Model(model.input, model.get_layer("fc8").output).predict(x, verbose=0)
    out = model.predict(x, verbose=0)
    assert fc8.shape[1:3] == (5, 5)
    # corner alignment: output pixel 8j is fc8 pixel j exactly
    np.testing.assert_allclose(out[:, ::8, ::8], fc8, rtol=1e-5, atol=1e-5)


def test_deeplab_v2_vgg16_aspp_branches():
    model = DeepLabV2VGG16(num_classes=21, input_shape=(321, 321, 3))
    aspp = model.get_layer("fc8")
    assert "pool5a" not in {layer.name for layer in model.layers}
    assert aspp.input.shape[1:] == (41, 41, 512)
    names = [[c.name for c in convs] + [out.name] for convs, out in aspp.branches]
    assert names == [[f"fc6_{k}", f"fc7_{k}", f"fc8_{k}"] for k in "1234"]
    assert [convs[0].dilation_rate[0] for convs, _ in aspp.branches] == [6, 12, 18, 24]


def test_deeplab_v2_resnet101_structure():
    model = DeepLabV2ResNet101(num_classes=21, input_shape=(321, 321, 3))
    aspp = model.get_layer("fc1_voc12")
    assert [out.name for _, out in aspp.branches] == [f"fc1_voc12_c{k}" for k in range(4)]
    assert [out.dilation_rate[0] for _, out in aspp.branches] == [6, 12, 18, 24]
    assert aspp.input.shape[1:] == (41, 41, 2048)
    assert model.get_layer("res5c").output.shape[1:3] == (41, 41)


def test_deeplab_v2_multi_scale_fuses_by_max_with_shared_weights(tmp_path):
    model = DeepLabV2ResNet101(num_classes=4, input_shape=(49, 49, 3), multi_scale=True,
                               width_multiplier=1 / 16, depths=(1, 1, 2, 1))
    net = model.get_layer("deeplab_v2_resnet101_net")
    names = {layer.name for layer in model.layers}
    assert {"data_res075", "data_res05", "scores_res075_interp", "scores_res05_interp", "fc_fusion"} <= names
    # one set of weights for the three scales
    assert kseg.count_params(model) == kseg.count_params(net)
    x = np.random.default_rng(3).random((1, 49, 49, 3)).astype("float32") * 255
    pre = np.asarray(model.get_layer("preprocess")(x))
    s1 = np.asarray(net(pre))
    s075 = np.asarray(net(model.get_layer("data_res075")(pre)))
    s05 = np.asarray(net(model.get_layer("data_res05")(pre)))
    assert s1.shape[1] == 7 and s075.shape[1] == 5 and s05.shape[1] == 4  # 49, 37, 25 -> stride 8
    interp = kseg.layers.Interp()
    fused = np.maximum(np.maximum(s1, np.asarray(interp([s075, s1]))), np.asarray(interp([s05, s1])))
    got = keras.Model(model.input, model.get_layer("fc_fusion").output).predict(x, verbose=0)
    np.testing.assert_allclose(got, fused, rtol=1e-4, atol=1e-4)
    path = tmp_path / "msc.keras"
    model.save(path)
    again = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-4, atol=1e-4)


def test_deeplab_v2_vgg16_small_predict():
    model = DeepLabV2(backbone="vgg16", num_classes=3, input_shape=(41, 57, 3), width_multiplier=1 / 16,
                      fc_width=8, multi_scale=True)
    y = model.predict(np.random.default_rng(4).random((1, 41, 57, 3)).astype("float32") * 255, verbose=0)
    assert y.shape == (1, 41, 57, 3) and np.isfinite(y).all()


def test_trunk_returns_named_features():
    x = keras.Input((33, 33, 3))
    feats = deeplab_vgg16_trunk(x, width_multiplier=1 / 16, include_fc=False, pool5a=False)
    assert set(feats) == {"conv1_2", "pool1", "conv2_2", "pool2", "conv3_3", "pool3", "conv4_3", "pool4",
                          "conv5_3", "pool5"}
    assert feats["pool5"].shape[1:] == (5, 5, 32)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="num_classes must be >= 2, got 1"):
        DeepLabV1(num_classes=1)
    with pytest.raises(ValueError, match="input_shape"):
        DeepLabV1(input_shape=(64, 64))
    with pytest.raises(ValueError, match="backbone must be"):
        DeepLabV2(backbone="alexnet")
    with pytest.raises(ValueError, match="scales must start with 1.0"):
        DeepLabV2(multi_scale=True, scales=(0.5, 1.0))
    with pytest.raises(ValueError, match="width_multiplier must be > 0"):
        DeepLabV1(width_multiplier=0)


def test_registry_cards():
    for key in ("deeplab_v1", "deeplab_v2_vgg16", "deeplab_v2_resnet101"):
        card = kseg.models.get(key)
        assert card.output_stride == 8 and card.default_num_classes == 21
    model = kseg.models.get("deeplab_v1").build(num_classes=11, input_shape=(33, 33, 3),
                                                width_multiplier=1 / 32, fc_width=4)
    assert model.output_shape == (None, 33, 33, 11)


def test_crf_option_outputs_logits_of_the_crf_marginals():
    crf_layers = pytest.importorskip("kseg.layers.crf")
    if not hasattr(crf_layers, "DenseCRF"):
        pytest.skip("kseg.layers.DenseCRF not available yet")
    kw = dict(num_classes=3, input_shape=(33, 41, 3), width_multiplier=1 / 32, fc_width=4)
    plain = DeepLabV1(**kw)
    model = DeepLabV1(crf=True, crf_iterations=3, **kw)
    model.set_weights(plain.get_weights())
    x = np.random.default_rng(5).random((2, 33, 41, 3)).astype("float32") * 255
    y = model.predict(x, verbose=0)
    assert y.shape == (2, 33, 41, 3)
    # log-probabilities: exp sums to one
    np.testing.assert_allclose(np.exp(y).sum(-1), 1.0, atol=1e-4)
    # equals DenseCRF applied to the plain model's logits
    q = np.asarray(model.get_layer("crf")([plain.predict(x, verbose=0), x]))
    np.testing.assert_allclose(np.exp(y), q, atol=1e-4)


@pytest.mark.slow
def test_largefov_imagenet_init_from_a_vgg16_file(tmp_path):
    ref = keras.applications.VGG16(weights=None, include_top=True)
    path = tmp_path / "vgg16.weights.h5"
    ref.save_weights(path)
    model = DeepLabV1(num_classes=21, encoder_weights=str(path))
    np.testing.assert_array_equal(model.get_layer("conv3_2").get_weights()[0],
                                  ref.get_layer("block3_conv2").get_weights()[0])
    fc6 = ref.get_layer("fc1").get_weights()[0].reshape(7, 7, 512, 4096)
    np.testing.assert_array_equal(model.get_layer("fc6").get_weights()[0], fc6[::3, ::3, :, ::4])
    fc7 = ref.get_layer("fc2").get_weights()[0]
    np.testing.assert_array_equal(model.get_layer("fc7").get_weights()[0][0, 0], fc7[::4, ::4])


def test_saved_model_with_the_crf_inside_runs_without_keras(tmp_path):
    crf_layers = pytest.importorskip("kseg.layers.crf")
    if not hasattr(crf_layers, "DenseCRF"):
        pytest.skip("kseg.layers.DenseCRF not available yet")
    tf = pytest.importorskip("tensorflow")
    from kseg.export import export_saved_model

    model = DeepLabV1(num_classes=3, input_shape=(33, 41, 3), width_multiplier=1 / 32, fc_width=4,
                      crf=True, crf_iterations=2)
    x = np.random.default_rng(6).integers(0, 256, (1, 33, 41, 3)).astype("uint8")
    path = export_saved_model(model, tmp_path / "deeplab_crf")
    served = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(x))
    expected = np.exp(model.predict(x.astype("float32"), verbose=0))
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-4)
