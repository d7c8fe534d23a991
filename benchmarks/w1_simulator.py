"""W1 simulator benchmark: tinyqml against PennyLane, Qiskit Aer and qulacs.

Workload W1
-----------
* ``n`` qubits, batch ``B = 256``; inputs ``x`` of shape ``[B, n]``, seeded
  uniform in ``[0, pi)``.
* Encoding: ``RY(x[:, i])`` on every qubit ``i``.
* ``L = 4`` layers of ``RY(w)`` then ``RZ(w)`` on every qubit (each gate has
  its own trainable weight, ``2 * n * L`` weights, numbered RY over all qubits
  then RZ over all qubits, layer by layer) followed by a CNOT ring
  ``CNOT(i, i + 1)`` for ``i = 0 .. n - 2`` and ``CNOT(n - 1, 0)``.
* Outputs ``<Z_i>`` for every qubit, shape ``[B, n]``;
  ``loss = outputs.sum()``.
* Two modes: ``fwd+bwd`` (forward and the gradient of the loss w.r.t. the
  weights, not the inputs) and ``forward`` (outputs only).

Every (framework, n, mode) cell runs in its own subprocess
(``--worker FRAMEWORK N MODE``), which builds the circuit once, runs one
warm-up and then times the repeats; the median is reported together with the
worker's resident memory just after its imports and its peak resident memory.
Before the timings, every selected framework's outputs (and gradients, where
the framework has them) at ``n = 4`` are checked against PennyLane
default.qubit.

Run from the repository root::

    .venv/bin/python benchmarks/w1_simulator.py [--quick]
    .venv/bin/python benchmarks/w1_simulator.py --sizes 4,8,12,16
    .venv/bin/python benchmarks/w1_simulator.py --only tinyqml --device cuda

Results are printed and written to ``benchmarks/results/w1_simulator.json``
and ``benchmarks/results/w1_simulator.md``.
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

BATCH = 256
LAYERS = 4
SEED = 1234
CHECK_N = 4
RESULT_MARKER = "W1RESULT "
MODES = ("fwdbwd", "forward")
MODE_LABELS = {"fwdbwd": "fwd+bwd", "forward": "forward only", "check": "check"}
REFERENCE = "pennylane-default"  # correctness reference
BASELINE = "tinyqml-c128"  # ratios in the seconds table are relative to this
# Targets: speedup of tinyqml over the fastest peer, per mode and n.
TARGETS = {"fwdbwd": {8: 5.0, 12: 5.0, 16: 5.0}, "forward": {12: 2.0, 16: 2.0}}
MIB = 1024.0 * 1024.0


# --------------------------------------------------------------------------
# Problem definition and shared data structures
# --------------------------------------------------------------------------


@dataclass
class Problem:
    """One W1 instance: sizes plus the seeded inputs and weights (numpy)."""

    n: int
    batch: int
    layers: int
    x: Any  # np.ndarray [batch, n], float64
    w: Any  # np.ndarray [2 * n * layers], float64


def make_problem(n: int, batch: int, layers: int, seed: int) -> Problem:
    import numpy as np

    rng = np.random.default_rng(seed + n)
    x = rng.uniform(0.0, math.pi, size=(batch, n))
    w = rng.uniform(0.0, 2.0 * math.pi, size=2 * n * layers)
    return Problem(n, batch, layers, x, w)


def w1_gates(n: int, layers: int):
    """Yield the W1 gate list: ("ry"|"rz", wire, ("x"|"w", index)) or ("cx", c, t)."""
    for i in range(n):
        yield ("ry", i, ("x", i))
    k = 0
    for _ in range(layers):
        for i in range(n):
            yield ("ry", i, ("w", k))
            k += 1
        for i in range(n):
            yield ("rz", i, ("w", k))
            k += 1
        for i in range(n):
            yield ("cx", i, (i + 1) % n)


@dataclass
class Context:
    """Worker settings shared by all frameworks."""

    device: str
    threads: int


@dataclass
class Runner:
    """Callables produced by a framework's build step.

    ``forward()`` returns the outputs [B, n]; ``fwd_bwd()`` runs forward and
    backward and returns the weight gradient (None when unsupported).
    """

    forward: Callable[[], Any]
    fwd_bwd: Callable[[], Any] | None = None
    sync: Callable[[], None] = lambda: None


@dataclass
class Framework:
    name: str
    label: str
    preload: Callable[[Context], None]  # imports (measured into the RSS baseline)
    build: Callable[[Problem, Context], Runner]
    has_grad: bool = True
    is_peer: bool = True


@dataclass
class ResultRow:
    """One (framework, n, mode) measurement, as reported by a worker."""

    framework: str
    n: int
    mode: str
    status: str  # ok | unavailable | error | timeout | oom | skipped | n/a
    median_s: float | None = None
    times_s: list[float] = field(default_factory=list)
    repeats: int = 0
    rss_base_mib: float | None = None
    rss_peak_mib: float | None = None
    gpu_peak_mib: float | None = None
    device: str = "cpu"
    device_name: str = ""
    detail: str = ""
    worker_wall_s: float | None = None


# --------------------------------------------------------------------------
# Frameworks
# --------------------------------------------------------------------------


def _torch_setup(ctx: Context, default_float64: bool = False) -> None:
    import torch

    torch.set_num_threads(ctx.threads)
    if default_float64:
        torch.set_default_dtype(torch.float64)


def _torch_sync(device: str) -> Callable[[], None]:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.synchronize
    return lambda: None


def _preload_pennylane(ctx: Context) -> None:
    import pennylane  # noqa: F401

    _torch_setup(ctx, default_float64=True)


def _pennylane_runner(problem: Problem, device_name: str, **qnode_kwargs) -> Runner:
    """Broadcasted QNode: one call evaluates the whole batch."""
    import pennylane as qml
    import torch

    def circuit(x, w):
        for gate, a, b in w1_gates(problem.n, problem.layers):
            if gate == "cx":
                qml.CNOT(wires=[a, b])
                continue
            angle = x[:, b[1]] if b[0] == "x" else w[b[1]]
            (qml.RY if gate == "ry" else qml.RZ)(angle, wires=a)
        return [qml.expval(qml.PauliZ(i)) for i in range(problem.n)]

    dev = qml.device(device_name, wires=problem.n)
    qnode = qml.QNode(circuit, dev, interface="torch", **qnode_kwargs)
    x = torch.tensor(problem.x, dtype=torch.float64)
    w = torch.tensor(problem.w, dtype=torch.float64, requires_grad=True)

    def forward():
        with torch.no_grad():
            return torch.stack(qnode(x, w), dim=1)

    def fwd_bwd():
        w.grad = None
        torch.stack(qnode(x, w), dim=1).sum().backward()
        return w.grad

    return Runner(forward, fwd_bwd)


def build_default_qubit(problem: Problem, ctx: Context) -> Runner:
    return _pennylane_runner(problem, "default.qubit", diff_method="backprop")


def build_lightning(problem: Problem, ctx: Context, device_vjp: bool) -> Runner:
    return _pennylane_runner(
        problem, "lightning.qubit", diff_method="adjoint", device_vjp=device_vjp
    )


def _preload_aer(ctx: Context) -> None:
    import qiskit  # noqa: F401
    import qiskit_aer.primitives  # noqa: F401


def build_aer(problem: Problem, ctx: Context) -> Runner:
    """EstimatorV2, exact expectation values, all bindings in one PUB.

    W1 wire i is Qiskit qubit i; ``Z_i`` is built with an explicit qubit index,
    so Qiskit's little-endian label order does not matter.
    """
    import numpy as np
    from qiskit import QuantumCircuit
    from qiskit.circuit import ParameterVector
    from qiskit.quantum_info import SparsePauliOp
    from qiskit_aer.primitives import EstimatorV2

    n, nw = problem.n, problem.w.size
    xs, ws = ParameterVector("x", n), ParameterVector("w", nw)
    qc = QuantumCircuit(n)
    for gate, a, b in w1_gates(n, problem.layers):
        if gate == "cx":
            qc.cx(a, b)
        else:
            param = xs[b[1]] if b[0] == "x" else ws[b[1]]
            getattr(qc, gate)(param, a)
    columns = {xs[i]: problem.x[:, i] for i in range(n)}
    columns.update({ws[k]: np.full(problem.batch, problem.w[k]) for k in range(nw)})
    # Shape [B, 1, P] broadcasts against the n observables to evs [B, n].
    values = np.stack([columns[p] for p in qc.parameters], axis=-1)[:, None, :]
    observables = [
        SparsePauliOp.from_sparse_list([("Z", [i], 1.0)], num_qubits=n) for i in range(n)
    ]
    estimator = EstimatorV2(
        options={
            "default_precision": 0.0,
            "backend_options": {"max_parallel_threads": ctx.threads},
        }
    )

    def forward():
        return estimator.run([(qc, observables, values)]).result()[0].data.evs

    return Runner(forward, None)


def _preload_qulacs(ctx: Context) -> None:
    import qulacs  # noqa: F401


def build_qulacs(problem: Problem, ctx: Context) -> Runner:
    """One parametric circuit, re-bound per sample in a Python loop.

    qulacs rotations are exp(+i theta P / 2), so every angle is negated to get
    the standard RY/RZ, and the gradient is negated back.  Parameters 0..n-1
    are the encoding angles, n.. are the weights.
    """
    import numpy as np
    import qulacs

    n = problem.n
    circuit = qulacs.ParametricQuantumCircuit(n)
    for gate, a, b in w1_gates(n, problem.layers):
        if gate == "cx":
            circuit.add_CNOT_gate(a, b)
        elif gate == "ry":
            circuit.add_parametric_RY_gate(a, 0.0)
        else:
            circuit.add_parametric_RZ_gate(a, 0.0)
    for k, value in enumerate(problem.w):
        circuit.set_parameter(n + k, -float(value))
    z_obs = []
    for i in range(n):
        obs = qulacs.Observable(n)
        obs.add_operator(1.0, f"Z {i}")
        z_obs.append(obs)
    z_sum = qulacs.Observable(n)
    for i in range(n):
        z_sum.add_operator(1.0, f"Z {i}")
    state = qulacs.QuantumState(n)
    neg_x = (-problem.x).tolist()

    def run_sample(b: int, out) -> None:
        for i in range(n):
            circuit.set_parameter(i, neg_x[b][i])
        state.set_zero_state()
        circuit.update_quantum_state(state)
        out[b] = [obs.get_expectation_value(state) for obs in z_obs]

    def forward():
        out = np.empty((problem.batch, n))
        for b in range(problem.batch):
            run_sample(b, out)
        return out

    def fwd_bwd():
        out = np.empty((problem.batch, n))
        grad = np.zeros(problem.w.size)
        for b in range(problem.batch):
            run_sample(b, out)
            grad -= np.asarray(circuit.backprop(z_sum))[n:]
        return grad

    return Runner(forward, fwd_bwd)


TINYQML_API = ("CircuitBuilder", "feature", "weight", "Z", "QuantumLayer")


def _import_tinyqml():
    """Import tinyqml.qml; raise ImportError if the W1 API is not there yet."""
    import tinyqml.qml as tq

    missing = [name for name in TINYQML_API if not hasattr(tq, name)]
    if missing:
        raise ImportError(f"tinyqml.qml lacks {', '.join(missing)}")
    return tq


def _preload_tinyqml(ctx: Context) -> None:
    _import_tinyqml()
    _torch_setup(ctx)
    if ctx.device.startswith("cuda"):
        import torch

        torch.zeros(1, device=ctx.device)  # CUDA context into the baseline


def _load_weights(layer, values) -> None:
    """Copy W1 weights (weight index order) into the layer's parameters."""
    import torch

    params = [p for p in layer.parameters() if p.requires_grad]
    total = sum(p.numel() for p in params)
    if total != len(values):
        raise ValueError(f"layer has {total} trainable values, W1 needs {len(values)}")
    flat = torch.as_tensor(values, dtype=torch.float64)
    offset = 0
    with torch.no_grad():
        for p in params:
            chunk = flat[offset : offset + p.numel()].reshape(p.shape)
            p.copy_(chunk.to(device=p.device, dtype=p.dtype))
            offset += p.numel()


