"""DeconvNet (Noh, Hong & Han, "Learning Deconvolution Network for Semantic Segmentation", ICCV 2015).

Faithful to the authors' released net, HyeonwooNoh/DeconvNet@87dd133
``model/DeconvNet/DeconvNet_inference_deploy.prototxt`` (224x224 input):

* encoder: VGG16 conv1_1 ... conv5_3, each followed by BN (``bn1_1`` ...) and ReLU, 2x2/s2 max
  pooling that keeps its switches (``pool1`` ... ``pool5``, :class:`kseg.layers.MaxPoolingWithArgmax2D`),
  ``fc6`` (7x7 conv, 4096, pad 0: 7x7 -> 1x1) + ``bnfc6``, ``fc7`` (1x1, 4096) + ``bnfc7``; no dropout;
* decoder: ``fc6-deconv`` (7x7 transposed conv, 4096 -> 512, 1x1 -> 7x7) + BN, then for each
  block in reverse an unpooling with that block's switches (``unpool5`` ... ``unpool1``,
  :class:`kseg.layers.MaxUnpooling2D`) and 3x3 transposed convolutions with BN + ReLU
  (``deconv5_1`` ... ``deconv1_2``, the last of each block narrowing to the next block's width),
  and the 1x1 classifier ``seg-score-voc``. Every conv and deconv has a bias.

The released BN layers hold a scale and a shift with the running statistics folded in; a Keras
``BatchNormalization`` has the same gamma / beta (scale 1, shift 0.001 at initialisation, as the
prototxt's fillers) plus moving statistics, which :func:`kseg.count_params` does not count.
"""

import keras
from keras import layers

from kseg.backbones.vgg import load_vgg16_weights, scale_width, vgg16_fcn_trunk, vgg_blocks
from kseg.layers.normalization import BatchNormalization, ImageNormalization
from kseg.layers.pooling import MaxUnpooling2D
from kseg.models._common import (ANY_SIZE, LOGITS_DTYPE, check_num_classes, check_width_multiplier, finish,
                                 image_input, legacy_width)
from kseg.models.registry import ModelCard, register

__all__ = ["DeconvNet"]

#: Smallest input side: five ceil-mode poolings must leave 7 pixels for the 7x7 fc6 (ceil(193 / 32) = 7).
MIN_SIZE = 193
#: VGG configurations of the encoder (the paper: VGG16 = D); the decoder mirrors it.
BACKBONES = ("vgg_a", "vgg_b", "vgg_c", "vgg_d", "vgg_e")


def _deconv_bn_relu(x, name, bn_name, relu_name, filters, kernel, padding):
    x = layers.Conv2DTranspose(
        filters, kernel, padding=padding, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
        bias_initializer="zeros", name=name,
    )(x)
    x = BatchNormalization(beta_initializer=keras.initializers.Constant(0.001), name=bn_name)(x)
    return layers.ReLU(name=relu_name)(x)


