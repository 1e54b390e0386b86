"""Mean-field inference in the fully connected CRF (Krähenbühl & Koltun, NIPS 2011), TF ops only.

The CRF over pixels i with labels x_i has the energy
``E(x) = sum_i psi_u(x_i) + sum_{i<j} mu(x_i, x_j) sum_m w_m k_m(f_i, f_j)`` with two Gaussian kernels:
the appearance (bilateral) kernel ``exp(-|p_i-p_j|^2 / 2 theta_alpha^2 - |I_i-I_j|^2 / 2 theta_beta^2)``
and the smoothness (spatial) kernel ``exp(-|p_i-p_j|^2 / 2 theta_gamma^2)`` (paper Eq. 3).
One mean-field update (paper Algorithm 1) is

    Q_i(l) propto exp(-psi_u(l) - sum_m w_m sum_l' mu(l, l') n_m(i) sum_j k_m(f_i, f_j) Q_j(l'))

where ``n_m`` normalises each kernel per pixel (``1 / sum_j k_m(f_i, f_j)``, as the authors' code
does; ``"symmetric"`` uses ``1/sqrt`` on both sides as Krähenbühl's 2013 code does by default).
The message passing ``sum_j k(f_i, f_j) Q_j`` is the permutohedral lattice filter of
:mod:`kseg.crf.lattice`; both lattices are built once per image.

Potts (``compatibility=None``) is applied as the authors' code does, as the label-agreement reward
``+w * K Q(l)`` (compatibility -I), which differs from ``mu = 1 - I`` by a per-pixel constant that
the softmax removes. TF-only code.
"""

import functools

import numpy as np
import tensorflow as tf

from kseg.crf.lattice import PermutohedralLattice, _pair_codes, _pair_indices, build_lattice

__all__ = ["dense_crf", "mean_field", "pixel_features", "CRFFilters", "build_filters"]

# DeepLab-v1 DeepLab-LargeFOV (VOC 2012) cross-validated CRF parameters. The paper (Chen et al.,
# ICLR 2015, Sec. 4.1) fixes w2 = 3 (pos_w) and sigma_gamma = 3 (pos_xy_std) and cross-validates
# w1, sigma_alpha, sigma_beta; the values released with the authors' code for "FOV" are bi_w = 4,
# bi_xy_std = 121, bi_rgb_std = 5 (their table "plain / multiscale / coco / FOV / ..." is quoted
# verbatim in many public re-implementations; the released densecrf/run_densecrf.sh passes them
# as -bw -bx -by -br -bg -bb -pw -px -py), 10 mean-field iterations. DeepLab's densecrf/ is
# "modified from the publicly available code by Krähenbühl and Koltun" (the 2011 release, whose
# PottsPotential normalises per pixel: our default normalization="after").
DEEPLAB_LARGEFOV = dict(theta_alpha=121.0, theta_beta=5.0, theta_gamma=3.0, bilateral_weight=4.0, spatial_weight=3.0)

_NORMALIZATIONS = ("after", "symmetric", "none")


def pixel_features(image, theta_alpha, theta_beta, theta_gamma):
    """Lattice features of a batch of images.

    Args:
        image: (B, H, W, 3) any numeric dtype, colours in [0, 255].

    Returns:
        (bilateral (B*H*W, 5), spatial (B*H*W, 2), group (B*H*W,) int32): ``(x, y) / theta_alpha,
        rgb / theta_beta`` and ``(x, y) / theta_gamma`` with x the column and y the row, as in
        Krähenbühl's ``DenseCRF2D``.
    """
    image = tf.cast(image, tf.float32)
    shape = tf.shape(image)
    xy = _pixel_xy(image)
    group = tf.repeat(tf.range(shape[0]), shape[1] * shape[2])
    return _bilateral_features(image, theta_alpha, theta_beta, xy), tf.reshape(xy / theta_gamma, [-1, 2]), group


def _pixel_xy(image):
    """(B, H, W, 2) float32 pixel coordinates (x = column, y = row) of a (B, H, W, 3) float image."""
    shape = tf.shape(image)
    ys, xs = tf.meshgrid(tf.range(shape[1], dtype=tf.float32), tf.range(shape[2], dtype=tf.float32), indexing="ij")
    return tf.broadcast_to(tf.stack([xs, ys], axis=-1)[None], tf.concat([shape[:3], [2]], axis=0))


