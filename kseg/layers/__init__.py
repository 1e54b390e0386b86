"""Custom Keras layers of kseg (all registered under the ``kseg`` package for safe loading)."""

from kseg.layers.normalization import ImageNormalization, LocalResponseNormalization
from kseg.layers.pooling import MaxPoolingWithArgmax2D, MaxUnpooling2D

__all__ = [
    "ImageNormalization",
    "LocalResponseNormalization",
    "MaxPoolingWithArgmax2D",
    "MaxUnpooling2D",
]
