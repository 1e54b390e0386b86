"""ParseNet: Looking Wider to See Better (Liu, Rabinovich & Berg, ICLR 2016 workshop; arXiv:1506.04579).

ParseNet adds *global context* to a fully convolutional net (Sec. 3, Fig. 1): the feature map
``fc7`` is average-pooled over the whole image (``pool6``), the resulting vector is "unpooled"
(copied back to every position of ``fc7``) and combined with the local features. Because the
two have very different norms, each is first L2-normalised per position with a learned
per-channel scale (Sec. 3.3, :class:`kseg.layers.L2Normalization`, scale initialised to 10).

- early fusion (Sec. 3.2, the paper's choice): ``concat(fc7_norm, unpool(pool6_norm))`` -> one
  1x1 classifier ``fc8``;
- late fusion: separate classifiers on the local and global features (``fc8`` and
  ``fc8_global``), whose scores are summed.

The baseline is DeepLab-LargeFOV (Sec. 4.2, PASCAL VOC): the atrous VGG16 trunk of
:mod:`kseg.backbones.deeplab_vgg` (``fc6`` 3x3 dilation 12, 1024; ``fc7`` 1x1, 1024; output
stride 8), the scores upsampled to the input with DeepLab's corner-aligned bilinear ``Interp``.
``global_context=False`` gives that baseline (the paper's ablation, Table 4).
"""

import keras
from keras import layers

from kseg.backbones.deeplab_vgg import deeplab_vgg16_trunk, load_deeplab_vgg16_imagenet
from kseg.layers.interp import Interp
from kseg.layers.normalization import ImageNormalization, L2Normalization
from kseg.models._common import (ANY_SIZE, LOGITS_DTYPE, check_num_classes, check_width_multiplier, finish,
                                 image_input, legacy_width)
from kseg.models.registry import ModelCard, register

__all__ = ["ParseNet"]


def _score_conv(num_classes, name):
    # DeepLab's fc8 filler (gaussian std 0.01, bias 0)
    return layers.Conv2D(num_classes, 1, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01), name=name)


@register(
    ModelCard(
        name="parsenet",
        paper="ParseNet: Looking Wider to See Better",
        authors="Liu, Rabinovich & Berg",
        year=2016,
        url="https://arxiv.org/abs/1506.04579",
        reference_code="baseline: martinkersner/train-DeepLab@509419a : DeepLab-LargeFOV/train.prototxt",
        # DeepLab-LargeFOV trunk 20,483,904 + fc7_norm 1024 + pool6_norm 1024 + fc8 2048*21+21;
        # arithmetic in tests/models/test_parsenet.py.
        num_params=20_528_981,
        default_num_classes=21,
        output_stride=8,
        notes="DeepLab-LargeFOV + global context (pool6 -> L2 norm -> unpool), early fusion by default; "
              "global_context=False is the baseline. encoder_weights='imagenet' initialises the trunk as DeepLab.",
    )
)
@legacy_width()
def ParseNet(num_classes=21, input_shape=ANY_SIZE, weights=None, encoder_weights=None, width_multiplier=1.0,
             input_tensor=None, name="parsenet", global_context=True, fusion="early", scale_init=10.0, fc_width=1024):
    """ParseNet on DeepLab-LargeFOV: global average-pooled context, L2-normalised, unpooled, fused.

    Reference: Liu, Rabinovich & Berg, ICLR 2016 workshop, Sec. 3 (Fig. 1: global context,
    early / late fusion, L2 normalisation layer with learned scale) and Sec. 4.2 (PASCAL VOC on
    DeepLab-LargeFOV).

    Args:
        num_classes: classes (21, PASCAL VOC 2012).
        input_shape: ``(height, width, channels)``; default ``(None, None, 3)``, any size
            (DeepLab's 321 training crops in the paper).
        weights: ``None``, a preset of the card or a path (``.weights.h5``, ``.keras``,
            ``.caffemodel``): the whole model.
        encoder_weights: None, ``"imagenet"`` or a ``keras.applications.VGG16`` weights file with its
            classifier: VGG16's convs copied, fc6/fc7 decimated as DeepLab.
        width_multiplier: scales the VGG16 widths (1.0 = paper; small for fast tests).
        input_tensor: optional Keras tensor to build on.
        name: model name.
        global_context: add the global context branch (False: the DeepLab-LargeFOV baseline).
        fusion: ``"early"`` (concatenate, one classifier) or ``"late"`` (two classifiers, summed).
        scale_init: initial value of the L2 normalisation scales (10, Sec. 3.3).
        fc_width: channels of fc6/fc7 (1024).

    Returns:
        ``keras.Model``: RGB ``(batch, H, W, 3)`` in [0, 255] -> logits ``(batch, H, W, num_classes)``;
        the stride-8 scores are ``model.get_layer("fc8")`` (early) or ``"fc8_fuse"`` (late).

    Example:
        >>> import kseg
        >>> kseg.ParseNet(num_classes=11, input_shape=(33, 41, 3), width_multiplier=1 / 16,
        ...               fc_width=32).output_shape
        (None, 33, 41, 11)
    """
    num_classes = check_num_classes(num_classes, "parsenet")
    width_multiplier = check_width_multiplier(width_multiplier, "parsenet")
    if fusion not in ("early", "late"):
        raise ValueError(f"fusion must be 'early' or 'late', got {fusion!r}")
    inputs = image_input("parsenet", input_shape, input_tensor,
                         pretrained=weights is not None or encoder_weights is not None)
    x = ImageNormalization("caffe", name="preprocess")(inputs)
    feats = deeplab_vgg16_trunk(x, width_multiplier=width_multiplier, pool5a=True, include_fc=True,
                                fc_width=fc_width, fc6_dilation=12)
    fc7 = feats["fc7"]
    if not global_context:
        scores = _score_conv(num_classes, "fc8")(fc7)
    else:
        pool6 = layers.GlobalAveragePooling2D(keepdims=True, name="pool6")(fc7)
        fc7_norm = L2Normalization(scale_init, name="fc7_norm")(fc7)
        pool6_norm = L2Normalization(scale_init, name="pool6_norm")(pool6)
        if fusion == "early":
            # "unpool": the 1x1 context vector copied to every position of fc7
            unpool6 = Interp(name="pool6_unpool")([pool6_norm, fc7])
            fused = layers.Concatenate(name="fc7_concat")([fc7_norm, unpool6])
            scores = _score_conv(num_classes, "fc8")(fused)
        else:
            local = _score_conv(num_classes, "fc8")(fc7_norm)
            glob = Interp(name="fc8_global_unpool")([_score_conv(num_classes, "fc8_global")(pool6_norm), fc7])
            scores = layers.Add(name="fc8_fuse")([local, glob])
    logits = Interp(name="fc8_interp", dtype=LOGITS_DTYPE)([scores, inputs])
    model = keras.Model(inputs, logits, name=name)
    return finish(model, "parsenet", weights, encoder_weights,
                  lambda m, w: load_deeplab_vgg16_imagenet(m, w, fc_layers=(("fc6", "fc7"),)))
