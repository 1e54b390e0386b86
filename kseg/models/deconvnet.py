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

from kseg.backbones.vgg import VGG16_BLOCKS, _check_width, load_vgg16_weights, scale_width
from kseg.backbones.vgg import vgg16_fcn_trunk
from kseg.layers.normalization import ImageNormalization
from kseg.layers.pooling import MaxUnpooling2D
from kseg.models.registry import ModelCard, register

__all__ = ["DeconvNet"]

#: Smallest input side: five ceil-mode poolings must leave 7 pixels for the 7x7 fc6 (ceil(193 / 32) = 7).
MIN_SIZE = 193


def _deconv_bn_relu(x, name, bn_name, relu_name, filters, kernel, padding):
    x = layers.Conv2DTranspose(
        filters, kernel, padding=padding, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
        bias_initializer="zeros", name=name,
    )(x)
    x = layers.BatchNormalization(beta_initializer=keras.initializers.Constant(0.001), name=bn_name)(x)
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
        notes=(
            "Input sides >= 193 (pool5 must hold the 7x7 fc6). encoder_weights='imagenet' converts the "
            "VGG16 classifier into fc6 / fc7; the decoder is trained from scratch as in the paper."
        ),
    )
)
def DeconvNet(num_classes=21, input_shape=(224, 224, 3), input_tensor=None, encoder_weights=None, weights=None,
              width=1.0, name="deconvnet"):
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
        input_shape: ``(height, width, 3)``, default ``(224, 224, 3)`` as the authors' deploy
            net (they segment 224x224 object proposals). Any side >= 193 works (fc6 needs 7x7
            after five ceil-mode poolings), odd sides included; ``None`` dims for variable sizes.
        input_tensor: optional Keras tensor to build on.
        encoder_weights: ``None`` (MSRA init), ``"imagenet"`` or the path of a
            ``keras.applications.VGG16`` weights file with its classifier: conv1_1 ... conv5_3,
            fc6 (convolutionalised 7x7) and fc7 are loaded, as the authors initialise from VGG16.
        weights: ``None`` or the path of a weights file of this model (``model.save_weights``).
        width: channel multiplier of every layer (1.0 = the paper; smaller for tests).
        name: model name.

    Returns:
        A ``keras.Model`` from float RGB images in [0, 255] to per-pixel class logits
        ``(batch, height, width, num_classes)``.

    Example:
        >>> import kseg
        >>> kseg.DeconvNet(num_classes=11, input_shape=(224, 224, 3), width=0.0625).output_shape
        (None, 224, 224, 11)
    """
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if input_tensor is None and (input_shape is None or len(input_shape) != 3 or input_shape[-1] != 3):
        raise ValueError(f"input_shape must be (height, width, 3), got {input_shape}")
    _check_width(width)
    inputs = input_tensor if input_tensor is not None else keras.Input(shape=input_shape, name="image")
    for side in inputs.shape[1:3]:
        if side is not None and side < MIN_SIZE:
            raise ValueError(
                f"DeconvNet needs input sides >= {MIN_SIZE} (pool5 must be at least 7x7 for fc6), got "
                f"{tuple(inputs.shape[1:3])}"
            )
    x = ImageNormalization("caffe", name="preprocess")(inputs)
    ends = vgg16_fcn_trunk(x, width=width, pad100=False, dropout=0.0, batch_norm=True, return_masks=True)
    x = _deconv_bn_relu(ends["fc7"], "fc6-deconv", "fc6-deconv-bn", "fc6-deconv-relu",
                        scale_width(VGG16_BLOCKS[-1][-1], width), 7, "valid")
    for b in range(len(VGG16_BLOCKS), 0, -1):
        x = MaxUnpooling2D(2, name=f"unpool{b}")([x, ends["masks"][b - 1]])
        block = VGG16_BLOCKS[b - 1]
        for i in range(1, len(block) + 1):
            last = i == len(block)
            filters = VGG16_BLOCKS[b - 2][-1] if (last and b > 1) else block[i - 1]
            x = _deconv_bn_relu(x, f"deconv{b}_{i}", f"debn{b}_{i}", f"derelu{b}_{i}",
                                scale_width(filters, width), 3, "same")
    outputs = layers.Conv2D(
        num_classes, 1, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01), name="seg-score-voc"
    )(x)
    model = keras.Model(inputs, outputs, name=name)
    if encoder_weights is not None:
        if width != 1.0:
            raise ValueError(f"encoder_weights need width=1.0 (the VGG16 widths), got width={width}")
        load_vgg16_weights(model, encoder_weights, include_top=True)
    if weights is not None:
        model.load_weights(weights)
    return model


