"""The atrous VGG16 trunk of DeepLab-v1 (LargeFOV) and DeepLab-v2 (Chen et al., ICLR 2015 / PAMI 2018).

VGG16 with output stride 8 ("hole" algorithm, Sec. 3.1 of the DeepLab-v1 paper), as in the
authors' definition (martinkersner/train-DeepLab@509419a : ``DeepLab-LargeFOV/train.prototxt``):

- ``pool1``..``pool3``: max 3x3, stride 2, pad 1 (Caffe rounds the output size **up**);
- ``pool4``: max 3x3, stride 1, pad 1; ``conv5_1``..``conv5_3``: 3x3, dilation 2, pad 2;
- ``pool5``: max 3x3, stride 1, pad 1; ``pool5a`` (LargeFOV only): **average** 3x3, stride 1,
  pad 1, Caffe's average counting the zero padding (always divides by 9);
- LargeFOV head: ``fc6`` 3x3 dilation 12 (1024) + ``relu6`` + ``drop6``; ``fc7`` 1x1 (1024) +
  ``relu7`` + ``drop7``.

Sizes follow Caffe exactly: 321 -> 161 -> 81 -> 41 (the authors' crop) and, for even sizes,
360 -> 181 -> 91 -> 46 (Caffe's ceil mode), not Keras' ``padding="same"`` (180 -> 90 -> 45).

Used by :mod:`kseg.models.deeplab` and by the context models built on DeepLab-LargeFOV
(ParseNet, DT-EdgeNet)::

    inputs = keras.Input((321, 321, 3))
    x = ImageNormalization("caffe", name="preprocess")(inputs)
    feats = deeplab_vgg16_trunk(x)              # dict: "conv1_2" ... "pool5", "pool5a", "fc6", "fc7"
    fc8 = keras.layers.Conv2D(21, 1, name="fc8")(feats["fc7"])
    model = keras.Model(inputs, fc8)
    load_deeplab_vgg16_imagenet(model)          # conv1_1..conv5_3 copied, fc6/fc7 decimated
"""

import keras
import numpy as np
from keras import layers

from kseg.backbones.vgg import vgg16_imagenet_weights, vgg_blocks

__all__ = [
    "deeplab_vgg16_trunk",
    "caffe_max_pool_3x3_s2",
    "decimate_fc6",
    "decimate_fc7",
    "load_deeplab_vgg16_imagenet",
]


def caffe_max_pool_3x3_s2(x, name):
    """Caffe's max pooling 3x3, stride 2, pad 1 with its ceil rounding: ``H -> floor(H / 2) + 1``.

    Caffe pads with -inf; zero padding is the same here because every input of these pools
    follows a ReLU (values >= 0). One extra row/column at the bottom/right gives Caffe's
    ceil-mode output size (321 -> 161, 360 -> 181) with Caffe's window alignment.
    """
    x = layers.ZeroPadding2D(((1, 2), (1, 2)), name=f"{name}_pad")(x)
    return layers.MaxPooling2D(3, strides=2, padding="valid", name=name)(x)


def _width(channels, width_multiplier):
    return max(1, int(round(channels * width_multiplier)))


def deeplab_vgg16_trunk(
    x,
    width_multiplier=1.0,
    pool5a=True,
    include_fc=True,
    fc_width=1024,
    fc6_dilation=12,
    dropout=0.5,
    config="vgg_d",
):
    """Build DeepLab's atrous VGG16 on `x` and return its named feature tensors.

    Args:
        x: a Keras tensor, images already preprocessed (``ImageNormalization("caffe")``).
        width_multiplier: scales the conv widths (1.0 = VGG16; small values for fast tests).
        pool5a: add LargeFOV's average pooling ``pool5a`` after ``pool5`` (DeepLab-v1 LargeFOV:
            True; DeepLab-v2 ASPP: False, its branches start from ``pool5``).
        include_fc: add the LargeFOV head ``fc6`` (3x3, dilation `fc6_dilation`) and ``fc7`` (1x1),
            each with ReLU and dropout, on ``pool5a`` (or ``pool5``).
        fc_width: channels of ``fc6``/``fc7`` (1024 in LargeFOV).
        fc6_dilation: dilation (= padding) of ``fc6`` (12 in LargeFOV).
        dropout: rate of ``drop6``/``drop7`` (0.5).
        config: VGG configuration of the convs (``"vgg_d"`` = VGG16; ``"vgg_a"`` ... ``"vgg_e"``).

    Returns:
        A dict of Keras tensors keyed by the prototxt's blob names: ``conv1_2``, ``pool1``,
        ``conv2_2``, ``pool2``, ``conv3_3``, ``pool3`` (stride 8 from here on), ``conv4_3``,
        ``pool4``, ``conv5_3``, ``pool5``, and where built ``pool5a``, ``fc6``, ``fc7``
        (after ReLU and dropout, as Caffe's in-place layers leave them).
    """
    if width_multiplier <= 0:
        raise ValueError(f"width_multiplier must be > 0, got {width_multiplier}")
    if include_fc and int(fc_width) < 1:
        raise ValueError(f"fc_width must be >= 1, got {fc_width}")
    feats = {}
    for b, block in enumerate(vgg_blocks(config), start=1):
        dilation = 2 if b == 5 else 1
        for i, (channels, size) in enumerate(block, start=1):
            x = layers.Conv2D(
                _width(channels, width_multiplier), size, padding="same", dilation_rate=dilation if size > 1 else 1,
                name=f"conv{b}_{i}",
            )(x)
            x = layers.ReLU(name=f"relu{b}_{i}")(x)
        feats[f"conv{b}_{len(block)}"] = x
        if b <= 3:
            x = caffe_max_pool_3x3_s2(x, f"pool{b}")
        else:  # 3x3, stride 1, pad 1: "same" is exact (TF's max ignores the padding, like Caffe's -inf)
            x = layers.MaxPooling2D(3, strides=1, padding="same", name=f"pool{b}")(x)
        feats[f"pool{b}"] = x
    if pool5a:
        # Caffe's AVE pooling divides by the full window, padding included: pad with zeros first.
        x = layers.ZeroPadding2D(1, name="pool5a_pad")(x)
        x = layers.AveragePooling2D(3, strides=1, padding="valid", name="pool5a")(x)
        feats["pool5a"] = x
    if include_fc:
        x = layers.Conv2D(int(fc_width), 3, padding="same", dilation_rate=fc6_dilation, name="fc6")(x)
        x = layers.ReLU(name="relu6")(x)
        x = layers.Dropout(dropout, name="drop6")(x)
        feats["fc6"] = x
        x = layers.Conv2D(int(fc_width), 1, name="fc7")(x)
        x = layers.ReLU(name="relu7")(x)
        x = layers.Dropout(dropout, name="drop7")(x)
        feats["fc7"] = x
    return feats


