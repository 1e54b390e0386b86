"""Run kseg's benchmarks, one after another, each in its own process, printing their tables.

Every ``benchmarks/*.py`` except this file is a benchmark that runs alone with its defaults
(``python benchmarks/NAME.py``). They are heavy: on a shared machine run them under the lock,
``flock /tmp/kseg-heavy.lock python benchmarks/run.py``.

    python benchmarks/run.py --list
    python benchmarks/run.py                                   # the export/pooling/SegNet set
    python benchmarks/run.py --only pool_unpool tflite_segnet
    python benchmarks/run.py --only matrix                     # one table: every model x runtime
    python benchmarks/run.py --all                              # every script in benchmarks/
    python benchmarks/run.py --issue15                          # kseg vs the C++ peers (issue 15)
"""

import argparse
import pathlib
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent

# The benchmarks of issue 3 / issue 7 items 3 and 5 (export, pooling, SegNet, the model x runtime
# matrix); --all adds everyone else's. `--only matrix` prints the one table of issue 7 item 5.
DEFAULT = ["pool_unpool", "segnet_train_step", "tflite_segnet", "tflite_quantized", "matrix"]
# Issue 15: start-up, dense CRF CPU-seconds vs pydensecrf, pool/unpool vs the fused argmax op,
# each prints its ratio to the peer measured in the same run (torch_peer: PyTorch, from a venv that has it;
# peak_memory: peak RSS per model and step against 3x (weights + activations)).
ISSUE15 = ["startup", "dense_crf_cpu", "pool_unpool", "torch_peer", "peak_memory"]


def available():
    return sorted(p.stem for p in HERE.glob("*.py") if p.stem != "run" and not p.stem.startswith("_"))


def summary(name):
    """First line of a benchmark's docstring (read, not imported)."""
    import ast

    doc = ast.get_docstring(ast.parse((HERE / f"{name}.py").read_text()))
    return doc.splitlines()[0] if doc else ""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", default=None, help="benchmark names (file stems)")
    parser.add_argument("--all", action="store_true", help="every script in benchmarks/")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--issue15", action="store_true", help="the issue-15 peer comparisons: " + ", ".join(ISSUE15))
    args = parser.parse_args(argv)

    names = available()
    if args.list:
        for n in names:
            print(f"{n:<22} {'*' if n in DEFAULT else ' '} {summary(n)}")
        print("(* = run by default; --all runs every one)")
        return 0
    chosen = args.only or (names if args.all else [n for n in (ISSUE15 if args.issue15 else DEFAULT) if n in names])
    unknown = [n for n in chosen if n not in names]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; available: {', '.join(names)}")

    failed = []
    for name in chosen:
        print(f"\n===== {name} =====", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, str(HERE / f"{name}.py")])
        print(f"===== {name}: exit {rc}, {time.perf_counter() - t0:.0f} s =====", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
