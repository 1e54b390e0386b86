"""MultiPathNet (Zagoruyko, Lerer, Lin, Pinheiro, Gross, Chintala & Dollar, BMVC 2016): a Fast
R-CNN detector over DeepMask/SharpMask proposals with foveal regions, skip connections and the
integral loss. Definition: facebookresearch/multipathnet ``models/multipathnet.lua`` and
``models/model_utils.lua`` (``conv345Combine``, ``classAndBBoxLinear``, ``integral``).

* **Trunk**: VGG16 conv1_1 .. conv5_3 (no pool5); conv1/conv2 frozen (the authors' phase 2).
* **Foveal regions**: every proposal is pooled at 4 context scales, the box enlarged about its
  centre by 1x, 1.5x, 2x and 4x (``nn.Foveal``); each region has its own head.
* **Skip connections** (``conv345Combine``): region 1x pools conv5_3 (1/16), conv4_3 (1/8) and
  conv3_3 (1/4); 1.5x and 2x pool conv5_3 + conv4_3; 4x pools conv5_3 only. Every 7x7 ROI
  feature is L2-normalised as a whole (``nn.Normalize(2)`` on the flattened 7x7xC), the pooled
  features concatenated and multiplied by 1000, then mixed by a 1x1 conv to 512
  (``conv_mix``), then the VGG16 classifier (fc6 4096, fc7 4096, ReLU + dropout), one copy per
  region.
* ``model_het``: a 5th tower on the 1.5x region with all three skips feeds the box regressor;
  the classifier reads the 4 region towers concatenated (4 x 4096).
* **Integral loss** (``utils.integral``): one classifier per IoU threshold u in 0.50:0.05:0.75
  (6 heads), each trained with "foreground iff IoU >= u"; at test time their softmaxes are averaged.

With ``foveal=False, skip_connections=False, integral_loss=False`` it is the plain Fast R-CNN
head (Girshick 2015: conv5_3 ROI max pooling, fc6, fc7, classifier + box regressor), the
paper's baseline.

Inputs ``{"image": (B, H, W, 3) in [0, 255], "rois": (B, R, 4) [y1, x1, y2, x2] pixels}``;
outputs ``{"cls": (B, R, heads, K) logits, "bbox": (B, R, K, 4) Fast R-CNN deltas}``.

Example::

    model = kseg.MultiPathNet(num_classes=81)
    out = model({"image": images, "rois": proposals})
"""

import keras
from keras import layers, ops

from kseg.backbones.vgg import VGG16_BLOCKS
from kseg.layers.normalization import ImageNormalization
from kseg.models._common import (ANY_SIZE, LOGITS_DTYPE, check_num_classes, check_width_multiplier, finish,
                                 image_input, legacy_width)
from kseg.models.registry import ModelCard, register
from kseg.ops.roi import RoIPooling

__all__ = ["MultiPathNet", "FastRCNN", "FovealBoxes", "FlatL2Normalization", "INTEGRAL_THRESHOLDS",
           "FOVEAL_SCALES", "vgg16_trunk"]

INTEGRAL_THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75)
FOVEAL_SCALES = (1.0, 1.5, 2.0, 4.0)
#: conv345Combine(useConv3 = i == 1, useConv4 = i <= 3) for the four foveal regions
_REGION_SKIPS = (("conv5_3", "conv4_3", "conv3_3"), ("conv5_3", "conv4_3"), ("conv5_3", "conv4_3"), ("conv5_3",))
_STRIDES = {"conv5_3": 16, "conv4_3": 8, "conv3_3": 4}


@keras.saving.register_keras_serializable(package="kseg")
class FovealBoxes(keras.layers.Layer):
    """Enlarge (B, R, 4) ``[y1, x1, y2, x2]`` boxes by `factor` about their centres (MultiPathNet's
    foveal regions, Zagoruyko et al. 2016, Sec. 3.1).

    Example::

        context = FovealBoxes(2.0)(rois)      # twice the height and width, same centre
    """

    def __init__(self, factor=1.0, **kwargs):
        super().__init__(**kwargs)
        if float(factor) <= 0:
            raise ValueError(f"factor must be > 0, got {factor}")
        self.factor = float(factor)

    def call(self, rois):
        cy = (rois[..., 0] + rois[..., 2]) / 2
        cx = (rois[..., 1] + rois[..., 3]) / 2
        hh = (rois[..., 2] - rois[..., 0]) * self.factor / 2
        hw = (rois[..., 3] - rois[..., 1]) * self.factor / 2
        return ops.stack([cy - hh, cx - hw, cy + hh, cx + hw], axis=-1)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="kseg")
