import numpy as np
import pytest
import keras

from kseg.backbones.resnet import (
    RESNET101_STAGES,
    fold_conv_bias_into_bn,
    load_resnet101_imagenet,
    msra_block_names,
    resnet101_layer_names,
    resnet101_trunk,
)


def _trunk_model(input_shape=(65, 65, 3), **kw):
    inputs = keras.Input(input_shape)
    feats = resnet101_trunk(inputs, **kw)
    return keras.Model(inputs, feats["res5"]), feats


def test_folding_a_conv_bias_into_the_frozen_bn_is_exact():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 9, 9, 4)).astype("float32")
    kernel = rng.normal(size=(3, 3, 4, 6)).astype("float32")
    bias = rng.normal(size=6).astype("float32")
    bn_weights = [rng.uniform(0.5, 2, 6), rng.normal(size=6), rng.normal(size=6), rng.uniform(0.1, 3, 6)]
    bn_weights = [w.astype("float32") for w in bn_weights]

    conv_b = keras.layers.Conv2D(6, 3, use_bias=True)
    bn_b = keras.layers.BatchNormalization(epsilon=1e-5)
    y_ref = bn_b(conv_b(x), training=False)  # builds both
    conv_b.set_weights([kernel, bias])
    bn_b.set_weights(bn_weights)
    y_ref = np.asarray(bn_b(conv_b(x), training=False))

    conv_n = keras.layers.Conv2D(6, 3, use_bias=False)
    bn_n = keras.layers.BatchNormalization(epsilon=1e-5)
    bn_n(conv_n(x), training=False)
    conv_n.set_weights([kernel])
    folded = fold_conv_bias_into_bn(bias, *bn_weights)
    bn_n.set_weights(folded)
    np.testing.assert_allclose(np.asarray(bn_n(conv_n(x), training=False)), y_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(folded[2], bn_weights[2] - bias)
    # a numpy statement of the identity, independent of Keras
    z = rng.normal(size=(5, 6))
    g, b, m, v = bn_weights
    lhs = g * (z + bias - m) / np.sqrt(v + 1e-5) + b
    rhs = g * (z - folded[2]) / np.sqrt(folded[3] + 1e-5) + folded[1]
    np.testing.assert_allclose(lhs, rhs, rtol=1e-5, atol=1e-5)


def test_msra_block_names():
    assert msra_block_names(2, 3) == ["a", "b", "c"]
    assert msra_block_names(3, 4) == ["a", "b1", "b2", "b3"]
    assert msra_block_names(4, 23)[-1] == "b22"
    assert msra_block_names(5, 3) == ["a", "b", "c"]


def test_full_trunk_structure_follows_the_deploy_prototxt():
    model, feats = _trunk_model((321, 321, 3))
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(convs) == 104 and len(bns) == 104  # 1 + 3 * (3 + 4 + 23 + 3) + 4 projections
    assert not any(c.use_bias for c in convs)
    assert not any(b.trainable for b in bns) and all(b.epsilon == 1e-5 for b in bns)
    assert {c.name for c in convs} | {b.name for b in bns} == set(resnet101_layer_names())
    get = model.get_layer
    assert get("conv1").kernel_size == (7, 7) and get("conv1").strides == (2, 2)
    assert get("res3a_branch1").strides == (2, 2) and get("res3a_branch2a").strides == (2, 2)
    assert get("res3a_branch2b").strides == (1, 1)  # MSRA: stride on the 1x1
    assert get("res4a_branch2a").strides == (1, 1) and get("res4a_branch1").strides == (1, 1)
    assert get("res4b22_branch2b").dilation_rate == (2, 2) and get("res4a_branch2b").dilation_rate == (2, 2)
    assert get("res5c_branch2b").dilation_rate == (4, 4) and get("res3b3_branch2b").dilation_rate == (1, 1)
    sizes = {k: feats[k].shape[1] for k in ("conv1", "pool1", "res2", "res3", "res4", "res5")}
    assert sizes == {"conv1": 161, "pool1": 81, "res2": 81, "res3": 41, "res4": 41, "res5": 41}
    assert feats["res5"].shape[-1] == 2048 and "res4b22" in feats and "res3b3" in feats


def test_name_map_targets_exist_in_keras_resnet101():
    ref = keras.applications.ResNet101(weights=None, include_top=False, input_shape=(64, 64, 3))
    theirs = {layer.name for layer in ref.layers}
    mapping = resnet101_layer_names()
    assert len(mapping) == 208
    missing = [v for v in mapping.values() if v not in theirs]
    assert not missing, missing[:5]
    assert mapping["res4b22_branch2c"] == "conv4_block23_3_conv" and mapping["bn3a_branch1"] == "conv3_block1_0_bn"


def test_small_trunk_runs_and_rejects_bad_arguments():
    model, _ = _trunk_model((33, 33, 3), width_multiplier=1 / 16, depths=(1, 1, 2, 1))
    y = model.predict(np.random.default_rng(1).random((1, 33, 33, 3)).astype("float32"), verbose=0)
    assert y.shape == (1, 5, 5, 128) and np.isfinite(y).all()
    with pytest.raises(ValueError, match="depths must be 4"):
        _trunk_model(depths=(1, 1, 1))
    with pytest.raises(ValueError, match="width_multiplier must be > 0"):
        _trunk_model(width_multiplier=0)


@pytest.mark.slow
def test_imagenet_loading_from_a_keras_resnet101_file_reproduces_its_features(tmp_path):
    """A random keras.applications.ResNet101 saved locally: after name mapping and bias folding our
    trunk computes the same res3b3 (= conv3_block4_out; res4/res5 differ only by the atrous design)."""
    ref = keras.applications.ResNet101(weights=None, include_top=False, input_shape=(65, 65, 3))
    rng = np.random.default_rng(0)
    for layer in ref.layers:  # non-trivial BN statistics and conv biases
        if isinstance(layer, keras.layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0, 0.1, b.shape),
                               rng.normal(0, 0.1, m.shape), rng.uniform(0.5, 2, v.shape)])
        elif isinstance(layer, keras.layers.Conv2D):
            k, b = layer.get_weights()
            layer.set_weights([k, rng.normal(0, 0.1, b.shape)])
    path = tmp_path / "resnet101.weights.h5"
    ref.save_weights(path)
    inputs = keras.Input((65, 65, 3))
    feats = resnet101_trunk(inputs)
    model = keras.Model(inputs, [feats["res3b3"], feats["res5"]])
    loaded = load_resnet101_imagenet(model, str(path))
    assert len(loaded) == 104
    x = rng.normal(0, 50, (1, 65, 65, 3)).astype("float32")
    ours = model.predict(x, verbose=0)[0]
    theirs = keras.Model(ref.input, ref.get_layer("conv3_block4_out").output).predict(x, verbose=0)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=2e-3, atol=2e-3 * np.abs(theirs).max())
    np.testing.assert_array_equal(model.get_layer("res5c_branch2b").get_weights()[0],
                                  ref.get_layer("conv5_block3_2_conv").get_weights()[0])
