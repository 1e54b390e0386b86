"""DT-EdgeNet (Chen, Barron, Papandreou, Murphy & Yuille, CVPR 2016; arXiv:1511.03328).

"Semantic Image Segmentation with Task-Specific Edge Detection Using CNNs and a Discriminatively
Trained Domain Transform" (Sec. 3-4, Fig. 2): three parts trained jointly end to end,

1. **DeepLab** (LargeFOV, :mod:`kseg.backbones.deeplab_vgg`): class scores ``fc8`` at stride 8;
2. **EdgeNet**: an edge map predicted from DeepLab's own intermediate features. Each of
   ``pool1`` (stride 2), ``pool2`` (stride 4) and ``pool3`` (stride 8) gets a 3x3 convolution
   with 128 filters (``edge_conv1..3``, ReLU), the three are resized to ``pool2``'s resolution
   (``edge_interp1..3``), concatenated (``edge_concat``) and a 1x1 convolution gives one edge
   map (``edge_score``), kept non-negative by a ReLU (``edge_relu``) so the filter weights
   ``w = exp(-sqrt(2)/sigma_k (1 + sigma_s/sigma_r g))`` stay in (0, 1);
3. the **domain transform** (:class:`kseg.layers.DomainTransform`): the scores, bilinearly
   upsampled to the edge map's resolution (``fc8_up``), are filtered with the edge map as
   reference (K = 3 iterations, sigma_s = 130, sigma_r = 0.1), then upsampled to the input
   (``dt_interp``, DeepLab's corner-aligned bilinear ``Interp``).

The loss on the output trains the edge branch through the domain transform's gradient with
respect to its reference map (Sec. 3.3): no edge ground truth is needed.
``domain_transform=False`` removes parts 2 and 3 (plain DeepLab-LargeFOV, the paper's baseline).
"""

import keras
from keras import layers

from kseg.backbones.deeplab_vgg import deeplab_vgg16_trunk, load_deeplab_vgg16_imagenet
from kseg.layers.domain_transform import METHODS, DomainTransform, takes_run_time_sizes
from kseg.layers.interp import Interp
from kseg.layers.normalization import ImageNormalization
from kseg.models._common import (ANY_SIZE, LOGITS_DTYPE, check_num_classes, check_width_multiplier, finish, image_input,
                                 legacy_width)
from kseg.models.registry import ModelCard, register

__all__ = ["DTEdgeNet"]

STATIC_REASON = ("dt_method 'scan' (and 'sequential' off TensorFlow) run the domain transform's recursions "
                 "over the stride-4 map's known height and width")


def _resolve_dt_method(dt_method, input_shape, input_tensor):
    """``"auto"``: ``"sequential"`` where it runs at this size (TensorFlow: any size; other backends:
    a static one), else ``"doubling"``. Measured (``benchmarks/domain_transform.py``, 2 CPU cores,
    360x480, width 0.25, ``--edgenet-only``): a DT-EdgeNet training step takes 355 ms sequential, 703 ms
    doubling."""
    if dt_method != "auto":
        return dt_method
    shape = tuple(input_tensor.shape[1:3]) if input_tensor is not None else tuple(input_shape or (None, None))[:2]
    return "sequential" if takes_run_time_sizes("sequential") or None not in shape else "doubling"


