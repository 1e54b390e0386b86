"""What every kseg builder shares: the one signature (README, "Builder signature").

Every registered builder reads::

    Name(num_classes=<paper's>, input_shape=(None, None, 3), weights=None, encoder_weights=None,
         width_multiplier=1.0, input_tensor=None, name="<registry name>", **model options)

and uses these helpers for the checks (channels-last data format, class count, width multiplier,
input shape and channels), the float32 logits of Keras' mixed-precision convention and the
``weights=`` resolution (:func:`kseg.models.weights.load_weights`).
"""

import functools
import numbers
import warnings

import keras

__all__ = [
    "ANY_SIZE",
    "LOGITS_DTYPE",
    "check_data_format",
    "check_num_classes",
    "check_width_multiplier",
    "scaled",
    "image_input",
    "finish",
    "legacy_width",
    "RGBChannels",
    "rgb_image",
]

#: The default ``input_shape`` wherever the architecture takes any size.
ANY_SIZE = (None, None, 3)

#: dtype of every model's last layer: Keras' mixed-precision convention (logits come out float32).
LOGITS_DTYPE = "float32"


def check_data_format(model_name):
    """kseg models are channels-last (NHWC); a global ``channels_first`` gets a plain error."""
    fmt = keras.config.image_data_format()
    if fmt != "channels_last":
        raise ValueError(
            f"{model_name}: kseg models are channels_last (batch, height, width, channels), but "
            f"keras.config.image_data_format() is {fmt!r}: call "
            "keras.config.set_image_data_format('channels_last') before building (and feed NHWC images)"
        )


def check_num_classes(num_classes, model_name, minimum=2):
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < minimum:
        raise ValueError(f"{model_name}: num_classes must be >= {minimum}, got {num_classes!r} (an integer)")
    return int(num_classes)


def check_width_multiplier(width_multiplier, model_name):
    """``width_multiplier`` is one float > 0 everywhere (channels = ``max(1, round(c * m))``)."""
    if isinstance(width_multiplier, bool) or not isinstance(width_multiplier, numbers.Real) \
            or not float(width_multiplier) > 0:
        raise ValueError(f"{model_name}: width_multiplier must be > 0, got {width_multiplier!r} (a float)")
    return float(width_multiplier)


def scaled(channels, width_multiplier):
    """Channels of a width-scaled layer: ``max(1, round(channels * width_multiplier))``."""
    return max(1, int(round(channels * float(width_multiplier))))


def image_input(model_name, input_shape, input_tensor, *, pretrained=False, min_side=None, static_reason=None,
                sizes=None, name="image"):
    """Check the input (shape, channels, data format) and return the model's input tensor.

    Args:
        model_name: for the messages.
        input_shape: ``(height, width, channels)``; ``None`` sides take any size; ``None``: ``(None, None, 3)``.
        input_tensor: optional Keras tensor to build on (its shape is checked instead).
        pretrained: weights are to be loaded: the input must be RGB (3 channels). Without
            them any number of channels >= 1 builds (1: grey, 4: RGB + depth / alpha).
        min_side: smallest side the architecture accepts (checked on static sides).
        static_reason: the model needs a static size (why, for the message); ``None``: any size.
        sizes: which sizes work, for the messages.
    """
    check_data_format(model_name)
    # None: the default, any size with 3 channels (where the model takes it)
    shape = tuple(input_tensor.shape[1:]) if input_tensor is not None else (
        ANY_SIZE if input_shape is None else tuple(input_shape))
    if shape is None or len(shape) != 3 or shape[-1] is None or int(shape[-1]) < 1 \
            or any(s is not None and int(s) < 1 for s in shape[:2]):
        raise ValueError(f"{model_name}: input_shape must be (height, width, channels) with None for any "
                         f"size, got {input_shape if input_tensor is None else tuple(input_tensor.shape)}")
    if pretrained and shape[-1] != 3:
        raise ValueError(f"{model_name}: pretrained weights expect RGB images (3 channels); input_shape has "
                         f"{shape[-1]} channels (build without weights / encoder_weights for other inputs)")
    hint = f"; sizes that work: {sizes}" if sizes else ""
    if static_reason is not None and (shape[0] is None or shape[1] is None):
        raise ValueError(f"{model_name} needs a static input size ({static_reason}){hint}; got input_shape={shape}")
    if min_side is not None:
        for side in shape[:2]:
            if side is not None and side < min_side:
                raise ValueError(f"{model_name} needs input sides >= {min_side}{hint}; got input_shape={shape}")
    if input_tensor is not None:
        return input_tensor
    return keras.Input(shape=shape, name=name)


def finish(model, card_name, weights=None, encoder_weights=None, encoder_loader=None):
    """Load `encoder_weights` (with `encoder_loader(model, encoder_weights)`) then `weights`; returns `model`."""
    from kseg.models import registry
    from kseg.models.weights import load_weights

    if encoder_weights is not None:
        if encoder_loader is None:
            raise ValueError(f"{card_name}: this model has no pretrained encoder; encoder_weights must be None, "
                             f"got {encoder_weights!r}")
        encoder_loader(model, encoder_weights)
    if weights is not None:
        load_weights(model, weights, card=registry.get(card_name))
    return model


def legacy_width(channels=None):
    """Accept the old ``width=`` option as a deprecated alias of ``width_multiplier``.

    ``channels``: the builder's old ``width`` was a channel count with this default (SegNet-Basic: 64),
    so ``width=w`` means ``width_multiplier = w / channels``.
    """

    def wrap(builder):
        @functools.wraps(builder)
        def wrapped(*args, **kwargs):
            if "width" in kwargs:
                width = kwargs.pop("width")
                if "width_multiplier" in kwargs:
                    raise TypeError(f"{builder.__name__}: pass width_multiplier only (width is its deprecated name)")
                warnings.warn(f"{builder.__name__}(width=...) is deprecated: use width_multiplier= (a float)",
                              DeprecationWarning, stacklevel=2)
                kwargs["width_multiplier"] = width / channels if channels else width
            return builder(*args, **kwargs)

        return wrapped

    return wrap


@keras.saving.register_keras_serializable(package="kseg")
class RGBChannels(keras.layers.Layer):
    """The three colour channels an image-guided layer (dense CRF, CRF-as-RNN) filters with:
    a grey image repeated three times, the first three channels of a 4-channel (RGB + depth /
    alpha) one."""

    def call(self, x):
        channels = x.shape[-1]
        if channels == 1:
            return keras.ops.repeat(x, 3, axis=-1)
        return x[..., :3]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (3,)


def rgb_image(inputs, name="crf_image"):
    """`inputs` itself when it has 3 channels, else :class:`RGBChannels` of it."""
    return inputs if inputs.shape[-1] == 3 else RGBChannels(name=name)(inputs)