def _tinyqml_weight_grad(layer):
    import torch

    grads = [p.grad.reshape(-1) for p in layer.parameters() if p.requires_grad]
    return torch.cat(grads)


def build_tinyqml(problem: Problem, ctx: Context, complex_dtype: str) -> Runner:
    import torch

    tq = _import_tinyqml()
    cdtype = getattr(torch, complex_dtype)
    rdtype = torch.float64 if cdtype == torch.complex128 else torch.float32
    builder = tq.CircuitBuilder(problem.n)
    for gate, a, b in w1_gates(problem.n, problem.layers):
        if gate == "cx":
            builder.cx(a, b)
        else:
            angle = tq.feature(b[1]) if b[0] == "x" else tq.weight(b[1])
            getattr(builder, gate)(a, angle)
    circ = builder.build()
    observables = [tq.Z(i) for i in range(problem.n)]
    layer = tq.QuantumLayer(circ, observables, diff_method="adjoint", dtype=cdtype)
    _load_weights(layer, problem.w)
    layer = layer.to(ctx.device)
    x = torch.as_tensor(problem.x, dtype=rdtype, device=ctx.device)

    def forward():
        with torch.no_grad():
            return layer(x)

    def fwd_bwd():
        layer.zero_grad(set_to_none=True)
        layer(x).sum().backward()
        return _tinyqml_weight_grad(layer)

    return Runner(forward, fwd_bwd, _torch_sync(ctx.device))


