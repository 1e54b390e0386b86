"""A battery of bad inputs and faults against the ``kseg`` command (issue 13); prints one table.

Every case runs the real CLI (in this process through ``kseg.cli.main``, or as a subprocess when
it kills or interrupts the run) and is classified:

* ``clear``      non-zero exit, at most two lines on stderr, no traceback, the path / value named;
* ``handled``    a case that must succeed (``--resume`` after a kill, a no-op resume, ...) did;
* ``unclear``    failed without a traceback but did not name the path or the problem;
* ``traceback``  a Python traceback reached the user;
* ``lost``       a file that existed before (a checkpoint, a backup, an export) became unreadable,
                 or a resumed run's log / steps differ from what they must be.

    python benchmarks/fault_battery.py            # ~10 min on 2 CPU cores; needs root for tmpfs
    python benchmarks/fault_battery.py --only train

Full-disk and read-only cases mount small tmpfs folders (root only; skipped otherwise).
"""

import argparse
import contextlib
import io
import json
import os
import pathlib
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

TINY = ["--model-arg", "width=4", "--crop", "32", "48", "--scale", "1", "1", "--batch-size", "2",
        "--steps-per-epoch", "2", "--quiet", "--val-split", "none"]
RESULTS = []


# ---------------------------------------------------------------------------------------------
# running and classifying


def _noise(line):
    return (not line.strip() or line.startswith(("I0000", "W0000", "E0000", "WARNING: All log")) or "oneDNN" in line
            or "cpu_feature_guard" in line or "AVX" in line or "absl::InitializeLog" in line
            or line.startswith("WARNING:absl:"))


def cli(argv):
    """``(status, stderr lines, traceback?)`` of ``kseg.cli.main(argv)`` in this process."""
    from kseg import cli as kcli

    err, out = io.StringIO(), io.StringIO()
    tb = False
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            status = kcli.main(list(map(str, argv)))
        except SystemExit as exit_:  # argparse
            status = exit_.code
        except BaseException as exc:  # escaped: the user would see a traceback
            status, tb = 1, True
            err.write(f"Traceback (most recent call last): ... {type(exc).__name__}: {exc}\n")
    lines = [l for l in err.getvalue().splitlines() if not _noise(l)]
    return status, lines, tb or any("Traceback" in l for l in lines)


def sub(argv, env=None, kill_when=None, sig=signal.SIGINT, timeout=600):
    """Run ``python -m kseg.cli ARGV`` in a subprocess; optionally send `sig` once `kill_when` exists."""
    e = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
             TF_DETERMINISTIC_OPS="1", **(env or {}))
    p = subprocess.Popen([sys.executable, "-m", "kseg.cli", *map(str, argv)], env=e, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    if kill_when is not None:
        start = time.monotonic()
        while not pathlib.Path(kill_when).exists() and p.poll() is None and time.monotonic() - start < timeout:
            time.sleep(0.2)
        p.send_signal(sig)
    out, err = p.communicate(timeout=timeout)
    lines = [l for l in err.splitlines() if not _noise(l)]
    return p.returncode, lines, any("Traceback" in l for l in lines)


def record(command, case, result, expect=None, lost=None):
    status, lines, tb = result
    text = " / ".join(lines)[:150]
    if lost:
        verdict = "lost"
        text = f"{lost} | {text}"
    elif tb:
        verdict = "traceback"
    elif expect == "ok":
        verdict = "handled" if status == 0 else "unclear"
    elif status != 0 and len([l for l in lines if "error:" in l] or lines) <= 2 and all(t.lower() in " ".join(lines).lower() for t in expect or []):
        verdict = "clear"
    else:
        verdict = "unclear"
    RESULTS.append((command, case, verdict, status, text))
    print(f"{verdict:<9} {command:<9} {case:<48} exit {status}: {text[:110]}", flush=True)


def readable_keras(path):
    from kseg import training

    try:
        training.load_model(path)
        return True
    except Exception:
        return False


# ---------------------------------------------------------------------------------------------
# fixtures


def corrupt_png_keep_crcs(path):
    data = bytearray(path.read_bytes())
    pos = 8
    while pos < len(data):
        length = struct.unpack(">I", data[pos:pos + 4])[0]
        if bytes(data[pos + 4:pos + 8]) == b"IDAT":
            body = pos + 8
            for i in range(body + 2, body + length - 4):
                data[i] ^= 0x5A
            data[body + length:body + length + 4] = struct.pack(">I", zlib.crc32(bytes(data[pos + 4:body + length])))
        pos += 12 + length
    path.write_bytes(bytes(data))


def dataset(root, **splits):
    from kseg import data

    return data.write_synthetic_dataset(root, splits or {"train": 4, "val": 2, "test": 2}, height=32, width=48)


@contextlib.contextmanager
def tmpfs(path, size="2m", ro=False):
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if ro else "")
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True).returncode == 0
    try:
        yield ok
    finally:
        if ok:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(folder, leave_bytes):
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    with open(folder / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave_bytes))


