"""ONNX export: a float torch model as fp32 ONNX, and a quantized model as a QDQ int8 ONNX graph.

:func:`export_onnx` runs ``torch.onnx.export`` (the TorchScript exporter by default: fast and
needing no onnxscript; ``OnnxOptions(dynamo=True)`` takes the torch.export one) and checks the
file on onnxruntime against torch (``rtol = atol = 1e-5``).

:func:`to_onnx_qdq` / :func:`export_onnx_qdq` write the quantized IR by hand with ``onnx.helper``
in ONNX's NCHW layout: the float input goes through QuantizeLinear/DequantizeLinear with the
input's int8 parameters, weights are int8 initializers dequantized per output channel
(``axis=0``), biases int32 dequantized with scale ``s_in * s_w``, and every activation output is
followed by QuantizeLinear/DequantizeLinear with its scale and zero point (fused activations as
Relu / Clip(0, 6)). The IR's fully-connected columns are in H, W, C order, so a flatten is a
Transpose to NHWC then a Reshape. The model's IR version is the lowest its opset allows (not
the installed onnx package's newest), so older onnxruntime releases load it too. onnxruntime
fuses the QDQ pairs into QLinearConv and friends with its own requantization rounding, so it
matches tinyqml's int8 engine to within a quantization step or two rather than bit for bit. On
x86 it leaves an int8 tensor read by two nodes (a residual input) and its producer and readers in
float; ``OnnxOptions(uint8_activations=True)`` writes the same grid as uint8 (zero point + 128),
which it fuses everywhere.

:func:`run_onnx` turns on onnxruntime's ``session.x64quantprecision``: on x86 CPUs without VNNI
(AVX2 / AVX-512F only) its u8 x s8 GEMM kernel (VPMADDUBSW) adds pairs of products in saturating
int16, so a convolution whose 8-bit inputs and weights are both large (any int8 weights past
[-64, 63], as TFLite's symmetric ones are) comes out wrong by tens of steps; the option makes
onnxruntime rewrite such weights as uint8 (``w + 128``, zero point with it: the same products) for
its exact u8 x u8 kernel (x86 builds only: elsewhere it changes nothing; it costs some int8 speed).

>>> import numpy as np, torch
>>> from tinyqml.classical.convert import quantize_model
>>> with torch.random.fork_rng():
...     _ = torch.manual_seed(0)
...     net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
...                               torch.nn.Linear(4 * 6 * 6, 5)).eval()
>>> x = torch.rand(32, 1, 6, 6, generator=torch.Generator().manual_seed(0))
>>> q = quantize_model(net, x)
>>> proto = to_onnx_qdq(q)
>>> sorted({n.op_type for n in proto.graph.node})
['Conv', 'DequantizeLinear', 'Flatten', 'Gemm', 'QuantizeLinear', 'Relu', 'Transpose']
>>> y = run_onnx(proto, x.numpy())
>>> steps = np.abs(y - q(x).numpy()) / q.qgraph.output.scale
>>> bool(steps.max() <= 2)
True
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinyqml.classical.errors import ExportError
from tinyqml.classical.graph import (
    Activation,
    Add,
    AvgPool2D,
    Conv2D,
    DepthwiseConv2D,
    FullyConnected,
    MaxPool2D,
    Reshape,
)
from tinyqml.classical.optional import ONNX_INSTALL, require
from tinyqml.classical.quantize import QuantizedGraph, QuantizedNode
from tinyqml.classical.tflite_export import as_qgraph, output_path, write_file

__all__ = ["OnnxOptions", "export_onnx", "to_onnx_qdq", "export_onnx_qdq", "run_onnx", "session_options"]

log = logging.getLogger(__name__)

_LEGACY_WARNINGS = ("You are using the legacy TorchScript-based ONNX export", "The feature will be removed")


_import = functools.partial(require, purpose="ONNX export", install=ONNX_INSTALL)


@dataclass(frozen=True)
class OnnxOptions:
    """``opset``: the ONNX opset (13 or later: per-channel DequantizeLinear); ``dynamic_batch``: a
    symbolic batch dimension ``N``; ``check``: run the fp32 file on onnxruntime and compare with torch;
    ``dynamo``: torch's torch.export-based exporter instead of the TorchScript one; ``uint8_activations``:
    QDQ activations as uint8 with zero point + 128 (the same grid: ``q_u8 = q_s8 + 128``), which
    onnxruntime's x86 kernels fuse also where an int8 tensor has several readers."""

    opset: int = 17
    dynamic_batch: bool = True
    check: bool = True
    dynamo: bool = False
    uint8_activations: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.opset, bool) or not isinstance(self.opset, int) or self.opset < 13:
            raise ExportError(f"opset must be an int >= 13 (per-channel DequantizeLinear), got {self.opset!r}")


