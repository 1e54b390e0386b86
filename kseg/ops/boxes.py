"""Box IoU, Fast R-CNN box coding and non-maximum suppression.

Boxes are ``[y1, x1, y2, x2]`` in continuous pixel coordinates (width ``x2 - x1``).
Box coding is Fast R-CNN's (Girshick, ICCV 2015, Sec. 2.3; R-CNN, Appendix C):
``t = (wy * (gy - py) / ph, wx * (gx - px) / pw, wh * log(gh / ph), ww * log(gw / pw))`` with
centres ``(py, px)`` and sizes ``(ph, pw)``; the weights ``(10, 10, 5, 5)`` are Fast R-CNN's
target normalisation (std 0.1, 0.1, 0.2, 0.2).

    >>> iou = box_iou(boxes_a, boxes_b)                     # (N, M)
    >>> deltas = encode_boxes(gt_boxes, rois); back = decode_boxes(deltas, rois)
    >>> keep = non_max_suppression(boxes, scores, max_output_size=100, iou_threshold=0.7)
"""

import math

import numpy as np
from keras import ops

__all__ = ["box_iou", "box_iou_numpy", "encode_boxes", "decode_boxes", "clip_boxes", "non_max_suppression",
           "BBOX_WEIGHTS"]

BBOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
_CLIP = math.log(1000.0 / 16.0)  # largest log-scale change decoded (as Detectron)


def box_iou(a, b):
    """Pairwise IoU of boxes ``a`` (N, 4) and ``b`` (M, 4) -> (N, M) (keras.ops)."""
    a = ops.convert_to_tensor(a, "float32")
    b = ops.convert_to_tensor(b, "float32")
    area_a = ops.maximum(a[:, 2] - a[:, 0], 0.0) * ops.maximum(a[:, 3] - a[:, 1], 0.0)
    area_b = ops.maximum(b[:, 2] - b[:, 0], 0.0) * ops.maximum(b[:, 3] - b[:, 1], 0.0)
    y1 = ops.maximum(a[:, None, 0], b[None, :, 0])
    x1 = ops.maximum(a[:, None, 1], b[None, :, 1])
    y2 = ops.minimum(a[:, None, 2], b[None, :, 2])
    x2 = ops.minimum(a[:, None, 3], b[None, :, 3])
    inter = ops.maximum(y2 - y1, 0.0) * ops.maximum(x2 - x1, 0.0)
    union = area_a[:, None] + area_b[None, :] - inter
    return ops.where(union > 0, inter / ops.maximum(union, 1e-12), 0.0)


def box_iou_numpy(a, b):
    """:func:`box_iou` in numpy (for data pipelines)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    union = area_a[:, None] + area_b[None] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0).astype(np.float32)


def _centre_size(boxes):
    h = boxes[..., 2] - boxes[..., 0]
    w = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * h, boxes[..., 1] + 0.5 * w, h, w


def encode_boxes(boxes, rois, weights=BBOX_WEIGHTS):
    """Regression targets ``(ty, tx, th, tw)`` that take `rois` onto `boxes` (both (..., 4))."""
    boxes = ops.convert_to_tensor(boxes, "float32")
    rois = ops.convert_to_tensor(rois, "float32")
    gy, gx, gh, gw = _centre_size(boxes)
    py, px, ph, pw = _centre_size(rois)
    ph = ops.maximum(ph, 1e-6)
    pw = ops.maximum(pw, 1e-6)
    wy, wx, wh, ww = weights
    return ops.stack([
        wy * (gy - py) / ph,
        wx * (gx - px) / pw,
        wh * ops.log(ops.maximum(gh, 1e-6) / ph),
        ww * ops.log(ops.maximum(gw, 1e-6) / pw),
    ], axis=-1)


def decode_boxes(deltas, rois, weights=BBOX_WEIGHTS):
    """Inverse of :func:`encode_boxes`: apply `deltas` (..., 4) to `rois` (..., 4)."""
    deltas = ops.convert_to_tensor(deltas, "float32")
    rois = ops.convert_to_tensor(rois, "float32")
    py, px, ph, pw = _centre_size(rois)
    wy, wx, wh, ww = weights
    cy = deltas[..., 0] / wy * ph + py
    cx = deltas[..., 1] / wx * pw + px
    h = ops.exp(ops.minimum(deltas[..., 2] / wh, _CLIP)) * ph
    w = ops.exp(ops.minimum(deltas[..., 3] / ww, _CLIP)) * pw
    return ops.stack([cy - 0.5 * h, cx - 0.5 * w, cy + 0.5 * h, cx + 0.5 * w], axis=-1)


def clip_boxes(boxes, height, width):
    """Clip (..., 4) boxes to the image ``[0, height] x [0, width]``."""
    boxes = ops.convert_to_tensor(boxes, "float32")
    hi = ops.convert_to_tensor([height, width, height, width], "float32")
    return ops.minimum(ops.maximum(boxes, 0.0), hi)


def non_max_suppression(boxes, scores, max_output_size=100, iou_threshold=0.5, score_threshold=float("-inf")):
    """Indices of the boxes greedy NMS keeps, best first (TensorFlow's own op; TF only).

    A thin wrapper around ``tf.image.non_max_suppression`` that checks its arguments.
    """
    import tensorflow as tf

    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    if int(max_output_size) < 1:
        raise ValueError(f"max_output_size must be >= 1, got {max_output_size}")
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    scores = tf.convert_to_tensor(scores, tf.float32)
    if boxes.shape.rank != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be (N, 4), got shape {tuple(boxes.shape)}")
    return tf.image.non_max_suppression(boxes, scores, int(max_output_size), iou_threshold=iou_threshold,
                                        score_threshold=score_threshold)

