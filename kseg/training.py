"""Train, evaluate and predict with any registered kseg model on a segmentation folder.

* :func:`compile_model`: the void-ignoring, class-weighted cross-entropy
  (:func:`kseg.losses.segmentation_loss`) and the SegNet paper's three metrics
  (:mod:`kseg.metrics`: global accuracy, class-average accuracy, mean IoU).
* :func:`train`: ``model.fit`` on the :mod:`kseg.data` ``tf.data`` pipeline (joint scale / crop /
  flip augmentation, median-frequency class weights as per-pixel sample weights) with
  checkpoints (``best.keras`` by validation mIoU, ``last.keras`` every epoch), an exact resume
  after an interruption, TensorBoard logs, a CSV log and Keras progress bars; every file is written
  crash-safely (:mod:`kseg.runs`, :mod:`kseg.io`). ``out_dir`` afterwards holds::

      model.keras  best.keras  last.keras  log.csv  logs/  (backup/ while a run is unfinished)

* :func:`evaluate`: the three metrics and a per-class IoU / accuracy table on a split.
* :func:`predict`: a label PNG (class ids, the CamVid ``*annot`` format) and a colour overlay PNG
  per image.

A model whose input size is fixed (e.g. built for 180x240 crops) is evaluated and applied to
images of any size by resizing the image to the model's size (bilinear) and the logits back to
the image's size (bilinear) before the argmax, so scores are always measured against the labels
at their own resolution.

Example:
    >>> from kseg import training
    >>> model, history = training.train("segnet_basic", "../shared/data/camvid", epochs=1,
    ...     steps_per_epoch=10, crop=(180, 240), scale_range=(0.5, 0.5),
    ...     out_dir="runs/try")  # doctest: +SKIP
    >>> training.evaluate(model, "../shared/data/camvid", "test")["mean_iou"]  # doctest: +SKIP
"""

import json
import pathlib
import shutil
import time

import keras
import numpy as np

from kseg import io as kio
from kseg import losses
from kseg import metrics as kmetrics
from kseg.utils import as_size
from kseg.utils import renamed_argument

__all__ = [
    "TimeBudget",
    "build_model",
    "compile_model",
    "train",
    "evaluate",
    "predict",
    "demo",
    "DEMO",
    "compute_bn_statistics",
    "load_model",
    "model_input_size",
]

CAMVID_NUM_CLASSES = 11
CAMVID_IGNORE_CLASS = 11
CAMVID_IGNORE_LABEL = CAMVID_IGNORE_CLASS  # deprecated name
OPTIMIZERS = ("adam", "adamw", "sgd")


# ----------------------------------------------------------------------------------------------
# models


def build_model(name, num_classes=CAMVID_NUM_CLASSES, input_shape=None, **model_kwargs):
    """Build a registered model by name (``kseg.models.get(name).build(...)``)."""
    from kseg import models

    card = models.get(name)  # ValueError listing the available names
    return card.build(num_classes=_check_num_classes(num_classes), input_shape=input_shape, **model_kwargs)


def _check_num_classes(value):
    """`value` as an int >= 1; a float such as 2.5 or a string such as "11" is an error naming it."""
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise ValueError(f"num_classes must be a whole number >= 1, got {value!r}")
    return int(value)


def load_model(path):
    """Load a ``.keras`` model with ``safe_mode=True`` (kseg's layers, losses and metrics registered)."""
    return kio.load_keras_file(path, compile=False)  # a missing, truncated or corrupt file names itself


def model_input_size(model):
    """``(height, width)`` of a model's fixed input size, or ``None`` when either is variable."""
    shape = model.inputs[0].shape
    if len(shape) != 4 or shape[1] is None or shape[2] is None:
        return None
    return int(shape[1]), int(shape[2])


def _num_classes_of(model):
    return int(model.outputs[0].shape[-1])


def _make_optimizer(optimizer, learning_rate, momentum=0.9, weight_decay=None):
    if isinstance(optimizer, keras.optimizers.Optimizer):
        return optimizer
    is_schedule = isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule)
    if learning_rate is None or (not is_schedule and not float(learning_rate) > 0):
        raise ValueError(f"learning_rate must be > 0 or a schedule, got {learning_rate}")
    name = str(optimizer).lower()
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay or 1e-4)
    if name == "sgd":
        # SegNet-Tutorial solver: SGD, momentum 0.9, weight decay 5e-4 (as L2 on the weights).
        return keras.optimizers.SGD(learning_rate, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS} or a keras optimizer, got {optimizer!r}")


@renamed_argument("ignore_label", "ignore_class")
def compile_model(
    model,
    num_classes=None,
    ignore_class=CAMVID_IGNORE_CLASS,
    optimizer="adam",
    learning_rate=1e-3,
    momentum=0.9,
    weight_decay=None,
    jit_compile="auto",
    loss="cross_entropy",
):
    """Compile `model` with the segmentation loss and the paper's three metrics.

    Args:
        model: a kseg model (logits ``(B, H, W, C)``).
        num_classes: ``C`` (default: read from the model's output).
        ignore_class: label no loss or metric counts (CamVid void: 11), or ``None``.
        optimizer: ``"adam"``, ``"adamw"``, ``"sgd"`` (momentum `momentum`) or a Keras optimizer.
        learning_rate: the optimizer's learning rate (a float or a schedule).
        weight_decay: decoupled weight decay for ``adamw`` / ``sgd``.
        jit_compile: passed to ``model.compile``.
        loss: ``"cross_entropy"`` (default), ``"dice"``, ``"focal"`` (:func:`kseg.losses.get_loss`;
            all ignore `ignore_class` and take the class weights as per-pixel sample weights) or a
            Keras loss.

    Returns:
        The model (compiled in place).
    """
    if num_classes is None:
        num_classes = _num_classes_of(model)
    if int(num_classes) != _num_classes_of(model):
        raise ValueError(f"num_classes={num_classes} but the model outputs {_num_classes_of(model)} classes")
    model.compile(
        optimizer=_make_optimizer(optimizer, learning_rate, momentum, weight_decay),
        loss=losses.get_loss(loss, int(num_classes), ignore_class),
        metrics=kmetrics.segmentation_metrics(int(num_classes), ignore_class),
        jit_compile=jit_compile,
    )
    return model


