"""Calibrate the host's device profile from measurements, and validate the cost model against measured latency.

Measurements use onnxruntime (fp32, CPU provider), the kind of runtime a device deploys with: BatchNorm folded,
activations fused, no Python in the loop. Per-layer times come from onnxruntime's own profiler over whole-network
runs, so they include the cache and fusion effects of a real network; each layer's time is the median over runs.
Whole-network latency is the median over repeats after warm-up (see :mod:`autocompress.hardware.measure`).
"""

from __future__ import annotations

import json
import logging
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from autocompress.compress.layers import LayerTable, build_layer_table
from autocompress.compress.onnx_export import export_onnx
from autocompress.compress.pruning import ChannelPruner
from autocompress.hardware.cost_model import CostModel, LayerBits
from autocompress.hardware.graph import analyse
from autocompress.hardware.measure import time_callable
from autocompress.hardware.profiles import OP_CLASSES, DeviceProfile

log = logging.getLogger(__name__)
CALIBRATION_MODELS = ("resnet20", "mobilenetv2", "vgg11")
LAYER_OPS = {"Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul", "NchwcConv"}


@dataclass(frozen=True)
class Variant:
    """A pruned network used for calibration or validation."""

    model: str
    keep: dict[int, float]
    net: nn.Module
    table: LayerTable
    kept: dict[int, int]


def random_variants(models: Sequence[str], count: int, seed: int, build: Callable[[str], nn.Module]) -> list[Variant]:
    """``count`` pruned variants spread over ``models``, with random keep ratios in [0.25, 1] per group."""
    rng = random.Random(seed)
    variants = []
    for i in range(count):
        name = models[i % len(models)]
        model = build(name).eval()
        table = build_layer_table(model, (3, 32, 32))
        uniform = rng.random() < 0.3
        level = rng.uniform(0.25, 1.0)
        keep = {g.id: level if uniform else rng.uniform(0.25, 1.0) for g in table.groups}
        kept = table.kept_channels(keep)
        variants.append(Variant(name, keep, ChannelPruner(model, table).prune(kept), table, kept))
    return variants


def peak_gmacs(threads: int) -> float:
    """fp32 GMAC/s of a large matrix product on this machine (the practical peak)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    timing = time_callable(lambda: torch.mm(a, b), warmup=3, repeats=10)
    return 1024**3 / (timing.min_ms / 1e3) / 1e9


def bandwidth_gbps() -> float:
    """Copy bandwidth in GB/s (bytes read plus written) of a 128 MB buffer."""
    src = torch.empty(32 * 1024 * 1024)
    dst = torch.empty_like(src)
    timing = time_callable(lambda: dst.copy_(src), warmup=2, repeats=10)
    return 2 * src.numel() * 4 / (timing.median_ms / 1e3) / 1e9


def _session(path: Path, threads: int, profile_dir: str | None = None) -> object:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if profile_dir:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(profile_dir) / "ort")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def measure_network(variant: Variant, threads: int, repeats: int, workdir: Path) -> float:
    """Median whole-network onnxruntime latency (ms) at batch 1."""
    path = export_onnx(variant.net, variant.table.input_shape, workdir / "net.onnx")
    session = _session(path, threads)
    x = np.zeros((1, *variant.table.input_shape), np.float32)
    return time_callable(lambda: session.run(None, {"input": x}), warmup=10, repeats=repeats).median_ms  # type: ignore[attr-defined]


def measure_layers(variant: Variant, threads: int, runs: int, workdir: Path) -> list[tuple[str, float]]:
    """(layer name, median µs) for each conv/linear layer, from onnxruntime's profiler."""
    path = export_onnx(variant.net, variant.table.input_shape, workdir / "net.onnx")
    with tempfile.TemporaryDirectory(dir=workdir) as profile_dir:
        session = _session(path, threads, profile_dir)
        x = np.zeros((1, *variant.table.input_shape), np.float32)
        for _ in range(runs):
            session.run(None, {"input": x})  # type: ignore[attr-defined]
        events = json.loads(Path(session.end_profiling()).read_text())  # type: ignore[attr-defined]
    durations: dict[str, list[float]] = {}
    sizes: dict[str, int] = {}
    order: list[str] = []
    for event in events:
        op = event.get("args", {}).get("op_name")
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and op in LAYER_OPS:
            if event["name"] not in durations:
                order.append(event["name"])
                sizes[event["name"]] = int(event["args"].get("parameter_size", 0))
            durations.setdefault(event["name"], []).append(float(event["dur"]))
    return _match_layers(variant, order, sizes, {k: statistics.median(v[1:] or v) for k, v in durations.items()})


