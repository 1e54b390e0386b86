"""DeepMask vs SharpMask on coco_tiny: short training, AR@10/100 (masks and boxes) on val2017,
proposal time per image at the paper's scales, and parameter counts vs the authors' arithmetic.

One command per measurement (run heavy ones under the shared lock)::

    flock /tmp/kseg-heavy.lock python benchmarks/proposals.py train --steps 60 --width 0.25
    flock /tmp/kseg-heavy.lock python benchmarks/proposals.py time
    python benchmarks/proposals.py params

``train``: DeepMask (ResNet-50 trunk, released geometry: 192 window, 160 patch, 112 labels) for
``steps``; then, from that DeepMask, (a) SharpMask's refinement for ``steps`` more with the
trunk frozen (160 labels, mask samples only) and (b) DeepMask itself for ``steps`` more, so
both rows of the table had the same number of SGD steps. Trunks start from random weights (no
ImageNet download here), so the absolute numbers are far below the paper's.
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
from kseg.evaluation.coco_eval import proposal_recall  # noqa: E402
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
    segm = proposal_recall(val, results, max_dets=(10, 100), iou_type="segm")
    bbox = proposal_recall(val, results, max_dets=(10, 100), iou_type="bbox")
    return {"mask AR@10": segm["AR@10"], "mask AR@100": segm["AR@100"], "box AR@10": bbox["AR@10"],
            "box AR@100": bbox["AR@100"], "s/image": t / len(ids)}


def train(args):
    train_set = load_coco(DATA / "annotations" / "instances_train2017.json")
    val = load_coco(DATA / "annotations" / "instances_val2017.json")
    keras.utils.set_random_seed(0)
    small = dict(width_multiplier=args.width)
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
          f"{args.batch}, lr {args.lr}, {args.max_proposals} proposals, scales 2^-2.5..2^0.5")
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
    tm = sub.add_parser("time")
    tm.add_argument("--images", type=int, default=3)
    tm.add_argument("--max-proposals", type=int, default=100)
    sub.add_parser("params")
    args = p.parse_args(argv)
    {"train": train, "time": timing, "params": params}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
