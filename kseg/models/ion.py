"""Inside-Outside Net (Bell, Zitnick, Bala & Girshick, CVPR 2016): a Fast R-CNN detector with
skip pooling and recurrent context.

* VGG16 trunk (conv1_1 .. conv5_3, conv1/conv2 frozen as in Fast R-CNN).
* **Context** ("outside"): two stacked :class:`kseg.layers.IRNN2D` layers on conv5_3 (512 hidden
  units per direction, 4 directions -> 2048 channels each), Fig. 4.
* **Skip pooling** ("inside"): every ROI is max-pooled (7x7, Fast R-CNN ROI pooling) from
  conv3_3 (1/4), conv4_3 (1/8), conv5_3 (1/16) and the context features (1/16); each pooled
  feature is L2-normalised per position and re-scaled by a learned per-channel scale (Sec. 3.3;
  ``kseg.layers.L2Normalization``), concatenated (256 + 512 + 512 + 2048 = 3328 channels) and
  reduced by a 1x1 convolution to 512 (so fc6 keeps VGG16's 7x7x512 input), then fc6, fc7 (4096),
  a classifier and a per-class box regressor.
* Optional **segmentation loss** (Sec. 5, "regularisation"): a 1x1 convolution on the context
  features predicts per-pixel classes at 1/16 (output ``seg``), used only in training.

Inputs ``{"image", "rois" (B, R, 4) pixels}``; outputs ``{"cls": (B, R, 1, K), "bbox": (B, R, K, 4)
[, "seg": (B, H/16, W/16, K)]}`` (the detector interface of :mod:`kseg.inference.detection`).

Example::

    model = kseg.ION(num_classes=81)
"""

import keras
from keras import layers

from kseg.layers.irnn import IRNN2D
from kseg.layers.normalization import ImageNormalization, L2Normalization
from kseg.models._common import ANY_SIZE, check_num_classes, check_width_multiplier, image_input, legacy_width
from kseg.models.multipathnet import _finish_detector, _head, vgg16_trunk
from kseg.models.registry import ModelCard, register
from kseg.ops.roi import RoIPooling

__all__ = ["ION"]


@register(ModelCard(
    name="ion",
    paper="Inside-Outside Net: Detecting Objects in Context with Skip Pooling and Recurrent Neural Networks",
    authors="Bell, Zitnick, Bala & Girshick",
    year=2016,
    url="https://arxiv.org/abs/1512.04143",
    reference_code="paper (Sec. 3, Fig. 2 and 4); no public reference implementation was used",
    num_params=141_036_501,
    default_num_classes=81,
    output_stride=16,
    task="detection",
    backends=("tensorflow",),  # ROI pooling is tf.map_fn + tf.image
    tflite_builtins=False,
    notes="Inputs {'image', 'rois'}; outputs {'cls': (B,R,1,81), 'bbox': (B,R,81,4)} (+ 'seg' with "
          "segmentation_loss=True). L2-norm scales start at `norm_scale` (1000, the order of conv5_3's "
          "norm); the paper learns them.",
))
@legacy_width()
def ION(num_classes=81, input_shape=ANY_SIZE, weights=None, encoder_weights=None, width_multiplier=1.0,
        input_tensor=None, name="ion", num_rois=64, context_units=512, learn_recurrent=True, segmentation_loss=False,
        fc_units=4096, pool_size=7, norm_scale=1000.0, dropout=0.5):
    """Inside-Outside Net (see the module docstring).

    Args:
        num_classes: classes + background (81 for COCO).
        input_shape: image shape; default ``(None, None, 3)``, any size.
        weights: ``None`` or a path (``.weights.h5``, ``.keras``); the authors released no weights.
        encoder_weights: ``None``, ``"imagenet"`` or a ``keras.applications.VGG16`` weights file.
        width_multiplier: scales the trunk, context and ``conv_mix`` widths (1.0 = the paper).
        input_tensor: optional Keras tensor for the image input.
        name: model name.
        num_rois: ROIs per image.
        context_units: IRNN hidden units per direction (512).
        learn_recurrent: identity-initialised learned recurrence, or the fixed identity (fast form).
        segmentation_loss: add the ``seg`` output for the segmentation regulariser.
        fc_units, pool_size: sizes; small values for tests.
        norm_scale: initial L2-normalisation scale.
    """
    num_classes = check_num_classes(num_classes, "ion")
    width_multiplier = check_width_multiplier(width_multiplier, "ion")
    image = image_input("ion", input_shape, input_tensor, pretrained=weights is not None or encoder_weights is not None)
    rois = keras.Input((num_rois, 4), name="rois")
    x = ImageNormalization("caffe", name="preprocess")(image)
    feats = vgg16_trunk(x, width_multiplier)
    units = max(1, int(round(context_units * width_multiplier)))
    ctx = IRNN2D(units, learn_recurrent, name="irnn1")(feats["conv5_3"])
    ctx = IRNN2D(units, learn_recurrent, name="irnn2")(ctx)
    feats["context"] = ctx
    pooled = []
    for src, stride in (("conv3_3", 4), ("conv4_3", 8), ("conv5_3", 16), ("context", 16)):
        p = RoIPooling(pool_size, 1.0 / stride, name=f"roi_pool_{src}")([feats[src], rois])
        pooled.append(L2Normalization(norm_scale, name=f"l2norm_{src}")(p))
    x = layers.Concatenate(axis=-1, name="skip_concat")(pooled)
    x = layers.Dense(max(1, int(round(512 * width_multiplier))), name="conv_mix")(x)  # the 1x1 conv
    x = layers.Reshape((num_rois, -1), name="flatten")(x)
    x = layers.Dense(fc_units, activation="relu", name="fc6")(x)
    x = layers.Dropout(dropout, name="drop6")(x)
    x = layers.Dense(fc_units, activation="relu", name="fc7")(x)
    x = layers.Dropout(dropout, name="drop7")(x)
    outputs = _head(image, [x], x, num_classes, (0.5,))
    if segmentation_loss:
        outputs["seg"] = layers.Conv2D(num_classes, 1, name="seg", dtype="float32")(ctx)
    model = keras.Model({"image": image, "rois": rois}, outputs, name=name)
    return _finish_detector(model, "ion", weights, encoder_weights)
