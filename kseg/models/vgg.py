"""The VGG ConvNets (Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
Recognition", ICLR 2015; arXiv:1409.1556), configurations A, A-LRN, B, C, D and E of their Table 1.

Every configuration: 3x3 convolutions (C adds a 1x1 one at the end of blocks 3-5), stride 1,
"same" padding, ReLU; five 2x2 / stride-2 max poolings; then the classifier fc6 (4096), fc7
(4096), fc8 (1000) with dropout 0.5 after fc6 and fc7. A-LRN adds Krizhevsky's local response
normalisation after conv1_1 (n = 5, alpha = 1e-4 per element, beta = 0.75, k = 2; Caffe's
``alpha`` = 5 x 1e-4 since Caffe divides by n).

The classifier is built the way the paper evaluates at test time (Sec. 3.2, "dense evaluation"):
fc6 is a 7x7 convolution and fc7 / fc8 1x1 convolutions over the last pooling's map, and the
class-score map is averaged spatially (``fc8_average``). At 224x224 the map is 1x1 and this is
exactly the fully connected classifier; larger images (any side >= 224) are classified densely.
Layer names are the Caffe model zoo's (``conv1_1`` ... ``conv5_4``, ``pool1`` ... ``fc8``), so the
authors' released ``VGG_ILSVRC_16_layers.caffemodel`` / ``VGG_ILSVRC_19_layers.caffemodel``
load with ``weights=path`` (:func:`kseg.models.weights.assign_caffe`: fc6 / fc7 / fc8 are turned
into convolution kernels), and ``keras.applications.VGG16`` / ``VGG19`` (D / E) with
``weights="imagenet"`` or ``encoder_weights=...``.

Parameters (paper Table 2: A 133M, B 133M, C 134M, D 138M, E 144M), asserted in
``tests/models/test_vgg.py`` with the arithmetic written out.
"""

import keras
from keras import layers

from kseg.backbones.vgg import VGG16_FC_UNITS, load_vgg16_weights, vgg_blocks
from kseg.layers.normalization import ImageNormalization, LocalResponseNormalization
from kseg.models._common import (ANY_SIZE, LOGITS_DTYPE, check_num_classes, check_width_multiplier, finish,
                                 image_input, legacy_width, scaled)
from kseg.models.registry import ModelCard, register

__all__ = ["VGGA", "VGGALRN", "VGGB", "VGGC", "VGGD", "VGGE", "MIN_SIZE"]

#: Smallest side: five 2x2 poolings must leave 7x7 for fc6 (224 = 7 x 32).
MIN_SIZE = 224

_PAPER = "Very Deep Convolutional Networks for Large-Scale Image Recognition"
_URL = "https://arxiv.org/abs/1409.1556"
_SIZES = f"any side >= {MIN_SIZE} (fc6 is a 7x7 convolution over pool5; larger images are classified densely, Sec. 3.2)"


def _build(config, num_classes, input_shape, weights, encoder_weights, width_multiplier, input_tensor, name,
           dropout):
    num_classes = check_num_classes(num_classes, config)
    m = check_width_multiplier(width_multiplier, config)
    imagenet = config in ("vgg_d", "vgg_e")
    if weights == "imagenet":
        if not imagenet:
            raise ValueError(f"{config}: ImageNet weights exist for configurations D and E (keras.applications VGG16 / "
                             f"VGG19); for {config} pass the path of the authors' .caffemodel")
        if num_classes != 1000:
            raise ValueError(f"{config}: weights='imagenet' is the 1000-class classifier; got num_classes={num_classes} "
                             "(use encoder_weights='imagenet' for conv1_1 ... fc7)")
        weights, encoder_weights = None, "imagenet"
    inputs = image_input(config, input_shape, input_tensor, min_side=MIN_SIZE, sizes=_SIZES,
                         pretrained=weights is not None or encoder_weights is not None)
    x = ImageNormalization("caffe", name="preprocess")(inputs)
    for b, block in enumerate(vgg_blocks(config), start=1):
        for i, (filters, size) in enumerate(block, start=1):
            x = layers.Conv2D(scaled(filters, m), size, padding="same", name=f"conv{b}_{i}")(x)
            x = layers.ReLU(name=f"relu{b}_{i}")(x)
            if config == "vgg_a_lrn" and b == 1 and i == 1:
                x = LocalResponseNormalization(5, 5e-4, 0.75, k=2.0, name="norm1")(x)
        x = layers.MaxPooling2D(2, 2, name=f"pool{b}")(x)
    fc = scaled(VGG16_FC_UNITS, m)
    for n, kernel in ((6, 7), (7, 1)):
        x = layers.Conv2D(fc, kernel, name=f"fc{n}")(x)
        x = layers.ReLU(name=f"relu{n}")(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"drop{n}")(x)
    x = layers.Conv2D(num_classes, 1, name="fc8")(x)
    outputs = layers.GlobalAveragePooling2D(name="fc8_average", dtype=LOGITS_DTYPE)(x)
    model = keras.Model(inputs, outputs, name=name)

    def encoder(model, encoder_weights):
        if not imagenet:
            raise ValueError(f"{config}: encoder_weights exist for configurations D and E (keras.applications VGG16 / "
                             f"VGG19), not {config}")
        if m != 1.0:
            raise ValueError(f"{config}: encoder_weights need width_multiplier=1.0, got {m}")
        load_vgg16_weights(model, encoder_weights, include_top="predictions" if num_classes == 1000 else True,
                           config=config)

    return finish(model, config, weights, encoder_weights, encoder)


