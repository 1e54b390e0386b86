"""Training on several devices or machines with ``tf.distribute``, resumable to the exact step.

``MirroredStrategy`` (several devices of one machine) works with ``model.fit``. Keras 3's
``model.fit`` does not run under ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585:
per-replica values reach the trainer unconverted), so multi-worker training uses the custom loop
of this module, the pattern of TensorFlow's own multi-worker tutorial:

* workers are configured by ``TF_CONFIG``, the standard way (see :func:`tf_config`);
* every step consumes one *global* batch, chosen by the step number alone (a seeded permutation per
  epoch), and each worker loads only its slice of it. The global batch size is what the user asked
  for, whatever the number of workers, and a run of N workers computes the same updates as one
  process with the same global batch (up to float summation order);
* the chief alone writes checkpoints, the step log and TensorBoard summaries; other workers write
  their (collective) checkpoint copies to a scratch folder that is deleted;
* a checkpoint is written every ``checkpoint_every`` steps; a restarted job restores the latest one
  and continues with the next step's batch, so an interrupted job finishes with no step lost or
  repeated. ``steps.log`` records each committed step once.

TensorFlow only (``tf.distribute``).

Example (two machines; the same command on each, with its own ``index``)::

    export TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]},
                       "task": {"type": "worker", "index": 0}}'
    kseg train --model segnet_basic --data /data/camvid --strategy multiworker --batch-size 8
"""

import json
import os
import shutil

import numpy as np
from kseg.utils import renamed_argument

__all__ = [
    "STRATEGIES",
    "get_strategy",
    "task_info",
    "tf_config",
    "global_batch_indices",
    "segmentation_loss",
    "train_distributed",
    "pairs_loader",
    "train_folder_distributed",
    "free_ports",
]

STRATEGIES = ("default", "mirrored", "multiworker")


def free_ports(n, host="127.0.0.1"):
    """`n` TCP ports free on `host` right now (for loopback clusters in tests and benchmarks)."""
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def tf_config(workers, index, task_type="worker"):
    """The ``TF_CONFIG`` JSON for worker `index` of a cluster of ``host:port`` `workers`."""
    return json.dumps({"cluster": {task_type: list(workers)}, "task": {"type": task_type, "index": int(index)}})


def get_strategy(name="default"):
    """A ``tf.distribute.Strategy`` by name: ``default``, ``mirrored`` or ``multiworker``."""
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if "TF_CONFIG" not in os.environ:
        raise ValueError(
            "strategy 'multiworker' needs the TF_CONFIG environment variable describing the cluster, "
            'e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'
        )
    return tf.distribute.MultiWorkerMirroredStrategy()


