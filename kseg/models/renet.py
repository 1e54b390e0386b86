"""ReNet (Visin et al., 2015) image classifier and ReSeg (Visin et al., CVPR 2016 workshops) segmenter.

- ReNet: "ReNet: A Recurrent Neural Network Based Alternative to Convolutional Networks",
  Visin, Kastner, Cho, Matteucci, Courville & Bengio, arXiv:1505.00393. A stack of ReNet layers
  (:class:`kseg.layers.ReNet2D`: non-overlapping patches, bidirectional vertical then horizontal
  GRU sweeps) followed by fully connected layers and a softmax (Sec. 2-3, Table 1). The
  builder's defaults are the CIFAR-10 model of Table 1: three ReNet layers with 2x2 patches and
  320 GRU units per direction, one fully connected layer of 4096 ReLU units.
- ReSeg: "ReSeg: A Recurrent Neural Network-Based Model for Semantic Segmentation", Visin,
  Ciccone, Romero, Kastner, Cho, Bengio, Matteucci & Courville, CVPR 2016 DeepVision workshop,
  arXiv:1511.07053. Pretrained VGG16 layers extract local features, ReNet layers add global
  context, transposed convolutions bring the resolution back, a softmax classifies every pixel
  (Sec. 3, Fig. 1).

The GRUs are Keras' own (``keras.layers.GRU``, cuDNN-compatible ``reset_after=True``), so each
has a second bias vector of 3u compared with the papers' Theano GRUs: the parameter tests write
the papers' arithmetic and that difference out.

Export: the sweeps are ``keras.layers.GRU`` loops (``tf.while_loop``); see the tests for what
converts to builtin TFLite ops.
"""

import keras
from keras import layers

from kseg.backbones.vgg import VGG16_BLOCKS, load_vgg16_weights, scale_width
from kseg.layers.crop import CropToReference
from kseg.layers.normalization import ImageNormalization
from kseg.layers.renet import ReNet2D
from kseg.models._common import (ANY_SIZE, LOGITS_DTYPE, check_num_classes, check_width_multiplier, finish,
                                 image_input, legacy_width)
from kseg.models.registry import ModelCard, register

_RENET_STATIC = "fc1 is a dense layer over the flattened ReNet patch grid"

__all__ = ["ReNetClassifier", "ReSeg"]


def _pairs(patch_sizes, n):
    out = []
    for p in patch_sizes:
        out.append((int(p), int(p)) if isinstance(p, int) else tuple(int(v) for v in p))
    if len(out) != n:
        raise ValueError(f"patch_sizes needs one entry per ReNet layer ({n}), got {patch_sizes}")
    return out


