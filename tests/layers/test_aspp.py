import numpy as np
import pytest
import keras

from kseg.layers.aspp import AtrousSpatialPyramid
from kseg.layers.interp import Interp, caffe_interp_size


def np_dilated_conv(x, kernel, bias, rate):
    """Plain numpy 'same' dilated convolution (pad = rate * (k - 1) / 2, as the prototxts)."""
    k = kernel.shape[0]
    pad = rate * (k - 1) // 2
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    h, w = x.shape[1:3]
    out = np.zeros(x.shape[:3] + (kernel.shape[-1],), np.float64)
    for i in range(k):
        for j in range(k):
            patch = xp[:, i * rate:i * rate + h, j * rate:j * rate + w, :]
            out += patch @ kernel[i, j]
    return out + bias


def np_interp(x, out_h, out_w, align_corners=True):
    def axis_weights(n, out):
        pos = np.arange(out, dtype=np.float64)
        if align_corners:
            src = pos * (n - 1) / max(out - 1, 1)
        else:
            src = np.clip((pos + 0.5) * n / out - 0.5, 0, n - 1)
        m = np.zeros((out, n))
        i0 = np.floor(src).astype(int)
        i1 = np.minimum(i0 + 1, n - 1)
        f = src - i0
        m[np.arange(out), i0] += 1 - f
        m[np.arange(out), i1] += f
        return m

    mh = axis_weights(x.shape[1], out_h)
    mw = axis_weights(x.shape[2], out_w)
    return np.einsum("ah,bw,nhwc->nabc", mh, mw, x)


def test_aspp_resnet_form_matches_numpy_sum_of_dilated_convs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 13, 11, 4)).astype("float32")
    aspp = AtrousSpatialPyramid(3, rates=(1, 2, 6), branch_names=["c0", "c1", "c2"])
    y = np.asarray(aspp(x))
    ref = 0
    for convs, out in aspp.branches:
        assert not convs
        kernel, bias = (np.asarray(w, np.float64) for w in out.get_weights())
        ref = ref + np_dilated_conv(x.astype(np.float64), kernel, bias, out.dilation_rate[0])
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)
    assert [out.name for _, out in aspp.branches] == ["c0", "c1", "c2"]
    # 3 branches of a 3x3x4x3 conv with bias
    assert sum(int(np.prod(w.shape)) for w in aspp.weights) == 3 * (3 * 3 * 4 * 3 + 3)


def test_aspp_vgg_form_matches_numpy_and_dropout_only_in_training():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 9, 9, 3)).astype("float32")
    aspp = AtrousSpatialPyramid(2, rates=(2, 4), hidden_units=(5, 6), dropout=0.5)
    y = np.asarray(aspp(x, training=False))
    ref = 0
    for convs, out in aspp.branches:
        h = x.astype(np.float64)
        for conv in convs:
            kernel, bias = (np.asarray(w, np.float64) for w in conv.get_weights())
            h = np.maximum(np_dilated_conv(h, kernel, bias, conv.dilation_rate[0]), 0)
        kernel, bias = (np.asarray(w, np.float64) for w in out.get_weights())
        ref = ref + np_dilated_conv(h, kernel, bias, 1)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)
    names = [c.name for c in aspp.branches[0][0]] + [aspp.branches[0][1].name]
    assert names == ["fc6_1", "fc7_1", "fc8_1"]
    y_train = np.asarray(aspp(x, training=True))
    assert not np.allclose(y_train, y)


def test_aspp_serialises_and_rejects_bad_arguments():
    aspp = AtrousSpatialPyramid(4, rates=(6, 12), hidden_units=(8,), branch_names=["a", "b"], name="fc8")
    clone = AtrousSpatialPyramid.from_config(aspp.get_config())
    assert clone.rates == (6, 12) and clone.hidden_units == (8,) and clone.branch_names == ["a", "b"]
    with pytest.raises(ValueError, match="rates"):
        AtrousSpatialPyramid(4, rates=(0, 2))
    with pytest.raises(ValueError, match="filters must be >= 1, got 0"):
        AtrousSpatialPyramid(0)
    with pytest.raises(ValueError, match="branch_names"):
        AtrousSpatialPyramid(2, rates=(1, 2), branch_names=["a"])


@pytest.mark.parametrize("align_corners", [True, False])
def test_interp_matches_numpy_bilinear(align_corners):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 6, 8, 3)).astype("float32")
    y = np.asarray(Interp(size=(41, 17), align_corners=align_corners)(x))
    np.testing.assert_allclose(y, np_interp(x, 41, 17, align_corners), rtol=1e-5, atol=1e-5)
    # shrinking too
    y = np.asarray(Interp(size=(3, 5), align_corners=align_corners)(x))
    np.testing.assert_allclose(y, np_interp(x, 3, 5, align_corners), rtol=1e-5, atol=1e-5)


def test_interp_align_corners_matches_tf_resize_bilinear():
    tf = pytest.importorskip("tensorflow")
    x = np.random.default_rng(3).normal(size=(1, 41, 46, 2)).astype("float32")
    ref = tf.compat.v1.image.resize_bilinear(x, (321, 361), align_corners=True).numpy()
    np.testing.assert_allclose(np.asarray(Interp(size=(321, 361))(x)), ref, rtol=1e-4, atol=1e-4)


def test_interp_to_reference_scale_and_in_a_model():
    assert caffe_interp_size(321, 0.75) == 241 and caffe_interp_size(321, 0.5) == 161
    assert caffe_interp_size(41, 8) == 321
    x = np.random.default_rng(4).normal(size=(1, 5, 7, 2)).astype("float32")
    ref = np.zeros((1, 9, 13, 1), "float32")
    np.testing.assert_allclose(np.asarray(Interp()([x, ref])), np_interp(x, 9, 13), rtol=1e-5, atol=1e-5)
    y = np.asarray(Interp(scale=0.5)(np.zeros((1, 321, 9, 1), "float32")))
    assert y.shape == (1, 161, 5, 1)
    # variable-size model: the output follows the reference at run time
    a, b = keras.Input((None, None, 2)), keras.Input((None, None, 1))
    model = keras.Model([a, b], Interp(name="up")([a, b]))
    assert model.predict([x, ref], verbose=0).shape == (1, 9, 13, 2)
    clone = Interp.from_config(Interp(size=(3, 4), align_corners=False).get_config())
    assert clone.size == (3, 4) and not clone.align_corners
    with pytest.raises(ValueError, match="scale must be > 0"):
        Interp(scale=0)


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("kwargs", [{"scale": 0.75}, {"scale": 8}, {"size": (13, 4)}])
def test_interp_static_sizes_equal_the_run_time_path(kwargs, align_corners):
    """Where both sizes are known when the layer is called, its taps are numpy constants (so JAX's
    abstract shape inference needs no concrete size); they must equal the run-time path's exactly."""
    x = np.random.default_rng(5).normal(size=(2, 41, 9, 3)).astype("float32")
    layer = Interp(align_corners=align_corners, **kwargs)
    static = keras.Model(inp := keras.Input((41, 9, 3)), layer(inp))
    dynamic = keras.Model(inp := keras.Input((None, None, 3)), layer(inp))
    a, b = static.predict(x, verbose=0), dynamic.predict(x, verbose=0)
    assert a.shape == b.shape and a.shape[1:] == static.output_shape[1:]
    np.testing.assert_array_equal(a, b)
