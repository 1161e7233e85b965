"""The adaptive package's manifest (``manifest.json``): one typed, versioned schema that the builder
(:mod:`~autocompress.deploy.adaptive`) writes and the runtime (:mod:`~autocompress.deploy.runtime`) reads with
this same code. numpy only: it runs on the device.

It holds what the runtime needs and nothing that points back to where the package was made: the configurations and
their costs on a grid of link bandwidths, the device's limits and budgets, the input format, the drift monitor's
statistics. Every path in it is relative to the package folder and confined to it (:func:`inside`).

Reading is strict: a manifest of another version, with a missing or unknown field or a value of the wrong type is
refused in one line that names the field.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from autocompress.errors import AutoCompressError
from autocompress.files import read_json, short

MANIFEST_FILE = "manifest.json"
FORMAT = "autocompress-package"
VERSION = 3  # 1 was controller.json (round 2): it named the run folder and took normalised inputs; 2 had a
# drift monitor against all classes pooled
LAYOUTS = {2: "NCL", 3: "NCHW"}  # by the rank of one example
INPUT_DTYPES = ("uint8", "float32")


class ManifestError(AutoCompressError):
    """A package's manifest or a path in it does not follow the schema."""


def inside(folder: str | Path, relative: str, what: str) -> Path:
    """``folder / relative`` after checking that it stays in ``folder``: no absolute path, no ``..``, and no
    symlink on the way that leads out of it. ``what`` names the field in the one-line refusal."""
    pure = PurePosixPath(relative)
    if not relative or pure.is_absolute() or Path(relative).is_absolute() or ".." in pure.parts or "\\" in relative:
        raise ManifestError(
            f"{what} must be a path inside the package (relative, without '..'), but is '{relative}'; the package "
            "is not one autocompress wrote, export it again."
        )
    root = Path(folder).resolve()
    target = (root / pure).resolve()
    if target != root and root not in target.parents:
        raise ManifestError(
            f"{what} must stay inside the package '{folder}', but '{relative}' leads out of it through a symlink; "
            "copy the files into the package instead of linking them."
        )
    return root / pure


@dataclass(frozen=True)
class InputSpec:
    """What a model of the package takes: inputs as the dataset stores them, normalised inside the ONNX graph.

    Args:
        dtype: ``uint8`` (pixels 0..255) or ``float32`` (raw values, e.g. sensor readings).
        shape: One example's shape: C×H×W for images, C×L for series (the batch axis comes first).
        layout: ``NCHW`` or ``NCL``.
        scale, mean, std: The normalisation the graph applies, ``(x * scale - mean) / std`` per channel; the drift
            monitor applies it too.
        note: How raw data of this dataset looks (e.g. digits: scikit-learn's 0..16 values × 255/16, rounded).
    """

    dtype: str
    shape: tuple[int, ...]
    layout: str
    scale: float
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    note: str = ""

    def __post_init__(self) -> None:
        if self.dtype not in INPUT_DTYPES or LAYOUTS.get(len(self.shape)) != self.layout:
            raise ManifestError(
                f"input must be uint8 or float32 in layout NCHW (C×H×W) or NCL (C×L), but is {self.dtype} "
                f"{self.layout} {list(self.shape)}."
            )

    def check(self, x: Any) -> np.ndarray:
        """``x`` as the models take it; a batch of another shape, or floats for a uint8 model, is refused in one
        line (rescaling silently would give wrong answers)."""
        array = np.asarray(x)
        if array.ndim == len(self.shape):
            array = array[None]
        if tuple(array.shape[1:]) != self.shape:
            raise AutoCompressError(
                f"inputs must be a batch N×{'×'.join(map(str, self.shape))} ({self.layout}), but have shape "
                f"{'×'.join(map(str, array.shape))}.",
                params=("x",),
            )
        if self.dtype == "uint8" and array.dtype != np.uint8:
            raise AutoCompressError(
                f"inputs must be uint8 pixels 0..255 as the dataset stores them, but are {array.dtype} "
                f"(range {float(array.min()):g}..{float(array.max()):g}); convert them first"
                + (f" ({self.note})." if self.note else "."),
                params=("x",),
            )
        if self.dtype == "float32" and not np.issubdtype(array.dtype, np.number):
            raise AutoCompressError(f"inputs must be numbers, but are {array.dtype}.", params=("x",))
        return array if self.dtype == "uint8" else array.astype(np.float32, copy=False)

    def normalise(self, x: np.ndarray) -> np.ndarray:
        """The normalised float32 inputs the graph computes inside (the drift monitor watches these)."""
        shape = (1, self.shape[0], *([1] * (len(self.shape) - 1)))
        mean = np.asarray(self.mean or [0.0] * self.shape[0], np.float32).reshape(shape)
        std = np.asarray(self.std or [1.0] * self.shape[0], np.float32).reshape(shape)
        return ((x.astype(np.float32) * np.float32(self.scale) - mean) / std).astype(np.float32)


