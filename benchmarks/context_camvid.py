"""Short CamVid runs of the context ablations of issue 5, same budget each, one mIoU table.

    flock /tmp/kseg-heavy.lock python benchmarks/context_camvid.py --steps 300

Pairs (each trained from scratch by :func:`kseg.training.train` with the same steps, batch, crop,
optimizer and seed, then scored by :func:`kseg.training.evaluate` on the test split):

- Dilation: front end alone (``dilation_frontend``) vs front end + context module (``dilation8``);
- ParseNet: DeepLab-LargeFOV baseline (``global_context=False``) vs global context (early fusion);
- DT-EdgeNet: DeepLab baseline (``domain_transform=False``) vs EdgeNet + domain transform. As in the
  paper (Sec. 4: the domain transform is trained on top of a trained DeepLab), both start from one
  DeepLab trained for ``--dt-warm-start`` of the steps, then train the rest: the baseline alone, the
  DT-EdgeNet jointly (EdgeNet and domain transform new). From scratch the untrained edge map lets
  the domain transform average the score map over ~sigma_s pixels and training collapses to the
  majority class (``--dt-warm-start 0`` shows it);

plus, with ``--others``, models already in the package at the same budget (SegNet-Basic, FCN-8s,
DeepLab-v1 LargeFOV: the baseline of both ParseNet and DT-EdgeNet, as ``deeplab_v1``).
Widths are reduced (``--width``) and images downscaled (``--scale``) so each run fits a few CPU
minutes; no ImageNet weights (none can be downloaded here). Short runs from scratch are far from
the papers' numbers: read the table for the direction of each ablation only, and its noise.
"""

import argparse
import json
import pathlib
import time


def runs(width, others):
    w = float(width)
    deeplab = dict(width_multiplier=w, fc_width=max(8, int(1024 * w)))
    table = [
        ("dilation_frontend", "dilation_frontend", dict(width=w)),
        ("dilation8", "dilation8", dict(width=w)),
        ("parsenet (no context)", "parsenet", dict(global_context=False, **deeplab)),
        ("parsenet", "parsenet", dict(**deeplab)),
        ("dt_edgenet (no DT)", "dt_edgenet", dict(domain_transform=False, **deeplab)),
        ("dt_edgenet", "dt_edgenet", dict(edge_channels=max(8, int(128 * w)), **deeplab)),
    ]
    if others:
        table += [("segnet_basic", "segnet_basic", dict(width=max(8, int(64 * w)))),
                  ("fcn8s", "fcn8s", dict(width=w)), ("deeplab_v1", "deeplab_v1", dict(**deeplab))]
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(pathlib.Path(__file__).resolve().parents[2] / "shared/data/camvid"))
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per model")
    parser.add_argument("--epochs", type=int, default=3, help="the steps are split over this many epochs")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--scale", type=float, default=1 / 3, help="image downscaling (crop = scale x 360x480)")
    parser.add_argument("--width", type=float, default=0.25, help="channel multiplier of every model")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--only", nargs="*", help="run only these labels")
    parser.add_argument("--others", action="store_true", help="also SegNet-Basic and FCN-8s")
    parser.add_argument("--dt-warm-start", type=float, default=0.5,
                        help="share of the steps both DT-EdgeNet rows spend as one shared DeepLab first (0: from scratch)")
    parser.add_argument("--out", default="/tmp/kseg-context-camvid")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import keras

    from kseg import training
    from kseg.utils import transfer_weights

    crop = (int(round(360 * args.scale / 8)) * 8, int(round(480 * args.scale / 8)) * 8)
    results, warm, warm_s = [], None, 0.0
    for label, name, kwargs in runs(args.width, args.others):
        if args.only and label not in args.only:
            continue
        keras.utils.set_random_seed(args.seed)
        out = pathlib.Path(args.out) / label.replace(" ", "_").replace("(", "").replace(")", "")
        fit = dict(batch_size=args.batch_size, crop=crop, scale_range=(args.scale, args.scale),
                   learning_rate=args.lr, val_split=None, seed=args.seed, verbose=0)
        t0 = time.perf_counter()
        warm_steps = int(args.steps * args.dt_warm_start) if name == "dt_edgenet" else 0
        if warm_steps:
            if warm is None:  # one shared DeepLab stage for both DT-EdgeNet rows
                base_kwargs = {k: v for k, v in kwargs.items() if k != "edge_channels"}
                base_kwargs["domain_transform"] = False
                warm, _ = training.train(name, args.data, out_dir=str(pathlib.Path(args.out) / "dt_warm_start"),
                                         epochs=1, steps_per_epoch=warm_steps, model_kwargs=base_kwargs, **fit)
                warm_s = time.perf_counter() - t0
                t0 = time.perf_counter()
            model = training.build_model(name, input_shape=(*crop, 3), **kwargs)
            copied = len(transfer_weights(warm, model))
            rest = args.steps - warm_steps
            model, _ = training.train(model, args.data, out_dir=str(out), epochs=1, steps_per_epoch=rest, **fit)
            train_s = time.perf_counter() - t0 + warm_s
            label = f"{label} [{warm_steps} DeepLab + {rest}]"
            print(f"{label}: {copied} layers copied from the shared DeepLab stage", flush=True)
        else:
            model, _ = training.train(name, args.data, out_dir=str(out), epochs=args.epochs,
                                      steps_per_epoch=args.steps // args.epochs, model_kwargs=kwargs, **fit)
            train_s = time.perf_counter() - t0
        scores = training.evaluate(model, args.data, "test", verbose=0)
        row = dict(label=label, model=name, kwargs=kwargs, train_s=round(train_s, 1),
                   params=int(model.count_params()), mean_iou=scores["mean_iou"],
                   global_accuracy=scores["global_accuracy"], class_average_accuracy=scores["class_average_accuracy"])
        results.append(row)
        print(json.dumps(row), flush=True)
        keras.backend.clear_session()
    print(f"\nCamVid test, {args.steps} steps x batch {args.batch_size}, crop {crop[0]}x{crop[1]} "
          f"(scale {args.scale:.3f}), width {args.width}, Adam lr {args.lr}, from scratch, seed {args.seed}")
    print(f"{'model':<40}{'params':>11}{'train s':>9}{'G':>8}{'C':>8}{'mIoU':>8}")
    for r in results:
        print(f"{r['label']:<40}{r['params']:>11,}{r['train_s']:>9.0f}{r['global_accuracy']:>8.3f}"
              f"{r['class_average_accuracy']:>8.3f}{r['mean_iou']:>8.3f}")


if __name__ == "__main__":
    main()
