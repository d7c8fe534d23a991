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
import math
from pathlib import Path

from tinyqml.commands.common import (
    ModelAndDigits,
    error,
    fraction,
    non_negative_int,
    open_model_and_digits,
    output_file,
    positive_float,
    positive_int,
    printed_epochs,
    seed,
)

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


def _epochs(n: int) -> str:
    return f"{n} epoch{'s' if n > 1 else ''}"


def _run_prune(args: argparse.Namespace) -> int:
    from tinyqml.classical.errors import CompressionError
    from tinyqml.search import SearchError

    misused = _misused(args)
    if misused:
        return error(CompressionError(misused))
    try:
        src = open_model_and_digits(args.model)
        out = output_file(output_path(args), "the model file", "cnn_pruned.pt")  # before the work, not after
        path = _prune(args, src, out)
    except (CompressionError, SearchError, OSError) as exc:
        return error(exc)
    print(f"wrote {path}; next: tinyqml quantize {path} -o {path.with_name(path.stem + '.tflite')}")
    return 0


def _prune(args: argparse.Namespace, src: ModelAndDigits, out: Path) -> Path:
    """Prune ``src.model`` as ``args`` ask, fine-tune it, print the costs and accuracies, save it at ``out``."""
    from tinyqml.classical.costs import profile_net
    from tinyqml.classical.model_file import config_of, save_model_file
    from tinyqml.classical.train import evaluate

    data, one = src.data, src.data.x_test[:1]
    before = profile_net(src.model, one)
    acc_before = evaluate(src.model, data.x_test, data.y_test)
    print(f"{args.model}: SmallCNN widths {_widths(src.config.widths)}, {before.macs:,} MACs, {before.params:,} "
          f"params; test accuracy {acc_before:.2f}% ({src.split})", flush=True)
    pruned, pruner, settings = (_channel if args.method == "channel" else _magnitude)(args, src)
    acc_pruned = evaluate(pruned, data.x_test, data.y_test)
    print(f"test accuracy after pruning {acc_pruned:.2f}%", flush=True)
    _finetune(args, pruned, data, pruner)
    acc_final = evaluate(pruned, data.x_test, data.y_test)
    after = profile_net(pruned, one)
    _print_costs(before, after, src.model, pruned, pruner)
    tuned = f"after fine-tuning {acc_final:.2f}% ({_epochs(args.finetune)})" if args.finetune else "no fine-tuning"
    print(f"test accuracy: before {acc_before:.2f}%, after pruning {acc_pruned:.2f}%, {tuned}")
    step = {"command": "prune", "method": args.method, **settings, "finetune": args.finetune, "lr": args.lr,
            "seed": args.seed, "test_accuracy_pruned": acc_pruned, "test_accuracy": acc_final}
    steps = src.metadata.get("steps")
    metadata = {**src.metadata, "data_seed": src.data_seed,
                "metrics": {"test_accuracy": acc_final, "macs": after.macs, "params": after.params,
                            "nonzero_params": _nonzero(pruned)},
                "steps": [*(steps if isinstance(steps, list) else []), step]}
    return save_model_file(out, pruned, config_of(pruned), metadata)


def _widths(widths: tuple[int, ...]) -> str:
    return ",".join(map(str, widths))


def _channel(args: argparse.Namespace, src: ModelAndDigits):  # type: ignore[no-untyped-def]
    """``--method channel``: the smaller model (:class:`CompressionError` when it would remove no channel),
    no pruner, the settings."""
    from tinyqml.classical.channel_pruning import ChannelPruneConfig, apply_plan, channel_groups, plan_channels
    from tinyqml.classical.errors import CompressionError
    from tinyqml.classical.model_file import config_of

    ratio = DEFAULT_RATIO if args.ratio is None else args.ratio
    round_to = 1 if args.round_to is None else args.round_to
    example = src.data.x_train[:64]
    groups = channel_groups(src.model, example)

    def plan(ratio: float, round_to: int):  # type: ignore[no-untyped-def]
        return plan_channels(src.model, example, ChannelPruneConfig(ratio=ratio, round_to=round_to), groups)

    chosen = plan(ratio, round_to)
    if _left(chosen) is None:
        raise CompressionError(_removes_nothing(ratio, round_to, src.config.widths, lambda r, n: _left(plan(r, n))))
    pruned = apply_plan(src.model, chosen)
    print(f"channel pruning, ratio {ratio:g}{f', round to {round_to}' if round_to > 1 else ''}: widths "
          f"{_widths(src.config.widths)} -> {_widths(config_of(pruned).widths)}")
    return pruned, None, {"ratio": ratio, "round_to": round_to}


