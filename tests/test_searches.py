"""Built-in searches (tinyqml.searches): the registry, options, one study with many workers, resume, artefacts."""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tinyqml import searches
from tinyqml.classical.nas import ConstraintSyntaxError
from tinyqml.search.artifacts import ArtifactError, load_weights
from tinyqml.search.storage import open_storage
from tinyqml.search.workers import SURPLUS_ATTR, WORKER_ATTR, worker_id
from tinyqml.searches import (
    SEARCHES,
    STUDY_ATTR,
    BuiltinSearchError,
    OFAOptions,
    QNASOptions,
    QuadraticOptions,
    SearchJob,
    UnknownSearchError,
    default_artifacts_dir,
    get_search,
    run_builtin_search,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'search.db'}"


def _exactly(study: optuna.Study, n: int) -> list[optuna.trial.FrozenTrial]:
    """The completed trials of ``study``, checked to be exactly ``n``, with nothing left running."""
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == n
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert all(t.user_attrs.get(SURPLUS_ATTR) for t in trials if t.state == TrialState.PRUNED)
    return done


def test_docstring_examples() -> None:
    assert doctest.testmod(searches, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE).failed == 0


def test_registry_lookup() -> None:
    assert list(SEARCHES) == ["quadratic", "qnas", "ofa"]
    for name, spec in SEARCHES.items():
        assert get_search(name) is spec and spec.name == name
        assert isinstance(spec.default, spec.options_type) and isinstance(spec.fast, spec.options_type)
        assert spec.worker.__module__ == "tinyqml.searches"  # module-level: spawned processes import it
    with pytest.raises(UnknownSearchError, match="unknown search 'OFA'; known: quadratic, qnas, ofa"):
        get_search("OFA")
    with pytest.raises(TypeError):
        SEARCHES["mine"] = SEARCHES["ofa"]  # type: ignore[index]
    assert SEARCHES["qnas"].options(fast=True) is SEARCHES["qnas"].fast
    with pytest.raises(BuiltinSearchError, match="takes QNASOptions options, got OFAOptions"):
        SEARCHES["qnas"].options(options=OFAOptions())


def test_options_say_what_is_accepted() -> None:
    with pytest.raises(BuiltinSearchError, match="one of FakeQuitoV2, FakeManilaV2"):
        QNASOptions(backend="FakeLagos")
    with pytest.raises(BuiltinSearchError, match="parents"):
        QNASOptions(population=2, parents=3)
    with pytest.raises(BuiltinSearchError, match="seconds must be a finite number >= 0"):
        QuadraticOptions(seconds=-1)
    with pytest.raises(ConstraintSyntaxError, match="accepted"):
        OFAOptions(constraints=("macs<300k",))
    assert OFAOptions(constraints="macs<=300k").constraints == ("macs<=300k",)
    assert QuadraticOptions(seconds=2).identity() == {}  # seconds change the time, not the scores
    assert QNASOptions().identity()["backend"] == "FakeQuitoV2"


@pytest.mark.parametrize("kwargs, message", [
    ({"trials": 0}, "trials must be a positive int"),
    ({"workers": 0}, "workers must be a positive int"),
    ({"seed": -1}, "seed must be an int >= 0"),
    ({"study": "../x"}, "study must be a name of letters"),
    ({"storage": ":memory:"}, "keeps the study in one process's memory"),
    ({"space": "nope"}, "unknown search 'nope'"),
    ({"timeout": 0}, "timeout must be None"),
])
def test_bad_arguments_are_refused(tmp_path: Path, kwargs: dict, message: str) -> None:
    args = {"space": "quadratic", "trials": 3, "study": "s", "storage": _sqlite(tmp_path), **kwargs}
    with pytest.raises(BuiltinSearchError, match=message):
        run_builtin_search(**args)
    assert not (tmp_path / "s").exists()


