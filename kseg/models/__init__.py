"""Model builders, one module per paper, and the registry of their cards.

    >>> import kseg
    >>> kseg.models.list()[:2]
    ['crf_as_rnn', 'deconvnet']
    >>> card = kseg.models.get("segnet")
    >>> model = card.build(num_classes=12)  # doctest: +SKIP

Importing a model module registers its cards. The builders are imported on first use
(``kseg.models.SegNet``, ``get``, ``list``, ``cards``), so importing this package does not import
TensorFlow; ``kseg list`` reads the generated card table (:func:`registry.static_cards`) instead.
"""

import importlib
import importlib.util

from kseg.models.registry import ModelCard, cards, get, list_models, register

list = list_models  # noqa: A001  (kseg.models.list(), as in the docs)

# Public builder -> the module (one per paper) that defines and registers it. A new model adds a line.
BUILDER_MODULES = {
    "CRFasRNN": "crf_as_rnn",
    "DTEdgeNet": "dt_edgenet",
    "DeconvNet": "deconvnet",
    "DeepLabV1": "deeplab", "DeepLabV2": "deeplab", "DeepLabV2ResNet101": "deeplab", "DeepLabV2VGG16": "deeplab",
    "DeepMask": "deepmask", "DeepMaskResNet50": "deepmask", "SharpMask": "deepmask",
    "DilatedFrontEnd": "dilation", "Dilation8": "dilation",
    "FCN16s": "fcn", "FCN32s": "fcn", "FCN8s": "fcn", "FCN8sAtOnce": "fcn",
    "FastRCNN": "multipathnet", "MultiPathNet": "multipathnet",
    "ION": "ion",
    "ParseNet": "parsenet",
    "ReNetClassifier": "renet", "ReSeg": "renet",
    "SegNet": "segnet", "SegNetBasic": "segnet",
    # SegNet PAMI 2017 Table 1's decoder variants
    "BilinearInterpolation": "segnet_decoders", "FCNBasic": "segnet_decoders", "FCNBasicNoAddition": "segnet_decoders",
    "FCNBasicNoAdditionNoDimReduction": "segnet_decoders", "FCNBasicNoDimReduction": "segnet_decoders",
    "SegNetBasicEncoderAddition": "segnet_decoders", "SegNetBasicSingleChannelDecoder": "segnet_decoders",
    # Simonyan & Zisserman 2015, Table 1
    "VGGA": "vgg", "VGGALRN": "vgg", "VGGB": "vgg", "VGGC": "vgg", "VGGD": "vgg", "VGGE": "vgg",
}
MODELS = sorted(BUILDER_MODULES)
__all__ = MODELS + ["ModelCard", "cards", "get", "list", "list_models", "register", "weights"]


def load_all():
    """Import every model module (registers every card); returns their names."""
    names = sorted(set(BUILDER_MODULES.values()))
    for module in names:
        importlib.import_module(f"kseg.models.{module}")
    return names


def __getattr__(name):  # PEP 562: builders and model modules on first use
    if name in BUILDER_MODULES:
        return getattr(importlib.import_module(f"kseg.models.{BUILDER_MODULES[name]}"), name)
    if name in set(BUILDER_MODULES.values()) or (
            not name.startswith("_") and importlib.util.find_spec(f"kseg.models.{name}") is not None):
        return importlib.import_module(f"kseg.models.{name}")  # a model module or any other (registry, ...)
    raise AttributeError(f"module 'kseg.models' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
