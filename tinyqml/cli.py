"""The ``tinyqml`` command line.

Examples::

    tinyqml --version
    tinyqml demo            # full run: 4-class digits quantum classifier
    tinyqml demo --fast     # a few seconds, lower accuracy
    tinyqml codegen model.tflite -o build/model --target cortex-m4
    tinyqml nas --constraint "macs<=300k" --constraint "peak_sram<=16k" -o runs/nas
    tinyqml search qnas --trials 60 --study qnas1 --workers 2

Bad arguments exit with argparse's usual message (status 2); a tinyqml error
(:class:`tinyqml.qml.errors.TinyQMLError`, or a :class:`tinyqml.classical.errors.CompressionError`
from ``codegen``; from ``search`` also a :class:`tinyqml.search.SearchError`) prints one line
``tinyqml: error: ...`` to stderr and exits with status 1; ``search`` interrupted (Ctrl-C) exits with 130.

>>> args = build_parser().parse_args(["demo", "--fast", "--seed", "3"])
>>> args.command, args.fast, args.seed
('demo', True, 3)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Callable, Sequence

from tinyqml import __version__
from tinyqml.qml.errors import TinyQMLError

__all__ = ["main", "build_parser"]

DEMO_EXAMPLES = """\
examples:
  tinyqml demo                 # full run (reaches >= 80% test accuracy)
  tinyqml demo --fast          # quick check, a few seconds
  tinyqml demo --seed 3 --epochs 30 --layers 10
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _error(exc: BaseException) -> int:
    """Print ``tinyqml: error: <message>`` on one line to stderr; the exit status of a tinyqml error."""
    message = " ".join(str(exc).split())  # always a single line
    print(f"tinyqml: error: {message}", file=sys.stderr)
    return 1


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not 0 <= value < 2 ** 62:
        raise argparse.ArgumentTypeError(f"expected a seed in 0..2**62-1, got {value}")
    return value


