"""kseg: the classic deep-learning segmentation systems for Keras 3 / TensorFlow.

    >>> import kseg
    >>> model = kseg.SegNet(num_classes=11, input_shape=(360, 480, 3))
    >>> kseg.models.get("fcn8s").num_params
    134489759
"""

__version__ = "0.1.0"

from kseg import crf, data, datasets, layers, losses, metrics, models, training, viz  # noqa: E402
from kseg.inference.proposals import proposals  # noqa: E402
from kseg.layers import AtrousSpatialPyramid  # noqa: E402
from kseg.models import (  # noqa: E402
    CRFasRNN,
    DTEdgeNet,
    DeconvNet,
    DeepLabV1,
    DeepLabV2,
    DeepLabV2ResNet101,
    DeepLabV2VGG16,
    DeepMask,
    DeepMaskResNet50,
    DilatedFrontEnd,
    Dilation8,
    FastRCNN,
    FCN8s,
    FCN8sAtOnce,
    FCN16s,
    FCN32s,
    ION,
    MultiPathNet,
    ParseNet,
    ReNetClassifier,
    ReSeg,
    SegNet,
    SegNetBasic,
    SharpMask,
    VGGA,
    VGGALRN,
    VGGB,
    VGGC,
    VGGD,
    VGGE,
)
from kseg.utils import count_params  # noqa: E402
from kseg.models.segnet_decoders import (  # noqa: E402  (SegNet Table 1's decoder variants)
    BilinearInterpolation, FCNBasic, FCNBasicNoAddition, FCNBasicNoAdditionNoDimReduction,
    FCNBasicNoDimReduction, SegNetBasicEncoderAddition, SegNetBasicSingleChannelDecoder,
)

__all__ = models.MODELS + [
    "AtrousSpatialPyramid", "count_params", "proposals",
    "crf", "data", "datasets", "layers", "losses", "metrics", "models", "training", "viz",
]
