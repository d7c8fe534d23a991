"""TFLite export: the .tflite file runs on the real TFLite Micro interpreter and gives, bit for bit,
the int8 outputs of tinyqml's integer engine (run_int8)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tinyqml.classical import int8 as int8_engine
from tinyqml.classical.convert import Int8Model, quantize_model, to_nhwc
from tinyqml.classical.errors import CompressionError, ExportError
from tinyqml.classical.fixedpoint import (
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    round_half_away,
)
from tinyqml.classical.graph import Activation, FullyConnected, Graph
from tinyqml.classical.int8 import run_int8, run_int8_all
from tinyqml.classical.quantize import QuantizedGraph, QuantizedNode, TensorQuant
from tinyqml.classical.tflite_export import (
    TFLiteOptions,
    TFLMRunner,
    as_qgraph,
    export_tflite,
    operator_names,
    run_tflm,
    tflite_padding,
    to_tflite,
)


def _randomize_bn(model: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(c, generator=g) * 2 + 0.2)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.3)
    return model.eval()


def _cbr(c_in: int, c_out: int, k: int = 3, stride: int = 1, padding: int = 1, act: type = nn.ReLU,
         groups: int = 1) -> list[nn.Module]:
    layers = [nn.Conv2d(c_in, c_out, k, stride, padding, groups=groups, bias=False), nn.BatchNorm2d(c_out)]
    return layers + ([act()] if act is not None else [])


def cnn() -> nn.Module:
    return nn.Sequential(*_cbr(3, 8), nn.MaxPool2d(2), *_cbr(8, 16), nn.Flatten(), nn.Linear(16 * 4 * 4, 24),
                         nn.ReLU(), nn.Linear(24, 10))


def strided() -> nn.Module:
    # 10x10 -> stride 2, padding 1 is not TF's SAME (needs a PAD op); 5x5 -> stride 2, padding 1 is SAME
    return nn.Sequential(*_cbr(3, 8, stride=2), *_cbr(8, 16, stride=2, act=nn.ReLU6), nn.Flatten(),
                         nn.Linear(16 * 3 * 3, 10))


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, expand: int = 3) -> None:
        super().__init__()
        hidden = c_in * expand
        self.residual = stride == 1 and c_in == c_out
        self.body = nn.Sequential(*_cbr(c_in, hidden, 1, 1, 0, nn.ReLU6),
                                  *_cbr(hidden, hidden, 3, stride, 1, nn.ReLU6, groups=hidden),
                                  *_cbr(hidden, c_out, 1, 1, 0, None))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


class MobileNetish(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_cbr(3, 8, act=nn.ReLU6))
        self.blocks = nn.Sequential(InvertedResidual(8, 8, 1), InvertedResidual(8, 12, 2),
                                    InvertedResidual(12, 12, 1), InvertedResidual(12, 12, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(12, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


class AvgPoolAdd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(3, 8, 1)
        self.pool = nn.AvgPool2d(2)
        self.c = nn.Sequential(*_cbr(8, 8), nn.AvgPool2d(2))
        self.fc = nn.Linear(8 * 2 * 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.a(x) + self.b(x))
        return self.fc(torch.flatten(self.c(self.pool(y)), 1))


MODELS = {"cnn": (cnn, 8), "strided": (strided, 10), "mobilenet": (MobileNetish, 8), "avgpool_add": (AvgPoolAdd, 8)}


def _quantized(name: str, seed: int = 0) -> tuple[QuantizedGraph, np.ndarray]:
    """A quantized model (random weights and BN statistics, calibrated on random data) and 300 int8
    test inputs (some beyond the calibration range, to exercise saturation)."""
    make, size = MODELS[name]
    torch.manual_seed(seed)
    model = _randomize_bn(make(), seed)
    g = torch.Generator().manual_seed(seed + 1)
    calib = torch.randn(64, 3, size, size, generator=g)
    q = quantize_model(model, calib).qgraph
    test = torch.randn(300, 3, size, size, generator=g) * torch.linspace(0.3, 1.6, 300).reshape(-1, 1, 1, 1)
    return q, q.input.quantize(to_nhwc(test))


@pytest.fixture(scope="module", params=sorted(MODELS))
def model_case(request: pytest.FixtureRequest) -> tuple[str, QuantizedGraph, np.ndarray, bytes]:
    q, x = _quantized(request.param)
    return request.param, q, x, to_tflite(q)


def test_tflm_is_bit_exact_with_run_int8(model_case) -> None:
    name, q, x, blob = model_case
    ours = run_int8(q, x)
    theirs = run_tflm(blob, x)
    assert theirs.dtype == np.int8 and theirs.shape == ours.shape == (300, 10)
    assert np.array_equal(theirs, ours), f"{name}: {(theirs != ours).sum()} of {ours.size} outputs differ"
    assert len(np.unique(ours)) > 20  # not a degenerate (saturated) output


def test_every_intermediate_tensor_is_bit_exact(model_case) -> None:
    name, q, x, blob = model_case
    runner = TFLMRunner(blob, preserve_all_tensors=True)
    for i in (0, 150, 299):
        ours = run_int8_all(q, x[i:i + 1])
        theirs = runner.tensors(x[i:i + 1])
        for tensor, value in ours.items():
            assert np.array_equal(theirs[tensor].reshape(value.shape), value), f"{name}: tensor {tensor!r} differs"


def test_operators_and_padding(model_case) -> None:
    name, q, _, blob = model_case
    ops = operator_names(blob)
    expected = {"cnn": {"CONV_2D", "MAX_POOL_2D", "RESHAPE", "FULLY_CONNECTED"},
                "strided": {"PAD", "CONV_2D", "RESHAPE", "FULLY_CONNECTED"},
                "mobilenet": {"CONV_2D", "DEPTHWISE_CONV_2D", "PAD", "ADD", "AVERAGE_POOL_2D", "RESHAPE", "FULLY_CONNECTED"},
                "avgpool_add": {"CONV_2D", "ADD", "AVERAGE_POOL_2D", "RESHAPE", "FULLY_CONNECTED"}}[name]
    assert set(ops) == expected
    if name == "strided":
        assert ops.count("PAD") == 1  # 10x10 stride 2 needs a PAD; 5x5 stride 2 padding 1 is SAME
    if name == "mobilenet":
        assert ops.count("PAD") == 1  # the stride-2 depthwise on 8x8


def test_file_layout_and_quantization_parameters() -> None:
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    q, x = _quantized("mobilenet")
    blob = to_tflite(q)
    model = fb.ModelT.InitFromObj(fb.Model.GetRootAs(blob, 0))
    assert model.version == 3 and blob[4:8] == b"TFL3"
    assert model.buffers[0].data is None
    for oc in model.operatorCodes:
        assert oc.deprecatedBuiltinCode == min(oc.builtinCode, 127)
    sub = model.subgraphs[0]
    tensors = {t.name.decode(): t for t in sub.tensors}
    for qn in q.nodes:
        node = qn.node
        if not hasattr(node, "weight"):
            continue
        w, b = tensors[f"{node.output}/weight"], tensors[f"{node.output}/bias"]
        assert w.type == 9 and b.type == 2 and set(w.quantization.zeroPoint) == {0}
        assert w.quantization.quantizedDimension == (3 if type(node).__name__ == "DepthwiseConv2D" else 0)
        s_in = np.float32(q.tensors[node.input].scale)
        assert np.array_equal(np.float32(b.quantization.scale), (s_in * qn.weight_scale).astype(np.float32))
        data = np.frombuffer(bytes(model.buffers[w.buffer].data), np.int8).reshape(qn.weight_q.shape)
        assert np.array_equal(data, qn.weight_q)
        assert blob.find(qn.bias_q.astype("<i4").tobytes()) % 16 == 0  # buffers aligned for TFLM
    inp = tensors[q.graph.inputs[0]]
    assert inp.type == 9 and list(inp.shape) == list(q.graph.shapes[q.graph.inputs[0]])
    assert np.float32(inp.quantization.scale[0]) == np.float32(q.input.scale)
    assert inp.quantization.zeroPoint[0] == q.input.zero_point
    details = TFLMRunner(blob).interpreter.get_input_details(0)
    assert details["dtype"] == np.int8


def test_float_io_adds_quantize_and_dequantize() -> None:
    q, x = _quantized("cnn")
    blob = to_tflite(q, TFLiteOptions(float_io=True))
    ops = operator_names(blob)
    assert ops[0] == "QUANTIZE" and ops[-1] == "DEQUANTIZE"
    xf = q.input.dequantize(x[:20]).astype(np.float32)  # exactly representable: QUANTIZE gives x back
    out = run_tflm(blob, xf)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, q.output.dequantize(run_int8(q, x[:20])), rtol=0, atol=1e-6)


def test_padding_codes() -> None:
    assert tflite_padding((8, 8), (3, 3), (1, 1), (1, 1, 1, 1)) == 0      # SAME
    assert tflite_padding((8, 8), (3, 3), (1, 1), (0, 0, 0, 0)) == 1      # VALID
    assert tflite_padding((9, 9), (3, 3), (2, 2), (1, 1, 1, 1)) == 0      # SAME, odd size, stride 2
    assert tflite_padding((10, 10), (3, 3), (2, 2), (1, 1, 1, 1)) is None  # TF would pad (0, 1)
    assert tflite_padding((10, 10), (3, 3), (2, 2), (0, 1, 0, 1)) == 0
    assert tflite_padding((8, 8), (5, 5), (1, 1), (1, 1, 1, 1)) is None   # partial padding
    assert tflite_padding((8, 6), (3, 1), (1, 1), (1, 1, 0, 0)) == 0


# -- rounding variants: TFLM decides which arithmetic is right ----------------------------------------------

def _one_input_fc(accumulators: np.ndarray, s_in: float, s_w: float, s_out: float,
                  zero_point: int = 0) -> QuantizedGraph:
    """An FC with one input whose bias is the accumulator under test: with x = the input zero point,
    output channel c gets acc = bias[c] exactly."""
    o = len(accumulators)
    g = Graph(("x",), ("y",), {"x": (1, 1), "y": (1, o)},
              (FullyConnected("x", "y", np.zeros((o, 1)), np.zeros(o), Activation.NONE),))
    qn = QuantizedNode(g.nodes[0], np.ones((o, 1), np.int8), np.array([s_w], np.float32),
                       np.asarray(accumulators, np.int32))
    return QuantizedGraph(g, (qn,), {"x": TensorQuant(float(s_in), 3), "y": TensorQuant(float(s_out), zero_point)})


def _scale_triples(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield tuple(np.float32(v) for v in rng.uniform((0.01, 0.0005, 0.1), (0.1, 0.005, 0.5)))


def _distinguishing(variant, want: int = 8):
    """(scales, accumulators) where ``variant(acc, s_in, s_w, s_out)`` and the engine's requantization
    differ (within the int8 output range)."""
    cases = []
    for s_in, s_w, s_out in _scale_triples(400):
        m, s = int8_engine.fc_multiplier(s_in, s_w, s_out)
        lim = int(120 / (float(s_in) * float(s_w) / float(s_out)))
        acc = np.arange(-lim, lim, dtype=np.int64)
        ours = multiply_by_quantized_multiplier(acc, m, s)
        hits = acc[ours != variant(acc, s_in, s_w, s_out)]
        if hits.size:
            cases.append(((s_in, s_w, s_out), hits[:16]))
        if sum(len(h) for _, h in cases) >= want:
            return cases
    raise AssertionError("no distinguishing accumulator found")


def _check_tflm_agrees_with_engine(cases, variant) -> int:
    """TFLM = run_int8 on every case, and != the variant; returns how many outputs were compared."""
    n = 0
    for (s_in, s_w, s_out), acc in cases:
        q = _one_input_fc(acc, s_in, s_w, s_out)
        x = np.full((1, 1), 3, np.int8)  # the input zero point: acc = bias
        tflm = run_tflm(to_tflite(q), x)
        assert np.array_equal(tflm, run_int8(q, x))
        assert not np.array_equal(tflm[0].astype(np.int64), np.clip(variant(acc, s_in, s_w, s_out), -128, 127))
        n += acc.size
    return n


def _float32_product(acc, s_in, s_w, s_out):
    """The multiplier from the float32 product ``static_cast<double>(s_in * s_w) / s_out``."""
    real = float(np.float64(np.float32(s_in) * np.float32(s_w)) / np.float64(s_out))
    return multiply_by_quantized_multiplier(acc, *quantize_multiplier(real))


def _single_rounding(acc, s_in, s_w, s_out):
    """TFLITE_SINGLE_ROUNDING: one rounding of acc * mantissa / 2**(31 - shift)."""
    m, s = int8_engine.fc_multiplier(s_in, s_w, s_out)
    total = 31 - s
    return (acc * m + (1 << (total - 1))) >> total


def _float_shortcut(acc, s_in, s_w, s_out):
    """round(acc * real_multiplier) in double."""
    return round_half_away(acc * (np.float64(s_in) * np.float64(s_w) / np.float64(s_out))).astype(np.int64)


def test_fc_multiplier_is_the_double_product_tflm_uses() -> None:
    cases = _distinguishing(_float32_product)
    assert any(int8_engine.fc_multiplier(*sc) != quantize_multiplier(
        float(np.float64(np.float32(sc[0]) * np.float32(sc[1])) / np.float64(sc[2]))) for sc, _ in cases)
    assert _check_tflm_agrees_with_engine(cases, _float32_product) >= 8


def test_requantization_rounds_twice_like_tflm() -> None:
    cases = _distinguishing(_single_rounding)
    assert _check_tflm_agrees_with_engine(cases, _single_rounding) >= 8


def test_float_requantize_shortcut_is_not_bit_exact() -> None:
    cases = _distinguishing(_float_shortcut)
    assert _check_tflm_agrees_with_engine(cases, _float_shortcut) >= 8


def test_float_shortcut_mismatches_on_a_real_model(monkeypatch) -> None:
    q, x = _quantized("cnn")
    blob = to_tflite(q)
    tflm = run_tflm(blob, x)
    assert np.array_equal(run_int8(q, x), tflm)

    def float_requantize(acc, mantissa, shift, out, act):
        lo, hi = int8_engine.activation_range(act, out)
        real = np.asarray(mantissa, np.float64) * np.exp2(np.asarray(shift, np.float64) - 31)
        return np.clip(round_half_away(acc * real) + out.zero_point, lo, hi).astype(np.int8)

    monkeypatch.setattr(int8_engine, "_requantize", float_requantize)
    shortcut = run_int8(q, x)
    mismatched = int((shortcut != tflm).sum())
    assert 0 < mismatched and np.abs(shortcut.astype(int) - tflm).max() <= 2


# -- the file API and bad input -----------------------------------------------------------------------------

def test_export_tflite_from_a_float_model_and_from_int8_model(tmp_path) -> None:
    torch.manual_seed(0)
    model = _randomize_bn(cnn(), 0)
    calib = torch.randn(32, 3, 8, 8)
    path = export_tflite(model, calib, tmp_path / "m.tflite")
    assert path.stat().st_size > 1000
    int8_model = quantize_model(model, calib)
    path2 = export_tflite(int8_model, None, tmp_path / "m2.tflite")
    assert path.read_bytes() == path2.read_bytes() == to_tflite(int8_model.qgraph)
    runner = TFLMRunner(path.read_bytes())
    x = int8_model.qgraph.input.quantize(to_nhwc(calib[:5]))
    assert np.array_equal(runner(x), int8_model.int8(calib[:5]))
    assert 0 < runner.arena_bytes() < 200_000


def test_as_qgraph_accepts_the_three_kinds() -> None:
    q, _ = _quantized("cnn")
    assert as_qgraph(q) is q and as_qgraph(Int8Model(q)) is q
    with pytest.raises(ExportError, match="calibration_inputs"):
        as_qgraph(cnn())
    with pytest.raises(ExportError, match="dict"):
        as_qgraph({})


def test_unknown_node_type_names_it() -> None:
    from dataclasses import dataclass

    @dataclass(frozen=True, eq=False)
    class Softmax:
        input: str
        output: str

        @property
        def inputs(self):
            return (self.input,)

    g = Graph(("x",), ("y",), {"x": (1, 4), "y": (1, 4)}, (Softmax("x", "y"),))
    q = QuantizedGraph(g, (QuantizedNode(g.nodes[0]),), {"x": TensorQuant(0.1, 0), "y": TensorQuant(0.1, 0)})
    with pytest.raises(ExportError, match="Softmax"):
        to_tflite(q)


def test_bad_paths_and_arguments(tmp_path) -> None:
    q, _ = _quantized("cnn")
    with pytest.raises(ExportError, match="directory"):
        export_tflite(q, None, tmp_path)
    with pytest.raises(ExportError, match="does not exist"):
        export_tflite(q, None, tmp_path / "missing" / "m.tflite")
    with pytest.raises(ExportError, match="QuantizedGraph"):
        to_tflite("not a graph")
    with pytest.raises(ExportError, match="TFLiteOptions"):
        to_tflite(q, {"float_io": True})
    with pytest.raises(ExportError, match="TFLite"):
        TFLMRunner(b"garbage bytes that are not a model")
    with pytest.raises(CompressionError, match="inputs"):
        TFLMRunner(to_tflite(q))()
    with pytest.raises(CompressionError, match="preserve_all_tensors"):
        TFLMRunner(to_tflite(q)).tensors(np.zeros((1, 8, 8, 3), np.int8))


def test_missing_tflite_micro_is_a_clear_export_error(monkeypatch) -> None:
    import sys

    q, _ = _quantized("cnn")
    monkeypatch.setitem(sys.modules, "tflite_micro.tensorflow.lite.micro.python.schema_py_generated", None)
    monkeypatch.setitem(sys.modules, "tflite_micro.python.tflite_micro.runtime", None)
    with pytest.raises(ExportError, match="pip install tflite-micro"):
        to_tflite(q)
    with pytest.raises(ExportError, match="pip install tflite-micro"):
        TFLMRunner(b"")


def test_tflm_allocations_split_head_and_tail():
    import torch

    from tinyqml.classical.convert import quantize_model

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 8 * 8, 10)).eval()
    runner = TFLMRunner(to_tflite(quantize_model(net, torch.rand(16, 1, 8, 8)).qgraph))
    parts = runner.allocations()
    assert parts["total"] == parts["head"] + parts["tail"] == runner.arena_bytes()
    assert parts["head"] >= 4 * 8 * 8  # the conv output is planned in the head
