"""Compression primitives, measured: pruning (MACs predicted vs real, BN repair, host speed), quantization
(accuracy per bit-width, storage), the real int8 path in onnxruntime, test-time adaptation per shift and severity,
and evaluator throughput against onnxruntime.

    python bench/bench_compression.py --quick                 # seconds, digits (CI smoke test)
    python bench/bench_compression.py --data-dir ../shared/data   # full, CIFAR-10 (about 15 min on 2 cores)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from autocompress.compress import LayerSetting, Policy
from autocompress.compress.adaptation import ADAPTATIONS
from autocompress.compress.evaluator import EvaluatorOptions, PolicyEvaluator
from autocompress.compress.onnx_export import export_onnx, ort_predict, ort_session, quantize_int8
from autocompress.data import load_dataset
from autocompress.data.shifts import SHIFTS, Shift
from autocompress.hardware.measure import ort_latency, torch_latency
from autocompress.models import load_model
from bench.common import publish, rows_table


def evaluator_for(model_name: str, splits: Any, images: int, repair: bool = True) -> PolicyEvaluator:
    info = splits.info
    pretrained = model_name in ("resnet20", "vgg11", "mobilenetv2", "digits-cnn")
    model = load_model(model_name, info.num_classes, info.input_shape, info.name, pretrained=pretrained)
    return PolicyEvaluator(
        model,
        info,
        splits.val_x[:images],
        splits.val_y[:images],
        splits.train_x[:2048],
        EvaluatorOptions(bn_repair=repair),
    )


def pruning_rows(models: list[str], splits: Any, images: int, repeats: int) -> list[dict[str, Any]]:
    rows = []
    for name in models:
        with_repair, without = evaluator_for(name, splits, images), evaluator_for(name, splits, images, repair=False)
        base_latency = torch_latency(with_repair.model, splits.info.input_shape, repeats=repeats).median_ms
        for keep in (1.0, 0.75, 0.5):
            policy = Policy(name, LayerSetting(keep=keep))
            scored = with_repair.evaluate(policy)
            pruned = with_repair.pruned_copy(policy)
            from autocompress.compress import count_macs

            rows.append(
                {
                    "model": name,
                    "keep": keep,
                    "predicted_macs": scored.macs,
                    "measured_macs": count_macs(pruned, splits.info.input_shape),
                    "params": sum(p.numel() for p in pruned.parameters()),
                    "acc_no_repair": without.evaluate(policy).accuracy,
                    "acc_bn_repair": scored.accuracy,
                    "latency_ms": torch_latency(pruned, splits.info.input_shape, repeats=repeats).median_ms,
                    "speedup": base_latency / torch_latency(pruned, splits.info.input_shape, repeats=repeats).median_ms,
                }
            )
    return rows


def quantization_rows(evaluator: PolicyEvaluator, name: str) -> list[dict[str, Any]]:
    rows = []
    for wbits, abits in [(32, 32), (16, 16), (8, 8), (6, 8), (5, 8), (4, 8), (3, 8), (2, 8), (8, 32)]:
        result = evaluator.evaluate(Policy(name, LayerSetting(wbits=wbits, abits=abits)))
        rows.append(
            {"wbits": wbits, "abits": abits, "accuracy": result.accuracy, "storage_bytes": result.storage_bytes}
        )
    return rows


def int8_rows(models: list[str], splits: Any, images: int, repeats: int) -> list[dict[str, Any]]:
    rows = []
    for name in models:
        evaluator = evaluator_for(name, splits, images)
        calib = [evaluator.normalize(splits.train_x[i : i + 128]) for i in range(0, 512, 128)]
        for keep in (1.0, 0.5):
            pruned = evaluator.pruned_copy(Policy(name, LayerSetting(keep=keep)))
            with tempfile.TemporaryDirectory() as tmp:
                fp32 = export_onnx(pruned, splits.info.input_shape, Path(tmp) / "m.onnx")
                int8 = quantize_int8(fp32, Path(tmp) / "m.int8.onnx", calib)
                sessions = {"fp32": ort_session(fp32), "int8": ort_session(int8)}
                inputs = evaluator.val_inputs(None)
                row: dict[str, Any] = {"model": name, "keep": keep}
                for kind, session in sessions.items():
                    row[f"acc_{kind}"] = float(
                        (ort_predict(session, inputs).argmax(1) == evaluator.val_labels).float().mean()
                    )
                    for batch in (1, 64):
                        timing = ort_latency(session, splits.info.input_shape, batch, repeats=repeats)
                        row[f"{kind}_b{batch}_ms"] = timing.median_ms
                rows.append(row)
    return rows


def adaptation_rows(
    evaluator: PolicyEvaluator, name: str, shifts: list[str], severities: list[int]
) -> list[dict[str, Any]]:
    rows = []
    for shift_name in shifts:
        for severity in severities:
            shift = Shift(shift_name, severity)
            row: dict[str, Any] = {"shift": shift_name, "severity": severity, "drift": evaluator.drift(shift)}
            for method in ADAPTATIONS:
                row[method] = evaluator.evaluate(Policy(name, adapt=method), shift).accuracy
            rows.append(row)
    return rows


def throughput_rows(evaluator: PolicyEvaluator, name: str, repeats: int) -> list[dict[str, Any]]:
    rows = []
    inputs = evaluator.val_inputs(None)
    for keep in (1.0, 0.5):
        pruned = evaluator.pruned_copy(Policy(name, LayerSetting(keep=keep)))
        torch_s = min(_timed(lambda m=pruned: evaluator.accuracy(m, inputs)) for _ in range(repeats))
        with tempfile.TemporaryDirectory() as tmp:
            session = ort_session(export_onnx(pruned, evaluator.info.input_shape, Path(tmp) / "m.onnx"))
            ort_s = min(_timed(lambda s=session: ort_predict(s, inputs)) for _ in range(repeats))
        rows.append(
            {
                "keep": keep,
                "images": len(inputs),
                "torch_ips": len(inputs) / torch_s,
                "ort_fp32_ips": len(inputs) / ort_s,
            }
        )
    return rows


def _timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits only, seconds; prints, writes nothing")
    parser.add_argument("--data-dir", default=None, help="CIFAR-10 folder (default: $AUTOCOMPRESS_DATA_DIR)")
    parser.add_argument("--images", type=int, default=2000, help="val images per evaluation")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.quick:
        splits, models, main_model, images, repeats = load_dataset("digits"), ["digits-cnn"], "digits-cnn", 180, 3
        shifts, severities = ["gaussian_noise", "contrast"], [3]
    else:
        splits = load_dataset("cifar10", args.data_dir)
        models, main_model, images, repeats = ["resnet20", "mobilenetv2", "vgg11"], "resnet20", args.images, 30
        shifts, severities = sorted(SHIFTS), [1, 2, 3, 4, 5]
    main_eval = evaluator_for(main_model, splits, images)
    results = {
        "pruning": pruning_rows(models + ([] if args.quick else ["torchvision:resnet18"]), splits, images, repeats),
        "quantization": quantization_rows(main_eval, main_model),
        "int8": int8_rows(models, splits, images, repeats),
        "adaptation": adaptation_rows(main_eval, main_model, shifts, severities),
        "throughput": throughput_rows(main_eval, main_model, 3),
    }
    body = render(results, main_model, images)
    publish("compression", "Compression primitives (issue 3)", body, results, args.quick)


def render(results: dict[str, list[dict[str, Any]]], main_model: str, images: int) -> str:
    pruning_note = "torchvision:resnet18 has no trained weights here; its rows show that it prunes and runs."
    sections = [
        (
            "### Pruning: predicted vs measured MACs, BatchNorm repair, host speed (torch, batch 1)\n\n" + pruning_note,
            "pruning",
        ),
        (f"### Quantization of {main_model} (fake quant; weights per-channel, activations per-tensor)", "quantization"),
        ("### Real int8 in onnxruntime (static QDQ) vs fp32: accuracy and latency", "int8"),
        (f"### Test-time adaptation of {main_model}: accuracy per shift and severity", "adaptation"),
        (f"### Evaluator throughput ({main_model}): torch eager at batch 500 vs onnxruntime fp32", "throughput"),
    ]
    intro = f"Accuracies on the first {images} val images; latencies are medians of repeats at batch 1 on the host."
    return "\n\n".join([intro, *(f"{title}\n\n{rows_table(results[key])}" for title, key in sections)])


if __name__ == "__main__":
    main()
