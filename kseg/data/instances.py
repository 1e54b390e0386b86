"""Training samples for object proposals and detection, from :class:`~kseg.data.coco.CocoInstances`.

DeepMask / SharpMask patches (Pinheiro, Collobert & Dollar, NIPS 2015, Sec. 3.1; Pinheiro et al.,
ECCV 2016; the authors' ``DataSampler.lua``):

* A patch is **positive** when an object is centred in it within ``±shift`` pixels (16) and its
  larger side is the canonical ``object_size`` (128 of 224) within a factor ``2**±scale``
  (2^(1/4)); its mask label is that object's mask (``+1`` object, ``-1`` elsewhere).
* A patch is **negative** when every object is at least ``neg_shift`` pixels (32) off its centre
  or off the canonical scale by a factor ``2**neg_scale`` (2) or more.
* Positives are jittered inside the positive ranges (shift and scale), and every patch is
  flipped horizontally with probability 0.5.
* The released setting (``SHARPMASK_RELEASED``) uses a 160-pixel patch (``iSz``) seen with
  16 pixels of context each side (the 192-pixel window ``wSz``), canonical size
  ``ceil(160*128/224) = 92``, and 160x160 labels for SharpMask (112 for DeepMask).

Windows are ``(xc, yc, side)`` in image pixels: the centre and side of the *patch* (without
context); the crop fed to the network adds ``context * side / input_size`` on each side.

    >>> from kseg.data.coco import load_coco
    >>> from kseg.data.instances import DeepMaskSampler, DEEPMASK_PAPER
    >>> s = DeepMaskSampler(load_coco(".../instances_train2017.json"), DEEPMASK_PAPER, seed=0)
    >>> sample = s.sample()     # image (224,224,3), mask (224,224) in {-1,+1}, score (1,), mask_weight (1,)
"""

import dataclasses
import math

import numpy as np

__all__ = [
    "PatchConfig",
    "DEEPMASK_PAPER",
    "DEEPMASK_RELEASED",
    "SHARPMASK_RELEASED",
    "canonical_window",
    "window_offset_scale",
    "is_positive",
    "is_negative",
    "jitter_window",
    "crop_window",
    "DeepMaskSampler",
    "deepmask_dataset",
    "detector_samples",
]


@dataclasses.dataclass(frozen=True)
class PatchConfig:
    """Geometry of DeepMask/SharpMask patches (pixels are patch pixels unless stated).

    Attributes:
        input_size: side of the patch the mask and score refer to (``iSz``; 224 in the paper).
        context: extra pixels of image seen on each side (16 in the released code, 0 in the paper).
        object_size: canonical larger side of a centred object (128 in the paper).
        label_size: side of the ground-truth mask (``gSz``).
        shift, scale: positive tolerance: centre within ``±shift``, size within ``2**±scale``.
        neg_shift, neg_scale: negative margin: centre ``>= neg_shift`` off or size ``>= 2**neg_scale`` off.
        min_area, min_side: objects used for mask samples (the released sampler's filter).
        neg_scales: log2 range of the window scale (relative to the image) tried for negatives.
        pad_value: fill outside the image (mid grey, the released code's 0.5 of [0, 1]).
    """

    input_size: int = 224
    context: int = 0
    object_size: int = 128
    label_size: int = 224
    shift: float = 16.0
    scale: float = 0.25
    neg_shift: float = 32.0
    neg_scale: float = 1.0
    min_area: float = 100.0
    min_side: float = 5.0
    neg_scales: tuple = (-3.0, 2.0)
    pad_value: float = 127.5

    @property
    def window_size(self):
        """Side of the network's input crop (``wSz = iSz + 2 * context``)."""
        return self.input_size + 2 * self.context

    def __post_init__(self):
        for f in ("input_size", "object_size", "label_size"):
            if getattr(self, f) <= 0:
                raise ValueError(f"{f} must be > 0, got {getattr(self, f)}")
        if self.context < 0:
            raise ValueError(f"context must be >= 0, got {self.context}")
        if not (self.shift < self.neg_shift and self.scale < self.neg_scale):
            raise ValueError(
                f"positive tolerance (shift={self.shift}, scale={self.scale}) must be inside the negative "
                f"margin (neg_shift={self.neg_shift}, neg_scale={self.neg_scale})"
            )


DEEPMASK_PAPER = PatchConfig()
DEEPMASK_RELEASED = PatchConfig(input_size=160, context=16, object_size=92, label_size=112)
SHARPMASK_RELEASED = PatchConfig(input_size=160, context=16, object_size=92, label_size=160)


def _box_centre_size(bbox):
    x, y, w, h = (float(v) for v in bbox)
    return x + w / 2.0, y + h / 2.0, max(w, h)