@register(
    ModelCard(
        name="dt_edgenet",
        paper=("Semantic Image Segmentation with Task-Specific Edge Detection Using CNNs and a "
               "Discriminatively Trained Domain Transform"),
        authors="Chen, Barron, Papandreou, Murphy & Yuille",
        year=2016,
        url="https://arxiv.org/abs/1511.03328",
        reference_code=("DeepLab: martinkersner/train-DeepLab@509419a : DeepLab-LargeFOV/train.prototxt; "
                        "DT weights/order: deeplab-public-ver2 domain_transform_forward_only_layer.cpp"),
        # DeepLab-LargeFOV 20,505,429 + EdgeNet 3x3 convs on pool1/2/3 (64/128/256 -> 128) + 1x1 384 -> 1;
        # arithmetic in tests/models/test_dt_edgenet.py.
        num_params=21_022_294,
        default_num_classes=21,
        output_stride=8,
        input_sizes="any",
        notes="DeepLab-LargeFOV + EdgeNet + domain transform (K=3, sigma_s=130, sigma_r=0.1) at stride 4, "
              "its recursions one loop step per pixel (a prefix scan in TFLite files); domain_transform=False "
              "is the DeepLab baseline.",
    )
)
@legacy_width()
def DTEdgeNet(num_classes=21, input_shape=ANY_SIZE, weights=None, encoder_weights=None, width_multiplier=1.0,
              input_tensor=None, name="dt_edgenet", domain_transform=True, num_iterations=3, sigma_s=130.0,
              sigma_r=0.1, edge_channels=128, dt_method="auto", fc_width=1024):
    """DeepLab-LargeFOV scores filtered by a domain transform guided by a jointly learned edge map.

    Reference: Chen et al., CVPR 2016, Sec. 3 (domain transform as a recursive filter and its
    gradients), Sec. 4 (EdgeNet on DeepLab's pool1, pool2, pool3; joint training; K = 3).

    Args:
        num_classes: classes (21, PASCAL VOC 2012).
        input_shape: ``(height, width, channels)``; default ``(None, None, 3)``: any size (321
            training crops in the paper); ``dt_method="scan"`` (and ``"sequential"`` on backends
            other than TensorFlow) needs a static size.
        weights: ``None``, a preset of the card or a path (``.weights.h5``, ``.keras``,
            ``.caffemodel``): the whole model.
        encoder_weights: None, ``"imagenet"`` or a ``keras.applications.VGG16`` weights file with its
            classifier (DeepLab's initialisation: convs copied, fc6/fc7 decimated).
        width_multiplier: scales the VGG16 widths (1.0 = paper; small for fast tests).
        input_tensor: optional Keras tensor to build on.
        name: model name.
        domain_transform: build EdgeNet and the domain transform (False: the DeepLab baseline).
        num_iterations, sigma_s, sigma_r: of the domain transform (K = 3, 130, 0.1).
        edge_channels: filters of each EdgeNet 3x3 convolution (128).
        dt_method: how the recursions are computed (:data:`kseg.layers.domain_transform.METHODS`):
            ``"auto"`` (default: ``"sequential"``, one loop step per pixel, the fastest to train,
            wherever it runs at this size, else ``"doubling"``), ``"doubling"`` (a Hillis-Steele
            prefix scan, log2 n dense steps, no control flow; 13 steps for a size known only at
            run time), ``"scan"`` (``keras.ops.associative_scan``) or ``"sequential"``. All compute
            the same function (tests); :func:`kseg.export.export_tflite` writes every method as
            ``"doubling"`` (builtin TFLite ops).
        fc_width: channels of fc6/fc7 (1024).

    Returns:
        ``keras.Model``: RGB ``(batch, H, W, 3)`` in [0, 255] -> logits ``(batch, H, W, num_classes)``.
        The edge map is ``model.get_layer("edge_relu").output`` (stride 4).

    Example:
        >>> import kseg
        >>> kseg.DTEdgeNet(num_classes=11, input_shape=(33, 41, 3), width_multiplier=1 / 16,
        ...                fc_width=32, edge_channels=8).output_shape
        (None, 33, 41, 11)
    """
    num_classes = check_num_classes(num_classes, "dt_edgenet")
    width_multiplier = check_width_multiplier(width_multiplier, "dt_edgenet")
    if int(edge_channels) < 1:
        raise ValueError(f"edge_channels must be >= 1, got {edge_channels}")
    if dt_method != "auto" and dt_method not in METHODS:
        raise ValueError(f"dt_method must be 'auto' or one of {METHODS}, got {dt_method!r}")
    dt_method = _resolve_dt_method(dt_method, input_shape, input_tensor)
    inputs = image_input(
        "dt_edgenet", input_shape, input_tensor, pretrained=weights is not None or encoder_weights is not None,
        static_reason=(STATIC_REASON if domain_transform and not takes_run_time_sizes(dt_method) else None),
        sizes="any static (height, width), e.g. (321, 321, 3); dt_method='doubling' takes (None, None, 3)",
    )
    x = ImageNormalization("caffe", name="preprocess")(inputs)
    feats = deeplab_vgg16_trunk(x, width_multiplier=width_multiplier, pool5a=True, include_fc=True,
                                fc_width=fc_width, fc6_dilation=12)
    scores = layers.Conv2D(num_classes, 1, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                           name="fc8")(feats["fc7"])
    if not domain_transform:
        logits = Interp(name="fc8_interp", dtype=LOGITS_DTYPE)([scores, inputs])
        model = keras.Model(inputs, logits, name=name)
    else:
        ref = feats["pool2"]
        branches = []
        for k in (1, 2, 3):
            e = layers.Conv2D(int(edge_channels), 3, padding="same", activation="relu",
                              name=f"edge_conv{k}")(feats[f"pool{k}"])
            branches.append(e if k == 2 else Interp(name=f"edge_interp{k}")([e, ref]))
        edges = layers.Concatenate(name="edge_concat")(branches)
        edges = layers.Conv2D(1, 1, name="edge_score")(edges)
        edges = layers.ReLU(name="edge_relu")(edges)
        up = Interp(name="fc8_up")([scores, ref])
        filtered = DomainTransform(num_iterations, sigma_s, sigma_r, method=dt_method,
                                   name="domain_transform")([up, edges])
        logits = Interp(name="dt_interp", dtype=LOGITS_DTYPE)([filtered, inputs])
        model = keras.Model(inputs, logits, name=name)
    return finish(model, "dt_edgenet", weights, encoder_weights,
                  lambda m, w: load_deeplab_vgg16_imagenet(m, w, fc_layers=(("fc6", "fc7"),)))
