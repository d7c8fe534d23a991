"""Built-in searches for ``tinyqml search``: one study, any number of workers, crash-safe and resumable.

A built-in search is a :class:`BuiltinSearch` in the registry :data:`SEARCHES` (looked up by name,
:func:`get_search`; an unknown name is :class:`UnknownSearchError` listing the known ones):

``quadratic``
    the synthetic search of :mod:`tinyqml.search.examples` (no model; ``seconds`` of sleep per
    trial stand in for training). No shared artefact.
``qnas``
    the QuantumNAS co-search of tutorial 5 (:class:`~tinyqml.noise.quantumnas.CoSearch`): 4-class
    digits, a SuperCircuit trained once (the shared artefact ``supercircuit.pt``); each trial is one
    sub-circuit + qubit mapping on a fake IBM backend (``FakeQuitoV2`` or ``FakeManilaV2``), its
    inherited weights scored by the exact noisy validation accuracy under the calibrated noise model.
``ofa``
    the classical once-for-all NAS (:func:`~tinyqml.classical.nas.search_architecture`): a
    MobileNetV2 supernet trained once (the shared artefact ``supernet.pt``); each trial is one
    sub-network under ``macs<=400k`` and ``peak_sram<=20k``, scored by its **measured** validation
    accuracy with the shared weights (extracted, BatchNorm re-estimated, evaluated). Measuring costs a
    fraction of a second per trial, where an accuracy predictor answers in microseconds; but fitting
    a predictor needs hundreds of such measurements first, serially, in one process, and scores a
    proxy. Measured trials spread that work over the workers and score the real objective, which is
    what a distributed study is for.

:func:`run_builtin_search` prepares the shared artefacts in the calling process (under an exclusive
file lock, written atomically, read back with ``weights_only=True``: :mod:`tinyqml.search.artifacts`),
then runs the study with ``workers`` processes (one: in this process) until it has ``trials``
completed trials (:func:`~tinyqml.search.workers.optimize_until`: exactly that many, whoever runs or
crashes). The study lives in a SQLite file (default ``sqlite:///runs/search.db``) or on a PostgreSQL
server (``postgresql://...``) that workers on other machines join by running the same command; the
artefacts go to ``runs/<study>/`` next to a SQLite file (``runs/<study>/`` of the working directory
for a server). Rerunning the same call continues the study, also after Ctrl-C or a crash: a worker
dies at once on Ctrl-C, and the trials cut short are failed as stale (optuna's heartbeat) and retried
with the same parameters. The study records which search and which settings it holds; continuing it
with others is refused.

>>> sorted(SEARCHES)
['ofa', 'qnas', 'quadratic']
>>> get_search("qnass")
Traceback (most recent call last):
...
tinyqml.searches.UnknownSearchError: unknown search 'qnass'; known: quadratic, qnas, ofa
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, ClassVar, Mapping

import optuna
import torch
from optuna.trial import TrialState

from tinyqml.classical.arch import SupernetConfig
from tinyqml.classical.data import DigitsConfig
from tinyqml.search.artifacts import ArtifactError, shared_artifact
from tinyqml.search.errors import SearchError
from tinyqml.search.storage import DEFAULT_STORAGE, open_storage, redact_url, storage_url
from tinyqml.search.workers import count_states, run_workers, worker_seed

__all__ = [
    "BuiltinSearchError", "UnknownSearchError", "QuadraticOptions", "QNASOptions", "OFAOptions", "SearchJob",
    "BuiltinSearch", "SEARCHES", "QNAS_BACKENDS", "STUDY_ATTR", "get_search", "run_builtin_search",
    "default_artifacts_dir", "quadratic_search_worker", "qnas_worker", "ofa_worker",
]

log = logging.getLogger(__name__)

#: user attribute of a study: the built-in search and settings it holds (JSON)
STUDY_ATTR = "tinyqml_search"
#: fake IBM backends the ``qnas`` search runs on (offline calibration snapshots of 5-qubit machines)
QNAS_BACKENDS = ("FakeQuitoV2", "FakeManilaV2")
_STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
Stage = Callable[[str], None]


class BuiltinSearchError(SearchError):
    """A bad argument of a built-in search (the message says what is accepted), a study that holds
    another search, or workers that stopped before the study was complete."""


class UnknownSearchError(BuiltinSearchError):
    """A search name that is not in :data:`SEARCHES`."""


# --------------------------------------------------------------------------- options


def _check_int(owner: str, name: str, v: Any, low: int = 1) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise BuiltinSearchError(f"{owner}.{name} must be an int >= {low}, got {v!r}")


def _check_number(owner: str, name: str, v: Any, low: float = 0.0, strict: bool = False) -> None:
    ok = not isinstance(v, bool) and isinstance(v, (int, float)) and v == v and v != float("inf")
    if not ok or v < low or (strict and v == low):
        raise BuiltinSearchError(f"{owner}.{name} must be a finite number {'>' if strict else '>='} {low:g}, "
                                 f"got {v!r}")


class _Options:
    """Shared by the option classes: :meth:`identity` (what a study's results depend on, as JSON)."""

    #: fields that change how long a trial takes, not what it scores (a study may be continued with others)
    runtime_fields: ClassVar[tuple[str, ...]] = ()

    def identity(self) -> dict[str, Any]:
        out = asdict(self)  # type: ignore[call-overload]
        return {k: v for k, v in out.items() if k not in self.runtime_fields}


@dataclass(frozen=True)
class QuadraticOptions(_Options):
    """The synthetic search: ``seconds`` of sleep per trial (a stand-in for training)."""

    seconds: float = 0.0
    runtime_fields: ClassVar[tuple[str, ...]] = ("seconds",)

    def __post_init__(self) -> None:
        _check_number("QuadraticOptions", "seconds", self.seconds)


@dataclass(frozen=True)
class QNASOptions(_Options):
    """The QuantumNAS co-search.

    Attributes:
        backend: the fake device (one of :data:`QNAS_BACKENDS`).
        blocks: U3 + CU3 blocks of the SuperCircuit (4 qubits).
        super_epochs, warmup_epochs, restrict, lr, batch_size, train_seed: the SuperCircuit's training
            (:class:`~tinyqml.noise.quantumnas.SuperTrainConfig`; warm-up epochs on the largest
            circuit come first).
        population, parents: the evolutionary sampler (``EvolutionConfig``).
        val_images: validation images a candidate is scored on (``None``: all 126 held-out images).
    """

    backend: str = "FakeQuitoV2"
    blocks: int = 4
    super_epochs: int = 40
    warmup_epochs: int = 2
    restrict: int = 2
    lr: float = 0.05
    batch_size: int = 32
    train_seed: int = 0
    population: int = 12
    parents: int = 4
    val_images: int | None = None

    def __post_init__(self) -> None:
        if self.backend not in QNAS_BACKENDS:
            raise BuiltinSearchError(f"QNASOptions.backend must be one of {', '.join(QNAS_BACKENDS)}, "
                                     f"got {self.backend!r}")
        for name in ("blocks", "super_epochs", "restrict", "batch_size", "population", "parents"):
            _check_int("QNASOptions", name, getattr(self, name))
        _check_int("QNASOptions", "warmup_epochs", self.warmup_epochs, 0)
        _check_int("QNASOptions", "train_seed", self.train_seed, 0)
        _check_number("QNASOptions", "lr", self.lr, strict=True)
        if self.parents > self.population:
            raise BuiltinSearchError(f"QNASOptions.parents ({self.parents}) must not exceed the population "
                                     f"({self.population})")
        if self.val_images is not None:
            _check_int("QNASOptions", "val_images", self.val_images, 4)

    def artifact_meta(self) -> dict[str, Any]:
        """The settings the trained SuperCircuit depends on."""
        return {k: getattr(self, k) for k in ("blocks", "super_epochs", "warmup_epochs", "restrict", "lr",
                                               "batch_size", "train_seed")}


@dataclass(frozen=True)
class OFAOptions(_Options):
    """The once-for-all NAS.

    Attributes:
        supernet: the search space (:class:`~tinyqml.classical.arch.SupernetConfig`).
        epochs, train_seed: the supernet's training (sandwich rule + in-place distillation,
            :class:`~tinyqml.classical.ofa_train.OFATrainConfig`).
        constraints: ``"cost<=bound"`` strings on ``macs``, ``params``, ``peak_sram`` (bytes of the
            generated C).
        data: the digits split (validation images score the candidates).
        calibration_images: training images that re-estimate a candidate's BatchNorm statistics.
    """

    supernet: SupernetConfig = SupernetConfig()
    epochs: int = 30
    train_seed: int = 0
    constraints: tuple[str, ...] = ("macs<=400k", "peak_sram<=20k")
    data: DigitsConfig = DigitsConfig(val=0.3, test=0.2)
    calibration_images: int = 512

    def __post_init__(self) -> None:
        from tinyqml.classical.nas import parse_constraints

        if not isinstance(self.supernet, SupernetConfig):
            raise BuiltinSearchError(f"OFAOptions.supernet must be a SupernetConfig, got "
                                     f"{type(self.supernet).__name__}")
        if not isinstance(self.data, DigitsConfig):
            raise BuiltinSearchError(f"OFAOptions.data must be a DigitsConfig, got {type(self.data).__name__}")
        _check_int("OFAOptions", "epochs", self.epochs)
        _check_int("OFAOptions", "train_seed", self.train_seed, 0)
        _check_int("OFAOptions", "calibration_images", self.calibration_images)
        items = (self.constraints,) if isinstance(self.constraints, str) else tuple(self.constraints)
        if any(not isinstance(c, str) for c in items):
            raise BuiltinSearchError(f"OFAOptions.constraints must be strings such as 'macs<=400k', "
                                     f"got {self.constraints!r}")
        parse_constraints(items)  # a malformed one: ConstraintSyntaxError with the accepted form
        object.__setattr__(self, "constraints", items)

    def artifact_meta(self) -> dict[str, Any]:
        """The settings the trained supernet depends on."""
        return {"supernet": asdict(self.supernet), "epochs": self.epochs, "train_seed": self.train_seed,
                "data": asdict(self.data)}


# --------------------------------------------------------------------------- jobs and the registry


@dataclass(frozen=True)
class SearchJob:
    """Everything a worker needs (picklable, sent to spawned processes): the search's name, the completed
    trials wanted, the study's name and storage URL, the seed (worker ``i`` samples with
    ``worker_seed(seed, i)``), the artefacts' folder and the search's options."""

    space: str
    trials: int
    study: str
    storage: str
    seed: int
    artifacts_dir: str
    options: Any


@dataclass(frozen=True)
class BuiltinSearch:
    """One built-in search.

    Attributes:
        name: its name in :data:`SEARCHES` and on the command line.
        summary: one line for ``--help``.
        options_type, default, fast: its options class, the default options and small ones for tests
            (seconds to a minute).
        prepare: ``prepare(job, stage)`` makes the shared artefacts (in the parent, before any worker).
        run: ``run(job, index)`` runs worker ``index`` in this process until the study is complete.
        worker: the module-level ``worker(index, job)`` for :func:`~tinyqml.search.workers.run_workers`
            (one thread of torch per process, optuna's log at WARNING, then ``run``).
    """

    name: str
    summary: str
    options_type: type
    default: Any
    fast: Any
    prepare: Callable[[SearchJob, Stage], None]
    run: Callable[[SearchJob, int], None]
    worker: Callable[[int, SearchJob], None]

    def options(self, fast: bool = False, options: Any = None) -> Any:
        """``options`` (checked to be this search's options class), else the fast or default ones."""
        if options is None:
            return self.fast if fast else self.default
        if not isinstance(options, self.options_type):
            raise BuiltinSearchError(f"the {self.name!r} search takes {self.options_type.__name__} options, got "
                                     f"{type(options).__name__}")
        return options


def _work(run: Callable[[SearchJob, int], None], index: int, job: SearchJob) -> None:
    """The body of a spawned worker: one torch thread (K workers share K cores), optuna's log at WARNING,
    then ``run(job, index)``.

    Ctrl-C ends a worker at once, as a crash (SIGINT's default action, not Python's KeyboardInterrupt):
    its running trial is left to the heartbeat, and a rerun (or any other worker) fails it as stale
    after ``grace`` seconds and retries it with the same parameters. A KeyboardInterrupt would unwind
    through optuna's storage calls, which leave an interrupted SQLite transaction open (a lock that
    stalls every other worker's commit for the busy timeout) and may leave a trial's non-daemon
    heartbeat thread running."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    run(job, index)


def _artifact(job: SearchJob, name: str, meta: Mapping[str, Any], build: Callable[[], Any]) -> Any:
    """The artefact ``name`` of ``job`` (built once: :func:`~tinyqml.search.artifacts.shared_artifact`),
    checked to have been built with the settings ``meta``; returns its ``model`` state_dict."""
    path = Path(job.artifacts_dir) / name
    want = json.dumps(meta, sort_keys=True)
    state = shared_artifact(path, lambda: {"meta": want, "model": build()})
    if not isinstance(state, dict) or "model" not in state or state.get("meta") != want:
        got = state.get("meta") if isinstance(state, dict) else None
        raise ArtifactError(f"the artefact {str(path)!r} was built with other settings ({got}) than this search "
                            f"needs ({want}); use another --study or artifacts_dir, or delete the file")
    return state["model"]


# ---- quadratic


def _prepare_quadratic(job: SearchJob, stage: Stage) -> None:
    stage("quadratic: no shared artefact to prepare")


def _run_quadratic(job: SearchJob, index: int) -> None:
    from tinyqml.search.examples import quadratic_score, quadratic_space
    from tinyqml.search.study import SearchConfig, run_search

    seconds = job.options.seconds
    config = SearchConfig(n_trials=job.trials, storage=job.storage, study_name=job.study,
                          seed=worker_seed(job.seed, index), progress=False)
    run_search(lambda cfg, trial: quadratic_score(cfg, trial, seconds), quadratic_space(), config)


def quadratic_search_worker(index: int, job: SearchJob) -> None:
    """Worker ``index`` of a ``quadratic`` job (for :func:`~tinyqml.search.workers.run_workers`)."""
    _work(_run_quadratic, index, job)


# ---- qnas


def _qnas_backend(name: str) -> Any:
    if name not in QNAS_BACKENDS:
        raise BuiltinSearchError(f"backend must be one of {', '.join(QNAS_BACKENDS)}, got {name!r}")
    try:
        from qiskit_ibm_runtime import fake_provider
    except ModuleNotFoundError as exc:
        raise BuiltinSearchError(f"the qnas search needs Qiskit's fake backends ({exc.name} is missing); install "
                                 f"tinyqml[interop]") from exc
    return getattr(fake_provider, name)()


def _qnas_data(o: QNASOptions) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """SuperCircuit training images and labels, validation images and labels (tutorial 5's split: a
    seeded quarter of the training images held out)."""
    from tinyqml.qml.datasets import digits4

    data = digits4((0, 1, 2, 3), seed=0)
    perm = torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(0))
    n_val = len(perm) // 4
    val, train = perm[:n_val], perm[n_val:]
    if o.val_images is not None:
        val = val[:o.val_images]
    return data.x_train[train], data.y_train[train], data.x_train[val], data.y_train[val]


def _qnas_layer(o: QNASOptions) -> Any:
    import tinyqml.qml as tq
    from tinyqml.classifier import encoder_4x4_ryzxy
    from tinyqml.qml.supercircuit import SuperCircuit, SuperCircuitConfig, SuperLayer

    sc = SuperCircuit(SuperCircuitConfig(n_wires=4, n_blocks=o.blocks))
    return SuperLayer(encoder_4x4_ryzxy(), sc, [tq.Z(i) for i in range(4)], seed=o.train_seed)


def _qnas_supercircuit(job: SearchJob) -> Any:
    """The trained SuperLayer of ``job`` (trained once into ``supercircuit.pt``)."""
    from tinyqml.noise.quantumnas import SuperTrainConfig, train_supercircuit

    o: QNASOptions = job.options
    layer = _qnas_layer(o)

    def build() -> dict[str, Any]:
        x, y, _, _ = _qnas_data(o)
        train_supercircuit(layer, x, y, SuperTrainConfig(epochs=o.super_epochs, warmup_epochs=o.warmup_epochs,
                                                         restrict=o.restrict, lr=o.lr, batch_size=o.batch_size,
                                                         seed=o.train_seed))
        return layer.state_dict()

    layer.load_state_dict(_artifact(job, "supercircuit.pt", o.artifact_meta(), build))
    return layer.eval()


def _prepare_qnas(job: SearchJob, stage: Stage) -> None:
    o: QNASOptions = job.options
    _qnas_backend(o.backend)  # Qiskit missing: say so before training
    path = Path(job.artifacts_dir) / "supercircuit.pt"
    if path.is_file():
        stage(f"qnas: using the trained SuperCircuit {path}")
    else:
        stage(f"qnas: training the SuperCircuit ({o.blocks} blocks, {o.warmup_epochs} + {o.super_epochs} epochs) "
              f"into {path}")
    _qnas_supercircuit(job)


def _run_qnas(job: SearchJob, index: int) -> None:
    from tinyqml.noise import NoiseModel
    from tinyqml.noise.quantumnas import CoSearch, SearchSettings
    from tinyqml.search import Evolution, EvolutionConfig

    o: QNASOptions = job.options
    layer = _qnas_supercircuit(job)
    _, _, x_val, y_val = _qnas_data(o)
    backend = _qnas_backend(o.backend)
    settings = SearchSettings(n_trials=job.trials, strategy=Evolution(EvolutionConfig(population=o.population,
                                                                                      parents=o.parents)),
                              seed=worker_seed(job.seed, index), storage=job.storage, study_name=job.study)
    CoSearch(layer, backend, NoiseModel.from_backend(backend), x_val, y_val, 4, settings).run()


def qnas_worker(index: int, job: SearchJob) -> None:
    """Worker ``index`` of a ``qnas`` job (for :func:`~tinyqml.search.workers.run_workers`)."""
    _work(_run_qnas, index, job)


# ---- ofa


def _ofa_costs(o: OFAOptions) -> tuple[Any, tuple[Any, ...]]:
    """The cost model and the parsed constraints, refused when none of 300 sampled architectures meets them."""
    from tinyqml.classical.arch import sample_arch
    from tinyqml.classical.efficiency import efficiency_costs
    from tinyqml.classical.nas import NoFeasibleArchError, parse_constraints

    costs = efficiency_costs(o.supernet)
    limits = costs.check(parse_constraints(o.constraints))  # an unknown cost: UnknownConstraintError
    g = torch.Generator().manual_seed(0)
    archs = [o.supernet.smallest(), o.supernet.largest()] + [sample_arch(o.supernet, g) for _ in range(300)]
    if limits and not any(costs.feasible(a, limits) for a in archs):
        lows = ", ".join(f"{c.cost} >= {min(costs.cost(c.cost, a) for a in archs):,.0f}" for c in limits)
        raise NoFeasibleArchError(f"no architecture of the space satisfies {', '.join(o.constraints)} (of the "
                                  f"smallest, the largest and 300 random ones: {lows}); loosen the constraints")
    return costs, limits


def _ofa_supernet(job: SearchJob) -> Any:
    """The trained supernet of ``job`` (trained once into ``supernet.pt``)."""
    from tinyqml.classical.data import load_digits_data
    from tinyqml.classical.ofa_train import OFATrainConfig, train_supernet
    from tinyqml.classical.supernet import OFAMobileNetV2

    o: OFAOptions = job.options
    net = OFAMobileNetV2(o.supernet, seed=o.train_seed)

    def build() -> dict[str, Any]:
        train_supernet(net, load_digits_data(o.data), OFATrainConfig(epochs=o.epochs, seed=o.train_seed))
        return net.state_dict()

    net.load_state_dict(_artifact(job, "supernet.pt", o.artifact_meta(), build))
    return net.eval()


def _prepare_ofa(job: SearchJob, stage: Stage) -> None:
    o: OFAOptions = job.options
    _ofa_costs(o)  # unknown or unsatisfiable constraints fail before any training
    path = Path(job.artifacts_dir) / "supernet.pt"
    if path.is_file():
        stage(f"ofa: using the trained supernet {path}")
    else:
        stage(f"ofa: training the supernet ({o.epochs} epochs, sandwich rule + in-place distillation) into {path}")
    _ofa_supernet(job)


def _run_ofa(job: SearchJob, index: int) -> None:
    from tinyqml.classical.data import load_digits_data
    from tinyqml.classical.nas import NASSearchConfig, search_architecture
    from tinyqml.classical.ofa_train import evaluate_arch

    o: OFAOptions = job.options
    costs, limits = _ofa_costs(o)
    net = _ofa_supernet(job)
    data = load_digits_data(o.data)
    search = NASSearchConfig(n_trials=job.trials, seed=worker_seed(job.seed, index), storage=job.storage,
                             study_name=job.study)
    search_architecture(lambda arch: evaluate_arch(net, arch, data, calibration_images=o.calibration_images),
                        o.supernet, costs, limits, search)


def ofa_worker(index: int, job: SearchJob) -> None:
    """Worker ``index`` of an ``ofa`` job (for :func:`~tinyqml.search.workers.run_workers`)."""
    _work(_run_ofa, index, job)


#: the built-in searches by name
SEARCHES: Mapping[str, BuiltinSearch] = MappingProxyType({
    "quadratic": BuiltinSearch(
        "quadratic", "synthetic: 2 integers and a choice, known optimum, no model (the engine's own check)",
        QuadraticOptions, QuadraticOptions(), QuadraticOptions(), _prepare_quadratic, _run_quadratic,
        quadratic_search_worker),
    "qnas": BuiltinSearch(
        "qnas", "QuantumNAS: sub-circuit + qubit mapping on FakeQuitoV2, scored by noisy validation accuracy "
                "with a SuperCircuit's inherited weights",
        QNASOptions, QNASOptions(),
        QNASOptions(blocks=2, super_epochs=2, warmup_epochs=1, population=4, parents=2, val_images=64),
        _prepare_qnas, _run_qnas, qnas_worker),
    "ofa": BuiltinSearch(
        "ofa", "once-for-all NAS: MobileNetV2 sub-networks under macs<=400k, peak_sram<=20k, scored by measured "
               "validation accuracy with a supernet's shared weights",
        OFAOptions, OFAOptions(),
        OFAOptions(supernet=SupernetConfig(stages=((16, 2), (24, 2)), depths=(1, 2), resolutions=(12, 16)),
                   epochs=2, calibration_images=128),
        _prepare_ofa, _run_ofa, ofa_worker),
})


def get_search(name: str) -> BuiltinSearch:
    """The built-in search ``name``; :class:`UnknownSearchError` (listing the known ones) otherwise."""
    spec = SEARCHES.get(name) if isinstance(name, str) else None
    if spec is None:
        raise UnknownSearchError(f"unknown search {name!r}; known: {', '.join(SEARCHES)}")
    return spec


# --------------------------------------------------------------------------- running one


def default_artifacts_dir(storage: str, study: str) -> Path:
    """Where the shared artefacts of ``study`` go: ``<folder of the SQLite file>/<study>``, or
    ``runs/<study>`` for a server storage."""
    url = storage_url(storage) or ""
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///"):]).parent / study
    return Path("runs") / study


def _redacted(url: str) -> str:
    """``url`` with its password replaced by ``***`` (:func:`~tinyqml.search.storage.redact_url`)."""
    return redact_url(url)


def _shared_url(storage: str | None) -> str:
    storage = DEFAULT_STORAGE if storage is None else storage
    if not isinstance(storage, str) or not storage:
        raise BuiltinSearchError(f"storage must be a SQLite path, a sqlite:/// URL or a postgresql:// URL, got "
                                 f"{storage!r}")
    url = storage_url(storage)
    if url is None or url == "sqlite:///:memory:":
        raise BuiltinSearchError(f"storage {storage!r} keeps the study in one process's memory; a built-in search "
                                 f"needs a storage its workers share and a rerun continues: a SQLite file "
                                 f"(sqlite:///runs/search.db) or a postgresql:// URL")
    return url


def _complete(study: optuna.Study) -> int:
    return count_states(study)[TrialState.COMPLETE]


def _claim_study(job: SearchJob) -> optuna.Study:
    """Create or load the study; record which search it holds, or refuse one that holds another."""
    mark = json.dumps({"space": job.space, "options": job.options.identity()}, sort_keys=True)
    study = optuna.create_study(storage=open_storage(job.storage), study_name=job.study, direction="maximize",
                                load_if_exists=True)
    if len(study.directions) != 1 or study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise BuiltinSearchError(f"the study {job.study!r} in {_redacted(job.storage)} has directions "
                                 f"{[d.name.lower() for d in study.directions]}; a built-in search maximizes one "
                                 f"score: choose another --study")
    held = study.user_attrs.get(STUDY_ATTR)
    if held is None:
        study.set_user_attr(STUDY_ATTR, mark)
    elif held != mark:
        where = f"the study {job.study!r} in {_redacted(job.storage)}"
        try:
            old = json.loads(held)
            old_space, old_options = old["space"], old["options"]
        except (ValueError, TypeError, KeyError):
            old_space, old_options = "?", {}
        if old_space != job.space:
            why = f"holds a {old_space!r} search, not {job.space!r}"
        else:
            new_options = job.options.identity()
            diff = sorted(k for k in set(old_options) | set(new_options) if old_options.get(k) != new_options.get(k))
            why = ("was started with other settings: " +
                   "; ".join(f"{k} {old_options.get(k)!r} there, {new_options.get(k)!r} here" for k in diff))
        raise BuiltinSearchError(f"{where} {why}; choose another --study to start a new study, or continue it "
                                 f"with the settings it was started with (--fast or not)")
    return study


def _run_parallel(spec: BuiltinSearch, job: SearchJob, workers: int, stage: Stage, timeout: float | None,
                  poll: float = 2.0) -> list[int]:
    """``workers`` spawned processes on ``job``; reports the completed count whenever it changes.

    This thread only waits: the workers are started and joined by one helper thread, the count is read
    by another. Ctrl-C lands in this thread, so it can never interrupt a read of the storage halfway
    (optuna leaves such a session open, and an open read of a SQLite file blocks every worker's
    commit)."""
    out: dict[str, Any] = {}
    counted: list[int] = []
    stop = threading.Event()

    def target() -> None:
        try:
            out["codes"] = run_workers(spec.worker, workers, (job,), timeout=timeout)
        except BaseException as exc:  # re-raised in the caller's thread
            out["error"] = exc

    def count() -> None:
        try:
            view = optuna.load_study(study_name=job.study, storage=open_storage(job.storage, heartbeat=None))
            while not stop.is_set():
                try:
                    counted[:] = [_complete(view)]
                except Exception as exc:  # a busy SQLite file or a dropped connection: count later
                    log.debug("cannot count the trials now: %s", exc)
                stop.wait(poll)
        except Exception as exc:
            log.debug("no progress counts: %s", exc)

    thread = threading.Thread(target=target, name="tinyqml-workers", daemon=True)
    counter = threading.Thread(target=count, name="tinyqml-progress", daemon=True)
    thread.start()
    counter.start()
    last = -1
    try:
        while thread.is_alive():
            thread.join(poll)
            if counted and counted[-1] != last:
                last = counted[-1]
                stage(f"{last}/{job.trials} trials completed")
    except KeyboardInterrupt:
        stop.set()
        _stop_workers(thread)
        raise
    finally:
        stop.set()
    counter.join(poll + 5)
    if "error" in out:
        raise out["error"]
    n = _complete(optuna.load_study(study_name=job.study, storage=open_storage(job.storage, heartbeat=None)))
    if n != last:  # the workers finished between two counts
        stage(f"{n}/{job.trials} trials completed")
    return out["codes"]


def _stop_workers(thread: threading.Thread) -> None:
    """After Ctrl-C in this process: let the workers end (Ctrl-C in a terminal reached them too), else pass
    them the interrupt, else terminate them, so that nothing outlives this process; the trials they were
    running are failed as stale and retried by the next run."""
    import multiprocessing
    import signal

    thread.join(3)
    for sig, wait in ((signal.SIGINT, 15), (signal.SIGTERM, 5)):
        alive = [p for p in multiprocessing.active_children() if p.name.startswith("tinyqml-worker-")]
        if not alive or not thread.is_alive():
            return
        log.warning("interrupted: sending %s to the workers still running (pids %s)", signal.Signals(sig).name,
                    [p.pid for p in alive])
        for p in alive:
            if p.pid is not None and p.is_alive():  # it may have ended since the list was made
                with contextlib.suppress(ProcessLookupError):  # ... or between that check and the signal
                    os.kill(p.pid, sig)
        thread.join(wait)


def run_builtin_search(space: str, trials: int, study: str, storage: str | None = None, workers: int = 1,
                       seed: int = 0, artifacts_dir: str | os.PathLike | None = None, fast: bool = False, *,
                       options: Any = None, on_stage: Stage | None = None,
                       timeout: float | None = None) -> optuna.Study:
    """Run (or continue) the built-in search ``space`` until the study ``study`` has ``trials`` completed
    trials; returns the study, loaded from the storage.

    Args:
        space: a name of :data:`SEARCHES` (``quadratic``, ``qnas``, ``ofa``).
        trials: completed trials wanted in the study (counting earlier runs and other machines' workers).
        study: the study's name (letters, digits, ``.``, ``_``, ``-``); also the artefacts' folder name.
        storage: a SQLite path or ``sqlite:///`` URL (local processes), or a ``postgresql://`` URL (any
            number of machines); ``None``: :data:`~tinyqml.search.storage.DEFAULT_STORAGE`.
        workers: worker processes on this machine (1: in this process).
        seed: worker ``i`` samples with ``worker_seed(seed, i)``; the artefacts have their own seeds
            (``train_seed`` of the options), so a rerun with another seed continues the same study.
        artifacts_dir: the shared artefacts' folder (default :func:`default_artifacts_dir`).
        fast: the search's small options (for tests and smoke runs), unless ``options`` are given.
        options: the search's options object (:class:`QuadraticOptions`, :class:`QNASOptions`,
            :class:`OFAOptions`).
        on_stage: hears a message at every stage (default: the log); with workers, also the completed
            count whenever it changes.
        timeout: seconds after which the worker processes are terminated (``None``: no limit).

    Nothing is printed. Raises :class:`BuiltinSearchError` for a bad argument, a study that holds
    another search, or workers that stopped before the study had ``trials`` completed trials (rerun to
    continue).
    """
    spec = get_search(space)
    for name, v in (("trials", trials), ("workers", workers)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise BuiltinSearchError(f"{name} must be a positive int, got {v!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise BuiltinSearchError(f"seed must be an int >= 0, got {seed!r}")
    if not isinstance(study, str) or not _STUDY_NAME.match(study):
        raise BuiltinSearchError(f"study must be a name of letters, digits, '.', '_' and '-' (at most 128, not "
                                 f"starting with '.', '_' or '-'), got {study!r}")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise BuiltinSearchError(f"timeout must be None or a number of seconds > 0, got {timeout!r}")
    url = _shared_url(storage)
    opts = spec.options(bool(fast), options)
    folder = Path(artifacts_dir) if artifacts_dir is not None else default_artifacts_dir(url, study)
    job = SearchJob(spec.name, trials, study, url, seed, str(folder), opts)
    stage = on_stage or (lambda message: log.info("%s", message))

    stage(f"{spec.name}: study {study!r} in {_redacted(url)}; shared artefacts in {folder}")
    done = _complete(_claim_study(job))
    if done >= trials:
        stage(f"the study already has {done} completed trials (wanted {trials}); nothing to run")
    else:
        spec.prepare(job, stage)
        where = f"with {workers} worker processes" if workers > 1 else "in this process"
        stage(f"running {trials - done} more trial(s) ({done} completed so far) {where}")
        codes = [0]
        if workers == 1:
            spec.run(job, 0)
        else:
            codes = _run_parallel(spec, job, workers, stage, timeout)
        done = _complete(optuna.load_study(study_name=study, storage=open_storage(url, heartbeat=None)))
        if done < trials:
            raise BuiltinSearchError(f"the workers stopped (exit codes {codes}) with {done} of {trials} completed "
                                     f"trials in the study {study!r}; see their errors above, then rerun the same "
                                     f"command to continue")
        if any(codes):
            log.warning("some workers failed (exit codes %s); the others completed the study", codes)
    return optuna.load_study(study_name=study, storage=open_storage(url))
