"""The efficiency predictors (tinyqml.classical.efficiency): the analytic peak SRAM equals what the code
generator reports for the real pipeline's int8 model (default and custom supernets: no first block, a
stride-2 stem, expand ratio 1, odd resolutions with explicit PADs), the cost model's names, and the named
errors for a constraint on a missing or misspelled cost."""

from __future__ import annotations

import pytest
import torch

from tinyqml.classical.arch import (
    Arch,
    NASError,
    SupernetConfig,
    layers,
    macs,
    params,
    sample_arch,
    to_mobilenet_config,
)
from tinyqml.classical.codegen import generate
from tinyqml.classical.convert import quantize_model
from tinyqml.classical.efficiency import efficiency_costs, peak_sram, sram_plan
from tinyqml.classical.latency_table import LatencyTable, layer_key, space_layers
from tinyqml.classical.models import TinyMobileNetV2
from tinyqml.classical.tflite_export import to_tflite
from tinyqml.search import Constraint, UnknownConstraintError

DEFAULT = SupernetConfig()
#: no fixed first block, a stride-2 stem, a stride-1 first stage (residual from its first block), expand 1
CUSTOM = SupernetConfig(stem=8, first=0, stages=((8, 1), (12, 2)), depths=(1, 2), expands=(1, 2, 6),
                        kernels=(3, 5), resolutions=(7, 10, 16), stem_stride=2, in_channels=3, n_classes=5)


def _archs(config: SupernetConfig, seed: int, n: int = 12) -> list[Arch]:
    gen = torch.Generator().manual_seed(seed)
    return [config.smallest(), config.largest()] + [sample_arch(config, gen) for _ in range(n)]


def _codegen(arch: Arch, config: SupernetConfig, out_dir) -> object:
    """The real pipeline: TinyMobileNetV2 -> quantize_model -> to_tflite -> generate."""
    net = TinyMobileNetV2(to_mobilenet_config(arch, config), seed=0).eval()
    calib = torch.rand(8, config.in_channels, arch.resolution, arch.resolution,
                       generator=torch.Generator().manual_seed(1))
    return generate(to_tflite(quantize_model(net, calib).qgraph), out_dir)


@pytest.mark.parametrize("config, seed", [(DEFAULT, 0), (CUSTOM, 1)], ids=["default", "custom"])
def test_peak_sram_equals_the_code_generators(config: SupernetConfig, seed: int, tmp_path) -> None:
    for i, arch in enumerate(_archs(config, seed)):
        result = _codegen(arch, config, tmp_path / f"a{i}")
        plan = sram_plan(arch, config)
        where = arch.describe(config)
        assert peak_sram(arch, config) == result.peak_sram_bytes, where
        assert (plan.arena_bytes, plan.scratch_bytes) == (result.arena_bytes, result.scratch_bytes), where
        assert plan.steps == len(result.program.steps), where


def test_inactive_positions_do_not_matter() -> None:
    small = DEFAULT.smallest()
    active = {p for _, _, p in small.active(DEFAULT)}
    other = Arch(small.resolution, small.depths,
                 tuple(small.kernels[p] if p in active else 7 for p in range(DEFAULT.n_positions)),
                 tuple(small.expands[p] if p in active else 4 for p in range(DEFAULT.n_positions)))
    assert other != small and other.canonical(DEFAULT) == small
    assert peak_sram(other, DEFAULT) == peak_sram(small, DEFAULT)


def test_bigger_networks_need_more_sram() -> None:
    assert peak_sram(DEFAULT.smallest(), DEFAULT) < peak_sram(DEFAULT.largest(), DEFAULT)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(NASError, match="SupernetConfig"):
        peak_sram(DEFAULT.smallest(), "default")
    with pytest.raises(NASError, match="Arch"):
        peak_sram({"resolution": 12}, DEFAULT)
    with pytest.raises(NASError, match="resolution"):
        peak_sram(Arch(13, (1, 1, 1), (3,) * 9, (2,) * 9), DEFAULT)
    with pytest.raises(NASError, match="LatencyTable"):
        efficiency_costs(DEFAULT, latency={"conv": 1.0})
    with pytest.raises(NASError, match="SupernetConfig"):
        efficiency_costs(None)


def test_cost_model_names_and_values() -> None:
    costs = efficiency_costs(DEFAULT)
    assert costs.names == ("macs", "params", "peak_sram")
    arch = _archs(DEFAULT, 3, 1)[-1]
    expected = {"macs": macs(arch, DEFAULT), "params": params(arch, DEFAULT), "peak_sram": peak_sram(arch, DEFAULT)}
    assert costs.evaluate(arch) == expected
    assert costs.evaluate(arch.params()) == expected  # a search-space configuration works too
    limits = [Constraint("peak_sram", max=expected["peak_sram"]), Constraint("macs", max=expected["macs"] - 1)]
    assert costs.violations(arch, limits) == (0.0, 1.0)


def test_latency_cost_comes_with_a_table() -> None:
    table = LatencyTable({layer_key(layer): 2.0 for layer in space_layers(DEFAULT)})
    costs = efficiency_costs(DEFAULT, latency=table)
    assert costs.names == ("latency", "macs", "params", "peak_sram")
    arch = DEFAULT.largest()
    assert costs.cost("latency", arch) == pytest.approx(2.0 * len(layers(arch, DEFAULT)) / 1000)
    assert costs.feasible(arch, [Constraint("latency", max=1.0)])


def test_latency_constraint_without_a_table_is_refused() -> None:
    costs = efficiency_costs(DEFAULT)
    with pytest.raises(UnknownConstraintError, match="'latency'.*accepted: macs, params, peak_sram"):
        costs.check([Constraint("latency", max=5.0)])
    with pytest.raises(UnknownConstraintError, match="latency"):
        costs.feasible(DEFAULT.smallest(), [Constraint("latency", max=5.0)])


def test_misspelled_cost_is_refused_with_a_hint() -> None:
    with pytest.raises(UnknownConstraintError, match="did you mean 'peak_sram'"):
        efficiency_costs(DEFAULT).check([Constraint("peak_sramm", max=1e5)])
