"""COCO-style evaluation with ``pycocotools``: proposal average recall and detection AP.

* :func:`proposal_recall` — class-agnostic average recall (AR) at 10 / 100 / 1000 proposals,
  averaged over IoU 0.5:0.05:0.95, for masks (``"segm"``) or boxes (``"bbox"``): DeepMask's
  and SharpMask's metric (Pinheiro et al. 2015, Sec. 4; Hosang et al. 2015).
* :func:`detection_ap` — COCO AP, AP50, AP75 for boxes or masks (MultiPathNet's metric).

Results are per image dicts with ``boxes`` (N, 4) ``[y1, x1, y2, x2]``, ``scores`` (N,),
optionally ``masks`` (N, H, W) (or a list of N COCO RLE dicts, see :func:`encode_masks`: the compact
form for many images) and ``labels`` (N,) (contiguous kseg class indices).

    >>> ar = proposal_recall(instances, {img_id: kseg.proposals(model, image)}, iou_type="segm")
    >>> ar["AR@100"]
"""

import contextlib
import io

import numpy as np

__all__ = ["to_coco_results", "encode_masks", "proposal_recall", "detection_ap"]


def _rle(mask):
    import pycocotools.mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def encode_masks(masks):
    """COCO RLE dicts of (N, H, W) binary masks (what a result's ``masks`` may hold instead)."""
    return [_rle(m) for m in np.asarray(masks)]


def to_coco_results(instances, results, iou_type="bbox", class_agnostic=False):
    """Convert ``{image_id: result}`` to the COCO results list (``bbox`` as ``[x, y, w, h]``)."""
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    out = []
    any_cat = instances.category_ids[0]
    for img_id, res in results.items():
        if img_id not in instances.coco.imgs:
            raise ValueError(f"image id {img_id!r} is not in the annotations")
        boxes = np.asarray(res["boxes"], np.float64).reshape(-1, 4)
        scores = np.asarray(res["scores"], np.float64).reshape(-1)
        labels = res.get("labels")
        if iou_type == "segm" and "masks" not in res:
            raise ValueError("iou_type='segm' needs 'masks' in every result")
        for k in range(len(scores)):
            cat = any_cat if class_agnostic or labels is None else instances.label_to_cat[int(labels[k])]
            y1, x1, y2, x2 = boxes[k]
            det = {"image_id": img_id, "category_id": cat, "score": float(scores[k]),
                   "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]}
            if iou_type == "segm":
                m = res["masks"][k]
                det["segmentation"] = m if isinstance(m, dict) else _rle(m)
            out.append(det)
    return out


def _evaluate(instances, dets, iou_type, use_cats, max_dets, image_ids):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = instances.coco
    with contextlib.redirect_stdout(io.StringIO()):
        if dets:
            dt = gt.loadRes(dets)
        else:
            dt = COCO()
            dt.dataset = {"images": gt.dataset["images"], "categories": gt.dataset["categories"], "annotations": []}
            dt.createIndex()
        ev = COCOeval(gt, dt, iou_type)
        ev.params.imgIds = sorted(image_ids)
        ev.params.useCats = int(use_cats)
        ev.params.maxDets = sorted(max_dets)
        ev.evaluate()
        ev.accumulate()
    return ev


def _image_ids(instances, results, image_ids):
    """The images scored: every image of the split by default (those without results count as misses,
    as COCOeval given the split's ids); results for images outside them are an error."""
    ids = list(instances.image_ids) if image_ids is None else [int(i) for i in image_ids]
    unknown = sorted(set(results) - set(ids))
    if unknown:
        raise ValueError(f"results for image ids {unknown[:5]}{'...' if len(unknown) > 5 else ''} that are not "
                         f"{'in the split' if image_ids is None else 'among image_ids'}")
    return ids


def proposal_recall(instances, results, max_dets=(10, 100, 1000), iou_type="segm", image_ids=None):
    """Class-agnostic AR@k of ``{image_id: proposals}`` (``-1`` categories ignored; crowds ignored).

    Every image of the split is scored unless `image_ids` says otherwise: an image without results
    counts as all its objects missed (leaving images out does not raise the score).

    Returns ``{"AR@10": .., "AR@100": .., ...}`` and ``AR_small/medium/large@max`` at the largest k.
    """
    dets = to_coco_results(instances, results, iou_type, class_agnostic=True)
    ev = _evaluate(instances, dets, iou_type, False, max_dets, _image_ids(instances, results, image_ids))
    rec = ev.eval["recall"]  # (T, K, A, M)
    out = {}
    for m, k in enumerate(ev.params.maxDets):
        r = rec[:, 0, 0, m]
        out[f"AR@{k}"] = float(np.mean(r[r > -1])) if np.any(r > -1) else 0.0
    for a, name in ((1, "small"), (2, "medium"), (3, "large")):
        r = rec[:, 0, a, -1]
        out[f"AR_{name}@{ev.params.maxDets[-1]}"] = float(np.mean(r[r > -1])) if np.any(r > -1) else 0.0
    return out


def detection_ap(instances, results, iou_type="bbox", max_dets=(1, 10, 100), image_ids=None):
    """COCO AP / AP50 / AP75 of class-labelled detections ``{image_id: {boxes, scores, labels[, masks]}}``.

    Every image of the split is scored unless `image_ids` says otherwise (absent ones: misses), as
    pycocotools' ``COCOeval`` with the split's image ids.
    """
    dets = to_coco_results(instances, results, iou_type)
    ev = _evaluate(instances, dets, iou_type, True, max_dets, _image_ids(instances, results, image_ids))
    with contextlib.redirect_stdout(io.StringIO()):
        ev.summarize()
    s = ev.stats
    return {"AP": float(max(s[0], 0)), "AP50": float(max(s[1], 0)), "AP75": float(max(s[2], 0))}
