"""Cross-cutting hardening rules: files, passwords, the network and the catalogue of errors.

1. Files a user may have received from elsewhere are never unpickled: every ``torch.load`` in the source
   passes ``weights_only=True`` literally; no module imports pickle (beyond its exception classes), marshal,
   shelve, dill, cloudpickle or joblib; no ``np.load(allow_pickle=True)``, ``yaml.load``, ``eval``/``exec``,
   ``shell=True``, ``os.system``, ``tempfile.mktemp`` or ``extractall``. Every loader refuses a foreign or
   corrupt file with its named error, and the JSON loaders refuse NaN / Infinity where a number must be finite.
2. A storage URL's password never reaches a log line, a progress line, an error message or the CLI's output.
3. The main job's quick mode and the import of every module run with the network blocked.
4. ``docs/errors.md`` documents every exception class the packages define, and only classes that exist.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import io
import json
import logging
import math
import os
import pickle
import random
import re
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

from testkit import OPTIONAL, package_modules

ROOT = Path(__file__).resolve().parents[1]
#: every folder of Python source in the repository (the four areas, the CLI package, scripts)
SOURCE_DIRS = ("qml", "noise", "classical", "search", "tinyqml", "benchmarks", "tutorials")


def _source_files() -> list[Path]:
    return sorted(p for d in SOURCE_DIRS for p in (ROOT / d).rglob("*.py"))


# =========================================================================== 1. files

#: modules that deserialize arbitrary objects (code execution on load)
FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle", "joblib",
                     "jsonpickle"}
#: what of ``pickle`` a module may use: its exception classes (torch.load raises UnpicklingError)
PICKLE_EXCEPTIONS = {"UnpicklingError", "PicklingError", "PickleError"}


def _dotted(node: ast.AST) -> str | None:
    """``a.b.c`` for a Name/Attribute chain, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _keyword(call: ast.Call, name: str) -> ast.keyword | None:
    return next((k for k in call.keywords if k.arg == name), None)