def _match_layers(
    variant: Variant, order: list[str], sizes: dict[str, int], median_us: dict[str, float]
) -> list[tuple[str, float]]:
    """Pair profiled nodes with layers by execution order and parameter bytes (weights plus folded bias)."""
    shapes = variant.table.shapes(variant.kept)
    unmatched = [
        (layer.name, 4 * (shape.params - (shape.out_channels if layer.has_bias else 0) + shape.out_channels))
        for layer, shape in zip(variant.table.layers, shapes, strict=True)
    ]
    pairs = []
    for node in order:
        hit = next((i for i, (_, size) in enumerate(unmatched) if size == sizes[node]), None)
        if hit is not None:
            pairs.append((unmatched.pop(hit)[0], median_us[node]))
    return pairs


def fit_rates(base: DeviceProfile, samples: list[tuple[str, int, float]]) -> DeviceProfile:
    """Least-squares fit of each op class's throughput from per-layer samples (op class, MACs, measured µs), with
    a shared per-layer intercept that absorbs kernel start-up; the efficiencies are rates over the fp32 peak."""
    classes = [c for c in OP_CLASSES if any(s[0] == c for s in samples)]
    design = np.array([[s[1] / 1e6 if s[0] == c else 0.0 for c in classes] + [1.0] for s in samples])
    target = np.array([s[2] for s in samples])
    from scipy.optimize import nnls

    coef, _ = nnls(design, target)
    peak = base.peak_gmacs["fp32"]
    efficiency = {op: dict(rates) for op, rates in base.efficiency.items()}
    for c, us_per_mmac in zip(classes, coef[:-1], strict=True):
        rate_gmacs = 1e3 / us_per_mmac if us_per_mmac > 0 else peak
        efficiency[c] = {"fp32": round(float(min(1.0, max(1e-3, rate_gmacs / peak))), 4)}
    return replace(base, efficiency=efficiency)


def fit_overheads(profile: DeviceProfile, networks: list[tuple[Variant, float]]) -> DeviceProfile:
    """Fit the per-layer and per-inference overheads on whole networks: what the layers' compute does not explain
    (element-wise adds, pooling, layout reorders, dispatch) is modelled as a cost per layer plus a constant."""
    from scipy.optimize import nnls

    zero = replace(profile, layer_overhead_us=0.0, inference_overhead_us=0.0)
    design = np.array([[len(v.table.layers), 1.0] for v, _ in networks])
    residual = np.array([ms * 1e3 - predict_ms(zero, v, v.net) * 1e3 for v, ms in networks])
    (per_layer, per_inference), _ = nnls(design, np.maximum(residual, 0.0))
    return replace(
        profile, layer_overhead_us=round(float(per_layer), 2), inference_overhead_us=round(float(per_inference), 1)
    )


@dataclass(frozen=True)
class ValidationRow:
    model: str
    mean_keep: float
    macs: int
    predicted_ms: float
    measured_ms: float

    @property
    def abs_pct_error(self) -> float:
        return abs(self.predicted_ms - self.measured_ms) / self.measured_ms * 100


def predict_ms(profile: DeviceProfile, variant: Variant, model: nn.Module) -> float:
    cost = CostModel(variant.table, analyse(model, variant.table), profile)
    bits = [LayerBits(32, 32)] * len(variant.table.layers)
    return cost.predict(variant.kept, bits).latency_ms


