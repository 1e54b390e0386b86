"""Dense CRF: kseg.crf.dense_crf (TF ops) vs Krähenbühl's C++ code (pydensecrf), same run.

    flock /tmp/kseg-heavy.lock python benchmarks/dense_crf.py               # compare + crops + scaling
    flock /tmp/kseg-heavy.lock python benchmarks/dense_crf.py --mode scaling

Chunked (each chunk well under 20 s of CPU, for a busy shared machine):

    python benchmarks/dense_crf.py --mode compare --per-image-only --select 0,1,2 --jsonl /tmp/crf.jsonl
    ...
    python benchmarks/dense_crf.py --summarize /tmp/crf.jsonl
    python benchmarks/dense_crf.py --mode extras
    python benchmarks/dense_crf.py --mode scaling --sizes 0.25,0.5

Needs the dev extra ``bench`` (``pip install pydensecrf2``) and CamVid (KSEG_CAMVID or
../shared/data/camvid). Settings: DeepLab-LargeFOV's CRF (bi_w=4, bi_xy_std=121, bi_rgb_std=5,
pos_w=3, pos_xy_std=3), 10 iterations, Potts, per-pixel ("after") normalisation on both sides
(pydensecrf: ``normalization=NORMALIZE_AFTER``), 12 labels (CamVid's 11 classes + void).

Unaries: a deterministic stand-in for a CNN's output, built from the ground truth: one-hot (logit
``--strength``) + Gaussian noise (std ``--noise``), average-pooled by 8 and bilinearly upsampled
(the output stride of DeepLab/FCN). Both implementations get exactly the same logits
(pydensecrf: ``-logits`` as the unary energy, which differs from -log softmax by a per-pixel
constant only).

Timing: wall time of one full call (lattice construction + 10 iterations + result), median over
images; ours after one warm-up call per image size (tracing). pydensecrf is single-threaded; TF
uses all cores of the machine (2 here).
"""

import argparse
import glob
import json
import os
import pathlib
import statistics
import time

import numpy as np
from PIL import Image

PARAMS = dict(theta_alpha=121.0, theta_beta=5.0, theta_gamma=3.0, bilateral_weight=4.0, spatial_weight=3.0)


def camvid_dir():
    root = pathlib.Path(__file__).resolve().parents[1]
    return pathlib.Path(os.environ.get("KSEG_CAMVID", root.parent / "shared" / "data" / "camvid"))


def load_images(n):
    files = sorted(glob.glob(str(camvid_dir() / "test" / "*.png")))
    if not files:
        raise SystemExit(f"no CamVid test images under {camvid_dir()}")
    picks = np.linspace(0, len(files) - 1, n).round().astype(int)
    out = []
    for i in picks:
        f = files[i]
        img = np.array(Image.open(f).convert("RGB"))  # writable: pydensecrf needs a writable buffer
        gt = np.asarray(Image.open(f.replace(os.sep + "test" + os.sep, os.sep + "testannot" + os.sep)))
        out.append((os.path.basename(f), img, gt))
    return out


def make_unary(gt, seed, labels=12, strength=3.0, noise=2.5):
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    x = strength * np.eye(labels, dtype=np.float32)[np.minimum(gt, labels - 1)]
    x += rng.normal(size=x.shape).astype(np.float32) * noise
    h, w = gt.shape
    small = tf.nn.avg_pool2d(x[None], 8, 8, "SAME")
    return np.ascontiguousarray(tf.image.resize(small, (h, w), method="bilinear")[0].numpy())


def pydensecrf_q(logits, img, iterations):
    import pydensecrf.densecrf as dcrf

    h, w, n = logits.shape
    d = dcrf.DenseCRF2D(w, h, n)
    d.setUnaryEnergy(np.ascontiguousarray(-logits.reshape(-1, n).T))
    d.addPairwiseGaussian(sxy=PARAMS["theta_gamma"], compat=PARAMS["spatial_weight"], normalization=dcrf.NORMALIZE_AFTER)
    d.addPairwiseBilateral(
        sxy=PARAMS["theta_alpha"],
        srgb=PARAMS["theta_beta"],
        rgbim=np.ascontiguousarray(img),
        compat=PARAMS["bilateral_weight"],
        normalization=dcrf.NORMALIZE_AFTER,
    )
    return np.asarray(d.inference(iterations), np.float32).T.reshape(h, w, n)


def ours_fn(iterations, jit):
    import tensorflow as tf

    from kseg.crf import dense_crf

    return tf.function(lambda u, i: dense_crf(u, i, num_iterations=iterations, jit_compile=jit, **PARAMS), reduce_retracing=True)


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    if hasattr(out, "numpy"):
        out = out.numpy()
    return time.perf_counter() - t, out