# ----------------------------------------------------------------------------------------------
# training


class TimeBudget(keras.callbacks.Callback):
    """Stop training once `seconds` of wall time have passed (checked after every step)."""

    def __init__(self, seconds, verbose=1):
        super().__init__()
        self.verbose = verbose
        if not float(seconds) > 0:
            raise ValueError(f"seconds must be > 0, got {seconds}")
        self.seconds = float(seconds)
        self.start = None
        self.stopped_at = None

    def on_train_begin(self, logs=None):
        self.start = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        if time.monotonic() - self.start >= self.seconds:
            self.model.stop_training = True
            self.stopped_at = time.monotonic() - self.start

    def on_train_end(self, logs=None):
        if self.stopped_at is not None and self.verbose:
            params = self.params or {}
            planned = (params.get("epochs") or 0) * (params.get("steps") or 0)
            done = int(self.model.optimizer.iterations.numpy()) if self.model.optimizer is not None else None
            print(f"time budget of {self.seconds:.0f} s reached: training stopped after {done}"
                  + (f" of {planned} planned steps" if planned else " steps"), flush=True)


def compute_bn_statistics(model, dataset, steps):
    """Recompute every BatchNormalization layer's moving mean / variance over `steps` batches.

    SegNet's authors do this before testing (SegNet-Tutorial ``Scripts/compute_bn_statistics.py``):
    the statistics become the plain average over the batches, instead of the exponential moving
    average that training leaves, which lags far behind the weights after a short run (Keras'
    ``momentum=0.99`` needs hundreds of steps to forget its initial values).

    Args:
        model: a Keras model.
        dataset: yields ``(images, ...)`` batches, as in training (same scale / crop).
        steps: number of batches to average over.

    Returns:
        The number of batches used.
    """
    import tensorflow as tf

    bns = [l for l in model._flatten_layers(include_self=False, recursive=True)
           if isinstance(l, keras.layers.BatchNormalization)]
    if not bns or int(steps) < 1:
        return 0
    momenta = [l.momentum for l in bns]
    seen = 0
    try:
        for batch in dataset.take(int(steps)):
            seen += 1
            for layer in bns:
                if seen == 1:
                    layer.moving_mean.assign(tf.zeros_like(layer.moving_mean))
                    layer.moving_variance.assign(tf.zeros_like(layer.moving_variance))
                # moving = moving * m + batch * (1 - m) with m = (n - 1) / n: the running average.
                layer.momentum = (seen - 1) / seen
            model(batch[0], training=True)
    finally:
        for layer, m in zip(bns, momenta):
            layer.momentum = m
    return seen


def _class_weights(pairs, num_classes, ignore_class, class_weighting):
    from kseg import data

    if class_weighting is None or class_weighting is False or class_weighting == "none":
        return None
    if isinstance(class_weighting, str):
        powers = {"median_frequency": 1.0, "median_frequency_sqrt": 0.5}
        if class_weighting not in powers:
            raise ValueError(
                f"class_weighting must be one of {sorted(powers)}, None or an array, got {class_weighting!r}"
            )
        weights = np.asarray(data.median_frequency_weights(pairs, num_classes, ignore_class), np.float32)
        return weights ** np.float32(powers[class_weighting])
    weights = np.asarray(class_weighting, np.float32)
    if weights.shape != (num_classes,):
        raise ValueError(f"class_weighting must have {num_classes} values, got shape {weights.shape}")
    return weights


