"""The decoder variants of SegNet's analysis (Badrinarayanan, Kendall & Cipolla, PAMI 2017, Sec. 3.1, Table 1).

Every variant shares SegNet-Basic's encoder (``Models/segnet_basic_train.prototxt`` of
alexgkendall/SegNet-Tutorial@bb68b64: LRN ``norm``, four 7x7 conv-BN-ReLU stages of 64 with 2x2
max pooling, layer names ``conv1`` .. ``conv4``, ``conv1_bn`` .., ``pool1`` .. ``pool4``), so an
encoder trained in one transfers to another by name. They differ only in how the decoder
recovers full resolution and in what it keeps from the encoder for that (the paper's "storage
multiplier"):

=========================================  =================================================
``bilinear_interpolation``                 1x1 to K classes, four fixed 2x bilinear upsamplings
``segnet_basic`` (:mod:`kseg.models.segnet`)  unpool with the pooling indices, 7x7 conv 64 + BN
``segnet_basic_single_channel_decoder``    as SegNet-Basic, single-channel (depthwise) 7x7 filters
``segnet_basic_encoder_addition``          as SegNet-Basic, plus the pooled encoder maps added
``fcn_basic``                              1x1 to K on each pooled map, 8x8 deconv (K->K) + add
``fcn_basic_no_addition``                  1x1 to K on pool4, four 8x8 deconvs, nothing added
``fcn_basic_no_dim_reduction``             8x8 deconvs at 64 channels + pooled maps, 1x1 to K
``fcn_basic_no_addition_no_dim_reduction`` 8x8 deconvs at 64 channels, 1x1 to K
=========================================  =================================================

The authors did not publish the variants' definitions (only SegNet-Basic's), so each builder
follows the paper's text; the choices the text leaves open are stated in each docstring. All
convolutions keep the tutorial prototxt's biases (as :func:`kseg.SegNetBasic`; the paper says
"no biases", which changes ~0.04% of the parameters). Measured parameter counts next to
Table 1's are in ``tests/models/test_segnet_decoders.py``.

:func:`decoder_storage_bytes` measures what a model keeps from its encoder for its decoder
during inference (Table 1's storage multiplier).
"""

import math

import keras
import numpy as np
from keras import layers

from kseg.initializers import bilinear_kernel
from kseg.layers.crop import CropToReference
from kseg.layers.interp import Interp
from kseg.layers.normalization import BatchNormalization, ImageNormalization, LocalResponseNormalization
from kseg.layers.pooling import MaxPoolingWithArgmax2D, MaxUnpooling2D
from kseg.models.registry import ModelCard, register
from kseg.models._common import LOGITS_DTYPE, check_num_classes, image_input
from kseg.models.segnet import _conv_bn_relu

__all__ = [
    "BilinearInterpolation",
    "CentredBilinear",
    "FCNBasic",
    "FCNBasicNoAddition",
    "FCNBasicNoAdditionNoDimReduction",
    "FCNBasicNoDimReduction",
    "SegNetBasicEncoderAddition",
    "SegNetBasicSingleChannelDecoder",
    "VARIANTS",
    "decoder_storage_bytes",
]

_PAPER = "SegNet: A Deep Convolutional Encoder-Decoder Architecture for Image Segmentation"
_URL = "https://arxiv.org/abs/1511.00561"
_CODE = ("paper Sec. 3.1 (variants unreleased); shared encoder from alexgkendall/SegNet-Tutorial@bb68b64 : "
         "Models/segnet_basic_train.prototxt")
_AUTHORS = "Badrinarayanan, Kendall & Cipolla"
_DECONV = 8  # "We set the kernel size to 8 x 8" (Sec. 3.1)


