"""Instance annotations in COCO's format (Lin et al., ECCV 2014), read through ``pycocotools``.

DeepMask, SharpMask and MultiPathNet were trained and evaluated on COCO's own JSON; this module
reads that JSON (polygons and RLE, crowd regions included), checks it strictly, and also turns a
folder of per-object mask PNGs into the same in-memory form, so every later stage (patch
sampling, detector samples, evaluation) reads one structure.

    >>> from kseg.data.coco import load_coco
    >>> ds = load_coco("coco_tiny/annotations/instances_val2017.json", "coco_tiny/val2017")
    >>> img = ds.load_image(ds.image_ids[0]); anns = ds.annotations(ds.image_ids[0])
    >>> mask = ds.ann_to_mask(anns[0])            # (H, W) uint8 in {0, 1}

Malformed annotations raise :class:`InstanceDataError` (a ``ValueError``) naming the annotation
id and the bad value (a :class:`kseg.data.DataError`, so a ``ValueError``): an empty or degenerate polygon, a box outside its image, an unknown
category or image.
"""

import copy
import json
import os
import pathlib

import numpy as np
from PIL import Image

from kseg.data.errors import DataError

__all__ = [
    "InstanceDataError",
    "CocoInstances",
    "load_coco",
    "validate_coco",
    "mask_folder_to_coco",
    "load_mask_folder",
]

_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")


class InstanceDataError(DataError):
    """A malformed instance annotation (names the annotation and the bad value); a ``DataError``."""


def _bad(ann, msg):
    return InstanceDataError(f"annotation id={ann.get('id')!r} (image_id={ann.get('image_id')!r}): {msg}")


def validate_coco(dataset, box_tolerance=1.0):
    """Check a COCO instances dict; raise :class:`InstanceDataError` on the first bad record.

    Checks: the top-level keys; unique image / annotation / category ids; every annotation's
    ``image_id`` and ``category_id`` resolve; ``bbox`` is ``[x, y, w, h]`` with ``w, h > 0``
    inside its image (``box_tolerance`` pixels of slack, COCO boxes come from float polygons);
    ``iscrowd == 0`` segmentations are non-empty lists of polygons of at least 3 points
    (an even number >= 6 of finite coordinates); RLE ``size`` equals the image's ``[H, W]``.
    """
    for key in ("images", "annotations", "categories"):
        if key not in dataset:
            raise InstanceDataError(f"COCO instances JSON lacks the {key!r} list")
    images = {}
    for im in dataset["images"]:
        if im["id"] in images:
            raise InstanceDataError(f"duplicate image id {im['id']!r}")
        if int(im.get("height", 0)) <= 0 or int(im.get("width", 0)) <= 0:
            raise InstanceDataError(
                f"image id={im['id']!r}: height/width must be > 0, got {im.get('height')}x{im.get('width')}"
            )
        images[im["id"]] = im
    cats = set()
    for c in dataset["categories"]:
        if c["id"] in cats:
            raise InstanceDataError(f"duplicate category id {c['id']!r}")
        cats.add(c["id"])
    seen = set()
    for ann in dataset["annotations"]:
        if ann.get("id") in seen:
            raise _bad(ann, "duplicate annotation id")
        seen.add(ann.get("id"))
        if ann.get("image_id") not in images:
            raise _bad(ann, f"unknown image_id {ann.get('image_id')!r}")
        if ann.get("category_id") not in cats:
            raise _bad(ann, f"unknown category_id {ann.get('category_id')!r}; known: {sorted(cats)}")
        im = images[ann["image_id"]]
        h, w = int(im["height"]), int(im["width"])
        bbox = ann.get("bbox")
        if bbox is None or len(bbox) != 4 or not np.all(np.isfinite(np.asarray(bbox, float))):
            raise _bad(ann, f"bbox must be 4 finite numbers [x, y, w, h], got {bbox!r}")
        x, y, bw, bh = (float(v) for v in bbox)
        if bw <= 0 or bh <= 0:
            raise _bad(ann, f"bbox width and height must be > 0, got {bbox!r}")
        t = box_tolerance
        if x < -t or y < -t or x + bw > w + t or y + bh > h + t:
            raise _bad(ann, f"bbox {bbox!r} lies outside its {w}x{h} image")
        seg = ann.get("segmentation")
        if seg is None:
            raise _bad(ann, "has no 'segmentation'")
        if isinstance(seg, dict):
            if "counts" not in seg or "size" not in seg:
                raise _bad(ann, f"RLE segmentation needs 'counts' and 'size', got keys {sorted(seg)}")
            if [int(v) for v in seg["size"]] != [h, w]:
                raise _bad(ann, f"RLE size {seg['size']!r} differs from the image's [{h}, {w}]")
        else:
            if not isinstance(seg, (list, tuple)) or len(seg) == 0:
                raise _bad(ann, f"empty polygon list {seg!r}")
            for k, poly in enumerate(seg):
                arr = np.asarray(poly, dtype=float)
                if arr.ndim != 1 or arr.size == 0:
                    raise _bad(ann, f"polygon {k} is empty")
                if arr.size % 2 or arr.size < 6:
                    raise _bad(ann, f"polygon {k} needs an even number >= 6 of coordinates, got {arr.size}")
                if not np.all(np.isfinite(arr)):
                    raise _bad(ann, f"polygon {k} has non-finite coordinates")
    return dataset


