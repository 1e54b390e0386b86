"""The segmentation loss: per-pixel softmax cross-entropy that ignores void and takes class weights.

SegNet (Badrinarayanan et al., PAMI 2017, Sec. 4) trains with "cross-entropy loss ... summed up
over all the pixels in a mini-batch", uses median frequency balancing (Eigen & Fergus, ICCV 2015)
and, in the SegNet-Tutorial prototxt, ``loss_param { ignore_class: 11 }`` with
``class_weighting``. Here that is exactly Keras' own loss:

- ``keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=...)`` for the
  cross-entropy on logits with the void label ignored;
- the class weights arrive as per-pixel ``sample_weight`` from the data pipeline
  (``kseg.data.segmentation_dataset(..., class_weights=...)`` yields
  ``(images, masks, pixel_weights)``), which ``model.fit`` hands to the loss.

With the default ``"sum_over_batch_size"`` reduction the value is
``sum_{valid p} w_p * CE_p / #valid`` (void pixels contribute nothing to the sum nor the count).

Example:
    >>> import numpy as np, kseg
    >>> loss = kseg.losses.segmentation_loss(ignore_class=11)
    >>> labels = np.array([[0, 11]]); logits = np.zeros((1, 2, 11), "float32")
    >>> round(float(loss(labels, logits)), 4)  # only the first pixel counts: -log(1/11)
    2.3979
"""

import numbers

import keras
from kseg.utils import renamed_argument

__all__ = ["segmentation_loss", "SparseDiceLoss", "SparseFocalLoss", "get_loss", "LOSSES"]

#: the names ``get_loss`` / ``kseg train --loss`` accept
LOSSES = ("cross_entropy", "dice", "focal")


@renamed_argument("ignore_label", "ignore_class")
def segmentation_loss(ignore_class=None, name="segmentation_loss"):
    """``SparseCategoricalCrossentropy(from_logits=True, ignore_class=ignore_class)``.

    Args:
        ignore_class: label whose pixels contribute nothing (CamVid void: 11), or ``None``.
        name: loss name.

    Returns:
        A stock ``keras.losses.SparseCategoricalCrossentropy`` (so compiled ``.keras`` files load
        with ``safe_mode=True`` and no custom objects). Pass class weights as per-pixel
        ``sample_weight`` (the pipeline's third element).
    """
    if ignore_class is not None:
        if isinstance(ignore_class, bool) or not isinstance(ignore_class, numbers.Integral):
            raise ValueError(f"ignore_class must be an integer or None, got {ignore_class!r}")
    return keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, ignore_class=None if ignore_class is None else int(ignore_class), name=name
    )


def _check_ignore(ignore_label):
    if ignore_label is not None and (isinstance(ignore_label, bool) or not isinstance(ignore_label, numbers.Integral)):
        raise ValueError(f"ignore_label must be an integer or None, got {ignore_label!r}")
    return None if ignore_label is None else int(ignore_label)


def _pixel_weights(labels, ignore_label, sample_weight):
    """1 per labelled pixel (0 at `ignore_label`), times the per-pixel `sample_weight` if given."""
    ops = keras.ops
    valid = ops.ones(ops.shape(labels), "float32")
    if ignore_label is not None:
        valid = ops.cast(ops.not_equal(labels, ignore_label), "float32")
    w = valid
    if sample_weight is not None:
        w = w * ops.reshape(ops.cast(sample_weight, "float32"), ops.shape(labels))
    return valid, w


