"""ResNet-101 (He et al., CVPR 2016) as DeepLab-v2 uses it: MSRA names, atrous res4/res5, frozen BN.

Faithful to the authors' deploy definition (DrSleep/tensorflow-deeplab-resnet@066023c :
``misc/deploy.prototxt``, the DeepLab-v2 VOC model):

- ``conv1`` 7x7/2 pad 3 (64) -> ``bn_conv1`` -> ReLU -> ``pool1`` max 3x3/2 pad 1 (Caffe ceil mode);
- bottleneck blocks ``res2a``..``res2c`` (64/256), ``res3a``, ``res3b1``..``res3b3`` (128/512),
  ``res4a``, ``res4b1``..``res4b22`` (256/1024), ``res5a``..``res5c`` (512/2048); the ``a`` block of
  every stage has a projection shortcut ``branch1``;
- MSRA style: the stride of ``res3a`` is on its 1x1 convs (``branch1`` and ``branch2a``);
- res4 and res5 keep stride 1 and dilate their 3x3 convs by 2 and 4 (output stride 8);
- **no conv has a bias**; each conv is followed by Caffe's ``BatchNorm`` (``use_global_stats``)
  + ``Scale`` pair, here one frozen ``keras.layers.BatchNormalization`` named after the BatchNorm
  layer (``bn2a_branch2a``; its gamma/beta are the Scale layer ``scale2a_branch2a``), epsilon 1e-5.

``weights="imagenet"`` maps ``keras.applications.ResNet101`` onto these names. Its convs have a
bias; a bias ``b`` before a BN in inference mode is absorbed exactly by the BN's moving mean:
``gamma (x + b - mean) / sqrt(var + eps) + beta`` is the same BN of ``x`` with ``mean - b``
(:func:`fold_conv_bias_into_bn`).
"""

import keras
import numpy as np
from keras import layers

from kseg.backbones.deeplab_vgg import caffe_max_pool_3x3_s2

__all__ = [
    "RESNET101_STAGES",
    "msra_block_names",
    "resnet101_trunk",
    "resnet101_layer_names",
    "fold_conv_bias_into_bn",
    "load_resnet101_imagenet",
]

#: (blocks, bottleneck width, output width, stride, dilation) of res2..res5 in DeepLab-v2.
RESNET101_STAGES = ((3, 64, 256, 1, 1), (4, 128, 512, 2, 1), (23, 256, 1024, 1, 2), (3, 512, 2048, 1, 4))
_BN_EPSILON = 1e-5  # Caffe's BatchNorm default


def msra_block_names(stage, blocks):
    """MSRA block suffixes: res2/res5 ``a, b, c``; res3/res4 ``a, b1, b2, ...`` (as the released models)."""
    if stage in (2, 5) and blocks <= 26:
        return [chr(ord("a") + i) for i in range(blocks)]
    return ["a"] + [f"b{i}" for i in range(1, blocks)]


def _width(channels, width_multiplier):
    return max(1, int(round(channels * width_multiplier)))


def _conv_bn(x, filters, kernel_size, conv_name, bn_name, strides=1, dilation=1, relu=True):
    pad = dilation * (kernel_size - 1) // 2
    if pad:
        x = layers.ZeroPadding2D(pad, name=f"{conv_name}_pad")(x)
    x = layers.Conv2D(filters, kernel_size, strides=strides, dilation_rate=dilation, use_bias=False,
                      padding="valid", name=conv_name)(x)
    x = layers.BatchNormalization(epsilon=_BN_EPSILON, trainable=False, name=bn_name)(x)
    if relu:
        x = layers.ReLU(name=f"{conv_name}_relu")(x)
    return x