class FlatL2Normalization(keras.layers.Layer):
    """``scale * x / ||x||_2`` over the last `num_axes` axes together (Torch ``nn.Normalize(2)`` on a
    flattened 7x7xC ROI feature, then ``MulConstant``; MultiPathNet ``conv345Combine``).

    Example::

        y = FlatL2Normalization(scale=1000.0, num_axes=3)(pooled)   # pooled (B, R, 7, 7, C)
    """

    def __init__(self, scale=1.0, num_axes=3, epsilon=1e-12, **kwargs):
        super().__init__(**kwargs)
        self.scale, self.num_axes, self.epsilon = float(scale), int(num_axes), float(epsilon)

    def call(self, x):
        axes = tuple(range(-self.num_axes, 0))
        norm = ops.sqrt(ops.sum(ops.square(x), axis=axes, keepdims=True) + self.epsilon)
        return self.scale * x / norm

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "num_axes": self.num_axes, "epsilon": self.epsilon}


def vgg16_trunk(x, width_multiplier=1.0, freeze=("conv1", "conv2")):
    """VGG16 conv1_1..conv5_3 without pool5; returns ``{name: tensor}`` of conv3_3, conv4_3, conv5_3."""
    feats = {}
    for b, block in enumerate(VGG16_BLOCKS, start=1):
        if b > 1:
            x = layers.MaxPooling2D(2, 2, padding="same", name=f"pool{b - 1}")(x)
        for i, c in enumerate(block, start=1):
            name = f"conv{b}_{i}"
            x = layers.Conv2D(max(1, int(round(c * width_multiplier))), 3, padding="same", activation="relu",
                              name=name, trainable=not any(name.startswith(f + "_") for f in freeze))(x)
        feats[f"conv{b}_{len(block)}"] = x
    return feats


def _tower(feats, rois, skips, tag, pool_size, normalize, fc_units, dropout, mix_width):
    pooled = []
    for skip in skips:
        p = RoIPooling(pool_size, 1.0 / _STRIDES[skip], name=f"roi_pool_{skip}_{tag}")([feats[skip], rois])
        if normalize:
            p = FlatL2Normalization(1000.0, 3, name=f"l2norm_{skip}_{tag}")(p)
        pooled.append(p)
    x = pooled[0] if len(pooled) == 1 else layers.Concatenate(axis=-1, name=f"concat_{tag}")(pooled)
    if normalize:
        x = layers.Dense(mix_width, name=f"conv_mix_{tag}")(x)  # 1x1 conv over the pooled channels
    r = x.shape[1]
    x = layers.Reshape((r, -1), name=f"flatten_{tag}")(x)
    x = layers.Dense(fc_units, activation="relu", name=f"fc6_{tag}")(x)
    x = layers.Dropout(dropout, name=f"drop6_{tag}")(x)
    x = layers.Dense(fc_units, activation="relu", name=f"fc7_{tag}")(x)
    return layers.Dropout(dropout, name=f"drop7_{tag}")(x)


def _head(inputs, towers_cls, tower_box, num_classes, heads):
    feat = towers_cls[0] if len(towers_cls) == 1 else layers.Concatenate(axis=-1, name="region_concat")(towers_cls)
    cls = [layers.Dense(num_classes, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                        name="cls_score" if len(heads) == 1 else f"cls_score_u{int(round(u * 100))}")(feat)
           for u in heads]
    r = cls[0].shape[1]
    cls = [layers.Reshape((r, 1, num_classes), name=f"cls_reshape{k}", dtype=LOGITS_DTYPE)(c)
           for k, c in enumerate(cls)]
    cls = cls[0] if len(cls) == 1 else layers.Concatenate(axis=2, name="cls", dtype=LOGITS_DTYPE)(cls)
    box = layers.Dense(num_classes * 4, kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
                       name="bbox_pred")(tower_box)
    box = layers.Reshape((r, num_classes, 4), name="bbox", dtype=LOGITS_DTYPE)(box)
    return {"cls": cls, "bbox": box}


