"""DeepMask vs SharpMask on coco_tiny: short training, AR@10/100 (masks and boxes) on val2017,
proposal time per image at the paper's scales, and parameter counts vs the authors' arithmetic.

One command per measurement (run heavy ones under the shared lock)::

    flock /tmp/kseg-heavy.lock python benchmarks/proposals.py train --steps 60 --width 0.25
    flock /tmp/kseg-heavy.lock python benchmarks/proposals.py time
    python benchmarks/proposals.py params
    flock /tmp/kseg-heavy.lock python benchmarks/proposals.py detect --steps 100
    flock /tmp/kseg-heavy.lock python benchmarks/proposals.py detect --proposals /tmp/kseg-proposals/deepmask_stage1.keras

``train``: DeepMask (ResNet-50 trunk, released geometry: 192 window, 160 patch, 112 labels) for
``steps``; then, from that DeepMask, (a) SharpMask's refinement for ``steps`` more with the
trunk frozen (160 labels, mask samples only) and (b) DeepMask itself for ``steps`` more, so
both rows of the table had the same number of SGD steps. Trunks start from random weights (no
ImageNet download here), so the absolute numbers are far below the paper's.

``detect``: plain Fast R-CNN, MultiPathNet and ION, same steps and seed, trained over the same
proposals and evaluated on val2017 (box AP; with a DeepMask/SharpMask ``--proposals`` model also
mask AP: each detection keeps its proposal's mask, pasted into the image, as MultiPathNet does).
The proposals of all train and val images are computed once into an npz cache (``--cache``) that
every detector (and later runs, e.g. ``--models fastrcnn --seed 1``) reuses.
"""

import argparse
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kseg  # noqa: E402
from kseg.data.coco import load_coco  # noqa: E402
from kseg.data.instances import DEEPMASK_RELEASED, SHARPMASK_RELEASED, deepmask_dataset  # noqa: E402
from kseg.evaluation.coco_eval import encode_masks, proposal_recall  # noqa: E402
from kseg.inference.proposals import DEFAULT_SCALES, FullyConvolutionalDeepMask, proposals, \
    train_proposal_model  # noqa: E402
from kseg.models.deepmask import DeepMask, DeepMaskResNet50, SharpMask  # noqa: E402

DATA = pathlib.Path(os.environ.get("KSEG_COCO_TINY", pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
                                   / "coco_tiny"))


def evaluate(model, val, max_proposals, scales, limit=None):
    fc = FullyConvolutionalDeepMask(model)
    results, t = {}, 0.0
    ids = val.image_ids[:limit] if limit else val.image_ids
    for i in ids:
        img = val.load_image(i)
        t0 = time.time()
        results[i] = proposals(model, img, scales=scales, max_proposals=max_proposals, fully_convolutional=fc)
        t += time.time() - t0
    segm = proposal_recall(val, results, max_dets=(10, 100), iou_type="segm", image_ids=ids)
    bbox = proposal_recall(val, results, max_dets=(10, 100), iou_type="bbox", image_ids=ids)
    return {"mask AR@10": segm["AR@10"], "mask AR@100": segm["AR@100"], "box AR@10": bbox["AR@10"],
            "box AR@100": bbox["AR@100"], "s/image": t / len(ids)}


