"""Max pooling that remembers where the maxima were, and the unpooling that uses it.

SegNet (Badrinarayanan et al., PAMI 2017, Sec. 3) and DeconvNet (Noh et al., ICCV 2015, Sec. 3.2)
store the location of each pooling window's maximum in the encoder and put the decoder's values
back at exactly those locations ("max-unpooling").

The default ("mask") form stores a binary mask of the encoder's input shape with a 1 at the first
maximum of each window (row-major order inside the window, the order Caffe and
``tf.nn.max_pool_with_argmax`` break ties in). Unpooling is then a nearest-neighbour upsampling
multiplied by that mask. Output and gradient are identical to the index ("argmax") form, but the
mask form uses only strided slices, comparisons, ``where`` and reshapes, so it

* converts to builtin TFLite ops (``max_pool_with_argmax`` does not),
* compiles under XLA (``max_pool_with_argmax`` does not),
* runs on the JAX backend (it is written with ``keras.ops``).

On the TensorFlow backend outside XLA the layer computes the same mask with TensorFlow's fused
kernels instead (``tf.nn.max_pool2d``, and the mask as its gradient op ``MaxPoolGrad`` of ones):
identical outputs and gradients, fewer passes over the map (benchmarks/pool_unpool.py). Under
XLA (``jit_compile``), on JAX and in TFLite export the ``keras.ops`` form above runs.

Odd sizes follow Caffe's ceil rounding: a 45-pixel map pools to 23 and unpools back to 45,
because the decoder takes its output shape from the encoder's mask.
"""

import keras
from keras import ops

__all__ = [
    "MaxPoolingWithArgmax2D",
    "MaxUnpooling2D",
    "max_pool_with_argmax_indices",
    "max_unpool_from_indices",
]


def _check_rank4(shape, who):
    if len(shape) != 4:
        raise ValueError(f"{who} expects a 4D (batch, height, width, channels) input, got shape {tuple(shape)}")


def _dim(x, axis):
    """Static size of `axis` when known, else the dynamic one."""
    static = x.shape[axis]
    return static if static is not None else ops.shape(x)[axis]


def _in_xla_context():
    """True while TensorFlow traces a function for XLA (``tf.function(jit_compile=True)``, Keras
    ``jit_compile``), where ``MaxPoolWithArgmax`` has no kernel. Private TF API: on failure assume XLA."""
    try:
        from tensorflow.python.framework import ops as tf_ops
        from tensorflow.python.ops import control_flow_util

        return bool(control_flow_util.GraphOrParentsInXlaContext(tf_ops.get_default_graph()))
    except Exception:  # noqa: BLE001  (API moved: take the portable path)
        return True


def _tf_fused_pool_with_mask(inputs, k):
    """TF-only fast path of :class:`MaxPoolingWithArgmax2D`; None where it does not apply.

    The pooled map is ``MaxPool`` (oneDNN's kernel where TensorFlow has it) and the mask is that op's
    own gradient, ``MaxPoolGrad``, of ones: the gradient goes to one element of each window, the
    first maximum in row-major order (strict ``>`` while scanning, in oneDNN and Eigen alike), and the
    mask is 1 exactly there, so mask and gradient agree by construction. About a third of the time
    of ``max_pool_with_argmax`` + ``MaxPoolGradWithArgmax`` (whose kernel is Eigen's, one thread),
    pooling + unpooling forward + backward (benchmarks/README.md, "Pool + unpool").
    """
    if keras.backend.backend() != "tensorflow" or _in_xla_context():
        return None
    import tensorflow as tf
    from tensorflow.python.ops import gen_nn_ops

    if tf.as_dtype(inputs.dtype) not in (tf.float16, tf.bfloat16, tf.float32, tf.float64):
        return None
    window = [1, k, k, 1]
    pooled = tf.nn.max_pool2d(inputs, k, k, "SAME")
    mask = gen_nn_ops.max_pool_grad(inputs, pooled, tf.ones_like(pooled), window, window, "SAME")

    # MaxPool skips NaNs; the mask form pools a window with a NaN to NaN. A NaN anywhere makes the sum
    # NaN, so the exact per-window check runs only then (an inf - inf sum runs it too, harmlessly):
    # one read of the map instead of four passes on every step.
    def nan_windows():
        nan = tf.nn.max_pool2d(tf.cast(tf.math.is_nan(inputs), inputs.dtype), k, k, "SAME") > 0
        return tf.where(nan, tf.constant(float("nan"), pooled.dtype), pooled)

    pooled = tf.cond(tf.math.is_nan(tf.reduce_sum(inputs)), nan_windows, lambda: tf.identity(pooled))
    return pooled, tf.stop_gradient(mask)