def _bilateral_features(image, theta_alpha, theta_beta, xy=None):
    """:func:`pixel_features`' bilateral part, ``(x, y) / theta_alpha, rgb / theta_beta`` (B*H*W, 5)
    (``xy``: :func:`_pixel_xy` of the image when already computed). Under XLA one pass over the image."""
    image = tf.cast(image, tf.float32)
    xy = _pixel_xy(image) if xy is None else xy
    return tf.reshape(tf.concat([xy / theta_alpha, image / theta_beta], axis=-1), [-1, 5])


class CRFFilters:
    """The two normalised kernels of the CRF for one batch of images (lattices built once)."""

    def __init__(self, bilateral_lattice, spatial_lattice, normalization="after", jit_compile=False):
        if normalization not in _NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {_NORMALIZATIONS}, got {normalization!r}")
        self.lattices = (bilateral_lattice, spatial_lattice)
        self.normalization = normalization
        self.jit_compile = jit_compile
        self.norms = []
        for lat in self.lattices:
            norm = lat.kernel_sums if lat.kernel_sums is not None else _filter_ones(lat, jit_compile)
            if normalization == "after":
                norm = 1.0 / (norm + 1e-20)
            elif normalization == "symmetric":
                norm = 1.0 / tf.sqrt(norm + 1e-20)
            else:  # Krähenbühl's NO_NORMALIZATION: one global factor, the inverse mean.
                norm = tf.ones_like(norm) / tf.reduce_mean(norm)
            self.norms.append(norm)

    def _apply(self, k, q):
        norm = self.norms[k]
        if self.normalization == "symmetric":
            return norm * self.lattices[k].filter(norm * q)
        return norm * self.lattices[k].filter(q)

    def bilateral(self, q):
        """Normalised appearance-kernel message of ``q`` (P, L)."""
        return self._apply(0, q)

    def spatial(self, q):
        """Normalised smoothness-kernel message of ``q`` (P, L)."""
        return self._apply(1, q)

    def weighted_sum(self, bilateral_weight, spatial_weight):
        """``fn(q) = w_b * bilateral(q) + w_s * spatial(q)`` with one splat and one slice.

        Both lattices share one grid (the spatial vertices after the bilateral ones): the splat
        matrix is ``[S_b | S_s]`` (P, Mb + Ms), the slice matrix ``[diag(w_b n_b alpha_b) S_b |
        diag(w_s n_s alpha_s) S_s]`` (normalisations, kernel weights and Krähenbühl's alpha folded
        into its values once), and each block is blurred along its own d+1 directions by gathers of
        the precomputed neighbour table. An iteration is two sparse products, 2 (d_b + d_s + 2)
        row gathers and the softmax: no ``unique``, no index arithmetic. Same result as the two
        separate messages.
        """
        lb, ls = self.lattices
        if lb.tflite_builtins or ls.tflite_builtins:
            return lambda q: bilateral_weight * self.bilateral(q) + spatial_weight * self.spatial(q)
        mb, ms = lb.num_vertices + 1, ls.num_vertices + 1
        if self.jit_compile:
            # each block's rows zero-padded to its size bucket inside the splat's own grid: the blocks are
            # then row ranges of it at aligned offsets (slicing them copies nothing), the blur's and the
            # slice's XLA functions compile once per bucket, and no pad or concatenation copies the values
            mb, ms = _bucket(mb), _bucket(ms)
        d1b, d1s = lb.dim + 1, ls.dim + 1
        nb, ns = self.norms
        joint_tables = _joint_tables_xla if self.jit_compile else _joint_tables
        cols, splat_values, slice_values, pair_codes = joint_tables(
            lb.vertex_index, ls.vertex_index, mb, lb.weights, ls.weights, nb, ns,
            bilateral_weight * lb.alpha, spatial_weight * ls.alpha, self.normalization == "symmetric")
        points = tf.shape(cols)[0]
        indices = _pair_indices(cols, pair_codes)
        shape = tf.cast(tf.stack([points, mb + ms]), tf.int64)
        splat_values, slicing_values = tf.reshape(splat_values, [-1]), tf.reshape(slice_values, [-1])

        def splat(q):
            return tf.raw_ops.SparseTensorDenseMatMul(a_indices=indices, a_values=splat_values, a_shape=shape, b=q,
                                                      adjoint_a=True)

        if self.jit_compile:  # each direction one XLA loop over the padded rows

            def splat_blur_blocks(q):
                grid_b, grid_s = tf.split(splat(q), tf.stack([mb, ms]), num=2)  # SplitV: views of the buffer
                return _blur_xla(grid_b, nbrs_b), _blur_xla(grid_s, nbrs_s)

            def splat_blur(q):
                return tf.concat(splat_blur_blocks(q), axis=0)

            # each direction's two neighbour columns sliced out once, not once an iteration
            nbrs_b, nbrs_s = (_direction_tables(_pad_neighbours(lat.neighbours)) for lat in (lb, ls))
            message_blocks = (splat_blur_blocks, (lb.vertex_index, ls.vertex_index))
        else:

            def splat_blur(q):
                grid = splat(q)
                return tf.concat([_blur(grid[:mb], lb.neighbours, d1b), _blur(grid[mb:], ls.neighbours, d1s)], axis=0)

            message_blocks = None

        def message(q):
            return tf.raw_ops.SparseTensorDenseMatMul(a_indices=indices, a_values=slicing_values, a_shape=shape,
                                                      b=splat_blur(q))

        message.splat_blur = splat_blur
        message.slice_table = (cols, slice_values)
        # with jit_compile: q -> the two blurred, bucket-padded blocks, and each block's (P, d+1) vertex ids
        message.blocks = message_blocks
        # An upper bound of every message entry (for the XLA loop's shifted softmax; None: none known).
        # With non-negative kernel weights the filter is monotone and 0 <= Q <= 1, so message(Q) <=
        # message(1) per pixel. "after": each kernel's message is its weight times an average of Q's,
        # so the bound is w_b + w_s; otherwise (symmetric, none) the largest entry of message(1), a
        # scalar tensor, computed on demand (one more splat, blur and slice of a single column).
        if bilateral_weight < 0 or spatial_weight < 0:
            message.max_message = None
        elif self.normalization == "after":
            message.max_message = bilateral_weight + spatial_weight
        else:
            message.max_message = lambda: tf.reduce_max(message(tf.ones([points, 1])))
        return message


