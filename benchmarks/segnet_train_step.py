"""One SegNet training step at batch 4, 360x480, on CPU: images/s and peak memory.

Each configuration runs in a fresh subprocess, so the peak resident set size (``ru_maxrss`` of that
process: model, optimizer state, activations, TF runtime) belongs to it alone. Peers in the same
run: SegNet with XLA (``jit_compile=True``) and SegNet-Basic. A step is ``train_on_batch`` with SGD
(momentum 0.9, the paper's optimiser) and the void-ignoring cross-entropy on random images/labels.

    python benchmarks/segnet_train_step.py                     # 1 warm-up + 3 timed steps each
    python benchmarks/segnet_train_step.py --steps 5 --configs segnet segnet-xla
"""

import argparse
import json
import os
import subprocess
import sys
import time

CONFIGS = {
    "segnet": {"model": "segnet", "jit": False},
    "segnet-xla": {"model": "segnet", "jit": True},
    "segnet_basic": {"model": "segnet_basic", "jit": False},
}


def child(args):
    import resource

    import keras
    import numpy as np

    import kseg

    cfg = CONFIGS[args.child]
    h, w = args.size
    model = kseg.models.get(cfg["model"]).build(num_classes=11, input_shape=(h, w, 3))
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=11),
        jit_compile=cfg["jit"],
    )
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (args.batch, h, w, 3)).astype("float32")
    y = rng.integers(0, 12, (args.batch, h, w)).astype("int32")
    t0 = time.perf_counter()
    model.train_on_batch(x, y)  # traces (and compiles, with XLA)
    first = time.perf_counter() - t0
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        loss = float(model.train_on_batch(x, y))
        times.append(time.perf_counter() - t0)
    step = sorted(times)[len(times) // 2]
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print("RESULT " + json.dumps({
        "config": args.child, "params": int(kseg.count_params(model)), "first_s": first,
        "step_s": step, "images_per_s": args.batch / step, "peak_rss_mb": rss_mb, "loss": loss,
    }))


def run(config, args):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", config, "--batch", str(args.batch),
           "--steps", str(args.steps), "--size", *map(str, args.size)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "tensorflow"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"config": config, "error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:100]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, nargs=2, default=(360, 480), metavar=("H", "W"))
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step (median)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)

    rows = [run(c, args) for c in args.configs]
    h, w = args.size
    print(f"\nOne training step, batch {args.batch}, {h}x{w}, CPU ({os.cpu_count()} cores), "
          f"median of {args.steps} steps after a warm-up step; each config in a fresh process")
    print(f"{'config':<14} {'params':>11} {'step s':>8} {'images/s':>9} {'1st step s':>11} {'peak RSS MB':>12}")
    for r in rows:
        if "error" in r:
            print(f"{r['config']:<14} FAILED: {r['error']}")
        else:
            print(f"{r['config']:<14} {r['params']:>11,} {r['step_s']:>8.2f} {r['images_per_s']:>9.2f} "
                  f"{r['first_s']:>11.1f} {r['peak_rss_mb']:>12.0f}")
    return rows


if __name__ == "__main__":
    main()
