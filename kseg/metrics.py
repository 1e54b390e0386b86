"""The SegNet paper's three segmentation metrics, as Keras metrics on logits and integer labels.

Badrinarayanan, Kendall & Cipolla, "SegNet", PAMI 2017, Sec. 4 ("global accuracy (G) which
measures the percentage of pixels correctly classified in the dataset, class average accuracy (C)
is the mean of the predictive accuracy over all classes and mean intersection over union (mIoU)
over all classes"). All three come from one confusion matrix ``cm[true, predicted]`` of pixel
counts, with the void label left out:

- global accuracy ``G = trace(cm) / sum(cm)``,
- class-average accuracy ``C = mean_c cm[c, c] / sum_j cm[c, j]``,
- mean IoU ``mean_c cm[c, c] / (sum_j cm[c, j] + sum_i cm[i, c] - cm[c, c])``
  (:class:`MeanIoU`, which is ``keras.metrics.MeanIoU`` itself).

Classes with no ground-truth pixels (and, for IoU, no predictions either) are left out of the
means, as ``keras.metrics.MeanIoU`` does.

``sample_weight`` is ignored by all three: the data pipeline's per-pixel weights are class
weights for the *loss*; the paper's metrics count every labelled pixel once. (Keras passes the
dataset's third element to the compiled metrics too, and ``keras.metrics.MeanIoU`` would
truncate float weights to integers.)

Example:
    >>> import numpy as np, kseg
    >>> labels = np.array([[0, 1, 11]])                       # 11 = CamVid void
    >>> logits = np.eye(11)[np.array([[0, 0, 3]])]             # predicts 0, 0, 3
    >>> m = kseg.metrics.GlobalAccuracy(num_classes=11, ignore_class=11)
    >>> float(m(labels, logits))
    0.5
"""

import math
import numbers

import keras
import numpy as np
from keras import ops

__all__ = [
    "ConfusionMatrix",
    "GlobalAccuracy",
    "ClassAverageAccuracy",
    "MeanIoU",
    "BoundaryF1Score",
    "boundary_f1_numpy",
    "segmentation_metrics",
    "scores_from_confusion_matrix",
    "format_scores",
]


def _check(num_classes, ignore_class):
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if ignore_class is not None and (isinstance(ignore_class, bool) or not isinstance(ignore_class, numbers.Integral)):
        raise ValueError(f"ignore_class must be an integer or None, got {ignore_class!r}")


