"""Tests of the ``tinyqml`` command line and the shared demo classifier."""

from __future__ import annotations

import dataclasses
import doctest
import re
import subprocess
import sys
from pathlib import Path

import pytest

import tinyqml
from tinyqml import cli, demo
from tinyqml.cli import main
from tinyqml.demo import FAST_CONFIG, ClassifierConfig, train_classifier
from tinyqml.qml.errors import ParameterError


def _command() -> list[str]:
    """The installed ``tinyqml`` console script next to this interpreter, else ``python -m tinyqml.cli``."""
    script = Path(sys.executable).parent / "tinyqml"
    return [str(script)] if script.exists() else [sys.executable, "-m", "tinyqml.cli"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*_command(), *args], capture_output=True, text=True, timeout=120)


def test_help_lists_demo() -> None:
    proc = _run("--help")
    assert proc.returncode == 0
    assert "demo" in proc.stdout and "example" in proc.stdout


def test_demo_help_has_an_example() -> None:
    proc = _run("demo", "--help")
    assert proc.returncode == 0
    assert "--fast" in proc.stdout and "--seed" in proc.stdout and "tinyqml demo --fast" in proc.stdout


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"tinyqml {tinyqml.__version__}"


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: tinyqml" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["demo", "--epochs", "0"], ["demo", "--seed", "x"], ["nope"]])
def test_bad_arguments_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


def test_demo_fast_prints_progress_and_accuracy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--fast"]) == 0
    out = capsys.readouterr().out
    assert len(re.findall(r"^epoch +\d+/3 ", out, flags=re.M)) == FAST_CONFIG.epochs
    m = re.search(r"final train accuracy (\d\.\d+) .* test accuracy (\d\.\d+)", out)
    assert m is not None, out
    assert 0.5 < float(m.group(2)) <= 1.0  # chance is 0.25


def test_tinyqml_error_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(config, on_epoch=None, data=None):  # type: ignore[no-untyped-def]
        raise ParameterError("bad thing\nsecond line")

    monkeypatch.setattr(demo, "train_classifier", broken)
    assert main(["demo", "--fast"]) == 1
    err = capsys.readouterr().err
    assert err == "tinyqml: error: bad thing second line\n"


def test_train_classifier_is_deterministic() -> None:
    config = dataclasses.replace(FAST_CONFIG, layers=2, epochs=1)
    a, b = train_classifier(config), train_classifier(config)
    assert a.history[0].loss == b.history[0].loss and a.test_accuracy == b.test_accuracy
    assert a.model.quantum.weights.detach().equal(b.model.quantum.weights.detach())


@pytest.mark.parametrize("kwargs", [{"layers": 0}, {"epochs": 0}, {"lr": 0.0}, {"classes": (0,)},
                                    {"classes": (0, 1, 2, 3, 4)}, {"diff_method": "magic"}])
def test_config_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(tinyqml.qml.TinyQMLError):
        ClassifierConfig(**kwargs)


@pytest.mark.parametrize("module", [cli, demo])
def test_docstring_examples(module) -> None:  # type: ignore[no-untyped-def]
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


@pytest.mark.slow
def test_full_classifier_reaches_80_percent() -> None:
    result = train_classifier(ClassifierConfig())
    assert result.test_accuracy >= 0.80, result.history[-1]


# -- codegen ----------------------------------------------------------------------------------------------

def _tflite_model(path: Path) -> Path:
    import torch

    from tinyqml.classical import export_tflite

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 6 * 6, 10))
    return export_tflite(net, torch.rand(16, 1, 6, 6), path)


def test_codegen_help_has_an_example() -> None:
    proc = _run("codegen", "--help")
    assert proc.returncode == 0
    assert "--target" in proc.stdout and "cortex-m4" in proc.stdout and "tinyqml codegen model.tflite" in proc.stdout


def test_codegen_writes_the_sources_and_prints_the_summary(tmp_path: Path) -> None:
    model = _tflite_model(tmp_path / "m.tflite")
    proc = _run("codegen", str(model), "-o", str(tmp_path / "out"), "--target", "cortex-m4")
    assert proc.returncode == 0, proc.stderr
    assert "MACs" in proc.stdout and "arena" in proc.stdout and "flash" in proc.stdout
    for name in ("model.h", "model.c", "tinyqml_rt.h", "tinyqml_rt.c", "report.md", "report.json"):
        assert (tmp_path / "out" / name).is_file(), name
    assert "cortex-m4" in (tmp_path / "out" / "model.c").read_text()


