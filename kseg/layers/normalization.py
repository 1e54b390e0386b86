"""Normalisation layers of the classic nets that Keras does not ship."""

import keras
from keras import ops

__all__ = ["BatchNormalization", "LocalResponseNormalization", "ImageNormalization", "L2Normalization"]


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

    Every kseg model takes float RGB in [0, 255] and starts with this layer (named
    ``preprocess``), so data pipelines, export signatures and the CLI never need to know a
    model's preprocessing.

    Either a ``mode`` or an explicit transform (``mean`` / ``std`` / ``channel_order`` /
    ``scale``; ``mode="custom"``), which computes
    ``(reorder(x) * scale - mean) / std`` per channel: ``reorder`` gives the channels in
    ``channel_order`` (``"bgr"`` flips RGB to BGR, as the Caffe nets were trained), and
    ``mean`` / ``std`` are in that order. The authors' released weights each come with such a
    transform (:class:`kseg.models.presets.Preset`: ``channel_order``, ``mean``, ``std``,
    ``input_scale``); :func:`kseg.models.weights.set_preprocessing` sets it on a model. The
    transform is configuration (no weights): it is saved in ``get_config`` and reloads with
    the model.

    Args:
        mode: ``"caffe"`` (RGB->BGR, subtract the Keras ImageNet BGR mean (103.939, 116.779,
            123.68)), ``"torch"`` (scale to [0, 1], ImageNet mean/std), ``"unit"`` (scale to
            [0, 1]), ``"none"`` or ``"custom"`` (the explicit transform; implied when any of
            the following is given).
        mean: three values subtracted, in ``channel_order`` (default 0).
        std: three divisors, in ``channel_order`` (default 1).
        channel_order: ``"rgb"`` or ``"bgr"``: the order the network takes (default ``"rgb"``).
        scale: factor on the [0, 255] pixels before the mean (default 1; 1/255 for Torch nets).

    Example:
        >>> import numpy as np
        >>> layer = ImageNormalization(mean=(104.0, 117.0, 123.0), channel_order="bgr")
        >>> np.asarray(layer(np.array([[[[10.0, 20.0, 30.0]]]], "float32"))).tolist()
        [[[[-74.0, -97.0, -113.0]]]]
    """

    MODES = ("caffe", "torch", "unit", "none", "custom")
    ORDERS = ("rgb", "bgr")

    def __init__(self, mode=None, mean=None, std=None, channel_order=None, scale=None, **kwargs):
        super().__init__(**kwargs)
        explicit = any(v is not None for v in (mean, std, channel_order, scale))
        if mode is None:
            mode = "custom" if explicit else "caffe"
        if mode not in self.MODES:
            raise ValueError(f"{self.name}: mode must be one of {self.MODES}, got {mode!r}")
        if explicit and mode != "custom":
            raise ValueError(f"{self.name}: mean/std/channel_order/scale define a 'custom' transform; "
                             f"they cannot be combined with mode={mode!r}")
        self.mode = mode
        self.mean = self.std = self.channel_order = self.scale = None
        if mode == "custom":
            self.mean = self._triple(mean, 0.0, "mean")
            self.std = self._triple(std, 1.0, "std")
            if any(s == 0 for s in self.std):
                raise ValueError(f"{self.name}: std must be non-zero, got {self.std}")
            order = str(channel_order or "rgb").lower()
            if order not in self.ORDERS:
                raise ValueError(f"{self.name}: channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
            self.channel_order = order
            self.scale = 1.0 if scale is None else float(scale)

    def _triple(self, values, default, what):
        if values is None:
            return (default,) * 3
        values = tuple(float(v) for v in values)
        if len(values) != 3:
            raise ValueError(f"{self.name}: {what} must have 3 values (one per channel), got {values}")
        return values

    def call(self, x):
        x = ops.cast(x, self.compute_dtype)
        channels = x.shape[-1]
        if self.mode in ("caffe", "torch", "custom") and channels != 3:
            return self._other_channels(x, channels)
        if self.mode == "custom":
            return self._custom(x)
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

    def _custom(self, x):
        if self.channel_order == "bgr":
            x = ops.flip(x, axis=-1)
        if self.scale != 1.0:
            x = x * self.scale
        x = x - ops.convert_to_tensor(self.mean, dtype=x.dtype)
        if self.std != (1.0, 1.0, 1.0):
            x = x / ops.convert_to_tensor(self.std, dtype=x.dtype)
        return x

    def _other_channels(self, x, channels):
        """Inputs that are not RGB (models trained from scratch): 1 channel is grey, normalised
        with the mean of the RGB statistics; with more than 3 the first three are RGB (as for
        3) and each extra channel (depth, alpha) is normalised like grey."""
        if self.mode == "custom":
            mean = sum(self.mean) / 3.0 / self.scale
            std = sum(self.std) / 3.0 / self.scale
            if channels < 3:
                return (x - mean) / std
            return ops.concatenate([self._custom(x[..., :3]), (x[..., 3:] - mean) / std], axis=-1)
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

    def transform(self):
        """The transform this layer computes on RGB input, whatever its mode, as the dict of
        ``channel_order``, ``mean``, ``std``, ``scale`` that ``mode="custom"`` takes."""
        if self.mode == "custom":
            return {"channel_order": self.channel_order, "mean": self.mean, "std": self.std, "scale": self.scale}
        if self.mode == "caffe":
            return {"channel_order": "bgr", "mean": (103.939, 116.779, 123.68), "std": (1.0, 1.0, 1.0), "scale": 1.0}
        if self.mode == "torch":
            return {"channel_order": "rgb", "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
                    "scale": 1.0 / 255.0}
        return {"channel_order": "rgb", "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0),
                "scale": 1.0 / 255.0 if self.mode == "unit" else 1.0}

    def get_config(self):
        config = {**super().get_config(), "mode": self.mode}
        if self.mode == "custom":
            config.update(mean=list(self.mean), std=list(self.std), channel_order=self.channel_order,
                          scale=self.scale)
        return config


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


@keras.saving.register_keras_serializable(package="kseg")
class BatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` whose training step runs TensorFlow's fused kernel.

    Ioffe & Szegedy, "Batch Normalization", ICML 2015 -- the BN of SegNet, DeconvNet and
    DeepMask's heads. Same weights, arguments, outputs and moving statistics as the Keras
    layer (a subclass: ``isinstance(layer, keras.layers.BatchNormalization)`` holds). Keras
    computes a training step's normalisation from ``moments`` and ``batch_normalization``: some
    ten elementwise passes forward and as many backward; on the TensorFlow backend outside XLA
    this layer calls ``FusedBatchNormV3`` instead (one pass each way, oneDNN's kernel on CPU),
    which halves the time BN takes in a SegNet training step (benchmarks/batch_norm.py). The
    kernel's batch variance is Bessel-corrected; the moving variance is updated with the biased
    one, as Keras does. Inference, XLA (which fuses Keras' form itself), the JAX backend, masks,
    renorm and synchronised BN take the Keras path unchanged.
    """

    def _fused_applies(self, inputs, training, mask):
        if not (training and self.trainable) or mask is not None or self.renorm or self.synchronized:
            return False
        if len(inputs.shape) != 4 or list(self._reduction_axes) != [0, 1, 2] or inputs.shape[-1] is None:
            return False
        if keras.backend.backend() != "tensorflow":
            return False
        from kseg.layers.pooling import _in_xla_context

        return not _in_xla_context()

    def call(self, inputs, training=None, mask=None):
        if not self._fused_applies(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        # bfloat16 goes in as it is: the kernel keeps its statistics in float32 (as Keras does under mixed
        # precision) and saves two casts of the map each way; other dtypes in float32, as Keras
        x = inputs if inputs.dtype == tf.bfloat16 else tf.cast(inputs, "float32")
        channels = x.shape[-1]
        gamma = tf.cast(self.gamma, "float32") if self.scale else tf.ones([channels])
        beta = tf.cast(self.beta, "float32") if self.center else tf.zeros([channels])
        empty = tf.constant([], tf.float32)  # the raw op: tf.nn's wrapper raises epsilon to cuDNN's 1.001e-5
        y, mean, variance = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=gamma, offset=beta, mean=empty, variance=empty, epsilon=self.epsilon, is_training=True
        )[:3]
        n = tf.cast(tf.size(x, out_type=tf.int64) // channels, tf.float32)
        variance = tf.where(n > 1.0, variance * (n - 1.0) / tf.maximum(n, 1.0), 0.0)  # biased, as Keras
        momentum = self.momentum
        self.moving_mean.assign(self.moving_mean * momentum + tf.cast(mean, self.moving_mean.dtype) * (1.0 - momentum))
        self.moving_variance.assign(
            self.moving_variance * momentum + tf.cast(variance, self.moving_variance.dtype) * (1.0 - momentum)
        )
        return tf.cast(y, self.compute_dtype)
