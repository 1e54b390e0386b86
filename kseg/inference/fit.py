"""``model.fit`` for the proposal and detection models (DeepMask, SharpMask, MultiPathNet, Fast R-CNN, ION).

The instance models are plain functional Keras models with dict outputs; their losses need the
whole target dict (DeepMask's joint loss, MultiPathNet's integral loss), which ``compile(loss=)``
cannot express. :class:`InstanceTrainer` wraps such a model in a ``keras.Model`` whose
``compute_loss`` is the task's loss, so the usual ``fit`` runs it: callbacks, TensorBoard, progress
bars, ``tf.distribute`` strategies and mixed precision work as for the
semantic models. The samplers (:func:`kseg.data.instances.deepmask_dataset`,
:func:`kseg.inference.detection.detection_dataset`) are ``tf.data`` pipelines already.

    >>> trainer = InstanceTrainer(kseg.DeepMaskResNet50(width_multiplier=0.25))     # doctest: +SKIP
    >>> trainer.compile(optimizer=keras.optimizers.SGD(1e-3, momentum=0.9))          # doctest: +SKIP
    >>> trainer.fit(kseg.data.instances.deepmask_dataset(coco, cfg), steps_per_epoch=100, epochs=3)

:func:`fit_instance_model` is what ``kseg train --model deepmask_resnet50 ...`` runs: the
trainer plus the callbacks of the semantic runs: :class:`kseg.runs.RunKeeper` (crash-safe
``last.keras``, ``log.csv`` and ``backup/``, an exact ``--resume``), TensorBoard and the time budget.
Checkpoints hold the wrapped model (``model.keras``, ``last.keras``), never the wrapper, so they load
with ``keras.models.load_model(..., safe_mode=True)`` like any kseg model.
"""

import json
import pathlib
import shutil
import time

import keras

__all__ = ["InstanceTrainer", "fit_instance_model", "instance_task_of"]


def instance_task_of(model):
    """``"proposals"`` / ``"sharpmask"`` / ``"detection"`` for a DeepMask / SharpMask / detector model."""
    names = {layer.name for layer in model.layers}
    if "rois" in names or "bbox_pred" in names:
        return "detection"
    if "score" in names and "masks" in names:
        return "sharpmask" if "refine0" in names else "proposals"
    raise ValueError(f"model {model.name!r} is neither a DeepMask/SharpMask nor a detector "
                     "(no 'score'/'masks' or 'bbox_pred' layers)")


def _float32(tree):
    return keras.tree.map_structure(lambda t: keras.ops.cast(t, "float32"), tree)


