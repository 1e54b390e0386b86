"""COCO instance reading (validation errors, masks) and DeepMask patch sampling rules."""

import numpy as np
import pytest
from PIL import Image

from kseg.data.coco import InstanceDataError, CocoInstances, load_coco, load_mask_folder, validate_coco
from kseg.data.instances import (
    DEEPMASK_PAPER,
    SHARPMASK_RELEASED,
    DeepMaskSampler,
    PatchConfig,
    canonical_window,
    crop_window,
    deepmask_dataset,
    detector_samples,
    is_negative,
    is_positive,
    jitter_window,
    window_offset_scale,
)


def _dataset(tmp_path=None, size=(100, 120)):
    h, w = size
    ds = {
        "images": [{"id": 1, "file_name": "a.png", "height": h, "width": w}],
        "categories": [{"id": 3, "name": "car"}, {"id": 7, "name": "cat"}],
        "annotations": [
            # a 40x20 rectangle polygon at x 10..50, y 20..40
            {"id": 11, "image_id": 1, "category_id": 3, "iscrowd": 0, "area": 800.0,
             "bbox": [10, 20, 40, 20], "segmentation": [[10, 20, 50, 20, 50, 40, 10, 40]]},
            {"id": 12, "image_id": 1, "category_id": 7, "iscrowd": 0, "area": 900.0,
             "bbox": [60, 50, 30, 30], "segmentation": [[60, 50, 90, 50, 90, 80, 60, 80]]},
        ],
    }
    if tmp_path is not None:
        img = (np.arange(h * w * 3) % 251).reshape(h, w, 3).astype(np.uint8)
        Image.fromarray(img).save(tmp_path / "a.png")
    return ds


def test_polygon_mask_and_instances(tmp_path):
    inst = CocoInstances(_dataset(tmp_path), image_dir=tmp_path)
    m = inst.ann_to_mask(inst.annotations(1)[0])
    assert m.shape == (100, 120)
    ys, xs = np.nonzero(m)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (10, 49, 20, 39)
    out = inst.instances(1)
    np.testing.assert_allclose(out["boxes"], [[20, 10, 40, 50], [50, 60, 80, 90]])
    assert out["labels"].tolist() == [1, 2]  # contiguous: COCO ids 3, 7 -> 1, 2
    assert inst.num_classes == 3
    assert inst.load_image(1).shape == (100, 120, 3)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["annotations"][0].update(segmentation=[]), "empty polygon"),
        (lambda d: d["annotations"][0].update(segmentation=[[]]), "polygon 0 is empty"),
        (lambda d: d["annotations"][0].update(segmentation=[[1, 2, 3, 4]]), "even number >= 6"),
        (lambda d: d["annotations"][0].update(bbox=[100, 20, 40, 20]), "outside its 120x100 image"),
        (lambda d: d["annotations"][0].update(bbox=[10, 20, 0, 20]), "must be > 0"),
        (lambda d: d["annotations"][0].update(category_id=99), "unknown category_id 99"),
        (lambda d: d["annotations"][0].update(image_id=5), "unknown image_id 5"),
        (lambda d: d["annotations"][1].update(id=11), "duplicate annotation id"),
        (lambda d: d["annotations"][0].update(segmentation={"counts": [0, 5], "size": [10, 10]}), "RLE size"),
    ],
)
def test_malformed_annotations_raise(edit, message):
    ds = _dataset()
    edit(ds)
    with pytest.raises(InstanceDataError, match=message) as err:
        validate_coco(ds)
    assert "id=" in str(err.value) or "duplicate" in str(err.value)


def test_load_coco_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_coco(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(InstanceDataError, match="not valid JSON"):
        load_coco(tmp_path / "bad.json")


def test_mask_folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks" / "x").mkdir(parents=True)
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "images" / "x.png")
    m = np.zeros((30, 40), np.uint8)
    m[5:15, 10:30] = 255
    Image.fromarray(m).save(tmp_path / "masks" / "x" / "0_dog.png")
    inst = load_mask_folder(tmp_path)
    ann = inst.annotations(1)[0]
    assert ann["bbox"] == [10.0, 5.0, 20.0, 10.0]
    assert inst.coco.cats[ann["category_id"]]["name"] == "dog"
    np.testing.assert_array_equal(inst.ann_to_mask(ann), m > 0)
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(tmp_path / "masks" / "x" / "1.png")
    with pytest.raises(InstanceDataError, match="empty"):
        load_mask_folder(tmp_path)


