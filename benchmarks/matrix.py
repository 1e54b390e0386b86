"""One table for every model: training images/s, inference latency, file sizes, peak memory.

Per registry model, each measurement in a fresh subprocess (clean backend, dtype policy and RSS):

* training images/s at batch 4 (``model.train_on_batch``, random images and labels, SGD) for
  TF float32, TF mixed bfloat16, TF+XLA float32, JAX float32 and JAX mixed bfloat16: the child
  of ``train_speed.py`` (same step, same timing: the mean of ``--steps`` steps after one
  tracing step);
* inference latency at batch 1 (median of ``--runs`` after a warm-up) of Keras
  ``predict_on_batch``, the SavedModel of :func:`kseg.export.export_saved_model` loaded with
  ``tf.saved_model.load`` (its ``serving_default`` signature: uint8 in, labels + softmax out),
  and the builtins-only TFLite files of :func:`kseg.export.export_tflite`, float32 and
  full-integer int8 (uint8 in / out, calibrated on ``--calibration`` CamVid train images, or
  random ones without CamVid), in LiteRT (XNNPACK) with ``--threads`` threads;
* file sizes of the ``.keras`` file, the SavedModel directory and the two ``.tflite`` files;
* peak RSS of the training processes (the largest of the configurations; each one in a note)
  and of the inference / export process.

The models are untrained (as built): speeds and sizes do not depend on the weights, and accuracy
is not measured here (``tflite_quantized.py`` does that for SegNet-Basic). A cell a model cannot
fill (a TensorFlow-only model under JAX, an XLA or conversion failure, a timeout) reads ``n/a``
with the reason in a numbered note under the table.

    python benchmarks/matrix.py                                         # 4 models at 360x480
    python benchmarks/matrix.py --models segnet_basic fcn8s@240x320 --steps 2
    python benchmarks/matrix.py --models segnet_basic --size 64 96 --steps 1 --configs tf-fp32 jax-fp32
    python benchmarks/run.py --only matrix                              # the same, with defaults
"""

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HERE = pathlib.Path(__file__).resolve().parent

DEFAULT_MODELS = ["segnet_basic", "segnet", "fcn8s", "deeplab_v1"]
DEFAULT_CONFIGS = ["tf-fp32", "tf-bf16", "tf-xla-fp32", "jax-fp32", "jax-bf16"]
CONFIG_LABELS = {"tf-fp32": "TF fp32", "tf-bf16": "TF bf16", "tf-xla-fp32": "XLA fp32", "tf-xla-bf16": "XLA bf16",
                 "jax-fp32": "JAX fp32", "jax-bf16": "JAX bf16"}
INFER = [("keras", "Keras"), ("saved_model", "SavedMdl"), ("tflite", "TFL fp32"), ("tflite_int8", "TFL int8")]
FILES = [("keras", ".keras"), ("saved_model", "SavedMdl"), ("tflite", "TFL fp32"), ("tflite_int8", "TFL int8")]
NUM_CLASSES = 11


# ----------------------------------------------------------------------------------------------
# children (one fresh process each)


def infer_child(args):
    """Export one model in every format, time each runtime, print one JSON line of cells."""
    import resource
    import shutil
    import tempfile

    import keras
    import numpy as np

    import kseg
    from kseg import export
    from tflite_segnet import load_images, timed

    h, w = args.size
    keras.utils.set_random_seed(0)
    model = kseg.models.get(args.model).build(num_classes=NUM_CLASSES, input_shape=(h, w, 3))
    image, source = load_images(args.camvid, "test", 1, (h, w))
    out = {"model": args.model, "params": kseg.count_params(model), "latency_ms": {}, "size_mb": {},
           "errors": {}, "input": source}
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="kseg_matrix_"))

    def cell(key, fn):
        try:
            fn()
        except Exception as err:  # one format failing must not lose the others
            out["errors"][key] = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"

    def keras_cell():
        out["latency_ms"]["keras"] = timed(lambda: model.predict_on_batch(image), args.runs)

    def keras_file():
        out["size_mb"]["keras"] = os.path.getsize(export.save_keras(model, tmp / "model.keras")) / 2**20

    def saved_model_cell():
        import tensorflow as tf

        path = export.export_saved_model(model, tmp / "saved_model")
        out["size_mb"]["saved_model"] = sum(p.stat().st_size for p in pathlib.Path(path).rglob("*") if p.is_file()) / 2**20
        serve = tf.saved_model.load(path).signatures["serving_default"]
        x = tf.constant(image.astype("uint8"))
        out["latency_ms"]["saved_model"] = timed(lambda: serve(images=x)["labels"].numpy(), args.runs)

    def tflite_cell(key, **kwargs):
        from ai_edge_litert.interpreter import Interpreter

        path = export.export_tflite(model, tmp / f"{key}.tflite", **kwargs)
        out["size_mb"][key] = os.path.getsize(path) / 2**20
        interp = Interpreter(model_path=path, num_threads=args.threads)
        interp.allocate_tensors()
        out["latency_ms"][key] = timed(lambda: export.run_tflite(path, image, interpreter=interp), args.runs)

    try:
        cell("keras", keras_cell)
        cell("keras_file", keras_file)
        cell("saved_model", saved_model_cell)
        cell("tflite", lambda: tflite_cell("tflite"))
        calibration, out["calibration"] = load_images(args.camvid, "train", args.calibration, (h, w))
        cell("tflite_int8", lambda: tflite_cell("tflite_int8", quantize="int8", representative_images=calibration,
                                                num_calibration=args.calibration))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out), flush=True)


