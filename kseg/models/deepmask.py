"""DeepMask (Pinheiro, Collobert & Dollar, NIPS 2015) and SharpMask (Pinheiro, Lin, Collobert &
Dollar, ECCV 2016): class-agnostic object mask proposals.

Both take a patch (the ``input_size`` patch plus ``context`` pixels each side, float RGB in
[0, 255]) and return ``{"masks": (B, out, out) logits, "scores": (B, 1) logits}``: "is an object
centred in the patch, at the canonical scale?" and its mask (a positive is scored ``+1``).

DeepMask, two trunks:

* ``trunk="vgg"`` — the paper (Sec. 3.1): VGG-A's 8 convs with the last pooling removed
  (``conv1_1 | conv2_1 | conv3_1 conv3_2 | conv4_1 conv4_2 | conv5_1 conv5_2``, 4 poolings,
  stride 16; 224x224 patch -> 14x14x512). Mask branch: ``mask_conv`` 1x1 (512) + ReLU,
  ``mask_lowrank`` fully connected 512 (linear: the low-rank factorisation), ``mask_fc`` 56*56,
  bilinear upsampling to the 224x224 patch. Score branch: ``score_pool`` 2x2 max pooling,
  ``score_fc1`` 512 and ``score_fc2`` 1024 (ReLU, dropout 0.5), ``score`` 1.
* ``trunk="resnet50"`` — the authors' released code (``DeepMask.lua``): ResNet-50 (fb.resnet.torch,
  stride on the 3x3 convs, no conv biases, batch norm fixed) through ``layer3`` (1024 @ /16), the
  1-cell context crop (a 192 window -> 12x12 -> 10x10), ``trunk_conv`` 1x1 1024->128 + ReLU,
  ``trunk_fc`` 12800 -> 512 (linear, shared by both heads). Mask branch: ``mask_fc`` 512 -> 56*56,
  bilinear upsampling to 112 (``gSz``). Score branch: dropout, ``score_fc1`` 1024 + ReLU
  (Torch's ``Threshold(0, 1e-6)``), dropout, ``score`` 1.

SharpMask (``SharpMask.lua``): the DeepMask trunk and score branch, then a top-down path. ``refine0``
turns the 512-d trunk vector into a ``km`` x 10 x 10 map; four refinement modules, each: the skip
feature (ResNet: ``layer3`` (1024, cropped), ``layer2`` (512, crop 2), ``layer1`` (256, crop 4),
``conv1`` (64, crop 8)) reduced by three 3x3 convs (``nhu1 -> nhu2 -> ks/2^i -> ks/2^(i+1)``:
1024->64->32->16, 512->64->16->8, 256->64->8->4, 64->32->4->2), the top-down map by two 3x3 convs
(``km/2^i -> km/2^i -> km/2^(i+1)``), summed, ReLU, nearest x2 upsampling; a final 3x3 conv to
one channel at the full 160x160 patch. ``km = ks = 32`` as released.

Deviations: Torch's symmetric padding in the trunk is Keras zero padding; Torch's fixed BN is a
Keras ``BatchNormalization(trainable=False)`` whose gamma/beta Keras counts as weights (the
authors' printout does not: +30,592 for ResNet-50 up to layer3).

Example::

    model = kseg.DeepMask(trunk="resnet50")               # 192x192 window, 112x112 masks
    out = model(patches)                                  # {"masks": (B,112,112), "scores": (B,1)}
    sharp = kseg.SharpMask(deepmask=model)                # trunk + score copied and frozen
"""

import re

import keras
from keras import layers

from kseg.layers.normalization import BatchNormalization, ImageNormalization
from kseg.models._common import (LOGITS_DTYPE, check_num_classes, check_width_multiplier, finish, image_input,
                                 legacy_width)
from kseg.models.registry import ModelCard, register
from kseg.utils import transfer_weights

