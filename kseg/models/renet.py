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
from kseg.layers.normalization import ImageNormalization
from kseg.layers.renet import ReNet2D
from kseg.models.registry import ModelCard, register

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
        notes="Image classifier: logits (batch, num_classes). CIFAR-10 configuration of Table 1; "
              "Keras GRUs (reset_after=True) carry 3u more biases each than the paper's.",
    )
)
def ReNetClassifier(num_classes=10, input_shape=(32, 32, 3), input_tensor=None, renet_units=(320, 320, 320),
                    patch_sizes=(2, 2, 2), fc_units=(4096,), cell="gru", dropout=0.0, width=1.0,
                    name="renet_classifier"):
    """The ReNet image classifier (Visin et al. 2015, Sec. 3, Table 1).

    Args:
        num_classes: classes (10, CIFAR-10).
        input_shape: ``(height, width, 3)``, divisible by the product of the patch sizes.
        input_tensor: optional Keras tensor.
        renet_units: GRU units per direction of each ReNet layer (CIFAR-10: 320, 320, 320;
            MNIST: 256, 256; SVHN: 256, 256, 256).
        patch_sizes: patch size of each ReNet layer (2x2 in every model of Table 1).
        fc_units: widths of the ReLU fully connected layers (CIFAR-10/SVHN: 4096; MNIST: 4096, 4096).
        cell: ``"gru"`` (the paper), ``"lstm"`` or ``"rnn"``.
        dropout: dropout rate before each fully connected layer (0 = none).
        width: multiplier of every ReNet and fully connected width (1.0 = the paper; small for tests).
        name: model name.

    Returns:
        ``keras.Model``: RGB images in [0, 255] -> class logits ``(batch, num_classes)``.

    Example:
        >>> import kseg
        >>> kseg.ReNetClassifier(renet_units=(4, 4, 4), fc_units=(16,)).output_shape
        (None, 10)
    """
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if input_tensor is None and (input_shape is None or len(input_shape) != 3 or input_shape[-1] != 3):
        raise ValueError(f"input_shape must be (height, width, 3), got {input_shape}")
    if not float(width) > 0:
        raise ValueError(f"width must be > 0, got {width}")
    patches = _pairs(patch_sizes, len(renet_units))
    inputs = input_tensor if input_tensor is not None else keras.Input(shape=input_shape, name="image")
    x = ImageNormalization("unit", name="preprocess")(inputs)
    for i, (units, patch) in enumerate(zip(renet_units, patches), start=1):
        x = ReNet2D(patch, scale_width(units, width), cell=cell, name=f"renet{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    for i, units in enumerate(fc_units, start=1):
        if dropout:
            x = layers.Dropout(dropout, name=f"drop{i}")(x)
        x = layers.Dense(scale_width(units, width), activation="relu", name=f"fc{i}")(x)
    outputs = layers.Dense(num_classes, name="score")(x)
    return keras.Model(inputs, outputs, name=name)


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
        notes="The authors' released CamVid configuration (evaluate_camvid.py: VGG16 up to conv3_3, 2 ReNet "
              "layers of 100 GRU units with 1x1 patches, 2 stride-2 2x2 transposed convs of 50); every width "
              "is an argument.",
    )
)
def ReSeg(num_classes=11, input_shape=(360, 480, 3), input_tensor=None, encoder_weights=None,
          vgg_blocks=3, renet_units=(100, 100), patch_sizes=((1, 1), (1, 1)), upsample_filters=(50, 50),
          upsample_kernel=2, cell="gru", width=1.0, name="reseg"):
    """ReSeg: VGG16 features, ReNet layers for global context, transposed-conv upsampling.

    Reference: Visin et al., CVPR 2016 DeepVision workshop, Sec. 3 and Fig. 1: the first layers
    of an ImageNet VGG16 (``conv1_1`` .. ``conv3_3`` with ``pool1``, ``pool2``: stride 4, 256
    channels), ReNet layers (:class:`kseg.layers.ReNet2D`), then transposed convolutions
    (``upsample1`` ...) that restore the input resolution, and a per-pixel classifier
    (``score``, 1x1; the softmax is in the loss).

    Args:
        num_classes: classes (11, CamVid).
        input_shape: ``(height, width, 3)``, divisible by the total stride.
        input_tensor: optional Keras tensor.
        encoder_weights: None, ``"imagenet"`` or a ``keras.applications.VGG16`` weights file.
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
        width: multiplier of every width (VGG16 convs, ReNet units, upsampling filters; 1.0 = the
            paper; small for fast tests).
        name: model name.

    Returns:
        ``keras.Model``: RGB ``(batch, H, W, 3)`` in [0, 255] -> logits ``(batch, H, W, num_classes)``.

    Example:
        >>> import kseg
        >>> kseg.ReSeg(input_shape=(16, 24, 3), renet_units=(4, 4), upsample_filters=(4, 4),
        ...            width=1 / 16).output_shape
        (None, 16, 24, 11)
    """
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if input_tensor is None and (input_shape is None or len(input_shape) != 3 or input_shape[-1] != 3):
        raise ValueError(f"input_shape must be (height, width, 3), got {input_shape}")
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
    inputs = input_tensor if input_tensor is not None else keras.Input(shape=input_shape, name="image")
    x = ImageNormalization("caffe", name="preprocess")(inputs)
    for b, block in enumerate(VGG16_BLOCKS[: int(vgg_blocks)], start=1):
        for i, filters in enumerate(block, start=1):
            x = layers.Conv2D(scale_width(filters, width), 3, padding="same", activation="relu",
                              name=f"conv{b}_{i}")(x)
        if b < int(vgg_blocks):
            x = layers.MaxPooling2D(2, 2, name=f"pool{b}")(x)
    for i, (units, patch) in enumerate(zip(renet_units, patches), start=1):
        x = ReNet2D(patch, scale_width(units, width), cell=cell, name=f"renet{i}")(x)
    for i, filters in enumerate(upsample_filters, start=1):
        x = layers.Conv2DTranspose(scale_width(filters, width), upsample_kernel, strides=2, padding="same", activation="relu",
                                   name=f"upsample{i}")(x)
    outputs = layers.Conv2D(num_classes, 1, name="score")(x)
    model = keras.Model(inputs, outputs, name=name)
    if encoder_weights is not None:
        load_vgg16_weights(model, encoder_weights)
    return model
