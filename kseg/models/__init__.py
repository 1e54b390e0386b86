"""Model builders, one module per paper, and the registry of their cards.

    >>> import kseg
    >>> kseg.models.list()[:2]
    ['segnet', 'segnet_basic']
    >>> card = kseg.models.get("segnet")
    >>> model = card.build(num_classes=12)
"""

from kseg.models import segnet  # noqa: F401  (registers its cards)
from kseg.models import deconvnet, fcn  # noqa: F401  (register their cards)
from kseg.models.deconvnet import DeconvNet
from kseg.models.fcn import FCN8s, FCN8sAtOnce, FCN16s, FCN32s
from kseg.models import deeplab  # noqa: F401  (registers its cards)
from kseg.models.deeplab import DeepLabV1, DeepLabV2, DeepLabV2ResNet101, DeepLabV2VGG16
from kseg.models import crf_as_rnn  # noqa: F401  (registers its card; TF-only)
from kseg.models.crf_as_rnn import CRFasRNN
from kseg.models import dilation  # noqa: F401  (registers its cards)
from kseg.models.dilation import DilatedFrontEnd, Dilation8
from kseg.models import parsenet  # noqa: F401  (registers its card)
from kseg.models.parsenet import ParseNet
from kseg.models import dt_edgenet  # noqa: F401  (registers its card)
from kseg.models.dt_edgenet import DTEdgeNet
from kseg.models import renet  # noqa: F401  (registers its cards)
from kseg.models.renet import ReNetClassifier, ReSeg
from kseg.models.registry import ModelCard, cards, get, list_models, register
from kseg.models import deepmask  # noqa: F401, E402  (registers its cards)
from kseg.models.deepmask import DeepMask, DeepMaskResNet50, SharpMask  # noqa: E402
from kseg.models import multipathnet  # noqa: F401, E402  (registers its card)
from kseg.models.multipathnet import FastRCNN, MultiPathNet  # noqa: E402
from kseg.models.segnet import SegNet, SegNetBasic

list = list_models  # noqa: A001  (kseg.models.list(), as in the docs)

__all__ = ["ReNetClassifier", "ReSeg", "DTEdgeNet", "ParseNet", "DilatedFrontEnd", "Dilation8", "CRFasRNN", "DeepLabV1", "DeepLabV2", "DeepLabV2ResNet101", "DeepLabV2VGG16", "DeconvNet", "FCN8s", "FCN8sAtOnce", "FCN16s", "FCN32s", "ModelCard", "SegNet", "SegNetBasic", "cards", "get", "list", "list_models", "register"]
__all__ += ["DeepMask", "DeepMaskResNet50", "SharpMask"]
__all__ += ["FastRCNN", "MultiPathNet"]
from kseg.models import ion  # noqa: F401, E402  (registers its card)
from kseg.models.ion import ION  # noqa: E402
__all__ += ["ION"]
