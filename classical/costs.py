"""Named cost functions of small nets for the search engine: MACs, parameters, peak SRAM, latency.

Costs are measured by one forward pass of an example input through the net with hooks on
its leaf modules. MACs count convolutions and linear layers; ``peak_sram`` is the largest
``input + output`` activation size of any leaf layer in bytes (MCUNet's per-layer
activation peak, ``bytes_per_element=1`` for int8); ``latency`` is an analytic estimate,
``MACs / macs_per_second`` in milliseconds, from a frozen :class:`LatencyModel`.

>>> import torch
>>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 10))
>>> costs = net_costs(torch.zeros(1, 1, 8, 8))
>>> costs.evaluate(net)
{'latency': 0.0162..., 'macs': 2736.0, 'params': 1490.0, 'peak_sram': 288.0}
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tinyqml.search import CostModel, SearchError

__all__ = ["LatencyModel", "NetProfile", "profile_net", "net_costs"]


@dataclass(frozen=True)
class LatencyModel:
    """Throughput of the target: ``macs_per_second`` (default: a Cortex-M4 at 168 MHz doing one
    multiply-accumulate per cycle)."""

    macs_per_second: float = 168e6

    def __post_init__(self) -> None:
        if not isinstance(self.macs_per_second, (int, float)) or self.macs_per_second <= 0:
            raise SearchError(f"macs_per_second must be a positive number, got {self.macs_per_second!r}")


@dataclass(frozen=True)
class NetProfile:
    macs: int
    params: int
    peak_sram: int


def _macs(module: nn.Module, out: torch.Tensor) -> int:
    if isinstance(module, nn.Conv2d | nn.Conv1d):
        k = module.weight[0].numel()  # in_channels / groups * kernel elements
        return int(out.numel() * k)
    if isinstance(module, nn.Linear):
        return int(out.numel() * module.in_features)
    return 0


def profile_net(net: nn.Module, example: torch.Tensor, bytes_per_element: int = 1) -> NetProfile:
    """MACs, parameter count and per-layer activation peak (bytes) of ``net`` on ``example``."""
    if not isinstance(net, nn.Module):
        raise SearchError(f"net costs measure an nn.Module, got {type(net).__name__}")
    stats = {"macs": 0, "peak": 0}

    def hook(module: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        if not isinstance(out, torch.Tensor):
            return
        stats["macs"] += _macs(module, out)
        size = sum(t.numel() for t in inputs if isinstance(t, torch.Tensor)) + out.numel()
        stats["peak"] = max(stats["peak"], size * bytes_per_element)

    leaves = [m for m in net.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            net(example)
    finally:
        for h in handles:
            h.remove()
    params = sum(p.numel() for p in net.parameters())
    return NetProfile(stats["macs"], params, stats["peak"])


def net_costs(example: torch.Tensor, bytes_per_element: int = 1,
              latency: LatencyModel = LatencyModel()) -> CostModel:
    """``macs``, ``params``, ``peak_sram`` (bytes) and ``latency`` (ms) of a net on ``example``."""
    def prof(net: nn.Module) -> NetProfile:
        return profile_net(net, example, bytes_per_element)

    return CostModel({
        "macs": lambda net: prof(net).macs,
        "params": lambda net: prof(net).params,
        "peak_sram": lambda net: prof(net).peak_sram,
        "latency": lambda net: 1e3 * prof(net).macs / latency.macs_per_second,
    })
