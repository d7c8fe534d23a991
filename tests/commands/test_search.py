"""Tests of ``tinyqml search``."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tinyqml.cli import main
from tinyqml.commands import search


def _completed(storage: str, study: str) -> int:
    import optuna
    from optuna.trial import TrialState

    from tinyqml.search.storage import open_storage

    try:
        s = optuna.load_study(study_name=study, storage=open_storage(storage, heartbeat=None))
    except KeyError:  # not created yet
        return 0
    return len(s.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def _trials(storage: str, study: str) -> list:
    import optuna

    from tinyqml.search.storage import open_storage

    return optuna.load_study(study_name=study, storage=open_storage(storage, heartbeat=None)).get_trials()


def test_search_help_lists_the_searches_and_examples(cli_run) -> None:
    from tinyqml.search.storage import DEFAULT_STORAGE
    from tinyqml.searches import SEARCHES

    proc = cli_run("search", "--help")
    assert proc.returncode == 0
    for text in ("--trials N", "--study NAME", "--storage URL", "--workers K", "--seed S", "--fast",
                 "postgresql://", "optuna-dashboard sqlite:///runs/search.db", DEFAULT_STORAGE, *SEARCHES):
        assert text in proc.stdout, text
    assert search.SEARCH_STORAGE == DEFAULT_STORAGE


def test_search_quadratic_two_workers_then_continues(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    storage = f"sqlite:///{tmp_path / 'search.db'}"
    args = ["search", "quadratic", "--study", "q", "--storage", storage, "--workers", "2", "--seed", "2"]
    assert main([*args, "--trials", "6"]) == 0
    out = capsys.readouterr().out
    assert "running 6 more trial(s) (0 completed so far) with 2 worker processes" in out
    assert "study 'q': 6 completed trials" in out and re.search(r"^best trial #\d+: value ", out, flags=re.M)
    assert "completed per worker: " in out and _completed(storage, "q") == 6
    assert main([*args, "--trials", "12"]) == 0  # the same command with 2N continues the study
    out = capsys.readouterr().out
    assert "(6 completed so far)" in out and "study 'q': 12 completed trials" in out
    assert _completed(storage, "q") == 12


def test_search_unknown_space_is_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    storage = f"sqlite:///{tmp_path / 'search.db'}"
    assert main(["search", "qnass", "--trials", "3", "--study", "x", "--storage", storage]) == 1
    err = capsys.readouterr().err
    assert err == "tinyqml: error: unknown search 'qnass'; known: quadratic, qnas, ofa\n"


@pytest.mark.parametrize("argv", [["search", "quadratic", "--study", "x"], ["search", "quadratic", "--trials", "3"],
                                  ["search", "quadratic", "--trials", "0", "--study", "x"],
                                  ["search", "quadratic", "--trials", "3", "--study", "x", "--workers", "0"]])
def test_search_bad_arguments_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


def test_search_on_postgresql(postgres_storage: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # artefacts of a server storage go to runs/<study>/ here
    assert main(["search", "quadratic", "--trials", "8", "--study", "pg", "--storage", postgres_storage,
                 "--workers", "2"]) == 0
    assert "study 'pg': 8 completed trials" in capsys.readouterr().out
    assert _completed(postgres_storage, "pg") == 8


@pytest.mark.slow
def test_search_interrupted_as_a_whole_continues_on_rerun(cli_run, tinyqml_command, tmp_path: Path) -> None:
    import os
    import signal
    import time

    storage = f"sqlite:///{tmp_path / 'search.db'}"
    args = ["search", "ofa", "--trials", "12", "--study", "cut", "--storage", storage, "--workers", "2", "--fast"]
    proc = subprocess.Popen([*tinyqml_command, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group: Ctrl-C reaches it and its workers
    deadline = time.monotonic() + 90
    while _completed(storage, "cut") < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in its terminal does
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert "tinyqml: interrupted; rerun the same command to continue the study" in err and "Traceback" not in err
    before = _completed(storage, "cut")
    assert 2 <= before < 12
    cut_short = [t.number for t in _trials(storage, "cut") if t.state.name == "RUNNING"]  # workers died mid-trial
    art = tmp_path / "cut" / "supernet.pt"
    stamp = art.stat().st_mtime_ns
    rerun = cli_run(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert f"({before} completed so far)" in rerun.stdout and "using the trained supernet" in rerun.stdout
    assert "study 'cut': 12 completed trials" in rerun.stdout and _completed(storage, "cut") == 12
    assert art.stat().st_mtime_ns == stamp  # the shared artefact was not rebuilt
    trials = _trials(storage, "cut")
    assert not [t for t in trials if t.state.name == "RUNNING"]
    for number in cut_short:  # failed as stale by the rerun's workers, retried once with the same parameters
        assert trials[number].state.name == "FAIL"
        retries = [t for t in trials if t.system_attrs.get("failed_trial") == number]
        # (a worker may have died while the trial was drawing its parameters: the retry draws the rest)
        assert len(retries) == 1 and retries[0].params.items() >= trials[number].params.items()


@pytest.mark.parametrize("value", [str(2 ** 32), str(2 ** 33), "-1", "1.5"])
def test_search_seed_outside_0_to_2_32_exits_2(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:  # was type=int: any integer, then numpy's ValueError traceback
        main(["search", "quadratic", "--trials", "3", "--study", "x", "--seed", value])
    assert exc.value.code == 2
    assert "argument --seed: expected an integer seed in 0..4294967295" in capsys.readouterr().err


def test_search_with_the_largest_seed_runs_every_worker(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--seed 2**32-1 with 2 workers: the workers' sampler seeds (reduced mod 2**32) are distinct and valid
    for numpy, so the search runs instead of failing in a worker with numpy's ValueError."""
    from tinyqml.search.workers import worker_seed

    storage = f"sqlite:///{tmp_path / 'search.db'}"
    assert main(["search", "quadratic", "--trials", "2", "--study", "x", "--storage", storage, "--workers", "2",
                 "--seed", str(2 ** 32 - 1)]) == 0, capsys.readouterr().err
    seeds = [worker_seed(2 ** 32 - 1, i) for i in range(2)]
    assert len(set(seeds)) == 2 and all(0 <= s < 2 ** 32 for s in seeds)
    assert (tmp_path / "search.db").exists()


def test_search_quiets_optuna_and_tinyqml_logging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from tinyqml.commands import common

    assert search.quiet_logging is common.quiet_logging  # the shared helper, not a copy
    calls: list[str] = []
    monkeypatch.setattr(search, "quiet_logging", lambda: calls.append("quiet"))
    storage = f"sqlite:///{tmp_path / 'search.db'}"
    assert main(["search", "quadratic", "--trials", "1", "--study", "x", "--storage", storage]) == 0
    assert calls == ["quiet"]
