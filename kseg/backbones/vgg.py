"""VGG16 (Simonyan & Zisserman, ICLR 2015) pieces shared by the VGG-based models.

Layer names follow the Caffe model (``conv1_1`` ... ``conv5_3``, ``fc6``, ``fc7``) used by the
FCN, SegNet, DeconvNet and DeepLab authors, so their published weights port layer by layer.
ImageNet weights come from ``keras.applications.VGG16``, whose ``block{b}_conv{i}`` / ``fc1`` /
``fc2`` layers map one to one onto those names.
"""

import os

import keras
import numpy as np

from kseg.layers.normalization import BatchNormalization

__all__ = [
    "VGG_CONFIGS",
    "vgg_blocks",
    "VGG16_BLOCKS",
    "VGG16_FC_UNITS",
    "vgg16_layer_names",
    "vgg16_imagenet_weights",
    "load_vgg16_weights",
    "scale_width",
    "vgg16_fcn_trunk",
    "VGG16FCNBackbone",
]

#: Output channels of each conv layer, block by block (configuration D of the VGG paper).
VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))

#: The configurations of Simonyan & Zisserman, ICLR 2015, Table 1: per block, the convs as
#: (filters, kernel size). C has a 1x1 conv at the end of blocks 3-5; A-LRN is A plus an LRN
#: after conv1_1 (the builders add it).
VGG_CONFIGS = {
    "vgg_a": (((64, 3),), ((128, 3),), ((256, 3), (256, 3)), ((512, 3), (512, 3)), ((512, 3), (512, 3))),
    "vgg_b": (((64, 3), (64, 3)), ((128, 3), (128, 3)), ((256, 3), (256, 3)), ((512, 3), (512, 3)),
              ((512, 3), (512, 3))),
    "vgg_c": (((64, 3), (64, 3)), ((128, 3), (128, 3)), ((256, 3), (256, 3), (256, 1)),
              ((512, 3), (512, 3), (512, 1)), ((512, 3), (512, 3), (512, 1))),
    "vgg_d": (((64, 3), (64, 3)), ((128, 3), (128, 3)), ((256, 3),) * 3, ((512, 3),) * 3, ((512, 3),) * 3),
    "vgg_e": (((64, 3), (64, 3)), ((128, 3), (128, 3)), ((256, 3),) * 4, ((512, 3),) * 4, ((512, 3),) * 4),
}
VGG_CONFIGS["vgg_a_lrn"] = VGG_CONFIGS["vgg_a"]


def vgg_blocks(config):
    """The (filters, kernel) convs of each block of VGG configuration `config` (``"vgg_a"`` ... ``"vgg_e"``)."""
    key = str(config).lower().replace("-", "_")
    if key in ("vgg16", "d"):
        key = "vgg_d"
    if key in ("vgg19", "e"):
        key = "vgg_e"
    if key not in VGG_CONFIGS:
        raise ValueError(f"backbone must be one of {sorted(VGG_CONFIGS)} (Simonyan & Zisserman, Table 1), "
                         f"got {config!r}")
    return VGG_CONFIGS[key]


#: Units of the classifier's fc6 / fc7 (convolutionalised: 7x7 and 1x1 convs with this many filters).
VGG16_FC_UNITS = 4096


def vgg16_layer_names(config="vgg_d"):
    """``{"conv1_1": "block1_conv1", ..., "fc6": "fc1", "fc7": "fc2"}``: kseg -> keras.applications
    (VGG16 for ``config="vgg_d"``, VGG19 for ``"vgg_e"``)."""
    names = {}
    for b, block in enumerate(vgg_blocks(config), start=1):
        for i in range(1, len(block) + 1):
            names[f"conv{b}_{i}"] = f"block{b}_conv{i}"
    names["fc6"] = "fc1"
    names["fc7"] = "fc2"
    return names


def _applications_model(config):
    key = {"vgg_d": "VGG16", "vgg_e": "VGG19"}.get(str(config).lower().replace("vgg16", "vgg_d").replace("vgg19", "vgg_e"))
    if key is None:
        raise ValueError(f"ImageNet weights exist for VGG configurations D (VGG16) and E (VGG19) "
                         f"(keras.applications), not {config!r}")
    return key, getattr(keras.applications, key)


