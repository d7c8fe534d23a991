"""Tests of the classical half of the main job (:mod:`tinyqml.demo.classical`)."""

from __future__ import annotations

import numpy as np
import pytest

from tinyqml.demo.classical import ClassicalDemoConfig, tflm_latency_us
from tinyqml.demo.errors import DemoConfigError


def test_c_matches_tflite_micro_and_the_accuracies_recompute(fast_demo) -> None:  # type: ignore[no-untyped-def]
    from tinyqml.classical.convert import to_nhwc
    from tinyqml.classical.data import DigitsConfig, load_digits_data
    from tinyqml.classical.tflite_export import TFLMRunner
    from tinyqml.classical.quantize import TensorQuant
    from tinyqml.classical.tflite_reader import read_tflite

    c = fast_demo[0].classical
    assert c.bit_exact == c.compared > 0
    st = {s.name: s for s in c.stages}
    assert st["generated C (host build)"].accuracy == st["TFLite Micro interpreter"].accuracy
    data = load_digits_data(DigitsConfig(seed=c.config.seed))
    blob = c.tflite_path.read_bytes()
    graph = read_tflite(blob)
    inp = graph.tensor(graph.inputs[0])  # the file's own input quantization, TFLite's QUANTIZE rounding
    xq = TensorQuant(inp.scales[0], inp.zero_points[0]).quantize(np.asarray(to_nhwc(data.x_test)))
    acc = 100 * float((TFLMRunner(blob)(xq).reshape(len(xq), -1).argmax(1) == data.y_test.numpy()).mean())
    assert acc == pytest.approx(st["TFLite Micro interpreter"].accuracy)
    assert st["channel-pruned fp32"].macs < st["fp32 CNN"].macs and len(c.widths_after) == 3
    consts = [t.data for t in graph.tensors if t.data is not None]  # int8 rows: the file's constants
    assert st["int8 (tinyqml engine)"].params == sum(x.size for x in consts) < st["channel-pruned fp32"].params
    assert st["int8 (tinyqml engine)"].size_bytes == sum(x.nbytes for x in consts)
    assert st["TFLite Micro interpreter"].size_bytes == len(blob) and c.c_const_bytes > 0
    assert c.c_peak_sram > 0 and c.tflm_arena > 0 and c.c_latency_us > 0 and c.tflm_latency_us > 0
    if c.m4 is not None:
        assert c.m4["equal_to_host"]


def test_tflm_latency_is_positive_and_finite(fast_demo) -> None:  # type: ignore[no-untyped-def]
    from tinyqml.classical.tflite_reader import read_tflite

    c = fast_demo[0].classical
    blob = c.tflite_path.read_bytes()
    graph = read_tflite(blob)
    shape = graph.tensor(graph.inputs[0]).shape
    us = tflm_latency_us(blob, np.zeros((1, *shape[1:]), np.int8), repeats=2, min_time_s=0.001)
    assert 0 < us < 1e6


@pytest.mark.parametrize("kwargs, message", [({"widths": (8, 8)}, "widths must be 3 channel counts"),
                                             ({"prune_ratio": 1.0}, "prune_ratio must be in"),
                                             ({"epochs": 0}, "epochs must be an integer >= 1"),
                                             ({"seed": -1}, "seed must be an integer in 0..")])
def test_config_rejects_bad_values(kwargs, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DemoConfigError, match=message):
        ClassicalDemoConfig(**kwargs)
