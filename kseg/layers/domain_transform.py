"""The domain transform as a gated recurrent filter (Chen et al., CVPR 2016; Gastal & Oliveira, SIGGRAPH 2011).

Chen, Barron, Papandreou, Murphy & Yuille, "Semantic Image Segmentation with Task-Specific Edge
Detection Using CNNs and a Discriminatively Trained Domain Transform", CVPR 2016 (arXiv:1511.03328),
Sec. 3: the recursive-filter form of Gastal & Oliveira's domain transform,

    y_i = (1 - w_i) x_i + w_i y_{i-1},    w_i = exp(-sqrt(2) / sigma_k * (1 + sigma_s / sigma_r * g_i)),

is run left->right, right->left, top->bottom, bottom->top (one "iteration"), K times, with
``sigma_k = sigma_s * sqrt(3) * 2^(K-k) / sqrt(4^K - 1)`` (k = 1..K; Gastal & Oliveira, Eq. 14).
``g`` is a (learned) reference edge map; the filter is differentiable w.r.t. both ``x`` and
``g``, which is what lets DT-EdgeNet train its edge branch for the segmentation task. The
weights and pass order follow the authors' Caffe layer (deeplab-public-ver2
``domain_transform_forward_only_layer.cpp``): the weight between pixels ``i-1`` and ``i`` is
stored at ``i`` and used by both directions.

The recurrence is linear in ``y``: the pairs ``(a_i, b_i) = (w_i, (1 - w_i) x_i)`` compose with
the associative operator ``(a1, b1) o (a2, b2) = (a1 a2, a2 b1 + b2)``, so every pass can also be a
parallel prefix scan. ``method="sequential"`` (default) runs the recurrence as one loop per pass;
on TensorFlow it is :func:`_tf_filter` (TF-only): the rows in a ``(W, B, C, H)`` layout, the columns
in ``(H, B, C, W)`` (two transposes per iteration), each loop with its adjoint loop as gradient, the
whole filter one XLA cluster (``jit_compile``) even when the caller is not compiled (outside XLA a
TensorFlow while loop costs ~50 us per step; each input shape compiles once, a few seconds), any
height and width; other backends run ``keras.ops.scan`` per pass. ``method="doubling"`` is a
Hillis-Steele scan written with ``keras.ops`` (shifted copies, static shapes, no control flow:
TFLite builtins, sizes known at run time); ``method="scan"`` is ``keras.ops.associative_scan``,
whose TensorFlow implementation interleaves levels through ``tf.cond`` (it loses the static rank,
which :func:`_pass` restores, and takes minutes to trace at 480 pixels). Under XLA every method
runs as ``"sequential"`` (same values): XLA compiles the doubling scan to code slower than
TensorFlow runs it uncompiled, and keras' associative_scan not at all.

Measured (``benchmarks/domain_transform.py``, 2 CPU cores, quiet, 2026-11-28; wall / CPU ms):
1x360x480x3, K = 3, forward 21.6 / 27.8 (sequential; doubling 245 / 446), forward+backward
79.8 / 143 (doubling 1557 / 3011); 1x360x480x21 forward 114 / 181. OpenCV's ``ximgproc.dtFilter``
(DTF_RF, 1 thread, same edge map) in the same run: 10.3 ms at 3 channels, 63.1 ms for 21 channels
in 6 calls: kseg is still 2.1x / 1.8x slower than the C++ per core. On a newer CPU (AVX-512, 2026-11-29,
paired rounds, with :func:`_tf_recurrence`): 0.89x OpenCV's time at 3 channels, 0.97x at 21 on 2 cores
(1.42x on one); benchmarks/README.md.
"""

import math

import keras
from keras import ops

from kseg.layers.pooling import _in_xla_context

__all__ = ["METHODS", "DomainTransform", "domain_transform", "domain_transform_sigmas", "domain_transform_weights",
           "takes_run_time_sizes"]

#: ``"scan"``: keras.ops.associative_scan (Blelloch-style, O(n) work); ``"doubling"``: Hillis-Steele
#: (O(n log n) work, log2 n dense steps, no control flow); ``"sequential"`` (default): one loop step per
#: pixel (TensorFlow: compiled with XLA, see the module docstring; other backends: keras.ops.scan).
METHODS = ("scan", "doubling", "sequential")