def scan_source(text: str, where: str = "<source>") -> list[str]:
    """The hardening rules ``text`` breaks, one line each (``where:line: what``)."""
    tree = ast.parse(text)
    problems: list[str] = []
    aliases: dict[str, str] = {}  # local name -> what it names (import torch as t; from torch import load)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
                if a.name.split(".")[0] in FORBIDDEN_MODULES and a.name.split(".")[0] != "pickle":
                    problems.append(f"{where}:{node.lineno}: imports {a.name}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            top = node.module.split(".")[0]
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
                if top in FORBIDDEN_MODULES and not (top == "pickle" and a.name in PICKLE_EXCEPTIONS):
                    problems.append(f"{where}:{node.lineno}: imports {a.name} from {node.module}")

    def resolve(node: ast.AST) -> str | None:
        name = _dotted(node)
        if name is None:
            return None
        head, _, rest = name.partition(".")
        full = aliases.get(head, head)
        return f"{full}.{rest}" if rest else full

    calls_func = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and aliases.get(node.value.id) == "pickle" and node.attr not in PICKLE_EXCEPTIONS:
            problems.append(f"{where}:{node.lineno}: uses pickle.{node.attr}")
        if isinstance(node, (ast.Attribute, ast.Name)) and resolve(node) in ("torch.load", "torch.serialization.load") \
                and id(node) not in calls_func and isinstance(getattr(node, "ctx", None), ast.Load):
            problems.append(f"{where}:{node.lineno}: passes torch.load around (call it with weights_only=True)")
        if not isinstance(node, ast.Call):
            continue
        name = resolve(node.func) or ""
        if name in ("torch.load", "torch.serialization.load"):
            kw = _keyword(node, "weights_only")
            if kw is None or not _is_true(kw.value):
                problems.append(f"{where}:{node.lineno}: torch.load without weights_only=True")
        elif name in ("torch.jit.load", "torch.package.PackageImporter"):
            problems.append(f"{where}:{node.lineno}: {name} (runs code from the file)")
        elif name in ("numpy.load", "np.load"):
            kw = _keyword(node, "allow_pickle")
            if kw is not None and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                problems.append(f"{where}:{node.lineno}: np.load with allow_pickle")
        elif name == "yaml.load" or name == "yaml.unsafe_load":
            problems.append(f"{where}:{node.lineno}: {name} (use yaml.safe_load)")
        elif isinstance(node.func, ast.Name) and node.func.id in ("eval", "exec") and node.func.id not in aliases:
            problems.append(f"{where}:{node.lineno}: {node.func.id}()")
        elif name in ("os.system", "os.popen", "tempfile.mktemp"):
            problems.append(f"{where}:{node.lineno}: {name}")
        elif name.startswith("subprocess.") and _is_true(getattr(_keyword(node, "shell"), "value", None)):
            problems.append(f"{where}:{node.lineno}: {name}(..., shell=True)")
        elif isinstance(node.func, ast.Attribute) and node.func.attr == "extractall":
            problems.append(f"{where}:{node.lineno}: extractall (path traversal: extract member by member)")
    return problems


@pytest.mark.parametrize("snippet, found", [
    ("import torch\ntorch.load('f.pt')", "torch.load without weights_only=True"),
    ("import torch\ntorch.load('f.pt', weights_only=False)", "torch.load without weights_only=True"),
    ("import torch\nflag = True\ntorch.load('f.pt', weights_only=flag)", "torch.load without weights_only=True"),
    ("from torch import load\nload('f.pt')", "torch.load without weights_only=True"),
    ("import torch as t\nt.load('f.pt', map_location='cpu')", "torch.load without weights_only=True"),
    ("import torch\nloader = torch.load", "passes torch.load around"),
    ("import torch\ntorch.jit.load('m.pt')", "torch.jit.load"),
    ("import pickle\npickle.loads(b'')", "uses pickle.loads"),
    ("from pickle import load", "imports load from pickle"),
    ("import marshal", "imports marshal"),
    ("import shelve", "imports shelve"),
    ("import dill", "imports dill"),
    ("import numpy as np\nnp.load('a.npy', allow_pickle=True)", "np.load with allow_pickle"),
    ("import yaml\nyaml.load(open('a'))", "yaml.load"),
    ("eval('1')", "eval()"),
    ("import subprocess\nsubprocess.run('ls', shell=True)", "shell=True"),
    ("import os\nos.system('ls')", "os.system"),
    ("import tempfile\ntempfile.mktemp()", "tempfile.mktemp"),
    ("import tarfile\ntarfile.open('a.tar').extractall('.')", "extractall"),
])
def test_the_scanner_finds_each_kind_of_problem(snippet: str, found: str) -> None:
    problems = scan_source(snippet)
    assert any(found in p for p in problems), problems


def test_the_scanner_accepts_the_safe_forms() -> None:
    safe = ("import pickle\nimport torch\nimport numpy as np\n"
            "try:\n    torch.load('f.pt', map_location='cpu', weights_only=True)\n"
            "except pickle.UnpicklingError:\n    pass\n"
            "np.load('a.npy')\nnp.load('a.npy', allow_pickle=False)\nmodel.eval()\n")
    assert scan_source(safe) == []


def test_no_source_file_unpickles_or_runs_untrusted_data() -> None:
    files = _source_files()
    assert len(files) > 100  # the whole tree was found
    problems = [p for f in files for p in scan_source(f.read_text(encoding="utf-8"), str(f.relative_to(ROOT)))]
    assert problems == []


def _torch_bytes(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


class _Trap:
    """Unpickling this creates ``path`` (what an attacker's payload would run instead)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.path, "w"))


def _foreign_files(tmp: Path) -> dict[str, bytes]:
    """Files a user may be handed instead of a checkpoint: payloads, other formats, damaged files, and
    40 seeded random mutations of a good one."""
    trap = str(tmp / "trap-was-run")
    good = _torch_bytes({"weight": torch.ones(3, 3), "n": 1})
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("x.txt", "hi")
    files = {
        "pickle-payload": pickle.dumps(_Trap(trap)),
        "torch-payload": _torch_bytes({"weight": torch.ones(2), "x": _Trap(trap)}),
        "plain-pickle": pickle.dumps({"a": [1, 2.0, "x"]}),
        "empty": b"",
        "text": b"hello world\n",
        "zip-not-torch": zipped.getvalue(),
        "truncated": good[: len(good) // 2],
        "tflite": b"\x1c\x00\x00\x00TFL3" + bytes(56),
    }
    rng = random.Random(11)
    for i in range(40):
        blob = bytearray(good if i % 2 else pickle.dumps({"w": [1.0] * 8}, protocol=2))
        if i % 4 < 2:
            for _ in range(rng.randrange(1, 8)):
                blob[rng.randrange(len(blob))] = rng.randrange(256)
        else:
            del blob[rng.randrange(1, len(blob)):]
        files[f"mutated-{i}"] = bytes(blob)
    return files


def _loaders():  # type: ignore[no-untyped-def]
    from torch import nn

    from tinyqml.classical.acc_predictor import AccuracyPredictor
    from tinyqml.classical.errors import CompressionError
    from tinyqml.classical.model_file import ModelFileError, load_model_file
    from tinyqml.classical.train import load_checkpoint
    from tinyqml.search.artifacts import ArtifactError, load_weights

    return {
        "load_checkpoint": (lambda p: load_checkpoint(nn.Linear(3, 3), p), CompressionError),
        "AccuracyPredictor.load": (AccuracyPredictor.load, CompressionError),
        "load_weights": (load_weights, ArtifactError),
        "load_model_file": (load_model_file, ModelFileError),
    }


@pytest.mark.parametrize("loader", ["load_checkpoint", "AccuracyPredictor.load", "load_weights", "load_model_file"])
def test_loaders_refuse_foreign_and_corrupt_files_with_their_named_error(loader: str, tmp_path: Path) -> None:
    load, error = _loaders()[loader]
    files = _foreign_files(tmp_path)
    refused = []
    for name, blob in files.items():
        path = tmp_path / f"{name}.pt"
        path.write_bytes(blob)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about legacy pickle protocols before refusing them
            try:
                got = load(path)
            except error as exc:
                refused.append(name)
                assert "weights_only` set to `False" not in str(exc), (name, str(exc))  # never that advice
            except Exception as exc:  # noqa: BLE001 - the point: nothing but the named error escapes
                pytest.fail(f"{loader}({name}) raised {type(exc).__module__}.{type(exc).__name__}: {exc}")
            else:  # a mutation that left a readable file: load_weights returns plain data, nothing else
                assert name.startswith("mutated-") and _plain(got) or loader != "load_weights", (name, got)
        assert not (tmp_path / "trap-was-run").exists(), f"{loader} ran the payload of {name}"
    assert set(refused) >= {n for n in files if not n.startswith("mutated-")}
    assert len(refused) >= len(files) - 10  # the mutations are mostly unreadable: the loaders were exercised


def _plain(obj: object) -> bool:
    """Tensors, numbers, strings, None and dicts / lists / tuples of them (what weights_only=True returns)."""
    if isinstance(obj, dict):
        return all(_plain(k) and _plain(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return all(_plain(v) for v in obj)
    return obj is None or isinstance(obj, (torch.Tensor, int, float, bool, str, bytes))


# --------------------------------------------------------------------------- JSON: finite numbers only

def _number_spans(text: str) -> list[tuple[int, int]]:
    """Where the JSON number literals of ``text`` are (not inside strings)."""
    return [m.span(1) for m in re.finditer(r'(?<![\w."])(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)(?![\w"])', text)]


def _json_cases():  # type: ignore[no-untyped-def]
    import tinyqml.qml as tq
    from tinyqml.classical.arch import Layer, NASError
    from tinyqml.classical.latency_table import LatencyTable
    from tinyqml.noise import (AmplitudeDamping, BitFlip, Depolarizing, NoiseModel, PauliError, ReadoutError,
                               ThermalRelaxation)
    from tinyqml.noise.errors import NoiseModelError
    from tinyqml.qml.errors import TinyQMLError

    circuit = (tq.CircuitBuilder(2).rx(0, 0.5).ry(1, tq.weight(0)).rz(0, tq.feature(0))
               .unitary(1, [[0, 1], [1, 0]]).build())
    noise = NoiseModel((), ((0, ReadoutError(0.02, 0.01)),)).add("CX", Depolarizing(0.02, 2)) \
        .add("H", BitFlip(0.01), qubits=(0,)).add("X", ThermalRelaxation(math.inf, math.inf, 3.5e-8)) \
        .add("Y", PauliError((("X", 0.01), ("Z", 0.02)))).add("Z", AmplitudeDamping(0.01))
    noise = NoiseModel(noise.rules, ((0, ReadoutError(0.02, 0.01)),))
    table = LatencyTable({Layer("conv", (12, 12, 1), (12, 12, 16), 3, 1, True): 12.5}, {"cc": "gcc"}, 1.2)
    return {
        "Circuit": (tq.Circuit.from_json, circuit, circuit.to_json(), TinyQMLError),
        "NoiseModel": (NoiseModel.from_json, noise, noise.to_json(), NoiseModelError),
        "LatencyTable": (LatencyTable.from_json, table, table.to_json(), NASError),
    }


@pytest.mark.parametrize("kind", ["Circuit", "NoiseModel", "LatencyTable"])
def test_json_loaders_refuse_non_finite_numbers_with_their_named_error(kind: str) -> None:
    load, obj, text, error = _json_cases()[kind]
    assert load(text) == obj  # the hooks leave a good file (and "inf" strings of T1/T2) alone
    spans = _number_spans(text)
    assert len(spans) >= 8
    for start, end in spans:
        for literal in ("NaN", "Infinity", "-Infinity", "1e999"):
            bad = text[:start] + literal + text[end:]
            try:
                got = load(bad)
            except error:
                continue
            except Exception as exc:  # noqa: BLE001
                pytest.fail(f"{kind}.from_json with {literal} at {text[max(0, start - 30):start]!r} raised "
                            f"{type(exc).__name__}: {exc}")
            pytest.fail(f"{kind}.from_json accepted {literal} at {text[max(0, start - 30):start]!r}: {got!r}")


def test_noise_model_from_dict_refuses_an_infinite_qubit_index() -> None:
    from tinyqml.noise import NoiseModel
    from tinyqml.noise.errors import NoiseModelError

    d = {"tinyqml_noise_model": 1, "rules": [], "readout": [{"qubit": math.inf, "p0_given_1": 0.1,
                                                             "p1_given_0": 0.1}]}
    with pytest.raises(NoiseModelError, match="bad noise model entry"):
        NoiseModel.from_dict(d)
    d = {"tinyqml_noise_model": 1, "rules": [{"gate": "X", "error": {"kind": "bit_flip", "p": 0.1},
                                              "qubits": [math.inf]}]}
    with pytest.raises(NoiseModelError, match="bad noise model entry"):
        NoiseModel.from_dict(d)


# =========================================================================== 2. storage passwords

SECRET = "S3cretPw9"
#: URLs with the password in every place one can put it; port 1 on loopback refuses at once
SECRET_URLS = [
    f"postgresql://tinyqml:{SECRET}@127.0.0.1:1/tinyqml?connect_timeout=2",
    f"postgresql+psycopg2://tinyqml:{SECRET}@127.0.0.1:1/tinyqml?connect_timeout=2",
    f"postgresql://127.0.0.1:1/tinyqml?user=tinyqml&password={SECRET}&connect_timeout=2",
    f"postgresql://tinyqml:ab@{SECRET}@127.0.0.1:1/tinyqml?connect_timeout=2",  # a raw '@' in the password
    f"postgresql://tinyqml:{SECRET}@127.0.0.1:abc/tinyqml",  # a port that is not a number
]


def test_redact_url_masks_the_password_wherever_it_is() -> None:
    from tinyqml import searches
    from tinyqml.search.storage import _safe, redact_url

    for url in SECRET_URLS:
        assert SECRET not in redact_url(url) and SECRET[2:] not in redact_url(url), url
        assert "***" in redact_url(url)
        assert searches._redacted(url) == redact_url(url) and _safe(url) == repr(redact_url(url))
    assert redact_url("postgresql://u@h:5432/db") == "postgresql://u@h:5432/db"
    assert redact_url("sqlite:///runs/search.db") == "sqlite:///runs/search.db"
    assert redact_url("runs/search.db") == "runs/search.db"


def _leaks(text: str) -> bool:
    return SECRET in text or SECRET[3:] in text  # the whole password or the part after a split


@pytest.fixture
def debug_everything(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):  # type: ignore[no-untyped-def]
    """Every logger at DEBUG into caplog, optuna's too (it does not propagate by default); restored after."""
    import optuna

    levels = {name: logging.getLogger(name).level for name in ("tinyqml", "optuna", "sqlalchemy")}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.enable_propagation()
    caplog.set_level(logging.DEBUG)
    yield caplog
    optuna.logging.disable_propagation()
    optuna.logging.set_verbosity(verbosity)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.parametrize("url", SECRET_URLS)
def test_search_cli_never_shows_the_storage_password(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str], debug_everything) -> None:
    from tinyqml.cli import main

    monkeypatch.chdir(tmp_path)  # runs/<study> of a server storage, if anything were written
    assert main(["search", "quadratic", "--trials", "2", "--study", "pw", "--storage", url]) == 1
    out, err = capsys.readouterr()
    assert err.startswith("tinyqml: error: ") and err.count("\n") == 1 and "***" in err, err
    records = debug_everything.records
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in records)
    for where, text in (("stdout", out), ("stderr", err), ("logs", logged)):
        assert not _leaks(text), f"the password shows in {where}: {text}"


