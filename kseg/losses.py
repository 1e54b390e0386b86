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

__all__ = ["segmentation_loss"]


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
