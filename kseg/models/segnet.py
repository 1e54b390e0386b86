"""SegNet and SegNet-Basic (Badrinarayanan, Kendall & Cipolla, PAMI 2017; arXiv:1511.00561).

Faithful to the authors' SegNet-Tutorial definitions (alexgkendall/SegNet-Tutorial@bb68b64:
``Models/segnet_train.prototxt`` and ``Models/segnet_basic_train.prototxt``): layer names,
kernel sizes, widths, BN placement (scale 1, shift 0.001 at initialisation) and MSRA init.
The encoder's max-pooling masks are handed to the decoder's unpooling layers (Sec. 3), so
boundaries are recovered without learning to upsample.
"""

import keras
from keras import layers

from kseg.backbones.vgg import load_vgg16_weights, vgg_blocks
from kseg.layers.normalization import BatchNormalization, ImageNormalization, LocalResponseNormalization
from kseg.layers.pooling import MaxPoolingWithArgmax2D, MaxUnpooling2D
from kseg.models._common import (ANY_SIZE, LOGITS_DTYPE, check_num_classes, check_width_multiplier, finish,
                                 image_input, legacy_width, scaled)
from kseg.models.registry import ModelCard, register

__all__ = ["SegNet", "SegNetBasic"]

_PAPER = "SegNet: A Deep Convolutional Encoder-Decoder Architecture for Image Segmentation"
_URL = "https://arxiv.org/abs/1511.00561"
_CODE = "alexgkendall/SegNet-Tutorial@bb68b64 : Models/segnet_train.prototxt"


#: VGG configurations SegNet's encoder takes (the paper: VGG16 = D, whose 13 convs it keeps); the
#: decoder mirrors whichever is chosen.
BACKBONES = ("vgg_a", "vgg_b", "vgg_c", "vgg_d", "vgg_e")