@register(
    ModelCard(
        name="renet_classifier",
        paper="ReNet: A Recurrent Neural Network Based Alternative to Convolutional Networks",
        authors="Visin, Kastner, Cho, Matteucci, Courville & Bengio",
        year=2015,
        url="https://arxiv.org/abs/1505.00393",
        reference_code="paper Table 1 (CIFAR-10 column)",
        # 3 ReNet layers (12 GRUs) + fc1 10240x4096 + score 4096x10; arithmetic in
        # tests/models/test_renet_models.py.
        num_params=59_237_386,
        default_num_classes=10,
        output_stride=32,
        task="classification",
        input_sizes="the size it is built at (32x32 for CIFAR-10), divisible by the product of the patch sizes: "
                    + _RENET_STATIC,
        notes="Image classifier: logits (batch, num_classes). CIFAR-10 configuration of Table 1; "
              "Keras GRUs (reset_after=True) carry 3u more biases each than the paper's.",
    )
)
@legacy_width()
def ReNetClassifier(num_classes=10, input_shape=(32, 32, 3), weights=None, encoder_weights=None, width_multiplier=1.0,
                    input_tensor=None, name="renet_classifier", renet_units=(320, 320, 320), patch_sizes=(2, 2, 2),
                    fc_units=(4096,), cell="gru", dropout=0.0):
    """The ReNet image classifier (Visin et al. 2015, Sec. 3, Table 1).

    Args:
        num_classes: classes (10, CIFAR-10).
        input_shape: static ``(height, width, channels)`` (fc1 is a dense layer over the flattened
            patch grid), divisible by the product of the patch sizes; default 32x32 (CIFAR-10).
        weights: ``None``, a preset of the card or a path (``.weights.h5``, ``.keras``).
        encoder_weights: must be ``None`` (ReNet is trained from scratch).
        width_multiplier: multiplier of every ReNet and fully connected width (1.0 = the paper).
        input_tensor: optional Keras tensor.
        name: model name.
        renet_units: GRU units per direction of each ReNet layer (CIFAR-10: 320, 320, 320;
            MNIST: 256, 256; SVHN: 256, 256, 256).
        patch_sizes: patch size of each ReNet layer (2x2 in every model of Table 1).
        fc_units: widths of the ReLU fully connected layers (CIFAR-10/SVHN: 4096; MNIST: 4096, 4096).
        cell: ``"gru"`` (the paper), ``"lstm"`` or ``"rnn"``.
        dropout: dropout rate before each fully connected layer (0 = none).

    Returns:
        ``keras.Model``: RGB images in [0, 255] -> class logits ``(batch, num_classes)``.

    Example:
        >>> import kseg
        >>> kseg.ReNetClassifier(renet_units=(4, 4, 4), fc_units=(16,)).output_shape
        (None, 10)
    """
    num_classes = check_num_classes(num_classes, "renet_classifier")
    width = check_width_multiplier(width_multiplier, "renet_classifier")
    patches = _pairs(patch_sizes, len(renet_units))
    inputs = image_input("renet_classifier", input_shape, input_tensor, pretrained=weights is not None,
                         static_reason=_RENET_STATIC,
                         sizes="any static height and width divisible by the product of the patch sizes")
    x = ImageNormalization("unit", name="preprocess")(inputs)
    for i, (units, patch) in enumerate(zip(renet_units, patches), start=1):
        x = ReNet2D(patch, scale_width(units, width), cell=cell, name=f"renet{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    for i, units in enumerate(fc_units, start=1):
        if dropout:
            x = layers.Dropout(dropout, name=f"drop{i}")(x)
        x = layers.Dense(scale_width(units, width), activation="relu", name=f"fc{i}")(x)
    outputs = layers.Dense(num_classes, name="score", dtype=LOGITS_DTYPE)(x)
    return finish(keras.Model(inputs, outputs, name=name), "renet_classifier", weights, encoder_weights)


@register(
    ModelCard(
        name="reseg",
        paper="ReSeg: A Recurrent Neural Network-Based Model for Semantic Segmentation",
        authors="Visin, Ciccone, Romero, Kastner, Cho, Bengio, Matteucci & Courville",
        year=2016,
        url="https://arxiv.org/abs/1511.07053",
        reference_code="fvisin/reseg (Theano/Lasagne) : reseg.py",
        # VGG16 conv1_1..conv3_3 + 2 ReNet layers (8 GRUs of 100) + 2 2x2 transposed convs of 50 + 1x1 score;
        # arithmetic in tests/models/test_renet_models.py.
        num_params=2_544_549,
        default_num_classes=11,
        output_stride=4,
        input_sizes="any with 1x1 ReNet patches (the released configuration); larger patches: static sides "
                    "divisible by the total stride",
        notes="The authors' released CamVid configuration (evaluate_camvid.py: VGG16 up to conv3_3, 2 ReNet "
              "layers of 100 GRU units with 1x1 patches, 2 stride-2 2x2 transposed convs of 50); every width "
              "is an argument.",
    )
)
@legacy_width()
def ReSeg(num_classes=11, input_shape=ANY_SIZE, weights=None, encoder_weights=None, width_multiplier=1.0,
          input_tensor=None, name="reseg", vgg_blocks=3, renet_units=(100, 100), patch_sizes=((1, 1), (1, 1)),
          upsample_filters=(50, 50), upsample_kernel=2, cell="gru"):
    """ReSeg: VGG16 features, ReNet layers for global context, transposed-conv upsampling.

    Reference: Visin et al., CVPR 2016 DeepVision workshop, Sec. 3 and Fig. 1: the first layers
    of an ImageNet VGG16 (``conv1_1`` .. ``conv3_3`` with ``pool1``, ``pool2``: stride 4, 256
    channels), ReNet layers (:class:`kseg.layers.ReNet2D`), then transposed convolutions
    (``upsample1`` ...) that restore the input resolution, and a per-pixel classifier
    (``score``, 1x1; the softmax is in the loss).

    Args:
        num_classes: classes (11, CamVid).
        input_shape: ``(height, width, channels)``; default ``(None, None, 3)``: any size with 1x1
            ReNet patches (the released configuration: the VGG poolings round up and the output
            is cropped to the input); larger patches need a static size divisible by the total
            stride.
        weights: ``None``, a preset of the card or a path (``.weights.h5``, ``.keras``).
        encoder_weights: None, ``"imagenet"`` or a ``keras.applications.VGG16`` weights file.
        width_multiplier: multiplier of every width (VGG16 convs, ReNet units, upsampling filters;
            1.0 = the paper; small for fast tests).
        input_tensor: optional Keras tensor.
        name: model name.
        vgg_blocks: VGG16 blocks kept (3: conv1_1..conv3_3, pooling after blocks 1 .. vgg_blocks - 1).
        renet_units: GRU units per direction of each ReNet layer.
        patch_sizes: patch size of each ReNet layer.
        upsample_filters: filters of each stride-2 transposed convolution (ReLU); their number must
            undo the total stride (VGG pooling x ReNet patches).
        upsample_kernel: kernel size of the transposed convolutions.

    The defaults are the authors' released CamVid configuration (fvisin/reseg,
    ``evaluate_camvid.py``: ``in-nfilters='conv3_3'``, ``dim-proj=[100, 100]``, 1x1 patches,
    ``out-upsampling='grad'`` with ``out-nfilters=[50, 50]``, 2x2 filters, stride 2, ReLU; a 1x1
    convolution to the classes), which the README says reproduces the paper.
        cell: ``"gru"`` (the paper), ``"lstm"`` or ``"rnn"``.

    Returns:
        ``keras.Model``: RGB ``(batch, H, W, 3)`` in [0, 255] -> logits ``(batch, H, W, num_classes)``.

    Example:
        >>> import kseg
        >>> kseg.ReSeg(input_shape=(16, 24, 3), renet_units=(4, 4), upsample_filters=(4, 4),
        ...            width_multiplier=1 / 16).output_shape
        (None, 16, 24, 11)
    """
    num_classes = check_num_classes(num_classes, "reseg")
    width = check_width_multiplier(width_multiplier, "reseg")
    if not 1 <= int(vgg_blocks) <= 5:
        raise ValueError(f"vgg_blocks must be in 1..5, got {vgg_blocks}")
    patches = _pairs(patch_sizes, len(renet_units))
    stride_h = 2 ** (int(vgg_blocks) - 1)
    stride_w = stride_h
    for ph, pw in patches:
        stride_h, stride_w = stride_h * ph, stride_w * pw
    if stride_h != stride_w or 2 ** len(upsample_filters) != stride_h:
        raise ValueError(
            f"{len(upsample_filters)} stride-2 upsampling layers cannot undo a total stride of "
            f"{stride_h}x{stride_w} (VGG16 pooling x ReNet patches)"
        )
    one_by_one = all(p == (1, 1) for p in patches)
    inputs = image_input(
        "reseg", input_shape, input_tensor, pretrained=weights is not None or encoder_weights is not None,
        static_reason=None if one_by_one else "ReNet patches larger than 1x1 must tile the feature map exactly",
        sizes=f"any static height and width divisible by {stride_h}",
    )
    if not one_by_one and (inputs.shape[1] % stride_h or inputs.shape[2] % stride_w):
        raise ValueError(f"reseg: with patch sizes {patches} the input sides must be divisible by the total stride "
                         f"{stride_h}, got input_shape={tuple(inputs.shape[1:])}")
    x = ImageNormalization("caffe", name="preprocess")(inputs)
    for b, block in enumerate(VGG16_BLOCKS[: int(vgg_blocks)], start=1):
        for i, filters in enumerate(block, start=1):
            x = layers.Conv2D(scale_width(filters, width), 3, padding="same", activation="relu",
                              name=f"conv{b}_{i}")(x)
        if b < int(vgg_blocks):  # rounds up: any size, cropped back at the end (same as floor when divisible)
            x = layers.MaxPooling2D(2, 2, padding="same", name=f"pool{b}")(x)
    for i, (units, patch) in enumerate(zip(renet_units, patches), start=1):
        x = ReNet2D(patch, scale_width(units, width), cell=cell, name=f"renet{i}")(x)
    for i, filters in enumerate(upsample_filters, start=1):
        x = layers.Conv2DTranspose(scale_width(filters, width), upsample_kernel, strides=2, padding="same", activation="relu",
                                   name=f"upsample{i}")(x)
    x = layers.Conv2D(num_classes, 1, name="score")(x)
    outputs = CropToReference(0, name="crop", dtype=LOGITS_DTYPE)([x, inputs])
    model = keras.Model(inputs, outputs, name=name)
    return finish(model, "reseg", weights, encoder_weights, lambda m, w: load_vgg16_weights(m, w))