def vgg16_imagenet_weights(weights="imagenet", include_top=False, config="vgg_d"):
    """Read VGG16 weights into ``{"conv1_1": [kernel, bias], ...}`` (Caffe names).

    Args:
        weights: ``"imagenet"`` (downloaded by ``keras.applications``) or the path of a weights
            file saved from a ``keras.applications.VGG16`` (``.weights.h5`` or ``.h5``), with or
            without its classifier.
        include_top: also return ``fc6``/``fc7`` as Dense weights (kernel 25088x4096 and
            4096x4096); needs a file with the classifier.
    """
    arch, application = _applications_model(config)
    if weights != "imagenet":
        if not os.path.exists(str(weights)):
            raise FileNotFoundError(f"{arch} weights file not found: {weights}")
    ref = None
    errors = []
    for top in ((True,) if include_top else (False, True)):
        try:
            ref = application(weights=weights, include_top=top)
            break
        except (ValueError, OSError, KeyError) as err:  # a file saved with the other include_top
            errors.append(str(err))
    if ref is None:
        raise ValueError(f"could not read {arch} weights from {weights!r}: {'; '.join(errors)}")
    out = {}
    names = vgg16_layer_names(config)
    if include_top == "predictions":
        names["fc8"] = "predictions"
    for ours, theirs in names.items():
        try:
            layer = ref.get_layer(theirs)
        except ValueError:
            continue
        out[ours] = [np.asarray(w) for w in layer.get_weights()]
    if include_top and "fc6" not in out:
        raise ValueError(f"{weights!r} holds no VGG16 classifier (fc6/fc7); save it with include_top=True")
    return out


def load_vgg16_weights(model, weights="imagenet", include_top=False, config="vgg_d"):
    """Copy VGG16 weights into the layers of `model` named ``conv1_1`` ... (and ``fc6``/``fc7``).

    Conv kernels are copied as they are; Dense ``fc6``/``fc7`` kernels are reshaped into the
    7x7 / 1x1 convolution kernels of a convolutionalised model (FCN Sec. 3.1).

    Returns:
        The names of the layers that were loaded.
    """
    src = vgg16_imagenet_weights(weights, include_top=include_top, config=config)
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


def scale_width(channels, width):
    """``channels * width`` rounded, at least 1: the channel count of a width-scaled (test) model."""
    return max(1, int(round(channels * float(width))))


def _check_width(width):
    if not float(width) > 0:
        raise ValueError(f"width must be > 0, got {width}")


