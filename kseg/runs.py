"""Crash-safe training runs: checkpoints, the epoch log and an exact ``--resume``.

:class:`RunKeeper` is the one Keras callback that writes a run's files, each through
:mod:`kseg.io` (temporary name, fsync, rename), in an order that keeps them consistent at every
instant::

    out/best.keras       the best epoch so far by the monitored metric
    out/last.keras       the last finished epoch
    out/backup/          the resume point: ckpt-<step>.weights.h5 (weights + optimizer state),
                         ckpt-<step>.metrics.npz (running metric states, mid-epoch only),
                         ckpt-<step>.rng.npz (the seed generators' states: dropout masks) and
                         state.json (the commit: epoch, step, best value, log rows, data position)
    out/log.csv          one row per finished epoch, rewritten whole from state.json's rows

A backup is taken at the end of every epoch and, with ``backup_every=N``, every N steps as well.
``state.json`` is written last and names its weights file, so a kill before it leaves the previous
resume point intact; ``log.csv`` is rewritten from the committed rows when a run resumes, so it never
repeats or misses an epoch. :func:`kseg.training.train` resumes from the committed step with the
same optimizer state, best value and running metrics, and skips the batches already used, so the
data order is the uninterrupted run's.

Run folders: :func:`check_out_dir` refuses a folder holding a finished run unless ``resume`` (a
no-op then) or ``overwrite`` is given, and an interrupted one unless ``resume`` or ``overwrite``.
"""

import csv
import io
import json
import math
import pathlib
import shutil

import keras
import numpy as np

from kseg import io as kio

__all__ = ["RunKeeper", "check_out_dir", "load_state", "write_log", "read_log", "RUN_FILES", "STATE_FILE"]

STATE_FILE = "state.json"
#: The files and folders of a run in its output folder (``--overwrite`` removes them).
RUN_FILES = ("backup", "best.keras", "last.keras", "model.keras", "log.csv", "logs", "train_config.json",
             "history.json")
_FINISHED_MARKERS = ("model.keras", "best.keras", "last.keras", "log.csv", "train_config.json")


class RunStateError(ValueError):
    """An unreadable or inconsistent resume point; the message names the file."""


