"""Peak RSS of every matrix model, step by step, against 3x (weights + activations) (issue 15 goal 5).

Each model of ``matrix.py``'s list, each step in its own fresh process (a step's peak is that
process's; the build is part of every step):

* ``build``: import kseg, build the model at the matrix's size (360x480, 11 classes);
* ``keras``: build + ``predict_on_batch`` of one image;
* ``saved_model``: build + :func:`kseg.export.export_saved_model` + ``tf.saved_model.load`` +
  one ``serving_default`` call;
* ``tflite``: build + :func:`kseg.export.export_tflite` (float32) + one LiteRT invoke;
* ``tflite_int8``: the same, full-integer (uint8 in / out), calibrated on 8 random images (as
  ``matrix.py``'s int8 cell, which calibrates on 8 CamVid images).

``--from-file``: the TFLite steps save the built model to a ``.keras`` file, drop it and export from
the path, as ``kseg export model.keras --format tflite`` does (``export_tflite`` then frees the
Keras model once its SavedModel is written, before TensorFlow's converter runs).

Peak RSS is Linux's high-water mark (``VmHWM``), reset between the phases of a step
(``/proc/self/clear_refs``) so each phase's own peak is printed too (``--phases``); the step's
peak is the largest. The budget is ``3 x (weights + activations)``: weights = parameter bytes,
activations = the bytes of every layer output for one image at that size (from the layers'
output shapes). Import baseline (TensorFlow, Keras, kseg, LiteRT: ~0.5-0.8 GB of RSS) counts
against the budget, as the issue states it; the last column leaves it out. A watchdog kills a
process whose RSS passes ``--limit-gb`` (default 14) and the cell says so.

TensorFlow's oneDNN build keeps freed large tensors in its own caching pool (``MklCPUAllocator``),
so RSS stays at its high-water mark: building FCN-8s' fc6 (0.38 GB, Glorot-uniform: random bits,
scale, shift) leaves +1.2 GB of RSS, +0.39 GB with ``TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1``
(``--system-allocator`` runs every step so, for comparison).

    python benchmarks/peak_memory.py                       # 4 models x 5 steps, 360x480
    python benchmarks/peak_memory.py --models fcn8s --steps tflite --phases
    python benchmarks/peak_memory.py --json rows.json; python benchmarks/peak_memory.py --from-json rows.json
    python benchmarks/run.py --only peak_memory
"""

import argparse
import contextlib
import json
import os
import pathlib
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HERE = pathlib.Path(__file__).resolve().parent
STEPS = ["build", "keras", "saved_model", "tflite", "tflite_int8"]
CALIBRATION = 8  # matrix.py's default number of int8 calibration images
NUM_CLASSES = 11
GB = 2**30


# ----------------------------------------------------------------------------------------------
# child


def _status(key):
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _reset_peak():
    """Reset VmHWM to the current RSS (Linux >= 4.0); False when the kernel refuses."""
    try:
        pathlib.Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def layer_output_bytes(model, batch=1):
    """Sum over the layers (nested models entered) of their output tensors' bytes at `batch`."""
    import keras
    import numpy as np

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model) and getattr(layer, "layers", None):
            total += layer_output_bytes(layer, batch)
            continue
        for node in getattr(layer, "_inbound_nodes", []):
            for t in keras.tree.flatten(node.output_tensors):
                shape = [batch if d is None else int(d) for d in t.shape]
                total += int(np.prod(shape[1:])) * batch * np.dtype(t.dtype).itemsize
    return total


@contextlib.contextmanager
def _converter_phases(phase):
    """Splits the TFLite conversion into TensorFlow's own steps, each a phase of its own: ``save``
    (the SavedModel export_tflite converts from), ``mlir`` (the C++ conversion into a float
    flatbuffer), then for full-integer files ``intermediates`` (calibrator.add_intermediate_tensors),
    ``calibrate`` (Calibrator: the model copied, every activation kept, the statistics written back
    into a new flatbuffer) and ``quantize`` (the MLIR quantiser); ``convert`` is what is left. Hooks
    on TensorFlow 2.21's private functions (kseg.export's ``_wrapped``); without them (another
    TensorFlow) only ``convert``."""
    try:
        from tensorflow.lite.python import lite
        from tensorflow.lite.python.optimize import calibrator
    except ImportError:
        yield
        return
    from kseg.export import _wrapped

    def wrap(before, after):
        def make(original):
            def hooked(*a, **k):
                if before:
                    phase(f"convert:{before}")
                out = original(*a, **k)
                phase(f"convert:{after}")
                return out

            return hooked

        return make

    hooks = [(lite, "_convert_saved_model", "save", "mlir"), (calibrator, "add_intermediate_tensors", None, "intermediates"),
             (lite, "_mlir_quantize", "calibrate", "quantize")]
    with contextlib.ExitStack() as stack:
        for module, name, before, after in hooks:
            stack.enter_context(_wrapped(module, name, wrap(before, after)))
        yield


