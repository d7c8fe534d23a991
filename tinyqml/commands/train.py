"""``tinyqml train MODEL``: train one of the digits models and save it for the next command.

``qnn`` is the 4-qubit variational classifier of :mod:`tinyqml.classifier` (digits 0-3).

>>> from tinyqml.cli import build_parser
>>> args = build_parser().parse_args(["train", "qnn", "--fast", "--epochs", "2"])
>>> qnn_config(args).epochs, qnn_config(args).layers
(2, 4)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from tinyqml.commands.common import positive_int, seed

__all__ = ["register", "qnn_config"]

TRAIN_EXAMPLES = """\
examples:
  tinyqml train qnn --fast                     # the 4-qubit digits (0-3) classifier, a few seconds
  tinyqml train qnn -o runs/qnn                # full run (>= 80% test accuracy), saves the circuit and weights
"""

QNN_EXAMPLES = """\
examples:
  tinyqml train qnn                 # full run (reaches >= 80% test accuracy)
  tinyqml train qnn --fast          # quick check, a few seconds
  tinyqml train qnn --seed 3 --epochs 30 --layers 10 -o runs/qnn
writes (with -o DIR): circuit.json (Circuit.to_json), weights.json, history.json
"""


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``tinyqml train`` (and its models) to the sub-parsers ``sub``."""
    p = sub.add_parser(
        "train", help="train a digits model (qnn: 4-qubit classifier) and save it",
        description="Train one of the digits models and save it, for the next command of the flow.",
        epilog=TRAIN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    models = p.add_subparsers(dest="model", metavar="MODEL", required=True)
    _register_qnn(models)


def _register_qnn(models: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = models.add_parser(
        "qnn", help="the 4-qubit variational classifier of the digits 0-3",
        description="Train the 4-qubit variational classifier on scikit-learn's digits 0-3 "
                    "(4x4 pooled pixels, RY/RZ/RX/RY encoding, U3 + CNOT-ring layers, adjoint gradients) "
                    "and print the loss and accuracies after every epoch.",
        epilog=QNN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--fast", action="store_true", help="small model and 3 epochs (seconds; for smoke tests)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the initial weights and batch order (default 0)")
    p.add_argument("--epochs", type=positive_int, default=None, help="override the number of epochs")
    p.add_argument("--layers", type=positive_int, default=None, help="override the number of ansatz layers")
    p.add_argument("-o", "--output", default=None, metavar="DIR",
                   help="folder for circuit.json, weights.json and history.json (default: save nothing)")
    p.set_defaults(func=_run_qnn)


def qnn_config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The :class:`~tinyqml.classifier.ClassifierConfig` that ``tinyqml train qnn`` arguments ask for."""
    from tinyqml.classifier import FAST_CONFIG, ClassifierConfig

    config = FAST_CONFIG if args.fast else ClassifierConfig()
    changes = {"seed": args.seed}
    if args.epochs is not None:
        changes["epochs"] = args.epochs
    if args.layers is not None:
        changes["layers"] = args.layers
    return dataclasses.replace(config, **changes)


def _run_qnn(args: argparse.Namespace) -> int:
    from tinyqml.classifier import EpochStats, train_classifier

    config = qnn_config(args)
    print(f"digits 0-3, 4 qubits, {config.layers} layers, {config.epochs} epochs, "
          f"batch {config.batch_size}, lr {config.lr}, seed {config.seed}", flush=True)

    def report(s: EpochStats) -> None:
        print(f"epoch {s.epoch:3d}/{config.epochs}  loss {s.loss:.4f}  train acc {s.train_accuracy:.3f}  "
              f"test acc {s.test_accuracy:.3f}  ({s.seconds:.1f}s)", flush=True)

    result = train_classifier(config, on_epoch=report)
    print(f"final train accuracy {result.train_accuracy:.4f} ({result.n_train} samples), "
          f"test accuracy {result.test_accuracy:.4f} ({result.n_test} samples), {result.seconds:.1f}s")
    if args.output is not None:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        layer = result.model.quantum
        (out / "circuit.json").write_text(layer.circuit.to_json())
        (out / "weights.json").write_text(json.dumps(layer.weights.detach().tolist()))
        (out / "history.json").write_text(json.dumps([dataclasses.asdict(s) for s in result.history], indent=1))
        print(f"wrote circuit.json, weights.json, history.json to {out}")
    return 0
