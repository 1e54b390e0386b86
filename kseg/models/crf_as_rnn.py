"""CRF-as-RNN (Zheng, Jayasumana, Romera-Paredes, Vineet, Su, Du, Huang & Torr, ICCV 2015; arXiv:1502.03240).

FCN-8s (Long et al.) with the fully connected CRF's mean-field inference appended as a trainable
recurrent layer (:class:`kseg.layers.CRFRNN`), trained end to end (paper Sec. 4-5).

Faithful to the authors' deploy net (torrvision/crfasrnn@2156669 :
``python-scripts/TVG_CRFRNN_new_deploy.prototxt``): the FCN-8s part keeps the old model-zoo names
and layers, which differ from the later FCN-8s of :mod:`kseg.models.fcn`:

- ``conv1_1`` pad 100, VGG16 convs, 2x2/2 pooling, ``fc6`` 7x7 (4096), ``fc7`` 1x1 (4096),
  ``drop6``/``drop7`` 0.5;
- ``score-fr`` (1x1); ``score2``: 4x4/2 transposed conv **with bias**, trainable (bilinear init);
- ``score-pool4`` (1x1) cropped at offset 5 (``score-pool4c``), summed (``score-fused``);
- ``score4``: 4x4/2 transposed conv, no bias, trainable; ``score-pool3`` cropped at offset 9
  (``score-pool3c``), summed (``score-final``);
- ``upsample``: 16x16/8 transposed conv, no bias, frozen (``lr_mult: 0``), cropped at offset 31
  to the input (``coarse``); the Caffe ``Crop`` layers there carry no offsets: they are computed
  from the coordinate maps, which gives FCN-8s's 5, 9, 31;
- ``inference1`` (``MultiStageMeanfield``): Potts-initialised, theta_alpha 160, theta_beta 3,
  theta_gamma 3, spatial weight 3, bilateral weight 5; 10 iterations at test time, 5 in training
  (paper Sec. 5). The unary is the FCN score and the image the network input.

The two Caffe layers both named ``fuse`` (and the three named ``crop``) are named after their
output blobs here, since Keras names must be unique.

TensorFlow backend only; TFLite conversion needs SELECT_TF_OPS (the permutohedral lattice's
``Unique``, ``SearchSorted`` and ``UnsortedSegmentSum`` have no TFLite builtins).
"""

import keras
from keras import layers

from kseg.backbones.vgg import load_vgg16_weights, vgg16_fcn_trunk
from kseg.initializers import BilinearUpsampling
from kseg.layers.crf import CRFRNN
from kseg.layers.crop import CropToReference
from kseg.layers.normalization import ImageNormalization
from kseg.models._common import (ANY_SIZE, LOGITS_DTYPE, check_num_classes, check_width_multiplier, finish,
                                 image_input, legacy_width, rgb_image)
from kseg.models.registry import ModelCard, register

__all__ = ["CRFasRNN"]

# Offsets of the Caffe crops (coordinate-map arithmetic, the same as FCN-8s with pad 100).
OFFSETS = {"score-pool4c": 5, "score-pool3c": 9, "coarse": 31}


def _deconv(x, num_classes, size, stride, use_bias, trainable, name):
    return layers.Conv2DTranspose(
        num_classes, size, strides=stride, padding="valid", use_bias=use_bias,
        kernel_initializer=BilinearUpsampling(), trainable=trainable, name=name,
    )(x)


def _score(x, num_classes, name):
    return layers.Conv2D(num_classes, 1, kernel_initializer="zeros", name=name)(x)


