"""CRF-as-RNN: one end-to-end training step on real CamVid images; gradient norms of the CRF weights.

One command::

    python benchmarks/crf_as_rnn_step.py --data /path/to/camvid --size 180 240 --batch-size 2

Builds the full-size CRF-as-RNN (FCN-8s + CRFRNN, 5 mean-field iterations in training), takes
one SGD step with the void-ignoring cross-entropy on the refined logits and prints the gradient
norm of every CRF weight (spatial kernel weights, bilateral kernel weights, compatibility) next to
the unary network's (``score-fr``, ``score2``, ``fc7``, ``conv1_1``), the loss before/after and
the step time. The encoder is randomly initialised (no ImageNet download here); the score layers
are zero-initialised as the FCN authors do (``--score-init normal`` for a non-trivial first unary).
"""

import argparse
import time

import keras
import numpy as np
import tensorflow as tf

import kseg
from kseg import data
from kseg.losses import segmentation_loss


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--size", type=int, nargs=2, default=(180, 240), metavar=("H", "W"))
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--width", type=float, default=1.0, help="VGG16 width multiplier (1.0 = paper)")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--score-init", choices=("zeros", "normal"), default="zeros",
                   help="zeros: FCN's init (the unary is 0 on the first step, so Q stays uniform and the "
                        "spatial and bilateral weights get the same gradient); normal: N(0, 0.01)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    tf.random.set_seed(args.seed)
    h, w = args.size
    pairs = data.find_pairs(args.data, "train")[: args.batch_size]
    ds = data.segmentation_dataset(pairs, batch_size=args.batch_size, num_classes=11, ignore_label=11)
    images, masks = next(iter(ds))[:2]
    images = tf.image.resize(images, (h, w))
    masks = tf.cast(tf.image.resize(masks[..., None], (h, w), method="nearest")[..., 0], tf.int32)

    model = kseg.CRFasRNN(num_classes=11, input_shape=(h, w, 3), width=args.width)
    crf = model.get_layer("inference1")
    if args.score_init == "normal":
        rng = np.random.default_rng(args.seed)
        for name in ("score-fr", "score-pool4", "score-pool3"):
            layer = model.get_layer(name)
            layer.set_weights([rng.normal(0, 0.01, v.shape).astype("float32") for v in layer.get_weights()])
    loss_fn = segmentation_loss(ignore_label=11)
    opt = keras.optimizers.SGD(args.lr, momentum=0.9)
    watched = {f"inference1/{v.name}": v for v in crf.trainable_weights}
    for name in ("score-fr", "score2", "fc7", "conv1_1"):
        for v in model.get_layer(name).trainable_weights:
            watched[f"{name}/{v.name}"] = v
    start = time.monotonic()
    with tf.GradientTape() as tape:
        loss = loss_fn(masks, model(images, training=True))
    grads = tape.gradient(loss, model.trainable_weights)
    opt.apply_gradients(zip(grads, model.trainable_weights))
    step_s = time.monotonic() - start
    by_id = {id(v): g for v, g in zip(model.trainable_weights, grads)}
    loss_after = float(loss_fn(masks, model(images, training=True)))

    print(f"CRF-as-RNN, {kseg.count_params(model):,} params, input {h}x{w}, batch {args.batch_size}, "
          f"{crf.num_iterations} mean-field iterations (training), width {args.width}, score init {args.score_init}")
    print(f"loss before {float(loss):.4f}  after one SGD step {loss_after:.4f}  step {step_s:.1f}s")
    print(f"{'weight':40s} {'shape':>14s} {'grad norm':>12s}")
    for name, v in watched.items():
        g = by_id.get(id(v))
        norm = float("nan") if g is None else float(tf.norm(g))
        print(f"{name:40s} {str(tuple(v.shape)):>14s} {norm:12.4e}")
    comp = np.asarray(crf.compatibility)
    print(f"compatibility after the step: diag mean {np.diag(comp).mean():.6f}, "
          f"max |offdiag| {np.abs(comp - np.diag(np.diag(comp))).max():.3e}")


if __name__ == "__main__":
    main()