# -- fp32 --------------------------------------------------------------------------------------------------

def _torch_export(model: Any, example: Any, path: Path, options: OnnxOptions) -> None:
    import torch

    kwargs: dict[str, Any] = {"input_names": ["input"], "output_names": ["output"]}
    if options.dynamo:
        if options.dynamic_batch:
            kwargs["dynamic_shapes"] = ({0: torch.export.Dim("N")},)
        program = torch.onnx.export(model, (example,), None, dynamo=True, opset_version=max(options.opset, 18),
                                    verbose=False, **kwargs)
        program.save(str(path))
        return
    if options.dynamic_batch:
        kwargs["dynamic_axes"] = {"input": {0: "N"}, "output": {0: "N"}}
    with warnings.catch_warnings():
        for message in _LEGACY_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=DeprecationWarning)
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=options.opset, **kwargs)


def _run_torch_export(model: Any, example: Any, path: Path, options: OnnxOptions) -> None:
    try:
        _torch_export(model, example, path, options)
    except Exception as exc:  # torch.onnx raises many types; its message names the construct that failed
        raise ExportError(f"torch.onnx.export failed for {type(model).__name__}: {exc}") from exc


def export_onnx(model: Any, example: Any, path: str | os.PathLike, options: OnnxOptions = OnnxOptions()) -> Path:
    """Write the float torch ``model`` traced on ``example`` (a tensor [N, C, H, W] / [N, features]) as fp32
    ONNX at ``path`` (input ``input``, output ``output``); with ``options.check`` the file's onnxruntime
    outputs on ``example`` must equal torch's within 1e-5 (else :class:`ExportError`)."""
    import torch

    if not isinstance(model, torch.nn.Module):
        raise ExportError(f"export_onnx takes a float torch nn.Module, got {type(model).__name__} (for an "
                          f"Int8Model or QuantizedGraph use export_onnx_qdq)")
    if not isinstance(example, torch.Tensor):
        raise ExportError(f"example must be a torch.Tensor input batch, got {type(example).__name__}")
    _import("onnx")
    p = output_path(path)
    was_training = model.training
    model.eval()
    try:
        _run_torch_export(model, example.float(), p, options)
        if options.check:
            with torch.no_grad():
                expected = model(example.float()).numpy()
            _compare(p, example.float().numpy(), expected)
    finally:
        model.train(was_training)
    log.info("wrote %s", p)
    return p


def _compare(path: Path, x: np.ndarray, expected: np.ndarray) -> None:
    got = run_onnx(str(path), x)
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=1e-5, atol=1e-5):
        err = np.abs(got - expected).max() if got.shape == expected.shape else f"shape {got.shape}"
        raise ExportError(f"the ONNX file {str(path)!r} does not reproduce torch's outputs on onnxruntime "
                          f"(max difference {err})")