def task_info(strategy=None):
    """``(is_chief, worker_index, num_workers)`` of this process.

    The chief is the task of type ``chief``, or worker 0 where the cluster has none (TF's rule).
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True, 0, 1
    spec = resolver.cluster_spec().as_dict()
    task_type, task_id = resolver.task_type, resolver.task_id or 0
    workers = sorted(spec.get("chief", [])) + list(spec.get("worker", []))
    index = task_id + (len(spec.get("chief", [])) if task_type == "worker" else 0)
    is_chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and "chief" not in spec)
    return is_chief, index, len(workers)


def global_batch_indices(num_examples, global_batch_size, num_steps, seed=0, drop_remainder=True):
    """Example indices of every global batch: row ``s`` is the batch of step ``s``.

    Each epoch is a fresh seeded permutation, so the batch of a step depends on the step alone: a job
    resumed at step ``s`` sees exactly the batches an uninterrupted job would have.
    """
    if global_batch_size < 1 or num_examples < global_batch_size:
        raise ValueError(
            f"global_batch_size must be between 1 and the number of examples ({num_examples}), "
            f"got {global_batch_size}"
        )
    per_epoch = num_examples // global_batch_size if drop_remainder else -(-num_examples // global_batch_size)
    rows = []
    epoch = 0
    while len(rows) < num_steps:
        perm = np.random.RandomState([seed, epoch]).permutation(num_examples)
        perm = np.concatenate([perm, perm[: per_epoch * global_batch_size - num_examples]]) if not drop_remainder else perm
        for s in range(per_epoch):
            rows.append(perm[s * global_batch_size:(s + 1) * global_batch_size])
        epoch += 1
    return np.stack(rows[:num_steps]).astype("int64")


@renamed_argument("ignore_label", "ignore_class")
def segmentation_loss(labels, logits, num_classes, ignore_class=None, class_weights=None):
    """Per-example loss: class-weighted softmax cross-entropy, mean over the non-ignored pixels.

    Returns a ``(batch,)`` tensor; average it over the *global* batch
    (``tf.nn.compute_average_loss``) so every worker's gradient has the right scale.
    """
    import tensorflow as tf

    labels = tf.cast(labels, tf.int32)
    logits = tf.cast(logits, tf.float32)
    valid = tf.ones_like(labels, tf.float32)
    if ignore_class is not None:
        valid = tf.cast(tf.not_equal(labels, ignore_class), tf.float32)
    safe = tf.clip_by_value(labels, 0, num_classes - 1)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe, logits=logits)
    weight = valid
    if class_weights is not None:
        weight = weight * tf.gather(tf.constant(class_weights, tf.float32), safe)
    axes = list(range(1, len(ce.shape)))
    return tf.reduce_sum(ce * weight, axis=axes) / tf.maximum(tf.reduce_sum(valid, axis=axes), 1.0)


@renamed_argument("ignore_label", "ignore_class")
def train_distributed(
    build_model,
    load_batch,
    num_examples,
    global_batch_size,
    num_steps,
    out_dir,
    num_classes,
    strategy="default",
    learning_rate=0.01,
    momentum=0.9,
    ignore_class=None,
    class_weights=None,
    checkpoint_every=1,
    seed=0,
    on_step=None,
    verbose=True,
    sync_batch_norm=True,
):
    """Train with a custom ``tf.distribute`` loop; resumes from ``out_dir`` where a checkpoint exists.

    Args:
        build_model: zero-argument callable returning a ``keras.Model`` (called in the strategy scope).
        load_batch: ``indices (n,) int64 tensor -> (images (n, H, W, 3) float32, labels (n, H, W) int)``;
            a TF function that loads the examples of one worker's slice (e.g. decodes files).
        num_examples: size of the training set.
        global_batch_size: examples per step over all workers.
        num_steps: total optimisation steps of the job.
        out_dir: checkpoints, ``steps.log`` and TensorBoard logs (written by the chief only).
        num_classes, ignore_class, class_weights: the loss (see :func:`segmentation_loss`).
        strategy: a name from :data:`STRATEGIES` or a ``tf.distribute.Strategy``. A multi-worker
            strategy must be made (:func:`get_strategy`) before any other TensorFlow op runs.
        learning_rate, momentum: SGD, as the original papers.
        checkpoint_every: steps between checkpoints (1: resume exactly where it stopped).
        seed: seeds the initial weights and the order of the batches.
        on_step: optional callback ``(step, loss)`` called on every worker after each step.
        sync_batch_norm: with several replicas, BatchNormalization layers normalise with the
            statistics of the whole global batch (all-reduced), so N workers train exactly like
            one process; ``False`` keeps per-replica statistics (the authors' multi-GPU Caffe).

    Returns:
        dict with ``steps_run`` (this process), ``resumed_from``, ``final_step``, ``loss``, ``model``.
    """
    import keras
    import tensorflow as tf

    if isinstance(strategy, str):
        strategy = get_strategy(strategy)
    is_chief, worker, num_workers = task_info(strategy)
    replicas = strategy.num_replicas_in_sync
    if global_batch_size % replicas:
        raise ValueError(f"global_batch_size {global_batch_size} is not divisible by the {replicas} replicas")
    per_replica = global_batch_size // replicas
    ckpt_dir = os.path.join(out_dir, "checkpoints")
    write_dir = ckpt_dir if is_chief else os.path.join(out_dir, f".worker-{worker}-scratch")

    with strategy.scope():
        keras.utils.set_random_seed(seed)  # the same initial weights on every worker and every run
        model = build_model()
        if sync_batch_norm and replicas > 1:
            for layer in model._flatten_layers(include_self=False, recursive=True):
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.synchronized = True
        optimizer = keras.optimizers.SGD(learning_rate, momentum=momentum)
        optimizer.build(model.trainable_variables)
        checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    manager = tf.train.CheckpointManager(checkpoint, write_dir, max_to_keep=2)
    latest = tf.train.latest_checkpoint(ckpt_dir)
    if latest:
        checkpoint.restore(latest).assert_existing_objects_matched()
    start = int(optimizer.iterations.numpy())
    if start >= num_steps:
        return {"steps_run": 0, "resumed_from": start, "final_step": start, "loss": None, "model": model}

    table = global_batch_indices(num_examples, global_batch_size, num_steps, seed)

    def dataset_fn(ctx):
        # Worker `pid` loads its contiguous slice of each global batch.
        per_pipeline = global_batch_size // ctx.num_input_pipelines
        pid = ctx.input_pipeline_id
        rows = tf.data.Dataset.from_tensor_slices(table[start:])
        rows = rows.map(lambda r: r[pid * per_pipeline:(pid + 1) * per_pipeline])
        return rows.map(load_batch).unbatch().batch(per_replica).prefetch(2)

    data = iter(strategy.distribute_datasets_from_function(dataset_fn))

    @tf.function
    def train_step(batch):
        def replica_step(images, labels):
            with tf.GradientTape() as tape:
                logits = model(images, training=True)
                per_example = segmentation_loss(labels, logits, num_classes, ignore_class, class_weights)
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        return strategy.reduce("SUM", strategy.run(replica_step, args=batch), axis=None)

    writer = tf.summary.create_file_writer(os.path.join(out_dir, "logs")) if is_chief else tf.summary.create_noop_writer()
    loss = None
    committed = start
    for step in range(start, num_steps):
        loss = float(train_step(next(data)))
        done = step + 1
        with writer.as_default():
            tf.summary.scalar("loss", loss, step=done)
        if on_step is not None:
            on_step(step, loss)
        if done % checkpoint_every == 0 or done == num_steps:
            manager.save(checkpoint_number=done)  # collective: every worker saves
            if is_chief:  # the durable record: each committed step once
                with open(os.path.join(out_dir, "steps.log"), "a") as f:
                    f.write("".join(f"{s}\n" for s in range(committed, done)))
                    f.flush()
                    os.fsync(f.fileno())
            committed = done
        if verbose and is_chief:
            print(f"step {done}/{num_steps} loss {loss:.4f}", flush=True)
    if not is_chief:
        shutil.rmtree(write_dir, ignore_errors=True)
    return {"steps_run": num_steps - start, "resumed_from": start, "final_step": num_steps, "loss": loss, "model": model}


def pairs_loader(pairs, size):
    """A ``load_batch`` for :func:`train_distributed` reading image/mask files (``kseg.data.find_pairs``).

    Images are resized bilinearly and masks by nearest neighbour to `size` ``(height, width)``; no
    random augmentation, so a step's batch is a function of the step alone.
    """
    import tensorflow as tf

    from kseg.data.folder import decode_mask

    images = tf.constant([str(i) for i, _ in pairs])
    masks = tf.constant([str(m) for _, m in pairs])
    h, w = int(size[0]), int(size[1])

    def load_one(i):
        img = tf.io.decode_image(tf.io.read_file(images[i]), channels=3, expand_animations=False)
        img = tf.image.resize(tf.cast(img, tf.float32), (h, w), method="bilinear")
        lab = decode_mask(tf.io.read_file(masks[i]))
        lab = tf.image.resize(lab, (h, w), method="nearest")[..., 0]
        img.set_shape((h, w, 3))
        lab.set_shape((h, w))
        return img, tf.cast(lab, tf.int32)

    def load_batch(indices):
        return tf.map_fn(load_one, indices, fn_output_signature=(tf.float32, tf.int32))

    return load_batch


@renamed_argument("ignore_label", "ignore_class")
def train_folder_distributed(model, data_root, out_dir, strategy="multiworker", split="train", size=(360, 480),
                             global_batch_size=8, num_steps=1000, num_classes=11, ignore_class=11,
                             class_weights="median_frequency", learning_rate=0.01, **kwargs):
    """:func:`train_distributed` on an image/mask folder (CamVid layout or ``images/`` + ``masks/``).

    Args:
        model: a registry name (built with `num_classes` and `size`) or a zero-argument builder.
        class_weights: ``"median_frequency"`` (SegNet's balancing, computed from the data), an
            array, or ``None``.
    """
    if isinstance(strategy, str):
        strategy = get_strategy(strategy)  # before any other TF op (collectives are configured here)
    from kseg import data as kdata
    from kseg.models import get

    pairs = kdata.find_pairs(data_root, split)
    if isinstance(class_weights, str):
        if class_weights != "median_frequency":
            raise ValueError(f"class_weights must be 'median_frequency', an array or None, got {class_weights!r}")
        class_weights = kdata.median_frequency_weights(pairs, num_classes=num_classes, ignore_class=ignore_class)
    build = model if callable(model) else (
        lambda: get(model).build(num_classes=num_classes, input_shape=(int(size[0]), int(size[1]), 3)))
    return train_distributed(build, pairs_loader(pairs, size), len(pairs), global_batch_size, num_steps, out_dir,
                             num_classes, strategy=strategy, learning_rate=learning_rate, ignore_class=ignore_class,
                             class_weights=class_weights, **kwargs)


def main(argv=None):
    """``python -m kseg.distribute``: one worker of a multi-worker job on an image/mask folder.

    ``TF_CONFIG`` (or ``--workers`` + ``--index``, which set it) describes the cluster.
    """
    import argparse
    import time

    p = argparse.ArgumentParser(prog="python -m kseg.distribute", description=main.__doc__)
    p.add_argument("--model", default="segnet_basic")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--workers", default="", help="comma-separated host:port list (sets TF_CONFIG)")
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--strategy", default=None, choices=STRATEGIES)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=8, help="global batch size")
    p.add_argument("--size", type=int, nargs=2, default=(360, 480))
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--save-weights", action="store_true", help="write the final trainable weights (OUT/weights-INDEX.npy) and BN statistics (OUT/state-INDEX.npy)")
    args = p.parse_args(argv)
    if args.workers:
        os.environ["TF_CONFIG"] = tf_config(args.workers.split(","), args.index)
    strategy = get_strategy(args.strategy or ("multiworker" if "TF_CONFIG" in os.environ else "default"))
    start = time.perf_counter()
    result = train_folder_distributed(args.model, args.data, args.out, strategy=strategy, size=args.size,
                                      global_batch_size=args.batch_size, num_steps=args.steps, learning_rate=args.lr)
    seconds = time.perf_counter() - start
    if args.save_weights:
        model = result["model"]
        for kind, weights in (("weights", model.trainable_weights), ("state", model.non_trainable_weights)):
            if weights:
                np.save(os.path.join(args.out, f"{kind}-{args.index}.npy"), np.concatenate([w.numpy().ravel() for w in weights]))
    print(json.dumps({"index": args.index, "steps_run": result["steps_run"], "resumed_from": result["resumed_from"],
                      "seconds": seconds, "loss": result["loss"]}), flush=True)


if __name__ == "__main__":
    main()