def resnet101_trunk(x, width_multiplier=1.0, depths=None):
    """Build DeepLab-v2's atrous ResNet-101 on preprocessed images `x`.

    Args:
        x: Keras tensor, images preprocessed as the weights expect (``ImageNormalization("caffe")``).
        width_multiplier: scales every width (1.0 = ResNet-101; small for fast tests).
        depths: blocks per stage res2..res5 (default ``(3, 4, 23, 3)``; smaller for tests).

    Returns:
        Dict of Keras tensors: ``conv1``, ``pool1`` and ``res2``..``res5`` (each stage's last
        block output after ReLU, i.e. ``res2c``, ``res3b3``, ``res4b22``, ``res5c`` at defaults),
        also under their MSRA names.
    """
    if width_multiplier <= 0:
        raise ValueError(f"width_multiplier must be > 0, got {width_multiplier}")
    depths = tuple(s[0] for s in RESNET101_STAGES) if depths is None else tuple(int(d) for d in depths)
    if len(depths) != 4 or min(depths) < 1:
        raise ValueError(f"depths must be 4 positive block counts (res2..res5), got {depths}")
    feats = {}
    x = _conv_bn(x, _width(64, width_multiplier), 7, "conv1", "bn_conv1", strides=2)
    feats["conv1"] = x
    x = caffe_max_pool_3x3_s2(x, "pool1")
    feats["pool1"] = x
    for stage, ((_, mid, out, stride, dilation), blocks) in enumerate(zip(RESNET101_STAGES, depths), start=2):
        mid, out = _width(mid, width_multiplier), _width(out, width_multiplier)
        for i, block in enumerate(msra_block_names(stage, blocks)):
            pre = f"res{stage}{block}"
            bn = f"bn{stage}{block}"
            s = stride if i == 0 else 1
            if i == 0:
                shortcut = _conv_bn(x, out, 1, f"{pre}_branch1", f"{bn}_branch1", strides=s, relu=False)
            else:
                shortcut = x
            y = _conv_bn(x, mid, 1, f"{pre}_branch2a", f"{bn}_branch2a", strides=s)
            y = _conv_bn(y, mid, 3, f"{pre}_branch2b", f"{bn}_branch2b", dilation=dilation)
            y = _conv_bn(y, out, 1, f"{pre}_branch2c", f"{bn}_branch2c", relu=False)
            x = layers.Add(name=pre)([shortcut, y])
            x = layers.ReLU(name=f"{pre}_relu")(x)
            feats[pre] = x
        feats[f"res{stage}"] = x
    return feats


def resnet101_layer_names(depths=None):
    """``{kseg/MSRA name: keras.applications.ResNet101 name}`` for every conv and BN."""
    depths = tuple(s[0] for s in RESNET101_STAGES) if depths is None else tuple(depths)
    names = {"conv1": "conv1_conv", "bn_conv1": "conv1_bn"}
    for stage, blocks in enumerate(depths, start=2):
        for i, block in enumerate(msra_block_names(stage, blocks), start=1):
            for ours, theirs in (("branch1", "0"), ("branch2a", "1"), ("branch2b", "2"), ("branch2c", "3")):
                if ours == "branch1" and i > 1:
                    continue
                names[f"res{stage}{block}_{ours}"] = f"conv{stage}_block{i}_{theirs}_conv"
                names[f"bn{stage}{block}_{ours}"] = f"conv{stage}_block{i}_{theirs}_bn"
    return names


def fold_conv_bias_into_bn(bias, gamma, beta, moving_mean, moving_variance):
    """Absorb a conv bias into the following inference-mode BN: returns ``(gamma, beta, mean - bias, var)``.

    ``BN(W x + b) = gamma (W x + b - mean) / sqrt(var + eps) + beta = BN'(W x)`` with ``mean' = mean - b``.
    """
    return [np.asarray(gamma), np.asarray(beta), np.asarray(moving_mean) - np.asarray(bias),
            np.asarray(moving_variance)]


def load_resnet101_imagenet(model, weights="imagenet"):
    """Load ``keras.applications.ResNet101`` weights into a model built on :func:`resnet101_trunk`.

    Args:
        model: a model containing the MSRA-named layers (full size: ``width_multiplier=1``,
            default depths).
        weights: ``"imagenet"`` (downloaded by Keras) or the path of a weights file saved from a
            ``keras.applications.ResNet101`` (``include_top`` either way).

    Returns:
        The names of the conv layers that were loaded (104 for ResNet-101: 100 + 4 projections).
    """
    ref = None
    errors = []
    for top in (False, True):
        try:
            ref = keras.applications.ResNet101(weights=weights, include_top=top)
            break
        except (ValueError, OSError, KeyError) as err:
            errors.append(str(err))
    if ref is None:
        raise ValueError(f"could not read ResNet101 weights from {weights!r}: {'; '.join(errors)}")
    ours = {layer.name: layer for layer in model.layers}
    loaded = []
    for name, theirs in resnet101_layer_names().items():
        if not name.startswith(("conv1", "res")):
            continue
        if name not in ours:
            raise ValueError(f"model {model.name!r} has no layer {name!r} (built with reduced depths?)")
        bn_name = "bn_conv1" if name == "conv1" else "bn" + name[3:]
        kernel, bias = (np.asarray(w) for w in ref.get_layer(theirs).get_weights())
        bn_ref = ref.get_layer(resnet101_layer_names()[bn_name])
        conv, bn = ours[name], ours[bn_name]
        if kernel.shape != tuple(conv.kernel.shape):
            raise ValueError(f"layer {name}: ResNet101 kernel {kernel.shape}, model expects {tuple(conv.kernel.shape)}")
        conv.set_weights([kernel])
        bn.set_weights(fold_conv_bias_into_bn(bias, *bn_ref.get_weights()))
        loaded.append(name)
    return loaded
