"""A built-in generator of simple street-like scenes, for demos and tests without CamVid.

The scenes follow CamVid's class ids (0 Sky, 1 Building, 2 Pole, 3 Road, 4 Pavement, 5 Tree,
6 SignSymbol, 7 Fence, 8 Car, 9 Pedestrian, 10 Bicyclist): sky on top, a band of buildings, a
pavement strip and the road at the bottom, with trees, fences, poles with signs, cars, pedestrians
and cyclists drawn as rectangles. Each class has its own base colour (varied per scene and per
object, with pixel noise), so the labels are learnable from colour and position. These are
synthetic pictures, not photographs: numbers measured on them say nothing about CamVid.
"""

from __future__ import annotations

import pathlib

import numpy as np
from kseg.utils import renamed_argument

__all__ = ["synthetic_scenes", "write_synthetic_dataset", "tiny_coco", "SYNTHETIC_COLOURS"]

SKY, BUILDING, POLE, ROAD, PAVEMENT, TREE, SIGN, FENCE, CAR, PEDESTRIAN, BICYCLIST = range(11)

# Base colours (RGB) per class id; each scene and object jitters them.
SYNTHETIC_COLOURS = np.array(
    [
        [150, 180, 225],  # sky: light blue
        [140, 90, 70],  # building: brown
        [200, 200, 120],  # pole: pale yellow
        [90, 90, 95],  # road: dark grey
        [170, 150, 200],  # pavement: lilac
        [50, 130, 40],  # tree: green
        [230, 40, 40],  # sign: red
        [120, 100, 40],  # fence: olive
        [40, 40, 170],  # car: blue
        [230, 150, 40],  # pedestrian: orange
        [40, 200, 200],  # bicyclist: cyan
    ],
    dtype=np.float32,
)


def _extra_colour(c):
    # Classes beyond the street set get a fixed colour of their own.
    g = np.random.default_rng(1000 + c)
    return g.uniform(30, 230, 3).astype(np.float32)


def _scene(rng, height, width, num_classes, ignore_class):
    mask = np.zeros((height, width), np.uint8)
    image = np.zeros((height, width, 3), np.float32)
    colours = [
        SYNTHETIC_COLOURS[c] if c < len(SYNTHETIC_COLOURS) else _extra_colour(c) for c in range(num_classes)
    ]
    scene_tint = rng.uniform(-15, 15, 3)
    brightness = rng.uniform(0.85, 1.15)

    def paint(cls, y0, y1, x0, x1, jitter=12.0):
        if cls >= num_classes:
            return
        y0, y1 = int(np.clip(y0, 0, height)), int(np.clip(y1, 0, height))
        x0, x1 = int(np.clip(x0, 0, width)), int(np.clip(x1, 0, width))
        if y1 <= y0 or x1 <= x0:
            return
        mask[y0:y1, x0:x1] = cls
        image[y0:y1, x0:x1] = colours[cls] + rng.uniform(-jitter, jitter, 3)

    # Horizontal bands, top to bottom; classes missing at small num_classes leave their band to
    # the neighbours.
    horizon = rng.uniform(0.25, 0.4) * height
    kerb = rng.uniform(0.55, 0.65) * height
    road_top = kerb + rng.uniform(0.04, 0.08) * height
    bands = [(SKY, 0.0), (BUILDING, horizon), (PAVEMENT, kerb), (ROAD, road_top)]
    bands = [(c, y) for c, y in bands if c < num_classes]
    bands[0] = (bands[0][0], 0.0)
    for (c, y0), (_, y1) in zip(bands, bands[1:] + [(None, float(height))]):
        paint(c, y0, y1, 0, width, jitter=6.0)
    # Building facades of different shades (still class 1), with a ragged roof line.
    x = 0
    while x < width:
        w = int(rng.uniform(0.1, 0.3) * width)
        top = horizon - rng.uniform(0.0, 0.2) * height
        paint(BUILDING, max(top, 0), kerb, x, x + w)
        x += w
    for _ in range(rng.integers(1, 4)):
        x0 = rng.uniform(0, width)
        paint(TREE, horizon - rng.uniform(0.05, 0.2) * height, kerb - rng.uniform(0, 0.1) * height, x0,
              x0 + rng.uniform(0.08, 0.2) * width)
    if rng.random() < 0.6:
        x0 = rng.uniform(0, 0.6) * width
        paint(FENCE, kerb - 0.08 * height, kerb + 0.02 * height, x0, x0 + rng.uniform(0.15, 0.4) * width)
    for _ in range(rng.integers(1, 4)):
        x0 = rng.uniform(0, width)
        pw = max(2.0, 0.012 * width)
        paint(POLE, horizon - 0.1 * height, road_top, x0, x0 + pw)
        if rng.random() < 0.7:
            sw = rng.uniform(0.03, 0.05) * width
            sy = horizon - 0.1 * height + rng.uniform(0, 0.1) * height
            paint(SIGN, sy, sy + sw, x0 - sw / 2 + pw / 2, x0 + sw / 2 + pw / 2)
    for _ in range(rng.integers(0, 4)):
        x0 = rng.uniform(0, width)
        ph = rng.uniform(0.12, 0.2) * height
        paint(PEDESTRIAN, kerb + 0.03 * height - ph, kerb + 0.03 * height, x0, x0 + ph * 0.35)
    for _ in range(rng.integers(1, 4)):
        y1 = rng.uniform(road_top + 0.1 * height, height)
        ch = rng.uniform(0.1, 0.2) * height * (0.6 + y1 / height)
        x0 = rng.uniform(-0.1, 0.9) * width
        paint(CAR, y1 - ch, y1, x0, x0 + ch * rng.uniform(1.4, 2.2))
    if rng.random() < 0.5:
        y1 = rng.uniform(road_top + 0.05 * height, height)
        bh = rng.uniform(0.12, 0.2) * height
        x0 = rng.uniform(0, 0.9) * width
        paint(BICYCLIST, y1 - bh, y1, x0, x0 + bh * 0.6)
    for c in range(11, num_classes):  # any extra classes: a few blobs each
        for _ in range(rng.integers(1, 3)):
            y0, x0 = rng.uniform(0, height), rng.uniform(0, width)
            paint(c, y0, y0 + rng.uniform(0.05, 0.15) * height, x0, x0 + rng.uniform(0.05, 0.15) * width)

    # Vertical shading (light from above) and sensor noise.
    shade = np.linspace(1.05, 0.9, height, dtype=np.float32)[:, None, None]
    image = (image + scene_tint) * brightness * shade + rng.normal(0.0, 6.0, image.shape)
    if ignore_class is not None:
        # Void, as in CamVid, along object borders: one-pixel seams where the label changes.
        edge = np.zeros_like(mask, bool)
        edge[1:] |= mask[1:] != mask[:-1]
        edge[:, 1:] |= mask[:, 1:] != mask[:, :-1]
        mask[edge] = ignore_class
    return np.clip(np.round(image), 0, 255).astype(np.uint8), mask


