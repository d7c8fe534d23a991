"""Many workers on one study: exactly N completed trials, crash-safe, resumable.

Every worker of a study runs :func:`optimize_until` against the shared storage (optuna's RDB storage:
a SQLite file for local processes, PostgreSQL for many machines); there is no scheduler. A worker
loops: fail the trials whose heartbeat stopped (optuna re-enqueues each with the same parameters),
stop when the study has ``n_complete`` completed trials, wait while the trials already running could
reach it, else run one trial (a re-enqueued one first). Two workers may still start a trial at the
same moment; each trial therefore passes a **gate** before its objective runs: it goes ahead only
while fewer than ``n_complete`` running, waiting or completed trials have a smaller number.
Completed trials never change state, so at most ``n_complete`` trials are ever past the gate and
the study ends with exactly ``n_complete`` completed trials however workers start, race or die. A
trial that stays behind the gate until the study is complete ends pruned, marked
:data:`SURPLUS_ATTR`; it is never evaluated.

:func:`run_workers` starts ``k`` local worker processes (``spawn``: a clean interpreter each) that run
one module-level function, and waits for them.

>>> import optuna
>>> optuna.logging.set_verbosity(optuna.logging.WARNING)
>>> study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
>>> optimize_until(study, lambda t: t.suggest_float("x", 0, 1), 5)
5
>>> optimize_until(study, lambda t: t.suggest_float("x", 0, 1), 5)  # already complete: nothing runs
0
>>> len(study.trials)
5
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import socket
import sys
import time
from typing import Any, Callable, Iterator, Sequence

import optuna
from optuna.trial import TrialState

from tinyqml.search.errors import SearchError
from tinyqml.search.storage import quiet_optuna_warnings

__all__ = ["SURPLUS_ATTR", "WORKER_ATTR", "optimize_until", "run_workers", "worker_seed", "worker_id", "count_states"]

log = logging.getLogger(__name__)

#: user attribute of a trial that waited behind the gate until the study was complete (never evaluated)
SURPLUS_ATTR = "surplus"
#: user attribute naming the worker (``host:pid``) that ran a trial
WORKER_ATTR = "worker"
_AHEAD = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)


def count_states(study: optuna.Study) -> dict[TrialState, int]:
    """How many trials of ``study`` are in each state."""
    out = {s: 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        out[t.state] += 1
    return out


def _fail_stale(study: optuna.Study) -> None:
    with quiet_optuna_warnings():
        optuna.storages.fail_stale_trials(study)  # a no-op without a heartbeat (in memory)


def _gated(objective: Callable[[optuna.Trial], Any], n_complete: int, poll: float) -> Callable[[optuna.Trial], Any]:
    def run(trial: optuna.Trial) -> Any:
        while True:
            trials = trial.study.get_trials(deepcopy=False, states=_AHEAD)
            if sum(1 for t in trials if t.number < trial.number) < n_complete:
                return objective(trial)
            if sum(1 for t in trials if t.state == TrialState.COMPLETE) >= n_complete:
                trial.set_user_attr(SURPLUS_ATTR, True)
                raise optuna.TrialPruned(f"surplus: the study already has {n_complete} completed trials")
            time.sleep(poll)
            _fail_stale(trial.study)

    return run


def optimize_until(study: optuna.Study, objective: Callable[[optuna.Trial], Any], n_complete: int,
                   poll: float = 0.5, show_progress_bar: bool = False,
                   callbacks: Sequence[Callable[[optuna.Study, Any], None]] = ()) -> int:
    """Run trials of ``objective`` in this process until ``study`` has ``n_complete`` completed trials
    (counting those of every other worker); returns how many this worker completed. An exception in
    ``objective`` propagates (the trial is failed first), as in ``study.optimize``."""
    if isinstance(n_complete, bool) or not isinstance(n_complete, int) or n_complete < 1:
        raise SearchError(f"n_complete must be a positive int, got {n_complete!r}")
    gated = _gated(objective, n_complete, poll)
    mine: list[int] = []

    def record(_: optuna.Study, trial: Any) -> None:
        if trial.state == TrialState.COMPLETE:
            mine.append(trial.number)
    bar = _progress(study, n_complete) if show_progress_bar else None
    try:
        while True:
            _fail_stale(study)
            counts = count_states(study)
            if bar is not None:
                bar.update(counts[TrialState.COMPLETE] - bar.n)
            if counts[TrialState.COMPLETE] >= n_complete:
                return len(mine)
            if not counts[TrialState.WAITING] and \
                    counts[TrialState.COMPLETE] + counts[TrialState.RUNNING] >= n_complete:
                time.sleep(poll)  # enough trials are running; one may still fail and need a successor
                continue
            study.optimize(gated, n_trials=1, callbacks=[record, *callbacks])
    finally:
        if bar is not None:
            bar.close()


def _progress(study: optuna.Study, total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=min(total, count_states(study)[TrialState.COMPLETE]), desc=study.study_name,
                unit="trial")


def worker_id() -> str:
    """``host:pid`` of this process (recorded on every trial it runs)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def worker_seed(seed: int | None, index: int) -> int | None:
    """The sampler seed of worker ``index`` (distinct per worker, reproducible from ``seed``, below 2**32 as
    numpy's samplers need).

    >>> worker_seed(7, 2), worker_seed(2**32 - 1, 0) < 2**32, worker_seed(None, 3)
    (7065, True, None)
    """
    return None if seed is None else (seed * 1009 + index) % 2**32


@contextlib.contextmanager
def _main_not_reimported() -> Iterator[None]:
    """Start processes without re-running the calling script in them: ``spawn`` imports the parent's
    ``__main__`` from its file (a tutorial or notebook-style script would run again in every worker); the
    workers' target lives in an importable module, so the script is hidden while they start."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    spec = getattr(main, "__spec__", None)
    if main is None or (path is None and spec is None):
        yield
        return
    try:
        if path is not None:
            del main.__file__
        main.__spec__ = None
        yield
    finally:
        if path is not None:
            main.__file__ = path
        main.__spec__ = spec


def run_workers(target: Callable[..., Any], n_workers: int, args: Sequence[Any] = (),
                timeout: float | None = None) -> list[int]:
    """Start ``n_workers`` processes (``spawn``) running ``target(index, *args)`` (a module-level function,
    so the child can import it), wait for all, and return their exit codes; a worker that fails makes
    the others keep going (the study survives it). ``timeout`` (seconds): terminate the stragglers."""
    if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1:
        raise SearchError(f"n_workers must be a positive int, got {n_workers!r}")
    if not callable(target) or getattr(target, "__name__", "<lambda>") == "<lambda>":
        raise SearchError("run_workers needs a module-level function (the spawned processes import it by name)")
    if getattr(target, "__module__", "__main__") == "__main__":
        raise SearchError(f"run_workers needs a function of an importable module, not {target.__name__!r} of the "
                          f"running script (the spawned processes import it by name)")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=target, args=(i, *args), name=f"tinyqml-worker-{i}") for i in range(n_workers)]
    with _main_not_reimported():
        for p in procs:
            p.start()
    log.info("started %d workers: pids %s", n_workers, [p.pid for p in procs])
    deadline = None if timeout is None else time.monotonic() + timeout
    for p in procs:
        p.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            log.warning("worker %s (pid %s) ran past the timeout; terminating it", p.name, p.pid)
            p.terminate()
            p.join(5)
    codes = [p.exitcode if p.exitcode is not None else -9 for p in procs]
    if any(codes):
        log.warning("worker exit codes %s (pid %d)", codes, os.getpid())
    return codes