def canonical_window(bbox, cfg=DEEPMASK_PAPER):
    """The window in which `bbox` (``[x, y, w, h]``) is exactly centred at the canonical size."""
    xc, yc, m = _box_centre_size(bbox)
    return xc, yc, cfg.input_size * m / cfg.object_size


def window_offset_scale(window, bbox, cfg=DEEPMASK_PAPER):
    """``(dx, dy, ds)``: the object's centre offset in patch pixels and log2 of its size / canonical."""
    wx, wy, side = window
    xc, yc, m = _box_centre_size(bbox)
    f = cfg.input_size / side
    return (xc - wx) * f, (yc - wy) * f, math.log2(max(m * f, 1e-12) / cfg.object_size)


def is_positive(window, bbox, cfg=DEEPMASK_PAPER):
    """The paper's positive rule for one object (Sec. 3.1)."""
    dx, dy, ds = window_offset_scale(window, bbox, cfg)
    eps = 1e-9
    return abs(dx) <= cfg.shift + eps and abs(dy) <= cfg.shift + eps and abs(ds) <= cfg.scale + eps


def is_negative(window, bboxes, cfg=DEEPMASK_PAPER):
    """The paper's negative rule: *every* object off-centre by ``>= neg_shift`` or off-scale by ``>= 2**neg_scale``."""
    for bbox in bboxes:
        dx, dy, ds = window_offset_scale(window, bbox, cfg)
        if max(abs(dx), abs(dy)) < cfg.neg_shift and abs(ds) < cfg.neg_scale:
            return False
    return True


def jitter_window(bbox, cfg, rng):
    """A random positive window of `bbox`: uniform shift in ``±shift`` px and scale in ``2**±scale``."""
    xc, yc, side = canonical_window(bbox, cfg)
    side = side * 2.0 ** rng.uniform(-cfg.scale, cfg.scale)
    # the object's size in the patch is object_size * 2**-s, so s stays inside ±scale
    f = side / cfg.input_size
    return xc + rng.uniform(-cfg.shift, cfg.shift) * f, yc + rng.uniform(-cfg.shift, cfg.shift) * f, side


def _sample_grid(x0, y0, side_w, side_h, out_w, out_h):
    """Pixel-centre sample positions of an ``out`` grid covering the square [x0, x0+side)."""
    xs = x0 + (np.arange(out_w) + 0.5) * side_w / out_w - 0.5
    ys = y0 + (np.arange(out_h) + 0.5) * side_h / out_h - 0.5
    return xs, ys


def _bilinear(array, xs, ys, pad):
    """Bilinear samples of (H, W[, C]) `array` at the grid ys x xs; `pad` outside the image."""
    h, w = array.shape[:2]
    x0 = np.floor(xs).astype(int)
    y0 = np.floor(ys).astype(int)
    fx, fy = xs - x0, ys - y0
    arr = array.astype(np.float32)
    if arr.ndim == 2:
        arr = arr[..., None]
    padded = np.pad(arr, ((1, 1), (1, 1), (0, 0)), constant_values=pad)

    def take(yi, xi):
        yi = np.clip(yi + 1, 0, h + 1)
        xi = np.clip(xi + 1, 0, w + 1)
        return padded[yi[:, None], xi[None, :]]

    # positions further than one pixel outside clip onto the pad border
    out = (take(y0, x0) * ((1 - fy)[:, None, None] * (1 - fx)[None, :, None])
           + take(y0, x0 + 1) * ((1 - fy)[:, None, None] * fx[None, :, None])
           + take(y0 + 1, x0) * (fy[:, None, None] * (1 - fx)[None, :, None])
           + take(y0 + 1, x0 + 1) * (fy[:, None, None] * fx[None, :, None]))
    return out if array.ndim == 3 else out[..., 0]


def crop_window(array, window, out_size, context_frac=0.0, pad=0.0):
    """Crop the square `window` (plus `context_frac` of its side on each side) and resize it.

    `array` is (H, W) or (H, W, C); pixels outside the image take `pad`. Bilinear.
    """
    xc, yc, side = window
    full = side * (1.0 + 2.0 * context_frac)
    xs, ys = _sample_grid(xc - full / 2.0, yc - full / 2.0, full, full, out_size, out_size)
    return _bilinear(array, xs, ys, pad)


