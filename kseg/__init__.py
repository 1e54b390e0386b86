"""kseg: the classic deep-learning segmentation systems for Keras 3 / TensorFlow.

    >>> import kseg
    >>> model = kseg.SegNet(num_classes=11, input_shape=(360, 480, 3))
    >>> kseg.models.get("fcn8s").num_params
    134489759

``import kseg`` is cheap: the subpackages and builders (which import TensorFlow) load on first
use (PEP 562), and the first such use loads them all, registering every custom layer as a plain
``import kseg`` used to. ``kseg --help`` / ``--version`` / ``list`` never import TensorFlow.
"""

import importlib
import importlib.util
import sys

__version__ = "0.1.0"

from kseg.models import MODELS as _MODELS  # noqa: E402  (a name list: imports no builder)

_SUBMODULES = ("crf", "data", "datasets", "layers", "losses", "metrics", "models", "training", "viz")
_OTHERS = {"AtrousSpatialPyramid": "kseg.layers", "count_params": "kseg.utils",
           "proposals": "kseg.inference.proposals"}

__all__ = _MODELS + [
    "AtrousSpatialPyramid", "count_params", "proposals",
    "crf", "data", "datasets", "layers", "losses", "metrics", "models", "training", "viz",
]


_LOADING = []


def _load_everything():
    """What ``import kseg`` did eagerly: every subpackage, layer and model (registers them with Keras)."""
    if _LOADING:  # re-entered from an import below
        return
    _LOADING.append(True)
    for name in _SUBMODULES:
        importlib.import_module(f"kseg.{name}")
    importlib.import_module("kseg.models").load_all()
    for module in set(_OTHERS.values()):
        importlib.import_module(module)


def __getattr__(name):  # PEP 562
    if name in _SUBMODULES:
        value = importlib.import_module(f"kseg.{name}")
    elif name in _MODELS:
        value = getattr(importlib.import_module("kseg.models"), name)
    elif name in _OTHERS:
        value = getattr(importlib.import_module(_OTHERS[name]), name)
    elif not name.startswith("_") and importlib.util.find_spec(f"kseg.{name}") is not None:
        value = importlib.import_module(f"kseg.{name}")  # any other subpackage (kseg.export, kseg.utils, ...)
    else:
        raise AttributeError(f"module 'kseg' has no attribute {name!r}")
    _load_everything()
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


if "keras" in sys.modules:  # Keras already loaded: register kseg's layers now, as before (loading .keras files)
    _load_everything()
