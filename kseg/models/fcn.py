"""Fully Convolutional Networks: FCN-32s, FCN-16s, FCN-8s and FCN-8s at-once.

Long, Shelhamer & Darrell, "Fully Convolutional Networks for Semantic Segmentation", CVPR 2015
(extended: Shelhamer, Long & Darrell, PAMI 2016). Faithful to the authors' PASCAL VOC nets,
shelhamer/fcn.berkeleyvision.org@1305c73 ``voc-fcn32s``, ``voc-fcn16s``, ``voc-fcn8s``,
``voc-fcn8s-atonce`` (``net.py`` / ``train.prototxt``):

* the convolutionalised VGG16 (:func:`kseg.backbones.vgg.vgg16_fcn_trunk`): conv1_1 with pad 100,
  Caffe's ceil-mode pooling, fc6 as a 7x7 conv (pad 0), fc7 as a 1x1 conv, drop6 / drop7 0.5;
* ``score_fr``, ``score_pool4``, ``score_pool3``: 1x1 convs, zero-initialised (the prototxts give
  them no filler, and Caffe's default filler is the constant 0);
* ``upscore`` (64x64 s32), ``upscore2`` / ``upscore_pool4`` (4x4 s2), ``upscore16`` (32x32 s16),
  ``upscore8`` (16x16 s8): full (CxC) transposed convolutions, no bias, bilinear-initialised
  (:class:`kseg.initializers.BilinearUpsampling`, the authors' ``surgery.interp``) and frozen
  (``lr_mult: 0``): ``trainable=False``;
* ``Crop`` layers with the authors' offsets (:class:`kseg.layers.crop.CropToReference`):
  FCN-32s ``score`` 19; FCN-16s ``score_pool4c`` 5, ``score`` 27; FCN-8s ``score_pool4c`` 5,
  ``score_pool3c`` 9, ``score`` 31; fusion by sum (``fuse_pool4``, ``fuse_pool3``);
* FCN-8s at-once: fixed ``scale_pool4`` (0.01) and ``scale_pool3`` (0.0001) per-channel scales
  before the skip scores (Caffe ``Scale``, ``lr_mult: 0``, no bias), written as frozen bias-free
  1x1 ``DepthwiseConv2D`` layers (512 and 256 weights, as the Scale blobs).

Input handling. The authors pad the image by 100 pixels before conv1_1 so that any input, however
small, leaves at least 7x7 for fc6 and the upsampled scores cover the image; the crops then cut
the score back to exactly the input size. The cost is compute: a 500x500 image is convolved at
698x698 in conv1_1 ... conv5_3 (1.95x the pixels), about 363 forward GFLOPs for FCN-8s against
about 217 without the padding (multiply-adds x2, 21 classes; analytic count cross-checked with the
TF graph in ``benchmarks/flops_fcn_deconvnet.py``). ``pad100=False`` is the alternative
("same"-padded conv1_1 and fc6, upsampling with ``padding="same"``, crops at offset 0): it keeps
the output size as well, at ~60% of the compute, but the authors' weights were learned with the
padding and fc6 then sees zero padding at the borders instead of the padded image's context.
"""

import keras
from keras import layers

from kseg.backbones.vgg import load_vgg16_weights, vgg16_fcn_trunk
from kseg.initializers import BilinearUpsampling
from kseg.layers.crop import CropToReference
from kseg.layers.normalization import ImageNormalization
from kseg.models._common import (ANY_SIZE, LOGITS_DTYPE, check_num_classes, check_width_multiplier, finish,
                                 image_input, legacy_width)
from kseg.models.registry import ModelCard, register

__all__ = ["FCN32s", "FCN16s", "FCN8s", "FCN8sAtOnce"]

_PAPER = "Fully Convolutional Networks for Semantic Segmentation"
_AUTHORS = "Long, Shelhamer & Darrell"
_URL = "https://arxiv.org/abs/1411.4038"
_CODE = "shelhamer/fcn.berkeleyvision.org@1305c73 : {}/net.py"
_NOTES = (
    "conv1_1 pad 100 + authors' crops (any input size -> same output size); pad100=False for the "
    "'same'-padded variant. Bilinear upscore layers frozen, score convs zero-initialised as the "
    "authors. encoder_weights='imagenet' converts the VGG16 classifier (fc6 7x7, fc7 1x1)."
)

