import numpy as np
import pytest
import tensorflow as tf

from kseg.layers import MaxPoolingWithArgmax2D, MaxUnpooling2D
from kseg.layers.pooling import max_pool_with_argmax_indices, max_unpool_from_indices


def numpy_pool_mask(x, k=2):
    """Reference: ceil-mode max pooling, mask at the first max (row-major) of each window."""
    b, h, w, c = x.shape
    ho, wo = -(-h // k), -(-w // k)
    pooled = np.zeros((b, ho, wo, c), x.dtype)
    mask = np.zeros_like(x)
    for n in range(b):
        for i in range(ho):
            for j in range(wo):
                for ch in range(c):
                    win = x[n, i * k:(i + 1) * k, j * k:(j + 1) * k, ch]
                    flat = win.reshape(-1)
                    a = int(np.argmax(flat))  # first maximum
                    pooled[n, i, j, ch] = flat[a]
                    mask[n, i * k + a // win.shape[1], j * k + a % win.shape[1], ch] = 1
    return pooled, mask


@pytest.mark.parametrize("shape", [(2, 8, 6, 3), (1, 45, 45, 2), (1, 7, 5, 4)])
def test_pool_matches_numpy_with_ties(shape):
    # Small integers make ties frequent: the first-max rule is what is tested.
    x = np.random.RandomState(0).randint(0, 3, size=shape).astype("float32")
    y, mask = MaxPoolingWithArgmax2D()(x)
    ref_y, ref_mask = numpy_pool_mask(x)
    np.testing.assert_array_equal(np.asarray(y), ref_y)
    np.testing.assert_array_equal(np.asarray(mask), ref_mask)
    # exactly one selected element per window
    assert np.asarray(mask).sum() == ref_y.size


def test_odd_size_round_trip_45_23_45():
    x = np.random.RandomState(1).rand(1, 45, 45, 4).astype("float32")
    y, mask = MaxPoolingWithArgmax2D()(x)
    assert y.shape == (1, 23, 23, 4)
    up = np.asarray(MaxUnpooling2D()([y, mask]))
    assert up.shape == (1, 45, 45, 4)
    # unpooling puts each max back where it was and zeros elsewhere
    np.testing.assert_array_equal(up, x * np.asarray(mask))


def test_unpool_matches_argmax_scatter_output_and_gradient():
    x = tf.constant(np.random.RandomState(2).randint(0, 4, size=(2, 9, 11, 3)).astype("float32"))
    g = tf.constant(np.random.RandomState(3).randn(2, 9, 11, 3).astype("float32"))
    pool, unpool = MaxPoolingWithArgmax2D(), MaxUnpooling2D()
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours = unpool(list(pool(x)))
        values, idx = max_pool_with_argmax_indices(x)
        theirs = max_unpool_from_indices(values, idx, tf.shape(x))
        loss_ours = tf.reduce_sum(ours * g)
        loss_theirs = tf.reduce_sum(theirs * g)
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    np.testing.assert_array_equal(tape.gradient(loss_ours, x).numpy(), tape.gradient(loss_theirs, x).numpy())


def test_pool_gradient_goes_to_first_max_only():
    x = tf.ones((1, 2, 2, 1))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y, _ = MaxPoolingWithArgmax2D()(x)
    grad = tape.gradient(y, x).numpy()[0, :, :, 0]
    np.testing.assert_array_equal(grad, [[1, 0], [0, 0]])


def test_unpool_gradient_wrt_values_gathers_at_maxima():
    x = np.random.RandomState(4).rand(1, 6, 6, 2).astype("float32")
    y, mask = MaxPoolingWithArgmax2D()(x)
    y = tf.constant(np.asarray(y))
    g = np.random.RandomState(5).rand(1, 6, 6, 2).astype("float32")
    with tf.GradientTape() as tape:
        tape.watch(y)
        loss = tf.reduce_sum(MaxUnpooling2D()([y, mask]) * g)
    expected, _ = numpy_pool_mask(g * np.asarray(mask) + (np.asarray(mask) - 1) * 1e9)
    np.testing.assert_allclose(tape.gradient(loss, y).numpy(), expected, rtol=1e-6)


def test_config_round_trip_and_errors():
    layer = MaxPoolingWithArgmax2D(pool_size=2, name="pool1")
    clone = MaxPoolingWithArgmax2D.from_config(layer.get_config())
    assert clone.pool_size == 2 and clone.name == "pool1"
    with pytest.raises(ValueError, match="4D"):
        MaxPoolingWithArgmax2D()(np.zeros((4, 4, 3), "float32"))
    with pytest.raises(ValueError, match="values, mask"):
        MaxUnpooling2D()(np.zeros((1, 4, 4, 3), "float32"))


def test_pool_unpool_compiles_with_xla():
    x = np.random.RandomState(6).rand(1, 15, 9, 3).astype("float32")
    pool, unpool = MaxPoolingWithArgmax2D(), MaxUnpooling2D()
    fn = tf.function(lambda t: unpool(list(pool(t))), jit_compile=True)
    np.testing.assert_array_equal(fn(x).numpy(), np.asarray(unpool(list(pool(x)))))


@pytest.mark.parametrize("shape", [(2, 8, 6, 3), (1, 7, 5, 4)])
def test_fused_tf_path_equals_portable_form_with_signed_zero_ties(shape):
    """Eagerly / in tf.function the TF backend takes the fused path (MaxPool + MaxPoolGrad); under XLA
    the keras.ops form runs: same pooled map, mask, unpooled map and input gradient, ties included
    (0.0 and -0.0 compare equal: the first in row-major order wins)."""
    rng = np.random.RandomState(7)
    x = rng.randint(-1, 2, size=shape).astype("float32") * rng.choice([1.0, -1.0], size=shape).astype("float32")
    g = tf.constant(rng.randn(*shape).astype("float32"))
    pool, unpool = MaxPoolingWithArgmax2D(), MaxUnpooling2D()

    def step(t):
        with tf.GradientTape() as tape:
            tape.watch(t)
            y, mask = pool(t)
            loss = tf.reduce_sum(unpool([y, mask]) * g)
        return y, mask, tape.gradient(loss, t)

    fused_fn = tf.function(step)
    fused = fused_fn(tf.constant(x))
    ops_used = {op.type for op in fused_fn.get_concrete_function(tf.constant(x)).graph.get_operations()}
    assert "MaxPool" in ops_used and "MaxPoolGrad" in ops_used and "MaxPoolWithArgmax" not in ops_used
    portable = tf.function(step, jit_compile=True)(tf.constant(x))
    ref_y, ref_mask = numpy_pool_mask(x)
    np.testing.assert_array_equal(fused[0].numpy(), ref_y)
    np.testing.assert_array_equal(fused[1].numpy(), ref_mask)
    for a, b in zip(fused, portable):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_fused_path_low_precision_ties_and_nan_windows(dtype):
    """The fused path in each float dtype (mixed_bfloat16 training runs it in bfloat16): first-max ties
    as the numpy reference, and inside a tf.function a window holding a NaN pools to NaN (MaxPool alone
    would skip it) while the other windows and the gradient to them are unchanged."""
    rng = np.random.RandomState(8)
    x = rng.randint(0, 3, size=(2, 7, 6, 3)).astype("float32")
    pool = MaxPoolingWithArgmax2D(dtype=dtype)
    fn = tf.function(lambda t: pool(t))
    y, mask = fn(tf.constant(x, dtype))
    assert y.dtype == dtype and mask.dtype == dtype
    ref_y, ref_mask = numpy_pool_mask(x)
    np.testing.assert_array_equal(tf.cast(y, "float32").numpy(), ref_y)
    np.testing.assert_array_equal(tf.cast(mask, "float32").numpy(), ref_mask)

    x[1, 2, 3, 1] = np.nan  # window (1, 1) of image 1, channel 1
    t = tf.constant(x, dtype)
    with tf.GradientTape() as tape:
        tape.watch(t)
        y, _ = fn(t)
        y32 = tf.cast(y, "float32")
        loss = tf.reduce_sum(tf.where(tf.math.is_nan(y32), 0.0, y32))
    y32 = y32.numpy()
    assert np.isnan(y32[1, 1, 1, 1]) and np.isnan(y32).sum() == 1
    finite = ~np.isnan(y32)
    np.testing.assert_array_equal(y32[finite], ref_y[finite])
    grad = tf.cast(tape.gradient(loss, t), "float32").numpy()
    assert not np.isnan(grad).any() and grad.sum() == finite.sum()
