"""SegNet-Basic TFLite: float32 vs float16 vs dynamic-range vs full-integer int8.

For each quantisation mode of :func:`kseg.export.export_tflite` (builtin ops only): file size,
LiteRT (XNNPACK) latency at 1 and 2 threads, and on the CamVid test split the mean IoU / global
accuracy (void ignored) and the share of pixels whose label agrees with the Keras float model,
all in the same run with Keras as the peer. int8 is calibrated on CamVid training images
(uint8 in / uint8 out).

A trained model makes the comparison meaningful: pass one (``kseg demo`` writes
``runs/demo/model.keras``), or the script trains SegNet-Basic briefly itself.

    python benchmarks/tflite_quantized.py --model runs/demo/model.keras
    python benchmarks/tflite_quantized.py --train-steps 150 --width 32 --size 180 240
"""

import argparse
import os
import pathlib
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEFAULT_CAMVID = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" / "camvid"
NUM_CLASSES, IGNORE = 11, 11
MODES = ("none", "float16", "dynamic", "int8")


def load_split(root, split, size, limit=None):
    import numpy as np
    from PIL import Image

    h, w = size
    files = sorted((pathlib.Path(root) / split).glob("*.png"))
    if limit:
        files = files[:: max(1, len(files) // limit)][:limit]
    x = np.stack([np.asarray(Image.open(f).convert("RGB").resize((w, h), Image.BILINEAR)) for f in files])
    y = np.stack([np.asarray(Image.open(f.parent.parent / f"{split}annot" / f.name).resize((w, h), Image.NEAREST))
                  for f in files])
    return x.astype("float32"), y.astype("int32")


def scores(pred, truth):
    """(mean IoU over classes present, global accuracy), void ignored (SegNet's metrics)."""
    import numpy as np

    valid = truth != IGNORE
    cm = np.bincount(truth[valid] * NUM_CLASSES + pred[valid], minlength=NUM_CLASSES ** 2).reshape(NUM_CLASSES, -1)
    inter = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - inter
    present = cm.sum(1) > 0
    return float((inter[present] / np.maximum(union[present], 1)).mean()), float(inter.sum() / cm.sum())


def train(root, size, width, steps, batch=8):
    import keras

    import kseg

    keras.utils.set_random_seed(0)
    x, y = load_split(root, "train", size)
    model = kseg.SegNetBasic(num_classes=NUM_CLASSES, input_shape=(*size, 3), width=width)
    model.compile(keras.optimizers.Adam(2e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=IGNORE))
    epochs = max(1, round(steps * batch / len(x)))
    t0 = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=epochs, shuffle=True, verbose=0)
    # SegNet's test-time BN statistics (plain averages over training batches): after a short run
    # Keras' moving averages still lag far behind the weights.
    import tensorflow as tf

    from kseg.training import compute_bn_statistics

    compute_bn_statistics(model, tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=0).batch(batch), 24)
    return model, f"SegNet-Basic width {width} trained here: {epochs} epochs of {len(x)} CamVid train images " \
                  f"at {size[0]}x{size[1]}, BN statistics recomputed ({time.perf_counter() - t0:.0f} s)"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a trained .keras SegNet-Basic (else one is trained)")
    parser.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="export / evaluation size (default: the model's input size, else 180 240)")
    parser.add_argument("--width", type=int, default=32, help="width of the model trained here")
    parser.add_argument("--train-steps", type=int, default=150, help="steps (batch 8) of the model trained here")
    parser.add_argument("--camvid", default=str(DEFAULT_CAMVID))
    parser.add_argument("--runs", type=int, default=10, help="timed LiteRT runs (median)")
    parser.add_argument("--test-images", type=int, default=None, help="limit the test split (default: all)")
    parser.add_argument("--calibration", type=int, default=100, help="CamVid train images for int8")
    args = parser.parse_args(argv)

    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    from kseg import export
    from kseg.lite import Segmenter

    if not (pathlib.Path(args.camvid) / "test").is_dir():
        raise SystemExit(f"CamVid not found at {args.camvid} (pass --camvid)")
    if args.model:
        model = export.load_keras(args.model)
        fixed = model.inputs[0].shape[1:3]
        size = tuple(args.size or (fixed if None not in fixed else (180, 240)))
        source = f"{args.model} ({model.name})"
    else:
        size = tuple(args.size or (180, 240))
        model, source = train(args.camvid, size, args.width, args.train_steps)
    x_test, y_test = load_split(args.camvid, "test", size, args.test_images)

    keras_labels = np.concatenate([np.asarray(model.predict_on_batch(im[None])).argmax(-1) for im in x_test])
    keras_miou, keras_acc = scores(keras_labels, y_test)
    t_keras = []
    for _ in range(args.runs + 1):
        t0 = time.perf_counter()
        model.predict_on_batch(x_test[:1])
        t_keras.append(time.perf_counter() - t0)

    tmp = tempfile.TemporaryDirectory()
    rows = []
    for mode in MODES:
        path = os.path.join(tmp.name, f"{mode}.tflite")
        t0 = time.perf_counter()
        export.export_tflite(model, path, quantize=mode, input_shape=(*size, 3),
                             representative_images=pathlib.Path(args.camvid) / "train", num_calibration=args.calibration)
        convert_s = time.perf_counter() - t0
        assert all(b for _, b in export.tflite_operators(path))
        latency = {}
        for threads in (1, 2):
            seg = Segmenter(path, num_threads=threads)
            x_in = seg.preprocess(x_test[0])
            interp = seg._interpreter
            times = []
            for _ in range(args.runs + 1):
                t0 = time.perf_counter()
                interp.set_tensor(seg._in["index"], x_in)
                interp.invoke()
                interp.get_tensor(seg._out["index"])
                times.append(time.perf_counter() - t0)
            latency[threads] = statistics.median(times[1:]) * 1e3
        seg = Segmenter(path, num_threads=2)
        labels = np.stack([seg.segment(im, resize_back=False) for im in x_test])
        miou, acc = scores(labels, y_test)
        rows.append((mode, os.path.getsize(path) / 2**20, latency[1], latency[2], miou, acc,
                     float((labels == keras_labels).mean()), convert_s,
                     str(np.dtype(Interpreter(model_path=path).get_input_details()[0]["dtype"]))))

    print(f"\nSegNet-Basic TFLite on CamVid test ({len(x_test)} images at {size[0]}x{size[1]}), "
          f"{os.cpu_count()} CPUs; model: {source}")
    print(f"{'runtime':<18} {'input':>7} {'MiB':>7} {'ms 1 thr':>9} {'ms 2 thr':>9} {'mIoU':>7} {'global':>7} "
          f"{'= Keras':>8}")
    print(f"{'Keras (TF) fp32':<18} {'float32':>7} {'-':>7} {statistics.median(t_keras[1:]) * 1e3:>9.1f} "
          f"{'(all)':>9} {keras_miou * 100:>7.2f} {keras_acc * 100:>7.2f} {100:>7.1f}%")
    for mode, mb, l1, l2, miou, acc, agree, conv, dtype in rows:
        print(f"{'LiteRT ' + mode:<18} {dtype:>7} {mb:>7.2f} {l1:>9.1f} {l2:>9.1f} {miou * 100:>7.2f} "
              f"{acc * 100:>7.2f} {agree * 100:>7.1f}%")
    print("mIoU / global accuracy in %, void ignored; '= Keras': pixels whose label equals the Keras model's.")
    return rows


if __name__ == "__main__":
    main()
