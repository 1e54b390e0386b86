"""Custom Keras layers of kseg (all registered under the ``kseg`` package for safe loading)."""

from kseg.layers.normalization import ImageNormalization, L2Normalization, LocalResponseNormalization
from kseg.layers.pooling import MaxPoolingWithArgmax2D, MaxUnpooling2D

__all__ = [
    "ImageNormalization",
    "L2Normalization",
    "LocalResponseNormalization",
    "MaxPoolingWithArgmax2D",
    "MaxUnpooling2D",
]
