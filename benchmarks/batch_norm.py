"""kseg's BatchNormalization (TensorFlow's fused kernel) vs Keras' own, in one training step.

The same model twice in one process -- as kseg builds it, and a clone whose BN layers are plain
``keras.layers.BatchNormalization`` with the same config and weights -- stepping alternately
(which one goes first alternates too), so the machine's drift hits both alike. Prints the median
step of each and the median of the per-pair ratios with quartiles. SGD momentum 0.9, random
images in [0, 255] and random labels, as ``torch_peer.py``.

    python benchmarks/batch_norm.py                       # SegNet 180x240 b1, SegNet-Basic 90x120 b12
    python benchmarks/batch_norm.py --models segnet --pairs 12
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from benchmarks.torch_peer import _data  # noqa: E402  (the same random images and labels as torch_peer)

CONFIGS = {  # model: (height, width, batch, classes) -- torch_peer's SegNet, the decoder study's SegNet-Basic
    "segnet": (180, 240, 1, 11),
    "segnet_basic": (90, 120, 12, 11),
}


def keras_bn_clone(model):
    """`model` with every kseg BatchNormalization replaced by Keras' (same config, same weights)."""
    import keras

    from kseg.layers import BatchNormalization

    def swap(layer):
        if type(layer) is BatchNormalization:
            return keras.layers.BatchNormalization.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    clone = keras.models.clone_model(model, clone_function=swap)
    clone.set_weights(model.get_weights())
    return clone


def measure(name, pairs, warmup=2):
    import keras
    import numpy as np

    import kseg
    from kseg.layers import BatchNormalization

    h, w, batch, classes = CONFIGS[name]
    keras.utils.set_random_seed(0)
    fused = kseg.models.get(name).build(num_classes=classes, input_shape=(h, w, 3))
    plain = keras_bn_clone(fused)
    counts = (sum(type(l) is BatchNormalization for l in fused.layers),
              sum(type(l) is keras.layers.BatchNormalization for l in plain.layers))
    if counts[0] == 0 or counts[0] != counts[1]:
        raise SystemExit(f"{name}: {counts[0]} kseg BN layers, {counts[1]} Keras BN layers in the clone")
    for m in (fused, plain):
        m.compile(optimizer=keras.optimizers.SGD(1e-3, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=classes))
    x, y = _data(batch, h, w, classes)
    y = y.astype("int32")
    losses = [float(m.train_on_batch(x, y)) for m in (fused, plain)]
    for _ in range(warmup - 1):
        for m in (fused, plain):
            m.train_on_batch(x, y)
    times = {"fused": [], "plain": []}
    for i in range(pairs):
        order = (("fused", fused), ("plain", plain)) if i % 2 == 0 else (("plain", plain), ("fused", fused))
        for key, m in order:
            start = time.perf_counter()
            m.train_on_batch(x, y)
            times[key].append(time.perf_counter() - start)
    ratio = np.array(times["fused"]) / np.array(times["plain"])
    return {"name": name, "size": f"{h}x{w}", "batch": batch, "bn": counts[0], "first_loss": losses,
            "plain": float(np.median(times["plain"])), "fused": float(np.median(times["fused"])),
            "ratio": float(np.median(ratio)), "q": (float(np.percentile(ratio, 25)), float(np.percentile(ratio, 75)))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["segnet", "segnet_basic"], choices=list(CONFIGS))
    parser.add_argument("--pairs", type=int, default=8, help="alternating step pairs timed per model")
    args = parser.parse_args(argv)
    rows = [measure(name, args.pairs) for name in args.models]
    print(f"One training step, Keras BN vs kseg BN (fused), one process, {args.pairs} alternating pairs, CPU")
    print(f"{'model':<14}{'size':>9}{'batch':>6}{'BN':>4}{'Keras BN s':>12}{'kseg BN s':>11}{'ratio':>8}  quartiles"
          "   first loss (kseg / Keras)")
    for r in rows:
        print(f"{r['name']:<14}{r['size']:>9}{r['batch']:>6}{r['bn']:>4}{r['plain']:>12.3f}{r['fused']:>11.3f}"
              f"{r['ratio']:>7.3f}x  {r['q'][0]:.3f}-{r['q'][1]:.3f}   {r['first_loss'][0]:.5f} / {r['first_loss'][1]:.5f}")


if __name__ == "__main__":
    main()