@register(
    ModelCard(
        name="deconvnet",
        paper="Learning Deconvolution Network for Semantic Segmentation",
        authors="Noh, Hong & Han",
        year=2015,
        url="https://arxiv.org/abs/1505.04366",
        reference_code="HyeonwooNoh/DeconvNet@87dd133 : model/DeconvNet/DeconvNet_inference_deploy.prototxt",
        # Arithmetic from the prototxt written out in tests/models/test_deconvnet.py.
        num_params=251_805_653,
        default_num_classes=21,
        output_stride=1,
        input_sizes="any side >= 193 (five poolings must leave pool5 at least 7x7 for the 7x7 fc6)",
        notes=(
            "Input sides >= 193 (pool5 must hold the 7x7 fc6). encoder_weights='imagenet' converts the "
            "VGG16 classifier into fc6 / fc7; the decoder is trained from scratch as in the paper."
        ),
    )
)
@legacy_width()
def DeconvNet(num_classes=21, input_shape=ANY_SIZE, weights=None, encoder_weights=None, width_multiplier=1.0,
              input_tensor=None, name="deconvnet", backbone="vgg_d"):
    """DeconvNet: a VGG16 encoder with BN and a mirrored decoder of unpooling + deconvolution.

    Reference: Noh et al., ICCV 2015, Sec. 3 and Fig. 2. The unpooling layers put activations
    back at the encoder's max locations (Sec. 3.2.1, "switch variables") and the deconvolution
    layers densify the resulting sparse maps (Sec. 3.2.2); the decoder is as deep as the encoder.

    Comparison with SegNet (Badrinarayanan et al., PAMI 2017, Sec. 2 and the controlled benchmark of
    Sec. 4 with FCN, DeepLab-LargeFOV and DeconvNet on CamVid and SUN RGB-D): both decoders unpool
    with the encoder's max-pooling switches, but DeconvNet also keeps the fully connected fc6 / fc7
    (as 7x7 / 1x1 convolutions) and mirrors them with ``fc6-deconv``. The SegNet authors point to
    this larger parameterisation (here 251.8M parameters against SegNet's 29.4M, 8.6x) as making
    DeconvNet harder to train end to end and more costly in inference memory and time, a memory
    versus accuracy trade-off in which SegNet stays competitive at a fraction of the memory.
    DeconvNet's own paper also relies on instance-wise proposals and an ensemble with FCN at test
    time (EDeconvNet + CRF), which are outside this builder.

    Args:
        num_classes: output classes (21 for PASCAL VOC).
        input_shape: ``(height, width, channels)``; default ``(None, None, 3)``: any side >= 193
            (fc6 needs 7x7 after five ceil-mode poolings), odd sides included. The authors' deploy
            net is 224x224 (they segment 224x224 object proposals).
        weights: ``None``, a preset of the card or a path (``.weights.h5``, ``.keras``,
            ``.caffemodel``).
        encoder_weights: ``None`` (MSRA init), ``"imagenet"`` or the path of a
            ``keras.applications.VGG16`` weights file with its classifier: conv1_1 ... conv5_3,
            fc6 (convolutionalised 7x7) and fc7 are loaded, as the authors initialise from VGG16.
        width_multiplier: channel multiplier of every layer (1.0 = the paper; smaller for tests).
        input_tensor: optional Keras tensor to build on.
        name: model name.
        backbone: VGG configuration of the encoder (``"vgg_d"``, the paper's VGG16; ``"vgg_a"``
            ... ``"vgg_e"``); the decoder mirrors it.

    Returns:
        A ``keras.Model`` from float RGB images in [0, 255] to per-pixel class logits
        ``(batch, height, width, num_classes)``.

    Example:
        >>> import kseg
        >>> kseg.DeconvNet(num_classes=11, input_shape=(224, 224, 3), width_multiplier=0.0625).output_shape
        (None, 224, 224, 11)
    """
    num_classes = check_num_classes(num_classes, "deconvnet")
    width = check_width_multiplier(width_multiplier, "deconvnet")
    if backbone not in BACKBONES:
        raise ValueError(f"deconvnet: backbone must be one of {BACKBONES}, got {backbone!r}")
    blocks = vgg_blocks(backbone)
    inputs = image_input("deconvnet", input_shape, input_tensor,
                         pretrained=weights is not None or encoder_weights is not None, min_side=MIN_SIZE,
                         sizes=f"any height and width >= {MIN_SIZE} (pool5 must be at least 7x7 for fc6)")
    x = ImageNormalization("caffe", name="preprocess")(inputs)
    ends = vgg16_fcn_trunk(x, width=width, pad100=False, dropout=0.0, batch_norm=True, return_masks=True,
                           config=backbone)
    x = _deconv_bn_relu(ends["fc7"], "fc6-deconv", "fc6-deconv-bn", "fc6-deconv-relu",
                        scale_width(blocks[-1][-1][0], width), 7, "valid")
    for b in range(len(blocks), 0, -1):
        x = MaxUnpooling2D(2, name=f"unpool{b}")([x, ends["masks"][b - 1]])
        block = blocks[b - 1]
        for i in range(1, len(block) + 1):
            last = i == len(block)
            filters = blocks[b - 2][-1][0] if (last and b > 1) else block[i - 1][0]
            x = _deconv_bn_relu(x, f"deconv{b}_{i}", f"debn{b}_{i}", f"derelu{b}_{i}",
                                scale_width(filters, width), block[i - 1][1], "same")
    outputs = layers.Conv2D(
        num_classes, 1, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01), name="seg-score-voc",
        dtype=LOGITS_DTYPE,
    )(x)
    model = keras.Model(inputs, outputs, name=name)

    def encoder(model, encoder_weights):
        if width != 1.0:
            raise ValueError(f"encoder_weights need width_multiplier=1.0 (the VGG widths), got {width}")
        load_vgg16_weights(model, encoder_weights, include_top=True, config=backbone)

    return finish(model, "deconvnet", weights, encoder_weights, encoder)