# onnxruntime's kOrtSessionOptionsAvx2PrecisionMode (onnxruntime_session_options_config_keys.h, PR #12088):
# on x86 its Avx2WeightS8ToU8Transformer rewrites the constant s8 weights of QLinearConv / QGemm / MatMulInteger
# and friends as u8, so that MLAS runs its exact u8u8 kernel instead of the u8s8 one (VPMADDUBSW), which
# saturates int16 pair sums on CPUs without VNNI
_X64_QUANT_PRECISION = "session.x64quantprecision"


def session_options() -> Any:
    """onnxruntime ``SessionOptions`` for int8 models that compute what the QDQ graph specifies: with
    ``session.x64quantprecision`` on (see the module docstring; without it an AVX2-only x86 CPU's u8 x s8
    kernels saturate, tens of quantization steps off). Pass it to ``onnxruntime.InferenceSession`` when
    running :func:`export_onnx_qdq`'s files outside :func:`run_onnx`."""
    ort = _import("onnxruntime")
    options = ort.SessionOptions()
    options.add_session_config_entry(_X64_QUANT_PRECISION, "1")
    return options


def run_onnx(model: Any, x: np.ndarray) -> np.ndarray:
    """The first output of an ONNX model (a ``ModelProto`` or a file path) on onnxruntime's CPU provider,
    with :func:`session_options`."""
    ort = _import("onnxruntime")
    source = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    session = ort.InferenceSession(source, session_options(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: np.asarray(x, dtype=np.float32)})[0]


# -- QDQ int8 ----------------------------------------------------------------------------------------------

