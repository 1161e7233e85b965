"""The YAML presets a search job composes: deployment environments (``envs/``), search spaces
(``search_spaces/``) and agents (``agents/``). Resolved by name (shipped presets) or by path (your own file)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from autocompress.compress.adaptation import ADAPTATIONS, adaptation_choices, is_adaptation
from autocompress.compress.policy import ACTIVATION_BITS, WEIGHT_BITS
from autocompress.compress.techniques import is_technique, technique_names
from autocompress.config import load_config, require
from autocompress.data.shifts import Shift
from autocompress.env.rewards import REWARDS
from autocompress.errors import ConfigError, did_you_mean, unknown_name_error
from autocompress.files import short
from autocompress.plugins import is_plugin_spec

PACKAGE_PRESETS = Path(__file__).resolve().parent.parent / "presets"  # inside an installed wheel
REPO_ROOT = Path(__file__).resolve().parent.parent.parent  # an editable install or a checkout
BUDGET_NAMES = ("macs_ratio", "latency_ms", "energy_mj", "storage_bytes", "peak_memory_bytes")
COST_NAMES = ("macs", "latency_ms", "energy_mj", "storage_bytes")


def preset_dir(kind: str) -> Path:
    """Folder of a preset kind: the wheel's copy when installed, else the repository's top-level folder."""
    packaged = PACKAGE_PRESETS / kind
    return packaged if packaged.is_dir() else REPO_ROOT / kind


def preset_names(kind: str) -> list[str]:
    return sorted(p.stem for p in preset_dir(kind).glob("*.yaml"))


def resolve_preset(kind: str, name_or_path: str) -> Path:
    """Path of a preset given by shipped name or by file path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"a {kind} preset file must exist, but '{path}' does not.")
        return path
    names = preset_names(kind)
    if name_or_path not in names:
        raise unknown_name_error(f"{kind} preset", name_or_path, names)
    return preset_dir(kind) / f"{name_or_path}.yaml"


@dataclass(frozen=True)
class Budget:
    """A limit on one cost. Hard budgets hold by construction; soft ones are penalised by the reward."""

    value: float
    hard: bool = True

    def __post_init__(self) -> None:
        number = isinstance(self.value, (int, float)) and not isinstance(self.value, bool)
        require(
            number and math.isfinite(self.value) and self.value > 0,
            f"a budget value must be a finite number > 0, but got {short(self.value)}.",
        )
        require(isinstance(self.hard, bool), f"a budget's hard must be true or false, but got {short(self.hard)}.")


@dataclass(frozen=True)
class RewardSpec:
    """How the episode's reward is computed (see :mod:`autocompress.env.rewards`)."""

    mode: str = "acc"
    cost: Literal["macs", "latency_ms", "energy_mj", "storage_bytes"] = "macs"
    weights: dict[str, float] = field(default_factory=dict)
    penalty: float = 1.0

    def __post_init__(self) -> None:
        require(
            self.mode in REWARDS or is_plugin_spec(self.mode),
            f"reward.mode must be one of {', '.join(REWARDS)} or a function given as package.module:name "
            f"(or file.py:name), but got '{self.mode}'." + did_you_mean(self.mode, REWARDS),
        )
        for name, weight in self.weights.items():
            require(name in COST_NAMES, f"reward weights must name {', '.join(COST_NAMES)}, but got '{name}'.")
            require(weight >= 0, f"reward weight {name} >= 0 must hold, but got {weight}.")
        require(self.penalty >= 0, f"penalty >= 0 must hold, but got {self.penalty}.")