@dataclass(frozen=True)
class Limits:
    """The device's memory and flash, the deployment's budgets (``latency_ms``, ``energy_mj``, ``storage_bytes``)
    and the names of the preset, device and link it was built for."""

    env: str
    device: str
    link: str | None
    ram_bytes: int
    flash_bytes: int
    hard_budgets: dict[str, float]
    soft_budgets: dict[str, float]


@dataclass(frozen=True)
class Monitor:
    """The drift monitor: window size, thresholds and, per class, the clean inputs' feature means and standard
    deviations (``classes × features``; see :func:`~autocompress.deploy.runtime.window_drift_score`)."""

    window: int
    threshold: float
    recover_below: float
    clean_max: float
    clean_mean: float
    features: tuple[str, ...]
    class_mean: tuple[tuple[float, ...], ...]
    class_std: tuple[tuple[float, ...], ...]
    adapt_inputs: int
    calibration: str = ""
    # per configuration: (threshold, recover_below) from its own predicted classes on the same clean windows — a
    # small configuration's wrong predictions pick the wrong class statistics, so its clean windows score higher
    config_thresholds: dict[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        width = {len(row) for row in (*self.class_mean, *self.class_std)}
        if width != {len(self.features)} or len(self.class_mean) != len(self.class_std) or not self.class_mean:
            raise ManifestError(
                f"monitor.class_mean and class_std must be classes × {len(self.features)} features, but are not."
            )
        if min(min(row) for row in self.class_std) <= 0:
            raise ManifestError("monitor.class_std must be positive, but holds a value <= 0.")


@dataclass(frozen=True)
class Costs:
    """Predicted latency (ms) and energy (mJ) per inference at each point of the bandwidth grid (``None``: a split
    configuration with no link), storage at the layers' bits and peak memory."""

    latency_ms: tuple[float | None, ...]
    energy_mj: tuple[float | None, ...]
    storage_bytes: int
    peak_memory_bytes: int


@dataclass(frozen=True)
class Configuration:
    """One configuration: its ONNX file (``path``, inside the package), accuracies and costs."""

    id: str
    path: str
    pareto_index: int  # -1: not on the run's front (a ladder configuration)
    origin: str  # pareto:K, or ladder:F of pareto:K (derived at F of the MACs); ", bits lifted" (lift_bits)
    val_accuracy: float
    search_accuracy: float
    test_accuracy: float
    macs_ratio: float
    split: str | None
    adapt: str
    costs: Costs


@dataclass(frozen=True)
class Reference:
    """The uncompressed model: its costs and accuracy, and (for ``simulate``) its raw-input ONNX file, which the
    runtime never loads."""

    path: str | None
    val_accuracy: float
    costs: Costs


@dataclass(frozen=True)
class Manifest:
    """An adaptive package's manifest (see the module docstring). ``storage``, ``actor`` and ``training`` are reports
    (what the package weighs; the RL actor's file and its use; how its configurations were trained together), not
    read by the controller."""

    model: str
    dataset: str
    input: InputSpec
    deployment: Limits
    bandwidth_grid: tuple[float, ...]
    objective: str
    accuracy_tolerance: float
    worst_context: dict[str, float | None]
    monitor: Monitor
    configs: tuple[Configuration, ...]
    uncompressed: Reference
    shared_weights: bool
    storage: dict[str, Any] = field(default_factory=dict)
    actor: dict[str, Any] | None = None
    training: dict[str, Any] | None = None
    format: str = FORMAT
    version: int = VERSION

    def __post_init__(self) -> None:
        if not self.configs:
            raise ManifestError("a package must hold at least one configuration, but the manifest lists none.")
        grid = self.bandwidth_grid
        if not grid or grid[0] != 0.0 or list(grid) != sorted(grid):
            raise ManifestError(f"bandwidth_grid must rise from 0.0, but is {list(grid)}.")
        for costs in (*(c.costs for c in self.configs), self.uncompressed.costs):
            if len(costs.latency_ms) != len(grid) or len(costs.energy_mj) != len(grid):
                raise ManifestError(f"every configuration must have one cost per bandwidth of {list(grid)}.")
        ids = [c.id for c in self.configs]
        if len(set(ids)) != len(ids):
            twice = next(i for i in ids if ids.count(i) > 1)
            raise ManifestError(f"configuration ids must be unique, but '{twice[:40]}' is listed twice.")
        for c in self.configs:
            for name in ("val_accuracy", "search_accuracy", "test_accuracy"):
                value = getattr(c, name)
                if not 0.0 <= value <= 1.0:
                    raise ManifestError(f"configs[{c.id[:40]}].{name} must lie in 0..1, but is {value}.")
        worst = self.worst_context
        ranges = {"battery": (0.0, 1.0), "free_memory": (0.0, 1.0), "bandwidth_scale": (0.0, float("inf"))}
        for key, (low, high) in ranges.items():
            value = worst.get(key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
                raise ManifestError(f"worst_context.{key} must be a number in {low}..{high}, but is {value!r:.40}.")
        budget = worst.get("latency_budget_ms")
        if budget is not None and not (isinstance(budget, (int, float)) and budget > 0):
            raise ManifestError(f"worst_context.latency_budget_ms must be null or > 0, but is {budget!r:.40}.")
        if self.monitor.window < 1:
            raise ManifestError(f"monitor.window >= 1 must hold, but is {self.monitor.window}.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, folder: str | Path) -> Path:
        """Write ``folder/manifest.json`` atomically (a temporary file renamed over it: never half a manifest)."""
        path = Path(folder) / MANIFEST_FILE
        partial = path.with_name(f".{MANIFEST_FILE}.partial")
        partial.write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")
        os.replace(partial, path)
        return path

    @classmethod
    def load(cls, folder: str | Path) -> Manifest:
        """Read and check ``folder/manifest.json``, and that every path it names lies inside ``folder``."""
        folder = Path(folder)
        path = folder / MANIFEST_FILE
        if not path.is_file():
            old = " (it holds controller.json, the format of round 2)" if (folder / "controller.json").exists() else ""
            raise ManifestError(
                f"an adaptive package must hold {MANIFEST_FILE}, but '{folder}' does not{old}; write one with "
                "autocompress export RUN --adaptive --out DIR."
            )
        data = read_json(path, "package manifest", ManifestError)
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION:
            got = short((data.get("format"), data.get("version"))) if isinstance(data, dict) else type(data).__name__
            raise ManifestError(
                f"'{path}' must be an {FORMAT} manifest of version {VERSION}, but is {got}; export the package "
                "again with this version of autocompress."
            )
        manifest = _build(cls, data, "manifest")
        for config in manifest.configs:
            inside(folder, config.path, f"configs[{config.id}].path")
        if manifest.uncompressed.path is not None:
            inside(folder, manifest.uncompressed.path, "uncompressed.path")
        return manifest


def _build(kind: Any, value: Any, where: str) -> Any:
    """``value`` (parsed JSON) as the annotated type ``kind``, checked; dataclasses field by field."""
    origin = typing.get_origin(kind)
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ManifestError(f"{where} must be an object, but is {type(value).__name__}.")
        hints = typing.get_type_hints(kind)
        fields = {f.name: f for f in dataclasses.fields(kind)}
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise ManifestError(f"{where} has the fields {', '.join(fields)}, but also '{unknown[0]}'.")
        missing = [
            name
            for name, f in fields.items()
            if name not in value and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise ManifestError(f"{where} must have the field '{missing[0]}', but has not; export the package again.")
        try:
            return kind(**{k: _build(hints[k], v, f"{where}.{k}") for k, v in value.items()})
        except TypeError as exc:
            raise ManifestError(f"{where} does not follow the schema ({exc}).") from None
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        return _build(next(o for o in options if o is not type(None)), value, where)
    if origin is tuple:
        if not isinstance(value, list):
            raise ManifestError(f"{where} must be a list, but is {type(value).__name__}.")
        item = typing.get_args(kind)[0]
        return tuple(_build(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ManifestError(f"{where} must be an object, but is {type(value).__name__}.")
        item = typing.get_args(kind)[1]
        return {str(k): _build(item, v, f"{where}.{k}") for k, v in value.items()}
    if kind is Any:
        return value
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value):
        return float(value)
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    raise ManifestError(f"{where} must be {getattr(kind, '__name__', kind)}, but is {short(value)}.")
