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
from keras import layers, ops

from kseg.backbones.vgg import VGG16_BLOCKS, VGG16_FC_UNITS, load_vgg16_weights, scale_width
from kseg.layers.context import ContextModule
from kseg.layers.crop import CropToReference
from kseg.layers.interp import Interp
from kseg.layers.normalization import ImageNormalization
from kseg.models._common import (ANY_SIZE, LOGITS_DTYPE, check_num_classes, check_width_multiplier, finish,
                                 image_input, legacy_width)
from kseg.models.registry import ModelCard, register

__all__ = ["DilatedFrontEnd", "Dilation8", "DILATION_MARGIN", "MarginReflectionPadding2D"]

#: Reflection margin of the authors' front end (predict.py ``label_margin``).
DILATION_MARGIN = 186

_PAPER = "Multi-Scale Context Aggregation by Dilated Convolutions"
_AUTHORS = "Yu & Koltun"
_URL = "https://arxiv.org/abs/1511.07122"
_CODE = "fyu/dilation@7153d0b : network.py, models/dilation8_pascal_voc_deploy.prototxt, predict.py"
_NOTES = (
    "Valid convolutions on a 186-pixel reflection-padded input (the authors' margin); stride-8 "
    "scores zoomed back with corner-aligned bilinear interpolation (predict.py interp_map) and "
    "cropped to the input size. Any input size >= 2x2 (margins computed at run time). "
    "encoder_weights='imagenet' loads VGG16 "
    "incl. fc6 (7x7, used dilated) and fc7."
)


