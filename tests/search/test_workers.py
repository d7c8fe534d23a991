"""Many workers on one study: exactly N completed trials, crashes retried, resume; SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import threading
import time

import optuna
import pytest
from optuna.trial import TrialState

from tinyqml.search import SearchConfig, run_search
from tinyqml.search.errors import SearchError
from tinyqml.search.examples import QuadraticJob, quadratic_score, quadratic_space, quadratic_worker
from tinyqml.search.storage import HeartbeatConfig, open_storage
from tinyqml.search.workers import (
    SURPLUS_ATTR,
    WORKER_ATTR,
    count_states,
    optimize_until,
    run_workers,
    worker_seed,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)
FAST_HEARTBEAT = HeartbeatConfig(interval=1, grace=3, max_retry=3)


def _study(storage: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(storage, FAST_HEARTBEAT))


def _check_exactly(study: optuna.Study, n: int) -> list[optuna.trial.FrozenTrial]:
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == n
    assert len({t.number for t in trials}) == len(trials)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    for t in trials:
        if t.state == TrialState.PRUNED:
            assert t.user_attrs.get(SURPLUS_ATTR) is True  # never evaluated, never counted
    return trials


def _kill_one_mid_trial(storage: str, name: str, job: QuadraticJob, n_workers: int = 2) -> tuple[list[int], int]:
    """Run the workers in the background, SIGKILL one while it evaluates a trial; exit codes, killed pid."""
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.extend(run_workers(quadratic_worker, n_workers, (job,),
                                                                      timeout=180)))
    runner.start()
    victim = None
    deadline = time.monotonic() + 60
    while victim is None and time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            study = _study(storage, name)
        except KeyError:  # the study is not created yet
            continue
        running = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                   if t.user_attrs.get(WORKER_ATTR) and t.params and t.number >= 2]  # evaluating, not sampling
        if running:
            victim = int(running[0].user_attrs[WORKER_ATTR].rsplit(":", 1)[1])
    assert victim is not None, "no running trial to interrupt"
    os.kill(victim, signal.SIGKILL)
    runner.join(200)
    assert not runner.is_alive()
    return codes, victim


def _crash_case(storage: str, name: str) -> None:
    job = QuadraticJob(storage, name, n_trials=10, seed=1, seconds=0.4, heartbeat=FAST_HEARTBEAT)
    codes, victim = _kill_one_mid_trial(storage, name, job)
    assert sorted(codes) == [-signal.SIGKILL, 0]
    trials = _check_exactly(_study(storage, name), 10)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 1 and failed[0].user_attrs[WORKER_ATTR].endswith(f":{victim}")
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == failed[0].number]
    # the retry keeps every parameter the killed trial had chosen (all of them, unless it died while choosing)
    assert len(retries) == 1 and failed[0].params
    assert all(retries[0].params[k] == v for k, v in failed[0].params.items())
    assert retries[0].state == TrialState.COMPLETE  # the crashed evaluation ran again and counts once


@pytest.mark.slow
def test_sigkill_mid_trial_is_retried_sqlite(tmp_path) -> None:
    _crash_case(f"sqlite:///{tmp_path / 'study.db'}", "crash")


@pytest.mark.slow
def test_sigkill_mid_trial_is_retried_postgresql(postgres_storage) -> None:
    _crash_case(postgres_storage, "crash")


@pytest.mark.parametrize("n_workers", [1, 3])
def test_workers_complete_exactly_n_trials_sqlite(tmp_path, n_workers) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    job = QuadraticJob(storage, "race", n_trials=9, seed=0, seconds=0.05, heartbeat=FAST_HEARTBEAT)
    assert run_workers(quadratic_worker, n_workers, (job,), timeout=120) == [0] * n_workers
    trials = _check_exactly(_study(storage, "race"), 9)
    workers = {t.user_attrs[WORKER_ATTR] for t in trials if t.state == TrialState.COMPLETE}
    assert 1 <= len(workers) <= n_workers


def test_workers_complete_exactly_n_trials_postgresql(postgres_storage) -> None:
    job = QuadraticJob(postgres_storage, "race", n_trials=12, seed=0, seconds=0.05, heartbeat=FAST_HEARTBEAT)
    assert run_workers(quadratic_worker, 3, (job,), timeout=120) == [0, 0, 0]
    trials = _check_exactly(_study(postgres_storage, "race"), 12)
    assert len({t.user_attrs[WORKER_ATTR] for t in trials if t.state == TrialState.COMPLETE}) >= 2


def test_interrupted_search_resumes(tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    config = SearchConfig(n_trials=12, storage=storage, study_name="resume", seed=0, progress=False,
                          heartbeat=FAST_HEARTBEAT)
    calls = []

    def flaky(cfg, trial):
        calls.append(trial.number)
        if len(calls) == 5:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the fifth trial
        return quadratic_score(cfg)

    with pytest.raises(KeyboardInterrupt):
        run_search(flaky, quadratic_space(), config)
    assert count_states(_study(storage, "resume"))[TrialState.COMPLETE] == 4
    study = run_search(lambda cfg, trial: quadratic_score(cfg), quadratic_space(), config)  # the same command again
    _check_exactly(study, 12)
    again = run_search(lambda cfg, trial: pytest.fail("ran a trial"), quadratic_space(), config)
    assert len(again.trials) == len(study.trials)


def test_the_gate_holds_back_surplus_trials() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(3):  # three trials started elsewhere and still running
        study.ask()
    seen = []

    def objective(trial):
        seen.append(trial.number)
        return 0.0

    # the running trials fill the study: this worker waits, then finishes them for them and stops
    def finish_later():
        time.sleep(0.3)
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.number < 3:
                study.tell(t.number, 1.0)

    threading.Thread(target=finish_later).start()
    assert optimize_until(study, objective, 3, poll=0.05) == 0
    assert seen == [] and count_states(study)[TrialState.COMPLETE] == 3


def test_worker_arguments_are_checked() -> None:
    with pytest.raises(SearchError, match="positive int"):
        run_workers(quadratic_worker, 0)
    with pytest.raises(SearchError, match="module-level"):
        run_workers(lambda i: None, 1)
    with pytest.raises(SearchError, match="n_complete"):
        optimize_until(optuna.create_study(), lambda t: 0.0, 0)
    assert worker_seed(None, 3) is None and worker_seed(2, 0) != worker_seed(2, 1)
