"""Detection operations shared by the proposal and detection models (TF ops, some Keras layers).

Boxes are ``[y1, x1, y2, x2]`` in pixels (TensorFlow's order) everywhere in kseg.
"""

from kseg.ops.boxes import (
    box_iou,
    box_iou_numpy,
    clip_boxes,
    decode_boxes,
    encode_boxes,
    non_max_suppression,
)
from kseg.ops.masks import paste_masks
from kseg.ops.roi import RoIAlign, RoIPooling, roi_align, roi_max_pool

__all__ = [
    "RoIAlign",
    "RoIPooling",
    "box_iou",
    "box_iou_numpy",
    "clip_boxes",
    "decode_boxes",
    "encode_boxes",
    "non_max_suppression",
    "paste_masks",
    "roi_align",
    "roi_max_pool",
]
