"""DeepLab-v1 (LargeFOV) and DeepLab-v2 (ASPP on VGG16 and ResNet-101), Chen et al.

- DeepLab-v1: "Semantic Image Segmentation with Deep Convolutional Nets and Fully Connected CRFs",
  ICLR 2015 (arXiv:1412.7062). DeepLab-LargeFOV: atrous VGG16, ``fc6`` 3x3 with dilation 12
  (1024), ``fc7`` 1x1 (1024), output stride 8, bilinear upsampling, optional dense CRF.
  Definition: martinkersner/train-DeepLab@509419a : ``DeepLab-LargeFOV/train.prototxt``.
- DeepLab-v2: "DeepLab: Semantic Image Segmentation with Deep Convolutional Nets, Atrous
  Convolution, and Fully Connected CRFs", PAMI 2018 (arXiv:1606.00915). ASPP with rates 6, 12, 18,
  24 summed; VGG16 (ASPP-L: xmojiao/deeplab_v2@da09c8b :
  ``voc2012/config/deeplab_largeFOV/train.prototxt``) or ResNet-101 (DrSleep/tensorflow-deeplab-
  resnet@066023c : ``misc/deploy.prototxt``); multi-scale inputs (1, 0.75, 0.5) fused by max.

Every model maps float RGB in [0, 255] to logits at the input resolution. The stride-8 class
scores stay reachable by name: ``model.get_layer("fc8")`` (v1, v2-VGG16), ``"fc1_voc12"``
(v2-ResNet-101) or ``"fc_fusion"`` (multi-scale); ``"fc8_interp"`` is the corner-aligned bilinear
upsampling to the input size (DeepLab's Caffe ``Interp``).

With ``crf=True`` a :class:`kseg.layers.DenseCRF` (mean field, DeepLab's parameters) refines the
upsampled scores with the input image and ``crf_logits`` turns its marginals back into logits
(``log Q``). The CRF is built from stock TensorFlow ops: such a model runs on the TensorFlow
backend only and converts to TFLite only with SELECT_TF_OPS (Flex), because the permutohedral
lattice needs ``tf.unique``, ``tf.searchsorted`` and ``unsorted_segment_sum`` with a data-dependent
number of segments, which have no TFLite builtin kernels.
"""

import keras
from keras import layers

from kseg.backbones.deeplab_vgg import deeplab_vgg16_trunk, load_deeplab_vgg16_imagenet
from kseg.backbones.resnet import load_resnet101_imagenet, resnet101_trunk
from kseg.layers.aspp import AtrousSpatialPyramid
from kseg.layers.interp import Interp
from kseg.layers.logits import ProbabilityLogits
from kseg.layers.normalization import ImageNormalization
from kseg.models._common import (ANY_SIZE, LOGITS_DTYPE, check_num_classes, check_width_multiplier, finish,
                                 image_input, legacy_width, rgb_image)
from kseg.models.registry import ModelCard, register

__all__ = ["DeepLabV1", "DeepLabV2", "DeepLabV2VGG16", "DeepLabV2ResNet101"]

_V1_PAPER = "Semantic Image Segmentation with Deep Convolutional Nets and Fully Connected CRFs"
_V2_PAPER = ("DeepLab: Semantic Image Segmentation with Deep Convolutional Nets, Atrous Convolution, "
             "and Fully Connected CRFs")
_AUTHORS = "Chen, Papandreou, Kokkinos, Murphy & Yuille"
_ASPP_RATES = (6, 12, 18, 24)
_CRF_NOTE = (" crf=True appends the dense CRF (TensorFlow backend only; TFLite needs SELECT_TF_OPS for "
             "the lattice's Unique/SearchSorted/UnsortedSegmentSum).")


#: VGG configurations of the atrous trunk: DeepLab's VGG16 (D) and the other configurations of
#: Simonyan & Zisserman's Table 1 (same five blocks; pool4/pool5 stride 1, block 5 dilated).
VGG_BACKBONES = ("vgg_a", "vgg_b", "vgg_c", "vgg_d", "vgg_e")


