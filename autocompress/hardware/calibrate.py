"""Calibrate the host's device profile from measurements, and validate the cost model against measured latency.

Measurements use onnxruntime (fp32, CPU provider), the kind of runtime a device deploys with: BatchNorm folded,
activations fused, no Python in the loop. Each network's latency is the minimum over interleaved rounds of the
median of 30 calls at batch 1 (see :func:`measure_networks` for why).

The fit uses whole networks: pruned variants of three architectures whose different mixes of k×k, 1×1 and
depthwise work separate the per-class rates. onnxruntime's per-node profiler was tried first and dropped: its
per-node times include profiling overhead (their sum was twice the unprofiled run on ResNet-20 here), which
mis-states exactly the small layers that pruning produces.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from autocompress.compress.layers import LayerTable, build_layer_table
from autocompress.compress.onnx_export import export_onnx, ort_session
from autocompress.compress.pruning import ChannelPruner
from autocompress.hardware.cost_model import CostModel, LayerBits
from autocompress.hardware.graph import GraphInfo, analyse
from autocompress.hardware.measure import time_callable
from autocompress.hardware.profiles import OP_CLASSES, DeviceProfile

log = logging.getLogger(__name__)
CALIBRATION_MODELS = ("resnet20", "mobilenetv2", "vgg11")
FITTED_AS = {"conv_kxk": "conv_kxk", "conv_1x1": "conv_1x1", "depthwise": "depthwise", "linear": "conv_1x1"}
FIT_CLASSES = ("conv_kxk", "conv_1x1", "depthwise")


@dataclass(frozen=True)
class Variant:
    """A pruned network used for calibration or validation, with its unpruned model's table and graph."""

    model: str
    keep: dict[int, float]
    net: nn.Module
    table: LayerTable
    graph: GraphInfo
    kept: dict[int, int]


def random_variants(
    models: Sequence[str], count: int, seed: int, build: Callable[[str], nn.Module], round_to: int = 8
) -> list[Variant]:
    """``count`` pruned variants spread over ``models``, with random keep ratios in [0.25, 1] per group (30 % of
    them uniform) and channel counts rounded to ``round_to`` as a search for the device would: onnxruntime's
    blocked convolutions take channels in SIMD blocks (16 with AVX-512), and other counts run up to 2x slower."""
    rng = random.Random(seed)
    bases = {name: build(name).eval() for name in models}
    tables = {name: build_layer_table(model, (3, 32, 32)) for name, model in bases.items()}
    graphs = {name: analyse(model, tables[name]) for name, model in bases.items()}
    pruners = {name: ChannelPruner(model, tables[name]) for name, model in bases.items()}
    variants = []
    for i in range(count):
        name = models[i % len(models)]
        table = tables[name]
        uniform, level = rng.random() < 0.3, rng.uniform(0.25, 1.0)
        keep = {g.id: level if uniform else rng.uniform(0.25, 1.0) for g in table.groups}
        kept = table.kept_channels(keep, round_to)
        variants.append(Variant(name, keep, pruners[name].prune(kept), table, graphs[name], kept))
    return variants


def peak_gmacs(threads: int) -> float:
    """fp32 GMAC/s of a large matrix product on this machine (best of 10)."""
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


def measure_networks(variants: list[Variant], threads: int, workdir: Path, rounds: int = 5) -> list[float]:
    """Whole-network onnxruntime latency (ms, batch 1) of each variant: the minimum over ``rounds`` interleaved
    rounds of the median of 30 calls.

    This 2-core VM's speed drifts by up to 3x over minutes (other tenants; seen with nothing else running here), so
    variants are measured in interleaved rounds and each keeps its best round: interference only ever adds time,
    and the median inside a round discards single-call outliers.
    """
    sessions = []
    for i, variant in enumerate(variants):
        path = export_onnx(variant.net, variant.table.input_shape, workdir / f"net{i}.onnx")
        sessions.append((ort_session(path, threads), np.zeros((1, *variant.table.input_shape), np.float32)))
    best = [float("inf")] * len(variants)
    for _ in range(rounds):
        for i, (session, x) in enumerate(sessions):
            run = lambda s=session, x=x: s.run(None, {"input": x})  # noqa: E731
            best[i] = min(best[i], time_callable(run, warmup=10, repeats=30, warmup_s=0.1).median_ms)
    return best