def _add_demo(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser(
        "demo", help="train the 4-qubit digits (0-3) quantum classifier",
        description="Train the 4-qubit variational classifier on scikit-learn's digits 0-3 "
                    "(4x4 pooled pixels, RY/RZ/RX/RY encoding, U3 + CNOT-ring layers, adjoint gradients) "
                    "and print the loss and accuracies after every epoch.",
        epilog=DEMO_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--fast", action="store_true", help="small model and 3 epochs (seconds; for smoke tests)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights and batch order (default 0)")
    p.add_argument("--epochs", type=_positive_int, default=None, help="override the number of epochs")
    p.add_argument("--layers", type=_positive_int, default=None, help="override the number of ansatz layers")
    p.set_defaults(func=_run_demo)


CODEGEN_EXAMPLES = """\
examples:
  tinyqml codegen model.tflite -o build/model                     # host C99
  tinyqml codegen model.tflite -o build/m4 --target cortex-m4     # same C, recorded for the Cortex-M4
"""


def _add_codegen(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser(
        "codegen", help="compile a fully-int8 .tflite model to C99 (bit-exact with TFLite Micro)",
        description="Write model.h, model.c and the tinyqml C runtime (plus report.md / report.json) for a "
                    "fully-int8 TFLite model, and print the report's summary: MACs, arena, peak SRAM, flash.",
        epilog=CODEGEN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="the .tflite file")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for the C sources (created)")
    p.add_argument("--target", choices=["host", "cortex-m4"], default="host", help="target (default host)")
    p.add_argument("--prefix", default="tinyqml", help="prefix of the C symbols and macros (default tinyqml)")
    p.set_defaults(func=_run_codegen)


def _run_codegen(args: argparse.Namespace) -> int:
    from tinyqml.classical.codegen import CodegenOptions, Target, generate
    from tinyqml.classical.errors import CompressionError

    try:
        result = generate(args.model, args.output, CodegenOptions(target=Target(args.target), prefix=args.prefix))
    except CompressionError as exc:
        return _error(exc)
    print(f"wrote {', '.join(p.name for p in result.files)} to {result.out_dir}")
    print(result.summary())
    return 0


NAS_EXAMPLES = """\
examples:
  tinyqml nas --fast -o runs/nas                                   # a minute: short training, small search
  tinyqml nas -c "macs<=300k" -c "peak_sram<=16k" -o runs/nas      # full run (tens of minutes on 2 cores)
  tinyqml nas --supernet runs/nas/supernet.pt -c "macs<=150k"       # reuse a trained supernet
  tinyqml nas --latency-table table.json -c "latency<=0.5"          # latency (ms) from a measured table
costs: macs, params, peak_sram (bytes of the generated C: arena + scratch), latency (ms, needs --latency-table)
"""


def _add_nas(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser(
        "nas", help="once-for-all NAS on the digits: search under MACs/SRAM constraints, then C for an MCU",
        description="Train a once-for-all MobileNetV2 supernet (sandwich rule, in-place distillation), fit an "
                    "accuracy predictor on sampled sub-networks, search the best sub-network under the "
                    "constraints with the shared engine's evolution, then fine-tune it, quantize it to int8, "
                    "export TFLite, generate C and check the C against TFLite Micro. Files go to --output.",
        epilog=NAS_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-c", "--constraint", action="append", default=None, metavar="COST<=N",
                   help="a constraint such as macs<=300k or peak_sram<=16k (repeat; default: macs<=600k, "
                        "peak_sram<=24k)")
    p.add_argument("-o", "--output", default="runs/nas", metavar="DIR", help="output folder (default runs/nas)")
    p.add_argument("--fast", action="store_true", help="3 training epochs, 24 samples, 40 trials (smoke test)")
    p.add_argument("--supernet", metavar="PT", default=None, help="load this supernet checkpoint instead of training")
    p.add_argument("--latency-table", metavar="JSON", default=None, help="a measured latency table (enables latency)")
    p.add_argument("--epochs", type=_positive_int, default=None, help="supernet training epochs")
    p.add_argument("--samples", type=_positive_int, default=None, help="sub-networks measured for the predictor")
    p.add_argument("--trials", type=_positive_int, default=None, help="search budget (evaluated architectures)")
    p.add_argument("--strategy", choices=["evolution", "random"], default="evolution", help="search strategy")
    p.add_argument("--seed", type=_seed, default=0, help="seed of training, samples and search (default 0)")
    p.set_defaults(func=_run_nas)


def _nas_config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from tinyqml.classical.nas import RANDOM_STRATEGY, NASSearchConfig
    from tinyqml.classical.nas_pipeline import FAST, NASRunConfig

    config = FAST if args.fast else NASRunConfig()
    train = dataclasses.replace(config.train, seed=args.seed, **({"epochs": args.epochs} if args.epochs else {}))
    search: NASSearchConfig = dataclasses.replace(config.search, seed=args.seed,
                                                  **({"n_trials": args.trials} if args.trials else {}))
    if args.strategy == "random":
        search = dataclasses.replace(search, strategy=RANDOM_STRATEGY)
    changes = {"train": train, "search": search, "seed": args.seed, "latency_table": args.latency_table}
    if args.samples:
        changes["n_samples"] = args.samples
    if args.constraint:
        changes["constraints"] = tuple(args.constraint)
    return dataclasses.replace(config, **changes)


def _run_nas(args: argparse.Namespace) -> int:
    import logging

    import optuna

    from tinyqml.classical.errors import CompressionError
    from tinyqml.classical.nas_pipeline import run_nas
    from tinyqml.search import SearchError

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("tinyqml").setLevel(logging.WARNING)
    try:
        config = _nas_config(args)
        result = run_nas(config, args.output, supernet=args.supernet, on_stage=lambda m: print(m, flush=True))
    except (CompressionError, SearchError, OSError) as exc:
        return _error(exc)
    print(result.summary())
    print(f"wrote {', '.join(sorted(p.name for p in result.out_dir.iterdir()))} to {result.out_dir}")
    print(f"C sources: {result.deployed.c_dir}")
    return 0


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


def _add_search(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser(
        "search", help="run a built-in search (qnas, ofa, quadratic) with many workers on one study",
        description="Run (or continue) the built-in search SPACE until the study NAME has N completed trials. "
                    "The study lives in a SQLite file (default) or on a PostgreSQL server that any number of "
                    "processes on any number of machines share; trials that crash are retried, and exactly N "
                    "complete however the workers race or die.",
        epilog=SEARCH_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("space", metavar="SPACE", help="the search: quadratic, qnas or ofa")
    p.add_argument("--trials", type=_positive_int, required=True, metavar="N",
                   help="completed trials the study should have (counting earlier runs and other machines)")
    p.add_argument("--study", required=True, metavar="NAME", help="the study's name (also runs/NAME/ for artefacts)")
    p.add_argument("--storage", default=None, metavar="URL",
                   help=f"a SQLite path or URL, or a postgresql:// URL (default {SEARCH_STORAGE})")
    p.add_argument("--workers", type=_positive_int, default=1, metavar="K",
                   help="worker processes on this machine (default 1: in this process)")
    p.add_argument("--seed", type=int, default=0, metavar="S",
                   help="seed of the samplers (worker i samples with a seed derived from S and i; default 0)")
    p.add_argument("--fast", action="store_true", help="small SuperCircuit / supernet and short training (tests)")
    p.set_defaults(func=_run_search)


def _run_search(args: argparse.Namespace) -> int:
    import logging
    import signal

    import optuna
    from optuna.trial import TrialState

    from tinyqml.classical.errors import CompressionError
    from tinyqml.search import SearchError
    from tinyqml.search.workers import WORKER_ATTR
    from tinyqml.searches import run_builtin_search

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("tinyqml").setLevel(logging.WARNING)
    # Ctrl-C must stop the search even when this process inherited SIGINT ignored (a background job of a
    # non-interactive shell): Python installs its KeyboardInterrupt handler only when SIGINT is not ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    storage = args.storage or SEARCH_STORAGE
    try:
        study = run_builtin_search(args.space, args.trials, args.study, storage=storage, workers=args.workers,
                                   seed=args.seed, fast=args.fast, on_stage=lambda m: print(m, flush=True))
    except (SearchError, TinyQMLError, CompressionError, OSError) as exc:
        return _error(exc)
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``tinyqml`` (one sub-parser per subcommand)."""
    parser = argparse.ArgumentParser(
        prog="tinyqml", description="tinyqml: machine learning on small and noisy quantum hardware.",
        epilog="example:\n  tinyqml demo --fast", formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tinyqml {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_demo(sub)
    _add_codegen(sub)
    _add_nas(sub)
    _add_search(sub)
    return parser


def _demo_config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from tinyqml.demo import FAST_CONFIG, ClassifierConfig

    config = FAST_CONFIG if args.fast else ClassifierConfig()
    changes = {"seed": args.seed}
    if args.epochs is not None:
        changes["epochs"] = args.epochs
    if args.layers is not None:
        changes["layers"] = args.layers
    return dataclasses.replace(config, **changes)


def _run_demo(args: argparse.Namespace) -> int:
    from tinyqml.demo import EpochStats, train_classifier

    config = _demo_config(args)
    print(f"digits 0-3, 4 qubits, {config.layers} layers, {config.epochs} epochs, "
          f"batch {config.batch_size}, lr {config.lr}, seed {config.seed}", flush=True)

    def report(s: EpochStats) -> None:
        print(f"epoch {s.epoch:3d}/{config.epochs}  loss {s.loss:.4f}  train acc {s.train_accuracy:.3f}  "
              f"test acc {s.test_accuracy:.3f}  ({s.seconds:.1f}s)", flush=True)

    result = train_classifier(config, on_epoch=report)
    print(f"final train accuracy {result.train_accuracy:.4f} ({result.n_train} samples), "
          f"test accuracy {result.test_accuracy:.4f} ({result.n_test} samples), {result.seconds:.1f}s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tinyqml`` with ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return func(args)
    except TinyQMLError as exc:
        return _error(exc)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
