"""Tests of ``tinyqml bench`` and ``benchmarks/run_all.py``: the list, results, errors, and runs of tiny fake
benchmarks made in ``tmp_path`` (the real benchmarks never run here: they take minutes to hours)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tinyqml.cli import main
from tinyqml.commands import bench

REAL = Path(__file__).resolve().parents[2] / "benchmarks"

pytestmark = pytest.mark.skipif(not (REAL / "run_all.py").is_file(), reason="needs the source checkout's benchmarks/")

#: a fake benchmark: prints its arguments, interpreter and folder, writes results/NAME.md unless told to fail
SCRIPT = '''\
"""{doc}

More text that --list leaves out.
"""
import argparse, os, sys, time
from pathlib import Path

p = argparse.ArgumentParser()
{flag}
p.add_argument("--wait-for", default=None)
args, rest = p.parse_known_args()
print("first", flush=True)
if args.wait_for:
    deadline = time.time() + 60
    while not os.path.exists(args.wait_for) and time.time() < deadline:
        time.sleep(0.05)
print("argv=" + repr(sys.argv[1:]))
print("exe=" + sys.executable)
print("cwd=" + os.getcwd())
print("to stderr", file=sys.stderr)
if {fail}:
    sys.exit(3)
out = Path(__file__).resolve().parent / "results"
out.mkdir(exist_ok=True)
(out / (Path(__file__).stem + ".md")).write_text("## result of " + Path(__file__).stem + "\\n")
'''


def _script(folder: Path, name: str, doc: str, flag: str | None, fail: bool = False) -> Path:
    line = f'p.add_argument("{flag}", action="store_true")' if flag else ""
    path = folder / f"{name}.py"
    path.write_text(SCRIPT.format(doc=doc, flag=line, fail=fail))
    return path


@pytest.fixture
def fake_dir(tmp_path: Path) -> Path:
    """``tmp_path/benchmarks`` with the real run_all.py, four tiny benchmarks and two non-benchmarks."""
    d = tmp_path / "benchmarks"
    d.mkdir()
    shutil.copy(REAL / "run_all.py", d / "run_all.py")
    _script(d, "alpha", "Alpha: takes --fast.", "--fast")
    _script(d, "beta", "Beta: takes --quick.", "--quick")
    _script(d, "broken", "Broken: always exits 3.", "--quick", fail=True)
    _script(d, "slow", "Slow: has no quick mode.", None)
    (d / "machine.py").write_text('"""A helper the scripts import."""\n')
    (d / "_private.py").write_text('"""Not a benchmark."""\n')
    (d / "results").mkdir()
    (d / "results" / "beta.md").write_text("| a | b |\n|---|---|\n| 1 | 2 |\n")
    (d / "results" / "beta.json").write_text(json.dumps({"meta": {"date": "2026-01-02T03:04:05+00:00"}}))
    return d


def _err_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("tinyqml: error: ") and err.count("\n") == 1, err
    return err


# --------------------------------------------------------------------------- the real folder (no runs)


def test_bench_help_has_examples(cli_run) -> None:
    proc = cli_run("bench", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "examples:" in proc.stdout and "tinyqml bench --list" in proc.stdout and "--quick" in proc.stdout


def test_list_shows_every_real_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    import ast

    assert main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    scripts = sorted(p for p in REAL.glob("*.py") if p.name not in ("run_all.py", "machine.py"))
    assert scripts
    for path in scripts:
        first = ast.get_docstring(ast.parse(path.read_text())).splitlines()[0].replace("``", "")
        line = next(ln for ln in out.splitlines() if ln.startswith(path.stem + " "))
        assert first.strip() in line, (path.name, line)
        result = REAL / "results" / f"{path.stem}.md"
        assert (f"results/{path.stem}.md" in line) == result.is_file()
    assert "run_all" not in out.replace("run_all.py", "") and not any(ln.startswith("machine") for ln in out.splitlines())


def test_real_list_order_is_run_all_scripts() -> None:
    runner = bench.load_runner(None)
    names = [p.name for p in runner.discover(REAL)]
    assert names[: len(runner.SCRIPTS)] == [n for n in runner.SCRIPTS if (REAL / n).is_file()]
    assert set(names) == {p.name for p in REAL.glob("*.py")} - set(runner.HELPERS)


def test_quick_flag_of_each_real_script() -> None:
    runner = bench.load_runner(None)
    for path in runner.discover(REAL):
        flag = runner.quick_flag(path)
        assert flag in ("--quick", "--fast"), path.name
        assert f'"{flag}"' in path.read_text()
        cmd = runner.command(path, quick=True)
        assert cmd == [sys.executable, str(path), flag]


def test_show_prints_a_stored_result(capsys: pytest.CaptureFixture[str]) -> None:
    stored = sorted((REAL / "results").glob("*.md"))
    if not stored:
        pytest.skip("no stored result in benchmarks/results")
    name = stored[0].stem
    assert main(["bench", "--show", name]) == 0
    assert capsys.readouterr().out == stored[0].read_text().rstrip("\n") + "\n"


def test_unknown_name_lists_the_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "nope"]) == 1
    err = _err_line(capsys)
    assert "'nope'" in err and "w1_simulator" in err and "mcu" in err
    assert main(["bench", "--show", "nope"]) == 1
    assert "'nope'" in _err_line(capsys)


def test_missing_benchmarks_folder(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                   tmp_path: Path) -> None:
    monkeypatch.setattr(bench, "default_dir", lambda: tmp_path / "site-packages" / "benchmarks")
    assert main(["bench", "--list"]) == 1
    err = _err_line(capsys)
    assert "run from a clone" in err and "--dir" in err
    assert main(["bench", "--list", "--dir", str(tmp_path)]) == 1
    assert "no run_all.py" in _err_line(capsys)


# --------------------------------------------------------------------------- a fake folder


def test_fake_list(capsys: pytest.CaptureFixture[str], fake_dir: Path) -> None:
    assert main(["bench", "--dir", str(fake_dir)]) == 0  # no NAME: the list
    lines = capsys.readouterr().out.splitlines()
    rows = {ln.split()[0]: ln for ln in lines[2:]}
    assert list(rows) == ["alpha", "beta", "broken", "slow"]  # not in SCRIPTS: sorted; helpers left out
    assert "Alpha: takes --fast." in rows["alpha"] and "More text" not in rows["alpha"]
    assert "no result yet" in rows["alpha"]
    assert "2026-01-02 03:04" in rows["beta"] and "results/beta.md" in rows["beta"]


def test_fake_show(capsys: pytest.CaptureFixture[str], fake_dir: Path) -> None:
    assert main(["bench", "--show", "beta.py", "--dir", str(fake_dir)]) == 0
    assert capsys.readouterr().out == "| a | b |\n|---|---|\n| 1 | 2 |\n"
    assert main(["bench", "--show", "alpha", "--dir", str(fake_dir)]) == 1
    assert "no result for alpha yet" in _err_line(capsys)


def test_run_maps_quick_onto_each_scripts_flag(capsys: pytest.CaptureFixture[str], fake_dir: Path) -> None:
    assert main(["bench", "alpha", "beta", "--quick", "--dir", str(fake_dir)]) == 0
    out = capsys.readouterr().out
    alpha, beta = out.split("== beta:", 1)
    assert "argv=['--fast']" in alpha and "argv=['--quick']" in beta
    assert f"exe={sys.executable}" in alpha and f"cwd={fake_dir.parent}" in alpha
    assert "to stderr" in alpha  # stderr is merged into the stream
    assert "== alpha: ok" in alpha and f"wrote {fake_dir / 'results' / 'alpha.md'}" in alpha
    assert (fake_dir / "results" / "alpha.md").read_text() == "## result of alpha\n"
    assert main(["bench", "alpha", "--dir", str(fake_dir)]) == 0
    assert "argv=[]" in capsys.readouterr().out  # a full run: no flag


def test_run_returns_non_zero_when_one_fails(capsys: pytest.CaptureFixture[str], fake_dir: Path) -> None:
    assert main(["bench", "broken", "alpha", "--dir", str(fake_dir)]) == 1
    out, err = capsys.readouterr()
    assert "== broken: failed (exit 3)" in out and "== alpha: ok" in out  # the others still run
    assert err == "tinyqml: error: 1 of 2 benchmark(s) failed: broken (exit 3)\n"


def test_quick_without_a_quick_mode_runs_nothing(capsys: pytest.CaptureFixture[str], fake_dir: Path) -> None:
    assert main(["bench", "alpha", "slow", "--quick", "--dir", str(fake_dir)]) == 1
    out = capsys.readouterr()
    assert out.out == "" and "slow.py has no quick mode" in out.err
    assert not (fake_dir / "results" / "alpha.md").exists()


def test_all_runs_every_one_in_order(capsys: pytest.CaptureFixture[str], fake_dir: Path) -> None:
    (fake_dir / "slow.py").unlink()
    assert main(["bench", "all", "--quick", "--dir", str(fake_dir)]) == 1
    out = capsys.readouterr().out
    starts = [ln.split(":")[0] for ln in out.splitlines() if ln.startswith("== ") and f": {sys.executable} " in ln]
    assert starts == ["== alpha", "== beta", "== broken"]


def test_output_is_streamed(fake_dir: Path, tmp_path: Path) -> None:
    """The benchmark's first line arrives while it still runs (it waits for a file the test writes after)."""
    marker = tmp_path / "go"
    (fake_dir / "waiter.py").write_text((fake_dir / "beta.py").read_text().replace(
        'default=None)', f'default={str(marker)!r})', 1))
    tinyqml = [sys.executable, "-c", "import sys; from tinyqml.cli import main; sys.exit(main())"]
    proc = subprocess.Popen([*tinyqml, "bench", "waiter", "--dir", str(fake_dir)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        assert proc.stdout is not None
        seen = []
        deadline = time.time() + 60
        while time.time() < deadline:
            line = proc.stdout.readline()
            seen.append(line)
            if line.strip() == "first" or not line:
                break
        assert seen[-1].strip() == "first", seen
        assert proc.poll() is None and not marker.exists()  # still waiting: the line came before the end
        marker.write_text("")
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "argv=[]" in rest and "== waiter: ok" in rest


def test_run_all_maps_quick_and_reports_failures(fake_dir: Path) -> None:
    """``make bench`` runs benchmarks/run_all.py: the same discovery and quick-flag mapping."""
    proc = subprocess.run([sys.executable, str(fake_dir / "run_all.py"), "--quick"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1 and "failed: broken.py" in proc.stderr
    out = proc.stdout
    assert out.index("== alpha.py") < out.index("== beta.py") < out.index("== broken.py")
    assert "argv=['--fast']" in out and "argv=['--quick']" in out and "== slow.py: skipped (no quick mode)" in out


def test_makefile_bench_calls_run_all() -> None:
    makefile = REAL.parent / "Makefile"
    if not makefile.is_file():
        pytest.skip("no Makefile")
    text = makefile.read_text()
    assert "bench:" in text and "benchmarks/run_all.py" in text.split("bench:", 1)[1].split("\n\n")[0]


def test_run_names_a_quick_result_file(capsys: pytest.CaptureFixture[str], fake_dir: Path) -> None:
    (fake_dir / "gamma.py").write_text(textwrap.dedent('''\
        """Gamma: writes gamma_quick.md in quick mode."""
        import argparse
        from pathlib import Path
        p = argparse.ArgumentParser()
        p.add_argument("--quick", action="store_true")
        stem = "gamma_quick" if p.parse_args().quick else "gamma"
        (Path(__file__).parent / "results" / (stem + ".md")).write_text("x\\n")
        '''))
    assert main(["bench", "gamma", "--quick", "--dir", str(fake_dir)]) == 0
    out = capsys.readouterr().out
    assert "== gamma: ok in" in out and f"wrote {fake_dir / 'results' / 'gamma_quick.md'}" in out
    assert "gamma.md" not in out
