"""An adaptive package: several compression configurations of one run, and a controller that picks one per context.

AdaSpring (Liu et al., IMWUT 2021) and CAQ (IEEE IoT-J 2022) keep a model adapting on the device as its context
changes, switching among retraining-free configurations. Here the configurations come from a search's Pareto
front, each applied for real (channels removed, least-squares reconstruction, rounded weights, ONNX verified against
PyTorch — :func:`autocompress.deploy.export.export_run`), and the package's manifest
(:mod:`~autocompress.deploy.manifest`) holds for each configuration its accuracy and the costs the cost model
predicts at a grid of link bandwidths, plus the deployment's limits; :mod:`~autocompress.deploy.runtime` picks one
per context by the rules of :mod:`autocompress.context_rules`.

Package layout (nothing in it points outside the folder; move it anywhere)::

    DIR/manifest.json           the typed, versioned manifest (configurations, costs, limits, input, drift monitor)
    DIR/configs/cK/model.onnx   configuration K, raw input in, BatchNorm kept as nodes for AdaBN on the device
                                (and its model.pt, policy.json, report.md)
    DIR/reference/model.onnx    the uncompressed model (raw input), for ``simulate``; the runtime never loads it
    DIR/actor.onnx              for runs of an RL agent: its trained actor (observation → per-layer action)

With ``share_weights`` the configurations are nested slices of one jointly refitted model
(:mod:`autocompress.compress.nesting`): ``DIR/shared.npz`` holds the shared tensors once and each configuration's
ONNX files become ``model.shared.onnx`` (and ``head``/``tail``) plus ``shared.json``
(:mod:`autocompress.deploy.shared_weights`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autocompress import context_rules
from autocompress.compress.finetune import FinetuneOptions
from autocompress.compress.layers import LayerTable
from autocompress.compress.nesting import nested_models, union_kept
from autocompress.compress.onnx_export import export_onnx, ort_predict, ort_session, with_raw_input
from autocompress.compress.policy import Policy
from autocompress.compress.quantization import CLIP_CANDIDATES
from autocompress.compress.reconstruction import check_mode
from autocompress.compress.union_training import private_names, train_union
from autocompress.data import Normalizer
from autocompress.deploy.export import ExportOptions, input_spec, render_report, write_export
from autocompress.deploy.manifest import Configuration, Costs, Limits, Manifest, Monitor, Reference
from autocompress.deploy.runtime import feature_names, input_features, window_drift_score
from autocompress.deploy.shared_weights import (
    REFS_FILE,
    SHARED_FILE,
    SUFFIX,
    load_store,
    materialize,
    round_rows,
    take,
)
from autocompress.env import build_workload
from autocompress.env.context import Context, worst_context
from autocompress.errors import AutoCompressError
from autocompress.hardware.graph import analyse
from autocompress.runs import atomic_folder, atomic_torch_save, atomic_write_json
from autocompress.search.record import RunRecord

log = logging.getLogger(__name__)

BANDWIDTH_GRID = (0.0, 0.1, 0.25, 0.5, 1.0)  # fractions of the link's nominal bandwidth; 0: no link
MONITOR_WINDOW = 32  # inputs per drift-monitor window
OBJECTIVES = ("energy", "accuracy")
LADDER = (1.0, 0.5, 0.25)


@dataclass(frozen=True)
class AdaptiveOptions:
    """What ``autocompress export --adaptive`` writes.

    Args:
        configs: Configurations to ship (at most the Pareto front's size); the most accurate and the cheapest are
            always among them, the rest spread evenly over energy.
        reconstruct: Least-squares refit of each configuration (``sequential``, ``fast`` or ``none``).
        accuracy_tolerance: Accuracy the controller may give up for less energy (0.01: one point).
        objective: ``energy`` (the least energy that keeps the accuracy of the model one would ship alone) or
            ``accuracy`` (the most accurate configuration the context allows); see
            :meth:`~autocompress.deploy.runtime.AdaptiveModel.choose`.
        test_images: Test images each configuration is measured on (default: all).
        val_images: Validation images each configuration's accuracy — what the controller and the pruning of
            dominated configurations compare, within ``accuracy_tolerance`` — is measured on (default: the whole
            validation split). Not the search's slice: at 500 images its standard error (~1.7 pt on CIFAR-10)
            exceeds the tolerance, and a ResNet-20 package then ran a configuration 3 pt less accurate on test as
            "within 1 pt" of the best.
        data_dir: Dataset folder, when it moved since the search.
        ladder: Fractions of the unpruned model's MACs (e.g. 1.0, 0.5, 0.25) at which configurations derived from
            the run's most accurate policy join the Pareto front's (:func:`ladder_policies`): a search at one budget
            gives configurations of about one size, a context that changes wants sizes from the full model down;
            ``()`` ships the front's alone. Configurations another one beats on accuracy, energy and latency at
            every bandwidth are left out.
        share_weights: Nest the configurations as slices of one union model refitted once (each keeps only its
            BatchNorm statistics and any weights rounded to fewer bits) and store shared tensors once
            (:mod:`autocompress.deploy.shared_weights`); otherwise each configuration is refitted on its own and stored
            whole (more accurate, larger).
        lift_bits: Raise each configuration's bits where the device runs them at the same predicted latency and
            energy and no limit breaks (:func:`lift_bits`); ``False`` ships the searched bits.
        train_epochs: Train the configurations once, together, as slices of one union model for this many epochs
            (:func:`~autocompress.compress.union_training.train_union`: every configuration each step, distilled
            from the unpruned model, each configuration's own BatchNorm statistics, quantization-aware below 8 bits; a
            checkpoint per epoch in ``OUT/training/``, resumed when found, removed when the package is written).
            Implies ``share_weights``.
        train_lr: Its starting learning rate (cosine schedule).
        train_per_step: Configurations each training step takes: 0 (default) every configuration every step, as
            Slimmable Networks train their switches; N the largest, the smallest and random middle ones up to N
            (3: the sandwich rule of universally slimmable networks, which have too many widths to train each).
        device: Where it trains: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        trust_code: Package a run whose config names code (``file.py:…``, ``pkg.mod:…``), importing it.
    """

    configs: int = 4
    reconstruct: str = "sequential"
    accuracy_tolerance: float = 0.01
    objective: str = "accuracy"
    test_images: int | None = None
    val_images: int | None = None
    data_dir: str | None = None
    share_weights: bool = False
    trust_code: bool = False
    ladder: tuple[float, ...] = LADDER
    lift_bits: bool = True
    train_epochs: int = 0
    train_lr: float = 0.01
    train_per_step: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        check_mode(self.reconstruct)
        if self.val_images is not None and (isinstance(self.val_images, bool) or self.val_images < 1):
            raise AutoCompressError(
                f"val_images >= 1 (or None: the whole validation split) must hold, but got {self.val_images}.",
                params=("val_images",),
            )
        if self.train_epochs < 0 or self.train_lr <= 0:
            raise AutoCompressError(
                f"train_epochs >= 0 and train_lr > 0 must hold, but got {self.train_epochs} and {self.train_lr}.",
                params=("train_epochs",),
            )
        per_step = self.train_per_step
        if isinstance(per_step, bool) or not isinstance(per_step, int) or per_step < 0 or per_step == 1:
            raise AutoCompressError(
                f"train_per_step must be 0 (every configuration every step) or >= 2, but got {self.train_per_step}; "
                "pass 3 for the sandwich rule.",
                params=("train_per_step",),
            )
        FinetuneOptions(epochs=self.train_epochs, lr=self.train_lr, device=self.device)  # checks the device
        if not all(isinstance(t, float | int) and 0 < t <= 1 for t in self.ladder):
            raise AutoCompressError(
                f"ladder must hold fractions of the model's MACs in (0, 1], but got {list(self.ladder)}.",
                params=("ladder",),
            )
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


def choose_configurations(
    front: list[dict[str, Any]], count: int, union_size: Callable[[Sequence[int]], float] | None = None
) -> list[int]:
    """Indices into the Pareto front (sorted by accuracy, best first): the most accurate, the least energy, the
    most accurate split configuration if the front has one, and the rest evenly spaced by energy rank.

    With ``union_size`` (the size of the union model of some configurations, for nested packages that share their
    weights) the rest are chosen one at a time to grow the union least (to 1 % of it), the widest apart in energy
    rank from those already chosen among equals: configurations that nest inside the union cost almost nothing to
    store, one that does not makes every shared tensor larger."""
    if not front:
        raise AutoCompressError("an adaptive package needs a Pareto front, but the run has none; has it run?")
    by_energy = sorted(range(len(front)), key=lambda i: (front[i]["energy_mj"], -front[i]["accuracy"]))
    if count >= len(front):
        return sorted(by_energy, key=lambda i: -front[i]["accuracy"])
    picks = {0, by_energy[0]}
    splits = [i for i in range(len(front)) if (front[i].get("policy") or {}).get("split")]
    if splits and count > len(picks):  # a link the device can use is a context only a split configuration serves
        picks.add(splits[0])
    if union_size is not None:
        rank = {index: r for r, index in enumerate(by_energy)}
        while len(picks) < count:
            base = union_size(sorted(picks))
            cost = {
                i: (round(union_size([*sorted(picks), i]) / base - 1, 2), -min(abs(rank[i] - rank[p]) for p in picks))
                for i in range(len(front))
                if i not in picks
            }
            picks.add(min(cost, key=cost.__getitem__))
    for position in np.linspace(0, len(by_energy) - 1, count).round().astype(int):
        if len(picks) >= count:
            break
        picks.add(by_energy[int(position)])
    return sorted(picks, key=lambda i: -front[i]["accuracy"])


LADDER_FLOOR = 0.125  # no derived layer keeps fewer than 1/8 of its channels: a 1-channel layer cannot be trained back


def ladder_policies(base: Policy, table: LayerTable, targets: Sequence[float]) -> list[Policy]:
    """Policies derived from ``base`` at fractions ``targets`` of the model's MACs: every layer keeps
    ``s × keep`` of its channels, clipped to [``LADDER_FLOOR``, 1] (a width multiplier, as slimmable networks use:
    the search's relative widths stay, only the scale changes), ``s`` found by bisection for the MACs target (the
    smallest reachable at the floor where the target is below it); bits, adaptation and rounding as ``base``, no
    split. A bits-only ``base`` is scaled from full width. The widest rung (every layer whole) also turns
    ``base``'s techniques off (a low-rank layer is whole again), so the top rung is the whole model, not ``base``'s
    factorised layers at full width; narrower rungs keep ``base``'s values (a rank between two others does not yet
    rebuild from a nested package's shared ``model.pt``)."""
    names = [layer.name for layer in table.layers]
    keep = {n: base.setting(n).keep for n in names}
    techniques = base.technique_values(table)  # per layer, a default's only where it applies

    def at(scale: float) -> Policy:
        layers = {
            n: dataclasses.replace(
                base.setting(n),
                keep=float(min(1.0, max(LADDER_FLOOR, scale * keep[n]))),
                techniques={} if scale >= widest else techniques.get(n, {}),
            )
            for n in names
        }
        return dataclasses.replace(base, layers=layers, split=None)

    def ratio(policy: Policy) -> float:
        return policy.macs(table) / table.macs

    widest = 1.0 / min([*keep.values(), 1.0])  # every layer whole (and every technique off)
    policies = []
    for target in targets:
        if ratio(at(widest)) <= target:
            policies.append(at(widest))
            continue
        low, high = 0.0, widest  # ratio(at(low)) <= target or low is the floor; ratio(at(high)) > target
        for _ in range(40):
            middle = (low + high) / 2
            low, high = (middle, high) if ratio(at(middle)) <= target else (low, middle)
        policies.append(at(low))
    return policies


def lift_bits(
    policy: Policy,
    table: LayerTable,
    legal: dict[str, Sequence[int]],
    costs_of: Callable[[Policy], Costs],
    broken: Callable[[Costs], set[str]],
) -> Policy:
    """``policy`` with each layer's weight and activation bits (``legal``: per field, the device's values) raised
    to the most the device runs at the same predicted latency and energy at every bandwidth, as long as no limit
    the policy met (``broken``: the hard limits costs break in the worst context — storage, flash, RAM) breaks.

    A search keeps bits a device gains nothing from when nothing charges for them: on a Raspberry Pi 4, 2- and
    4-bit weights only save storage (they run as int8) and 32 GB of flash never binds, so a search leaves them
    where its sampler put them. The lifted configuration costs the same and is more accurate — the searched one is
    dominated by it, and an adaptive package should hold no dominated configuration."""
    base = costs_of(policy)
    allowed = broken(base)
    current = policy
    for name in table.names:
        for field in ("wbits", "abits"):
            have = getattr(current.setting(name), field)
            for bits in sorted((b for b in legal[field] if b > have), reverse=True):
                setting = current.setting(name)
                raised = replace(setting, wbits=bits) if field == "wbits" else replace(setting, abits=bits)
                layers = {**current.layers, name: raised}
                trial = dataclasses.replace(current, layers=layers)
                costs = costs_of(trial)
                if _same_time_and_energy(costs, base) and broken(costs) <= allowed:
                    current = trial
                    break
    return current


def lifted_policies(
    policies: Sequence[Policy], table: LayerTable, deployment: Any, evaluator: Any, graph: Any
) -> list[Policy]:
    """Each policy through :func:`lift_bits` for the deployment's device, checked in its worst context; a storage
    budget counts whether it is hard or soft (a soft one is what the user would rather keep)."""
    worst = worst_context(deployment.preset.context)
    storage = [
        b["storage_bytes"] for hard in (True, False) if "storage_bytes" in (b := deployment.budgets(worst, hard=hard))
    ]
    hard = {"storage_bytes": min(storage)} if storage else {}
    device = deployment.device

    def broken(costs: Costs) -> set[str]:
        values = {"storage_bytes": costs.storage_bytes, "peak_memory_bytes": costs.peak_memory_bytes}
        return set(
            context_rules.violations(values, hard, device.ram_bytes, device.flash_bytes, worst.free_memory or 1.0)
        )

    legal = {"wbits": device.legal_wbits, "abits": device.legal_abits}
    return [lift_bits(p, table, legal, lambda q: _costs(deployment, evaluator, graph, q), broken) for p in policies]


def _rule(per_step: int, count: int) -> str:
    """How the union training picked each step's configurations, in words (the manifest's ``training.rule``)."""
    if per_step == 0 or per_step >= count:
        return "every configuration every step"
    if per_step == 2:
        return "the largest and the smallest configuration every step"
    return f"sandwich: the largest, the smallest and {per_step - 2} random middle configuration(s) each step"


def _same_time_and_energy(a: Costs, b: Costs) -> bool:
    pairs = zip((*a.latency_ms, *a.energy_mj), (*b.latency_ms, *b.energy_mj), strict=True)
    return all(x is y is None or (x is not None and y is not None and math.isclose(x, y)) for x, y in pairs)


def export_adaptive(run_dir: str | Path, out_dir: str | Path, options: AdaptiveOptions) -> dict[str, Any]:
    """Write the adaptive package of a run into ``out_dir``; returns its manifest (also ``manifest.json``) as a
    dict. The package is built beside ``out_dir`` and swapped in whole (:func:`autocompress.runs.atomic_folder`):
    a kill, a full disk or a second export meanwhile leaves the earlier package as it was; the union training's
    checkpoint survives a kill and is resumed by the same command."""
    record = RunRecord.open(run_dir, "export", options.trust_code)  # checked before any folder is made
    with atomic_folder(Path(out_dir), keep_on_retry=("training",)) as staging:
        return _write_package(record, run_dir, staging, options)


def _write_package(record: RunRecord, run_dir: str | Path, out: Path, options: AdaptiveOptions) -> dict[str, Any]:
    config, resolved = record.config, record.resolved
    deployment = resolved.deployment
    workload = build_workload(
        config.model,
        config.dataset,
        config.pretrained,
        config.weights,
        options.data_dir or config.data_dir,
        options.val_images,
        protect_first_last=resolved.space.protect_first_last,
    )
    evaluator, info, graph = workload.evaluator, workload.info, analyse(workload.model, workload.table)
    front = [Policy.from_dict(e["policy"], f"pareto:{i} of '{record.folder}'") for i, e in enumerate(record.front)]
    nest = options.share_weights or options.train_epochs > 0
    union_size = _union_params(front, workload.table) if nest else None
    picks = choose_configurations(record.front, options.configs, union_size)
    policies = [front[i] for i in picks]
    origins = [f"pareto:{i}" for i in picks]
    for target, derived in zip(options.ladder, ladder_policies(front[0], workload.table, options.ladder), strict=True):
        picks.append(-1)
        policies.append(derived)
        origins.append(f"ladder:{target:g} of pareto:0")
    if options.lift_bits:
        lifted = lifted_policies(policies, workload.table, deployment, evaluator, graph)
        for k, (before, after) in enumerate(zip(policies, lifted, strict=True)):
            if before.key() != after.key():
                origins[k] += ", bits lifted"
                log.info("%s: bits raised where the device runs them at the same latency and energy", origins[k])
        policies = lifted
    first = {policy.key(): k for k, policy in reversed(list(enumerate(policies)))}
    keep = sorted(first.values())  # a policy twice (a ladder rung as a front's, two lifted alike): the first stays
    picks, policies, origins = [picks[k] for k in keep], [policies[k] for k in keep], [origins[k] for k in keep]
    models: list[Any] = [None] * len(picks)
    union: torch.nn.Module | None = None
    maps: list[dict[str, list[list[int] | None]]] = []
    training = None
    if nest:
        union, models, maps = nested_models(evaluator, policies, options.reconstruct)
    if union is not None and options.train_epochs > 0:
        table = workload.table
        sizes = [float(p.macs(table)) for p in policies]
        bits = [{layer.name: p.setting(layer.name).wbits for layer in table.layers} for p in policies]
        train = FinetuneOptions(epochs=options.train_epochs, lr=options.train_lr, device=options.device)
        result = train_union(
            union,
            models,
            maps,
            sizes,
            bits,
            workload.splits,
            train,
            evaluator.model,
            out / "training",
            options.train_per_step,
        )
        training = {
            "epochs": options.train_epochs,
            "lr": options.train_lr,
            "rule": _rule(options.train_per_step, len(models)),
            "batchnorm": "own scale, shift and statistics per configuration",
        } | result.to_dict()
        # each configuration trained its BatchNorm scale and shift as its own: stored with it, not in the union
        maps = [{n: ix for n, ix in m.items() if n not in private_names(k)} for m, k in zip(maps, models, strict=True)]
    entries = []
    for k, index in enumerate(picks):
        folder = out / "configs" / f"c{k}"
        log.info("configuration %d/%d: %s → %s", k + 1, len(picks), origins[k], folder)
        # BatchNorm stays as nodes (onnxruntime folds them at load, so inference costs the same): the runtime
        # re-estimates their statistics when the input drifts (AdaBN), with onnxruntime alone
        report = write_export(
            run_dir,
            folder,
            ExportOptions(
                reconstruct=options.reconstruct,
                test_images=options.test_images,
                data_dir=options.data_dir,
                latency_repeats=10,
                trust_code=options.trust_code,
            ),
            model=models[k],
            fold_batchnorm=False,
            policy=policies[k],
        )
        policy = policies[k]
        val_accuracy = _accuracy(ort_session(folder / "model.onnx"), evaluator)
        del report["run"]  # a package names nothing outside itself, its configurations' reports included
        atomic_write_json(folder / "report.json", report)
        (folder / "report.md").write_text(render_report(report))
        entries.append(
            Configuration(
                id=f"c{k}",
                path=f"configs/c{k}/model.onnx",
                pareto_index=index,
                origin=origins[k],
                # clean accuracy of the file the runtime runs (the front's was under a context, and the search's
                # refit is not the one exported)
                val_accuracy=val_accuracy,
                search_accuracy=record.front[index]["accuracy"] if index >= 0 else val_accuracy,
                test_accuracy=report["test_accuracy"],
                macs_ratio=report["macs_ratio"],
                split=policy.split,
                adapt=policy.adapt,
                costs=_costs(deployment, evaluator, graph, policy),
            )
        )
    entries, maps = _without_dominated(out, entries, maps)
    reference = _reference(out, workload, evaluator)
    worst = worst_context(deployment.preset.context).to_dict()
    del worst["shift"]
    configs_sessions = {c.id: ort_session(out / c.path) for c in entries}  # each calibrates its own drift threshold
    manifest = Manifest(
        model=config.model,
        dataset=info.ref or config.dataset,
        input=input_spec(info),
        deployment=Limits(
            env=deployment.preset.name,
            device=deployment.device.name,
            link=deployment.link.name if deployment.link else None,
            ram_bytes=deployment.device.ram_bytes,
            flash_bytes=deployment.device.flash_bytes,
            hard_budgets=deployment.budgets(None, hard=True),
            soft_budgets=deployment.budgets(None, hard=False),
        ),
        bandwidth_grid=BANDWIDTH_GRID,
        objective=options.objective,
        accuracy_tolerance=options.accuracy_tolerance,
        worst_context=worst,
        configs=tuple(entries),
        monitor=_monitor(evaluator, info, ort_session(out / reference), configs_sessions),
        uncompressed=Reference(
            path=reference,
            val_accuracy=_accuracy(ort_session(out / reference), evaluator),
            costs=_costs(deployment, evaluator, graph, Policy(config.model)),
        ),
        shared_weights=nest,
        training=training,
    )
    storage = _storage(manifest.configs, out)
    if union is not None:
        state, maps = compact_union(union.state_dict(), maps)  # what dropped configurations alone used goes
        storage, paths = share_files(out, manifest.configs, state, maps, workload.splits.test_x[:64])
        manifest = dataclasses.replace(
            manifest, configs=tuple(dataclasses.replace(c, path=paths[c.id]) for c in manifest.configs)
        )
    actor = export_actor(record.folder, out, options.trust_code)
    manifest = dataclasses.replace(manifest, storage=storage, actor=actor)
    manifest.save(out)
    Manifest.load(out)  # what the runtime will read: checked once here
    return manifest.to_dict()


def _without_dominated(
    out: Path, entries: list[Configuration], maps: list[dict[str, list[list[int] | None]]]
) -> tuple[list[Configuration], list[dict[str, list[list[int] | None]]]]:
    """Leave out (and delete) every configuration that another beats on validation accuracy, energy and latency at
    every bandwidth of the grid: the controller would never pick it."""

    def point(c: Configuration) -> list[float]:
        cost = [v if v is not None else float("inf") for v in (*c.costs.latency_ms, *c.costs.energy_mj)]
        return [c.val_accuracy, *cost]

    beaten = context_rules.dominated([point(c) for c in entries])
    for entry, out_of in zip(entries, beaten, strict=True):
        if out_of:
            log.info("configuration %s (%s) is dominated: left out", entry.id, entry.origin)
            shutil.rmtree(out / Path(entry.path).parent)
    kept = [i for i, out_of in enumerate(beaten) if not out_of]
    return [entries[i] for i in kept], [maps[i] for i in kept] if maps else maps


def _accuracy(session: Any, evaluator: Any) -> float:
    """Validation accuracy of a raw-input ONNX session."""
    logits = ort_predict(session, evaluator.val_images)
    return float((logits.argmax(1) == evaluator.val_labels).float().mean())


def _reference(out: Path, workload: Any, evaluator: Any) -> str:
    """The uncompressed model as a raw-input ONNX file inside the package (what ``simulate`` compares with)."""
    path = "reference/model.onnx"
    model = with_raw_input(workload.model, evaluator.normalize)
    export_onnx(model, evaluator.info.input_shape, out / path, True, workload.splits.test_x.dtype)
    return path


def _costs(deployment: Any, evaluator: Any, graph: Any, policy: Policy) -> Costs:
    """Latency and energy per inference at each bandwidth of the grid (``None`` where a split has no link)."""
    latency: list[float | None] = []
    energy: list[float | None] = []
    report = None
    for scale in BANDWIDTH_GRID:
        if policy.split is not None and (scale == 0 or deployment.link is None):
            latency.append(None)
            energy.append(None)
            continue
        context = Context(
            battery=1.0, free_memory=1.0, bandwidth_scale=max(scale, 1e-6), latency_budget_ms=None, shift=None
        )
        report = deployment.cost_model(evaluator.table, graph, context).predict_policy(policy)
        latency.append(report.latency_ms)
        energy.append(report.energy_mj)
    assert report is not None
    return Costs(tuple(latency), tuple(energy), int(report.storage_bytes), int(report.peak_memory_bytes))


MONITOR_MARGIN = 1.25  # the threshold over the worst clean window (shuffled or class-sorted)


def _monitor(evaluator: Any, info: Any, session: Any, configs: dict[str, Any] | None = None) -> Monitor:
    """The drift monitor's per-class clean statistics, threshold and recovery level, from the validation and
    training inputs: their features (:func:`~autocompress.deploy.runtime.input_features`) grouped by the class the
    uncompressed model predicts (the runtime groups by its own prediction), scored over clean windows both shuffled
    and sorted by class — a stream whose classes arrive in order must not look drifted."""
    raw = torch.cat([evaluator.val_images, evaluator.train_images])
    features = input_features(Normalizer(info)(raw).numpy())
    predicted = ort_predict(session, raw).argmax(1).numpy()
    pooled_mean, pooled_std = features.mean(axis=0), features.std(axis=0) + 1e-3
    means, stds = [], []
    for k in range(info.num_classes):
        mine = features[predicted == k]
        enough = len(mine) >= 8  # a class predicted too rarely takes the pooled statistics
        means.append(mine.mean(axis=0) if enough else pooled_mean)
        stds.append(mine.std(axis=0) + 1e-3 if enough else pooled_std)
    class_mean, class_std = np.stack(means), np.stack(stds)
    labels = evaluator_labels(evaluator, len(raw))

    def clean_scores(classes: np.ndarray) -> list[float]:
        """Scores of clean windows, shuffled and sorted by class, grouped by ``classes`` (what a model predicts)."""
        orders = [
            np.random.default_rng(0).permutation(len(raw)),
            np.argsort(classes, kind="stable"),
            np.argsort(labels, kind="stable"),
        ]
        windows = (
            order[i : i + MONITOR_WINDOW]
            for order in orders
            for i in range(0, len(order) - MONITOR_WINDOW + 1, MONITOR_WINDOW)
        )
        found = [window_drift_score(features[idx], classes[idx], class_mean, class_std) for idx in windows]
        return found or [window_drift_score(features, classes, class_mean, class_std)]

    scores = clean_scores(predicted)
    own = {cid: max(clean_scores(ort_predict(s, raw).argmax(1).numpy())) for cid, s in (configs or {}).items()}
    # Measured (bench/bench_drift_monitor.py): on CIFAR-10 the worst clean window scores 0.64 shuffled or sorted,
    # gaussian_noise:3, contrast:3, shot_noise:3 and jpeg:5 score above 1.2 on every window; on digits clean ≤ 0.53.
    return Monitor(
        window=MONITOR_WINDOW,
        threshold=float(max(scores) * MONITOR_MARGIN),
        recover_below=float(max(scores)),
        clean_max=float(max(scores)),
        clean_mean=float(np.mean(scores)),
        features=tuple(feature_names(info.input_shape)),
        class_mean=tuple(tuple(row) for row in class_mean.round(6).tolist()),
        class_std=tuple(tuple(row) for row in class_std.round(6).tolist()),
        adapt_inputs=256,
        calibration=f"{len(raw)} clean inputs, {len(scores)} windows of {MONITOR_WINDOW} (shuffled, sorted by class)",
        config_thresholds={cid: (float(v * MONITOR_MARGIN), float(v)) for cid, v in own.items()},
    )


def evaluator_labels(evaluator: Any, count: int) -> np.ndarray:
    """The labels of the validation inputs followed by -1 for the training inputs (the monitor sorts by them)."""
    labels = evaluator.val_labels.numpy()
    return np.concatenate([labels, np.full(count - len(labels), -1)])


MEASURE = (
    "bytes on disk of the files the runtime loads (each configuration's model file; with shared weights also "
    "shared.npz and the references) against the largest configuration's complete model.onnx alone"
)


def _union_params(policies: Sequence[Policy], table: LayerTable) -> Callable[[Sequence[int]], float]:
    """The parameter count the layer table predicts for the union model of some of ``policies`` (by index)."""
    kepts = [policy.kept_channels(table) for policy in policies]

    def size(indices: Sequence[int]) -> float:
        union = union_kept([kepts[i] for i in indices], table)
        return float(sum(shape.params for shape in table.shapes(union)))

    return size


def _storage(entries: Sequence[Configuration], out: Path) -> dict[str, Any]:
    """The package's storage on disk against its largest configuration alone (and the same at the configurations'
    bits, as the cost model counts them)."""
    sizes = [(out / e.path).stat().st_size for e in entries]
    others = [p for p in out.glob("configs/*/*.onnx") if p not in {out / e.path for e in entries}]
    at_bits = [e.costs.storage_bytes for e in entries]
    return {
        "shared_weights": False,
        "measure": MEASURE,
        "package_bytes": sum(sizes),
        "largest_config_bytes": max(sizes),
        "ratio_to_largest": sum(sizes) / max(sizes),
        "other_onnx_bytes": sum(p.stat().st_size for p in others),
        "at_bits_bytes": sum(at_bits),
        "at_bits_ratio_to_largest": sum(at_bits) / max(at_bits),
    }


def share_files(
    out: Path,
    entries: Sequence[Configuration],
    union_state: dict[str, torch.Tensor],
    maps: list[dict[str, list[list[int] | None]]],
    inputs: torch.Tensor,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Store once what nested configurations share: every ONNX initializer and ``model.pt`` tensor that is a slice
    of the union model becomes a reference into ``shared.npz`` (see :mod:`autocompress.deploy.shared_weights`). Each
    stripped file is checked — its initializers rebuilt exactly, its logits equal to the complete file's — before
    the complete file is removed. Returns the package's storage on disk against its largest configuration alone,
    and each configuration's model file."""
    import onnx  # the training side's dependency, not the device's
    from onnx import numpy_helper

    union = {name: t.detach().cpu().numpy() for name, t in union_state.items() if t.is_floating_point()}
    used: set[str] = set()
    private = 0
    standalone: dict[str, int] = {}
    for entry, slices in zip(entries, maps, strict=True):
        folder = out / Path(entry.path).parent
        refs_by_file: dict[str, dict[str, Any]] = {}
        for path in sorted(p for p in folder.glob("*.onnx") if not p.name.endswith(SUFFIX)):
            if path.name == "model.onnx":
                standalone[entry.id] = path.stat().st_size
            model = onnx.load(str(path))
            refs, keep, kept_bytes = {}, [], 0
            for init in model.graph.initializer:
                array = numpy_helper.to_array(init)
                ref = _shared_ref(init.name, array, slices, union)
                if ref is None:
                    keep.append(init)
                    kept_bytes += int(array.nbytes)
                else:
                    refs[init.name] = ref
                    used.add(ref["tensor"])
            if path.name == "model.onnx":
                private += kept_bytes
            if not refs:
                continue  # nothing shared (e.g. the int8 file): it stays whole
            del model.graph.initializer[:]
            model.graph.initializer.extend(keep)
            onnx.save(model, str(path.with_name(path.stem + SUFFIX)))
            refs_by_file[path.stem + SUFFIX] = refs
        (folder / REFS_FILE).write_text(json.dumps(refs_by_file))
        _share_torch(folder / "model.pt", slices, union, used)
    arrays: dict[str, Any] = {name: union[name] for name in sorted(used)}
    np.savez(out / SHARED_FILE, **arrays)
    store = load_store(out)
    paths = {}
    for entry in entries:
        folder = out / Path(entry.path).parent
        for name in json.loads((folder / REFS_FILE).read_text()):
            full = folder / name.replace(SUFFIX, ".onnx")
            rebuilt = materialize(folder, name, store)
            original = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(full)).graph.initializer}
            again = {i.name: numpy_helper.to_array(i) for i in onnx.load_from_string(rebuilt).graph.initializer}
            if original.keys() != again.keys() or any(not np.array_equal(original[k], again[k]) for k in original):
                raise AutoCompressError(f"a shared configuration must rebuild exactly, but {folder / name} does not.")
            if name == "model" + SUFFIX:
                _check_same_logits(full, rebuilt, inputs)
            full.unlink()
        shared = (folder / f"model{SUFFIX}").is_file()
        paths[entry.id] = f"{Path(entry.path).parent.as_posix()}/model{SUFFIX}" if shared else entry.path
    # what the runtime loads: the store, each configuration's model file and the references
    loaded = [out / SHARED_FILE, *(out / paths[e.id] for e in entries), *out.glob(f"configs/*/{REFS_FILE}")]
    package = sum(p.stat().st_size for p in loaded)
    others = [p for p in out.glob("configs/*/*.onnx") if p not in loaded]
    largest = max(standalone.values()) if standalone else 0
    return {
        "shared_weights": True,
        "measure": MEASURE,
        "package_bytes": package,
        "largest_config_bytes": largest,
        "ratio_to_largest": package / largest if largest else None,
        "other_onnx_bytes": sum(p.stat().st_size for p in others),
        "shared_tensor_bytes": int(sum(union[name].nbytes for name in used)),
        "private_tensor_bytes": private,
        "torch_bytes_on_disk": sum(p.stat().st_size for p in out.glob("configs/*/model.pt")),
        "configs_bytes_alone": standalone,
    }, paths