@pytest.mark.parametrize("url", SECRET_URLS[:3])
def test_search_api_at_debug_level_never_shows_the_storage_password(url: str, tmp_path: Path,
                                                                    debug_everything) -> None:
    import optuna

    from tinyqml.search import SearchError
    from tinyqml.searches import run_builtin_search

    optuna.logging.set_verbosity(optuna.logging.DEBUG)
    logging.getLogger("tinyqml").setLevel(logging.DEBUG)
    stages: list[str] = []
    with pytest.raises(SearchError) as info:
        run_builtin_search("quadratic", 2, "pw", storage=url, artifacts_dir=tmp_path, on_stage=stages.append)
    assert stages and "***" in stages[0]  # the first progress line names the storage, masked
    chain, exc = [], info.value
    while exc is not None:  # the message and everything it was raised from stay in tracebacks
        chain.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    logged = "\n".join(r.getMessage() for r in debug_everything.records)
    for where, text in (("the error", str(info.value)), ("a progress line", "\n".join(stages)), ("logs", logged)):
        assert not _leaks(text), f"the password shows in {where}: {text}"
    assert not any(_leaks(text) for text in chain), chain  # tracebacks print the causes too


def test_a_study_run_with_other_settings_is_refused_without_the_password() -> None:
    import optuna

    from tinyqml.search import SearchConfig, SearchError
    from tinyqml.search.study import FINGERPRINT_ATTR, _check_fingerprint

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    study.set_user_attr(FINGERPRINT_ATTR, "old")
    config = SearchConfig(n_trials=1, storage=SECRET_URLS[0], fingerprint="new")
    with pytest.raises(SearchError, match=r"run with other settings") as info:
        _check_fingerprint(study, config)
    assert not _leaks(str(info.value)) and "***" in str(info.value)


