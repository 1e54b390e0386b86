"""kseg.metrics and kseg.losses against plain numpy references."""

import math

import keras
import numpy as np
import pytest

from kseg import losses, metrics

N, VOID = 5, 5


def _np_confusion(labels, logits, n, ignore):
    pred = logits.argmax(-1).ravel()
    true = labels.ravel()
    keep = (true >= 0) & (true < n) & (true != ignore)
    cm = np.zeros((n, n), np.int64)
    for t, p in zip(true[keep], pred[keep]):
        cm[t, p] += 1
    return cm


def _np_scores(cm):
    tp = np.diag(cm).astype(float)
    support, predicted = cm.sum(1), cm.sum(0)
    g = tp.sum() / cm.sum()
    c = np.mean([tp[i] / support[i] for i in range(len(cm)) if support[i] > 0])
    ious = [tp[i] / (support[i] + predicted[i] - tp[i]) for i in range(len(cm)) if support[i] + predicted[i] > 0]
    return g, c, np.mean(ious)


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, N + 1, size=(3, 7, 9)).astype("int32")  # includes void = 5
    labels[0, 0, :4] = VOID
    logits = rng.normal(size=(3, 7, 9, N)).astype("float32")
    # make the predictions agree with the labels on ~half the pixels, so scores are not trivial
    agree = rng.random(labels.shape) < 0.5
    onehot = np.eye(N)[np.minimum(labels, N - 1)] * 5.0
    logits = np.where(agree[..., None], logits + onehot, logits).astype("float32")
    return labels, logits


def test_confusion_matrix_matches_numpy(batch):
    labels, logits = batch
    m = metrics.ConfusionMatrix(N, ignore_class=VOID)
    m.update_state(labels[:2], logits[:2])
    m.update_state(labels[2:], logits[2:])
    np.testing.assert_array_equal(np.asarray(m.result()), _np_confusion(labels, logits, N, VOID))


def test_three_metrics_match_numpy(batch):
    labels, logits = batch
    g, c, miou = _np_scores(_np_confusion(labels, logits, N, VOID))
    weights = np.random.default_rng(1).random(labels.shape).astype("float32")  # must be ignored
    got = {}
    for m in metrics.segmentation_metrics(N, VOID):
        m.update_state(labels, logits, sample_weight=weights)
        got[m.name] = float(m.result())
    assert got["global_accuracy"] == pytest.approx(g, abs=1e-6)
    assert got["class_average_accuracy"] == pytest.approx(c, abs=1e-6)
    assert got["mean_iou"] == pytest.approx(miou, abs=1e-6)
    assert 0.3 < g < 0.9  # the fixture is neither all right nor all wrong


def test_void_pixels_do_not_count(batch):
    labels, logits = batch
    m = metrics.GlobalAccuracy(N, ignore_class=VOID)
    m.update_state(labels, logits)
    before = float(m.result())
    # Turning every void pixel's prediction right or wrong changes nothing.
    flipped = logits.copy()
    flipped[labels == VOID] = -flipped[labels == VOID]
    m2 = metrics.GlobalAccuracy(N, ignore_class=VOID)
    m2.update_state(labels, flipped)
    assert float(m2.result()) == pytest.approx(before)
    assert int(np.asarray(metrics.ConfusionMatrix(N, VOID)(labels, logits)).sum()) == int((labels != VOID).sum())


def test_absent_class_left_out_of_class_average():
    labels = np.array([[0, 0, 1, 1]])
    logits = np.eye(3)[np.array([[0, 1, 1, 1]])].astype("float32")  # class 2 never occurs
    m = metrics.ClassAverageAccuracy(3)
    m.update_state(labels, logits)
    assert float(m.result()) == pytest.approx((0.5 + 1.0) / 2)


def test_metrics_reset_and_config_round_trip(batch):
    labels, logits = batch
    for m in metrics.segmentation_metrics(N, VOID):
        m.update_state(labels, logits)
        clone = m.__class__.from_config(m.get_config())
        assert clone.num_classes == N and clone.ignore_class == VOID and clone.name == m.name
        again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(m))
        assert type(again) is type(m)
        m.reset_state()
        assert float(np.asarray(m.result()).sum()) == 0.0


