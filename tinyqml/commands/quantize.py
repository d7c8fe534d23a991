"""``tinyqml quantize MODEL.pt -o OUT.tflite``: a SmallCNN model file to a fully-int8 TFLite flatbuffer.

The model is traced (BatchNorm folded, ReLU fused) and calibrated on digits training images
(:func:`~tinyqml.classical.convert.quantize_model`: weights int8 per channel, activations int8
per tensor), written with :func:`~tinyqml.classical.tflite_export.export_tflite` (int8 input and
output), and run in TensorFlow Lite Micro on the test images, whose int8 outputs must equal
tinyqml's int8 engine's.

>>> from tinyqml.cli import build_parser
>>> args = build_parser().parse_args(["quantize", "runs/cnn_pruned.pt", "--calibrator", "mse"])
>>> args.calibration, type(calibrator(args)).__name__, str(output_path(args))
(256, 'MSE', 'runs/cnn_pruned.tflite')
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tinyqml.commands.common import error, open_model_and_digits, output_file, positive_int

__all__ = ["register", "output_path", "calibrator", "CALIBRATORS", "int8_accuracy"]

QUANTIZE_EXAMPLES = """\
examples:
  tinyqml quantize runs/cnn_pruned.pt -o runs/cnn.tflite                 # 256 calibration images, min/max ranges
  tinyqml quantize runs/cnn.pt -o runs/cnn.tflite --calibrator percentile --calibration 512
then: tinyqml codegen runs/cnn.tflite -o build/cnn
"""

#: --calibrator choices -> what each does (the help text)
CALIBRATORS = {"minmax": "the observed range", "percentile": "the 0.01%% and 99.99%% quantiles",
               "mse": "the clipping with the least squared error"}


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``tinyqml quantize`` to the sub-parsers ``sub``."""
    p = sub.add_parser(
        "quantize", help="quantize a SmallCNN model file to a fully-int8 .tflite (checked against TFLite Micro)",
        description="Read a model file of `tinyqml train cnn` or `tinyqml prune`, quantize it to int8 "
                    "(TFLite's scheme: BatchNorm folded, ReLU fused, weights per channel, activations per tensor "
                    "calibrated on digits training images), write a fully-int8 .tflite file, and print the fp32 "
                    "and int8 test accuracy, the file size, its operators and whether TensorFlow Lite Micro "
                    "computes bit for bit what tinyqml's int8 engine computes on the test images.",
        epilog=QUANTIZE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="the model file to quantize (from tinyqml train cnn or tinyqml prune)")
    p.add_argument("-o", "--output", default=None, metavar="OUT.tflite",
                   help="the .tflite file to write (default: MODEL with the suffix .tflite; folders are created)")
    p.add_argument("--calibration", type=positive_int, default=256, metavar="N",
                   help="calibration images from the digits training split (default 256)")
    p.add_argument("--calibrator", choices=list(CALIBRATORS), default="minmax",
                   help="activation ranges: " + "; ".join(f"{k}: {v}" for k, v in CALIBRATORS.items())
                        + " (default minmax)")
    p.set_defaults(func=_run_quantize)


def output_path(args: argparse.Namespace) -> Path:
    """``-o``, else the model file's path with the suffix ``.tflite``."""
    return Path(args.output) if args.output is not None else Path(args.model).with_suffix(".tflite")


def calibrator(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The :class:`~tinyqml.classical.calibration.Calibrator` of ``--calibrator``."""
    from tinyqml.classical.calibration import MSE, MinMax, Percentile

    return {"minmax": MinMax, "percentile": Percentile, "mse": MSE}[args.calibrator]()


def int8_accuracy(outputs, labels) -> float:  # type: ignore[no-untyped-def]
    """Accuracy (%) of int8 logits ``outputs`` ``[N, classes]`` (argmax) against the labels ``[N]``.

    >>> import numpy as np
    >>> int8_accuracy(np.array([[-128, 5], [3, -1], [0, 1], [7, 7]], np.int8), np.array([1, 0, 0, 0]))
    75.0
    """
    import numpy as np

    return 100.0 * float((np.asarray(outputs).astype(np.int64).argmax(1) == np.asarray(labels)).mean())


def _run_quantize(args: argparse.Namespace) -> int:
    from tinyqml.classical.convert import quantize_model, to_nhwc
    from tinyqml.classical.errors import CompressionError
    from tinyqml.classical.quantize import QuantizeConfig
    from tinyqml.classical.tflite_export import TFLMRunner, export_tflite, operator_names
    from tinyqml.classical.train import evaluate

    try:
        src = open_model_and_digits(args.model)
        data = src.data
        if args.calibration > len(data.x_train):
            raise CompressionError(f"--calibration {args.calibration} is more than the {len(data.x_train)} images "
                                   f"of the digits training split; use at most {len(data.x_train)}")
        out = output_file(output_path(args), "the .tflite file", "cnn.tflite")  # before the work, not after
        fp32 = evaluate(src.model, data.x_test, data.y_test)
        print(f"{args.model}: SmallCNN widths {','.join(map(str, src.config.widths))}; fp32 test accuracy "
              f"{fp32:.2f}% ({src.split})", flush=True)
        calib = data.x_train[:args.calibration]
        int8_model = quantize_model(src.model, calib, QuantizeConfig(calibrator(args)))
        print(f"calibrated on {len(calib)} training images ({args.calibrator}): weights int8 per channel, "
              f"activations int8 per tensor", flush=True)
        ours = int8_model.int8(data.x_test)
        int8 = int8_accuracy(ours, data.y_test.numpy())
        print(f"test accuracy: fp32 {fp32:.2f}%, int8 {int8:.2f}% ({int8 - fp32:+.2f} points)")
        path = export_tflite(int8_model, None, out)
        blob = path.read_bytes()
        print(f"wrote {path}: {len(blob):,} bytes, operators {' '.join(operator_names(blob))}")
        xq = int8_model.qgraph.input.quantize(to_nhwc(data.x_test))
        tflm = TFLMRunner(blob).run_all(xq)[0].reshape(ours.shape)
    except (CompressionError, OSError) as exc:
        return error(exc)
    equal = int((tflm == ours).sum())
    verdict = "bit-exact" if equal == ours.size else "MISMATCH"
    print(f"TFLite Micro vs tinyqml's int8 engine: {equal:,}/{ours.size:,} int8 outputs equal on {len(ours)} test "
          f"images ({verdict}); TFLite Micro test accuracy {int8_accuracy(tflm, data.y_test.numpy()):.2f}%")
    if equal != ours.size:
        return error(CompressionError(f"TFLite Micro disagrees with tinyqml's int8 engine on {ours.size - equal} of "
                                      f"{ours.size} outputs of {path}; please report this as a tinyqml bug"))
    print(f"next: tinyqml codegen {path} -o {Path('build') / path.stem}")
    return 0
