"""One worker vs two loopback workers (MultiWorkerMirroredStrategy) on CamVid, same global batch.

Both runs start from the same weights and see the same global batches, so after N steps their
weights should agree up to float summation order (BatchNormalization is synchronised over the
workers, so it normalises over the global batch in both runs); the table gives steps/s of each and the
largest weight difference. Both workers share this machine's cores, so this measures correctness
and overhead, not a speed-up.

    python benchmarks/distributed.py --data ../shared/data/camvid --steps 20
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

from kseg.distribute import free_ports

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run(n, args, out):
    workers = ",".join(f"127.0.0.1:{p}" for p in free_ports(n)) if n > 1 else ""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    env.pop("TF_CONFIG", None)
    procs = []
    for i in range(n):
        cmd = [sys.executable, "-m", "kseg.distribute", "--model", args.model, "--data", args.data, "--out", str(out),
               "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--size", *map(str, args.size),
               "--index", str(i), "--save-weights"]
        if workers:
            cmd += ["--workers", workers]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    results = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=args.timeout)
        if p.returncode:
            raise SystemExit(f"worker failed:\n{stderr[-3000:]}")
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    state = out / "state-0.npy"
    return results, (np.load(out / "weights-0.npy"), np.load(state) if state.exists() else np.zeros(0))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "camvid"))
    p.add_argument("--model", default="segnet_basic")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--size", type=int, nargs=2, default=(180, 240))
    p.add_argument("--timeout", type=int, default=1800)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one, w1 = run(1, args, pathlib.Path(tmp) / "one")
        two, w2 = run(2, args, pathlib.Path(tmp) / "two")
    print(f"\n{args.model}, {args.steps} steps, global batch {args.batch_size}, {args.size[0]}x{args.size[1]}, "
          f"{os.cpu_count()} cores shared by all workers")
    print(f"{'run':<22}{'steps/s':>9}{'images/s':>10}{'final loss':>12}")
    for label, res in (("1 worker", one), ("2 workers (loopback)", two)):
        sec = max(r["seconds"] for r in res)
        print(f"{label:<22}{args.steps / sec:>9.3f}{args.steps * args.batch_size / sec:>10.2f}{res[0]['loss']:>12.4f}")
    for what, a, b in (("trainable weights", w1[0], w2[0]), ("BN moving statistics", w1[1], w2[1])):
        if a.size:
            print(f"{what:<22} max |1 worker - 2 workers| = {np.abs(a - b).max():.3e}   "
                  f"max relative = {(np.abs(a - b) / np.maximum(np.abs(a), 1e-3)).max():.3e}")


if __name__ == "__main__":
    main()
