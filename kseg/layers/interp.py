"""Bilinear interpolation as DeepLab's Caffe ``Interp`` layer computes it (corners aligned)."""

import keras
import numpy as np
from keras import ops

__all__ = ["Interp", "caffe_interp_size"]


def caffe_interp_size(size, scale):
    """Size DeepLab's ``Interp`` gives when shrinking/zooming by `scale`: ``floor((size - 1) * scale) + 1``.

    321 * 0.75 -> 241 and 321 * 0.5 -> 161 (the multi-scale inputs of DeepLab-v2), 41 * 8 -> 321.
    """
    return int((int(size) - 1) * float(scale)) + 1


def _axis_taps(n, out, align_corners):
    """The two source indices and the weight of the second for each of `out` outputs from `n`
    inputs: :meth:`Interp._resize_axis`'s float32 arithmetic, in numpy."""
    f32 = np.float32
    pos = np.arange(out, dtype=f32)
    if align_corners:
        src = pos * (f32(n) - f32(1.0)) / np.maximum(f32(out) - f32(1.0), f32(1.0))
    else:
        src = np.clip((pos + f32(0.5)) * f32(n) / f32(out) - f32(0.5), f32(0.0), f32(n) - f32(1.0))
    i0 = np.clip(np.floor(src).astype(np.int32), 0, n - 1)
    i1 = np.minimum(i0 + 1, n - 1).astype(np.int32)
    return i0, i1, (src - i0.astype(f32)).astype(f32)


@keras.saving.register_keras_serializable(package="kseg")
class Interp(keras.layers.Layer):
    """Bilinear resizing with aligned corners, as DeepLab's Caffe ``Interp`` layer.

    DeepLab (Chen et al., ICLR 2015, Sec. 3.1; PAMI 2018, Sec. 3) upsamples its stride-8 score
    map with bilinear interpolation. Caffe's ``Interp`` maps output pixel ``i`` to input
    coordinate ``i * (H_in - 1) / (H_out - 1)``: the corner pixels of both grids coincide, which is
    exactly right for Caffe's ceil-mode pooling (feature pixel ``j`` is centred on input pixel
    ``8 j``). ``align_corners=False`` gives the half-pixel mapping instead.

    Called on one tensor it resizes to `size` (or by `scale`, Caffe's rule
    :func:`caffe_interp_size`); called on ``[x, reference]`` it resizes ``x`` to the spatial size
    of ``reference`` (any size, known only at run time included). Written with ``keras.ops``
    (gathers and a lerp per axis): runs on every backend and converts to TFLite builtins.

    Args:
        size: ``(height, width)`` of the output, or None.
        scale: resize factor (Caffe's zoom/shrink), used when `size` is None and no reference.
        align_corners: Caffe/DeepLab's corner-aligned mapping (default) or half-pixel centres.

    Example:
        >>> import numpy as np
        >>> x = np.arange(4, dtype="float32").reshape(1, 2, 2, 1)
        >>> Interp(size=(3, 3))(x)[0, :, :, 0].numpy().tolist()
        [[0.0, 0.5, 1.0], [1.0, 1.5, 2.0], [2.0, 2.5, 3.0]]
    """

    def __init__(self, size=None, scale=None, align_corners=True, **kwargs):
        super().__init__(**kwargs)
        if size is not None:
            size = tuple(int(s) for s in size)
            if len(size) != 2 or min(size) < 1:
                raise ValueError(f"size must be (height, width) of positive ints, got {size}")
        if scale is not None and float(scale) <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.size = size
        self.scale = None if scale is None else float(scale)
        self.align_corners = bool(align_corners)

    def _target(self, shape):
        if self.size is not None:
            return self.size
        if self.scale is not None:
            return tuple(None if s is None else caffe_interp_size(s, self.scale) for s in shape[1:3])
        raise ValueError("Interp needs size=, scale= or a reference tensor ([x, reference])")

    def call(self, inputs):
        if isinstance(inputs, (list, tuple)):
            x, ref = inputs
            out_h, out_w = (ref.shape[a] if ref.shape[a] is not None else ops.shape(ref)[a] for a in (1, 2))
        else:
            x = inputs
            shape = ops.shape(x)
            if self.size is not None:
                out_h, out_w = self.size
            elif self.scale is not None:
                # static sizes in Python (as compute_output_shape), dynamic ones as tensors
                out_h, out_w = (
                    caffe_interp_size(x.shape[a], self.scale) if x.shape[a] is not None
                    else ops.cast(ops.cast(shape[a] - 1, "float32") * self.scale, "int32") + 1
                    for a in (1, 2)
                )
            else:
                raise ValueError("Interp needs size=, scale= or a reference tensor ([x, reference])")
        x = self._resize_axis(x, out_h, axis=1)
        return self._resize_axis(x, out_w, axis=2)

    def _resize_axis(self, x, out, axis):
        n = x.shape[axis] if x.shape[axis] is not None else ops.shape(x)[axis]
        if isinstance(n, int) and isinstance(out, int):
            # both sizes static: the indices and weights are constants (numpy, float32 as below), so
            # nothing depends on a traced size (JAX's shape inference traces the call abstractly)
            i0, i1, frac = _axis_taps(n, out, self.align_corners)
            frac = ops.cast(np.reshape(frac, [-1] + [1] * (len(x.shape) - 1 - axis)), x.dtype)
            a = ops.take(x, i0, axis=axis)
            b = ops.take(x, i1, axis=axis)
            return a + (b - a) * frac
        n_f = ops.cast(n, "float32")
        out_f = ops.cast(out, "float32")
        pos = ops.cast(ops.arange(out), "float32")
        if self.align_corners:
            src = pos * (n_f - 1.0) / ops.maximum(out_f - 1.0, 1.0)
        else:
            src = ops.clip((pos + 0.5) * n_f / out_f - 0.5, 0.0, n_f - 1.0)
        i0 = ops.clip(ops.cast(ops.floor(src), "int32"), 0, n - 1)
        i1 = ops.minimum(i0 + 1, n - 1)
        frac = ops.cast(src - ops.cast(i0, "float32"), x.dtype)
        frac = ops.reshape(frac, [-1] + [1] * (len(x.shape) - 1 - axis))
        a = ops.take(x, i0, axis=axis)
        b = ops.take(x, i1, axis=axis)
        return a + (b - a) * frac

    def compute_output_shape(self, input_shape):
        if isinstance(input_shape, (list, tuple)) and isinstance(input_shape[0], (list, tuple)):
            x_shape, ref_shape = input_shape
            return (x_shape[0], ref_shape[1], ref_shape[2], x_shape[-1])
        h, w = self._target(input_shape)
        return (input_shape[0], h, w, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "size": self.size, "scale": self.scale,
                "align_corners": self.align_corners}
