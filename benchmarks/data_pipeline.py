"""kseg.data on real CamVid: class weights, up-front validation, pipeline throughput, each next to its peer.

    flock /tmp/kseg-heavy.lock python benchmarks/data_pipeline.py [--data ../shared/data/camvid]

Rows (median seconds over `--repeats` runs; the caches are cleared before each run):
- median-frequency weights over the train masks: Pillow + numpy bincount (kseg) vs tf.io.decode_png +
  tf.math.bincount (the peer);
- up-front validation of the train pairs: header + PNG chunk CRCs + mask labels (kseg) vs decoding
  every image and mask with tf.io (the peer);
- images/s of `segmentation_dataset` over `--batches` batches of 4: plain, and with
  `joint_augmentation(crop_size=(360, 480))`.
"""

import argparse
import pathlib
import statistics
import time

import numpy as np


def _median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main(argv=None):
    root = pathlib.Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(root.parent / "shared" / "data" / "camvid"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args(argv)

    import tensorflow as tf

    from kseg.data import find_pairs, folder, joint_augmentation, median_frequency_weights, segmentation_dataset

    pairs = find_pairs(args.data, "train")

    def clear():
        folder._CACHE.clear()
        folder._MASK_COUNTS.clear()

    def kseg_weights():
        clear()
        return median_frequency_weights(pairs)

    def tf_weights():
        counts = np.zeros(12, np.int64)
        present = np.zeros(12, np.int64)
        for _, m in pairs:
            mask = tf.io.decode_png(tf.io.read_file(str(m)), channels=1)
            c = tf.math.bincount(tf.cast(tf.reshape(mask, [-1]), tf.int32), minlength=12).numpy()[:12]
            counts += c
            present += np.where(c > 0, int(tf.size(mask)), 0)
        freq = counts[:11] / present[:11]
        return (np.median(freq) / freq).astype("float32")

    def kseg_validate():
        clear()
        return folder.validate_pairs(pairs)

    def tf_validate():
        for i, m in pairs:
            tf.io.decode_image(tf.io.read_file(str(i)), channels=3, expand_animations=False)
            tf.io.decode_png(tf.io.read_file(str(m)))

    rows = []
    t_w, w = _median_time(kseg_weights, args.repeats)
    t_wp, wp = _median_time(tf_weights, args.repeats)
    assert np.allclose(w, wp, rtol=1e-5), (w, wp)
    rows.append((f"median-frequency weights, {len(pairs)} masks", f"{t_w:.3f} s", f"{t_wp:.3f} s (tf.io decode)"))
    t_v, _ = _median_time(kseg_validate, args.repeats)
    t_vp, _ = _median_time(tf_validate, args.repeats)
    rows.append((f"validation, {len(pairs)} pairs", f"{t_v:.3f} s", f"{t_vp:.3f} s (decode all)"))

    for name, aug in (("plain", None), ("joint_augmentation", joint_augmentation(crop_size=(360, 480), seed=0))):
        ds = segmentation_dataset(pairs, batch_size=4, shuffle=True, augment=aug, repeat=True, seed=None)
        it = iter(ds)
        next(it)  # warm-up
        start = time.perf_counter()
        for _ in range(args.batches):
            next(it)
        rate = 4 * args.batches / (time.perf_counter() - start)
        rows.append((f"segmentation_dataset {name}, batch 4", f"{rate:.1f} images/s", ""))

    print(f"weights: {[round(float(v), 4) for v in w]}")
    widths = [max(len(r[i]) for r in rows + [("what", "kseg", "peer")]) for i in range(3)]
    print(" | ".join(h.ljust(n) for h, n in zip(("what", "kseg", "peer"), widths)))
    print("-+-".join("-" * n for n in widths))
    for r in rows:
        print(" | ".join(v.ljust(n) for v, n in zip(r, widths)))


if __name__ == "__main__":
    main()
