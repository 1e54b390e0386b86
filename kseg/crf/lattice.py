"""Permutohedral lattice (Adams, Baek & Davis, Eurographics 2010) from stock TensorFlow ops.

High-dimensional Gaussian filtering ``out_i = sum_j exp(-|f_i - f_j|^2 / 2) v_j`` in O(N d^2)
instead of O(N^2): every point is *splatted* with barycentric weights onto the d+1 vertices of the
lattice simplex that encloses it, the lattice values are *blurred* with the kernel (1/2, 1, 1/2)
along each of the d+1 lattice directions, and the result is *sliced* back at the points with the
same barycentric weights. The construction follows Krähenbühl's ``permutohedral.cpp`` (the code
behind "Efficient Inference in Fully Connected CRFs with Gaussian Edge Potentials", NIPS 2011, used
by DeepLab and CRF-as-RNN): the same feature scaling ``sqrt(2/3) (d+1)``, the same rounding and
ranking, the same (1, 1/2, 1/2) blur and the same ``1 / (1 + 2^-d)`` output scale.

Only stock TensorFlow ops are used, so a graph that contains it runs on stock TF Serving:

* lattice keys are integer vectors; they are hashed *exactly* (no collisions) to one int64 by a
  mixed-radix code whose radices come from the keys' range (padded by d+1 on both sides, so that
  the code of a blur neighbour is the code of the vertex plus a constant offset and can never alias
  another vertex);
* ``tf.unique`` numbers the distinct vertices, ``tf.sort`` + ``tf.searchsorted`` find each vertex's
  2 (d+1) blur neighbours;
* splat is ``tf.math.unsorted_segment_sum``, blur and slice are ``tf.gather``.

The lattice depends only on the features (the image), so it is built once per image and reused for
every mean-field iteration and every label (values are filtered as a (points, channels) matrix).
Filtering is linear in the values: TensorFlow's autodiff through gather / segment sums gives the
exact gradient of the (approximate) filter, which is also the filter itself applied to the
gradient, since the lattice operator is symmetric.

Several images are filtered at once by making the image index one more (most significant) digit of
the hash: vertices of different images never meet, so one lattice serves a whole batch.

TFLite: ``tf.unique``, ``tf.searchsorted`` and ``unsorted_segment_sum`` with a dynamic number of
segments have no TFLite builtin kernels; a model containing the lattice converts only with
``SELECT_TF_OPS`` (Flex). XLA cannot compile lattice construction either (data-dependent number of
vertices). TF-only code.
"""

import numpy as np
import tensorflow as tf

__all__ = ["PermutohedralLattice", "build_lattice", "lattice_filter"]


class PermutohedralLattice:
    """The per-point vertex indices, barycentric weights and blur neighbours of a lattice.

    Attributes:
        dim: feature dimension d.
        vertex_index: int32 (P, d+1), the lattice vertex of each point's enclosing simplex.
        weights: float32 (P, d+1), barycentric weights (sum to 1 per point).
        neighbours: int32 (d+1, 2, M+1), the two blur neighbours of every vertex along each lattice
            direction; index M denotes "no vertex" (a zero row). Row M maps to M.
        num_vertices: int32 scalar M.
    """

    def __init__(self, dim, vertex_index, weights, neighbours, num_vertices):
        self.dim = dim
        self.vertex_index = vertex_index
        self.weights = weights
        self.neighbours = neighbours
        self.num_vertices = num_vertices

    @property
    def alpha(self):
        # Krähenbühl's "magic scaling constant" applied when slicing.
        return 1.0 / (1.0 + 2.0 ** (-self.dim))

    def filter(self, values):
        """Approximate Gaussian filtering of ``values`` (P, C) float32 -> (P, C) float32."""
        return lattice_filter(self, values)


def _elevation_matrix(d):
    """(d, d+1) matrix mapping scaled features onto the plane x_0 + ... + x_d = 0."""
    a = np.zeros((d, d + 1), np.float64)
    for i in range(d + 1):
        for k in range(d):
            if k >= i:
                a[k, i] += 1.0
            if i >= 1 and k == i - 1:
                a[k, i] -= i
    return a


def _canonical_simplex(d):
    d1 = d + 1
    c = np.zeros((d1, d1), np.int64)
    for r in range(d1):
        for j in range(d1):
            c[r, j] = r if j <= d - r else r - d1
    return c


