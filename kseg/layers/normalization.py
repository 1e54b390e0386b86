"""Normalisation layers of the classic nets that Keras does not ship."""

import keras
from keras import ops

__all__ = ["LocalResponseNormalization", "ImageNormalization", "L2Normalization"]


@keras.saving.register_keras_serializable(package="kseg")
class LocalResponseNormalization(keras.layers.Layer):
    """Caffe's cross-channel LRN: ``x / (k + alpha / n * sum_{n neighbours} x^2) ** beta``.

    Used on the input of SegNet-Basic (``norm`` in the authors' prototxt: local_size 5,
    alpha 1e-4, beta 0.75). Note Caffe divides alpha by ``local_size``, unlike
    ``tf.nn.local_response_normalization``. Exported to TFLite (``kseg.export.export_tflite``),
    the layer is written as the builtin ``LOCAL_RESPONSE_NORMALIZATION`` op (the same function,
    ``alpha / local_size``), which keeps full-integer files exact to rounding here.

    Example:
        >>> import numpy as np
        >>> LocalResponseNormalization()(np.ones((1, 2, 2, 3), "float32")).shape
        (1, 2, 2, 3)
    """

    def __init__(self, local_size=5, alpha=1e-4, beta=0.75, k=1.0, **kwargs):
        super().__init__(**kwargs)
        if local_size < 1 or local_size % 2 == 0:
            raise ValueError(f"local_size must be a positive odd number, got {local_size}")
        self.local_size, self.alpha, self.beta, self.k = int(local_size), float(alpha), float(beta), float(k)

    def call(self, x):
        half = self.local_size // 2
        sq = ops.pad(ops.square(x), [[0, 0]] * (len(x.shape) - 1) + [[half, half]])
        channels = x.shape[-1]
        total = sq[..., 0:channels]
        for i in range(1, self.local_size):
            total = total + sq[..., i:i + channels]
        return x / ops.power(self.k + (self.alpha / self.local_size) * total, self.beta)

    def get_config(self):
        return {**super().get_config(), "local_size": self.local_size, "alpha": self.alpha,
                "beta": self.beta, "k": self.k}


@keras.saving.register_keras_serializable(package="kseg")
class ImageNormalization(keras.layers.Layer):
    """Turns RGB images in [0, 255] into what a network's weights expect.

    Every kseg model takes float RGB in [0, 255] and starts with this layer, so data pipelines,
    export signatures and the CLI never need to know a model's preprocessing.

    Args:
        mode: ``"caffe"`` (RGB->BGR, subtract the ImageNet BGR mean: VGG16 / FCN / DeepLab /
            the ported Caffe weights), ``"torch"`` (scale to [0, 1], ImageNet mean/std),
            ``"unit"`` (scale to [0, 1]) or ``"none"``.
    """

    MODES = ("caffe", "torch", "unit", "none")

    def __init__(self, mode="caffe", **kwargs):
        super().__init__(**kwargs)
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode

    def call(self, x):
        x = ops.cast(x, self.compute_dtype)
        channels = x.shape[-1]
        if self.mode in ("caffe", "torch") and channels != 3:
            return self._other_channels(x, channels)
        if self.mode == "caffe":
            x = ops.flip(x, axis=-1)
            return x - ops.convert_to_tensor([103.939, 116.779, 123.68], dtype=x.dtype)
        if self.mode == "torch":
            mean = ops.convert_to_tensor([0.485, 0.456, 0.406], dtype=x.dtype)
            std = ops.convert_to_tensor([0.229, 0.224, 0.225], dtype=x.dtype)
            return (x / 255.0 - mean) / std
        if self.mode == "unit":
            return x / 255.0
        return x

    def _other_channels(self, x, channels):
        """Inputs that are not RGB (models trained from scratch): 1 channel is grey, normalised
        with the mean of the RGB statistics; with more than 3 the first three are RGB (as for
        3) and each extra channel (depth, alpha) is normalised like grey."""
        if self.mode == "caffe":
            grey_mean, grey_std, rgb = 114.799, 1.0, ops.flip(x[..., :3], axis=-1) if channels > 3 else None
            rgb_mean, rgb_std = [103.939, 116.779, 123.68], [1.0, 1.0, 1.0]
        else:
            grey_mean, grey_std = 0.449 * 255.0, 0.226 * 255.0
            rgb = x[..., :3] if channels > 3 else None
            rgb_mean = [0.485 * 255.0, 0.456 * 255.0, 0.406 * 255.0]
            rgb_std = [0.229 * 255.0, 0.224 * 255.0, 0.225 * 255.0]
        if rgb is None:
            return (x - grey_mean) / grey_std
        rgb = (rgb - ops.convert_to_tensor(rgb_mean, dtype=x.dtype)) / ops.convert_to_tensor(rgb_std, dtype=x.dtype)
        return ops.concatenate([rgb, (x[..., 3:] - grey_mean) / grey_std], axis=-1)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="kseg")
class L2Normalization(keras.layers.Layer):
    """ParseNet's L2 normalisation: ``y = gamma * x / ||x||_2`` at every position, per channel scale.

    Liu, Rabinovich & Berg, "ParseNet: Looking Wider to See Better", ICLR 2016 workshop
    (arXiv:1506.04579), Sec. 3.3, Eq. 1-2: features of different layers have very different
    norms, so before fusing them each position's feature vector is divided by its L2 norm across
    channels and multiplied by a learned per-channel scale ``gamma`` (Caffe's ``Normalize`` layer,
    ``across_spatial: false``, ``channel_shared: false``). The scale must start large enough for
    the classifier to learn: the paper initialises it to 10 for conv features (Sec. 3.3); SSD's
    ``conv4_3_norm`` uses 20.

    Args:
        scale_init: initial value of every ``gamma`` (10, as ParseNet).
        epsilon: added under the square root (Caffe's ``Normalize`` uses 1e-10).
        axis: the channel axis (-1, channels last).

    Example:
        >>> import numpy as np
        >>> y = L2Normalization(scale_init=1.0)(np.array([[[[3.0, 4.0]]]], "float32"))
        >>> np.round(np.asarray(y), 3).tolist()
        [[[[0.6, 0.8]]]]
    """

    def __init__(self, scale_init=10.0, epsilon=1e-10, axis=-1, **kwargs):
        super().__init__(**kwargs)
        if float(scale_init) <= 0:
            raise ValueError(f"scale_init must be > 0, got {scale_init}")
        if float(epsilon) < 0:
            raise ValueError(f"epsilon must be >= 0, got {epsilon}")
        self.scale_init, self.epsilon, self.axis = float(scale_init), float(epsilon), int(axis)

    def build(self, input_shape):
        channels = input_shape[self.axis]
        if channels is None:
            raise ValueError(f"{self.name}: the channel axis {self.axis} of {tuple(input_shape)} must be known")
        self.gamma = self.add_weight(
            name="gamma", shape=(channels,), initializer=keras.initializers.Constant(self.scale_init)
        )

    def call(self, x):
        norm = ops.sqrt(ops.sum(ops.square(x), axis=self.axis, keepdims=True) + self.epsilon)
        shape = [1] * len(x.shape)
        shape[self.axis] = -1
        return x / norm * ops.reshape(ops.cast(self.gamma, x.dtype), shape)

    def get_config(self):
        return {**super().get_config(), "scale_init": self.scale_init, "epsilon": self.epsilon, "axis": self.axis}
