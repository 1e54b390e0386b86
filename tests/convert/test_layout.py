"""kseg.convert.layout against hand-made arrays and independent numpy references of Caffe's maths."""

import numpy as np
import pytest

from kseg.convert import layout


def _caffe_conv(x_chw, w_oihw, b):
    """Caffe's Convolution (cross-correlation, stride 1, no pad) written as loops over the output."""
    o, i, kh, kw = w_oihw.shape
    _, h, w = x_chw.shape
    out = np.zeros((o, h - kh + 1, w - kw + 1), np.float64)
    for y in range(out.shape[1]):
        for x in range(out.shape[2]):
            patch = x_chw[:, y:y + kh, x:x + kw]
            out[:, y, x] = np.tensordot(w_oihw, patch, axes=([1, 2, 3], [0, 1, 2])) + b
    return out


def _caffe_deconv(x_chw, w_iohw, b, stride):
    """Caffe's Deconvolution: each input pixel scatters w[c_in] * x into a stride-spaced window."""
    ci, co, kh, kw = w_iohw.shape
    _, h, w = x_chw.shape
    out = np.zeros((co, (h - 1) * stride + kh, (w - 1) * stride + kw), np.float64)
    for y in range(h):
        for x in range(w):
            out[:, y * stride:y * stride + kh, x * stride:x * stride + kw] += np.tensordot(
                x_chw[:, y, x], w_iohw, axes=(0, 0))
    return out + b[:, None, None]


def test_conv_kernel_axes_by_hand():
    w = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)  # O I H W
    k = layout.caffe_conv_kernel(w)
    assert k.shape == (4, 5, 3, 2) and k.dtype == np.float32 and k.flags.c_contiguous
    assert k[1, 2, 0, 1] == w[1, 0, 1, 2]
    assert k[3, 4, 2, 0] == w[0, 2, 3, 4]
    np.testing.assert_array_equal(layout.torch_conv_kernel(w), k)


def test_conv_kernel_matches_caffe_convolution():
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 7, 6))
    w = rng.normal(size=(4, 3, 3, 2))
    b = rng.normal(size=4)
    ref = _caffe_conv(x, w, b)
    conv = keras.layers.Conv2D(4, (3, 2))
    conv.build((1, 7, 6, 3))
    conv.set_weights([layout.caffe_conv_kernel(w), b.astype(np.float32)])
    got = np.asarray(conv(x.transpose(1, 2, 0)[None].astype(np.float32)))[0].transpose(2, 0, 1)
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_deconv_kernel_matches_caffe_deconvolution():
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 4, 5))          # 3 input channels
    w = rng.normal(size=(3, 2, 4, 3))       # Caffe: (in=3, out=2, kh, kw)
    b = rng.normal(size=2)
    ref = _caffe_deconv(x, w, b, stride=2)
    k = layout.caffe_deconv_kernel(w)
    assert k.shape == (4, 3, 2, 3)
    assert k[1, 2, 1, 0] == np.float32(w[0, 1, 1, 2])
    deconv = keras.layers.Conv2DTranspose(2, (4, 3), strides=2, padding="valid")
    deconv.build((1, 4, 5, 3))
    deconv.set_weights([k, b.astype(np.float32)])
    got = np.asarray(deconv(x.transpose(1, 2, 0)[None].astype(np.float32)))[0].transpose(2, 0, 1)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-4)
    np.testing.assert_array_equal(layout.torch_deconv_kernel(w), k)


def test_fc_to_conv_equals_inner_product_on_chw_flatten():
    rng = np.random.default_rng(2)
    c, kh, kw, out = 3, 2, 4, 5
    x_chw = rng.normal(size=(c, kh, kw))
    w = rng.normal(size=(out, c * kh * kw))
    ip = w @ x_chw.reshape(-1)                       # Caffe flattens C, H, W
    k = layout.caffe_fc_to_conv(w, (kh, kw), c)
    assert k.shape == (kh, kw, c, out)
    conv = np.einsum("hwc,hwco->o", x_chw.transpose(1, 2, 0), k.astype(np.float64))
    np.testing.assert_allclose(conv, ip, rtol=1e-5, atol=1e-5)
    # legacy 4-d (1, 1, out, in) blob and scalar kernel size
    k2 = layout.caffe_fc_to_conv(w.reshape(1, 1, out, -1), (kh, kw), c)
    np.testing.assert_array_equal(k2, k)
    sq = rng.normal(size=(out, c * 9))
    assert layout.caffe_fc_to_conv(sq, 3, c).shape == (3, 3, c, out)
    with pytest.raises(ValueError, match=r"\(5, 24\).*7x7"):
        layout.caffe_fc_to_conv(w, 7, c)


def test_fc_to_dense_and_torch_linear():
    w = np.arange(6, dtype=np.float64).reshape(2, 3)     # (out, in)
    x = np.array([1.0, -2.0, 0.5])
    for fn in (layout.caffe_fc_to_dense, layout.torch_linear):
        k = fn(w)
        assert k.shape == (3, 2) and k.dtype == np.float32
        np.testing.assert_allclose(x @ k, w @ x)
    np.testing.assert_array_equal(layout.caffe_fc_to_dense(w.reshape(1, 1, 2, 3)), w.T)
    np.testing.assert_array_equal(layout.caffe_fc_to_dense(w.reshape(2, 3, 1, 1)), w.T)
    with pytest.raises(ValueError, match="2-d"):
        layout.torch_linear(np.zeros((2, 3, 4)))


def test_caffe_batchnorm_scale_factor():
    mean, var = layout.caffe_batchnorm([np.array([2.0, 4.0]), np.array([8.0, 6.0]), np.array([2.0])])
    np.testing.assert_allclose(mean, [1.0, 2.0])
    np.testing.assert_allclose(var, [4.0, 3.0])
    mean, var = layout.caffe_batchnorm([np.array([2.0, 4.0]), np.array([8.0, 6.0]), np.array([0.0])])
    np.testing.assert_array_equal(mean, [0.0, 0.0])
    np.testing.assert_array_equal(var, [0.0, 0.0])
    with pytest.raises(ValueError, match="3 blobs"):
        layout.caffe_batchnorm([np.zeros(2), np.zeros(2)])


def test_torch_conv_mm_2d_weight():
    w = np.arange(4 * 2 * 3 * 3, dtype=np.float32).reshape(4, 2, 3, 3)
    np.testing.assert_array_equal(layout.torch_conv_kernel(w.reshape(4, -1), 3, 2),
                                  layout.torch_conv_kernel(w))
    with pytest.raises(ValueError, match="4-d"):
        layout.torch_conv_kernel(w.reshape(4, -1))