def _joint_tables(vertex_b, vertex_s, offset, weights_b, weights_s, norm_b, norm_s, scale_b, scale_s, symmetric):
    """The joint grid's per-pixel tables: vertex columns (the spatial ones after the bilateral
    block), splat values and slice values (P, d1b + d1s), and the sparse matrix's index pairs as
    :func:`~kseg.crf.lattice._pair_codes`. Under XLA (``jit_compile``) the three concatenations and the
    codes are one pass (TensorFlow's concat along the last axis copies row by row)."""
    cols = tf.concat([vertex_b, vertex_s + offset], axis=1)
    if symmetric:
        splat_values = tf.concat([weights_b * norm_b, weights_s * norm_s], axis=1)
    else:
        splat_values = tf.concat([weights_b, weights_s], axis=1)
    slice_values = tf.concat([weights_b * (scale_b * norm_b), weights_s * (scale_s * norm_s)], axis=1)
    return cols, splat_values, slice_values, _pair_codes(cols)


_joint_tables_xla = tf.function(_joint_tables, jit_compile=True, reduce_retracing=True)


def _blur_direction(grid, lower, upper):
    """One direction of the (1/2, 1, 1/2) blur: each row plus half its two neighbour rows."""
    return grid + 0.5 * (tf.gather(grid, lower) + tf.gather(grid, upper))


def _blur(grid, neighbours, directions):
    """The (1/2, 1, 1/2) blur of a lattice's (M+1, C) values along each of its d+1 directions."""
    for j in range(directions):
        grid = _blur_direction(grid, neighbours[j, 0], neighbours[j, 1])
    return grid


_blur_direction_xla = tf.function(_blur_direction, jit_compile=True)


def _pad_neighbours(neighbours):
    """A lattice's (d+1, 2, M+1) neighbour table padded along its last axis to :func:`_bucket` (M+1)
    with M, the index of the zero "no vertex" row: padded rows of the values stay zero."""
    m = tf.shape(neighbours)[-1]
    return tf.pad(neighbours, [[0, 0], [0, 0], [0, _bucket(m) - m]], constant_values=m - 1)


def _direction_tables(neighbours):
    """A (d+1, 2, M) neighbour table as d+1 pairs ``(lower, upper)`` of (M,) index vectors."""
    return [(neighbours[j, 0], neighbours[j, 1]) for j in range(neighbours.shape[0])]


def _blur_xla(grid, directions):
    """:func:`_blur` of bucket-padded rows with each direction one XLA loop (the two row gathers, the
    sum and the scaling fused): 1.6 instead of 2.5 ms for both lattices of a 480x360 image, same
    values; XLA compiles once per bucket of lattice sizes (one XLA cluster for all directions fuses
    them into each other and was slower: 4.7 ms). ``directions``: :func:`_direction_tables` of the
    :func:`_pad_neighbours` table."""
    for lower, upper in directions:
        grid = _blur_direction_xla(grid, lower, upper)
    return grid


