"""The on-device side of an adaptive package: pick a configuration per context, switch in microseconds, watch the
input for drift, adapt BatchNorm statistics when it drifts.

Inference runs through onnxruntime with numpy inputs; every configuration's session is opened at load, so a switch
is a table lookup. Two parts still need PyTorch: adaptation (AdaBN re-estimates BatchNorm statistics of the
configuration's ``model.pt`` on the buffered drifted inputs, and predictions then run in PyTorch until the drift
clears) and nothing else — the controller and the drift monitor are numpy.

    model = AdaptiveModel.load("runs/pkg")
    model.update_context(battery=0.3, bandwidth_scale=0.0, latency_budget_ms=40)
    logits = model.predict(x)          # x as the dataset stores it (uint8 pixels or float sensor values)
    model.events                       # switches (with their time), drift, adaptation, violations
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autocompress.deploy.shared_weights import load_store
from autocompress.errors import AutoCompressError

CONTEXT_FIELDS = ("battery", "free_memory", "bandwidth_scale", "latency_budget_ms")
BN_PRIOR = 256  # training inputs' weight in the adapted BatchNorm statistics (see AdaptiveModel._adabn)


def roughness(inputs: np.ndarray) -> np.ndarray:
    """Per channel, the standard deviation of differences between neighbouring values along the last axis (pixels
    in a row, time steps): sensor noise raises it, blur lowers it, while brightness or gain leave the mean and std."""
    axes = (0, *range(2, inputs.ndim))
    return np.diff(inputs, axis=-1).std(axis=axes) + 1e-6


def window_drift_score(inputs: np.ndarray, reference_roughness: np.ndarray | list[float] | None = None) -> float:
    """How far a window of normalised inputs (N×C×…) is from the training distribution (mean 0, std 1 per channel
    and, when given, the training roughness): the mean over channels of |mean| + |log std| + |log(roughness /
    training roughness)|. Clean windows of 32 score about 0.05–0.4."""
    axes = (0, *range(2, inputs.ndim))
    mean = inputs.mean(axis=axes)
    std = inputs.std(axis=axes) + 1e-6
    score = np.abs(mean) + np.abs(np.log(std))
    if reference_roughness is not None:
        score = score + np.abs(np.log(roughness(inputs) / np.asarray(reference_roughness)))
    return float(np.mean(score))


@dataclass
class Choice:
    """The controller's pick for a context: the configuration, whether it meets every hard limit, what it breaks."""

    config: str
    feasible: bool
    violations: list[str] = field(default_factory=list)


