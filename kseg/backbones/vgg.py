"""VGG16 (Simonyan & Zisserman, ICLR 2015) pieces shared by the VGG-based models.

Layer names follow the Caffe model (``conv1_1`` ... ``conv5_3``, ``fc6``, ``fc7``) used by the
FCN, SegNet, DeconvNet and DeepLab authors, so their published weights port layer by layer.
ImageNet weights come from ``keras.applications.VGG16``, whose ``block{b}_conv{i}`` / ``fc1`` /
``fc2`` layers map one to one onto those names.
"""

import os

import keras
import numpy as np

__all__ = ["VGG16_BLOCKS", "vgg16_layer_names", "vgg16_imagenet_weights", "load_vgg16_weights"]

#: Output channels of each conv layer, block by block (configuration D of the VGG paper).
VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def vgg16_layer_names():
    """``{"conv1_1": "block1_conv1", ..., "fc6": "fc1", "fc7": "fc2"}``: kseg -> keras.applications."""
    names = {}
    for b, block in enumerate(VGG16_BLOCKS, start=1):
        for i in range(1, len(block) + 1):
            names[f"conv{b}_{i}"] = f"block{b}_conv{i}"
    names["fc6"] = "fc1"
    names["fc7"] = "fc2"
    return names


def vgg16_imagenet_weights(weights="imagenet", include_top=False):
    """Read VGG16 weights into ``{"conv1_1": [kernel, bias], ...}`` (Caffe names).

    Args:
        weights: ``"imagenet"`` (downloaded by ``keras.applications``) or the path of a weights
            file saved from a ``keras.applications.VGG16`` (``.weights.h5`` or ``.h5``), with or
            without its classifier.
        include_top: also return ``fc6``/``fc7`` as Dense weights (kernel 25088x4096 and
            4096x4096); needs a file with the classifier.
    """
    if weights != "imagenet":
        if not os.path.exists(str(weights)):
            raise FileNotFoundError(f"VGG16 weights file not found: {weights}")
    ref = None
    errors = []
    for top in ((True,) if include_top else (False, True)):
        try:
            ref = keras.applications.VGG16(weights=weights, include_top=top)
            break
        except (ValueError, OSError, KeyError) as err:  # a file saved with the other include_top
            errors.append(str(err))
    if ref is None:
        raise ValueError(f"could not read VGG16 weights from {weights!r}: {'; '.join(errors)}")
    out = {}
    for ours, theirs in vgg16_layer_names().items():
        try:
            layer = ref.get_layer(theirs)
        except ValueError:
            continue
        out[ours] = [np.asarray(w) for w in layer.get_weights()]
    if include_top and "fc6" not in out:
        raise ValueError(f"{weights!r} holds no VGG16 classifier (fc6/fc7); save it with include_top=True")
    return out


def load_vgg16_weights(model, weights="imagenet", include_top=False):
    """Copy VGG16 weights into the layers of `model` named ``conv1_1`` ... (and ``fc6``/``fc7``).

    Conv kernels are copied as they are; Dense ``fc6``/``fc7`` kernels are reshaped into the
    7x7 / 1x1 convolution kernels of a convolutionalised model (FCN Sec. 3.1).

    Returns:
        The names of the layers that were loaded.
    """
    src = vgg16_imagenet_weights(weights, include_top=include_top)
    loaded = []
    for name, values in src.items():
        try:
            layer = model.get_layer(name)
        except ValueError:
            continue
        target = layer.get_weights()
        kernel, bias = values
        if kernel.ndim == 2 and target[0].ndim == 4:  # Dense -> conv ("convolutionalisation")
            kernel = kernel.reshape(target[0].shape)
        if kernel.shape != target[0].shape or bias.shape != target[1].shape:
            raise ValueError(
                f"layer {name}: VGG16 weights have shapes {kernel.shape}/{bias.shape}, the model "
                f"expects {target[0].shape}/{target[1].shape}"
            )
        layer.set_weights([kernel, bias] + target[2:])
        loaded.append(name)
    if not loaded:
        raise ValueError(f"model {model.name!r} has no VGG16 layer (conv1_1 ...) to load weights into")
    return loaded