@renamed_argument("ignore_label", "ignore_class")
def synthetic_scenes(num, height=360, width=480, num_classes=11, seed=0, ignore_class=None):
    """Generate ``num`` street-like scenes with their masks.

    Args:
        num: number of scenes.
        height, width: image size.
        num_classes: classes drawn, ``2 .. 255`` (ids follow CamVid's up to 11; classes missing when
            it is smaller are not drawn; extra classes are drawn as blobs of their own colour).
        seed: integer seed: the same seed gives the same scenes.
        ignore_class: ``None``, or a label painted on one-pixel seams between regions (as CamVid's
            void), to exercise the ignore label.

    Returns:
        ``(images uint8 (N, H, W, 3), masks uint8 (N, H, W))``.

    Example:
        >>> images, masks = synthetic_scenes(2, height=36, width=48)
        >>> images.shape, masks.shape, int(masks.max()) < 11
        ((2, 36, 48, 3), (2, 36, 48), True)
    """
    if int(num) < 0:
        raise ValueError(f"num must be >= 0, got {num}")
    if not 2 <= int(num_classes) <= 255:
        raise ValueError(f"num_classes must be in 2..255, got {num_classes}")
    if int(height) < 8 or int(width) < 8:
        raise ValueError(f"height and width must be >= 8, got {height}x{width}")
    if ignore_class is not None and not num_classes <= ignore_class <= 255:
        raise ValueError(f"ignore_class must be in {num_classes}..255 (not a class id), got {ignore_class}")
    images = np.zeros((num, height, width, 3), np.uint8)
    masks = np.zeros((num, height, width), np.uint8)
    for i, child in enumerate(np.random.SeedSequence(seed).spawn(num)):
        images[i], masks[i] = _scene(np.random.default_rng(child), height, width, num_classes, ignore_class)
    return images, masks


@renamed_argument("ignore_label", "ignore_class")
def write_synthetic_dataset(root, splits=None, height=360, width=480, num_classes=11, seed=0, ignore_class=11):
    """Write synthetic scenes as a CamVid-layout folder (``root/{split}/*.png``, ``root/{split}annot/*.png``).

    Args:
        root: destination folder (created).
        splits: ``{split: number of images}``; default ``{"train": 8, "val": 2, "test": 2}``.
        height, width, num_classes, ignore_class: as :func:`synthetic_scenes`.
        seed: base seed; each split gets its own scenes.

    Returns:
        ``pathlib.Path`` of ``root``, readable by :func:`kseg.data.find_pairs`.

    Example:
        >>> import tempfile
        >>> from kseg.data import find_pairs
        >>> root = write_synthetic_dataset(tempfile.mkdtemp(), {"train": 2}, height=36, width=48)
        >>> len(find_pairs(root, "train"))
        2
    """
    from PIL import Image

    root = pathlib.Path(root)
    splits = {"train": 8, "val": 2, "test": 2} if splits is None else dict(splits)
    for k, (split, n) in enumerate(splits.items()):
        images, masks = synthetic_scenes(
            n, height, width, num_classes, seed=[int(seed), k], ignore_class=ignore_class
        )
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / f"{split}annot").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            name = f"synthetic_{split}_{i:05d}.png"
            Image.fromarray(images[i], "RGB").save(root / split / name)
            Image.fromarray(masks[i], "L").save(root / f"{split}annot" / name)
    return root


def tiny_coco(root, num_images=2, height=40, width=50, split="s"):
    """A minimal COCO split for tests and fault drills: ``num_images`` flat-grey PNGs in ``root/split``,
    one 10x10 square instance each (category ``thing``), as a COCO dict.

    The images are written; the annotations are returned, not written, so a caller can break them
    first (``root/annotations/instances_{split}.json`` is where ``kseg train --data root --split
    split`` reads them; the folder is created).
    """
    from PIL import Image

    root = pathlib.Path(root)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / split).mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(1, int(num_images) + 1):
        Image.fromarray(np.full((height, width, 3), 40 * i % 256, np.uint8)).save(root / split / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png", "height": height, "width": width})
        anns.append({"id": i, "image_id": i, "category_id": 1, "iscrowd": 0, "area": 100.0,
                     "bbox": [10, 10, 10, 10], "segmentation": [[10, 10, 20, 10, 20, 20, 10, 20]]})
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}