#: Lengths known only at run time (a model built for any input size): the doubling scan runs enough
#: steps for rows / columns up to this long (13 steps; a static length runs ceil(log2 n)).
MAX_DYNAMIC_LENGTH = 1 << 13
#: The passes of one iteration, in the authors' order: (axis, reverse).
_PASSES = ((2, False), (2, True), (1, False), (1, True))


def takes_run_time_sizes(method):
    """Whether `method` filters maps whose height and width are known only at run time, on this
    backend: the doubling scan everywhere, the sequential loops on TensorFlow (its while loops)."""
    return method == "doubling" or (method == "sequential" and keras.backend.backend() == "tensorflow")


def domain_transform_sigmas(sigma_s, num_iterations):
    """``sigma_k = sigma_s sqrt(3) 2^(K-k) / sqrt(4^K - 1)``, k = 1..K (Gastal & Oliveira 2011, Eq. 14).

    The variances add up to ``sigma_s^2``: K iterations of decreasing width equal one filter of
    spatial standard deviation ``sigma_s``.
    """
    k_total = int(num_iterations)
    return [sigma_s * math.sqrt(3.0) * 2.0 ** (k_total - k) / math.sqrt(4.0 ** k_total - 1.0)
            for k in range(1, k_total + 1)]


def domain_transform_weights(edges, sigma_s, sigma_r, sigma_k):
    """``w = exp(-sqrt(2) / sigma_k * (1 + sigma_s / sigma_r * g))`` (Chen et al. 2016, Eq. 3-4)."""
    return ops.exp((-math.sqrt(2.0) / sigma_k) * (1.0 + (sigma_s / sigma_r) * edges))


def _coefficients(w, axis, reverse):
    """``a_i``: weight of the previous output; 0 at the sequence start (y_0 = x_0)."""
    n = w.shape[axis] if w.shape[axis] is not None else ops.shape(w)[axis]
    first = ops.zeros_like(ops.take(w, ops.arange(0, 1), axis=axis))
    rest = ops.take(w, ops.arange(1, n), axis=axis)
    # forward: a_i = w_i (i >= 1); backward: a_i = w_{i+1} (the weight between i and i + 1).
    return ops.concatenate([rest, first] if reverse else [first, rest], axis=axis)


def _combine(earlier, later):
    a1, b1 = earlier
    a2, b2 = later
    return a1 * a2, a2 * b1 + b2


def _shift(t, offset, axis, fill):
    """``t`` moved ``offset`` steps forward along `axis`, the first `offset` entries set to `fill`."""
    if t.shape[axis] is None:  # length known at run time only (offset may exceed it)
        n = ops.shape(t)[axis]
        head = ops.repeat(ops.full_like(ops.take(t, ops.arange(0, 1), axis=axis), fill), offset, axis=axis)
        joined = ops.concatenate([head, t], axis=axis)
        index = [slice(None)] * len(t.shape)
        index[axis] = slice(0, n)
        return joined[tuple(index)]
    index = [slice(None)] * len(t.shape)
    index[axis] = slice(0, t.shape[axis] - offset)
    head_shape = list(t.shape)
    head_shape[axis] = offset
    head_shape[0] = ops.shape(t)[0] if head_shape[0] is None else head_shape[0]
    head = ops.full(head_shape, fill, dtype=t.dtype)
    return ops.concatenate([head, t[tuple(index)]], axis=axis)


def _doubling_scan(a, b, axis):
    """Hillis-Steele prefix scan of ``(a, b)``: ceil(log2 n) vectorised steps, static shapes throughout."""
    n, offset = a.shape[axis], 1
    if n is None:
        n = MAX_DYNAMIC_LENGTH
    while offset < n:
        a_prev, b_prev = _shift(a, offset, axis, 1.0), _shift(b, offset, axis, 0.0)
        a, b = _combine((a_prev, b_prev), (a, b))
        offset *= 2
    return b