# ----------------------------------------------------------------------------------------------
# parent


def reason(stderr, rc):
    """The exception line of a failed child's stderr (its last ``...Error: ...`` line), shortened."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if re.match(r"^[\w.]*(Error|Exception|Exit)\b", ln)]
    text = (errors or lines or [f"exit status {rc}"])[-1]
    return text[:160]


def run_child(cmd, env, timeout):
    """Run a child; its last JSON line, or ``{"error": reason}``."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode == 0 and lines:
        row = json.loads(lines[-1])
        row["wall_s"] = time.perf_counter() - t0
        return row
    return {"error": reason(proc.stderr, proc.returncode)}


def parse_model(spec, default_size):
    """``"fcn8s"`` or ``"fcn8s@240x320"`` -> (name, (H, W))."""
    name, _, size = spec.partition("@")
    if not size:
        return name, tuple(default_size)
    m = re.fullmatch(r"(\d+)x(\d+)", size)
    if not m:
        raise ValueError(f"model size must be NAME@HxW (e.g. fcn8s@240x320), got {spec!r}")
    return name, (int(m.group(1)), int(m.group(2)))


def measure(name, size, args, log=print):
    """Every cell of one model's row (training configs, then the export / inference child)."""
    import kseg

    card = kseg.models.get(name)
    h, w = size
    row = {"model": card.name, "size": f"{h}x{w}", "params": None,
           "train": {}, "train_rss_mb": {}}
    from train_speed import CONFIGS

    base_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    for config in args.configs:
        backend = CONFIGS[config]["backend"]
        if backend not in card.backends:
            row["train"][config] = {"error": f"{card.name} is {'/'.join(card.backends)} only (its card); "
                                             f"no {backend} run"}
            continue
        cmd = [sys.executable, str(HERE / "train_speed.py"), "--child", "--model", card.name, "--config", config,
               "--size", str(h), str(w), "--batch", str(args.batch), "--steps", str(args.steps)]
        r = run_child(cmd, dict(base_env, KERAS_BACKEND=backend), args.timeout)
        if "error" not in r and not r.get("loss_finite", True):
            r = {"error": "loss not finite"}
        row["train"][config] = r
        if "error" not in r:
            row["train_rss_mb"][config] = r["peak_rss_gb"] * 1024
        done = r.get("error") or "{:.2f} img/s, {:.0f} s".format(r["images_per_s"], r["wall_s"])
        log(f"  {card.name} {h}x{w} train {config}: {done}")
    if args.no_infer:
        row["infer"] = {"error": "skipped (--no-infer)"}
        return row
    cmd = [sys.executable, __file__, "--infer-child", "--model", card.name, "--size", str(h), str(w),
           "--runs", str(args.runs), "--threads", str(args.threads), "--calibration", str(args.calibration),
           "--camvid", args.camvid]
    r = run_child(cmd, dict(base_env, KERAS_BACKEND="tensorflow"), args.timeout)
    row["infer"] = r
    if "params" in r:
        row["params"] = r["params"]
    done = r.get("error") or "{:.0f} s".format(r["wall_s"])
    log(f"  {card.name} {h}x{w} export + inference: {done}")
    return row


