"""``tinyqml codegen MODEL -o DIR``: a fully-int8 ``.tflite`` model to C99 (:mod:`tinyqml.classical.codegen`).

>>> from tinyqml.cli import build_parser
>>> args = build_parser().parse_args(["codegen", "runs/cnn.tflite", "-o", "build/cnn", "--target", "cortex-m4"])
>>> args.model, args.output, args.target, args.prefix
('runs/cnn.tflite', 'build/cnn', 'cortex-m4', 'tinyqml')
"""

from __future__ import annotations

import argparse

from tinyqml.commands.common import error

__all__ = ["register"]

CODEGEN_EXAMPLES = """\
examples:
  tinyqml codegen model.tflite -o build/model                     # host C99
  tinyqml codegen model.tflite -o build/m4 --target cortex-m4     # same C, recorded for the Cortex-M4
"""


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``tinyqml codegen`` to the sub-parsers ``sub``."""
    p = sub.add_parser(
        "codegen", help="compile a fully-int8 .tflite model to C99 (bit-exact with TFLite Micro)",
        description="Write model.h, model.c and the tinyqml C runtime (plus report.md / report.json) for a "
                    "fully-int8 TFLite model, and print the report's summary: MACs, arena, peak SRAM, flash.",
        epilog=CODEGEN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="the .tflite file")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for the C sources (created)")
    p.add_argument("--target", choices=["host", "cortex-m4"], default="host", help="target (default host)")
    p.add_argument("--prefix", default="tinyqml", help="prefix of the C symbols and macros (default tinyqml)")
    p.set_defaults(func=_run_codegen)


def _run_codegen(args: argparse.Namespace) -> int:
    from tinyqml.classical.codegen import CodegenOptions, Target, generate
    from tinyqml.classical.errors import CompressionError

    try:
        result = generate(args.model, args.output, CodegenOptions(target=Target(args.target), prefix=args.prefix))
    except CompressionError as exc:
        return error(exc)
    print(f"wrote {', '.join(p.name for p in result.files)} to {result.out_dir}")
    print(result.summary())
    return 0
