"""Cost of crash-safe run files (issue 13) on a SegNet-Basic epoch; prints one table.

The same epoch (SegNet-Basic, full width 64, same data, same steps) is timed three ways, one after
the other in this process:

* ``none``        no checkpoint callbacks at all (the floor);
* ``keras``       Keras' stock callbacks as kseg used them before: ``ModelCheckpoint`` (best and
                  last ``.keras``), ``CSVLogger``, ``BackupAndRestore`` -- written in place;
* ``crash-safe``  :class:`kseg.runs.RunKeeper`: the same files written to a temporary name,
                  fsynced, renamed, the folder fsynced, plus ``state.json`` and the atomic log.

    flock /tmp/kseg-heavy.lock python benchmarks/crash_safe_overhead.py --data ../shared/data/camvid \\
        --crop 180 240 --scale 0.5 --steps 23

Defaults are reduced for 2 CPU cores: 180x240 crops of the half-size images, batch 4, 23 steps (a
quarter of CamVid's 367 training images); ``--backup-every N`` adds mid-epoch backups to both.
"""

import argparse
import os
import pathlib
import shutil
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "camvid"))
    ap.add_argument("--crop", type=int, nargs=2, default=(180, 240))
    ap.add_argument("--scale", type=float, default=0.5)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=23)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--backup-every", type=int, default=None)
    ap.add_argument("--writes-only", action="store_true", help="time the end-of-epoch writes alone")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    import keras

    from kseg import data, runs, training

    root = pathlib.Path(args.data)
    work = pathlib.Path(tempfile.mkdtemp(prefix="kseg-overhead-"))
    if not (root / "train").is_dir():
        root = data.write_synthetic_dataset(work / "synthetic", {"train": 16}, height=360, width=480)
        print(f"[no CamVid at {args.data}: synthetic 360x480 scenes]")
    pairs = data.find_pairs(root, "train")
    crop = tuple(args.crop)

    def stream():
        aug = data.joint_augmentation(crop_size=crop, scale_range=(args.scale, args.scale), seed=0, ignore_class=11)
        return data.segmentation_dataset(pairs, batch_size=args.batch_size, shuffle=True, augment=aug, repeat=True,
                                         seed=0, drop_remainder=True)

    model = training.build_model("segnet_basic", 11, (*crop, 3), width=args.width)
    training.compile_model(model)
    save_freq = args.backup_every or "epoch"

    def callbacks(kind, out):
        if kind == "none":
            return []
        if kind == "keras":
            return [keras.callbacks.BackupAndRestore(str(out / "backup"), save_freq=save_freq,
                                                     delete_checkpoint=False),
                    keras.callbacks.ModelCheckpoint(str(out / "best.keras"), monitor="mean_iou", mode="max",
                                                    save_best_only=True),
                    keras.callbacks.ModelCheckpoint(str(out / "last.keras")),
                    keras.callbacks.CSVLogger(str(out / "log.csv"))]
        return [runs.RunKeeper(out, "mean_iou", args.steps, backup_every=args.backup_every)]

    model.fit(stream(), epochs=1, steps_per_epoch=2, verbose=0)  # warm-up: tracing, first allocations
    if args.writes_only:  # the end-of-epoch writes alone, without the training compute and its noise
        rows = []
        for kind in ("keras", "crash-safe"):
            out = work / f"w-{kind}"
            out.mkdir()
            cbs = callbacks(kind, out)
            for cb in cbs:
                cb.set_model(model)
                cb.on_train_begin()
            times = []
            for epoch in range(args.repeats):
                start = time.perf_counter()
                for cb in cbs:
                    cb.on_epoch_end(epoch, {"loss": 1.0, "mean_iou": 0.1 + epoch})
                times.append(time.perf_counter() - start)
            rows.append((kind, sorted(times)[len(times) // 2]))
        size = sum(p.stat().st_size for p in (work / "w-keras").glob("*.keras"))
        shutil.rmtree(work, ignore_errors=True)
        print(f"end-of-epoch writes of SegNet-Basic width {args.width} (best + last .keras, backup, log), "
              f"median of {args.repeats}{'' if not size else f', {size / 2**20:.1f} MiB'}")
        print(f"{'writer':<12} {'s/epoch':>9} {'vs keras':>9}")
        for kind, t in rows:
            print(f"{kind:<12} {t:>9.3f} {t / rows[0][1]:>8.3f}x")
        return
    rows = []
    for kind in ("none", "keras", "crash-safe"):
        out = work / kind
        out.mkdir()
        start = time.perf_counter()
        model.fit(stream(), epochs=1, steps_per_epoch=args.steps, verbose=0, callbacks=callbacks(kind, out))
        rows.append((kind, time.perf_counter() - start))
    shutil.rmtree(work, ignore_errors=True)
    base = rows[1][1]
    print(f"SegNet-Basic width {args.width}, {crop[0]}x{crop[1]} crops (scale {args.scale}), batch {args.batch_size}, "
          f"{args.steps} steps, backup {'every %d steps' % args.backup_every if args.backup_every else 'at epoch end'}")
    print(f"{'writer':<12} {'epoch s':>9} {'vs keras':>9}")
    for kind, total in rows:
        print(f"{kind:<12} {total:>9.2f} {total / base:>8.3f}x")


if __name__ == "__main__":
    main()