def _interleave(parts, k, axis):
    """Inverse of taking `x[..., i::k, ...]` for i in range(k) along `axis` (1 or 2)."""
    stacked = ops.stack(parts, axis=axis + 1)  # (..., n, k, ...)
    shape = [-1] + [_dim(stacked, a) for a in range(1, len(stacked.shape))]
    n = shape.pop(axis)
    shape[axis] = n * k
    return ops.reshape(stacked, shape)


@keras.saving.register_keras_serializable(package="kseg")
class MaxPoolingWithArgmax2D(keras.layers.Layer):
    """Non-overlapping max pooling returning ``(pooled, mask)``.

    ``mask`` has the shape and dtype of the input, with 1 at the first maximum of each
    ``pool_size x pool_size`` window (row-major tie-break) and 0 elsewhere. Windows that run past
    the border (odd sizes) are completed with -inf, i.e. Caffe's ceil-mode pooling, which is
    Keras' ``padding="same"`` for stride 2.

    Args:
        pool_size: window size and stride (SegNet and DeconvNet use 2).

    Example:
        >>> import numpy as np
        >>> pool, unpool = MaxPoolingWithArgmax2D(), MaxUnpooling2D()
        >>> x = np.random.rand(1, 45, 45, 8).astype("float32")
        >>> y, mask = pool(x)
        >>> tuple(y.shape), tuple(unpool([y, mask]).shape)
        ((1, 23, 23, 8), (1, 45, 45, 8))
    """

    def __init__(self, pool_size=2, **kwargs):
        super().__init__(**kwargs)
        if isinstance(pool_size, (tuple, list)):
            if len(set(pool_size)) != 1:
                raise ValueError(f"pool_size must be square, got {pool_size}")
            pool_size = pool_size[0]
        if int(pool_size) < 1:
            raise ValueError(f"pool_size must be >= 1, got {pool_size}")
        self.pool_size = int(pool_size)

    def call(self, inputs):
        _check_rank4(inputs.shape, self.name)
        k = self.pool_size
        fused = _tf_fused_pool_with_mask(inputs, k)
        if fused is not None:
            return fused
        return self.mask_form(inputs)

    def mask_form(self, inputs):
        """The portable ``keras.ops`` computation (XLA, JAX; what the fused TF path must equal)."""
        k = self.pool_size
        h, w = _dim(inputs, 1), _dim(inputs, 2)
        pad_h, pad_w = (-h) % k, (-w) % k
        x = ops.pad(inputs, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]], constant_values=float("-inf"))
        windows = [x[:, i::k, j::k, :] for i in range(k) for j in range(k)]
        best = windows[0]
        for win in windows[1:]:
            best = ops.maximum(best, win)
        # First maximum in row-major window order wins ties, as in Caffe / max_pool_with_argmax.
        taken = None
        firsts = []
        for win in windows:
            hit = ops.equal(win, best)
            if taken is not None:
                hit = ops.logical_and(hit, ops.logical_not(taken))
                taken = ops.logical_or(taken, hit)
            else:
                taken = hit
            firsts.append(hit)
        # Build the pooled value from the selected elements so the gradient reaches exactly the
        # first maximum (ops.max / ops.maximum would split it between ties on some backends).
        zero = ops.zeros_like(best)
        pooled = zero
        for win, hit in zip(windows, firsts):
            pooled = pooled + ops.where(hit, win, zero)
        # A NaN in a window matches no maximum: propagate it instead of pooling to 0.
        nan = None
        for win in windows:
            bad = ops.not_equal(win, win)  # isnan with builtin TFLite ops
            nan = bad if nan is None else ops.logical_or(nan, bad)
        pooled = ops.where(nan, ops.full_like(pooled, float("nan")), pooled)
        mask_parts = [ops.cast(hit, inputs.dtype) for hit in firsts]
        rows = [_interleave(mask_parts[i * k:(i + 1) * k], k, axis=2) for i in range(k)]
        mask = _interleave(rows, k, axis=1)
        mask = mask[:, :h, :w, :]
        return pooled, mask

    def compute_output_shape(self, input_shape):
        _check_rank4(input_shape, self.name)
        b, h, w, c = input_shape
        k = self.pool_size
        ceil = lambda n: None if n is None else -(-n // k)  # noqa: E731
        return (b, ceil(h), ceil(w), c), tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size}


