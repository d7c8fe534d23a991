"""Run every tinyqml benchmark script in turn (what ``make bench`` does).

Each script measures tinyqml and its anchors (PennyLane, lightning, Qiskit Aer,
qulacs; Aer and default.mixed for noisy density matrices) in the same run, prints its
table and writes it under ``benchmarks/results/``. ``--quick`` becomes each script's own
smoke-run flag (``--quick`` or ``--fast``); other arguments are passed on unchanged.

    .venv/bin/python benchmarks/run_all.py [--quick]

This file is also the one list of the benchmarks: ``tinyqml bench`` loads it (it imports
only the standard library) and calls :func:`discover`, :func:`describe`, :func:`quick_flag`
and :func:`command`.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: benchmark scripts in the order they run; any other script of the folder runs after them (sorted)
SCRIPTS = ("w1_simulator.py", "w1_pennylane.py", "dm_noise.py", "qoc.py", "quantumnat.py", "quantumnas.py", "pruning.py",
           "quantization.py", "mcu.py", "nas.py", "distributed.py")

#: Python files of the folder that are not benchmarks (this runner and what the scripts import)
HELPERS = ("run_all.py", "machine.py")

#: the smoke-run flags a script may define, preferred first
QUICK_FLAGS = ("--quick", "--fast")

#: where the scripts write NAME.md and NAME.json
RESULTS = "results"


def discover(folder: Path = HERE) -> list[Path]:
    """The benchmark scripts of ``folder``: those of :data:`SCRIPTS` that exist, in that order, then every
    other ``*.py`` (not a helper, not starting with ``_``) by name."""
    folder = Path(folder)
    listed = [folder / name for name in SCRIPTS if (folder / name).is_file()]
    others = sorted(p for p in folder.glob("*.py")
                    if p.name not in SCRIPTS and p.name not in HELPERS and not p.name.startswith("_"))
    return listed + others


def _tree(script: Path) -> ast.Module:
    return ast.parse(Path(script).read_text(encoding="utf-8"), filename=str(script))


def describe(script: Path) -> str:
    """The first paragraph of the script's docstring on one line, without reST literals ('' without one)."""
    doc = (ast.get_docstring(_tree(script)) or "").strip()
    first = doc.split("\n\n")[0] if doc else ""
    return " ".join(first.replace("``", "").split())


def quick_flag(script: Path) -> str | None:
    """The script's own smoke-run flag, read from its ``add_argument`` calls: ``--quick``, else ``--fast``,
    else ``None`` (the script has no quick mode)."""
    options: set[str] = set()
    for node in ast.walk(_tree(script)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument":
            options.update(a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str))
    return next((f for f in QUICK_FLAGS if f in options), None)


def command(script: Path, quick: bool = False, extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The command line that runs ``script`` with this interpreter (``quick``: with its own quick flag)."""
    flag = quick_flag(script) if quick else None
    if quick and flag is None:
        raise ValueError(f"{Path(script).name} has no quick mode (none of {', '.join(QUICK_FLAGS)})")
    return [sys.executable, str(script), *([flag] if flag else []), *extra]


def main(argv: list[str]) -> int:
    quick = any(a in QUICK_FLAGS for a in argv)
    extra = [a for a in argv if a not in QUICK_FLAGS]
    failed = []
    for path in discover(HERE):
        if quick and quick_flag(path) is None:
            print(f"== {path.name}: skipped (no quick mode)", flush=True)
            continue
        print(f"== {path.name}", flush=True)
        rc = subprocess.call(command(path, quick, extra))
        if rc != 0:
            failed.append(path.name)
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