def _filter_ones(lat, jit_compile=False):
    """``lat.filter(ones((P, 1)))`` -- the per-pixel kernel sums -- as scalar segment sums and gathers
    (``jit_compile``: the slice, P (d+1) scalar gathers and their weighted sum, as one XLA loop)."""
    d1 = lat.dim + 1
    grid = tf.math.unsorted_segment_sum(
        tf.reshape(lat.weights, [-1]), tf.reshape(lat.vertex_index, [-1]), lat.num_vertices + 1
    )
    grid = _blur(grid, lat.neighbours, d1)
    if jit_compile:
        return lat.alpha * _slice_sum_xla(_pad_to_bucket(grid), lat.vertex_index, lat.weights)
    return lat.alpha * _slice_sum(grid, lat.vertex_index, lat.weights)


def _slice_sum(grid, vertex_index, weights):
    """``sum_k weights[:, k] * grid[vertex_index[:, k]]`` of a scalar per vertex ``grid``; (P, 1)."""
    return tf.reduce_sum(tf.gather(grid, vertex_index) * weights, axis=1, keepdims=True)


_slice_sum_xla = tf.function(_slice_sum, jit_compile=True)


def build_filters(
    image, theta_alpha, theta_beta, theta_gamma, normalization="after", jit_compile=False, tflite_builtins=False
):
    """Builds both lattices of a (B, H, W, 3) image batch once; returns a :class:`CRFFilters`."""
    for name, val in (("theta_alpha", theta_alpha), ("theta_beta", theta_beta), ("theta_gamma", theta_gamma)):
        if not float(val) > 0:
            raise ValueError(f"{name} must be > 0, got {val}")
    image = tf.stop_gradient(image)
    h, w = image.shape[1], image.shape[2]
    single = image.shape[0] == 1  # one image (statically): no image index in the lattice keys
    cached_spatial = h is not None and w is not None and not tflite_builtins  # size known: _grid_lattice
    if jit_compile and cached_spatial:
        # the bilateral features in one XLA pass, the spatial lattice from the cache
        # (the stds as tensors: as constants XLA turns the divisions into products, 1 ulp off)
        bil = _bilateral_features_xla(image, tf.constant(theta_alpha, tf.float32), tf.constant(theta_beta, tf.float32))
        group = None if single else tf.repeat(tf.range(tf.shape(image)[0]), int(h) * int(w))
    else:
        bil, spa, group = pixel_features(image, theta_alpha, theta_beta, theta_gamma)
        group = None if single else group
    if cached_spatial:
        batch = image.shape[0] if image.shape[0] is not None else tf.shape(image)[0]
        spatial = _grid_lattice(batch, int(h), int(w), float(theta_gamma))
    else:
        spatial = build_lattice(spa, group, jit_compile, tflite_builtins)
    return CRFFilters(build_lattice(bil, group, jit_compile, tflite_builtins), spatial, normalization, jit_compile)


_bilateral_features_xla = tf.function(_bilateral_features, jit_compile=True, reduce_retracing=True)


@functools.lru_cache(maxsize=16)
def _grid_lattice_arrays(h, w, theta_gamma):
    """The spatial kernel's lattice of one h x w image and its per-pixel kernel sums: they depend on
    the size only, so they are built once (eagerly, also while a tf.function traces) and kept as
    numpy arrays."""
    with tf.init_scope():
        _, spa, _ = pixel_features(tf.zeros([1, h, w, 3]), 1.0, 1.0, theta_gamma)
        lat = build_lattice(spa)
        return (lat.vertex_index.numpy(), lat.weights.numpy(), lat.neighbours.numpy(), int(lat.num_vertices),
                _filter_ones(lat).numpy())


