"""The on-device side of an adaptive package: pick a configuration per context, switch in microseconds, watch the
input for drift, adapt BatchNorm statistics when it drifts. It imports numpy and onnxruntime only (a device
installs just those, README "On the device"); the package's ``manifest.json`` says what it needs.

Inference runs through onnxruntime on inputs as the dataset stores them (the models normalise inside their graph);
every configuration's session is opened at load, so a switch is a table lookup. Adaptation is AdaBN in
onnxruntime: one run of the configuration in BatchNorm training mode over the buffered drifted inputs gives every
layer's statistics (:func:`~autocompress.deploy.onnx_wire.statistics_model`), and a session with the mixed
statistics in place of the training ones predicts until the drift clears.

    model = AdaptiveModel.load("runs/pkg")
    model.update_context(battery=0.3, bandwidth_scale=0.0, latency_budget_ms=40)
    logits = model.predict(x)          # x as the dataset stores it (uint8 pixels or float sensor values)
    model.events                       # switches (with their time), drift, adaptation, violations
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from autocompress import context_rules
from autocompress.context_rules import CONTEXT_FIELDS, RUNTIME_FIELDS
from autocompress.deploy import onnx_wire
from autocompress.deploy.manifest import Configuration, Costs, Manifest, inside
from autocompress.deploy.shared_weights import load_store, materialize
from autocompress.errors import AutoCompressError

BN_PRIOR = 256  # training inputs' weight in the adapted BatchNorm statistics (see AdaptiveModel._adabn)
HYSTERESIS = 0.005  # accuracy below the floor the controller accepts to keep its configuration (see choose)
STAY_ENERGY = 0.05  # energy above the pick's the controller accepts to keep its configuration
SWITCH_HORIZON = 2000  # inputs over which re-adapting a new configuration to a drift is paid back
CHARGING = 0.005  # a charge this much above the last reading: the battery is charging
BUDGET_MARGIN = 0.15  # a costlier configuration must be sustainable over this many more hours (see choose)
__all__ = [
    "CONTEXT_FIELDS",
    "RUNTIME_FIELDS",
    "AdaptiveModel",
    "Choice",
    "feature_names",
    "input_features",
    "window_drift_score",
]


def input_features(inputs: np.ndarray) -> np.ndarray:
    """Per input of a batch of normalised inputs (N×C×…), per channel: the mean, the log standard deviation, the log
    roughness (mean absolute difference of neighbouring values along the last axis: noise raises it, blur lowers
    it) and, for images at least 16 wide, the log blockiness (differences across 8-pixel block borders against those
    inside blocks: JPEG raises it). Returns N×F."""
    axes = tuple(range(2, inputs.ndim))
    steps = np.abs(np.diff(inputs, axis=-1))
    features = [inputs.mean(axis=axes), np.log(inputs.std(axis=axes) + 1e-2), np.log(steps.mean(axis=axes) + 1e-2)]
    if inputs.ndim == 4 and inputs.shape[-1] >= 16:
        down = np.abs(np.diff(inputs, axis=-2))
        border = np.arange(steps.shape[-1]) % 8 == 7
        across = steps[..., border].mean(axis=(2, 3)) + down[..., border, :].mean(axis=(2, 3))
        within = steps[..., ~border].mean(axis=(2, 3)) + down[..., ~border, :].mean(axis=(2, 3))
        features.append(np.log((across + 1e-2) / (within + 1e-2)))
    return np.concatenate(features, axis=1).astype(np.float64)


def feature_names(shape: Sequence[int]) -> list[str]:
    """The names of :func:`input_features`' columns for inputs of one example's ``shape`` (C×…)."""
    kinds = ["mean", "log_std", "log_roughness"] + (["log_blockiness"] if len(shape) == 3 and shape[-1] >= 16 else [])
    return [f"{kind}[{c}]" for kind in kinds for c in range(shape[0])]


def window_drift_score(
    features: np.ndarray, predicted: np.ndarray, class_mean: np.ndarray, class_std: np.ndarray
) -> float:
    """How far a window of inputs is from the clean training inputs *of the classes predicted for them*: each
    input's features (:func:`input_features`) become z-scores against the clean statistics of its predicted class,
    and the score is the largest |mean z| over the features. Comparing each input with its own class keeps a clean
    stream whose classes arrive in order (sorted test splits, a camera watching one object) at clean scores, where a
    score against all classes pooled fires on every window; a drift moves the features away from every class."""
    z = (features - class_mean[predicted]) / class_std[predicted]
    return float(np.abs(z.mean(axis=0)).max())


@dataclass
class Choice:
    """The controller's pick for a context: the configuration, whether it meets every hard limit, what it breaks."""

    config: str
    feasible: bool
    violations: list[str] = field(default_factory=list)
    budget_bound: bool = False  # the battery governor's budget left out the most accurate feasible configuration


