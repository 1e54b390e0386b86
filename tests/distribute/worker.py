"""One worker of the loopback multi-worker tests (run as a subprocess by test_distribute.py)."""

import argparse
import json
import os
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("--workers", default="", help="comma-separated host:port list; empty: one process")
parser.add_argument("--index", type=int, default=0)
parser.add_argument("--out", required=True)
parser.add_argument("--steps", type=int, default=6)
parser.add_argument("--batch", type=int, default=8)
parser.add_argument("--crash-at", type=int, default=-1, help="exit abruptly after this step (fault injection)")
args = parser.parse_args()

if args.workers:
    from kseg.distribute import tf_config

    os.environ["TF_CONFIG"] = tf_config(args.workers.split(","), args.index)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kseg.distribute import get_strategy, train_distributed  # noqa: E402

# Collective ops must be configured before any other TF op runs: make the strategy first.
strategy = get_strategy("multiworker" if args.workers else "default")
rng = np.random.RandomState(0)
images = tf.constant(rng.rand(32, 16, 16, 3).astype("float32") * 255)
labels = tf.constant((rng.rand(32, 16, 16) * 3).astype("int32"))


def build_model():
    keras.utils.set_random_seed(7)  # same initial weights on every worker and in the reference
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same")(x)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))  # synchronised over workers
    return keras.Model(inputs, keras.layers.Conv2D(3, 1)(x))


def load_batch(indices):
    return tf.gather(images, indices), tf.gather(labels, indices)


def on_step(step, loss):
    if step == args.crash_at:
        os._exit(17)  # a killed worker: no cleanup, no checkpoint


start = time.perf_counter()
result = train_distributed(
    build_model, load_batch, num_examples=32, global_batch_size=args.batch, num_steps=args.steps,
    out_dir=args.out, num_classes=3, strategy=strategy,
    learning_rate=0.1, checkpoint_every=1, on_step=on_step, verbose=False,
)
elapsed = time.perf_counter() - start
weights = np.concatenate([w.numpy().ravel() for w in result["model"].weights])
np.save(os.path.join(args.out, f"weights-{args.index}.npy"), weights)
print(json.dumps({"index": args.index, "steps_run": result["steps_run"], "resumed_from": result["resumed_from"],
                  "seconds": elapsed}))
sys.stdout.flush()
