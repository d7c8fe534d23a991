"""``tinyqml search SPACE``: a built-in search on one optuna study shared by many workers (:mod:`tinyqml.searches`).

>>> from tinyqml.cli import build_parser
>>> args = build_parser().parse_args(["search", "quadratic", "--trials", "50", "--study", "q1", "--workers", "4"])
>>> args.space, args.trials, args.study, args.workers, args.seed, args.storage or SEARCH_STORAGE
('quadratic', 50, 'q1', 4, 0, 'sqlite:///runs/search.db')
"""

from __future__ import annotations

import argparse
import sys

from tinyqml.commands.common import error, positive_int, quiet_logging, seed

__all__ = ["register", "SEARCH_STORAGE"]

SEARCH_EXAMPLES = """\
searches (SPACE):
  quadratic   synthetic: two integers and a choice, a known optimum, no model (checks the engine)
  qnas        QuantumNAS: sub-circuit + qubit mapping on FakeQuitoV2, scored by noisy validation accuracy
              with the inherited weights of a SuperCircuit trained once
  ofa         once-for-all NAS: MobileNetV2 sub-networks under macs<=400k and peak_sram<=20k, scored by
              measured validation accuracy with the weights of a supernet trained once

examples:
  tinyqml search quadratic --trials 50 --study q1 --workers 4
  tinyqml search qnas --trials 60 --study qnas1 --workers 2
  tinyqml search ofa --trials 40 --study ofa1 --fast                       # small and quick (smoke test)
  tinyqml search ofa --trials 200 --study ofa1 \\
      --storage postgresql://tinyqml:secret@db.example.org:5432/tinyqml --workers 8
      # run the same command on every machine: all workers join one study (pip install tinyqml[distributed])

--trials is the number of completed trials the study should have: rerunning the same command (after a
crash or Ctrl-C) continues the study, and a larger --trials adds the missing ones. Shared artefacts (the
trained SuperCircuit or supernet) are written once to runs/<study>/ (next to a SQLite file), atomically,
and loaded with weights_only=True; a machine that does not share that folder trains its own copy.
optuna-dashboard can open the storage while the search runs:  optuna-dashboard sqlite:///runs/search.db
"""


#: tinyqml.search.storage.DEFAULT_STORAGE, spelled out so that building the parser imports no optuna
SEARCH_STORAGE = "sqlite:///runs/search.db"


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``tinyqml search`` to the sub-parsers ``sub``."""
    p = sub.add_parser(
        "search", help="run a built-in search (qnas, ofa, quadratic) with many workers on one study",
        description="Run (or continue) the built-in search SPACE until the study NAME has N completed trials. "
                    "The study lives in a SQLite file (default) or on a PostgreSQL server that any number of "
                    "processes on any number of machines share; trials that crash are retried, and exactly N "
                    "complete however the workers race or die.",
        epilog=SEARCH_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("space", metavar="SPACE", help="the search: quadratic, qnas or ofa")
    p.add_argument("--trials", type=positive_int, required=True, metavar="N",
                   help="completed trials the study should have (counting earlier runs and other machines)")
    p.add_argument("--study", required=True, metavar="NAME", help="the study's name (also runs/NAME/ for artefacts)")
    p.add_argument("--storage", default=None, metavar="URL",
                   help=f"a SQLite path or URL, or a postgresql:// URL (default {SEARCH_STORAGE})")
    p.add_argument("--workers", type=positive_int, default=1, metavar="K",
                   help="worker processes on this machine (default 1: in this process)")
    p.add_argument("--seed", type=seed, default=0, metavar="S",
                   help="seed of the samplers (worker i samples with a seed derived from S and i; default 0)")
    p.add_argument("--fast", action="store_true", help="small SuperCircuit / supernet and short training (tests)")
    p.set_defaults(func=_run_search)


def _run_search(args: argparse.Namespace) -> int:
    import signal

    from optuna.trial import TrialState

    from tinyqml.classical.errors import CompressionError
    from tinyqml.qml.errors import TinyQMLError
    from tinyqml.search import SearchError
    from tinyqml.search.workers import WORKER_ATTR
    from tinyqml.searches import run_builtin_search

    quiet_logging()
    # Ctrl-C must stop the search even when this process inherited SIGINT ignored (a background job of a
    # non-interactive shell): Python installs its KeyboardInterrupt handler only when SIGINT is not ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    storage = args.storage or SEARCH_STORAGE
    try:
        study = run_builtin_search(args.space, args.trials, args.study, storage=storage, workers=args.workers,
                                   seed=args.seed, fast=args.fast, on_stage=lambda m: print(m, flush=True))
    except (SearchError, TinyQMLError, CompressionError, OSError) as exc:
        return error(exc)
    except KeyboardInterrupt:
        print("tinyqml: interrupted; rerun the same command to continue the study (the trials cut short are "
              "retried)", file=sys.stderr)
        return 130
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    print(f"study {args.study!r}: {len(done)} completed trials")
    best = study.best_trial
    costs = best.user_attrs.get("costs") or {}
    extra = f", costs {', '.join(f'{k} {v:,.4g}' for k, v in sorted(costs.items()))}" if costs else ""
    print(f"best trial #{best.number}: value {best.value:.6g}, params {best.params}{extra}")
    per_worker: dict[str, int] = {}
    for t in done:
        key = str(t.user_attrs.get(WORKER_ATTR, "?"))
        per_worker[key] = per_worker.get(key, 0) + 1
    print("completed per worker: " + ", ".join(f"{k} {v}" for k, v in sorted(per_worker.items())))
    return 0