def test_metric_bad_arguments():
    with pytest.raises(ValueError, match="num_classes must be >= 2, got 1"):
        metrics.GlobalAccuracy(1)
    with pytest.raises(ValueError, match="ignore_class"):
        metrics.MeanIoU(3, ignore_class="void")


def test_scores_table_matches_numpy(batch):
    labels, logits = batch
    cm = _np_confusion(labels, logits, N, VOID)
    names = ["a", "b", "c", "d", "e"]
    s = metrics.scores_from_confusion_matrix(cm, names)
    g, c, miou = _np_scores(cm)
    assert (s["global_accuracy"], s["class_average_accuracy"], s["mean_iou"]) == pytest.approx((g, c, miou))
    row = s["per_class"][2]
    assert row["name"] == "c" and row["pixels"] == cm[2].sum()
    assert row["iou"] == pytest.approx(cm[2, 2] / (cm[2].sum() + cm[:, 2].sum() - cm[2, 2]))
    text = metrics.format_scores(s, prefix="[X] ")
    assert all(line.startswith("[X] ") for line in text.splitlines())
    assert len(text.splitlines()) == 4 + N
    empty = metrics.scores_from_confusion_matrix([[2, 0], [0, 0]])
    assert math.isnan(empty["per_class"][1]["iou"]) and empty["mean_iou"] == 1.0


# ---- loss ---------------------------------------------------------------------------------------


def _np_ce(labels, logits):
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    safe = np.where(labels < logits.shape[-1], labels, 0)
    return -np.take_along_axis(logp, safe[..., None], -1)[..., 0]


def test_loss_ignores_void_and_applies_weights(batch):
    labels, logits = batch
    class_w = np.array([0.5, 2.0, 1.0, 3.0, 0.25], "float32")
    pixel_w = np.where(labels < N, class_w[np.minimum(labels, N - 1)], 0.0).astype("float32")
    loss = losses.segmentation_loss(ignore_class=VOID)
    ce = _np_ce(labels, logits)
    valid = labels != VOID
    expected = (ce * pixel_w)[valid].sum() / valid.sum()
    assert float(loss(labels, logits, sample_weight=pixel_w)) == pytest.approx(expected, rel=1e-5)
    unweighted = ce[valid].mean()
    assert float(loss(labels, logits)) == pytest.approx(unweighted, rel=1e-5)
    # Ignored pixels contribute nothing: any logits there give the same loss.
    noisy = logits.copy()
    noisy[labels == VOID] = 100 * np.random.default_rng(2).normal(size=noisy[labels == VOID].shape)
    assert float(loss(labels, noisy, sample_weight=pixel_w)) == pytest.approx(expected, rel=1e-5)
    # Doubling one class's weight adds exactly that class's share again.
    w2 = np.where(labels == 1, 2 * pixel_w, pixel_w).astype("float32")
    extra = (ce * pixel_w)[labels == 1].sum() / valid.sum()
    assert float(loss(labels, logits, sample_weight=w2)) == pytest.approx(expected + extra, rel=1e-5)


def test_loss_gradient_zero_on_void(batch):
    import tensorflow as tf

    labels, logits = batch
    x = tf.Variable(logits)
    with tf.GradientTape() as tape:
        value = losses.segmentation_loss(ignore_class=VOID)(labels, x)
    grad = tape.gradient(value, x).numpy()
    assert np.all(grad[labels == VOID] == 0)
    assert np.any(grad[labels != VOID] != 0)


def test_loss_is_stock_keras_and_validates():
    loss = losses.segmentation_loss(ignore_class=np.int64(11))
    assert type(loss) is keras.losses.SparseCategoricalCrossentropy
    assert loss.get_config()["ignore_class"] == 11 and loss.get_config()["from_logits"] is True
    with pytest.raises(ValueError, match="ignore_class must be an integer or None, got 'void'"):
        losses.segmentation_loss(ignore_class="void")