def test_default_artifacts_dir_and_redaction() -> None:
    assert default_artifacts_dir("sqlite:///runs/search.db", "a") == Path("runs/a")
    assert default_artifacts_dir("/data/x/s.db", "b") == Path("/data/x/b")
    assert default_artifacts_dir("postgresql://u@h/db", "c") == Path("runs/c")
    assert searches._redacted("postgresql://u:pw@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert searches._redacted("postgresql://u@h/db") == "postgresql://u@h/db"


def test_quadratic_with_two_workers_completes_exactly_n_and_continues(tmp_path: Path) -> None:
    storage, stages = _sqlite(tmp_path), []
    study = run_builtin_search("quadratic", 8, "q", storage=storage, workers=2, seed=1, on_stage=stages.append)
    first = _exactly(study, 8)
    assert any("with 2 worker processes" in s for s in stages) and stages[-1] == "8/8 trials completed"
    assert all(t.user_attrs[WORKER_ATTR] for t in first)
    assert json.loads(study.user_attrs[STUDY_ATTR]) == {"space": "quadratic", "options": {}}
    again = run_builtin_search("quadratic", 16, "q", storage=storage, workers=2, seed=1)  # the same, 2N
    done = _exactly(again, 16)
    assert {t.number for t in first} < {t.number for t in done}  # the first eight are kept, eight more ran
    stages.clear()
    same = run_builtin_search("quadratic", 16, "q", storage=storage, workers=2, on_stage=stages.append)
    assert len(same.trials) == len(again.trials) and "nothing to run" in stages[-1]


def test_quadratic_in_this_process(tmp_path: Path) -> None:
    study = run_builtin_search("quadratic", 5, "one", storage=str(tmp_path / "s.db"))  # a bare path is SQLite
    assert {t.user_attrs[WORKER_ATTR] for t in _exactly(study, 5)} == {worker_id()}


def test_workers_that_stop_early_are_an_error(tmp_path: Path) -> None:
    with pytest.raises(BuiltinSearchError, match=r"workers stopped \(exit codes .*of 40 completed.*rerun"):
        run_builtin_search("quadratic", 40, "slow", storage=_sqlite(tmp_path), workers=2,
                           options=QuadraticOptions(seconds=1.0), timeout=6)


def test_a_study_holding_another_search_is_refused(tmp_path: Path) -> None:
    storage = _sqlite(tmp_path)
    run_builtin_search("quadratic", 2, "s", storage=storage)
    with pytest.raises(BuiltinSearchError, match="holds a 'quadratic' search, not 'ofa'"):
        run_builtin_search("ofa", 2, "s", storage=storage, fast=True)
    study = optuna.create_study(storage=open_storage(storage), study_name="q2", direction="maximize")
    study.set_user_attr(STUDY_ATTR, json.dumps({"space": "qnas", "options": QNASOptions().identity()}))
    with pytest.raises(BuiltinSearchError, match="other settings: .*blocks 4 there, 2 here"):
        run_builtin_search("qnas", 2, "q2", storage=storage, fast=True)
    assert not (tmp_path / "s").exists() and not (tmp_path / "q2").exists()  # nothing was trained
    optuna.create_study(storage=open_storage(storage), study_name="min", direction="minimize")
    with pytest.raises(BuiltinSearchError, match="maximizes one score"):
        run_builtin_search("quadratic", 2, "min", storage=storage)


def test_an_artefact_built_with_other_settings_is_refused(tmp_path: Path) -> None:
    import torch

    job = SearchJob("qnas", 1, "s", _sqlite(tmp_path), 0, str(tmp_path / "art"), QNASOptions())
    state = searches._artifact(job, "a.pt", {"epochs": 1}, lambda: {"w": torch.ones(2)})
    assert state["w"].tolist() == [1.0, 1.0]
    assert searches._artifact(job, "a.pt", {"epochs": 1}, lambda: pytest.fail("rebuilt"))["w"].sum() == 2
    with pytest.raises(ArtifactError, match="built with other settings"):
        searches._artifact(job, "a.pt", {"epochs": 2}, lambda: pytest.fail("rebuilt"))


@pytest.mark.slow
def test_qnas_fast_with_two_workers(tmp_path: Path) -> None:
    storage, stages = _sqlite(tmp_path), []
    study = run_builtin_search("qnas", 6, "qnas", storage=storage, workers=2, fast=True, on_stage=stages.append)
    done = _exactly(study, 6)
    for t in done:
        assert 0.0 <= t.value <= 1.0 and len(set(t.user_attrs["mapping"])) == 4  # distinct physical qubits
        assert {"gates", "two_qubit", "esp"} <= set(t.user_attrs["costs"])
    art = tmp_path / "qnas" / "supercircuit.pt"
    state = load_weights(art)  # weights_only
    assert set(state) == {"meta", "model"} and state["model"]["weights"].dtype.is_floating_point
    assert any("training the SuperCircuit" in s for s in stages)
    stamp = art.stat().st_mtime_ns
    stages.clear()
    more = run_builtin_search("qnas", 8, "qnas", storage=storage, fast=True, on_stage=stages.append)  # in-process
    _exactly(more, 8)
    assert art.stat().st_mtime_ns == stamp and any("using the trained SuperCircuit" in s for s in stages)


def test_ofa_fast_with_two_workers(tmp_path: Path) -> None:
    storage = _sqlite(tmp_path)
    study = run_builtin_search("ofa", 6, "ofa", storage=storage, workers=2, fast=True, seed=3)
    done = _exactly(study, 6)
    for t in done:
        assert t.user_attrs["costs"]["macs"] <= 400_000 and t.user_attrs["costs"]["peak_sram"] <= 20_000
        assert 0.0 <= t.value <= 100.0  # measured validation accuracy (%)
    assert set(load_weights(tmp_path / "ofa" / "supernet.pt")) == {"meta", "model"}


def test_ofa_refuses_unsatisfiable_constraints_before_training(tmp_path: Path) -> None:
    from tinyqml.classical.nas import NoFeasibleArchError

    fast = SEARCHES["ofa"].fast
    options = OFAOptions(supernet=fast.supernet, epochs=1, constraints=("macs<=10",))
    with pytest.raises(NoFeasibleArchError, match="no architecture of the space satisfies macs<=10"):
        run_builtin_search("ofa", 2, "ofa", storage=_sqlite(tmp_path), options=options)
    assert not (tmp_path / "ofa" / "supernet.pt").exists()


def test_quadratic_on_postgresql(postgres_storage: str, tmp_path: Path) -> None:
    study = run_builtin_search("quadratic", 10, "pg", storage=postgres_storage, workers=2,
                               artifacts_dir=tmp_path / "art")
    _exactly(study, 10)
    again = run_builtin_search("quadratic", 12, "pg", storage=postgres_storage, workers=2,
                               artifacts_dir=tmp_path / "art")
    _exactly(again, 12)
