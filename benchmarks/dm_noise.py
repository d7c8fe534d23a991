"""Noisy density-matrix benchmark: tinyqml against Qiskit Aer and PennyLane default.mixed.

Workload DM (GitHub issue 4)
----------------------------
* ``n`` qubits (4..10), batch ``B = 64`` input rows ``x [B, n]``, seeded uniform in
  ``[0, pi)``; every gate is in FakeLagosV2's basis (rz, sx, x, cx).
* Encoding, per qubit ``q``: ``sx, rz(x[:, q]), sx`` (an RY(x) rotation up to an X
  flip), then ``x`` on the odd qubits.
* ``L = 3`` layers of ``rz(w), sx, rz(w)`` on every qubit (``2 * n * L`` trainable
  weights, seeded, shared by all rows) followed by a CX chain ``cx(q, q + 1)``,
  ``q = 0 .. n - 2``.
* Output: ``<Z_q>`` on every qubit for all 64 rows, ``[B, n]`` (exact, no shots).

Noise model (tiled FakeLagosV2)
-------------------------------
``tinyqml.noise.NoiseModel.from_backend(FakeLagosV2())`` read offline (Aer's recipe:
depolarizing + thermal relaxation per calibrated gate). Lagos has 7 qubits and no
chain coupling, so the benchmark's model is built from it with tinyqml's NoiseModel
API: qubit ``q`` takes Lagos qubit ``q % 7``'s single-qubit rules (sx, x, id: gate
error, duration, T1/T2), and ``cx(q, q + 1)`` takes the gate error and duration of
Lagos edge ``LAGOS_EDGES[q % 6]`` with the T1/T2 of Lagos qubits ``q % 7`` and
``(q + 1) % 7`` (a ``DeviceGateError``, as ``from_backend`` builds). rz is virtual
on IBM hardware (no error, zero duration), so it carries no noise. The same model
feeds Aer through ``NoiseModel.to_aer()`` (Kraus channels), and PennyLane as
``qml.QubitChannel`` with the very same Kraus matrices, inserted where tinyqml's
``NoiseModel.apply`` inserts its channels.

Frameworks
----------
* ``aer-dm``: ``AerSimulator(method="density_matrix")`` with default threads and
  options; one parameterised circuit, the 64 rows given as ``parameter_binds`` in one
  ``run`` call; ``save_expectation_value`` of every ``Z_q``. Aer fuses gates from its
  default threshold on (14 qubits, halved to 7 for density matrices) and runs the 64
  bound experiments one after the other, each state update on all cores.
* ``aer-dm-fused``: the same with fusion at every size (``fusion_threshold=1``).
* ``aer-dm-par``: fusion at every size and ``max_parallel_experiments=0``: the bound
  experiments spread over the cores (faster at small n, where one state update does
  not use them).
* ``aer-dm-rho``: like ``aer-dm`` but ``save_density_matrix`` and ``<Z_q>`` read from
  its diagonal in numpy (the other way to measure in Aer).
* ``pennylane-mixed``: PennyLane ``default.mixed``, one broadcast QNode call for the
  batch (numpy interface, ``diff_method=None``).
* ``tinyqml-c128`` / ``tinyqml-c64``: ``tinyqml.noise.expval`` in complex128 /
  complex64, forward only (no autograd graph).

Every (framework, n) cell runs in its own subprocess, which builds once, runs one
warm-up and times the repeats; the median is reported with ratios to tinyqml-c128. The
repeats are cut to fit ``--cell-budget`` seconds (a warm-up longer than that is the one
reported run, marked ``[1 run]``). PennyLane cells whose first run exceeds
``--first-run-limit`` (120 s) are killed and marked ``timeout``, and cells predicted to
exceed it (4x per qubit) are ``skipped``. Before the timings every framework's
``<Z_q>`` for all rows at n = 4 and 6 are compared with tinyqml-c128 (max deviation).

    .venv/bin/python benchmarks/dm_noise.py [--quick] [--sizes 4,6,8] [--only tinyqml,aer]

Results are printed and written to ``benchmarks/results/dm_noise.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

BATCH = 64
LAYERS = 3
SEED = 1234
SIZES = (4, 5, 6, 7, 8, 9, 10)
CHECK_SIZES = (4, 6)
RESULT_MARKER = "DMRESULT "
#: seconds a worker may take for imports and building before its first run counts
BUILD_LIMIT_S = 60.0
#: assumed growth of a cell's time per added qubit, to skip cells that would exceed the first-run limit
GROWTH = 4.0
BASELINE = "tinyqml-c128"
#: Lagos coupling edges (control, target) used cyclically by the chain's CX gates
LAGOS_EDGES = ((0, 1), (1, 2), (1, 3), (3, 5), (4, 5), (5, 6))
LAGOS_QUBITS = 7
SINGLE_QUBIT_GATES = ("SX", "X", "I")
AER_FUSED = {"fusion_enable": True, "fusion_threshold": 1}
AER_PARALLEL = {**AER_FUSED, "max_parallel_experiments": 0}


# --------------------------------------------------------------------------
# Problem: circuit description and the tiled noise model
# --------------------------------------------------------------------------


@dataclass
class Problem:
    """One instance: sizes plus seeded inputs ``x [B, n]`` and weights ``w [2 n L]`` (numpy)."""

    n: int
    batch: int
    layers: int
    x: Any
    w: Any


def make_problem(n: int, batch: int, layers: int, seed: int) -> Problem:
    import numpy as np

    rng = np.random.default_rng(seed + n)
    x = rng.uniform(0.0, math.pi, size=(batch, n))
    w = rng.uniform(0.0, 2.0 * math.pi, size=2 * n * layers)
    return Problem(n, batch, layers, x, w)


def dm_gates(n: int, layers: int):
    """The gate list: ``("rz", q, ("x"|"w", index))``, ``("sx", q)``, ``("x", q)``, ``("cx", c, t)``."""
    for q in range(n):
        yield ("sx", q)
        yield ("rz", q, ("x", q))
        yield ("sx", q)
    for q in range(1, n, 2):
        yield ("x", q)
    k = 0
    for _ in range(layers):
        for q in range(n):
            yield ("rz", q, ("w", k))
            yield ("sx", q)
            yield ("rz", q, ("w", k + 1))
            k += 2
        for q in range(n - 1):
            yield ("cx", q, q + 1)


def tiled_lagos_model(n: int):
    """tinyqml NoiseModel on ``n`` qubits tiled from FakeLagosV2 (see the module docstring)."""
    from qiskit_ibm_runtime.fake_provider import FakeLagosV2

    from tinyqml.noise import DeviceGateError, NoiseModel

    lagos = NoiseModel.from_backend(FakeLagosV2())
    one = {(r.gate, r.qubits[0]): r.error for r in lagos.rules if len(r.qubits) == 1}
    two = {r.qubits: r.error for r in lagos.rules if len(r.qubits) == 2}
    model = NoiseModel(name=f"FakeLagosV2 tiled to {n} qubits")
    for q in range(n):
        for gate in SINGLE_QUBIT_GATES:
            if (gate, q % LAGOS_QUBITS) in one:
                model = model.add(gate, one[(gate, q % LAGOS_QUBITS)], qubits=(q,))
    for q in range(n - 1):
        edge = two[LAGOS_EDGES[q % len(LAGOS_EDGES)]]
        a, b = one[("SX", q % LAGOS_QUBITS)], one[("SX", (q + 1) % LAGOS_QUBITS)]
        spec = DeviceGateError(error=edge.error, duration=edge.duration, t1=(a.t1[0], b.t1[0]),
                               t2=(a.t2[0], b.t2[0]))  # fmt: skip
        model = model.add("CX", spec, qubits=(q, q + 1))
    return model


def tinyqml_circuit(problem: Problem):
    import tinyqml.qml as tq

    builder = tq.CircuitBuilder(problem.n)
    for g in dm_gates(problem.n, problem.layers):
        if g[0] == "cx":
            builder.cx(g[1], g[2])
        elif g[0] == "rz":
            builder.rz(g[1], tq.feature(g[2][1]) if g[2][0] == "x" else tq.weight(g[2][1]))
        else:
            getattr(builder, g[0])(g[1])
    return builder.build()


# --------------------------------------------------------------------------
# Frameworks
# --------------------------------------------------------------------------


@dataclass
class Context:
    threads: int


@dataclass
class Framework:
    name: str
    label: str
    preload: Callable[[Context], None]
    build: Callable[[Problem, Context], Callable[[], Any]]  # -> forward(): [B, n] numpy
    is_peer: bool = True
    limited: bool = False  # cells over --first-run-limit are killed / skipped (slow frameworks only)


def _preload_tinyqml(ctx: Context) -> None:
    import torch

    import tinyqml.noise  # noqa: F401

    torch.set_num_threads(ctx.threads)


def build_tinyqml(problem: Problem, ctx: Context, dtype_name: str) -> Callable[[], Any]:
    import torch

    import tinyqml.qml as tq
    from tinyqml.noise import expval

    dtype = getattr(torch, dtype_name)
    rdtype = torch.float64 if dtype == torch.complex128 else torch.float32
    circuit = tinyqml_circuit(problem)
    noisy = tiled_lagos_model(problem.n).apply(circuit)
    obs = [tq.Z(q) for q in range(problem.n)]
    x = torch.as_tensor(problem.x, dtype=rdtype)
    w = torch.as_tensor(problem.w, dtype=rdtype)

    def forward():
        with torch.no_grad():
            return expval(noisy, obs, weights=w, inputs=x, dtype=dtype).numpy()

    return forward


def _preload_aer(ctx: Context) -> None:
    import qiskit  # noqa: F401
    import qiskit_aer  # noqa: F401


def _aer_circuit(problem: Problem):
    """The Qiskit circuit (qubit q = wire q) and its parameters' values per row."""
    import numpy as np
    from qiskit import QuantumCircuit
    from qiskit.circuit import ParameterVector

    n = problem.n
    xs, ws = ParameterVector("x", n), ParameterVector("w", problem.w.size)
    qc = QuantumCircuit(n)
    for g in dm_gates(n, problem.layers):
        if g[0] == "cx":
            qc.cx(g[1], g[2])
        elif g[0] == "rz":
            qc.rz(xs[g[2][1]] if g[2][0] == "x" else ws[g[2][1]], g[1])
        else:
            getattr(qc, g[0])(g[1])
    binds = {xs[q]: problem.x[:, q].tolist() for q in range(n)}
    binds.update({ws[k]: np.full(problem.batch, problem.w[k]).tolist() for k in range(problem.w.size)})
    return qc, binds