def _conv_bn_relu(x, name, filters, kernel_size, relu=True):
    x = layers.Conv2D(filters, kernel_size, padding="same", kernel_initializer="he_normal", name=name)(x)
    x = BatchNormalization(beta_initializer=keras.initializers.Constant(0.001), name=f"{name}_bn")(x)
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
@legacy_width()
def SegNet(num_classes=11, input_shape=ANY_SIZE, weights=None, encoder_weights=None, width_multiplier=1.0,
           input_tensor=None, name="segnet", backbone="vgg_d"):
    """SegNet: VGG16-topology encoder with BN, mirrored decoder fed with pooling masks.

    Reference: Badrinarayanan et al., "SegNet: A Deep Convolutional Encoder-Decoder Architecture
    for Image Segmentation", PAMI 2017, Sec. 3 and Fig. 2.

    Args:
        num_classes: output classes (CamVid: 11, void excluded).
        input_shape: ``(height, width, channels)``; default ``(None, None, 3)``, any size, odd
            sizes included: each unpooling restores its encoder's exact size.
        weights: ``None``, a preset of the card or a path (``.weights.h5``, ``.keras``, the
            authors' ``.caffemodel``).
        encoder_weights: ``None`` (MSRA init, as the tutorial), ``"imagenet"`` or the path of a
            ``keras.applications.VGG16`` weights file, loaded into ``conv1_1`` ... ``conv5_3``.
        width_multiplier: scales every width but the classifier's (1.0 = the paper).
        input_tensor: optional Keras tensor to build on instead of a new ``Input``.
        name: model name.
        backbone: VGG configuration of the encoder (``"vgg_d"``, the paper's VGG16; ``"vgg_a"`` ...
            ``"vgg_e"``); the decoder mirrors it.

    Returns:
        A ``keras.Model`` from float RGB images in [0, 255] to per-pixel class logits
        ``(batch, height, width, num_classes)``.

    Example:
        >>> import kseg
        >>> model = kseg.SegNet(num_classes=11, input_shape=(360, 480, 3))
        >>> model.output_shape
        (None, 360, 480, 11)
    """
    num_classes = check_num_classes(num_classes, "segnet")
    m = check_width_multiplier(width_multiplier, "segnet")
    if backbone not in BACKBONES:
        raise ValueError(f"segnet: backbone must be one of {BACKBONES}, got {backbone!r}")
    blocks = vgg_blocks(backbone)
    inputs = image_input("segnet", input_shape, input_tensor,
                         pretrained=weights is not None or encoder_weights is not None)
    x = ImageNormalization("caffe", name="preprocess")(inputs)
    masks = []
    for b, block in enumerate(blocks, start=1):
        for i, (filters, size) in enumerate(block, start=1):
            x = _conv_bn_relu(x, f"conv{b}_{i}", scaled(filters, m), size)
        x, mask = MaxPoolingWithArgmax2D(2, name=f"pool{b}")(x)
        masks.append(mask)
    # Decoder: mirror of the encoder; the last conv of each block narrows to the next block's width.
    for b in range(len(blocks), 0, -1):
        x = MaxUnpooling2D(2, name=f"upsample{b}")([x, masks[b - 1]])
        block = blocks[b - 1]
        for i in range(len(block), 0, -1):
            if b == 1 and i == 1:
                break
            narrow = i == 1
            filters = blocks[b - 2][-1][0] if narrow else block[i - 1][0]
            x = _conv_bn_relu(x, f"conv{b}_{i}_D", scaled(filters, m), block[i - 1][1])
    outputs = layers.Conv2D(num_classes, 3, padding="same", kernel_initializer="he_normal", name="conv1_1_D",
                            dtype=LOGITS_DTYPE)(x)
    model = keras.Model(inputs, outputs, name=name)

    def encoder(model, encoder_weights):
        if m != 1.0:
            raise ValueError(f"encoder_weights need width_multiplier=1.0 (the VGG widths), got {m}")
        load_vgg16_weights(model, encoder_weights, config=backbone)

    return finish(model, "segnet", weights, encoder_weights, encoder)


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
        # the released segnet_basic_camvid deploy net / caffemodel call the 1x1 classifier so
        caffe_rename={"dense_softmax_inner_prod": "conv_classifier"},
    )
)
@legacy_width(channels=64)
def SegNetBasic(num_classes=11, input_shape=ANY_SIZE, weights=None, encoder_weights=None, width_multiplier=1.0,
                input_tensor=None, name="segnet_basic"):
    """SegNet-Basic: LRN, four 7x7 conv-BN-ReLU-pool encoder stages, four unpool-7x7 conv-BN decoder stages.

    Reference: Badrinarayanan et al., PAMI 2017, Sec. 4 ("SegNet-Basic"); definition
    ``Models/segnet_basic_train.prototxt`` (the decoder convs have BN but no ReLU, as there).

    Args:
        num_classes: output classes (CamVid: 11).
        input_shape: ``(height, width, channels)``; default ``(None, None, 3)``, any size.
        weights: ``None``, a preset of the card or a path (``.weights.h5``, ``.keras``,
            ``.caffemodel``).
        encoder_weights: must be ``None``: SegNet-Basic has no pretrained encoder (trained from
            scratch in the paper).
        width_multiplier: scales the 64 channels of every conv (1.0 = the paper; the old integer
            ``width=w`` is ``width_multiplier=w / 64``).
        input_tensor: optional Keras tensor to build on.
        name: model name.

    Returns:
        A ``keras.Model`` from float RGB images in [0, 255] to logits ``(batch, H, W, num_classes)``.

    Example:
        >>> import kseg
        >>> kseg.SegNetBasic(input_shape=(360, 480, 3)).count_params() > 0
        True
    """
    num_classes = check_num_classes(num_classes, "segnet_basic")
    width = scaled(64, check_width_multiplier(width_multiplier, "segnet_basic"))
    inputs = image_input("segnet_basic", input_shape, input_tensor, pretrained=weights is not None)
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
    outputs = layers.Conv2D(num_classes, 1, kernel_initializer="he_normal", name="conv_classifier",
                            dtype=LOGITS_DTYPE)(x)
    return finish(keras.Model(inputs, outputs, name=name), "segnet_basic", weights, encoder_weights)
