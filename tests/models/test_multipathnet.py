"""MultiPathNet and its Fast R-CNN baseline: counts from the authors' definition, layers against
numpy, a training step reaching every trainable weight, round trip, detection inference."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kseg
from kseg.inference.detection import detect, detection_loss, heads_of
from kseg.models.multipathnet import FastRCNN, FlatL2Normalization, FovealBoxes, MultiPathNet
from kseg.ops import paste_masks

TINY = dict(num_classes=5, num_rois=4, fc_units=16, width_multiplier=1 / 16, pool_size=2)


def conv(k, cin, cout):
    return k * k * cin * cout + cout


def vgg16_convs(m=1.0):
    w = lambda c: max(1, int(round(c * m)))  # noqa: E731
    chans = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256), (256, 512),
             (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
    return sum(conv(3, 3 if cin == 3 else w(cin), w(cout)) for cin, cout in chans)


def mpn_arithmetic(K=81, fc=4096, m=1.0, pool=7, foveal=True, skips=True, integral=True, het=True):
    """models/multipathnet.lua + model_utils.lua: conv_mix per region (1x1 to 512), a VGG classifier
    (fc6, fc7) per region, classAndBBoxLinear, one classifier per integral-loss threshold."""
    c3, c4, c5, mix = (max(1, int(round(c * m))) for c in (256, 512, 512, 512))
    regions = [(c5 + c4 + c3), (c5 + c4), (c5 + c4), c5] if foveal else [c5]
    if not skips:
        regions = [c5] * len(regions)
    towers = regions + ([c5 + c4 + c3 if skips else c5] if foveal and het else [])
    total = vgg16_convs(m)
    for cin in towers:
        flat = (mix if skips else cin) * pool * pool
        total += (conv(1, cin, mix) if skips else 0) + flat * fc + fc + fc * fc + fc
    heads = 6 if integral else 1
    total += heads * (len(regions) * fc * K + K)
    total += (fc if (foveal and het) or not foveal else len(regions) * fc) * K * 4 + K * 4
    return total


def test_param_counts():
    assert vgg16_convs() == 14_714_688
    # full size: 624,358,506 (MultiPathNet) and 135,919,829 (Fast R-CNN VGG16, 81 classes)
    assert mpn_arithmetic() == MultiPathNet.card.num_params == 624_358_506
    assert mpn_arithmetic(foveal=False, skips=False, integral=False) == 135_919_829
    for kw in ({}, {"foveal": False, "skips": False, "integral": False}, {"het": False}, {"integral": False}):
        keras.backend.clear_session()
        build = {"foveal": kw.get("foveal", True), "skip_connections": kw.get("skips", True),
                 "integral_loss": kw.get("integral", True), "heterogeneous": kw.get("het", True)}
        model = MultiPathNet(**TINY, **build)
        assert kseg.count_params(model) == mpn_arithmetic(K=5, fc=16, m=1 / 16, pool=2, **kw), kw


@pytest.mark.slow
def test_full_size_counts():
    assert kseg.count_params(FastRCNN()) == 135_919_829
    assert kseg.count_params(MultiPathNet()) == 624_358_506


def test_foveal_and_flat_l2_layers():
    rois = np.array([[[10, 20, 30, 60]]], np.float32)
    np.testing.assert_allclose(FovealBoxes(2.0)(rois), [[[0, 0, 40, 80]]])
    np.testing.assert_allclose(FovealBoxes(1.5)(rois), [[[5, 10, 35, 70]]])
    x = np.random.default_rng(0).normal(size=(2, 3, 2, 2, 4)).astype(np.float32)
    ref = 1000 * x / np.sqrt((x ** 2).sum(axis=(2, 3, 4), keepdims=True))
    np.testing.assert_allclose(FlatL2Normalization(1000.0, 3)(x), ref, rtol=1e-5)
    with pytest.raises(ValueError, match="factor must be > 0"):
        FovealBoxes(0)
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        MultiPathNet(num_classes=1)


def _inputs():
    rng = np.random.default_rng(1)
    image = rng.uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    rois = np.array([[[0, 0, 32, 32], [10, 10, 60, 50], [20, 5, 40, 30], [0, 30, 64, 64]]], np.float32)
    targets = {"labels": np.array([[1, 0, 3, 2]], np.int32), "ious": np.array([[0.8, 0.2, 0.55, 0.72]], np.float32),
               "box_targets": rng.normal(size=(1, 4, 4)).astype(np.float32)}
    return {"image": image, "rois": rois}, targets


@pytest.mark.parametrize("plain", [False, True], ids=["multipathnet", "fast_rcnn"])
def test_training_step_reaches_every_weight(plain, tmp_path):
    keras.utils.set_random_seed(0)
    model = FastRCNN(**TINY) if plain else MultiPathNet(**TINY)
    inputs, targets = _inputs()
    out = model(inputs)
    heads = 1 if plain else 6
    assert out["cls"].shape == (1, 4, heads, 5) and out["bbox"].shape == (1, 4, 5, 4)
    assert len(heads_of(model)) == heads
    with tf.GradientTape() as tape:
        loss = detection_loss(targets, model(inputs, training=True), heads_of(model))[0]
    grads = tape.gradient(loss, model.trainable_variables)
    assert np.isfinite(float(loss))
    dead = [v.path for v, g in zip(model.trainable_variables, grads) if g is None or not np.any(g.numpy())]
    assert not dead, dead
    frozen = {v.path.split("/")[0] for v in model.non_trainable_variables}
    assert {"conv1_1", "conv1_2", "conv2_1", "conv2_2"} <= frozen
    path = tmp_path / "m.keras"
    model.save(path)
    back = keras.models.load_model(path, safe_mode=True)
    for k in ("cls", "bbox"):
        np.testing.assert_allclose(back(inputs)[k], model(inputs)[k], rtol=1e-4, atol=1e-5)
    assert heads_of(back) == heads_of(model)


def test_integral_loss_thresholds():
    # one ROI, IoU 0.6: a foreground for heads 0.50..0.60, background for 0.65..0.75
    out = {"cls": np.zeros((1, 1, 6, 3), np.float32), "bbox": np.zeros((1, 1, 3, 4), np.float32)}
    out["cls"][0, 0, :, 2] = 10.0  # every head says class 2
    t = {"labels": np.array([[2]], np.int32), "ious": np.array([[0.6]], np.float32),
         "box_targets": np.zeros((1, 1, 4), np.float32)}
    _, cls, box = detection_loss(t, out, (0.5, 0.55, 0.6, 0.65, 0.7, 0.75))
    right = np.log1p(2 * np.exp(-10.0))
    wrong = -np.log(np.exp(0) / (2 * np.exp(0) + np.exp(10)))
    assert float(cls) == pytest.approx((3 * right + 3 * wrong) / 6, rel=1e-4)
    assert float(box) == 0.0


def test_detect():
    keras.utils.set_random_seed(0)
    model = MultiPathNet(**TINY)
    image = np.random.default_rng(2).uniform(0, 255, (40, 50, 3)).astype("float32")
    boxes = np.array([[0, 0, 20, 20], [5, 5, 35, 45], [10, 20, 30, 40], [1, 1, 39, 49], [0, 25, 20, 50]], np.float32)
    masks = np.zeros((5, 40, 50), np.uint8)
    res = detect(model, image, boxes, masks, short_side=64, score_threshold=0.0)
    n = len(res["scores"])
    assert 0 < n <= 100 and res["boxes"].shape == (n, 4) and res["masks"].shape == (n, 40, 50)
    assert np.all(np.diff(res["scores"]) <= 0) and np.all(res["labels"] >= 1)
    assert np.all(res["boxes"] >= 0) and np.all(res["boxes"][:, 2] <= 40) and np.all(res["boxes"][:, 3] <= 50)


def _rule_detector(num_rois=2):
    """A stand-in detector whose class logits are a hand-set linear rule of each ROI
    (background 15, class 1 = 10 * y1, class 2 = 10 * x1) and whose box deltas are zero."""
    image = keras.Input((None, None, 3), name="image")
    rois = keras.Input((num_rois, 4), name="rois")
    w = np.zeros((4, 3), np.float32)
    w[0, 1] = w[1, 2] = 10.0
    logits = keras.layers.Dense(3, name="rule")(rois)
    cls = keras.layers.Reshape((num_rois, 1, 3), name="cls")(logits)
    bbox = keras.layers.Reshape((num_rois, 3, 4), name="bbox")(keras.layers.Dense(12, kernel_initializer="zeros",
                                                                                  name="bbox_pred")(rois))
    model = keras.Model({"image": image, "rois": rois}, {"cls": cls, "bbox": bbox})
    model.get_layer("rule").set_weights([w, np.array([15.0, 0.0, 0.0], np.float32)])
    return model


def test_detect_keeps_each_proposals_mask():
    """Hand-made case: 3 proposals (one background), 2x2 mask grids on windows that differ from
    the boxes; each detection carries its own proposal's mask, pasted block-wise into the image."""
    model = _rule_detector()
    image = np.zeros((8, 10, 3), np.float32)
    boxes = np.array([[0, 0, 2, 2],  # logits (15, 0, 0): background, no detection
                      [4, 5, 8, 9],  # (15, 40, 50): class 2
                      [3, 0, 7, 3]], np.float32)  # (15, 30, 0): class 1
    windows = np.array([[0, 0, 4, 4], [4, 4, 8, 8], [2, 0, 6, 4]], np.float32)
    grids = np.array([[[1, 1], [1, 1]], [[1, 0], [1, 1]], [[0, 1], [1, 0]]], np.float32)
    res = detect(model, image, boxes, grids, short_side=8, mask_windows=windows, mask_threshold=0.5)
    assert sorted(res["labels"].tolist()) == [1, 2] and res["masks"].dtype == np.uint8
    expected = {}
    for k, label in ((1, 2), (2, 1)):  # at threshold 0.5 each cell fills a 2x2 block of its 4x4 window
        m = np.zeros((8, 10), np.uint8)
        y, x = windows[k, :2].astype(int)
        m[y:y + 4, x:x + 4] = np.kron(grids[k], np.ones((2, 2)))
        expected[label] = m
    for label, box, mask in zip(res["labels"], res["boxes"], res["masks"]):
        np.testing.assert_array_equal(mask, expected[label])
        np.testing.assert_allclose(box, boxes[3 - label], atol=1e-4)  # zero deltas: the proposal's box
    # the same detections from the full image masks
    full = paste_masks(grids, windows, (8, 10), threshold=0.5).numpy().astype(np.uint8)
    res_full = detect(model, image, boxes, full, short_side=8)
    np.testing.assert_array_equal(res_full["masks"], res["masks"])
    with pytest.raises(ValueError, match="one row per proposal"):
        detect(model, image, boxes, grids[:2], short_side=8, mask_windows=windows)