@renamed_argument("ignore_label", "ignore_class")
def train(
    model_or_name,
    data_root,
    out_dir="runs/kseg",
    epochs=10,
    steps_per_epoch=None,
    batch_size=4,
    crop=None,
    scale_range=(0.75, 1.5),
    flip=True,
    learning_rate=1e-3,
    optimizer="adam",
    weight_decay=None,
    class_weighting="median_frequency",
    num_classes=CAMVID_NUM_CLASSES,
    ignore_class=CAMVID_IGNORE_CLASS,
    train_split="train",
    val_split="val",
    validation_steps=None,
    resume=False,
    backup_every=None,
    budget_seconds=None,
    bn_statistics_steps=0,
    seed=0,
    verbose=1,
    callbacks=(),
    model_kwargs=None,
    jit_compile="auto",
    precision="float32",
    strategy="default",
    loss="cross_entropy",
    overwrite=False,
):
    """Train a model with ``model.fit`` on a segmentation folder (CamVid or generic layout).

    Args:
        model_or_name: a kseg model, or a registry name (built with ``num_classes`` and
            ``input_shape=(*crop, 3)`` plus `model_kwargs`).
        data_root: dataset folder readable by :func:`kseg.data.find_pairs`.
        out_dir: where checkpoints, logs and the final ``model.keras`` go.
        epochs: number of epochs (the total, also when resuming).
        steps_per_epoch: steps per epoch (default: one pass over the training split, i.e.
            ``len(pairs) // batch_size``; the training stream repeats, reshuffled every pass).
        batch_size: images per step.
        crop: ``(height, width)`` training crops (default: the model's input size, else the
            images' size).
        scale_range: random rescaling of each training image before the crop
            (:func:`kseg.data.joint_augmentation`); ``(0.5, 0.5)`` trains on half-size images.
            A model built by name takes `crop`-sized inputs, and :func:`evaluate` /
            :func:`predict` resize whole images to that size; so pick a scale range around
            ``crop / image size`` (validation images are resized to `crop` in the same way).
        flip: random horizontal flips.
        learning_rate, optimizer, weight_decay: see :func:`compile_model`.
        class_weighting: ``"median_frequency"`` (SegNet; computed from the training masks),
            ``"median_frequency_sqrt"`` (their square roots: a softer balance, which suits short
            runs better), ``None`` or ``num_classes`` weights.
        num_classes, ignore_class: label set (CamVid: 11 classes, void 11).
        train_split, val_split: split names; ``val_split=None`` trains without validation.
        validation_steps: batches per validation (default: the whole split).
        resume: continue an interrupted run from ``out_dir/backup`` at the exact step: weights,
            optimizer state, best value so far, running metrics, the log, and the data order of an
            uninterrupted run (:mod:`kseg.runs`). On a finished run it does nothing and returns the
            saved model. Without it (or `overwrite`) a folder holding a run is an error.
        backup_every: also back up every this many steps (always at the end of each epoch too).
        overwrite: discard a run already in `out_dir` (its checkpoints, backup, log) and start again.
        budget_seconds: stop after this much training wall time (checked every step).
        bn_statistics_steps: after training, recompute the BatchNormalization statistics over this
            many training batches (:func:`compute_bn_statistics`; SegNet's authors do it before
            testing). ``model.keras`` then holds them; the checkpoints do not.
        seed: seed for shuffling, augmentation and (for a model built by name) the initial weights.
        verbose: Keras ``fit`` verbosity (1: progress bars).
        callbacks: more Keras callbacks (run after kseg's own).
        model_kwargs: extra builder arguments when `model_or_name` is a name (e.g. ``width_multiplier``).
        jit_compile: passed to ``model.compile``.
        precision: ``"float32"``, ``"mixed_bfloat16"`` or ``"mixed_float16"``: the Keras dtype
            policy the model is built under (:mod:`kseg.precision`; needs the model by name).
        strategy: ``"default"``, ``"mirrored"`` (all local devices, ``model.fit`` under
            ``tf.distribute.MirroredStrategy``), ``"multiworker"`` (machines described by
            ``TF_CONFIG``; trained by :func:`kseg.distribute.train_folder_distributed`, a custom
            loop with SGD, step-exact checkpoints in ``out_dir`` that resume on their own, no random
            augmentation; see ``docs/distributed.md``), or a ``tf.distribute.Strategy``.
        loss: ``"cross_entropy"``, ``"dice"`` or ``"focal"`` (see :func:`compile_model`).

    Returns:
        ``(model, history)``; the trained model is also saved as ``out_dir/model.keras``. With
        ``strategy="multiworker"`` the second item is the result dict of
        :func:`kseg.distribute.train_distributed`.
    """
    from kseg import distribute
    from kseg.precision import precision_scope

    if strategy == "multiworker":
        if loss != "cross_entropy":
            raise ValueError(f"strategy='multiworker' trains with the cross-entropy only, got loss={loss!r}")
        # Collective ops must be configured before any other TensorFlow op runs.
        return _train_multiworker(
            distribute.get_strategy("multiworker"), model_or_name, data_root, out_dir, epochs, steps_per_epoch,
            batch_size, crop, learning_rate, class_weighting, num_classes, ignore_class, train_split, seed,
            precision, model_kwargs, verbose,
        )
    if isinstance(strategy, str):
        strategy = distribute.get_strategy(strategy)
    if not isinstance(model_or_name, str) and precision != "float32":
        raise ValueError(
            f"precision={precision!r} needs the model by name: build it under "
            "kseg.precision.precision_scope(...) yourself and pass precision='float32'"
        )
    from kseg import data

    out = pathlib.Path(out_dir)
    crop = as_size(crop, "crop")
    num_classes = _check_num_classes(num_classes)
    if int(epochs) < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    from kseg import runs

    mode = runs.check_out_dir(out, resume=resume, overwrite=overwrite)
    if mode == "finished":
        return _finished_run(out)
    state = runs.load_state(out / "backup") if mode == "resume" else None

    train_pairs = data.find_pairs(data_root, train_split)
    if steps_per_epoch is None:
        # One pass over the split per epoch, as a repeated stream: the data order then depends on
        # the step alone, so a resumed run sees the batches an uninterrupted one would have.
        steps_per_epoch = len(train_pairs) // int(batch_size)
        if steps_per_epoch < 1:
            raise data.DataError(
                f"{len(train_pairs)} training images in split {train_split!r} of {data_root}: fewer than "
                f"one batch of {batch_size}; lower batch_size"
            )
    if isinstance(model_or_name, str):
        if crop is None:
            raise ValueError("crop=(height, width) is needed to build a model by name")
        keras.utils.set_random_seed(int(seed))  # the initial weights too: a run is reproducible
        with strategy.scope(), precision_scope(precision):
            model = build_model(model_or_name, num_classes, (*crop, 3), **(model_kwargs or {}))
    else:
        if model_kwargs:
            raise ValueError("model_kwargs only apply when the model is given by name")
        model = model_or_name
        crop = crop or model_input_size(model)
    if _num_classes_of(model) != num_classes:
        raise ValueError(f"num_classes={num_classes} but the model outputs {_num_classes_of(model)} classes")
    out_hw = tuple(model.outputs[0].shape[1:3])
    if crop is not None and None not in out_hw and out_hw != tuple(crop):
        raise ValueError(
            f"{model.name} maps {crop[0]}x{crop[1]} crops to {out_hw[0]}x{out_hw[1]} logits, but training needs "
            "labels and logits of one size: choose a crop the model keeps (e.g. multiples of its output stride)"
        )

    weights = _class_weights(train_pairs, num_classes, ignore_class, class_weighting)
    low, high = (float(v) for v in scale_range)

    def train_stream():
        # A fresh pipeline (and seeded augmentation generator) per fit call: the stream of batches
        # is then a function of the step alone, so a resumed run skips to the same batches.
        augment = data.joint_augmentation(
            crop_size=crop, scale_range=(low, high), flip=flip, seed=seed, ignore_class=ignore_class
        )
        return data.segmentation_dataset(
            train_pairs,
            batch_size=batch_size,
            shuffle=True,
            augment=augment,
            num_classes=num_classes,
            ignore_class=ignore_class,
            class_weights=weights,
            repeat=True,
            seed=seed,
            drop_remainder=True,
        )

    train_stream()  # checks every file up front
    val_ds = None
    if val_split is not None:
        val_ds = data.segmentation_dataset(
            data.find_pairs(data_root, val_split),
            batch_size=batch_size,
            num_classes=num_classes,
            ignore_class=ignore_class,
        )
        if crop is not None:
            val_ds = val_ds.map(lambda images, masks: _resize_batch(images, masks, crop))

    if not getattr(model, "compiled", False):
        with strategy.scope():
            compile_model(
                model,
                num_classes,
                ignore_class,
                optimizer=optimizer,
                learning_rate=learning_rate,
                weight_decay=weight_decay,
                jit_compile=jit_compile,
                loss=loss,
            )

    out.mkdir(parents=True, exist_ok=True)
    monitor = "val_mean_iou" if val_ds is not None else "mean_iou"
    if state is not None and state["rows"]:
        runs.write_log(out / "log.csv", state["rows"])  # drop rows of epochs not committed
    keeper = runs.RunKeeper(out, monitor, steps_per_epoch, backup_every=backup_every, state=state)
    own = [keeper, keras.callbacks.TensorBoard(str(out / "logs"), update_freq="epoch")]
    if budget_seconds is not None:
        own.append(TimeBudget(budget_seconds, verbose=verbose))
    try:
        history = _fit_resumable(
            model, train_stream, keeper, int(epochs), steps_per_epoch, own + list(callbacks),
            validation_data=val_ds, validation_steps=validation_steps, verbose=verbose, data_root=data_root,
            splits=(train_split, val_split),
        )
    except BaseException:
        if state is None and not (out / "backup").exists():  # nothing to resume: leave no empty logs
            shutil.rmtree(out / "logs", ignore_errors=True)
        raise
    if bn_statistics_steps:
        stats_ds = data.segmentation_dataset(
            train_pairs,
            batch_size=batch_size,
            shuffle=True,
            augment=data.joint_augmentation(crop_size=crop, scale_range=(low, high), flip=flip, seed=seed + 1),
            num_classes=num_classes,
            ignore_class=ignore_class,
            repeat=True,
            seed=seed + 1,
            drop_remainder=True,
        )
        compute_bn_statistics(model, stats_ds, bn_statistics_steps)
    with kio.atomic_path(out / "model.keras") as tmp:
        model.save(tmp)
    with kio.atomic_write(out / "train_config.json") as f:
        json.dump(
            {
                "model": model.name,
                "data_root": str(data_root),
                "epochs": int(epochs),
                "epochs_run": len(keeper.rows),
                "steps_per_epoch": steps_per_epoch,
                "batch_size": int(batch_size),
                "crop": crop,
                "scale_range": [low, high],
                "learning_rate": float(learning_rate) if not callable(learning_rate) else "schedule",
                "optimizer": str(optimizer),
                "loss": loss if isinstance(loss, str) else type(loss).__name__,
                "bn_statistics_steps": int(bn_statistics_steps or 0),
                "class_weights": None if weights is None else [float(w) for w in weights],
                "num_classes": num_classes,
                "ignore_class": ignore_class,
            },
            f,
            indent=2,
        )
    shutil.rmtree(out / "backup", ignore_errors=True)  # the run is complete: model.keras is safe
    return model, history


