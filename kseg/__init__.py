"""kseg: the classic deep-learning segmentation systems for Keras 3 / TensorFlow.

    >>> import kseg
    >>> model = kseg.SegNet(num_classes=11, input_shape=(360, 480, 3))
"""

__version__ = "0.1.0"

from kseg import layers, models  # noqa: E402
from kseg import losses, metrics, training, viz  # noqa: E402
from kseg import crf  # noqa: E402
from kseg import data, datasets  # noqa: E402
from kseg.models import SegNet, SegNetBasic  # noqa: E402
from kseg.models import DeconvNet, FCN8s, FCN8sAtOnce, FCN16s, FCN32s  # noqa: E402
from kseg.utils import count_params  # noqa: E402
from kseg.models.dilation import DilatedFrontEnd, Dilation8  # noqa: E402
from kseg.models.parsenet import ParseNet  # noqa: E402
from kseg.models.dt_edgenet import DTEdgeNet  # noqa: E402
from kseg.models.renet import ReNetClassifier, ReSeg  # noqa: E402
from kseg.layers import AtrousSpatialPyramid  # noqa: E402
from kseg.models.deeplab import DeepLabV1, DeepLabV2, DeepLabV2ResNet101, DeepLabV2VGG16  # noqa: E402
from kseg.models.crf_as_rnn import CRFasRNN  # noqa: E402

__all__ = ["AtrousSpatialPyramid", "CRFasRNN", "DilatedFrontEnd", "DTEdgeNet", "ParseNet", "ReNetClassifier", "ReSeg", "Dilation8", "DeepLabV1", "DeepLabV2", "DeepLabV2ResNet101", "DeepLabV2VGG16", "DeconvNet", "FCN8s", "FCN8sAtOnce", "FCN16s", "FCN32s", "SegNet", "SegNetBasic", "count_params", "layers", "models"]
from kseg.models.deepmask import DeepMask, DeepMaskResNet50, SharpMask  # noqa: E402
from kseg.inference.proposals import proposals  # noqa: E402
__all__ += ["DeepMask", "DeepMaskResNet50", "SharpMask", "proposals"]
from kseg.models.multipathnet import FastRCNN, MultiPathNet  # noqa: E402
__all__ += ["FastRCNN", "MultiPathNet"]
from kseg.models.ion import ION  # noqa: E402
__all__ += ["ION"]
