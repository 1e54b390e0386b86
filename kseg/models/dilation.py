"""Dilated-convolution front end and Dilation8 (Yu & Koltun, "Multi-Scale Context Aggregation by
Dilated Convolutions", ICLR 2016; arXiv:1511.07122).

Faithful to the authors' released nets (fyu/dilation ``network.py`` ``build_frontend_vgg`` /
``build_context`` and ``models/dilation8_*_deploy.prototxt``):

* front end (Sec. 4): VGG16 with pool4 and pool5 removed; conv5_1..conv5_3 dilated by 2; ``fc6``
  a 7x7 convolution dilated by 4 (4096), ``fc7`` 1x1 (4096), ``drop6``/``drop7`` 0.5; ``final``
  1x1 to the classes (Gaussian std 0.001, zero bias). Output stride 8. **Every convolution is
  unpadded** ("valid"): the paper removes the padding of the intermediate feature maps;
* instead, the input image is reflection-padded by 186 pixels on every side
  (``predict.py``: ``label_margin = 186``, ``cv2.BORDER_REFLECT_101``; ``network.py``:
  ``margin=186``), exactly the total shrinkage of the valid convolutions
  (conv1 2 x 2, conv2 2 x 2 x 2, conv3 3 x 2 x 4, conv4 3 x 2 x 8, conv5 3 x 4 x 8, fc6 24 x 8:
  ``(4 + 8 + 24 + 48 + 96 + 192) / 2 = 186`` input pixels per side), so
  score pixel ``j`` sits on input pixel ``8 j``;
* Dilation8 = front end + the basic context module (:class:`kseg.layers.ContextModule`, layers
  ``ctx_conv1_1`` ... ``ctx_final``, identity-initialised);
* output: the authors upsample the stride-8 scores outside the net (``predict.py``
  ``interp_map``: output pixel ``h`` reads score coordinate ``h / 8``, bilinear). Here that is
  an :class:`kseg.layers.Interp` (corners aligned, ``8 (n - 1) + 1`` pixels from ``n`` scores)
  named ``zoom`` followed by a crop to the input size: the model returns full-resolution logits.
  To have ``8 (n - 1) + 1 >= H`` with ``H + extra = 8 n``, the bottom/right margins grow by
  ``extra = 8 (ceil((H - 1) / 8) + 1) - H`` pixels (7 to 14).
"""

import keras
from keras import layers

from kseg.backbones.vgg import VGG16_BLOCKS, VGG16_FC_UNITS, load_vgg16_weights, scale_width
from kseg.layers.context import ContextModule, ReflectionPadding2D
from kseg.layers.interp import Interp
from kseg.layers.normalization import ImageNormalization
from kseg.models.registry import ModelCard, register

__all__ = ["DilatedFrontEnd", "Dilation8", "DILATION_MARGIN"]

#: Reflection margin of the authors' front end (predict.py ``label_margin``).
DILATION_MARGIN = 186

_PAPER = "Multi-Scale Context Aggregation by Dilated Convolutions"
_AUTHORS = "Yu & Koltun"
_URL = "https://arxiv.org/abs/1511.07122"
_CODE = "fyu/dilation@7153d0b : network.py, models/dilation8_pascal_voc_deploy.prototxt, predict.py"
_NOTES = (
    "Valid convolutions on a 186-pixel reflection-padded input (the authors' margin); stride-8 "
    "scores zoomed back with corner-aligned bilinear interpolation (predict.py interp_map) and "
    "cropped to the input size. Needs a static input size. encoder_weights='imagenet' loads VGG16 "
    "incl. fc6 (7x7, used dilated) and fc7."
)


def _check(num_classes, input_shape, input_tensor, width):
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    shape = tuple(input_tensor.shape[1:]) if input_tensor is not None else tuple(input_shape or ())
    if len(shape) != 3 or shape[-1] != 3 or shape[0] is None or shape[1] is None:
        raise ValueError(f"input_shape must be a static (height, width, 3), got {input_shape}")
    if not float(width) > 0:
        raise ValueError(f"width must be > 0, got {width}")
    return shape


