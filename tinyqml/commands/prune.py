"""``tinyqml prune MODEL.pt -o OUT.pt``: prune a ``tinyqml train cnn`` model and fine-tune it.

``--method channel`` (default) removes whole channels
(:func:`~tinyqml.classical.channel_pruning.prune_channels`): the result is a smaller SmallCNN
with fewer MACs. ``--method magnitude`` zeroes the smallest weights
(:class:`~tinyqml.classical.pruning.FineGrainedPruner`, masks kept during fine-tuning, then baked
in): same architecture and MACs, fewer nonzero weights. Accuracies are measured on the digits
test split of the seed stored in the model file.

>>> from tinyqml.cli import build_parser
>>> args = build_parser().parse_args(["prune", "runs/cnn.pt", "--ratio", "0.25"])
>>> args.method, args.ratio, args.finetune, str(output_path(args))
('channel', 0.25, 3, 'runs/cnn_pruned.pt')
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tinyqml.commands.common import error, fraction, non_negative_int, positive_float, positive_int, seed

__all__ = ["register", "output_path"]

PRUNE_EXAMPLES = """\
examples:
  tinyqml prune runs/cnn.pt -o runs/cnn_pruned.pt --ratio 0.5           # half the channels of each conv
  tinyqml prune runs/cnn.pt --ratio 0.5 --round-to 4 --finetune 8       # widths multiples of 4, longer fine-tune
  tinyqml prune runs/cnn.pt -o runs/cnn_sparse.pt --method magnitude --sparsity 0.8
then: tinyqml quantize runs/cnn_pruned.pt -o runs/cnn.tflite
"""

#: defaults of the method-specific options (None on the command line: not given)
DEFAULT_RATIO, DEFAULT_SPARSITY = 0.5, 0.75


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``tinyqml prune`` to the sub-parsers ``sub``."""
    p = sub.add_parser(
        "prune", help="prune a SmallCNN model file (channels or weights) and fine-tune it",
        description="Read a model file of `tinyqml train cnn`, prune it, fine-tune it on the digits and save "
                    "it as a model file again. channel: remove the lowest-norm channels of every conv (with "
                    "their BatchNorm and the matching inputs of the next layer): a smaller dense model with "
                    "fewer MACs. magnitude: zero the smallest weights of the convs and the linear layer (masks "
                    "held during fine-tuning, then baked in): same shapes and MACs, fewer nonzero weights. "
                    "Prints MACs and parameters before and after, and the test accuracy before pruning, after "
                    "pruning and after fine-tuning.",
        epilog=PRUNE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="the model file to prune (from tinyqml train cnn or tinyqml prune)")
    p.add_argument("-o", "--output", default=None, metavar="OUT.pt",
                   help="the pruned model file to write (default: MODEL_pruned.pt next to MODEL)")
    p.add_argument("--method", choices=["channel", "magnitude"], default="channel",
                   help="channel: remove whole channels (default); magnitude: zero single weights")
    p.add_argument("--ratio", type=fraction, default=None,
                   help=f"channel: fraction of each conv's channels removed, in [0, 1) (default {DEFAULT_RATIO})")
    p.add_argument("--round-to", type=positive_int, default=None, metavar="N",
                   help="channel: keep a multiple of N channels per conv (default 1)")
    p.add_argument("--sparsity", type=fraction, default=None,
                   help=f"magnitude: fraction of the conv/linear weights zeroed, in [0, 1) (default "
                        f"{DEFAULT_SPARSITY})")
    p.add_argument("--scope", choices=["global", "local"], default=None,
                   help="magnitude: one ranking over all layers (global, default) or each layer to the sparsity")
    p.add_argument("--finetune", type=non_negative_int, default=3, metavar="EPOCHS",
                   help="fine-tuning epochs after pruning (default 3; 0: none)")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="fine-tuning learning rate (default 1e-3)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the fine-tuning batch order (default 0)")
    p.set_defaults(func=_run_prune)


def output_path(args: argparse.Namespace) -> Path:
    """``-o``, else ``MODEL_pruned.pt`` next to the input."""
    if args.output is not None:
        return Path(args.output)
    model = Path(args.model)
    return model.with_name(f"{model.stem}_pruned.pt")


def _misused(args: argparse.Namespace) -> str | None:
    """The options given that the chosen ``--method`` does not take, as a sentence."""
    if args.method == "channel":
        wrong = [o for o, v in (("--sparsity", args.sparsity), ("--scope", args.scope)) if v is not None]
        other = "magnitude"
    else:
        wrong = [o for o, v in (("--ratio", args.ratio), ("--round-to", args.round_to)) if v is not None]
        other = "channel"
    if not wrong:
        return None
    return f"{' and '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} for --method {other}, not --method {args.method}"


def _nonzero(model) -> int:  # type: ignore[no-untyped-def]
    return sum(int((p != 0).sum()) for p in model.parameters())