FRAMEWORKS: dict[str, Framework] = {
    fw.name: fw
    for fw in (
        Framework(
            "pennylane-default",
            "PennyLane default.qubit, backprop, broadcast",
            _preload_pennylane,
            build_default_qubit,
        ),
        Framework(
            "lightning-adjoint",
            "lightning.qubit, adjoint, device_vjp=False",
            _preload_pennylane,
            lambda p, c: build_lightning(p, c, device_vjp=False),
        ),
        Framework(
            "lightning-adjoint-vjp",
            "lightning.qubit, adjoint, device_vjp=True",
            _preload_pennylane,
            lambda p, c: build_lightning(p, c, device_vjp=True),
        ),
        Framework(
            "aer-estimator",
            "Qiskit Aer EstimatorV2, exact (forward only)",
            _preload_aer,
            build_aer,
            has_grad=False,
        ),
        Framework(
            "qulacs",
            "qulacs, backprop, Python loop over batch",
            _preload_qulacs,
            build_qulacs,
        ),
        Framework(
            "tinyqml-c128",
            "tinyqml, adjoint, complex128",
            _preload_tinyqml,
            lambda p, c: build_tinyqml(p, c, "complex128"),
            is_peer=False,
        ),
        Framework(
            "tinyqml-c64",
            "tinyqml, adjoint, complex64",
            _preload_tinyqml,
            lambda p, c: build_tinyqml(p, c, "complex64"),
            is_peer=False,
        ),
    )
}


