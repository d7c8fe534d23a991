"""On-chip-style training (QOC): shot-noisy parameter shift with gradient pruning.

QOC (Wang et al., "QOC: quantum on-chip training with parameter shift and gradient
pruning", DAC 2022) trains a variational circuit *on the device*: every value the
optimizer sees is a finite-shot measurement of the noisy hardware, and gradients
come from the parameter-shift rule, two more circuit runs per parameter and input.
Here the "device" is the calibrated density-matrix simulator of a transpiled circuit:

- :class:`ShotEstimator` runs a circuit on physical qubits under a
  :class:`~tinyqml.noise.NoiseModel` (gate errors, relaxation), applies the model's
  readout errors to the measured wires and draws ``shots`` samples per circuit with an
  explicit ``torch.Generator``, returning ``<Z_w>`` estimates (``shots=None``: the exact
  noisy expectations). Many angle sets run as one batch (``fusion.run`` straight from
  resolved angles), in chunks that bound memory;
- :class:`ShotParameterShift` is a ``torch.autograd.Function`` whose forward is that
  estimate and whose backward stacks every shifted circuit of the *active* weights
  (one row per input sample, slot and shift term) into one batch and estimates them
  with the same shot noise; skipped (pruned) weights get a zero gradient and cost no
  circuit runs;
- :class:`ExecutionCounter` counts circuit executions (rows simulated) and shots, per
  kind (``forward``, ``gradient``, ``evaluation``), so the saving of pruning is measured;
- :class:`OnChipClassifier` is ``logit_scale * <Z_w>`` of a transpiled classifier circuit;
  :func:`train_qoc` trains it with Adam on shot-noisy parameter-shift gradients,
  optionally pruned by :class:`~tinyqml.search.gradient_pruning.GradientPruner` (the
  accumulation/pruning windows of QOC, built on the shared search engine).

>>> import torch, tinyqml.qml as tq
>>> from tinyqml.noise import NoiseModel, Depolarizing
>>> c = tq.CircuitBuilder(2).ry(0, tq.feature(0)).cx(0, 1).ry(1, tq.weight(0)).rx(0, tq.weight(1)).build()
>>> model = OnChipClassifier(c, wires=[0, 1], noise_model=NoiseModel().add("CX", Depolarizing(0.05, 2)),
...                          shots=256, seed=0)
>>> x = torch.tensor([[0.3], [1.2]], dtype=torch.float64)
>>> model(x).sum().backward()                       # 2 inputs x (1 + 2 weights x 2 shifts) circuits
>>> model.counter.forward, model.counter.gradient, model.counter.total_shots
(2, 8, 2560)
>>> model.zero_grad(); model(x, active=torch.tensor([True, False])).sum().backward()
>>> model.weights.grad[1].item(), model.counter.gradient     # the skipped weight: zero, no runs
(0.0, 12)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from tinyqml.noise import fusion as NF
from tinyqml.noise import measure as NM
from tinyqml.noise.model import NoiseModel, NoisyCircuit, as_noisy
from tinyqml.noise.simulate import _check_size
from tinyqml.qml import fusion as QF
from tinyqml.qml import measure as QM
from tinyqml.qml.circuit import Circuit
from tinyqml.qml.errors import TinyQMLError
from tinyqml.qml.params import resolve, slot_table
from tinyqml.search.gradient_pruning import GradientPruner, GradientPruningConfig
from tinyqml.search.granularity import Granularity

Tensor = torch.Tensor

__all__ = [
    "QOCError", "ExecutionCounter", "ShotEstimator", "ShotParameterShift", "OnChipClassifier", "QOCConfig",
    "QOCEpoch", "QOCResult", "train_qoc", "accuracy", "gradient_executions",
]

#: at most this many density-matrix amplitudes are simulated at once
QOC_CHUNK_AMPLITUDES = 1 << 23


class QOCError(TinyQMLError, ValueError):
    """A bad on-chip-training setting: shots that are not a positive integer, measured wires
    outside the circuit, an ``active`` mask of the wrong size, a gate without a shift rule."""


# --------------------------------------------------------------------------- counting


@dataclass
class ExecutionCounter:
    """Circuit executions (one per simulated row: one circuit at one parameter setting on
    one input) and the shots they took, per kind."""

    forward: int = 0
    gradient: int = 0
    evaluation: int = 0
    total_shots: int = 0

    def add(self, kind: str, circuits: int, shots: int | None) -> None:
        if kind not in ("forward", "gradient", "evaluation"):
            raise QOCError(f"unknown execution kind {kind!r}")
        setattr(self, kind, getattr(self, kind) + int(circuits))
        self.total_shots += int(circuits) * int(shots or 0)

    @property
    def training(self) -> int:
        """Circuits run for training (forward values and gradients)."""
        return self.forward + self.gradient

    def as_dict(self) -> dict[str, int]:
        return {"forward": self.forward, "gradient": self.gradient, "evaluation": self.evaluation,
                "training": self.training, "total_shots": self.total_shots}


# --------------------------------------------------------------------------- the "device"


def _check_shots(shots: Any) -> int | None:
    if shots is None:
        return None
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise QOCError(f"shots must be a positive integer or None (exact), got {shots!r}")
    return shots


class ShotEstimator:
    """``<Z_w>`` of ``circuit`` on the measured ``wires``, as a noisy device reports it.

    Args:
        circuit: the circuit (usually transpiled: physical wires, basis gates).
        wires: measured wires, in output order (e.g. ``layout.final``).
        noise_model: calibrated model (``None``: noiseless).
        shots: samples per circuit (``None``: exact expectations, no sampling).
        readout: apply the model's readout errors to the measured wires.
        dtype: simulation dtype (complex128 or complex64).
        counter: where executions are counted (a new one by default).
    """

    def __init__(self, circuit: Circuit, wires: Sequence[int], noise_model: NoiseModel | None = None,
                 shots: int | None = 1024, readout: bool = True, dtype: torch.dtype = torch.complex128,
                 counter: ExecutionCounter | None = None) -> None:
        if not isinstance(circuit, Circuit):
            raise QOCError(f"ShotEstimator needs a tinyqml Circuit, got {type(circuit).__name__}")
        self.circuit = circuit
        n = circuit.n_wires
        _check_size(n)
        wires = tuple(int(w) for w in wires)
        if not wires or len(set(wires)) != len(wires) or any(not 0 <= w < n for w in wires):
            raise QOCError(f"measured wires must be distinct wires of the {n}-wire circuit, got {wires}")
        self.wires = wires
        self.noise_model = noise_model
        self.shots = _check_shots(shots)
        self.dtype = dtype
        self.noisy: NoisyCircuit = as_noisy(circuit, noise_model)
        self.program = NF.compile_noisy(self.noisy)
        errs = noise_model.readout_errors(wires) if (readout and noise_model is not None) else []
        self.readout_errors = errs if any(e is not None for e in errs) else None
        self.counter = counter if counter is not None else ExecutionCounter()
        rdtype = torch.float64 if dtype == torch.complex128 else torch.float32
        self._table = QM.diagonal_matrix([QM.Z(i) for i in range(len(wires))], len(wires), torch.device("cpu"),
                                         torch.float64)
        self._rdtype = rdtype
        prog = QF.compile_circuit(circuit)
        self._rules: dict[int, tuple[tuple[float, float], ...]] = {}
        for i, op in enumerate(circuit.ops):
            for j, s in enumerate(prog.slots[i]):
                self._rules[s] = op.gate.shift_rules[j] if j < len(op.gate.shift_rules) else ()

    def angles(self, weights: Tensor, inputs: Tensor | None) -> tuple[Tensor, tuple[bool, ...]]:
        """Resolved angles ``[Ba, P]`` (differentiable w.r.t. the weights) and batched flags."""
        return resolve(self.circuit, weights, inputs, self.dtype, weights.device)

    def probabilities(self, angles: Tensor, batched: Sequence[bool]) -> Tensor:
        """Measured probabilities ``[R, 2**k]`` on the wires (through readout errors), exact; no counting."""
        n = self.circuit.n_wires
        per = max(1, QOC_CHUNK_AMPLITUDES // 4**n)
        out = []
        with torch.no_grad():
            for lo in range(0, angles.shape[0], per):
                vec = NF.run(self.program, angles[lo : lo + per].detach(), batched, self.dtype)
                p = NM.marginal(NM.diagonal(vec, n), n, self.wires)
                if self.readout_errors is not None:
                    p = NM.apply_readout(p, self.readout_errors)
                out.append(p)
        return torch.cat(out)

    def estimate(self, angles: Tensor, batched: Sequence[bool], generator: torch.Generator | None,
                 kind: str = "forward", shots: Any = "default") -> Tensor:
        """``<Z_w>`` estimates ``[R, k]`` for every row of ``angles``; counts ``R`` executions of ``kind``."""
        shots = self.shots if shots == "default" else _check_shots(shots)
        p = self.probabilities(angles, batched)
        self.counter.add(kind, p.shape[0], shots)
        if shots is None:
            return (p.to(torch.float64).cpu() @ self._table).to(angles.device, self._rdtype)
        q = p.to("cpu", torch.float64).clamp_min(0)
        q = q / q.sum(1, keepdim=True)
        draws = torch.multinomial(q, shots, replacement=True, generator=generator)
        freq = torch.zeros_like(q).scatter_add_(1, draws, torch.ones_like(draws, dtype=q.dtype)) / shots
        return (freq @ self._table).to(angles.device, self._rdtype)

    def shift_rules(self, slot: int) -> tuple[tuple[float, float], ...]:
        return self._rules[slot]

    def active_slots(self, active: Tensor | None) -> tuple[int, ...]:
        """Parameter slots whose gradient is evaluated: those reading an active weight
        (``active`` a boolean mask over the weights; ``None``: all), skipping zero-scale references."""
        t = slot_table(self.circuit)
        nw = self.circuit.n_weights
        if active is not None:
            active = torch.as_tensor(active)
            if active.dtype != torch.bool or tuple(active.shape) != (nw,):
                raise QOCError(f"active must be a boolean mask of shape [{nw}] (one entry per weight), "
                               f"got {active.dtype} {tuple(active.shape)}")
            on = active.cpu().tolist()
        out = []
        for pos, idx, sc in zip(t.weight_pos, t.weight_idx, t.weight_scale):
            if sc == 0 or (active is not None and not on[idx]):
                continue
            if not self._rules[pos]:
                raise QOCError(f"the gate of parameter slot {pos} has no parameter-shift rule")
            out.append(pos)
        return tuple(out)


def gradient_executions(estimator: ShotEstimator, rows: int, active: Tensor | None = None) -> int:
    """Circuit executions one shift-rule backward costs for ``rows`` inputs (``active`` weights only)."""
    return rows * sum(len(estimator.shift_rules(s)) for s in estimator.active_slots(active))


class ShotParameterShift(torch.autograd.Function):
    """Shot-noisy ``<Z_w>`` whose backward is the batched parameter-shift rule, evaluated
    with the same shot noise, for the given slots only (every other slot: zero gradient).

    ``ShotParameterShift.apply(estimator, batched, slots, generator, angles)``.
    """

    @staticmethod
    def forward(ctx, estimator: ShotEstimator, batched: tuple[bool, ...], slots: tuple[int, ...],  # type: ignore[override]
                generator: torch.Generator | None, angles: Tensor) -> Tensor:
        ctx.estimator, ctx.slots, ctx.generator = estimator, slots, generator
        ctx.save_for_backward(angles)
        return estimator.estimate(angles.detach(), batched, generator, "forward")

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        (angles,) = ctx.saved_tensors
        est: ShotEstimator = ctx.estimator
        grad = torch.zeros_like(angles)
        rules = [(s, c, sh) for s in ctx.slots for c, sh in est.shift_rules(s)]
        if not rules:
            return None, None, None, None, grad
        ba, p = angles.shape
        shifted = angles.detach().unsqueeze(0).repeat(len(rules), 1, 1)
        for t, (s, _, sh) in enumerate(rules):
            shifted[t, :, s] += sh
        vals = est.estimate(shifted.reshape(-1, p), (True,) * p, ctx.generator, "gradient")
        vals = vals.reshape(len(rules), ba, -1)  # [T, Ba, k]
        contrib = (vals * g.unsqueeze(0)).sum(-1)  # [T, Ba]
        for t, (s, c, _) in enumerate(rules):
            grad[:, s] += c * contrib[t]
        return None, None, None, None, grad


# --------------------------------------------------------------------------- the model


class OnChipClassifier(nn.Module):
    """``logit_scale * <Z_w>`` of a (transpiled) circuit, measured with shots on a noisy device.

    Args:
        circuit: the classifier circuit on physical wires; its input features are the data.
        wires: measured wires, one per class (e.g. ``layout.final[:n_classes]``).
        noise_model: calibrated model of the device (``None``: noiseless).
        shots: shots per circuit execution (``None``: exact expectations).
        logit_scale: the logits are ``logit_scale * <Z>``.
        readout: apply the model's readout errors.
        seed: seeds the initial weights (uniform in ``[0, init_scale)``) and the shot generator.
        init_scale: range of the initial weights (default 2π).

    ``forward(x, active)`` returns shot-based logits; their backward evaluates the
    parameter-shift rule with shots for the weights where ``active`` is ``True``
    (all when ``None``). Executions are counted in :attr:`counter`.
    """

    def __init__(self, circuit: Circuit, wires: Sequence[int], noise_model: NoiseModel | None = None,
                 shots: int | None = 1024, logit_scale: float = 5.0, readout: bool = True, seed: int = 0,
                 init_scale: float = 2 * math.pi, dtype: torch.dtype = torch.complex128) -> None:
        super().__init__()
        self.estimator = ShotEstimator(circuit, wires, noise_model, shots, readout, dtype)
        self.logit_scale = float(logit_scale)
        rdtype = torch.float64 if dtype == torch.complex128 else torch.float32
        gen = torch.Generator().manual_seed(seed)
        self.weights = nn.Parameter(torch.rand(circuit.n_weights, generator=gen, dtype=rdtype) * init_scale)
        self.generator = torch.Generator().manual_seed(seed + 1_000_003)

    @property
    def circuit(self) -> Circuit:
        return self.estimator.circuit

    @property
    def counter(self) -> ExecutionCounter:
        return self.estimator.counter

    def expectations(self, x: Tensor | None, active: Tensor | None = None) -> Tensor:
        """Shot-based ``<Z_w>`` ``[B, k]``, differentiable by shot-noisy parameter shift."""
        xin = None if x is None else x.to(self.weights.dtype)
        angles, batched = self.estimator.angles(self.weights, xin)
        slots = self.estimator.active_slots(active)
        return ShotParameterShift.apply(self.estimator, batched, slots, self.generator, angles)

    def forward(self, x: Tensor | None, active: Tensor | None = None) -> Tensor:
        return self.logit_scale * self.expectations(x, active)

    def evaluate(self, x: Tensor | None, shots: Any = None, generator: torch.Generator | None = None) -> Tensor:
        """Logits without gradients: exact noisy expectations (``shots=None``, a simulator-only
        number, not counted) or a ``shots``-sample estimate (counted as ``evaluation``)."""
        with torch.no_grad():
            xin = None if x is None else x.to(self.weights.dtype)
            angles, batched = self.estimator.angles(self.weights.detach(), xin)
            if shots is None:
                p = self.estimator.probabilities(angles, batched)
                z = (p.to(torch.float64).cpu() @ self.estimator._table).to(angles.device, self.weights.dtype)
            else:
                gen = generator if generator is not None else self.generator
                z = self.estimator.estimate(angles, batched, gen, "evaluation", shots)
        return self.logit_scale * z

    def extra_repr(self) -> str:
        e = self.estimator
        return (f"{e.circuit!r}, wires={e.wires}, shots={e.shots}, noise={'yes' if e.noise_model else 'no'}, "
                f"logit_scale={self.logit_scale}")


def accuracy(logits: Tensor, y: Tensor) -> float:
    """Fraction of rows whose arg-max logit is the label."""
    return float((logits.argmax(1) == y.to(logits.device)).double().mean())


# --------------------------------------------------------------------------- training


@dataclass(frozen=True)
class QOCConfig:
    """Settings of :func:`train_qoc`.

    Attributes:
        epochs, batch_size, lr: Adam on mini-batches (cosine decay of ``lr`` over all steps).
        seed: seed of the batch order.
        pruning: gradient-pruning windows and ratio (``None``: every gradient, every step).
        eval_shots: shots of the final shot-based test evaluation (``None``: skip it).
    """

    epochs: int = 5
    batch_size: int = 32
    lr: float = 0.1
    seed: int = 0
    pruning: GradientPruningConfig | None = None
    eval_shots: int | None = 1024

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise QOCError(f"QOCConfig.{name} must be an integer >= 1, got {v!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise QOCError(f"QOCConfig.lr must be > 0, got {self.lr!r}")
        if self.pruning is not None and not isinstance(self.pruning, GradientPruningConfig):
            raise QOCError(f"QOCConfig.pruning must be a GradientPruningConfig or None, got "
                           f"{type(self.pruning).__name__}")
        _check_shots(self.eval_shots)


@dataclass(frozen=True)
class QOCEpoch:
    """After one epoch: mean training loss and accuracy of the shot-based training logits,
    exact noisy test accuracy, cumulative training executions, seconds so far."""

    epoch: int
    loss: float
    train_accuracy: float
    test_accuracy: float | None
    training_executions: int
    seconds: float


@dataclass(frozen=True)
class QOCResult:
    """What :func:`train_qoc` returns.

    Attributes:
        executions: the model counter's totals (``forward``, ``gradient``, ``evaluation``,
            ``training`` = forward + gradient, ``total_shots``).
        evaluated_fraction: mean fraction of the weights whose gradient was evaluated per step.
        test_accuracy: from the exact noisy expectations (simulator only); ``None`` without test data.
        test_accuracy_shots: from one ``config.eval_shots``-shot evaluation (counted as ``evaluation``).
        seconds: wall time of the training loop (per-epoch exact test evaluations included).
    """

    config: QOCConfig
    model: OnChipClassifier
    history: tuple[QOCEpoch, ...]
    executions: dict[str, int]
    evaluated_fraction: float
    test_accuracy: float | None
    test_accuracy_shots: float | None
    seconds: float
    steps: int

    def summary(self) -> dict[str, Any]:
        return {"test_accuracy": self.test_accuracy, "test_accuracy_shots": self.test_accuracy_shots,
                "executions": dict(self.executions), "evaluated_fraction": self.evaluated_fraction,
                "seconds": self.seconds, "steps": self.steps,
                "final_loss": self.history[-1].loss if self.history else None}


def train_qoc(model: OnChipClassifier, x_train: Tensor, y_train: Tensor, config: QOCConfig = QOCConfig(),
              x_test: Tensor | None = None, y_test: Tensor | None = None,
              granularity: Granularity | None = None,
              on_epoch: Callable[[QOCEpoch], None] | None = None) -> QOCResult:
    """Train ``model`` on shot-noisy parameter-shift gradients (cross-entropy, Adam).

    With ``config.pruning`` a :class:`GradientPruner` over the weights (grouped by
    ``granularity``, default one group per weight) decides each step which gradients are
    evaluated: all of them in accumulation windows (their ``|g|`` accumulated), a sampled
    ``1 - ratio`` in pruning windows; skipped weights get a zero gradient at no circuit
    cost (Adam's moments still move them, as in QOC's use of Adam).
    """
    if not isinstance(model, OnChipClassifier):
        raise QOCError(f"train_qoc trains an OnChipClassifier, got {type(model).__name__}")
    if len(x_train) != len(y_train) or len(x_train) == 0:
        raise QOCError(f"x_train and y_train need the same, non-zero length, got {len(x_train)} and {len(y_train)}")
    n_out = len(model.estimator.wires)
    if int(y_train.max()) >= n_out or int(y_train.min()) < 0:
        raise QOCError(f"labels must lie in 0..{n_out - 1} (one measured wire per class)")
    pruner = (GradientPruner(model.weights, config.pruning, granularity) if config.pruning is not None else None)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    per_epoch = math.ceil(len(y_train) / config.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs * per_epoch)
    gen = torch.Generator().manual_seed(config.seed)
    history: list[QOCEpoch] = []
    step = 0
    fractions: list[float] = []
    start = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        order = torch.randperm(len(y_train), generator=gen)
        total = correct = 0.0
        for lo in range(0, len(order), config.batch_size):
            idx = order[lo : lo + config.batch_size]
            active = pruner.mask(step) if pruner is not None else None
            fractions.append(1.0 if active is None else float(active.double().mean()))
            logits = model(x_train[idx], active=active)
            loss = nn.functional.cross_entropy(logits, y_train[idx])
            opt.zero_grad()
            loss.backward()
            if pruner is not None and model.weights.grad is not None:
                pruner.observe(step, model.weights.grad)
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            correct += float((logits.detach().argmax(1) == y_train[idx]).sum())
            step += 1
        test_acc = None
        if x_test is not None and y_test is not None:
            test_acc = accuracy(model.evaluate(x_test), y_test)
        stats = QOCEpoch(epoch, total / len(order), correct / len(order), test_acc, model.counter.training,
                         time.perf_counter() - start)
        history.append(stats)
        if on_epoch is not None:
            on_epoch(stats)
    seconds = time.perf_counter() - start
    test_acc = test_shots = None
    if x_test is not None and y_test is not None:
        test_acc = accuracy(model.evaluate(x_test), y_test)
        if config.eval_shots is not None:
            test_shots = accuracy(model.evaluate(x_test, shots=config.eval_shots), y_test)
    return QOCResult(config, model, tuple(history), model.counter.as_dict(),
                     sum(fractions) / max(1, len(fractions)), test_acc, test_shots, seconds, step)