@dataclass(frozen=True)
class ContextSpec:
    """The distribution a context is drawn from at each reset. A pair ``[low, high]`` is a uniform range; one
    number is fixed. ``shifts`` lists ``none``, ``name:severity``, ``package.module:function:severity`` or
    ``data:FILE`` entries (a relative FILE is taken from the preset's folder), drawn uniformly."""

    battery: list[float] = field(default_factory=lambda: [1.0, 1.0])
    free_memory: list[float] = field(default_factory=lambda: [1.0, 1.0])
    bandwidth_scale: list[float] = field(default_factory=lambda: [1.0, 1.0])
    latency_budget_ms: list[float] | None = None
    interval_ms: float = 1000.0
    adapt_every: int = 1000
    shifts: list[str] = field(default_factory=lambda: ["none"])

    def __post_init__(self) -> None:
        for name in ("battery", "free_memory", "bandwidth_scale"):
            values = getattr(self, name)
            require(len(values) in (1, 2), f"context.{name} must be a number or [low, high], but got {values}.")
            require(
                min(values) > 0 and values[0] <= values[-1],
                f"0 < low <= high must hold for context.{name}, but got {values}.",
            )
        require(max(self.battery) <= 1 and max(self.free_memory) <= 1, "battery and free_memory are fractions <= 1.")
        require(self.interval_ms > 0 and self.adapt_every >= 1, "interval_ms > 0 and adapt_every >= 1 must hold.")
        if self.latency_budget_ms is not None:
            require(
                len(self.latency_budget_ms) in (1, 2) and min(self.latency_budget_ms) > 0,
                "context.latency_budget_ms must be a positive number or [low, high], "
                f"but got {self.latency_budget_ms}.",
            )
        require(len(self.shifts) >= 1, "context.shifts must list at least one entry (none for clean data).")
        for spec in self.shifts:
            if spec != "none" and not spec.startswith("data:"):  # drift data is read when an env is built
                Shift.parse(spec)


@dataclass(frozen=True)
class EnvPreset:
    """A deployment environment: device, link, edge server, budgets, reward and context distribution."""

    name: str
    description: str
    device: str
    link: str | None = None
    edge: str = "edge-server"
    budgets: dict[str, Budget] = field(default_factory=dict)
    reward: RewardSpec = field(default_factory=RewardSpec)
    context: ContextSpec = field(default_factory=ContextSpec)

    def __post_init__(self) -> None:
        for name in self.budgets:
            require(name in BUDGET_NAMES, f"budgets may name {', '.join(BUDGET_NAMES)}, but got '{name}'.")
        if "macs_ratio" in self.budgets:
            require(
                self.budgets["macs_ratio"].value <= 1, "budgets.macs_ratio is a fraction of the model's MACs: <= 1."
            )
        if self.reward.mode == "constrained":
            require(any(not b.hard for b in self.budgets.values()), "reward mode 'constrained' needs a soft budget.")

    def with_budgets(self, budgets: dict[str, Any] | None) -> EnvPreset:
        """This preset with budgets overridden: a number is a hard budget; a mapping gives ``value`` and ``hard``."""
        if not budgets:
            return self
        merged = dict(self.budgets)
        for name, value in budgets.items():
            if isinstance(value, dict):
                unknown = sorted(set(value) - {"value", "hard"})
                require(
                    not unknown, f"budget {name} may give value and hard, but got '{unknown[0] if unknown else ''}'."
                )
                merged[name] = Budget(**value)
            else:
                merged[name] = Budget(value, True)
        return dataclasses.replace(self, budgets=merged)


@dataclass(frozen=True)
class KeepRange:
    """A ratio range a search turns. ``skip`` (techniques only): the share of the search's range that means the
    technique is off (the value 1) — a choice the search hits as often as that, where a range reaching 1 alone
    leaves "off" to a sliver at its top (a low rank rounds to "whole" only within half a rank of the break-even)."""

    min: float = 0.2
    max: float = 1.0
    skip: float = 0.0

    def __post_init__(self) -> None:
        require(
            0 < self.min <= self.max <= 1,
            f"a ratio range must have 0 < min <= max <= 1, but got min {self.min}, max {self.max}.",
        )
        require(
            isinstance(self.skip, int | float) and not isinstance(self.skip, bool) and 0 <= self.skip < 1,
            f"a range's skip share must be in [0, 1), but got skip {self.skip}; e.g. skip: 0.5 (half the searches' "
            "draws leave the layer as it is).",
        )

    @property
    def top(self) -> float:
        """The top of the searched range: ``max``, stretched so that ``skip`` of it lies above ``max``."""
        return self.max + (self.max - self.min) * self.skip / (1 - self.skip)

    def value(self, raw: float) -> float:
        """The ratio a point ``raw`` of the searched range [min, :attr:`top`] stands for (1, off, above ``max``)."""
        return 1.0 if self.skip and raw > self.max else raw


