"""Boundary F1 (BF, Csurka et al. BMVC 2013 as in SegNet PAMI 2017 Sec. 3.3): by hand, against scipy, on JAX."""

import json
import math
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from kseg.metrics import BoundaryF1Score, boundary_f1_numpy

ndimage = pytest.importorskip("scipy.ndimage")


def keras_bf(labels, preds, num_classes, ignore_class=None, tolerance=0.0075):
    m = BoundaryF1Score(num_classes, ignore_class=ignore_class, tolerance=tolerance)
    m.update_state(labels, np.eye(num_classes, dtype="float32")[np.clip(preds, 0, num_classes - 1)])
    return float(m.result())


def scipy_bf(labels, preds, num_classes, ignore_class=None, tolerance=0.0075):
    """Independent reference: per image and class, boundaries by binary erosion, distances by EDT."""
    four = ndimage.generate_binary_structure(2, 1)
    scores = []
    for gt, pr in zip(labels, preds):
        valid = (gt >= 0) & (gt < num_classes) & (gt != ignore_class)
        gt = np.where(valid, gt, -1)
        pr = np.where(valid, pr, -1)
        theta = tolerance * math.hypot(*gt.shape)
        f1s = []
        for c in range(num_classes):
            if not (gt == c).any():
                continue
            bg = [(m & ~ndimage.binary_erosion(m, four, border_value=1)) for m in [gt == c]][0]
            bp = [(m & ~ndimage.binary_erosion(m, four, border_value=1)) for m in [pr == c]][0]
            if not bg.any() and not bp.any():
                f1s.append(1.0)
                continue
            dist_to_g = ndimage.distance_transform_edt(~bg) if bg.any() else np.full(gt.shape, np.inf)
            dist_to_p = ndimage.distance_transform_edt(~bp) if bp.any() else np.full(gt.shape, np.inf)
            p = (dist_to_g[bp] < theta).mean() if bp.any() else 0.0
            r = (dist_to_p[bg] < theta).mean() if bg.any() else 0.0
            f1s.append(2 * p * r / (p + r) if p + r > 0 else 0.0)
        if f1s:
            scores.append(np.mean(f1s))
    return float(np.mean(scores))


def test_hand_worked_example():
    # 6 x 8 image, diagonal 10; tolerance 0.15 -> theta = 1.5 px: offsets at distance 0, 1 and sqrt(2) match.
    # Ground truth: columns 0-3 class 0, 4-7 class 1: boundaries are column 3 (class 0) and column 4 (class 1).
    gt = np.zeros((1, 6, 8), int)
    gt[:, :, 4:] = 1
    # Prediction: the edge one column right in rows 0-2, two columns right in rows 3-5.
    pr = np.zeros_like(gt)
    pr[:, :3, 5:] = 1
    pr[:, 3:, 6:] = 1
    # Class 0 predicted boundary: (0-2, 4) and (3-5, 5). (0-2, 4) lie 1 px from the true column 3 -> 3 of 6
    # matched, P = 1/2. True boundary (r, 3): rows 0-2 are 1 px from (r, 4), row 3 is sqrt(2) from (2, 4);
    # rows 4, 5 are 2 px from (r, 5) -> R = 4/6. F1 = 2 (1/2)(2/3) / (1/2 + 2/3) = 4/7.
    # Class 1 mirrors it: predicted (0-2, 5) and (3-5, 6) against true column 4 -> P = 1/2, R = 4/6, F1 = 4/7.
    want = 4 / 7
    assert boundary_f1_numpy(gt, pr, 2, tolerance=0.15) == pytest.approx(want)
    assert keras_bf(gt, pr, 2, tolerance=0.15) == pytest.approx(want, abs=1e-6)
    assert scipy_bf(gt, pr, 2, tolerance=0.15) == pytest.approx(want)
    # A tighter tolerance (theta = 0.75 px, only exact matches): no predicted boundary pixel is on the true one.
    assert boundary_f1_numpy(gt, pr, 2, tolerance=0.075) == 0.0


