"""Check a COCO split completely before training: records, every annotation's mask, every image file.

:func:`kseg.data.validate_coco` checks the annotation records' structure; :func:`load_checked_coco`
adds what otherwise surfaces only when a training step reads the sample, as a raw traceback:

* an image or annotation record without a required key (``id``, ``file_name``, ``height``, ...);
* an RLE segmentation that does not decode to its image's size (garbage ``counts``);
* a polygon lying entirely outside its image (its mask would be empty);
* an image file that is missing, not a PNG/JPEG, truncated or corrupt (header and integrity
  check of :func:`kseg.data.read_image_info`), or whose size differs from its record.

Every error is an :class:`~kseg.data.coco.InstanceDataError` naming the file or the record.
"""

import json
import pathlib

import numpy as np

from kseg.data.coco import InstanceDataError, load_coco

__all__ = ["load_checked_coco", "check_records", "check_image_files", "check_masks"]

_IMAGE_KEYS = ("id", "file_name", "height", "width")
_ANN_KEYS = ("id", "image_id", "category_id", "bbox")


def check_records(dataset, source="COCO instances JSON"):
    """Every image / annotation / category record is a dict with the keys kseg reads."""
    for key in ("images", "annotations", "categories"):
        if not isinstance(dataset.get(key), list):
            raise InstanceDataError(f"{source}: lacks the {key!r} list")
    for kind, keys in (("images", _IMAGE_KEYS), ("annotations", _ANN_KEYS), ("categories", ("id",))):
        for i, rec in enumerate(dataset[kind]):
            if not isinstance(rec, dict):
                raise InstanceDataError(f"{source}: {kind}[{i}] is a {type(rec).__name__}, not a record")
            missing = [k for k in keys if k not in rec]
            if missing:
                raise InstanceDataError(f"{source}: {kind}[{i}] (id={rec.get('id')!r}) lacks {missing}")


def check_masks(inst, source="COCO instances JSON"):
    """Every non-crowd annotation decodes to a non-empty mask of its image's size."""
    for ann in inst.coco.anns.values():
        info = inst.coco.imgs[ann["image_id"]]
        h, w = int(info["height"]), int(info["width"])
        where = f"{source}: annotation id={ann['id']!r} (image_id={ann['image_id']!r})"
        seg = ann.get("segmentation")
        if isinstance(seg, list) and seg:
            pts = np.concatenate([np.asarray(p, float).reshape(-1, 2) for p in seg])
            if pts[:, 0].max() <= 0 or pts[:, 0].min() >= w or pts[:, 1].max() <= 0 or pts[:, 1].min() >= h:
                raise InstanceDataError(f"{where}: polygon lies entirely outside its {w}x{h} image (empty mask)")
            continue
        if isinstance(seg, dict):
            try:
                mask = inst.ann_to_mask(ann)
            except Exception as err:  # pycocotools: TypeError, ValueError, ... on garbage counts
                raise InstanceDataError(f"{where}: RLE segmentation does not decode ({type(err).__name__}: {err})") \
                    from None
            counts = seg.get("counts")
            if isinstance(counts, bytes):
                counts = counts.decode("latin-1")
            if isinstance(counts, str):
                counts = _compressed_counts(counts, where)
            if not isinstance(counts, list) or any(int(c) < 0 for c in counts):
                raise InstanceDataError(f"{where}: RLE counts must be run lengths >= 0")
            if sum(int(c) for c in counts) != h * w:
                raise InstanceDataError(f"{where}: RLE counts sum to {sum(counts)}, not {h}x{w}={h * w} pixels")
            if mask.shape != (h, w):
                raise InstanceDataError(f"{where}: RLE mask is {mask.shape}, its image is {(h, w)}")
            if not ann.get("iscrowd", 0) and not mask.any():
                raise InstanceDataError(f"{where}: RLE mask is empty")


def _compressed_counts(text, where):
    """Run lengths of COCO's compressed RLE string (6-bit groups offset by 48, with a continuation
    bit and a sign bit; runs after the second are stored as differences to the run two before)."""
    counts, pos = [], 0
    while pos < len(text):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(text):
                raise InstanceDataError(f"{where}: RLE counts string ends inside a run length (garbage counts)")
            c = ord(text[pos]) - 48
            if not 0 <= c < 64:
                raise InstanceDataError(f"{where}: RLE counts hold the character {text[pos]!r} (garbage counts)")
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            pos += 1
            shift += 5
            if not more and c & 0x10:
                value |= -1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def check_image_files(inst):
    """Every image record's file exists, is an intact PNG/JPEG, and has the recorded size."""
    from kseg.data.folder import read_image_info

    if inst.image_dir is None:
        raise InstanceDataError("no image folder for the COCO annotations (expected the split's folder)")
    if not inst.image_dir.is_dir():
        raise InstanceDataError(f"image folder {inst.image_dir} does not exist")
    for image_id in inst.image_ids:
        path = inst.image_path(image_id)
        if not path.is_file():
            raise InstanceDataError(f"{path}: missing image file (image id={image_id!r})")
        info = read_image_info(path)  # DataError naming the file: truncated, corrupt, not an image
        rec = inst.image_info(image_id)
        if (info["height"], info["width"]) != (int(rec["height"]), int(rec["width"])):
            raise InstanceDataError(
                f"{path}: image is {info['width']}x{info['height']}, its record (id={image_id!r}) says "
                f"{rec['width']}x{rec['height']}"
            )


def load_checked_coco(annotation_file, image_dir=None):
    """:func:`kseg.data.load_coco` after :func:`check_records`, then :func:`check_masks` and
    :func:`check_image_files`: a split that passes can be trained on without a late data error."""
    annotation_file = pathlib.Path(annotation_file)
    if annotation_file.is_file():
        try:
            with open(annotation_file) as f:
                dataset = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise InstanceDataError(f"{annotation_file} is not valid JSON: {err}") from None
        if not isinstance(dataset, dict):
            raise InstanceDataError(f"{annotation_file}: not a COCO instances object (a {type(dataset).__name__})")
        check_records(dataset, str(annotation_file))
    try:
        inst = load_coco(annotation_file, image_dir)
    except InstanceDataError as err:
        raise InstanceDataError(f"{annotation_file}: {err}") from None
    check_masks(inst, str(annotation_file))
    check_image_files(inst)
    return inst
