"""Dense CRF CPU-seconds per image, kseg vs Krähenbühl's C++ (pydensecrf), 480x360 and 960x720 (issue 15 goal 2).

    flock /tmp/kseg-heavy.lock python benchmarks/dense_crf_cpu.py                       # 3 images, "after"
    flock /tmp/kseg-heavy.lock python benchmarks/dense_crf_cpu.py --normalization symmetric
    flock /tmp/kseg-heavy.lock python benchmarks/dense_crf_cpu.py --tables scaling,batch  # linearity, batching
    flock /tmp/kseg-heavy.lock python benchmarks/dense_crf_cpu.py --threads 1 --tables none --paired 5  # paired ratios

Same images (CamVid test, KSEG_CAMVID or ../shared/data/camvid; 960x720 = bilinear 2x), same
unaries (benchmarks/dense_crf.py's stand-in for a CNN's scores) and DeepLab-LargeFOV parameters,
10 iterations, 12 labels, both sides in the same normalisation mode. CPU seconds are the process's
user + system time (``time.process_time``, all threads) around one call, wall seconds beside them;
median over images, each after one warm-up call per size (tracing / XLA compiling). pydensecrf runs
on one thread; TensorFlow on its default pools (``--threads`` to pin them). Goal: kseg CPU <= 0.5x
the C++'s, >= 99.99 % of labels equal. Needs the dev extra ``bench`` (pydensecrf2).

Tables (``--tables``): ``main`` (the goal: per image at 480x360 and 960x720), ``scaling`` (one image
upscaled to 0.17 .. 4 MPix: CPU microseconds per pixel, kseg and C++; linear cost = a flat column)
and ``batch`` (B images of 480x360 in one call: CPU seconds per image).
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def measure(fn, *args):
    c, w = time.process_time(), time.perf_counter()
    out = fn(*args)
    out = out.numpy() if hasattr(out, "numpy") else out
    return time.process_time() - c, time.perf_counter() - w, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--normalization", default="after", choices=("after", "symmetric"))
    ap.add_argument("--scales", default="1,2", help="image scales of the main table (1 = 480x360)")
    ap.add_argument("--tables", default="main", help="comma-separated: main, scaling, batch")
    ap.add_argument("--scaling-scales", default="1,2,3,4,4.8", help="scales of the scaling table (4.8: 4.0 MPix)")
    ap.add_argument("--batches", default="1,2,4", help="batch sizes of the batch table")
    ap.add_argument("--batch-rounds", type=int, default=3, help="rounds of the batch table (median)")
    ap.add_argument("--threads", type=int, default=0, help="TensorFlow intra/inter-op threads (0: its default)")
    ap.add_argument("--paired", type=int, default=0, metavar="N",
                    help="table 'paired': N rounds over the images at each --scales size, one C++ call and one kseg "
                         "(jit_compile) call per image, alternating which goes first; median per-pair CPU ratio")
    args = ap.parse_args()

    import pydensecrf.densecrf as dcrf
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    import dense_crf as base
    from kseg.crf import dense_crf

    norm = {"after": dcrf.NORMALIZE_AFTER, "symmetric": dcrf.NORMALIZE_SYMMETRIC}[args.normalization]
    p = base.PARAMS

    def cpp(u, img):
        h, w, n = u.shape
        d = dcrf.DenseCRF2D(w, h, n)
        d.setUnaryEnergy(np.ascontiguousarray(-u.reshape(-1, n).T))
        d.addPairwiseGaussian(sxy=p["theta_gamma"], compat=p["spatial_weight"], normalization=norm)
        d.addPairwiseBilateral(sxy=p["theta_alpha"], srgb=p["theta_beta"], rgbim=img, compat=p["bilateral_weight"],
                               normalization=norm)
        return np.asarray(d.inference(args.iterations), np.float32).T.reshape(h, w, n)

    def kseg_fn(jit):
        return tf.function(lambda u, i: dense_crf(u, i, num_iterations=args.iterations,
                                                  normalization=args.normalization, jit_compile=jit, **p))

    ours = {"kseg (tf.function)": kseg_fn(False), "kseg (tf.function, jit_compile=True)": kseg_fn(True)}
    data = base.load_images(args.images)

    def scaled(k, scale):
        _, img, gt = data[k]
        u = base.make_unary(gt, k)
        h, w = int(round(img.shape[0] * scale)), int(round(img.shape[1] * scale))
        if scale != 1:
            img = np.ascontiguousarray(tf.cast(tf.clip_by_value(tf.round(tf.image.resize(img[None], (h, w))), 0, 255),
                                               tf.uint8)[0].numpy())
            u = np.ascontiguousarray(tf.image.resize(u[None], (h, w))[0].numpy())
        return u, img

    load = os.getloadavg()
    print(f"Dense CRF, CamVid test images, 12 labels, {args.iterations} iterations, DeepLab-LargeFOV parameters, "
          f"normalization={args.normalization!r} on both sides; TF threads: {args.threads or 'default'}; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    tables = args.tables.split(",")
    if "main" in tables:
        print(f"\n{len(data)} images, median over images")
        print(f"{'size':<9}{'implementation':<40}{'CPU s':>8}{'wall s':>8}{'CPU vs C++':>12}{'labels = C++':>14}")
        for scale in [float(s) for s in args.scales.split(",")]:
            rows = {"C++ pydensecrf (1 thread)": ([], [], [])}
            rows.update({k: ([], [], []) for k in ours})
            for k in range(len(data)):
                u, img = scaled(k, scale)
                h, w = img.shape[:2]
                c, wall, ref = measure(cpp, u, img)
                rows["C++ pydensecrf (1 thread)"][0].append(c)
                rows["C++ pydensecrf (1 thread)"][1].append(wall)
                for name, fn in ours.items():
                    fn(tf.constant(u), tf.constant(img))  # trace / compile
                    c, wall, q = measure(fn, tf.constant(u), tf.constant(img))
                    rows[name][0].append(c)
                    rows[name][1].append(wall)
                    rows[name][2].append(float((q.argmax(-1) == ref.argmax(-1)).mean()))
            base_cpu = statistics.median(rows["C++ pydensecrf (1 thread)"][0])
            for name, (cpu, wall, agree) in rows.items():
                ratio = statistics.median(cpu) / base_cpu
                agree_s = f"{min(agree) * 100:.4f}%" if agree else "-"
                print(f"{f'{w}x{h}':<9}{name:<40}{statistics.median(cpu):>8.3f}{statistics.median(wall):>8.3f}"
                      f"{ratio:>11.2f}x{agree_s:>14}")
        print("(labels = C++: the smallest per-image share of pixels whose argmax equals pydensecrf's; goal CPU <= 0.50x)")

    if "scaling" in tables:
        print("\nLinearity: image 0 upscaled, one call each (after a warm-up call); CPU microseconds per pixel")
        print(f"{'size':<11}{'MPix':>6}{'C++ us/px':>11}{'kseg us/px':>12}{'kseg jit us/px':>16}{'kseg/C++':>10}{'labels = C++':>14}")
        for scale in [float(s) for s in args.scaling_scales.split(",")]:
            u, img = scaled(0, scale)
            h, w = img.shape[:2]
            n = h * w
            c_cpp, _, ref = measure(cpp, u, img)
            per = []
            agree = []
            for fn in ours.values():
                fn(tf.constant(u), tf.constant(img))
                c, _, q = measure(fn, tf.constant(u), tf.constant(img))
                per.append(c / n * 1e6)
                agree.append(float((q.argmax(-1) == ref.argmax(-1)).mean()))
            print(f"{f'{w}x{h}':<11}{n / 1e6:>6.2f}{c_cpp / n * 1e6:>11.3f}{per[0]:>12.3f}{per[1]:>16.3f}"
                  f"{per[0] / (c_cpp / n * 1e6):>9.2f}x{min(agree) * 100:>13.4f}%")

    if args.paired:
        # Noise that lasts longer than a call (this machine's speed moves by 30% between runs) hits
        # both sides of a pair: the per-pair ratio is steadier than a ratio of block medians.
        jit = ours["kseg (tf.function, jit_compile=True)"]
        print(f"\npaired rounds: C++ vs kseg (jit_compile=True), {args.paired} rounds x {len(data)} images, "
              "alternating which runs first; CPU seconds")
        print(f"{'size':<9}{'pairs':>6}{'C++ s':>8}{'kseg s':>8}{'ratio':>8}{'quartiles':>14}")
        for scale in [float(s) for s in args.scales.split(",")]:
            inputs = [scaled(k, scale) for k in range(len(data))]
            for u, img in inputs:
                jit(tf.constant(u), tf.constant(img))  # trace / compile
            c_s, k_s, ratios = [], [], []
            for r in range(args.paired):
                for k, (u, img) in enumerate(inputs):
                    first_cpp = (r + k) % 2 == 0
                    if first_cpp:
                        c = measure(cpp, u, img)[0]
                    kc = measure(jit, tf.constant(u), tf.constant(img))[0]
                    if not first_cpp:
                        c = measure(cpp, u, img)[0]
                    c_s.append(c)
                    k_s.append(kc)
                    ratios.append(kc / c)
            q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
            h, w = inputs[0][1].shape[:2]
            print(f"{f'{w}x{h}':<9}{len(ratios):>6}{statistics.median(c_s):>8.3f}{statistics.median(k_s):>8.3f}"
                  f"{statistics.median(ratios):>7.2f}x{f'{q1:.2f}-{q3:.2f}x':>14}")
        print("(ratio: median over pairs of kseg CPU / C++ CPU; goal <= 0.50x)")

    if "batch" in tables:
        print("\nBatching: B images of 480x360 in one call (images repeat if B > --images); CPU seconds per image,")
        print(f"median of {args.batch_rounds} rounds (kseg filters a batch one image at a time in a tf.map_fn); "
              "wall seconds per image of the jit call beside")
        print(f"{'B':<4}{'kseg s/img':>12}{'kseg jit s/img':>16}{'jit wall/img':>14}{'C++ s/img':>11}")
        for b in [int(s) for s in args.batches.split(",")]:
            us, imgs = zip(*[scaled(k % len(data), 1) for k in range(b)])
            u, img = tf.constant(np.stack(us)), tf.constant(np.stack(imgs))
            per = []
            for fn in ours.values():
                fn(u, img)
                runs = [measure(fn, u, img)[:2] for _ in range(args.batch_rounds)]
                per.append((statistics.median(r[0] for r in runs) / b, statistics.median(r[1] for r in runs) / b))
            c_cpp = statistics.median(sum(measure(cpp, us[k], imgs[k])[0] for k in range(b)) / b
                                      for _ in range(args.batch_rounds))
            print(f"{b:<4}{per[0][0]:>12.3f}{per[1][0]:>16.3f}{per[1][1]:>14.3f}{c_cpp:>11.3f}")

if __name__ == "__main__":
    main()
