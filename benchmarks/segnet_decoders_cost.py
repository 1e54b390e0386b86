"""SegNet's decoder variants (PAMI 2017, Table 1): parameters, encoder storage for the decoder, CPU inference time.

Every variant of :mod:`kseg.models.segnet_decoders` (SegNet-Basic is the peer: the storage unit
and the paper's reference row) at the paper's 360 x 480, 11 classes, untrained weights (cost does
not depend on them), batch 1, float32, TensorFlow graph (``tf.function``) on this machine's CPUs,
median (and min) of ``--runs`` forward passes after two warm-up passes, timed round-robin over
the variants so that load from other processes on a shared machine falls on all of them alike.
The paper's own numbers (Caffe, NVIDIA Titan, cuDNN v3, mean of 50) stand beside ours.

Storage (:func:`kseg.models.segnet_decoders.decoder_storage_bytes`): "mult" is Table 1's storage
multiplier (first-layer storage in the paper's unit, which counts SegNet-Basic's indices as
0.17 MB); "first MB" is the first-layer storage with indices at 2 bits per pooling window (the
paper's stated ideal) and float32 maps; "all MB" the same over every decoder stage; "kseg mask MB"
what kseg's ``MaxPoolingWithArgmax2D`` actually keeps (a float32 mask of the pooling input).

    flock /tmp/kseg-heavy.lock python benchmarks/segnet_decoders_cost.py
    python benchmarks/segnet_decoders_cost.py --size 90 120 --runs 2      # quick check
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Table 1 (median frequency balancing columns): params (M), storage multiplier, inference ms (Titan GPU).
PAPER = {
    "bilinear_interpolation": (0.625, "0", 24.2),
    "segnet_basic": (1.425, "1", 52.6),
    "segnet_basic_encoder_addition": (1.425, "64", 53.0),
    "segnet_basic_single_channel_decoder": (0.625, "1", 33.1),
    "fcn_basic": (0.65, "11", 24.2),
    "fcn_basic_no_addition": (0.65, "n/a", 23.8),
    "fcn_basic_no_dim_reduction": (1.625, "64", 44.8),
    "fcn_basic_no_addition_no_dim_reduction": (1.625, "0", 43.9),
}


def build(name, num_classes):
    import kseg

    if name == "segnet_basic":
        return kseg.SegNetBasic(num_classes=num_classes, input_shape=(None, None, 3))
    return kseg.models.get(name).build(num_classes=num_classes)


def time_models(models, x, runs):
    """Per model: (median, min) ms of `runs` passes, timed round-robin (one pass of each model per
    round) so that load from other processes falls on every model alike."""
    import tensorflow as tf

    fns = {name: tf.function(lambda t, m=m: m(t, training=False)) for name, m in models.items()}
    for fn in fns.values():
        for _ in range(2):
            fn(x).numpy()
    times = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn(x).numpy()
            times[name].append(1000 * (time.perf_counter() - t0))
    return {name: (statistics.median(t), min(t)) for name, t in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=2, default=(360, 480), metavar=("H", "W"))
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--num-classes", type=int, default=11)
    parser.add_argument("--models", nargs="+", default=None, help="registry names (default: all of Table 1)")
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    import kseg
    from kseg.models.segnet_decoders import VARIANTS, decoder_storage_bytes

    names = args.models or list(VARIANTS)
    h, w = args.size
    x = tf.constant(np.random.default_rng(0).uniform(0, 255, (1, h, w, 3)).astype("float32"))
    mb = 1e-6
    print(f"SegNet decoder variants at {h}x{w}, {args.num_classes} classes, batch 1, float32, TF graph on "
          f"{os.cpu_count()} CPUs, median (min) of {args.runs} round-robin passes; paper: Caffe on a Titan GPU")
    models = {name: build(name, args.num_classes) for name in names}
    ms = time_models(models, x, args.runs)
    header = (f"{'variant':<40} {'params':>10} {'paper M':>7} | {'mult':>5} {'paper':>5} {'first MB':>8} "
              f"{'all MB':>7} {'kseg mask MB':>12} | {'CPU ms':>8} {'(min)':>7} {'paper ms':>8}")
    print(header)
    print("-" * len(header))
    for name, model in models.items():
        s = decoder_storage_bytes(model, (h, w))
        first = s["first_layer"]["indices_2bit"] + s["first_layer"]["feature_maps"]
        p_params, p_mult, p_ms = PAPER.get(name, (float("nan"), "?", float("nan")))
        print(f"{name:<40} {kseg.count_params(model):>10,} {p_params:>7.3f} | {s['storage_multiplier_paper']:>5g} "
              f"{p_mult:>5} {first * mb:>8.3f} {s['total'] * mb:>7.3f} {s['indices_stored'] * mb:>12.1f} | "
              f"{ms[name][0]:>8.1f} {ms[name][1]:>7.1f} {p_ms:>8.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
