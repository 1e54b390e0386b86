"""DeepLab-LargeFOV with and without the dense CRF, same checkpoint, on a CamVid split.

One command (after training a checkpoint, e.g. with ``kseg train --model deeplab_v1 ...``)::

    python benchmarks/deeplab_crf_camvid.py --model-path runs/deeplab_v1/model.keras \\
        --data /path/to/camvid --split val

Prints one row per variant (global accuracy, class-average accuracy, mean IoU, seconds): the plain
model, the model rebuilt with ``crf=True`` and the same weights (DeepLab-LargeFOV's published CRF
parameters, 10 mean-field iterations), and the CRF with its positional widths scaled to the input
size relative to the 500-pixel PASCAL images the parameters were tuned on.
"""

import argparse
import json
import time

import kseg
from kseg.crf import DEEPLAB_LARGEFOV
from kseg.training import evaluate, load_model


def rebuild_with_crf(plain, crf_iterations, crf_params):
    """The same DeepLab-LargeFOV (widths read off the checkpoint) with ``crf=True``, same weights."""
    width_multiplier = plain.get_layer("conv1_1").filters / 64
    model = kseg.DeepLabV1(
        num_classes=int(plain.output_shape[-1]),
        input_shape=tuple(plain.input_shape[1:]),
        width_multiplier=width_multiplier,
        fc_width=plain.get_layer("fc6").filters,
        crf=True,
        crf_iterations=crf_iterations,
        crf_params=crf_params,
    )
    model.set_weights(plain.get_weights())
    return model


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-path", required=True, help="a deeplab_v1 .keras checkpoint")
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--steps", type=int, default=None, help="evaluate only this many batches")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    plain = load_model(args.model_path)
    size = plain.input_shape[1:3]
    scale = max(size) / 500.0  # the CRF parameters were cross-validated on ~500-pixel PASCAL images
    scaled = dict(DEEPLAB_LARGEFOV, theta_alpha=DEEPLAB_LARGEFOV["theta_alpha"] * scale,
                  theta_gamma=max(DEEPLAB_LARGEFOV["theta_gamma"] * scale, 1.0))
    variants = [
        ("DeepLab-LargeFOV", plain),
        (f"+ CRF ({args.iterations} it, DeepLab params)", rebuild_with_crf(plain, args.iterations, None)),
        (f"+ CRF ({args.iterations} it, xy std x{scale:.2f})", rebuild_with_crf(plain, args.iterations, scaled)),
    ]
    rows = []
    for name, model in variants:
        start = time.monotonic()
        res = evaluate(model, args.data, split=args.split, batch_size=args.batch_size, steps=args.steps, verbose=0)
        rows.append({"variant": name, "G": res["global_accuracy"], "C": res["class_average_accuracy"],
                     "mIoU": res["mean_iou"], "images": res["num_images"], "seconds": time.monotonic() - start})
    print(f"CamVid {args.split}, model input {size[0]}x{size[1]}, scored at full label resolution")
    print(f"{'variant':44s} {'G':>7s} {'C':>7s} {'mIoU':>7s} {'images':>7s} {'seconds':>8s}")
    for r in rows:
        print(f"{r['variant']:44s} {r['G']:7.4f} {r['C']:7.4f} {r['mIoU']:7.4f} {r['images']:7d} {r['seconds']:8.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
