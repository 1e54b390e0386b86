"""SegNet and SegNet-Basic (Badrinarayanan, Kendall & Cipolla, PAMI 2017; arXiv:1511.00561).

Faithful to the authors' SegNet-Tutorial definitions (alexgkendall/SegNet-Tutorial@bb68b64:
``Models/segnet_train.prototxt`` and ``Models/segnet_basic_train.prototxt``): layer names,
kernel sizes, widths, BN placement (scale 1, shift 0.001 at initialisation) and MSRA init.
The encoder's max-pooling masks are handed to the decoder's unpooling layers (Sec. 3), so
boundaries are recovered without learning to upsample.
"""

import keras
from keras import layers

from kseg.backbones.vgg import VGG16_BLOCKS, load_vgg16_weights
from kseg.layers.normalization import ImageNormalization, LocalResponseNormalization
from kseg.layers.pooling import MaxPoolingWithArgmax2D, MaxUnpooling2D
from kseg.models.registry import ModelCard, register

__all__ = ["SegNet", "SegNetBasic"]

_PAPER = "SegNet: A Deep Convolutional Encoder-Decoder Architecture for Image Segmentation"
_URL = "https://arxiv.org/abs/1511.00561"
_CODE = "alexgkendall/SegNet-Tutorial@bb68b64 : Models/segnet_train.prototxt"


def _check_args(num_classes, input_shape):
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if input_shape is not None and (len(input_shape) != 3 or input_shape[-1] != 3):
        raise ValueError(f"input_shape must be (height, width, 3), got {input_shape}")


def _input(input_shape, input_tensor, name="image"):
    if input_tensor is not None:
        return input_tensor
    return keras.Input(shape=input_shape, name=name)


def _conv_bn_relu(x, name, filters, kernel_size, relu=True):
    x = layers.Conv2D(filters, kernel_size, padding="same", kernel_initializer="he_normal", name=name)(x)
    x = layers.BatchNormalization(beta_initializer=keras.initializers.Constant(0.001), name=f"{name}_bn")(x)
    if relu:
        x = layers.ReLU(name=name.replace("conv", "relu", 1))(x)
    return x


@register(
    ModelCard(
        name="segnet",
        paper=_PAPER,
        authors="Badrinarayanan, Kendall & Cipolla",
        year=2017,
        url=_URL,
        reference_code=_CODE,
        # 13 encoder + 12 decoder 3x3 convs with bias, 25 BN (gamma, beta), one 3x3 classifier:
        # see tests/models/test_segnet.py for the arithmetic.
        num_params=29_449_355,
        default_num_classes=11,
        output_stride=1,
        notes="CamVid: 11 classes, void (11) ignored in the loss and metrics.",
    )
)
def SegNet(num_classes=11, input_shape=(360, 480, 3), input_tensor=None, encoder_weights=None, name="segnet"):
    """SegNet: VGG16-topology encoder with BN, mirrored decoder fed with pooling masks.

    Reference: Badrinarayanan et al., "SegNet: A Deep Convolutional Encoder-Decoder Architecture
    for Image Segmentation", PAMI 2017, Sec. 3 and Fig. 2.

    Args:
        num_classes: output classes (CamVid: 11, void excluded).
        input_shape: ``(height, width, 3)``; any size works (``None`` for variable), odd sizes
            included: each unpooling restores its encoder's exact size.
        input_tensor: optional Keras tensor to build on instead of a new ``Input``.
        encoder_weights: ``None`` (MSRA init, as the tutorial), ``"imagenet"`` or the path of a
            ``keras.applications.VGG16`` weights file, loaded into ``conv1_1`` ... ``conv5_3``.
        name: model name.

    Returns:
        A ``keras.Model`` from float RGB images in [0, 255] to per-pixel class logits
        ``(batch, height, width, num_classes)``.

    Example:
        >>> import kseg
        >>> model = kseg.SegNet(num_classes=11, input_shape=(360, 480, 3))
        >>> model.output_shape
        (None, 360, 480, 11)
    """
    _check_args(num_classes, input_shape)
    inputs = _input(input_shape, input_tensor)
    x = ImageNormalization("caffe", name="preprocess")(inputs)
    masks = []
    for b, block in enumerate(VGG16_BLOCKS, start=1):
        for i, filters in enumerate(block, start=1):
            x = _conv_bn_relu(x, f"conv{b}_{i}", filters, 3)
        x, mask = MaxPoolingWithArgmax2D(2, name=f"pool{b}")(x)
        masks.append(mask)
    # Decoder: mirror of the encoder; the last conv of each block narrows to the next block's width.
    for b in range(len(VGG16_BLOCKS), 0, -1):
        x = MaxUnpooling2D(2, name=f"upsample{b}")([x, masks[b - 1]])
        block = VGG16_BLOCKS[b - 1]
        for i in range(len(block), 0, -1):
            if b == 1 and i == 1:
                break
            narrow = i == 1
            filters = VGG16_BLOCKS[b - 2][-1] if narrow else block[i - 1]
            x = _conv_bn_relu(x, f"conv{b}_{i}_D", filters, 3)
    outputs = layers.Conv2D(num_classes, 3, padding="same", kernel_initializer="he_normal", name="conv1_1_D")(x)
    model = keras.Model(inputs, outputs, name=name)
    if encoder_weights is not None:
        load_vgg16_weights(model, encoder_weights)
    return model