def compare(args):
    import tensorflow as tf

    from kseg.crf.reference import reference_dense_crf

    data = load_images(args.images)
    indices = range(len(data)) if not args.select else [int(i) for i in args.select.split(",")]
    fns = {"tf": ours_fn(args.iterations, False), "tf+xla": ours_fn(args.iterations, True)}
    if args.no_xla:
        fns.pop("tf+xla")
    times = {"pydensecrf": [], "tf": [], "tf+xla": []}
    agree = {"tf": [], "tf+xla": []}
    mad = {"tf": [], "tf+xla": []}
    unary_acc, crf_acc = [], []
    for k in indices:
        name, img, gt = data[k]
        u = make_unary(gt, k, strength=args.strength, noise=args.noise)
        t, p = timed(pydensecrf_q, u, img, args.iterations)
        times["pydensecrf"].append(t)
        for key, fn in fns.items():
            fn(u, img)  # warm-up / trace
            t, q = timed(fn, tf.constant(u), tf.constant(img))
            times[key].append(t)
            agree[key].append(float((q.argmax(-1) == p.argmax(-1)).mean()))
            mad[key].append(float(np.abs(q - p).mean()))
        valid = gt < 11
        unary_acc.append(float((u.argmax(-1) == gt)[valid].mean()))
        crf_acc.append(float((p.argmax(-1) == gt)[valid].mean()))
        record = {"image": name, "unary_acc": unary_acc[-1], "crf_acc": crf_acc[-1]}
        record.update({f"time_{key}": v[-1] for key, v in times.items() if v})
        record.update({f"agree_{key}": v[-1] for key, v in agree.items() if v})
        record.update({f"mad_{key}": v[-1] for key, v in mad.items() if v})
        print("  " + json.dumps(record), flush=True)
        if args.jsonl:
            with open(args.jsonl, "a") as fh:
                fh.write(json.dumps(record) + "\n")
    if args.per_image_only:
        return
    summarize_records(
        [{"time_pydensecrf": a, **{f"time_{k}": times[k][i] for k in fns}, **{f"agree_{k}": agree[k][i] for k in fns},
          **{f"mad_{k}": mad[k][i] for k in fns}, "unary_acc": unary_acc[i], "crf_acc": crf_acc[i]}
         for i, a in enumerate(times["pydensecrf"])],
        args,
    )
    rest(args, data, fns)


def summarize_records(records, args):
    keys = [k for k in ("tf", "tf+xla") if f"time_{k}" in records[0]]
    med = {k: statistics.median(r[f"time_{k}"] for r in records) for k in ["pydensecrf"] + keys}
    print(f"\nDense CRF, {len(records)} CamVid test images 480x360, 12 labels, {args.iterations} iterations, DeepLab-LargeFOV parameters")
    print(f"unaries: GT one-hot x{args.strength} + N(0, {args.noise}^2), avg-pool 8 + bilinear up; pixel accuracy (void excluded) unary {np.mean([r['unary_acc'] for r in records]):.4f} -> CRF {np.mean([r['crf_acc'] for r in records]):.4f}")
    print(f"{'implementation':<28}{'median s':>10}{'vs C++':>9}{'label agreement':>17}{'mean|dQ| vs C++':>17}")
    print(f"{'pydensecrf (C++, 1 thread)':<28}{med['pydensecrf']:>10.3f}{1.0:>9.2f}{'-':>17}{'-':>17}")
    for key in keys:
        label = "kseg TF ops" if key == "tf" else "kseg TF ops + XLA (build)"
        agree = np.mean([r[f"agree_{key}"] for r in records])
        mad = np.mean([r[f"mad_{key}"] for r in records])
        print(f"{label:<28}{med[key]:>10.3f}{med[key] / med['pydensecrf']:>9.2f}{agree * 100:>16.3f}%{mad:>17.2e}")
    print(f"(min agreement over images: {min(r['agree_tf'] for r in records) * 100:.3f}%)")