def build_aer(problem: Problem, ctx: Context, options: dict, save: str) -> Callable[[], Any]:
    """One run call, 64 parameter bindings, ``AerSimulator`` ``options``; ``save`` is "expval" or "rho"."""
    import numpy as np
    from qiskit.quantum_info import Pauli
    from qiskit_aer import AerSimulator

    n = problem.n
    qc, binds = _aer_circuit(problem)
    if save == "expval":
        for q in range(n):
            qc.save_expectation_value(Pauli("I" * (n - 1 - q) + "Z" + "I" * q), [*range(n)], label=f"z{q}")
    else:
        qc.save_density_matrix()
    noise = tiled_lagos_model(n).to_aer()
    sim = AerSimulator(method="density_matrix", noise_model=noise, **options)
    signs = 1.0 - 2.0 * ((np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1)  # Qiskit: qubit q = bit q

    def forward():
        result = sim.run(qc, parameter_binds=[binds]).result()
        if not result.success:
            raise RuntimeError(result.status)
        out = np.empty((problem.batch, n))
        for b in range(problem.batch):
            data = result.data(b)
            if save == "expval":
                out[b] = [data[f"z{q}"] for q in range(n)]
            else:
                out[b] = np.real(np.diagonal(np.asarray(data["density_matrix"]))) @ signs
        return out

    return forward


def _preload_pennylane(ctx: Context) -> None:
    import pennylane  # noqa: F401
    import torch

    torch.set_num_threads(ctx.threads)


def build_pennylane(problem: Problem, ctx: Context) -> Callable[[], Any]:
    """default.mixed, one broadcast call; channels as QubitChannel with tinyqml's Kraus matrices."""
    import numpy as np
    import pennylane as qml

    from tinyqml.noise import ChannelOp

    n = problem.n
    circuit = tinyqml_circuit(problem)
    noisy = tiled_lagos_model(n).apply(circuit)
    gates = list(dm_gates(n, problem.layers))
    kraus = {id(s): [k.numpy() for k in s.channel.kraus] for s in noisy.steps if isinstance(s, ChannelOp)}
    dev = qml.device("default.mixed", wires=n)

    @qml.qnode(dev, diff_method=None)
    def qnode(x, w):
        for s in noisy.steps:
            if isinstance(s, ChannelOp):
                qml.QubitChannel(kraus[id(s)], wires=list(s.wires))
                continue
            g = gates[s]
            if g[0] == "cx":
                qml.CNOT(wires=[g[1], g[2]])
            elif g[0] == "rz":
                qml.RZ(x[:, g[2][1]] if g[2][0] == "x" else w[g[2][1]], wires=g[1])
            else:
                (qml.SX if g[0] == "sx" else qml.PauliX)(wires=g[1])
        return [qml.expval(qml.PauliZ(q)) for q in range(n)]

    x, w = np.asarray(problem.x), np.asarray(problem.w)

    def forward():
        return np.stack([np.asarray(v) for v in qnode(x, w)], axis=1)

    return forward


FRAMEWORKS: dict[str, Framework] = {
    fw.name: fw
    for fw in (
        Framework("aer-dm", "Aer density_matrix, defaults, save_expectation_value, 64 binds in one run",
                  _preload_aer, lambda p, c: build_aer(p, c, {}, "expval")),
        Framework("aer-dm-fused", "Aer density_matrix, fusion_threshold=1, save_expectation_value",
                  _preload_aer, lambda p, c: build_aer(p, c, AER_FUSED, "expval")),
        Framework("aer-dm-par", "Aer density_matrix, fusion_threshold=1, max_parallel_experiments=0",
                  _preload_aer, lambda p, c: build_aer(p, c, AER_PARALLEL, "expval")),
        Framework("aer-dm-rho", "Aer density_matrix, defaults, save_density_matrix",
                  _preload_aer, lambda p, c: build_aer(p, c, {}, "rho")),
        Framework("pennylane-mixed", "PennyLane default.mixed, broadcast, QubitChannel",
                  _preload_pennylane, build_pennylane, limited=True),
        Framework("tinyqml-c128", "tinyqml.noise.expval, complex128", _preload_tinyqml,
                  lambda p, c: build_tinyqml(p, c, "complex128"), is_peer=False),
        Framework("tinyqml-c64", "tinyqml.noise.expval, complex64", _preload_tinyqml,
                  lambda p, c: build_tinyqml(p, c, "complex64"), is_peer=False),
    )
}  # fmt: skip


# --------------------------------------------------------------------------
# Worker (one subprocess per cell)
# --------------------------------------------------------------------------


@dataclass
class ResultRow:
    framework: str
    n: int
    mode: str  # "time" or "check"
    status: str  # ok | unavailable | error | timeout | skipped
    median_s: float | None = None
    times_s: list[float] = field(default_factory=list)
    build_s: float | None = None
    detail: str = ""


def _short_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:160]