class InstanceTrainer(keras.Model):
    """Trains a DeepMask / SharpMask / detector model with ``fit``: ``compute_loss`` is its task's loss.

    Args:
        net: the model to train (its weights are trained in place; save ``trainer.net``).
        score_weight: DeepMask's lambda (1/32, the paper's).
        box_weight, seg_weight: detectors: weights of the box regression and ION's segmentation loss.

    The logs hold ``loss`` and the parts: ``mask_loss`` / ``score_loss`` (proposals) or
    ``cls_loss`` / ``box_loss`` (detection). Not meant to be saved itself (checkpoint ``net``).
    """

    def __init__(self, net, score_weight=1.0 / 32, box_weight=1.0, seg_weight=1.0, **kwargs):
        super().__init__(name=kwargs.pop("name", f"{net.name}_trainer"), **kwargs)
        self.net = net
        self.task = instance_task_of(net)
        self.score_weight = float(score_weight)
        self.box_weight, self.seg_weight = float(box_weight), float(seg_weight)
        if self.task == "detection":
            from kseg.inference.detection import heads_of

            self.thresholds = heads_of(net)
            parts = ("cls_loss", "box_loss")
        else:
            parts = ("mask_loss", "score_loss")
        self.part_trackers = [keras.metrics.Mean(name=p) for p in parts]
        self.built = True  # `net` is built (BackupAndRestore needs a built model before fit)

    def call(self, inputs, training=False):
        return self.net(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        from kseg.inference.detection import detection_loss
        from kseg.models.deepmask import deepmask_loss

        y_pred = _float32(y_pred)  # mixed precision: losses in float32
        if self.task == "detection":
            total, a, b = detection_loss(y, y_pred, self.thresholds, self.box_weight, self.seg_weight)
        else:
            total, a, b = deepmask_loss(y, y_pred, 0.0 if self.task == "sharpmask" else self.score_weight)
        self.part_trackers[0].update_state(a)
        self.part_trackers[1].update_state(b)
        if self.losses:  # regularisers of the wrapped model
            total = total + keras.ops.sum(keras.ops.stack([keras.ops.cast(v, "float32") for v in self.losses]))
        return total

    def get_config(self):
        raise NotImplementedError("InstanceTrainer is not saved itself: save trainer.net (a plain kseg model)")


class _StepsDone(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.start = None
        self.seconds = 0.0

    def on_train_begin(self, logs=None):
        self.start = time.monotonic()

    def on_train_end(self, logs=None):  # a resumed run calls fit twice: the time adds up
        self.seconds += time.monotonic() - self.start


def _optimizer(name, learning_rate, weight_decay, clipnorm):
    from kseg.training import _make_optimizer

    name = name or "sgd"
    if name == "sgd":  # the papers' solver: momentum 0.9, weight decay 5e-4
        return keras.optimizers.SGD(learning_rate, momentum=0.9,
                                    weight_decay=5e-4 if weight_decay is None else weight_decay, clipnorm=clipnorm)
    opt = _make_optimizer(name, learning_rate, weight_decay=weight_decay)
    if clipnorm is not None:
        opt.clipnorm = clipnorm
    return opt


def fit_instance_model(build, dataset, out_dir, epochs=1, steps_per_epoch=100, learning_rate=1e-3, optimizer="sgd",
                       weight_decay=None, clipnorm=None, resume=False, backup_every=None, budget_seconds=None,
                       verbose=1, callbacks=(), strategy="default", precision="float32", config=None,
                       overwrite=False):
    """Train a proposal / detection model with ``fit`` and kseg's callbacks; save it in `out_dir`.

    Args:
        build: the model, or a function of no arguments building it (needed for `precision` and
            for a `strategy` other than the default: it is called in their scope).
        dataset: ``tf.data`` of ``(inputs, targets)`` (endless samplers are fine).
        out_dir: gets ``model.keras`` (the end), ``last.keras`` (every epoch), ``log.csv``,
            ``logs/`` (TensorBoard), ``train_config.json``, ``backup/`` while a run is unfinished;
            every file is written crash-safely (:mod:`kseg.io`).
        epochs, steps_per_epoch: the run is ``epochs * steps_per_epoch`` optimizer steps.
        optimizer: ``"sgd"`` (momentum 0.9, weight decay 5e-4: DeepMask's and Fast R-CNN's solver),
            ``"adam"``, ``"adamw"`` or a Keras optimizer; `clipnorm` optional.
        resume: continue an interrupted run from ``out_dir/backup`` at the exact step (weights,
            optimizer state, log rows; the sampler is skipped to the same batches, since it is seeded);
            a no-op returning the saved model when the run is complete.
        overwrite: discard a run already in `out_dir` and start again (without it, and without
            `resume`, a folder holding a run is refused: nothing is lost silently).
        backup_every: also back up every N steps (default: every epoch).
        budget_seconds: stop once this much training time has passed (checked every step).
        strategy: ``"default"``, ``"mirrored"`` or a ``tf.distribute.Strategy``.
        precision: Keras dtype policy the model is built under (needs `build` to be a function).
        config: a dict written into ``train_config.json`` beside the run's own numbers.

    Returns ``(model, history)``: the trained model and Keras' ``History``.
    """
    from kseg import distribute, runs
    from kseg import io as kio
    from kseg.precision import precision_scope
    from kseg.training import TimeBudget, _finished_run, _fit_resumable

    out = pathlib.Path(out_dir)
    if int(epochs) < 1 or int(steps_per_epoch) < 1:
        raise ValueError(f"epochs and steps_per_epoch must be >= 1, got {epochs} and {steps_per_epoch}")
    if isinstance(strategy, str):
        if strategy == "multiworker":
            raise ValueError("strategy='multiworker' is for the semantic models; the instance models train "
                             "with 'default' or 'mirrored'")
        strategy = distribute.get_strategy(strategy)
    mode = runs.check_out_dir(out, resume=resume, overwrite=overwrite)
    if mode == "finished":
        return _finished_run(out)
    state = runs.load_state(out / "backup") if mode == "resume" else None
    if state is not None and int(state["steps_per_epoch"]) != int(steps_per_epoch):
        raise ValueError(f"{out / 'backup' / runs.STATE_FILE}: the run has {state['steps_per_epoch']} steps per "
                         f"epoch, not {steps_per_epoch}: resume it with the same schedule")
    if not callable(build) or isinstance(build, keras.Model):
        if precision != "float32":
            raise ValueError(f"precision={precision!r} needs the model by name (or a build function)")
        model, build = build, None
    with strategy.scope():
        if build is not None:
            with precision_scope(precision):
                model = build()
        trainer = InstanceTrainer(model)
        trainer.compile(optimizer=_optimizer(optimizer, learning_rate, weight_decay, clipnorm), jit_compile=False)
    out.mkdir(parents=True, exist_ok=True)
    if state is not None and state["rows"]:
        runs.write_log(out / "log.csv", state["rows"])  # drop rows of epochs not committed
    keeper = runs.RunKeeper(out, None, steps_per_epoch, backup_every=backup_every, state=state,
                            checkpoint_model=model)
    timer = _StepsDone()
    own = [timer, keeper, keras.callbacks.TensorBoard(str(out / "logs"), update_freq="epoch")]
    budget = None
    if budget_seconds is not None:
        budget = TimeBudget(budget_seconds)
        own.append(budget)
    try:
        history = _fit_resumable(trainer, lambda: dataset, keeper, int(epochs), int(steps_per_epoch),
                                 own + list(callbacks), data_root=None, splits=(), verbose=verbose)
    except BaseException:
        if state is None and not (out / "backup").exists():  # nothing to resume: leave no empty logs
            shutil.rmtree(out / "logs", ignore_errors=True)
        raise
    with kio.atomic_path(out / "model.keras") as tmp:
        model.save(tmp)
    planned = int(epochs) * int(steps_per_epoch)
    done = int(trainer.optimizer.iterations.numpy())
    record = dict(config or {})
    record.update(model=model.name, task=trainer.task, epochs=int(epochs), steps_per_epoch=int(steps_per_epoch),
                  planned_steps=planned, steps_done=done, train_seconds=round(timer.seconds, 2),
                  stopped_by_budget=bool(budget is not None and budget.stopped_at is not None),
                  last_logs={k: float(v[-1]) for k, v in history.history.items() if v})
    kio.atomic_write_text(out / "train_config.json", json.dumps(record, indent=2, default=str))
    shutil.rmtree(out / "backup", ignore_errors=True)  # the run is complete: model.keras is safe
    return model, history