def rest(args, data, fns):
    import tensorflow as tf

    from kseg.crf.reference import reference_dense_crf

    # batched: 4 images in one call
    b = min(4, len(data))
    ub = np.stack([make_unary(gt, k, strength=args.strength, noise=args.noise) for k, (_, _, gt) in enumerate(data[:b])])
    ib = np.stack([img for _, img, _ in data[:b]])
    for key, fn in fns.items():
        fn(ub, ib)
        ts = [timed(fn, tf.constant(ub), tf.constant(ib))[0] for _ in range(3)]
        print(f"batched {b}x480x360 ({key}): {statistics.median(ts):.3f} s per call, {statistics.median(ts) / b:.3f} s per image")

    # exact mean field on small crops
    rng = np.random.default_rng(0)
    d_ours, d_cpp, d_between = [], [], []
    for k, (_, img, gt) in enumerate(data[: args.crops]):
        u = make_unary(gt, 100 + k, strength=args.strength, noise=args.noise)
        y, x = rng.integers(0, img.shape[0] - 24), rng.integers(0, img.shape[1] - 32)
        ci, cu = np.ascontiguousarray(img[y : y + 24, x : x + 32]), np.ascontiguousarray(u[y : y + 24, x : x + 32])
        exact = reference_dense_crf(cu, ci, num_iterations=args.iterations, **PARAMS)
        q = ours_fn(args.iterations, False)(cu, ci).numpy()
        p = pydensecrf_q(cu, ci, args.iterations)
        d_ours.append(np.abs(q - exact).mean())
        d_cpp.append(np.abs(p - exact).mean())
        d_between.append(np.abs(q - p).mean())
    print(f"\nvs the exact O(N^2) mean field on {len(d_ours)} crops of 32x24 (same unaries/params):")
    print(f"  mean|Q - Q_exact|: kseg {np.mean(d_ours):.2e}, pydensecrf {np.mean(d_cpp):.2e}; kseg vs pydensecrf {np.mean(d_between):.2e}")


def scaling(args):
    import tensorflow as tf

    sizes = [float(x) for x in args.sizes.split(",")]
    name, img, gt = load_images(1)[0]
    u = make_unary(gt, 0, strength=args.strength, noise=args.noise)
    print(f"\nDense CRF cost vs image size ({name} bilinearly resized, 12 labels, {args.iterations} iterations)")
    print(f"{'MPix':>6}{'size':>12}{'pydensecrf s':>14}{'s/MPix':>8}{'tf s':>8}{'s/MPix':>8}{'tf+xla s':>10}{'s/MPix':>8}{'agree %':>9}")
    fns = {"tf": ours_fn(args.iterations, False), "tf+xla": ours_fn(args.iterations, True)}
    for mp in sizes:
        w = int(round(np.sqrt(mp * 1e6 * 4 / 3)))
        h = int(round(mp * 1e6 / w))
        im = np.ascontiguousarray(tf.cast(tf.clip_by_value(tf.image.resize(img[None], (h, w)), 0, 255), tf.uint8)[0].numpy())
        un = np.ascontiguousarray(tf.image.resize(u[None], (h, w))[0].numpy())
        tp = statistics.median([timed(pydensecrf_q, un, im, args.iterations)[0] for _ in range(args.repeats)])
        p = pydensecrf_q(un, im, args.iterations)
        row = [tp]
        for fn in fns.values():
            fn(un, im)
            ts = []
            for _ in range(args.repeats):
                t, q = timed(fn, tf.constant(un), tf.constant(im))
                ts.append(t)
            row.append(statistics.median(ts))
        agree = (q.argmax(-1) == p.argmax(-1)).mean() * 100
        mpx = h * w / 1e6
        print(f"{mpx:>6.2f}{f'{w}x{h}':>12}{row[0]:>14.3f}{row[0] / mpx:>8.3f}{row[1]:>8.3f}{row[1] / mpx:>8.3f}{row[2]:>10.3f}{row[2] / mpx:>8.3f}{agree:>9.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=("all", "compare", "extras", "scaling"), default="all")
    ap.add_argument("--images", type=int, default=10)
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--crops", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--strength", type=float, default=3.0)
    ap.add_argument("--noise", type=float, default=2.5)
    ap.add_argument("--sizes", default="0.25,0.5,1,2", help="megapixels for --mode scaling")
    ap.add_argument("--select", default="", help="comma-separated indices of the --images picks (chunked runs)")
    ap.add_argument("--no-xla", action="store_true")
    ap.add_argument("--per-image-only", action="store_true", help="only the per-image comparison (chunked runs)")
    ap.add_argument("--jsonl", default="", help="append per-image records to this file")
    ap.add_argument("--summarize", default="", help="print the comparison table from a --jsonl file and exit")
    args = ap.parse_args()
    if args.summarize:
        with open(args.summarize) as fh:
            summarize_records([json.loads(line) for line in fh if line.strip()], args)
        return
    if args.mode in ("all", "compare"):
        compare(args)
    if args.mode == "extras":  # batched timing and exact-vs-lattice crops only (chunked runs)
        fns = {"tf": ours_fn(args.iterations, False), "tf+xla": ours_fn(args.iterations, True)}
        if args.no_xla:
            fns.pop("tf+xla")
        rest(args, load_images(args.images), fns)
    if args.mode in ("all", "scaling"):
        scaling(args)


if __name__ == "__main__":
    main()