def _fit_resumable(model, train_stream, keeper, epochs, steps_per_epoch, callbacks, data_root, splits, **fit_kwargs):
    """``model.fit`` from `keeper`'s resume point: the rest of a half-done epoch, then whole epochs.

    The training stream is repeated and seeded, so skipping the batches already used gives the data
    order of an uninterrupted run. Returns one ``History`` covering the epochs run here.
    """
    history = keras.callbacks.History()
    history.epoch, history.history = [], {}
    start, done = keeper.epoch, keeper.step_in_epoch
    if start >= epochs:  # killed after the last backup: only the final saves are left
        keeper.set_model(model)
        keeper.restore_now()
        return history
    parts = []
    if done:
        parts.append((start, start + 1, steps_per_epoch - done, start * steps_per_epoch + done))
        start += 1
    if start < epochs:
        parts.append((start, epochs, steps_per_epoch, start * steps_per_epoch))
    for initial, end, steps, skip in parts:
        try:
            h = model.fit(
                train_stream().skip(skip) if skip else train_stream(),
                epochs=end,
                initial_epoch=initial,
                steps_per_epoch=steps,
                callbacks=callbacks,
                shuffle=False,  # the pipeline shuffles
                **fit_kwargs,
            )
        except Exception as err:
            _raise_data_error(err, data_root, splits)
            raise
        history.epoch += h.epoch
        for k, v in h.history.items():
            history.history.setdefault(k, []).extend(v)
        if model.stop_training:  # a time budget or an early-stopping callback
            break
    history.set_model(model)
    return history


def _raise_data_error(err, data_root, splits):
    """Turn a decode error raised inside ``tf.data`` into a :class:`DataError` naming the file."""
    from kseg.data import DataError, find_corrupt_file

    try:
        import tensorflow as tf

        late = (tf.errors.InvalidArgumentError, tf.errors.DataLossError, tf.errors.NotFoundError)
    except ImportError:  # pragma: no cover
        return
    if not isinstance(err, late) or data_root is None:
        return
    text = str(getattr(err, "message", err))
    if "DataError: " in text:  # an assertion of the pipeline, which names the file itself
        raise DataError(text[text.index("DataError: ") + len("DataError: "):].strip().splitlines()[0]) from err
    for split in splits:
        if split is None:
            continue
        found = find_corrupt_file(data_root, split)
        if found is not None:
            raise DataError(f"{found[0]}: {found[1]}") from err
    first = str(getattr(err, "message", err)).strip().splitlines()[0]
    raise DataError(f"reading {data_root} failed while training: {first}") from err


