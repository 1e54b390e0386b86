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
the associative operator ``(a1, b1) o (a2, b2) = (a1 a2, a2 b1 + b2)``, so every pass is a
parallel prefix scan (log-depth) instead of a loop over pixels: ``method="doubling"`` (default)
is a Hillis-Steele scan written with ``keras.ops`` (shifted copies, static shapes, no control
flow); ``method="scan"`` is ``keras.ops.associative_scan``, whose TensorFlow implementation
interleaves levels through ``tf.cond`` (it loses the static rank, which :func:`_pass` restores,
and takes minutes to trace at 480 pixels); ``method="sequential"`` runs the same recurrence with
``keras.ops.scan`` (one step per pixel), kept as the reference and the benchmark peer.

Measured (``benchmarks/domain_transform.py``, 2 shared CPU cores, loaded): without XLA the
sequential recurrence is the fastest for forward+backward (1x360x480x3, K = 3: 831 ms vs doubling
2708 ms) and doubling for forward only (284 vs 366 ms); under XLA (TF) every method runs the
sequential recurrence with its adjoint recurrence as gradient: 52 ms forward / 85 ms
forward+backward at 1x360x480x3, 352 / 1111 ms at 1x360x480x21, 25 / 72 ms at 1x90x120x21
(doubling without XLA: 120 / 799 ms). OpenCV's ``ximgproc.dtFilter`` (DTF_RF, 1 thread) took
21 ms / 121 ms (21 channels in calls of <= 4) in the same session.
"""

import math

import keras
from keras import ops

__all__ = ["METHODS", "DomainTransform", "domain_transform", "domain_transform_sigmas", "domain_transform_weights"]

#: ``"scan"``: keras.ops.associative_scan (Blelloch-style, O(n) work); ``"doubling"``: Hillis-Steele
#: (O(n log n) work, log2 n dense steps, no control flow); ``"sequential"``: keras.ops.scan, one step per pixel.
METHODS = ("scan", "doubling", "sequential")

#: Lengths known only at run time (a model built for any input size): the doubling scan runs enough
#: steps for rows / columns up to this long (13 steps; a static length runs ceil(log2 n)).
MAX_DYNAMIC_LENGTH = 1 << 13
#: The passes of one iteration, in the authors' order: (axis, reverse).
_PASSES = ((2, False), (2, True), (1, False), (1, True))


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


def _tf_recurrence(a, b):
    """TF-only ``y_i = a_i y_{i-1} + b_i`` along axis 0 (y_{-1} = 0) with its adjoint written out.

    The gradient is the same recurrence run backwards, ``gb_i = gy_i + a_{i+1} gb_{i+1}``, and
    ``ga_i = gb_i y_{i-1}``: two bounded ``tf.scan`` loops, which XLA compiles to tight loops (the
    tape of a while loop it would compile to slow TensorList code, or refuse for keras' scan).
    """
    import tensorflow as tf

    @tf.custom_gradient
    def run(a, b):
        y = tf.scan(lambda carry, ab: ab[0] * carry + ab[1], (a, b), initializer=tf.zeros_like(b[0]))

        def grad(gy):
            a_next = tf.concat([a[1:], tf.zeros_like(a[:1])], axis=0)
            gb = tf.scan(lambda carry, ag: ag[1] + ag[0] * carry, (a_next, gy), initializer=tf.zeros_like(gy[0]),
                         reverse=True)
            y_prev = tf.concat([tf.zeros_like(y[:1]), y[:-1]], axis=0)
            ga = gb * y_prev
            if a.shape[-1] != ga.shape[-1]:  # one weight shared by all channels
                ga = tf.reduce_sum(ga, axis=-1, keepdims=True)
            return ga, gb

        return y, grad

    return run(a, b)


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
        a_t, b_t = ops.moveaxis(a, axis, 0), ops.moveaxis(b, axis, 0)
        if keras.backend.backend() == "tensorflow":
            y = _tf_recurrence(a_t, b_t)
        else:

            def step(carry, ab):
                y_i = ab[0] * carry + ab[1]
                return y_i, y_i

            _, y = ops.scan(step, ops.zeros_like(b_t[0]), (a_t, b_t))
        y = ops.moveaxis(y, 0, axis)
    return ops.flip(y, axis=axis) if reverse else y


def domain_transform(x, edges, num_iterations=3, sigma_s=130.0, sigma_r=0.1, method="doubling"):
    """Filter ``x`` (batch, H, W, C) guided by ``edges`` (batch, H, W, 1): K iterations of 4 recursive passes.

    See :class:`DomainTransform`. ``method`` is one of :data:`METHODS`; on TensorFlow under XLA
    (``jit_compile``) every method runs as ``"sequential"``, the fastest there and the only one
    XLA compiles to faster code than TensorFlow runs uncompiled.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method != "sequential" and keras.backend.backend() == "tensorflow":
        from kseg.layers.pooling import _in_xla_context

        if _in_xla_context():
            # Under XLA the recurrence compiles to a tight loop (1x90x120x21, K=3: 15 ms vs 102 ms
            # without XLA), the doubling scan to code 17x slower than without XLA (1.26 s vs 75 ms)
            # and keras' associative_scan not at all (tf.cond shapes): every method runs the
            # sequential recurrence there (same values).
            method = "sequential"
    edges = ops.cast(edges, x.dtype)
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
        method: ``"doubling"`` (default: a Hillis-Steele prefix scan, log2 n dense steps without
            control flow, builtin TFLite ops; sizes known only at run time run
            ``log2(MAX_DYNAMIC_LENGTH)`` = 13 steps), ``"scan"``
            (``keras.ops.associative_scan``) or ``"sequential"`` (``keras.ops.scan``, one step
            per pixel; the reference). All three compute the same function.

    The defaults (K = 3, sigma_s = 130, sigma_r = 0.1) are the values the DT-EdgeNet paper reports
    for its final model; they are arguments so a grid search can change them.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(1, 6, 7, 2)).astype("float32")
        >>> flat = np.zeros((1, 6, 7, 1), "float32")
        >>> y = DomainTransform(sigma_s=1e4)([x, flat])  # no edges, huge sigma_s: nearly the mean
        >>> bool(np.allclose(np.asarray(y), x.mean(axis=(1, 2), keepdims=True), atol=0.05))
        True
    """

    def __init__(self, num_iterations=3, sigma_s=130.0, sigma_r=0.1, method="doubling", **kwargs):
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
        for axis in (1, 2):
            if (x_shape[axis] is None or g_shape[axis] is None) and self.method != "doubling":
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
