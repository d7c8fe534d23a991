"""``tinyqml nas``: once-for-all NAS on the digits under MACs/SRAM constraints, then C (:mod:`tinyqml.classical.nas_pipeline`).

>>> from tinyqml.cli import build_parser
>>> args = build_parser().parse_args(["nas", "--fast", "-c", "macs<=300k", "-c", "peak_sram<=16k", "--seed", "2"])
>>> args.constraint, args.output, args.strategy, args.seed
(['macs<=300k', 'peak_sram<=16k'], 'runs/nas', 'evolution', 2)
>>> config = run_config(args)
>>> [(c.cost, c.max) for c in config.constraints], config.seed, config.search.seed
([('macs', 300000), ('peak_sram', 16000)], 2, 2)
"""

from __future__ import annotations

import argparse
import dataclasses

from tinyqml.commands.common import error, positive_int, quiet_logging, seed

__all__ = ["register"]

NAS_EXAMPLES = """\
examples:
  tinyqml nas --fast -o runs/nas                                   # a minute: short training, small search
  tinyqml nas -c "macs<=300k" -c "peak_sram<=16k" -o runs/nas      # full run (tens of minutes on 2 cores)
  tinyqml nas --supernet runs/nas/supernet.pt -c "macs<=150k"       # reuse a trained supernet
  tinyqml nas --latency-table table.json -c "latency<=0.5"          # latency (ms) from a measured table
costs: macs, params, peak_sram (bytes of the generated C: arena + scratch), latency (ms, needs --latency-table)
"""


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``tinyqml nas`` to the sub-parsers ``sub``."""
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
    p.add_argument("--epochs", type=positive_int, default=None, help="supernet training epochs")
    p.add_argument("--samples", type=positive_int, default=None, help="sub-networks measured for the predictor")
    p.add_argument("--trials", type=positive_int, default=None, help="search budget (evaluated architectures)")
    p.add_argument("--strategy", choices=["evolution", "random"], default="evolution", help="search strategy")
    p.add_argument("--seed", type=seed, default=0, help="seed of training, samples and search (default 0)")
    p.set_defaults(func=_run_nas)


def run_config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
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
    from tinyqml.classical.errors import CompressionError
    from tinyqml.classical.nas_pipeline import run_nas
    from tinyqml.search import SearchError

    quiet_logging()
    try:
        config = run_config(args)
        result = run_nas(config, args.output, supernet=args.supernet, on_stage=lambda m: print(m, flush=True))
    except (CompressionError, SearchError, OSError) as exc:
        return error(exc)
    print(result.summary())
    print(f"wrote {', '.join(sorted(p.name for p in result.out_dir.iterdir()))} to {result.out_dir}")
    print(f"C sources: {result.deployed.c_dir}")
    return 0
