"""Median frequency class balancing (SegNet; Eigen & Fergus, ICCV 2015).

SegNet (Badrinarayanan et al., PAMI 2017, Sec. 4.1 "we use median frequency balancing") weights the
cross-entropy of class ``c`` by ``median(freq) / freq(c)``, where ``freq(c)`` is the number of pixels
of class ``c`` divided by the total number of pixels of the images in which ``c`` is present. The
SegNet-Tutorial prototxts carry these as ``class_weighting`` with ``ignore_class: 11``.
"""

from __future__ import annotations

import pathlib

import numpy as np

from kseg.data.errors import DataError
from kseg.data.folder import mask_label_counts
from kseg.utils import renamed_argument

__all__ = ["class_pixel_counts", "median_frequency_weights"]


def _label_histograms(pairs_or_masks):
    """Yield ``(name, 256-bin label counts, pixels)`` per mask (paths decoded once, cached)."""
    if isinstance(pairs_or_masks, np.ndarray) and pairs_or_masks.ndim in (2, 3) and pairs_or_masks.dtype != object:
        pairs_or_masks = pairs_or_masks[None] if pairs_or_masks.ndim == 2 else pairs_or_masks
    for item in pairs_or_masks:
        if isinstance(item, (str, pathlib.Path, tuple, list)):
            path = pathlib.Path(item[1] if isinstance(item, (tuple, list)) else item)
            counts, pixels = mask_label_counts(path)
            yield path, counts, pixels
            continue
        mask = np.asarray(item)
        if mask.ndim == 3 and mask.shape[-1] == 1:
            mask = mask[..., 0]
        if mask.ndim != 2:
            raise DataError(f"mask array: expected a (H, W) mask, got shape {mask.shape}")
        flat = mask.ravel()
        if flat.dtype != np.uint8:
            if flat.size and flat.min() < 0:
                raise DataError(f"mask array: negative label {int(flat.min())}")
            flat = flat.astype(np.int64)
        yield "mask array", np.bincount(flat), flat.size


@renamed_argument("ignore_label", "ignore_class")
def class_pixel_counts(pairs_or_masks, num_classes=11, ignore_class=11):
    """Per-label pixel statistics of a set of masks.

    Returns:
        ``(label_pixels, image_pixels_where_present)``: two int64 arrays over the labels
        ``0 .. max(num_classes, ignore_class + 1) - 1``: the pixels of each label, and the total pixels
        (all labels, void included) of the images that contain it.

    Raises:
        DataError: naming the mask file with values ``>= num_classes`` other than ``ignore_class``.
    """
    n = max(int(num_classes), 0 if ignore_class is None else int(ignore_class) + 1)
    label_pixels = np.zeros(n, np.int64)
    present_pixels = np.zeros(n, np.int64)
    for name, counts, pixels in _label_histograms(pairs_or_masks):
        bad = [int(v) for v in np.flatnonzero(counts) if v >= num_classes and v != ignore_class]
        if bad:
            raise DataError(
                f"{name}: label values {bad} are outside the {num_classes} classes "
                f"0..{num_classes - 1} and are not the ignore label {ignore_class}"
            )
        counts = np.pad(counts, (0, max(0, n - len(counts))))[:n]
        label_pixels += counts
        present_pixels += np.where(counts > 0, pixels, 0)
    return label_pixels, present_pixels


@renamed_argument("ignore_label", "ignore_class")
def median_frequency_weights(pairs_or_masks, num_classes=11, ignore_class=11, include_ignore_in_median=False):
    """SegNet's median frequency class weights, computed from the data.

    ``freq(c) = pixels of class c / total pixels of the images where c is present`` and
    ``weight(c) = median(freq) / freq(c)``.

    Args:
        pairs_or_masks: ``[(image_path, mask_path), ...]`` (from :func:`kseg.data.find_pairs`), mask
            paths, or mask arrays (a list of ``(H, W)`` arrays or one ``(N, H, W)`` array).
        num_classes: classes to weight, ``0 .. num_classes - 1``.
        ignore_class: the void label, which gets no weight (CamVid: 11), or ``None``.
        include_ignore_in_median: also count the ignore label's frequency when taking the median
            (that is how the SegNet-Tutorial's ``class_weighting`` values were computed; off by
            default: the median over the real classes).

    Returns:
        float32 array of ``num_classes`` weights; a class absent from every mask gets weight 0 (and
        the median is taken over the classes present).

    Raises:
        DataError: naming a mask file that cannot be decoded or holds invalid labels.

    Example:
        >>> import numpy as np
        >>> masks = np.array([[[0, 0, 0, 1]], [[0, 0, 2, 2]]], "uint8")  # two 1x4 masks
        >>> [round(float(w), 3) for w in median_frequency_weights(masks, num_classes=3, ignore_class=None)]
        [0.8, 2.0, 1.0]
    """
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    label_pixels, present_pixels = class_pixel_counts(pairs_or_masks, num_classes, ignore_class)
    if present_pixels.sum() == 0:
        raise DataError("no masks given to compute class weights from")
    freq = label_pixels / np.maximum(present_pixels, 1)
    in_median = np.zeros(len(freq), bool)
    in_median[:num_classes] = True
    if include_ignore_in_median and ignore_class is not None:
        in_median[int(ignore_class)] = True
    in_median &= label_pixels > 0
    median = np.median(freq[in_median])
    freq = freq[:num_classes]
    weights = np.where(freq > 0, median / np.where(freq > 0, freq, 1.0), 0.0)
    return weights.astype("float32")