# Crop offsets of the authors' nets (caffe.coord_map, recorded in the train.prototxt files).
OFFSETS = {
    "fcn32s": {"score": 19},
    "fcn16s": {"score_pool4c": 5, "score": 27},
    "fcn8s": {"score_pool4c": 5, "score_pool3c": 9, "score": 31},
    "fcn8s_atonce": {"score_pool4c": 5, "score_pool3c": 9, "score": 31},
}


#: VGG configurations the FCN trunk takes: the paper's VGG16 (D) and the 19-layer E, which the
#: authors report performing like D (Long et al. Sec. 4.1); A-C are the same trunk with fewer layers.
BACKBONES = ("vgg_a", "vgg_b", "vgg_c", "vgg_d", "vgg_e")


def _upscore(x, name, num_classes, factor, pad100):
    """Frozen bilinear transposed conv, kernel 2*factor, stride factor, no bias (surgery.interp).

    With ``pad100`` it is Caffe's uncropped deconvolution (``(n - 1) * f + 2f`` outputs, cropped
    later at the authors' offsets); without, ``padding="same"`` crops ``f / 2`` on each side,
    which aligns pixel centres (output ``n * f``).
    """
    return layers.Conv2DTranspose(
        num_classes,
        2 * factor,
        strides=factor,
        padding="valid" if pad100 else "same",
        use_bias=False,
        kernel_initializer=BilinearUpsampling(),
        trainable=False,
        name=name,
    )(x)


def _score(x, name, num_classes):
    return layers.Conv2D(num_classes, 1, kernel_initializer="zeros", bias_initializer="zeros", name=name)(x)


def _crop(x, ref, name, variant, pad100, dtype=None):
    return CropToReference(OFFSETS[variant][name] if pad100 else 0, name=name, dtype=dtype)([x, ref])


def _scale(x, name, value):
    """Caffe ``Scale`` with a constant filler and ``lr_mult: 0``: a fixed per-channel factor."""
    return layers.DepthwiseConv2D(
        1, use_bias=False, depthwise_initializer=keras.initializers.Constant(value), trainable=False, name=name
    )(x)


def _build(variant, num_classes, input_shape, weights, encoder_weights, width_multiplier, input_tensor, name,
           backbone, pad100, dropout):
    num_classes = check_num_classes(num_classes, variant)
    width = check_width_multiplier(width_multiplier, variant)
    if backbone not in BACKBONES:
        raise ValueError(f"{variant}: backbone must be one of {BACKBONES}, got {backbone!r}")
    inputs = image_input(variant, input_shape, input_tensor, pretrained=weights is not None or encoder_weights is not None)
    x = ImageNormalization("caffe", name="preprocess")(inputs)
    ends = vgg16_fcn_trunk(x, width=width, pad100=pad100, fc_padding="valid" if pad100 else "same", dropout=dropout,
                           config=backbone)
    score = _score(ends["fc7"], "score_fr", num_classes)
    if variant == "fcn32s":
        score = _upscore(score, "upscore", num_classes, 32, pad100)
    else:
        up = _upscore(score, "upscore2", num_classes, 2, pad100)
        pool4 = ends["pool4"]
        if variant == "fcn8s_atonce":
            pool4 = _scale(pool4, "scale_pool4", 0.01)
        skip = _score(pool4, "score_pool4", num_classes)
        if not pad100:  # 'same' maps can be one pixel larger than the skip's after ceil pooling
            up = CropToReference(0, name="upscore2c")([up, skip])
        skip = _crop(skip, up, "score_pool4c", variant, pad100)
        score = layers.Add(name="fuse_pool4")([up, skip])
        if variant == "fcn16s":
            score = _upscore(score, "upscore16", num_classes, 16, pad100)
        else:
            up = _upscore(score, "upscore_pool4", num_classes, 2, pad100)
            pool3 = ends["pool3"]
            if variant == "fcn8s_atonce":
                pool3 = _scale(pool3, "scale_pool3", 0.0001)
            skip = _score(pool3, "score_pool3", num_classes)
            if not pad100:
                up = CropToReference(0, name="upscore_pool4c")([up, skip])
            skip = _crop(skip, up, "score_pool3c", variant, pad100)
            score = layers.Add(name="fuse_pool3")([up, skip])
            score = _upscore(score, "upscore8", num_classes, 8, pad100)
    outputs = _crop(score, inputs, "score", variant, pad100, dtype=LOGITS_DTYPE)
    model = keras.Model(inputs, outputs, name=name)

    def encoder(model, encoder_weights):
        if width != 1.0:
            raise ValueError(f"encoder_weights need width_multiplier=1.0 (the VGG widths), got {width}")
        load_vgg16_weights(model, encoder_weights, include_top=True, config=backbone)

    return finish(model, variant, weights, encoder_weights, encoder)