def child(args):
    if (HERE.parent / "kseg" / "__init__.py").is_file():  # this checkout's kseg, not an installed one
        sys.path.insert(0, str(HERE.parent))
    import gc
    import shutil
    import tempfile

    resettable = _reset_peak()
    phases = []
    peak = [_status("VmHWM")]

    def phase(name):
        hwm = _status("VmHWM")
        phases.append((name, hwm))
        peak[0] = max(peak[0], hwm)
        gc.collect()
        _reset_peak()

    import keras
    import numpy as np

    import kseg
    from kseg import export

    if args.step.startswith("tflite"):
        import ai_edge_litert.interpreter  # noqa: F401  (its import is part of the baseline)
    if args.step == "saved_model":
        import tensorflow as tf  # noqa: F401
    phase("import")
    h, w = args.size
    keras.utils.set_random_seed(0)
    model = kseg.models.get(args.model).build(num_classes=NUM_CLASSES, input_shape=(h, w, 3))
    phase("build")
    weights = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in model.weights)
    activations = layer_output_bytes(model)
    image = np.random.default_rng(0).uniform(0, 255, (1, h, w, 3)).astype("float32")
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="kseg_peak_"))
    try:
        if args.step == "keras":
            model.predict_on_batch(image)
            phase("predict")
        elif args.step == "saved_model":
            import tensorflow as tf

            path = export.export_saved_model(model, tmp / "saved_model")
            phase("export")
            del model
            serve = tf.saved_model.load(path).signatures["serving_default"]
            phase("load")
            serve(images=tf.constant(image.astype("uint8")))["labels"].numpy()
            phase("serve")
        elif args.step.startswith("tflite"):
            if args.step == "tflite_int8":
                calibration = np.random.default_rng(1).uniform(0, 255, (CALIBRATION, h, w, 3)).astype("float32")
                kwargs = dict(quantize="int8", representative_images=calibration, num_calibration=CALIBRATION)
            else:
                kwargs = {}
            source = model
            if args.from_file:  # as `kseg export model.keras` does: export_tflite loads the file and frees it
                source = export.save_keras(model, tmp / "model.keras")
                del model
                phase("save_keras")
            with _converter_phases(phase):
                path = export.export_tflite(source, tmp / "model.tflite", **kwargs)
            phase("convert")
            model = source = None
            export.run_tflite(path, image, num_threads=2)
            phase("invoke")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({"weights": weights, "activations": activations, "phases": phases,
                      "peak": max(peak[0], _status("VmHWM")), "resettable": resettable}), flush=True)
    return 0


# ----------------------------------------------------------------------------------------------
# parent