class DeepMaskSampler:
    """Draws DeepMask/SharpMask training samples from a :class:`~kseg.data.coco.CocoInstances`.

    With probability `mask_freq` a **mask sample**: a positive, jittered patch of a random
    non-crowd object (``area >= min_area``, sides ``>= min_side``), its mask label (``+1``/``-1``),
    ``score = +1``, ``mask_weight = 1``. Otherwise a **score sample**: a positive (as above, mask
    label kept) or a negative (random window satisfying :func:`is_negative` against every
    object, crowds included; ``score = -1``, ``mask_weight = 0``), half and half.

    Args:
        instances: the annotations (with images).
        cfg: :class:`PatchConfig`.
        mask_freq: share of mask samples (the released ``hfreq``; 1.0 for SharpMask, which trains
            only the mask head).
        flip: horizontal flip with probability 0.5.
        seed: random seed.
    """

    def __init__(self, instances, cfg=DEEPMASK_PAPER, mask_freq=0.5, flip=True, seed=None):
        if not 0.0 <= mask_freq <= 1.0:
            raise ValueError(f"mask_freq must be in [0, 1], got {mask_freq}")
        self.instances = instances
        self.cfg = cfg
        self.mask_freq = mask_freq
        self.flip = flip
        self.rng = np.random.default_rng(seed)
        self._images = {}
        self._masks = {}
        self.objects = []  # (image_id, ann) usable for mask samples
        self.boxes = {}
        for img_id in instances.image_ids:
            anns = instances.annotations(img_id, include_crowd=True)
            self.boxes[img_id] = [a["bbox"] for a in anns]
            for a in anns:
                if a.get("iscrowd", 0) or a["area"] < cfg.min_area or min(a["bbox"][2:]) < cfg.min_side:
                    continue
                self.objects.append((img_id, a))
        if not self.objects:
            raise ValueError("no annotation qualifies for mask sampling (non-crowd, area >= "
                             f"{cfg.min_area}, sides >= {cfg.min_side})")

    def _image(self, img_id):
        if img_id not in self._images:
            self._images[img_id] = self.instances.load_image(img_id).astype(np.uint8)
        return self._images[img_id]

    def _mask(self, ann):
        if ann["id"] not in self._masks:
            self._masks[ann["id"]] = self.instances.ann_to_mask(ann)
        return self._masks[ann["id"]]

    def _patch(self, img_id, window):
        cfg = self.cfg
        return crop_window(self._image(img_id), window, cfg.window_size, cfg.context / cfg.input_size,
                           cfg.pad_value)

    def positive(self):
        img_id, ann = self.objects[self.rng.integers(len(self.objects))]
        window = jitter_window(ann["bbox"], self.cfg, self.rng)
        label = crop_window(self._mask(ann), window, self.cfg.label_size, 0.0, 0.0) > 0.5
        return self._patch(img_id, window), np.where(label, 1.0, -1.0).astype(np.float32), window

    def negative(self, max_tries=100):
        cfg = self.cfg
        for _ in range(max_tries):
            img_id = self.instances.image_ids[self.rng.integers(len(self.instances.image_ids))]
            info = self.instances.image_info(img_id)
            h, w = info["height"], info["width"]
            # window side relative to the image, log-uniform over neg_scales
            side = cfg.input_size * 2.0 ** self.rng.uniform(*cfg.neg_scales)
            window = (self.rng.uniform(0, w), self.rng.uniform(0, h), side)
            if is_negative(window, self.boxes[img_id], cfg):
                return self._patch(img_id, window), window
        raise RuntimeError(f"no negative window found in {max_tries} tries")

    def sample(self):
        cfg = self.cfg
        if self.rng.uniform() < self.mask_freq:
            image, mask, _ = self.positive()
            score, weight = 1.0, 1.0
        elif self.rng.uniform() < 0.5:
            image, mask, _ = self.positive()
            score, weight = 1.0, 0.0
        else:
            image, _ = self.negative()
            mask = -np.ones((cfg.label_size, cfg.label_size), np.float32)
            score, weight = -1.0, 0.0
        if self.flip and self.rng.uniform() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        return {
            "image": np.ascontiguousarray(image, np.float32),
            "mask": np.ascontiguousarray(mask, np.float32),
            "score": np.array([score], np.float32),
            "mask_weight": np.array([weight], np.float32),
        }


def deepmask_dataset(instances, cfg=DEEPMASK_PAPER, batch_size=32, mask_freq=0.5, seed=None, flip=True):
    """An endless ``tf.data.Dataset`` of DeepMask/SharpMask batches.

    Yields ``(images (B, wSz, wSz, 3) float32 in [0, 255], targets)`` with ``targets`` a dict of
    ``masks (B, gSz, gSz)`` in {-1, +1}, ``scores (B, 1)`` in {-1, +1}, ``mask_weight (B, 1)``.
    """
    import tensorflow as tf

    sampler = DeepMaskSampler(instances, cfg, mask_freq=mask_freq, flip=flip, seed=seed)
    w, g = cfg.window_size, cfg.label_size

    def gen():  # each iterator draws the same sequence: a resumed run skips to the same batches
        sampler.rng = np.random.default_rng(seed)
        while True:
            s = sampler.sample()
            yield s["image"], {"masks": s["mask"], "scores": s["score"], "mask_weight": s["mask_weight"]}

    sig = (
        tf.TensorSpec((w, w, 3), tf.float32),
        {"masks": tf.TensorSpec((g, g), tf.float32), "scores": tf.TensorSpec((1,), tf.float32),
         "mask_weight": tf.TensorSpec((1,), tf.float32)},
    )
    return tf.data.Dataset.from_generator(gen, output_signature=sig).batch(batch_size).prefetch(2)