def _tf_filter_axis0(a, x, reverse):
    """TF-only: ``y_i = x_i + a_i (y_{i-1} - x_i)`` along axis 0 (``reverse``: from the end), ``y = x`` at the start.

    ``a`` (n, B, 1, L) broadcasts over the channels of ``x`` (n, B, C, L) (the lane axis last: a
    broadcast there costs XLA nothing, one before the last several times the recurrence). ``a``
    at the start is not used. The gradient is the adjoint recurrence run the other way,
    ``gb_i = gy_i + a_{i+1} gb_{i+1}``; then ``gx = (1 - a) gb`` and ``ga = gb (y_{i-1} - x_i)``.
    """
    import tensorflow as tf

    shift = -1 if reverse else 1  # tf.roll by `shift` puts t_{i-1} (in the scan's direction) at i

    @tf.custom_gradient
    def run(a, x):
        y = _tf_recurrence(a, x, reverse, lambda u, c, prev: u + c * (prev - u))

        def grad(gy):
            n = tf.shape(a)[0]
            mask = tf.reshape(tf.tensor_scatter_nd_update(tf.ones([n], a.dtype), [[n - 1 if reverse else 0]],
                                                          tf.zeros([1], a.dtype)), (-1, 1, 1, 1))
            a0 = a * mask  # a_start = 0
            gb = _tf_recurrence(tf.roll(a0, -shift, 0), gy, not reverse, lambda u, c, prev: u + c * prev)
            ga = tf.reduce_sum(gb * (tf.roll(y, shift, 0) - x), axis=2, keepdims=True) * mask
            return ga, gb - a0 * gb

        return y, grad

    return run(a, x)


def _tf_recurrence(c, u, reverse, step):
    """TF-only: ``y = u`` at the start (index 0, or n - 1 if ``reverse``), then ``y_i = step(u_i, c_i, y_{i-1})``.

    One while loop that updates ``y`` in place (under XLA a dynamic-update-slice of the loop's own
    buffer, the previous row read back from it): no carry copied between steps and no stacked
    outputs, as ``tf.scan`` has (the figures: the module docstring).
    """
    import tensorflow as tf

    n = tf.shape(u)[0]

    def body(i, y):
        j = n - 1 - i if reverse else i
        y_j = step(tf.gather(u, j), tf.gather(c, j), tf.gather(y, j + 1 if reverse else j - 1))
        return i + 1, tf.tensor_scatter_nd_update(y, tf.reshape(j, (1, 1)), y_j[None])

    return tf.while_loop(lambda i, _: i < n, body, (tf.constant(1), u))[1]


_COMPILED = {}


def _tf_domain_transform(x, edges, sigmas, compile_loops=False):
    """TF-only :func:`_tf_filter` (below); ``compile_loops``: as one XLA cluster (``jit_compile``).

    Outside XLA, TensorFlow runs a while loop at ~50 us per step (1x360x480x3, K = 3: over 0.8 s);
    compiled, the whole filter takes ~30 ms. Each shape compiles once (a few seconds).
    """
    if not compile_loops:
        return _tf_filter(x, edges, sigmas)
    import tensorflow as tf

    if sigmas not in _COMPILED:
        _COMPILED[sigmas] = tf.function(lambda x, g: _tf_filter(x, g, sigmas), jit_compile=True, autograph=False,
                                        reduce_retracing=True)
    y = _COMPILED[sigmas](x, edges)
    # reduce_retracing relaxes the compiled function to unknown shapes once it has seen a few sizes;
    # the filter's output is always the shape of its input, which the caller's graph should keep
    y.set_shape(x.shape)
    return y


