"""``tinyqml train MODEL``: train one of the digits models and save it for the next command.

``qnn`` is the 4-qubit variational classifier of :mod:`tinyqml.classifier` (digits 0-3);
``cnn`` is the :class:`~tinyqml.classical.models.SmallCNN` on all ten 8x8 digits, saved as a
model file (:mod:`tinyqml.classical.model_file`) for ``tinyqml prune`` and ``tinyqml quantize``.

>>> from tinyqml.cli import build_parser
>>> args = build_parser().parse_args(["train", "qnn", "--fast", "--epochs", "2"])
>>> qnn_config(args).epochs, qnn_config(args).layers
(2, 4)
>>> args = build_parser().parse_args(["train", "cnn", "--widths", "8,16,16", "--epochs", "2"])
>>> args.widths, cnn_epochs(args), args.output
((8, 16, 16), 2, 'runs/cnn.pt')
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from tinyqml.commands.common import (
    error,
    output_file,
    output_folder,
    positive_float,
    positive_int,
    printed_epochs,
    seed,
)

__all__ = ["register", "qnn_config", "cnn_epochs", "widths"]

TRAIN_EXAMPLES = """\
examples:
  tinyqml train qnn --fast                     # the 4-qubit digits (0-3) classifier, a few seconds
  tinyqml train qnn -o runs/qnn                # full run (>= 80% test accuracy), saves the circuit and weights
  tinyqml train cnn -o runs/cnn.pt             # the SmallCNN on the 10 digits, then: tinyqml prune runs/cnn.pt
"""

CNN_EXAMPLES = """\
examples:
  tinyqml train cnn                                   # SmallCNN 32,64,64, 30 epochs, writes runs/cnn.pt
  tinyqml train cnn --fast -o runs/cnn.pt             # 8,16,16 and 3 epochs: seconds
  tinyqml train cnn --widths 16,32,32 --epochs 20 --seed 1 -o runs/cnn16.pt
the classical flow, each step reading the previous step's file:
  tinyqml train cnn -o runs/cnn.pt
  tinyqml prune runs/cnn.pt -o runs/cnn_pruned.pt --ratio 0.5
  tinyqml quantize runs/cnn_pruned.pt -o runs/cnn.tflite
  tinyqml codegen runs/cnn.tflite -o build/cnn
