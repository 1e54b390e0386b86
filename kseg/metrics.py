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

import numbers

import keras
import numpy as np
from keras import ops

__all__ = [
    "ConfusionMatrix",
    "GlobalAccuracy",
    "ClassAverageAccuracy",
    "MeanIoU",
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
        f"{prefix}{'id':>3}  {'class':<20} {'IoU':>7} {'acc':>7} {'pixels':>11}",
    ]
    for row in scores["per_class"]:
        lines.append(
            f"{prefix}{row['class']:>3}  {row['name'][:20]:<20} {row['iou']:>7.4f} {row['accuracy']:>7.4f} "
            f"{row['pixels']:>11d}"
        )
    return "\n".join(lines)