def test_positive_negative_rules():
    cfg = DEEPMASK_PAPER
    bbox = [100, 100, 64, 32]  # larger side 64 -> canonical window side 224*64/128 = 112
    xc, yc, side = canonical_window(bbox, cfg)
    assert (xc, yc, side) == (132.0, 116.0, 112.0)
    assert window_offset_scale((xc, yc, side), bbox, cfg) == pytest.approx((0, 0, 0))
    f = side / cfg.input_size  # image px per patch px
    assert is_positive((xc + 16 * f, yc - 16 * f, side), bbox, cfg)
    assert not is_positive((xc + 17 * f, yc, side), bbox, cfg)
    assert is_positive((xc, yc, side * 2 ** 0.25), bbox, cfg)
    assert not is_positive((xc, yc, side * 2 ** 0.3), bbox, cfg)
    # negatives: >= 32 px off centre, or >= 2x off scale
    assert is_negative((xc + 32 * f, yc, side), [bbox], cfg)
    assert not is_negative((xc + 31 * f, yc, side), [bbox], cfg)
    assert is_negative((xc, yc, side * 2), [bbox], cfg) and is_negative((xc, yc, side / 2), [bbox], cfg)
    assert not is_negative((xc, yc, side * 1.9), [bbox], cfg)
    # every object must be off: a centred second object spoils the negative
    assert not is_negative((xc + 40 * f, yc, side), [bbox, [100 + 40 * f, 100, 64, 32]], cfg)
    rng = np.random.default_rng(0)
    for _ in range(200):
        assert is_positive(jitter_window(bbox, cfg, rng), bbox, cfg)
    with pytest.raises(ValueError, match="must be inside the negative"):
        PatchConfig(shift=40)


def test_crop_window_matches_slicing():
    img = np.arange(20 * 20, dtype=np.float32).reshape(20, 20)
    # window side 8 centred at (10, 6): pixels x 6..13, y 2..9; output 8 -> exact copy
    np.testing.assert_allclose(crop_window(img, (10, 6, 8), 8), img[2:10, 6:14])
    out = crop_window(img, (1, 1, 4), 4, pad=-7)  # half outside the image
    assert (out[:1] == -7).all() and (out[:, :1] == -7).all()
    np.testing.assert_allclose(out[1:, 1:], img[:3, :3])
    # context: a 4-px window with 50% context each side covers 8 px
    np.testing.assert_allclose(crop_window(img, (10, 6, 4), 8, context_frac=0.5), img[2:10, 6:14])


def test_sampler_mask_label_is_the_object(tmp_path):
    inst = CocoInstances(_dataset(tmp_path), image_dir=tmp_path)
    cfg = PatchConfig(input_size=32, object_size=16, label_size=32, shift=0.0, scale=0.0, neg_shift=8,
                      neg_scale=1.0, context=0)
    s = DeepMaskSampler(inst, cfg, mask_freq=1.0, flip=False, seed=0)
    for _ in range(5):
        out = s.sample()
        assert out["image"].shape == (32, 32, 3) and out["mask"].shape == (32, 32)
        assert out["score"][0] == 1 and out["mask_weight"][0] == 1
        fg = out["mask"] > 0
        ys, xs = np.nonzero(fg)
        # the centred object spans object_size (16) on its larger side around the centre
        assert set(np.unique(out["mask"])) <= {-1.0, 1.0}
        assert xs.max() - xs.min() + 1 in (16, 17) or ys.max() - ys.min() + 1 in (16, 17)
        assert abs((xs.min() + xs.max()) / 2 - 15.5) <= 1 and abs((ys.min() + ys.max()) / 2 - 15.5) <= 1


def test_sampler_negatives_and_dataset(tmp_path):
    inst = CocoInstances(_dataset(tmp_path), image_dir=tmp_path)
    s = DeepMaskSampler(inst, DEEPMASK_PAPER, mask_freq=0.0, seed=1)
    boxes = [a["bbox"] for a in inst.annotations(1)]
    for _ in range(20):
        _, window = s.negative()
        assert is_negative(window, boxes, DEEPMASK_PAPER)
    ds = deepmask_dataset(inst, SHARPMASK_RELEASED, batch_size=3, seed=0)
    images, t = next(iter(ds))
    assert images.shape == (3, 192, 192, 3)
    assert t["masks"].shape == (3, 160, 160) and t["scores"].shape == (3, 1)
    neg = t["scores"].numpy()[:, 0] < 0
    assert (t["mask_weight"].numpy()[neg] == 0).all()


def test_coco_tiny(coco_tiny_dir):
    inst = load_coco(coco_tiny_dir / "annotations" / "instances_val2017.json")
    assert len(inst) == 80 and inst.num_classes == 81
    img_id = inst.image_ids[0]
    out = inst.instances(img_id, include_crowd=True)
    info = inst.image_info(img_id)
    assert out["masks"].shape[1:] == (info["height"], info["width"])
    assert inst.load_image(img_id).shape == (info["height"], info["width"], 3)
    # crowd RLE decodes too
    crowd = [a for a in inst.coco.anns.values() if a["iscrowd"]]
    assert crowd and inst.ann_to_mask(crowd[0]).sum() > 0
    s = DeepMaskSampler(inst, SHARPMASK_RELEASED, seed=0)
    assert s.sample()["image"].shape == (192, 192, 3)
    props = np.array([[0, 0, 50, 50], [10, 10, 200, 200]], np.float32)
    d = detector_samples(inst, props, img_id, num_rois=8, rng=np.random.default_rng(0))
    assert d["rois"].shape == (8, 4) and (d["labels"][d["ious"] < 0.5] == 0).all()
    assert (d["labels"][d["ious"] >= 0.5] > 0).all()
