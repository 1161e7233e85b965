"""An adaptive package: several compression configurations of one run, and a controller that picks one per context.

AdaSpring (Liu et al., IMWUT 2021) and CAQ (IEEE IoT-J 2022) keep a model adapting on the device as its context
changes, switching among retraining-free configurations. Here the configurations come from a search's Pareto
front, each applied for real (channels removed, least-squares reconstruction, rounded weights, ONNX verified against
PyTorch — :func:`autocompress.export.export_run`), and the controller is a plain JSON table any runtime can read:
for each configuration its accuracy and the costs the cost model predicts at a grid of link bandwidths, plus the
deployment's limits and the rule that maps a context to a configuration (:mod:`autocompress.runtime` implements it).

Package layout::

    DIR/controller.json         the table, the rule, the input statistics and the drift monitor's threshold
    DIR/configs/cK/model.onnx   configuration K (and its model.pt, policy.json, report.md)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autocompress.compress.policy import Policy
from autocompress.compress.reconstruction import check_mode
from autocompress.data import Normalizer
from autocompress.env import build_workload
from autocompress.env.context import Context
from autocompress.errors import AutoCompressError
from autocompress.export import ExportOptions, export_run
from autocompress.hardware.graph import analyse
from autocompress.runs import atomic_write_json
from autocompress.search.record import RunRecord

log = logging.getLogger(__name__)

FORMAT = 1
BANDWIDTH_GRID = (0.0, 0.1, 0.25, 0.5, 1.0)  # fractions of the link's nominal bandwidth; 0: no link
MONITOR_WINDOW = 32  # inputs per drift-monitor window
RULE = (
    "feasible: peak_memory_bytes <= ram_bytes * free_memory, storage_bytes <= flash_bytes, and at the context's "
    "bandwidth (the grid point at or below it; split configurations need a link) latency_ms <= the latency budget "
    "and energy_mj <= the hard energy budget * battery. The reference is the most accurate configuration feasible "
    "in worst_context (no link, the least battery and memory, the tightest latency budget): the model one would "
    "ship alone. objective 'energy': among feasible configurations whose accuracy is at least the reference's minus "
    "accuracy_tolerance, the one with the least energy (if none, the most accurate feasible). objective 'accuracy': "
    "the least energy within accuracy_tolerance of the most accurate feasible one. If none is feasible, the one with "
    "the least latency (a violation, logged)."
)
OBJECTIVES = ("energy", "accuracy")


@dataclass(frozen=True)
class AdaptiveOptions:
    """What ``autocompress export --adaptive`` writes.

    Args:
        configs: Configurations to ship (at most the Pareto front's size); the most accurate and the cheapest are
            always among them, the rest spread evenly over energy.
        reconstruct: Least-squares refit of each configuration (``sequential``, ``fast`` or ``none``).
        accuracy_tolerance: Accuracy the controller may give up for less energy (0.01: one point).
        objective: ``energy`` (the least energy that keeps the accuracy of the model one would ship alone) or
            ``accuracy`` (the most accurate configuration the context allows); see ``RULE``.
        test_images: Test images each configuration is measured on (default: all).
        data_dir: Dataset folder, when it moved since the search.
    """

    configs: int = 4
    reconstruct: str = "sequential"
    accuracy_tolerance: float = 0.01
    objective: str = "energy"
    test_images: int | None = None
    data_dir: str | None = None

    def __post_init__(self) -> None:
        check_mode(self.reconstruct)
        if self.configs < 1:
            raise AutoCompressError(f"configs >= 1 must hold, but got configs={self.configs}.", params=("configs",))
        if self.objective not in OBJECTIVES:
            raise AutoCompressError(
                f"objective must be one of {', '.join(OBJECTIVES)}, but got '{self.objective}'.", params=("objective",)
            )
        if not 0 <= self.accuracy_tolerance < 1:
            raise AutoCompressError(
                f"0 <= accuracy_tolerance < 1 must hold, but got {self.accuracy_tolerance}.",
                params=("accuracy_tolerance",),
            )


def choose_configurations(front: list[dict[str, Any]], count: int) -> list[int]:
    """Indices into the Pareto front (sorted by accuracy, best first): the most accurate, the least energy, the
    most accurate split configuration if the front has one, and the rest evenly spaced by energy rank."""
    if not front:
        raise AutoCompressError("an adaptive package needs a Pareto front, but the run has none; has it run?")
    by_energy = sorted(range(len(front)), key=lambda i: (front[i]["energy_mj"], -front[i]["accuracy"]))
    if count >= len(front):
        return sorted(by_energy, key=lambda i: -front[i]["accuracy"])
    picks = {0, by_energy[0]}
    splits = [i for i in range(len(front)) if (front[i].get("policy") or {}).get("split")]
    if splits and count > len(picks):  # a link the device can use is a context only a split configuration serves
        picks.add(splits[0])
    for rank in np.linspace(0, len(by_energy) - 1, count).round().astype(int):
        if len(picks) >= count:
            break
        picks.add(by_energy[int(rank)])
    return sorted(picks, key=lambda i: -front[i]["accuracy"])


def export_adaptive(run_dir: str | Path, out_dir: str | Path, options: AdaptiveOptions) -> dict[str, Any]:
    """Write the adaptive package of a run into ``out_dir``; returns the controller (also ``controller.json``)."""
    record = RunRecord.open(run_dir, "export")
    config, resolved = record.config, record.resolved
    deployment = resolved.deployment
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    picks = choose_configurations(record.front, options.configs)
    workload = build_workload(
        config.model, config.dataset, config.pretrained, config.weights, options.data_dir or config.data_dir,
        config.val_images, protect_first_last=resolved.space.protect_first_last,
    )  # fmt: skip
    evaluator, info, graph = workload.evaluator, workload.info, analyse(workload.model, workload.table)
    entries = []
    for k, index in enumerate(picks):
        folder = out / "configs" / f"c{k}"
        log.info("configuration %d/%d: pareto:%d → %s", k + 1, len(picks), index, folder)
        report = export_run(
            run_dir, folder,
            ExportOptions(policy=f"pareto:{index}", reconstruct=options.reconstruct, test_images=options.test_images,
                          data_dir=options.data_dir, latency_repeats=10),
        )  # fmt: skip
        policy = Policy.load(folder / "policy.json")
        entries.append(
            {
                "id": f"c{k}",
                "path": f"configs/c{k}/model.onnx",
                "pareto_index": index,
                "val_accuracy": evaluator.evaluate(policy).accuracy,  # clean: the front's was under a context
                "search_accuracy": record.front[index]["accuracy"],
                "test_accuracy": report["test_accuracy"],
                "macs_ratio": report["macs_ratio"],
                "split": policy.split,
                "adapt": policy.adapt,
                **_costs(deployment, evaluator, graph, policy),
            }
        )
    reference = _costs(deployment, evaluator, graph, Policy(config.model))
    controller = {
        "format": FORMAT,
        "run": str(record.folder),
        "model": config.model,
        "dataset": config.dataset,
        "input": {
            "shape": list(info.input_shape),
            "dtype": info.dtype,
            "scale": info.scale,
            "mean": list(info.mean) if info.mean else None,
            "std": list(info.std) if info.std else None,
        },
        "deployment": {
            "env": deployment.preset.name,
            "device": deployment.device.name,
            "link": deployment.link.name if deployment.link else None,
            "ram_bytes": deployment.device.ram_bytes,
            "flash_bytes": deployment.device.flash_bytes,
            "hard_budgets": deployment.budgets(None, hard=True),
            "soft_budgets": deployment.budgets(None, hard=False),
        },
        "bandwidth_grid": list(BANDWIDTH_GRID),
        "rule": RULE,
        "objective": options.objective,
        "accuracy_tolerance": options.accuracy_tolerance,
        "worst_context": _worst(deployment),
        "monitor": _monitor(evaluator, info),
        "configs": entries,
        "uncompressed": {"val_accuracy": evaluator.evaluate(Policy(config.model)).accuracy, **reference},
        "storage": _storage(entries, out),
    }
    atomic_write_json(out / "controller.json", controller)
    return controller


def _costs(deployment: Any, evaluator: Any, graph: Any, policy: Policy) -> dict[str, Any]:
    """Latency and energy per inference at each bandwidth of the grid (``None`` where a split has no link)."""
    latency: list[float | None] = []
    energy: list[float | None] = []
    report = None
    for scale in BANDWIDTH_GRID:
        if policy.split is not None and (scale == 0 or deployment.link is None):
            latency.append(None)
            energy.append(None)
            continue
        context = Context(battery=1.0, free_memory=1.0, bandwidth_scale=max(scale, 1e-6), latency_budget_ms=None,
                          shift=None)  # fmt: skip
        report = deployment.cost_model(evaluator.table, graph, context).predict_policy(policy)
        latency.append(report.latency_ms)
        energy.append(report.energy_mj)
    assert report is not None
    return {
        "latency_ms": latency,
        "energy_mj": energy,
        "storage_bytes": report.storage_bytes,
        "peak_memory_bytes": report.peak_memory_bytes,
    }


def _worst(deployment: Any) -> dict[str, Any]:
    spec = deployment.preset.context
    budget = min(spec.latency_budget_ms) if spec.latency_budget_ms else None
    return {"battery": min(spec.battery), "free_memory": min(spec.free_memory), "bandwidth_scale": 0.0,
            "latency_budget_ms": budget}  # fmt: skip


def _monitor(evaluator: Any, info: Any) -> dict[str, Any]:
    """The drift monitor's reference (training roughness), threshold and recovery level, from clean windows of the
    validation and training inputs (shuffled)."""
    from autocompress.runtime import roughness, window_drift_score

    inputs = Normalizer(info)(torch.cat([evaluator.val_images, evaluator.train_images])).numpy()
    reference = roughness(inputs)
    order = np.random.default_rng(0).permutation(len(inputs))
    scores = [
        window_drift_score(inputs[order[i : i + MONITOR_WINDOW]], reference)
        for i in range(0, len(inputs) - MONITOR_WINDOW + 1, MONITOR_WINDOW)
    ] or [window_drift_score(inputs, reference)]
    return {
        "window": MONITOR_WINDOW,
        # Measured on CIFAR-10 (windows of 32): clean 0.15 ± 0.06, at most 0.37; gaussian_noise:3 at least 0.47,
        # brightness:4 0.65, blur:3 0.37–0.60. The worst clean window plus one standard deviation separates them;
        # the runtime declares the drift over below the worst clean window (hysteresis, no flapping).
        "threshold": float(max(scores) + np.std(scores)),
        "recover_below": float(max(scores)),
        "clean_max": float(max(scores)),
        "clean_mean": float(np.mean(scores)),
        "roughness": reference.round(6).tolist(),
        "adapt_inputs": 256,
    }


def _storage(entries: list[dict[str, Any]], out: Path) -> dict[str, Any]:
    """The package's storage at the configurations' bits against its largest configuration alone."""
    total = sum(e["storage_bytes"] for e in entries)
    largest = max(e["storage_bytes"] for e in entries)
    on_disk = sum((out / e["path"]).stat().st_size for e in entries)
    return {
        "package_bytes": total,
        "largest_config_bytes": largest,
        "ratio_to_largest": total / largest,
        "onnx_bytes_on_disk": on_disk,
    }
