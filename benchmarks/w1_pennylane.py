"""W1 through PennyLane: the same QNode on ``tinyqml.qubit``, ``default.qubit`` and ``lightning.qubit``.

Workload W1 (see ``w1_simulator.py``): batch 256 of RY angle encodings (parameter
broadcasting), 4 layers of RY+RZ on every qubit and a CNOT ring, ``<Z_i>`` on every
qubit, loss = sum, one forward+backward w.r.t. the weights, under PennyLane's torch
interface. Only the device string and the diff method change between rows.

    .venv/bin/python benchmarks/w1_pennylane.py [--sizes 4,8,12] [--repeats 3]

Prints a table of median seconds with ratios to ``default.qubit`` and writes it to
``benchmarks/results/w1_pennylane.md`` (and ``.json``). The issue's target: tinyqml.qubit
at least 10x faster than default.qubit at n=12 through PennyLane's own interface.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

BATCH, LAYERS = 256, 4

#: (row label, device name, diff_method, device kwargs)
CONFIGS = (
    ("default.qubit backprop", "default.qubit", "backprop", {}),
    ("lightning.qubit adjoint", "lightning.qubit", "adjoint", {}),
    ("tinyqml.qubit backprop", "tinyqml.qubit", "backprop", {}),
    ("tinyqml.qubit adjoint", "tinyqml.qubit", "adjoint", {}),
)


@dataclass(frozen=True)
class Cell:
    label: str
    n: int
    seconds: float | None
    error: str | None = None


def make_qnode(device: str, diff_method: str, n: int, kwargs: dict):
    import pennylane as qml

    dev = qml.device(device, wires=n, **kwargs)

    @qml.qnode(dev, interface="torch", diff_method=diff_method)
    def circuit(x, w):
        for i in range(n):
            qml.RY(x[:, i], wires=i)
        for layer in range(LAYERS):
            for i in range(n):
                qml.RY(w[layer, 0, i], wires=i)
            for i in range(n):
                qml.RZ(w[layer, 1, i], wires=i)
            for i in range(n):
                qml.CNOT(wires=[i, (i + 1) % n])
        return [qml.expval(qml.PauliZ(i)) for i in range(n)]

    return circuit


def time_cell(label: str, device: str, method: str, kwargs: dict, n: int, repeats: int) -> Cell:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(BATCH, n, generator=gen, dtype=torch.float64) * torch.pi
    w = torch.rand(LAYERS, 2, n, generator=gen, dtype=torch.float64, requires_grad=True)
    try:
        qnode = make_qnode(device, method, n, kwargs)

        def step() -> None:
            w.grad = None
            out = qnode(x, w)
            torch.stack(list(out)).sum().backward()

        step()  # warm-up (and PennyLane's construction work)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        return Cell(label, n, statistics.median(times))
    except Exception as exc:  # a peer that cannot run a size is reported, not fatal
        return Cell(label, n, None, f"{type(exc).__name__}: {str(exc)[:60]}")


def check_agreement(n: int) -> float:
    """Max |difference| of tinyqml.qubit's outputs and gradients from default.qubit's."""
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(8, n, generator=gen, dtype=torch.float64)
    w0 = torch.rand(LAYERS, 2, n, generator=gen, dtype=torch.float64)
    res = []
    for device in ("default.qubit", "tinyqml.qubit"):
        w = w0.clone().requires_grad_(True)
        out = torch.stack(list(make_qnode(device, "backprop", n, {})(x, w)))
        out.sum().backward()
        res.append((out.detach(), w.grad))
    return max(float((a - b).abs().max()) for a, b in zip(res[0], res[1]))


def table(cells: list[Cell], sizes: list[int]) -> str:
    base = {c.n: c.seconds for c in cells if c.label.startswith("default.qubit")}
    lines = ["| device / diff method | " + " | ".join(f"n={n}" for n in sizes) + " |",
             "|---|" + "---|" * len(sizes)]
    for label, *_ in CONFIGS:
        row = []
        for n in sizes:
            c = next(c for c in cells if c.label == label and c.n == n)
            if c.seconds is None:
                row.append(f"error ({c.error})")
            elif base.get(n):
                row.append(f"{c.seconds:.4g} s ({base[n] / c.seconds:.3g}x vs default.qubit)")
            else:
                row.append(f"{c.seconds:.4g} s")
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="4,8,12")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="sizes 4,8 and 2 repeats")
    ap.add_argument("--results-dir", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    sizes = [4, 8] if args.quick else [int(s) for s in args.sizes.split(",")]
    repeats = 2 if args.quick else args.repeats
    torch.set_num_threads(os.cpu_count() or 1)
    diff = check_agreement(4)
    cells = [time_cell(label, dev, m, kw, n, repeats) for n in sizes for label, dev, m, kw in CONFIGS]
    head = (f"# W1 through PennyLane ({time.strftime('%Y-%m-%dT%H:%M:%S')})\n\n"
            f"- batch {BATCH}, {LAYERS} layers RY+RZ + CNOT ring, <Z_i> on every wire, fwd+bwd w.r.t. weights, "
            f"torch interface, parameter broadcasting; median of {repeats} after a warm-up; "
            f"torch threads {torch.get_num_threads()}; load average at end {os.getloadavg()[0]:.2f}\n"
            f"- tinyqml.qubit vs default.qubit at n=4 (outputs and gradients): max |diff| = {diff:.2e}\n")
    text = head + "\n" + table(cells, sizes) + "\n"
    print(text)
    out = Path(args.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = "w1_pennylane_quick" if args.quick else "w1_pennylane"  # a quick run never replaces the full one
    (out / f"{stem}.md").write_text(text)
    (out / f"{stem}.json").write_text(json.dumps([asdict(c) for c in cells], indent=1))


if __name__ == "__main__":
    main()