def _inputs(model_name, input_shape, input_tensor, weights, encoder_weights):
    return image_input(model_name, input_shape, input_tensor,
                       pretrained=weights is not None or encoder_weights is not None)


def _score_conv(num_classes, name):
    # The authors' fc8 filler: gaussian std 0.01, bias 0.
    return layers.Conv2D(num_classes, 1, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                         name=name)


def _finish(inputs, scores, crf, crf_iterations, crf_params, name):
    logits = Interp(name="fc8_interp", dtype=None if crf else LOGITS_DTYPE)([scores, inputs])
    if crf:
        from kseg.layers.crf import DenseCRF  # TF-only; imported where used

        probs = DenseCRF(num_iterations=crf_iterations, name="crf", **(crf_params or {}))([logits, rgb_image(inputs)])
        logits = ProbabilityLogits(name="crf_logits", dtype=LOGITS_DTYPE)(probs)
    return keras.Model(inputs, logits, name=name)


@register(
    ModelCard(
        name="deeplab_v1",
        paper=_V1_PAPER,
        authors=_AUTHORS,
        year=2015,
        url="https://arxiv.org/abs/1412.7062",
        reference_code="martinkersner/train-DeepLab@509419a : DeepLab-LargeFOV/train.prototxt",
        # 13 VGG16 convs + fc6 3x3x512x1024 + fc7 1x1x1024x1024 + fc8 1x1x1024x21, all with bias:
        # arithmetic in tests/models/test_deeplab.py.
        num_params=20_505_429,
        default_num_classes=21,
        output_stride=8,
        caffe_rename={"fc8_voc12": "fc8"},  # the released VOC12 classifier's name
        notes="DeepLab-LargeFOV (VOC 2012: 21 classes, crop 321). encoder_weights='imagenet' copies VGG16's "
              "convs and decimates fc6/fc7 (every 4th filter, every 3rd tap)." + _CRF_NOTE,
    )
)
@legacy_width()
def DeepLabV1(num_classes=21, input_shape=ANY_SIZE, weights=None, encoder_weights=None, width_multiplier=1.0,
              input_tensor=None, name="deeplab_v1", backbone="vgg_d", crf=False, crf_iterations=10, crf_params=None,
              fc_width=1024):
    """DeepLab-LargeFOV: atrous VGG16, fc6 dilation 12, output stride 8, bilinear upsampling, optional CRF.

    Reference: Chen et al., ICLR 2015, Sec. 3 and Table 2 ("DeepLab-CRF-LargeFOV"); layer by
    layer as ``DeepLab-LargeFOV/train.prototxt`` (see :mod:`kseg.backbones.deeplab_vgg`).

    Args:
        num_classes: classes (21 for PASCAL VOC 2012).
        input_shape: ``(height, width, channels)``; default ``(None, None, 3)``, any size. The
            authors train on 321x321 crops and test on 513x513 (sizes ``8k + 1`` align the
            stride-8 grid with the corners).
        weights: ``None``, a preset of the card or a path (``.weights.h5``, ``.keras``,
            ``.caffemodel``): the whole model.
        encoder_weights: ``None``, ``"imagenet"`` or a ``keras.applications.VGG16`` (``VGG19`` for
            ``backbone="vgg_e"``) weights file with its classifier: convs copied, fc6/fc7
            decimated (paper Sec. 4.1).
        width_multiplier: scales the VGG widths (1.0 = paper; small for fast tests).
        input_tensor: optional Keras tensor to build on.
        name: model name.
        backbone: VGG configuration of the trunk (``"vgg_d"``: VGG16, the paper's; ``"vgg_a"`` ...
            ``"vgg_e"``).
        crf: append the fully connected CRF (:class:`kseg.layers.DenseCRF`); TensorFlow only.
        crf_iterations: mean-field iterations of the CRF (10 in the paper).
        crf_params: extra keyword arguments of ``DenseCRF`` (kernel widths and weights).
        fc_width: channels of fc6/fc7 (1024).

    Returns:
        ``keras.Model``: float RGB ``(batch, H, W, 3)`` in [0, 255] -> logits ``(batch, H, W, num_classes)``.

    Example:
        >>> import kseg
        >>> model = kseg.DeepLabV1(num_classes=21, input_shape=(321, 321, 3))
        >>> model.get_layer("fc8").output.shape
        (None, 41, 41, 21)
    """
    num_classes = check_num_classes(num_classes, "deeplab_v1")
    width_multiplier = check_width_multiplier(width_multiplier, "deeplab_v1")
    if backbone not in VGG_BACKBONES:
        raise ValueError(f"deeplab_v1: backbone must be one of {VGG_BACKBONES}, got {backbone!r}")
    inputs = _inputs("deeplab_v1", input_shape, input_tensor, weights, encoder_weights)
    x = ImageNormalization("caffe", name="preprocess")(inputs)
    feats = deeplab_vgg16_trunk(x, width_multiplier=width_multiplier, pool5a=True, include_fc=True,
                                fc_width=fc_width, fc6_dilation=12, config=backbone)
    scores = _score_conv(num_classes, "fc8")(feats["fc7"])
    model = _finish(inputs, scores, crf, crf_iterations, crf_params, name)
    return finish(model, "deeplab_v1", weights, encoder_weights,
                  lambda m, w: load_deeplab_vgg16_imagenet(m, w, fc_layers=(("fc6", "fc7"),), config=backbone))


