"""One run from a once-for-all supernet to MCU code: train, predict, search under constraints, deploy.

:func:`run_nas` is what ``tinyqml nas`` runs (MCUNet's TinyNAS flow on the digits):

1. the constraints are checked against the cost model first (an unknown cost name is
   :class:`~tinyqml.search.UnknownConstraintError` before anything is trained);
2. the supernet (:class:`~tinyqml.classical.supernet.OFAMobileNetV2`) is trained with the sandwich
   rule (or loaded from a checkpoint);
3. ``n_samples`` random sub-networks are measured on the validation split (shared weights,
   BatchNorm re-estimated) and an :class:`~tinyqml.classical.acc_predictor.AccuracyPredictor` is
   fitted on them; its rank correlation is measured on a held-out quarter;
4. :func:`~tinyqml.classical.nas.search_architecture` (the shared engine's constraint-aware
   evolution) maximises the predicted accuracy under the constraints on MACs, parameters, peak SRAM
   (the code generator's planner) and, with a measured latency table, latency;
5. the winner is deployed by :func:`~tinyqml.classical.nas_deploy.deploy_arch`: extracted,
   fine-tuned, quantized, exported to TFLite, compiled to C and checked against TFLite Micro.

Everything lands in ``out_dir``: ``supernet.pt``, ``samples.json``, ``predictor.pt``, ``search.json``,
``pareto.png``, ``deploy/`` (``model.tflite``, ``c/``, ``model.pt``) and ``report.md`` / ``report.json``.

>>> import tempfile
>>> from tinyqml.search import UnknownConstraintError
>>> try:
...     run_nas(FAST, tempfile.mkdtemp(), constraints=["macs<=200k", "flash<=1M"])
... except UnknownConstraintError as exc:
...     print(str(exc).split(";")[0])
unknown cost 'flash' in a constraint
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch

from tinyqml.classical.acc_predictor import AccuracyPredictor, AccuracyPredictorConfig, RankCorrelation, \
    split_rank_correlation
from tinyqml.classical.arch import Arch, NASError, SupernetConfig, sample_arch
from tinyqml.classical.data import DigitsConfig, load_digits_data
from tinyqml.classical.efficiency import efficiency_costs
from tinyqml.classical.nas import NASResult, NASSearchConfig, NoFeasibleArchError, parse_constraints, plot_pareto_nas, search_architecture
from tinyqml.classical.nas_deploy import DeployConfig, DeployResult, deploy_arch
from tinyqml.classical.ofa_train import OFATrainConfig, evaluate_arch, train_supernet
from tinyqml.classical.supernet import OFAMobileNetV2
from tinyqml.classical.train import TrainConfig
from tinyqml.search import Constraint

__all__ = ["NASRunConfig", "NASRunResult", "FAST", "run_nas", "measure_subnets"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NASRunConfig:
    """Every setting of a :func:`run_nas` run.

    Attributes:
        supernet: the search space. train: the supernet's training.
        n_samples: sub-networks measured to fit the accuracy predictor. predictor: its MLP.
        constraints: ``"cost<=bound"`` strings or :class:`~tinyqml.search.Constraint` s on ``macs``,
            ``params``, ``peak_sram`` (bytes) and, with ``latency_table``, ``latency`` (ms).
        search: the evaluation budget, strategy and seed. deploy: fine-tuning, int8, C, the check.
        latency_table: a JSON file of a measured :class:`~tinyqml.classical.latency_table.LatencyTable`.
        data: the digits split (a larger validation split than usual: sub-networks differ by a few
            images, and the predictor learns from validation accuracies). seed: the sampled sub-networks'.
    """

    supernet: SupernetConfig = SupernetConfig()
    train: OFATrainConfig = OFATrainConfig(epochs=30)
    n_samples: int = 200
    predictor: AccuracyPredictorConfig = AccuracyPredictorConfig(hidden=(64,), epochs=300)
    constraints: tuple[str | Constraint, ...] = ("macs<=600k", "peak_sram<=24k")
    search: NASSearchConfig = NASSearchConfig(n_trials=300)
    deploy: DeployConfig = DeployConfig()
    latency_table: str | None = None
    data: DigitsConfig = DigitsConfig(val=0.3, test=0.2)
    seed: int = 0

    def __post_init__(self) -> None:
        kinds = (("supernet", SupernetConfig), ("train", OFATrainConfig), ("predictor", AccuracyPredictorConfig),
                 ("search", NASSearchConfig), ("deploy", DeployConfig), ("data", DigitsConfig))
        for name, kind in kinds:
            if not isinstance(getattr(self, name), kind):
                raise NASError(f"NASRunConfig.{name} must be a {kind.__name__}, got {type(getattr(self, name)).__name__}")
        if isinstance(self.n_samples, bool) or not isinstance(self.n_samples, int) or self.n_samples < 8:
            raise NASError(f"NASRunConfig.n_samples must be an int >= 8 (predictor training pairs), got "
                           f"{self.n_samples!r}")
        object.__setattr__(self, "constraints", parse_constraints(self.constraints))


#: seconds instead of minutes: a short training, few samples, a small search (for smoke tests)
FAST = NASRunConfig(train=OFATrainConfig(epochs=3), n_samples=24,
                    predictor=AccuracyPredictorConfig(hidden=(64,), epochs=100),
                    search=NASSearchConfig(n_trials=40), deploy=DeployConfig(finetune=TrainConfig(epochs=2, lr=1e-3),
                                                                             verify_images=16))


@dataclass(frozen=True, eq=False)
class NASRunResult:
    """What a run produced: the supernet, the measured samples, the predictor and its held-out rank
    correlation, the search, the deployed sub-network and the report's path."""

    supernet: OFAMobileNetV2
    samples: tuple[tuple[Arch, float], ...]
    predictor: AccuracyPredictor
    correlation: RankCorrelation
    search: NASResult
    deployed: DeployResult
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)

    def summary(self) -> str:
        cfg = self.supernet.config
        best = self.search.best
        costs = ", ".join(f"{k} {v:,.0f}" for k, v in sorted(best.costs.items()))
        return (f"chose {best.arch.describe(cfg)} ({costs}); predicted {best.score:.2f}%, "
                f"{self.deployed.summary()}; predictor Spearman {self.correlation.spearman:.3f} on "
                f"{self.correlation.n} held-out sub-networks")


