"""float32 vs mixed bfloat16: the same short CamVid run under each policy, test-split accuracy.

Each model is trained twice by :func:`kseg.training.train` with the same seed, steps, crops,
optimizer and class weights (``kseg demo``'s recipe: Adam, square-root median-frequency weights,
half-size crops), once per Keras dtype policy, then scored on the 233 CamVid test images at full
label resolution (void ignored) in float32 inference. Throughput is in ``train_speed.py``; this
answers whether bf16 costs accuracy.

    flock /tmp/kseg-heavy.lock python benchmarks/precision_accuracy.py
    python benchmarks/precision_accuracy.py --models segnet_basic --steps 100
"""

import argparse
import json
import os
import pathlib
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEFAULT_CAMVID = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"
MODELS = {  # name -> builder kwargs (reduced widths so a run fits a few CPU minutes)
    "segnet_basic": {"width": 32},
    "fcn8s": {"width": 0.25},
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_CAMVID))
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=sorted(MODELS))
    parser.add_argument("--precisions", nargs="+", default=["float32", "mixed_bfloat16"])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--size", type=int, nargs=2, default=(180, 240), help="training crop (half of 360x480)")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="/tmp/kseg-precision-accuracy")
    args = parser.parse_args(argv)

    import keras

    from kseg import training

    crop = tuple(args.size)
    scale = crop[0] / 360.0
    rows = []
    for name in args.models:
        for precision in args.precisions:
            keras.utils.set_random_seed(args.seed)
            out = pathlib.Path(args.out) / f"{name}-{precision}"
            training.clear_backup(out)
            t0 = time.perf_counter()
            model, _ = training.train(
                name, args.data, out_dir=str(out), epochs=1, steps_per_epoch=args.steps, batch_size=args.batch_size,
                crop=crop, scale_range=(scale, scale), learning_rate=args.lr, class_weighting="median_frequency_sqrt",
                val_split=None, seed=args.seed, verbose=0, precision=precision, model_kwargs=MODELS[name],
                bn_statistics_steps=16 if name.startswith("segnet") else 0,
            )
            train_s = time.perf_counter() - t0
            s = training.evaluate(model, args.data, "test", verbose=0)
            row = dict(model=name, precision=precision, train_s=round(train_s, 1),
                       img_s=round(args.steps * args.batch_size / train_s, 2), G=s["global_accuracy"],
                       C=s["class_average_accuracy"], mIoU=s["mean_iou"])
            rows.append(row)
            print(json.dumps(row), flush=True)
            keras.backend.clear_session()

    print(f"\nCamVid test (233 images, full-resolution labels), {args.steps} steps x batch {args.batch_size} at "
          f"{crop[0]}x{crop[1]}, Adam lr {args.lr}, seed {args.seed}, random init")
    print(f"{'model':<14}{'precision':<16}{'train s':>8}{'img/s':>7}{'G':>8}{'C':>8}{'mIoU':>8}{'dmIoU':>8}")
    for r in rows:
        ref = next(q for q in rows if q["model"] == r["model"])
        print(f"{r['model']:<14}{r['precision']:<16}{r['train_s']:>8.0f}{r['img_s']:>7.2f}{r['G']:>8.3f}"
              f"{r['C']:>8.3f}{r['mIoU']:>8.3f}{r['mIoU'] - ref['mIoU']:>+8.3f}")


if __name__ == "__main__":
    main()
