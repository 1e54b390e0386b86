"""Domain transform (DT-EdgeNet) against OpenCV's ``ximgproc.dtFilter`` (DTF_RF, 1 thread), same run.

    flock /tmp/kseg-heavy.lock python benchmarks/domain_transform.py            # the full table
    python benchmarks/domain_transform.py --goal    # default method and OpenCV at 360x480x3 and x21 only
    python benchmarks/domain_transform.py --edgenet-only   # the DT-EdgeNet training step, each method

Needs opencv-contrib (``cv2.ximgproc``) for the peer rows. Both filter the same signal with the same
edge map: the guide given to OpenCV is ``I(r, c) = F(r + c)``, whose horizontal and vertical
differences are one map ``g``, the edge map kseg gets (``max|y-cv|`` is printed per row).

Rows: OpenCV at 360x480x3 and at 360x480x21 (its calls take at most 4 channels: 4+4+4+3+3+3, all
timed); kseg :func:`~kseg.layers.domain_transform.domain_transform` forward and forward+backward
(gradients w.r.t. the signal and the edge map) for each method, without and with XLA
(``tf.function(jit_compile=...)``), at 360x480x3, 360x480x21 and DT-EdgeNet's 90x120x21; and one
DT-EdgeNet training step (SGD, 1x360x480 image, ``--edgenet-width`` of the channels) both ways.
Figures are the median over ``--repeats`` runs after one warm-up: wall milliseconds and this
process's CPU milliseconds (the machine is shared: the load average is printed before and after).
"""

import argparse
import os
import statistics
import time

import numpy as np


def diagonal_guide(h, w, seed=0):
    f = np.random.default_rng(seed).uniform(0, 0.05, h + w).astype("float32")
    f[::11] += 1.0
    idx = np.add.outer(np.arange(h), np.arange(w))
    prev = np.concatenate([f[:1], f[:-1]])
    return f[idx], np.abs(f - prev)[idx]