def time_forward(forward: Callable[[], Any], repeats: int, budget: float, progress: Path | None) -> list[float]:
    """One warm-up, then up to ``repeats`` timed runs that fit in ``budget`` seconds (at least
    one); when the warm-up alone exceeds the budget it is the only (reported) run."""
    start = time.perf_counter()
    forward()
    first = time.perf_counter() - start
    if progress is not None:
        progress.write_text(f"{first}\n")
    if first > budget:
        return [first]
    times = []
    for _ in range(max(1, min(repeats, int(budget // max(first, 1e-9))))):
        start = time.perf_counter()
        forward()
        times.append(time.perf_counter() - start)
    return times


def worker_main(name: str, n: int, mode: str, args: argparse.Namespace) -> dict:
    fw = FRAMEWORKS[name]
    ctx = Context(threads=args.threads)
    row = ResultRow(name, n, mode, "error")
    payload: dict = {}
    try:
        import numpy as np

        fw.preload(ctx)
        start = time.perf_counter()
        forward = fw.build(make_problem(n, args.batch, args.layers, args.seed), ctx)
        row.build_s = time.perf_counter() - start
        if mode == "check":
            payload["outputs"] = np.asarray(forward(), dtype=np.float64).tolist()
        else:
            row.times_s = time_forward(forward, args.repeats, args.cell_budget, args.progress)
            row.median_s = statistics.median(row.times_s)
        row.status = "ok"
    except ImportError as exc:
        row.status, row.detail = "unavailable", _short_error(exc)
    except Exception as exc:  # reported in the table, never fatal
        row.status, row.detail = "error", _short_error(exc)
    return {"row": asdict(row), **payload}


def worker_env(threads: int) -> dict:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env.setdefault("PYTHONWARNINGS", "ignore")
    return env


def run_worker(name: str, n: int, mode: str, args) -> dict:
    """One cell in a subprocess; killed when its first run exceeds ``--first-run-limit``
    (after ``BUILD_LIMIT_S`` for imports and building) or it exceeds ``--timeout`` in all."""
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        progress = Path(tmp) / "progress"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, str(n), mode,
               "--repeats", str(args.repeats), "--threads", str(args.threads), "--batch", str(args.batch),
               "--layers", str(args.layers), "--seed", str(args.seed), "--cell-budget", str(args.cell_budget),
               "--progress", str(progress)]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=worker_env(args.threads))
        detail = _watch(proc, progress, args, FRAMEWORKS[name].limited)
        if detail:
            return {"row": asdict(ResultRow(name, n, mode, "timeout", detail=detail))}
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER) :])
    last = (stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
    return {"row": asdict(ResultRow(name, n, mode, "error", detail=last[:160]))}


def _watch(proc: subprocess.Popen, progress: Path, args, limited: bool) -> str:
    """Wait for the worker; kill it and say why when it runs over a limit ('' when it ended)."""
    start = time.monotonic()
    while proc.poll() is None:
        elapsed = time.monotonic() - start
        why = ""
        if limited and not progress.exists() and elapsed > BUILD_LIMIT_S + args.first_run_limit:
            why = f"first run > {args.first_run_limit:.0f} s"
        elif elapsed > args.timeout:
            why = f"> {args.timeout:.0f} s in all"
        if why:
            proc.kill()
            proc.wait()
            return why
        time.sleep(0.2)
    return ""


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def measure_all(names: list[str], sizes: list[int], args) -> list[ResultRow]:
    """Every (framework, n) cell; after a timeout the larger n of that framework are skipped."""
    rows: list[ResultRow] = []
    stop: dict[str, tuple[str, str]] = {}
    cells = [(n, name) for n in sizes for name in names]
    for idx, (n, name) in enumerate(cells, 1):
        if name in stop:
            status, detail = stop[name]
            rows.append(ResultRow(name, n, "time", status, detail=detail))
            continue
        row = ResultRow(**run_worker(name, n, "time", args)["row"])
        rows.append(row)
        text = f"{row.median_s:.4g} s ({len(row.times_s)} runs)" if row.status == "ok" else row.detail
        _log(f"[{idx:3d}/{len(cells)}] n={n:<3d} {name:<16s} {row.status} {text}")
        if row.status == "timeout":
            stop[name] = ("skipped", f"after timeout at n={n}")
        elif FRAMEWORKS[name].limited and row.status == "ok" and row.median_s * GROWTH > args.first_run_limit:
            stop[name] = ("skipped", f"n={n} took {row.median_s:.0f} s; n={n + 1} would take"
                                     f" > {args.first_run_limit:.0f} s")
        elif row.status == "unavailable":
            stop[name] = ("unavailable", row.detail)
    return rows


# --------------------------------------------------------------------------
# Correctness: every framework against tinyqml-c128
# --------------------------------------------------------------------------


def run_checks(names: list[str], sizes: list[int], args) -> list[dict]:
    import numpy as np

    checks = []
    for n in sizes:
        ref = run_worker(BASELINE, n, "check", args)
        for name in names:
            if name == BASELINE:
                continue
            tol = 1e-4 if name.endswith("c64") else 1e-8
            entry = {"framework": name, "n": n, "tolerance": tol, "max_abs_diff": None, "status": "error"}
            res = run_worker(name, n, "check", args)
            if "outputs" in res and "outputs" in ref:
                diff = float(np.max(np.abs(np.asarray(res["outputs"]) - np.asarray(ref["outputs"]))))
                entry.update(max_abs_diff=diff, status="agree" if diff <= tol else "DISAGREE")
            else:
                entry["detail"] = res["row"]["detail"] or ref["row"]["detail"]
            checks.append(entry)
            _log(check_line(entry))
    return checks


def check_line(c: dict) -> str:
    head = f"n={c['n']} {c['framework']} vs {BASELINE} (tol {c['tolerance']:g}): "
    if c["max_abs_diff"] is None:
        return head + f"{c['status']} {c.get('detail', '')}".strip()
    return head + f"{c['status']}, max |<Z> diff| {c['max_abs_diff']:.2e}"


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    text = cpuinfo.read_text() if cpuinfo.exists() else ""
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _load_avg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def collect_meta(args, names: list[str], sizes: list[int]) -> dict:
    dists = ("torch", "pennylane", "qiskit", "qiskit-aer", "qiskit-ibm-runtime", "numpy", "tinyqml")
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "versions": {d: _version(d) for d in dists},
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "threads": args.threads,
        "load_avg_start": _load_avg(),
        "batch": args.batch,
        "layers": args.layers,
        "seed": args.seed,
        "sizes": sizes,
        "repeats": args.repeats,
        "cell_budget_s": args.cell_budget,
        "first_run_limit_s": args.first_run_limit,
        "timeout_s": args.timeout,
        "frameworks": {name: FRAMEWORKS[name].label for name in names},
    }


