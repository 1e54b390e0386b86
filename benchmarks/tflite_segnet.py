"""TFLite SegNet at 360x480: file size, LiteRT latency (1 and 2 threads) vs Keras, max |diff|.

Converts full SegNet (or ``--model``) with :func:`kseg.export.export_tflite` (builtin ops only),
runs it in the LiteRT interpreter (XNNPACK) and, in the same run, times Keras
``predict_on_batch`` at batch 1 on the same images (real CamVid test images when
``../shared/data/camvid`` or ``--camvid`` is there, else random). Reports the largest absolute
logit difference and the share of pixels whose argmax label agrees.

    python benchmarks/tflite_segnet.py
    python benchmarks/tflite_segnet.py --model segnet_basic --runs 10
"""

import argparse
import os
import pathlib
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEFAULT_CAMVID = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" / "camvid"


def load_images(camvid, split, n, size, seed=0):
    """`n` RGB images (float32, [0, 255]) from CamVid `split` resized to `size`, or random ones."""
    import numpy as np

    folder = pathlib.Path(camvid) / split if camvid else None
    if folder is not None and folder.is_dir():
        from PIL import Image

        files = sorted(folder.glob("*.png"))
        step = max(1, len(files) // n)
        images = [np.asarray(Image.open(f).convert("RGB").resize(size[::-1], Image.BILINEAR), dtype="float32")
                  for f in files[::step][:n]]
        return np.stack(images), f"CamVid {split} ({len(images)} images)"
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, (n, *size, 3)).astype("float32"), f"random ({n} images)"


def timed(fn, runs, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="segnet")
    parser.add_argument("--size", type=int, nargs=2, default=(360, 480), metavar=("H", "W"))
    parser.add_argument("--num-classes", type=int, default=11)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--images", type=int, default=4, help="images compared Keras vs LiteRT")
    parser.add_argument("--camvid", default=str(DEFAULT_CAMVID))
    parser.add_argument("--out", default=None, help="where to write the .tflite (default: a temp dir)")
    args = parser.parse_args(argv)

    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    import kseg
    from kseg import export

    h, w = args.size
    model = kseg.models.get(args.model).build(num_classes=args.num_classes, input_shape=(h, w, 3))
    images, source = load_images(args.camvid, "test", args.images, (h, w))
    tmp = tempfile.TemporaryDirectory()
    path = args.out or os.path.join(tmp.name, f"{args.model}.tflite")
    t0 = time.perf_counter()
    export.export_tflite(model, path)
    convert_s = time.perf_counter() - t0
    size_mb = os.path.getsize(path) / 2**20
    ops = export.tflite_operators(path)

    keras_logits = np.concatenate([np.asarray(model.predict_on_batch(im[None])) for im in images])
    one = images[:1]
    rows = [("Keras predict_on_batch (TF)", timed(lambda: model.predict_on_batch(one), args.runs))]
    lite_logits = None
    for threads in (1, 2):
        interp = Interpreter(model_path=path, num_threads=threads)
        interp.allocate_tensors()
        if lite_logits is None:
            lite_logits = export.run_tflite(path, images, interpreter=interp)
        rows.append((f"LiteRT (XNNPACK), {threads} thread{'s' if threads > 1 else ''}",
                     timed(lambda: export.run_tflite(path, one, interpreter=interp), args.runs)))
    diff = float(np.abs(keras_logits - lite_logits).max())
    off = float((np.abs(keras_logits - lite_logits).max(-1) > 1e-4).mean())
    agree = float((keras_logits.argmax(-1) == lite_logits.argmax(-1)).mean())
    # Random images have no exact ties inside pooling windows; real images do (flat regions give
    # equal activations), and there a 1-ulp difference between oneDNN and XNNPACK convolutions can
    # move an argmax, so the unpooled value lands one pixel over. Report both.
    noise, _ = load_images(None, None, 2, (h, w))
    noise_diff = float(np.abs(np.concatenate([np.asarray(model.predict_on_batch(im[None])) for im in noise])
                              - export.run_tflite(path, noise)).max())

    print(f"\nTFLite {args.model} at {h}x{w}, {args.num_classes} classes, batch 1, {os.cpu_count()} CPUs; "
          f"inputs: {source}; median of {args.runs} runs")
    print(f"file: {size_mb:.1f} MiB ({kseg.count_params(model):,} params), converted in {convert_s:.1f} s, "
          f"{len(ops)} operator kinds, all builtin: {all(b for _, b in ops)}")
    print(f"{'runtime':<32} {'latency ms':>11} {'vs Keras':>9}")
    for name, ms in rows:
        print(f"{name:<32} {ms:>11.1f} {rows[0][1] / ms:>8.2f}x")
    print(f"max |logit diff| Keras vs LiteRT, random images: {noise_diff:.2e}")
    print(f"max |logit diff| Keras vs LiteRT, {source}: {diff:.2e} (logits up to "
          f"{np.abs(keras_logits).max():.1f}); pixels with any |diff| > 1e-4: {off * 100:.3f}%; "
          f"argmax agreement {agree * 100:.3f}%")
    return {"size_mb": size_mb, "rows": rows, "max_abs_diff": diff, "max_abs_diff_random": noise_diff,
            "agreement": agree}


if __name__ == "__main__":
    main()