def predict_ms(profile: DeviceProfile, variant: Variant) -> float:
    """The cost model's fp32 latency of a variant on ``profile``."""
    bits = [LayerBits(32, 32)] * len(variant.table.layers)
    return CostModel(variant.table, variant.graph, profile).predict(variant.kept, bits).latency_ms


def fit_profile(base: DeviceProfile, networks: list[tuple[Variant, float]]) -> DeviceProfile:
    """Fit per-class rates, the activation-traffic bandwidth and the overheads to whole-network latencies.

    A linear non-negative least-squares fit (µs = Σ MMACs × µs/MMAC per class + layers × overhead + constant)
    seeds a fit of the cost model's own form (max of compute and traffic, plus overheads) on log-ratio error.
    Classifiers hold too few MACs to fit a rate of their own; a linear layer counts as a 1×1 conv on a 1×1 map.
    The profile's peak is raised to the fastest fitted rate where that beats the matmul measurement.
    """
    from scipy.optimize import least_squares, nnls

    rows, target = [], []
    for variant, ms in networks:
        per_class = dict.fromkeys(FIT_CLASSES, 0.0)
        for layer, shape in zip(variant.table.layers, variant.table.shapes(variant.kept), strict=True):
            per_class[FITTED_AS[layer.op_class]] += shape.macs / 1e6
        rows.append([per_class[c] for c in FIT_CLASSES] + [len(variant.table.layers), 1.0])
        target.append(ms * 1e3)
    coef, _ = nnls(np.array(rows), np.array(target))
    matmul = base.peak_gmacs["fp32"]
    seed = [1e3 / c if c > 0 else matmul for c in coef[:3]] + [base.memory_bandwidth_gbps, coef[3] + 0.1, coef[4] + 1]

    def profile_of(x: np.ndarray) -> DeviceProfile:
        rates = dict(zip(FIT_CLASSES, x[:3], strict=True))
        peak = max(matmul, *rates.values())
        efficiency = {op: {"fp32": float(rates[FITTED_AS[op]] / peak)} for op in OP_CLASSES}
        return replace(
            base,
            peak_gmacs={"fp32": float(peak)},
            efficiency=efficiency,
            memory_bandwidth_gbps=float(x[3]),
            layer_overhead_us=float(x[4]),
            inference_overhead_us=float(x[5]),
        )

    def residuals(log_x: np.ndarray) -> np.ndarray:
        profile = profile_of(np.exp(log_x))
        return np.array([np.log(predict_ms(profile, v) / ms) for v, ms in networks])

    lower = np.log([matmul * 1e-4] * 3 + [0.1, 1e-3, 1e-3])
    upper = np.log([matmul * 4] * 3 + [1e4, 1e3, 1e5])
    x0 = np.clip(np.log(np.maximum(seed, 1e-3)), lower + 1e-6, upper - 1e-6)
    best = profile_of(np.exp(least_squares(residuals, x0, bounds=(lower, upper)).x))
    return replace(
        best,
        peak_gmacs={"fp32": round(best.peak_gmacs["fp32"], 2)},
        efficiency={op: {"fp32": round(r["fp32"], 4)} for op, r in best.efficiency.items()},
        memory_bandwidth_gbps=round(best.memory_bandwidth_gbps, 3),
        layer_overhead_us=round(best.layer_overhead_us, 2),
        inference_overhead_us=round(best.inference_overhead_us, 1),
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


def _rows(profile: DeviceProfile, networks: list[tuple[Variant, float]]) -> list[ValidationRow]:
    rows = []
    for variant, ms in networks:
        macs = sum(s.macs for s in variant.table.shapes(variant.kept))
        mean_keep = statistics.mean(variant.keep.values())
        rows.append(ValidationRow(variant.model, mean_keep, macs, predict_ms(profile, variant), ms))
    return rows


def calibrate_and_validate(
    base: DeviceProfile,
    build: Callable[[str], nn.Module],
    threads: int,
    calibrate_count: int = 24,
    validate_count: int = 24,
    seed: int = 1,
    progress: Callable[[str], None] = log.info,
) -> tuple[DeviceProfile, list[ValidationRow]]:
    """Fit the host profile on ``calibrate_count`` variants (seed 0) and test it on ``validate_count`` others
    (``seed``), all measured in the same interleaved rounds so that the machine's drift affects both alike."""
    profile = replace(
        base, peak_gmacs={"fp32": round(peak_gmacs(threads), 2)}, memory_bandwidth_gbps=round(bandwidth_gbps(), 2)
    )
    progress("building pruned variants")
    fit_set = random_variants(CALIBRATION_MODELS, calibrate_count, 0, build, base.channel_rounding)
    test_set = random_variants(CALIBRATION_MODELS, validate_count, seed, build, base.channel_rounding)
    progress(f"measuring {calibrate_count + validate_count} networks in interleaved rounds")
    with tempfile.TemporaryDirectory() as tmp:
        measured = measure_networks(fit_set + test_set, threads, Path(tmp))
    progress("fitting the profile")
    fitted = fit_profile(profile, list(zip(fit_set, measured[:calibrate_count], strict=True)))
    return fitted, _rows(fitted, list(zip(test_set, measured[calibrate_count:], strict=True)))


def validate(
    profile: DeviceProfile,
    build: Callable[[str], nn.Module],
    threads: int,
    count: int = 24,
    seed: int = 1,
    progress: Callable[[str], None] = log.info,
) -> list[ValidationRow]:
    """Predict and measure ``count`` random pruned variants with an existing profile."""
    variants = random_variants(CALIBRATION_MODELS, count, seed, build, profile.channel_rounding)
    progress(f"measuring {count} networks in interleaved rounds")
    with tempfile.TemporaryDirectory() as tmp:
        measured = measure_networks(variants, threads, Path(tmp))
    return _rows(profile, list(zip(variants, measured, strict=True)))


def summarize(rows: list[ValidationRow]) -> dict[str, float]:
    errors = sorted(r.abs_pct_error for r in rows)
    by_model = {
        m: statistics.median([r.abs_pct_error for r in rows if r.model == m]) for m in sorted({r.model for r in rows})
    }
    return {
        "variants": len(rows),
        "median_abs_pct_error": statistics.median(errors),
        "p90_abs_pct_error": errors[min(len(errors) - 1, round(0.9 * (len(errors) - 1)))],
        **{f"median_abs_pct_error_{m}": e for m, e in by_model.items()},
    }


def profile_to_yaml(profile: DeviceProfile, note: str) -> str:
    """The YAML text of a calibrated profile, with how it was measured."""
    data = asdict(profile)
    data["source_note"] = note
    header = f"# Calibrated on this machine by `autocompress profile --device host` on {time.strftime('%Y-%m-%d')}.\n"
    return header + yaml.safe_dump(data, sort_keys=False, width=110)


def host_template() -> DeviceProfile:
    """A starting host profile: memory and disk read from the system, compute to be fitted, power estimated."""
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
        legal_wbits=[2, 4, 8, 16, 32],  # fake-quantized storage; onnxruntime computes int8 or fp32
        legal_abits=[8, 16, 32],
        channel_rounding=_simd_channels(),
    )


def _simd_channels() -> int:
    """Channels per SIMD block of onnxruntime's blocked (NCHWc) convolutions: 16 with AVX-512, else 8."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return 8
    return 16 if " avx512f" in flags else 8
