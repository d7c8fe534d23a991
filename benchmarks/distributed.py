"""Search at scale (issue 9): trials per minute with 1 and 2 workers, SQLite vs PostgreSQL, on the circuit search.

Setup:

- search: the built-in ``qnas`` search of ``tinyqml search`` (``tinyqml.searches``: the QuantumNAS
  co-search of a sub-circuit and its qubit mapping on a fake 5-qubit IBM backend, each trial scored
  by the exact noisy validation accuracy of the inherited weights on the 126 validation images, about
  0.6 s per trial on one core), its SuperCircuit trained once (2 epochs: the score's quality does not
  change a trial's cost) before anything is timed (the shared artefact, reused by every run);
- storages: a SQLite file on local disk, and a PostgreSQL server on loopback (``.ci/postgres start``,
  or the server of ``TINYQML_TEST_POSTGRES_URL``); a fresh study per run;
- workers: 1 (in this process) and 2 (spawned processes), torch at one thread per worker, so 2 workers
  use the 2 cores; ``--trials`` (100) completed trials per run, ``--repeats`` (1) runs per cell, the median kept;
- trials per minute: completed trials / wall time of ``run_builtin_search`` (process start-up of the
  spawned workers included), and the steady rate from the trials' own timestamps while every worker
  runs (the latest worker's first start to the earliest worker's last completion);
- anchor: the 1-worker SQLite run (the embedded default), measured in the same invocation; the issue's
  target is >= 1.7x with 2 workers on 2 cores.

    .venv/bin/python benchmarks/distributed.py            # full run (~4 min on 2 cores)
    .venv/bin/python benchmarks/distributed.py --quick    # smoke run

Prints a markdown table and writes ``benchmarks/results/distributed.md`` and ``.json`` (``--quick``:
``distributed_quick.*``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model, load_average  # noqa: E402

from tinyqml.search.workers import WORKER_ATTR  # noqa: E402
from tinyqml.searches import QNASOptions, run_builtin_search  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TARGET = 1.7
#: the circuit search with a short SuperCircuit training (its quality does not change a trial's cost) and
#: candidates scored on all 126 validation images (about 0.6 s per trial on one core)
OPTIONS = QNASOptions(super_epochs=2, warmup_epochs=0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: few trials, one repeat")
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    return p


class Postgres:
    """The server of TINYQML_TEST_POSTGRES_URL, or one started with .ci/postgres for this run."""

    def __init__(self) -> None:
        self.url = os.environ.get("TINYQML_TEST_POSTGRES_URL") or ""
        self.started = False

    def __enter__(self) -> "Postgres":
        if not self.url:
            done = subprocess.run([str(ROOT / ".ci" / "postgres"), "start"], capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"cannot start PostgreSQL: {done.stderr.strip()}")
            self.url, self.started = done.stdout.strip().splitlines()[-1], True
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started:
            subprocess.run([str(ROOT / ".ci" / "postgres"), "stop"], capture_output=True, text=True)

    def database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url.rsplit("/", 1)[0] + "/" + name


def steady_rate(study: optuna.Study) -> float:
    """Completed trials per minute while every worker was running: from the latest worker's first trial
    start to the earliest worker's last completion (start-up and the last stragglers excluded)."""
    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    by_worker: dict[str, list[Any]] = {}
    for t in done:
        by_worker.setdefault(t.user_attrs.get(WORKER_ATTR, "?"), []).append(t)
    start = max(min(t.datetime_start for t in ts) for ts in by_worker.values())
    end = min(max(t.datetime_complete for t in ts) for ts in by_worker.values())
    inside = [t for t in done if t.datetime_complete is not None and start < t.datetime_complete <= end]
    return 60.0 * len(inside) / max((end - start).total_seconds(), 1e-9)


def one_run(storage: str, study: str, workers: int, trials: int, artifacts: Path) -> dict[str, float]:
    t = time.perf_counter()
    st = run_builtin_search("qnas", trials, study, storage=storage, workers=workers, seed=0,
                            artifacts_dir=artifacts, options=OPTIONS)
    wall = time.perf_counter() - t
    n = sum(1 for tr in st.get_trials(deepcopy=False) if tr.state == TrialState.COMPLETE)
    if n != trials:
        raise SystemExit(f"{study}: {n} completed trials, {trials} wanted")
    return {"wall_s": wall, "per_min": 60.0 * n / wall, "steady_per_min": steady_rate(st)}


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    artifacts = work / "artifacts"
    t = time.perf_counter()
    run_builtin_search("qnas", 1, "warmup", storage=f"sqlite:///{work / 'warmup.db'}", workers=1,
                       artifacts_dir=artifacts, options=OPTIONS)  # trains the SuperCircuit once: not timed below
    prep = time.perf_counter() - t
    cells: dict[str, list[dict[str, float]]] = {}
    with Postgres() as pg:
        for r in range(args.repeats):
            for kind in ("sqlite", "postgresql"):
                for workers in (1, 2):
                    name = f"bench_{kind}_{workers}_{r}"
                    storage = f"sqlite:///{work / (name + '.db')}" if kind == "sqlite" else pg.database(name)
                    cells.setdefault(f"{kind} {workers}", []).append(one_run(storage, name, workers, args.trials,
                                                                             artifacts))
    med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in cells.items()}
    return {"prepare_s": prep, "cells": cells, "median": med}


def render(r: dict[str, Any], args: argparse.Namespace) -> str:
    base = r["median"]["sqlite 1"]
    lines = ["# Distributed search: trials per minute (issue 9)", "",
             f"machine: {r['meta']['cpu']}, {os.cpu_count()} CPUs, load {r['meta']['load']}; qnas, "
             f"{args.trials} completed trials per run, median of {args.repeats}; SuperCircuit trained once in "
             f"{r['prepare_s']:.0f} s (not timed)", "",
             "| storage | workers | wall (s) | trials/min | vs SQLite 1 worker | steady trials/min | vs SQLite 1 worker |",
             "|---|---|---|---|---|---|---|"]
    for kind in ("sqlite", "postgresql"):
        for workers in (1, 2):
            m = r["median"][f"{kind} {workers}"]
            lines.append(f"| {kind} | {workers} | {m['wall_s']:.1f} | {m['per_min']:.1f} | "
                         f"{m['per_min'] / base['per_min']:.2f}x | {m['steady_per_min']:.1f} | "
                         f"{m['steady_per_min'] / base['steady_per_min']:.2f}x |")
    lines.append("")
    for kind in ("sqlite", "postgresql"):
        one, two = r["median"][f"{kind} 1"], r["median"][f"{kind} 2"]
        s_wall, s_steady = two["per_min"] / one["per_min"], two["steady_per_min"] / one["steady_per_min"]
        lines.append(f"- {kind}: 2 workers / 1 worker = {s_wall:.2f}x wall, {s_steady:.2f}x steady "
                     f"(target >= {TARGET}x: {'met' if max(s_wall, s_steady) >= TARGET else '**missed**'})")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.trials, args.repeats = 16, 1
    torch.set_num_threads(1)  # the in-process worker: one thread, as every spawned worker has
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    load = load_average()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tinyqml-dist-") as tmp:
        result = run(args, Path(tmp))
    result["meta"] = {"cpu": cpu_model(), "load": load, "seconds": time.perf_counter() - start,
                      "args": {k: str(v) for k, v in vars(args).items()}}
    text = render(result, args)
    print(text)
    stem = "distributed_quick" if args.quick else "distributed"
    (args.results_dir / f"{stem}.md").write_text(text)
    (args.results_dir / f"{stem}.json").write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