class CocoInstances:
    """COCO instance annotations of one split, with images read from `image_dir`.

    Wraps a ``pycocotools.coco.COCO`` (``self.coco``) built from an in-memory dict, so the same
    object serves patch sampling, detector samples and ``COCOeval``.

    Args:
        dataset: COCO instances dict (``images``, ``annotations``, ``categories``).
        image_dir: folder holding the images' ``file_name``s.
        validate: run :func:`validate_coco` first.
    """

    def __init__(self, dataset, image_dir=None, validate=True):
        from pycocotools.coco import COCO  # heavy import, deferred

        if validate:
            validate_coco(dataset)
        self.dataset = dataset
        self.image_dir = None if image_dir is None else pathlib.Path(image_dir)
        coco = COCO()
        coco.dataset = copy.deepcopy(dataset)
        _quiet(coco.createIndex)
        self.coco = coco
        self.image_ids = sorted(coco.imgs)
        self.category_ids = sorted(coco.cats)
        #: contiguous class index (1..K; 0 is background) of each COCO category id
        self.cat_to_label = {c: i + 1 for i, c in enumerate(self.category_ids)}
        self.label_to_cat = {v: k for k, v in self.cat_to_label.items()}

    def __len__(self):
        return len(self.image_ids)

    @property
    def num_classes(self):
        """Object categories + background."""
        return len(self.category_ids) + 1

    def image_info(self, image_id):
        return self.coco.imgs[image_id]

    def image_path(self, image_id):
        if self.image_dir is None:
            raise ValueError("this dataset was built without image_dir")
        return self.image_dir / self.coco.imgs[image_id]["file_name"]

    def load_image(self, image_id):
        """(H, W, 3) float32 RGB in [0, 255]."""
        with Image.open(self.image_path(image_id)) as im:
            return np.asarray(im.convert("RGB"), dtype=np.float32)

    def annotations(self, image_id, include_crowd=True):
        ids = self.coco.getAnnIds(imgIds=[image_id], iscrowd=None if include_crowd else False)
        return self.coco.loadAnns(ids)

    def ann_to_mask(self, ann):
        """(H, W) uint8 binary mask of one annotation (polygons or RLE)."""
        return self.coco.annToMask(ann).astype(np.uint8)

    def instances(self, image_id, include_crowd=False):
        """``boxes`` (N, 4) float32 ``[y1, x1, y2, x2]`` pixels, ``labels`` (N,) int32 contiguous
        class indices, ``masks`` (N, H, W) uint8, ``iscrowd`` (N,) of one image."""
        anns = self.annotations(image_id, include_crowd=include_crowd)
        info = self.coco.imgs[image_id]
        h, w = info["height"], info["width"]
        boxes = np.array([[a["bbox"][1], a["bbox"][0], a["bbox"][1] + a["bbox"][3], a["bbox"][0] + a["bbox"][2]]
                          for a in anns], np.float32).reshape(-1, 4)
        labels = np.array([self.cat_to_label[a["category_id"]] for a in anns], np.int32)
        masks = np.stack([self.ann_to_mask(a) for a in anns]) if anns else np.zeros((0, h, w), np.uint8)
        crowd = np.array([a.get("iscrowd", 0) for a in anns], np.int32)
        return {"boxes": boxes, "labels": labels, "masks": masks, "iscrowd": crowd}