def _left(plan) -> tuple[int, ...] | None:  # type: ignore[no-untyped-def]
    """The conv widths a :class:`~tinyqml.classical.channel_pruning.ChannelPlan` leaves, None when it removes
    no channel."""
    widths = plan.widths().values()
    after = tuple(kept for _, kept in widths)
    return None if after == tuple(before for before, _ in widths) else after


def _removes_nothing(ratio: float, round_to: int, widths: tuple[int, ...], widths_after) -> str:  # type: ignore[no-untyped-def]
    """Why ``--ratio ratio --round-to round_to`` removes no channel of ``widths``, and what to pass instead
    (``widths_after(ratio, round_to)``: the widths left, None when none is removed)."""
    shown = _widths(widths)
    if max(widths) == 1:
        return f"the widths {shown} have no channel to remove: channel pruning keeps at least one per conv"

    def smaller_round_to(ratio: float) -> str:
        # powers of two (the usual SIMD-friendly multiples) below round_to; 1 always removes when ratio does
        r = next(r for r in (2 ** k for k in range(round_to.bit_length(), -1, -1))
                 if r < round_to and widths_after(ratio, r) is not None)
        return f"--round-to {r} (widths {_widths(widths_after(ratio, r))})"

    if round_to > 1 and widths_after(ratio, 1) is not None:
        return (f"--ratio {ratio:g} with --round-to {round_to} removes no channel of the widths {shown}: rounded up "
                f"to a multiple of {round_to}, every conv keeps all its channels; pass a smaller "
                f"{smaller_round_to(ratio)}")
    least = math.ceil(500 / max(widths)) / 1000  # removes one channel of the widest conv at --round-to 1
    hint = f"--ratio {least:g} or more"
    if round_to > 1 and widths_after(least, round_to) is None:
        hint += f" with {smaller_round_to(least)}"
    return (f"--ratio {ratio:g} removes no channel of the widths {shown}: {ratio:g} of a conv's channels rounds "
            f"to none; pass {hint}")


def _magnitude(args: argparse.Namespace, src: ModelAndDigits):  # type: ignore[no-untyped-def]
    """``--method magnitude``: a copy with the smallest weights zeroed, its pruner (masks held while
    fine-tuning), the settings."""
    import copy

    from tinyqml.classical.pruning import FineGrainedConfig, FineGrainedPruner

    sparsity = DEFAULT_SPARSITY if args.sparsity is None else args.sparsity
    scope = args.scope or "global"
    pruned = copy.deepcopy(src.model)
    pruner = FineGrainedPruner(pruned, FineGrainedConfig(sparsity=sparsity, scope=scope))
    pruner.apply()
    print(f"magnitude pruning, {scope} sparsity {sparsity:g} of the conv/linear weights")
    return pruned, pruner, {"sparsity": sparsity, "scope": scope}


def _finetune(args: argparse.Namespace, pruned, data, pruner) -> None:  # type: ignore[no-untyped-def]
    """``--finetune`` epochs (the pruner's masks held), then the masks baked in; ``pruned`` left in eval mode."""
    from tinyqml.classical.train import TrainConfig, train

    if args.finetune:
        print(f"fine-tuning {_epochs(args.finetune)}, lr {args.lr:g}, seed {args.seed}", flush=True)
        with printed_epochs("  "):
            train(pruned, data, TrainConfig(epochs=args.finetune, lr=args.lr, seed=args.seed),
                  on_step=pruner.on_step if pruner is not None else None)
    if pruner is not None:
        pruner.squash()
    pruned.eval()


def _print_costs(before, after, dense, pruned, pruner) -> None:  # type: ignore[no-untyped-def]
    """MACs and parameters before and after (and the nonzero weights of magnitude pruning)."""
    from tinyqml.classical.pruning import sparsity_report

    if pruner is None:
        print(f"MACs {before.macs:,} -> {after.macs:,} ({before.macs / max(1, after.macs):.2f}x fewer)")
        print(f"params {before.params:,} -> {after.params:,} ({before.params / max(1, after.params):.2f}x fewer)")
        return
    report = sparsity_report(pruned)
    print(f"MACs {before.macs:,} -> {after.macs:,} (unchanged: the zeros are still multiplied; --method "
          f"channel removes MACs)")
    print(f"params {before.params:,} -> {after.params:,}, nonzero {_nonzero(dense):,} -> {_nonzero(pruned):,} "
          f"(conv/linear weights {100 * report.sparsity:.1f}% zero)")
