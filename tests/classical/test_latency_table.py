"""The measured latency table (tinyqml.classical.latency_table): the distinct layers of a space, one
int8 model per layer that the code generator compiles and TFLite Micro accepts, a small table measured on
the host (every layer present and positive, predictions are sums, JSON round trip, a missing layer named),
whole sub-networks timed against it, and the named errors (options, files, a missing compiler). No
timing is asserted beyond being positive."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from tinyqml.classical.arch import Arch, Layer, NASError, SupernetConfig, layers, sample_arch
from tinyqml.classical.codegen import lower
from tinyqml.classical.latency_table import (
    FORMAT,
    LatencyCheck,
    LatencyOptions,
    LatencyTable,
    LatencyValidation,
    MissingLatencyError,
    describe_layer,
    layer_key,
    layer_model,
    measure_latency_table,
    space_layers,
    time_models,
    validate_latency,
)
from tinyqml.classical.mcu import HostBuild, ToolchainError
from tinyqml.classical.tflite_export import operator_names

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

#: a tiny space: a first block, a stride-1 stage with residuals, a stride-2 stage (explicit PADs)
TINY = SupernetConfig(stem=4, first=4, stages=((4, 1), (8, 2)), depths=(1, 2), expands=(2, 3), kernels=(3, 5),
                      resolutions=(6, 8), n_classes=3)
ARCHS = (TINY.smallest(), Arch(8, (2, 1), (5, 3, 3, 3), (3, 2, 2, 2)))
FAST = LatencyOptions(repeats=3, min_time_s=2e-4, warmup_s=0.005)


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> LatencyTable:
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc")
    return measure_latency_table(TINY, ARCHS, FAST, tmp_path_factory.mktemp("lut"))


# -- layers and their models (no compiler) --------------------------------------------------------------------

def test_space_layers_are_distinct_and_cover_every_architecture() -> None:
    keys = space_layers(TINY)
    assert len(keys) == len(set(keys)) and all(k.block == -1 for k in keys)
    assert {k.kind for k in keys} == {"conv", "depthwise", "add", "mean", "fc"}
    gen = torch.Generator().manual_seed(0)
    for _ in range(30):
        arch = sample_arch(TINY, gen)
        assert {layer_key(layer) for layer in layers(arch, TINY)} <= set(keys)
    assert set(space_layers(TINY, ARCHS)) < set(keys)


def test_default_space_has_a_few_hundred_layers() -> None:
    assert 100 < len(space_layers(SupernetConfig())) < 600


def test_layer_key_drops_the_block() -> None:
    layer = layers(TINY.smallest(), TINY)[3]
    assert layer.block >= 0 and layer_key(layer) == Layer(layer.kind, layer.in_shape, layer.out_shape,
                                                          layer.kernel, layer.stride, layer.relu6)
    assert describe_layer(layer) == describe_layer(layer_key(layer))
    with pytest.raises(NASError, match="Layer"):
        layer_key("conv")


@pytest.mark.parametrize("layer, ops", [
    (Layer("conv", (8, 8, 1), (8, 8, 4), 3, 1, True), ["CONV_2D"]),
    (Layer("conv", (8, 8, 1), (4, 4, 4), 3, 2, True), ["PAD", "CONV_2D"]),
    (Layer("conv", (8, 8, 4), (8, 8, 12), 1, 1, False), ["CONV_2D"]),
    (Layer("depthwise", (8, 8, 8), (4, 4, 8), 3, 2, True), ["PAD", "DEPTHWISE_CONV_2D"]),
    (Layer("depthwise", (7, 7, 8), (4, 4, 8), 5, 2, True), ["DEPTHWISE_CONV_2D"]),
    (Layer("add", (4, 4, 8), (4, 4, 8)), ["ADD"]),
    (Layer("mean", (3, 3, 8), (1, 1, 8)), ["AVERAGE_POOL_2D", "RESHAPE"]),
    (Layer("fc", (1, 1, 8), (1, 1, 3)), ["FULLY_CONNECTED"]),
], ids=lambda v: describe_layer(v) if isinstance(v, Layer) else None)
def test_layer_models_follow_the_exporter_and_compile(layer: Layer, ops: list[str]) -> None:
    blob = layer_model(layer, seed=3)
    assert operator_names(blob) == ops
    assert layer_model(layer, seed=3) == blob  # seeded
    program = lower(blob)  # the code generator accepts its scales and shapes
    out = program.model.tensors[program.outputs[0]]
    assert int(np.prod(out.shape)) == int(np.prod(layer.out_shape))


def test_layer_models_run_on_tflite_micro() -> None:
    pytest.importorskip("tflite_micro")
    from tinyqml.classical.tflite_export import TFLMRunner

    for key in space_layers(TINY, ARCHS[:1]):
        runner = TFLMRunner(layer_model(key))
        assert runner.n_inputs == (2 if key.kind == "add" else 1)


# -- the table object (no compiler) ----------------------------------------------------------------------------

def _unit_table() -> LatencyTable:
    return LatencyTable({k: float(i + 1) for i, k in enumerate(space_layers(TINY))}, {"cc": "none"})


def test_predict_sums_microseconds_into_milliseconds() -> None:
    t = _unit_table()
    arch = ARCHS[1]
    assert t.predict(arch, TINY) == pytest.approx(sum(t.latency_us(layer) for layer in layers(arch, TINY)) / 1000)
    assert len(t) == len(space_layers(TINY)) and layers(arch, TINY)[0] in t and "conv" not in t


def test_json_round_trip_and_files(tmp_path) -> None:
    t = _unit_table()
    again = LatencyTable.from_json(t.to_json())
    assert again == t and again.info == t.info
    data = json.loads(t.to_json())
    assert data["format"] == FORMAT and data["unit"] == "us" and len(data["entries"]) == len(t)
    path = t.save(tmp_path / "sub" / "lut.json")
    assert LatencyTable.load(path) == t


def test_missing_layer_is_named_with_a_remedy() -> None:
    keys = space_layers(TINY, ARCHS[:1])
    t = LatencyTable({k: 1.0 for k in keys})
    arch = ARCHS[1]
    lacking = t.missing(arch, TINY)
    assert lacking and all(k not in t for k in lacking)
    with pytest.raises(MissingLatencyError, match=r"no entry for (conv|depthwise|add|mean|fc) .*measure_latency_table"):
        t.predict(arch, TINY)
    full = t.merged(LatencyTable({k: 2.0 for k in lacking}))
    assert full.missing(arch, TINY) == () and full.predict(arch, TINY) > 0


def test_bad_tables_and_options_are_refused(tmp_path) -> None:
    key = space_layers(TINY)[0]
    for bad in (-1.0, float("nan"), "fast", True):
        with pytest.raises(NASError, match="microseconds"):
            LatencyTable({key: bad})
    with pytest.raises(NASError, match="invalid JSON"):
        LatencyTable.from_json("{")
    with pytest.raises(NASError, match=FORMAT):
        LatencyTable.from_json(json.dumps({"format": "other", "version": 1}))
    with pytest.raises(NASError, match="in_shape"):
        LatencyTable.from_json(json.dumps({"format": FORMAT, "version": 1, "entries": [{"kind": "conv", "us": 1}]}))
    for kwargs in ({"repeats": 0}, {"min_time_s": 0}, {"warmup_s": -1.0}, {"jobs": 0}, {"build": "gcc"},
                   {"per_program": 0}, {"timeout": float("inf")}):
        with pytest.raises(NASError, match="LatencyOptions"):
            LatencyOptions(**kwargs)


def test_validation_statistics() -> None:
    checks = (LatencyCheck(ARCHS[0], 1.0, 2.0), LatencyCheck(ARCHS[1], 3.0, 3.0),
              LatencyCheck(TINY.largest(), 4.0, 5.0))
    v = LatencyValidation(checks)
    assert v.relative_errors == (-0.5, 0.0, -0.2)
    assert v.mean_abs_relative_error == pytest.approx(0.7 / 3)
    assert v.spearman == pytest.approx(1.0)
    assert np.isnan(LatencyValidation(checks[:1]).spearman)


def test_a_missing_compiler_is_a_toolchain_error() -> None:
    opts = LatencyOptions(build=HostBuild(cc="tinyqml-no-such-cc"))
    with pytest.raises(ToolchainError, match="tinyqml-no-such-cc"):
        time_models([layer_model(space_layers(TINY)[0])], opts)
    with pytest.raises(NASError, match="at least one"):
        time_models([], opts)


# -- measured on the host -------------------------------------------------------------------------------------

@needs_gcc
def test_measured_table_has_every_layer(table: LatencyTable) -> None:
    keys = space_layers(TINY, ARCHS)
    assert set(table.entries) == set(keys)
    assert all(us > 0 and np.isfinite(us) for us in table.entries.values())
    assert table.info["cc"] == "gcc" and table.info["repeats"] == FAST.repeats and "-O2" in table.info["flags"]
    for arch in ARCHS:
        assert table.missing(arch, TINY) == ()
        expected = sum(table.entries[layer_key(layer)] for layer in layers(arch, TINY)) / 1000
        assert table.predict(arch, TINY) == pytest.approx(expected)


@needs_gcc
def test_measured_table_round_trips(table: LatencyTable, tmp_path) -> None:
    again = LatencyTable.load(table.save(tmp_path / "lut.json"))
    assert again == table
    assert again.predict(ARCHS[1], TINY) == table.predict(ARCHS[1], TINY)
    with pytest.raises(MissingLatencyError, match="no entry"):
        table.predict(TINY.largest(), TINY)


@needs_gcc
def test_whole_subnetworks_against_the_table(table: LatencyTable, tmp_path) -> None:
    result = validate_latency(table, ARCHS, TINY, FAST, tmp_path)
    assert [c.arch for c in result.checks] == list(ARCHS)
    for check in result.checks:
        assert check.measured_ms > 0 and check.predicted_ms == table.predict(check.arch, TINY)
        assert np.isfinite(check.relative_error)
    small, big = result.checks  # the second network has about four times the MACs of the smallest
    assert big.predicted_ms > small.predicted_ms and big.measured_ms > small.measured_ms
    calibrated = table.calibrated(result)
    p = np.array([c.predicted_ms for c in result.checks]) * calibrated.scale
    m = np.array([c.measured_ms for c in result.checks])
    assert calibrated.scale > 0 and np.sum((p - m) ** 2) <= np.sum((p / calibrated.scale - m) ** 2) + 1e-12
    assert calibrated.predict(big.arch, TINY) == pytest.approx(calibrated.scale * big.predicted_ms)
    assert LatencyTable.from_json(calibrated.to_json()).scale == calibrated.scale


@needs_gcc
def test_timings_come_in_model_order_across_programs(tmp_path) -> None:
    keys = space_layers(TINY, ARCHS[:1])[:5]
    opts = LatencyOptions(repeats=2, min_time_s=1e-4, warmup_s=0.0, per_program=2)
    timings = time_models([layer_model(k) for k in keys], opts, tmp_path)
    assert len(timings) == len(keys) and len(list(tmp_path.glob("program*"))) == 3
    assert all(len(t.repeats_us) == 2 and t.iters >= 1 and t.us > 0 for t in timings)


@needs_gcc
def test_layer_models_are_bit_exact_with_tflite_micro(tmp_path) -> None:
    pytest.importorskip("tflite_micro")
    from tinyqml.classical.verify import VerifyModel, random_samples, verify_models

    blobs = [layer_model(k, i) for i, k in enumerate(space_layers(TINY, ARCHS))]
    models = [VerifyModel(b, random_samples(b, np.random.default_rng(i), 2)) for i, b in enumerate(blobs)]
    report = verify_models(models, tmp_path)
    assert report.ok, report.failure_report()