@keras.saving.register_keras_serializable(package="kseg")
class MaxUnpooling2D(keras.layers.Layer):
    """Max-unpooling: ``[values, mask] -> values placed at the encoder's maxima``.

    ``values`` is the (decoder's) low-resolution map, ``mask`` the mask returned by the matching
    :class:`MaxPoolingWithArgmax2D`. The output has the mask's spatial shape (so odd sizes come
    back exactly) and zeros wherever the encoder's window did not have its maximum.

    Args:
        pool_size: must equal the pooling layer's.
    """

    def __init__(self, pool_size=2, **kwargs):
        super().__init__(**kwargs)
        if isinstance(pool_size, (tuple, list)):
            pool_size = pool_size[0]
        self.pool_size = int(pool_size)

    def call(self, inputs):
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
            raise ValueError(f"{self.name} expects [values, mask], got {type(inputs).__name__}")
        values, mask = inputs
        _check_rank4(values.shape, self.name)
        _check_rank4(mask.shape, self.name)
        k = self.pool_size
        up = ops.repeat(ops.repeat(values, k, axis=1), k, axis=2)
        if not (up.shape[1] is not None and up.shape[1:3] == mask.shape[1:3]):  # odd sizes: crop to the mask
            up = up[:, : _dim(mask, 1), : _dim(mask, 2), :]
        # where, not a product: an inf (or NaN) value must not turn the window's zeros into NaN.
        return ops.where(ops.cast(mask, "bool"), up, ops.zeros_like(up))

    def compute_output_shape(self, input_shape):
        values_shape, mask_shape = input_shape
        if values_shape[-1] is not None and mask_shape[-1] is not None and values_shape[-1] != mask_shape[-1]:
            raise ValueError(
                f"{self.name}: values have {values_shape[-1]} channels but the mask has {mask_shape[-1]}"
            )
        return (values_shape[0],) + tuple(mask_shape[1:])

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size}


def max_pool_with_argmax_indices(x, pool_size=2):
    """The index form (TensorFlow only): ``tf.nn.max_pool_with_argmax`` with ``padding="SAME"``.

    Returns ``(pooled, argmax)`` where ``argmax`` holds flat indices ``(y * W + x) * C + c`` per
    image. Kept as the reference for the mask form and for benchmarks; it neither converts to
    builtin TFLite ops nor compiles with XLA.
    """
    import tensorflow as tf

    return tf.nn.max_pool_with_argmax(
        x, ksize=pool_size, strides=pool_size, padding="SAME", include_batch_in_index=False
    )


def max_unpool_from_indices(values, argmax, output_shape):
    """Scatter `values` to the flat per-image `argmax` indices (TensorFlow only).

    Args:
        values: (B, h, w, C) decoder map.
        argmax: (B, h, w, C) indices from :func:`max_pool_with_argmax_indices`.
        output_shape: (B, H, W, C) of the encoder's input.
    """
    import tensorflow as tf

    output_shape = tf.cast(output_shape, tf.int64)
    b = output_shape[0]
    per_image = output_shape[1] * output_shape[2] * output_shape[3]
    offsets = tf.reshape(tf.range(b, dtype=tf.int64) * per_image, [-1, 1, 1, 1])
    flat_idx = tf.reshape(tf.cast(argmax, tf.int64) + offsets, [-1, 1])
    flat = tf.scatter_nd(flat_idx, tf.reshape(values, [-1]), [b * per_image])
    return tf.reshape(flat, output_shape)
