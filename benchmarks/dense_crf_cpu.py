"""Dense CRF CPU-seconds per image, kseg vs Krähenbühl's C++ (pydensecrf), 480x360 and 960x720 (issue 15 goal 2).

    flock /tmp/kseg-heavy.lock python benchmarks/dense_crf_cpu.py                       # 3 images, "after"
    flock /tmp/kseg-heavy.lock python benchmarks/dense_crf_cpu.py --normalization symmetric

Same images (CamVid test, KSEG_CAMVID or ../shared/data/camvid; 960x720 = bilinear 2x), same
unaries (benchmarks/dense_crf.py's stand-in for a CNN's scores) and DeepLab-LargeFOV parameters,
10 iterations, 12 labels, both sides in the same normalisation mode. CPU seconds are the process's
user + system time (``time.process_time``, all threads) around one call, wall seconds beside them;
median over images, each after one warm-up call per size (tracing / XLA compiling). pydensecrf runs
on one thread; TensorFlow on its default pools. Goal: kseg CPU <= 0.5x the C++'s, >= 99.99 % of
labels equal. Needs the dev extra ``bench`` (pydensecrf2).
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
    ap.add_argument("--scales", default="1,2", help="image scales (1 = 480x360)")
    ap.add_argument("--threads", type=int, default=0, help="TensorFlow intra/inter-op threads (0: its default)")
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

    ours = {
        "kseg (tf.function)": tf.function(lambda u, i: dense_crf(u, i, num_iterations=args.iterations,
                                                                  normalization=args.normalization, **p)),
        "kseg (tf.function, XLA point-wise)": tf.function(lambda u, i: dense_crf(
            u, i, num_iterations=args.iterations, normalization=args.normalization, jit_compile=True, **p)),
    }
    data = base.load_images(args.images)
    print(f"Dense CRF, {len(data)} CamVid test images, 12 labels, {args.iterations} iterations, DeepLab-LargeFOV "
          f"parameters, normalization={args.normalization!r} on both sides; median over images; TF threads: "
          f"{args.threads or 'default'}")
    print(f"{'size':<9}{'implementation':<36}{'CPU s':>8}{'wall s':>8}{'CPU vs C++':>12}{'labels = C++':>14}")
    for scale in [float(s) for s in args.scales.split(",")]:
        rows = {"C++ pydensecrf (1 thread)": ([], [], [])}
        rows.update({k: ([], [], []) for k in ours})
        for k, (_, img, gt) in enumerate(data):
            u = base.make_unary(gt, k)
            h, w = int(round(img.shape[0] * scale)), int(round(img.shape[1] * scale))
            if scale != 1:
                img = np.ascontiguousarray(tf.cast(tf.clip_by_value(tf.round(tf.image.resize(img[None], (h, w))), 0, 255),
                                                   tf.uint8)[0].numpy())
                u = np.ascontiguousarray(tf.image.resize(u[None], (h, w))[0].numpy())
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
            print(f"{f'{w}x{h}':<9}{name:<36}{statistics.median(cpu):>8.3f}{statistics.median(wall):>8.3f}"
                  f"{ratio:>11.2f}x{agree_s:>14}")
    print("(labels = C++: the smallest per-image share of pixels whose argmax equals pydensecrf's; goal CPU <= 0.50x)")


if __name__ == "__main__":
    main()