def _rss(pid):
    try:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_step(model, step, size, limit, timeout, system_allocator=False, from_file=False):
    """One child; its JSON, or {"error": why}. Killed when its RSS passes `limit` bytes."""
    cmd = [sys.executable, __file__, "--child", "--model", model, "--step", step, "--size", str(size[0]), str(size[1])]
    cmd += ["--from-file"] if from_file else []
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    if system_allocator:
        env["TF_ONEDNN_USE_SYSTEM_ALLOCATOR"] = "1"
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    top, killed = 0, None
    import threading

    out = {}

    def drain(name, stream):
        out[name] = stream.read()

    readers = [threading.Thread(target=drain, args=(n, s), daemon=True) for n, s in (("stdout", proc.stdout),
                                                                                     ("stderr", proc.stderr))]
    for r in readers:
        r.start()
    while proc.poll() is None:
        top = max(top, _rss(proc.pid))
        if top > limit:
            proc.kill()
            killed = f"killed: RSS passed {limit / GB:.0f} GB"
        elif time.perf_counter() - t0 > timeout:
            proc.kill()
            killed = f"timed out after {timeout} s"
        time.sleep(0.05)
    for r in readers:
        r.join()
    if killed:
        return {"error": killed, "watched_peak": top}
    lines = [ln for ln in out.get("stdout", "").splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        err = [ln for ln in out.get("stderr", "").splitlines() if ln.strip()]
        return {"error": (err or [f"exit {proc.returncode}"])[-1][:160]}
    row = json.loads(lines[-1])
    row["wall_s"] = time.perf_counter() - t0
    return row


def format_table(rows, steps, phases=False, note=""):
    """The table (a string): per model, each step's peak (and its ratio to the budget)."""
    lines = [f"peak RSS per step (each step a fresh process: import + build + the step), {NUM_CLASSES} classes, "
             f"batch 1, float32; budget = 3 x (weights + activations); import = the baseline of TF + Keras + kseg"
             + (f"; {note}" if note else "")]
    head = (f"{'model':<14}{'size':>8}{'weights':>9}{'activ.':>8}{'budget':>8} |"
            + "".join(f"{s:>15}" for s in steps) + f" |{'import':>7}{'max/budget':>11}{'above import':>13}")
    lines += [head, f"{'':<14}{'':>8}{'GB':>9}{'GB':>8}{'GB':>8} |" + "".join(f"{'GB (x budget)':>15}" for _ in steps)
              + f" |{'GB':>7}{'':>11}{'/budget':>13}", "-" * len(head)]
    by_model = {}
    for r in rows:
        by_model.setdefault((r["model"], r["size"]), {})[r["step"]] = r
    errors = []
    for (name, size), done in by_model.items():
        ok = [r for r in done.values() if "error" not in r]
        line = f"{name:<14}{size:>8}"
        if not ok:
            lines.append(line + "  every step failed")
            errors += [f"  {name} {s}: {r['error']}" for s, r in done.items()]
            continue
        wts, act = ok[0]["weights"], ok[0]["activations"]
        budget = 3 * (wts + act)
        base = min(r["phases"][0][1] for r in ok)  # the import phase
        line += f"{wts / GB:>9.3f}{act / GB:>8.3f}{budget / GB:>8.2f} |"
        worst, failed = 0, False
        for s in steps:
            r = done.get(s)
            if r is None:
                line += f"{'-':>15}"  # not run
            elif "error" in r:
                line += f"{'FAIL':>15}"
                failed = True
                errors.append(f"  {name} {s}: {r['error']}")
            else:
                worst = max(worst, r["peak"])
                line += f"{r['peak'] / GB:.2f} ({r['peak'] / budget:.1f}x)".rjust(15)
        line += f" |{base / GB:>7.2f}" + (f"{'>' if failed else ''}{worst / budget:.2f}".rjust(11)
                                           + f"{(worst - base) / budget:.2f}".rjust(13))
        lines.append(line)
    lines += errors
    if phases:
        lines.append("phase peaks GB (VmHWM reset at each phase's start):")
        for r in rows:
            if "phases" in r:
                lines.append(f"  {r['model']:<14}{r['step']:<12}" + ", ".join(f"{n} {v / GB:.2f}" for n, v in r["phases"]))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sys.path.insert(0, str(HERE))
    from matrix import DEFAULT_MODELS, parse_model

    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS, help="registry names, NAME@HxW for a size")
    parser.add_argument("--size", nargs=2, type=int, default=[360, 480], metavar=("H", "W"))
    parser.add_argument("--steps", nargs="+", default=STEPS, choices=STEPS)
    parser.add_argument("--phases", action="store_true", help="also print each phase's own peak")
    parser.add_argument("--limit-gb", type=float, default=14.0, help="kill a step above this RSS")
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per step")
    parser.add_argument("--json", default=None, help="also write the rows here")
    parser.add_argument("--from-json", default=None, help="print the table of rows saved with --json; run nothing")
    parser.add_argument("--system-allocator", action="store_true",
                        help="children run with TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1 (malloc instead of oneDNN's caching pool)")
    parser.add_argument("--from-file", action="store_true",
                        help="TFLite steps export from a saved .keras file, as `kseg export` does (the Keras model "
                             "is freed before the converter runs) instead of from the model in memory")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)
    if args.from_json:
        print(format_table(json.loads(pathlib.Path(args.from_json).read_text()), args.steps, args.phases))
        return 0

    t0 = time.perf_counter()
    rows = []
    for spec in args.models:
        name, size = parse_model(spec, args.size)
        for step in args.steps:
            r = run_step(name, step, size, args.limit_gb * GB, args.timeout, args.system_allocator, args.from_file)
            r.update(model=name, size=f"{size[0]}x{size[1]}", step=step)
            rows.append(r)
            msg = r.get("error") or f"peak {r['peak'] / GB:.2f} GB, {r['wall_s']:.0f} s"
            print(f"  {name} {step}: {msg}", file=sys.stderr, flush=True)
            if args.json:  # after every step: a long run stopped half-way keeps what it measured
                pathlib.Path(args.json).write_text(json.dumps(rows, indent=1))
    print()
    print(format_table(rows, args.steps, args.phases,
                       f"{time.perf_counter() - t0:.0f} s" + (", TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1" if args.system_allocator else "")
                       + (", TFLite from a .keras file (as kseg export)" if args.from_file else "")))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
