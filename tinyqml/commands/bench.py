"""``tinyqml bench``: list, run and show the benchmark scripts of a source checkout (``benchmarks/``).

The list of benchmarks is ``benchmarks/run_all.py`` (what ``make bench`` runs): this module loads that
file (it imports only the standard library) and uses its ``discover``, ``describe``, ``quick_flag`` and
``command``. Each benchmark runs in a subprocess with this interpreter, its output streamed as it comes.

>>> from tinyqml.cli import build_parser
>>> args = build_parser().parse_args(["bench", "mcu", "nas", "--quick"])
>>> args.names, args.quick, args.list, args.show
(['mcu', 'nas'], True, False, False)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tinyqml.commands.common import error

__all__ = ["register", "default_dir", "load_runner"]

BENCH_EXAMPLES = """\
examples:
  tinyqml bench --list                 # every benchmark, one line each, with the date of its latest result
  tinyqml bench mcu --quick            # one benchmark as a smoke run (its own --quick or --fast)
  tinyqml bench qoc quantization       # two full runs, one after the other
  tinyqml bench all --quick            # every benchmark (make bench runs them all in full)
  tinyqml bench --show mcu             # the latest result table (benchmarks/results/mcu.md)
  tinyqml bench --list --dir ~/src/tinyqml/benchmarks

Benchmarks live in the source checkout, not in the installed package: run from a clone of the
repository (pip install -e .) or pass --dir. A full run takes minutes to hours and writes
benchmarks/results/NAME.md and NAME.json; a quick run is a smoke test of the script.
"""


class BenchError(Exception):
    """A benchmarks folder that cannot be used, an unknown benchmark or a missing result (one line, exit 1)."""


def default_dir() -> Path:
    """``benchmarks/`` next to the ``tinyqml/`` package folder (a source checkout; absent from a wheel)."""
    import tinyqml

    return Path(tinyqml.__file__).resolve().parent.parent / "benchmarks"


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``tinyqml bench`` to the sub-parsers ``sub``."""
    p = sub.add_parser(
        "bench", help="list, run (in a subprocess) and show the benchmarks of a source checkout",
        description="Run the benchmark scripts of benchmarks/ (each measures tinyqml and its anchors in the same "
                    "run and writes benchmarks/results/NAME.md), list them with their latest results, or print "
                    "a latest result. Without arguments: the list.",
        epilog=BENCH_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="benchmarks to run (or with --show / --list: to show); 'all' for every one")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--list", action="store_true", help="one line per benchmark, with the date of its latest result")
    mode.add_argument("--show", action="store_true", help="print the latest result (results/NAME.md) of NAME")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: passes each script its own quick flag (--quick or --fast)")
    p.add_argument("--dir", type=Path, default=None, metavar="DIR",
                   help="the benchmarks folder (default: benchmarks/ of the source checkout tinyqml runs from)")
    p.set_defaults(func=_run_bench)


# --------------------------------------------------------------------------- the benchmarks folder


def load_runner(folder: Path | None) -> Any:
    """The ``run_all`` module of the benchmarks ``folder`` (default :func:`default_dir`), loaded from its path."""
    import importlib.util

    given = folder is not None
    folder = (Path(folder) if given else default_dir()).expanduser().resolve()
    path = folder / "run_all.py"
    if not path.is_file():
        if given:
            raise BenchError(f"{folder} is not a tinyqml benchmarks folder (it has no run_all.py)")
        raise BenchError(f"no benchmarks folder at {folder} (tinyqml installed from a wheel?): run from a clone "
                         "of the repository (pip install -e .) or pass --dir DIR")
    spec = importlib.util.spec_from_file_location("tinyqml_bench_run_all", path)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has a loader
        raise BenchError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - a broken run_all.py: say so in one line
        raise BenchError(f"cannot load {path}: {type(exc).__name__}: {exc}") from None
    module.BENCH_DIR = folder
    return module


def _scripts(runner: Any) -> dict[str, Path]:
    return {p.stem: p for p in runner.discover(runner.BENCH_DIR)}


def _select(scripts: dict[str, Path], names: list[str]) -> list[str]:
    if "all" in names:
        return list(scripts)
    out = []
    for name in names:
        stem = name[:-3] if name.endswith(".py") else name
        if stem not in scripts:
            raise BenchError(f"no benchmark {name!r}; available: {', '.join(scripts) or 'none'}")
        if stem not in out:
            out.append(stem)
    return out


def _result(runner: Any, name: str) -> Path:
    return runner.BENCH_DIR / getattr(runner, "RESULTS", "results") / f"{name}.md"