def timed(fn, repeats):
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    walls, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls) * 1e3, statistics.median(cpus) * 1e3, first


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="only the default method's 360x480x3 rows")
    parser.add_argument("--goal", action="store_true", help="only the default method at 360x480x3 and 360x480x21")
    parser.add_argument("--no-edgenet", action="store_true", help="skip the DT-EdgeNet training step")
    parser.add_argument("--edgenet-only", action="store_true", help="only the DT-EdgeNet training step rows")
    parser.add_argument("--edgenet-width", type=float, default=0.25, help="DT-EdgeNet width_multiplier")
    parser.add_argument("--paired", type=int, default=0, metavar="N",
                        help="with --goal: also N rounds alternating one kseg forward (the layer's default, "
                             "no XLA) and one OpenCV filtering of the same signal; the median of the per-round "
                             "ratios (noise that lasts longer than a round hits both sides)")
    args = parser.parse_args(argv)

    import tensorflow as tf

    import kseg
    from kseg.layers.domain_transform import domain_transform

    try:
        import cv2

        cv2.setNumThreads(1)
        dt_filter = cv2.ximgproc.dtFilter
    except (ImportError, AttributeError):
        dt_filter = None
        print("OpenCV contrib (cv2.ximgproc) not installed: no peer rows")

    rows = []  # (name, size, fwd wall, fwd cpu, bwd wall, bwd cpu, compile s, max|y-cv|)
    load0 = os.getloadavg()
    signals, outputs_cv = {}, {}

    def signal(h, w, c):
        if (h, w, c) not in signals:
            guide, edges = diagonal_guide(h, w)
            x = np.random.default_rng(1).normal(size=(h, w, c)).astype("float32")
            signals[h, w, c] = guide, edges, x
        return signals[h, w, c]

    def peer(h, w, c):
        guide, _, x = signal(h, w, c)
        splits = [4] * (c // 4) if c % 4 == 0 else None
        if splits is None:  # the most 4s, then 3s: 21 = 4+4+4+3+3+3
            n4 = c // 4
            while (c - 4 * n4) % 3:
                n4 -= 1
            splits = [4] * n4 + [3] * ((c - 4 * n4) // 3)
        starts = np.cumsum([0] + splits)
        parts = [np.ascontiguousarray(x[..., s:s + n]) for s, n in zip(starts, splits)]

        def run():
            return [dt_filter(guide, p, 130.0, 0.1, mode=cv2.ximgproc.DTF_RF, numIters=3) for p in parts]

        f_ms, f_cpu, _ = timed(run, args.repeats * 3)
        outputs_cv[h, w, c] = np.concatenate(run(), axis=-1)
        rows.append((f"OpenCV dtFilter x{len(parts)} ({'+'.join(map(str, splits))} ch)", f"{h}x{w}x{c}",
                     f_ms, f_cpu, None, None, None, None))
        peers[h, w, c] = run

    peers, paired = {}, []

    def pair(h, w, c, rounds):
        _, edges, x = signal(h, w, c)
        x_tf, g_tf = tf.constant(x[None]), tf.constant(edges[None, ..., None])
        fwd = tf.function(lambda a, b: domain_transform(a, b))
        fwd(x_tf, g_tf).numpy()
        ratios, ours_ms, cv_ms = [], [], []
        for i in range(rounds):
            sides = [("kseg", lambda: fwd(x_tf, g_tf).numpy()), ("cv", peers[h, w, c])]
            times = {}
            for name, fn in sides if i % 2 == 0 else sides[::-1]:  # each side first in half the rounds
                t0 = time.perf_counter()
                fn()
                times[name] = time.perf_counter() - t0
            ratios.append(times["kseg"] / times["cv"])
            ours_ms.append(times["kseg"] * 1e3)
            cv_ms.append(times["cv"] * 1e3)
        q = statistics.quantiles(ratios, n=4)
        paired.append((f"{h}x{w}x{c}", rounds, statistics.median(ours_ms), statistics.median(cv_ms),
                       statistics.median(ratios), q[0], q[2]))

    def ours(method, xla, h, w, c, backward=True):
        _, edges, x = signal(h, w, c)
        x_tf, g_tf = tf.constant(x[None]), tf.constant(edges[None, ..., None])
        fwd = tf.function(lambda a, b: domain_transform(a, b, method=method), jit_compile=xla)

        @tf.function(jit_compile=xla)
        def grad(a, b):
            with tf.GradientTape() as tape:
                tape.watch([a, b])
                loss = tf.reduce_sum(domain_transform(a, b, method=method) ** 2)
            return tape.gradient(loss, [a, b])

        f_ms, f_cpu, f_first = timed(lambda: fwd(x_tf, g_tf).numpy(), args.repeats)
        b_ms = b_cpu = None
        b_first = 0.0
        if backward:
            b_ms, b_cpu, b_first = timed(lambda: [t.numpy() for t in grad(x_tf, g_tf)], args.repeats)
        y = fwd(x_tf, g_tf).numpy()[0]
        ref = outputs_cv.get((h, w, c))
        diff = float(np.abs(y - ref).max()) if ref is not None else None
        rows.append((f"kseg {method}{' +XLA' if xla else ''}", f"{h}x{w}x{c}", f_ms, f_cpu, b_ms, b_cpu,
                     f_first + b_first, diff))

    def print_rows():
        print(f"{'row':<44}{'size':>12}{'fwd ms':>9}{'fwd cpu':>9}{'f+b ms':>9}{'f+b cpu':>9}{'compile s':>10}"
              f"{'max|y-cv|':>11}")

        def fmt(v, width):
            return " " * width if v is None else f"{v:>{width}.1f}"

        for name, size, fm, fc, bm, bc, comp, diff in rows:
            d = "" if diff is None else f"{diff:.1e}"
            print(f"{name:<44}{size:>12}{fmt(fm, 9)}{fmt(fc, 9)}{fmt(bm, 9)}{fmt(bc, 9)}{fmt(comp, 10)}{d:>11}")

    sizes = [(360, 480, 3)] if args.quick else [(360, 480, 3), (360, 480, 21), (90, 120, 21)]
    if args.goal:
        args.quick, sizes = True, [(360, 480, 3), (360, 480, 21)]
    if args.edgenet_only:
        sizes = []
    for h, w, c in sizes:
        if dt_filter is not None:
            peer(h, w, c)
    plan = [("sequential", False, (360, 480, 3)), ("sequential", True, (360, 480, 3))]
    if args.goal:
        plan += [("sequential", False, (360, 480, 21)), ("sequential", True, (360, 480, 21))]
    if not args.quick:
        plan += [("sequential", False, (360, 480, 21)), ("sequential", True, (360, 480, 21)),
                 ("doubling", False, (360, 480, 3))]  # under XLA it is the sequential row's program
        for method in ("sequential", "doubling", "scan"):  # keras' associative_scan traces for minutes at 480
            plan += [(method, False, (90, 120, 21)), (method, True, (90, 120, 21))]
    for method, xla, size in [] if args.edgenet_only else plan:
        ours(method, xla, *size)
        print(f"  {rows[-1]}", flush=True)
    if args.goal and args.paired and dt_filter is not None:
        for size in sizes:
            pair(*size, args.paired)

    if not args.quick and not args.no_edgenet:
        import keras

        for xla, dt_method in ((False, "auto"), (False, "doubling"), (True, "auto"), (True, "doubling")):
            keras.utils.set_random_seed(0)
            model = kseg.DTEdgeNet(input_shape=(360, 480, 3), num_classes=21, width_multiplier=args.edgenet_width,
                                   fc_width=max(8, int(1024 * args.edgenet_width)),
                                   edge_channels=max(4, int(128 * args.edgenet_width)), dt_method=dt_method)
            model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse", jit_compile=xla)
            xb = np.random.default_rng(0).uniform(0, 255, (1, 360, 480, 3)).astype("float32")
            yb = np.random.default_rng(1).uniform(0, 1, (1, *model.output_shape[1:])).astype("float32")
            ms, cpu, first = timed(lambda: model.train_on_batch(xb, yb), args.repeats)
            dt = model.get_layer("domain_transform")
            default = " (default)" if dt_method == "auto" else ""
            rows.append((f"DT-EdgeNet step {dt.method}{default}{' +XLA' if xla else ''}",
                         f"w={args.edgenet_width:g}", ms, cpu, None, None, first, None))
            print(f"  {rows[-1]}", flush=True)

    print(f"domain transform, K=3, sigma_s=130, sigma_r=0.1, TF {tf.__version__}, {os.cpu_count()} CPUs, "
          f"median of {args.repeats} (OpenCV {3 * args.repeats}), load average {load0[0]:.1f} -> "
          f"{os.getloadavg()[0]:.1f}; 'cpu' = this process's CPU ms; f+b = forward + gradients w.r.t. x and g")
    print_rows()
    if paired:
        print(f"\npaired rounds (kseg {domain_transform.__defaults__[-1]!r} forward, no XLA, vs OpenCV, alternating):")
        print(f"{'size':>12}{'rounds':>8}{'kseg ms':>9}{'cv ms':>8}{'ratio':>7}   quartiles")
        for size, n, k_ms, c_ms, r, q1, q3 in paired:
            print(f"{size:>12}{n:>8}{k_ms:>9.1f}{c_ms:>8.1f}{r:>6.2f}x   {q1:.2f}-{q3:.2f}x")


if __name__ == "__main__":
    main()