_FIXED_DOC = "the mask and score heads are fully connected layers over the trunk's map of the window"

__all__ = ["DeepMask", "DeepMaskResNet50", "SharpMask", "trunk_settings", "deepmask_loss", "sharpmask_loss", "soft_margin",
           "VGGA_DEEPMASK", "RESNET50_STAGES", "SHARPMASK_SKIPS"]

#: VGG-A convs kept by DeepMask (the 5th pooling and the classifier removed).
VGGA_DEEPMASK = (("conv1_1", 64), "pool1", ("conv2_1", 128), "pool2", ("conv3_1", 256), ("conv3_2", 256),
                 "pool3", ("conv4_1", 512), ("conv4_2", 512), "pool4", ("conv5_1", 512), ("conv5_2", 512))
#: ResNet-50 stages kept by DeepMask: (name, blocks, bottleneck width, output width, stride).
RESNET50_STAGES = (("layer1", 3, 64, 256, 1), ("layer2", 4, 128, 512, 2), ("layer3", 6, 256, 1024, 2))
#: SharpMask.lua horizontal nets: (skip layer, nhu1 = its channels, nhu2, crop at the 16-px context).
SHARPMASK_SKIPS = {
    "resnet50": (("layer3", 1024, 64), ("layer2", 512, 64), ("layer1", 256, 64), ("conv1_relu", 64, 32)),
    "vgg": (("conv5_2", 512, 64), ("conv4_2", 512, 64), ("conv3_2", 256, 64), ("conv2_1", 128, 32)),
}


def _w(c, m):
    return max(1, int(round(c * m)))


def _defaults(trunk, input_size, context, output_size):
    if trunk not in ("vgg", "resnet50"):
        raise ValueError(f"trunk must be 'vgg' or 'resnet50', got {trunk!r}")
    if trunk == "vgg":
        d = (224, 0, 224)
    else:
        d = (160, 16, 112)
    input_size = d[0] if input_size is None else int(input_size)
    context = d[1] if context is None else int(context)
    output_size = d[2] if output_size is None else int(output_size)
    if input_size % 16 or input_size < 16:
        raise ValueError(f"input_size must be a positive multiple of 16 (the trunk's stride), got {input_size}")
    if context % 16 or context < 0:
        raise ValueError(f"context must be a non-negative multiple of 16, got {context}")
    return input_size, context, output_size


def _vgg_trunk(x, m, skips):
    for item in VGGA_DEEPMASK:
        if isinstance(item, str):
            x = layers.MaxPooling2D(2, 2, name=item)(x)
        else:
            name, c = item
            x = layers.Conv2D(_w(c, m), 3, padding="same", activation="relu", name=name)(x)
            skips[name] = x
    return x


