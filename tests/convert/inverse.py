"""Keras -> Caffe: the inverse of the converter, to write a kseg model's weights as the authors' caffemodel.

Used by the OpenCV agreement tests: a kseg model gets random weights (:func:`randomize`), they are
written in the authors' real layout (:func:`caffe_layers` + ``kseg.convert.caffe.write_caffemodel``),
OpenCV runs the authors' net on that file, and the converter loads it into a fresh kseg model.

Layouts (the inverses of ``kseg.convert.layout``):
  Conv2D HWIO -> Convolution OIHW; Conv2DTranspose (kh, kw, out, in) -> Deconvolution (in, out, kh, kw);
  bias-free 1x1 DepthwiseConv2D -> Scale (C,); BatchNormalization -> caffe-segnet ``BN`` (scale, shift,
  each 1xCx1x1, statistics folded in, as the released INFERENCE files) or stock ``BatchNorm`` (mean,
  var, factor 1) + ``Scale`` (gamma, beta).
"""

import keras
import numpy as np

from kseg.models.weights import weighted_layers


def randomize(model, seed=0):
    """Give every weight of `model` random values of a sensible scale (He-normal kernels)."""
    rng = np.random.default_rng(seed)
    for layer in weighted_layers(model):
        values = []
        for w in layer.weights:
            shape, name = tuple(w.shape), w.path.rsplit("/", 1)[-1]
            if isinstance(layer, keras.layers.BatchNormalization):
                if name in ("gamma", "moving_variance"):
                    v = rng.uniform(0.5, 1.5, shape)
                else:
                    v = rng.normal(0.0, 0.1, shape)
            elif name in ("kernel", "depthwise_kernel") and len(shape) == 4:
                if isinstance(layer, keras.layers.DepthwiseConv2D):
                    v = rng.uniform(0.5, 1.5, shape)
                elif isinstance(layer, keras.layers.Conv2DTranspose):
                    kh, kw, _, cin = shape
                    s = layer.strides
                    v = rng.normal(0.0, np.sqrt(2.0 * s[0] * s[1] / (kh * kw * cin)), shape)
                else:
                    kh, kw, cin, _ = shape
                    v = rng.normal(0.0, np.sqrt(2.0 / (kh * kw * cin)), shape)
            elif name == "bias":
                v = rng.normal(0.0, 0.1, shape)
            else:  # custom layers (L2Normalization scale, CRF matrices)
                v = rng.uniform(0.5, 1.5, shape)
            values.append(v.astype(np.float32))
        layer.set_weights(values)
    return model


def _chw(v):
    return np.asarray(v, np.float32).reshape(1, -1, 1, 1)


def caffe_layers(model, rename=None, bn="BN", bn_scale_name=None, skip=()):
    """``[(caffe name, type, blobs)]`` of `model`'s weights in the authors' layout.

    rename: {kseg layer name: caffe layer name}. bn: ``"BN"`` (caffe-segnet, folded) or
    ``"BatchNorm"`` (+ a ``Scale`` named ``bn_scale_name(kseg name)``).
    """
    rename = rename or {}
    out = []
    for layer in weighted_layers(model):
        if layer.name in skip:
            continue
        name = rename.get(layer.name, layer.name)
        w = [np.asarray(v, np.float32) for v in layer.get_weights()]
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = w
            if bn == "BN":
                s = gamma / np.sqrt(var + layer.epsilon)
                out.append((name, "BN", [_chw(s), _chw(beta - mean * s)]))
            else:
                caffe_var = var + layer.epsilon - 1e-5  # Caffe's BatchNorm eps
                out.append((name, "BatchNorm", [mean, caffe_var, np.ones(1, np.float32)]))
                out.append((bn_scale_name(layer.name), "Scale", [gamma, beta]))
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            out.append((name, "Scale", [w[0].reshape(-1)]))
        elif isinstance(layer, keras.layers.Conv2DTranspose):
            out.append((name, "Deconvolution", [w[0].transpose(3, 2, 0, 1).copy()] + w[1:]))
        elif isinstance(layer, keras.layers.Conv2D):
            out.append((name, "Convolution", [w[0].transpose(3, 2, 0, 1).copy()] + w[1:]))
        else:
            out.append((name, type(layer).__name__, w))
    return out
