"""tinyqml.classical: compression of small nets for microcontrollers.

Data and models (digits 8x8, ``SmallCNN``, ``TinyMobileNetV2``), training and distillation;
pruning on the shared engine of :mod:`tinyqml.search` (fine-grained, N:M, channel pruning
with physical removal); quantization (linear, k-means, calibration, QAT); integer-only int8
inference that follows the TFLite int8 specification bit for bit; exports to TFLite (run in
TFLite Micro) and ONNX (fp32 and QDQ int8); C for microcontrollers (``codegen``); once-for-all NAS
(``SupernetConfig``/``Arch``, ``OFAMobileNetV2``, ``train_supernet``, efficiency and accuracy
predictors, ``search_architecture`` on the shared engine, ``deploy_arch``, ``run_nas``).

>>> import torch
>>> from tinyqml.classical import quantize_model
>>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
...                           torch.nn.Linear(4 * 6 * 6, 10))
>>> quantize_model(net, torch.rand(8, 1, 8, 8)).int8(torch.rand(2, 1, 8, 8)).shape
(2, 10)
"""

from tinyqml.classical.acc_predictor import AccuracyPredictor, AccuracyPredictorConfig
from tinyqml.classical.arch import Arch, NASError, SupernetConfig, sample_arch
from tinyqml.classical.bn_fold import fold_batchnorm
from tinyqml.classical.calibration import MSE, Calibrator, MinMax, Percentile
from tinyqml.classical.channel_pruning import ChannelPruneConfig, channel_groups, mask_plan, prune_channels, ratio_for_macs
from tinyqml.classical.convert import Int8Model, is_quantized, quantize_model
from tinyqml.classical.costs import LatencyModel, net_costs, profile_net
from tinyqml.classical.data import DigitsConfig, DigitsData, load_digits_data, make_loader
from tinyqml.classical.distill import KDConfig, KDLoss, kd_loss
from tinyqml.classical.efficiency import efficiency_costs, peak_sram
from tinyqml.classical.errors import (
    AlreadyQuantizedError,
    CalibrationError,
    CompressionError,
    ExportError,
    LayerNotFoundError,
    UnsupportedLayerError,
)
from tinyqml.classical.graph import Graph
from tinyqml.classical.int8 import run_int8
from tinyqml.classical.kmeans import KMeansConfig, kmeans_quantize, kmeans_squash, kmeans_storage
from tinyqml.classical.linear_quant import INT8_ACTIVATION, INT8_WEIGHT, QuantSpec, fake_quantize
from tinyqml.classical.latency_table import LatencyTable, measure_latency_table
from tinyqml.classical.models import MobileNetV2Config, SmallCNN, SmallCNNConfig, TinyMobileNetV2
from tinyqml.classical.nas import NASSearchConfig, compare_strategies, parse_constraints, search_architecture
from tinyqml.classical.nas_deploy import DeployConfig, deploy_arch
from tinyqml.classical.nas_pipeline import NASRunConfig, run_nas
from tinyqml.classical.ofa_train import OFATrainConfig, evaluate_arch, train_supernet
from tinyqml.classical.onnx_export import export_onnx, export_onnx_qdq
from tinyqml.classical.pruning import (
    FineGrainedConfig,
    FineGrainedPruner,
    NMPattern,
    layer_sensitivity,
    plot_sensitivity,
    plot_sparsity,
    satisfies_nm,
    sparsity_report,
)
from tinyqml.classical.qat import QATConfig, prepare_qat, strip_qat
from tinyqml.classical.quantize import QuantizeConfig, QuantizedGraph, quantize_graph
from tinyqml.classical.supernet import OFAMobileNetV2
from tinyqml.classical.tflite_export import TFLMRunner, export_tflite, run_tflm, to_tflite
from tinyqml.classical.trace import trace
from tinyqml.classical.train import TrainConfig, evaluate, load_checkpoint, predict, save_checkpoint, train

__all__ = [
    "fold_batchnorm", "MSE", "Calibrator", "MinMax", "Percentile", "ChannelPruneConfig", "channel_groups",
    "prune_channels", "ratio_for_macs", "Int8Model", "is_quantized", "quantize_model", "LatencyModel", "net_costs",
    "profile_net", "DigitsConfig", "DigitsData", "load_digits_data", "KDConfig", "KDLoss", "kd_loss",
    "AlreadyQuantizedError", "CalibrationError", "CompressionError", "ExportError", "LayerNotFoundError",
    "UnsupportedLayerError", "Graph", "run_int8", "KMeansConfig", "kmeans_quantize", "kmeans_squash",
    "kmeans_storage", "INT8_ACTIVATION", "INT8_WEIGHT", "QuantSpec", "fake_quantize", "MobileNetV2Config",
    "SmallCNN", "SmallCNNConfig", "TinyMobileNetV2", "export_onnx", "export_onnx_qdq", "FineGrainedConfig",
    "FineGrainedPruner", "layer_sensitivity", "sparsity_report", "QATConfig", "prepare_qat", "strip_qat",
    "QuantizeConfig", "QuantizedGraph", "quantize_graph", "TFLMRunner", "export_tflite", "run_tflm", "to_tflite",
    "trace", "TrainConfig", "evaluate", "load_checkpoint", "save_checkpoint", "train", "mask_plan", "make_loader",
    "NMPattern", "plot_sensitivity", "plot_sparsity", "satisfies_nm", "predict",
    "AccuracyPredictor", "AccuracyPredictorConfig", "Arch", "NASError", "SupernetConfig", "sample_arch",
    "efficiency_costs", "peak_sram", "LatencyTable", "measure_latency_table", "NASSearchConfig", "compare_strategies",
    "parse_constraints", "search_architecture", "DeployConfig", "deploy_arch", "NASRunConfig", "run_nas",
    "OFATrainConfig", "evaluate_arch", "train_supernet", "OFAMobileNetV2",
]
