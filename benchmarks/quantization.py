"""Int8 quantization of small CNNs on digits: tinyqml vs torch.ao, TFLite Micro and onnxruntime.

Setup (GitHub issue 6):

- data: scikit-learn digits (8x8, 10 classes), stratified 65/15/20 train/val/test split
  (``load_digits_data``, split seed 0); models: the 3-conv ``SmallCNN`` (32/64/64,
  conv-BN-ReLU, one 2x2 max pool, flatten) and the ``TinyMobileNetV2`` (inverted residuals
  with depthwise convs, ReLU6 and residual adds, global average pool), trained fp32 for
  ``--epochs`` epochs (Adam, cosine) per seed;
- post-training int8 (tinyqml): TFLite's scheme (weights int8 symmetric per channel,
  activations int8 asymmetric per tensor, int32 bias), calibrated on 256 training images
  with MinMax, Percentile(99.99) and MSE; integer-only inference (``Int8Model``);
- anchors, same models, same calibration images, same run: torch.ao FX post-training
  quantization (x86 backend, default qconfig: per-channel weights), the tinyqml
  ``.tflite`` file run in the real TFLite Micro interpreter (pip ``tflite-micro``), the
  QDQ ONNX model in onnxruntime (CPU); bit-exactness = every int8 output equal;
- k-means (Deep Compression): 4-bit codebooks per layer, before and after a short
  codebook fine-tune; QAT: fake-quant (STE) fine-tune, then the same int8 conversion;
- latency: one thread, median of ``--repeats`` timed runs after warm-up, batch 1 and 256.

Prints markdown tables and writes ``benchmarks/results/quantization.md`` and ``.json``.

    .venv/bin/python benchmarks/quantization.py [--quick] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model, load_average  # noqa: E402

from tinyqml.classical import kmeans as km  # noqa: E402
from tinyqml.classical import qat  # noqa: E402
from tinyqml.classical.calibration import MSE, MinMax, Percentile  # noqa: E402
from tinyqml.classical.convert import quantize_model, to_nhwc  # noqa: E402
from tinyqml.classical.data import DigitsConfig, load_digits_data  # noqa: E402
from tinyqml.classical.models import MobileNetV2Config, SmallCNN, TinyMobileNetV2  # noqa: E402
from tinyqml.classical.onnx_export import export_onnx, export_onnx_qdq  # noqa: E402
from tinyqml.classical.quantize import QuantizeConfig  # noqa: E402
from tinyqml.classical.tflite_export import TFLMRunner, to_tflite  # noqa: E402
from tinyqml.classical.train import TrainConfig, evaluate, train  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CALIBRATORS = {"MinMax": MinMax(), "Percentile99.99": Percentile(99.99), "MSE": MSE()}


def accuracy(pred: torch.Tensor, y: torch.Tensor) -> float:
    return 100.0 * float((pred == y).float().mean())


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return 100.0 * float((a == b).float().mean())


def make_model(kind: str, seed: int) -> torch.nn.Module:
    return SmallCNN(seed=seed) if kind == "SmallCNN" else TinyMobileNetV2(MobileNetV2Config(), seed=seed)


def torch_ao_ptq(model: torch.nn.Module, calib: torch.Tensor) -> torch.nn.Module:
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_fx(copy.deepcopy(model).eval(), get_default_qconfig_mapping("x86"), (calib[:1],))
        with torch.no_grad():
            prepared(calib)
        return convert_fx(prepared)


def ort_session(path: Path):
    import onnxruntime as ort

    from tinyqml.classical.onnx_export import session_options

    opts = session_options()  # exact int8 products also on CPUs without VNNI
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def ort_run(sess, x: torch.Tensor) -> np.ndarray:
    name = sess.get_inputs()[0].name
    return sess.run(None, {name: x.numpy().astype(np.float32)})[0]


def quantized(model, data, calib, seed: int) -> dict:
    """Every int8 variant of one trained fp32 model, scored on the test set."""
    x, y = data.x_test, data.y_test
    with torch.no_grad():
        ref = model(x).argmax(1)
    row = {"fp32": accuracy(ref, y)}
    for name, cal in CALIBRATORS.items():
        q = quantize_model(model, calib, QuantizeConfig(cal))
        pred = q.predict(x)
        row[f"tinyqml {name}"] = accuracy(pred, y)
        row[f"tinyqml {name} agree"] = agreement(pred, ref)
        if name == "MinMax":
            int8_model = q
    ao = torch_ao_ptq(model, calib)
    with torch.no_grad():
        pred = ao(x).argmax(1)
    row["torch.ao"], row["torch.ao agree"] = accuracy(pred, y), agreement(pred, ref)
    blob = to_tflite(int8_model.qgraph)
    xq = int8_model.qgraph.input.quantize(to_nhwc(x))
    tflm = TFLMRunner(blob).run_all(xq)[0]
    ours = int8_model.int8(x)
    row["TFLM"] = accuracy(torch.from_numpy(tflm.astype(np.int64).argmax(1)), y)
    row["TFLM bit-exact outputs"] = f"{int((tflm == ours).sum())}/{ours.size}"
    row["tflite bytes"] = len(blob)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx_qdq(int8_model, Path(tmp) / "m.onnx")
        out = ort_run(ort_session(path), x)
    pred = torch.from_numpy(out.argmax(1))
    row["ORT QDQ"], row["ORT QDQ agree tinyqml"] = accuracy(pred, y), agreement(pred, int8_model.predict(x))
    row["_int8_model"], row["_ao"], row["_blob"] = int8_model, ao, blob
    return row


def kmeans_rows(model, data, epochs: int, seed: int) -> dict:
    out = {}
    for bits in (4, 2):
        m = copy.deepcopy(model)
        km.kmeans_quantize(m, km.KMeansConfig(bits=bits, seed=seed))
        before = evaluate(m, data.x_test, data.y_test)
        train(m, data, TrainConfig(epochs=epochs, lr=1e-3, seed=seed))
        out[f"k-means {bits}-bit"] = before
        out[f"k-means {bits}-bit + fine-tune"] = evaluate(m, data.x_test, data.y_test)
    return out


def qat_row(model, data, calib, epochs: int, seed: int) -> dict:
    prepared = qat.prepare_qat(model, calib)
    train(prepared, data, TrainConfig(epochs=epochs, lr=5e-4, seed=seed))
    stripped = qat.strip_qat(prepared.eval())
    q = quantize_model(stripped, calib)
    return {"QAT int8": accuracy(q.predict(data.x_test), data.y_test)}


def timed(fn, repeats: int) -> float:
    for _ in range(max(3, repeats // 10)):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def latency(model, row, data, repeats: int) -> dict:
    torch.set_num_threads(1)
    out = {}
    int8_model, ao, blob = row["_int8_model"], row["_ao"], row["_blob"]
    runner = TFLMRunner(blob)
    xq1 = int8_model.qgraph.input.quantize(to_nhwc(data.x_test[:1]))
    with tempfile.TemporaryDirectory() as tmp:
        fp_sess = ort_session(export_onnx(model, data.x_test[:1], Path(tmp) / "fp.onnx"))
        q_sess = ort_session(export_onnx_qdq(int8_model, Path(tmp) / "q.onnx"))
    for batch in (1, 256):
        x = data.x_test[:batch]
        with torch.no_grad():
            out[f"torch fp32 b{batch}"] = timed(lambda: model(x), repeats)
            out[f"torch.ao int8 b{batch}"] = timed(lambda: ao(x), repeats)
        out[f"ORT fp32 b{batch}"] = timed(lambda: ort_run(fp_sess, x), repeats)
        out[f"ORT QDQ int8 b{batch}"] = timed(lambda: ort_run(q_sess, x), repeats)
        out[f"tinyqml int8 b{batch}"] = timed(lambda: int8_model.int8(x), max(5, repeats // 4))
    out["TFLM int8 b1"] = timed(lambda: runner(xq1), repeats)
    return out


def fmt(v) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def accuracy_table(runs: list[dict], kind: str) -> list[str]:
    rows = [r for r in runs if r["model"] == kind]
    keys = [k for k in rows[0] if not k.startswith("_") and k not in ("model", "seed")]
    lines = [f"### {kind}: test accuracy (%) and agreement with fp32 top-1 (%), per seed and mean",
             "", "| metric | " + " | ".join(f"seed {r['seed']}" for r in rows) + " | mean |",
             "|---|" + "---:|" * (len(rows) + 1)]
    for k in keys:
        vals = [r[k] for r in rows]
        mean = fmt(statistics.mean(vals)) if all(isinstance(v, float) for v in vals) else ""
        lines.append(f"| {k} | " + " | ".join(fmt(v) for v in vals) + f" | {mean} |")
    fp32 = statistics.mean(r["fp32"] for r in rows)
    lines += ["", f"int8 (tinyqml MinMax) minus fp32: "
              f"{statistics.mean(r['tinyqml MinMax'] for r in rows) - fp32:+.2f} points; torch.ao minus fp32: "
              f"{statistics.mean(r['torch.ao'] for r in rows) - fp32:+.2f} points", ""]
    return lines


def latency_table(lat: dict, kind: str) -> list[str]:
    lines = [f"### {kind}: latency (ms, 1 thread, median) and ratio to torch fp32 at the same batch", "",
             "| engine | batch 1 | ratio | batch 256 | ratio |", "|---|---:|---:|---:|---:|"]
    for eng in ("torch fp32", "torch.ao int8", "ORT fp32", "ORT QDQ int8", "tinyqml int8", "TFLM int8"):
        cells = []
        for b in (1, 256):
            v = lat.get(f"{eng} b{b}")
            base = lat[f"torch fp32 b{b}"]
            cells += ["", ""] if v is None else [f"{v:.3f}", f"{v / base:.2f}x"]
        lines.append(f"| {eng} | " + " | ".join(cells) + " |")
    return lines + [""]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one seed, fewer epochs (a smoke run)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--finetune-epochs", type=int, default=5)
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    args = p.parse_args()
    if args.quick:
        args.seeds, args.epochs, args.finetune_epochs, args.repeats = [0], 8, 1, 20
    torch.set_num_threads(1)
    data = load_digits_data(DigitsConfig(seed=0))
    calib = data.x_train[:256]
    runs, lats, t0 = [], {}, time.time()
    for kind in ("SmallCNN", "TinyMobileNetV2"):
        for seed in args.seeds:
            model = make_model(kind, seed)
            train(model, data, TrainConfig(epochs=args.epochs, seed=seed))
            model.eval()
            row = {"model": kind, "seed": seed, **quantized(model, data, calib, seed)}
            if kind == "SmallCNN":
                row.update(kmeans_rows(model, data, args.finetune_epochs, seed))
            row.update(qat_row(model, data, calib, args.finetune_epochs, seed))
            if seed == args.seeds[0]:
                lats[kind] = latency(model, row, data, args.repeats)
            runs.append(row)
            print(f"{kind} seed {seed}: fp32 {row['fp32']:.2f}, int8 {row['tinyqml MinMax']:.2f}, "
                  f"TFLM bit-exact {row['TFLM bit-exact outputs']} ({time.time() - t0:.0f} s)", flush=True)
    la = load_average()
    meta = {"cpu": cpu_model(), "torch": torch.__version__, "threads": 1, "seeds": args.seeds,
            "epochs": args.epochs, "load_average_at_end": la}
    lines = ["## Int8 quantization on digits (issue 6)", "",
             f"CPU: {meta['cpu']}; torch {meta['torch']}, 1 thread; seeds {args.seeds}; {args.epochs} fp32 epochs", ""]
    for kind in ("SmallCNN", "TinyMobileNetV2"):
        lines += accuracy_table(runs, kind) + latency_table(lats[kind], kind)
    report = "\n".join(lines)
    print(report)
    clean = [{k: v for k, v in r.items() if not k.startswith("_")} for r in runs]
    stem = "quantization_quick" if args.quick else "quantization"
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / f"{stem}.md").write_text(report + "\n")
    (args.results_dir / f"{stem}.json").write_text(json.dumps({"meta": meta, "runs": clean, "latency": lats},
                                                              indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
