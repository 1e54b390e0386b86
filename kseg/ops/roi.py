"""Region-of-interest feature pooling: Fast R-CNN's ROI max pooling and ROI align (TF ops).

* :func:`roi_max_pool` is Fast R-CNN's ROI pooling layer (Girshick, ICCV 2015, Sec. 2.1; the
  Caffe ``ROIPoolingLayer``): the ROI is quantised to the feature grid
  (``round(coord * spatial_scale)``, inclusive end), split into ``pool_size`` bins of
  ``floor``/``ceil`` bounds, each max-pooled; an empty bin gives 0.
* :func:`roi_align` is ROI align (He et al., Mask R-CNN, ICCV 2017) built from
  ``tf.image.crop_and_resize``: ``sampling_ratio**2`` bilinear samples at the centres of the
  sub-cells of each bin (half-pixel aligned), averaged.

Both take ``features`` (B, H, W, C) and ``rois`` (B, R, 4) ``[y1, x1, y2, x2]`` in input-image
pixels and return (B, R, pool, pool, C). TensorFlow only (``tf.image`` / ``tf.map_fn``).

    >>> pooled = RoIPooling(pool_size=7, spatial_scale=1 / 16)([conv5_3, rois])
"""

import keras
import tensorflow as tf

__all__ = ["roi_max_pool", "roi_align", "RoIPooling", "RoIAlign"]


def _flatten(features, rois):
    rois = tf.convert_to_tensor(rois, features.dtype)
    b = tf.shape(rois)[0]
    r = tf.shape(rois)[1]
    flat = tf.reshape(rois, (-1, 4))
    idx = tf.repeat(tf.range(b), r)
    return flat, idx, b, r


def _pool_sizes(pool_size):
    if isinstance(pool_size, int):
        return pool_size, pool_size
    return tuple(int(p) for p in pool_size)


def roi_max_pool(features, rois, pool_size=7, spatial_scale=1.0 / 16):
    """Fast R-CNN ROI max pooling. `rois` (B, R, 4) image-pixel ``[y1, x1, y2, x2)`` boxes."""
    ph, pw = _pool_sizes(pool_size)
    features = tf.convert_to_tensor(features)
    flat, idx, b, r = _flatten(features, rois)
    h = tf.shape(features)[1]
    w = tf.shape(features)[2]
    neg_inf = tf.constant(float("-inf"), features.dtype)

    def bins(start, end, n, size):
        # Caffe ROIPoolingLayer: ROI end is inclusive, length at least 1; bin i spans
        # [floor(i L / n), ceil((i + 1) L / n)). Integer arithmetic, exact: the float form
        # (i * (L / n)) is rewritten by Grappler's constant folding inside tf.function into a
        # differently rounded product, and ceil(7 * (6 / 7)) became 7 in graphs but 6 eagerly.
        length = tf.maximum(end - start + 1, 1)
        i = tf.range(n, dtype=tf.int32)
        lo = (i * length) // n + start
        hi = ((i + 1) * length + n - 1) // n + start
        lo = tf.clip_by_value(lo, 0, size)
        hi = tf.clip_by_value(hi, 0, size)
        pos = tf.range(size)
        return (pos[None, :] >= lo[:, None]) & (pos[None, :] < hi[:, None]), hi <= lo

    def one(args):
        box, bi = args
        # boxes are [y1, x1, y2, x2) in pixels; Caffe's are inclusive: last pixel = x2 - 1
        q = tf.cast(tf.round(tf.stack([box[0], box[1], box[2] - 1.0, box[3] - 1.0]) * spatial_scale), tf.int32)
        rows, empty_r = bins(q[0], q[2], ph, h)
        cols, empty_c = bins(q[1], q[3], pw, w)
        fmap = features[bi]
        colmax = tf.reduce_max(tf.where(cols[:, None, :, None], fmap[None], neg_inf), axis=2)  # (pw, H, C)
        out = tf.reduce_max(tf.where(rows[:, None, :, None], colmax[None], neg_inf), axis=2)  # (ph, pw, C)
        empty = empty_r[:, None] | empty_c[None, :]
        return tf.where(empty[..., None], tf.zeros_like(out), out)

    out = tf.map_fn(one, (flat, idx), fn_output_signature=tf.TensorSpec((ph, pw, None), features.dtype))
    c = features.shape[-1] if features.shape[-1] is not None else tf.shape(features)[-1]
    return tf.reshape(out, tf.stack([b, r, ph, pw, c]) if not isinstance(c, int) else (b, r, ph, pw, c))


