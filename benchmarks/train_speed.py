"""Training speed of registry models: TF vs TF+XLA vs JAX, float32 vs mixed bfloat16.

One training step = ``model.train_on_batch`` at batch 4 on random images of the given size
(CamVid's 360x480 by default), SGD, the void-ignoring cross-entropy. Each configuration runs in a
fresh subprocess (clean backend and policy; peak RSS is that process's).

    python benchmarks/train_speed.py --models segnet fcn8s --steps 3
    python benchmarks/train_speed.py --models segnet_basic --configs tf-fp32 tf-bf16 --size 180 240
"""

import argparse
import json
import os
import subprocess
import sys
import time

CONFIGS = {
    "tf-fp32": {"backend": "tensorflow", "precision": "float32", "jit": False},
    "tf-bf16": {"backend": "tensorflow", "precision": "mixed_bfloat16", "jit": False},
    "tf-xla-fp32": {"backend": "tensorflow", "precision": "float32", "jit": True},
    "tf-xla-bf16": {"backend": "tensorflow", "precision": "mixed_bfloat16", "jit": True},
    "jax-fp32": {"backend": "jax", "precision": "float32", "jit": True},
    "jax-bf16": {"backend": "jax", "precision": "mixed_bfloat16", "jit": True},
}


def child(args):
    import resource

    import keras
    import numpy as np

    import kseg

    cfg = CONFIGS[args.config]
    keras.config.set_dtype_policy(cfg["precision"])
    h, w = args.size
    model = kseg.models.get(args.model).build(num_classes=11, input_shape=(h, w, 3))
    model.compile(
        optimizer=keras.optimizers.SGD(1e-3, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=11),
        jit_compile=cfg["jit"],
    )
    rng = np.random.RandomState(0)
    x = (rng.rand(args.batch, h, w, 3) * 255).astype("float32")
    y = rng.randint(0, 12, size=(args.batch, h, w)).astype("int32")
    t0 = time.perf_counter()
    first_loss = float(model.train_on_batch(x, y))  # traces / compiles
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = float(model.train_on_batch(x, y))
    per_step = (time.perf_counter() - t0) / args.steps
    print(json.dumps({
        "model": args.model, "config": args.config, "first_step_s": first, "step_s": per_step,
        "images_per_s": args.batch / per_step, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "loss_finite": bool(np.isfinite(loss) and np.isfinite(first_loss)),
    }))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["segnet", "fcn8s"])
    parser.add_argument("--configs", nargs="+", default=["tf-fp32", "tf-bf16", "tf-xla-fp32", "jax-fp32"],
                        choices=sorted(CONFIGS))
    parser.add_argument("--size", nargs=2, type=int, default=[360, 480])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--timeout", type=int, default=900)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    rows = []
    for model in args.models:
        for config in args.configs:
            env = dict(os.environ, KERAS_BACKEND=CONFIGS[config]["backend"], TF_CPP_MIN_LOG_LEVEL="3")
            cmd = [sys.executable, __file__, "--child", "--model", model, "--config", config,
                   "--size", *map(str, args.size), "--batch", str(args.batch), "--steps", str(args.steps)]
            try:
                out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
                lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
                row = json.loads(lines[-1]) if lines else {"model": model, "config": config,
                                                          "error": (out.stderr.strip().splitlines() or ["?"])[-1][:80]}
            except subprocess.TimeoutExpired:
                row = {"model": model, "config": config, "error": f"timeout {args.timeout}s"}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    h, w = args.size
    print(f"\nTraining step, batch {args.batch}, {h}x{w}, {os.cpu_count()} CPU cores")
    print(f"{'model':<14}{'config':<14}{'images/s':>10}{'s/step':>9}{'1st step s':>11}{'peak RSS GB':>12}")
    for r in rows:
        if "error" in r:
            print(f"{r['model']:<14}{r['config']:<14}  failed: {r['error']}")
        else:
            print(f"{r['model']:<14}{r['config']:<14}{r['images_per_s']:>10.2f}{r['step_s']:>9.2f}"
                  f"{r['first_step_s']:>11.1f}{r['peak_rss_gb']:>12.2f}")


if __name__ == "__main__":
    main()
