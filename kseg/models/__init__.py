"""Model builders, one module per paper, and the registry of their cards.

    >>> import kseg
    >>> kseg.models.list()[:2]
    ['crf_as_rnn', 'deconvnet']
    >>> card = kseg.models.get("segnet")
    >>> model = card.build(num_classes=12)  # doctest: +SKIP

Importing a model module registers its cards.
"""

from kseg.models.crf_as_rnn import CRFasRNN
from kseg.models.deconvnet import DeconvNet
from kseg.models.deeplab import DeepLabV1, DeepLabV2, DeepLabV2ResNet101, DeepLabV2VGG16
from kseg.models.deepmask import DeepMask, DeepMaskResNet50, SharpMask
from kseg.models.dilation import DilatedFrontEnd, Dilation8
from kseg.models.dt_edgenet import DTEdgeNet
from kseg.models.fcn import FCN8s, FCN8sAtOnce, FCN16s, FCN32s
from kseg.models.ion import ION
from kseg.models.multipathnet import FastRCNN, MultiPathNet
from kseg.models.parsenet import ParseNet
from kseg.models.registry import ModelCard, cards, get, list_models, register
from kseg.models.renet import ReNetClassifier, ReSeg
from kseg.models.segnet import SegNet, SegNetBasic
from kseg.models.segnet_decoders import (  # SegNet PAMI 2017 Table 1's decoder variants
    BilinearInterpolation, FCNBasic, FCNBasicNoAddition, FCNBasicNoAdditionNoDimReduction,
    FCNBasicNoDimReduction, SegNetBasicEncoderAddition, SegNetBasicSingleChannelDecoder,
)
from kseg.models.vgg import VGGA, VGGALRN, VGGB, VGGC, VGGD, VGGE
from kseg.models import weights  # noqa: E402  (kseg.models.weights.load_weights / convert)

list = list_models  # noqa: A001  (kseg.models.list(), as in the docs)

MODELS = [
    "CRFasRNN", "DTEdgeNet", "DeconvNet", "DeepLabV1", "DeepLabV2", "DeepLabV2ResNet101", "DeepLabV2VGG16",
    "DeepMask", "DeepMaskResNet50", "DilatedFrontEnd", "Dilation8", "FCN16s", "FCN32s", "FCN8s", "FCN8sAtOnce",
    "FastRCNN", "ION", "MultiPathNet", "ParseNet", "ReNetClassifier", "ReSeg", "SegNet", "SegNetBasic", "SharpMask",
    "VGGA", "VGGALRN", "VGGB", "VGGC", "VGGD", "VGGE",
]
MODELS += [
    "BilinearInterpolation", "FCNBasic", "FCNBasicNoAddition", "FCNBasicNoAdditionNoDimReduction",
    "FCNBasicNoDimReduction", "SegNetBasicEncoderAddition", "SegNetBasicSingleChannelDecoder",
]
__all__ = MODELS + ["ModelCard", "cards", "get", "list", "list_models", "register", "weights"]