def _tf_filter(x, edges, sigmas):
    """TF-only: each pass a sequential loop over the leading axis of a ``(length, B, C, lanes)`` layout.

    Rows run in ``(W, B, C, H)``, columns in ``(H, B, C, W)``: two transposes per iteration, the
    weight of the reverse pass a roll of a one-channel map. Under XLA each loop compiles to a
    tight loop over contiguous lanes.
    """
    import tensorflow as tf

    g_rows = tf.transpose(edges, (2, 0, 3, 1))  # (W, B, 1, H)
    g_cols = tf.transpose(edges, (1, 0, 3, 2))  # (H, B, 1, W)
    y = tf.transpose(x, (2, 0, 3, 1))  # (W, B, C, H)
    for i, (sigma_s, sigma_r, sigma_k) in enumerate(sigmas):
        if i:
            y = tf.transpose(y, (3, 1, 2, 0))  # (H, B, C, W) -> (W, B, C, H)
        for g in (g_rows, g_cols):
            w = domain_transform_weights(g, sigma_s, sigma_r, sigma_k)  # w_i: between i - 1 and i
            y = _tf_filter_axis0(w, y, reverse=False)
            y = _tf_filter_axis0(tf.roll(w, -1, 0), y, reverse=True)  # backward: a_i = w_{i+1}
            if g is g_rows:
                y = tf.transpose(y, (3, 1, 2, 0))  # (W, B, C, H) -> (H, B, C, W)
    return tf.transpose(y, (1, 0, 3, 2))


def _pass(x, w, axis, reverse, method):
    shape = tuple(x.shape)
    a = _coefficients(w, axis, reverse)  # (batch, H, W, 1): one weight for all channels
    b = (1.0 - a) * x
    if reverse:
        a, b = ops.flip(a, axis=axis), ops.flip(b, axis=axis)
    if method == "doubling":
        y = _doubling_scan(a, b, axis)
    elif method == "scan":
        _, y = ops.associative_scan(_combine, (a, b), axis=axis)
        # keras' TF associative_scan interleaves through tf.cond, which loses the static rank
        y = ops.reshape(y, (-1,) + shape[1:])
    else:
        a_t, b_t = ops.moveaxis(a, axis, 0), ops.moveaxis(b, axis, 0)  # not TensorFlow: see _tf_filter

        def step(carry, ab):
            y_i = ab[0] * carry + ab[1]
            return y_i, y_i

        _, y = ops.scan(step, ops.zeros_like(b_t[0]), (a_t, b_t))
        y = ops.moveaxis(y, 0, axis)
    return ops.flip(y, axis=axis) if reverse else y