def test_missed_object_void_and_absent_classes():
    gt = np.zeros((2, 6, 8), int)
    gt[0, 1:3, 1:3] = 2                      # image 0: a 2x2 object of class 2 that the prediction misses
    pr = np.zeros_like(gt)
    pr[1, :, :] = 3                          # image 1: all class 0 in truth, predicted class 3 ...
    gt[1, :, 4:] = 11                        # ... and the right half void
    pr[1, :, :4] = 0                         # where it is labelled, predicted right
    # Image 0: class 2's true boundary (4 px) has no predicted boundary -> R = 0 -> F1 = 0; class 0's true
    # boundary (the 8 px around the object) neither -> 0. Image 0 scores 0. Image 1: the prediction in the
    # void half is not scored, class 0 has a boundary along the void in both maps -> 1. Class 3 is only
    # predicted (in void) and does not enter. BF = (0 + 1) / 2.
    assert boundary_f1_numpy(gt, pr, 4, ignore_class=11, per_image=True)[1].tolist() == [0.0, 1.0]
    assert boundary_f1_numpy(gt, pr, 4, ignore_class=11) == 0.5
    assert keras_bf(gt, pr, 4, ignore_class=11) == pytest.approx(0.5)
    # uint8 label maps, as read from PNGs: the same score (numpy 2.5 refused -1 beside uint8 here once)
    assert boundary_f1_numpy(gt.astype(np.uint8), pr.astype(np.uint8), 4, ignore_class=11) == 0.5
    # A class filling the whole labelled area has no boundary in either map: F1 = 1.
    assert boundary_f1_numpy(np.zeros((1, 5, 5), int), np.zeros((1, 5, 5), int), 3) == 1.0
    # An image with no labelled pixel is skipped.
    all_void = np.full((1, 6, 8), 11)
    assert boundary_f1_numpy(np.concatenate([all_void, gt[:1]]), np.concatenate([pr[:1], pr[:1]]), 4, 11) == 0.0
    assert math.isnan(boundary_f1_numpy(all_void, pr[:1], 4, 11))


