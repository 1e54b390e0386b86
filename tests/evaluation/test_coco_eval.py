"""pycocotools evaluation: AR of proposals and AP of detections on hand-made and real annotations."""

import numpy as np
import pytest
from PIL import Image

from kseg.data.coco import CocoInstances, load_coco
from kseg.evaluation.coco_eval import detection_ap, encode_masks, proposal_recall


def _instances(tmp_path):
    ds = {
        "images": [{"id": 1, "file_name": "a.png", "height": 60, "width": 80}],
        "categories": [{"id": 3, "name": "car"}, {"id": 7, "name": "cat"}],
        "annotations": [
            {"id": 11, "image_id": 1, "category_id": 3, "iscrowd": 0, "area": 800.0,
             "bbox": [10, 20, 40, 20], "segmentation": [[10, 20, 50, 20, 50, 40, 10, 40]]},
            {"id": 12, "image_id": 1, "category_id": 7, "iscrowd": 0, "area": 400.0,
             "bbox": [55, 5, 20, 20], "segmentation": [[55, 5, 75, 5, 75, 25, 55, 25]]},
        ],
    }
    Image.fromarray(np.zeros((60, 80, 3), np.uint8)).save(tmp_path / "a.png")
    return CocoInstances(ds, image_dir=tmp_path)


def test_recall_and_ap_on_exact_answers(tmp_path):
    inst = _instances(tmp_path)
    gt = inst.instances(1)
    noise = {"boxes": np.array([[0, 0, 5, 5]] * 3, np.float32), "masks": np.zeros((3, 60, 60 + 20), np.uint8)}
    noise["masks"][:, :5, :5] = 1
    # the right answers ranked after 3 wrong ones: found within 10, not within 1..3
    res = {1: {"boxes": np.concatenate([noise["boxes"], gt["boxes"]]),
               "scores": np.array([0.9, 0.8, 0.7, 0.6, 0.5]),
               "masks": np.concatenate([noise["masks"], gt["masks"]])}}
    for iou_type in ("segm", "bbox"):
        ar = proposal_recall(inst, res, max_dets=(1, 10), iou_type=iou_type)
        assert ar["AR@10"] == pytest.approx(1.0) and ar["AR@1"] == pytest.approx(0.0)
    only_one = {1: {"boxes": gt["boxes"][:1], "scores": np.array([1.0]), "masks": gt["masks"][:1]}}
    assert proposal_recall(inst, only_one, max_dets=(10,))["AR@10"] == pytest.approx(0.5)
    dets = {1: {"boxes": gt["boxes"], "scores": np.array([0.9, 0.8]), "labels": gt["labels"], "masks": gt["masks"]}}
    assert detection_ap(inst, dets, "bbox")["AP"] == pytest.approx(1.0)
    assert detection_ap(inst, dets, "segm")["AP50"] == pytest.approx(1.0)
    as_rle = {1: {**dets[1], "masks": encode_masks(gt["masks"])}}  # RLE masks give the same figures
    assert detection_ap(inst, as_rle, "segm") == detection_ap(inst, dets, "segm")
    assert proposal_recall(inst, {1: {**res[1], "masks": encode_masks(res[1]["masks"])}}, (1, 10)) == \
        proposal_recall(inst, res, (1, 10))
    swapped = {1: {**dets[1], "labels": gt["labels"][::-1]}}  # right boxes, wrong classes
    assert detection_ap(inst, swapped, "bbox")["AP"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="iou_type"):
        proposal_recall(inst, res, iou_type="keypoints")


def test_every_image_of_the_split_is_scored(tmp_path):
    """Leaving an image out of the results counts its objects as missed (COCOeval over the split's ids)."""
    inst = _instances(tmp_path)
    ds = dict(inst.dataset)
    ds["images"] = ds["images"] + [{"id": 2, "file_name": "a.png", "height": 60, "width": 80}]
    ds["annotations"] = ds["annotations"] + [{**a, "id": a["id"] + 10, "image_id": 2} for a in ds["annotations"]]
    inst2 = CocoInstances(ds, image_dir=tmp_path)
    gt = inst2.instances(1)
    dets = {1: {"boxes": gt["boxes"], "scores": np.array([0.9, 0.8]), "labels": gt["labels"], "masks": gt["masks"]}}
    # 2 of 4 objects found, ranked first: precision 1 up to recall 0.5, nothing after -> AP ~ 0.5
    assert detection_ap(inst2, dets, "bbox")["AP"] == pytest.approx(0.5, abs=0.01)
    assert detection_ap(inst2, dets, "bbox", image_ids=[1])["AP"] == pytest.approx(1.0)  # asked for: one image
    assert proposal_recall(inst2, dets, (10,), "bbox")["AR@10"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="not among image_ids"):
        detection_ap(inst2, dets, "bbox", image_ids=[2])


def test_coco_tiny_ground_truth_recall(coco_tiny_dir):
    inst = load_coco(coco_tiny_dir / "annotations" / "instances_val2017.json")
    ids = inst.image_ids[:5]
    res = {}
    for i in ids:
        gt = inst.instances(i)
        res[i] = {"boxes": gt["boxes"], "scores": np.linspace(1, 0.5, len(gt["boxes"])), "masks": gt["masks"]}
    ar = proposal_recall(inst, res, max_dets=(10, 100, 1000), image_ids=ids)
    assert ar["AR@100"] == pytest.approx(1.0)
