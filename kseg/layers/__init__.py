"""Custom Keras layers of kseg (all registered under the ``kseg`` package for safe loading)."""

from kseg.layers.context import ContextGroupIdentity, ContextIdentity, ContextModule, ReflectionPadding2D
from kseg.layers.aspp import AtrousSpatialPyramid
from kseg.layers.crop import CropToReference
from kseg.layers.crf import CRFRNN, DenseCRF
from kseg.layers.interp import Interp
from kseg.layers.logits import ProbabilityLogits
from kseg.layers.domain_transform import DomainTransform
from kseg.layers.normalization import BatchNormalization, ImageNormalization, L2Normalization, LocalResponseNormalization
from kseg.layers.renet import ReNet2D
from kseg.layers.pooling import MaxPoolingWithArgmax2D, MaxUnpooling2D

__all__ = [
    "AtrousSpatialPyramid",
    "BatchNormalization",
    "CropToReference",
    "CRFRNN",
    "DenseCRF",
    "Interp",
    "ProbabilityLogits",
    "ContextGroupIdentity",
    "ContextIdentity",
    "ContextModule",
    "DomainTransform",
    "ReflectionPadding2D",
    "ReNet2D",
    "ImageNormalization",
    "L2Normalization",
    "LocalResponseNormalization",
    "MaxPoolingWithArgmax2D",
    "MaxUnpooling2D",
]
from kseg.layers.irnn import IRNN2D  # noqa: E402
__all__ += ["IRNN2D"]