def domain_transform(x, edges, num_iterations=3, sigma_s=130.0, sigma_r=0.1, method="sequential"):
    """Filter ``x`` (batch, H, W, C) guided by ``edges`` (batch, H, W, 1): K iterations of 4 recursive passes.

    See :class:`DomainTransform`. ``method`` is one of :data:`METHODS`; on TensorFlow under XLA
    (``jit_compile``) every method runs as ``"sequential"``, the fastest there and the only one
    XLA compiles to faster code than TensorFlow runs uncompiled (the layer refuses XLA for the
    others: same values, the sequential loops).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method != "sequential" and keras.backend.backend() == "tensorflow":
        if _in_xla_context():
            # Under XLA the recurrence compiles to a tight loop (1x90x120x21, K=3: 15 ms vs 102 ms
            # without XLA), the doubling scan to code 17x slower than without XLA (1.26 s vs 75 ms)
            # and keras' associative_scan not at all (tf.cond shapes): every method runs the
            # sequential recurrence there (same values).
            method = "sequential"
    edges = ops.cast(edges, x.dtype)
    if method == "sequential" and keras.backend.backend() == "tensorflow":
        sigmas = tuple((sigma_s, sigma_r, s) for s in domain_transform_sigmas(sigma_s, num_iterations))
        return _tf_domain_transform(x, edges, sigmas, compile_loops=not _in_xla_context())
    for sigma_k in domain_transform_sigmas(sigma_s, num_iterations):
        w = domain_transform_weights(edges, sigma_s, sigma_r, sigma_k)
        for axis, reverse in _PASSES:
            x = _pass(x, w, axis, reverse, method)
    return x


@keras.saving.register_keras_serializable(package="kseg")
class DomainTransform(keras.layers.Layer):
    """Edge-preserving recursive filter of DT-EdgeNet (Chen et al., CVPR 2016, Sec. 3).

    Called on ``[x, edges]``: ``x`` (batch, H, W, C) is the signal to filter (DeepLab's score
    maps), ``edges`` (batch, H, W, 1) the non-negative reference edge map ``g`` (EdgeNet's
    output). Each of the K iterations runs the recursion ``y_i = (1 - w_i) x_i + w_i y_{i-1}``
    left->right, right->left, top->bottom and bottom->top, with
    ``w_i = exp(-sqrt(2) / sigma_k (1 + sigma_s / sigma_r g_i))`` and the per-iteration
    ``sigma_k = sigma_s sqrt(3) 2^(K-k) / sqrt(4^K - 1)``. Where ``g`` is large, ``w`` is ~0 and
    the filter stops at the edge; where ``g`` is 0 it smooths over about ``sigma_s`` pixels.
    No weights of its own: it is differentiable w.r.t. ``x`` and ``g`` (a gated recurrent unit
    whose gate is computed from the edge map, Sec. 3.3).

    Args:
        num_iterations: K (3 in the paper).
        sigma_s: spatial standard deviation in pixels of the filtered map.
        sigma_r: range standard deviation (edge strength scale).
        method: ``"sequential"`` (default, the fastest measured with and without XLA: one loop
            step per pixel; on TensorFlow an XLA cluster, any height and width), ``"doubling"``
            (a Hillis-Steele prefix scan, log2 n dense steps without control flow, builtin TFLite
            ops; sizes known only at run time run ``log2(MAX_DYNAMIC_LENGTH)`` = 13 steps) or
            ``"scan"`` (``keras.ops.associative_scan``). All three compute the same function;
            under XLA (TensorFlow) all run as ``"sequential"``.

    The defaults (K = 3, sigma_s = 130, sigma_r = 0.1) are the values the DT-EdgeNet paper reports
    for its final model; they are arguments so a grid search can change them.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(1, 6, 7, 2)).astype("float32")
        >>> flat = np.zeros((1, 6, 7, 1), "float32")
        >>> y = DomainTransform(sigma_s=1e4)([x, flat])  # no edges, huge sigma_s: one value everywhere
        >>> bool(np.ptp(np.asarray(y), axis=(1, 2)).max() < 1e-3)
        True
    """

    def __init__(self, num_iterations=3, sigma_s=130.0, sigma_r=0.1, method="sequential", **kwargs):
        super().__init__(**kwargs)
        if int(num_iterations) < 1:
            raise ValueError(f"num_iterations must be >= 1, got {num_iterations}")
        if float(sigma_s) <= 0 or float(sigma_r) <= 0:
            raise ValueError(f"sigma_s and sigma_r must be > 0, got {sigma_s} and {sigma_r}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.num_iterations, self.sigma_s, self.sigma_r = int(num_iterations), float(sigma_s), float(sigma_r)
        self.method = method

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 2:
            raise ValueError(f"{self.name} is called on [x, edges], got input shape {input_shape}")
        x_shape, g_shape = input_shape
        if len(x_shape) != 4 or len(g_shape) != 4 or g_shape[-1] != 1:
            raise ValueError(
                f"{self.name} expects x (batch, H, W, C) and edges (batch, H, W, 1), got {tuple(x_shape)} "
                f"and {tuple(g_shape)}"
            )
        dynamic_ok = takes_run_time_sizes(self.method)
        for axis in (1, 2):
            if (x_shape[axis] is None or g_shape[axis] is None) and not dynamic_ok:
                raise ValueError(f"{self.name}: method={self.method!r} needs static heights and widths, got "
                                 f"{tuple(x_shape)} (method='doubling' takes sizes known at run time only)")
            if x_shape[axis] is not None and g_shape[axis] is not None and x_shape[axis] != g_shape[axis]:
                raise ValueError(
                    f"{self.name}: x {tuple(x_shape)} and edges {tuple(g_shape)} must have the same height and width"
                )

    def call(self, inputs):
        x, edges = inputs
        return domain_transform(x, edges, self.num_iterations, self.sigma_s, self.sigma_r, self.method)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        return {**super().get_config(), "num_iterations": self.num_iterations, "sigma_s": self.sigma_s,
                "sigma_r": self.sigma_r, "method": self.method}