def roi_align(features, rois, output_size=7, spatial_scale=1.0 / 16, sampling_ratio=2):
    """ROI align from ``crop_and_resize`` + average pooling. `rois` (B, R, 4) image pixels."""
    oh, ow = _pool_sizes(output_size)
    if sampling_ratio < 1:
        raise ValueError(f"sampling_ratio must be >= 1, got {sampling_ratio}")
    features = tf.convert_to_tensor(features)
    flat, idx, b, r = _flatten(features, rois)
    h = tf.cast(tf.shape(features)[1], flat.dtype)
    w = tf.cast(tf.shape(features)[2], flat.dtype)
    nh, nw = oh * sampling_ratio, ow * sampling_ratio
    y1, x1, y2, x2 = [flat[:, k] * spatial_scale for k in range(4)]
    # sample k sits at y1 + (k + .5) * (y2 - y1) / n in continuous coordinates (pixel i covers
    # [i, i+1)); crop_and_resize samples at a * (H - 1) + k * (b - a) * (H - 1) / (n - 1)
    sy = y1 + 0.5 * (y2 - y1) / nh - 0.5
    ey = y1 + (nh - 0.5) * (y2 - y1) / nh - 0.5
    sx = x1 + 0.5 * (x2 - x1) / nw - 0.5
    ex = x1 + (nw - 0.5) * (x2 - x1) / nw - 0.5
    boxes = tf.stack([sy / tf.maximum(h - 1, 1), sx / tf.maximum(w - 1, 1),
                      ey / tf.maximum(h - 1, 1), ex / tf.maximum(w - 1, 1)], axis=1)
    crops = tf.image.crop_and_resize(features, boxes, idx, (nh, nw), method="bilinear")
    pooled = tf.nn.avg_pool2d(crops, sampling_ratio, sampling_ratio, "VALID")
    c = features.shape[-1]
    return tf.reshape(pooled, (b, r, oh, ow, c if c is not None else -1))


@keras.saving.register_keras_serializable(package="kseg")
class RoIPooling(keras.layers.Layer):
    """Fast R-CNN ROI max pooling layer (Girshick 2015): ``[features, rois] -> (B, R, P, P, C)``.

    Example::

        pooled = RoIPooling(7, spatial_scale=1 / 16)([conv5_3, rois])   # rois (B, R, 4) pixels
    """

    def __init__(self, pool_size=7, spatial_scale=1.0 / 16, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = _pool_sizes(pool_size)
        self.spatial_scale = float(spatial_scale)

    def call(self, inputs):
        features, rois = inputs
        return roi_max_pool(features, rois, self.pool_size, self.spatial_scale)

    def compute_output_shape(self, input_shape):
        f, r = input_shape
        return (f[0], r[1], *self.pool_size, f[-1])

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size, "spatial_scale": self.spatial_scale}


@keras.saving.register_keras_serializable(package="kseg")
class RoIAlign(keras.layers.Layer):
    """ROI align (He et al. 2017) layer: ``[features, rois] -> (B, R, P, P, C)``.

    Example::

        pooled = RoIAlign(7, spatial_scale=1 / 16, sampling_ratio=2)([conv5_3, rois])
    """

    def __init__(self, output_size=7, spatial_scale=1.0 / 16, sampling_ratio=2, **kwargs):
        super().__init__(**kwargs)
        self.output_size = _pool_sizes(output_size)
        self.spatial_scale = float(spatial_scale)
        self.sampling_ratio = int(sampling_ratio)

    def call(self, inputs):
        features, rois = inputs
        return roi_align(features, rois, self.output_size, self.spatial_scale, self.sampling_ratio)

    def compute_output_shape(self, input_shape):
        f, r = input_shape
        return (f[0], r[1], *self.output_size, f[-1])

    def get_config(self):
        return {**super().get_config(), "output_size": self.output_size, "spatial_scale": self.spatial_scale,
                "sampling_ratio": self.sampling_ratio}