# ---------------------------------------------------------------------------------------------
# the cases


def train_cases(w):
    good = dataset(w / "good")
    record("train", "--data missing", cli(["train", "--model", "segnet_basic", "--data", w / "nope", *TINY,
                                           "--out", w / "r0"]), ["nope", "does not exist"])
    (w / "afile").write_text("x")
    record("train", "--data is a file", cli(["train", "--model", "segnet_basic", "--data", w / "afile", *TINY,
                                             "--out", w / "r0"]), ["afile", "not a folder"])
    record("train", "--out under a regular file", cli(["train", "--model", "segnet_basic", "--data", good, *TINY,
                                                       "--out", w / "afile" / "run"]), ["afile"])
    bad = dataset(w / "crc", train=4)
    victim = sorted((bad / "train").glob("*.png"))[2]
    corrupt_png_keep_crcs(victim)
    record("train", "PNG with valid CRCs, corrupt pixels", cli(["train", "--model", "segnet_basic", "--data", bad,
                                                                *TINY, "--out", w / "r1"]), [victim.name])
    trunc = dataset(w / "trunc", train=4)
    victim = sorted((trunc / "train").glob("*.png"))[1]
    victim.write_bytes(victim.read_bytes()[:300])
    record("train", "truncated PNG", cli(["train", "--model", "segnet_basic", "--data", trunc, *TINY,
                                          "--out", w / "r2"]), [victim.name])
    orphan = dataset(w / "orphan", train=4)
    shutil.copy(sorted((orphan / "trainannot").glob("*.png"))[0], orphan / "trainannot" / "zzz.png")
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = cli(["train", "--model", "segnet_basic", "--data", orphan, *TINY, "--out", w / "r3"])
    said = [str(c.message) for c in caught if "zzz.png" in str(c.message)]
    record("train", "mask with no image (a warning naming it)", (r[0] if said else 1, said or r[1], r[2]), "ok")
    record("train", "--num-classes 2.5", cli(["train", "--model", "segnet_basic", "--data", good, *TINY,
                                              "--num-classes", "2.5"]), ["--num-classes", "2.5"])
    record("train", "--backup-every 0", cli(["train", "--model", "segnet_basic", "--data", good, *TINY,
                                             "--backup-every", "0", "--out", w / "r4"]), ["backup_every"])
    record("train", "reseg --crop 65 97 (any size now: must train)", cli(
        ["train", "--model", "reseg", "--data", good, "--crop", "65", "97", "--scale", "1", "1", "--steps-per-epoch",
         "1", "--batch-size", "2", "--quiet", "--val-split", "none", "--out", w / "r5"]), "ok")
    # a finished run, reused
    run = w / "done"
    r = cli(["train", "--model", "segnet_basic", "--data", good, *TINY, "--epochs", "2", "--out", run])
    record("train", "a normal run (reference)", r, "ok")
    log = (run / "log.csv").read_text()
    r = cli(["train", "--model", "segnet_basic", "--data", good, *TINY, "--epochs", "2", "--out", run])
    lost = None if (run / "log.csv").read_text() == log and readable_keras(run / "best.keras") else "run changed"
    record("train", "finished --out reused without --resume", r, ["--resume", "--overwrite"], lost)
    r = cli(["train", "--model", "segnet_basic", "--data", good, *TINY, "--epochs", "2", "--out", run, "--resume"])
    lost = None if (run / "log.csv").read_text() == log else "log.csv changed"
    record("train", "--resume on a finished run (no-op)", r, "ok", lost)
    r = cli(["train", "--model", "segnet_basic", "--data", good, *TINY, "--epochs", "1", "--out", run, "--overwrite"])
    lost = None if [l.split(",")[0] for l in (run / "log.csv").read_text().split()[1:]] == ["0"] else "bad log"
    record("train", "--overwrite a finished run", r, "ok", lost)

    # kills at chosen points of the writes, then --resume; compare with an uninterrupted run
    ref = w / "ref"
    args = ["train", "--model", "segnet_basic", "--data", good, *TINY, "--epochs", "3", "--backup-every", "1"]
    sub([*args, "--out", ref])
    want = (ref / "log.csv").read_text().splitlines()
    for point in ("written:state.json:2", "renamed:ckpt-000000003.weights.h5", "renamed:best.keras",
                  "written:log.csv:2", "renamed:state.json:3", "written:model.keras", "written:last.keras:3"):
        out = w / f"kill-{point.replace(':', '_')}"
        killed = sub([*args, "--out", out], env={"KSEG_KILL_AT": point})
        broken = [n for n in ("best.keras", "last.keras", "model.keras") if (out / n).exists()
                  and not readable_keras(out / n)]
        r = sub([*args, "--out", out, "--resume"])
        got = (out / "log.csv").read_text().splitlines() if (out / "log.csv").exists() else []
        same = [l.split(",")[0] for l in got] == [l.split(",")[0] for l in want] and \
            np.allclose(np.array([[float(v) for v in l.split(",")] for l in got[1:]]),
                        np.array([[float(v) for v in l.split(",")] for l in want[1:]]), rtol=1e-4)
        lost = (f"unreadable after kill: {broken}" if broken else None) or (None if same else f"log differs: {got}")
        record("train", f"SIGKILL at {point}, then --resume", r if killed[0] == -9 else killed, "ok", lost)
    out = w / "interrupted"
    r = sub([*args, "--epochs", "40", "--out", out], kill_when=out / "backup" / "state.json")
    record("train", "Ctrl-C (SIGINT) during training", r, ["interrupted", "--resume"])
    r = sub([*args, "--epochs", "40", "--out", out])
    record("train", "interrupted --out reused without --resume", r, ["--resume", "--overwrite"])
    state = out / "backup" / "state.json"
    if state.exists():
        saved = state.read_text()
        state.write_text(saved[: len(saved) // 2])
        record("train", "--resume with a truncated backup/state.json", cli([*args, "--epochs", "40", "--out", out,
                                                                             "--resume"]), ["state.json"])
        state.write_text(saved)
        ck = out / "backup" / json.loads(saved)["weights"]
        ck.write_bytes(ck.read_bytes()[:1000])
        record("train", "--resume with a truncated backup weights file", cli([*args, "--epochs", "40", "--out", out,
                                                                               "--resume"]), [ck.name])

    # full disk and read-only folders (tmpfs, root only)
    disk = w / "disk"
    with tmpfs(disk, "3m") as ok:
        if ok:
            out = disk / "run"
            sub([*args, "--out", out], env={"KSEG_KILL_AT": "renamed:state.json:2"})  # a run to resume
            before = sorted(p.name for p in out.iterdir())
            fill(disk, 20_000)
            r = cli([*args, "--out", out, "--resume"])
            broken = [n for n in ("best.keras", "last.keras") if (out / n).exists() and not readable_keras(out / n)]
            record("train", "disk full during checkpoints/backup", r, ["No space left", "run/"],
                   f"unreadable: {broken}" if broken else None)
            (disk / "filler").unlink()
            r = cli([*args, "--out", out, "--resume"])
            got = (out / "log.csv").read_text().splitlines()
            record("train", "... --resume after space is freed", r, "ok",
                   None if [l.split(",")[0] for l in got] == ["epoch", "0", "1", "2"] else f"log: {got} ({before})")
    with tmpfs(w / "ro", "1m", ro=True) as ok:
        if ok:
            record("train", "--out on a read-only file system", cli([*args, "--out", w / "ro" / "run"]),
                   ["ro", "read-only"])


def model_cases(w):
    from kseg import training

    good = dataset(w / "mdata")
    run = w / "mrun"
    cli(["train", "--model", "segnet_basic", "--data", good, *TINY, "--out", run])
    model = run / "model.keras"
    (w / "empty.keras").write_bytes(b"")
    (w / "trunc.keras").write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    (w / "flipped.keras").write_bytes(bytes(data))
    (w / "text.keras").write_text("not a model")
    bad_models = [("missing .keras", w / "none.keras", ["none.keras", "no .keras file"]), ("empty .keras", w / "empty.keras", ["empty.keras", "empty"]),
                  ("truncated .keras", w / "trunc.keras", ["trunc.keras"]),
                  ("corrupt weights in .keras", w / "flipped.keras", ["flipped.keras"]),
                  ("text file as .keras", w / "text.keras", ["text.keras"]), ("folder as model", w, [w.name])]
    for case, path, expect in bad_models:
        record("evaluate", case, cli(["evaluate", "--model-path", path, "--data", good]), expect)
    for case, path, expect in bad_models[:3]:
        record("predict", case, cli(["predict", "--model-path", path, sorted((good / "test").glob("*.png"))[0],
                                     "--out", w / "p0"]), expect)
        record("export", case, cli(["export", path, "--format", "tflite", "--out", w / "e.tflite"]), expect)
    crc = dataset(w / "ecrc", test=3)
    victim = sorted((crc / "test").glob("*.png"))[1]
    corrupt_png_keep_crcs(victim)
    record("evaluate", "PNG with valid CRCs, corrupt pixels", cli(["evaluate", "--model-path", model, "--data", crc]),
           [victim.name])
    (w / "afile").write_text("x")
    record("evaluate", "--json under a regular file", cli(["evaluate", "--model-path", model, "--data", good,
                                                           "--json", w / "afile" / "r.json"]), ["afile"])
    record("evaluate", "missing split", cli(["evaluate", "--model-path", model, "--data", good, "--split", "nope"]),
           ["nope"])
    # predict
    record("predict", "a folder as image", cli(["predict", "--model-path", model, good / "test", "--out", w / "p1"]),
           ["test", "folder"])
    lost = "created --out" if (w / "p1").exists() else None
    record("predict", "missing image (no --out created)", cli(["predict", "--model-path", model, w / "no.png",
                                                               "--out", w / "p2"]), ["no.png"],
           "created --out" if (w / "p2").exists() else lost)
    (w / "text.png").write_text("hello")
    record("predict", "text file as image", cli(["predict", "--model-path", model, w / "text.png", "--out", w / "p3"]),
           ["text.png"])
    record("predict", "--out under a regular file", cli(["predict", "--model-path", model,
                                                         sorted((good / "test").glob("*.png"))[0],
                                                         "--out", w / "afile" / "o"]), ["afile"])
    # export
    record("export", "--out under a regular file", cli(["export", model, "--format", "tflite",
                                                        "--out", w / "afile" / "m.tflite"]), ["afile"])
    rep = w / "rep"
    rep.mkdir()
    for p in sorted((good / "train").glob("*.png")):
        shutil.copy(p, rep / p.name)
    (rep / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    record("export", "bad image in --representative", cli(["export", model, "--format", "tflite", "--quantize", "int8",
                                                           "--representative", rep, "--out", w / "q.tflite"]),
           ["broken.png"])
    disk = w / "edisk"
    with tmpfs(disk, "1m") as ok:
        if ok:
            for fmt, name in (("tflite", "m.tflite"), ("keras", "m.keras"), ("saved_model", "sm")):
                target = disk / name
                first = cli(["export", model, "--format", fmt, "--out", target])
                fill(disk, 2_000)
                r = cli(["export", model, "--format", fmt, "--out", target])
                (disk / "filler").unlink()
                if fmt == "tflite":
                    from kseg import export

                    try:
                        export.run_tflite(str(target), np.zeros((1, 32, 48, 3), np.float32))
                        intact = True
                    except Exception:
                        intact = False
                elif fmt == "keras":
                    intact = readable_keras(target)
                else:
                    import tensorflow as tf

                    try:
                        tf.saved_model.load(str(target))
                        intact = True
                    except Exception:
                        intact = False
                lost = None if first[0] == 0 and intact else f"previous {name} unreadable"
                record("export", f"disk full during --format {fmt}", r, ["No space left", name], lost)
    del training


def demo_cases(w):
    (w / "afile").write_text("x")
    record("demo", "--out under a regular file", cli(["demo", "--synthetic", "--out", w / "afile" / "d",
                                                      "--budget-seconds", "1", "--quiet"]), ["afile"])
    with tmpfs(w / "dro", "1m", ro=True) as ok:
        if ok:
            record("demo", "--out on a read-only file system", cli(["demo", "--synthetic", "--out", w / "dro" / "d",
                                                                    "--budget-seconds", "1", "--quiet"]),
                   ["read-only"])


def coco(root, n=2, h=40, w=50):
    from kseg.data.synthetic import tiny_coco

    return tiny_coco(root, n, h, w)


def instance_cases(w):
    from PIL import Image

    def case(name, change, expect):
        root = w / name.replace(" ", "_")
        ds = coco(root)
        change(root, ds)
        (root / "annotations" / "instances_s.json").write_text(json.dumps(ds))
        record("inst-train", name, cli(["train", "--model", "deepmask_resnet50", "--data", root, "--split", "s",
                                        "--steps", "1", "--batch-size", "1", "--out", root / "run"]), expect)

    case("missing image file", lambda r, d: (r / "s" / "2.png").unlink(), ["2.png"])

    def truncated(r, d):
        Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(r / "s" / "2.jpg", quality=90)
        (r / "s" / "2.jpg").write_bytes((r / "s" / "2.jpg").read_bytes()[:300])
        d["images"][1]["file_name"] = "2.jpg"

    case("truncated JPEG", truncated, ["2.jpg"])
    case("garbage RLE", lambda r, d: d["annotations"][1].update(segmentation={"counts": "garbage!!", "size": [40, 50]}),
         ["id=2", "RLE"])
    case("image record without id", lambda r, d: d["images"][1].pop("id"), ["images[1]", "id"])
    case("polygon outside its image", lambda r, d: d["annotations"][1].update(segmentation=[[60, 50, 70, 50, 70, 60]]),
         ["outside"])
    case("annotation with unknown image_id", lambda r, d: d["annotations"][1].update(image_id=99), ["99"])
    root = w / "noann"
    root.mkdir()
    record("inst-train", "no annotations file", cli(["train", "--model", "deepmask_resnet50", "--data", root,
                                                     "--split", "s", "--out", root / "run"]), ["instances_s.json"])
    root = w / "badjson"
    coco(root)
    (root / "annotations" / "instances_s.json").write_text("{not json")
    record("inst-train", "annotations not JSON", cli(["train", "--model", "deepmask_resnet50", "--data", root,
                                                      "--split", "s", "--out", root / "run"]), ["instances_s.json"])

    # kills during instance training (RunKeeper writes its files), --resume, and a finished --out reused
    root = w / "inst-ok"
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "instances_s.json").write_text(json.dumps(coco(root, n=4, h=64, w=64)))
    args = ["train", "--model", "deepmask_resnet50", "--data", root, "--split", "s", "--batch-size", "2", "--epochs",
            "3", "--steps-per-epoch", "2", "--backup-every", "1", "--quiet", "--model-arg", "width_multiplier=0.125",
            "--model-arg", "input_size=32", "--model-arg", "context=16", "--model-arg", "depths=[1,1,1]"]
    ref = root / "ref"
    r = sub([*args, "--out", ref])
    record("inst-train", "a normal run (reference)", r, "ok")
    want = (ref / "log.csv").read_text().splitlines() if (ref / "log.csv").exists() else ["(no reference)"]
    for point in ("written:state.json:2", "renamed:last.keras", "written:log.csv:2", "written:model.keras"):
        out = root / f"kill-{point.replace(':', '_')}"
        killed = sub([*args, "--out", out], env={"KSEG_KILL_AT": point})
        broken = [n for n in ("last.keras", "model.keras") if (out / n).exists() and not readable_keras(out / n)]
        r = sub([*args, "--out", out, "--resume"])
        got = (out / "log.csv").read_text().splitlines() if (out / "log.csv").exists() else []
        same = len(got) == len(want) and [l.split(",")[0] for l in got] == [l.split(",")[0] for l in want] and \
            np.allclose(np.array([[float(v) for v in l.split(",")] for l in got[1:]]),
                        np.array([[float(v) for v in l.split(",")] for l in want[1:]]), rtol=1e-4)
        lost = (f"unreadable after kill: {broken}" if broken else None) or (None if same else f"log differs: {got}")
        record("inst-train", f"SIGKILL at {point}, then --resume", r if killed[0] == -9 else killed, "ok", lost)
    log = (ref / "log.csv").read_text() if (ref / "log.csv").exists() else ""
    r = cli([*args, "--out", ref])
    record("inst-train", "finished --out reused without --resume", r, ["--resume", "--overwrite"],
           None if (ref / "log.csv").read_text() == log and readable_keras(ref / "model.keras") else "run changed")


def convert_cases(w):
    """``kseg convert``: bad weight files, bad --out, and faults while the .weights.h5 is written."""
    import h5py

    sys.path.insert(0, str(ROOT / "tests" / "convert"))
    import inverse  # tests' Keras -> Caffe writer: a valid caffemodel in the authors' layout

    import kseg
    from kseg.convert.caffe import write_caffemodel
    from kseg.convert.torch7 import write_t7

    model = kseg.SegNetBasic()
    inverse.randomize(model)
    good = pathlib.Path(write_caffemodel(w / "segnet_basic.caffemodel", inverse.caffe_layers(model), v1=True))
    out = w / "sb.weights.h5"
    conv = lambda *extra, src=good, model_name="segnet_basic", dst=out: cli(  # noqa: E731
        ["convert", "--model", model_name, src, "--out", dst, *extra])
    record("convert", "valid caffemodel (must succeed)", conv(), "ok")
    before = out.read_bytes()

    def still_good(path=out):
        try:
            with h5py.File(path, "r"):
                pass
            return path.read_bytes() == before
        except OSError:
            return False

    record("convert", "missing weights file", conv(src=w / "nope.caffemodel"), ["nope.caffemodel"])
    (w / "trunc.caffemodel").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    record("convert", "truncated caffemodel", conv(src=w / "trunc.caffemodel", dst=w / "t.weights.h5"),
           ["trunc.caffemodel"])
    (w / "junk.caffemodel").write_bytes(os.urandom(4096))
    record("convert", "random bytes as caffemodel", conv(src=w / "junk.caffemodel", dst=w / "j.weights.h5"),
           ["junk.caffemodel"])
    (w / "net.prototxt").write_text('name: "x"\nlayer { name: "data" type: "Input" top: "data" }\n')
    record("convert", "a prototxt given as the weights", conv(src=w / "net.prototxt", dst=w / "p.weights.h5"),
           ["net.prototxt"])
    record("convert", "caffemodel of another model", conv(model_name="fcn32s", dst=w / "f.weights.h5"),
           ["segnet_basic.caffemodel"])
    record("convert", "unknown model name", conv(model_name="segnett", dst=w / "u.weights.h5"), ["segnett"])
    record("convert", "non-integer --model-arg num_classes", conv("--model-arg", "num_classes=2.5",
                                                                  dst=w / "n.weights.h5"), ["num_classes"])
    write_t7(w / "junk.t7", {"not": "a model"})
    record("convert", "t7 without a model", conv(src=w / "junk.t7", model_name="deepmask_resnet50",
                                                 dst=w / "d.weights.h5"), ["junk.t7"])
    record("convert", "--out not ending in .weights.h5", conv(dst=w / "x.h5"), [".weights.h5"])
    (w / "afile").write_text("x")
    record("convert", "--out under a regular file", conv(dst=w / "afile" / "x.weights.h5"), ["afile"])
    # faults while writing over a good file: the old one must survive
    with tmpfs(w / "full", "6m") as ok:
        if ok:
            target = w / "full" / "sb.weights.h5"
            shutil.copy(out, target)
            fill(w / "full", 64 * 1024)
            res = conv(dst=target)
            record("convert", "full disk while writing over a good file", res, ["no space"],
                   lost=None if still_good(target) else f"{target.name} no longer the old file")
    with tmpfs(w / "ro", "1m", ro=True) as ok:
        if ok:
            record("convert", "--out on a read-only file system", conv(dst=w / "ro" / "x.weights.h5"), ["read-only"])
    res = sub(["convert", "--model", "segnet_basic", good, "--out", out], env={"KSEG_KILL_AT": "written:sb.weights.h5"})
    record("convert", "SIGKILL after writing, before the rename", (1, res[1], res[2]),
           ["killed" if res[0] == -9 else "(not killed)"] if res[0] != -9 else None,
           lost=None if still_good() else "sb.weights.h5 no longer the old file")
    if res[0] == -9 and still_good():
        RESULTS[-1] = ("convert", RESULTS[-1][1], "handled", -9, "old file intact after SIGKILL")
    res = conv()
    record("convert", "convert again over the old file (must succeed)", res, "ok")


GROUPS = {"train": train_cases, "model": model_cases, "demo": demo_cases, "instance": instance_cases,
          "convert": convert_cases}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=sorted(GROUPS), action="append")
    args = ap.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="kseg-faults-"))
    try:
        for name in args.only or list(GROUPS):
            (work / name).mkdir()
            GROUPS[name](work / name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(f"{'command':<10} {'case':<48} {'result':<9} exit  message")
    for command, case, verdict, status, text in RESULTS:
        print(f"{command:<10} {case:<48} {verdict:<9} {str(status):>4}  {text[:100]}")
    counted = [r for r in RESULTS if r[2] != "n/a"]
    by = {v: sum(r[2] == v for r in counted) for v in ("clear", "handled", "unclear", "traceback", "lost")}
    print()
    print(f"tried {len(counted)} | clear error naming the file {by['clear']} | handled correctly {by['handled']} | "
          f"unclear {by['unclear']} | traceback {by['traceback']} | lost or corrupted {by['lost']}")


if __name__ == "__main__":
    main()