def detector_samples(instances, proposals, image_id, num_rois=64, fg_fraction=0.25, fg_iou=0.5,
                     bg_iou=(0.1, 0.5), rng=None, include_gt=True):
    """Fast R-CNN minibatch of one image: sampled ROIs with their class and regression targets.

    Follows Fast R-CNN (Girshick, ICCV 2015, Sec. 2.3): up to ``fg_fraction`` of the ROIs are
    foreground (IoU >= `fg_iou` with a ground-truth box; its class), the rest background (IoU in
    `bg_iou`; class 0). Ground-truth boxes join the proposals when `include_gt`.

    Args:
        proposals: (P, 4) ``[y1, x1, y2, x2]`` pixel boxes of this image.

    Always returns exactly `num_rois` ROIs: with too few proposals, random boxes over the image
    (IoU < `fg_iou`) fill the background, and ROIs repeat when needed.

    Returns a dict: ``rois`` (R, 4), ``labels`` (R,) int32, ``ious`` (R,) (IoU with the matched
    object, the input of MultiPathNet's integral loss), ``gt_boxes`` (R, 4) matched boxes,
    ``gt`` the image's instances.
    """
    from kseg.ops.boxes import box_iou_numpy

    rng = rng or np.random.default_rng()
    gt = instances.instances(image_id, include_crowd=False)
    boxes = np.asarray(proposals, np.float32).reshape(-1, 4)
    if include_gt and len(gt["boxes"]):
        boxes = np.concatenate([gt["boxes"], boxes])
    if len(gt["boxes"]) == 0:
        iou = np.zeros((len(boxes),), np.float32)
        arg = np.zeros((len(boxes),), np.int64)
    else:
        ious = box_iou_numpy(boxes, gt["boxes"])
        iou, arg = ious.max(1), ious.argmax(1)
    fg = np.flatnonzero(iou >= fg_iou)
    bg = np.flatnonzero((iou >= bg_iou[0]) & (iou < bg_iou[1]))
    if len(bg) == 0:
        bg = np.flatnonzero(iou < fg_iou)
    if len(bg) == 0:  # too few proposals: random boxes over the image serve as background
        info = instances.image_info(image_id)
        h, w = info["height"], info["width"]
        c = rng.uniform(0, 1, (4 * num_rois, 2)) * [h, w]
        s = rng.uniform(8, max(h, w) / 2, (4 * num_rois, 2))
        extra = np.clip(np.concatenate([c - s / 2, c + s / 2], 1), 0, [h, w, h, w]).astype(np.float32)
        extra = extra[(extra[:, 2] - extra[:, 0] > 1) & (extra[:, 3] - extra[:, 1] > 1)]
        e_iou = box_iou_numpy(extra, gt["boxes"]).max(1) if len(gt["boxes"]) else np.zeros(len(extra), np.float32)
        e_arg = box_iou_numpy(extra, gt["boxes"]).argmax(1) if len(gt["boxes"]) else np.zeros(len(extra), np.int64)
        keep_e = e_iou < fg_iou
        bg = len(boxes) + np.arange(int(keep_e.sum()))
        boxes = np.concatenate([boxes, extra[keep_e]])
        iou = np.concatenate([iou, e_iou[keep_e]])
        arg = np.concatenate([arg, e_arg[keep_e]])
    n_fg = min(len(fg), int(round(num_rois * fg_fraction)))
    fg = rng.choice(fg, n_fg, replace=False) if n_fg else fg[:0]
    n_bg = num_rois - n_fg
    if len(bg) == 0 and n_bg and n_fg:  # nothing but foreground: repeat it
        fg = np.concatenate([fg, rng.choice(fg, n_bg, replace=True)])
        n_fg, n_bg = len(fg), 0
    bg = rng.choice(bg, n_bg, replace=len(bg) < n_bg) if len(bg) and n_bg else bg[:0]
    keep = np.concatenate([fg, bg]).astype(np.int64)
    labels = np.where(np.arange(len(keep)) < n_fg, gt["labels"][arg[keep]] if len(gt["labels"]) else 0, 0)
    return {
        "rois": boxes[keep],
        "labels": labels.astype(np.int32),
        "ious": iou[keep].astype(np.float32),
        "gt_boxes": gt["boxes"][arg[keep]] if len(gt["boxes"]) else np.zeros((len(keep), 4), np.float32),
        "gt": gt,
    }
