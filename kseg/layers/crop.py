"""Caffe's ``Crop`` layer: crop a map to the spatial size of a reference map, at a fixed offset.

FCN (Long, Shelhamer & Darrell, CVPR 2015 / PAMI 2016, Sec. 4.1) pads the input by 100 pixels
and upsamples with uncropped transposed convolutions, so its score maps are larger than the maps
they are fused with. The authors' ``crop`` (``caffe.coord_map``) computes, from the receptive
field arithmetic, the offsets that align them: 19 (FCN-32s), 5 and 27 (FCN-16s), 5, 9 and 31
(FCN-8s). This layer applies such an offset.
"""

import keras
from keras import ops

__all__ = ["CropToReference"]


def _dim(x, axis):
    static = x.shape[axis]
    return static if static is not None else ops.shape(x)[axis]


@keras.saving.register_keras_serializable(package="kseg")
class CropToReference(keras.layers.Layer):
    """``[x, reference] -> x[:, oy:oy + H_ref, ox:ox + W_ref, :]`` (Caffe ``Crop``, axis 2).

    Args:
        offset: ``int`` (same offset for height and width, as the authors' ``crop_param
            {axis: 2 offset: k}``) or ``(oy, ox)``.

    Only the reference's height and width are used; its channels may differ from ``x``'s.

    Example:
        >>> import numpy as np
        >>> x = np.arange(2 * 10 * 10 * 3, dtype="float32").reshape(2, 10, 10, 3)
        >>> ref = np.zeros((2, 4, 5, 1), "float32")
        >>> y = CropToReference(3)([x, ref])
        >>> tuple(y.shape), bool((np.asarray(y) == x[:, 3:7, 3:8]).all())
        ((2, 4, 5, 3), True)
    """

    def __init__(self, offset=0, **kwargs):
        super().__init__(**kwargs)
        if isinstance(offset, (tuple, list)):
            if len(offset) != 2:
                raise ValueError(f"offset must be an int or (oy, ox), got {offset}")
            offset = (int(offset[0]), int(offset[1]))
        else:
            offset = (int(offset), int(offset))
        if min(offset) < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        self.offset = offset

    def _check(self, x_shape, ref_shape):
        if len(x_shape) != 4 or len(ref_shape) != 4:
            raise ValueError(
                f"{self.name} expects two 4D (batch, height, width, channels) inputs, got {tuple(x_shape)} "
                f"and {tuple(ref_shape)}"
            )
        for axis, off in zip((1, 2), self.offset):
            if x_shape[axis] is not None and ref_shape[axis] is not None and off + ref_shape[axis] > x_shape[axis]:
                raise ValueError(
                    f"{self.name}: cannot crop {ref_shape[axis]} pixels at offset {off} from a map of "
                    f"{x_shape[axis]} (axis {axis})"
                )

    def call(self, inputs):
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
            raise ValueError(f"{self.name} expects [x, reference], got {type(inputs).__name__}")
        x, ref = inputs
        self._check(x.shape, ref.shape)
        oy, ox = self.offset
        return x[:, oy:oy + _dim(ref, 1), ox:ox + _dim(ref, 2), :]

    def compute_output_shape(self, input_shape):
        x_shape, ref_shape = input_shape
        self._check(x_shape, ref_shape)
        return (x_shape[0], ref_shape[1], ref_shape[2], x_shape[3])

    def get_config(self):
        return {**super().get_config(), "offset": list(self.offset)}