def compact_union(
    state: dict[str, torch.Tensor], maps: Sequence[dict[str, list[list[int] | None]]]
) -> tuple[dict[str, torch.Tensor], list[dict[str, list[list[int] | None]]]]:
    """The union's tensors cut to the positions the configurations ``maps`` describe use, and the maps renumbered
    into them: once a dominated configuration (the full model, say) is left out, the store holds only what the
    remaining ones slice, not the whole union."""
    state, maps = dict(state), [dict(m) for m in maps]
    for name in sorted({n for m in maps for n in m}):
        users = [m for m in maps if name in m]
        tensor = state[name]
        for axis in range(tensor.ndim):
            if any(m[name][axis] is None for m in users):
                continue  # someone takes the whole axis
            used = sorted({int(i) for m in users for i in m[name][axis]})  # type: ignore[union-attr]
            if len(used) == tensor.shape[axis]:
                continue
            tensor = tensor.index_select(axis, torch.as_tensor(used, dtype=torch.long))
            rank = {position: k for k, position in enumerate(used)}
            for m in users:
                index = list(m[name])
                index[axis] = [rank[int(i)] for i in index[axis]]  # type: ignore[union-attr]
                m[name] = index
        state[name] = tensor
    return state, maps


def _shared_ref(
    name: str, array: np.ndarray, slices: dict[str, list[list[int] | None]], union: dict[str, np.ndarray]
) -> dict[str, Any] | None:
    """The reference into the union model that gives exactly ``array`` (an initializer named after its parameter,
    or, when the exporter renamed it, any parameter whose slice has its shape and values — as it is, or rounded to
    fewer bits by :func:`~autocompress.compress.quantization.quantize_weight`); ``None`` if none does."""
    candidates = [name] if name in slices else []
    candidates += [p for p in slices if p != name and _sliced_shape(union[p].shape, slices[p]) == array.shape]
    for param in candidates:
        if array.dtype != union[param].dtype or array.dtype != np.float32:
            continue
        sliced = take(union[param], slices[param])
        if np.array_equal(sliced, array):
            return {"tensor": param, "index": slices[param]}
        rounding = _rounding(sliced, array)
        if rounding is not None:
            return {"tensor": param, "index": slices[param]} | rounding
    return None