@dataclass(frozen=True)
class SpaceSpec:
    """Which knobs a search turns and their ranges. ``wbits``/``abits`` list choices or say ``device`` (the
    device's legal set); ``split`` and ``adapt`` are chosen at the episode's last step. ``reconstruct`` is how each
    pruned policy is refitted before it is scored: ``sequential`` (default), ``fast`` or ``none`` (see
    :mod:`autocompress.compress.reconstruction`). ``techniques`` turns registered techniques per layer over a range
    of values (``{rank: {min: 0.2, max: 1.0}}``, see :mod:`autocompress.compress.techniques`)."""

    name: str
    description: str
    keep: KeepRange | None = None
    wbits: list[int] | str | None = None
    abits: list[int] | str | None = None
    split: bool = False
    adapt: list[str] | None = None
    round_to: int | str = "device"
    protect_first_last: bool = True
    fixed_first_last_bits: int | None = 8
    reconstruct: Literal["fast", "sequential", "none"] = "sequential"
    techniques: dict[str, KeepRange] | None = None

    def __post_init__(self) -> None:
        require(self.keep is None or not self.keep.skip, "keep takes no skip share (pruning is off at keep: 1.0).")
        for name in self.techniques or {}:
            require(
                is_technique(name),
                f"techniques must name registered techniques ({', '.join(technique_names())}), but got '{name}'; a "
                "technique of your own is registered (autocompress.register_technique) in the process that reads it."
                + did_you_mean(str(name), technique_names()),
            )
        for name in ("wbits", "abits"):
            value = getattr(self, name)
            require(
                value is None or value == "device" or isinstance(value, list),
                f"{name} must be a list of bits or 'device'.",
            )
            legal = WEIGHT_BITS if name == "wbits" else ACTIVATION_BITS
            if isinstance(value, list):
                require(
                    bool(value) and all(b in legal for b in value),
                    f"{name} must list bit-widths among {list(legal)}, but got {value}; or write {name}: device.",
                )
        require(
            self.fixed_first_last_bits is None or self.fixed_first_last_bits in ACTIVATION_BITS,
            f"fixed_first_last_bits must be one of {list(ACTIVATION_BITS)} or null, but got "
            f"{self.fixed_first_last_bits}.",
        )
        require(self.round_to == "device" or isinstance(self.round_to, int), "round_to must be an integer or 'device'.")
        if self.adapt is not None:
            for method in self.adapt:
                require(
                    is_adaptation(method),
                    f"adapt choices are {adaptation_choices()}, but got '{method}'."
                    + did_you_mean(method, ADAPTATIONS),
                )
        require(
            any([self.keep, self.wbits, self.abits, self.split, self.adapt, self.techniques]),
            "a search space must turn at least one knob.",
        )


def load_env_preset(name_or_path: str) -> EnvPreset:
    """An env preset by name or path; profile paths inside it (``device: my-board.yaml``) are relative to its
    folder, as a user who keeps them side by side expects."""
    path = resolve_preset("envs", name_or_path)
    preset = load_config(EnvPreset, path)
    shifts = [_data_beside(path, spec) for spec in preset.context.shifts]
    return dataclasses.replace(
        preset,
        context=dataclasses.replace(preset.context, shifts=shifts),
        device=_beside(path, preset.device),
        link=_beside(path, preset.link) if preset.link else None,
        edge=_beside(path, preset.edge),
    )


def _beside(preset: Path, name_or_path: str) -> str:
    """A profile named in a preset: a relative YAML path is taken from the preset's folder, a name stays a name."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") and not candidate.is_absolute():
        return str(preset.parent / candidate)
    return name_or_path


def _data_beside(preset: Path, spec: str) -> str:
    """``data:drift.npz`` in a preset's context.shifts is taken from the preset's folder too."""
    if spec.startswith("data:") and spec.endswith(".npz") and not Path(spec[5:]).is_absolute():
        return f"data:{preset.parent / spec[5:]}"
    return spec


def load_space_preset(name_or_path: str) -> SpaceSpec:
    return load_config(SpaceSpec, resolve_preset("search_spaces", name_or_path))
