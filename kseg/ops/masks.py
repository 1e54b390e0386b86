"""Pasting fixed-size object masks back into the image (TF ops).

A proposal's or detection's mask is predicted on a fixed grid (DeepMask's 56x56 / 224x224, a
Mask R-CNN-style 28x28) covering its box; :func:`paste_masks` resamples it bilinearly onto the
image pixels the box covers (half-pixel centres; zero outside the box) and thresholds it.

    >>> full = paste_masks(probs, boxes, (480, 640))          # (N, 480, 640) float32 in {0, 1}
"""

import tensorflow as tf

__all__ = ["paste_masks"]


def paste_masks(masks, boxes, image_shape, threshold=0.5):
    """Paste (N, m, m) mask probabilities into (N, H, W) image masks.

    Args:
        masks: (N, mh, mw) values (probabilities) on a grid covering each box.
        boxes: (N, 4) ``[y1, x1, y2, x2]`` pixels.
        image_shape: ``(H, W)``.
        threshold: binarise at this value; ``None`` returns the resampled values.
    """
    masks = tf.convert_to_tensor(masks, tf.float32)
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    if isinstance(image_shape[0], int) and isinstance(image_shape[1], int) and min(image_shape[:2]) < 2:
        raise ValueError(f"image_shape must be at least 2x2, got {tuple(image_shape)}")
    h = tf.cast(image_shape[0], tf.int32)
    w = tf.cast(image_shape[1], tf.int32)
    hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
    mh = tf.cast(tf.shape(masks)[1], tf.float32)
    mw = tf.cast(tf.shape(masks)[2], tf.float32)
    y1, x1, y2, x2 = [boxes[:, k] for k in range(4)]
    bh = tf.maximum(y2 - y1, 1e-6)
    bw = tf.maximum(x2 - x1, 1e-6)
    # image pixel centre p + .5 lands at mask coordinate (p + .5 - y1) * mh / bh - .5
    ay = (0.5 - y1) * mh / bh - 0.5
    by = (hf - 0.5 - y1) * mh / bh - 0.5
    ax = (0.5 - x1) * mw / bw - 0.5
    bx = (wf - 0.5 - x1) * mw / bw - 0.5
    # one replicated border pixel: taps in the box's outer half pixel take the edge value
    padded = tf.pad(masks, [[0, 0], [1, 1], [1, 1]], mode="SYMMETRIC")
    norm = tf.stack([(ay + 1) / (mh + 1), (ax + 1) / (mw + 1), (by + 1) / (mh + 1), (bx + 1) / (mw + 1)], axis=1)
    n = tf.shape(masks)[0]
    out = tf.image.crop_and_resize(padded[..., None], norm, tf.range(n), tf.stack([h, w]), extrapolation_value=0.0)[..., 0]
    # zero outside the box itself (bilinear taps near the border reach past it)
    ys = tf.range(h, dtype=tf.float32)[None, :, None] + 0.5
    xs = tf.range(w, dtype=tf.float32)[None, None, :] + 0.5
    inside = ((ys >= y1[:, None, None]) & (ys < y2[:, None, None]) & (xs >= x1[:, None, None])
              & (xs < x2[:, None, None]))
    out = tf.where(inside, out, 0.0)
    if threshold is None:
        return out
    return tf.cast(out >= threshold, tf.float32)