class _QDQBuilder:
    """Nodes and initializers of the QDQ graph. Each IR tensor is quantized once (``quantize``) and
    dequantized afresh for each reader (``read``: one DequantizeLinear per node unit, as the QDQ
    format has it). Values are in ONNX's layout (NCHW for 4-d tensors)."""

    def __init__(self, qgraph: QuantizedGraph, uint8: bool = False) -> None:
        self.onnx = _import("onnx")
        self.uint8 = uint8
        self.helper = self.onnx.helper
        self.q = qgraph
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.quantized: dict[str, tuple[str, str, str]] = {}  # IR tensor -> (int8 value, scale, zero point)
        self.reads: dict[str, int] = {}

    def init(self, name: str, array: np.ndarray) -> str:
        self.inits.append(self.onnx.numpy_helper.from_array(np.array(array, order="C"), name))  # keeps 0-d
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        self.nodes.append(self.helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def quantize(self, tensor: str, float_value: str) -> None:
        """QuantizeLinear of ``float_value`` with IR tensor ``tensor``'s scale and zero point."""
        tq = self.q.tensors[tensor]
        s = self.init(f"{tensor}.scale", np.asarray(tq.scale, dtype=np.float32).reshape(()))
        zp = np.asarray(tq.zero_point, dtype=np.int64).reshape(())
        z = self.init(f"{tensor}.zero_point", (zp + 128).astype(np.uint8) if self.uint8 else zp.astype(np.int8))
        self.quantized[tensor] = (self.node("QuantizeLinear", [float_value, s, z], f"{tensor}.q"), s, z)

    def read(self, tensor: str, name: str | None = None) -> str:
        """A DequantizeLinear of IR tensor ``tensor`` for one reader (named ``name`` if given)."""
        k = self.reads[tensor] = self.reads.get(tensor, 0) + 1
        return self.node("DequantizeLinear", list(self.quantized[tensor]), name or f"{tensor}.dq{k}")

    def dequantized(self, name: str, q: np.ndarray, scale: np.ndarray, zero: np.ndarray) -> str:
        """An int (int8 / int32) initializer dequantized per channel along axis 0 (or per tensor)."""
        qn = self.init(f"{name}.quantized", q)
        per_channel = np.asarray(scale).size > 1
        s = self.init(f"{name}.scale", np.asarray(scale, np.float32).reshape(-1 if per_channel else ()))
        z = self.init(f"{name}.zero_point", np.asarray(zero).reshape(-1 if per_channel else ()))
        attrs = {"axis": 0} if per_channel else {}
        return self.node("DequantizeLinear", [qn, s, z], name, **attrs)

    def activation(self, act: Activation, x: str, name: str) -> str:
        if act is Activation.RELU:
            return self.node("Relu", [x], f"{name}.relu")
        if act is Activation.RELU6:
            lo = self.init(f"{name}.clip_min", np.array(0.0, np.float32))
            hi = self.init(f"{name}.clip_max", np.array(6.0, np.float32))
            return self.node("Clip", [x, lo, hi], f"{name}.relu6")
        return x


def _weight_and_bias(b: _QDQBuilder, node: Conv2D | DepthwiseConv2D | FullyConnected, qn: QuantizedNode,
                     weight_q: np.ndarray) -> tuple[str, str]:
    s_in = np.float32(b.q.tensors[node.input].scale)
    s_w = np.asarray(qn.weight_scale, np.float32)
    w = b.dequantized(f"{node.output}.weight", weight_q.astype(np.int8), s_w, np.zeros(s_w.size, np.int8))
    bias_scale = (np.float64(s_in) * s_w.astype(np.float64)).astype(np.float32)
    bias = b.dequantized(f"{node.output}.bias", qn.bias_q.astype(np.int32), bias_scale,
                         np.zeros(bias_scale.size, np.int32))
    return w, bias


@functools.singledispatch
def _emit(node: object, qn: QuantizedNode, b: _QDQBuilder) -> str:
    raise ExportError(f"the ONNX QDQ exporter cannot write node type {type(node).__name__} (output "
                      f"{getattr(node, 'output', '?')!r}); it writes Conv2D, DepthwiseConv2D, FullyConnected, Add, "
                      f"AvgPool2D, MaxPool2D and Reshape")


def _conv(node: Conv2D | DepthwiseConv2D, qn: QuantizedNode, b: _QDQBuilder, depthwise: bool) -> str:
    # IR [O, KH, KW, I] -> ONNX [O, I, KH, KW]; depthwise IR [1, KH, KW, C] -> ONNX [C, 1, KH, KW]
    wq = qn.weight_q.transpose(3, 0, 1, 2) if depthwise else qn.weight_q.transpose(0, 3, 1, 2)
    w, bias = _weight_and_bias(b, node, qn, wq)
    top, bottom, left, right = node.padding
    attrs = {"pads": [top, left, bottom, right], "strides": list(node.stride), "kernel_shape": list(wq.shape[2:])}
    if depthwise:
        attrs["group"] = int(wq.shape[0])
    y = b.node("Conv", [b.read(node.input), w, bias], f"{node.output}.conv", **attrs)
    return b.activation(node.activation, y, node.output)


@_emit.register
def _(node: Conv2D, qn: QuantizedNode, b: _QDQBuilder) -> str:
    return _conv(node, qn, b, depthwise=False)


@_emit.register
def _(node: DepthwiseConv2D, qn: QuantizedNode, b: _QDQBuilder) -> str:
    return _conv(node, qn, b, depthwise=True)


@_emit.register
def _(node: FullyConnected, qn: QuantizedNode, b: _QDQBuilder) -> str:
    w, bias = _weight_and_bias(b, node, qn, qn.weight_q)
    y = b.node("Gemm", [b.read(node.input), w, bias], f"{node.output}.gemm", transB=1)
    return b.activation(node.activation, y, node.output)


@_emit.register
def _(node: Add, qn: QuantizedNode, b: _QDQBuilder) -> str:
    y = b.node("Add", [b.read(node.left), b.read(node.right)], f"{node.output}.add")
    return b.activation(node.activation, y, node.output)


def _pool(op: str, node: AvgPool2D | MaxPool2D, b: _QDQBuilder) -> str:
    _, h, w, _ = b.q.graph.shapes[node.input]
    x = b.read(node.input)
    if op == "AveragePool" and tuple(node.filter) == (h, w):
        return b.node("GlobalAveragePool", [x], f"{node.output}.pool")
    return b.node(op, [x], f"{node.output}.pool", kernel_shape=list(node.filter), strides=list(node.stride))


@_emit.register
def _(node: AvgPool2D, qn: QuantizedNode, b: _QDQBuilder) -> str:
    return _pool("AveragePool", node, b)


@_emit.register
def _(node: MaxPool2D, qn: QuantizedNode, b: _QDQBuilder) -> str:
    return _pool("MaxPool", node, b)


@_emit.register
def _(node: Reshape, qn: QuantizedNode, b: _QDQBuilder) -> str:
    """Row-major reshape of the NHWC tensor: to NHWC, reshape (batch kept), back to NCHW if 4-d."""
    x = b.read(node.input)
    if len(b.q.graph.shapes[node.input]) == 4:
        x = b.node("Transpose", [x], f"{node.output}.nhwc", perm=[0, 2, 3, 1])
    if len(node.shape) == 2:
        return b.node("Flatten", [x], f"{node.output}.flat", axis=1)
    shape = b.init(f"{node.output}.shape", np.array([0, *node.shape[1:]], np.int64))
    y = b.node("Reshape", [x, shape], f"{node.output}.reshape")
    if len(node.shape) == 4:
        y = b.node("Transpose", [y], f"{node.output}.nchw", perm=[0, 3, 1, 2])
    return y


def _onnx_shape(shape: tuple[int, ...], dynamic: bool) -> list[Any]:
    s = [shape[0], shape[3], shape[1], shape[2]] if len(shape) == 4 else list(shape)
    return ["N" if dynamic else 1, *s[1:]]


def to_onnx_qdq(model: Any, options: OnnxOptions = OnnxOptions()) -> Any:
    """The QDQ int8 ``onnx.ModelProto`` of a :class:`QuantizedGraph` or ``Int8Model`` (float input
    ``input`` in NCHW / [N, features], float output ``output``)."""
    if not isinstance(options, OnnxOptions):
        raise ExportError(f"options must be OnnxOptions, got {type(options).__name__}")
    qgraph = as_qgraph(model)
    g = qgraph.graph
    if len(g.inputs) != 1 or len(g.outputs) != 1:
        raise ExportError(f"the ONNX QDQ exporter writes one-input one-output graphs, got inputs {g.inputs} and "
                          f"outputs {g.outputs}")
    b = _QDQBuilder(qgraph, options.uint8_activations)
    b.quantize(g.inputs[0], "input")
    for qn in qgraph.nodes:
        b.quantize(qn.node.output, _emit(qn.node, qn, b))
    b.read(g.outputs[0], "output")
    helper, tp = b.helper, b.onnx.TensorProto
    graph = helper.make_graph(
        b.nodes, "tinyqml_qdq",
        [helper.make_tensor_value_info("input", tp.FLOAT, _onnx_shape(g.shapes[g.inputs[0]], options.dynamic_batch))],
        [helper.make_tensor_value_info("output", tp.FLOAT,
                                       _onnx_shape(g.shapes[g.outputs[0]], options.dynamic_batch))],
        initializer=b.inits)
    opsets = [helper.make_opsetid("", options.opset)]
    # make_model writes the installed onnx's newest IR version, which older onnxruntime releases refuse to load
    # ("Unsupported model IR version"); the opset's own minimum is what the graph needs
    proto = helper.make_model(graph, opset_imports=opsets, producer_name="tinyqml",
                              ir_version=helper.find_min_ir_version_for(opsets))
    b.onnx.checker.check_model(proto)
    return proto


def export_onnx_qdq(model: Any, path: str | os.PathLike, options: OnnxOptions = OnnxOptions()) -> Path:
    """Write the QDQ int8 ONNX model of a :class:`QuantizedGraph` / ``Int8Model`` at ``path``."""
    proto = to_onnx_qdq(model, options)
    return write_file(path, proto.SerializeToString())
