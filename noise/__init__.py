"""tinyqml.noise: calibrated noise models, density matrices, trajectories, noise-aware training.

>>> import tinyqml.qml as tq
>>> from tinyqml.noise import NoiseModel, AmplitudeDamping, probs
>>> c = tq.CircuitBuilder(1).x(0).build()
>>> probs(c, NoiseModel().add("X", AmplitudeDamping(0.25))).round(decimals=6)
tensor([[0.2500, 0.7500]], dtype=torch.float64)
"""

from tinyqml.noise.channels import (
    Channel,
    ReadoutError,
    amplitude_damping,
    apply_channel,
    average_gate_fidelity,
    bit_flip,
    compose,
    depolarizing,
    kraus,
    pauli,
    pauli_twirl,
    phase_damping,
    phase_flip,
    tensor,
    thermal_relaxation,
)
from tinyqml.noise.errors import NoiseModelError, NoiseParameterError, NotCPTPError
from tinyqml.noise.measure import apply_readout, mitigate_readout
from tinyqml.noise.model import ChannelOp, NoiseModel, NoiseRule, NoisyCircuit
from tinyqml.noise.simulate import counts, density_matrix, expval, probs, sample
from tinyqml.noise.trajectories import trajectory_expval, trajectory_probs, trajectory_states
from tinyqml.noise.specs import (
    AmplitudeDamping,
    BitFlip,
    Depolarizing,
    DeviceGateError,
    ErrorSpec,
    KrausError,
    PauliError,
    PhaseDamping,
    PhaseFlip,
    ThermalRelaxation,
)

__all__ = [
    "Channel", "ReadoutError", "amplitude_damping", "apply_channel", "average_gate_fidelity", "bit_flip",
    "compose", "depolarizing", "kraus", "pauli", "phase_damping", "phase_flip", "tensor", "thermal_relaxation",
    "NoiseModelError", "NoiseParameterError", "NotCPTPError", "apply_readout", "mitigate_readout",
    "ChannelOp", "NoiseModel", "NoiseRule", "NoisyCircuit", "counts", "density_matrix", "expval", "probs",
    "sample", "AmplitudeDamping", "BitFlip", "Depolarizing", "DeviceGateError", "ErrorSpec", "KrausError",
    "PauliError", "PhaseDamping", "PhaseFlip", "ThermalRelaxation", "pauli_twirl",
    "trajectory_expval", "trajectory_probs", "trajectory_states",
]
