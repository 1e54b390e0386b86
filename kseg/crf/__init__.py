"""Fully connected (dense) CRF from stock TensorFlow ops: permutohedral lattice and mean field.

    >>> from kseg.crf import dense_crf
    >>> # q = dense_crf(logits, image)   # (H, W, L) or (B, H, W, L)

TF-only code (the layers in :mod:`kseg.layers.crf` raise under other Keras backends).
"""

from kseg.crf.lattice import PermutohedralLattice, build_lattice, lattice_filter
from kseg.crf.meanfield import DEEPLAB_LARGEFOV, CRFFilters, build_filters, dense_crf, mean_field, pixel_features

__all__ = [
    "DEEPLAB_LARGEFOV",
    "CRFFilters",
    "PermutohedralLattice",
    "build_filters",
    "build_lattice",
    "dense_crf",
    "lattice_filter",
    "mean_field",
    "pixel_features",
]