"""

#: ``--fast`` for ``train cnn``: widths and epochs
FAST_CNN = ((8, 16, 16), 3)
DEFAULT_CNN = ((32, 64, 64), 30)


def widths(text: str) -> tuple[int, int, int]:
    """Three comma-separated positive channel widths such as ``16,32,32`` (argparse type)."""
    parts = [p.strip() for p in text.split(",")]
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three comma-separated widths such as 16,32,32, "
                                         f"got {text!r}") from None
    if len(values) != 3 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected three positive widths such as 16,32,32, got {text!r}")
    return values  # type: ignore[return-value]


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
    _register_cnn(models)


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
    try:
        out = None if args.output is None else output_folder(args.output)  # before training, not after
    except OSError as exc:
        return error(exc)
    print(f"digits 0-3, 4 qubits, {config.layers} layers, {config.epochs} epochs, "
          f"batch {config.batch_size}, lr {config.lr}, seed {config.seed}", flush=True)

    def report(s: EpochStats) -> None:
        print(f"epoch {s.epoch:3d}/{config.epochs}  loss {s.loss:.4f}  train acc {s.train_accuracy:.3f}  "
              f"test acc {s.test_accuracy:.3f}  ({s.seconds:.1f}s)", flush=True)

    result = train_classifier(config, on_epoch=report)
    print(f"final train accuracy {result.train_accuracy:.4f} ({result.n_train} samples), "
          f"test accuracy {result.test_accuracy:.4f} ({result.n_test} samples), {result.seconds:.1f}s")
    if out is not None:
        try:
            _save_qnn(out, result)
        except OSError as exc:
            return error(OSError(f"cannot write the trained classifier to {out}: {exc.strerror or exc}"))
        print(f"wrote circuit.json, weights.json, history.json to {out}")
    return 0


def _save_qnn(out: Path, result) -> None:  # type: ignore[no-untyped-def]
    """circuit.json, weights.json and history.json of a :func:`~tinyqml.classifier.train_classifier` result."""
    layer = result.model.quantum
    (out / "circuit.json").write_text(layer.circuit.to_json())
    (out / "weights.json").write_text(json.dumps(layer.weights.detach().tolist()))
    (out / "history.json").write_text(json.dumps([dataclasses.asdict(s) for s in result.history], indent=1))


def _register_cnn(models: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = models.add_parser(
        "cnn", help="the SmallCNN on the 8x8 digits (10 classes), saved for tinyqml prune / quantize",
        description="Train the SmallCNN (conv-BN-ReLU x3, one 2x2 max pool, flatten, linear) on scikit-learn's "
                    "8x8 digits (all 10 classes, stratified train/val/test split), print the loss and the "
                    "validation accuracy after every epoch and the test accuracy, and save a tinyqml model file "
                    "(architecture, widths, weights, split seed, accuracy) that `tinyqml prune` and "
                    "`tinyqml quantize` read.",
        epilog=CNN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--widths", type=widths, default=None, metavar="W1,W2,W3",
                   help="channels of the three convs (default 32,64,64; 8,16,16 with --fast)")
    p.add_argument("--epochs", type=positive_int, default=None, help="training epochs (default 30; 3 with --fast)")
    p.add_argument("--lr", type=positive_float, default=3e-3, help="Adam learning rate, cosine-decayed (default 3e-3)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the initial weights and batch order (default 0)")
    p.add_argument("--data-seed", type=seed, default=0,
                   help="seed of the digits train/val/test split, stored in the file for the next steps (default 0)")
    p.add_argument("--fast", action="store_true", help="widths 8,16,16 and 3 epochs (seconds; for smoke tests)")
    p.add_argument("-o", "--output", default="runs/cnn.pt", metavar="FILE.pt",
                   help="the model file to write (default runs/cnn.pt; folders are created)")
    p.set_defaults(func=_run_cnn)


def cnn_epochs(args: argparse.Namespace) -> int:
    """The number of epochs ``tinyqml train cnn`` arguments ask for."""
    return args.epochs if args.epochs is not None else (FAST_CNN if args.fast else DEFAULT_CNN)[1]


def _run_cnn(args: argparse.Namespace) -> int:
    from tinyqml.classical.costs import profile_net
    from tinyqml.classical.data import DigitsConfig, load_digits_data
    from tinyqml.classical.errors import CompressionError
    from tinyqml.classical.model_file import save_model_file
    from tinyqml.classical.models import SmallCNN, SmallCNNConfig
    from tinyqml.classical.train import TrainConfig, evaluate, train

    sizes = args.widths or (FAST_CNN if args.fast else DEFAULT_CNN)[0]
    epochs = cnn_epochs(args)
    try:
        out = output_file(args.output, "the model file", "cnn.pt")  # before training, not after
        data = load_digits_data(DigitsConfig(seed=args.data_seed))
        config = SmallCNNConfig(widths=tuple(sizes))
        model = SmallCNN(config, seed=args.seed)
        cost = profile_net(model.eval(), data.x_test[:1])
        print(f"SmallCNN widths {','.join(map(str, sizes))}: {cost.macs:,} MACs, {cost.params:,} params; digits "
              f"{len(data.y_train)} train / {len(data.y_val)} val / {len(data.y_test)} test (split seed "
              f"{args.data_seed}); {epochs} epochs, lr {args.lr:g}, seed {args.seed}", flush=True)
        with printed_epochs():
            history = train(model, data, TrainConfig(epochs=epochs, lr=args.lr, seed=args.seed))
        accuracy = evaluate(model, data.x_test, data.y_test)
        print(f"test accuracy {accuracy:.2f}% ({len(data.y_test)} images)")
        metadata = {"data_seed": args.data_seed,
                    "metrics": {"test_accuracy": accuracy, "macs": cost.macs, "params": cost.params},
                    "steps": [{"command": "train cnn", "epochs": epochs, "lr": args.lr, "seed": args.seed,
                               "final_loss": history.loss[-1], "test_accuracy": accuracy}]}
        path = save_model_file(out, model, config, metadata)
    except (CompressionError, OSError) as exc:
        return error(exc)
    print(f"wrote {path}; next: tinyqml prune {path} -o {path.with_name(path.stem + '_pruned.pt')}")
    return 0