def _extra(size):
    """Rows added below the bottom margin: ``8 n - size`` for the least ``n`` with ``8 (n - 1) + 1 >= size``."""
    return 8 * (-(-(size - 1) // 8) + 1) - size


def _frontend_scores(inputs, num_classes, width, dropout):
    """Image -> ``final`` scores (stride 8) of the authors' front end; returns (scores, zoom sizes)."""
    height, width_px = inputs.shape[1], inputs.shape[2]
    extra_h, extra_w = _extra(height), _extra(width_px)
    x = ImageNormalization("caffe", name="preprocess")(inputs)
    m = DILATION_MARGIN
    x = ReflectionPadding2D(((m, m + extra_h), (m, m + extra_w)), name="reflect_pad")(x)
    dilations = (1, 1, 1, 1, 2)
    for b, block in enumerate(VGG16_BLOCKS, start=1):
        for i, filters in enumerate(block, start=1):
            x = layers.Conv2D(scale_width(filters, width), 3, dilation_rate=dilations[b - 1], name=f"conv{b}_{i}")(x)
            x = layers.ReLU(name=f"relu{b}_{i}")(x)
        if b <= 3:  # pool4 and pool5 are removed
            x = layers.MaxPooling2D(2, 2, name=f"pool{b}")(x)
    fc = scale_width(VGG16_FC_UNITS, width)
    x = layers.Conv2D(fc, 7, dilation_rate=4, name="fc6")(x)
    x = layers.ReLU(name="relu6")(x)
    if dropout:
        x = layers.Dropout(dropout, name="drop6")(x)
    x = layers.Conv2D(fc, 1, name="fc7")(x)
    x = layers.ReLU(name="relu7")(x)
    if dropout:
        x = layers.Dropout(dropout, name="drop7")(x)
    x = layers.Conv2D(
        num_classes, 1, kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
        bias_initializer="zeros", name="final",
    )(x)
    rows, cols = (height + extra_h) // 8, (width_px + extra_w) // 8
    assert x.shape[1] == rows and x.shape[2] == cols, (x.shape, rows, cols)
    return x, (8 * (rows - 1) + 1, 8 * (cols - 1) + 1)


def _zoom(x, inputs, zoom_size):
    x = Interp(size=zoom_size, align_corners=True, name="zoom")(x)
    crop = ((0, zoom_size[0] - inputs.shape[1]), (0, zoom_size[1] - inputs.shape[2]))
    return layers.Cropping2D(crop, name="crop")(x)


def _build(context, num_classes, input_shape, input_tensor, encoder_weights, weights, width, dropout,
           context_variant, name):
    shape = _check(num_classes, input_shape, input_tensor, width)
    inputs = input_tensor if input_tensor is not None else keras.Input(shape=shape, name="image")
    scores, zoom_size = _frontend_scores(inputs, int(num_classes), width, dropout)
    if context:
        scores = ContextModule(int(num_classes), variant=context_variant, name="context")(scores)
    outputs = _zoom(scores, inputs, zoom_size)
    model = keras.Model(inputs, outputs, name=name)
    if encoder_weights is not None:
        load_vgg16_weights(model, encoder_weights, include_top=True)
    if weights is not None:
        model.load_weights(weights)
    return model


_ARGS_DOC = """
    Args:
        num_classes: output classes (21: PASCAL VOC, the paper's main benchmark; 11 for CamVid).
        input_shape: static ``(height, width, 3)``.
        input_tensor: optional Keras tensor to build on instead of a new ``Input``.
        encoder_weights: ``None``, ``"imagenet"`` or a ``keras.applications.VGG16`` weights file
            with its classifier: conv1_1..conv5_3, fc6 (7x7 kernel used with dilation 4) and fc7.
        weights: optional path of a full-model weights file to load.
        width: channel multiplier (1.0 = the authors' net; small values for fast tests).
        dropout: rate of drop6 / drop7 (0.5; 0 removes them).
        name: model name.

    Returns:
        A ``keras.Model`` from RGB images in [0, 255] to logits ``(batch, H, W, num_classes)``.
"""


def _card(name, num_params, notes):
    return ModelCard(
        name=name, paper=_PAPER, authors=_AUTHORS, year=2016, url=_URL, reference_code=_CODE,
        num_params=num_params, default_num_classes=21, output_stride=8, notes=notes,
    )


# VGG16 convs 14,714,688 + fc6 7*7*512*4096 + 4096 + fc7 4096*4096 + 4096 + final 4096*21 + 21;
# tests/models/test_dilation.py writes the arithmetic out.
@register(_card("dilation_frontend", 134_346_581, _NOTES))
def DilatedFrontEnd(num_classes=21, input_shape=(500, 500, 3), input_tensor=None, encoder_weights=None,
                    weights=None, width=1.0, dropout=0.5, name="dilation_frontend"):
    """The front end of Yu & Koltun (Sec. 4): VGG16 without pool4/pool5, dilated conv5 and fc6, stride 8.

    Reference: Yu & Koltun, ICLR 2016, Sec. 4 ("front end") and Table 2; fyu/dilation
    ``network.py`` ``build_frontend_vgg``.
    """ + _ARGS_DOC + """
    Example:
        >>> import kseg
        >>> kseg.DilatedFrontEnd(input_shape=(45, 50, 3), width=0.0625).output_shape
        (None, 45, 50, 21)
    """
    return _build(False, num_classes, input_shape, input_tensor, encoder_weights, weights, width, dropout,
                  "basic", name)


# front end + basic context module: 7 * (9 * 21 * 21 + 21) + 21 * 21 + 21 = 28,392.
@register(_card("dilation8", 134_374_973, _NOTES + " Basic context module, identity-initialised."))
def Dilation8(num_classes=21, input_shape=(500, 500, 3), input_tensor=None, encoder_weights=None, weights=None,
              width=1.0, dropout=0.5, context_variant="basic", name="dilation8"):
    """Dilation8: the dilated front end followed by the context module (Yu & Koltun, Sec. 3-5).

    Reference: Yu & Koltun, ICLR 2016, Table 1 (context module) and Table 3 ("Front + Basic");
    fyu/dilation ``models/dilation8_pascal_voc_deploy.prototxt`` / ``dilation8_camvid_deploy``.
    The module is initialised to the identity (:class:`kseg.layers.ContextIdentity`), so the
    untrained Dilation8 predicts what its front end predicts (up to the ReLU on negative scores).
    """ + _ARGS_DOC + """        context_variant: ``"basic"`` (the released Dilation8) or ``"large"`` (Table 1's widths).

    Example:
        >>> import kseg
        >>> kseg.Dilation8(num_classes=11, input_shape=(45, 50, 3), width=0.0625).output_shape
        (None, 45, 50, 11)
    """
    return _build(True, num_classes, input_shape, input_tensor, encoder_weights, weights, width, dropout,
                  context_variant, name)