@register(
    ModelCard(
        name="crf_as_rnn",
        paper="Conditional Random Fields as Recurrent Neural Networks",
        authors="Zheng, Jayasumana, Romera-Paredes, Vineet, Su, Du, Huang & Torr",
        year=2015,
        url="https://arxiv.org/abs/1502.03240",
        reference_code="torrvision/crfasrnn@2156669 : python-scripts/TVG_CRFRNN_new_deploy.prototxt",
        # FCN-8s (old model-zoo layers: score2 with bias, score4 and upsample without) + 3 CRF
        # matrices 21x21: arithmetic in tests/models/test_crf_as_rnn.py.
        num_params=134_491_103,
        default_num_classes=21,
        output_stride=8,
        backends=("tensorflow",),
        tflite_builtins=False,
        notes="FCN-8s + CRFRNN (5 mean-field iterations in training, 10 at inference). TensorFlow "
              "only; TFLite needs SELECT_TF_OPS (lattice: Unique, SearchSorted, UnsortedSegmentSum).",
    )
)
@legacy_width()
def CRFasRNN(num_classes=21, input_shape=ANY_SIZE, weights=None, encoder_weights=None, width_multiplier=1.0,
             input_tensor=None, name="crf_as_rnn", num_iterations=5, num_iterations_inference=10, theta_alpha=160.0,
             theta_beta=3.0, theta_gamma=3.0, spatial_weight=3.0, bilateral_weight=5.0,
             tflite_builtins=False):
    """CRF-as-RNN: FCN-8s unaries refined by trainable mean-field iterations.

    Reference: Zheng et al., "Conditional Random Fields as Recurrent Neural Networks", ICCV 2015,
    Sec. 4 (mean field as CNN layers), Sec. 5 (end-to-end training: 5 iterations in training,
    10 at test).

    Args:
        num_classes: classes (21, PASCAL VOC).
        input_shape: ``(height, width, channels)``; default ``(None, None, 3)``, any size (500x500
            in the authors' deploy net). The CRF's bilateral kernel reads the first three
            channels as colour (a grey image repeated).
        weights: ``None``, a preset of the card or a path (``.weights.h5``, ``.keras``, the
            authors' ``.caffemodel``, whose old layer names the card maps).
        encoder_weights: None, ``"imagenet"`` or a ``keras.applications.VGG16`` weights file
            (with its classifier): conv1_1..fc7 initialised from VGG16 (fc6/fc7 convolutionalised).
        width_multiplier: VGG16 width multiplier (1.0 = paper; small only for fast tests).
        input_tensor: optional Keras tensor.
        name: model name.
        num_iterations: mean-field iterations in training (5).
        num_iterations_inference: iterations at inference (10, the deploy net).
        theta_alpha, theta_beta, theta_gamma, spatial_weight, bilateral_weight: CRF kernel widths
            and initial kernel weights (the authors' 160, 3, 3, 3, 5).
        tflite_builtins: build the CRF's lattice from TFLite builtin ops only (slower in TensorFlow; needed
            for ``kseg.export.export_tflite``; same weights).

    Returns:
        ``keras.Model``: float RGB ``(batch, H, W, 3)`` in [0, 255] -> refined logits
        ``(batch, H, W, num_classes)``; the FCN-8s unary stays reachable as layer ``coarse``.

    Example:
        >>> import kseg
        >>> model = kseg.CRFasRNN(num_classes=21, input_shape=(500, 500, 3))
        >>> model.get_layer("inference1").num_iterations_inference
        10
    """
    num_classes = check_num_classes(num_classes, "crf_as_rnn")
    width = check_width_multiplier(width_multiplier, "crf_as_rnn")
    inputs = image_input("crf_as_rnn", input_shape, input_tensor,
                         pretrained=weights is not None or encoder_weights is not None)
    x = ImageNormalization("caffe", name="preprocess")(inputs)
    ends = vgg16_fcn_trunk(x, width=width, pad100=True, fc_padding="valid", dropout=0.5)
    score = _score(ends["fc7"], num_classes, "score-fr")
    score2 = _deconv(score, num_classes, 4, 2, True, True, "score2")
    skip = _score(ends["pool4"], num_classes, "score-pool4")
    skip = CropToReference(OFFSETS["score-pool4c"], name="score-pool4c")([skip, score2])
    fused = layers.Add(name="score-fused")([score2, skip])
    score4 = _deconv(fused, num_classes, 4, 2, False, True, "score4")
    skip = _score(ends["pool3"], num_classes, "score-pool3")
    skip = CropToReference(OFFSETS["score-pool3c"], name="score-pool3c")([skip, score4])
    final = layers.Add(name="score-final")([score4, skip])
    bigscore = _deconv(final, num_classes, 16, 8, False, False, "upsample")
    coarse = CropToReference(OFFSETS["coarse"], name="coarse")([bigscore, inputs])
    refined = CRFRNN(
        num_classes, num_iterations=num_iterations, num_iterations_inference=num_iterations_inference,
        theta_alpha=theta_alpha, theta_beta=theta_beta, theta_gamma=theta_gamma,
        spatial_weight=spatial_weight, bilateral_weight=bilateral_weight, name="inference1", dtype=LOGITS_DTYPE,
        tflite_builtins=tflite_builtins,
    )([coarse, rgb_image(inputs)])
    model = keras.Model(inputs, refined, name=name)

    def encoder(model, encoder_weights):
        if width != 1.0:
            raise ValueError(f"encoder_weights need width_multiplier=1.0 (the VGG16 widths), got {width}")
        load_vgg16_weights(model, encoder_weights, include_top=True)

    return finish(model, "crf_as_rnn", weights, encoder_weights, encoder)