def _vgg16_aspp_scores(x, num_classes, width_multiplier, fc_width, config="vgg_d"):
    feats = deeplab_vgg16_trunk(x, width_multiplier=width_multiplier, pool5a=False, include_fc=False,
                                config=config)
    aspp = AtrousSpatialPyramid(num_classes, rates=_ASPP_RATES, hidden_units=(fc_width, fc_width),
                                dropout=0.5, branch_names=["1", "2", "3", "4"], name="fc8")
    return aspp(feats["pool5"])


def _resnet101_aspp_scores(x, num_classes, width_multiplier, depths):
    feats = resnet101_trunk(x, width_multiplier=width_multiplier, depths=depths)
    aspp = AtrousSpatialPyramid(num_classes, rates=_ASPP_RATES, hidden_units=(),
                                branch_names=[f"fc1_voc12_c{k}" for k in range(4)], name="fc1_voc12")
    return aspp(feats["res5"])


@legacy_width()
def DeepLabV2(num_classes=21, input_shape=ANY_SIZE, weights=None, encoder_weights=None, width_multiplier=1.0,
              input_tensor=None, name=None, backbone="resnet101", multi_scale=False, scales=(1.0, 0.75, 0.5),
              crf=False, crf_iterations=10, crf_params=None, fc_width=1024, depths=None):
    """DeepLab-v2: atrous VGG16 or ResNet-101, ASPP (rates 6, 12, 18, 24, summed), optional MSC and CRF.

    Reference: Chen et al., PAMI 2018, Sec. 3.3 (ASPP, Fig. 4), Sec. 4.1 (multi-scale inputs
    "MSC": the image at scales 1, 0.75, 0.5 through shared weights, score maps resized to the
    scale-1 map and fused by max; the authors also supervise each scale, which this
    single-output model leaves to the user) and Sec. 3.4 (CRF).

    Args:
        num_classes: classes (21, PASCAL VOC 2012).
        input_shape: ``(height, width, channels)``; default ``(None, None, 3)``, any size (321
            crops in training).
        weights: ``None``, a preset of the card or a path (``.weights.h5``, ``.keras``,
            ``.caffemodel``): the whole model.
        encoder_weights: None, ``"imagenet"`` or a weights file of ``keras.applications.ResNet101`` /
            ``VGG16`` (VGG16: convs copied and every branch's fc6/fc7 decimated).
        width_multiplier: scales the backbone widths (1.0 = paper).
        input_tensor: optional Keras tensor.
        name: model name (default ``"deeplab_v2_<backbone>"``).
        backbone: ``"resnet101"`` (ASPP = four 3x3 dilated convs to the classes, ``fc1_voc12_c0..3``)
            or ``"vgg16"`` = ``"vgg_d"`` (ASPP-L: ``fc6_k`` 3x3 dilated 1024 -> ``fc7_k`` 1x1 1024 ->
            ``fc8_k``); ``"vgg_a"`` ... ``"vgg_e"`` put another VGG configuration under ASPP-L.
        multi_scale: MSC inputs (``scales``) with shared weights, fused by max (``fc_fusion``).
        scales: input scales for ``multi_scale``; the first must be 1.
        crf: append the dense CRF (TensorFlow only).
        crf_iterations, crf_params: as :func:`DeepLabV1`.
        fc_width: VGG16 ASPP-L hidden width (1024).
        depths: ResNet blocks per stage (default ``(3, 4, 23, 3)``).

    Returns:
        ``keras.Model``: float RGB in [0, 255] -> logits ``(batch, H, W, num_classes)``.

    Example:
        >>> import kseg
        >>> model = kseg.DeepLabV2(backbone="resnet101", num_classes=21, input_shape=(321, 321, 3))
        >>> model.get_layer("fc1_voc12").output.shape
        (None, 41, 41, 21)
    """
    if backbone == "vgg16":
        backbone = "vgg_d"
    card_name = "deeplab_v2_resnet101" if backbone == "resnet101" else "deeplab_v2_vgg16"
    num_classes = check_num_classes(num_classes, card_name)
    width_multiplier = check_width_multiplier(width_multiplier, card_name)
    if backbone not in ("resnet101",) + VGG_BACKBONES:
        raise ValueError(f"backbone must be 'resnet101', 'vgg16' or one of {VGG_BACKBONES}, got {backbone!r}")
    scales = tuple(float(s) for s in scales)
    if multi_scale and (not scales or scales[0] != 1.0 or min(scales) <= 0):
        raise ValueError(f"scales must start with 1.0 and be > 0, got {scales}")
    name = name or ("deeplab_v2_vgg16" if backbone == "vgg_d" else f"deeplab_v2_{backbone}")

    def scores_of(x):
        if backbone != "resnet101":
            return _vgg16_aspp_scores(x, num_classes, width_multiplier, fc_width, backbone)
        return _resnet101_aspp_scores(x, num_classes, width_multiplier, depths)

    inputs = _inputs(card_name, input_shape, input_tensor, weights, encoder_weights)
    x = ImageNormalization("caffe", name="preprocess")(inputs)
    if not multi_scale:
        scores = scores_of(x)
        model = _finish(inputs, scores, crf, crf_iterations, crf_params, name)
        net = model
    else:
        # One network, shared by every scale (Caffe shares the parameters by name).
        inner = keras.Input(shape=(None, None, x.shape[-1]), name="data")
        net = keras.Model(inner, scores_of(inner), name=f"{name}_net")
        outs, suffixes = [], []
        for s in scales:
            suffix = "" if s == 1.0 else "_res" + f"{s:g}".replace("0.", "0").replace(".", "")
            xs = x if s == 1.0 else Interp(scale=s, name=f"data{suffix}")(x)
            outs.append(net(xs))
            suffixes.append(suffix)
        fused = [outs[0]] + [Interp(name=f"scores{sfx}_interp")([o, outs[0]]) for sfx, o in zip(suffixes[1:], outs[1:])]
        scores = layers.Maximum(name="fc_fusion")(fused)
        model = _finish(inputs, scores, crf, crf_iterations, crf_params, name)
    def encoder(_, encoder_weights):
        if backbone != "resnet101":
            _load_vgg16_aspp(net, encoder_weights, backbone)
        else:
            load_resnet101_imagenet(net, encoder_weights)

    return finish(model, card_name, weights, encoder_weights, encoder)