def _rounding(sliced: np.ndarray, array: np.ndarray) -> dict[str, Any] | None:
    """The bits and per-row clip ratios with which rounding ``sliced`` gives exactly ``array``, if any do."""
    if sliced.ndim < 1 or sliced.shape[0] == 0 or not np.isfinite(array).all():
        return None
    if np.array_equal(round_rows(sliced, 16, None), array):
        return {"bits": 16}
    levels = len(np.unique(array.reshape(array.shape[0], -1), axis=None))
    ratios = CLIP_CANDIDATES.numpy()
    for bits in range(8, 1, -1):
        if levels > array.shape[0] * (2**bits - 1):
            break  # more distinct values than this many bits can hold (and fewer bits hold fewer)
        clip = np.full(array.shape[0], np.nan, dtype=np.float32)
        for ratio in ratios if bits <= 4 else ratios[:1]:
            rows = np.isnan(clip)
            rounded = round_rows(sliced[rows], bits, [float(ratio)] * int(rows.sum()))
            same = (rounded == array[rows]).reshape(int(rows.sum()), -1).all(axis=1)
            clip[np.flatnonzero(rows)[same]] = ratio
            if not np.isnan(clip).any():
                return {"bits": bits, "clip": [float(c) for c in clip]}
    return None


def _sliced_shape(shape: tuple[int, ...], index: list[list[int] | None]) -> tuple[int, ...]:
    return tuple(n if ix is None else len(ix) for n, ix in zip(shape, index, strict=True))


