"""An accuracy predictor for once-for-all sub-networks: an MLP over :func:`~tinyqml.classical.arch.encode`.

Once-for-All measures the accuracy of a few hundred sub-networks of the trained supernet and
regresses it from the architecture encoding, so the constrained search can score thousands of
candidates for the price of a forward pass each. :class:`AccuracyPredictor` is that regressor:
``fit(archs, accuracies)`` (targets standardized, Adam, mini-batches shuffled with an explicit
``torch.Generator``; the global RNG is never touched), ``predict(archs)``, ``predictor(arch)`` (a
``score`` for :func:`~tinyqml.classical.nas.search_architecture`), :meth:`~AccuracyPredictor.rank_correlation`
(Spearman's rho and Kendall's tau: a search only needs the *order* right) and ``save`` / ``load``.
:func:`split_rank_correlation` fits on a train split and reports the held-out correlation.

>>> import torch
>>> from tinyqml.classical.arch import SupernetConfig, sample_arch
>>> cfg = SupernetConfig()
>>> g = torch.Generator().manual_seed(0)
>>> archs = [sample_arch(cfg, g) for _ in range(64)]
>>> accs = [0.5 + 0.01 * sum(a.depths) + 0.002 * a.resolution for a in archs]
>>> pred = AccuracyPredictor(cfg, AccuracyPredictorConfig(hidden=(32,), epochs=60)).fit(archs, accs)
>>> pred.rank_correlation(archs, accs).spearman > 0.9
True
"""

from __future__ import annotations

import contextlib
import logging
import math
import numbers
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from tinyqml.classical.arch import Arch, NASError, SupernetConfig, encode, encoding_size