def format_table(rows, configs, title=""):
    """The table (a string): one line per model, ``n/a[k]`` cells with numbered notes below."""
    notes = []

    def na(why):
        if why not in notes:
            notes.append(why)
        return f"n/a[{notes.index(why) + 1}]"

    groups = [("train img/s, batch 4", [CONFIG_LABELS.get(c, c) for c in configs], 9),
              ("inference ms, batch 1", [lbl for _, lbl in INFER], 9),
              ("file MB", [lbl for _, lbl in FILES], 9),
              ("peak RSS MB", ["train", "infer"], 7)]
    # column widths; a group's first column widens when its label is longer than its columns
    widths = [[width + (max(0, len(label) + 1 - width * len(cols)) if i == 0 else 0) for i in range(len(cols))]
              for label, cols, width in groups]
    head1 = f"{'':<14}{'':>8}{'':>13} "
    head2 = f"{'model':<14}{'size':>8}{'params':>13} "
    for (label, cols, _), ws in zip(groups, widths):
        head1 += f"|{label:^{sum(ws)}}"
        head2 += "|" + "".join(f"{c:>{w}}" for c, w in zip(cols, ws))
    lines = [title] if title else []
    lines += [head1, head2, "-" * len(head2)]
    for r in rows:
        params = format(r["params"], ",") if r.get("params") else "?"
        line = f"{r['model']:<14}{r['size']:>8}{params:>13} |"
        for c, wd in zip(configs, widths[0]):
            t = r["train"].get(c, {"error": "not run"})
            line += f"{na(t['error']) if 'error' in t else format(t['images_per_s'], '.2f'):>{wd}}"
        inf = r.get("infer", {"error": "not run"})
        # latencies, then file sizes; a missing cell shows its own error (a run's before a file's for
        # latencies, the other way round for sizes)
        for columns, section, suffixes in ((INFER, "latency_ms", ("", "_file")), (FILES, "size_mb", ("_file", ""))):
            line += "|"
            for key, _ in columns:
                if "error" in inf:
                    cell = na(inf["error"])
                elif key in inf[section]:
                    cell = format(inf[section][key], ".1f")
                else:
                    errors = inf["errors"]
                    cell = na(next((errors[key + s] for s in suffixes if errors.get(key + s)), "not measured"))
                line += f"{cell:>9}"
        line += "|"
        rss = r.get("train_rss_mb") or {}
        line += f"{(format(max(rss.values()), '.0f') if rss else '-'):>7}"
        line += f"{(format(inf['peak_rss_mb'], '.0f') if 'peak_rss_mb' in inf else '-'):>7}"
        lines.append(line)
    rss_lines = []
    for r in rows:
        rss = r.get("train_rss_mb") or {}
        if rss:
            rss_lines.append(f"  {r['model']}: " + ", ".join(f"{CONFIG_LABELS.get(c, c)} {v:.0f}" for c, v in rss.items()))
    if rss_lines:
        lines.append("training peak RSS MB by configuration (the 'train' column is the largest):")
        lines += rss_lines
    lines += [f"[{i + 1}] {why}" for i, why in enumerate(notes)]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS,
                        help="registry names, each optionally NAME@HxW to override --size")
    parser.add_argument("--size", nargs=2, type=int, default=[360, 480], metavar=("H", "W"))
    parser.add_argument("--steps", type=int, default=2, help="timed training steps after the tracing step")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS,
                        choices=["tf-fp32", "tf-bf16", "tf-xla-fp32", "tf-xla-bf16", "jax-fp32", "jax-bf16"])
    parser.add_argument("--runs", type=int, default=5, help="timed inference runs (median) after a warm-up")
    parser.add_argument("--threads", type=int, default=2, help="LiteRT (XNNPACK) threads")
    parser.add_argument("--calibration", type=int, default=8, help="int8 calibration images")
    parser.add_argument("--camvid", default=str(HERE.parents[1] / "shared" / "data" / "camvid"))
    parser.add_argument("--no-infer", action="store_true", help="training columns only")
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per child process")
    parser.add_argument("--json", default=None, help="also write the rows here")
    parser.add_argument("--infer-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if str(HERE) not in sys.path:  # the sibling benchmarks whose pieces are reused (run as a script it is)
        sys.path.insert(0, str(HERE))
    if args.infer_child:
        return infer_child(args)

    try:
        specs = [parse_model(s, args.size) for s in args.models]
    except ValueError as err:
        parser.error(str(err))
    import kseg

    for name, _ in specs:
        try:
            kseg.models.get(name)
        except ValueError as err:
            parser.error(str(err))
    t0 = time.perf_counter()
    rows = []
    for name, size in specs:
        rows.append(measure(name, size, args, log=lambda s: print(s, file=sys.stderr, flush=True)))
    sizes = sorted({r["size"] for r in rows})
    title = (f"kseg benchmark matrix: {', '.join(sizes)}, {NUM_CLASSES} classes, untrained weights, "
             f"{os.cpu_count()} CPU cores; train: batch {args.batch}, mean of {args.steps} steps after a tracing step; "
             f"inference: batch 1, median of {args.runs}, LiteRT {args.threads} threads, int8 calibrated on "
             f"{args.calibration} images; {time.perf_counter() - t0:.0f} s")
    inputs = {r["infer"].get("calibration") for r in rows if "calibration" in r.get("infer", {})}
    if inputs:
        title += f"\nint8 calibration images: {', '.join(sorted(inputs))}"
    print()
    print(format_table(rows, args.configs, title))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
