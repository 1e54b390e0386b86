"""Dice and focal losses against hand computations with ignored pixels and per-pixel class weights."""

import keras
import numpy as np
import pytest

from kseg import losses

IGNORE = 3


def _case():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 4, 3)).astype("float32")
    labels = rng.integers(0, 3, (2, 3, 4))
    labels[0, 0, :2] = IGNORE  # two void pixels
    weights = np.array([0.5, 2.0, 1.0], "float32")
    pixel_w = np.where(labels == IGNORE, 0.0, weights[np.minimum(labels, 2)]).astype("float32")
    return logits, labels, pixel_w


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_focal_matches_hand_computation():
    logits, labels, pixel_w = _case()
    q = _softmax(logits.astype(np.float64))
    total, n = 0.0, 0
    for idx in np.ndindex(labels.shape):  # pixel by pixel, as the paper writes it
        y = labels[idx]
        if y == IGNORE:
            continue
        n += 1
        total += pixel_w[idx] * 0.25 * -(1 - q[idx][y]) ** 2 * np.log(q[idx][y])
    loss = losses.SparseFocalLoss(gamma=2.0, alpha=0.25, ignore_label=IGNORE)
    np.testing.assert_allclose(float(loss(labels, logits, sample_weight=pixel_w)), total / n, rtol=1e-5)
    # gamma 0, no alpha: kseg's cross-entropy (Keras' SparseCategoricalCrossentropy with ignore_class)
    ce = losses.segmentation_loss(IGNORE)
    np.testing.assert_allclose(float(losses.SparseFocalLoss(0.0, ignore_label=IGNORE)(labels, logits, pixel_w)),
                               float(ce(labels, logits, sample_weight=pixel_w)), rtol=1e-5)
    # void pixels do not matter: change their logits, same loss
    other = logits.copy()
    other[labels == IGNORE] = 50.0
    np.testing.assert_allclose(float(loss(labels, other, pixel_w)), float(loss(labels, logits, pixel_w)), rtol=1e-6)


def test_dice_matches_hand_computation():
    logits, labels, pixel_w = _case()
    q = _softmax(logits.astype(np.float64))
    per_class = []
    for c in range(3):
        inter = union = 0.0
        for idx in np.ndindex(labels.shape):
            if labels[idx] == IGNORE:
                continue
            t = float(labels[idx] == c)
            inter += pixel_w[idx] * q[idx][c] * t
            union += pixel_w[idx] * (q[idx][c] + t)
        per_class.append(1 - (2 * inter + 1.0) / (union + 1.0))
    loss = losses.SparseDiceLoss(3, ignore_label=IGNORE)
    np.testing.assert_allclose(float(loss(labels, logits, sample_weight=pixel_w)), np.mean(per_class), rtol=1e-5)
    cw = [1.0, 3.0, 0.5]
    weighted = losses.SparseDiceLoss(3, ignore_label=IGNORE, class_weights=cw)(labels, logits, pixel_w)
    np.testing.assert_allclose(float(weighted), np.dot(cw, per_class) / sum(cw), rtol=1e-5)
    perfect = np.eye(3, dtype="float32")[np.minimum(labels, 2)] * 40.0  # right everywhere
    assert float(losses.SparseDiceLoss(3, IGNORE, epsilon=1e-6)(labels, perfect)) < 1e-5


def test_get_loss_round_trip_and_training():
    assert isinstance(losses.get_loss("dice", 3, IGNORE), losses.SparseDiceLoss)
    assert isinstance(losses.get_loss("focal", ignore_label=IGNORE), losses.SparseFocalLoss)
    with pytest.raises(ValueError, match="loss must be one of"):
        losses.get_loss("hinge")
    for loss in (losses.SparseDiceLoss(3, IGNORE, [1, 2, 3]), losses.SparseFocalLoss(1.5, [0.2, 0.3, 0.5], IGNORE)):
        back = keras.losses.deserialize(keras.losses.serialize(loss))
        assert type(back) is type(loss) and back.get_config() == loss.get_config()
    logits, labels, pixel_w = _case()
    inputs = keras.Input((3, 4, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(3, 1)(inputs))
    for name in ("dice", "focal"):
        model.compile("sgd", loss=losses.get_loss(name, 3, IGNORE))
        hist = model.fit(logits, labels, sample_weight=pixel_w, epochs=2, verbose=0)
        assert np.isfinite(hist.history["loss"]).all()