@keras.saving.register_keras_serializable(package="kseg")
class MarginReflectionPadding2D(keras.layers.Layer):
    """The front end's input padding, for any size known only at run time.

    Reflects (OpenCV ``BORDER_REFLECT_101``, numpy ``mode="reflect"``, repeated for margins wider
    than the image) by `margin` pixels on every side, plus ``extra(n) = stride (ceil((n - 1) /
    stride) + 1) - n`` rows / columns at the bottom / right, so that the stride-`stride` scores,
    zoomed with corners aligned (``stride (rows - 1) + 1`` pixels), cover the ``n`` input pixels
    (Yu & Koltun, fyu/dilation ``predict.py``). The indices are computed with ``keras.ops``
    (a modulo and a gather per axis), so one model takes every size.

    Example:
        >>> import numpy as np
        >>> x = np.arange(3, dtype="float32").reshape(1, 1, 3, 1)
        >>> y = MarginReflectionPadding2D(margin=2, stride=1)(np.repeat(x, 2, axis=1))
        >>> np.asarray(y)[0, 2, :, 0].tolist()
        [2.0, 1.0, 0.0, 1.0, 2.0, 1.0, 0.0, 1.0]
    """

    def __init__(self, margin=DILATION_MARGIN, stride=8, **kwargs):
        super().__init__(**kwargs)
        if int(margin) < 0 or int(stride) < 1:
            raise ValueError(f"margin must be >= 0 and stride >= 1, got {margin}, {stride}")
        self.margin, self.stride = int(margin), int(stride)

    def extra(self, n):
        """Rows added below the bottom margin for a side of `n` pixels (an int or a tensor)."""
        return self.stride * ((n - 1 + self.stride - 1) // self.stride + 1) - n

    def call(self, x):
        for axis in (1, 2):
            static = x.shape[axis]
            if static is not None and static < 2:
                raise ValueError(f"{self.name}: reflection needs height and width >= 2, got {tuple(x.shape)}")
            n = static if static is not None else ops.shape(x)[axis]
            total = n + 2 * self.margin + self.extra(n)
            period = 2 * (n - 1)
            k = ops.mod(ops.arange(total) - self.margin, period)
            x = ops.take(x, ops.where(k < n, k, period - k), axis=axis)
        return x

    def compute_output_shape(self, input_shape):
        grow = lambda n: None if n is None else n + 2 * self.margin + self.extra(n)  # noqa: E731
        return (input_shape[0], grow(input_shape[1]), grow(input_shape[2]), input_shape[3])

    def get_config(self):
        return {**super().get_config(), "margin": self.margin, "stride": self.stride}


def _frontend_scores(inputs, num_classes, width, dropout):
    """Image -> ``final`` scores (stride 8) of the authors' front end."""
    x = ImageNormalization("caffe", name="preprocess")(inputs)
    x = MarginReflectionPadding2D(DILATION_MARGIN, 8, name="reflect_pad")(x)
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
    return layers.Conv2D(
        num_classes, 1, kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
        bias_initializer="zeros", name="final",
    )(x)


def _zoom(x, inputs):
    """Corner-aligned 8x zoom (``8 (n - 1) + 1`` pixels from ``n`` scores), cropped to the input."""
    x = Interp(scale=8.0, align_corners=True, name="zoom")(x)
    return CropToReference(0, name="crop", dtype=LOGITS_DTYPE)([x, inputs])


def _build(context, num_classes, input_shape, weights, encoder_weights, width_multiplier, input_tensor, name,
           dropout, context_variant):
    card = "dilation8" if context else "dilation_frontend"
    num_classes = check_num_classes(num_classes, card)
    width = check_width_multiplier(width_multiplier, card)
    inputs = image_input(card, input_shape, input_tensor, min_side=2,
                         pretrained=weights is not None or encoder_weights is not None,
                         sizes="any height and width >= 2 (the reflection padding needs two pixels)")
    scores = _frontend_scores(inputs, num_classes, width, dropout)
    if context:
        scores = ContextModule(num_classes, variant=context_variant, name="context")(scores)
    model = keras.Model(inputs, _zoom(scores, inputs), name=name)
    return finish(model, card, weights, encoder_weights,
                  lambda m, w: load_vgg16_weights(m, w, include_top=True))


_ARGS_DOC = """
    Args:
        num_classes: output classes (21: PASCAL VOC, the paper's main benchmark; 11 for CamVid).
        input_shape: ``(height, width, channels)``; default ``(None, None, 3)``: any size >= 2x2
            (the margins are computed at run time).
        weights: ``None``, a preset of the card or a path (``.weights.h5``, ``.keras``, the
            authors' ``.caffemodel``).
        encoder_weights: ``None``, ``"imagenet"`` or a ``keras.applications.VGG16`` weights file
            with its classifier: conv1_1..conv5_3, fc6 (7x7 kernel used with dilation 4) and fc7.
        width_multiplier: channel multiplier (1.0 = the authors' net; small values for fast tests).
        input_tensor: optional Keras tensor to build on instead of a new ``Input``.
        name: model name.
        dropout: rate of drop6 / drop7 (0.5; 0 removes them).

    Returns:
        A ``keras.Model`` from RGB images in [0, 255] to logits ``(batch, H, W, num_classes)``.
"""


#: The released Dilation8 VOC file's names (dilation8_pascal_voc.caffemodel: front-end classifier
#: ``fc-final``, context layers ``ct_*``); the CamVid file uses kseg's names already.
VOC_CAFFE_NAMES = {"fc-final": "final", **{f"ct_{n}": f"ctx_{n}" for n in (
    "conv1_1", "conv1_2", "conv2_1", "conv3_1", "conv4_1", "conv5_1", "fc1", "final")}}


def _card(name, num_params, notes):
    return ModelCard(
        name=name, paper=_PAPER, authors=_AUTHORS, year=2016, url=_URL, reference_code=_CODE,
        num_params=num_params, default_num_classes=21, output_stride=8, notes=notes,
        caffe_rename=VOC_CAFFE_NAMES if name == "dilation8" else {"fc-final": "final"},
    )


# VGG16 convs 14,714,688 + fc6 7*7*512*4096 + 4096 + fc7 4096*4096 + 4096 + final 4096*21 + 21;
# tests/models/test_dilation.py writes the arithmetic out.
@register(_card("dilation_frontend", 134_346_581, _NOTES))
@legacy_width()
def DilatedFrontEnd(num_classes=21, input_shape=ANY_SIZE, weights=None, encoder_weights=None, width_multiplier=1.0,
                    input_tensor=None, name="dilation_frontend", dropout=0.5):
    """The front end of Yu & Koltun (Sec. 4): VGG16 without pool4/pool5, dilated conv5 and fc6, stride 8.

    Reference: Yu & Koltun, ICLR 2016, Sec. 4 ("front end") and Table 2; fyu/dilation
    ``network.py`` ``build_frontend_vgg``.
    """ + _ARGS_DOC + """
    Example:
        >>> import kseg
        >>> kseg.DilatedFrontEnd(input_shape=(45, 50, 3), width_multiplier=0.0625).output_shape
        (None, 45, 50, 21)
    """
    return _build(False, num_classes, input_shape, weights, encoder_weights, width_multiplier, input_tensor, name,
                  dropout, "basic")


# front end + basic context module: 7 * (9 * 21 * 21 + 21) + 21 * 21 + 21 = 28,392.
@register(_card("dilation8", 134_374_973, _NOTES + " Basic context module, identity-initialised."))
@legacy_width()
def Dilation8(num_classes=21, input_shape=ANY_SIZE, weights=None, encoder_weights=None, width_multiplier=1.0,
              input_tensor=None, name="dilation8", dropout=0.5, context_variant="basic"):
    """Dilation8: the dilated front end followed by the context module (Yu & Koltun, Sec. 3-5).

    Reference: Yu & Koltun, ICLR 2016, Table 1 (context module) and Table 3 ("Front + Basic");
    fyu/dilation ``models/dilation8_pascal_voc_deploy.prototxt`` / ``dilation8_camvid_deploy``.
    The module is initialised to the identity (:class:`kseg.layers.ContextIdentity`), so the
    untrained Dilation8 predicts what its front end predicts (up to the ReLU on negative scores).
    """ + _ARGS_DOC + """        context_variant: ``"basic"`` (the released Dilation8) or ``"large"`` (Table 1's widths).

    Example:
        >>> import kseg
        >>> kseg.Dilation8(num_classes=11, input_shape=(45, 50, 3), width_multiplier=0.0625).output_shape
        (None, 45, 50, 11)
    """
    return _build(True, num_classes, input_shape, weights, encoder_weights, width_multiplier, input_tensor, name,
                  dropout, context_variant)