def blobs(rng, n, h, w, k, cell):
    small = rng.integers(0, k, (n, -(-h // cell), -(-w // cell)))
    return np.repeat(np.repeat(small, cell, 1), cell, 2)[:, :h, :w]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_maps_agree_with_scipy(seed):
    rng = np.random.default_rng(seed)
    n, h, w, k = 3, 45 + seed * 7, 61 + seed * 11, 5
    gt = blobs(rng, n, h, w, k + 1, 6)       # label k = void
    pr = np.where(rng.random((n, h, w)) < 0.1, rng.integers(0, k, (n, h, w)), np.roll(gt, seed + 1, axis=2))
    pr = np.clip(pr, 0, k - 1)
    for tol in (0.0075, 0.03, 0.1):
        want = scipy_bf(gt, pr, k, ignore_class=k, tolerance=tol)
        assert boundary_f1_numpy(gt, pr, k, ignore_class=k, tolerance=tol) == pytest.approx(want, abs=1e-12)
        assert keras_bf(gt, pr, k, ignore_class=k, tolerance=tol) == pytest.approx(want, abs=1e-5)


def camvid_labels(camvid_dir, count):
    files = sorted(pathlib.Path(camvid_dir, "testannot").glob("*.png"))[:count]
    return np.stack([np.asarray(Image.open(f)) for f in files]).astype(int)


def test_camvid_label_maps_agree_with_scipy(camvid_dir):
    gt = camvid_labels(camvid_dir, 3)
    assert gt.shape[1:] == (360, 480)  # theta = 0.0075 * 600 = 4.5 px
    rng = np.random.default_rng(0)
    pr = np.roll(gt, 3, axis=2)              # boundaries 3 px off: within 4.5 px
    pr[0] = np.roll(gt[0], 5, axis=1)        # 5 px off: outside
    pr[:, 100:140, 200:260] = rng.integers(0, 11, (3, 40, 60))
    pr = np.clip(pr, 0, 10)
    want = scipy_bf(gt, pr, 11, ignore_class=11)
    assert 0.05 < want < 0.95
    assert boundary_f1_numpy(gt, pr, 11, ignore_class=11) == pytest.approx(want, abs=1e-12)
    assert keras_bf(gt, pr, 11, ignore_class=11) == pytest.approx(want, abs=1e-5)
    assert boundary_f1_numpy(gt, gt, 11, ignore_class=11) == 1.0


def test_keras_metric_accumulates_over_batches_and_round_trips():
    rng = np.random.default_rng(5)
    gt = blobs(rng, 4, 30, 40, 4, 5)
    pr = np.clip(np.roll(gt, 1, axis=1) + (rng.random(gt.shape) < 0.05), 0, 3)
    m = BoundaryF1Score(4, ignore_class=None, tolerance=0.05)
    for i in range(0, 4, 2):
        m.update_state(gt[i:i + 2, ..., None], np.eye(4)[pr[i:i + 2]])
    assert float(m.result()) == pytest.approx(boundary_f1_numpy(gt, pr, 4, tolerance=0.05), abs=1e-6)
    clone = BoundaryF1Score.from_config(m.get_config())
    assert clone.get_config() == m.get_config()
    m.reset_state()
    assert float(m.result()) == 0.0


def test_model_evaluate_with_variable_size_graph():
    import keras

    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(3, 1)(inputs))
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[BoundaryF1Score(3, tolerance=0.05)])
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (4, 20, 30, 3)).astype("float32")
    y = blobs(rng, 4, 20, 30, 3, 4)
    got = model.evaluate(x, y, batch_size=2, verbose=0, return_dict=True)["boundary_f1"]
    assert got == pytest.approx(boundary_f1_numpy(y, model.predict(x, verbose=0), 3, tolerance=0.05), abs=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="tolerance"):
        BoundaryF1Score(3, tolerance=2)
    with pytest.raises(ValueError, match="labels must be"):
        boundary_f1_numpy(np.zeros((2, 3, 4, 5, 6)), np.zeros((2, 3, 4, 5, 6)), 3)


_JAX = textwrap.dedent(
    """
    import json, sys
    import numpy as np, keras
    from kseg.metrics import BoundaryF1Score, boundary_f1_numpy
    assert keras.backend.backend() == "jax"
    rng = np.random.default_rng(0)
    gt = np.repeat(np.repeat(rng.integers(0, 4, (2, 8, 10)), 5, 1), 5, 2)
    pr = np.clip(np.roll(gt, 2, axis=2), 0, 3)
    m = BoundaryF1Score(4, tolerance=0.05)
    m.update_state(gt, np.eye(4)[pr])
    print("RESULT " + json.dumps([float(m.result()), boundary_f1_numpy(gt, pr, 4, tolerance=0.05)]))
    """
)


@pytest.mark.slow  # the default run checks BF on JAX in tests/models/test_segnet_decoders.py's JAX subprocess
def test_runs_on_jax():
    pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2"}
    root = pathlib.Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", _JAX], capture_output=True, text=True, timeout=300, env=env,
                          cwd=root)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    got, want = json.loads(lines[-1][7:])
    assert 0.0 < want < 1.0
    assert got == pytest.approx(want, abs=1e-6)


def test_training_evaluate_reports_bf_and_prints_it():
    import keras
    import tensorflow as tf

    from kseg import metrics, training

    rng = np.random.default_rng(4)
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3, padding="same")(inputs))
    x = rng.uniform(0, 255, (4, 24, 32, 3)).astype("float32")
    y = blobs(rng, 4, 24, 32, 5, 4).astype("int32")  # label 4 = void
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(2)
    result = training.evaluate(model, ds, num_classes=4, ignore_label=4, input_size=None, verbose=0)
    want = boundary_f1_numpy(y, model.predict(x, verbose=0), 4, ignore_class=4)
    assert result["boundary_f1"] == pytest.approx(want, abs=1e-5)
    assert f"boundary F1 (BF)       {want:.4f}" in metrics.format_scores(result)