@pytest.mark.parametrize("content", [None, b"garbage, not a flatbuffer"])
def test_codegen_bad_model_is_one_line_and_exit_1(tmp_path: Path, content: bytes | None,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.tflite"
    if content is not None:
        path.write_bytes(content)
    assert main(["codegen", str(path), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tinyqml: error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_codegen_unsupported_operator_names_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tinyqml.classical.tflite_builder import Op, Quant, TFLiteBuilder

    b = TFLiteBuilder()
    x = b.tensor("x", (1, 4), quant=Quant.per_tensor(0.1, 0))
    y = b.tensor("y", (1, 4), quant=Quant.per_tensor(0.1, 0))
    b.op(Op.SOFTMAX, [x], [y], beta=1.0)  # an int8 SOFTMAX output must be 1/256, -128
    path = tmp_path / "softmax.tflite"
    path.write_bytes(b.build([x], [y]))
    assert main(["codegen", str(path), "-o", str(tmp_path / "out")]) == 1
    assert "operator 0 (SOFTMAX)" in capsys.readouterr().err


def test_nas_help_lists_costs_and_examples() -> None:
    proc = _run("nas", "--help")
    assert proc.returncode == 0
    for text in ("--constraint", "peak_sram", "tinyqml nas --fast", "--latency-table", "--supernet"):
        assert text in proc.stdout


def test_nas_arguments_make_the_run_config() -> None:
    args = cli.build_parser().parse_args(["nas", "--fast", "-c", "macs<=100k", "--trials", "7", "--samples", "9",
                                          "--epochs", "2", "--strategy", "random", "--seed", "4"])
    config = cli._nas_config(args)
    assert config.search.n_trials == 7 and config.n_samples == 9 and config.train.epochs == 2
    assert config.seed == config.search.seed == config.train.seed == 4
    assert type(config.search.strategy).__name__ == "RandomSearch"
    assert [c.cost for c in config.constraints] == ["macs"] and config.constraints[0].max == 100_000


@pytest.mark.parametrize("constraint, message", [("flash<=1k", "unknown cost 'flash'"),
                                                 ("macs<300k", "cannot read the constraint"),
                                                 ("macs<=10", "random architectures satisfies macs<=10")])
def test_nas_bad_constraints_fail_fast(constraint: str, message: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nas", "--fast", "-o", str(tmp_path), "-c", constraint]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tinyqml: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "supernet.pt").exists()


def test_nas_unreadable_inputs_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    table = tmp_path / "table.json"
    table.write_text('{"format": "tinyqml-latency-lut", "version": 1, "entries": 3}')
    binary = tmp_path / "binary.json"
    binary.write_bytes(bytes(range(256)))
    for argv, message in ((["--supernet", str(garbage)], "cannot load a supernet"),
                          (["--latency-table", str(table)], "not a latency table"),
                          (["--latency-table", str(binary)], "cannot read a latency table")):
        assert main(["nas", "--fast", "-o", str(tmp_path / "out"), *argv]) == 1
        err = capsys.readouterr().err
        assert err.startswith("tinyqml: error: ") and message in err and err.count("\n") == 1
        assert "Traceback" not in err and "weights_only=False" not in err
    with pytest.raises(SystemExit):
        main(["nas", "--seed", str(2 ** 64)])


# -- search -----------------------------------------------------------------------------------------------

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


def test_search_help_lists_the_searches_and_examples() -> None:
    from tinyqml.search.storage import DEFAULT_STORAGE
    from tinyqml.searches import SEARCHES

    proc = _run("search", "--help")
    assert proc.returncode == 0
    for text in ("--trials N", "--study NAME", "--storage URL", "--workers K", "--seed S", "--fast",
                 "postgresql://", "optuna-dashboard sqlite:///runs/search.db", DEFAULT_STORAGE, *SEARCHES):
        assert text in proc.stdout, text
    assert cli.SEARCH_STORAGE == DEFAULT_STORAGE


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
def test_search_interrupted_as_a_whole_continues_on_rerun(tmp_path: Path) -> None:
    import os
    import signal
    import time

    storage = f"sqlite:///{tmp_path / 'search.db'}"
    args = ["search", "ofa", "--trials", "12", "--study", "cut", "--storage", storage, "--workers", "2", "--fast"]
    proc = subprocess.Popen([*_command(), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
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
    rerun = _run(*args)
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
