import keras
import numpy as np
import pytest

from kseg.initializers import BilinearUpsampling, bilinear_kernel


def caffe_deconv(x, kernel, stride):
    """Numpy reference of Caffe's Deconvolution (pad 0, no bias): scatter-add each input pixel.

    x: (H, W, C_in); kernel: Keras Conv2DTranspose layout (k, k, C_out, C_in).
    """
    h, w, _ = x.shape
    k = kernel.shape[0]
    out = np.zeros(((h - 1) * stride + k, (w - 1) * stride + k, kernel.shape[2]))
    for i in range(h):
        for j in range(w):
            out[i * stride:i * stride + k, j * stride:j * stride + k] += np.einsum("abon,n->abo", kernel, x[i, j])
    return out


def test_bilinear_kernel_matches_fcn_upsample_filt_formula():
    # surgery.upsample_filt: factor = (size+1)//2, centre = factor-1 (odd) or factor-0.5 (even)
    k4 = bilinear_kernel(4)
    np.testing.assert_allclose(k4[0], np.array([1, 3, 3, 1]) / 4 * 0.25)
    np.testing.assert_allclose(k4, np.outer([0.25, 0.75, 0.75, 0.25], [0.25, 0.75, 0.75, 0.25]))
    k3 = bilinear_kernel(3)
    np.testing.assert_allclose(k3, np.outer([0.5, 1, 0.5], [0.5, 1, 0.5]))
    k64 = bilinear_kernel(64)
    taps = 1 - np.abs(np.arange(64) - 31.5) / 32
    np.testing.assert_allclose(k64, np.outer(taps, taps))
    # each output pixel of a stride-f deconv receives weights summing to 1 (partition of unity)
    f = 8
    one_d = bilinear_kernel(2 * f).sum(axis=1) / f  # the kernel is separable: outer(taps, taps), sum(taps) = f
    np.testing.assert_allclose(np.outer(one_d, one_d), bilinear_kernel(2 * f))
    np.testing.assert_allclose(one_d[:f] + one_d[f:], np.ones(f))


def test_initializer_is_diagonal_over_channels():
    kernel = np.asarray(BilinearUpsampling()((4, 4, 3, 3)))
    assert kernel.shape == (4, 4, 3, 3)
    for o in range(3):
        for i in range(3):
            expected = bilinear_kernel(4) if o == i else np.zeros((4, 4))
            np.testing.assert_allclose(kernel[:, :, o, i], expected)
    broadcast = np.asarray(BilinearUpsampling()((4, 4, 2, 1)))
    np.testing.assert_allclose(broadcast[:, :, 1, 0], bilinear_kernel(4))


@pytest.mark.parametrize("factor", [2, 8])
def test_transposed_conv_matches_caffe_deconvolution_and_interpolates_linearly(factor):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 5, 6, 2)).astype("float32")
    layer = keras.layers.Conv2DTranspose(2, 2 * factor, strides=factor, use_bias=False,
                                         kernel_initializer=BilinearUpsampling(), trainable=False)
    y = np.asarray(layer(x))[0]
    np.testing.assert_allclose(y, caffe_deconv(x[0], np.asarray(layer.kernel), factor), atol=1e-5)
    assert y.shape == (4 * factor + 2 * factor, 5 * factor + 2 * factor, 2)
    # A ramp is reproduced exactly in the interior: input pixel i sits at output f*i + f - 0.5.
    ramp = np.tile(np.arange(6, dtype="float32"), (5, 1))[None, :, :, None].repeat(2, axis=-1)
    up = np.asarray(layer(ramp))[0, factor:-factor, factor:-factor, 0]
    cols = np.arange(factor, 7 * factor - factor)
    expected = (cols - (factor - 0.5)) / factor
    inner = slice(factor // 2, -factor // 2)  # away from the first/last input pixel's half kernel
    np.testing.assert_allclose(up[factor:-factor, inner], np.broadcast_to(expected[inner], up[factor:-factor, inner].shape),
                               atol=1e-5)


def test_bad_shapes_raise_and_config_round_trips():
    with pytest.raises(ValueError, match="square"):
        BilinearUpsampling()((4, 3, 2, 2))
    with pytest.raises(ValueError, match="in_channels == out_channels"):
        BilinearUpsampling()((4, 4, 3, 2))
    with pytest.raises(ValueError, match="size must be >= 1"):
        bilinear_kernel(0)
    init = keras.initializers.deserialize(keras.initializers.serialize(BilinearUpsampling()))
    assert isinstance(init, BilinearUpsampling)
