"""Initializers of the classic segmentation nets that Keras does not ship.

All are registered under the ``kseg`` package, so models using them save to ``.keras`` and load
back with ``safe_mode=True``.
"""

import keras
import numpy as np

__all__ = ["BilinearUpsampling", "bilinear_kernel"]


def bilinear_kernel(size):
    """The 2-D bilinear interpolation kernel of side `size` (FCN's ``surgery.upsample_filt``).

    For an upsampling factor ``f`` the FCN authors use a kernel of side ``2f`` with stride ``f``;
    the kernel's centre is ``f - 0.5`` for even sides and ``f - 1`` for odd ones, and its taps fall
    off linearly as ``1 - |i - centre| / f``.

    Example:
        >>> bilinear_kernel(4)[1]
        array([0.1875, 0.5625, 0.5625, 0.1875])
    """
    size = int(size)
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    factor = (size + 1) // 2
    centre = factor - 1 if size % 2 == 1 else factor - 0.5
    taps = 1.0 - np.abs(np.arange(size) - centre) / factor
    return np.outer(taps, taps)


@keras.saving.register_keras_serializable(package="kseg")
class BilinearUpsampling(keras.initializers.Initializer):
    """Bilinear interpolation weights for a ``Conv2DTranspose`` kernel (FCN, Long et al. 2015, Sec. 3.3).

    A ``Conv2DTranspose`` kernel has shape ``(kh, kw, out_channels, in_channels)``. Channel ``i``
    is upsampled into channel ``i`` alone (``kernel[:, :, i, i] = bilinear``; all other entries
    zero), as the authors' ``surgery.interp`` does; with ``in_channels == 1`` every output channel
    gets the kernel. Used with ``kernel_size = 2 * factor``, ``strides = factor`` and
    ``use_bias=False`` it is exact bilinear interpolation in the interior of the map.

    Example:
        >>> import keras
        >>> up = keras.layers.Conv2DTranspose(21, 64, strides=32, use_bias=False,
        ...     kernel_initializer=BilinearUpsampling(), trainable=False)
    """

    def __call__(self, shape, dtype=None):
        if len(shape) != 4:
            raise ValueError(f"BilinearUpsampling needs a 4D (kh, kw, out, in) kernel shape, got {tuple(shape)}")
        kh, kw, out_ch, in_ch = (int(s) for s in shape)
        if kh != kw:
            raise ValueError(f"BilinearUpsampling needs a square kernel, got {kh}x{kw}")
        if in_ch != out_ch and in_ch != 1:
            raise ValueError(
                f"BilinearUpsampling needs in_channels == out_channels (or 1), got in={in_ch}, out={out_ch}"
            )
        kernel = np.zeros((kh, kw, out_ch, in_ch), dtype="float32")
        filt = bilinear_kernel(kh)
        for o in range(out_ch):
            kernel[:, :, o, o if in_ch > 1 else 0] = filt
        return keras.ops.convert_to_tensor(kernel, dtype=dtype or "float32")

    def get_config(self):
        return {}