# =========================================================================== 3. no network

#: installs a socket guard: network connects, address lookups and datagrams raise and are recorded;
#: AF_UNIX sockets (local IPC) pass. Run in this process (monkeypatch) and in a fresh interpreter.
GUARD = '''
import errno, socket

def install(setattr, attempts):
    real_connect, real_connect_ex, real_sendto = socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto
    unix = getattr(socket, "AF_UNIX", None)

    def refuse(what):
        attempts.append(what)
        return OSError(errno.ENETUNREACH, "network access is blocked by the test: " + what)

    def connect(self, address):
        if unix is not None and self.family == unix:
            return real_connect(self, address)
        raise refuse("connect %r" % (address,))

    def connect_ex(self, address):
        if unix is not None and self.family == unix:
            return real_connect_ex(self, address)
        raise refuse("connect_ex %r" % (address,))

    def sendto(self, *args):
        if unix is not None and self.family == unix:
            return real_sendto(self, *args)
        raise refuse("sendto %r" % (args[-1],))

    def create_connection(address, *args, **kwargs):
        raise refuse("create_connection %r" % (address,))

    def getaddrinfo(host, *args, **kwargs):
        attempts.append("getaddrinfo %r" % (host,))
        raise socket.gaierror(socket.EAI_NONAME, "address lookup is blocked by the test: %r" % (host,))

    setattr(socket.socket, "connect", connect)
    setattr(socket.socket, "connect_ex", connect_ex)
    setattr(socket.socket, "sendto", sendto)
    setattr(socket, "create_connection", create_connection)
    setattr(socket, "getaddrinfo", getaddrinfo)
'''