__all__ = ["AccuracyPredictorConfig", "AccuracyPredictor", "RankCorrelation", "SplitCorrelation",
           "rank_correlation", "split_rank_correlation"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AccuracyPredictorConfig:
    """The predictor's MLP and its training.

    Attributes:
        hidden: widths of the hidden layers (ReLU between them; Once-for-All uses three of 400).
        epochs: passes over the training pairs.
        lr: Adam's learning rate.
        weight_decay: Adam's (L2) weight decay.
        batch_size: pairs per step (the last batch of an epoch may be smaller).
        seed: seed of the weight initialisation and the shuffling (a private generator).
    """

    hidden: tuple[int, ...] = (128, 128)
    epochs: int = 200
    lr: float = 3e-3
    weight_decay: float = 1e-3
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        hidden = tuple(self.hidden) if isinstance(self.hidden, (tuple, list)) else self.hidden
        if not isinstance(hidden, tuple) or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
            raise NASError(f"hidden must be a tuple of positive ints (empty: a linear model), got {self.hidden!r}")
        object.__setattr__(self, "hidden", hidden)
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise NASError(f"{name} must be a positive int, got {v!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise NASError(f"seed must be an int, got {self.seed!r}")
        if not _finite(self.lr) or self.lr <= 0:
            raise NASError(f"lr must be a positive finite number, got {self.lr!r}")
        if not _finite(self.weight_decay) or self.weight_decay < 0:
            raise NASError(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")


@dataclass(frozen=True)
class RankCorrelation:
    """How well predicted scores order the measured ones: Spearman's rho, Kendall's tau (tau-b), ``n`` pairs."""

    spearman: float
    kendall: float
    n: int


@dataclass(frozen=True)
class SplitCorrelation:
    """A predictor fitted on ``n_train`` pairs and its rank correlation on them and on ``n_test`` held-out pairs."""

    predictor: "AccuracyPredictor"
    train: RankCorrelation
    test: RankCorrelation
    n_train: int
    n_test: int


def _finite(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, numbers.Real) and math.isfinite(v)


def _accuracies(accuracies: Any, n: int, what: str = "accuracies") -> list[float]:
    try:
        values = list(accuracies)
    except TypeError:
        raise NASError(f"{what} must be a sequence of numbers, got {type(accuracies).__name__}") from None
    if len(values) != n:
        raise NASError(f"got {n} architectures but {len(values)} {what}; they must pair up one to one")
    out = []
    for i, v in enumerate(values):
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()
        if not _finite(v):
            raise NASError(f"{what}[{i}] is {v!r}; accepted: finite numbers (no NaN or inf)")
        out.append(float(v))
    return out


def rank_correlation(predicted: Sequence[float], measured: Sequence[float]) -> RankCorrelation:
    """Spearman's rho and Kendall's tau between two equally long score lists (ties averaged).

    >>> r = rank_correlation([1, 2, 3, 4], [10, 20, 40, 30])
    >>> round(r.spearman, 3), round(r.kendall, 3), r.n
    (0.8, 0.667, 4)
    """
    from scipy.stats import kendalltau, spearmanr

    p = _accuracies(predicted, len(predicted), "predicted scores")
    m = _accuracies(measured, len(p), "measured scores")
    if len(p) < 2:
        raise NASError(f"a rank correlation needs at least 2 pairs, got {len(p)}")
    if len(set(p)) < 2 or len(set(m)) < 2:
        raise NASError("a rank correlation is undefined when either list is constant (all values equal)")
    return RankCorrelation(float(spearmanr(p, m).statistic), float(kendalltau(p, m).statistic), len(p))


class AccuracyPredictor:
    """An MLP regressor from the encoding of an :class:`~tinyqml.classical.arch.Arch` of ``supernet``
    to its accuracy (any score, higher is better)."""

    def __init__(self, supernet: SupernetConfig, config: AccuracyPredictorConfig = AccuracyPredictorConfig()) -> None:
        if not isinstance(supernet, SupernetConfig):
            raise NASError(f"AccuracyPredictor needs a SupernetConfig, got {type(supernet).__name__}")
        if not isinstance(config, AccuracyPredictorConfig):
            raise NASError(f"config must be an AccuracyPredictorConfig, got {type(config).__name__}")
        self.supernet, self.config = supernet, config
        self.model = _mlp(encoding_size(supernet), config)
        self.mean, self.std = 0.0, 1.0
        self.fitted = False
        self.losses: list[float] = []

    def __repr__(self) -> str:
        state = "fitted" if self.fitted else "not fitted"
        return f"AccuracyPredictor(hidden={self.config.hidden}, {state})"

    def encode(self, archs: Sequence[Arch]) -> torch.Tensor:
        """The ``(n, encoding_size)`` float tensor of ``archs``; :class:`NASError` names an arch that is
        not one of this supernet's."""
        if isinstance(archs, Arch):
            raise NASError("expected a sequence of Arch, got a single Arch (wrap it in a list)")
        rows = []
        for i, arch in enumerate(archs):
            try:
                rows.append(encode(arch, self.supernet))
            except NASError as exc:
                raise NASError(f"archs[{i}] is not an architecture of this supernet: {exc}") from exc
        if not rows:
            raise NASError("got no architectures; accepted: a non-empty sequence of Arch")
        return torch.tensor(rows, dtype=torch.float32)

    def fit(self, archs: Sequence[Arch], accuracies: Sequence[float]) -> "AccuracyPredictor":
        """Train (from the seeded initialisation) on ``(archs[i], accuracies[i])``; returns ``self``."""
        x = self.encode(archs)
        y = torch.tensor(_accuracies(accuracies, len(x)), dtype=torch.float32)
        if len(x) < 2:
            raise NASError(f"fitting needs at least 2 (arch, accuracy) pairs, got {len(x)}")
        self.model = _mlp(encoding_size(self.supernet), self.config)  # every fit starts from the seeded init
        self.mean, std = float(y.mean()), float(y.std())
        self.std = std if std > 0 else 1.0
        self.losses = _train(self.model, x, (y - self.mean) / self.std, self.config)
        self.fitted = True
        log.info("accuracy predictor fitted on %d pairs, final loss %.4g", len(x), self.losses[-1])
        return self

    def predict(self, archs: Sequence[Arch]) -> list[float]:
        """Predicted accuracy of each arch."""
        if not self.fitted:
            raise NASError("the predictor is not fitted; call fit(archs, accuracies) or load a saved one first")
        x = self.encode(archs)
        self.model.eval()
        with torch.no_grad():
            out = self.model(x).squeeze(1) * self.std + self.mean
        return [float(v) for v in out]

    def __call__(self, arch: Arch) -> float:
        """The predicted accuracy of one arch (a ``score`` for the search)."""
        return self.predict([arch])[0]

    def rank_correlation(self, archs: Sequence[Arch], accuracies: Sequence[float]) -> RankCorrelation:
        """Spearman's rho and Kendall's tau of the predictions of ``archs`` against ``accuracies``."""
        archs = list(archs)
        measured = _accuracies(accuracies, len(archs))
        return rank_correlation(self.predict(archs), measured)

    def state_dict(self) -> dict[str, Any]:
        """Everything :meth:`load` needs: the supernet and predictor configs, weights, target scaling."""
        return {"supernet": asdict(self.supernet), "config": asdict(self.config), "model": self.model.state_dict(),
                "mean": self.mean, "std": self.std, "fitted": self.fitted}

    def load_state_dict(self, state: dict[str, Any]) -> "AccuracyPredictor":
        """Restore a :meth:`state_dict` of a predictor of the same supernet and MLP shape."""
        if not isinstance(state, dict) or not {"supernet", "config", "model", "mean", "std"} <= set(state):
            raise NASError("not an AccuracyPredictor state: expected keys supernet, config, model, mean, std")
        if _supernet(state["supernet"]) != self.supernet:
            raise NASError("the saved predictor belongs to another supernet: "
                           f"saved {_supernet(state['supernet'])}, this one {self.supernet}")
        if tuple(state["config"]["hidden"]) != self.config.hidden:
            raise NASError(f"the saved predictor has hidden={tuple(state['config']['hidden'])}, this one "
                           f"{self.config.hidden}")
        self.model.load_state_dict(state["model"])
        self.mean, self.std = float(state["mean"]), float(state["std"])
        self.fitted = bool(state.get("fitted", True))
        return self

    def save(self, path: str | Path) -> Path:
        """Write the :meth:`state_dict` to ``path`` (``torch.save``); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(self.state_dict(), path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "AccuracyPredictor":
        """A predictor saved by :meth:`save` (supernet and config come from the file)."""
        try:
            state = torch.load(Path(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # torch.load: UnpicklingError, RuntimeError, EOFError, struct.error, KeyError, ...
            raise NASError(f"cannot read an accuracy predictor from {str(path)!r}: torch cannot read it as a file of "
                           f"tensors and plain values ({type(exc).__name__})") from exc
        if not isinstance(state, dict) or not isinstance(state.get("supernet"), dict) or \
                not isinstance(state.get("config"), dict):
            raise NASError(f"{str(path)!r} does not hold an AccuracyPredictor state")
        try:
            cfg = state["config"]
            config = AccuracyPredictorConfig(**{**cfg, "hidden": tuple(cfg["hidden"])})
            return cls(_supernet(state["supernet"]), config).load_state_dict(state)
        except NASError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # a state of another shape
            raise NASError(f"{str(path)!r} holds a malformed AccuracyPredictor state: {type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc


def _supernet(fields: dict[str, Any]) -> SupernetConfig:
    d = dict(fields)
    d["stages"] = tuple(tuple(s) for s in d["stages"])
    for k in ("depths", "expands", "kernels", "resolutions"):
        d[k] = tuple(d[k])
    return SupernetConfig(**d)


def _mlp(n_in: int, config: AccuracyPredictorConfig) -> nn.Sequential:
    """The MLP, initialised from ``config.seed`` inside a forked RNG (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        layers: list[nn.Module] = []
        for width in config.hidden:
            layers += [nn.Linear(n_in, width), nn.ReLU()]
            n_in = width
        layers.append(nn.Linear(n_in, 1))
        return nn.Sequential(*layers)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """torch's intra-op threads set to 1 for the block: a predictor-sized MLP gains nothing from them, and on a
    busy machine their hand-offs made training 10-30x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: AccuracyPredictorConfig) -> list[float]:
    with _one_thread():
        return _epochs(model, x, y, config)


def _epochs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: AccuracyPredictorConfig) -> list[float]:
    gen = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    losses = []
    model.train()
    for _ in range(config.epochs):
        total = 0.0
        for idx in torch.randperm(len(x), generator=gen).split(config.batch_size):
            loss = nn.functional.mse_loss(model(x[idx]).squeeze(1), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(x))
    return losses


def split_rank_correlation(archs: Sequence[Arch], accuracies: Sequence[float], supernet: SupernetConfig,
                           config: AccuracyPredictorConfig = AccuracyPredictorConfig(),
                           test_fraction: float = 0.25, seed: int = 0) -> SplitCorrelation:
    """Fit a predictor on a random ``1 - test_fraction`` of the pairs (split drawn with a generator seeded
    by ``seed``) and report its rank correlation on both parts.

    >>> import torch
    >>> from tinyqml.classical.arch import SupernetConfig, sample_arch
    >>> cfg = SupernetConfig(); g = torch.Generator().manual_seed(1)
    >>> archs = [sample_arch(cfg, g) for _ in range(120)]
    >>> split = split_rank_correlation(archs, [a.resolution + sum(a.depths) for a in archs], cfg,
    ...                                AccuracyPredictorConfig(hidden=(32,), epochs=100))
    >>> split.n_train, split.n_test, split.test.spearman > 0.8
    (90, 30, True)
    """
    archs = list(archs)
    accs = _accuracies(accuracies, len(archs))
    if not _finite(test_fraction) or not 0 < test_fraction < 1:
        raise NASError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    n_test = round(len(archs) * test_fraction)
    if n_test < 2 or len(archs) - n_test < 2:
        raise NASError(f"{len(archs)} pairs with test_fraction={test_fraction} leave fewer than 2 pairs on a side; "
                       "give more pairs or another test_fraction")
    order = torch.randperm(len(archs), generator=torch.Generator().manual_seed(seed)).tolist()
    test, train = order[:n_test], order[n_test:]
    pred = AccuracyPredictor(supernet, config).fit([archs[i] for i in train], [accs[i] for i in train])
    return SplitCorrelation(pred, pred.rank_correlation([archs[i] for i in train], [accs[i] for i in train]),
                            pred.rank_correlation([archs[i] for i in test], [accs[i] for i in test]),
                            len(train), n_test)