def header_lines(meta: dict) -> list[str]:
    v = meta["versions"]
    return [
        f"# Noisy density-matrix benchmark ({meta['date']})",
        "",
        f"- workload: batch {meta['batch']} rows, encoding sx rz(x) sx per qubit + x on odd qubits,"
        f" {meta['layers']} layers of rz(w) sx rz(w) per qubit + CX chain; <Z_q> on every qubit (exact)",
        "- noise: FakeLagosV2 via tinyqml NoiseModel.from_backend, tiled: qubit q uses Lagos qubit q % 7"
        " (sx/x/id gate error, duration, T1/T2), cx(q, q+1) uses Lagos edge"
        f" {list(LAGOS_EDGES)}[q % 6]'s error and duration with the T1/T2 of qubits q % 7, (q+1) % 7;"
        " rz noiseless (virtual); Aer gets it via to_aer(), PennyLane as QubitChannel Kraus matrices",
        f"- versions: python {meta['python']}, torch {v['torch']}, pennylane {v['pennylane']},"
        f" qiskit {v['qiskit']}, qiskit-aer {v['qiskit-aer']}, qiskit-ibm-runtime {v['qiskit-ibm-runtime']},"
        f" numpy {v['numpy']}, tinyqml {v['tinyqml']}",
        f"- CPU: {meta['cpu']}, {meta['logical_cpus']} logical cores; threads: torch.set_num_threads"
        f"({meta['threads']}), OMP/MKL/OPENBLAS_NUM_THREADS={meta['threads']}, Aer default"
        " (max_parallel_threads=0: all cores); tinyqml runs chunks of the batch on the torch threads",
        f"- load average (1/5/15 min) at start: {meta['load_avg_start']}, at end:"
        f" {meta.get('load_avg_end', 'n/a')} (other processes distort timings)",
        f"- timing: median of up to {meta['repeats']} runs after 1 warm-up, one subprocess per cell; the"
        f" repeats are cut to fit {meta['cell_budget_s']:.0f} s (a warm-up longer than that is the single"
        f" reported run, marked [1 run]); a first run over {meta['first_run_limit_s']:.0f} s is killed"
        f" (timeout) and the larger n of that framework skipped, as are cells predicted (x{GROWTH:g} per"
        " qubit) to exceed it (PennyLane only; Aer and tinyqml run every cell)",
    ]