@register(ModelCard(
    name="multipathnet",
    paper="A MultiPath Network for Object Detection",
    authors="Zagoruyko, Lerer, Lin, Pinheiro, Gross, Chintala & Dollar",
    year=2016,
    url="https://arxiv.org/abs/1604.02135",
    reference_code="facebookresearch/multipathnet@3fe238b : models/multipathnet.lua, models/model_utils.lua",
    num_params=624_358_506,
    default_num_classes=81,
    output_stride=16,
    task="detection",
    backends=("tensorflow",),  # ROI pooling is tf.map_fn + tf.image
    tflite_builtins=False,
    notes="Inputs {'image', 'rois' (B,R,4) pixels}; outputs {'cls': (B,R,6,81), 'bbox': (B,R,81,4)}. 4 foveal "
          "towers + the box tower each hold their own fc6/fc7 (5 x 119.5M parameters), as released.",
))
@legacy_width()
def MultiPathNet(num_classes=81, input_shape=ANY_SIZE, weights=None, encoder_weights=None, width_multiplier=1.0,
                 input_tensor=None, name="multipathnet", num_rois=64, foveal=True, skip_connections=True,
                 integral_loss=True, heterogeneous=True, fc_units=4096, pool_size=7, dropout=0.5):
    """MultiPathNet detector (see the module docstring for the architecture).

    Args:
        num_classes: object classes + background (81 for COCO).
        input_shape: image shape; default ``(None, None, 3)``, any size.
        weights: ``None``, a preset of the card or a path (``.weights.h5``, ``.keras``, the
            authors' ``.t7``).
        encoder_weights: ``None``, ``"imagenet"`` or a ``keras.applications.VGG16`` weights file
            (conv1_1 ... conv5_3).
        width_multiplier: scales the trunk and the ``conv_mix`` widths (1.0 = the paper).
        input_tensor: optional Keras tensor for the image input.
        name: model name.
        num_rois: ROIs per image (fixed, for the static graph).
        foveal: the four context regions (1x, 1.5x, 2x, 4x); else only the 1x region.
        skip_connections: conv3/conv4 skips with L2 normalisation and ``conv_mix``; else conv5_3
            only, no normalisation (plain Fast R-CNN pooling).
        integral_loss: 6 classifiers for IoU thresholds 0.50..0.75; else one (u = 0.5).
        heterogeneous: the separate 1.5x box-regression tower (``model_het``); needs ``foveal``.
        fc_units, pool_size: sizes (4096, 7); small values for tests.
    """
    card = "multipathnet" if foveal or skip_connections or integral_loss else "fast_rcnn"
    num_classes = check_num_classes(num_classes, name)
    width_multiplier = check_width_multiplier(width_multiplier, name)
    if num_rois < 1:
        raise ValueError(f"num_rois must be >= 1, got {num_rois}")
    image = image_input(name, input_shape, input_tensor, pretrained=weights is not None or encoder_weights is not None)
    rois = keras.Input((num_rois, 4), name="rois")
    x = ImageNormalization("caffe", name="preprocess")(image)
    feats = vgg16_trunk(x, width_multiplier)
    mix = max(1, int(round(512 * width_multiplier)))
    scales = FOVEAL_SCALES if foveal else (1.0,)
    towers = []
    for i, s in enumerate(scales):
        r = rois if s == 1.0 else FovealBoxes(s, name=f"foveal_{s:g}x")(rois)
        skips = _REGION_SKIPS[i] if skip_connections else ("conv5_3",)
        towers.append(_tower(feats, r, skips, f"r{i + 1}", pool_size, skip_connections, fc_units, dropout, mix))
    if foveal and heterogeneous:
        r = FovealBoxes(1.5, name="foveal_1.5x_box")(rois)
        skips = ("conv5_3", "conv4_3", "conv3_3") if skip_connections else ("conv5_3",)
        box_tower = _tower(feats, r, skips, "box", pool_size, skip_connections, fc_units, dropout, mix)
    else:
        box_tower = towers[0] if len(towers) == 1 else layers.Concatenate(axis=-1, name="box_concat")(towers)
    heads = INTEGRAL_THRESHOLDS if integral_loss else (0.5,)
    model = keras.Model({"image": image, "rois": rois}, _head(image, towers, box_tower, num_classes, heads), name=name)
    model.iou_thresholds = heads
    card = "multipathnet" if card == "multipathnet" else None
    return _finish_detector(model, card, weights, encoder_weights)


def _finish_detector(model, card, weights, encoder_weights):
    """weights / encoder_weights of a detector (Fast R-CNN has no card: its weights are paths)."""
    from kseg.backbones.vgg import load_vgg16_weights
    from kseg.models.weights import load_weights

    if card is not None:
        return finish(model, card, weights, encoder_weights, lambda m, w: load_vgg16_weights(m, w))
    if encoder_weights is not None:
        load_vgg16_weights(model, encoder_weights)
    return load_weights(model, weights)


def FastRCNN(num_classes=81, input_shape=ANY_SIZE, weights=None, encoder_weights=None, width_multiplier=1.0,
             input_tensor=None, name="fast_rcnn", **kwargs):
    """The plain Fast R-CNN head on VGG16 (MultiPathNet's baseline): no foveal regions, no skips,
    a single classifier (``MultiPathNet(foveal=False, skip_connections=False, integral_loss=False)``)."""
    return MultiPathNet(num_classes=num_classes, input_shape=input_shape, weights=weights,
                        encoder_weights=encoder_weights, width_multiplier=width_multiplier, input_tensor=input_tensor,
                        name=name, foveal=False, skip_connections=False, integral_loss=False, heterogeneous=False,
                        **kwargs)