@keras.saving.register_keras_serializable(package="kseg")
class CentredBilinear(keras.initializers.Initializer):
    """Exact 2x (``factor``) bilinear interpolation weights centred in a larger transposed-conv kernel.

    FCN-Basic's decoders upsample by 2 with 8x8 kernels "initialised using bilinear
    interpolation weights" (SegNet paper, Sec. 3.1). FCN's bilinear filler for an 8x8 kernel is
    the 4x kernel, which at stride 2 would multiply the signal by 4 per stage; this initializer
    puts the 2x kernel (side ``2 * factor``) in the centre of the 8x8 one and zeros around it,
    so that, with a crop offset of ``(kernel - factor) / 2``, the initial deconvolution is
    bilinear interpolation. Channel ``i`` maps to channel ``i`` only (kernel ``(kh, kw, out, in)``).
    """

    def __init__(self, factor=2):
        self.factor = int(factor)

    def __call__(self, shape, dtype=None):
        if len(shape) != 4 or shape[0] != shape[1]:
            raise ValueError(f"CentredBilinear needs a square 4D (k, k, out, in) kernel shape, got {tuple(shape)}")
        k, _, out_ch, in_ch = (int(s) for s in shape)
        side = 2 * self.factor
        if in_ch != out_ch or k < side or (k - side) % 2:
            raise ValueError(
                f"CentredBilinear(factor={self.factor}) needs in == out channels and a kernel of side "
                f"{side} + 2n, got shape {tuple(shape)}"
            )
        lo = (k - side) // 2
        kernel = np.zeros((k, k, out_ch, in_ch), "float32")
        filt = bilinear_kernel(side)
        for c in range(out_ch):
            kernel[lo:lo + side, lo:lo + side, c, c] = filt
        return keras.ops.convert_to_tensor(kernel, dtype=dtype or "float32")

    def get_config(self):
        return {"factor": self.factor}


def _check_args(num_classes, input_shape):
    check_num_classes(num_classes, "SegNet decoder variant")


def _input(input_shape, input_tensor):
    return image_input("SegNet decoder variant", input_shape, input_tensor)


def _width(width_multiplier):
    if float(width_multiplier) <= 0:
        raise ValueError(f"width_multiplier must be > 0, got {width_multiplier}")
    return max(1, int(round(64 * float(width_multiplier))))


def _encoder(inputs, width, with_indices):
    """SegNet-Basic's encoder. Returns (pooled maps [pool1..pool4], masks or None)."""
    x = ImageNormalization("none", name="preprocess")(inputs)
    x = LocalResponseNormalization(5, 1e-4, 0.75, name="norm")(x)
    pooled, masks = [], []
    for s in range(1, 5):
        x = _conv_bn_relu(x, f"conv{s}", width, 7)
        if with_indices:
            x, mask = MaxPoolingWithArgmax2D(2, name=f"pool{s}")(x)
            masks.append(mask)
        else:
            # Caffe's ceil-mode 2x2/2 pooling is "same" padding (odd sizes pad one at the end).
            x = layers.MaxPooling2D(2, padding="same", name=f"pool{s}")(x)
        pooled.append(x)
    return pooled, (masks if with_indices else None)


def _finish(inputs, outputs, name, weights, encoder_weights):
    if encoder_weights is not None:
        raise ValueError(
            f"{name}: encoder_weights must be None (there is no pretrained encoder for SegNet-Basic's: the "
            f"paper trains it from MSRA initialisation), got {encoder_weights!r}"
        )
    model = keras.Model(inputs, outputs, name=name)
    if weights is not None:
        path = str(weights)
        if not path.endswith(".weights.h5"):
            raise ValueError(f"{name}: weights must be None or the path of a .weights.h5 file, got {weights!r}")
        model.load_weights(path)
    return model


def _segnet_decoder(x, masks, width, pooled=None, single_channel=False):
    """SegNet-Basic's decoder: unpool -> 7x7 conv -> BN (no ReLU); optional encoder addition."""
    for s in range(4, 0, -1):
        x = MaxUnpooling2D(2, name=f"upsample{s}")([x, masks[s - 1]])
        name = f"conv_decode{s}"
        if single_channel:
            x = layers.DepthwiseConv2D(7, padding="same", depthwise_initializer="he_normal", name=name)(x)
        else:
            x = layers.Conv2D(width, 7, padding="same", kernel_initializer="he_normal", name=name)(x)
        x = BatchNormalization(beta_initializer=keras.initializers.Constant(0.001), name=f"{name}_bn")(x)
        if pooled is not None and s > 1:
            # Decoder s outputs encoder s's input resolution = pool(s-1)'s output.
            x = layers.Add(name=f"fuse_pool{s - 1}")([x, pooled[s - 2]])
    return x