def _grid_lattice(batch, h, w, theta_gamma):
    """:func:`build_lattice` of the spatial features of a batch of h x w images, from the cached one
    of a single image: image i's vertices are numbered i*M .. i*M + M - 1, as the grouped
    construction numbers them (its image index is the most significant digit of every key)."""
    vertex_index, weights, neighbours, m, kernel_sums = _grid_lattice_arrays(h, w, theta_gamma)
    d1 = vertex_index.shape[1]
    if isinstance(batch, int) and batch == 1:  # the cached arrays as they are: no offsets, no tiles
        return PermutohedralLattice(d1 - 1, tf.constant(vertex_index), tf.constant(weights), tf.constant(neighbours),
                                    tf.constant(m), kernel_sums=tf.constant(kernel_sums))
    offsets = tf.range(batch) * m
    vertex_index = tf.reshape(tf.constant(vertex_index)[None] + offsets[:, None, None], [-1, d1])
    weights = tf.reshape(tf.tile(tf.constant(weights)[None], [batch, 1, 1]), [-1, d1])
    total = batch * m
    nb = tf.constant(neighbours[:, :, :m])[:, :, None, :]  # (d1, 2, 1, M); M = "no vertex"
    nb = tf.where(nb == m, total, nb + offsets[None, None, :, None])
    nb = tf.concat([tf.reshape(nb, [d1, 2, -1]), tf.fill([d1, 2, 1], total)], axis=-1)
    kernel_sums = tf.tile(tf.constant(kernel_sums), [batch, 1])
    return PermutohedralLattice(d1 - 1, vertex_index, weights, nb, total, kernel_sums=kernel_sums)


def _sliced_message(grid, cols, slice_values):
    """The message at the pixels: ``sum_k slice_values[:, k] * grid[cols[:, k]]`` by row gathers.
    ``grid`` and ``cols`` may be tuples of blocks (block i's columns index block i's rows; the
    columns of ``slice_values`` in block order)."""
    blocks = zip(grid, cols) if isinstance(grid, (tuple, list)) else [(grid, cols)]
    msg, k0 = None, 0
    for g, c in blocks:
        for k in range(c.shape[1]):
            m = tf.gather(g, c[:, k]) * slice_values[:, k0 + k : k0 + k + 1]
            msg = m if msg is None else msg + m
        k0 += c.shape[1]
    return msg


def _label_chain(x, op, reduce):
    """``reduce(x, axis=-1, keepdims=True)`` as a chain of ``op`` over the label columns when the label
    count is static and small: XLA fuses that chain into one point-wise loop over a *stored* ``x``
    (the exponentials, the unary logits), where its reduce goes to a separate YNNPACK kernel (480x360,
    12 labels, one thread: the slice + softmax 3.9 vs 4.6 ms, the first softmax 4.2 vs 4.9 ms). Not
    for a fused ``x``: XLA would recompute ``x``'s producer for each column (the message's gathers in
    the standard slice + softmax: 4.2 -> 19.9 ms)."""
    n = x.shape[-1]
    if n is None or n > _COLUMN_CHAIN_MAX_LABELS:
        return reduce(x, axis=-1, keepdims=True)
    acc = x[..., :1]
    for k in range(1, n):
        acc = op(acc, x[..., k : k + 1])
    return acc


def _label_sum(e):
    """``reduce_sum(e, axis=-1, keepdims=True)`` of the stored exponentials (:func:`_label_chain`)."""
    return _label_chain(e, tf.add, tf.reduce_sum)


#: label counts up to this reduce over labels as a chain of column operations (:func:`_label_chain`)
_COLUMN_CHAIN_MAX_LABELS = 64


def _normalised(e):
    """``e / sum(e)`` over the last axis as one reciprocal per pixel and a product per label, where
    ``tf.nn.softmax`` divides every entry: under XLA on CPU 3.9 instead of 5.1 ms for the slice +
    softmax of a 480x360 image with 12 labels (one thread); results within 1 ulp of it."""
    return e * tf.math.reciprocal(_label_sum(e))


def _slice_softmax(grid, logits, cols, slice_values, compatibility=None):
    """``softmax(logits + pairwise)`` with the message sliced from the blurred lattice values
    ``grid`` (M, L) at the pixels (``cols``, ``slice_values``: (P, K) vertex ids and scaled
    barycentric weights) by gathers. Under XLA the gathers, the weighted sum, the compatibility and
    the softmax are one pass over the pixels."""
    msg = _sliced_message(grid, cols, slice_values)
    if compatibility is not None:
        msg = -tf.linalg.matmul(msg, compatibility, transpose_b=True)
    return _softmax(logits + msg)


def _softmax_and_shift(logits, stored=False):
    """``softmax(logits)`` and ``logits - max(logits)`` (per pixel) in one pass. ``stored``: the logits
    are an input, not computed in the same XLA function, so the max may be a column chain
    (:func:`_label_chain`)."""
    peak = _label_chain(logits, tf.maximum, tf.reduce_max) if stored else tf.reduce_max(logits, -1, keepdims=True)
    shifted = logits - peak
    return _normalised(tf.exp(shifted)), shifted


def _softmax(z):
    """Softmax over the last axis (see :func:`_normalised`)."""
    return _softmax_and_shift(z)[0]