def measure_subnets(net: OFAMobileNetV2, data: object, n: int, seed: int = 0) -> list[tuple[Arch, float]]:
    """``n`` random sub-networks (drawn with ``torch.Generator().manual_seed(seed)``, distinct) and their
    validation accuracy (%) with the shared weights."""
    g = torch.Generator().manual_seed(seed)
    seen: dict[Arch, float] = {}
    for _ in range(50 * n):
        if len(seen) == n:
            break
        arch = sample_arch(net.config, g).canonical(net.config)
        if arch not in seen:
            seen[arch] = evaluate_arch(net, arch, data)
    if len(seen) < n:
        raise NASError(f"found only {len(seen)} distinct sub-networks in {50 * n} draws, {n} wanted; the space is "
                       f"too small for n_samples={n}")
    return list(seen.items())


def _supernet(config: NASRunConfig, data: object, path: Path, checkpoint: str | os.PathLike | None,
              stage: Callable[[str], None]) -> OFAMobileNetV2:
    net = OFAMobileNetV2(config.supernet, seed=config.seed)
    if checkpoint is not None:
        stage(f"loading the supernet from {checkpoint}")
        try:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        except Exception as exc:  # missing, corrupt (UnpicklingError), not a state dict, another config
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise NASError(f"cannot load a supernet of this configuration from {str(checkpoint)!r}: "
                           f"{type(exc).__name__}: {reason}") from exc
        return net.eval()
    stage(f"training the supernet ({config.train.epochs} epochs, sandwich rule + in-place distillation)")
    train_supernet(net, data, config.train)
    torch.save(net.state_dict(), path)
    return net


def _precheck(costs, config: NASRunConfig, n: int = 300) -> None:  # type: ignore[no-untyped-def]
    """Refuse constraints no sampled architecture meets before anything is trained."""
    cfg = config.supernet
    g = torch.Generator().manual_seed(config.seed)
    archs = [cfg.smallest(), cfg.largest()] + [sample_arch(cfg, g) for _ in range(n)]
    if any(costs.feasible(a, config.constraints) for a in archs):
        return
    ranges = {c.cost: [costs.cost(c.cost, a) for a in archs] for c in config.constraints}
    seen = ", ".join(f"{k} {min(v):,.0f}..{max(v):,.0f}" for k, v in ranges.items())
    raise NoFeasibleArchError(f"none of the smallest, the largest and {n} random architectures satisfies "
                              f"{', '.join(map(_text, config.constraints))} (their range: {seen}); loosen the "
                              f"constraints")


def _require_back_end(config: NASRunConfig) -> None:
    """The tools the last stages need, checked before anything is trained."""
    from tinyqml.classical.optional import require

    require("matplotlib", purpose="the Pareto plot of tinyqml nas", install="pip install matplotlib")
    if config.deploy.verify_images:
        from tinyqml.classical.mcu import require_tools
        from tinyqml.classical.optional import TFLITE_INSTALL

        require_tools("gcc")
        require("tflite_micro", purpose="checking the generated C against TFLite Micro", install=TFLITE_INSTALL)


def _costs(config: NASRunConfig):  # type: ignore[no-untyped-def]
    table = None
    if config.latency_table is not None:
        from tinyqml.classical.latency_table import LatencyTable

        table = LatencyTable.load(config.latency_table)
    costs = efficiency_costs(config.supernet, table)
    costs.check(config.constraints)
    _precheck(costs, config)
    _require_back_end(config)
    return costs