@keras.saving.register_keras_serializable(package="kseg")
class SparseFocalLoss(keras.losses.Loss):
    """Focal loss (Lin et al., ICCV 2017) on logits ``(B, H, W, C)`` and integer labels ``(B, H, W)``.

    ``FL_p = -alpha_{y_p} (1 - q_p)^gamma log q_p`` with ``q_p`` the softmax probability of the
    true class, summed over the labelled pixels with their weights ``w_p`` (``sample_weight``: the
    pipeline's class weights) and divided by the number of labelled pixels (the reduction of
    :func:`segmentation_loss`); `ignore_label` pixels count nowhere. ``gamma=0``, no `alpha`: the
    cross-entropy. Keras' ``CategoricalFocalCrossentropy`` with one-hot labels, plus the ignored label.

    Args:
        gamma: focusing parameter (2, the paper's).
        alpha: ``None``, a number (every class), or one weight per class.
    """

    def __init__(self, gamma=2.0, alpha=None, ignore_label=None, name="focal_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.gamma = float(gamma)
        self.alpha = None if alpha is None else (float(alpha) if isinstance(alpha, numbers.Number)
                                                 else [float(a) for a in alpha])
        self.ignore_label = _check_ignore(ignore_label)

    def __call__(self, y_true, y_pred, sample_weight=None):
        ops = keras.ops
        labels = ops.cast(y_true, "int32")
        logits = ops.cast(y_pred, "float32")
        valid, w = _pixel_weights(labels, self.ignore_label, sample_weight)
        safe = ops.where(valid > 0, labels, 0)
        log_q = ops.take_along_axis(ops.log_softmax(logits, axis=-1), ops.expand_dims(safe, -1), axis=-1)[..., 0]
        loss = -ops.power(1.0 - ops.exp(log_q), self.gamma) * log_q
        if isinstance(self.alpha, list):
            loss = loss * ops.take(ops.convert_to_tensor(self.alpha, "float32"), safe)
        elif self.alpha is not None:
            loss = loss * self.alpha
        return ops.sum(loss * w) / ops.maximum(ops.sum(valid), 1.0)

    def call(self, y_true, y_pred):
        return self(y_true, y_pred)

    def get_config(self):
        return {"name": self.name, "gamma": self.gamma, "alpha": self.alpha, "ignore_label": self.ignore_label}


@keras.saving.register_keras_serializable(package="kseg")
class SparseDiceLoss(keras.losses.Loss):
    """Soft Dice loss (Milletari et al., 3DV 2016) on logits ``(B, H, W, C)`` and integer labels.

    Per class ``c`` over the batch's labelled pixels, with softmax probabilities ``q`` and pixel
    weights ``w_p`` (``sample_weight``, e.g. the pipeline's class weights; 0 at `ignore_label`):
    ``D_c = (2 sum_p w_p q_pc t_pc + eps) / (sum_p w_p (q_pc + t_pc) + eps)``; the loss is the mean of
    ``1 - D_c`` over the classes (weighted by `class_weights` if given). Keras' ``Dice`` is the
    same ratio pooled over all classes at once and without an ignored label.
    """

    def __init__(self, num_classes, ignore_label=None, class_weights=None, epsilon=1.0, name="dice_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = int(num_classes)
        self.ignore_label = _check_ignore(ignore_label)
        self.class_weights = None if class_weights is None else [float(c) for c in class_weights]
        if self.class_weights is not None and len(self.class_weights) != self.num_classes:
            raise ValueError(f"class_weights must have {self.num_classes} values, got {len(self.class_weights)}")
        self.epsilon = float(epsilon)

    def __call__(self, y_true, y_pred, sample_weight=None):
        ops = keras.ops
        labels = ops.cast(y_true, "int32")
        probs = ops.softmax(ops.cast(y_pred, "float32"), axis=-1)
        valid, w = _pixel_weights(labels, self.ignore_label, sample_weight)
        onehot = ops.one_hot(ops.where(valid > 0, labels, 0), self.num_classes) * ops.expand_dims(valid, -1)
        w = ops.expand_dims(w, -1)
        axes = tuple(range(len(labels.shape)))
        inter = ops.sum(w * probs * onehot, axis=axes)
        union = ops.sum(w * (probs + onehot), axis=axes)
        per_class = 1.0 - (2.0 * inter + self.epsilon) / (union + self.epsilon)
        if self.class_weights is None:
            return ops.mean(per_class)
        cw = ops.convert_to_tensor(self.class_weights, "float32")
        return ops.sum(cw * per_class) / ops.sum(cw)

    def call(self, y_true, y_pred):
        return self(y_true, y_pred)

    def get_config(self):
        return {"name": self.name, "num_classes": self.num_classes, "ignore_label": self.ignore_label,
                "class_weights": self.class_weights, "epsilon": self.epsilon}


def get_loss(name="cross_entropy", num_classes=None, ignore_label=None, **kwargs):
    """A segmentation loss by name: ``"cross_entropy"`` (:func:`segmentation_loss`), ``"dice"``
    (:class:`SparseDiceLoss`, needs `num_classes`) or ``"focal"`` (:class:`SparseFocalLoss`);
    a Keras loss object is returned as it is. All ignore `ignore_label` and take per-pixel class
    weights as ``sample_weight``."""
    if not isinstance(name, str):
        return name
    key = name.lower().replace("-", "_")
    if key in ("cross_entropy", "crossentropy", "ce"):
        return segmentation_loss(ignore_label, **kwargs)
    if key == "dice":
        if num_classes is None:
            raise ValueError("the dice loss needs num_classes")
        return SparseDiceLoss(num_classes, ignore_label, **kwargs)
    if key == "focal":
        return SparseFocalLoss(ignore_label=ignore_label, **kwargs)
    raise ValueError(f"loss must be one of {LOSSES} or a keras loss, got {name!r}")