def _card(config, num_params, layers_, notes=""):
    return ModelCard(
        name=config,
        paper=_PAPER,
        authors="Simonyan & Zisserman",
        year=2015,
        url=_URL,
        reference_code=f"paper Table 1 (configuration {config[4:].upper().replace('_', '-')}, {layers_} weight layers); "
                       "Caffe model zoo VGG_ILSVRC_16/19_layers_deploy.prototxt (D, E)",
        num_params=num_params,
        default_num_classes=1000,
        output_stride=32,
        task="classification",
        input_sizes=_SIZES,
        notes="ImageNet classifier: logits (batch, num_classes), fc6-fc8 as convolutions averaged over the score "
              "map (dense evaluation, Sec. 3.2)." + notes,
    )


_DOC = """
    Args:
        num_classes: classes (1000, ImageNet).
        input_shape: ``(height, width, channels)``; default ``(None, None, 3)``: any side >= 224
            (the paper's crops are 224x224; larger images are evaluated densely, Sec. 3.2).
        weights: ``None``, ``"imagenet"`` (D and E: ``keras.applications.VGG16`` / ``VGG19``), a
            preset of the card or a path (``.weights.h5``, ``.keras``, the authors' ``.caffemodel``).
        encoder_weights: ``None``, ``"imagenet"`` or the path of a ``keras.applications`` VGG16 /
            VGG19 weights file with its classifier (D and E): conv1_1 ... fc7, and fc8 when
            ``num_classes=1000``.
        width_multiplier: scales every width but fc8's (1.0 = the paper).
        input_tensor: optional Keras tensor.
        name: model name.
        dropout: rate of drop6 / drop7 (0.5).

    Returns:
        ``keras.Model``: RGB images in [0, 255] -> class logits ``(batch, num_classes)``.
"""


def _builder(config, pyname, doc):
    @legacy_width()
    def builder(num_classes=1000, input_shape=ANY_SIZE, weights=None, encoder_weights=None, width_multiplier=1.0,
                input_tensor=None, name=config, dropout=0.5):
        return _build(config, num_classes, input_shape, weights, encoder_weights, width_multiplier, input_tensor,
                      name, dropout)

    builder.__name__ = builder.__qualname__ = pyname
    builder.__doc__ = doc + _DOC
    builder.__module__ = __name__
    return builder


# Parameter counts: tests/models/test_vgg.py writes Table 1's arithmetic out.
VGGA = register(_card("vgg_a", 132_863_336, 11))(
    _builder("vgg_a", "VGGA", "VGG configuration A (11 weight layers), Simonyan & Zisserman Table 1."))
VGGALRN = register(_card("vgg_a_lrn", 132_863_336, 11, " LRN (no weights) after conv1_1."))(
    _builder("vgg_a_lrn", "VGGALRN", "VGG configuration A-LRN: A with local response normalisation after conv1_1."))
VGGB = register(_card("vgg_b", 133_047_848, 13))(
    _builder("vgg_b", "VGGB", "VGG configuration B (13 weight layers): two 3x3 convs in every block."))
VGGC = register(_card("vgg_c", 133_638_952, 16, " 1x1 convs conv3_3, conv4_3, conv5_3."))(
    _builder("vgg_c", "VGGC", "VGG configuration C (16 weight layers): B plus a 1x1 conv in blocks 3-5."))
VGGD = register(_card("vgg_d", 138_357_544, 16, " = VGG16."))(
    _builder("vgg_d", "VGGD", "VGG configuration D = VGG16 (16 weight layers): three 3x3 convs in blocks 3-5."))
VGGE = register(_card("vgg_e", 143_667_240, 19, " = VGG19."))(
    _builder("vgg_e", "VGGE", "VGG configuration E = VGG19 (19 weight layers): four 3x3 convs in blocks 3-5."))
