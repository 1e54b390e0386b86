"""Start-up of the ``kseg`` command: ``--help``, ``--version``, ``list`` vs importing TensorFlow (issue 15 goal 4).

Each command runs in a fresh process (``python -m kseg.cli ...`` from this checkout); the table gives
the median wall and CPU (user + sys, children included) seconds over ``--runs`` runs, next to a bare
``python -c pass`` and ``python -c "import tensorflow"`` (what every command paid before), measured in
the same run. It also checks that none of the three commands imports TensorFlow (``sys.modules``) and
that no TensorFlow C++ log line is printed. Goal: < 0.5 s wall each.

    flock /tmp/kseg-heavy.lock python benchmarks/startup.py            # 7 runs each
"""

import argparse
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]

CASES = [
    ("python -c pass", ["-c", "pass"]),
    ("kseg --help", ["-m", "kseg.cli", "--help"]),
    ("kseg --version", ["-m", "kseg.cli", "--version"]),
    ("kseg list", ["-m", "kseg.cli", "list"]),
    ("python -c 'import tensorflow'", ["-c", "import tensorflow"]),
]
_NO_TF = ("import sys, runpy; sys.argv = ['kseg'] + sys.argv[1:]\n"
          "try:\n    runpy.run_module('kseg.cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
          "print('TF_IMPORTED', 'tensorflow' in sys.modules, file=sys.stderr)")


def run_once(argv):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode:
        raise SystemExit(f"{argv} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return wall, cpu, proc


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    print(f"{'command':<32}{'wall s':>9}{'CPU s':>9}  TensorFlow imported / C++ log lines")
    for label, argv in CASES:
        walls, cpus = [], []
        for _ in range(args.runs):
            w, c, _ = run_once(argv)
            walls.append(w)
            cpus.append(c)
        extra = ""
        if argv[:2] == ["-m", "kseg.cli"]:
            _, _, proc = run_once(["-c", _NO_TF, *argv[2:]])
            imported = "TF_IMPORTED True" in proc.stderr
            logs = sum(1 for line in proc.stderr.splitlines() if line[:1] in "IWE" and ".cc:" in line)
            extra = f"  {'yes' if imported else 'no'} / {logs}"
        print(f"{label:<32}{statistics.median(walls):>9.3f}{statistics.median(cpus):>9.3f}{extra}")
    print(f"(median of {args.runs} fresh processes each; goal: kseg commands < 0.5 s wall, no TensorFlow)")


if __name__ == "__main__":
    main()