def _guard(setattr_fn, attempts: list[str]) -> None:  # type: ignore[no-untyped-def]
    ns: dict = {}
    exec(compile(GUARD, "<socket guard>", "exec"), ns)  # noqa: S102 - the test's own constant
    ns["install"](setattr_fn, attempts)


def test_the_guard_blocks_network_sockets_and_lets_unix_sockets_through(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    attempts: list[str] = []
    _guard(monkeypatch.setattr, attempts)
    with pytest.raises(OSError, match="blocked"):
        socket.create_connection(("127.0.0.1", 1), timeout=1)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s, pytest.raises(OSError, match="blocked"):
        s.connect(("127.0.0.1", 1))
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("example.org", 443)
    a, b = socket.socketpair(socket.AF_UNIX)  # local IPC is not network
    with a, b:
        a.sendall(b"ok")
        assert b.recv(2) == b"ok"
    assert len(attempts) == 3


@pytest.mark.slow
def test_the_demo_quick_mode_runs_with_the_network_blocked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("qiskit_aer")
    pytest.importorskip("matplotlib")
    from tinyqml.demo import DEMO_FAST, run_demo

    attempts: list[str] = []
    _guard(monkeypatch.setattr, attempts)
    result = run_demo(tmp_path, DEMO_FAST, command="tinyqml demo --fast")
    assert result.quantum is not None and result.classical is not None  # both halves ran
    assert result.report.is_file() and (result.out_dir / "results.json").is_file()
    assert attempts == []  # nothing even tried (and swallowed the refusal)


def test_importing_every_module_opens_no_network_connection() -> None:
    script = GUARD + (
        "\nimport importlib, json, sys\n"
        "attempts = []\n"
        "install(setattr, attempts)\n"
        "failed = {}\n"
        "for name in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ModuleNotFoundError as exc:\n"
        f"        if not (exc.name and exc.name.split('.')[0] in {sorted(OPTIONAL)!r}):\n"
        "            failed[name] = repr(exc)\n"
        "    except Exception as exc:\n"
        "        failed[name] = repr(exc)\n"
        "print(json.dumps({'attempts': attempts, 'failed': failed}))\n"
    )
    modules = package_modules()
    assert len(modules) > 100
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-c", script, json.dumps(modules)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"attempts": [], "failed": {}}


# =========================================================================== 4. the error catalogue

DOC = ROOT / "docs" / "errors.md"


def _exception_classes() -> dict[str, type]:
    """``module.Class`` of every exception class the packages define (each counted where it is defined)."""
    found: dict[str, type] = {}
    for name in package_modules():
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] in OPTIONAL:
                continue
            raise
        for value in vars(module).values():
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == name:
                found[f"{name}.{value.__qualname__}"] = value
    return found