def _written(runner: Any, name: str, since: float) -> list[Path]:
    """The results NAME.md, or NAME_quick.md and the like, written since ``since`` (a time.time())."""
    folder = _result(runner, name).parent
    if not folder.is_dir():
        return []
    return sorted(md for md in folder.glob(f"{name}*.md")
                  if (md.stem == name or md.stem.startswith(name + "_")) and md.stat().st_mtime >= since - 1)


def _result_date(md: Path) -> str:
    """When the result was measured: ``meta.date`` (or ``date``) of NAME.json, else the file's time."""
    import datetime as dt
    import json

    date = None
    try:
        doc = json.loads(md.with_suffix(".json").read_text(encoding="utf-8"))
        meta = doc.get("meta") if isinstance(doc.get("meta"), dict) else {}
        date = meta.get("date") or doc.get("date")
    except (OSError, ValueError, AttributeError):
        date = None
    if isinstance(date, str):
        try:
            return dt.datetime.fromisoformat(date).strftime("%Y-%m-%d %H:%M")
        except ValueError:
            return date[:16]
    return dt.datetime.fromtimestamp(md.stat().st_mtime).strftime("%Y-%m-%d %H:%M")


# --------------------------------------------------------------------------- the modes


def _list(runner: Any, scripts: dict[str, Path], names: list[str]) -> int:
    rows = []
    for name in names:
        md = _result(runner, name)
        latest = f"{_result_date(md)}  {md.parent.name}/{md.name}" if md.is_file() else "no result yet"
        rows.append((name, latest, runner.describe(scripts[name])))
    print(f"benchmarks in {runner.BENCH_DIR}  (tinyqml bench NAME [--quick] runs one; --show NAME prints its result)")
    w0 = max([len("name")] + [len(r[0]) for r in rows])
    w1 = max([len("latest result")] + [len(r[1]) for r in rows])
    print(f"{'name'.ljust(w0)}  {'latest result'.ljust(w1)}  description")
    for name, latest, about in rows:
        print(f"{name.ljust(w0)}  {latest.ljust(w1)}  {about}".rstrip())
    return 0


def _show(runner: Any, names: list[str]) -> int:
    if not names:
        raise BenchError("--show needs a benchmark NAME, e.g. tinyqml bench --show mcu")
    for i, name in enumerate(names):
        md = _result(runner, name)
        if not md.is_file():
            raise BenchError(f"no result for {name} yet ({md} is missing): run tinyqml bench {name}")
        if len(names) > 1:
            if i:
                print()
            print(f"== {md}")
        print(md.read_text(encoding="utf-8").rstrip("\n"))
    return 0


def _stream(cmd: list[str], cwd: Path) -> int:
    """Run ``cmd``, copying its output (stderr merged into stdout) to ``sys.stdout`` as it comes."""
    import codecs
    import os
    import subprocess

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    decode = codecs.getincrementaldecoder("utf-8")("replace").decode
    assert proc.stdout is not None
    try:
        while chunk := proc.stdout.read1(65536):
            sys.stdout.write(decode(chunk))
            sys.stdout.flush()
        sys.stdout.write(decode(b"", final=True))
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    finally:
        proc.stdout.close()


def _run(runner: Any, scripts: dict[str, Path], names: list[str], quick: bool) -> int:
    import time

    commands = {}
    for name in names:
        try:
            commands[name] = runner.command(scripts[name], quick=quick)
        except ValueError as exc:  # no quick mode
            raise BenchError(str(exc)) from None
    failed = []
    for name, cmd in commands.items():
        print(f"== {name}: {' '.join(cmd)}", flush=True)
        start = time.time()
        try:
            rc = _stream(cmd, runner.BENCH_DIR.parent)
        except KeyboardInterrupt:
            print(f"tinyqml: interrupted during benchmark {name}", file=sys.stderr)
            return 130
        note = "".join(f", wrote {md}" for md in _written(runner, name, start))
        print(f"== {name}: {'ok' if rc == 0 else f'failed (exit {rc})'} in {time.time() - start:.1f} s{note}",
              flush=True)
        if rc != 0:
            failed.append(f"{name} (exit {rc})")
    if failed:
        return error(BenchError(f"{len(failed)} of {len(names)} benchmark(s) failed: {', '.join(failed)}"))
    return 0


def _run_bench(args: argparse.Namespace) -> int:
    try:
        runner = load_runner(args.dir)
        scripts = _scripts(runner)
        names = _select(scripts, args.names)
        if args.show:
            return _show(runner, names)
        if args.list or not names:
            if args.quick and not args.list:
                raise BenchError("--quick runs benchmarks: name them (or 'all'), e.g. tinyqml bench mcu --quick")
            return _list(runner, scripts, names or list(scripts))
        return _run(runner, scripts, names, args.quick)
    except (BenchError, OSError) as exc:
        return error(exc)