# --------------------------------------------------------------------------
# Worker (one subprocess per measurement)
# --------------------------------------------------------------------------


def current_rss_mib() -> float:
    """Resident set size of this process now (Linux /proc, else peak)."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / MIB
    except (OSError, ValueError, IndexError):
        return peak_rss_mib()


def peak_rss_mib() -> float:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / MIB


def time_callable(fn, sync, repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
        sync()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def _to_list(value) -> list:
    import numpy as np

    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64).tolist()


def _short_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:160]


def worker_main(name: str, n: int, mode: str, args: argparse.Namespace) -> dict:
    fw = FRAMEWORKS[name]
    device = args.device if not fw.is_peer else "cpu"
    ctx = Context(device=device, threads=args.threads)
    row = ResultRow(name, n, mode, "error", device=device, repeats=args.repeats)
    start = time.perf_counter()
    payload: dict = {}
    try:
        import numpy  # noqa: F401  (every framework needs it; keep it in the baseline)

        fw.preload(ctx)
        row.rss_base_mib = current_rss_mib()
        runner = fw.build(make_problem(n, args.batch, args.layers, args.seed), ctx)
        if mode == "check":
            payload["outputs"] = _to_list(runner.forward())
            if runner.fwd_bwd is not None:
                payload["grad"] = _to_list(runner.fwd_bwd())
        else:
            fn = runner.fwd_bwd if mode == "fwdbwd" else runner.forward
            row.times_s = time_callable(fn, runner.sync, args.repeats, args.warmup)
            row.median_s = statistics.median(row.times_s)
        row.status = "ok"
        if device.startswith("cuda"):
            import torch

            row.gpu_peak_mib = torch.cuda.max_memory_allocated() / MIB
            row.device_name = torch.cuda.get_device_name()
    except ImportError as exc:
        row.status, row.detail = "unavailable", _short_error(exc)
    except Exception as exc:  # reported in the table, never fatal
        row.status, row.detail = "error", _short_error(exc)
    row.rss_peak_mib = peak_rss_mib()
    row.worker_wall_s = time.perf_counter() - start
    return {"row": asdict(row), **payload}


# --------------------------------------------------------------------------
# Parent: spawning workers
# --------------------------------------------------------------------------


def _child_rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB
    except (OSError, ValueError, IndexError):
        return None


def total_ram_mib() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / MIB
    except (ValueError, OSError, AttributeError):
        return None


def worker_command(name: str, n: int, mode: str, repeats: int, args) -> list[str]:
    return [
        sys.executable, str(Path(__file__).resolve()),
        "--worker", name, str(n), mode,
        "--repeats", str(repeats), "--warmup", str(args.warmup),
        "--threads", str(args.threads), "--device", args.device,
        "--batch", str(args.batch), "--layers", str(args.layers), "--seed", str(args.seed),
    ]  # fmt: skip


def worker_env(threads: int) -> dict:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env.setdefault("PYTHONWARNINGS", "ignore")
    return env


def run_worker(name: str, n: int, mode: str, repeats: int, args) -> dict:
    """Run one worker with a timeout and a resident-memory guard."""
    cmd = worker_command(name, n, mode, repeats, args)
    limit_mib = args.mem_limit_gib * 1024.0
    failure = ResultRow(name, n, mode, "error", repeats=repeats)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=worker_env(args.threads))
        start = time.monotonic()
        while proc.poll() is None:
            rss = _child_rss_mib(proc.pid)
            if time.monotonic() - start > args.timeout:
                failure.status, failure.detail = "timeout", f"> {args.timeout:.0f} s"
            elif rss is not None and rss > limit_mib:
                failure.status, failure.detail = "oom", f"RSS > {args.mem_limit_gib:.1f} GiB"
            else:
                time.sleep(0.2)
                continue
            proc.kill()
            proc.wait()
            return {"row": asdict(failure)}
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER) :])
    last = (stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
    if proc.returncode is not None and proc.returncode < 0:
        last = f"killed by signal {-proc.returncode} (out of memory?)"
    failure.detail = last[:160]
    return {"row": asdict(failure)}


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _describe(row: ResultRow) -> str:
    if row.status != "ok":
        return f"{row.status} {row.detail}".strip()
    if row.median_s is None:
        return "ok"
    return f"{row.median_s:.4g} s (peak RSS {row.rss_peak_mib:.0f} MiB)"


def repeats_for(n: int, args) -> int:
    if args.repeats is not None:
        return args.repeats
    if args.quick:
        return 3
    return 3 if n >= 16 else 5


def measure_all(names: list[str], sizes: list[int], args) -> list[ResultRow]:
    """Run every (framework, n, mode) cell.

    After a timeout or out-of-memory kill, larger n of that (framework, mode)
    are skipped; an unavailable framework is marked unavailable everywhere.
    """
    rows: list[ResultRow] = []
    stop: dict[tuple[str, str], tuple[str, str]] = {}  # -> (status, detail)
    cells = [(n, name, mode) for n in sizes for name in names for mode in MODES]
    for idx, (n, name, mode) in enumerate(cells, 1):
        if mode == "fwdbwd" and not FRAMEWORKS[name].has_grad:
            rows.append(ResultRow(name, n, mode, "n/a", detail="no gradient"))
            continue
        if (name, mode) in stop:
            rows.append(ResultRow(name, n, mode, *stop[(name, mode)]))
            continue
        row = ResultRow(**run_worker(name, n, mode, repeats_for(n, args), args)["row"])
        rows.append(row)
        _log(f"[{idx:3d}/{len(cells)}] n={n:<3d} {name:<22s} {MODE_LABELS[mode]:<13s}"
             f" {_describe(row)}")  # fmt: skip
        if row.status in ("timeout", "oom"):
            stop[(name, mode)] = ("skipped", f"after {row.status} at n={n}")
        elif row.status == "unavailable":
            stop[(name, mode)] = ("unavailable", row.detail)
    return rows


# --------------------------------------------------------------------------
# Correctness checks against PennyLane default.qubit at n = 4
# --------------------------------------------------------------------------


@dataclass
class CheckResult:
    framework: str
    status: str  # agree | DISAGREE | unavailable | error
    tolerance: float
    forward_max_abs_diff: float | None = None
    grad_max_rel_diff: float | None = None
    detail: str = ""

    def line(self) -> str:
        head = f"check n={CHECK_N} {self.framework} vs {REFERENCE} (tol {self.tolerance:g}): "
        if self.forward_max_abs_diff is None:
            return head + f"{self.status} {self.detail}".strip()
        fwd_ok = self.forward_max_abs_diff <= self.tolerance
        text = (f"forward outputs {'agree' if fwd_ok else 'DO NOT agree'}"
                f" (max |diff| {self.forward_max_abs_diff:.2e})")  # fmt: skip
        if self.grad_max_rel_diff is not None:
            grad_ok = self.grad_max_rel_diff <= self.tolerance
            text += (f"; weight gradients {'agree' if grad_ok else 'DO NOT agree'}"
                     f" (max |diff| / max(1, max |grad|) {self.grad_max_rel_diff:.2e})")  # fmt: skip
        return head + text


def _max_abs_diff(a, b) -> float:
    import numpy as np

    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def compare(name: str, result: dict, reference: dict) -> CheckResult:
    import numpy as np

    tol = 1e-4 if name == "tinyqml-c64" else 1e-8
    row = ResultRow(**result["row"])
    if row.status != "ok":
        return CheckResult(name, row.status, tol, detail=row.detail)
    out, ref_out = np.asarray(result["outputs"]), np.asarray(reference["outputs"])
    if out.shape != ref_out.shape:
        return CheckResult(name, "DISAGREE", tol, detail=f"shape {out.shape} != {ref_out.shape}")
    check = CheckResult(name, "agree", tol, forward_max_abs_diff=_max_abs_diff(out, ref_out))
    if "grad" in result and "grad" in reference:
        scale = max(1.0, float(np.max(np.abs(reference["grad"]))))
        check.grad_max_rel_diff = _max_abs_diff(result["grad"], reference["grad"]) / scale
    bad_grad = check.grad_max_rel_diff is not None and check.grad_max_rel_diff > tol
    if check.forward_max_abs_diff > tol or bad_grad:
        check.status = "DISAGREE"
    return check


def run_checks(names: list[str], args) -> list[CheckResult]:
    reference = run_worker(REFERENCE, CHECK_N, "check", 1, args)
    ref_row = ResultRow(**reference["row"])
    checks = []
    for name in names:
        if name == REFERENCE:
            continue
        if ref_row.status != "ok":
            checks.append(CheckResult(name, "error", 0.0, detail=f"reference: {ref_row.detail}"))
            continue
        check = compare(name, run_worker(name, CHECK_N, "check", 1, args), reference)
        checks.append(check)
        _log(check.line())
    return checks


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
    ram = total_ram_mib()
    dists = ("torch", "pennylane", "pennylane-lightning", "qiskit", "qiskit-aer",
             "qulacs", "numpy", "tinyqml")  # fmt: skip
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "versions": {d: _version(d) for d in dists},
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "ram_gib": round(ram / 1024.0, 1) if ram else None,
        "threads": args.threads,
        "thread_settings": (
            f"torch.set_num_threads({args.threads}); OMP/MKL/OPENBLAS_NUM_THREADS={args.threads};"
            f" Aer max_parallel_threads={args.threads}"
        ),
        "load_avg_start": _load_avg(),
        "device": args.device,
        "batch": args.batch,
        "layers": args.layers,
        "seed": args.seed,
        "sizes": sizes,
        "repeats": {n: repeats_for(n, args) for n in sizes},
        "warmup": args.warmup,
        "timeout_s": args.timeout,
        "mem_limit_gib": args.mem_limit_gib,
        "frameworks": {name: FRAMEWORKS[name].label for name in names},
    }


def header_lines(meta: dict, skipped_note: str) -> list[str]:
    v = meta["versions"]
    lines = [
        f"# W1 simulator benchmark ({meta['date']})",
        "",
        f"- W1: batch {meta['batch']}, RY encoding, {meta['layers']} layers of RY+RZ"
        " + CNOT ring, <Z_i> on all qubits, loss = sum; gradient w.r.t. weights",
        f"- versions: python {meta['python']}, torch {v['torch']}, pennylane {v['pennylane']},"
        f" pennylane-lightning {v['pennylane-lightning']}, qiskit {v['qiskit']},"
        f" qiskit-aer {v['qiskit-aer']}, qulacs {v['qulacs']}, numpy {v['numpy']},"
        f" tinyqml {v['tinyqml']}",
        f"- CPU: {meta['cpu']}, {meta['logical_cpus']} logical cores"
        f" ({meta['usable_cpus']} usable), RAM {meta['ram_gib']} GiB",
        f"- threads: {meta['thread_settings']}",
        f"- load average (1/5/15 min) at start: {meta['load_avg_start']},"
        f" at end: {meta.get('load_avg_end', 'n/a')} (other processes distort timings)",
        f"- tinyqml device: {meta['device']} (peers always run on CPU)",
        f"- timing: median of {meta['repeats']} repeats (n: repeats) after"
        f" {meta['warmup']} warm-up; one subprocess per cell; timeout {meta['timeout_s']:.0f} s",
    ]
    if skipped_note:
        lines.append(f"- {skipped_note}")
    return lines


def _index(rows: list[ResultRow]) -> dict[tuple[str, int, str], ResultRow]:
    return {(r.framework, r.n, r.mode): r for r in rows}


def _status_cell(row: ResultRow | None) -> str:
    if row is None:
        return "-"
    if row.status in ("ok", "n/a", "timeout", "oom", "skipped", "unavailable"):
        return row.status
    return f"error: {row.detail.split(':')[0][:30]}"  # full message under "Problems"


def _fmt_seconds(t: float) -> str:
    return f"{t:.3g}" if t < 100 else f"{t:.0f}"


def markdown_table(header: list[str], body: list[list[str]]) -> list[str]:
    body = [[c.replace("|", "/") for c in r] for r in body]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def fmt(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    return [fmt(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(fmt, body)]


def seconds_table(rows, names, sizes, mode) -> list[str]:
    idx = _index(rows)
    body = []
    for name in names:
        cells = [name]
        for n in sizes:
            row, base = idx.get((name, n, mode)), idx.get((BASELINE, n, mode))
            if row is None or row.status != "ok":
                cells.append(_status_cell(row))
                continue
            cell = _fmt_seconds(row.median_s)
            if base is not None and base.status == "ok":
                cell += f" ({row.median_s / base.median_s:.2f}x)"
            cells.append(cell)
        body.append(cells)
    return markdown_table(["framework", *[f"n={n}" for n in sizes]], body)


def speedups(rows, sizes, mode) -> dict:
    """Fastest peer and tinyqml speedups over it, per n."""
    idx = _index(rows)
    result = {}
    for n in sizes:
        peers = [r for r in rows if r.n == n and r.mode == mode and r.status == "ok"
                 and FRAMEWORKS[r.framework].is_peer]  # fmt: skip
        if not peers:
            continue
        fastest = min(peers, key=lambda r: r.median_s)
        entry = {"fastest_peer": fastest.framework, "fastest_peer_s": fastest.median_s,
                 "target": TARGETS[mode].get(n)}  # fmt: skip
        for name in ("tinyqml-c128", "tinyqml-c64"):
            row = idx.get((name, n, mode))
            if row is not None and row.status == "ok":
                entry[name] = fastest.median_s / row.median_s
        result[n] = entry
    return result


def speedup_table(speed: dict, rows, sizes, mode) -> list[str]:
    idx = _index(rows)
    body = [["fastest peer"], ["target"]]
    names = ("tinyqml-c128", "tinyqml-c64")
    body += [[f"{name} speedup"] for name in names]
    for n in sizes:
        entry = speed.get(n)
        if entry is None:
            for cells in body:
                cells.append("no peer measured")
            continue
        target = entry["target"]
        body[0].append(f"{entry['fastest_peer']} {_fmt_seconds(entry['fastest_peer_s'])}")
        body[1].append(f">= {target:g}x" if target else "-")
        for cells, name in zip(body[2:], names):
            if name not in entry:
                cells.append(_status_cell(idx.get((name, n, mode))))
                continue
            verdict = "" if not target else (" met" if entry[name] >= target else " MISSED")
            cells.append(f"{entry[name]:.2f}x{verdict}")
    return markdown_table([MODE_LABELS[mode], *[f"n={n}" for n in sizes]], body)


def memory_table(rows, names, sizes, mode) -> list[str]:
    idx = _index(rows)
    body = []
    for name in names:
        cells = [name]
        for n in sizes:
            row = idx.get((name, n, mode))
            if row is None or row.status != "ok" or row.rss_peak_mib is None:
                cells.append(_status_cell(row))
                continue
            cell = f"{row.rss_peak_mib:.0f} (+{row.rss_peak_mib - row.rss_base_mib:.0f})"
            if row.gpu_peak_mib is not None:
                cell += f" gpu {row.gpu_peak_mib:.0f}"
            cells.append(cell)
        body.append(cells)
    return markdown_table(["framework", *[f"n={n}" for n in sizes]], body)


def problem_lines(rows: list[ResultRow]) -> list[str]:
    """Full messages of the cells that did not produce a timing."""
    bad = [r for r in rows if r.status not in ("ok", "n/a")]
    if not bad:
        return []
    lines = ["", "## Problems", ""]
    for r in bad:
        lines.append(f"- {r.framework} n={r.n} {MODE_LABELS[r.mode]}: {r.status} {r.detail}".rstrip())
    return lines


def render_report(meta, rows, checks, names, sizes, skipped_note) -> tuple[str, dict]:
    lines = header_lines(meta, skipped_note)
    if checks:
        lines += ["", "## Correctness (n=4, vs PennyLane default.qubit)", ""]
        lines += [f"- {c.line()}" for c in checks]
    all_speed = {}
    for mode in MODES:
        label = MODE_LABELS[mode]
        ratio = f" (ratio = time / {BASELINE} time)" if BASELINE in names else ""
        lines += ["", f"## {label}: median seconds{ratio}", ""]
        lines += seconds_table(rows, names, sizes, mode)
        speed = speedups(rows, sizes, mode)
        all_speed[mode] = speed
        lines += ["", f"## {label}: speedup of tinyqml over the fastest peer", ""]
        lines += speedup_table(speed, rows, sizes, mode)
    for mode in MODES:
        lines += ["", f"## {MODE_LABELS[mode]}: peak RSS MiB (+ growth over post-import RSS)", ""]
        lines += memory_table(rows, names, sizes, mode)
    lines += problem_lines(rows)
    return "\n".join(lines) + "\n", all_speed


def write_results(results_dir: Path, report: str, payload: dict, stem: str = "w1_simulator") -> None:
    """Write ``stem.md`` and ``stem.json`` (``--quick`` runs use ``w1_simulator_quick``: they never replace
    the full run's results)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"{stem}.md").write_text(report)
    (results_dir / f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def select_frameworks(only: str | None) -> list[str]:
    """Exact names, or a prefix group ('tinyqml', 'lightning')."""
    if not only:
        return list(FRAMEWORKS)
    chosen = []
    for token in (t.strip() for t in only.split(",") if t.strip()):
        hits = [token] if token in FRAMEWORKS else [
            name for name in FRAMEWORKS if name.startswith(token + "-")
        ]  # fmt: skip
        if not hits:
            raise SystemExit(f"--only: unknown framework {token!r}; known: {', '.join(FRAMEWORKS)}")
        chosen += [h for h in hits if h not in chosen]
    return [name for name in FRAMEWORKS if name in chosen]


def parse_sizes(text: str) -> list[int]:
    sizes = [int(s) for s in text.split(",") if s.strip()]
    if any(n < 2 for n in sizes):
        raise SystemExit("--sizes: every n must be >= 2")
    return sizes


def default_threads() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--sizes", help="comma-separated qubit counts (default 4,8,12,16)")
    p.add_argument("--quick", action="store_true", help="sizes 4,8 and 3 repeats")
    p.add_argument("--only", help=f"comma-separated frameworks or groups: {', '.join(FRAMEWORKS)}")
    p.add_argument("--device", default="cpu", help="device for tinyqml (cpu, cuda, cuda:1)")
    p.add_argument("--repeats", type=int, help="timed repeats (default 5, 3 for n>=16)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=default_threads())
    p.add_argument("--batch", type=int, default=BATCH)
    p.add_argument("--layers", type=int, default=LAYERS)
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per worker")
    ram = total_ram_mib()
    p.add_argument("--mem-limit-gib", type=float, default=0.9 * ram / 1024.0 if ram else 1e9,
                   help="kill a worker whose RSS exceeds this (default 90%% of RAM)")  # fmt: skip
    p.add_argument("--no-check", action="store_true", help="skip the n=4 correctness checks")
    p.add_argument("--results-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--worker", nargs=3, metavar=("FRAMEWORK", "N", "MODE"), help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        name, n, mode = args.worker
        args.repeats = args.repeats or 1
        result = worker_main(name, int(n), mode, args)
        print(RESULT_MARKER + json.dumps(result), flush=True)
        return 0

    sizes = parse_sizes(args.sizes or ("4,8" if args.quick else "4,8,12,16"))
    names = select_frameworks(args.only)
    left_out = [name for name in FRAMEWORKS if name not in names]
    skipped_note = f"not run (--only): {', '.join(left_out)}" if left_out else ""
    meta = collect_meta(args, names, sizes)
    _log("\n".join(header_lines(meta, skipped_note)))

    checks = [] if args.no_check else run_checks(names, args)
    rows = measure_all(names, sizes, args)
    meta["load_avg_end"] = _load_avg()
    report, speed = render_report(meta, rows, checks, names, sizes, skipped_note)
    print("\n" + report, end="")
    payload = {
        "meta": meta,
        "checks": [asdict(c) for c in checks],
        "results": [asdict(r) for r in rows],
        "speedups": {m: {str(n): v for n, v in s.items()} for m, s in speed.items()},
    }
    stem = "w1_simulator_quick" if args.quick else "w1_simulator"
    write_results(args.results_dir, report, payload, stem)
    _log(f"wrote {args.results_dir / (stem + '.md')} and {args.results_dir / (stem + '.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