def _run_prune(args: argparse.Namespace) -> int:
    import copy

    from tinyqml.classical.channel_pruning import ChannelPruneConfig, prune_channels
    from tinyqml.classical.costs import profile_net
    from tinyqml.classical.data import DigitsConfig, load_digits_data
    from tinyqml.classical.errors import CompressionError
    from tinyqml.classical.model_file import config_of, save_model_file
    from tinyqml.classical.pruning import FineGrainedConfig, FineGrainedPruner, sparsity_report
    from tinyqml.classical.train import TrainConfig, evaluate, train
    from tinyqml.commands.common import open_model_file, printed_epochs, split_seed
    from tinyqml.search import SearchError

    misused = _misused(args)
    if misused:
        return error(CompressionError(misused))
    out = output_path(args)
    if out.is_dir():
        return error(CompressionError(f"{out} is a directory; give the model file to write, e.g. -o "
                                      f"{out / 'cnn_pruned.pt'}"))
    try:
        model, config, metadata = open_model_file(args.model)
        named = split_seed(metadata, args.model)
        data_seed = 0 if named is None else named
        data = load_digits_data(DigitsConfig(seed=data_seed))
        one = data.x_test[:1]
        before = profile_net(model, one)
        acc_before = evaluate(model, data.x_test, data.y_test)
        print(f"{args.model}: SmallCNN widths {','.join(map(str, config.widths))}, {before.macs:,} MACs, "
              f"{before.params:,} params; test accuracy {acc_before:.2f}% ({len(data.y_test)} images, digits "
              f"split seed {data_seed}{'' if named is not None else ': the file names none'})", flush=True)
        pruner = None
        if args.method == "channel":
            ratio = DEFAULT_RATIO if args.ratio is None else args.ratio
            round_to = 1 if args.round_to is None else args.round_to
            result = prune_channels(model, data.x_train[:64], ChannelPruneConfig(ratio=ratio, round_to=round_to))
            pruned = result.model
            settings = {"ratio": ratio, "round_to": round_to}
            print(f"channel pruning, ratio {ratio:g}{f', round to {round_to}' if round_to > 1 else ''}: widths "
                  f"{','.join(map(str, config.widths))} -> {','.join(map(str, config_of(pruned).widths))}")
        else:
            sparsity = DEFAULT_SPARSITY if args.sparsity is None else args.sparsity
            scope = args.scope or "global"
            pruned = copy.deepcopy(model)
            pruner = FineGrainedPruner(pruned, FineGrainedConfig(sparsity=sparsity, scope=scope))
            pruner.apply()
            settings = {"sparsity": sparsity, "scope": scope}
            print(f"magnitude pruning, {scope} sparsity {sparsity:g} of the conv/linear weights")
        acc_pruned = evaluate(pruned, data.x_test, data.y_test)
        print(f"test accuracy after pruning {acc_pruned:.2f}%", flush=True)
        if args.finetune:
            print(f"fine-tuning {args.finetune} epoch{'s' if args.finetune > 1 else ''}, lr {args.lr:g}, seed {args.seed}", flush=True)
            with printed_epochs("  "):
                train(pruned, data, TrainConfig(epochs=args.finetune, lr=args.lr, seed=args.seed),
                      on_step=pruner.on_step if pruner is not None else None)
        if pruner is not None:
            pruner.squash()
        pruned.eval()
        acc_final = evaluate(pruned, data.x_test, data.y_test)
        after = profile_net(pruned, one)
        new_config = config_of(pruned)
        if pruner is None:
            print(f"MACs {before.macs:,} -> {after.macs:,} ({before.macs / max(1, after.macs):.2f}x fewer)")
            print(f"params {before.params:,} -> {after.params:,} ({before.params / max(1, after.params):.2f}x fewer)")
        else:
            report = sparsity_report(pruned)
            print(f"MACs {before.macs:,} -> {after.macs:,} (unchanged: the zeros are still multiplied; --method "
                  f"channel removes MACs)")
            print(f"params {before.params:,} -> {after.params:,}, nonzero {_nonzero(model):,} -> {_nonzero(pruned):,} "
                  f"(conv/linear weights {100 * report.sparsity:.1f}% zero)")
        tuned = (f"after fine-tuning {acc_final:.2f}% ({args.finetune} epoch{'s' if args.finetune > 1 else ''})"
                 if args.finetune else "no fine-tuning")
        print(f"test accuracy: before {acc_before:.2f}%, after pruning {acc_pruned:.2f}%, {tuned}")
        steps = metadata.get("steps")
        step = {"command": "prune", "method": args.method, **settings, "finetune": args.finetune, "lr": args.lr,
                "seed": args.seed, "test_accuracy_pruned": acc_pruned, "test_accuracy": acc_final}
        new_metadata = {**metadata, "data_seed": data_seed,
                        "metrics": {"test_accuracy": acc_final, "macs": after.macs, "params": after.params,
                                    "nonzero_params": _nonzero(pruned)},
                        "steps": [*(steps if isinstance(steps, list) else []), step]}
        path = save_model_file(out, pruned, new_config, new_metadata)
    except (CompressionError, SearchError) as exc:
        return error(exc)
    print(f"wrote {path}; next: tinyqml quantize {path} -o {path.with_name(path.stem + '.tflite')}")
    return 0