def build_lattice(features, group=None, num_groups=None):
    """Builds the permutohedral lattice of ``features``.

    Args:
        features: float32 (P, d) point features, already divided by their standard deviations
            (the filter is ``exp(-|f_i - f_j|^2 / 2)``); d must be static.
        group: optional int32 (P,) group id (e.g. image index in a batch); points of different
            groups never interact.
        num_groups: int scalar, number of groups (required with ``group``).

    Returns:
        a :class:`PermutohedralLattice`.
    """
    features = tf.convert_to_tensor(features, tf.float32)
    d = features.shape[-1]
    if d is None or d < 1:
        raise ValueError(f"features must have a static last dimension >= 1, got shape {features.shape}")
    d1 = d + 1
    inv_std = np.sqrt(2.0 / 3.0) * d1
    scale = inv_std / np.sqrt((np.arange(d) + 1.0) * (np.arange(d) + 2.0))
    elevate = tf.constant(_elevation_matrix(d) * scale[:, None], tf.float32)
    elevated = tf.linalg.matmul(features, elevate)  # (P, d1)

    # Closest remainder-0 lattice point.
    v = elevated / d1
    up = tf.math.ceil(v) * d1
    down = tf.math.floor(v) * d1
    rem0 = tf.where(up - elevated < elevated - down, up, down)
    total = tf.cast(tf.round(tf.reduce_sum(rem0, axis=-1) / d1), tf.int32)[:, None]  # (P, 1)

    # Rank of each coordinate's differential (0 = largest; ties as in the C++ loop).
    diff = elevated - rem0
    di = diff[:, :, None]
    dj = diff[:, None, :]
    upper = tf.constant(np.triu(np.ones((d1, d1), bool), 1))
    lower = tf.constant(np.tril(np.ones((d1, d1), bool), -1))
    counted = tf.logical_or(tf.logical_and(upper, dj > di), tf.logical_and(lower, dj >= di))
    rank = tf.reduce_sum(tf.cast(counted, tf.int32), axis=-1)  # (P, d1)

    # Walk back onto the plane if the rounded point is off it.
    pos = tf.logical_and(total > 0, rank >= d1 - total)
    neg = tf.logical_and(total < 0, rank < -total)
    rank = tf.where(pos, rank - (d1 - total), tf.where(neg, rank + d1 + total, rank + total))
    rem0 = rem0 - d1 * tf.cast(pos, tf.float32) + d1 * tf.cast(neg, tf.float32)

    # Barycentric coordinates.
    delta = (elevated - rem0) / d1  # (P, d1)
    bary = tf.einsum("pi,pik->pk", delta, tf.one_hot(d - rank, d + 2)) - tf.einsum(
        "pi,pik->pk", delta, tf.one_hot(d + 1 - rank, d + 2)
    )
    weights = tf.concat([bary[:, :1] + 1.0 + bary[:, d1:], bary[:, 1:d1]], axis=-1)  # (P, d1)

    # Integer keys of the d+1 enclosing vertices (first d coordinates determine a vertex).
    rem0_i = tf.cast(rem0[:, :d], tf.int64)
    canon = tf.constant(_canonical_simplex(d).T)  # [j, r]
    keys = rem0_i[:, None, :] + tf.transpose(tf.gather(canon, rank[:, :d]), [0, 2, 1])  # (P, d1, d)

    # Exact mixed-radix hash; padding by d1 keeps every blur neighbour inside the code's range.
    kmin = tf.reduce_min(keys, axis=[0, 1]) - d1
    extent = tf.reduce_max(keys, axis=[0, 1]) - kmin + 1 + d1
    radix = tf.math.cumprod(extent, exclusive=True)  # (d,)
    code = tf.reduce_sum((keys - kmin) * radix, axis=-1)  # (P, d1)
    if group is not None:
        span = tf.reduce_prod(extent)
        code = code + tf.cast(group, tf.int64)[:, None] * span
        del num_groups  # the code is exact for any number of groups within int64
    flat = tf.reshape(code, [-1])
    uniq, idx = tf.unique(flat, out_idx=tf.int32)
    num_vertices = tf.size(uniq, out_type=tf.int32)
    vertex_index = tf.reshape(idx, [-1, d1])

    # Blur neighbours: code offset of "-1 on every coordinate, +d1 on coordinate j".
    base = -tf.reduce_sum(radix)
    offs = [base + d1 * radix[j] for j in range(d)] + [base]
    offsets = tf.stack(offs)  # (d1,)
    order = tf.argsort(uniq, stable=True)
    sorted_codes = tf.gather(uniq, order)
    queries = tf.concat([uniq[None, :] + offsets[:, None], uniq[None, :] - offsets[:, None]], axis=0)
    flat_q = tf.reshape(queries, [-1])
    pos_q = tf.searchsorted(sorted_codes, flat_q, side="left", out_type=tf.int32)
    pos_q = tf.minimum(pos_q, num_vertices - 1)
    found = tf.equal(tf.gather(sorted_codes, pos_q), flat_q)
    nb = tf.where(found, tf.gather(order, pos_q), num_vertices)
    nb = tf.reshape(nb, [2, d1, -1])
    nb = tf.transpose(nb, [1, 0, 2])  # (d1, 2, M)
    pad = tf.fill([d1, 2, 1], num_vertices)
    neighbours = tf.concat([nb, pad], axis=-1)  # (d1, 2, M+1)
    return PermutohedralLattice(d, vertex_index, weights, neighbours, num_vertices)


def lattice_filter(lattice, values):
    """Splat, blur and slice ``values`` (P, C) float32 on ``lattice``; returns (P, C)."""
    d1 = lattice.dim + 1
    values = tf.convert_to_tensor(values, tf.float32)
    channels = tf.shape(values)[-1]
    w = lattice.weights
    contrib = tf.reshape(values[:, None, :] * w[:, :, None], [-1, channels])
    grid = tf.math.unsorted_segment_sum(contrib, tf.reshape(lattice.vertex_index, [-1]), lattice.num_vertices + 1)
    for j in range(d1):
        n = lattice.neighbours[j]
        grid = grid + 0.5 * (tf.gather(grid, n[0]) + tf.gather(grid, n[1]))
    sliced = tf.gather(grid, lattice.vertex_index)  # (P, d1, C)
    return lattice.alpha * tf.reduce_sum(sliced * w[:, :, None], axis=1)
