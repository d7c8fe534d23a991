"""``tinyqml noise show BACKEND``: a fake backend's calibration and the noise model tinyqml derives from it.

The data comes from :mod:`tinyqml.noise.calibration` (:func:`~tinyqml.noise.calibration.backend_calibration`,
:func:`~tinyqml.noise.calibration.noise_model_summary`); this module only prints it.

>>> from tinyqml.cli import build_parser
>>> args = build_parser().parse_args(["noise", "show", "manila", "--qubits", "0,1", "--scale", "2"])
>>> args.backend, args.qubits, args.scale, args.json
('manila', (0, 1), 2.0, False)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from typing import Any, Sequence

from tinyqml.commands.common import error

__all__ = ["register"]

NOISE_EXAMPLES = """\
examples:
  tinyqml noise show FakeManilaV2                # calibration and the derived noise model
  tinyqml noise show quito --qubits 0,1          # only qubits 0 and 1 (and the gates between them)
  tinyqml noise show lagos --scale 2             # the noise model with every error rate doubled
  tinyqml noise show manila --json > manila.json # machine-readable: calibration + NoiseModel JSON

BACKEND is a calibrated offline fake backend of qiskit_ibm_runtime.fake_provider: FakeManilaV2,
FakeManila, manila and fake_manila name the same one (pip install 'tinyqml[interop]').
"""

SHOW_EXAMPLES = """\
examples:
  tinyqml noise show FakeManilaV2
  tinyqml noise show fake_quito --qubits 0,1,2
  tinyqml noise show sherbrooke --scale 0.5
  tinyqml noise show manila --json | python -c \\
      "import json, sys; from tinyqml.noise import NoiseModel; \\
       print(NoiseModel.from_dict(json.load(sys.stdin)['noise_model']))"

