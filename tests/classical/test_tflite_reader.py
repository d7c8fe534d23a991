"""The .tflite reader: tensors, quantization, constants, operators and their options from exported models;
unsupported operators and float or per-channel activations named with the operator's index."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch import nn

from tinyqml.classical.convert import quantize_model
from tinyqml.classical.errors import ExportError
from tinyqml.classical.tflite_export import TFLiteOptions, to_tflite
from tinyqml.classical.tflite_reader import (
    Activation,
    DType,
    Padding,
    UnsupportedOperatorError,
    check_supported,
    read_tflite,
)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU6(), nn.Conv2d(8, 8, 3, 2, 1, groups=8), nn.ReLU(),
                         nn.Conv2d(8, 4, 1), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 2 * 2, 5)).eval()


@pytest.fixture(scope="module")
def exported():
    q = quantize_model(_net(), torch.randn(32, 3, 8, 8, generator=torch.Generator().manual_seed(1))).qgraph
    return q, to_tflite(q)


def _mutated(blob: bytes, change) -> bytes:
    """``blob`` re-packed after ``change(model, fb)`` edits its object API tree."""
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    model = fb.ModelT.InitFromPackedBuf(blob, 0)
    change(model, fb)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def test_operators_options_and_io(exported) -> None:
    q, blob = exported
    m = read_tflite(blob)
    assert [op.opcode for op in m.operators] == ["CONV_2D", "PAD", "DEPTHWISE_CONV_2D", "CONV_2D", "MAX_POOL_2D",
                                                 "RESHAPE", "FULLY_CONNECTED"]
    conv, pad, dw, pw, pool, reshape, fc = m.operators
    assert conv.options.padding is Padding.SAME and conv.options.activation is Activation.RELU6
    assert conv.options.stride == (1, 1) and conv.options.dilation == (1, 1)
    assert dw.options.stride == (2, 2) and dw.options.padding is Padding.VALID and dw.options.depth_multiplier == 1
    assert dw.options.activation is Activation.RELU and pw.options.activation is Activation.NONE
    assert pool.options.filter == (2, 2) and pool.options.stride == (2, 2)
    assert reshape.options.new_shape == (1, 16) and fc.options.keep_num_dims is False
    assert [op.index for op in m.operators] == list(range(7))
    assert m.tensors[m.inputs[0]].shape == (1, 8, 8, 3) and m.tensors[m.outputs[0]].shape == (1, 5)
    assert m.producer(fc.outputs[0]) is fc and m.consumers(conv.outputs[0]) == [pad]
    assert check_supported(m) is m


def test_tensors_quantization_and_constants(exported) -> None:
    q, blob = exported
    m = read_tflite(blob)
    conv, _, dw, *_ = m.operators
    w, b = m.tensors[conv.inputs[1]], m.tensors[conv.inputs[2]]
    qn = q.nodes[0]
    assert w.dtype is DType.INT8 and w.quantized_dimension == 0 and w.per_channel and len(w.scales) == 8
    assert np.array_equal(w.data, qn.weight_q) and w.data.dtype == np.int8
    assert np.array_equal(np.float32(w.scales), np.float32(qn.weight_scale))
    assert b.dtype is DType.INT32 and np.array_equal(b.data, qn.bias_q) and set(b.zero_points) == {0}
    dw_w = m.tensors[dw.inputs[1]]
    assert dw_w.shape == (1, 3, 3, 8) and dw_w.quantized_dimension == 3
    x = m.tensors[m.inputs[0]]
    assert x.data is None and not x.is_constant and x.nbytes == 192
    assert np.float32(x.scale) == np.float32(q.input.scale) and x.zero_point == q.input.zero_point
    pads = m.tensors[m.operators[1].inputs[1]]
    assert pads.dtype is DType.INT32 and pads.data.tolist() == [[0, 0], [1, 1], [1, 1], [0, 0]]


def test_path_and_bytes_agree(exported, tmp_path) -> None:
    _, blob = exported
    path = tmp_path / "m.tflite"
    path.write_bytes(blob)
    a, b = read_tflite(path), read_tflite(str(path))
    assert [op.opcode for op in a.operators] == [op.opcode for op in b.operators]
    assert [t.shape for t in a.tensors] == [t.shape for t in read_tflite(blob).tensors]


def test_float_edges_are_supported(exported) -> None:
    q, _ = exported
    m = read_tflite(to_tflite(q, TFLiteOptions(float_io=True)))
    assert m.operators[0].opcode == "QUANTIZE" and m.operators[-1].opcode == "DEQUANTIZE"
    assert m.tensors[m.inputs[0]].dtype is DType.FLOAT32 and m.tensors[m.outputs[0]].dtype is DType.FLOAT32
    assert check_supported(m) is m


def test_unsupported_operator_names_it_and_its_index(exported) -> None:
    _, blob = exported

    def to_tanh(model, fb):
        code = fb.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = fb.BuiltinOperator.TANH
        model.operatorCodes.append(code)
        model.subgraphs[0].operators[3].opcodeIndex = len(model.operatorCodes) - 1

    m = read_tflite(_mutated(blob, to_tanh))
    assert m.operators[3].opcode == "TANH"
    with pytest.raises(UnsupportedOperatorError, match=r"operator 3 \(TANH\): is not supported"):
        check_supported(m)


def test_float_and_per_channel_activations_are_named(exported) -> None:
    _, blob = exported
    m = read_tflite(blob)
    middle = m.operators[2].outputs[0]  # the depthwise output, read by operator 3

    def to_float(model, fb):
        model.subgraphs[0].tensors[middle].type = fb.TensorType.FLOAT32

    with pytest.raises(UnsupportedOperatorError, match=r"operator 2 \(DEPTHWISE_CONV_2D\).*FLOAT32"):
        check_supported(read_tflite(_mutated(blob, to_float)))

    def per_channel(model, fb):
        qp = model.subgraphs[0].tensors[middle].quantization
        qp.scale, qp.zeroPoint, qp.quantizedDimension = [0.1] * 8, [0] * 8, 3

    with pytest.raises(UnsupportedOperatorError, match=r"operator 2 \(DEPTHWISE_CONV_2D\).*per-tensor"):
        check_supported(read_tflite(_mutated(blob, per_channel)))

    def fused_tanh(model, fb):
        model.subgraphs[0].operators[0].builtinOptions.fusedActivationFunction = 4

    with pytest.raises(UnsupportedOperatorError, match=r"operator 0 \(CONV_2D\).*TANH"):
        check_supported(read_tflite(_mutated(blob, fused_tanh)))


def test_bad_files_are_export_errors(exported, tmp_path) -> None:
    _, blob = exported
    with pytest.raises(ExportError, match="TFL3"):
        read_tflite(b"not a model at all")
    with pytest.raises(ExportError, match="TFLite"):
        read_tflite(blob[:40])
    with pytest.raises(ExportError, match="not a file"):
        read_tflite(tmp_path / "missing.tflite")


def test_missing_tflite_micro_says_what_to_install(monkeypatch, exported) -> None:
    _, blob = exported
    monkeypatch.setitem(sys.modules, "tflite_micro.tensorflow.lite.micro.python.schema_py_generated", None)
    with pytest.raises(ExportError, match="pip install tflite-micro"):
        read_tflite(blob)