class AdaptiveModel:
    """An adaptive package loaded for inference (see the module docstring).

    Args:
        folder: The package written by ``autocompress export --adaptive``.
        adapt: Run AdaBN when the drift monitor fires (needs torch); ``False`` only logs the drift.
    """

    def __init__(self, folder: str | Path, adapt: bool = True) -> None:
        self.folder = Path(folder)
        path = self.folder / "controller.json"
        if not path.is_file():
            raise AutoCompressError(
                f"an adaptive package must hold controller.json, but '{self.folder}' does not; write one with "
                "autocompress export RUN --adaptive --out DIR."
            )
        self.table: dict[str, Any] = json.loads(path.read_text())
        self.configs = {c["id"]: c for c in self.table["configs"]}
        self.context: dict[str, float | None] = {
            "battery": 1.0, "free_memory": 1.0, "bandwidth_scale": 1.0, "latency_budget_ms": None,
        }  # fmt: skip
        self.events: list[dict[str, Any]] = []
        self.adapt_enabled = adapt
        store = load_store(self.folder)  # shared weights, when the package has them
        self._sessions = {cid: _session(self.folder / c["path"], store) for cid, c in self.configs.items()}
        spec = self.table["input"]
        channels = spec["shape"][0]
        shape = (1, channels, *([1] * (len(spec["shape"]) - 1)))
        mean = np.array(spec["mean"] or [0.0] * channels, np.float32).reshape(shape)
        std = np.array(spec["std"] or [1.0] * channels, np.float32).reshape(shape)
        self._scale, self._mean, self._std = np.float32(spec["scale"]), mean, std
        self._window: list[np.ndarray] = []
        self._adapted: Any = None  # the AdaBN-adapted torch model while the input drifts
        self._drifting, self._adapted_on = False, 0
        self._buffer: list[np.ndarray] = []
        self.drift_score = 0.0
        self.inputs_seen = 0
        worst = self.table.get("worst_context", {"battery": 1.0, "free_memory": 1.0, "bandwidth_scale": 0.0})
        alone = [c for c in self.configs if not self.check(c, {"latency_budget_ms": None, **worst})]
        self.reference = max(alone or list(self.configs), key=lambda c: self.configs[c]["val_accuracy"])
        self.current = self.choose(self.context).config
        self.switch_ms: list[float] = []

    @classmethod
    def load(cls, folder: str | Path, adapt: bool = True) -> AdaptiveModel:
        return cls(folder, adapt)

    # --- the controller ---------------------------------------------------------------------------------------

    def costs(self, config: str, bandwidth_scale: float) -> tuple[float | None, float | None]:
        """Predicted latency (ms) and energy (mJ) of a configuration at a bandwidth: the grid point at or below it."""
        return self.entry_costs(self.configs[config], bandwidth_scale)

    def entry_costs(self, entry: dict[str, Any], bandwidth_scale: float) -> tuple[float | None, float | None]:
        """:meth:`costs` of a table entry (a configuration, or the ``uncompressed`` reference)."""
        grid = self.table["bandwidth_grid"]
        index = max(i for i, b in enumerate(grid) if b <= max(0.0, bandwidth_scale) + 1e-9)
        return entry["latency_ms"][index], entry["energy_mj"][index]

    def check(self, config: str, context: dict[str, Any]) -> list[str]:
        """The hard limits ``config`` breaks in ``context`` (empty: feasible)."""
        return self.check_entry(self.configs[config], context)

    def check_entry(self, entry: dict[str, Any], context: dict[str, Any]) -> list[str]:
        """:meth:`check` of a table entry (a configuration, or the ``uncompressed`` reference)."""
        limits = self.table["deployment"]
        budgets = limits["hard_budgets"]
        latency, energy = self.entry_costs(entry, float(context["bandwidth_scale"] or 0.0))
        if latency is None or energy is None:
            return ["needs a link"]
        broken = []
        if entry["peak_memory_bytes"] > limits["ram_bytes"] * float(context["free_memory"]):
            broken.append("memory")
        if entry["storage_bytes"] > limits["flash_bytes"]:
            broken.append("flash")
        budget = context.get("latency_budget_ms") or budgets.get("latency_ms")
        if budget is not None and latency > float(budget):
            broken.append("latency")
        if "energy_mj" in budgets and energy > budgets["energy_mj"] * float(context["battery"]):
            broken.append("energy")
        if "storage_bytes" in budgets and entry["storage_bytes"] > budgets["storage_bytes"]:
            broken.append("storage")
        return broken

    def choose(self, context: dict[str, Any]) -> Choice:
        """The configuration the rule in ``controller.json`` picks for ``context``."""
        feasible = [cid for cid in self.configs if not self.check(cid, context)]
        bandwidth = float(context["bandwidth_scale"] or 0.0)
        if feasible:
            accuracy = {c: self.configs[c]["val_accuracy"] for c in feasible}
            tolerance = self.table["accuracy_tolerance"]
            if self.table.get("objective", "energy") == "energy":
                floor = self.configs[self.reference]["val_accuracy"] - tolerance
            else:
                floor = max(accuracy.values()) - tolerance
            close = [c for c in feasible if accuracy[c] >= floor] or [max(feasible, key=accuracy.__getitem__)]
            pick = min(close, key=lambda c: (self.costs(c, bandwidth)[1], -accuracy[c]))
            return Choice(pick, True)
        runnable = [c for c in self.configs if self.costs(c, bandwidth)[0] is not None]
        pick = min(runnable, key=lambda c: self.costs(c, bandwidth)[0])  # type: ignore[arg-type,return-value]
        return Choice(pick, False, self.check(pick, context))

    def update_context(self, **fields: float | None) -> str:
        """Change context fields (battery, free_memory, bandwidth_scale, latency_budget_ms) and switch to the
        configuration the rule picks; the decision and switch time is measured and logged."""
        unknown = sorted(set(fields) - set(CONTEXT_FIELDS))
        if unknown:
            raise AutoCompressError(
                f"a context has the fields {', '.join(CONTEXT_FIELDS)}, but got '{unknown[0]}'.", params=("context",)
            )
        start = time.perf_counter()
        self.context.update(fields)
        choice = self.choose(self.context)
        previous, self.current = self.current, choice.config
        if previous != self.current:
            self._adapted, self._adapted_on = None, 0  # adaptation belongs to a configuration: redone on the buffer
        elapsed = (time.perf_counter() - start) * 1e3
        self.switch_ms.append(elapsed)
        if previous != self.current:  # logged after the clock stops
            self.events.append({"event": "switch", "from": previous, "to": self.current, "ms": elapsed,
                                "context": dict(self.context)})  # fmt: skip
        if not choice.feasible:
            self.events.append({"event": "violation", "config": self.current, "broken": choice.violations,
                                "context": dict(self.context)})  # fmt: skip
        return self.current

    # --- inference and the drift monitor ------------------------------------------------------------------------

    def normalise(self, x: np.ndarray) -> np.ndarray:
        """Inputs as the dataset stores them → the normalised float32 the models take."""
        return ((x.astype(np.float32) * self._scale - self._mean) / self._std).astype(np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Logits of a batch (as stored: uint8 pixels or float values) by the current configuration."""
        inputs = self.normalise(np.asarray(x))
        self.inputs_seen += len(inputs)
        self._watch(inputs)
        if self._adapted is not None:
            import torch

            with torch.inference_mode():
                return self._adapted(torch.from_numpy(inputs)).numpy()
        return self.run(self.current, inputs)

    def run(self, config: str, inputs: np.ndarray) -> np.ndarray:
        """Logits of normalised ``inputs`` by one configuration's ONNX session (no monitoring, no adaptation)."""
        session = self._sessions[config]
        return session.run(None, {session.get_inputs()[0].name: inputs})[0]

    def _watch(self, inputs: np.ndarray) -> None:
        monitor = self.table["monitor"]
        self._window = [*self._window, *inputs][-monitor["window"] :]
        if len(self._window) < monitor["window"]:
            return
        self.drift_score = window_drift_score(np.stack(self._window), monitor.get("roughness"))
        drifting = self.drift_score > monitor["threshold"] or (
            self._drifting and self.drift_score > monitor.get("recover_below", monitor["threshold"])
        )
        if drifting:
            if not self._drifting:
                self.events.append(
                    {"event": "drift", "score": self.drift_score, "config": self.current, "input": self.inputs_seen}
                )
                self._drifting, self._buffer, self._adapted_on = True, [], 0
            self._buffer = [*self._buffer, *inputs][-monitor.get("adapt_inputs", 256) :]
            # AdaBN on the drifted inputs seen so far, again each time the buffer has doubled (32, 64, 128, 256):
            # a first, quick repair, then better statistics as the drift goes on.
            if self.adapt_enabled and len(self._buffer) >= max(monitor["window"], 2 * self._adapted_on):
                self._adapted = self._adabn(np.stack(self._buffer))
                self._adapted_on = len(self._buffer)
                self.events.append({"event": "adapt", "method": "adabn", "config": self.current,
                                    "inputs": len(self._buffer), "input": self.inputs_seen})  # fmt: skip
        elif self._drifting:
            self._drifting, self._adapted, self._buffer = False, None, []
            self.events.append(
                {"event": "recover", "score": self.drift_score, "config": self.current, "input": self.inputs_seen}
            )

    def _adabn(self, window: np.ndarray) -> Any:
        """AdaBN (Li et al. 2016) with a source prior (Schneider et al., NeurIPS 2020): the current configuration's
        BatchNorm statistics become ``n / (n + PRIOR)`` target statistics (from the ``n`` buffered drifted inputs)
        plus the rest of the training ones. Measured on ResNet-20 at half its MACs with 256 drifted inputs, full
        replacement cost 0.8–1.5 pt against no adaptation, a prior of 256 gained 4.3 (brightness:4) and 5.7
        (gaussian_noise:3) pt; priors of 16, 64, 512, 1024 gained less. The prior shrinks as the drift score
        rises above the threshold (a strong drift, e.g. a fog veil over digits, wants the target statistics)."""
        import torch

        from autocompress.compress.adaptation import BN_TYPES, recalibrate_batchnorm
        from autocompress.deploy.export import load_exported

        model = load_exported(self.folder / Path(self.configs[self.current]["path"]).parent / "model.pt")
        norms = [m for m in model.modules() if isinstance(m, BN_TYPES)]
        source = [(_stat(m.running_mean).clone(), _stat(m.running_var).clone()) for m in norms]
        recalibrate_batchnorm(model, [torch.from_numpy(window)])
        # The stronger the drift, the less the training statistics are worth: the prior shrinks with the score.
        prior = BN_PRIOR * min(1.0, self.table["monitor"]["threshold"] / max(self.drift_score, 1e-6))
        weight = len(window) / (len(window) + prior)
        with torch.no_grad():
            for m, (mean, var) in zip(norms, source, strict=True):
                _stat(m.running_mean).mul_(weight).add_((1 - weight) * mean)
                _stat(m.running_var).mul_(weight).add_((1 - weight) * var)
        return model.eval()


def _stat(value: Any) -> Any:
    assert value is not None, "BatchNorm layers of an exported model track running statistics"
    return value


def _session(path: Path, store: dict[str, np.ndarray]) -> Any:
    """An onnxruntime session of a configuration's file; a shared-weight file is completed from the store first."""
    import onnxruntime as ort

    from autocompress.deploy.shared_weights import SUFFIX, materialize

    if not path.is_file():
        raise AutoCompressError(f"the package's configuration '{path}' must exist, but does not; export it again.")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    source = materialize(path.parent, path.name, store).SerializeToString() if path.name.endswith(SUFFIX) else str(path)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