def _load_vgg16_aspp(model, weights, config="vgg_d"):
    """Convs copied; each ASPP branch's fc6_k/fc7_k decimated from VGG16's fc6/fc7 (as the authors)."""
    from kseg.backbones.deeplab_vgg import decimate_fc6, decimate_fc7, vgg16_imagenet_weights

    loaded = load_deeplab_vgg16_imagenet(model, weights, fc_layers=(), config=config)
    src = vgg16_imagenet_weights(weights, include_top=True, config=config)
    aspp = model.get_layer("fc8")
    for convs, _ in aspp.branches:
        fc6, fc7 = convs
        k6, b6 = decimate_fc6(*src["fc6"], taps=fc6.kernel.shape[0], filters=fc6.kernel.shape[-1])
        k7, b7 = decimate_fc7(*src["fc7"], filters=fc7.kernel.shape[-1])
        fc6.set_weights([k6, b6])
        fc7.set_weights([k7, b7])
        loaded += [fc6.name, fc7.name]
    return loaded


@register(
    ModelCard(
        name="deeplab_v2_vgg16",
        paper=_V2_PAPER,
        authors=_AUTHORS,
        year=2018,
        url="https://arxiv.org/abs/1606.00915",
        reference_code="xmojiao/deeplab_v2@da09c8b : voc2012/config/deeplab_largeFOV/train.prototxt",
        # 13 VGG16 convs + 4 x (fc6_k 3x3x512x1024 + fc7_k 1x1 1024x1024 + fc8_k 1x1 1024x21).
        num_params=37_877_652,
        default_num_classes=21,
        output_stride=8,
        caffe_rename={f"fc8_voc12_{k}": f"fc8_{k}" for k in range(1, 5)},  # the released VOC12 classifiers
        notes="DeepLab-v2 ASPP-L on VGG16 (branches summed). multi_scale=True: MSC 1/0.75/0.5 fused by max."
              + _CRF_NOTE,
    )
)
@legacy_width()
def DeepLabV2VGG16(num_classes=21, input_shape=ANY_SIZE, weights=None, encoder_weights=None, width_multiplier=1.0,
                   input_tensor=None, name="deeplab_v2_vgg16", backbone="vgg_d", **kwargs):
    """DeepLab-v2 with the VGG16 backbone (ASPP-L): ``DeepLabV2(backbone="vgg16", ...)``.

    ``backbone`` takes the other VGG configurations too (``"vgg_a"`` ... ``"vgg_e"``); the other
    options are :func:`DeepLabV2`'s.

    Example:
        >>> import kseg
        >>> kseg.DeepLabV2VGG16(num_classes=21, input_shape=(321, 321, 3)).output_shape
        (None, 321, 321, 21)
    """
    if backbone == "resnet101":
        raise ValueError("deeplab_v2_vgg16: backbone must be a VGG configuration (use DeepLabV2ResNet101)")
    return DeepLabV2(num_classes=num_classes, input_shape=input_shape, weights=weights,
                     encoder_weights=encoder_weights, width_multiplier=width_multiplier, input_tensor=input_tensor,
                     name=name, backbone=backbone, **kwargs)


