"""Joint image + mask augmentation: random scale, crop (with padding) and horizontal flip.

SegNet's CamVid training used no augmentation; the later papers of this family (DeepLab, the
dilation network, PSPNet) train on random scale + crop + flip, which is what this provides.

The flip is Keras 3's own ``keras.layers.RandomFlip`` on a ``{"images", "segmentation_masks"}``
dict (it flips both with the same draw). Keras' ``RandomZoom`` and ``RandomCrop`` do not fit here:
``RandomZoom`` zooms about the centre and keeps the input size, so with zoom-in a later crop can
only see the middle of the image, and it fills masks with the same value as images;
``RandomCrop`` needs static shapes and, when an input side equals the crop side, centre-crops and
*bilinearly resizes* the mask, which blends labels. So scale and crop are done here with
``tf.image`` ops: the image is resized bilinearly and the mask with nearest neighbour (both with
half-pixel centres, so they stay aligned); image padding is 0 and mask padding is ``ignore_class``.
"""

from __future__ import annotations
from kseg.utils import renamed_argument

__all__ = ["JointAugmentation", "joint_augmentation"]


class JointAugmentation:
    """Random scale, crop/pad and horizontal flip applied identically to an image and its mask.

    Called on one example (unbatched) as a dict ``{"images": (H, W, 3), "segmentation_masks":
    (H, W, 1)}`` (the form :func:`kseg.data.segmentation_dataset` passes to ``augment``), it returns
    the same keys: ``images`` float32 of ``crop_size`` and ``segmentation_masks`` int32 of
    ``crop_size`` whose values are the input's labels or the padding label.

    Args:
        crop_size: ``(height, width)`` of the output; ``None`` keeps each input's size (scale, then
            crop/pad back).
        scale_range: ``(low, high)``: the image is resized by a factor drawn uniformly from it.
        flip: random left-right flip (probability 0.5).
        ignore_class: the mask padding value; ``None`` pads with -1, which
            :func:`kseg.data.segmentation_dataset` replaces by its own ``ignore_class``.
        seed: integer seed for reproducible draws.

    Example:
        >>> import numpy as np
        >>> aug = JointAugmentation(crop_size=(64, 96), seed=0)
        >>> out = aug({"images": np.zeros((90, 120, 3), "float32"),
        ...            "segmentation_masks": np.ones((90, 120, 1), "int32")})
        >>> tuple(out["images"].shape), tuple(out["segmentation_masks"].shape)
        ((64, 96, 3), (64, 96, 1))
    """

    @renamed_argument("ignore_label", "ignore_class")
    def __init__(self, crop_size=None, scale_range=(0.75, 1.5), flip=True, ignore_class=None, seed=None):
        if crop_size is not None:
            if isinstance(crop_size, int):
                crop_size = (crop_size, crop_size)
            crop_size = tuple(int(v) for v in crop_size)
            if len(crop_size) != 2 or min(crop_size) < 1:
                raise ValueError(f"crop_size must be (height, width) with positive sizes, got {crop_size}")
        low, high = (float(v) for v in scale_range)
        if not 0 < low <= high:
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {scale_range}")
        if ignore_class is not None and not 0 <= int(ignore_class) <= 255:
            raise ValueError(f"ignore_class must be None or in 0..255, got {ignore_class}")
        self.crop_size = crop_size
        self.scale_range = (low, high)
        self.flip = bool(flip)
        self.ignore_class = ignore_class
        self.seed = seed
        self._rng = None
        self._flip_layer = None
        # Create the generator / layer state eagerly, not while tf.data traces the map function.
        self._build()

    def get_config(self):
        return {
            "crop_size": self.crop_size,
            "scale_range": self.scale_range,
            "flip": self.flip,
            "ignore_class": self.ignore_class,
            "seed": self.seed,
        }

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"JointAugmentation({args})"

    def _build(self):
        import keras
        import tensorflow as tf

        if self._rng is None:
            self._rng = (
                tf.random.Generator.from_seed(self.seed)
                if self.seed is not None
                else tf.random.Generator.from_non_deterministic_state()
            )
        if self.flip and self._flip_layer is None:
            self._flip_layer = keras.layers.RandomFlip(
                "horizontal", seed=None if self.seed is None else self.seed + 1, dtype="float32"
            )

    def __call__(self, data):
        import tensorflow as tf

        self._build()
        image = tf.convert_to_tensor(data["images"])
        mask = tf.convert_to_tensor(data["segmentation_masks"])
        image = tf.cast(image, tf.float32)
        squeeze = mask.shape.rank == 2
        if squeeze:
            mask = mask[..., None]
        mask = tf.cast(mask, tf.int32)

        seeds = self._rng.make_seeds(3)
        shape = tf.shape(image)
        h, w = shape[0], shape[1]

        low, high = self.scale_range
        if (low, high) != (1.0, 1.0):
            scale = tf.random.stateless_uniform((), seed=seeds[:, 0], minval=low, maxval=high)
            new_h = tf.maximum(tf.cast(tf.round(tf.cast(h, tf.float32) * scale), tf.int32), 1)
            new_w = tf.maximum(tf.cast(tf.round(tf.cast(w, tf.float32) * scale), tf.int32), 1)
            image = tf.image.resize(image, (new_h, new_w), method="bilinear")
            mask = tf.image.resize(mask, (new_h, new_w), method="nearest")
            mask = tf.cast(mask, tf.int32)
            h, w = new_h, new_w

        out_h, out_w = (shape[0], shape[1]) if self.crop_size is None else self.crop_size
        # Crop and pad in one go: mask + 1 rides along as a 4th channel so that zero padding marks
        # the fill pixels, which then get the ignore label.
        both = tf.concat([image, tf.cast(mask + 1, tf.float32)], axis=-1)
        pad_h, pad_w = tf.maximum(out_h - h, 0), tf.maximum(out_w - w, 0)
        offsets = tf.random.stateless_uniform((4,), seed=seeds[:, 1])
        top = tf.cast(tf.floor(offsets[0] * tf.cast(pad_h + 1, tf.float32)), tf.int32)
        left = tf.cast(tf.floor(offsets[1] * tf.cast(pad_w + 1, tf.float32)), tf.int32)
        both = tf.image.pad_to_bounding_box(both, tf.minimum(top, pad_h), tf.minimum(left, pad_w), h + pad_h, w + pad_w)
        room_h, room_w = h + pad_h - out_h, w + pad_w - out_w
        y = tf.minimum(tf.cast(tf.floor(offsets[2] * tf.cast(room_h + 1, tf.float32)), tf.int32), room_h)
        x = tf.minimum(tf.cast(tf.floor(offsets[3] * tf.cast(room_w + 1, tf.float32)), tf.int32), room_w)
        both = tf.image.crop_to_bounding_box(both, y, x, out_h, out_w)
        image = both[..., :3]
        mask = tf.cast(tf.round(both[..., 3:]), tf.int32) - 1
        fill = -1 if self.ignore_class is None else int(self.ignore_class)
        mask = tf.where(mask < 0, fill, mask)

        if self.flip:
            out = self._flip_layer({"images": image, "segmentation_masks": tf.cast(mask, tf.float32)}, training=True)
            image = out["images"]
            mask = tf.cast(tf.round(out["segmentation_masks"]), tf.int32)

        if self.crop_size is not None:
            image = tf.ensure_shape(image, (*self.crop_size, 3))
            mask = tf.ensure_shape(mask, (*self.crop_size, 1))
        if squeeze:
            mask = mask[..., 0]
        return {"images": image, "segmentation_masks": mask}


@renamed_argument("ignore_label", "ignore_class")
def joint_augmentation(crop_size=None, scale_range=(0.75, 1.5), flip=True, seed=None, ignore_class=None):
    """Joint image+mask augmentation for :func:`kseg.data.segmentation_dataset` (``augment=``).

    Random scale in ``scale_range`` (image bilinear, mask nearest neighbour), random crop to
    ``crop_size`` (padding images with 0 and masks with the ignore label where the scaled image is
    smaller), random horizontal flip (``keras.layers.RandomFlip`` on an
    ``{"images", "segmentation_masks"}`` dict). See :class:`JointAugmentation`.

    Example:
        >>> from kseg.data import find_pairs, segmentation_dataset, joint_augmentation
        >>> ds = segmentation_dataset(find_pairs("../shared/data/camvid"), shuffle=True,
        ...                           augment=joint_augmentation(crop_size=(360, 480), seed=0))  # doctest: +SKIP
    """
    return JointAugmentation(crop_size=crop_size, scale_range=scale_range, flip=flip, ignore_class=ignore_class, seed=seed)
