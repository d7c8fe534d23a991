"""Run every tinyqml benchmark script in turn (what ``make bench`` does).

Each script measures tinyqml and its anchors (PennyLane, lightning, Qiskit Aer,
qulacs; Aer and default.mixed for noisy density matrices) in the same run, prints its
table and writes it under ``benchmarks/results/``. Extra arguments (for example ``--quick``) are passed on.

    .venv/bin/python benchmarks/run_all.py [--quick]
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: benchmark scripts in the order they run
SCRIPTS = ("w1_simulator.py", "w1_pennylane.py", "dm_noise.py", "qoc.py", "quantumnat.py", "quantumnas.py", "pruning.py",
           "quantization.py", "mcu.py", "nas.py", "distributed.py")


def main(argv: list[str]) -> int:
    failed = []
    for name in SCRIPTS:
        path = HERE / name
        if not path.exists():
            continue
        print(f"== {name}", flush=True)
        rc = subprocess.call([sys.executable, str(path), *argv])
        if rc != 0:
            failed.append(name)
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