def _fmt_seconds(t: float) -> str:
    return f"{t:.3g}" if t < 100 else f"{t:.0f}"


def markdown_table(header: list[str], body: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def fmt(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    return [fmt(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(fmt, body)]


def _index(rows: list[ResultRow]) -> dict[tuple[str, int], ResultRow]:
    return {(r.framework, r.n): r for r in rows}


def _cell(row: ResultRow | None, base: ResultRow | None) -> str:
    if row is None:
        return "-"
    if row.status != "ok":
        return row.status if row.status in ("timeout", "skipped", "unavailable") else "error"
    text = _fmt_seconds(row.median_s)
    if base is not None and base.status == "ok":
        text += f" ({row.median_s / base.median_s:.2f}x)"
    return text + (" [1 run]" if len(row.times_s) == 1 else "")


def seconds_table(rows, names, sizes) -> list[str]:
    idx = _index(rows)
    body = [[name] + [_cell(idx.get((name, n)), idx.get((BASELINE, n))) for n in sizes] for name in names]
    return markdown_table(["framework", *[f"n={n}" for n in sizes]], body)


def speedups(rows, sizes) -> dict:
    """Per n: the fastest Aer configuration and tinyqml's speedup over it (target >= 1)."""
    idx, out = _index(rows), {}
    for n in sizes:
        aer = [r for r in rows if r.n == n and r.status == "ok" and r.framework.startswith("aer")]
        if not aer:
            continue
        best = min(aer, key=lambda r: r.median_s)
        entry = {"fastest_aer": best.framework, "fastest_aer_s": best.median_s}
        for name in ("tinyqml-c128", "tinyqml-c64"):
            row = idx.get((name, n))
            if row is not None and row.status == "ok":
                entry[name] = best.median_s / row.median_s
        out[n] = entry
    return out


def speedup_table(speed: dict, sizes) -> list[str]:
    body = [["fastest Aer"], ["tinyqml-c128 speedup"], ["tinyqml-c64 speedup"]]
    for n in sizes:
        e = speed.get(n)
        if e is None:
            for cells in body:
                cells.append("-")
            continue
        body[0].append(f"{e['fastest_aer']} {_fmt_seconds(e['fastest_aer_s'])}")
        for cells, name in zip(body[1:], ("tinyqml-c128", "tinyqml-c64")):
            s = e.get(name)
            cells.append("-" if s is None else f"{s:.2f}x {'met' if s >= 1 else 'MISSED'}")
    return markdown_table(["target: >= 1x vs fastest Aer", *[f"n={n}" for n in sizes]], body)


def render_report(meta, rows, checks, names, sizes) -> tuple[str, dict]:
    lines = header_lines(meta)
    if checks:
        lines += ["", f"## Correctness (<Z_q> of all {meta['batch']} rows vs {BASELINE})", ""]
        lines += [f"- {check_line(c)}" for c in checks]
    lines += ["", f"## Median seconds per batch of {meta['batch']} (ratio = time / {BASELINE} time)", ""]
    lines += seconds_table(rows, names, sizes)
    speed = speedups(rows, sizes)
    lines += ["", "## Speedup of tinyqml over the fastest Aer configuration", ""]
    lines += speedup_table(speed, sizes)
    lines += ["", "## Frameworks", ""] + [f"- {name}: {FRAMEWORKS[name].label}" for name in names]
    bad = [r for r in rows if r.status not in ("ok",)]
    if bad:
        lines += ["", "## Problems", ""] + [f"- {r.framework} n={r.n}: {r.status} {r.detail}" for r in bad]
    return "\n".join(lines) + "\n", speed


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def select_frameworks(only: str | None) -> list[str]:
    """Exact names, or prefix groups ('tinyqml', 'aer')."""
    if not only:
        return list(FRAMEWORKS)
    chosen = set()
    for token in (t.strip() for t in only.split(",") if t.strip()):
        hits = [name for name in FRAMEWORKS if name == token or name.startswith(token + "-")]
        if not hits:
            raise SystemExit(f"--only: unknown framework {token!r}; known: {', '.join(FRAMEWORKS)}")
        chosen.update(hits)
    return [name for name in FRAMEWORKS if name in chosen]


def default_threads() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--sizes", help="comma-separated qubit counts (default 4..10)")
    p.add_argument("--quick", action="store_true", help="sizes 4,6,8 and 3 repeats")
    p.add_argument("--only", help=f"comma-separated frameworks or groups: {', '.join(FRAMEWORKS)}")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per cell (default 5, 3 with --quick)")
    p.add_argument("--threads", type=int, default=default_threads())
    p.add_argument("--batch", type=int, default=BATCH)
    p.add_argument("--layers", type=int, default=LAYERS)
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--cell-budget", type=float, default=150.0,
                   help="seconds of timed runs per cell: repeats are cut to fit (a warm-up longer than"
                        " this is the only run)")
    p.add_argument("--first-run-limit", type=float, default=120.0,
                   help="a cell whose first run takes longer is killed and marked timeout (larger n skipped)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per worker in all")
    p.add_argument("--progress", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--no-check", action="store_true", help="skip the correctness checks")
    p.add_argument("--results-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--worker", nargs=3, metavar=("FRAMEWORK", "N", "MODE"), help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.repeats = args.repeats or (3 if args.quick else 5)
    if args.worker:
        name, n, mode = args.worker
        print(RESULT_MARKER + json.dumps(worker_main(name, int(n), mode, args)), flush=True)
        return 0
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else list((4, 6, 8) if args.quick else SIZES)
    names = select_frameworks(args.only)
    meta = collect_meta(args, names, sizes)
    _log("\n".join(header_lines(meta)))
    check_sizes = [n for n in CHECK_SIZES if n <= max(sizes)]
    checks = [] if args.no_check or BASELINE not in names else run_checks(names, check_sizes, args)
    rows = measure_all(names, sizes, args)
    meta["load_avg_end"] = _load_avg()
    report, speed = render_report(meta, rows, checks, names, sizes)
    print("\n" + report, end="")
    payload = {"meta": meta, "checks": checks, "results": [asdict(r) for r in rows],
               "speedups": {str(n): v for n, v in speed.items()}}  # fmt: skip
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stem = "dm_noise_quick" if args.quick else "dm_noise"  # a quick run never replaces the full one
    (args.results_dir / f"{stem}.md").write_text(report)
    (args.results_dir / f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")
    _log(f"wrote {args.results_dir / (stem + '.md')} and {args.results_dir / (stem + '.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