def _documented() -> set[str]:
    """The classes of the doc's index: lines ``- `tinyqml.....Name` ...``."""
    text = DOC.read_text(encoding="utf-8")
    index = text.split("## Index of exception classes", 1)
    assert len(index) == 2, "docs/errors.md has no '## Index of exception classes' section"
    return set(re.findall(r"^- `(tinyqml(?:\.\w+)+)`", index[1], flags=re.M))


def test_every_exception_class_is_in_the_error_catalogue() -> None:
    defined = _exception_classes()
    assert len(defined) >= 50
    missing = sorted(set(defined) - _documented())
    assert missing == [], f"exception classes without an entry in docs/errors.md: {missing}"


def test_every_class_of_the_error_catalogue_exists_and_has_an_example() -> None:
    text = DOC.read_text(encoding="utf-8")
    tables = text.split("## Index of exception classes", 1)[0]
    for path in sorted(_documented()):
        module_name, _, cls_name = path.rpartition(".")
        module = importlib.import_module(module_name)
        cls = vars(module).get(cls_name)
        assert inspect.isclass(cls) and issubclass(cls, BaseException) and cls.__module__ == module_name, \
            f"docs/errors.md lists {path}, which is not an exception class defined there"
        assert f"| `{cls_name}` |" in tables, f"docs/errors.md has no table row for {cls_name}"
