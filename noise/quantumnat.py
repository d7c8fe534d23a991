"""Noise-aware training pieces (QuantumNAT): noise injection, post-measurement
normalization and quantization, and a classifier that switches them on and off.

QuantumNAT (Wang et al., DAC 2022) trains a variational circuit so that it keeps
working on noisy hardware, with three independent techniques:

1. **noise injection** (:class:`NoiseInjection`): during training, every forward pass
   runs the *transpiled* circuit with Pauli errors drawn from the device's calibrated
   noise model (each channel Pauli-twirled, :func:`twirled_circuit`), a fresh draw for
   every batch row and every call; readout errors enter as their exact effect on
   ``<Z>`` (:func:`readout_affine`). Gradients flow through the sampled circuit.
2. **post-measurement normalization** (:class:`PostMeasurementNorm`): each measured
   output is standardised over the batch (``(z - mean) / std`` per column), with the
   batch's own statistics in training *and* at inference, where the batch is the
   noisy one. Noise that shrinks and shifts each qubit's ``<Z>`` (depolarizing,
   relaxation towards ``|0>``, asymmetric readout) is largely undone.
3. **post-measurement quantization** (:class:`PostMeasurementQuant`): outputs are
   rounded to ``levels`` evenly spaced values with a straight-through gradient, so a
   small error is absorbed by the rounding.

Besides QuantumNAT's sampled injection, ``injection_method="exact"`` trains on the exact
density-matrix expectation under the calibrated model (:class:`DensityMatrixNoise`), the
value sampled injection averages to — affordable for the handful of qubits of a
small device — and ``shots=`` adds the shot noise of a finite-shot ``<Z>`` estimate in
training (with normalization, nothing else stops the raw outputs from shrinking below it). Sampled injection draws all of a call's errors with one ``torch.rand``
and touches only the rows that drew a non-identity Pauli at a channel, so it costs
about one noiseless run plus the errors drawn.

:class:`QuantumNATConfig` holds the switches; :class:`QuantumNATClassifier` is
``logit_scale * quant(norm(<Z_w>))`` on a tinyqml circuit (noise injected only in
training mode); :func:`fit` trains it with Adam. Evaluate on a simulator of the device
by feeding measured expectations (e.g. from :func:`tinyqml.noise.aer.aer_expectations`)
to :meth:`QuantumNATClassifier.head`.

>>> import torch, tinyqml.qml as tq
>>> from tinyqml.noise import NoiseModel, Depolarizing
>>> c = tq.CircuitBuilder(2).ry(0, tq.feature(0)).ry(1, tq.feature(1)).cx(0, 1).ry(1, tq.weight(0)).build()
>>> nm = NoiseModel().add("CX", Depolarizing(0.05, 2))
>>> model = QuantumNATClassifier(c, wires=[0, 1], config=PRESETS["all"], noise_model=nm, seed=0)
>>> x = torch.rand(8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
>>> model(x).shape                         # training mode: injected noise, normalized, quantized
torch.Size([8, 2])
>>> set(model.eval()(x).flatten().tolist()) <= {-4.0, -2.0, 0.0, 2.0, 4.0}     # 2 * five levels on [-2, 2]
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from tinyqml.noise.channels import Channel, pauli_twirl
from tinyqml.noise.model import ChannelOp, NoiseModel, NoisyCircuit
from tinyqml.noise.simulate import expval as noisy_expval
from tinyqml.qml import fusion as QF
from tinyqml.qml import kernels as QK
from tinyqml.qml import measure as QM
from tinyqml.qml.circuit import Circuit
from tinyqml.qml.errors import TinyQMLError
from tinyqml.qml.layer import QuantumLayer
from tinyqml.qml.params import resolve

Tensor = torch.Tensor

__all__ = [
    "QuantumNATError", "QuantumNATConfig", "PRESETS", "NORMALIZED_LOGIT_SCALE", "INJECTION_METHODS",
    "DensityMatrixNoise", "twirled_circuit", "readout_affine", "NoiseInjection",
    "PostMeasurementNorm", "PostMeasurementQuant", "quantize", "QuantumNATClassifier", "fit", "accuracy",
]


class QuantumNATError(TinyQMLError, ValueError):
    """A bad noise-aware-training setting: fewer than 2 quantization levels, an empty or
    reversed quantization range, a batch too small to normalize, injection without a
    noise model, measured wires outside the circuit."""


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class QuantumNATConfig:
    """Which QuantumNAT techniques are on, and their settings.

    Attributes:
        injection: inject noise sampled from the calibrated model during training.
        normalization: normalize each output over the batch (training and inference).
        quantization: round outputs to ``quant_levels`` values (straight-through gradient).
        quant_levels: number of quantization levels (>= 2).
        quant_range: ``(low, high)`` of the quantization grid; ``None`` picks ``(-1, 1)``
            for raw ``<Z>`` values and ``(-2, 2)`` for normalized ones.
        injection_scale: multiplies every error rate of the model used for injection
            (:meth:`NoiseModel.scaled`; ``1`` is the calibration as it is).
        inject_readout: include readout errors in the injected outputs.
        injection_method: ``"sampled"`` (QuantumNAT: Pauli errors drawn per row,
            :class:`NoiseInjection`) or ``"exact"`` (train on the density-matrix
            expectation under the full calibrated model, :class:`DensityMatrixNoise`;
            feasible for the few qubits a density matrix holds).
        shots: add, in training, the shot noise of a ``shots``-shot ``<Z>`` estimate to
            every output (Gaussian with variance ``(1 - <Z>**2) / shots``, drawn from the
            model's generator; works with or without injection); ``None``: none.
        logit_scale: the logits are ``logit_scale`` times the (normalized, quantized) outputs.
        norm_eps: added to the batch standard deviation before dividing.

    >>> QuantumNATConfig(normalization=True, quantization=True).label
    'normalization+quantization'
    >>> QuantumNATConfig(quantization=True, quant_levels=1)
    Traceback (most recent call last):
    ...
    tinyqml.noise.quantumnat.QuantumNATError: quant_levels must be an integer >= 2, got 1
    """

    injection: bool = False
    normalization: bool = False
    quantization: bool = False
    quant_levels: int = 5
    quant_range: tuple[float, float] | None = None
    injection_scale: float = 1.0
    inject_readout: bool = True
    injection_method: str = "sampled"
    shots: int | None = None
    logit_scale: float = 5.0
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if not isinstance(self.quant_levels, int) or isinstance(self.quant_levels, bool) or self.quant_levels < 2:
            raise QuantumNATError(f"quant_levels must be an integer >= 2, got {self.quant_levels!r}")
        if self.quant_range is not None:
            _check_range(self.quant_range)
            object.__setattr__(self, "quant_range", tuple(float(v) for v in self.quant_range))
        for name in ("injection_scale", "logit_scale", "norm_eps"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise QuantumNATError(f"QuantumNATConfig.{name} must be a finite number >= 0, got {v!r}")
        if self.logit_scale == 0:
            raise QuantumNATError("QuantumNATConfig.logit_scale must be > 0")
        if self.shots is not None and (not isinstance(self.shots, int) or isinstance(self.shots, bool)
                                       or self.shots < 1):
            raise QuantumNATError(f"QuantumNATConfig.shots must be a positive integer or None, got {self.shots!r}")
        if self.injection_method not in INJECTION_METHODS:
            raise QuantumNATError(f"injection_method must be one of {', '.join(INJECTION_METHODS)}, "
                                  f"got {self.injection_method!r}")

    @property
    def label(self) -> str:
        """``"plain"`` or the switched-on techniques joined by ``+`` (exact injection is
        ``"exact-noise"``, training shot noise ``"shots"``)."""
        on = [n for n in ("injection", "normalization", "quantization") if getattr(self, n)]
        if self.injection and self.injection_method == "exact":
            on[0] = "exact-noise"
        if self.shots is not None:
            on.append("shots")
        return "+".join(on) or "plain"

    @property
    def grid(self) -> tuple[float, float]:
        """The quantization range in use (see ``quant_range``)."""
        if self.quant_range is not None:
            return self.quant_range
        return (-2.0, 2.0) if self.normalization else (-1.0, 1.0)


#: how noise enters training: sampled Pauli errors (QuantumNAT) or the exact density matrix
INJECTION_METHODS = ("sampled", "exact")

#: logit scale of the presets with normalization: normalized outputs spread over about
#: ``[-2, 2]`` instead of the few tenths a trained raw ``<Z>`` spans
NORMALIZED_LOGIT_SCALE = 2.0

#: the configurations of the QuantumNAT comparison: plain training, each technique alone,
#: all three, and injection + normalization (the pair that suits a single-block classifier)
PRESETS: dict[str, QuantumNATConfig] = {
    "plain": QuantumNATConfig(),
    "injection": QuantumNATConfig(injection=True),
    "normalization": QuantumNATConfig(normalization=True, logit_scale=NORMALIZED_LOGIT_SCALE),
    "quantization": QuantumNATConfig(quantization=True),
    "all": QuantumNATConfig(injection=True, normalization=True, quantization=True,
                            logit_scale=NORMALIZED_LOGIT_SCALE),
    "injection+normalization": QuantumNATConfig(injection=True, normalization=True,
                                                logit_scale=NORMALIZED_LOGIT_SCALE),
}


def _check_range(r: Sequence[float]) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in r)
    except (TypeError, ValueError):
        raise QuantumNATError(f"a quantization range is (low, high), got {r!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise QuantumNATError(f"a quantization range needs finite low < high, got {r!r}")
    return low, high


# --------------------------------------------------------------------------- injection


def twirled_circuit(circuit: Circuit, noise_model: NoiseModel, scale: float = 1.0) -> NoisyCircuit:
    """``circuit`` with the channels of ``noise_model.scaled(scale)``, each replaced by its
    Pauli twirl (:func:`~tinyqml.noise.channels.pauli_twirl`): only Pauli errors, which a
    trajectory draws with fixed probabilities.

    >>> import tinyqml.qml as tq
    >>> from tinyqml.noise import NoiseModel, AmplitudeDamping
    >>> noisy = twirled_circuit(tq.CircuitBuilder(1).x(0).build(), NoiseModel().add("X", AmplitudeDamping(0.2)))
    >>> noisy.steps[1].channel.name, noisy.steps[1].channel.is_unitary_mixture
    ('twirl(amplitude_damping(0.2))', True)
    """
    if not isinstance(noise_model, NoiseModel):
        raise QuantumNATError(f"noise injection needs a tinyqml NoiseModel, got {type(noise_model).__name__}")
    noisy = (noise_model.scaled(scale) if scale != 1 else noise_model).apply(circuit)
    cache: dict[int, ChannelOp] = {}
    steps: list[int | ChannelOp] = []
    for s in noisy.steps:
        if isinstance(s, ChannelOp):
            key = id(s.channel)
            if key not in cache:
                cache[key] = pauli_twirl(s.channel)  # type: ignore[assignment]
            s = ChannelOp(cache[key], s.wires)  # type: ignore[arg-type]
        steps.append(s)
    return NoisyCircuit(noisy.circuit, tuple(steps))


def readout_affine(noise_model: NoiseModel | None, wires: Sequence[int]) -> tuple[Tensor, Tensor]:
    """``(offset, gain)`` per wire such that the ``<Z>`` a measurement reports through the
    readout error is ``offset + gain * <Z>``: ``offset = P(0|1) - P(1|0)``,
    ``gain = 1 - P(0|1) - P(1|0)`` (``0`` and ``1`` without a readout error).

    >>> from tinyqml.noise import NoiseModel, ReadoutError
    >>> off, gain = readout_affine(NoiseModel().with_readout(1, ReadoutError(0.1, 0.05)), [0, 1])
    >>> off.tolist(), gain.tolist()
    ([0.0, 0.05...], [1.0, 0.85])
    """
    errs = [None] * len(wires) if noise_model is None else noise_model.readout_errors(wires)
    off = [0.0 if e is None else e.p0_given_1 - e.p1_given_0 for e in errs]
    gain = [1.0 if e is None else 1.0 - e.p0_given_1 - e.p1_given_0 for e in errs]
    return torch.tensor(off, dtype=torch.float64), torch.tensor(gain, dtype=torch.float64)


def _check_wires(circuit: Circuit, wires: Sequence[int]) -> tuple[int, ...]:
    if not isinstance(circuit, Circuit):
        raise QuantumNATError(f"expected a tinyqml Circuit, got {type(circuit).__name__}")
    try:
        out = tuple(int(w) for w in wires)
    except (TypeError, ValueError):
        raise QuantumNATError(f"wires must be a sequence of integers, got {wires!r}") from None
    if not out or len(set(out)) != len(out) or any(not 0 <= w < circuit.n_wires for w in out):
        raise QuantumNATError(f"wires {out} must be distinct wires of the {circuit.n_wires}-wire circuit "
                              f"(0..{circuit.n_wires - 1})")
    return out


def _pauli_table(ch: Channel) -> tuple[Tensor, Tensor]:
    """(probabilities [K], unitaries [K, d, d]) of a Pauli channel, the identity branch first."""
    d = 2 ** ch.n_wires
    probs = torch.tensor([float((k.conj().T @ k)[0, 0].real) for k in ch.kraus], dtype=torch.float64)
    mats = torch.stack([k / math.sqrt(max(float(p), 1e-300)) for k, p in zip(ch.kraus, probs)])
    eye = torch.eye(d, dtype=mats.dtype)
    ident = [i for i in range(len(mats)) if float((mats[i] - mats[i, 0, 0] * eye).abs().max()) < 1e-12
             and abs(abs(complex(mats[i, 0, 0])) - 1) < 1e-12]
    order = ident[:1] + [i for i in range(len(mats)) if i not in ident[:1]]
    if not ident:  # no identity branch: keep a zero-probability one in front
        probs = torch.cat([torch.zeros(1, dtype=torch.float64), probs])
        mats = torch.cat([eye.unsqueeze(0), mats])
        order = list(range(len(mats)))
    return probs[order], mats[order]


class _PauliSampler:
    """Statevector runs of a circuit with Pauli channels, one independent draw per row and channel.

    All draws of a call come from one ``torch.rand`` on the CPU; only the (rare) rows
    that drew a non-identity Pauli at a channel are touched there, so a call costs about
    one noiseless run plus the errors actually drawn (same distribution as
    :func:`~tinyqml.noise.trajectories.trajectory_expval` with one trajectory per row).
    """

    def __init__(self, noisy: NoisyCircuit) -> None:
        self.noisy = noisy
        tables: dict[int, tuple[Tensor, Tensor]] = {}
        self.channel_steps: list[tuple[int, tuple[int, ...]]] = []  # (table id, wires) per channel
        for st in noisy.steps:
            if isinstance(st, ChannelOp):
                if not st.channel.is_unitary_mixture:
                    raise QuantumNATError(f"noise injection samples Pauli errors; channel {st.channel.name!r} is "
                                          "not a mixture of unitaries (Pauli-twirl it first)")
                tables.setdefault(id(st.channel), _pauli_table(st.channel))
                self.channel_steps.append((id(st.channel), st.wires))
        ids = list(tables)
        self.mats = [tables[i][1] for i in ids]
        index = {i: j for j, i in enumerate(ids)}
        self.table_of = [index[i] for i, _ in self.channel_steps]
        kmax = max((len(tables[i][0]) for i in ids), default=1)
        cdf = torch.full((len(self.channel_steps), max(kmax - 1, 1)), 2.0, dtype=torch.float64)
        for c, (i, _) in enumerate(self.channel_steps):
            p = tables[i][0]
            cdf[c, : len(p) - 1] = torch.cumsum(p, 0)[:-1]
        self.cdf = cdf

    def draw(self, rows: int, generator: torch.Generator | None) -> Tensor:
        """Branch index ``[n_channels, rows]`` (0 = identity)."""
        u = torch.rand(rows, len(self.channel_steps), generator=generator, dtype=torch.float64)
        return (u.T.unsqueeze(-1) >= self.cdf.unsqueeze(1)).sum(-1)

    def states(self, weights: Tensor | None, inputs: Tensor | None, generator: torch.Generator | None,
               dtype: torch.dtype, rows: int | None = None) -> Tensor:
        circ, n = self.noisy.circuit, self.noisy.n_wires
        device = None if weights is None else weights.device
        angles, batched = resolve(circ, weights, inputs, dtype, device)
        b = angles.shape[0] if rows is None else rows
        if rows is not None and angles.shape[0] not in (1, rows):
            raise QuantumNATError(f"rows={rows} does not match the {angles.shape[0]} input rows")
        draws = self.draw(b, generator)
        hits = draws.nonzero()
        counts = torch.bincount(hits[:, 0], minlength=draws.shape[0]).tolist()
        per_channel = torch.split(hits[:, 1], counts)
        prog = QF.compile_circuit(circ)
        psi = torch.zeros(b, 2 ** n, dtype=dtype, device=angles.device)
        psi[:, 0] = 1
        c = 0
        for st in self.noisy.steps:
            if isinstance(st, ChannelOp):
                idx = per_channel[c]
                if idx.numel():
                    mats = self.mats[self.table_of[c]][draws[c, idx]].to(dtype=dtype, device=psi.device)
                    idx = idx.to(psi.device)
                    sub = psi.index_select(0, idx)
                    wires = self.channel_steps[c][1]
                    sub = QK.apply_single(sub, mats, wires[0], n) if len(wires) == 1 else QK.apply_dense(
                        sub, mats, wires, n)
                    psi = psi.index_copy(0, idx, sub)
                c += 1
                continue
            op = circ.ops[st]
            cols = list(prog.slots[st])
            is_b = angles.shape[0] > 1 and any(batched[s] for s in cols)
            p = angles[:, cols] if is_b else angles[:1, cols]
            u = torch.tensor(op.unitary_array(), dtype=dtype, device=angles.device) if op.matrix is not None else None
            psi = QK.apply_gate(psi, op.gate, p, op.wires, n, unitary=u)
        return psi


class NoiseInjection(nn.Module):
    """Per-row noisy ``<Z_w>`` of ``circuit``, sampled from the Pauli-twirled, scaled model.

    Every call draws fresh errors from ``generator`` (its state advances), independently
    for every row of the batch: one trajectory per row through :func:`twirled_circuit`,
    then, with ``readout=True``, the readout error's exact affine effect on ``<Z>``
    (:func:`readout_affine`). The result is differentiable w.r.t. ``weights`` by backprop;
    averaged over many draws it equals the density-matrix expectation under the twirled
    model. ``circuit`` is the circuit as it runs on the device (typically
    :func:`tinyqml.qml.transpile`'s output) and ``wires`` its physical measured wires.

    >>> import torch, tinyqml.qml as tq
    >>> from tinyqml.noise import NoiseModel, BitFlip
    >>> c = tq.CircuitBuilder(1).ry(0, tq.feature(0)).x(0).build()
    >>> inj = NoiseInjection(c, [0], NoiseModel().add("X", BitFlip(0.25)), generator=torch.Generator().manual_seed(0))
    >>> z = inj(None, torch.zeros(4000, 1))          # 4000 rows, each its own draw
    >>> sorted(set(z.flatten().round().tolist())), round(float(z.mean()), 1)    # exact: -(1 - 2 * 0.25)
    ([-1.0, 1.0], -0.5)
    """

    def __init__(self, circuit: Circuit, wires: Sequence[int], noise_model: NoiseModel, scale: float = 1.0,
                 readout: bool = True, generator: torch.Generator | None = None, seed: int = 0) -> None:
        super().__init__()
        self.wires = _check_wires(circuit, wires)
        self.circuit = circuit
        self.noisy = twirled_circuit(circuit, noise_model, scale)
        self.observables = tuple(QM.Z(w) for w in self.wires)
        self._sampler = _PauliSampler(self.noisy)
        model = noise_model.scaled(scale) if scale != 1 else noise_model
        off, gain = readout_affine(model if readout else None, self.wires)
        self.register_buffer("offset", off, persistent=False)
        self.register_buffer("gain", gain, persistent=False)
        self.generator = generator if generator is not None else torch.Generator().manual_seed(seed)

    def forward(self, weights: Tensor | None, inputs: Tensor | None = None, rows: int | None = None) -> Tensor:
        """``[B, len(wires)]`` noisy ``<Z>``; ``rows`` repeats a circuit without batched
        inputs ``rows`` times (independent draws), e.g. to estimate the mean."""
        dtype = torch.complex64 if weights is not None and weights.dtype == torch.float32 else torch.complex128
        psi = self._sampler.states(weights, inputs, self.generator, dtype, rows)
        z = QM.expval(psi, list(self.observables), self.circuit.n_wires)
        return self.offset.to(z.dtype) + self.gain.to(z.dtype) * z

    def extra_repr(self) -> str:
        return f"{self.circuit!r}, wires={self.wires}, channels={self.noisy.n_channels}"


class DensityMatrixNoise(nn.Module):
    """Exact noisy ``<Z_w>`` of ``circuit`` under the (scaled) calibrated model: the
    density-matrix expectation (:func:`tinyqml.noise.expval`), through the readout
    errors with ``readout=True``, differentiable by backprop. No sampling: what sampled
    injection averages to, without the twirl approximation. The same call signature as
    :class:`NoiseInjection`.

    >>> import torch, tinyqml.qml as tq
    >>> from tinyqml.noise import NoiseModel, BitFlip
    >>> c = tq.CircuitBuilder(1).ry(0, tq.feature(0)).x(0).build()
    >>> DensityMatrixNoise(c, [0], NoiseModel().add("X", BitFlip(0.25)))(None, torch.zeros(2, 1))
    tensor([[-0.5000],
            [-0.5000]], dtype=torch.float64)
    """

    def __init__(self, circuit: Circuit, wires: Sequence[int], noise_model: NoiseModel, scale: float = 1.0,
                 readout: bool = True) -> None:
        super().__init__()
        if not isinstance(noise_model, NoiseModel):
            raise QuantumNATError(f"exact noise needs a tinyqml NoiseModel, got {type(noise_model).__name__}")
        self.wires = _check_wires(circuit, wires)
        self.circuit = circuit
        self.noise_model = noise_model.scaled(scale) if scale != 1 else noise_model
        self.noisy = self.noise_model.apply(circuit)
        self.observables = tuple(QM.Z(w) for w in self.wires)
        self.readout = bool(readout)

    def forward(self, weights: Tensor | None, inputs: Tensor | None = None) -> Tensor:
        dtype = torch.complex64 if weights is not None and weights.dtype == torch.float32 else torch.complex128
        return noisy_expval(self.noisy, list(self.observables), None, weights, inputs, dtype=dtype,
                      readout=self.noise_model if self.readout else False)

    def extra_repr(self) -> str:
        return f"{self.circuit!r}, wires={self.wires}, channels={self.noisy.n_channels}"


# --------------------------------------------------------------------------- normalization, quantization


class PostMeasurementNorm(nn.Module):
    """Standardise each column over the batch: ``(z - mean) / (std + eps)``.

    Batch statistics are used in training *and* at inference (QuantumNAT normalizes the
    noisy test batch with its own statistics), so there are no running averages; the
    standard deviation is the population one. Needs at least 2 rows.

    >>> import torch
    >>> z = torch.tensor([[0.1, -0.2], [0.3, -0.6]])
    >>> PostMeasurementNorm()(z).round(decimals=3)
    tensor([[-1.,  1.],
            [ 1., -1.]])
    """

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
            raise QuantumNATError(f"eps must be a finite number >= 0, got {eps!r}")
        self.eps = float(eps)

    def forward(self, z: Tensor) -> Tensor:
        if z.dim() != 2 or z.shape[0] < 2:
            raise QuantumNATError(f"post-measurement normalization needs a batch [B >= 2, k], got "
                                  f"shape {list(z.shape)}")
        mean = z.mean(0, keepdim=True)
        std = z.std(0, unbiased=False, keepdim=True)
        return (z - mean) / (std + self.eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps:g}"


def quantize(z: Tensor, levels: int, low: float = -1.0, high: float = 1.0) -> Tensor:
    """``z`` clamped to ``[low, high]`` and rounded to the nearest of ``levels`` evenly spaced
    values; the gradient is the straight-through one (1 inside the range, 0 outside).

    >>> import torch
    >>> z = torch.tensor([-1.3, -0.3, 0.2, 0.8], requires_grad=True)
    >>> q = quantize(z, levels=5)
    >>> q.detach().tolist()
    [-1.0, -0.5, 0.0, 1.0]
    >>> q.sum().backward(); z.grad.tolist()
    [0.0, 1.0, 1.0, 1.0]
    """
    if not isinstance(levels, int) or isinstance(levels, bool) or levels < 2:
        raise QuantumNATError(f"quantization needs an integer number of levels >= 2, got {levels!r}")
    low, high = _check_range((low, high))
    step = (high - low) / (levels - 1)
    c = z.clamp(low, high)
    q = torch.round((c - low) / step) * step + low
    return c + (q - c).detach()


class PostMeasurementQuant(nn.Module):
    """:func:`quantize` as a module (``levels`` values on ``[low, high]``, straight-through gradient).

    >>> import torch
    >>> PostMeasurementQuant(3, -2.0, 2.0)(torch.tensor([[-0.9, 1.1, 3.0]]))
    tensor([[0., 2., 2.]])
    """

    def __init__(self, levels: int = 5, low: float = -1.0, high: float = 1.0) -> None:
        super().__init__()
        if not isinstance(levels, int) or isinstance(levels, bool) or levels < 2:
            raise QuantumNATError(f"quantization needs an integer number of levels >= 2, got {levels!r}")
        self.levels = levels
        self.low, self.high = _check_range((low, high))

    def forward(self, z: Tensor) -> Tensor:
        return quantize(z, self.levels, self.low, self.high)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, range=({self.low:g}, {self.high:g})"


# --------------------------------------------------------------------------- the classifier


class QuantumNATClassifier(nn.Module):
    """``logit_scale * quant(norm(<Z_w>))`` of a circuit, one logit per wire of ``wires``.

    ``<Z_w>`` comes from the noiseless simulator (:class:`~tinyqml.qml.QuantumLayer`,
    adjoint gradients), except in training mode with ``config.injection``, where
    :class:`NoiseInjection` samples it under ``noise_model`` (needed then) scaled by
    ``config.injection_scale`` (with ``injection_method="exact"``, :class:`DensityMatrixNoise`
    computes its exact noisy value instead). Normalization and quantization follow when switched on.
    For a device, pass the transpiled circuit and ``layout.final`` as ``wires``;
    :meth:`head` maps expectations measured elsewhere (a noisy simulator, hardware) to
    logits the same way.

    Args:
        circuit: the circuit (input features and trainable weights).
        wires: measured wires, one class each.
        config: the switches (:data:`PRESETS` has the five standard ones).
        noise_model: the calibrated model injection samples from.
        seed: seed of the initial weights (uniform in ``[0, 2π)``) and of the training noise.
        generator: draws of the injected noise and training shot noise (default: a
            generator seeded with ``seed``).

    >>> import torch, tinyqml.qml as tq
    >>> c = tq.CircuitBuilder(2).ry(0, tq.feature(0)).cx(0, 1).ry(1, tq.weight(0)).build()
    >>> m = QuantumNATClassifier(c, [0, 1], QuantumNATConfig(normalization=True), seed=1)
    >>> with torch.no_grad():
    ...     logits = m.eval()(torch.tensor([[0.1], [2.0]], dtype=torch.float64))
    >>> logits.abs().round(decimals=3)              # two rows normalize to -1 and +1 per column
    tensor([[5., 5.],
            [5., 5.]], dtype=torch.float64)
    """

    def __init__(self, circuit: Circuit, wires: Sequence[int], config: QuantumNATConfig = QuantumNATConfig(),
                 noise_model: NoiseModel | None = None, seed: int = 0,
                 generator: torch.Generator | None = None, diff_method: str = "adjoint") -> None:
        super().__init__()
        if not isinstance(config, QuantumNATConfig):
            raise QuantumNATError(f"config must be a QuantumNATConfig, got {type(config).__name__}")
        self.wires = _check_wires(circuit, wires)
        self.config = config
        self.quantum = QuantumLayer(circuit, [QM.Z(w) for w in self.wires], diff_method=diff_method, seed=seed)
        self.generator = generator if generator is not None else torch.Generator().manual_seed(seed)
        self.injection: NoiseInjection | DensityMatrixNoise | None = None
        if config.injection:
            if noise_model is None:
                raise QuantumNATError("noise injection (config.injection=True) needs the calibrated noise_model")
            if config.injection_method == "exact":
                self.injection = DensityMatrixNoise(circuit, self.wires, noise_model, config.injection_scale,
                                                    config.inject_readout)
            else:
                self.injection = NoiseInjection(circuit, self.wires, noise_model, config.injection_scale,
                                                config.inject_readout, self.generator)
        self.norm = PostMeasurementNorm(config.norm_eps) if config.normalization else None
        low, high = config.grid
        self.quant = PostMeasurementQuant(config.quant_levels, low, high) if config.quantization else None

    @property
    def circuit(self) -> Circuit:
        return self.quantum.circuit

    @property
    def weights(self) -> nn.Parameter:
        return self.quantum.weights

    def expectations(self, x: Tensor | None) -> Tensor:
        """``<Z_w>`` ``[B, k]``: in training mode with injected noise and shot noise (when
        switched on), else noiseless."""
        if not self.training:
            return self.quantum(x)
        if self.injection is not None:
            z = self.injection(self.weights, None if x is None else x.to(self.weights.dtype))
        else:
            z = self.quantum(x)
        if self.config.shots is not None:
            std = ((1 - z.detach() ** 2).clamp_min(0) / self.config.shots).sqrt()
            z = z + std * torch.randn(z.shape, generator=self.generator, dtype=z.dtype).to(z.device)
        return z

    def head(self, z: Tensor) -> Tensor:
        """Logits from measured expectations ``z [B, k]``: normalize, quantize, scale."""
        if self.norm is not None:
            z = self.norm(z)
        if self.quant is not None:
            z = self.quant(z)
        return self.config.logit_scale * z

    def forward(self, x: Tensor | None) -> Tensor:
        return self.head(self.expectations(x))

    def extra_repr(self) -> str:
        return f"{self.config.label}, wires={self.wires}"


def accuracy(logits: Tensor, y: Tensor) -> float:
    """Fraction of rows whose arg-max logit is the label, ties split evenly: a row whose
    largest logit is shared by ``m`` classes, the label among them, counts ``1/m`` (the
    expected accuracy under random tie-breaking; quantized logits tie often).

    >>> import torch
    >>> accuracy(torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.5, 0.5]]), torch.tensor([1, 1, 0]))
    0.5
    """
    if logits.dim() != 2 or y.shape != logits.shape[:1]:
        raise QuantumNATError(f"accuracy needs logits [B, C] and labels [B], got {list(logits.shape)} and "
                              f"{list(y.shape)}")
    top = logits == logits.max(dim=1, keepdim=True).values
    hit = top.gather(1, y.long().unsqueeze(1))[:, 0].double()
    return float((hit / top.sum(1).double()).mean())


def fit(model: nn.Module, x: Tensor, y: Tensor, epochs: int = 10, batch_size: int = 32, lr: float = 0.05,
        seed: int = 0, on_epoch: Callable[[int, float], None] | None = None) -> list[float]:
    """Train ``model`` (logits) on ``(x, y)`` with cross-entropy, Adam and a cosine decay.

    Batches come from a permutation drawn with a generator seeded by ``seed``; a
    trailing batch of a single row is skipped (normalization needs two). Returns the
    mean training loss of each epoch; ``on_epoch(epoch, loss)`` is called after each.
    The model is left in eval mode.

    >>> import torch, tinyqml.qml as tq
    >>> c = tq.CircuitBuilder(2).ry(0, tq.feature(0)).cx(0, 1).ry(0, tq.weight(0)).ry(1, tq.weight(1)).build()
    >>> x = torch.linspace(0, 3, 16, dtype=torch.float64).unsqueeze(1); y = (x[:, 0] > 1.5).long()
    >>> losses = fit(QuantumNATClassifier(c, [0, 1]), x, y, epochs=5, batch_size=8, lr=0.2)
    >>> len(losses), losses[-1] < losses[0]
    (5, True)
    """
    for name, v in (("epochs", epochs), ("batch_size", batch_size)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise QuantumNATError(f"{name} must be a positive integer, got {v!r}")
    if len(x) != len(y) or len(y) < 2:
        raise QuantumNATError(f"fit needs as many labels as rows (at least 2), got {len(x)} rows, {len(y)} labels")
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * max(1, len(y) // batch_size + (len(y) % batch_size > 1))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    gen = torch.Generator().manual_seed(seed)
    history = []
    model.train()
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(y), generator=gen)
        total, seen = 0.0, 0
        for lo in range(0, len(order), batch_size):
            idx = order[lo:lo + batch_size]
            if len(idx) < 2:
                continue
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        history.append(total / seen)
        if on_epoch is not None:
            on_epoch(epoch, history[-1])
    model.eval()
    return history
