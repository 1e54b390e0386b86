"""Training samples, loss, training loop and inference of the proposal-based detectors
(:func:`kseg.MultiPathNet`, its Fast R-CNN baseline, :func:`kseg.ION`).

* :func:`detection_dataset` — one image per batch, resized so its shorter side is ``short_side``
  (600 in Fast R-CNN / MultiPathNet; smaller for CPU runs), ``num_rois`` sampled ROIs (25 %
  foreground, Fast R-CNN's rule, :func:`kseg.data.instances.detector_samples`).
* :func:`detection_loss` — softmax cross-entropy per classifier head (MultiPathNet's integral
  loss: head u counts a ROI as foreground iff its IoU >= u), averaged over heads, plus smooth-L1
  box regression on foreground ROIs (Fast R-CNN, Eq. 1-3), plus an optional segmentation loss (ION).
* :func:`detect` — scores every proposal (averaging the heads' softmaxes), decodes the class
  boxes, per-class NMS (0.3), keeps the best 100; a detection's mask is its proposal's mask
  (MultiPathNet over DeepMask: the box is refined, the mask is the proposal's, pasted into the
  image; given in the compact form, only the kept detections' masks are pasted).
"""

import weakref

import keras
import numpy as np
import tensorflow as tf

from kseg.data.instances import detector_samples
from kseg.ops.boxes import decode_boxes, encode_boxes
from kseg.ops.masks import paste_masks

__all__ = ["detection_dataset", "detection_loss", "train_detector", "detect", "resize_for_detection", "export_detector",
           "heads_of"]


def heads_of(model):
    """IoU thresholds of the model's classifier heads (6 with the integral loss, else one)."""
    n = int(model.get_layer("cls").output.shape[2]) if "cls" in {l.name for l in model.layers} else 1
    return (0.5, 0.55, 0.6, 0.65, 0.7, 0.75) if n == 6 else tuple(0.5 for _ in range(n))


def resize_for_detection(image, short_side=600, max_side=1000):
    """Resize factor and resized image (Fast R-CNN: shorter side `short_side`, longer <= `max_side`)."""
    h, w = image.shape[:2]
    f = min(short_side / min(h, w), max_side / max(h, w))
    nh, nw = max(1, int(round(h * f))), max(1, int(round(w * f)))
    out = tf.image.resize(np.asarray(image, np.float32)[None], (nh, nw)).numpy()[0]
    return f, out