def _deconv(x, reference, filters, s, dtype=None):
    """FCN-Basic's 2x upsampling: 8x8 stride-2 transposed conv (no bias), cropped to `reference`."""
    x = layers.Conv2DTranspose(filters, _DECONV, strides=2, use_bias=False, kernel_initializer=CentredBilinear(2),
                               name=f"upscore{s}")(x)
    return CropToReference((_DECONV - 2) // 2, name=f"upscore{s}_crop", dtype=dtype)([x, reference])


def _score(x, num_classes, name, last=False):
    # The last layer computes in float32 under a mixed-precision policy (Keras' convention for logits).
    return layers.Conv2D(num_classes, 1, kernel_initializer="he_normal", name=name,
                         dtype=LOGITS_DTYPE if last else None)(x)


def _fcn_decoder(inputs, pooled, num_classes, width, addition, dim_reduction):
    refs = [inputs] + pooled[:3]  # upscore s restores encoder s's input size
    if dim_reduction:
        x = _score(pooled[3], num_classes, "score_pool4")
        channels = num_classes
    else:
        x, channels = pooled[3], width
    for s in range(4, 0, -1):
        x = _deconv(x, refs[s - 1], channels, s, dtype=LOGITS_DTYPE if (s == 1 and dim_reduction) else None)
        if addition and s > 1:
            skip = _score(pooled[s - 2], num_classes, f"score_pool{s - 1}") if dim_reduction else pooled[s - 2]
            x = layers.Add(name=f"fuse_pool{s - 1}")([x, skip])
    if not dim_reduction:
        x = _score(x, num_classes, "conv_classifier", last=True)
    return x


_ARGS_DOC = """
    Args:
        num_classes: output classes (CamVid: 11).
        input_shape: ``(height, width, 3)``, any size (``None`` for variable).
        weights: ``None`` or the path of a ``.weights.h5`` file saved from this builder.
        encoder_weights: must be ``None`` (no pretrained encoder exists).
        width_multiplier: encoder width is ``round(64 * width_multiplier)``.
        input_tensor: optional Keras tensor to build on.
        name: model name.

    Returns:
        A ``keras.Model`` from float RGB in [0, 255] to logits ``(batch, H, W, num_classes)``.
"""


def _card(name, num_params, notes):
    return ModelCard(
        name=name, paper=_PAPER, authors=_AUTHORS, year=2017, url=_URL, reference_code=_CODE,
        num_params=num_params, default_num_classes=11, output_stride=1, notes=notes,
    )


@register(_card(
    "bilinear_interpolation", 613_003,
    "Table 1 'Bilinear-Interpolation': SegNet-Basic's encoder, 1x1 to the classes, four fixed 2x bilinear "
    "upsamplings (no learning in the decoder). Storage multiplier 0 (nothing kept from the encoder). "
    "Paper: 0.625M params."))
def BilinearInterpolation(num_classes=11, input_shape=(None, None, 3), weights=None, encoder_weights=None,
                          width_multiplier=1.0, input_tensor=None, name="bilinear_interpolation"):
    """Bilinear-Interpolation: upsampling with fixed bilinear weights, no learned decoder (SegNet paper, Sec. 3.1).

    The deepest encoder map (pool4, 64 channels) is reduced to ``num_classes`` by a 1x1 conv
    (``score_pool4``), then upsampled four times by 2 with bilinear interpolation (half-pixel
    centres, which is where a 2x2 pooling window's centre lies), each to the exact size of the
    encoder map it mirrors, so odd sizes come back. Operating on K channels (as FCN-Basic) is
    our reading of the text; it matches Table 1's inference time equal to FCN-Basic's.

    """
    _check_args(num_classes, input_shape)
    width = _width(width_multiplier)
    inputs = _input(input_shape, input_tensor)
    pooled, _ = _encoder(inputs, width, with_indices=False)
    x = _score(pooled[3], num_classes, "score_pool4")
    refs = [inputs] + pooled[:3]
    for s in range(4, 0, -1):
        x = Interp(align_corners=False, name=f"upsample{s}", dtype=LOGITS_DTYPE if s == 1 else None)([x, refs[s - 1]])
    return _finish(inputs, x, name, weights, encoder_weights)


BilinearInterpolation.__doc__ += _ARGS_DOC


@register(_card(
    "segnet_basic_single_channel_decoder", 626_315,
    "Table 1 'SegNet-Basic-SingleChannelDecoder': SegNet-Basic with single-channel (depthwise 7x7) decoder "
    "filters. Storage multiplier 1 (pooling indices only). Paper: 0.625M params."))
def SegNetBasicSingleChannelDecoder(num_classes=11, input_shape=(None, None, 3), weights=None, encoder_weights=None,
                                    width_multiplier=1.0, input_tensor=None,
                                    name="segnet_basic_single_channel_decoder"):
    """SegNet-Basic whose decoder filters are single channel (SegNet paper, Sec. 3.1).

    "A smaller variant is one where the decoder filters are single channel, i.e they only
    convolve their corresponding upsampled feature map": each ``conv_decode{s}`` is a 7x7
    depthwise convolution (+ BN, no ReLU) after unpooling with the encoder's pooling indices.
    Arguments and output as :func:`BilinearInterpolation`.
    """
    _check_args(num_classes, input_shape)
    width = _width(width_multiplier)
    inputs = _input(input_shape, input_tensor)
    pooled, masks = _encoder(inputs, width, with_indices=True)
    x = _segnet_decoder(pooled[3], masks, width, single_channel=True)
    x = _score(x, num_classes, "conv_classifier", last=True)
    return _finish(inputs, x, name, weights, encoder_weights)


@register(_card(
    "segnet_basic_encoder_addition", 1_416_587,
    "Table 1 'SegNet-Basic-EncoderAddition': SegNet-Basic plus the 64 pooled encoder maps (pool3, pool2, "
    "pool1) added to the outputs of the decoders of their resolution. Storage multiplier 64 (indices and "
    "full float maps). Paper: 1.425M params."))
def SegNetBasicEncoderAddition(num_classes=11, input_shape=(None, None, 3), weights=None, encoder_weights=None,
                               width_multiplier=1.0, input_tensor=None, name="segnet_basic_encoder_addition"):
    """SegNet-Basic with the encoder feature maps added to the decoder outputs (SegNet paper, Sec. 3.1).

    "Both the pooling indices for upsampling are used, followed by a convolution step to
    densify its sparse input. This is then added element-wise to the corresponding encoder
    feature maps to produce a decoder's output." The encoder maps are the pooled ones (as in
    FCN, Fig. 3), so decoder 4's output (pool3's size) gets pool3, decoder 3 pool2, decoder 2
    pool1 (``fuse_pool3`` .. ``fuse_pool1``); the full-resolution decoder 1 has no pooled map of
    its size and is SegNet-Basic's. This is Table 1's storage multiplier of 64: 64 float maps at
    the first pooled resolution. Same parameters as SegNet-Basic.
    Arguments and output as :func:`BilinearInterpolation`.
    """
    _check_args(num_classes, input_shape)
    width = _width(width_multiplier)
    inputs = _input(input_shape, input_tensor)
    pooled, masks = _encoder(inputs, width, with_indices=True)
    x = _segnet_decoder(pooled[3], masks, width, pooled=pooled)
    x = _score(x, num_classes, "conv_classifier", last=True)
    return _finish(inputs, x, name, weights, encoder_weights)


_FCN_DOC = """

    Decoder ``s`` (4 .. 1) upsamples by 2 with an 8x8 stride-2 transposed convolution
    (``upscore{s}``, no bias, initialised to bilinear interpolation, trainable) cropped to the
    size of encoder ``s``'s input (``upscore{s}_crop``, offset 3: kernel centre on the pooled
    pixel's centre), so odd sizes come back exactly. FCN-Basic has no BN in the decoder.
"""


def _fcn_builder(addition, dim_reduction):
    def build(num_classes, input_shape, weights, encoder_weights, width_multiplier, input_tensor, name):
        _check_args(num_classes, input_shape)
        width = _width(width_multiplier)
        inputs = _input(input_shape, input_tensor)
        pooled, _ = _encoder(inputs, width, with_indices=False)
        x = _fcn_decoder(inputs, pooled, num_classes, width, addition, dim_reduction)
        return _finish(inputs, x, name, weights, encoder_weights)

    return build


@register(_card(
    "fcn_basic", 646_124,
    "Table 1 'FCN-Basic': SegNet-Basic's encoder with FCN's decoder: each pooled map reduced to the classes "
    "by 1x1 convs (score_pool4..1), 8x8 deconvs K->K added to them. Storage multiplier 11 (K float maps). "
    "Paper: 0.65M params."))
def FCNBasic(num_classes=11, input_shape=(None, None, 3), weights=None, encoder_weights=None, width_multiplier=1.0,
             input_tensor=None, name="fcn_basic"):
    """FCN-Basic: FCN's decoding technique on SegNet-Basic's encoder (SegNet paper, Sec. 3.1, Fig. 3).

    Dimensionality reduction: every pooled encoder map is reduced to ``num_classes`` channels by
    a 1x1 conv (``score_pool{s}``). pool4's reduced map is the decoder's input; after each
    upsampling the reduced map of that resolution is added (``fuse_pool{s}``); the last
    upsampling gives the logits at input resolution."""
    return _fcn_builder(True, True)(num_classes, input_shape, weights, encoder_weights, width_multiplier,
                                    input_tensor, name)


@register(_card(
    "fcn_basic_no_addition", 643_979,
    "Table 1 'FCN-Basic-NoAddition': FCN-Basic without the encoder additions: 1x1 to the classes on pool4 "
    "then four learned 8x8 deconvs K->K. Storage multiplier 0. Paper: 0.65M params."))
def FCNBasicNoAddition(num_classes=11, input_shape=(None, None, 3), weights=None, encoder_weights=None,
                       width_multiplier=1.0, input_tensor=None, name="fcn_basic_no_addition"):
    """FCN-Basic-NoAddition: FCN-Basic that "discards the encoder feature map addition step and only
    learns the upsampling kernels" (SegNet paper, Sec. 3.1)."""
    return _fcn_builder(False, True)(num_classes, input_shape, weights, encoder_weights, width_multiplier,
                                     input_tensor, name)


@register(_card(
    "fcn_basic_no_dim_reduction", 1_661_579,
    "Table 1 'FCN-Basic-NoDimReduction': FCN-Basic without dimensionality reduction: 8x8 deconvs 64->64, the "
    "64-channel pooled maps added, a 1x1 classifier at the end. Storage multiplier 64. Paper: 1.625M params."))
def FCNBasicNoDimReduction(num_classes=11, input_shape=(None, None, 3), weights=None, encoder_weights=None,
                           width_multiplier=1.0, input_tensor=None, name="fcn_basic_no_dim_reduction"):
    """FCN-Basic-NoDimReduction (SegNet paper, Sec. 3.1): "the final encoder feature map is not
    compressed to K channels ... the number of channels at the end of each decoder is the same as
    the corresponding encoder (i.e 64)". pool4's 64 maps are upsampled by 64->64 deconvs, the
    64-channel pooled maps are added, and a 1x1 ``conv_classifier`` (as SegNet-Basic's) gives the
    logits at full resolution."""
    return _fcn_builder(True, False)(num_classes, input_shape, weights, encoder_weights, width_multiplier,
                                     input_tensor, name)


@register(_card(
    "fcn_basic_no_addition_no_dim_reduction", 1_661_579,
    "Table 1 'FCN-Basic-NoAddition-NoDimReduction': four learned 8x8 deconvs 64->64 from pool4, nothing "
    "added, 1x1 classifier. Storage multiplier 0. Paper: 1.625M params."))
def FCNBasicNoAdditionNoDimReduction(num_classes=11, input_shape=(None, None, 3), weights=None,
                                     encoder_weights=None, width_multiplier=1.0, input_tensor=None,
                                     name="fcn_basic_no_addition_no_dim_reduction"):
    """FCN-Basic-NoAddition-NoDimReduction (SegNet paper, Sec. 3.1 and 3.3): FCN-Basic-NoDimReduction
    without the additions, "slightly larger than SegNet-Basic" and so a fair comparison by size."""
    return _fcn_builder(False, False)(num_classes, input_shape, weights, encoder_weights, width_multiplier,
                                      input_tensor, name)


for _fn in (FCNBasic, FCNBasicNoAddition, FCNBasicNoDimReduction, FCNBasicNoAdditionNoDimReduction):
    _fn.__doc__ += _FCN_DOC + _ARGS_DOC


# Table 1's rows, in the paper's order (registry names).
VARIANTS = (
    "bilinear_interpolation",
    "segnet_basic",
    "segnet_basic_encoder_addition",
    "segnet_basic_single_channel_decoder",
    "fcn_basic",
    "fcn_basic_no_addition",
    "fcn_basic_no_dim_reduction",
    "fcn_basic_no_addition_no_dim_reduction",
)


def _producer(tensor):
    return tensor._keras_history.operation


def decoder_storage_bytes(model, input_hw):
    """What a decoder keeps from its encoder during inference, in bytes, at input size `input_hw`.

    SegNet (PAMI 2017, Sec. 3 and Table 1) compares decoders by the encoder information stored
    for them: max-pooling indices (SegNet; "2 bits for each 2x2 pooling window"), full float
    feature maps (FCN, SegNet-Basic-EncoderAddition) or K-channel dimensionality-reduced ones
    (FCN-Basic), or nothing (Bilinear-Interpolation, the NoAddition variants). Read off the
    model's graph: the masks consumed by ``MaxUnpooling2D`` layers are indices; tensors produced
    by a ``pool{s}`` or ``score_pool{s}`` layer and consumed by an ``Add`` are stored maps (the
    deepest map, the decoder's input, is not stored: it is consumed at once).

    Args:
        model: a model built by one of this module's builders or :func:`kseg.SegNetBasic`.
        input_hw: ``(height, width)`` of the input (the paper: 360 x 480).

    Returns:
        A dict with

        * ``indices_2bit``: 2 bits per pooling window, all unpooling layers (the paper's ideal);
        * ``indices_stored``: bytes of the masks as kseg keeps them (a mask of the pooling input's
          shape in its float dtype: 64x ``indices_2bit`` in float32);
        * ``feature_maps``: bytes of the stored encoder maps, in their dtype;
        * ``total``: ``indices_2bit + feature_maps``;
        * ``first_layer``: the same three for the highest-resolution stored tensors only (Table 1's
          basis: "based only on the size of the first layer encoder feature map");
        * ``storage_multiplier``: first-layer storage in units of first-layer indices at 2 bits
          per window (SegNet-Basic = 1, a float32 map of C channels = 16 C);
        * ``storage_multiplier_paper``: the same in the paper's unit (its 0.17 MB for SegNet-Basic's
          indices counts 2 bits per 2x2 window *of the pooled* 180x240x64 map, a quarter of the
          windows): SegNet-Basic 1, FCN-Basic 11, full 64-channel maps 64, as in Table 1.

    Example:
        >>> import kseg
        >>> from kseg.models.segnet_decoders import decoder_storage_bytes
        >>> decoder_storage_bytes(kseg.models.get("fcn_basic").build(), (360, 480))["storage_multiplier_paper"]
        11.0
    """
    h, w = (int(v) for v in input_hw)
    indices, maps = [], []  # masks read by unpooling layers; encoder maps read by additions
    for layer in model.layers:
        if not layer._inbound_nodes:
            continue
        inputs = layer._inbound_nodes[0].input_tensors
        if isinstance(layer, MaxUnpooling2D):
            indices.append(inputs[1])
        elif isinstance(layer, layers.Add):
            for t in inputs:
                base = _producer(t).name
                if base.startswith("score_pool") or (base.startswith("pool") and base[4:].isdigit()):
                    maps.append(t)
    # pool1's pooled map sets the unit: its windows' indices at 2 bits each (SegNet-Basic's first layer).
    pool1 = model.get_layer("pool1").output
    pool1 = pool1[0] if isinstance(pool1, (list, tuple)) else pool1
    tensors = [pool1] + indices + maps
    specs = keras.Model(model.inputs, tensors).compute_output_spec(keras.KerasTensor((1, h, w, 3)))
    pool1_spec, specs = specs[0], specs[1:]
    items = []
    for i, spec in enumerate(specs):
        _, th, tw, c = spec.shape
        size = np.dtype(spec.dtype).itemsize
        if i < len(indices):
            ph, pw = math.ceil(th / 2), math.ceil(tw / 2)  # pooled size = number of 2x2 windows
            items.append({"hw": (ph, pw), "indices_2bit": ph * pw * c * 2 // 8,
                          "indices_stored": th * tw * c * size, "feature_maps": 0})
        else:
            items.append({"hw": (th, tw), "indices_2bit": 0, "indices_stored": 0,
                          "feature_maps": th * tw * c * size})
    keys = ("indices_2bit", "indices_stored", "feature_maps")
    out = {k: sum(it[k] for it in items) for k in keys}
    out["total"] = out["indices_2bit"] + out["feature_maps"]
    top = max((it["hw"][0] * it["hw"][1] for it in items), default=0)
    out["first_layer"] = {k: sum(it[k] for it in items if it["hw"][0] * it["hw"][1] == top) for k in keys}
    unit = math.prod(pool1_spec.shape[1:]) * 2 / 8
    fmaps = out["first_layer"]["feature_maps"]
    if fmaps:
        out["storage_multiplier"] = fmaps / unit
        out["storage_multiplier_paper"] = fmaps / (unit / 4)
    else:  # indices only (1: the unit itself) or nothing (0)
        out["storage_multiplier"] = out["storage_multiplier_paper"] = float(out["first_layer"]["indices_2bit"] > 0)
    return out
