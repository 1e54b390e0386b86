import keras
import numpy as np
import pytest

from kseg.layers.crop import CropToReference


def test_crop_matches_numpy_slicing():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 40, 41, 5)).astype("float32")
    ref = np.zeros((2, 21, 17, 1), "float32")
    np.testing.assert_array_equal(np.asarray(CropToReference(19)([x, ref])), x[:, 19:40, 19:36])
    np.testing.assert_array_equal(np.asarray(CropToReference((3, 7))([x, ref])), x[:, 3:24, 7:24])


def test_crop_in_a_variable_size_model_and_gradient():
    inp = keras.Input((None, None, 2))
    ref = keras.Input((None, None, 1))
    model = keras.Model([inp, ref], CropToReference(5)([inp, ref]))
    x = np.random.rand(1, 30, 20, 2).astype("float32")
    out = model.predict([x, np.zeros((1, 9, 8, 1), "float32")], verbose=0)
    np.testing.assert_array_equal(out, x[:, 5:14, 5:13])
    import tensorflow as tf

    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = tf.reduce_sum(CropToReference(5)([xt, tf.zeros((1, 9, 8, 1))]))
    g = tape.gradient(y, xt).numpy()
    assert g.sum() == 9 * 8 * 2 and g[:, 5:14, 5:13].min() == 1


def test_crop_errors_and_config():
    with pytest.raises(ValueError, match="cannot crop 10 pixels at offset 5 from a map of 12"):
        CropToReference(5)([keras.Input((12, 12, 1)), keras.Input((10, 10, 1))])
    with pytest.raises(ValueError, match="offset must be >= 0"):
        CropToReference(-1)
    layer = CropToReference((2, 3), name="c")
    clone = CropToReference.from_config(layer.get_config())
    assert clone.offset == (2, 3) and clone.name == "c"