def _slice_softmax_shifted(grid, shifted_logits, cols, slice_values):
    """:func:`_slice_softmax` without the per-iteration max: for messages known to lie in [0, b]
    with b small (:attr:`CRFFilters.weighted_sum`'s ``max_message``) and logits already shifted by
    their per-pixel maximum (once), ``z = shifted + msg <= b`` cannot overflow and the largest
    logit's label has ``z >= 0``, so the sum is >= 1. One reduce less per iteration (0.8 of 3.9 ms at
    480x360); results equal to the max-shifted softmax's to rounding."""
    return _normalised(tf.exp(shifted_logits + _sliced_message(grid, cols, slice_values)))


#: the largest message bound (sum of the kernel weights) for which the shifted softmax is used: exp(64) is
#: far from float32's overflow even summed over thousands of labels
_SHIFTED_MAX_MESSAGE = 64.0

_softmax_and_shift_xla = tf.function(functools.partial(_softmax_and_shift, stored=True), jit_compile=True)
_slice_softmax_xla = tf.function(_slice_softmax, jit_compile=True)
_slice_softmax_shifted_xla = tf.function(_slice_softmax_shifted, jit_compile=True)
_softmax_xla = tf.function(_softmax, jit_compile=True)


def _bucket(m):
    """The next multiple of max(128, 2^(floor(log2 m) - 3)) >= m: XLA compiles the slice once per
    bucket of lattice sizes, not once per image, for at most 12.5 % padding."""
    e = tf.maximum(tf.math.floor(tf.math.log(tf.cast(m, tf.float32)) / np.log(2.0)) - 3.0, 7.0)
    step = tf.cast(tf.pow(2.0, e), tf.int32)
    return (m + step - 1) // step * step


def _pad_to_bucket(grid):
    """Lattice values (M, ...) zero-padded along M to :func:`_bucket` (M): what the XLA slices take."""
    m = tf.shape(grid)[0]
    return tf.pad(grid, [[0, _bucket(m) - m]] + [[0, 0]] * (grid.shape.rank - 1))


def _mean_field_xla(unary_logits, message, num_iterations, compatibility=None):
    """:func:`mean_field` for a :meth:`CRFFilters.weighted_sum` message, its slice + softmax
    compiled by XLA. The splat (sparse product) and blur (gathers) stay in TensorFlow: XLA's CPU
    scatter and chained gathers measured slower. The blurred values are zero-padded to a bucket of
    sizes, so XLA compiles once per bucket, not once per image."""
    cols, slice_values = message.slice_table
    if getattr(message, "blocks", None) is not None:  # the blocks are bucket-padded already
        splat_blur, cols = message.blocks
    else:
        def splat_blur(q):
            return _pad_to_bucket(message.splat_blur(q))

    def shifted_loop():
        q, shifted = _softmax_and_shift_xla(unary_logits)
        for _ in range(int(num_iterations)):
            q = _slice_softmax_shifted_xla(splat_blur(q), shifted, cols, slice_values)
        return q

    def standard_loop():
        q = _softmax_xla(unary_logits)
        extra = () if compatibility is None else (compatibility,)
        for _ in range(int(num_iterations)):
            q = _slice_softmax_xla(splat_blur(q), unary_logits, cols, slice_values, *extra)
        return q

    bound = getattr(message, "max_message", None)
    if compatibility is not None or bound is None or int(num_iterations) == 0:
        return standard_loop()
    if callable(bound):  # a bound known only at run time (symmetric or no normalisation): checked there
        return tf.cond(bound() <= _SHIFTED_MAX_MESSAGE, shifted_loop, standard_loop)
    return shifted_loop() if bound <= _SHIFTED_MAX_MESSAGE else standard_loop()


def mean_field(unary_logits, messages, num_iterations, compatibility=None):
    """The mean-field loop with pluggable message passing (so tests can plug exact filters).

    Args:
        unary_logits: (P, L) float32, ``-psi_u`` (log-probabilities or logits).
        messages: list of ``(fn, weight)``; ``fn(Q) -> (P, L)`` is a normalised kernel's message,
            ``weight`` its scalar weight w_m.
        num_iterations: number of updates (>= 0).
        compatibility: None for Potts, else an (L, L) label compatibility ``mu`` (an energy:
            ``mu[l, l']`` is the cost of labels l and l' at similar pixels).

    Returns:
        Q (P, L), the marginals after ``num_iterations`` updates.
    """
    q = tf.nn.softmax(unary_logits, axis=-1)
    for _ in range(int(num_iterations)):
        msg = None
        for fn, weight in messages:
            m = weight * fn(q)
            msg = m if msg is None else msg + m
        if compatibility is None:
            pairwise = msg
        else:
            pairwise = -tf.linalg.matmul(msg, compatibility, transpose_b=True)
        q = tf.nn.softmax(unary_logits + pairwise, axis=-1)
    return q


