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
* ``tf.unique`` numbers first the distinct enclosing simplices of the points (neighbouring pixels
  mostly share one), then their distinct vertices, and finally finds each vertex's 2 (d+1) blur
  neighbours (a unique over [vertex codes; neighbour codes]: no sort, no searchsorted);
* splat and slice are products with the sparse (points x vertices) barycentric matrix
  (``tf.sparse.sparse_dense_matmul``, i.e. SparseTensorDenseMatMul: a multithreaded
  segment sum / gather, 25x faster on CPU than ``unsorted_segment_sum`` of the weighted rows), the
  blur is ``tf.gather`` of the neighbour rows.

The lattice depends only on the features (the image), so it is built once per image and reused for
every mean-field iteration and every label (values are filtered as a (points, channels) matrix).
Filtering is linear in the values: TensorFlow's autodiff through the sparse products and gathers
gives the exact gradient of the (approximate) filter, i.e. its exact transpose (the blurs along
successive lattice directions do not commute where vertices are missing, so the operator is only
approximately symmetric; Krähenbühl's code approximates the transpose by blurring in reverse).

Several images are filtered at once by making the image index one more (most significant) digit of
the hash: vertices of different images never meet, so one lattice serves a whole batch.

TFLite: lattice construction (``Unique``, ``UnsortedSegmentMin``, gathers, int64 arithmetic)
converts to TFLite builtins; the default splat/slice op ``SparseTensorDenseMatMul`` does not (it
needs Flex / SELECT_TF_OPS). With ``tflite_builtins=True`` splat/slice use ``Gather`` +
``UnsortedSegmentSum`` instead and the whole filter converts to builtins (tested: runs in the
plain interpreter and matches TensorFlow). XLA cannot compile lattice construction as a whole
(data-dependent number of vertices); its point-wise part can (``jit_compile``). TF-only code.
"""

import functools
import sys

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
        slice_matrix: SparseTensor (P, M+1) of the barycentric weights (slice = S g,
            splat = S^T v).
        kernel_sums: optional float32 (P, 1), ``filter(ones)`` when already known (a lattice that
            depends on the image size only caches it); None otherwise.
    """

    def __init__(self, dim, vertex_index, weights, neighbours, num_vertices, tflite_builtins=False,
                 kernel_sums=None):
        self.dim = dim
        self.kernel_sums = kernel_sums
        self.tflite_builtins = tflite_builtins
        self.vertex_index = vertex_index
        self.weights = weights
        self.neighbours = neighbours
        self.num_vertices = num_vertices

    @functools.cached_property
    def slice_matrix(self):
        # Built on first use (eagerly, the filters of dense_crf never need it).
        points = tf.shape(self.weights, out_type=tf.int64)[0]
        return tf.sparse.SparseTensor(
            tf.cast(_pair_indices(self.vertex_index), tf.int64),
            tf.reshape(self.weights, [-1]),
            tf.stack([points, tf.cast(self.num_vertices, tf.int64) + 1]),
        )

    @property
    def alpha(self):
        # Krähenbühl's "magic scaling constant" applied when slicing.
        return 1.0 / (1.0 + 2.0 ** (-self.dim))

    def filter(self, values):
        """Approximate Gaussian filtering of ``values`` (P, C) float32 -> (P, C) float32."""
        return lattice_filter(self, values)


def _pair_indices(cols, codes=None):
    """The (P K, 2) int32 [row, col] index pairs, row-major, of a sparse matrix with K entries in
    every row, ``cols`` (P, K) int32 (``SparseTensorDenseMatMul`` takes int32 indices).

    Little-endian: one int64 ``row + col * 2^32`` per entry (:func:`_pair_codes`; ``codes``: those
    codes when already computed, e.g. inside an XLA pass), bitcast to its two int32 halves -- one
    pass over the entries instead of TensorFlow's Pack along a last axis of size 2 (element by
    element; the CRF set-up's slowest op before, ~30 ms at 480x360 on one busy thread) or a transpose.
    """
    if sys.byteorder != "little":
        points, k = tf.shape(cols)[0], cols.shape[1]
        rows = tf.repeat(tf.range(points), k)
        return tf.transpose(tf.stack([rows, tf.reshape(cols, [-1])]))
    return tf.bitcast(tf.reshape(_pair_codes(cols) if codes is None else codes, [-1]), tf.int32)


def _pair_codes(cols):
    """(P, K) int64 ``row + col * 2^32`` of :func:`_pair_indices` (a broadcast add: no repeated rows)."""
    rows = tf.range(tf.shape(cols)[0], dtype=tf.int64)[:, None]
    return rows + tf.cast(cols, tf.int64) * (1 << 32)


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


def _enclosing_simplex(features, d, select_sort=False):
    """Point-wise part: remainder-0 vertex, coordinate ranks and barycentric weights of each point.

    Follows ``Permutohedral::init`` of Krähenbühl's code step by step (elevate, round to the
    nearest remainder-0 point, rank the differentials, walk back onto the plane, barycentric
    coordinates). Returns (rem0 int32 (P, d), rank int32 (P, d), weights float32 (P, d+1)).
    ``select_sort``: order the deltas by selects instead of a scatter (the form XLA compiles well).
    """
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

    # Rank of each coordinate's differential (0 = largest; ties: the lower index first, as the C++
    # loop breaks them): the C++'s own d (d+1) / 2 pairwise comparisons, unrolled over the (P,)
    # columns -- ~15x cheaper on CPU than two per-row sorts (TopK over rows of d+1 values), and
    # under XLA one elementwise loop (a (P, d+1, d+1) comparison tensor reduced over its last axis
    # took 4.6 of the 13 ms at 480x360).
    diff = elevated - rem0
    cols = tf.unstack(diff, num=d1, axis=1)
    ranks = [None] * d1
    for i in range(d):
        for j in range(i + 1, d1):
            c = tf.cast(cols[i] < cols[j], tf.int32)
            ranks[i] = c if ranks[i] is None else ranks[i] + c
            ranks[j] = 1 - c if ranks[j] is None else ranks[j] + (1 - c)
    rank = tf.stack(ranks, axis=1)  # (P, d1)

    # Walk back onto the plane if the rounded point is off it.
    pos = tf.logical_and(total > 0, rank >= d1 - total)
    neg = tf.logical_and(total < 0, rank < -total)
    rank = tf.where(pos, rank - (d1 - total), tf.where(neg, rank + d1 + total, rank + total))
    rem0 = rem0 - d1 * tf.cast(pos, tf.float32) + d1 * tf.cast(neg, tf.float32)

    # Barycentric coordinates: the C++ adds delta_i at d - rank_i and subtracts it at d + 1 - rank_i.
    # Ranks order the deltas (descending), so with s the sorted deltas b[k] = s[d-k] - s[d+1-k] for
    # k = 1..d, and b[0] = s[d] + (1 - s[0]) (the wrap-around term): the same floating-point
    # operations, whatever the order among equal deltas.
    delta = (elevated - rem0) / d1  # (P, d1)
    # The deltas in rank order (ranks are a permutation per point), s[:, r] = the delta of rank r:
    # in TensorFlow a scatter (a segment sum); under XLA, where a scatter is slow and selects fuse,
    # the sum over i of where(rank_i == r, delta_i, 0) (exact: one non-zero term).
    if select_sort:
        dcols, rcols = tf.unstack(delta, num=d1, axis=1), tf.unstack(rank, num=d1, axis=1)
        zero = tf.zeros_like(dcols[0])
        s = tf.stack([tf.add_n([tf.where(tf.equal(rcols[i], r), dcols[i], zero) for i in range(d1)])
                      for r in range(d1)], axis=1)
    else:
        points = tf.shape(delta)[0]
        slots = tf.reshape(tf.range(points)[:, None] * d1 + rank, [-1])
        s = tf.reshape(tf.math.unsorted_segment_sum(tf.reshape(delta, [-1]), slots, points * d1), [-1, d1])
    weights = tf.concat([s[:, d:] + (1.0 - s[:, :1]), s[:, d - 1::-1] - s[:, d:0:-1]], axis=-1)  # (P, d1)
    return tf.cast(rem0[:, :d], tf.int32), rank[:, :d], weights


_enclosing_simplex_xla = tf.function(functools.partial(_enclosing_simplex, select_sort=True), jit_compile=True,
                                     reduce_retracing=True)


def _simplex_codes(rem0, rank):
    """Exact mixed-radix codes of the points' enclosing simplices (rem0 int32 (P, d), rank (P, d)).

    Vertex coordinates lie within [rem0 - d1, rem0 + d] and blur neighbours one step further, so a
    padding of 2 d1 on both sides keeps every code in range and makes "neighbour = vertex code +
    constant offset" alias-free. Returns the radices (d,) int64, the span of the vertex codes, the
    simplex codes (P,) int64 (the code of the remainder-0 vertex * d1^d + the ranks' code) and the
    code of the remainder-0 vertex (P,) int64.
    """
    d = rem0.shape[-1]
    d1 = d + 1
    rem0 = tf.cast(rem0, tf.int64)
    kmin = tf.reduce_min(rem0, axis=0) - 2 * d1
    extent = tf.reduce_max(rem0, axis=0) - kmin + 1 + 2 * d1  # (d,)
    radices = [tf.constant(1, tf.int64)]
    for j in range(1, d):
        radices.append(radices[-1] * extent[j - 1])
    radix = tf.stack(radices)  # (d,)
    span = radices[-1] * extent[d - 1]
    rank_radix = tf.constant(d1 ** np.arange(d), tf.int64)
    # 1) distinct enclosing simplices (neighbouring pixels mostly share one): P keys.
    base = tf.reduce_sum((rem0 - kmin) * radix, axis=-1)
    simplex_code = base * (d1**d) + tf.reduce_sum(tf.cast(rank, tf.int64) * rank_radix, axis=-1)
    return radix, span, simplex_code, base


def _vertex_codes(base, rank, radix):
    """Codes (N, d+1) int64 of the d+1 vertices of simplices given by the code of their remainder-0
    vertex ``base`` (N,) and their ranks (N, d): vertex r has coordinates rem0_j + canon[rank_j, r]
    (Krähenbühl's canonical simplex), so its code is base + sum_j canon[rank_j, r] radix_j."""
    d = rank.shape[-1]
    canon = tf.constant(_canonical_simplex(d).T)  # [rank, r]
    return base[:, None] + tf.reduce_sum(tf.gather(canon, rank) * radix[:, None], axis=1)


def _codes(rem0, rank):
    """:func:`_simplex_codes`, and :func:`_vertex_codes` of every point (one fused pass under XLA)."""
    radix, span, simplex_code, base = _simplex_codes(rem0, rank)
    return radix, span, simplex_code, _vertex_codes(base, rank, radix)


_codes_xla = tf.function(_codes, jit_compile=True, reduce_retracing=True)


def build_lattice(features, group=None, jit_compile=False, tflite_builtins=False):
    """Builds the permutohedral lattice of ``features``.

    Args:
        features: float32 (P, d) point features, already divided by their standard deviations
            (the filter is ``exp(-|f_i - f_j|^2 / 2)``); d must be static.
        group: optional int32 (P,) group id >= 0 (e.g. the image index in a batch); points of
            different groups never interact.
        jit_compile: compile the point-wise part with XLA (faster on CPU; the graph then needs
            XLA's JIT kernels where it is served).
        tflite_builtins: splat and slice with ``tf.gather`` + ``unsorted_segment_sum`` instead of
            ``sparse_dense_matmul`` (same result; slower in TensorFlow, but every op of the graph
            is then a TFLite builtin).

    Returns:
        a :class:`PermutohedralLattice`.
    """
    features = tf.convert_to_tensor(features, tf.float32)
    d = features.shape[-1]
    if d is None or d < 1:
        raise ValueError(f"features must have a static last dimension >= 1, got shape {features.shape}")
    d1 = d + 1
    rem0, rank, weights = (_enclosing_simplex_xla if jit_compile else _enclosing_simplex)(features, d)
    if jit_compile:  # every point's vertex codes, fused (P (d+1) codes: cheaper than S (d+1) unfused)
        radix, span, simplex_code, point_vertex_code = _codes_xla(rem0, rank)
    else:
        radix, span, simplex_code, base = _simplex_codes(rem0, rank)
    num_groups = tf.constant(1, tf.int64) if group is None else tf.reduce_max(tf.cast(group, tf.int64)) + 1
    check = tf.debugging.assert_less(
        tf.cast(span, tf.float64) * float(d1**d) * tf.cast(num_groups, tf.float64),
        tf.constant(2.0**62, tf.float64),
        message="permutohedral lattice key range exceeds int64: features span too many lattice cells",
    )
    with tf.control_dependencies([check]):
        simplex_code = tf.identity(simplex_code)
    group_code = None
    if group is not None:
        group_code = tf.cast(group, tf.int64) * span
        simplex_code = simplex_code + group_code * (d1**d)
    simplices, simplex_index = tf.unique(simplex_code, out_idx=tf.int32)

    # 2) their d+1 vertices: S (d+1) keys, from one representative point per simplex.
    points = tf.shape(simplex_index)[0]
    rep = tf.math.unsorted_segment_min(tf.range(points), simplex_index, tf.size(simplices))
    if jit_compile:
        vertex_code = tf.gather(point_vertex_code, rep)  # (S, d1)
    else:
        vertex_code = _vertex_codes(tf.gather(base, rep), tf.gather(rank, rep), radix)  # (S, d1)
    if group_code is not None:
        vertex_code = vertex_code + tf.gather(group_code, rep)[:, None]
    uniq, idx = tf.unique(tf.reshape(vertex_code, [-1]), out_idx=tf.int32)
    num_vertices = tf.size(uniq, out_type=tf.int32)
    vertex_index = tf.gather(tf.reshape(idx, [-1, d1]), simplex_index)  # (P, d1)

    # Blur neighbours: code offset of "-1 on every coordinate, +d1 on coordinate j". With jit_compile
    # (TensorFlow's fastest CPU path, not convertible to TFLite anyway) looked up in a hash table of
    # the vertices' codes (an absent neighbour -> M, the zero row); otherwise, so that the graph
    # stays TFLite-convertible, one more tf.unique over [vertices; queries]: the vertices come first,
    # so they keep ids 0..M-1, a query equal to a vertex gets that vertex's id and an absent one an
    # id >= M (2.6x slower: every absent query is inserted; 7.6 vs 2.9 ms at 480x360).
    base = -tf.reduce_sum(radix)
    offsets = tf.stack([base + d1 * radix[j] for j in range(d)] + [base])  # (d1,)
    queries = tf.reshape(tf.concat([uniq[None, :] + offsets[:, None], uniq[None, :] - offsets[:, None]], axis=0), [-1])
    if tflite_builtins or not jit_compile:
        _, ids = tf.unique(tf.concat([uniq, queries], axis=0), out_idx=tf.int32)
        nb = tf.minimum(ids[num_vertices:], num_vertices)
    else:
        table = tf.raw_ops.AnonymousHashTable(key_dtype=tf.int64, value_dtype=tf.int32)
        with tf.control_dependencies([tf.raw_ops.LookupTableImportV2(table_handle=table, keys=uniq,
                                                                     values=tf.range(num_vertices))]):
            nb = tf.raw_ops.LookupTableFindV2(table_handle=table, keys=queries, default_value=num_vertices)
    nb = tf.transpose(tf.reshape(nb, [2, d1, -1]), [1, 0, 2])  # (d1, 2, M)
    neighbours = tf.concat([nb, tf.fill([d1, 2, 1], num_vertices)], axis=-1)  # (d1, 2, M+1)
    return PermutohedralLattice(d, vertex_index, weights, neighbours, num_vertices, tflite_builtins)


def lattice_filter(lattice, values):
    """Splat, blur and slice ``values`` (P, C) float32 on ``lattice``; returns (P, C)."""
    d1 = lattice.dim + 1
    values = tf.convert_to_tensor(values, tf.float32)
    w = lattice.weights
    if lattice.tflite_builtins:
        channels = tf.shape(values)[-1]
        contrib = tf.reshape(values[:, None, :] * w[:, :, None], [-1, channels])
        ids = tf.reshape(lattice.vertex_index, [-1])
        grid = tf.math.unsorted_segment_sum(contrib, ids, lattice.num_vertices + 1)
    else:
        # Splat = S^T v and slice = S g with S the sparse (P, M+1) barycentric matrix:
        # SparseTensorDenseMatMul is multithreaded and ~25x faster here than gather + segment sum.
        grid = tf.sparse.sparse_dense_matmul(lattice.slice_matrix, values, adjoint_a=True)
    for j in range(d1):
        n = lattice.neighbours[j]
        grid = grid + 0.5 * (tf.gather(grid, n[0]) + tf.gather(grid, n[1]))
    if lattice.tflite_builtins:
        return lattice.alpha * tf.reduce_sum(tf.gather(grid, lattice.vertex_index) * w[:, :, None], axis=1)
    return lattice.alpha * tf.sparse.sparse_dense_matmul(lattice.slice_matrix, grid)