def _finished_run(out):
    """``train(resume=True)`` on a complete run: nothing to train; the saved model and its log."""
    from kseg import runs

    model = load_model(out / "model.keras")
    history = keras.callbacks.History()
    rows = runs.read_log(out / "log.csv") if (out / "log.csv").is_file() else []
    history.epoch = [r["epoch"] for r in rows]
    history.history = {k: [r.get(k) for r in rows] for k in sorted({k for r in rows for k in r} - {"epoch"})}
    history.set_model(model)
    return model, history


def _train_multiworker(strategy, model_or_name, data_root, out_dir, epochs, steps_per_epoch, batch_size, crop,
                       learning_rate, class_weighting, num_classes, ignore_class, train_split, seed, precision,
                       model_kwargs, verbose):
    """``train(strategy="multiworker")``: the custom loop of :mod:`kseg.distribute`."""
    from kseg import data, distribute
    from kseg.precision import precision_scope

    if not isinstance(model_or_name, str):
        raise ValueError("strategy='multiworker' needs the model by name (it is built in the strategy's scope)")
    crop = as_size(crop, "crop")
    if crop is None:
        raise ValueError("crop=(height, width) is needed to build a model by name")
    pairs = data.find_pairs(data_root, train_split)
    steps = int(epochs) * int(steps_per_epoch or len(pairs) // int(batch_size))

    def build():
        with precision_scope(precision):
            return build_model(model_or_name, num_classes, (*crop, 3), **(model_kwargs or {}))

    weights = _class_weights(pairs, num_classes, ignore_class, class_weighting)
    result = distribute.train_folder_distributed(
        build, data_root, out_dir, strategy=strategy, split=train_split, size=crop, global_batch_size=batch_size,
        num_steps=steps, num_classes=num_classes, ignore_class=ignore_class, class_weights=weights,
        learning_rate=learning_rate, seed=seed, verbose=bool(verbose),
    )
    model = result["model"]
    if distribute.task_info(strategy)[0]:  # the chief alone writes the model
        with kio.atomic_path(pathlib.Path(out_dir) / "model.keras") as tmp:
            model.save(tmp)
    return model, result


# ----------------------------------------------------------------------------------------------
# evaluation and prediction


def _resize_batch(images, masks, size):
    """Images bilinear, masks nearest neighbour, to ``size`` (validation at the model's size)."""
    import tensorflow as tf

    images = tf.image.resize(images, size, method="bilinear")
    masks = tf.cast(tf.image.resize(masks[..., None], size, method="nearest")[..., 0], tf.int32)
    return images, masks


def _predict_logits(model, images, input_size):
    """Logits at the images' own size: resize in, predict, resize the logits back (bilinear)."""
    import tensorflow as tf

    from kseg.utils import warn_if_unit_range

    warn_if_unit_range(images, "kseg predict / evaluate")
    size = tuple(int(v) for v in images.shape[1:3])
    x = images if input_size is None or tuple(input_size) == size else tf.image.resize(images, input_size)
    logits = model.predict_on_batch(x)
    if tuple(logits.shape[1:3]) != size:
        logits = tf.image.resize(logits, size, method="bilinear")
    return logits


@renamed_argument("ignore_label", "ignore_class")
def evaluate(
    model,
    data_root_or_dataset,
    split="test",
    batch_size=4,
    input_size="model",
    num_classes=None,
    ignore_class=CAMVID_IGNORE_CLASS,
    class_names=None,
    steps=None,
    verbose=1,
    save_overlays=None,
    max_overlays=8,
):
    """The SegNet paper's metrics (G, C, mIoU, BF) and a per-class table on one split.

    Args:
        model: a kseg model (or a path to a ``.keras`` file).
        data_root_or_dataset: a dataset folder (:func:`kseg.data.find_pairs` layout) or a
            ``tf.data.Dataset`` of ``(images, masks[, weights])`` batches.
        split: the split to read from a folder.
        batch_size: images per batch (folders only).
        input_size: ``"model"`` (the model's fixed input size, if any), ``None`` (the images' own
            size) or ``(height, width)``: images are resized to it and the logits resized back to
            the labels' size, so the scores are always against full-resolution labels.
        num_classes: default: the model's output classes.
        ignore_class: the label not scored (CamVid void: 11), or ``None``.
        class_names: names for the table (default: CamVid's when there are 11 classes).
        steps: evaluate only this many batches.
        verbose: print a progress line per batch (1) or nothing (0).
        save_overlays: a folder: write ``<n>_comparison.png`` (image | prediction | ground truth |
            errors, :func:`kseg.viz.comparison`) for the first `max_overlays` images, and the charts
            ``iou_per_class.png`` / ``confusion_matrix.png`` (:func:`save_charts`).

    Returns:
        ``{"global_accuracy", "class_average_accuracy", "mean_iou", "boundary_f1"}`` floats, ``"per_class"``
        (a list of ``{"class", "name", "iou", "accuracy", "pixels"}``), ``"confusion_matrix"``
        (nested lists, ``[true][predicted]``), ``"num_images"``, ``"input_size"``.
    """
    from kseg import data

    if isinstance(model, (str, pathlib.Path)):
        model = load_model(model)
    num_classes = int(num_classes or _num_classes_of(model))
    if input_size == "model":
        input_size = model_input_size(model)
    input_size = as_size(input_size, "input_size")
    if isinstance(data_root_or_dataset, (str, pathlib.Path)):
        dataset = data.segmentation_dataset(
            data.find_pairs(data_root_or_dataset, split),
            batch_size=batch_size,
            num_classes=num_classes,
            ignore_class=ignore_class,
        )
    else:
        dataset = data_root_or_dataset
    if class_names is None:
        class_names = _default_class_names(num_classes)
    g = kmetrics.GlobalAccuracy(num_classes, ignore_class)
    c = kmetrics.ClassAverageAccuracy(num_classes, ignore_class)
    miou = kmetrics.MeanIoU(num_classes, ignore_class)
    bf = kmetrics.BoundaryF1Score(num_classes, ignore_class)  # SegNet's BF (PAMI 2017, Sec. 3.3)
    seen = 0
    start = time.monotonic()
    try:
        for step, batch in enumerate(dataset):
            if steps is not None and step >= steps:
                break
            images, masks = batch[0], batch[1]
            logits = _predict_logits(model, images, input_size)
            for m in (g, c, miou, bf):
                m.update_state(masks, logits)
            if save_overlays is not None and seen < max_overlays:
                _save_comparisons(save_overlays, images, masks, logits, seen, max_overlays, class_names, ignore_class)
            seen += int(images.shape[0])
            if verbose:
                print(f"\revaluate {split}: {seen} images, {time.monotonic() - start:.1f}s", end="", flush=True)
    except Exception as err:  # a file that passed the header checks but does not decode
        if isinstance(data_root_or_dataset, (str, pathlib.Path)):
            _raise_data_error(err, data_root_or_dataset, (split,))
        raise
    if verbose:
        print()
    if seen == 0:
        raise ValueError(f"no images to evaluate in split {split!r}")
    cm = np.asarray(g.total_cm)
    table = kmetrics.scores_from_confusion_matrix(cm, class_names)
    if save_overlays is not None:
        save_charts(save_overlays, {"per_class": table["per_class"], "confusion_matrix": cm.tolist(),
                                    "mean_iou": float(miou.result())}, class_names)
    return {
        "global_accuracy": float(g.result()),
        "class_average_accuracy": float(c.result()),
        "mean_iou": float(miou.result()),
        "boundary_f1": float(bf.result()),
        "per_class": table["per_class"],
        "confusion_matrix": cm.astype(int).tolist(),
        "num_images": seen,
        "input_size": None if input_size is None else list(input_size),
    }


def _save_comparisons(folder, images, masks, logits, first, limit, class_names, ignore_label):
    from kseg import viz

    colours = viz.palette(len(class_names))
    preds = np.asarray(logits).argmax(-1)
    for k in range(min(len(preds), limit - first)):
        panel = viz.comparison(np.clip(np.asarray(images[k]), 0, 255).astype(np.uint8), preds[k], np.asarray(masks[k]),
                               colours, class_names, ignore_label)
        viz.save_rgb_png(pathlib.Path(folder) / f"{first + k:03d}_comparison.png", panel)


def save_charts(folder, result, class_names=None):
    """Write ``iou_per_class.png`` (bar chart) and ``confusion_matrix.png`` of an :func:`evaluate`
    result into `folder`; returns their paths."""
    from kseg import viz

    folder = pathlib.Path(folder)
    rows = result["per_class"]
    names = class_names or [r.get("name", str(i)) for i, r in enumerate(rows)]
    title = f"per-class IoU (mean IoU {result['mean_iou']:.3f})" if "mean_iou" in result else "per-class IoU"
    return {
        "iou_chart": viz.save_rgb_png(folder / "iou_per_class.png",
                                      viz.iou_bar_chart(rows, title, colors=viz.palette(len(rows)))),
        "confusion_matrix": viz.save_rgb_png(folder / "confusion_matrix.png",
                                             viz.confusion_matrix_image(result["confusion_matrix"], names)),
    }


def _default_class_names(num_classes):
    try:
        from kseg.datasets import camvid

        if len(camvid.CLASSES) >= num_classes:
            return list(camvid.CLASSES)[:num_classes]
    except ImportError:
        pass
    return [str(i) for i in range(num_classes)]


def predict(model, image_paths, out_dir, input_size="model", palette=None, alpha=0.5, class_names=None):
    """Segment images; write ``<stem>_labels.png`` (class ids as a palette PNG: ids preserved, colours
    visible) and ``<stem>_overlay.png`` (the colours over the image, a legend of the classes present
    below) per image.

    Args:
        model: a kseg model (or a path to a ``.keras`` file).
        image_paths: image files (PNG / JPEG).
        out_dir: output folder (created).
        input_size: as in :func:`evaluate`; the labels are at each image's own size.
        palette: ``(num_classes, 3)`` colours (default :func:`kseg.viz.palette`: CamVid's).
        alpha: overlay opacity.
        class_names: names for the legend (default: CamVid's when there are 11 classes).

    Returns:
        A list of ``{"image", "labels", "overlay"}`` paths, one per image.
    """
    from kseg import viz

    if isinstance(model, (str, pathlib.Path)):
        model = load_model(model)
    if isinstance(image_paths, (str, pathlib.Path)):
        image_paths = [image_paths]
    if not image_paths:
        raise ValueError("no images given to predict")
    num_classes = _num_classes_of(model)
    colours = viz.palette(num_classes) if palette is None else np.asarray(palette, np.uint8)
    names = list(class_names) if class_names is not None else _default_class_names(num_classes)
    if input_size == "model":
        input_size = model_input_size(model)
    input_size = as_size(input_size, "input_size")
    for path in map(pathlib.Path, image_paths):  # check every input before creating out_dir
        if path.is_dir():
            raise ValueError(f"{path} is a folder: pass image files (e.g. {path}/*.png)")
        if not path.is_file():
            raise ValueError(f"no image file at {str(path)!r}")
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for path in image_paths:
        path = pathlib.Path(path)
        image = viz.read_rgb(path)
        try:
            logits = _predict_logits(model, image[None].astype(np.float32), input_size)
        except Exception as err:  # e.g. a variable-size model on an image smaller than its stride
            text = str(err).strip().splitlines()
            raise ValueError(
                f"{path}: {model.name} cannot segment this {image.shape[1]}x{image.shape[0]} image "
                f"({type(err).__name__}: {text[0][:300] if text else ''}); pass --input-size H W"
            ) from err
        labels = np.asarray(logits)[0].argmax(-1).astype(np.uint8)
        shown = viz.with_legend(viz.overlay(image, labels, colours, alpha), names, colours, labels)
        results.append(
            {
                "image": str(path),
                "labels": viz.save_label_png(out / f"{path.stem}_labels.png", labels, colours),
                "overlay": viz.save_rgb_png(out / f"{path.stem}_overlay.png", shown),
            }
        )
    return results


def clear_backup(out_dir):
    """Remove ``out_dir/backup`` (an interrupted run's state), e.g. to restart from scratch."""
    shutil.rmtree(pathlib.Path(out_dir) / "backup", ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# the demo

#: The demo's settings, chosen for a few minutes on 2 CPU cores: SegNet-Basic's layers (Sec. 4 of
#: the paper) with 32 instead of 64 channels (4x fewer multiply-adds; 64 trains at ~1.6 images/s
#: here against ~6), on the CamVid training images downscaled by 2 (360x480 -> 180x240) with flips,
#: batch 8, Adam 2e-3, 300 steps, square roots of the median-frequency class weights (measured:
#: mIoU 0.32 against 0.27 with the full weights, which over-predict the rare classes this early);
#: BatchNormalization statistics recomputed over 16
#: training batches afterwards (as the authors' compute_bn_statistics.py); evaluated on the test
#: split by predicting at 180x240 and scoring the upsampled logits against the 360x480 labels.
DEMO = {
    "model": "segnet_basic",
    "model_kwargs": {"width_multiplier": 0.5},  # 32 channels
    "crop": (180, 240),
    "scale_range": (0.5, 0.5),
    "batch_size": 8,
    "steps_per_epoch": 30,
    "epochs": 10,
    "learning_rate": 2e-3,
    "cosine_decay": False,
    "class_weighting": "median_frequency_sqrt",
    "optimizer": "adam",
    "budget_seconds": 360,
    "bn_statistics_steps": 16,
    "num_overlays": 4,
}
SYNTHETIC_LABEL = "[SYNTHETIC scenes, not CamVid] "


class _EpochLines(keras.callbacks.Callback):
    def __init__(self, prefix, print_fn):
        super().__init__()
        self.prefix, self.print_fn = prefix, print_fn

    def on_epoch_end(self, epoch, logs=None):
        values = " - ".join(f"{k}: {v:.4f}" for k, v in sorted((logs or {}).items()))
        self.print_fn(f"{self.prefix}epoch {epoch + 1}: {values}")


def find_demo_data(data=None, download=False):
    """The CamVid folder (``data``, ``$KSEG_DATA``, ``~/.keras/datasets/camvid``; optionally
    downloaded) and a note; ``(None, reason)`` when there is none."""
    from kseg.datasets import camvid

    root = camvid.find(data)
    if root is not None:
        return root, f"CamVid found at {root}"
    if download:
        try:
            return camvid.load(download=True), "CamVid downloaded and verified"
        except Exception as err:  # no network, bad checksum: fall back, saying why
            return None, f"CamVid could not be downloaded ({err})"
    return None, "no CamVid found (looked at --data, $KSEG_DATA and ~/.keras/datasets/camvid)"


def demo(data=None, out_dir="runs/demo", budget_seconds=None, download=False, synthetic=False, verbose=1,
         print_fn=print, pretrained=False, **overrides):
    """Train SegNet-Basic on CamVid for a fixed budget, evaluate on the test split, write overlays.

    With `pretrained`, nothing is trained: SegNet-Basic starts from kseg's converged CamVid weights
    (``weights="camvid"``, shipped in the package) and is evaluated at the size it was trained at
    (360x480, the labels' own size); this needs CamVid's test split.

    The budget is ``DEMO["epochs"] * DEMO["steps_per_epoch"]`` steps, cut short after
    `budget_seconds` of training on a slow machine.

    When no CamVid can be found (or `synthetic` is set) it runs on
    :func:`kseg.data.write_synthetic_dataset` scenes instead, and every line it prints says so.

    Args:
        data: CamVid folder (else ``$KSEG_DATA``, else ``~/.keras/datasets/camvid``).
        out_dir: where the model (``model.keras``), logs, overlays and ``demo_results.json`` go.
        budget_seconds: the most training wall time (default ``DEMO["budget_seconds"]``).
        download: try ``kseg.datasets.camvid.load(download=True)`` when nothing is found.
        synthetic: use the synthetic scenes even if CamVid is there.
        verbose: ``fit`` verbosity.
        pretrained: skip training; evaluate the shipped ``weights="camvid"`` SegNet-Basic.
        print_fn: where the report lines go.
        overrides: replace :data:`DEMO` settings (e.g. ``steps_per_epoch``, ``crop``,
            ``model_kwargs``, ``eval_steps`` to score only a few test batches).

    Returns:
        The :func:`evaluate` dict, plus ``"data"``, ``"synthetic"``, ``"train_seconds"``,
        ``"overlays"``, ``"model_path"``.
    """
    from kseg import data as kdata

    cfg = dict(DEMO)
    eval_steps = overrides.pop("eval_steps", None)
    unknown = set(overrides) - set(cfg)
    if unknown:
        raise ValueError(f"unknown demo settings {sorted(unknown)}; known: {sorted(cfg)}")
    cfg.update(overrides)
    if budget_seconds is not None:
        cfg["budget_seconds"] = float(budget_seconds)
    out = pathlib.Path(out_dir)
    if synthetic:
        root, note = None, "synthetic data requested"
    else:
        root, note = find_demo_data(data, download)
    if pretrained:
        if root is None:
            raise ValueError(f"--pretrained shows kseg's CamVid model on CamVid's test split, which was not found "
                             f"({note}): pass --data CAMVID_FOLDER or --download")
        return _pretrained_demo(root, note, out, cfg, eval_steps, verbose, print_fn)
    prefix = ""
    if root is None:
        prefix = SYNTHETIC_LABEL
        print_fn(f"{prefix}{note}: running on the built-in synthetic street scenes instead.")
        print_fn(f"{prefix}Numbers below are for synthetic pictures and say nothing about CamVid.")
        root = kdata.write_synthetic_dataset(
            out / "synthetic_data", {"train": 48, "test": 12}, height=360, width=480, ignore_class=11
        )
    else:
        print_fn(note)
    print_fn(
        f"{prefix}training {cfg['model']} {cfg['model_kwargs'] or ''} on {root} at {cfg['crop'][0]}x{cfg['crop'][1]} "
        f"(scale {cfg['scale_range']}), batch {cfg['batch_size']}, {cfg['optimizer']} lr {cfg['learning_rate']}, "
        f"{'cosine decay, ' if cfg['cosine_decay'] else ''}class weights {cfg['class_weighting']}, {cfg['epochs']} x {cfg['steps_per_epoch']} steps "
        f"(at most {cfg['budget_seconds']:.0f} s)"
    )
    clear_backup(out)
    start = time.monotonic()
    model, history = train(
        cfg["model"],
        root,
        out_dir=out,
        epochs=cfg["epochs"],
        steps_per_epoch=cfg["steps_per_epoch"],
        batch_size=cfg["batch_size"],
        crop=cfg["crop"],
        scale_range=cfg["scale_range"],
        learning_rate=keras.optimizers.schedules.CosineDecay(
            cfg["learning_rate"], cfg["epochs"] * cfg["steps_per_epoch"]
        )
        if cfg["cosine_decay"]
        else cfg["learning_rate"],
        class_weighting=cfg["class_weighting"],
        optimizer=cfg["optimizer"],
        val_split=None,
        budget_seconds=cfg["budget_seconds"],
        bn_statistics_steps=cfg["bn_statistics_steps"],
        model_kwargs=cfg["model_kwargs"],
        # Keras' progress bars cannot carry the synthetic label, so then epochs are logged here.
        verbose=0 if prefix else verbose,
        callbacks=[_EpochLines(prefix, print_fn)] if prefix and verbose else [],
        overwrite=True,  # the demo is re-run in place
    )
    train_seconds = time.monotonic() - start
    steps = int(model.optimizer.iterations.numpy())
    planned = int(cfg["epochs"]) * int(cfg["steps_per_epoch"])
    print_fn(f"{prefix}trained {steps} of {planned} planned steps ({steps * cfg['batch_size']} crops) in "
             f"{train_seconds:.0f} s (training, BatchNorm statistics and checkpoints)")
    if steps < planned:
        print_fn(f"{prefix}WARNING: the {cfg['budget_seconds']:.0f} s time budget stopped training at "
                 f"{steps}/{planned} steps ({100 * steps / planned:.0f}%): the scores below are for a shorter run "
                 "than the demo's; pass a larger --budget-seconds (this machine is slower or busier)")
    result = _demo_report(model, root, out, cfg, prefix, eval_steps, verbose, print_fn)
    result.update(
        data=str(root),
        synthetic=bool(prefix),
        train_seconds=train_seconds,
        train_steps=steps,
        planned_steps=planned,
        stopped_by_budget=steps < planned,
        settings={k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
    )
    with kio.atomic_write(out / "demo_results.json") as f:
        json.dump(result, f, indent=2)
    return result


def _pretrained_demo(root, note, out, cfg, eval_steps, verbose, print_fn):
    """``demo(pretrained=True)``: the shipped CamVid SegNet-Basic on the test split, no training."""
    from kseg.models import registry

    print_fn(note)
    card = registry.get("segnet_basic")
    preset = next(p for p in card.presets if p.name == "camvid")
    model = card.build(weights="camvid", input_shape=(360, 480, 3))
    print_fn(f"SegNet-Basic with kseg's CamVid weights (weights='camvid'; {preset.notes.split('. ')[0]}); "
             "no training")
    out.mkdir(parents=True, exist_ok=True)
    with kio.atomic_path(out / "model.keras") as tmp:
        model.save(tmp)
    result = _demo_report(model, root, out, cfg, "", eval_steps, verbose, print_fn)
    result.update(data=str(root), synthetic=False, pretrained=True, train_seconds=0.0, train_steps=0)
    with kio.atomic_write(out / "demo_results.json") as f:
        json.dump(result, f, indent=2)
    return result


def _demo_report(model, root, out, cfg, prefix, eval_steps, verbose, print_fn):
    """The demo's evaluation, pictures and overlays (after training, or of the pretrained model)."""
    from kseg import data as kdata
    from kseg import metrics as km

    size = model_input_size(model)
    print_fn(
        f"{prefix}evaluating on the test split: predicting at {size[0]}x{size[1]}, "
        "scoring against the full-resolution labels (void ignored)"
    )
    result = evaluate(
        model, root, "test", batch_size=cfg["batch_size"], steps=eval_steps, verbose=0 if prefix else verbose,
        save_overlays=out / "comparisons", max_overlays=cfg["num_overlays"],
    )
    charts = save_charts(out, result)
    scores = {k: result[k] for k in ("global_accuracy", "class_average_accuracy", "mean_iou", "boundary_f1",
                                     "per_class")}
    print_fn(f"{prefix}test split, {result['num_images']} images:")
    print_fn(km.format_scores(scores, prefix=prefix))
    test_images = [p for p, _ in kdata.find_pairs(root, "test")][: cfg["num_overlays"]]
    overlays = predict(model, test_images, out / "overlays")
    model_path = out / "model.keras"
    print_fn(f"{prefix}wrote {len(overlays)} overlays to {out / 'overlays'} and the model to {model_path}")
    print_fn(f"{prefix}pictures: {out / 'comparisons'}/*_comparison.png (image | prediction | ground truth | "
             f"errors), {charts['iou_chart']}, {charts['confusion_matrix']}")
    result.update(
        charts=charts,
        comparisons=sorted(str(p) for p in (out / "comparisons").glob("*_comparison.png")),
        overlays=overlays,
        model_path=str(model_path),
    )
    return result