def _quiet(fn):
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        return fn()


def load_coco(annotation_file, image_dir=None, validate=True):
    """Read a COCO instances JSON into :class:`CocoInstances` (validated by default).

    `image_dir` defaults to the split folder next to ``annotations/`` in COCO's layout
    (``.../annotations/instances_val2017.json`` -> ``.../val2017``) when it exists.
    """
    annotation_file = pathlib.Path(annotation_file)
    if not annotation_file.is_file():
        raise FileNotFoundError(f"COCO annotation file not found: {annotation_file}")
    with open(annotation_file) as f:
        try:
            dataset = json.load(f)
        except json.JSONDecodeError as err:
            raise InstanceDataError(f"{annotation_file} is not valid JSON: {err}") from None
    if image_dir is None:
        stem = annotation_file.stem
        split = stem.split("_", 1)[1] if stem.startswith("instances_") else stem
        guess = annotation_file.parent.parent / split
        image_dir = guess if guess.is_dir() else None
    return CocoInstances(dataset, image_dir=image_dir, validate=validate)


def mask_folder_to_coco(root, category_name="object"):
    """A folder of per-object mask PNGs as a COCO instances dict (RLE segmentations).

    Layout::

        root/images/<stem>.jpg|png
        root/masks/<stem>/<k>.png          one PNG per object instance, nonzero = object
        root/masks/<stem>/<k>_<cat>.png    optional: category name after an underscore

    Every mask must match its image's size and be non-empty.
    """
    import pycocotools.mask as mask_utils

    root = pathlib.Path(root)
    img_dir, mask_dir = root / "images", root / "masks"
    if not img_dir.is_dir() or not mask_dir.is_dir():
        raise FileNotFoundError(f"expected {img_dir} and {mask_dir} (one folder of masks per image)")
    images, anns, cats = [], [], {}
    files = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in _IMAGE_EXTS)
    if not files:
        raise FileNotFoundError(f"no images in {img_dir}")
    for img_id, path in enumerate(files, start=1):
        with Image.open(path) as im:
            w, h = im.size
        images.append({"id": img_id, "file_name": path.name, "height": h, "width": w})
        for mpath in sorted((mask_dir / path.stem).glob("*.png")) if (mask_dir / path.stem).is_dir() else []:
            stem = mpath.stem
            cat_name = stem.split("_", 1)[1] if "_" in stem else category_name
            cat_id = cats.setdefault(cat_name, len(cats) + 1)
            with Image.open(mpath) as m:
                arr = np.asarray(m.convert("L")) > 0
            if arr.shape != (h, w):
                raise InstanceDataError(f"mask {mpath} is {arr.shape[1]}x{arr.shape[0]}, its image is {w}x{h}")
            if not arr.any():
                raise InstanceDataError(f"mask {mpath} is empty (no nonzero pixel)")
            rle = mask_utils.encode(np.asfortranarray(arr.astype(np.uint8)))
            bbox = [float(v) for v in mask_utils.toBbox(rle)]
            rle["counts"] = rle["counts"].decode("ascii")
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": cat_id, "segmentation": rle,
                         "area": float(arr.sum()), "bbox": bbox, "iscrowd": 0})
    categories = [{"id": i, "name": n, "supercategory": n} for n, i in cats.items()]
    return {"images": images, "annotations": anns, "categories": categories}


def load_mask_folder(root, category_name="object"):
    """:func:`mask_folder_to_coco` as a :class:`CocoInstances` (images from ``root/images``)."""
    return CocoInstances(mask_folder_to_coco(root, category_name), image_dir=os.path.join(root, "images"))