def _conv_bn(x, filters, k, stride, name, relu=True, freeze_bn=True):
    if k > 1:
        x = layers.ZeroPadding2D(k // 2, name=f"{name}_pad")(x)
    x = layers.Conv2D(filters, k, strides=stride, use_bias=False, name=name)(x)
    # the authors fix batch norm (utils.BNtoFixed): frozen affine, inference statistics
    x = BatchNormalization(epsilon=1e-5, trainable=not freeze_bn, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _resnet_trunk(x, m, depths, skips, freeze_bn=True):
    x = _conv_bn(x, _w(64, m), 7, 2, "conv1", freeze_bn=freeze_bn)
    skips["conv1_relu"] = x
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)  # after ReLU, zero padding == -inf padding
    x = layers.MaxPooling2D(3, 2, name="pool1")(x)
    cin = _w(64, m)
    for (stage, blocks, mid, out, stride), n in zip(RESNET50_STAGES, depths):
        mid, out = _w(mid, m), _w(out, m)
        for i in range(n):
            s = stride if i == 0 else 1
            pre = f"{stage}_{i}"
            y = _conv_bn(x, mid, 1, 1, f"{pre}_conv1", freeze_bn=freeze_bn)
            y = _conv_bn(y, mid, 3, s, f"{pre}_conv2", freeze_bn=freeze_bn)
            y = _conv_bn(y, out, 1, 1, f"{pre}_conv3", relu=False, freeze_bn=freeze_bn)
            if i == 0 and (s != 1 or cin != out):
                x = _conv_bn(x, out, 1, s, f"{pre}_downsample", relu=False, freeze_bn=freeze_bn)
            x = layers.ReLU(name=f"{pre}_relu")(layers.Add(name=f"{pre}_add")([x, y]))
            cin = out
        skips[stage] = x
    return x


_FIXED = "its mask and score heads are fully connected layers over the trunk's map of the window"


def _build(trunk, input_size, context, mask_size, output_size, feature_dim, score_hidden, width_multiplier,
           depths, dropout, refine, km, ks, name, freeze_bn=True, card="deepmask", num_classes=1, input_shape=None,
           input_tensor=None, pretrained=False):
    check_num_classes(num_classes, card, minimum=1)
    if num_classes != 1:
        raise ValueError(f"{card}: proposals are class-agnostic (one mask and one objectness score): num_classes "
                         f"must be 1, got {num_classes}")
    m = check_width_multiplier(width_multiplier, card)
    input_size, context, output_size = _defaults(trunk, input_size, context, output_size)
    window = input_size + 2 * context
    f_size, crop = input_size // 16, context // 16
    sizes = (f"{window}x{window} (input_size {input_size} + 2 x context {context}); "
             "kseg.proposals(model, image) runs it over whole images")
    channels = 3 if input_shape is None else input_shape[-1]
    inputs = image_input(card, (window, window, channels) if input_shape is None else input_shape, input_tensor,
                         pretrained=pretrained, static_reason=_FIXED, sizes=sizes)
    if tuple(inputs.shape[1:3]) != (window, window):
        raise ValueError(f"{card} takes {window}x{window} windows ({_FIXED}); got input_shape="
                         f"{tuple(inputs.shape[1:])}: pass input_size/context for another window, or run "
                         "kseg.proposals(model, image) over whole images")
    x = ImageNormalization("torch", name="preprocess")(inputs)
    skips = {}
    if trunk == "vgg":
        feat = _vgg_trunk(x, m, skips)
    else:
        depths = tuple(depths or (3, 4, 6))
        if len(depths) != 3 or min(depths) < 1:
            raise ValueError(f"depths must be 3 positive block counts (layer1..layer3), got {depths}")
        feat = _resnet_trunk(x, m, depths, skips, freeze_bn)
    if crop:
        feat = layers.Cropping2D(crop, name="context_crop")(feat)
        skips[SHARPMASK_SKIPS[trunk][0][0]] = feat
    outputs = {}
    if trunk == "vgg":
        h = layers.Conv2D(feature_dim, 1, activation="relu", name="mask_conv")(feat)
        vec = layers.Dense(feature_dim, name="mask_lowrank")(layers.Flatten(name="mask_flatten")(h))
        s = layers.MaxPooling2D(2, 2, name="score_pool")(feat)
        s = layers.Flatten(name="score_flatten")(s)
        for k, units in enumerate(score_hidden, start=1):
            s = layers.Dense(units, activation="relu", name=f"score_fc{k}")(s)
            s = layers.Dropout(dropout, name=f"score_drop{k}")(s)
    else:
        h = layers.Conv2D(_w(128, m), 1, activation="relu", name="trunk_conv")(feat)
        vec = layers.Dense(feature_dim, name="trunk_fc")(layers.Flatten(name="trunk_flatten")(h))
        s = vec
        for k, units in enumerate(score_hidden, start=1):
            s = layers.Dropout(dropout, name=f"score_drop{k}")(s)
            s = layers.Dense(units, activation="relu", name=f"score_fc{k}")(s)
        s = layers.Dropout(dropout, name=f"score_drop{len(score_hidden) + 1}")(s)
    outputs["scores"] = layers.Dense(1, name="score", dtype=LOGITS_DTYPE)(s)
    if not refine:
        mk = layers.Dense(mask_size * mask_size, name="mask_fc")(vec)
        mk = layers.Reshape((mask_size, mask_size, 1), name="mask_reshape")(mk)
        if output_size != mask_size:
            mk = layers.Resizing(output_size, output_size, interpolation="bilinear", name="mask_upsample")(mk)
        outputs["masks"] = layers.Reshape((output_size, output_size), name="masks", dtype=LOGITS_DTYPE)(mk)
    else:
        if km < 16 or km % 16 or ks < 16 or ks % 16:
            raise ValueError(f"km and ks must be multiples of 16 (SharpMask.lua asserts it), got km={km}, ks={ks}")
        t = layers.Dense(f_size * f_size * km, name="refine0")(vec)
        t = layers.Reshape((f_size, f_size, km), name="refine0_reshape")(t)
        for i, (skip, _, nhu2) in enumerate(SHARPMASK_SKIPS[trunk]):
            nk, ns = km // 2 ** i, ks // 2 ** i
            f = skips[skip]
            c = crop * 2 ** i if i else 0  # the context border at this resolution
            if c:
                f = layers.Cropping2D(c, name=f"refine{i + 1}_crop")(f)
            f = layers.Conv2D(_w(nhu2, m), 3, padding="same", activation="relu", name=f"refine{i + 1}_h1")(f)
            f = layers.Conv2D(ns, 3, padding="same", activation="relu", name=f"refine{i + 1}_h2")(f)
            f = layers.Conv2D(ns // 2, 3, padding="same", name=f"refine{i + 1}_h3")(f)
            t = layers.Conv2D(nk, 3, padding="same", activation="relu", name=f"refine{i + 1}_v1")(t)
            t = layers.Conv2D(nk // 2, 3, padding="same", name=f"refine{i + 1}_v2")(t)
            t = layers.ReLU(name=f"refine{i + 1}_relu")(layers.Add(name=f"refine{i + 1}_add")([f, t]))
            t = layers.UpSampling2D(2, interpolation="nearest", name=f"refine{i + 1}_up")(t)
        t = layers.Conv2D(1, 3, padding="same", name="refine_out")(t)
        if t.shape[1] != output_size:
            raise ValueError(f"SharpMask predicts at the patch size {t.shape[1]}; output_size must equal "
                             f"input_size, got {output_size}")
        outputs["masks"] = layers.Reshape((output_size, output_size), name="masks", dtype=LOGITS_DTYPE)(t)
    model = keras.Model(inputs, outputs, name=name)
    model.deepmask_config = {
        "trunk": trunk, "input_size": input_size, "context": context, "mask_size": mask_size,
        "output_size": output_size, "refine": bool(refine),
    }
    return model


@register(ModelCard(
    name="deepmask",
    paper="Learning to Segment Object Candidates",
    authors="Pinheiro, Collobert & Dollar",
    year=2015,
    url="https://arxiv.org/abs/1506.06204",
    reference_code="facebookresearch/deepmask@445aad3 : DeepMask.lua (ResNet-50 trunk; the paper's VGG-A here)",
    num_params=75_844_545,
    default_num_classes=1,
    output_stride=16,
    task="proposals",
    input_sizes="the square window it is built for (input_size + 2 x context): " + _FIXED_DOC + "; "
                "kseg.proposals(model, image) runs it over whole images",
    tflite_builtins=False,
    notes="Input: 224x224 patch in [0, 255]; outputs {'masks': (B,224,224) logits, 'scores': (B,1) logits}. "
          "kseg.proposals(model, image) runs it fully convolutionally over a scale pyramid.",
))
@legacy_width()
def DeepMask(num_classes=1, input_shape=None, weights=None, encoder_weights=None, width_multiplier=1.0,
             input_tensor=None, name="deepmask", trunk="vgg", input_size=None, context=None, mask_size=56,
             output_size=None, feature_dim=512, score_hidden=None, depths=None, dropout=0.5, freeze_bn=True):
    """DeepMask (Pinheiro et al., NIPS 2015) on a VGG-A (paper) or ResNet-50 (released code) trunk.

    Args:
        num_classes: 1 (class-agnostic proposals: one mask, one objectness score).
        input_shape: ``None`` (the window, ``input_size + 2 context`` square, 3 channels) or that
            window's ``(side, side, channels)``: the heads are fully connected, so the size is
            fixed; :func:`kseg.proposals` runs the model over whole images.
        weights: ``None``, a preset of the card (``deepmask_resnet50``: ``"coco"``) or a path
            (``.weights.h5``, ``.keras``, the authors' ``.t7``).
        encoder_weights: must be ``None`` (no packaged ImageNet trunk for VGG-A / fb.resnet.torch).
        width_multiplier: shrinks the trunk (tests).
        input_tensor: optional Keras tensor (the window).
        name: model name.
        trunk: ``"vgg"`` (paper, Sec. 3.1) or ``"resnet50"`` (``DeepMask.lua``).
        input_size: the patch side (``iSz``): 224 (vgg) / 160 (resnet50). Multiple of 16.
        context: pixels of context each side (0 / 16); the trunk's map is cropped by ``context/16``.
        mask_size: side of the predicted mask (``oSz``, 56).
        output_size: side the mask is bilinearly upsampled to (``gSz``): 224 / 112.
        feature_dim: the low-rank / trunk vector (512).
        score_hidden: hidden units of the score branch: ``(512, 1024)`` (vgg) / ``(1024,)`` (resnet50).
        depths: ResNet blocks of layer1..3 (shrink for tests).
        dropout: the score branch's dropout (0.5).
        freeze_bn: ResNet batch norm fixed (the authors' ``BNtoFixed``, right for a pretrained
            trunk); ``False`` trains it (from-scratch runs, where fixed unit statistics stall).

    Returns a ``keras.Model``: window image -> ``{"masks": (B, out, out), "scores": (B, 1)}`` logits.
    """
    if score_hidden is None:
        score_hidden = (512, 1024) if trunk == "vgg" else (1024,)
    card = "deepmask_resnet50" if trunk == "resnet50" else "deepmask"
    model = _build(trunk, input_size, context, mask_size, output_size, feature_dim, tuple(score_hidden),
                   width_multiplier, depths, dropout, False, 32, 32, name, freeze_bn, card, num_classes, input_shape,
                   input_tensor, weights is not None)
    return finish(model, card, weights, encoder_weights)


@register(ModelCard(
    name="deepmask_resnet50",
    paper="Learning to Segment Object Candidates (released ResNet-50 version)",
    authors="Pinheiro, Collobert & Dollar",
    year=2015,
    url="https://arxiv.org/abs/1506.06204",
    reference_code="facebookresearch/deepmask@445aad3 : DeepMask.lua, train.lua (iSz 160, oSz 56, gSz 112)",
    num_params=17_363_713,
    default_num_classes=1,
    output_stride=16,
    task="proposals",
    input_sizes="the square window it is built for (input_size + 2 x context): " + _FIXED_DOC + "; "
                "kseg.proposals(model, image) runs it over whole images",
    tflite_builtins=False,
    notes="Input: 192x192 window (160 patch + 16 context) in [0, 255]. Authors' printout: trunk 15,198,016, "
          "mask 1,608,768, score 526,337 (+30,592 fixed-BN gamma/beta counted by Keras).",
))
@legacy_width()
def DeepMaskResNet50(num_classes=1, input_shape=None, weights=None, encoder_weights=None, width_multiplier=1.0,
                     input_tensor=None, name="deepmask_resnet50", **kwargs):
    """:func:`DeepMask` with ``trunk="resnet50"`` (the authors' released configuration); the options
    are :func:`DeepMask`'s."""
    return DeepMask(num_classes=num_classes, input_shape=input_shape, weights=weights,
                    encoder_weights=encoder_weights, width_multiplier=width_multiplier, input_tensor=input_tensor,
                    name=name, trunk="resnet50", **kwargs)


@register(ModelCard(
    name="sharpmask",
    paper="Learning to Refine Object Segments",
    authors="Pinheiro, Lin, Collobert & Dollar",
    year=2016,
    url="https://arxiv.org/abs/1603.08695",
    reference_code="facebookresearch/deepmask@445aad3 : SharpMask.lua (km = ks = 32, iSz = gSz = 160)",
    num_params=18_505_480,
    default_num_classes=1,
    output_stride=1,
    task="proposals",
    input_sizes="the square window it is built for (input_size + 2 x context): " + _FIXED_DOC + "; "
                "kseg.proposals(model, image) runs it over whole images",
    tflite_builtins=False,
    notes="Input: 192x192 window; outputs {'masks': (B,160,160) logits, 'scores': (B,1)}. Train in two "
          "stages: DeepMask, then SharpMask(deepmask=...) with trunk and score branch frozen.",
))
@legacy_width()
def SharpMask(num_classes=1, input_shape=None, weights=None, encoder_weights=None, width_multiplier=1.0,
              input_tensor=None, name="sharpmask", trunk="resnet50", deepmask=None, freeze=True, input_size=None,
              context=None, km=32, ks=32, feature_dim=512, score_hidden=None, depths=None, dropout=0.5,
              freeze_bn=True):
    """SharpMask (Pinheiro et al., ECCV 2016): DeepMask's trunk + score branch + refinement modules.

    Args:
        num_classes, input_shape, width_multiplier, input_tensor, name: as :func:`DeepMask`.
        weights: ``None``, a preset of the card (``"coco"``) or a path (``.weights.h5``,
            ``.keras``, the authors' ``.t7``), loaded after `deepmask`.
        encoder_weights: must be ``None``.
        trunk: ``"resnet50"`` (the paper and released code) or ``"vgg"`` (skips conv5_2, conv4_2,
            conv3_2, conv2_1).
        deepmask: a trained :func:`DeepMask` of the same trunk and sizes: its trunk and score
            weights are copied in (stage two of the training).
        freeze: freeze everything copied from DeepMask (the released code trains only the
            refinement in stage two).
        km, ks: widths of the top-down and skip paths (32, 32 as released; multiples of 16).
        Others: as :func:`DeepMask`. With `deepmask`, the trunk settings left at their defaults
            (``trunk``, ``input_size``, ``context``, ``width_multiplier``, ``depths``, ``feature_dim``,
            ``score_hidden``) are read from it (also from a ``.keras``-loaded model), so
            ``SharpMask(deepmask=DeepMaskResNet50(width_multiplier=0.25))`` builds the matching trunk.

    Returns a ``keras.Model``: window -> ``{"masks": (B, input_size, input_size), "scores": (B, 1)}``.
    """
    if deepmask is not None:
        cfg = trunk_settings(deepmask)
        if trunk != "resnet50" and cfg["trunk"] != trunk:
            raise ValueError(f"deepmask has trunk {cfg['trunk']!r}, SharpMask was asked for {trunk!r}")
        trunk = cfg["trunk"]
        if input_size is None:
            input_size, context = cfg["input_size"], cfg["context"]
        width_multiplier = cfg["width_multiplier"] if float(width_multiplier) == 1.0 else width_multiplier
        depths = cfg["depths"] if depths is None else depths
        feature_dim = cfg["feature_dim"] if feature_dim == 512 else feature_dim
        score_hidden = cfg["score_hidden"] if score_hidden is None else score_hidden
    if score_hidden is None:
        score_hidden = (512, 1024) if trunk == "vgg" else (1024,)
    input_size, context, _ = _defaults(trunk, input_size, context, None)
    model = _build(trunk, input_size, context, 56, input_size, feature_dim, tuple(score_hidden), width_multiplier,
                   depths, dropout, True, km, ks, name, freeze_bn, "sharpmask", num_classes, input_shape,
                   input_tensor, weights is not None)
    if deepmask is not None:
        copied = transfer_weights(deepmask, model)
        if freeze:
            for layer in model.layers:
                if layer.name in copied:
                    layer.trainable = False
    return finish(model, "sharpmask", weights, encoder_weights)


def trunk_settings(model):
    """The trunk settings of a DeepMask/SharpMask model, read from its layers (works after loading).

    Returns ``{"trunk", "input_size", "context", "width_multiplier", "depths", "feature_dim",
    "score_hidden"}`` (``depths`` is ``None`` for the VGG trunk).
    """
    names = [layer.name for layer in model.layers]
    if "score" not in names:
        raise ValueError(f"model {model.name!r} is not a DeepMask/SharpMask model (no 'score' layer)")
    resnet = "trunk_conv" in names
    window = int(model.inputs[0].shape[1])
    crop = model.get_layer("context_crop").cropping[0][0] if "context_crop" in names else 0
    first = model.get_layer("conv1" if resnet else VGGA_DEEPMASK[0][0])
    width = first.filters / 64.0
    depths = None
    if resnet:
        depths = tuple(len({n.split("_")[1] for n in names if n.startswith(f"{stage}_") and n.endswith("_add")})
                       for stage in ("layer1", "layer2", "layer3"))
    fc = model.get_layer("trunk_fc" if resnet else "mask_lowrank")
    hidden = tuple(model.get_layer(n).units for n in sorted(n for n in names if re.fullmatch(r"score_fc\d+", n)))
    return {"trunk": "resnet50" if resnet else "vgg", "input_size": window - 32 * crop, "context": 16 * crop,
            "width_multiplier": width, "depths": depths, "feature_dim": fc.units, "score_hidden": hidden}


def soft_margin(labels, logits):
    """Torch's ``SoftMarginCriterion`` per element: ``log(1 + exp(-y f))`` for ``y`` in {-1, +1}."""
    return keras.ops.softplus(-labels * logits)


def deepmask_loss(targets, outputs, score_weight=1.0 / 32):
    """The paper's joint loss (Eq. 1), summed over the batch as in the paper.

    ``sum_k [ mask_weight_k * mean_ij log(1 + exp(-m_ij f_ij)) + score_weight * log(1 + exp(-y_k s_k)) ]``;
    ``mask_weight`` is 1 only for positives with a mask label (the mask loss is on positives
    only); ``score_weight`` is the paper's lambda = 1/32. The released trainer matches this scale:
    Torch's averaged ``SoftMarginCriterion`` with the mask gradient multiplied by the batch size
    (32), i.e. mask losses summed and score losses averaged. Returns ``(total, mean mask loss of
    the masked samples, mean score loss)``.
    """
    ops = keras.ops
    mask = ops.mean(soft_margin(targets["masks"], outputs["masks"]), axis=(1, 2))
    w = ops.reshape(targets["mask_weight"], (-1,)) * ops.cast(ops.reshape(targets["scores"], (-1,)) > 0, "float32")
    score = ops.reshape(soft_margin(targets["scores"], outputs["scores"]), (-1,))
    total = ops.sum(w * mask + score_weight * score)
    return total, ops.sum(w * mask) / ops.maximum(ops.sum(w), 1.0), ops.mean(score)


def sharpmask_loss(targets, outputs):
    """SharpMask's stage-two loss: the mask soft margin on positives (only the mask head trains)."""
    total, mask, score = deepmask_loss(targets, outputs, score_weight=0.0)
    return total, mask, score