@keras.saving.register_keras_serializable(package="kseg")
class ConfusionMatrix(keras.metrics.Metric):
    """Accumulates ``cm[true, predicted]`` pixel counts from logits and integer labels.

    Pixels whose label is `ignore_class`, negative or ``>= num_classes`` are not counted.
    :meth:`result` returns the matrix; subclasses reduce it to a scalar.

    Args:
        num_classes: number of classes (the logits' last axis).
        ignore_class: label left out (CamVid void: 11), or ``None``.
        name, dtype: as for any Keras metric.

    Example:
        >>> m = ConfusionMatrix(num_classes=2)
        >>> m.update_state([[0, 1]], [[[2.0, 0.0], [3.0, 1.0]]])
        >>> np.asarray(m.result()).tolist()
        [[1, 0], [1, 0]]
    """

    def __init__(self, num_classes, ignore_class=None, name="confusion_matrix", dtype=None):
        _check(num_classes, ignore_class)
        super().__init__(name=name, dtype=dtype or "int32")
        self.num_classes = int(num_classes)
        self.ignore_class = None if ignore_class is None else int(ignore_class)
        self._direction = "up"
        self.total_cm = self.add_variable(
            name="total_confusion_matrix",
            shape=(self.num_classes, self.num_classes),
            initializer=keras.initializers.Zeros(),
            dtype=self.dtype,
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Adds a batch: `y_true` int labels ``(..., )``, `y_pred` logits ``(..., num_classes)``.

        `sample_weight` is accepted (Keras passes it) and ignored: see the module docstring.
        """
        del sample_weight
        n = self.num_classes
        y_pred = ops.reshape(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), [-1])
        y_true = ops.reshape(ops.cast(y_true, "int32"), [-1])
        valid = ops.logical_and(ops.greater_equal(y_true, 0), ops.less(y_true, n))
        if self.ignore_class is not None:
            valid = ops.logical_and(valid, ops.not_equal(y_true, self.ignore_class))
        index = ops.where(valid, y_true * n + y_pred, 0)
        counts = ops.segment_sum(ops.cast(valid, self.dtype), index, num_segments=n * n, sorted=False)
        self.total_cm.assign_add(ops.reshape(counts, (n, n)))

    def result(self):
        return ops.copy(self.total_cm)

    def reset_state(self):
        self.total_cm.assign(ops.zeros(self.total_cm.shape, dtype=self.total_cm.dtype))

    def get_config(self):
        return {
            "num_classes": self.num_classes,
            "ignore_class": self.ignore_class,
            "name": self.name,
            "dtype": self.dtype,
        }


@keras.saving.register_keras_serializable(package="kseg")
class GlobalAccuracy(ConfusionMatrix):
    """Global pixel accuracy G: correctly classified labelled pixels / labelled pixels (SegNet Sec. 4)."""

    def __init__(self, num_classes, ignore_class=None, name="global_accuracy", dtype=None):
        super().__init__(num_classes, ignore_class, name=name, dtype=dtype)

    def result(self):
        cm = ops.cast(self.total_cm, "float32")
        return ops.divide_no_nan(ops.trace(cm), ops.sum(cm))


@keras.saving.register_keras_serializable(package="kseg")
class ClassAverageAccuracy(ConfusionMatrix):
    """Class-average accuracy C: mean over classes of per-class recall (SegNet Sec. 4).

    Classes without ground-truth pixels are left out of the mean.
    """

    def __init__(self, num_classes, ignore_class=None, name="class_average_accuracy", dtype=None):
        super().__init__(num_classes, ignore_class, name=name, dtype=dtype)

    def result(self):
        cm = ops.cast(self.total_cm, "float32")
        support = ops.sum(cm, axis=1)
        present = ops.cast(ops.greater(support, 0), "float32")
        recall = ops.divide_no_nan(ops.diagonal(cm), support)
        return ops.divide_no_nan(ops.sum(recall * present), ops.sum(present))


@keras.saving.register_keras_serializable(package="kseg")
class MeanIoU(keras.metrics.MeanIoU):
    """``keras.metrics.MeanIoU`` on logits (``sparse_y_pred=False``) that ignores ``sample_weight``.

    The computation is Keras' own; only two defaults differ: predictions are logits, and the
    pipeline's per-pixel class weights (meant for the loss) are not applied to the metric.
    """

    def __init__(self, num_classes, ignore_class=None, sparse_y_pred=False, name="mean_iou", dtype=None, **kwargs):
        _check(num_classes, ignore_class)
        super().__init__(
            num_classes=int(num_classes),
            ignore_class=None if ignore_class is None else int(ignore_class),
            sparse_y_pred=sparse_y_pred,
            name=name,
            dtype=dtype,
            **kwargs,
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(y_true, y_pred, sample_weight=None)


# ------------------------------------------------------------------------------------------------
# Boundary F1 (BF): the semantic contour score of Csurka, Larlus & Perronnin (BMVC 2013), as SegNet
# reports it (PAMI 2017, Sec. 3.3).
#
# Definitions shared by the Keras metric and the numpy function (and their tests):
# * pixels labelled `ignore_class`, < 0 or >= num_classes are void; the prediction there is replaced
#   by void too, so void regions look the same in both maps and are never scored;
# * the boundary of class c is the set of its pixels with a 4-neighbour (inside the image) of
#   another label (void included); the image border is not a boundary;
# * a boundary pixel is matched if a boundary pixel of the same class in the other map lies at a
#   Euclidean distance < theta = tolerance * image diagonal (SegNet: 0.75%: 4.5 px at 360 x 480);
# * precision P_c = matched predicted / predicted boundary pixels, recall R_c = matched ground-truth /
#   ground-truth boundary pixels (0 when the denominator is 0), F1_c = 2 P R / (P + R) (0 when P + R = 0),
#   except that a class with no boundary in either map (it fills the valid area) scores 1;
# * an image's score is the mean F1_c over the classes present in its ground truth ("The F1-measure
#   for each class that is present in the ground truth test image is averaged to produce an image
#   F1-measure"); classes only predicted do not enter it; images without a labelled pixel are skipped;
# * BF is the mean of the image scores over the images.


def _disk_offsets(theta):
    r = int(math.ceil(theta))
    return [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if dy * dy + dx * dx < theta * theta]


def boundary_f1_numpy(labels, preds, num_classes, ignore_class=None, tolerance=0.0075, per_image=False):
    """The boundary F1 score (BF, SegNet PAMI 2017 Sec. 3.3) of a batch, in numpy.

    Same definition as :class:`BoundaryF1Score` (see the comment above it in this module), vectorised
    over the batch (one comparison of shifted label maps per offset of the tolerance disk).

    Args:
        labels: int ground truth ``(N, H, W)`` (or one ``(H, W)`` map).
        preds: int predictions of the same shape, or logits / scores ``(N, H, W, num_classes)``.
        num_classes: number of classes.
        ignore_class: void label (CamVid: 11) or ``None``; labels outside ``[0, num_classes)`` are void too.
        tolerance: distance tolerance as a fraction of the image diagonal (SegNet: 0.0075).
        per_image: also return the per-image scores (``nan`` for images without labelled pixels).

    Returns:
        BF, the mean of the image scores (``nan`` if no image has a labelled pixel); with
        ``per_image=True`` a pair ``(bf, scores)``.

    Example:
        >>> gt = np.zeros((1, 8, 8), int); gt[:, :, 4:] = 1
        >>> round(boundary_f1_numpy(gt, gt, 2), 3)
        1.0
    """
    _check(num_classes, ignore_class)
    k = int(num_classes)
    labels = np.asarray(labels)
    preds = np.asarray(preds)
    if preds.ndim == labels.ndim + 1:
        preds = preds.argmax(-1)
    if labels.ndim == 2:
        labels, preds = labels[None], preds[None]
    if labels.ndim != 3 or preds.shape != labels.shape:
        raise ValueError(f"labels must be (N, H, W) and preds the same shape (or + classes), got {labels.shape} "
                         f"and {preds.shape}")
    n, h, w = labels.shape
    valid = (labels >= 0) & (labels < k)
    if ignore_class is not None:
        valid &= labels != ignore_class
    # int32 first: numpy >= 2.5 refuses -1 beside uint8 labels (NEP 50)
    gt = np.where(valid, labels.astype(np.int32), -1)
    pr = np.where(valid, preds.astype(np.int32), -1)
    theta = float(tolerance) * math.hypot(h, w)
    offsets = _disk_offsets(theta)

    def boundary(lab):
        b = np.zeros(lab.shape, bool)
        d = lab[:, 1:] != lab[:, :-1]
        b[:, 1:] |= d
        b[:, :-1] |= d
        d = lab[:, :, 1:] != lab[:, :, :-1]
        b[:, :, 1:] |= d
        b[:, :, :-1] |= d
        return np.where(b & (lab >= 0), lab, -1)

    bg, bp = boundary(gt), boundary(pr)
    # Labels as uint8 with 255 = "not a boundary pixel" (int16 beyond 255 classes).
    small = np.uint8 if k < 255 else np.int32
    none = np.iinfo(small).max
    bg = np.where(bg >= 0, bg, none).astype(small)
    bp = np.where(bp >= 0, bp, none).astype(small)
    hit_p = np.zeros((n, h, w), bool)  # predicted boundary pixel with a true one of its class within theta
    hit_g = np.zeros((n, h, w), bool)
    for i in range(0, n, 8):  # a few images at a time stay in cache
        im = slice(i, i + 8)
        for dy, dx in offsets:  # contiguous shifted slices: no gathers, cost independent of the boundary length
            ys, yd = slice(max(dy, 0), h + min(dy, 0)), slice(max(-dy, 0), h + min(-dy, 0))
            xs, xd = slice(max(dx, 0), w + min(dx, 0)), slice(max(-dx, 0), w + min(-dx, 0))
            # A predicted boundary pixel at z and a true one at z + d of the same class match each other.
            same = bp[im, yd, xd] == bg[im, ys, xs]
            np.logical_or(hit_p[im, yd, xd], same, out=hit_p[im, yd, xd])
            np.logical_or(hit_g[im, ys, xs], same, out=hit_g[im, ys, xs])

    def counts(b, hit):
        on = b != none
        img = np.broadcast_to(np.arange(n)[:, None, None], b.shape)[on]
        key = img * k + b[on]
        return (np.bincount(key, minlength=n * k).reshape(n, k),
                np.bincount(key[hit[on]], minlength=n * k).reshape(n, k))

    nb_p, tp_p = counts(bp, hit_p)
    nb_g, tp_g = counts(bg, hit_g)
    img = np.broadcast_to(np.arange(n)[:, None, None], gt.shape)
    present = np.bincount((img * k + gt)[valid], minlength=n * k).reshape(n, k) > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(nb_p > 0, tp_p / np.maximum(nb_p, 1), 0.0)
        rc = np.where(nb_g > 0, tp_g / np.maximum(nb_g, 1), 0.0)
        f1 = np.where(p + rc > 0, 2 * p * rc / np.where(p + rc > 0, p + rc, 1), 0.0)
    f1 = np.where((nb_p == 0) & (nb_g == 0), 1.0, f1)
    n_present = present.sum(1)
    scores = np.where(n_present > 0, (f1 * present).sum(1) / np.maximum(n_present, 1), np.nan)
    bf = float(np.nanmean(scores)) if (n_present > 0).any() else float("nan")
    return (bf, scores) if per_image else bf


@keras.saving.register_keras_serializable(package="kseg")
class BoundaryF1Score(keras.metrics.Metric):
    """Boundary F1 score "BF" (Csurka et al. BMVC 2013, as in SegNet PAMI 2017 Sec. 3.3) on logits and labels.

    Per image and per class present in its ground truth: precision and recall of the predicted
    class boundary against the true one, a pixel counting as matched within a distance of
    `tolerance` times the image diagonal; F1 per class, averaged over those classes, then over
    images. The exact conventions (void, empty boundaries) are in the comment above
    :func:`boundary_f1_numpy`, which computes the same number in numpy.

    Written in ``keras.ops`` (runs on every backend): boundaries by comparing 4-neighbours, the
    distance tolerance by a depthwise convolution of each class's boundary map with a disk.
    The disk needs a static radius: known image sizes give it exactly; for sizes known only at
    run time (a TF graph with ``None`` sizes) the disk is built on a ``max_radius`` grid from the
    run-time diagonal (exact up to images of diagonal ``max_radius / tolerance``).

    Args:
        num_classes: number of classes (the logits' last axis).
        ignore_class: void label (CamVid: 11) or ``None``.
        tolerance: fraction of the image diagonal (SegNet: 0.0075).
        max_radius: disk grid radius for run-time image sizes.
        name, dtype: as for any Keras metric.

    Example:
        >>> labels = np.zeros((1, 8, 8), "int32"); labels[:, :, 4:] = 1
        >>> m = BoundaryF1Score(num_classes=2)
        >>> float(m(labels, np.eye(2)[labels]))
        1.0
    """

    def __init__(self, num_classes, ignore_class=None, tolerance=0.0075, max_radius=16, name="boundary_f1",
                 dtype=None):
        _check(num_classes, ignore_class)
        if not 0 < float(tolerance) < 1:
            raise ValueError(f"tolerance must be a fraction of the image diagonal in (0, 1), got {tolerance}")
        super().__init__(name=name, dtype=dtype or "float32")
        self.num_classes = int(num_classes)
        self.ignore_class = None if ignore_class is None else int(ignore_class)
        self.tolerance = float(tolerance)
        self.max_radius = int(max_radius)
        self._direction = "up"
        self.total = self.add_variable(name="total", shape=(), initializer="zeros", dtype=self.dtype)
        self.count = self.add_variable(name="count", shape=(), initializer="zeros", dtype=self.dtype)

    def _disk(self, h, w):
        k = self.num_classes
        if isinstance(h, int) and isinstance(w, int):
            theta = self.tolerance * math.hypot(h, w)
            r = int(math.ceil(theta))
            grid = np.arange(-r, r + 1)
            disk = (grid[:, None] ** 2 + grid[None, :] ** 2 < theta * theta).astype("float32")
            return ops.convert_to_tensor(np.repeat(disk[:, :, None, None], k, axis=2))
        r = self.max_radius
        theta = self.tolerance * ops.sqrt(ops.cast(h, "float32") ** 2 + ops.cast(w, "float32") ** 2)
        grid = ops.cast(ops.arange(-r, r + 1), "float32")
        disk = ops.cast(ops.less(grid[:, None] ** 2 + grid[None, :] ** 2, theta * theta), "float32")
        return ops.tile(disk[:, :, None, None], (1, 1, k, 1))

    @staticmethod
    def _boundary(lab):
        def differs(a, b):
            return ops.not_equal(a, b)

        up = ops.concatenate([lab[:, :1], lab[:, :-1]], axis=1)
        down = ops.concatenate([lab[:, 1:], lab[:, -1:]], axis=1)
        left = ops.concatenate([lab[:, :, :1], lab[:, :, :-1]], axis=2)
        right = ops.concatenate([lab[:, :, 1:], lab[:, :, -1:]], axis=2)
        b = ops.logical_or(ops.logical_or(differs(lab, up), differs(lab, down)),
                           ops.logical_or(differs(lab, left), differs(lab, right)))
        return ops.logical_and(b, ops.greater_equal(lab, 0))

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Adds a batch: `y_true` int labels ``(B, H, W)`` (or ``(B, H, W, 1)``), `y_pred` logits ``(B, H, W, K)``.

        `sample_weight` is accepted (Keras passes it) and ignored, as for the other metrics.
        """
        del sample_weight
        k = self.num_classes
        y_true = ops.cast(y_true, "int32")
        if len(y_true.shape) == 4:
            y_true = y_true[..., 0]
        pred = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
        valid = ops.logical_and(ops.greater_equal(y_true, 0), ops.less(y_true, k))
        if self.ignore_class is not None:
            valid = ops.logical_and(valid, ops.not_equal(y_true, self.ignore_class))
        gt = ops.where(valid, y_true, -1)
        pr = ops.where(valid, pred, -1)
        h, w = y_true.shape[1], y_true.shape[2]
        if h is None or w is None:
            h, w = ops.shape(y_true)[1], ops.shape(y_true)[2]
        disk = self._disk(h, w)

        def onehot(b, lab):  # (B, H, W, K) float, 1 at boundary pixels of each class
            return ops.one_hot(ops.where(b, lab, k), k + 1, dtype="float32")[..., :k]

        bg, bp = onehot(self._boundary(gt), gt), onehot(self._boundary(pr), pr)
        near_g = ops.cast(ops.greater(ops.depthwise_conv(bg, disk, padding="same"), 0.5), "float32")
        near_p = ops.cast(ops.greater(ops.depthwise_conv(bp, disk, padding="same"), 0.5), "float32")
        nb_p, nb_g = ops.sum(bp, axis=(1, 2)), ops.sum(bg, axis=(1, 2))
        tp_p, tp_g = ops.sum(bp * near_g, axis=(1, 2)), ops.sum(bg * near_p, axis=(1, 2))
        p = ops.divide_no_nan(tp_p, nb_p)
        r = ops.divide_no_nan(tp_g, nb_g)
        f1 = ops.divide_no_nan(2.0 * p * r, p + r)
        both_empty = ops.logical_and(ops.equal(nb_p, 0.0), ops.equal(nb_g, 0.0))
        f1 = ops.where(both_empty, 1.0, f1)
        present = ops.cast(ops.greater(ops.sum(ops.one_hot(ops.where(valid, gt, k), k + 1, dtype="float32")[..., :k],
                                               axis=(1, 2)), 0.0), "float32")
        counts = ops.sum(present, axis=1)
        image = ops.divide_no_nan(ops.sum(f1 * present, axis=1), counts)
        scored = ops.cast(ops.greater(counts, 0.0), "float32")
        self.total.assign_add(ops.cast(ops.sum(image * scored), self.dtype))
        self.count.assign_add(ops.cast(ops.sum(scored), self.dtype))

    def result(self):
        return ops.divide_no_nan(self.total, self.count)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {"num_classes": self.num_classes, "ignore_class": self.ignore_class, "tolerance": self.tolerance,
                "max_radius": self.max_radius, "name": self.name, "dtype": self.dtype}


def segmentation_metrics(num_classes, ignore_class=None):
    """The paper's three metrics, ready for ``model.compile(metrics=...)``."""
    return [
        GlobalAccuracy(num_classes, ignore_class),
        ClassAverageAccuracy(num_classes, ignore_class),
        MeanIoU(num_classes, ignore_class),
    ]


def scores_from_confusion_matrix(cm, class_names=None):
    """All scores of a confusion matrix ``cm[true, predicted]`` (numpy), as a dict.

    Returns:
        ``{"global_accuracy", "class_average_accuracy", "mean_iou"}`` (floats) and
        ``"per_class"``: a list of ``{"class", "name", "iou", "accuracy", "pixels"}``, one per class;
        ``iou`` / ``accuracy`` are ``nan`` for a class with no ground-truth (and no predicted)
        pixels, and such classes are left out of the means.

    Example:
        >>> s = scores_from_confusion_matrix([[3, 1], [0, 4]])
        >>> round(s["global_accuracy"], 3), round(s["mean_iou"], 3)
        (0.875, 0.775)
    """
    cm = np.asarray(cm, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {cm.shape}")
    n = cm.shape[0]
    if class_names is None:
        class_names = [str(i) for i in range(n)]
    if len(class_names) < n:
        raise ValueError(f"need {n} class names, got {len(class_names)}")
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    union = support + cm.sum(axis=0) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(support > 0, tp / support, np.nan)
        iou = np.where(union > 0, tp / union, np.nan)
    total = cm.sum()
    return {
        "global_accuracy": float(tp.sum() / total) if total > 0 else float("nan"),
        "class_average_accuracy": float(np.nanmean(acc)) if np.any(support > 0) else float("nan"),
        "mean_iou": float(np.nanmean(iou)) if np.any(union > 0) else float("nan"),
        "per_class": [
            {"class": i, "name": class_names[i], "iou": float(iou[i]), "accuracy": float(acc[i]),
             "pixels": int(support[i])}
            for i in range(n)
        ],
    }


def format_scores(scores, prefix=""):
    """A plain-text table of :func:`scores_from_confusion_matrix`'s output, one line per row.

    Every line starts with `prefix` (the demo uses it to label synthetic-data results).
    """
    lines = [
        f"{prefix}global accuracy        {scores['global_accuracy']:.4f}",
        f"{prefix}class-average accuracy {scores['class_average_accuracy']:.4f}",
        f"{prefix}mean IoU               {scores['mean_iou']:.4f}",
    ]
    if "boundary_f1" in scores:  # kseg.training.evaluate adds it
        lines.append(f"{prefix}boundary F1 (BF)       {scores['boundary_f1']:.4f}")
    lines += [
        f"{prefix}{'id':>3}  {'class':<20} {'IoU':>7} {'acc':>7} {'pixels':>11}",
    ]
    for row in scores["per_class"]:
        lines.append(
            f"{prefix}{row['class']:>3}  {row['name'][:20]:<20} {row['iou']:>7.4f} {row['accuracy']:>7.4f} "
            f"{row['pixels']:>11d}"
        )
    return "\n".join(lines)