def test_export_pipeline_serving_signature(tmp_path):
    from kseg.inference.detection import export_detector
    from kseg.models.deepmask import DeepMask

    keras.utils.set_random_seed(0)
    dm = DeepMask(trunk="resnet50", input_size=32, context=16, width_multiplier=0.125, depths=(1, 1, 1), mask_size=8,
                  output_size=8, feature_dim=16, score_hidden=(8,))
    det = FastRCNN(**TINY)
    path = export_detector(det, dm, tmp_path / "saved", short_side=64, scales=(0.5, 1.0))
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    image = np.random.default_rng(5).uniform(0, 255, (40, 50, 3)).astype("float32")
    res = serve(image=tf.constant(image))
    n = res["scores"].shape[0]
    assert 0 < n <= 4 and res["boxes"].shape == (n, 4) and res["masks"].shape == (n, 40, 50)
    assert res["labels"].numpy().min() >= 1


def test_detection_dataset_targets(coco_tiny_dir):
    from kseg.data.coco import load_coco
    from kseg.inference.detection import detection_dataset
    from kseg.ops import decode_boxes

    inst = load_coco(coco_tiny_dir / "annotations" / "instances_train2017.json")
    img_id = inst.image_ids[0]
    ds = detection_dataset(inst, {img_id: np.zeros((0, 4), np.float32)}, num_rois=16, short_side=200, seed=0,
                           segmentation=True)
    inputs, t = next(iter(ds))
    assert inputs["image"].shape[0] == 1 and min(inputs["image"].shape[1:3]) == 200
    assert inputs["rois"].shape == (1, 16, 4) and t["labels"].shape == (1, 16) and t["seg"].shape[0] == 1
    fg = t["ious"].numpy()[0] >= 0.5
    assert fg.any() and (t["labels"].numpy()[0][fg] > 0).all() and (t["labels"].numpy()[0][~fg] == 0).all()
    # regression targets take each foreground ROI onto a ground-truth box of the (resized, maybe flipped) image
    back = np.asarray(decode_boxes(t["box_targets"][0], inputs["rois"][0]))[fg]
    h, w = inputs["image"].shape[1:3]
    assert np.all(back >= -1) and np.all(back[:, 2] <= h + 1) and np.all(back[:, 3] <= w + 1)
    assert np.all(back[:, 2] > back[:, 0]) and np.all(back[:, 3] > back[:, 1])