def load_state(backup_dir):
    """The committed resume point in `backup_dir` as a dict, or ``None`` when there is none.

    Raises:
        RunStateError: naming the file when ``state.json`` or the weights it names are unusable.
    """
    path = pathlib.Path(backup_dir) / STATE_FILE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
        weights = pathlib.Path(backup_dir) / state["weights"]
        int(state["epoch"]), int(state["step_in_epoch"]), int(state["global_step"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RunStateError(f"{path}: unreadable resume point ({err}); pass --overwrite to start again") from None
    if not weights.is_file():
        raise RunStateError(f"{path} names {weights.name}, which is missing; pass --overwrite to start again")
    return state


def check_out_dir(out, resume=False, overwrite=False):
    """Decide what a run may do with `out`: ``"fresh"``, ``"resume"`` or ``"finished"``.

    * an interrupted run (``out/backup/``): ``"resume"`` with `resume`, removed with `overwrite`, else
      an error naming both options;
    * a finished run (``model.keras``, ``best.keras``, ``log.csv``, ...): ``"finished"`` with `resume`
      (nothing to do), removed with `overwrite`, else an error;
    * nothing of a run: ``"fresh"``.
    """
    out = pathlib.Path(out)
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other (--resume continues a run, --overwrite discards it)")
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(20, "output path exists and is not a folder", str(out))
    backup = out / "backup"
    if overwrite:
        for name in RUN_FILES:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        return "fresh"
    if backup.is_dir():
        if resume:
            return "resume" if (backup / STATE_FILE).is_file() else "fresh"
        raise ValueError(
            f"{backup} holds an interrupted run: pass --resume (resume=True) to continue it, "
            "or --overwrite (overwrite=True) to discard it and start again"
        )
    found = [n for n in _FINISHED_MARKERS if (out / n).exists()]
    if found:
        if resume:
            return "finished" if (out / "model.keras").is_file() else "fresh"
        raise ValueError(
            f"{out} holds a finished run ({', '.join(found)}): pass --resume (resume=True; nothing to do "
            "when it is complete), --overwrite (overwrite=True) to replace it, or choose another --out"
        )
    return "fresh"


def _format(value):
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_log(path, rows):
    """Write the epoch rows as CSV (``epoch`` first, then the sorted metric names), atomically."""
    keys = sorted({k for row in rows for k in row if k != "epoch"})
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["epoch", *keys])
    for row in rows:
        writer.writerow([row["epoch"], *(_format(row.get(k, "")) for k in keys)])
    kio.atomic_write_text(path, buf.getvalue())


def read_log(path):
    """The rows of a ``log.csv`` as dicts of floats (``epoch`` an int)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: int(v) if k == "epoch" else float(v) for k, v in row.items() if v != ""} for row in rows]


def _to_float(value):
    try:
        return float(np.asarray(value))
    except (TypeError, ValueError):
        return None


class RunKeeper(keras.callbacks.Callback):
    """Write best/last checkpoints, backups and the epoch log crash-safely (see the module docstring).

    Args:
        out_dir: the run's folder.
        monitor: the metric that picks ``best.keras`` (larger is better), e.g. ``"val_mean_iou"``.
        steps_per_epoch: steps of a full epoch.
        backup_every: also back up every this many steps (``None``: at epoch ends only).
        state: a committed state from :func:`load_state` to continue from, or ``None``.
        save_checkpoints: write ``best.keras`` / ``last.keras`` (the multi-worker chief only, etc.).
        checkpoint_model: the model saved as ``best.keras`` / ``last.keras`` when it is not the one
            being fit (the instance models train through a wrapper that is not saved itself); the
            backups always hold the fitted model's weights and optimizer state.
    """

    def __init__(self, out_dir, monitor, steps_per_epoch, backup_every=None, state=None, save_checkpoints=True,
                 checkpoint_model=None):
        super().__init__()
        self.out = pathlib.Path(out_dir)
        self.backup = self.out / "backup"
        self.monitor = monitor
        self.steps_per_epoch = int(steps_per_epoch)
        if backup_every is not None and int(backup_every) < 1:
            raise ValueError(f"backup_every must be >= 1 steps, got {backup_every}")
        self.backup_every = None if backup_every is None else int(backup_every)
        self.save_checkpoints = save_checkpoints
        self.checkpoint_model = checkpoint_model
        state = state or {}
        self.rows = list(state.get("rows", []))
        self.best = state.get("best")
        self.best_epoch = state.get("best_epoch")
        self.epoch = int(state.get("epoch", 0))
        self.step_in_epoch = int(state.get("step_in_epoch", 0))
        self.global_step = int(state.get("global_step", 0))
        self._restore = state if state else None
        self._batch_offset = self.step_in_epoch
        self._pending_metrics = None

    # -- restoring ------------------------------------------------------------------------------

    def restore_now(self):
        """Load the resume point's weights and optimizer state outside ``fit``."""
        if self._restore is None:
            return
        if self.model is None:
            raise RuntimeError("set_model first")
        self.on_train_begin()
        self._restore = None

    def on_train_begin(self, logs=None):
        if self._restore is None:
            return
        path = self.backup / self._restore["weights"]
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and not optimizer.built:  # else its saved state is skipped
            optimizer.build(self.model.trainable_variables)
        try:
            self.model.load_weights(str(path))
        except Exception as err:  # h5py OSError, KeyError, shape mismatch
            raise RunStateError(
                f"{path}: cannot restore the backup ({type(err).__name__}: {err}); pass --overwrite to start again"
            ) from err
        if self._restore.get("rng"):
            rng_path = self.backup / self._restore["rng"]
            values, variables = np.load(rng_path), self._seed_states()
            if len(values.files) != len(variables):
                raise RunStateError(f"{rng_path}: {len(values.files)} random states for {len(variables)} seed generators")
            for i, v in enumerate(variables):
                v.assign(values[f"v{i}"].astype(v.dtype))

    def on_epoch_begin(self, epoch, logs=None):
        state, self._restore = self._restore, None
        if state is not None and state.get("metrics"):
            self._pending_metrics = self.backup / state["metrics"]

    def _add_saved_metrics(self):
        """Add the half-done epoch's running metric states to those of the first resumed step.

        The compile metrics are only built by the first training step, so the saved states cannot
        be assigned before it; they are sums (Keras ``Mean``: total and count; kseg's metrics:
        confusion matrices), so adding them afterwards gives the uninterrupted epoch's values.
        """
        path, self._pending_metrics = self._pending_metrics, None
        values = np.load(path)
        variables = self.model.metrics_variables
        if len(values.files) != len(variables):
            raise RunStateError(f"{path}: {len(values.files)} metric states for {len(variables)} metric variables")
        for i, v in enumerate(variables):
            v.assign(v + values[f"v{i}"].astype(v.dtype))

    # -- saving ---------------------------------------------------------------------------------

    def on_train_batch_end(self, batch, logs=None):
        if self._pending_metrics is not None:
            self._add_saved_metrics()
        self.step_in_epoch = self._batch_offset + batch + 1
        self.global_step += 1
        if (
            self.backup_every
            and self.global_step % self.backup_every == 0
            and self.step_in_epoch < self.steps_per_epoch
        ):
            self._commit(mid_epoch=True)

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        row = {"epoch": int(epoch)}
        row.update({k: v for k, v in ((k, _to_float(v)) for k, v in logs.items()) if v is not None})
        self.rows = [r for r in self.rows if r["epoch"] < epoch] + [row]
        value = row.get(self.monitor)
        improved = value is not None and math.isfinite(value) and (self.best is None or value > self.best)
        if self.save_checkpoints:
            saved = self.checkpoint_model if self.checkpoint_model is not None else self.model
            if improved:
                with kio.atomic_path(self.out / "best.keras") as tmp:
                    saved.save(tmp)
            with kio.atomic_path(self.out / "last.keras") as tmp:
                saved.save(tmp)
        if improved:
            self.best, self.best_epoch = value, int(epoch)
        self.epoch, self.step_in_epoch, self._batch_offset = int(epoch) + 1, 0, 0
        self._commit(mid_epoch=False)
        write_log(self.out / "log.csv", self.rows)

    def _seed_states(self):
        """The random states of the model's seed generators (dropout...): ``.weights.h5`` leaves them
        out, and a resumed run needs them to draw the uninterrupted run's dropout masks."""
        return [v for v in self.model.non_trainable_variables if v.path.endswith("seed_generator_state")]

    def _commit(self, mid_epoch):
        self.backup.mkdir(parents=True, exist_ok=True)
        stem = f"ckpt-{self.global_step:09d}"
        weights = f"{stem}.weights.h5"
        with kio.atomic_path(self.backup / weights) as tmp:
            self.model.save_weights(tmp)
        metrics = None
        if mid_epoch:
            metrics = f"{stem}.metrics.npz"
            with kio.atomic_write(self.backup / metrics, "wb") as f:
                np.savez(f, **{f"v{i}": np.asarray(v) for i, v in enumerate(self.model.metrics_variables)})
        rng = None
        if self._seed_states():
            rng = f"{stem}.rng.npz"
            with kio.atomic_write(self.backup / rng, "wb") as f:
                np.savez(f, **{f"v{i}": np.asarray(v) for i, v in enumerate(self._seed_states())})
        state = {
            "version": 1,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "steps_per_epoch": self.steps_per_epoch,
            "weights": weights,
            "metrics": metrics,
            "rng": rng,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "monitor": self.monitor,
            "rows": self.rows,
        }
        kio.atomic_write_text(self.backup / STATE_FILE, json.dumps(state, indent=1))
        keep = {weights, metrics, rng, STATE_FILE}
        for p in self.backup.iterdir():
            if p.name not in keep and p.name.startswith("ckpt-"):
                p.unlink(missing_ok=True)