@register(
    ModelCard(
        name="deeplab_v2_resnet101",
        paper=_V2_PAPER,
        authors=_AUTHORS,
        year=2018,
        url="https://arxiv.org/abs/1606.00915",
        reference_code="DrSleep/tensorflow-deeplab-resnet@066023c : misc/deploy.prototxt",
        # ResNet-101 convs without bias + BN scale/shift + 4 ASPP 3x3x2048x21 convs with bias.
        num_params=44_048_532,
        default_num_classes=21,
        output_stride=8,
        notes="DeepLab-v2 ResNet-101, BN frozen (inference mode), res4 dilation 2, res5 dilation 4. "
              "encoder_weights='imagenet' maps keras.applications.ResNet101 (conv biases folded into BN means). "
              "multi_scale=True: MSC 1/0.75/0.5 fused by max." + _CRF_NOTE,
    )
)
@legacy_width()
def DeepLabV2ResNet101(num_classes=21, input_shape=ANY_SIZE, weights=None, encoder_weights=None,
                       width_multiplier=1.0, input_tensor=None, name="deeplab_v2_resnet101", **kwargs):
    """DeepLab-v2 with the ResNet-101 backbone: ``DeepLabV2(backbone="resnet101", ...)``.

    Example:
        >>> import kseg
        >>> kseg.DeepLabV2ResNet101(num_classes=21, input_shape=(321, 321, 3)).output_shape
        (None, 321, 321, 21)
    """
    return DeepLabV2(num_classes=num_classes, input_shape=input_shape, weights=weights,
                     encoder_weights=encoder_weights, width_multiplier=width_multiplier, input_tensor=input_tensor,
                     name=name, backbone="resnet101", **kwargs)