class AdaptiveModel:
    """An adaptive package loaded for inference (see the module docstring).

    Args:
        folder: The package written by ``autocompress export --adaptive`` (anywhere: it names nothing outside).
        adapt: Run AdaBN when the drift monitor fires; ``False`` only logs the drift.
        threads: onnxruntime intra-op threads per session.
        clock: Seconds now (default :func:`time.monotonic`); the battery governor reads the hours since the battery
            was last charged from it. A simulator sets it to the trace's time.
    """

    def __init__(
        self, folder: str | Path, adapt: bool = True, threads: int = 1, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.folder = Path(folder)
        self.clock = clock
        self._day_start: float | None = None  # when the charge's day began (see update_context)
        self._budget_bound = False  # the last choice was held down by the battery governor (see choose)
        self.manifest = Manifest.load(self.folder)
        self.configs: dict[str, Configuration] = {c.id: c for c in self.manifest.configs}
        self.context: dict[str, float | None] = {
            "battery": 1.0,
            "free_memory": 1.0,
            "bandwidth_scale": 1.0,
            "latency_budget_ms": None,
            "hours_to_charge": None,
        }
        self.events: list[dict[str, Any]] = []
        self.adapt_enabled, self.threads = adapt, threads
        self._store = load_store(self.folder)  # shared weights, when the package has them
        self._sessions = {cid: self._session(self._model_bytes(cid)) for cid in self.configs}
        self._window: list[tuple[np.ndarray, int]] = []  # (features, predicted class) of the last inputs
        self._class_mean = np.asarray(self.manifest.monitor.class_mean, np.float64)
        self._class_std = np.asarray(self.manifest.monitor.class_std, np.float64)
        self._adapted: Any = None  # the AdaBN-adapted session while the input drifts
        self._drifting, self._adapted_on = False, 0
        self._buffer: list[np.ndarray] = []
        self.drift_score = 0.0
        self.inputs_seen = 0
        worst = {"latency_budget_ms": None, **self.manifest.worst_context}
        alone = [c for c in self.configs if not self.check(c, worst)]
        self.reference = max(alone or list(self.configs), key=lambda c: self.configs[c].val_accuracy)
        self.current = self.choose(self.context).config
        self.switch_ms: list[float] = []

    @classmethod
    def load(
        cls, folder: str | Path, adapt: bool = True, threads: int = 1, clock: Callable[[], float] = time.monotonic
    ) -> AdaptiveModel:
        return cls(folder, adapt, threads, clock)

    # --- the controller ---------------------------------------------------------------------------------------

    def costs(self, config: str, bandwidth_scale: float) -> tuple[float | None, float | None]:
        """Predicted latency (ms) and energy (mJ) of a configuration at a bandwidth: the grid point at or below it."""
        return self.entry_costs(self.configs[config].costs, bandwidth_scale)

    def entry_costs(self, costs: Costs, bandwidth_scale: float) -> tuple[float | None, float | None]:
        """:meth:`costs` of a cost table (a configuration's, or the uncompressed model's)."""
        index = context_rules.grid_index(self.manifest.bandwidth_grid, bandwidth_scale)
        return costs.latency_ms[index], costs.energy_mj[index]

    def check(self, config: str, context: dict[str, Any]) -> list[str]:
        """The hard limits ``config`` breaks in ``context`` (empty: feasible)."""
        return self.check_entry(self.configs[config].costs, context)

    def check_entry(self, costs: Costs, context: dict[str, Any]) -> list[str]:
        """:meth:`check` of a cost table, by the rules of :mod:`autocompress.context_rules`."""
        limits = self.manifest.deployment
        latency, energy = self.entry_costs(costs, float(context.get("bandwidth_scale") or 0.0))
        if latency is None or energy is None:
            return ["needs a link"]
        budgets = context_rules.budgets(
            limits.hard_budgets, True, float(context.get("battery", 1.0)), context.get("latency_budget_ms")
        )
        values = {
            "latency_ms": latency,
            "energy_mj": energy,
            "storage_bytes": costs.storage_bytes,
            "peak_memory_bytes": costs.peak_memory_bytes,
        }
        free = float(context.get("free_memory", 1.0))
        return context_rules.violations(values, budgets, limits.ram_bytes, limits.flash_bytes, free)

    def choose(self, context: dict[str, Any]) -> Choice:
        """The configuration for ``context``:

        1. feasible: every hard limit met (:meth:`check`);
        2. within the battery governor's energy budget
           (:func:`~autocompress.context_rules.battery_energy_budget`: the pace the charge sustains for the hours
           it must still last — until the next charge when the context gives ``hours_to_charge``, else the rest of
           a day that began when the battery was last seen charging, or at the first reading, placed where a charge
           spent on schedule would stand (:func:`~autocompress.context_rules.hours_on_schedule`), by
           :attr:`clock`), at most the most accurate feasible configuration's energy, at least the cheapest's;
           while the last choice was held down by that budget, one that spends more than the current configuration
           must also fit it for :data:`BUDGET_MARGIN` more hours ahead (hysteresis: the governor does not step up
           and down around its pace each step);
        3. objective ``accuracy`` (default): the least energy among those within the tolerance of the most accurate
           of them; ``energy``: the least energy among those at least as accurate as the reference (the most
           accurate configuration feasible in the manifest's worst context) minus the tolerance;
        4. hysteresis: the current configuration stays while it meets 1–2, is within :data:`HYSTERESIS` of the
           accuracy floor and spends at most :data:`STAY_ENERGY` more than the pick; while the input drifts, a new
           configuration is charged its AdaBN passes (``adapt_inputs`` forward passes spread over
           :data:`SWITCH_HORIZON` inputs).

        If none is feasible, the one with the least latency (a violation, logged)."""
        feasible = [cid for cid in self.configs if not self.check(cid, context)]
        bandwidth = float(context.get("bandwidth_scale") or 0.0)
        if not feasible:
            runnable = [c for c in self.configs if self.costs(c, bandwidth)[0] is not None]
            pick = min(runnable, key=lambda c: self.costs(c, bandwidth)[0])  # type: ignore[arg-type,return-value]
            return Choice(pick, False, self.check(pick, context))
        accuracy = {c: self.configs[c].val_accuracy for c in feasible}
        energy = {c: float(self.costs(c, bandwidth)[1] or 0.0) for c in feasible}
        best = max(feasible, key=lambda c: (accuracy[c], -energy[c]))
        hours = context.get("hours_to_charge")
        ahead = context_rules.hours_ahead(
            None if hours is None else float(hours),
            None if self._day_start is None else (self.clock() - self._day_start) / 3600.0,
        )
        charge, least = float(context.get("battery", 1.0)), min(energy.values())
        budget = context_rules.battery_energy_budget(charge, ahead, least, energy[best])
        current = getattr(self, "current", None)  # None while loading
        # hysteresis on the budget: while the last choice was held down by the battery, one that spends more than
        # the current configuration must be sustainable over BUDGET_MARGIN more hours than remain, so the governor
        # does not step up and down around its pace each step (a step down forced by latency or memory returns
        # as soon as the limit lifts)
        up = context_rules.battery_energy_budget(charge, ahead * (1 + BUDGET_MARGIN), least, energy[best])
        held = energy.get(current, float("inf")) if current is not None and self._budget_bound else float("inf")
        allowed = [
            c
            for c in feasible
            if context_rules.within(energy[c], budget) and (energy[c] <= held or context_rules.within(energy[c], up))
        ]
        tolerance = self.manifest.accuracy_tolerance
        if self.manifest.objective == "energy":
            floor = self.configs[self.reference].val_accuracy - tolerance
        else:
            floor = max(accuracy[c] for c in allowed) - tolerance
        close = [c for c in allowed if accuracy[c] >= floor] or [max(allowed, key=accuracy.__getitem__)]
        readapt = 1 + self.manifest.monitor.adapt_inputs / SWITCH_HORIZON if self._drifting else 1.0

        def spend(c: str) -> float:
            return energy[c] * (1.0 if c == current else readapt)

        pick = min(close, key=lambda c: (spend(c), -accuracy[c]))
        if (
            current in allowed
            and current != pick
            and accuracy[current] >= floor - HYSTERESIS
            and energy[current] <= spend(pick) * (1 + STAY_ENERGY)
        ):
            pick = current
        # held down until the most accurate fits the budget with the margin too
        bound = not context_rules.within(energy[best], up if self._budget_bound else budget)
        return Choice(pick, True, budget_bound=bound)

    def update_context(self, **fields: float | None) -> str:
        """Change context fields (battery, free_memory, bandwidth_scale, latency_budget_ms, hours_to_charge; ``None``
        for the last two: none, unknown) and switch to the configuration the rule picks; the decision and switch
        time is measured and logged."""
        unknown = sorted(set(fields) - set(RUNTIME_FIELDS))
        if unknown:
            raise AutoCompressError(
                f"a context has the fields {', '.join(RUNTIME_FIELDS)}, but got '{unknown[0]}'.", params=("context",)
            )
        for name, value in fields.items():
            problem = context_rules.field_problem(name, value)
            if problem:
                raise AutoCompressError(f"{problem}; the context is unchanged.", params=("context",))
        start = time.perf_counter()
        last = float(self.context.get("battery") or 1.0)
        self.context.update(fields)
        battery = float(self.context.get("battery") or 1.0)
        if self._day_start is None or battery > last + CHARGING:
            # the first reading, or charging: where the day would stand had the charge been spent on schedule (a
            # full battery: now); the drain seen from then on tells whether the device runs ahead or behind it
            self._day_start = self.clock() - 3600.0 * context_rules.hours_on_schedule(battery)
            self._budget_bound = False  # a new day: on schedule, nothing held down
        choice = self.choose(self.context)
        self._budget_bound = choice.budget_bound
        previous, self.current = self.current, choice.config
        if previous != self.current:
            self._adapted, self._adapted_on = None, 0  # adaptation belongs to a configuration: redone on the buffer
        elapsed = (time.perf_counter() - start) * 1e3
        self.switch_ms.append(elapsed)
        if previous != self.current:  # logged after the clock stops
            self.events.append(
                {"event": "switch", "from": previous, "to": self.current, "ms": elapsed, "context": dict(self.context)}
            )
        if not choice.feasible:
            self.events.append(
                {
                    "event": "violation",
                    "config": self.current,
                    "broken": choice.violations,
                    "context": dict(self.context),
                }
            )
        return self.current

    # --- inference and the drift monitor ------------------------------------------------------------------------

    def predict(self, x: Any) -> np.ndarray:
        """Logits of a batch (as the dataset stores it: uint8 pixels or float values) by the current configuration,
        adapted while the input drifts."""
        raw = self.manifest.input.check(x)
        self.inputs_seen += len(raw)
        session = self._adapted or self._sessions[self.current]
        logits = session.run(None, {session.get_inputs()[0].name: raw})[0]
        self._watch(raw, logits.argmax(axis=1))  # an adaptation it starts serves the next inputs
        return logits

    def run(self, config: str, x: Any) -> np.ndarray:
        """Logits of raw inputs by one configuration's ONNX session (no monitoring, no adaptation)."""
        session = self._sessions[config]
        return session.run(None, {session.get_inputs()[0].name: self.manifest.input.check(x)})[0]

    def _watch(self, raw: np.ndarray, predicted: np.ndarray) -> None:
        monitor = self.manifest.monitor
        features = input_features(self.manifest.input.normalise(raw))
        self._window = [*self._window, *zip(features, predicted, strict=True)][-monitor.window :]
        if len(self._window) < monitor.window:
            return
        window = np.stack([f for f, _ in self._window]), np.array([p for _, p in self._window])
        self.drift_score = window_drift_score(*window, self._class_mean, self._class_std)
        threshold, recover = self._thresholds()
        drifting = self.drift_score > threshold or (self._drifting and self.drift_score > recover)
        if drifting:
            if not self._drifting:
                self.events.append(
                    {"event": "drift", "score": self.drift_score, "config": self.current, "input": self.inputs_seen}
                )
                self._drifting, self._buffer, self._adapted_on = True, [], 0
            self._buffer = [*self._buffer, *raw][-monitor.adapt_inputs :]
            # AdaBN on the drifted inputs seen so far, again each time the buffer has doubled (32, 64, 128, 256):
            # a first, quick repair, then better statistics as the drift goes on.
            if self.adapt_enabled and len(self._buffer) >= max(monitor.window, 2 * self._adapted_on):
                self._adapted = self._adabn(np.stack(self._buffer))
                self._adapted_on = len(self._buffer)
                self.events.append(
                    {
                        "event": "adapt",
                        "method": "adabn",
                        "config": self.current,
                        "inputs": len(self._buffer),
                        "input": self.inputs_seen,
                    }
                )
        elif self._drifting:
            self._drifting, self._adapted, self._buffer = False, None, []
            self.events.append(
                {"event": "recover", "score": self.drift_score, "config": self.current, "input": self.inputs_seen}
            )

    def _adabn(self, window: np.ndarray) -> Any:
        """AdaBN (Li et al. 2016) with a source prior (Schneider et al., NeurIPS 2020): the current configuration's
        BatchNorm statistics become ``n / (n + PRIOR)`` target statistics (from the ``n`` buffered drifted inputs,
        each layer's computed on inputs the layers before it normalised by theirs, as PyTorch's train mode does)
        plus the rest of the training ones. Measured on ResNet-20 at half its MACs with 256 drifted inputs, full
        replacement cost 0.8–1.5 pt against no adaptation, a prior of 256 gained 4.3 (brightness:4) and 5.7
        (gaussian_noise:3) pt; priors of 16, 64, 512, 1024 gained less. The prior shrinks as the drift score
        rises above the threshold (a strong drift, e.g. a fog veil over digits, wants the target statistics).
        Returns the session that predicts with the mixed statistics (``None`` for a model without BatchNorm)."""
        model = self._model_bytes(self.current)
        nodes = onnx_wire.batchnorm_nodes(model)
        if not nodes:
            return None
        source = onnx_wire.initializers(model, {name for _, mean, var in nodes for name in (mean, var)})
        stats_model, outputs = onnx_wire.statistics_model(model)
        stats = self._session(stats_model)
        target = stats.run(outputs, {stats.get_inputs()[0].name: window})
        prior = BN_PRIOR * min(1.0, self._thresholds()[0] / max(self.drift_score, 1e-6))
        weight = len(window) / (len(window) + prior)
        mixed: dict[str, np.ndarray] = {}
        # The batch variance is the biased one (PyTorch keeps the unbiased): the factor n / (n - 1), n = inputs ×
        # positions per channel (≥ 4,096 for 256 inputs of 4×4 maps), is below the mixing's precision.
        for k, (_, mean, var) in enumerate(nodes):
            mixed[mean] = (weight * target[2 * k] + (1 - weight) * source[mean]).astype(np.float32)
            mixed[var] = (weight * target[2 * k + 1] + (1 - weight) * source[var]).astype(np.float32)
        # (SessionOptions.add_initializer does not override an initializer the file holds: measured, no effect)
        return self._session(onnx_wire.replace_initializers(model, mixed))

    # --- files --------------------------------------------------------------------------------------------------

    def _model_bytes(self, config: str) -> bytes:
        path = inside(self.folder, self.configs[config].path, f"configs[{config}].path")
        if not path.is_file():
            raise AutoCompressError(f"the package's configuration '{path}' must exist, but does not; export it again.")
        return materialize(path.parent, path.name, self._store)

    def _thresholds(self) -> tuple[float, float]:
        """The drift threshold and recovery level of the configuration running now (its own calibration, when the
        package has one; else the package's)."""
        monitor = self.manifest.monitor
        own = monitor.config_thresholds.get(self.current)
        return (own[0], own[1]) if own else (monitor.threshold, monitor.recover_below)

    def _session(self, model: bytes) -> Any:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.log_severity_level = 3
        try:
            return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for a corrupt file
            raise AutoCompressError(
                f"a configuration of the package '{self.folder}' must be a valid ONNX model, but onnxruntime "
                f"cannot load it ({str(exc).splitlines()[0][:200]}); export the package again."
            ) from None