def vgg16_fcn_trunk(
    x,
    width=1.0,
    pad100=True,
    fc_padding="valid",
    dropout=0.5,
    batch_norm=False,
    return_masks=False,
    kernel_initializer="he_normal",
    config="vgg_d",
):
    """The convolutionalised VGG16 of FCN (Long et al., CVPR 2015, Sec. 3.1), built on tensor `x`.

    conv1_1 ... conv5_3 (3x3, ReLU) with 2x2/s2 max pooling after each block, then ``fc6`` as a
    7x7 convolution with 4096 filters and ``fc7`` as a 1x1 convolution with 4096 filters, each
    followed by ReLU (and dropout ``drop6`` / ``drop7`` when ``dropout > 0``). Layer names are
    the Caffe ones, so :func:`load_vgg16_weights` (``include_top=True``) converts the ImageNet
    classifier into it: fc6's Dense kernel (25088x4096) becomes the 7x7x512x4096 conv kernel.

    Pooling rounds up as Caffe's does (Keras ``padding="same"``), so odd sizes keep their last
    row / column: at 500x500 with ``pad100`` the maps are 698 -> 349 -> 175 -> 88 -> 44 -> 22 and
    fc6 is 16x16, exactly as in the authors' nets.

    Args:
        x: input tensor, already normalised (``ImageNormalization("caffe")`` for ImageNet weights).
        width: channel multiplier (1.0 = VGG16; smaller only for fast tests).
        pad100: ``True``: conv1_1 is preceded by ``ZeroPadding2D(100)`` (``conv1_1_pad``) and
            has no padding of its own, the authors' ``pad: 100`` (FCN); ``False``: conv1_1 pads
            1 like every other 3x3 conv (DeconvNet, and the ImageNet classifier itself).
        fc_padding: padding of fc6 (``"valid"``: the authors' pad 0; ``"same"`` keeps the
            pool5 grid, for the unpadded FCN variant).
        dropout: rate of ``drop6`` / ``drop7`` (0.5 in FCN; 0 adds no dropout layers).
        batch_norm: DeconvNet's variant: a BatchNormalization after every conv, before its ReLU,
            named like the authors' ``bn1_1`` ... ``bn5_3``, ``bnfc6``, ``bnfc7`` (scale 1,
            shift 0.001 at initialisation).
        return_masks: use :class:`kseg.layers.MaxPoolingWithArgmax2D` and return its masks
            (for unpooling decoders).
        kernel_initializer: of the convs (MSRA by default, for training without ImageNet weights).
        config: the VGG configuration of the convs (``"vgg_d"`` = VGG16, the papers'; ``"vgg_a"``
            ... ``"vgg_e"``: :data:`VGG_CONFIGS`).

    Returns:
        ``dict`` of endpoints: ``"conv1_2"``, ..., ``"pool1"`` ... ``"pool5"``, ``"fc6"``,
        ``"fc7"`` (after ReLU / dropout) and, with ``return_masks``, ``"masks"`` (pool1 ... pool5).
    """
    from kseg.layers.pooling import MaxPoolingWithArgmax2D  # a layer module: no import cycle

    _check_width(width)
    if fc_padding not in ("valid", "same"):
        raise ValueError(f"fc_padding must be 'valid' or 'same', got {fc_padding!r}")
    if not 0 <= float(dropout) < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    layers = keras.layers

    def conv(t, name, filters, kernel, padding, relu_name, bn_name):
        t = layers.Conv2D(
            scale_width(filters, width), kernel, padding=padding, kernel_initializer=kernel_initializer, name=name
        )(t)
        if batch_norm:
            t = BatchNormalization(beta_initializer=keras.initializers.Constant(0.001), name=bn_name)(t)
        return layers.ReLU(name=relu_name)(t)

    ends = {"masks": []}
    for b, block in enumerate(vgg_blocks(config), start=1):
        for i, (filters, size) in enumerate(block, start=1):
            padding = "same"
            if b == 1 and i == 1 and pad100:
                x = layers.ZeroPadding2D(100, name="conv1_1_pad")(x)
                padding = "valid"
            x = conv(x, f"conv{b}_{i}", filters, size, padding, f"relu{b}_{i}", f"bn{b}_{i}")
            ends[f"conv{b}_{i}"] = x
        if return_masks:
            x, mask = MaxPoolingWithArgmax2D(2, name=f"pool{b}")(x)
            ends["masks"].append(mask)
        else:
            x = layers.MaxPooling2D(2, 2, padding="same", name=f"pool{b}")(x)
        ends[f"pool{b}"] = x
    for n, kernel in ((6, 7), (7, 1)):
        x = conv(x, f"fc{n}", VGG16_FC_UNITS, kernel, fc_padding if n == 6 else "valid", f"relu{n}", f"bnfc{n}")
        if dropout:
            x = layers.Dropout(dropout, name=f"drop{n}")(x)
        ends[f"fc{n}"] = x
    if not return_masks:
        del ends["masks"]
    return ends


def VGG16FCNBackbone(
    input_shape=(224, 224, 3), input_tensor=None, weights=None, width=1.0, pad100=False, dropout=0.5,
    name="vgg16_fcn",
):
    """The convolutionalised VGG16 as a model: RGB [0, 255] images -> fc7 features.

    With ``pad100=False`` and a 224x224 input, fc7 is 1x1x4096 and, with ImageNet (or any
    ``keras.applications.VGG16``) weights, equals the classifier's ``fc2`` activations: the
    convolutionalisation of FCN Sec. 3.1 changes the shapes of the kernels, not the function.

    Args:
        input_shape: ``(height, width, 3)``; ``(None, None, 3)`` for any size (>= 193 without
            ``pad100``, so that pool5 has at least 7x7 for fc6).
        input_tensor: optional Keras tensor to build on.
        weights: ``None``, ``"imagenet"`` or the path of a ``keras.applications.VGG16`` weights
            file saved with its classifier (``include_top=True``).
        width, pad100, dropout: see :func:`vgg16_fcn_trunk`.
        name: model name.

    Example:
        >>> model = VGG16FCNBackbone(input_shape=(224, 224, 3))
        >>> model.output_shape
        (None, 1, 1, 4096)
    """
    from kseg.layers.normalization import ImageNormalization

    inputs = input_tensor if input_tensor is not None else keras.Input(shape=input_shape, name="image")
    x = ImageNormalization("caffe", name="preprocess")(inputs)
    ends = vgg16_fcn_trunk(x, width=width, pad100=pad100, dropout=dropout)
    model = keras.Model(inputs, ends["fc7"], name=name)
    if weights is not None:
        load_vgg16_weights(model, weights, include_top=True)
    return model