def _share_torch(
    path: Path, slices: dict[str, list[list[int] | None]], union: dict[str, np.ndarray], used: set[str]
) -> None:
    """Strip a configuration's ``model.pt`` of the tensors it shares (AdaBN rebuilds it in torch on the device)."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    refs = {}
    for name, tensor in list(saved["state_dict"].items()):
        ref = _shared_ref(name, tensor.numpy(), {name: slices[name]} if name in slices else {}, union)
        if ref is not None:
            refs[name] = ref
            used.add(name)
            del saved["state_dict"][name]
    saved["shared"] = refs  # the store is the package's shared.npz, two folders up
    atomic_torch_save(path, saved)


def _check_same_logits(full: Path, rebuilt: bytes, inputs: torch.Tensor) -> None:
    import onnxruntime as ort

    sessions = [
        ort.InferenceSession(str(full), providers=["CPUExecutionProvider"]),
        ort.InferenceSession(rebuilt, providers=["CPUExecutionProvider"]),
    ]
    a, b = (ort_predict(s, inputs).numpy() for s in sessions)
    if not np.array_equal(a, b):
        raise AutoCompressError(
            f"a shared configuration must give the complete file's logits, but {full.name} differs by "
            f"{float(np.abs(a - b).max()):.3g}."
        )


RL_ALGORITHMS = ("ddpg", "td3", "sac", "ppo")


class _DeterministicActor(torch.nn.Module):
    """An SB3 policy's deterministic action (DDPG/TD3: μ(s); SAC: the squashed mean; PPO: the Gaussian's mean)."""

    def __init__(self, policy: Any) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        return self.policy._predict(observation, deterministic=True)


def export_actor(run_dir: str | Path, out: str | Path, trust_code: bool = False) -> dict[str, Any] | None:
    """For a run searched by an RL agent, write its trained actor as ``actor.onnx`` (observation → action, before
    clipping to [-1, 1]), checked against the agent on observations of a rollout in the run's environment; ``None``
    for other agents or a run without a checkpoint.

    What the actor needs on a device: the environment's observation at every decision step (the layer embedding
    and the context; :class:`~autocompress.env.AutoCompressEnv` documents the 23 features) — built by
    ``autocompress.env`` in Python — and applying the policy it composes needs the original model and torch. The
    configurations of the package are what switches without retraining; the actor is what re-searches a new context.
    """
    # Only this export of the actor needs the RL stack (stable-baselines3, through search.rl) and onnxruntime's
    # check: a package without the actor does not pay for importing them.
    import onnxruntime as ort

    from autocompress.search.job import SearchJob
    from autocompress.search.rl import trained_model

    record = RunRecord.open(run_dir, "export", trust_code)
    algorithm = record.resolved.agent.algorithm
    if algorithm not in RL_ALGORITHMS or not (record.folder / "checkpoints" / "agent.json").is_file():
        return None
    job = SearchJob.resume(record.folder, device="cpu", trust_code=trust_code)  # the actor's observations need no GPU
    agent, env = trained_model(job), job.env
    actor = _DeterministicActor(agent.policy).eval()
    observations = []
    for episode in range(2):
        obs, _ = env.reset(seed=record.config.seed + 10_000 + episode)
        for _ in range(len(env.space.steps) - 1):  # every step but the last, which would score the policy
            observations.append(obs)
            with torch.no_grad():
                action = actor(torch.as_tensor(obs[None])).numpy()[0]
            obs, *_ = env.step(np.clip(action, -1, 1))
        observations.append(obs)
    batch = torch.as_tensor(np.stack(observations))
    path = Path(out) / "actor.onnx"
    with torch.no_grad():
        expected = actor(batch).numpy()
        torch.onnx.export(
            actor,
            (batch[:1],),
            str(path),
            input_names=["observation"],
            output_names=["action"],
            dynamic_axes={"observation": {0: "batch"}, "action": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"observation": batch.numpy()})[0]
    error = float(np.abs(got - expected).max())
    if error > 1e-4:
        raise AutoCompressError(f"the actor's ONNX file must match the agent, but differs by {error:.3g}.")
    return {
        "path": "actor.onnx",
        "algorithm": algorithm,
        "observation_dim": int(batch.shape[1]),
        "action_dim": int(expected.shape[1]),
        "action_components": list(env.space.dims),  # in this order; see AutoCompressEnv (Action Space)
        "steps": len(env.space.steps),
        "checked_on": len(observations),
        "max_error": error,
        "use": "one call per decision step with the environment's observation; clip the action to [-1, 1]",
    }