def _card(variant, num_params, output_stride, year=2015):
    return ModelCard(
        name=variant,
        paper=_PAPER,
        authors=_AUTHORS,
        year=year,
        url=_URL,
        reference_code=_CODE.format("voc-" + variant.replace("_", "-")),
        # Arithmetic from the prototxts written out in tests/models/test_fcn.py.
        num_params=num_params,
        default_num_classes=21,
        output_stride=output_stride,
        notes=_NOTES,
    )


_ARGS_DOC = """Args:
        num_classes: output classes (21 for PASCAL VOC: 20 + background).
        input_shape: ``(height, width, channels)``; default ``(None, None, 3)``: any size (the
            authors feed whole images, one at a time); the output always has the input's height
            and width. 1 or 4 channels build without pretrained weights.
        weights: ``None``, a preset of the card (``kseg.models.get(name).presets``) or a path
            (``.weights.h5``, ``.keras``, the authors' ``.caffemodel``): the whole model.
        encoder_weights: ``None`` (MSRA init), ``"imagenet"`` or the path of a
            ``keras.applications.VGG16`` (``VGG19`` for ``backbone="vgg_e"``) weights file saved
            with its classifier: conv1_1 ... conv5_3 are copied, fc6 / fc7 convolutionalised (FCN
            Sec. 3.1).
        width_multiplier: channel multiplier of the VGG trunk (1.0 = the paper; smaller for tests).
        input_tensor: optional Keras tensor to build on instead of a new ``Input``.
        name: model name.
        backbone: the VGG configuration of the trunk (Simonyan & Zisserman, Table 1): ``"vgg_d"``
            (VGG16, the paper's) or ``"vgg_a"``, ``"vgg_b"``, ``"vgg_c"``, ``"vgg_e"`` (VGG19, which
            the authors found to perform like VGG16, Sec. 4.1).
        pad100: ``True`` (default, the authors): ``ZeroPadding2D(100)`` before an unpadded conv1_1,
            uncropped deconvolutions and the authors' crop offsets. ``False``: conv1_1 and fc6
            use ``"same"`` padding, the deconvolutions crop ``f/2`` per side (``padding="same"``)
            and the maps are aligned at offset 0: at 500x500 about 217 instead of 363 forward
            GFLOPs (FCN-8s; ``benchmarks/flops_fcn_deconvnet.py``), but the authors' weights were
            learned with the padding.
        dropout: drop6 / drop7 rate (0.5 as the authors).

    Returns:
        A ``keras.Model`` from float images in [0, 255] to per-pixel class logits
        ``(batch, height, width, num_classes)`` (float32 under a mixed-precision policy too).
"""


def _with_args_doc(builder):
    """Put the shared argument documentation where the builder's docstring says ``{args}``."""
    builder.__doc__ = builder.__doc__.replace("    {args}\n", "\n    " + _ARGS_DOC + "\n")
    return builder


@register(_card("fcn32s", 136_152_917, 32))
@_with_args_doc
@legacy_width()
def FCN32s(num_classes=21, input_shape=ANY_SIZE, weights=None, encoder_weights=None, width_multiplier=1.0,
           input_tensor=None, name="fcn32s", backbone="vgg_d", pad100=True, dropout=0.5):
    """FCN-32s: VGG16 scores at stride 32, upsampled 32x by one frozen bilinear deconvolution.

    Reference: Long et al., CVPR 2015, Sec. 4.1-4.2; ``voc-fcn32s/net.py``: ``score_fr`` ->
    ``upscore`` (64x64, stride 32) -> ``score`` (crop offset 19).
    {args}
    Example:
        >>> import kseg
        >>> kseg.FCN32s(input_shape=(37, 53, 3), width_multiplier=0.0625).output_shape
        (None, 37, 53, 21)
    """
    return _build("fcn32s", num_classes, input_shape, weights, encoder_weights, width_multiplier, input_tensor, name,
                  backbone, pad100, dropout)