def decimate_fc6(kernel, bias, taps=3, filters=1024):
    """Subsample VGG16's fc6 into DeepLab's fc6 (DeepLab-v1 Sec. 4.1, "decimation").

    VGG16's fc6 is a 7x7x512 -> 4096 convolution (or a 25088 x 4096 Dense kernel in HWC order).
    Keeping every ``4096 // filters``-th filter and every ``(7 - 1) // (taps - 1)``-th tap gives
    a ``taps x taps x 512 x filters`` kernel (3x3 x 1024: every 4th filter, taps 0, 3, 6).
    """
    kernel = np.asarray(kernel)
    if kernel.ndim == 2:
        kernel = kernel.reshape(7, 7, -1, kernel.shape[-1])
    size, out = kernel.shape[0], kernel.shape[-1]
    if out % filters or (size - 1) % (taps - 1):
        raise ValueError(f"cannot decimate a {kernel.shape} fc6 to {taps}x{taps} x {filters}")
    tap, step = (size - 1) // (taps - 1), out // filters
    return kernel[::tap, ::tap, :, ::step], np.asarray(bias)[::step]


def decimate_fc7(kernel, bias, filters=1024):
    """Subsample VGG16's fc7 (4096 x 4096) into a 1x1 conv ``filters x filters``: every 4th in and out."""
    kernel = np.asarray(kernel).reshape(-1, np.shape(kernel)[-1])
    step_in, step_out = kernel.shape[0] // filters, kernel.shape[1] // filters
    if kernel.shape[0] % filters or kernel.shape[1] % filters:
        raise ValueError(f"cannot decimate a {kernel.shape} fc7 to {filters} x {filters}")
    kernel = kernel[::step_in, ::step_out]
    return kernel.reshape(1, 1, *kernel.shape), np.asarray(bias)[::step_out]


def load_deeplab_vgg16_imagenet(model, weights="imagenet", fc_layers=(("fc6", "fc7"),), config="vgg_d"):
    """Initialise a DeepLab VGG16 model from ImageNet VGG16 (as the DeepLab authors did).

    ``conv1_1``..``conv5_3`` are copied; each ``(fc6, fc7)`` pair named in `fc_layers` that exists
    in `model` (e.g. ``("fc6", "fc7")`` for LargeFOV, ``("fc6_1", "fc7_1")`` ... for ASPP-L) gets
    VGG16's fc6/fc7 subsampled by :func:`decimate_fc6` / :func:`decimate_fc7`.

    Args:
        model: a model built on :func:`deeplab_vgg16_trunk` at ``width_multiplier=1``.
        weights: ``"imagenet"`` or the path of a ``keras.applications.VGG16`` weights file
            (with its classifier, ``include_top=True``, for fc6/fc7).
        fc_layers: pairs of layer names to initialise by decimation.

    Returns:
        The names of the layers that were initialised.
    """
    names = {layer.name for layer in model.layers}
    want_fc = any(f6 in names for f6, _ in fc_layers)
    src = vgg16_imagenet_weights(weights, include_top=want_fc, config=config)
    loaded = []
    for b, block in enumerate(vgg_blocks(config), start=1):
        for i in range(1, len(block) + 1):
            name = f"conv{b}_{i}"
            if name in names:
                _set(model.get_layer(name), src[name])
                loaded.append(name)
    for f6, f7 in fc_layers:
        if f6 in names:
            layer = model.get_layer(f6)
            taps, filters = layer.kernel.shape[0], layer.kernel.shape[-1]
            _set(layer, decimate_fc6(*src["fc6"], taps=taps, filters=filters))
            loaded.append(f6)
        if f7 in names:
            _set(model.get_layer(f7), decimate_fc7(*src["fc7"], filters=model.get_layer(f7).kernel.shape[-1]))
            loaded.append(f7)
    if not loaded:
        raise ValueError(f"model {model.name!r} has no VGG16 layer (conv1_1 ...) to load weights into")
    return loaded


def _set(layer, values):
    kernel, bias = (np.asarray(v) for v in values)
    target = layer.get_weights()
    if kernel.shape != target[0].shape or bias.shape != target[1].shape:
        raise ValueError(
            f"layer {layer.name}: ImageNet weights have shapes {kernel.shape}/{bias.shape}, the model "
            f"expects {target[0].shape}/{target[1].shape} (width_multiplier must be 1)"
        )
    layer.set_weights([kernel, bias])