def detection_dataset(instances, proposals, num_rois=64, short_side=600, max_side=1000, seed=None,
                      fg_fraction=0.25, segmentation=False, seg_stride=16):
    """Endless ``tf.data.Dataset`` of single-image detector batches.

    Args:
        proposals: ``{image_id: (P, 4) [y1, x1, y2, x2] pixel boxes}`` (ground truth joins them).
        segmentation: also yield ``seg`` (1, H/stride, W/stride) class maps for ION's regulariser.

    Yields ``({"image": (1, h, w, 3), "rois": (1, R, 4)}, {"labels": (1, R), "ious": (1, R),
    "box_targets": (1, R, 4)[, "seg": ...]})`` in resized pixels.
    """
    ids = [i for i in instances.image_ids if len(instances.annotations(i, include_crowd=False))]
    if not ids:
        raise ValueError("no image has a non-crowd annotation")
    cache = {}

    def gen():  # each iterator draws the same sequence: a resumed run skips to the same batches
        rng = np.random.default_rng(seed)
        while True:
            img_id = ids[rng.integers(len(ids))]
            if img_id not in cache:
                cache[img_id] = resize_for_detection(instances.load_image(img_id), short_side, max_side)
            f, img = cache[img_id]
            s = detector_samples(instances, proposals.get(img_id, np.zeros((0, 4))), img_id, num_rois,
                                 fg_fraction, rng=rng)
            rois = s["rois"] * f
            gt = s["gt_boxes"] * f
            t = np.asarray(encode_boxes(gt, rois), np.float32)
            targets = {"labels": s["labels"][None], "ious": s["ious"][None], "box_targets": t[None]}
            flip = rng.uniform() < 0.5
            if flip:
                w = img.shape[1]
                img = img[:, ::-1]
                rois = np.stack([rois[:, 0], w - rois[:, 3], rois[:, 2], w - rois[:, 1]], 1)
                targets["box_targets"] = targets["box_targets"] * np.array([1, -1, 1, 1], np.float32)
            if segmentation:
                gh, gw = -(-img.shape[0] // seg_stride), -(-img.shape[1] // seg_stride)
                seg = np.zeros((s["gt"]["masks"].shape[1], s["gt"]["masks"].shape[2]), np.int32)
                order = np.argsort(-s["gt"]["masks"].reshape(len(s["gt"]["masks"]), -1).sum(1))
                for k in order:  # small objects drawn last, on top
                    seg[s["gt"]["masks"][k] > 0] = s["gt"]["labels"][k]
                seg = tf.image.resize(seg[None, ..., None], (gh, gw), method="nearest").numpy()[0, ..., 0]
                targets["seg"] = (seg[:, ::-1] if flip else seg)[None].astype(np.int32)
            yield ({"image": np.ascontiguousarray(img)[None].astype(np.float32),
                    "rois": rois[None].astype(np.float32)}, targets)

    sig_t = {"labels": tf.TensorSpec((1, num_rois), tf.int32), "ious": tf.TensorSpec((1, num_rois), tf.float32),
             "box_targets": tf.TensorSpec((1, num_rois, 4), tf.float32)}
    if segmentation:
        sig_t["seg"] = tf.TensorSpec((1, None, None), tf.int32)
    sig = ({"image": tf.TensorSpec((1, None, None, 3), tf.float32), "rois": tf.TensorSpec((1, num_rois, 4),
                                                                                          tf.float32)}, sig_t)
    return tf.data.Dataset.from_generator(gen, output_signature=sig).prefetch(2)


def detection_loss(targets, outputs, thresholds, box_weight=1.0, seg_weight=1.0):
    """Integral classification loss + smooth-L1 box loss (+ ION's segmentation loss).

    Returns ``(total, classification, box)``.
    """
    ops = keras.ops
    labels = ops.cast(targets["labels"], "int32")
    ious = targets["ious"]
    cls = outputs["cls"]  # (B, R, heads, K)
    k = cls.shape[-1]
    losses = []
    for h, u in enumerate(thresholds):
        lab = ops.where(ious >= u, labels, 0)
        losses.append(ops.mean(keras.losses.sparse_categorical_crossentropy(lab, cls[:, :, h], from_logits=True)))
    cls_loss = ops.mean(ops.stack(losses))
    fg = ops.cast((ious >= 0.5) & (labels > 0), "float32")
    onehot = ops.one_hot(labels, k)  # (B, R, K)
    pred = ops.sum(outputs["bbox"] * onehot[..., None], axis=2)  # the true class's deltas
    diff = ops.abs(pred - targets["box_targets"])
    smooth = ops.where(diff < 1.0, 0.5 * diff * diff, diff - 0.5)
    box_loss = ops.sum(ops.sum(smooth, axis=-1) * fg) / ops.cast(ops.size(fg), "float32")
    total = cls_loss + box_weight * box_loss
    if "seg" in outputs and "seg" in targets:
        seg_logits = outputs["seg"]
        seg = targets["seg"]
        seg_logits = seg_logits[:, : ops.shape(seg)[1], : ops.shape(seg)[2]]
        total = total + seg_weight * ops.mean(keras.losses.sparse_categorical_crossentropy(seg, seg_logits,
                                                                                           from_logits=True))
    return total, cls_loss, box_loss


def train_detector(model, dataset, steps, learning_rate=1e-3, momentum=0.9, weight_decay=5e-4, log_every=0,
                   clipnorm=10.0, callbacks=()):
    """SGD on :func:`detection_loss` (Fast R-CNN's optimiser: momentum 0.9, weight decay 5e-4), with ``fit``.

    Runs :class:`kseg.inference.fit.InstanceTrainer` for `steps` one-step epochs; returns per-step
    dicts (``loss``, ``cls_loss``, ``box_loss``, ``seconds``).
    """
    from kseg.inference.fit import InstanceTrainer
    from kseg.inference.proposals import _StepLog

    trainer = InstanceTrainer(model)
    trainer.compile(optimizer=keras.optimizers.SGD(learning_rate, momentum=momentum, weight_decay=weight_decay,
                                                   clipnorm=clipnorm), jit_compile=False)
    log = _StepLog(("loss", "cls_loss", "box_loss"), int(steps), log_every)
    trainer.fit(dataset, epochs=int(steps), steps_per_epoch=1, verbose=0, callbacks=[log, *callbacks], shuffle=False)
    return log.history


_INFERENCE_FNS = weakref.WeakKeyDictionary()


def _inference_fn(model):
    """``model(inputs, training=False)`` as one compiled graph per model (shapes relaxed after the
    first image sizes), instead of op-by-op eager execution: the ROI layers' many small ops made
    eager detection several seconds per image."""
    fn = _INFERENCE_FNS.get(model)
    if fn is None:
        fn = tf.function(lambda inputs: model(inputs, training=False), reduce_retracing=True)
        _INFERENCE_FNS[model] = fn
    return fn


def detect(model, image, boxes, masks=None, short_side=600, max_side=1000, score_threshold=0.05,
           nms_threshold=0.3, max_detections=100, mask_windows=None, mask_threshold=0.2):
    """Detections of one image from proposal `boxes` (P, 4) (and their masks).

    Args:
        masks: the proposals' masks, either image masks (P, H, W), or, with `mask_windows`, mask
            probabilities (P, m, m) on a grid covering `mask_windows` (P, 4) ``[y1, x1, y2, x2]``
            (``kseg.proposals(..., mask_grid=True)``'s ``mask_probs`` and ``windows``): the kept
            detections' masks are then pasted (:func:`kseg.ops.paste_masks`, `mask_threshold`).

    Returns ``boxes`` (N, 4), ``scores`` (N,), ``labels`` (N,) (contiguous class indices >= 1) and,
    with `masks`, ``masks`` (N, H, W) uint8: each detection keeps its proposal's mask.
    """
    image = np.asarray(image, np.float32)
    h, w = image.shape[:2]
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if mask_windows is not None:
        if masks is None:
            raise ValueError("mask_windows needs masks (the (P, m, m) mask probabilities)")
        mask_windows = np.asarray(mask_windows, np.float32).reshape(-1, 4)
        if len(mask_windows) != len(boxes) or len(masks) != len(boxes):
            raise ValueError(f"boxes, masks and mask_windows must have one row per proposal, got "
                             f"{len(boxes)}, {len(masks)} and {len(mask_windows)}")
    num_rois = int(model.inputs[1].shape[1]) if isinstance(model.inputs, list) else int(model.input["rois"].shape[1])
    f, img = resize_for_detection(image, short_side, max_side)
    probs, deltas = [], []
    for start in range(0, max(len(boxes), 1), num_rois):
        chunk = boxes[start:start + num_rois] * f
        n = len(chunk)
        pad = np.zeros((num_rois, 4), np.float32)
        pad[:n] = chunk
        out = _inference_fn(model)({"image": img[None], "rois": pad[None]})
        p = tf.reduce_mean(tf.nn.softmax(out["cls"][0], axis=-1), axis=1).numpy()  # average of the heads
        probs.append(p[:n])
        deltas.append(out["bbox"][0].numpy()[:n])
    probs = np.concatenate(probs)[: len(boxes)]
    deltas = np.concatenate(deltas)[: len(boxes)]
    k = probs.shape[1]
    rois = np.repeat(boxes[:, None], k, axis=1)
    dec = np.asarray(decode_boxes(deltas, rois * f)) / f
    dec = np.clip(dec, 0, [h, w, h, w])
    out_boxes, out_scores, out_labels, out_idx = [], [], [], []
    for c in range(1, k):
        sel = np.flatnonzero(probs[:, c] >= score_threshold)
        if not len(sel):
            continue
        keep = tf.image.non_max_suppression(dec[sel, c], probs[sel, c], max_detections, nms_threshold).numpy()
        sel = sel[keep]
        out_boxes.append(dec[sel, c])
        out_scores.append(probs[sel, c])
        out_labels.append(np.full(len(sel), c, np.int32))
        out_idx.append(sel)
    if not out_boxes:
        res = {"boxes": np.zeros((0, 4), np.float32), "scores": np.zeros((0,), np.float32),
               "labels": np.zeros((0,), np.int32)}
        if masks is not None:
            res["masks"] = np.zeros((0, h, w), np.uint8)
        return res
    b, s, l, i = (np.concatenate(a) for a in (out_boxes, out_scores, out_labels, out_idx))
    top = np.argsort(-s, kind="stable")[:max_detections]
    res = {"boxes": b[top].astype(np.float32), "scores": s[top].astype(np.float32), "labels": l[top]}
    if masks is not None and mask_windows is not None:
        src = i[top]
        res["masks"] = paste_masks(np.asarray(masks, np.float32)[src], mask_windows[src], (h, w),
                                   threshold=mask_threshold).numpy().astype(np.uint8)
    elif masks is not None:
        res["masks"] = np.asarray(masks)[i[top]]
    return res


def export_detector(detector, proposal_model, path, short_side=600, max_side=1000, scales=None,
                    nms_threshold=0.3, max_detections=100):
    """SavedModel of the whole pipeline: ``serving_default(image (H, W, 3)) -> boxes, scores, labels, masks``.

    Proposals come from `proposal_model` (DeepMask/SharpMask, the detector's ``num_rois`` best),
    the detector scores and refines them; in the exported graph each proposal keeps its best
    class and one class-agnostic NMS (`nms_threshold`) ranks them (``detect`` runs per-class NMS).
    """
    from kseg.inference.proposals import DEFAULT_SCALES, FullyConvolutionalDeepMask, _proposals_tf

    scales = tuple(scales or DEFAULT_SCALES)
    fc = FullyConvolutionalDeepMask(proposal_model)
    for attr in ("mask_conv", "lowrank", "trunk_conv", "trunk_fc", "score", "mask_fc"):
        if getattr(fc, attr, None) is not None:
            setattr(fc, attr, tuple(tf.Variable(a, trainable=False) for a in getattr(fc, attr)))
    fc.score_fcs = [tuple(tf.Variable(a, trainable=False) for a in wb) for wb in fc.score_fcs]
    num_rois = int(detector.inputs[1].shape[1]) if isinstance(detector.inputs, list) else int(
        detector.input["rois"].shape[1])
    module = tf.Module()
    module.detector, module.proposal_model, module.trunk = detector, proposal_model, fc.trunk
    module.heads = [fc.score_fcs] + [getattr(fc, a) for a in ("mask_conv", "lowrank", "trunk_conv", "trunk_fc",
                                                               "score", "mask_fc") if getattr(fc, a, None) is not None]

    @tf.function(input_signature=[tf.TensorSpec((None, None, 3), tf.float32, name="image")])
    def serve(image):
        boxes, _, masks = _proposals_tf(fc, proposal_model, image, scales, num_rois, 0.2, None, 50)
        h = tf.cast(tf.shape(image)[0], tf.float32)
        w = tf.cast(tf.shape(image)[1], tf.float32)
        f = tf.minimum(short_side / tf.minimum(h, w), max_side / tf.maximum(h, w))
        size = tf.cast(tf.round(tf.stack([h, w]) * f), tf.int32)
        img = tf.image.resize(image[None], size)
        n = tf.shape(boxes)[0]
        rois = tf.pad(boxes * f, [[0, num_rois - n], [0, 0]])[None]
        out = detector({"image": img, "rois": rois}, training=False)
        probs = tf.reduce_mean(tf.nn.softmax(out["cls"][0], axis=-1), axis=1)[:n]  # (n, K)
        fg = probs[:, 1:]
        labels = tf.argmax(fg, axis=1, output_type=tf.int32) + 1
        scores = tf.reduce_max(fg, axis=1)
        deltas = tf.gather(out["bbox"][0][:n], labels, batch_dims=1)
        dec = decode_boxes(deltas, boxes * f) / f
        dec = tf.minimum(tf.maximum(dec, 0.0), tf.stack([h, w, h, w]))
        keep = tf.image.non_max_suppression(dec, scores, max_detections, nms_threshold)
        return {"boxes": tf.gather(dec, keep), "scores": tf.gather(scores, keep), "labels": tf.gather(labels, keep),
                "masks": tf.gather(masks, keep)}

    module.serve = serve
    from kseg.io import atomic_dir

    with atomic_dir(path) as tmp:  # written aside, then swapped in: no half SavedModel
        tf.saved_model.save(module, tmp, signatures={"serving_default": serve})
    return path