@register(
    ModelCard(
        name="segnet_basic",
        paper=_PAPER,
        authors="Badrinarayanan, Kendall & Cipolla",
        year=2017,
        url=_URL,
        reference_code="alexgkendall/SegNet-Tutorial@bb68b64 : Models/segnet_basic_train.prototxt",
        num_params=1_416_587,
        default_num_classes=11,
        output_stride=1,
        notes="The paper's small variant for analysis (Sec. 4): 4+4 7x7 convs of 64, no ReLU in the decoder.",
    )
)
def SegNetBasic(num_classes=11, input_shape=(360, 480, 3), input_tensor=None, width=64, name="segnet_basic"):
    """SegNet-Basic: LRN, four 7x7 conv-BN-ReLU-pool encoder stages, four unpool-7x7 conv-BN decoder stages.

    Reference: Badrinarayanan et al., PAMI 2017, Sec. 4 ("SegNet-Basic"); definition
    ``Models/segnet_basic_train.prototxt`` (the decoder convs have BN but no ReLU, as there).

    Args:
        num_classes: output classes (CamVid: 11).
        input_shape: ``(height, width, 3)``, any size.
        input_tensor: optional Keras tensor to build on.
        width: channels of every conv (64 in the paper; smaller for fast tests).
        name: model name.

    Returns:
        A ``keras.Model`` from float RGB images in [0, 255] to logits ``(batch, H, W, num_classes)``.

    Example:
        >>> import kseg
        >>> kseg.SegNetBasic(input_shape=(360, 480, 3)).count_params() > 0
        True
    """
    _check_args(num_classes, input_shape)
    if int(width) < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    inputs = _input(input_shape, input_tensor)
    x = ImageNormalization("none", name="preprocess")(inputs)
    x = LocalResponseNormalization(5, 1e-4, 0.75, name="norm")(x)
    masks = []
    for s in range(1, 5):
        x = _conv_bn_relu(x, f"conv{s}", width, 7)
        x, mask = MaxPoolingWithArgmax2D(2, name=f"pool{s}")(x)
        masks.append(mask)
    for s in range(4, 0, -1):
        x = MaxUnpooling2D(2, name=f"upsample{s}")([x, masks[s - 1]])
        x = _conv_bn_relu(x, f"conv_decode{s}", width, 7, relu=False)
    outputs = layers.Conv2D(num_classes, 1, kernel_initializer="he_normal", name="conv_classifier")(x)
    return keras.Model(inputs, outputs, name=name)