def dense_crf(
    unary,
    image,
    num_iterations=10,
    theta_alpha=DEEPLAB_LARGEFOV["theta_alpha"],
    theta_beta=DEEPLAB_LARGEFOV["theta_beta"],
    theta_gamma=DEEPLAB_LARGEFOV["theta_gamma"],
    bilateral_weight=DEEPLAB_LARGEFOV["bilateral_weight"],
    spatial_weight=DEEPLAB_LARGEFOV["spatial_weight"],
    compatibility=None,
    unary_is="logits",
    normalization="after",
    jit_compile=False,
    tflite_builtins=False,
):
    """Fully connected CRF mean-field inference (Krähenbühl & Koltun 2011) from stock TF ops.

    ``unary (H, W, L) or (B, H, W, L) float32, image uint8 (H, W, 3) -> Q of the same shape as unary``

    (a batched unary takes a batched image (B, H, W, 3), filtered one image at a time in a
    ``tf.map_fn`` unless B is 1 or ``tflite_builtins``; the image may be any numeric dtype with
    colours in [0, 255]). Both Gaussian kernels are permutohedral-lattice filters (see
    :mod:`kseg.crf.lattice`): the lattices are built once per call into int32 index tables (each
    pixel's d+1 vertex ids and barycentric weights, each vertex's blur neighbours), shared by all
    iterations and all labels (filtered as one (pixels, labels) matrix); an iteration is one sparse
    splat of both kernels, gathers along the blur directions, one sparse slice and the softmax. The
    smoothness kernel uses a 2-D lattice as the authors' code does (built once per image size). No custom op and no
    Python callback: it works eagerly, in ``tf.function`` and inside a SavedModel. TF-only code.
    TFLite: the default splat/slice op ``SparseTensorDenseMatMul`` is not a TFLite builtin (Flex
    only); with ``tflite_builtins=True`` every op is a builtin.

    Defaults are DeepLab-v1 DeepLab-LargeFOV's published CRF parameters (Chen et al., ICLR 2015;
    released ``run_densecrf.sh``: bi_w=4, bi_xy_std=121, bi_rgb_std=5, pos_w=3, pos_xy_std=3,
    10 iterations).

    Args:
        unary: (H, W, L) or (B, H, W, L) float32 class scores.
        image: (H, W, 3) or (B, H, W, 3) RGB, uint8 or float in [0, 255].
        num_iterations: mean-field updates (Krähenbühl's ``inference(n)``).
        theta_alpha: bilateral kernel position std in pixels (DeepLab's bi_xy_std).
        theta_beta: bilateral kernel colour std (bi_rgb_std).
        theta_gamma: spatial kernel std in pixels (pos_xy_std).
        bilateral_weight: w1 (bi_w).
        spatial_weight: w2 (pos_w).
        compatibility: None (Potts) or an (L, L) label-compatibility energy matrix.
        unary_is: ``"logits"`` (unary = -energy up to a per-pixel constant) or ``"probabilities"``
            (energy = -log p, clipped at 1e-8).
        normalization: how each kernel's message is normalised per pixel. Each model uses its
            authors' code's normalisation:
            ``"after"`` (default): ``n_i sum_j k_ij Q_j`` with ``n_i = 1 / sum_j k_ij`` -- the 2011
            release of Krähenbühl's code (``PottsPotential(..., per_pixel_normalization=true)``).
            **DeepLab** v1/v2 (``densecrf/`` in the authors' Caffe fork: libDenseCRF "Copyright
            2011", ``dense_inference.cpp`` calls the 2011 API ``addPairwiseGaussian(px, py, w)`` /
            ``addPairwiseBilateral(bx, by, br, bg, bb, img, w)``, whose Potts potential normalises
            per pixel) and **CRF-as-RNN** (Caffe ``MeanfieldIteration``: the spatial and bilateral
            outputs divided by the filtered ones) both use it, so it is the default here, of
            :class:`kseg.layers.DenseCRF` (DeepLab's ``crf=True``) and of ``CRFRNN``.
            ``"symmetric"``: ``sqrt(n_i) sum_j k_ij sqrt(n_j) Q_j`` -- the default of Krähenbühl's
            2013 release (``NORMALIZE_SYMMETRIC``) and so of pydensecrf; no model here was published
            with it. On CamVid at 480x360 it labels ~3 % of pixels differently from ``"after"``:
            compare with pydensecrf in the same mode (both agree with it on >= 99.99 % of pixels).
            ``"none"``: one global factor, the inverse mean of ``sum_j k_ij`` (``NO_NORMALIZATION``).
        jit_compile: compile with XLA the point-wise part of lattice construction and, per
            mean-field iteration, the slice + softmax (once per bucket of lattice sizes; the graph
            then needs XLA's JIT kernels wherever it is served). CPU cost at 480x360, 12 labels,
            10 iterations (``benchmarks/dense_crf_cpu.py --paired``): with XLA on one TensorFlow
            thread ~0.47x the CPU-seconds of Krähenbühl's single-threaded C++ (960x720: ~0.45x;
            symmetric normalisation ~0.5x), ~0.9x without; TensorFlow's default thread pools lower
            the wall time but spend more CPU-seconds.
        tflite_builtins: splat/slice with gather + segment sums so that every op converts to a
            TFLite builtin (same result, ~2-3x slower in TensorFlow).

    Returns:
        Q: marginals, float32, same shape as ``unary``.

    Example:
        >>> import numpy as np
        >>> from kseg.crf import dense_crf
        >>> image = np.random.randint(0, 255, (24, 32, 3), np.uint8)
        >>> logits = np.random.randn(24, 32, 4).astype("float32")
        >>> q = dense_crf(logits, image, num_iterations=5)
        >>> q.shape, bool(np.allclose(np.sum(q, -1), 1, atol=1e-5))
        (TensorShape([24, 32, 4]), True)
    """
    if unary_is not in ("logits", "probabilities"):
        raise ValueError(f"unary_is must be 'logits' or 'probabilities', got {unary_is!r}")
    if int(num_iterations) < 0:
        raise ValueError(f"num_iterations must be >= 0, got {num_iterations}")
    unary = tf.convert_to_tensor(unary)
    if not unary.dtype.is_floating:
        raise ValueError(f"unary must be float, got dtype {unary.dtype.name}")
    unary = tf.cast(unary, tf.float32)
    image = tf.convert_to_tensor(image)
    rank = unary.shape.rank
    if rank not in (3, 4):
        raise ValueError(f"unary must be (H, W, L) or (B, H, W, L), got shape {unary.shape}")
    if image.shape.rank != rank or (image.shape[-1] is not None and image.shape[-1] != 3):
        want = "(H, W, 3)" if rank == 3 else "(B, H, W, 3)"
        raise ValueError(f"image must be {want} to match unary {unary.shape}, got {image.shape}")
    batched = rank == 4
    if batched and unary.shape[0] is not None and image.shape[0] is not None and unary.shape[0] != image.shape[0]:
        raise ValueError(
            f"unary and image must hold the same number of images, got {unary.shape[0]} and {image.shape[0]}")
    if batched and unary.shape[0] != 1 and not tflite_builtins:
        # One image at a time: a joint lattice over B images costs more per image as B grows (bigger
        # hash tables and gathers: 0.144 vs 0.117 CPU-s per 480x360 image at B = 4, XLA, one thread);
        # in a loop each costs what it costs alone, and a graph runs the iterations on parallel threads.
        options = dict(num_iterations=num_iterations, theta_alpha=theta_alpha, theta_beta=theta_beta,
                       theta_gamma=theta_gamma, bilateral_weight=bilateral_weight, spatial_weight=spatial_weight,
                       compatibility=compatibility, unary_is=unary_is, normalization=normalization,
                       jit_compile=jit_compile)
        return tf.map_fn(lambda pair: dense_crf(pair[0], pair[1], **options), (unary, image),
                         fn_output_signature=tf.float32)
    if not batched:
        unary, image = unary[None], image[None]
    shape = tf.shape(unary)
    logits = tf.reshape(unary, [-1, shape[-1]])
    if unary_is == "probabilities":
        logits = tf.math.log(tf.maximum(logits, 1e-8))
    filters = build_filters(image, theta_alpha, theta_beta, theta_gamma, normalization, jit_compile, tflite_builtins)
    compat = None if compatibility is None else tf.convert_to_tensor(compatibility, tf.float32)
    message = filters.weighted_sum(float(bilateral_weight), float(spatial_weight))
    if jit_compile and hasattr(message, "splat_blur"):
        q = _mean_field_xla(logits, message, num_iterations, compat)
    else:
        q = mean_field(logits, [(message, 1.0)], num_iterations, compat)
    q = tf.reshape(q, shape)
    return q if batched else q[0]