The noise model is tinyqml.noise.NoiseModel.from_backend(backend) (Aer's recipe): per calibrated
gate and qubits, thermal relaxation from T1, T2 and the gate's duration, preceded by a depolarizing
error that brings the average gate infidelity to the calibrated error; per qubit the asymmetric
readout error P(0|1), P(1|0). Units: T1, T2 in us, durations in ns, frequencies in GHz; --json
keeps Qiskit's SI units (seconds, hertz).
"""


def _qubit_list(text: str) -> tuple[int, ...]:
    """``0,1,3`` -> ``(0, 1, 3)`` (argparse type)."""
    try:
        qs = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated qubit numbers such as 0,1, got {text!r}") from None
    if not qs or any(q < 0 for q in qs):
        raise argparse.ArgumentTypeError(f"expected comma-separated qubit numbers >= 0 such as 0,1, got {text!r}")
    return tuple(sorted(set(qs)))


def _scale(text: str) -> float:
    """A noise scale factor >= 0 (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a scale factor >= 0, got {text!r}") from None
    if not 0.0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite scale factor >= 0, got {value}")
    return value


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``tinyqml noise`` (and its ``show``) to the sub-parsers ``sub``."""
    p = sub.add_parser(
        "noise", help="calibrated noise: a fake backend's calibration and the tinyqml noise model from it",
        description="Inspect device noise. 'show BACKEND' prints a calibrated fake backend's calibration "
                    "(qubits, coupling map, T1, T2, readout errors, gate errors and durations) and the "
                    "tinyqml.noise.NoiseModel derived from it (channels per gate, readout confusion matrices).",
        epilog=NOISE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="noise_command", metavar="ACTION", required=True)
    show = actions.add_parser(
        "show", help="a fake backend's calibration and its derived noise model",
        description="Print the calibration of the fake backend BACKEND and the noise model "
                    "NoiseModel.from_backend(BACKEND): its rules (depolarizing probability, thermal "
                    "relaxation, infidelity per gate and qubits), readout error matrices and a summary.",
        epilog=SHOW_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    show.add_argument("backend", metavar="BACKEND", help="a fake backend: FakeManilaV2, FakeManila, manila, fake_manila")
    show.add_argument("--json", action="store_true",
                      help="print JSON: the calibration, the noise model (NoiseModel.from_dict reads it back) "
                           "and its summary")
    show.add_argument("--scale", type=_scale, default=1.0, metavar="S",
                      help="show NoiseModel.scaled(S): every error rate times S (default 1)")
    show.add_argument("--qubits", type=_qubit_list, default=None, metavar="LIST",
                      help="only these qubits, e.g. 0,1 (gates and couplings among them)")
    show.set_defaults(func=_run_show)


# --------------------------------------------------------------------------- formatting


def _num(value: float | None, spec: str, factor: float = 1.0) -> str:
    return "-" if value is None else format(value * factor, spec)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> list[str]:
    """Lines of a plain table: the first ``left`` columns left-aligned, the others right-aligned."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return [line(headers)] + [line(r) for r in rows]


def _qubits(qs: Sequence[int] | None) -> str:
    return "all" if qs is None else ",".join(str(q) for q in qs)


def _couplings(edges: Sequence[tuple[int, int]]) -> str:
    directed = set(edges)
    parts = []
    for a, b in sorted(edges):
        if (b, a) in directed:
            if a < b:
                parts.append(f"{a}<->{b}")
        else:
            parts.append(f"{a}->{b}")
    return ", ".join(parts) if parts else "none"


def _per_qubit(values: Sequence[float], spec: str, factor: float) -> str:
    return ",".join(format(v * factor, spec) for v in values) if values else "-"


def calibration_lines(cal: Any) -> list[str]:
    """The text of a :class:`~tinyqml.noise.calibration.BackendCalibration`."""
    when = f", calibrated {cal.last_update}" if cal.last_update else ""
    shown = "" if len(cal.qubits) == cal.num_qubits else f" (showing {_qubits([q.qubit for q in cal.qubits])})"
    out = [f"{cal.backend_class} ({cal.name}): {cal.num_qubits} qubit{'' if cal.num_qubits == 1 else 's'}{shown}{when}",
           f"basis gates: {', '.join(cal.basis_gates)}",
           f"coupling map: {_couplings(cal.coupling_map)}", "", "calibration per qubit"]
    rows = [[str(q.qubit), _num(q.t1, ".2f", 1e6), _num(q.t2, ".2f", 1e6), _num(q.frequency, ".4f", 1e-9),
             _num(q.readout_error, ".4g"), _num(q.p1_given_0, ".4g"), _num(q.p0_given_1, ".4g"),
             _num(q.readout_length, ".1f", 1e9)] for q in cal.qubits]
    out += _table(["qubit", "T1 (us)", "T2 (us)", "freq (GHz)", "readout error", "P(1|0)", "P(0|1)",
                   "readout (ns)"], rows, left=0)
    out += ["", "calibration per gate"]
    rows = [[g.gate, _qubits(g.qubits), "0 (virtual)" if g.virtual else _num(g.error, ".3e"),
             _num(g.duration, ".1f", 1e9)] for g in cal.gates]
    out += _table(["gate", "qubits", "error", "duration (ns)"], rows, left=2)
    out.append(f"mean gate error: 1q {_num(cal.mean_gate_error(1), '.3e')}, 2q {_num(cal.mean_gate_error(2), '.3e')}; "
               f"mean readout error {_num(cal.mean_readout_error, '.4g')}")
    return out


def model_lines(summary: Any, scale: float) -> list[str]:
    """The text of a :class:`~tinyqml.noise.calibration.NoiseModelSummary`."""
    how = "NoiseModel.from_backend" + (f"(...).scaled({scale:g})" if scale != 1 else "")
    out = [f"noise model {summary.name!r} ({how}): {len(summary.rules)} gate rules, "
           f"{len(summary.readout)} readout errors",
           "each rule: depolarizing(p) then thermal relaxation over the gate's duration; infidelity = "
           "1 - average gate fidelity"]
    kinds = any(r.kind != "device_gate" for r in summary.rules)  # a model read from a backend has only these
    rules = sorted(summary.rules, key=lambda r: (r.n_qubits, r.gate, r.qubits is not None, r.qubits or ()))
    rows = [[r.gate, _qubits(r.qubits)] + ([r.channel] if kinds else []) + [
             _num(r.calibrated_error, ".3e"), _num(r.depolarizing, ".3e"), _num(r.duration, ".1f", 1e9),
             _per_qubit(r.t1, ".2f", 1e6), _per_qubit(r.t2, ".2f", 1e6), _num(r.relaxation_infidelity, ".3e"),
             format(r.infidelity, ".3e")] for r in rules]
    out += _table(["gate", "qubits"] + (["channel"] if kinds else []) + [
        "calibrated error", "depolarizing p", "duration (ns)", "T1 (us)", "T2 (us)", "relaxation infid.",
        "infidelity"], rows, left=3 if kinds else 2)
    out += ["", "readout errors: matrix[measured][true] = P(measured | true)"]
    rows = [[str(r.qubit), format(r.p0_given_1, ".4g"), format(r.p1_given_0, ".4g"),
             "[[{:.4f} {:.4f}] [{:.4f} {:.4f}]]".format(*r.matrix[0], *r.matrix[1])] for r in summary.readout]
    out += _table(["qubit", "P(0|1)", "P(1|0)", "confusion matrix"], rows, left=0)
    out.append(f"summary: mean 1q error {_num(summary.mean_error(1), '.3e')} ({summary.count(1)} rules), "
               f"mean 2q error {_num(summary.mean_error(2), '.3e')} ({summary.count(2)} rules), "
               f"mean readout error {_num(summary.mean_readout_error, '.4g')}")
    return out


# --------------------------------------------------------------------------- runner


def _run_show(args: argparse.Namespace) -> int:
    from tinyqml.noise import NoiseModel
    from tinyqml.noise.calibration import backend_calibration, fake_backend, model_on_qubits, noise_model_summary
    from tinyqml.qml.errors import TinyQMLError

    try:
        backend = fake_backend(args.backend)
        cal = backend_calibration(backend)
        model = NoiseModel.from_backend(backend)
        if args.scale != 1:
            model = model.scaled(args.scale)
        if args.qubits is not None:
            cal = cal.on_qubits(args.qubits)
            model = model_on_qubits(model, args.qubits)
        summary = noise_model_summary(model)
    except TinyQMLError as exc:
        return error(exc)
    if args.json:
        doc = {"backend": cal.backend_class, "scale": args.scale,
               "qubits": None if args.qubits is None else list(args.qubits),
               "calibration": cal.to_dict(), "noise_model": model.to_dict(), "noise_model_summary": summary.to_dict()}
        return _emit(json.dumps(doc, indent=1))
    return _emit("\n".join(calibration_lines(cal) + [""] + model_lines(summary, args.scale)))


def _emit(text: str) -> int:
    """Print ``text``; a reader that stops early (``| head``) is not an error."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        with contextlib.suppress(OSError, ValueError):  # the interpreter's final flush must not fail either
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
