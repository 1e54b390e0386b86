"""Detection ops against numpy references: IoU, box coding, NMS, ROI max pooling, ROI align, mask pasting."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from kseg.ops import (
    RoIAlign,
    RoIPooling,
    box_iou,
    box_iou_numpy,
    clip_boxes,
    decode_boxes,
    encode_boxes,
    non_max_suppression,
    paste_masks,
    roi_align,
    roi_max_pool,
)


def _rand_boxes(rng, n, size=50.0):
    y = rng.uniform(0, size, (n, 2))
    x = rng.uniform(0, size, (n, 2))
    return np.stack([y.min(1), x.min(1), y.max(1) + 1, x.max(1) + 1], 1).astype(np.float32)


def _iou_loop(a, b):
    out = np.zeros((len(a), len(b)))
    for i, p in enumerate(a):
        for j, q in enumerate(b):
            ih = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
            iw = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
            inter = ih * iw
            union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter
            out[i, j] = inter / union
    return out


def test_box_iou():
    rng = np.random.default_rng(0)
    a, b = _rand_boxes(rng, 7), _rand_boxes(rng, 5)
    ref = _iou_loop(a, b)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(box_iou(a, b)), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(box_iou_numpy(a, b), ref, rtol=1e-5, atol=1e-6)
    assert box_iou_numpy([[0, 0, 10, 10]], [[0, 5, 10, 15]])[0, 0] == pytest.approx(1 / 3)


def test_box_coding_reference_and_round_trip():
    rng = np.random.default_rng(1)
    rois, gt = _rand_boxes(rng, 6), _rand_boxes(rng, 6)
    d = keras.ops.convert_to_numpy(encode_boxes(gt, rois))
    ph, pw = rois[:, 2] - rois[:, 0], rois[:, 3] - rois[:, 1]
    gh, gw = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
    ref = np.stack([10 * ((gt[:, 0] + gh / 2) - (rois[:, 0] + ph / 2)) / ph,
                    10 * ((gt[:, 1] + gw / 2) - (rois[:, 1] + pw / 2)) / pw,
                    5 * np.log(gh / ph), 5 * np.log(gw / pw)], 1)
    np.testing.assert_allclose(d, ref, rtol=1e-4, atol=1e-4)
    back = keras.ops.convert_to_numpy(decode_boxes(d, rois))
    np.testing.assert_allclose(back, gt, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(clip_boxes([[-5, 3, 120, 40]], 100, 30)),
                               [[0, 3, 100, 30]])


def _nms_numpy(boxes, scores, thr):
    order = list(np.argsort(-scores, kind="stable"))
    keep = []
    while order:
        i = order.pop(0)
        keep.append(i)
        order = [j for j in order if box_iou_numpy(boxes[i:i + 1], boxes[j:j + 1])[0, 0] <= thr]
    return keep


def test_nms_matches_greedy_reference():
    rng = np.random.default_rng(2)
    boxes = _rand_boxes(rng, 40, 30)
    scores = rng.permutation(40).astype(np.float32)
    keep = non_max_suppression(boxes, scores, max_output_size=40, iou_threshold=0.3).numpy().tolist()
    assert keep == _nms_numpy(boxes, scores, 0.3)
    with pytest.raises(ValueError, match="iou_threshold"):
        non_max_suppression(boxes, scores, iou_threshold=1.5)


def _roi_pool_numpy(fmap, box, ph, pw, scale):
    h, w, c = fmap.shape
    y1, x1, y2, x2 = [int(round(v * scale)) for v in (box[0], box[1], box[2] - 1, box[3] - 1)]
    rh, rw = max(y2 - y1 + 1, 1), max(x2 - x1 + 1, 1)
    out = np.zeros((ph, pw, c), np.float32)
    for i in range(ph):
        for j in range(pw):
            hs = min(max(int(math.floor(i * rh / ph)) + y1, 0), h)
            he = min(max(int(math.ceil((i + 1) * rh / ph)) + y1, 0), h)
            ws = min(max(int(math.floor(j * rw / pw)) + x1, 0), w)
            we = min(max(int(math.ceil((j + 1) * rw / pw)) + x1, 0), w)
            if he > hs and we > ws:
                out[i, j] = fmap[hs:he, ws:we].max(axis=(0, 1))
    return out


def test_roi_max_pool_reference():
    rng = np.random.default_rng(3)
    feats = rng.normal(size=(2, 9, 11, 3)).astype(np.float32)
    rois = np.array([[[0, 0, 64, 64], [16, 32, 100, 170], [40, 8, 56, 30]],
                     [[0, 0, 144, 176], [100, 100, 180, 200], [5, 5, 20, 20]]], np.float32)
    out = roi_max_pool(feats, rois, (3, 2), 1 / 16).numpy()
    assert out.shape == (2, 3, 3, 2, 3)
    for b in range(2):
        for r in range(3):
            np.testing.assert_allclose(out[b, r], _roi_pool_numpy(feats[b], rois[b, r], 3, 2, 1 / 16), rtol=1e-6)



def test_roi_max_pool_is_the_same_inside_tf_function():
    """Bin bounds such as ceil(7 * (6 / 7)) must not depend on graph rewrites (Grappler's constant
    folding once made the last bin one row longer inside tf.function, i.e. in training and predict)."""
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(1, 15, 20, 8)).astype(np.float32)
    rois = np.array([[[10, 10, 100, 120], [50, 40, 200, 220], [0, 0, 240, 320]]], np.float32)
    graph = tf.function(lambda f, r: roi_max_pool(f, r, 7, 1 / 16))(feats, rois).numpy()
    eager = roi_max_pool(feats, rois, 7, 1 / 16).numpy()
    for r in range(3):
        want = _roi_pool_numpy(feats[0], rois[0, r], 7, 7, 1 / 16)
        np.testing.assert_array_equal(graph[0, r], want)
        np.testing.assert_array_equal(eager[0, r], want)

def _bilinear(fmap, y, x):
    h, w, _ = fmap.shape
    if y < 0 or y > h - 1 or x < 0 or x > w - 1:
        return np.zeros(fmap.shape[-1])
    y0, x0 = int(np.floor(y)), int(np.floor(x))
    y1_, x1_ = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
    fy, fx = y - y0, x - x0
    return (fmap[y0, x0] * (1 - fy) * (1 - fx) + fmap[y0, x1_] * (1 - fy) * fx
            + fmap[y1_, x0] * fy * (1 - fx) + fmap[y1_, x1_] * fy * fx)


def _roi_align_numpy(fmap, box, out, scale, sr):
    y1, x1, y2, x2 = [v * scale for v in box]
    bh, bw = (y2 - y1) / out, (x2 - x1) / out
    res = np.zeros((out, out, fmap.shape[-1]))
    for i in range(out):
        for j in range(out):
            acc = 0
            for a in range(sr):
                for b in range(sr):
                    yy = y1 + i * bh + (a + 0.5) * bh / sr - 0.5
                    xx = x1 + j * bw + (b + 0.5) * bw / sr - 0.5
                    acc = acc + _bilinear(fmap, yy, xx)
            res[i, j] = acc / sr / sr
    return res


def test_roi_align_reference():
    rng = np.random.default_rng(4)
    feats = rng.normal(size=(1, 10, 12, 2)).astype(np.float32)
    rois = np.array([[[16, 16, 120, 150], [30, 40, 70, 90]]], np.float32)
    out = roi_align(feats, rois, 3, 1 / 8, 2).numpy()
    for r in range(2):
        np.testing.assert_allclose(out[0, r], _roi_align_numpy(feats[0], rois[0, r], 3, 1 / 8, 2), atol=1e-5)


def test_roi_layers_serialise_and_pass_gradients():
    feats = keras.Input((8, 8, 4))
    rois = keras.Input((5, 4))
    a = RoIPooling(2, 1 / 4)([feats, rois])
    b = RoIAlign(2, 1 / 4)([feats, rois])
    model = keras.Model([feats, rois], [a, b])
    assert tuple(a.shape) == (None, 5, 2, 2, 4)
    cfg = model.get_config()
    clone = keras.Model.from_config(cfg)
    x = tf.random.normal((2, 8, 8, 4))
    r = tf.constant(np.tile([[[0, 0, 16, 16], [4, 4, 30, 28], [0, 8, 32, 32], [2, 2, 6, 6], [10, 0, 20, 12]]],
                            (2, 1, 1)), tf.float32)
    for got, want in zip(clone([x, r]), model([x, r])):
        np.testing.assert_allclose(got, want)
    with tf.GradientTape() as tape:
        tape.watch(x)
        ya, yb = model([x, r])
        loss = tf.reduce_sum(ya) + tf.reduce_sum(yb)
    g = tape.gradient(loss, x)
    assert np.isfinite(g.numpy()).all() and np.abs(g.numpy()).sum() > 0


def _paste_numpy(mask, box, h, w):
    m = mask.shape[0]
    y1, x1, y2, x2 = box
    out = np.zeros((h, w))
    for py in range(h):
        for px in range(w):
            cy, cx = py + 0.5, px + 0.5
            if not (y1 <= cy < y2 and x1 <= cx < x2):
                continue
            u = np.clip((cy - y1) * m / (y2 - y1) - 0.5, 0, m - 1)
            v = np.clip((cx - x1) * m / (x2 - x1) - 0.5, 0, m - 1)
            out[py, px] = _bilinear(mask[..., None], u, v)[0]
    return out


def test_paste_masks_reference():
    rng = np.random.default_rng(5)
    masks = rng.uniform(size=(3, 6, 6)).astype(np.float32)
    boxes = np.array([[2, 3, 14, 17], [0, 0, 20, 24], [-4, 10, 9, 30]], np.float32)
    got = paste_masks(masks, boxes, (20, 24), threshold=None).numpy()
    for k in range(3):
        np.testing.assert_allclose(got[k], _paste_numpy(masks[k], boxes[k], 20, 24), atol=1e-5)
    binary = paste_masks(np.ones((1, 4, 4), np.float32), [[2, 2, 6, 8]], (10, 10)).numpy()[0]
    assert binary.sum() == 4 * 6 and binary[2:6, 2:8].all()