def _report(result: NASRunResult, config: NASRunConfig) -> dict[str, object]:
    cfg = config.supernet
    best = result.search.best
    dep = result.deployed
    return {"chosen": {"arch": best.arch.params(), "describe": best.arch.describe(cfg), "predicted_accuracy": best.score,
                       "costs": dict(best.costs)},
            "constraints": [asdict(c) for c in result.search.constraints],
            "predictor": {"spearman": result.correlation.spearman, "kendall": result.correlation.kendall,
                          "held_out": result.correlation.n, "samples": len(result.samples)},
            "search": {"trials": len(result.search.trials), "feasible": len(result.search.feasible_trials())},
            "deployed": {"shared_accuracy": dep.shared_accuracy, "finetuned_accuracy": dep.finetuned_accuracy,
                         "int8_accuracy": dep.int8_accuracy, "macs": dep.macs, "params": dep.params,
                         "peak_sram_bytes": dep.codegen.peak_sram_bytes, "flash_bytes": dep.codegen.flash_bytes,
                         "verified_equal": dep.verified_equal, "verified_total": dep.verified_total,
                         "tflite": str(dep.tflite_path), "c_dir": str(dep.c_dir)}}


def _write(result: NASRunResult, config: NASRunConfig) -> None:
    out = result.out_dir
    files = result.files
    files["samples"] = out / "samples.json"
    files["samples"].write_text(json.dumps([{"arch": a.params(), "accuracy": acc} for a, acc in result.samples]))
    files["search"] = out / "search.json"
    files["search"].write_text(json.dumps([{"number": t.number, "arch": t.arch.params(), "score": t.score,
                                            "costs": dict(t.costs), "feasible": t.feasible}
                                           for t in result.search.trials]))
    plot_pareto_nas(result.search, out / "pareto.png", cost="macs")
    files["pareto"] = out / "pareto.png"
    report = _report(result, config)
    files["report_json"] = out / "report.json"
    files["report_json"].write_text(json.dumps(report, indent=2))
    files["report"] = out / "report.md"
    files["report"].write_text("# tinyqml nas\n\n" + result.summary() + "\n\n```json\n" + json.dumps(report, indent=2)
                               + "\n```\n")


def run_nas(config: NASRunConfig = NASRunConfig(), out_dir: str | os.PathLike = "runs/nas",
            constraints: Iterable[str | Constraint] | None = None, supernet: str | os.PathLike | None = None,
            on_stage: Callable[[str], None] | None = None) -> NASRunResult:
    """Run the whole flow (``constraints`` overrides ``config.constraints``; ``supernet`` is a checkpoint
    to load instead of training); ``on_stage(message)`` hears of every stage."""
    if not isinstance(config, NASRunConfig):
        raise NASError(f"config must be a NASRunConfig, got {type(config).__name__}")
    if constraints is not None:
        config = replace(config, constraints=parse_constraints(constraints))
    stage = on_stage or (lambda message: log.info("%s", message))
    costs = _costs(config)  # unknown constraint names fail here, before any training
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = load_digits_data(config.data)
    net = _supernet(config, data, out / "supernet.pt", supernet, stage)
    stage(f"measuring {config.n_samples} random sub-networks for the accuracy predictor")
    samples = measure_subnets(net, data, config.n_samples, config.seed)
    archs, accs = [a for a, _ in samples], [acc for _, acc in samples]
    if len(set(accs)) < 2:
        raise NASError(f"all {len(accs)} sampled sub-networks have the same validation accuracy ({accs[0]:.2f}%); "
                       f"nothing to rank: train the supernet longer (--epochs) or sample more (--samples)")
    split = split_rank_correlation(archs, accs, config.supernet, config.predictor, seed=config.seed)
    predictor = AccuracyPredictor(config.supernet, config.predictor).fit(archs, accs)
    predictor.save(out / "predictor.pt")
    stage(f"predictor: Spearman {split.test.spearman:.3f} on {split.n_test} held-out sub-networks; searching "
          f"{config.search.n_trials} trials under {', '.join(_text(c) for c in config.constraints) or 'no constraints'}")
    found = search_architecture(predictor, config.supernet, costs, config.constraints, config.search)
    stage(f"deploying {found.best_arch.describe(config.supernet)}: fine-tune, int8, TFLite, C")
    deployed = deploy_arch(net, found.best_arch, data, out / "deploy", config.deploy)
    result = NASRunResult(net, tuple(samples), predictor, split.test, found, deployed, out,
                          {"supernet": Path(supernet) if supernet is not None else out / "supernet.pt",
                           "predictor": out / "predictor.pt"})
    _write(result, config)
    return result


def _text(c: Constraint) -> str:
    parts: Sequence[str] = ([f"{c.cost}<={c.max:g}"] if c.max is not None else []) + (
        [f"{c.cost}>={c.min:g}"] if c.min is not None else [])
    return " and ".join(parts)
