"""kseg's BatchNormalization: TensorFlow's fused training kernel, the Keras layer's numbers."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from kseg.layers import BatchNormalization  # noqa: E402


def _pair(shape, **kwargs):
    """A Keras and a kseg layer with the same (non-trivial) weights."""
    out = []
    for cls in (keras.layers.BatchNormalization, BatchNormalization):
        layer = cls(**kwargs)
        layer.build(shape)
        for w, v in zip(layer.weights, _values(layer)):
            w.assign(v)
        out.append(layer)
    return out


def _values(layer):
    rng = np.random.default_rng(1)
    return [rng.uniform(0.5, 2.0, w.shape).astype("float32") if "variance" in w.path or "gamma" in w.path
            else rng.normal(0, 0.3, w.shape).astype("float32") for w in layer.weights]


def _train_step(layer, x, fn=tf.function):
    @fn
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * tf.sin(x))  # a gradient that differs per element
        return y, tape.gradient(loss, [x] + layer.trainable_weights)
    return step(x)


@pytest.mark.parametrize("kwargs", [
    {"momentum": 0.5},
    {"momentum": 0.9, "epsilon": 1e-5, "center": False},
    {"momentum": 0.99, "scale": False, "beta_initializer": "ones"},
])
def test_training_step_equals_keras_layer(kwargs):
    x = tf.constant(np.random.default_rng(0).normal(2.0, 3.0, (3, 7, 5, 6)).astype("float32"))
    ref, fused = _pair(x.shape, **kwargs)
    for layer in (ref, fused):
        layer.out, layer.grads = _train_step(layer, x)
    np.testing.assert_allclose(fused.out, ref.out, rtol=1e-5, atol=1e-5)
    assert len(fused.grads) == len(ref.grads) == 1 + int(kwargs.get("scale", True)) + int(kwargs.get("center", True))
    for a, b in zip(fused.grads, ref.grads):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    # the moving statistics take the biased variance, as Keras' layer does (the kernel's is Bessel-corrected)
    np.testing.assert_allclose(fused.moving_mean, ref.moving_mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(fused.moving_variance, ref.moving_variance, rtol=1e-5)
    assert not np.allclose(fused.moving_variance, _values(fused)[-1])  # they did move


def test_epsilon_below_cudnns_minimum_is_kept():
    """tf.nn.fused_batch_norm raises epsilon to 1.001e-5; the layer passes its own to the kernel."""
    rng = np.random.default_rng(0)
    x = (0.5 + 3e-3 * rng.normal(size=(2, 6, 5, 3))).astype("float64")  # variance ~1e-5: epsilon shows
    _, fused = _pair(x.shape, epsilon=1e-8)
    gamma, beta = fused.gamma.numpy().astype("float64"), fused.beta.numpy().astype("float64")
    y, _ = _train_step(fused, tf.constant(x, "float32"))

    def expected(eps):
        mean, var = x.mean((0, 1, 2)), x.var((0, 1, 2))
        return gamma * (x - mean) / np.sqrt(var + eps) + beta

    np.testing.assert_allclose(y, expected(1e-8), rtol=2e-4, atol=2e-4)
    assert np.abs(expected(1.001e-5) - expected(1e-8)).max() > 0.1


def test_the_fused_kernel_is_what_runs_and_inference_is_unchanged():
    x = tf.random.normal((2, 6, 4, 3))
    ref, fused = _pair(x.shape)
    graph = tf.function(lambda x: fused(x, training=True)).get_concrete_function(x).graph
    types = {op.type for op in graph.get_operations()}
    assert "FusedBatchNormV3" in types and "Mean" not in types
    graph = tf.function(lambda x: ref(x, training=True)).get_concrete_function(x).graph
    assert "FusedBatchNormV3" not in {op.type for op in graph.get_operations()}
    # inference, eager and traced: the Keras computation itself
    np.testing.assert_array_equal(fused(x, training=False), ref(x, training=False))
    graph = tf.function(lambda x: fused(x, training=False)).get_concrete_function(x).graph
    assert "FusedBatchNormV3" not in {op.type for op in graph.get_operations()}


def test_eager_xla_frozen_and_rank_2_give_keras_numbers():
    x4 = tf.random.normal((2, 5, 4, 3)) * 2 + 1
    for fn in (lambda f: f, lambda f: tf.function(f, jit_compile=True)):  # eager (fused) and XLA (Keras' form)
        ref, fused = _pair(x4.shape, momentum=0.7)
        y_ref, g_ref = _train_step(ref, x4, fn)
        y, g = _train_step(fused, x4, fn)
        np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(fused.moving_variance, ref.moving_variance, rtol=1e-5)
    x2 = tf.random.normal((8, 3))  # rank 2: Keras' form
    ref, fused = _pair(x2.shape)
    np.testing.assert_allclose(_train_step(fused, x2)[0], _train_step(ref, x2)[0], rtol=1e-6, atol=1e-6)
    ref, fused = _pair(x4.shape)
    fused.trainable = ref.trainable = False  # frozen BN normalises with its moving statistics
    np.testing.assert_array_equal(fused(x4, training=True), ref(x4, training=True))


def test_one_value_per_channel_gives_zero_variance_like_keras():
    x = tf.constant(np.arange(1.0, 4.0, dtype="float32").reshape(1, 1, 1, 3))
    ref, fused = _pair(x.shape, momentum=0.0)
    _train_step(ref, x)
    _train_step(fused, x)
    np.testing.assert_array_equal(fused.moving_variance, np.zeros(3))
    np.testing.assert_array_equal(fused.moving_variance, ref.moving_variance)
    np.testing.assert_allclose(fused.moving_mean, [1.0, 2.0, 3.0])


def test_mixed_bfloat16_matches_keras_layer():
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        x = tf.cast(tf.random.normal((2, 6, 5, 4)) * 3, "bfloat16")
        ref, fused = _pair(x.shape)
        y_ref, g_ref = _train_step(ref, x)
        y, g = _train_step(fused, x)
        assert y.dtype == y_ref.dtype == tf.bfloat16
        np.testing.assert_allclose(tf.cast(y, "float32"), tf.cast(y_ref, "float32"), rtol=1e-2, atol=1e-2)
        np.testing.assert_allclose(fused.moving_variance, ref.moving_variance, rtol=1e-5)
        for a, b in zip(g, g_ref):  # d/dx in bfloat16, d/dgamma and d/dbeta in float32
            assert a.dtype == b.dtype
            np.testing.assert_allclose(tf.cast(a, "float32"), tf.cast(b, "float32"), rtol=5e-2, atol=5e-2)
        # the kernel takes the bfloat16 map itself (no float32 copy each way); statistics stay float32
        graph = tf.function(lambda x: fused(x, training=True)).get_concrete_function(x).graph
        (op,) = [op for op in graph.get_operations() if op.type == "FusedBatchNormV3"]
        assert op.get_attr("T") == tf.bfloat16 and op.get_attr("U") == tf.float32
    finally:
        keras.config.set_dtype_policy(policy)


def test_config_round_trip_and_the_models_that_use_it():
    layer = BatchNormalization(momentum=0.8, epsilon=1e-4, beta_initializer=keras.initializers.Constant(0.001))
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(clone) is BatchNormalization and clone.momentum == 0.8 and clone.epsilon == 1e-4
    assert isinstance(clone, keras.layers.BatchNormalization)  # weight converters and BN recomputation find it
    import kseg

    model = kseg.SegNetBasic(num_classes=12, input_shape=(32, 32, 3))
    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert len(bns) == 8 and all(type(l) is BatchNormalization for l in bns)
