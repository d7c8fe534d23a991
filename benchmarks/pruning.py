"""Pruning on the 8×8 digits: fine-grained to 90% sparsity, channel pruning to half the MACs, and
distillation, against ``torch.nn.utils.prune`` and ``torch_pruning`` measured in the same run.

Setup (GitHub issue 6):

- data: scikit-learn's 10-class 8×8 digits (``tinyqml.classical.data``), pixels / 16,
  stratified 65/15/20 train/validation/test split (1167 / 270 / 360 images) with the
  seed of the run; accuracy is on the 360 test images (1 image = 0.28 points);
- model: ``SmallCNN`` (conv-BN-ReLU ×3, 3×3, widths ``--widths`` 32/64/64, a 2×2 max
  pool after the second conv, flatten, ``Linear(64·16, 10)``), built and trained with
  the run's seed: ``--epochs`` (30) epochs of Adam, lr 3e-3, cosine decay, batch 64;
- fine-tuning budget, the same for every pruned model: ``--ft-epochs`` (15) epochs of
  Adam, lr 1e-3, cosine decay, batch 64;
- fine-grained (``tinyqml.classical.pruning``): global magnitude ranking of all
  Conv/Linear weights (``Element`` targets on the ``tinyqml.search`` pruner), 90%
  sparsity, AGP schedule during fine-tuning (cubic ramp over the first ``--agp-end``
  (50%) of the steps, updated every ``--agp-every`` (1) epoch), masks kept by the
  parametrization;
  also one-shot to 90% then fine-tuning. Anchor: ``torch.nn.utils.prune.global_unstructured``
  (``L1Unstructured``, 90%, one-shot) with the same fine-tuning;
- channel pruning (``tinyqml.classical.channel_pruning``): fx-traced coupled groups,
  joint L2 norm ranking through the engine, a uniform ratio found by bisection so the
  MACs are at most half (``ratio_for_macs``), widths rounded up to multiples of
  ``--round-to`` (8),
  channels physically removed, then fine-tuning. Anchor: ``torch_pruning`` 1.6
  ``MetaPruner`` with ``GroupMagnitudeImportance(p=2)``, the classifier ignored, a
  per-layer ratio giving every group the width ours kept (so the same MACs: its uniform
  ratio with ``round_to=8`` only reaches 24/48/48 = 1.77x or 16/40/40 = 2.93x here);
  same fine-tuning. Also ``TinyMobileNetV2`` (inverted residual blocks, depthwise
  convs, three residual adds) trained ``--epochs`` epochs and pruned the same way to at
  most half the MACs, widths multiples of ``--mb-round-to`` (4: its widths are small),
  fine-tuned ``--ft-epochs`` epochs at lr ``--mb-ft-lr`` (3e-3, its training lr; at
  1e-3 it recovers about 1.5 points less);
- distillation (``tinyqml.classical.distill``): the channel-pruned students (at most
  1/2 and 1/4 of the MACs) fine-tuned with the same budget with KD from the dense
  model (T = 4, alpha = 0.9; T = 2, alpha = 0.5) and without;
- latency: torch CPU inference, ``torch.set_num_threads(1)``, eval mode,
  ``inference_mode``, random input of batch 256 and batch 1, 10 warmup calls, then
  ``--rounds`` rounds calling every compared model once per round, in a seeded random
  order (interleaved, so load changes hit all alike; shuffled, since a fixed order
  biases by position); the median per model, then the median over seeds.
  MACs and parameters: ``tinyqml.classical.costs.profile_net`` on one image.

    .venv/bin/python benchmarks/pruning.py            # full run (~10 min on 2 shared cores)
    .venv/bin/python benchmarks/pruning.py --fast     # smoke run: 1 seed, small and short

Prints markdown tables and writes ``benchmarks/results/pruning.md`` and ``.json``
(``--fast``: ``pruning_fast.*``).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from machine import cpu_model, load_average
from torch import nn

RESULTS = Path(__file__).resolve().parent / "results"
SEEDS = (0, 1, 2)
SPARSITY = 0.9
MACS_FRACTION = 0.5
KD_FRACTIONS = (0.5, 0.25)
MAX_DROP = 1.0
MIN_SPEEDUP = 1.3


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- training


def _configs(args, seed: int):
    from tinyqml.classical.train import TrainConfig

    dense = TrainConfig(epochs=args.epochs, lr=3e-3, batch_size=64, seed=seed)
    ft = TrainConfig(epochs=args.ft_epochs, lr=1e-3, batch_size=64, seed=seed)
    return dense, ft


def _acc(model: nn.Module, data) -> float:
    from tinyqml.classical.train import evaluate

    return evaluate(model, data.x_test, data.y_test)


def fine_grained(dense: nn.Module, data, ft, args) -> dict[str, Any]:
    """AGP and one-shot on the engine; torch.nn.utils.prune as the anchor."""
    from torch.nn.utils import prune

    from tinyqml.classical.pruning import FineGrainedConfig, FineGrainedPruner, prunable_layers, sparsity_report
    from tinyqml.classical.train import train
    from tinyqml.search import AGP

    out: dict[str, Any] = {}
    per_epoch = math.ceil(len(data.y_train) / ft.batch_size)
    steps = ft.epochs * per_epoch
    agp = AGP(final=SPARSITY, start=0, end=max(1, int(args.agp_end * steps)),
              frequency=max(1, args.agp_every * per_epoch))
    net = copy.deepcopy(dense)
    pruner = FineGrainedPruner(net, FineGrainedConfig(sparsity=SPARSITY, scope="global"), agp)
    t0 = time.perf_counter()
    train(net, data, ft, on_step=pruner.on_step)
    out["agp"] = {"acc": _acc(net, data), "sparsity": sparsity_report(net).sparsity,
                  "seconds": time.perf_counter() - t0, "model_masked": copy.deepcopy(net)}
    pruner.squash()
    out["agp"].update(acc_squashed=_acc(net, data), sparsity_squashed=sparsity_report(net).sparsity,
                      model=net, layers=[(r.name, r.total, r.sparsity) for r in sparsity_report(net).layers])

    net = copy.deepcopy(dense)
    pruner = FineGrainedPruner(net, FineGrainedConfig(sparsity=SPARSITY, scope="global"))
    pruner.apply()
    ours_masks = [t.mask.mask.clone() for t in pruner.targets]
    oneshot_acc = _acc(net, data)
    train(net, data, ft, on_step=pruner.on_step)
    out["oneshot"] = {"acc_before_ft": oneshot_acc, "acc": _acc(net, data), "sparsity": sparsity_report(net).sparsity}

    anchor = copy.deepcopy(dense)
    params = [(m, "weight") for m in prunable_layers(anchor).values()]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=SPARSITY)
    same = all(torch.equal(a, m.weight_mask) for a, (m, _) in zip(ours_masks, params))
    anchor_before = _acc(anchor, data)
    train(anchor, data, ft)
    out["torch"] = {"acc_before_ft": anchor_before, "acc": _acc(anchor, data),
                    "sparsity": sparsity_report(anchor).sparsity, "same_masks_as_ours": same,
                    "model_masked": copy.deepcopy(anchor)}
    for m, name in params:
        prune.remove(m, name)
    out["torch"]["model"] = anchor
    return out


def _tp_prune(dense: nn.Module, example: torch.Tensor, widths: dict[str, tuple[int, int]]) -> nn.Module:
    """torch_pruning with a per-layer ratio that gives each group the width ours kept."""
    import torch_pruning as tp

    model = copy.deepcopy(dense)
    classifier = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    ratios = {model.get_submodule(name): 1 - after / before for name, (before, after) in widths.items()}
    pruner = tp.pruner.MetaPruner(model, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  pruning_ratio=0.0, pruning_ratio_dict=ratios, ignored_layers=[classifier])
    pruner.step()
    return model


def channel(dense: nn.Module, data, ft, fraction: float, round_to: int) -> dict[str, Any]:
    """Our channel pruning to at most ``fraction`` of the MACs, then fine-tuning (the pruned model
    before fine-tuning is kept for the KD runs)."""
    from tinyqml.classical.channel_pruning import ChannelPruneConfig, prune_channels, ratio_for_macs
    from tinyqml.classical.train import train

    example = data.x_train[:8]
    ratio = ratio_for_macs(dense, example, fraction, ChannelPruneConfig(round_to=round_to))
    result = prune_channels(dense, example, ChannelPruneConfig(ratio=ratio, round_to=round_to))
    student = copy.deepcopy(result.model)
    before = _acc(result.model, data)
    train(result.model, data, ft)
    return {"ratio": ratio, "macs": result.after.macs, "params": result.after.params, "dense_macs": result.before.macs,
            "dense_params": result.before.params, "widths": result.plan.widths(), "acc_before_ft": before,
            "acc": _acc(result.model, data), "model": result.model, "student": student}


def torch_pruning_anchor(dense: nn.Module, data, ft, ours: dict[str, Any]) -> dict[str, Any]:
    from tinyqml.classical.costs import profile_net
    from tinyqml.classical.train import train

    example = data.x_train[:1]
    model = _tp_prune(dense, example, ours["widths"])
    mine = list(ours["student"].state_dict().values())
    same = len(mine) == len(model.state_dict()) and all(
        a.shape == b.shape and torch.equal(a, b) for a, b in zip(mine, model.state_dict().values()))
    prof = profile_net(model, example)
    before = _acc(model, data)
    train(model, data, ft)
    got = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    return {"macs": prof.macs, "params": prof.params, "widths": got, "acc_before_ft": before, "same_weights": same,
            "acc": _acc(model, data), "model": model}


def distill(student: nn.Module, teacher: nn.Module, data, ft, temperature: float, alpha: float) -> float:
    from tinyqml.classical.distill import KDConfig, KDLoss
    from tinyqml.classical.train import train

    net = copy.deepcopy(student)
    train(net, data, ft, loss=KDLoss(KDConfig(temperature, alpha)), teacher=teacher)
    return _acc(net, data)


# ---------------------------------------------------------------------------- latency


def latency(models: dict[str, nn.Module], batch: int, rounds: int, seed: int) -> dict[str, float]:
    """Median ms per call of each model; every round calls each model once, in a fresh seeded
    random order (a fixed order biases the timings by position)."""
    x = torch.rand(batch, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    times: dict[str, list[float]] = {k: [] for k in models}
    order, rng = list(models), random.Random(seed)
    with torch.inference_mode():
        for m in models.values():
            m.eval()
            for _ in range(10):
                m(x)
        for _ in range(rounds):
            rng.shuffle(order)
            for k in order:
                t0 = time.perf_counter()
                models[k](x)
                times[k].append(time.perf_counter() - t0)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def both_batches(models: dict[str, nn.Module], args, seed: int) -> dict[str, dict[str, float]]:
    return {"256": latency(models, 256, args.rounds, seed), "1": latency(models, 1, 10 * args.rounds, seed)}


# ---------------------------------------------------------------------------- one seed


def run_seed(seed: int, args) -> dict[str, Any]:
    from tinyqml.classical.data import DigitsConfig, load_digits_data
    from tinyqml.classical.models import SmallCNN, SmallCNNConfig, TinyMobileNetV2
    from tinyqml.classical.train import train

    t_start = time.perf_counter()
    data = load_digits_data(DigitsConfig(seed=seed))
    dense_cfg, ft = _configs(args, seed)
    dense = SmallCNN(SmallCNNConfig(widths=tuple(args.widths)), seed=seed)
    train(dense, data, dense_cfg)
    run: dict[str, Any] = {"seed": seed, "dense": {"acc": _acc(dense, data)}}
    _log(f"seed {seed}: dense {run['dense']['acc']:.2f}%")

    fg = fine_grained(dense, data, ft, args)
    _log(f"seed {seed}: fine-grained AGP {fg['agp']['acc']:.2f}%, one-shot {fg['oneshot']['acc']:.2f}%, "
         f"torch {fg['torch']['acc']:.2f}% (same masks: {fg['torch']['same_masks_as_ours']})")
    ch = channel(dense, data, ft, MACS_FRACTION, args.round_to)
    tp_run = torch_pruning_anchor(dense, data, ft, ch)
    _log(f"seed {seed}: channel {ch['acc']:.2f}% ({ch['dense_macs'] / ch['macs']:.2f}x MACs), "
         f"torch_pruning {tp_run['acc']:.2f}% ({ch['dense_macs'] / tp_run['macs']:.2f}x)")
    kd = {}
    for frac in KD_FRACTIONS:
        c = ch if frac == MACS_FRACTION else channel(dense, data, ft, frac, args.round_to)
        kd[str(frac)] = {"macs_ratio": c["dense_macs"] / c["macs"], "acc_before_ft": c["acc_before_ft"],
                         "plain": c["acc"], "kd": distill(c["student"], dense, data, ft, 4.0, 0.9),
                         "kd_half": distill(c["student"], dense, data, ft, 2.0, 0.5)}
    _log(f"seed {seed}: KD {kd}")

    mb = TinyMobileNetV2(seed=seed)
    train(mb, data, dense_cfg)
    mb_ch = channel(mb, data, dataclasses.replace(ft, lr=args.mb_ft_lr), MACS_FRACTION, args.mb_round_to)
    _log(f"seed {seed}: MobileNetV2 dense {_acc(mb, data):.2f}%, pruned {mb_ch['acc']:.2f}%")

    lat = both_batches({"dense": dense, "agp_masked": fg["agp"]["model_masked"], "agp_squashed": fg["agp"]["model"],
                        "torch_masked": fg["torch"]["model_masked"], "torch_removed": fg["torch"]["model"],
                        "channel": ch["model"], "torch_pruning": tp_run["model"]}, args, seed)
    mb_lat = both_batches({"dense": mb, "channel": mb_ch["model"]}, args, seed)
    strip = lambda d: {k: v for k, v in d.items() if k not in ("model", "model_masked", "student")}  # noqa: E731
    run.update(
        fine_grained={k: strip(v) for k, v in fg.items()}, channel=strip(ch), torch_pruning=strip(tp_run), kd=kd,
        mobilenet={"dense_acc": _acc(mb, data), **strip(mb_ch)}, latency=lat, mobilenet_latency=mb_lat,
        seconds=time.perf_counter() - t_start)
    return run


# ---------------------------------------------------------------------------- tables


def ms(values: list[float], digits: int = 2) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _get(runs, *path) -> list[Any]:
    out = []
    for r in runs:
        v = r
        for p in path:
            v = v[p]
        out.append(v)
    return out


def _lat(runs, key: str, name: str, batch: str) -> float:
    return statistics.median(r[key][batch][name] for r in runs)


def fine_table(runs) -> list[str]:
    dense = _get(runs, "dense", "acc")
    rows = [("dense", None, dense, "dense"),
            ("tinyqml: global magnitude, AGP during fine-tuning (masked)", ("agp", "sparsity"),
             _get(runs, "fine_grained", "agp", "acc"), "agp_masked"),
            ("tinyqml: same, masks squashed", ("agp", "sparsity_squashed"),
             _get(runs, "fine_grained", "agp", "acc_squashed"), "agp_squashed"),
            ("tinyqml: global magnitude one-shot, then fine-tuning", ("oneshot", "sparsity"),
             _get(runs, "fine_grained", "oneshot", "acc"), None),
            ("torch.nn.utils.prune.global_unstructured (L1) one-shot, then fine-tuning (hooks)",
             ("torch", "sparsity"), _get(runs, "fine_grained", "torch", "acc"), "torch_masked"),
            ("torch: same, prune.remove", ("torch", "sparsity"), _get(runs, "fine_grained", "torch", "acc"),
             "torch_removed")]
    out = ["| model | sparsity | test acc (%) | drop (points) | latency b256 (ms) | latency b1 (ms) |",
           "|---|---:|---:|---:|---:|---:|"]
    for label, sp, acc, lat in rows:
        sparsity = "0" if sp is None else f"{statistics.mean(_get(runs, 'fine_grained', *sp)):.3f}"
        drop = "" if sp is None else ms([d - a for d, a in zip(dense, acc)])
        l256 = f"{_lat(runs, 'latency', lat, '256'):.2f}" if lat else ""
        l1 = f"{_lat(runs, 'latency', lat, '1'):.3f}" if lat else ""
        out.append(f"| {label} | {sparsity} | {ms(acc)} | {drop} | {l256} | {l1} |")
    return out


def channel_table(runs) -> list[str]:
    dense = _get(runs, "dense", "acc")
    ch, tp_ = runs[0]["channel"], runs[0]["torch_pruning"]
    d256, d1 = _lat(runs, "latency", "dense", "256"), _lat(runs, "latency", "dense", "1")
    out = ["| model | conv widths | MACs | MACs ÷ | params | test acc (%) | drop (points) | b256 ms | speedup | "
           "b1 ms | speedup |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    rows = [("dense", "/".join(str(b) for b, _ in ch["widths"].values()), ch["dense_macs"], ch["dense_params"],
             dense, "dense"),
            (f"tinyqml channel pruning (ratio {ch['ratio']:.3f}) + fine-tuning",
             "/".join(str(a) for _, a in ch["widths"].values()), ch["macs"], ch["params"],
             _get(runs, "channel", "acc"), "channel"),
            ("torch_pruning MetaPruner (the same widths) + fine-tuning",
             "/".join(str(w) for w in tp_["widths"]), tp_["macs"], tp_["params"],
             _get(runs, "torch_pruning", "acc"), "torch_pruning")]
    for label, widths, macs, params, acc, lat in rows:
        l256, l1 = _lat(runs, "latency", lat, "256"), _lat(runs, "latency", lat, "1")
        drop = "" if lat == "dense" else ms([d - a for d, a in zip(dense, acc)])
        out.append(f"| {label} | {widths} | {macs:,} | {ch['dense_macs'] / macs:.2f} | {params:,} | {ms(acc)} | "
                   f"{drop} | {l256:.2f} | {d256 / l256:.2f}x | {l1:.3f} | {d1 / l1:.2f}x |")
    ours, theirs = _get(runs, "channel", "acc"), _get(runs, "torch_pruning", "acc")
    out.append(f"| tinyqml ÷ torch_pruning | | {ch['macs'] / tp_['macs']:.3f} | | {ch['params'] / tp_['params']:.3f} "
               f"| {ms([a - b for a, b in zip(ours, theirs)])} (difference) | | "
               f"{_lat(runs, 'latency', 'channel', '256') / _lat(runs, 'latency', 'torch_pruning', '256'):.3f} | | "
               f"{_lat(runs, 'latency', 'channel', '1') / _lat(runs, 'latency', 'torch_pruning', '1'):.3f} | |")
    return out


def mobilenet_table(runs) -> list[str]:
    mb = runs[0]["mobilenet"]
    d256, d1 = _lat(runs, "mobilenet_latency", "dense", "256"), _lat(runs, "mobilenet_latency", "dense", "1")
    c256, c1 = _lat(runs, "mobilenet_latency", "channel", "256"), _lat(runs, "mobilenet_latency", "channel", "1")
    dense, pruned = _get(runs, "mobilenet", "dense_acc"), _get(runs, "mobilenet", "acc")
    groups = ", ".join(f"{k} {a}→{b}" for k, (a, b) in mb["widths"].items())
    return ["| model | MACs | params | test acc (%) | drop (points) | b256 ms | speedup | b1 ms | speedup |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| TinyMobileNetV2 dense | {mb['dense_macs']:,} | {mb['dense_params']:,} | {ms(dense)} | | {d256:.2f} | "
            f"| {d1:.3f} | |",
            f"| channel-pruned (ratio {mb['ratio']:.3f}) + fine-tuning | {mb['macs']:,} | {mb['params']:,} | "
            f"{ms(pruned)} | {ms([d - p for d, p in zip(dense, pruned)])} | {c256:.2f} | {d256 / c256:.2f}x | "
            f"{c1:.3f} | {d1 / c1:.2f}x |",
            "", f"Groups (first producer: channels before→after): {groups}."]


def kd_table(runs) -> list[str]:
    dense = _get(runs, "dense", "acc")
    out = ["| student | MACs ÷ | before fine-tuning | fine-tuned, cross-entropy | KD T=4, α=0.9 | − plain | "
           "KD T=2, α=0.5 | − plain |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for frac in KD_FRACTIONS:
        k = str(frac)
        plain, kd, half = (_get(runs, "kd", k, key) for key in ("plain", "kd", "kd_half"))
        out.append(f"| SmallCNN channel-pruned to ≤{frac:g} of the MACs | {runs[0]['kd'][k]['macs_ratio']:.2f} | "
                   f"{ms(_get(runs, 'kd', k, 'acc_before_ft'))} | {ms(plain)} | {ms(kd)} | "
                   f"{ms([a - b for a, b in zip(kd, plain)])} | {ms(half)} | {ms([a - b for a, b in zip(half, plain)])} |")
    out.append(f"| (dense teacher) | 1 | | {ms(dense)} | | | | |")
    return out


def seed_table(runs) -> list[str]:
    out = ["| seed | dense | AGP 90% | one-shot 90% | torch 90% | same masks as torch | channel | torch_pruning | "
           "MobileNetV2 dense → pruned | time (s) |", "|---|---:|---:|---:|---:|---|---:|---:|---|---:|"]
    for r in runs:
        fg = r["fine_grained"]
        out.append(f"| {r['seed']} | {r['dense']['acc']:.2f} | {fg['agp']['acc']:.2f} | {fg['oneshot']['acc']:.2f} | "
                   f"{fg['torch']['acc']:.2f} | {fg['torch']['same_masks_as_ours']} | {r['channel']['acc']:.2f} | "
                   f"{r['torch_pruning']['acc']:.2f} | {r['mobilenet']['dense_acc']:.2f} → {r['mobilenet']['acc']:.2f} "
                   f"| {r['seconds']:.0f} |")
    return out


def targets(runs) -> list[str]:
    dense = _get(runs, "dense", "acc")
    fg_drop = statistics.mean(d - a for d, a in zip(dense, _get(runs, "fine_grained", "agp", "acc_squashed")))
    ch_drop = statistics.mean(d - a for d, a in zip(dense, _get(runs, "channel", "acc")))
    ch = runs[0]["channel"]
    macs = ch["dense_macs"] / ch["macs"]
    speed = _lat(runs, "latency", "dense", "256") / _lat(runs, "latency", "channel", "256")
    sparsity = statistics.mean(_get(runs, "fine_grained", "agp", "sparsity_squashed"))
    ok = lambda b: "met" if b else "MISSED"  # noqa: E731
    return [f"- fine-grained: sparsity {sparsity:.3f} (target 0.9), mean drop {fg_drop:.2f} points (target ≤ "
            f"{MAX_DROP}): {ok(sparsity >= SPARSITY - 1e-3 and fg_drop <= MAX_DROP)};",
            f"- channel pruning: {macs:.2f}x fewer MACs (target ≥ 2), mean drop {ch_drop:.2f} points (target ≤ "
            f"{MAX_DROP}), {speed:.2f}x measured latency at batch 256 (target ≥ {MIN_SPEEDUP}): "
            f"{ok(macs >= 2 and ch_drop <= MAX_DROP and speed >= MIN_SPEEDUP)}."]


def notes(runs) -> list[str]:
    """Observations worded from the numbers (one test image is 100 / 360 = 0.28 points)."""
    dense = _get(runs, "dense", "acc")
    drop = lambda acc: statistics.mean(d - a for d, a in zip(dense, acc))  # noqa: E731
    agp, oneshot = drop(_get(runs, "fine_grained", "agp", "acc")), drop(_get(runs, "fine_grained", "oneshot", "acc"))
    kd_gain = [statistics.mean(a - b for a, b in zip(_get(runs, "kd", str(f), key), _get(runs, "kd", str(f), "plain")))
               for f in KD_FRACTIONS for key in ("kd", "kd_half")]
    same = sum(_get(runs, "torch_pruning", "same_weights"))
    image = 100 / 360
    if agp > oneshot:
        fg = ("one-shot + the same fine-tuning recovers more than AGP, which spends part of the budget at lower "
              "sparsity and less of it at the final one")
    else:
        fg = "AGP recovers more than one-shot pruning with the same fine-tuning budget"
    if max(abs(g) for g in kd_gain) <= 2 * image:
        kd = "within two test images of cross-entropy fine-tuning: no measurable effect of the teacher here"
    elif statistics.mean(kd_gain) > 0:
        kd = "better than cross-entropy fine-tuning on average"
    else:
        kd = "worse than cross-entropy fine-tuning on average (the students reach the teacher's accuracy without it)"
    return [
        f"- Fine-grained: mean drop {agp:.2f} with AGP, {oneshot:.2f} one-shot: {fg}.",
        f"- Channel selection: tinyqml's and torch_pruning's pruned models (before fine-tuning) have identical "
        f"weights in {same} of {len(runs)} seeds (both rank channels by the joint L2 norm of a group); latency "
        f"differences between them are measurement noise.",
        f"- Distillation: KD minus plain fine-tuning is {min(kd_gain):+.2f} to {max(kd_gain):+.2f} points (means over "
        f"seeds): {kd}.",
    ]


def layer_table(runs) -> list[str]:
    out = ["| layer | weights | sparsity (seed 0, AGP) |", "|---|---:|---:|"]
    out += [f"| {n} | {t:,} | {s:.3f} |" for n, t, s in runs[0]["fine_grained"]["agp"]["layers"]]
    return out


def meta_info(args, elapsed: float) -> dict[str, Any]:
    import torch_pruning

    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "cpu": cpu_model(), "cpus": os.cpu_count(), "load": load_average(), "torch": torch.__version__,
            "torch_pruning": getattr(torch_pruning, "__version__", "?"), "python": platform.python_version(),
            "threads": torch.get_num_threads(), "seconds": elapsed, "args": {k: (list(v) if isinstance(v, tuple) else v)
                                                                           for k, v in vars(args).items()
                                                                           if k != "results_dir"}}


def render(runs, args, meta) -> str:
    seeds = ", ".join(str(r["seed"]) for r in runs)
    lines = [
        "# Pruning on the 8×8 digits: fine-grained, channel pruning, distillation",
        "",
        f"scikit-learn digits (10 classes, 1167 train / 270 val / 360 test, stratified, split seed = run seed), "
        f"`SmallCNN` widths {'/'.join(map(str, args.widths))} (conv-BN-ReLU ×3, max pool after conv 2, flatten, "
        f"Linear), dense training {args.epochs} epochs (Adam 3e-3, cosine, batch 64); every pruned model gets the same "
        f"fine-tuning budget: {args.ft_epochs} epochs (Adam 1e-3, cosine, batch 64). Accuracy on the test set in %, "
        f"mean ± std over seeds {seeds}; drops are paired per seed (dense − pruned). Latency: torch CPU, 1 thread, "
        f"median of {args.rounds} interleaved calls in shuffled order at batch 256 ({10 * args.rounds} at batch 1), median over "
        f"seeds.",
        "",
        f"## Fine-grained pruning to {SPARSITY:.0%} sparsity (all Conv/Linear weights, global ranking)",
        "",
        *fine_table(runs),
        "",
        f"AGP: cubic ramp over the first {args.agp_end:.0%} of the fine-tuning steps, updated every "
        f"{args.agp_every} epoch(s). "
        f"The one-shot masks of tinyqml's global magnitude pruner and of `prune.global_unstructured` are identical "
        f"in {sum(_get(runs, 'fine_grained', 'torch', 'same_masks_as_ours'))} of {len(runs)} seeds. "
        "Masked weights are dense tensors with zeros: no speedup (the mask multiply of the parametrization or "
        "the pruning hook makes each call slower); squashed / removed, they run at the dense speed.",
        "",
        *layer_table(runs),
        "",
        f"## Channel pruning to at most {MACS_FRACTION:g} of the MACs (physical removal)",
        "",
        *channel_table(runs),
        "",
        f"## TinyMobileNetV2 (depthwise convs, three residual adds), channel-pruned the same way (widths multiples "
        f"of {args.mb_round_to}, fine-tuning lr {args.mb_ft_lr:g})",
        "",
        *mobilenet_table(runs),
        "",
        "## Distillation: channel-pruned students, same fine-tuning budget, KD from the dense model",
        "",
        *kd_table(runs),
        "",
        "Accuracy of every student in %; '− plain' is the paired difference to fine-tuning with cross-entropy alone.",
        "",
        "## Targets",
        "",
        *targets(runs),
        "",
        "## Notes",
        "",
        *notes(runs),
        "",
        "## Per seed (test accuracy, %)",
        "",
        *seed_table(runs),
        "",
        f"Run: {meta['seconds']:.0f} s on {meta['cpu']} ({meta['cpus']} cores, load at start "
        f"{', '.join(f'{v:.2f}' for v in meta['load'] or ())}, torch threads {meta['threads']}), "
        f"torch {meta['torch']}, torch_pruning {meta['torch_pruning']}, {meta['date']}.",
    ]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fast", "--quick", action="store_true", dest="fast", help="smoke run: 1 seed, small and short")
    p.add_argument("--seeds", type=lambda t: tuple(int(v) for v in t.split(",")), default=SEEDS)
    p.add_argument("--widths", type=lambda t: tuple(int(v) for v in t.split(",")), default=(32, 64, 64))
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--ft-epochs", type=int, default=15)
    p.add_argument("--agp-end", type=float, default=0.5, help="fraction of the fine-tuning steps the AGP ramp takes")
    p.add_argument("--agp-every", type=int, default=1, help="epochs between AGP updates")
    p.add_argument("--rounds", type=int, default=100, help="latency calls per model at batch 256 (x10 at batch 1)")
    p.add_argument("--round-to", type=int, default=8, help="pruned widths are multiples of this")
    p.add_argument("--mb-round-to", type=int, default=4, help="round_to of the MobileNetV2 widths")
    p.add_argument("--mb-ft-lr", type=float, default=3e-3, help="fine-tuning lr of the MobileNetV2")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.fast:
        args.seeds, args.widths, args.epochs, args.ft_epochs, args.agp_every, args.rounds = (0,), (8, 16, 16), 3, 2, 1, 5
        args.round_to = args.mb_round_to = 2
    torch.set_num_threads(args.threads)
    load = load_average()
    start = time.perf_counter()
    runs = [run_seed(s, args) for s in args.seeds]
    meta = meta_info(args, time.perf_counter() - start)
    meta["load"] = load
    text = render(runs, args, meta)
    print(text)
    stem = "pruning_fast" if args.fast else "pruning"
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / f"{stem}.md").write_text(text)
    (args.results_dir / f"{stem}.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