def train(args):
    train_set = load_coco(DATA / "annotations" / "instances_train2017.json")
    val = load_coco(DATA / "annotations" / "instances_val2017.json")
    keras.utils.set_random_seed(0)
    small = dict(width_multiplier=args.width, freeze_bn=args.fixed_bn)
    dm = DeepMaskResNet50(**small)
    ds_dm = deepmask_dataset(train_set, DEEPMASK_RELEASED, batch_size=args.batch, seed=0)
    rows = []
    h = train_proposal_model(dm, ds_dm, args.steps, learning_rate=args.lr, log_every=20)
    print(f"DeepMask stage: {h[-1]['seconds']:.0f}s, last loss {h[-1]['loss']:.4f}", flush=True)
    dm_path = pathlib.Path(args.out) / "deepmask_stage1.keras"
    dm_path.parent.mkdir(parents=True, exist_ok=True)
    dm.save(dm_path)
    rows.append((f"DeepMask ({args.steps} steps)", evaluate(dm, val, args.max_proposals, DEFAULT_SCALES, args.limit)))
    sharp = SharpMask(deepmask=dm, **small)
    ds_sm = deepmask_dataset(train_set, SHARPMASK_RELEASED, batch_size=args.batch, mask_freq=1.0, seed=1)
    h = train_proposal_model(sharp, ds_sm, args.steps, learning_rate=args.lr, log_every=20)
    print(f"SharpMask stage: {h[-1]['seconds']:.0f}s, last loss {h[-1]['loss']:.4f}", flush=True)
    rows.append((f"SharpMask ({args.steps}+{args.steps} steps, trunk frozen)",
                 evaluate(sharp, val, args.max_proposals, DEFAULT_SCALES, args.limit)))
    dm2 = keras.models.load_model(dm_path, safe_mode=True)
    h = train_proposal_model(dm2, deepmask_dataset(train_set, DEEPMASK_RELEASED, batch_size=args.batch, seed=2),
                             args.steps, learning_rate=args.lr, log_every=20)
    rows.append((f"DeepMask ({args.steps}+{args.steps} steps)",
                 evaluate(dm2, val, args.max_proposals, DEFAULT_SCALES, args.limit)))
    keys = list(rows[0][1])
    print(f"\ncoco_tiny val2017 ({args.limit or len(val)} images), ResNet-50 trunk width x{args.width}, batch "
          f"{args.batch}, lr {args.lr}, BN {'fixed' if args.fixed_bn else 'trained'}, {args.max_proposals} proposals, scales 2^-2.5..2^0.5")
    print("| model | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name, r in rows:
        print(f"| {name} | " + " | ".join(f"{r[k]:.4f}" for k in keys) + " |")


def timing(args):
    rng = np.random.default_rng(0)
    if DATA.is_dir():
        val = load_coco(DATA / "annotations" / "instances_val2017.json")
        images = [val.load_image(i) for i in val.image_ids[:args.images]]
    else:
        images = [rng.uniform(0, 255, (480, 640, 3)).astype("float32") for _ in range(args.images)]
    models = [("DeepMask VGG-A (paper, 224)", DeepMask()), ("DeepMask ResNet-50 (released, 160)", DeepMaskResNet50()),
              ("SharpMask ResNet-50 (released, 160)", SharpMask())]
    print(f"proposal time per image, {len(DEFAULT_SCALES)} scales 2^-2.5..2^0.5, {args.max_proposals} proposals, "
          f"{os.cpu_count()} CPU cores, TF {__import__('tensorflow').__version__}")
    print("| model | params | s/image (mean of %d, after 1 warm-up) |" % len(images))
    print("|---|---|---|")
    for name, model in models:
        fc = FullyConvolutionalDeepMask(model)
        proposals(model, images[0], max_proposals=args.max_proposals, fully_convolutional=fc)
        t0 = time.time()
        for img in images:
            proposals(model, img, max_proposals=args.max_proposals, fully_convolutional=fc)
        print(f"| {name} | {kseg.count_params(model):,} | {(time.time() - t0) / len(images):.2f} |", flush=True)


def _jittered_boxes(inst, img_id, rng, n=100):
    """Oracle-free stand-in proposals: ground-truth boxes jittered (IoU spread 0..1) plus random boxes."""
    info = inst.image_info(img_id)
    h, w = info["height"], info["width"]
    gt = inst.instances(img_id)["boxes"]
    out = []
    for _ in range(n):
        if len(gt) and rng.uniform() < 0.5:
            y1, x1, y2, x2 = gt[rng.integers(len(gt))]
            bh, bw = y2 - y1, x2 - x1
            d = rng.normal(scale=0.2, size=4) * [bh, bw, bh, bw]
            out.append([y1 + d[0], x1 + d[1], y2 + d[2], x2 + d[3]])
        else:
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            s = rng.uniform(16, max(h, w))
            out.append([cy - s / 2, cx - s / 2, cy + s / 2, cx + s / 2])
    b = np.clip(np.array(out, np.float32), 0, [h, w, h, w])
    ok = (b[:, 2] - b[:, 0] > 2) & (b[:, 3] - b[:, 1] > 2)
    return b[ok]


def _proposal_cache(args, train_set, val, val_ids):
    """DeepMask/SharpMask proposals of every train image (boxes) and val image (boxes, scores and the
    compact masks: 'mask_probs' (P, m, m) float16 on 'windows'), computed once into an npz cache."""
    cache = pathlib.Path(args.cache or pathlib.Path(args.proposals).with_suffix(".proposals.npz"))
    scales = DEFAULT_SCALES if args.proposal_scales == "all" else DEFAULT_SCALES[::2]
    meta = f"{pathlib.Path(args.proposals).resolve()}|{args.proposal_scales}|{args.max_proposals}|{args.mask_threshold}"
    if cache.is_file():
        z = np.load(cache)
        if str(z["meta"]) == meta and all(f"val/{i}/boxes" in z for i in val_ids):
            props_train = {i: z[f"train/{i}/boxes"] for i in train_set.image_ids}
            props_val = {i: {k: z[f"val/{i}/{k}"] for k in ("boxes", "scores", "mask_probs", "windows")}
                         for i in val_ids}
            print(f"proposals from {cache}: {z['ar']}", flush=True)
            return props_train, props_val, str(z["ar"])
        print(f"{cache} was made with other settings; recomputing", flush=True)
    pm = keras.models.load_model(args.proposals, safe_mode=True)
    fc = FullyConvolutionalDeepMask(pm)
    t0, arrays, props_train, props_val, for_ar = time.time(), {"meta": np.array(meta)}, {}, {}, {}
    for i in train_set.image_ids:
        props_train[i] = proposals(pm, train_set.load_image(i), scales=scales, max_proposals=args.max_proposals,
                                   mask_threshold=args.mask_threshold, fully_convolutional=fc)["boxes"]
        arrays[f"train/{i}/boxes"] = props_train[i]
    for i in val_ids:
        r = proposals(pm, val.load_image(i), scales=scales, max_proposals=args.max_proposals,
                      mask_threshold=args.mask_threshold, fully_convolutional=fc, mask_grid=True)
        props_val[i] = {"boxes": r["boxes"], "scores": r["scores"], "mask_probs": r["mask_probs"].astype(np.float16),
                        "windows": r["windows"]}
        for k, v in props_val[i].items():
            arrays[f"val/{i}/{k}"] = v
        for_ar[i] = {"boxes": r["boxes"], "scores": r["scores"], "masks": encode_masks(r["masks"])}
    seconds = time.time() - t0
    segm = proposal_recall(val, for_ar, max_dets=(10, 100), iou_type="segm", image_ids=val_ids)
    bbox = proposal_recall(val, for_ar, max_dets=(10, 100), iou_type="bbox", image_ids=val_ids)
    ar = (f"proposal model {args.proposals}, {len(scales)} scales, {args.max_proposals} proposals/image; val2017 "
          f"({len(val_ids)} images) mask AR@10 {segm['AR@10']:.4f} AR@100 {segm['AR@100']:.4f}, box AR@10 "
          f"{bbox['AR@10']:.4f} AR@100 {bbox['AR@100']:.4f}; {seconds:.0f}s for "
          f"{len(train_set.image_ids) + len(val_ids)} images")
    arrays["ar"] = np.array(ar)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(cache, **arrays)
    print(f"proposals cached in {cache}: {ar}", flush=True)
    return props_train, props_val, ar


def detection(args):
    """MultiPathNet vs ION vs plain Fast R-CNN, same steps, over the same proposals.

    With a DeepMask/SharpMask ``--proposals`` model, each detection keeps its proposal's mask
    (pasted into the image, as MultiPathNet over DeepMask), so mask AP is reported too.
    """
    from kseg.evaluation.coco_eval import detection_ap
    from kseg.inference.detection import detect, detection_dataset, train_detector
    from kseg.models.ion import ION
    from kseg.models.multipathnet import FastRCNN, MultiPathNet

    train_set = load_coco(DATA / "annotations" / "instances_train2017.json")
    val = load_coco(DATA / "annotations" / "instances_val2017.json")
    val_ids = val.image_ids[:args.limit] if args.limit else val.image_ids
    rng = np.random.default_rng(0)
    jittered = args.proposals == "jittered"
    if jittered:
        props_train = {i: _jittered_boxes(train_set, i, rng) for i in train_set.image_ids}
        props_val = {i: {"boxes": _jittered_boxes(val, i, rng)} for i in val_ids}
        ar = "proposals: ground truth jittered + random boxes (no masks)"
    else:
        props_train, props_val, ar = _proposal_cache(args, train_set, val, val_ids)
    small = dict(num_classes=train_set.num_classes, num_rois=args.rois, fc_units=args.fc, width_multiplier=args.width)
    builders = {"fastrcnn": ("Fast R-CNN (conv5 ROI pool, 1 loss)", lambda: FastRCNN(**small)),
                "multipathnet": ("MultiPathNet (foveal + skips + integral)", lambda: MultiPathNet(**small)),
                "ion": ("ION (skip pooling + 2 IRNN)", lambda: ION(**small))}
    rows = []
    for key in args.models.split(","):
        name, build = builders[key]
        keras.utils.set_random_seed(args.seed)
        model = build()
        ds = detection_dataset(train_set, props_train, num_rois=args.rois, short_side=args.short_side,
                               max_side=int(args.short_side * 5 / 3), seed=args.seed)
        h = train_detector(model, ds, args.steps, learning_rate=args.lr, log_every=50)
        res, t0 = {}, time.time()
        for i in val_ids:
            p = props_val[i]
            r = detect(model, val.load_image(i), p["boxes"], p.get("mask_probs"), short_side=args.short_side,
                       max_side=int(args.short_side * 5 / 3), score_threshold=args.score_threshold,
                       mask_windows=p.get("windows"), mask_threshold=args.mask_threshold)
            if "masks" in r:
                r["masks"] = encode_masks(r["masks"])
            res[i] = r
        box = detection_ap(val, res, "bbox", image_ids=val_ids)
        row = {"steps": args.steps, "train s": h[-1]["seconds"], "box AP": box["AP"], "box AP50": box["AP50"]}
        if not jittered:
            mask = detection_ap(val, res, "segm", image_ids=val_ids)
            row.update({"mask AP": mask["AP"], "mask AP50": mask["AP50"]})
        row.update({"last loss": h[-1]["loss"], "dets/image": float(np.mean([len(r["scores"]) for r in res.values()])),
                    "eval s": time.time() - t0})
        rows.append((f"{name} [{kseg.count_params(model):,} params]", row))
        print(name, row, flush=True)
    keys = list(rows[0][1])
    print(f"\ncoco_tiny: train2017 {args.steps} steps x 1 image x {args.rois} ROIs, short side {args.short_side}, "
          f"width x{args.width}, fc {args.fc}, lr {args.lr}, seed {args.seed}; val2017 {len(val_ids)} images; "
          f"score threshold {args.score_threshold}\n{ar}")
    print("| model | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name, r in rows:
        print(f"| {name} | " + " | ".join(str(r[k]) if k == "steps" else f"{r[k]:.3g}" for k in keys) + " |")


def params(_):
    print("| model | kseg count_params | authors' arithmetic |")
    print("|---|---|---|")
    print(f"| DeepMask ResNet-50 | {kseg.count_params(DeepMaskResNet50()):,} | trunk 15,198,016 + mask 1,608,768 + "
          "score 526,337 = 17,333,121 (authors' log) + 30,592 fixed-BN gamma/beta = 17,363,713 |")
    print(f"| SharpMask ResNet-50 | {kseg.count_params(SharpMask()):,} | trunk 15,228,608 (with BN) + score 526,337 + "
          "net v 1,660,050 + net h 1,090,466 + final conv 19 = 18,505,480 |")
    print(f"| DeepMask VGG-A | {kseg.count_params(DeepMask()):,} | trunk 9,220,480 + mask 53,252,160 + "
          "score 13,371,905 = 75,844,545 |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--steps", type=int, default=60)
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--width", type=float, default=0.25)
    t.add_argument("--max-proposals", type=int, default=100)
    t.add_argument("--limit", type=int, default=None, help="evaluate on the first N val images")
    t.add_argument("--out", default="/tmp/kseg-proposals")
    t.add_argument("--fixed-bn", action="store_true", help="the authors' fixed BN (meant for a pretrained trunk)")
    tm = sub.add_parser("time")
    tm.add_argument("--images", type=int, default=3)
    tm.add_argument("--max-proposals", type=int, default=100)
    sub.add_parser("params")
    d = sub.add_parser("detect")
    d.add_argument("--proposals", default="jittered", help="'jittered' or a DeepMask/SharpMask .keras file")
    d.add_argument("--steps", type=int, default=100)
    d.add_argument("--rois", type=int, default=32)
    d.add_argument("--short-side", type=int, default=320)
    d.add_argument("--width", type=float, default=0.25)
    d.add_argument("--fc", type=int, default=512)
    d.add_argument("--lr", type=float, default=1e-3)
    d.add_argument("--limit", type=int, default=None)
    d.add_argument("--score-threshold", type=float, default=0.05, help="detect()'s class score threshold")
    d.add_argument("--models", default="fastrcnn,multipathnet,ion", help="comma list of fastrcnn,multipathnet,ion")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--cache", default=None, help="npz of the proposals (default: next to the --proposals model)")
    d.add_argument("--proposal-scales", choices=("all", "half"), default="all",
                   help="the paper's 7 scales 2^-2.5..2^0.5, or every other one")
    d.add_argument("--max-proposals", type=int, default=100)
    d.add_argument("--mask-threshold", type=float, default=0.2, help="proposal mask threshold (0.2 as released)")
    args = p.parse_args(argv)
    {"train": train, "time": timing, "params": params, "detect": detection}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