def calibrate_host(
    base: DeviceProfile,
    build: Callable[[str], nn.Module],
    threads: int,
    variants: int = 12,
    seed: int = 0,
    progress: Callable[[str], None] = log.info,
) -> DeviceProfile:
    """Measure peak, bandwidth, per-layer and whole-network latencies of pruned variants; fit the host profile."""
    profile = replace(
        base, peak_gmacs={"fp32": round(peak_gmacs(threads), 2)}, memory_bandwidth_gbps=round(bandwidth_gbps(), 2)
    )
    samples: list[tuple[str, int, float]] = []
    networks: list[tuple[Variant, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, variant in enumerate(random_variants(CALIBRATION_MODELS, variants, seed, build)):
            progress(f"calibrating on variant {i + 1}/{variants} ({variant.model})")
            shapes = dict(
                zip(
                    variant.table.names,
                    zip(variant.table.layers, variant.table.shapes(variant.kept), strict=True),
                    strict=True,
                )
            )
            for name, us in measure_layers(variant, threads, 40, Path(tmp)):
                samples.append((shapes[name][0].op_class, shapes[name][1].macs, us))
            networks.append((variant, measure_network(variant, threads, 30, Path(tmp))))
    return fit_overheads(fit_rates(profile, samples), networks)


def validate(
    profile: DeviceProfile,
    build: Callable[[str], nn.Module],
    threads: int,
    count: int = 24,
    seed: int = 1,
    progress: Callable[[str], None] = log.info,
) -> list[ValidationRow]:
    """Predict and measure ``count`` random pruned variants of the calibration architectures (other seeds)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, variant in enumerate(random_variants(CALIBRATION_MODELS, count, seed, build)):
            progress(f"validating variant {i + 1}/{count} ({variant.model})")
            measured = measure_network(variant, threads, 50, Path(tmp))
            predicted = predict_ms(profile, variant, variant.net)
            macs = sum(s.macs for s in variant.table.shapes(variant.kept))
            rows.append(ValidationRow(variant.model, statistics.mean(variant.keep.values()), macs, predicted, measured))
    return rows


def summarize(rows: list[ValidationRow]) -> dict[str, float]:
    errors = sorted(r.abs_pct_error for r in rows)
    return {
        "variants": len(rows),
        "median_abs_pct_error": statistics.median(errors),
        "p90_abs_pct_error": errors[min(len(errors) - 1, round(0.9 * (len(errors) - 1)))],
    }


def profile_to_yaml(profile: DeviceProfile, note: str) -> str:
    """The YAML text of a calibrated profile, with how it was measured."""
    import yaml

    data = asdict(profile)
    data["source_note"] = note
    header = f"# Calibrated on this machine by `autocompress profile --device host` on {time.strftime('%Y-%m-%d')}.\n"
    return header + yaml.safe_dump(data, sort_keys=False)


def host_template() -> DeviceProfile:
    """A starting host profile: memory and disk read from the system, compute and power to be fitted/estimated."""
    import os
    import shutil

    cores = os.cpu_count() or 1
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return DeviceProfile(
        name="host",
        description=f"this machine ({cores} cores), measured with onnxruntime fp32",
        kind="cpu",
        peak_gmacs={"fp32": 1.0},
        efficiency={op: {"fp32": 0.5} for op in OP_CLASSES},
        memory_bandwidth_gbps=1.0,
        layer_overhead_us=0.0,
        inference_overhead_us=0.0,
        ram_bytes=int(ram),
        flash_bytes=int(shutil.disk_usage("/").total),
        weights_in_ram=True,
        active_power_w=round(7.5 * cores, 1),  # estimate: ~7.5 W per busy server core
        idle_power_w=round(2.0 * cores, 1),  # estimate
        legal_wbits=[8, 16, 32],
        legal_abits=[8, 16, 32],
        channel_rounding=8,
    )
