"""Pool + unpool, forward + backward, at 1x360x480x64 (SegNet's first block on CamVid).

Compares kseg's layers (MaxPoolingWithArgmax2D / MaxUnpooling2D: without XLA on TensorFlow they
take the fused path, MaxPool + its gradient op MaxPoolGrad for the mask; under XLA the
keras.ops mask form) with the "index" form (tf.nn.max_pool_with_argmax + tf.scatter_nd) and with the
layers' keras.ops mask form forced, in the same run, each with and without XLA
(tf.function(jit_compile=True)). XLA has no kernel for MaxPoolWithArgmax, so that cell
is reported as failing rather than crashing the run. The outputs and input gradients of the two
forms are also compared (they must agree exactly).

    python benchmarks/pool_unpool.py                  # 1x360x480x64, 20 timed runs
    python benchmarks/pool_unpool.py --shape 1 45 45 8 --runs 5
"""

import argparse
import os
import re
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def build_steps(shape):
    import tensorflow as tf

    from kseg.layers.pooling import (
        MaxPoolingWithArgmax2D,
        MaxUnpooling2D,
        max_pool_with_argmax_indices,
        max_unpool_from_indices,
    )

    pool, unpool = MaxPoolingWithArgmax2D(2), MaxUnpooling2D(2)

    def mask_form(x, g):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y, mask = pool(x)
            out = unpool([y, mask])
            loss = tf.reduce_sum(out * g)
        return out, tape.gradient(loss, x)

    def index_form(x, g):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y, argmax = max_pool_with_argmax_indices(x, 2)
            out = max_unpool_from_indices(y, argmax, tf.shape(x, out_type=tf.int64))
            loss = tf.reduce_sum(out * g)
        return out, tape.gradient(loss, x)

    def portable_form(x, g):  # the layer's keras.ops computation, which XLA / JAX run
        with tf.GradientTape() as tape:
            tape.watch(x)
            y, mask = pool.mask_form(x)
            out = unpool([y, mask])
            loss = tf.reduce_sum(out * g)
        return out, tape.gradient(loss, x)

    return {"kseg layers": mask_form, "argmax + scatter_nd": index_form, "kseg mask_form (keras.ops)": portable_form}


def time_fn(fn, x, g, runs, warmup=2):
    for _ in range(warmup):
        out, grad = fn(x, g)
        grad.numpy()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out, grad = fn(x, g)
        grad.numpy()
        times.append(time.perf_counter() - t0)
    return times, out.numpy(), grad.numpy()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=4, default=(1, 360, 480, 64), metavar=("B", "H", "W", "C"))
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    # Quantised values make ties (the tie-break rule matters) as in post-ReLU feature maps.
    x = tf.constant(np.round(rng.normal(size=args.shape) * 4).astype("float32"))
    g = tf.constant(rng.normal(size=args.shape).astype("float32"))

    rows, reference = [], None
    for name, step in build_steps(args.shape).items():
        for xla in (False, True):
            fn = tf.function(step, jit_compile=xla)
            label = f"{name}, {'XLA' if xla else 'no XLA'}"
            try:
                times, out, grad = time_fn(fn, x, g, args.runs)
            except Exception as err:  # XLA: no kernel for MaxPoolWithArgmax
                found = re.search(r"unsupported operations.*?JIT: (\w+)", str(err), re.S)
                why = f"no XLA kernel for {found.group(1)}" if found else str(err).strip().splitlines()[-1][:120]
                rows.append((label, None, None, f"FAILS: {type(err).__name__}: {why}"))
                continue
            if reference is None:
                reference = (out, grad)
            diff = max(float(np.abs(out - reference[0]).max()), float(np.abs(grad - reference[1]).max()))
            rows.append((label, statistics.median(times) * 1e3, min(times) * 1e3, f"max |diff| vs first row {diff:.1e}"))

    print(f"\npool(2x2) + unpool, forward + backward, input {tuple(args.shape)}, "
          f"{args.runs} runs (TF {tf.__version__}, {os.cpu_count()} CPUs)")
    print(f"{'form':<34} {'median ms':>10} {'min ms':>9}  note")
    for label, med, best, note in rows:
        if med is None:
            print(f"{label:<34} {'-':>10} {'-':>9}  {note}")
        else:
            print(f"{label:<34} {med:>10.1f} {best:>9.1f}  {note}")
    med = {label: m for label, m, _, _ in rows}
    peer = med.get("argmax + scatter_nd, no XLA")
    if peer and med.get("kseg layers, no XLA"):
        print(f"ratio kseg layers / argmax + scatter_nd, no XLA: {med['kseg layers, no XLA'] / peer:.2f}x "
              f"(goal <= 1.0); kseg layers XLA / argmax + scatter_nd no XLA: {med['kseg layers, XLA'] / peer:.2f}x")
    return rows


if __name__ == "__main__":
    main()