@register(_card("fcn16s", 134_815_994, 16))
@_with_args_doc
@legacy_width()
def FCN16s(num_classes=21, input_shape=ANY_SIZE, weights=None, encoder_weights=None, width_multiplier=1.0,
           input_tensor=None, name="fcn16s", backbone="vgg_d", pad100=True, dropout=0.5):
    """FCN-16s: FCN-32s plus a pool4 skip, fused at stride 16.

    Reference: Long et al., CVPR 2015, Sec. 4.2 and Fig. 3; ``voc-fcn16s/net.py``: ``upscore2``
    (4x4 s2) + ``score_pool4c`` (1x1 conv on pool4, crop 5) -> ``fuse_pool4`` -> ``upscore16``
    (32x32 s16) -> ``score`` (crop 27).
    {args}
    Example:
        >>> import kseg
        >>> kseg.FCN16s(input_shape=(37, 53, 3), width_multiplier=0.0625).output_shape
        (None, 37, 53, 21)
    """
    return _build("fcn16s", num_classes, input_shape, weights, encoder_weights, width_multiplier, input_tensor, name,
                  backbone, pad100, dropout)


@register(_card("fcn8s", 134_489_759, 8))
@_with_args_doc
@legacy_width()
def FCN8s(num_classes=21, input_shape=ANY_SIZE, weights=None, encoder_weights=None, width_multiplier=1.0,
          input_tensor=None, name="fcn8s", backbone="vgg_d", pad100=True, dropout=0.5):
    """FCN-8s: FCN-16s plus a pool3 skip, fused at stride 8 (the paper's best net).

    Reference: Long et al., CVPR 2015, Sec. 4.2 and Fig. 3; ``voc-fcn8s/net.py``: ... ``fuse_pool4``
    -> ``upscore_pool4`` (4x4 s2) + ``score_pool3c`` (crop 9) -> ``fuse_pool3`` -> ``upscore8``
    (16x16 s8) -> ``score`` (crop 31). The authors train it in stages (32s -> 16s -> 8s, each
    initialised from the previous); :func:`FCN8sAtOnce` is their one-stage variant.

    Cost of the default padding at 500x500 (21 classes, forward multiply-adds x2): about 363
    GFLOPs with ``pad100=True`` (conv1_1 ... conv5_3 on 698x698) against about 217 with
    ``pad100=False``; ``benchmarks/flops_fcn_deconvnet.py`` measures both from the TF graph.
    {args}
    Example:
        >>> import kseg
        >>> kseg.FCN8s(input_shape=(37, 53, 3), width_multiplier=0.0625).output_shape
        (None, 37, 53, 21)
    """
    return _build("fcn8s", num_classes, input_shape, weights, encoder_weights, width_multiplier, input_tensor, name,
                  backbone, pad100, dropout)


@register(_card("fcn8s_atonce", 134_490_527, 8, year=2016))
@_with_args_doc
@legacy_width()
def FCN8sAtOnce(num_classes=21, input_shape=ANY_SIZE, weights=None, encoder_weights=None, width_multiplier=1.0,
                input_tensor=None, name="fcn8s_atonce", backbone="vgg_d", pad100=True, dropout=0.5):
    """FCN-8s trained in one stage: the pool4 / pool3 skips are scaled by fixed 0.01 / 0.0001.

    Reference: Shelhamer, Long & Darrell, PAMI 2016, Sec. 4.2 ("at-once"); ``voc-fcn8s-atonce/net.py``:
    ``scale_pool4`` (0.01) and ``scale_pool3`` (0.0001), Caffe ``Scale`` layers with ``lr_mult: 0``,
    before ``score_pool4`` / ``score_pool3`` ("for compatibility": the skips' activations are far
    larger than fc7's, and the scales keep the at-once gradients balanced). Otherwise :func:`FCN8s`.
    {args}
    Example:
        >>> import kseg
        >>> kseg.FCN8sAtOnce(input_shape=(37, 53, 3), width_multiplier=0.0625).output_shape
        (None, 37, 53, 21)
    """
    return _build("fcn8s_atonce", num_classes, input_shape, weights, encoder_weights, width_multiplier, input_tensor, name,
                  backbone, pad100, dropout)
