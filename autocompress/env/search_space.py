"""The search space resolved against a model and a device: which decision each episode step makes, how a
Box(-1, 1) action decodes into keep ratios, bit-widths and the values of registered techniques, and the same
dimensions as Optuna parameters.

Reinforcement-learning agents and the Optuna, random and uniform baselines all go through this one object and
the environment's step, so they search exactly the same space under exactly the same budget enforcement.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autocompress.compress.graph import CutPoint
from autocompress.compress.layers import LayerTable
from autocompress.compress.techniques import get_technique
from autocompress.env.presets import KeepRange, SpaceSpec
from autocompress.errors import ConfigError
from autocompress.hardware.profiles import DeviceProfile

log = logging.getLogger(__name__)

NO_SPLIT = "none"


@dataclass(frozen=True)
class Step:
    """One episode step: the layer it visits and the decisions it makes there."""

    layer: str
    keep_group: int | None
    wbits: bool
    abits: bool
    techniques: tuple[str, ...] = ()


@dataclass(frozen=True)
class StepChoice:
    """What a step decided (``None`` where the step makes no such decision)."""

    keep: float | None
    wbits: int | None
    abits: int | None
    techniques: dict[str, float] = field(default_factory=dict)


class SearchSpace:
    """A :class:`SpaceSpec` applied to one model's layer table, one device and the model's split points.

    Args:
        spec: The search-space preset.
        table: The model's layer table (built with the space's protection).
        device: The device whose legal bit-widths and channel rounding ``device`` in the spec refers to.
        cut_points: The model's valid split points.
    """

    def __init__(self, spec: SpaceSpec, table: LayerTable, device: DeviceProfile, cut_points: list[CutPoint]) -> None:
        self.spec, self.table = spec, table
        self.keep = spec.keep
        self.wbits = self._bits(spec.wbits, device.legal_wbits, "wbits")
        self.abits = self._bits(spec.abits, device.legal_abits, "abits")
        self.round_to = device.channel_rounding if spec.round_to == "device" else int(spec.round_to)
        self.split_choices = [NO_SPLIT, "input", *self._cuts(cut_points)] if spec.split else None
        self.adapt_choices = list(spec.adapt) if spec.adapt else None
        self.techniques: dict[str, KeepRange] = dict(spec.techniques or {})
        first_last = {table.layers[0].name, table.layers[-1].name}
        self.fixed_bits = spec.fixed_first_last_bits if (self.wbits or self.abits) else None
        # the first and last layers' fixed bits, snapped to what the device runs (a device with only 16- and 32-bit
        # weights cannot hold an 8-bit first layer)
        self.fixed_wbits = self._snap(self.fixed_bits, self.wbits, "weight", device.name)
        self.fixed_abits = self._snap(self.fixed_bits, self.abits, "activation", device.name)
        self.steps = [s for s in (self._step(layer.name, first_last) for layer in table.layers) if s is not None]
        if not self.steps:
            self.steps = [Step(table.layers[-1].name, None, False, False)]
        self.dims = [d for d, on in self._layout().items() if on]

    @staticmethod
    def _snap(bits: int | None, legal: list[int] | None, kind: str, device: str) -> int:
        if bits is None or not legal:
            return 32
        if bits in legal:
            return bits
        snapped = min((b for b in legal if b >= bits), default=max(legal))
        log.warning(
            "fixed_first_last_bits %d is no legal %s bit-width on device %s (%s): the first and last layers get %d",
            bits,
            kind,
            device,
            legal,
            snapped,
        )
        return snapped

    @staticmethod
    def _bits(choice: list[int] | str | None, legal: list[int], kind: str = "wbits") -> list[int] | None:
        if choice is None:
            return None
        values = list(legal) if choice == "device" else [int(b) for b in choice if b in legal]
        if not values:
            raise ConfigError(
                f"the search space's {kind} {list(choice)} must hold a bit-width the device runs ({list(legal)}), "
                f"but holds none; use {kind}: device or pick from that list."
            )
        dropped = [] if choice == "device" else [b for b in choice if b not in legal]
        if dropped:
            log.warning("the device runs no %s %s; the search uses %s", kind, dropped, sorted(values))
        return sorted(values)

    @staticmethod
    def _cuts(points: list[CutPoint]) -> list[str]:
        """Cut points after an activation, pooling, add or flatten (see :attr:`CutPoint.after_activation`)."""
        return [p.name for p in points if p.after_activation]

    def _step(self, name: str, first_last: set[str]) -> Step | None:
        group = self.table.group_of(name)
        keep_group = group.id if self.keep and group and not group.protected and group.leader == name else None
        bits_free = self.fixed_bits is None or name not in first_last
        wbits, abits = bool(self.wbits) and bits_free, bool(self.abits) and bits_free
        free = not (self.spec.protect_first_last and name in first_last)
        layer = self.table.by_name[name]
        techniques = tuple(t for t in self.techniques if free and get_technique(t).applies_to(layer))
        if keep_group is None and not wbits and not abits and not techniques:
            return None
        return Step(name, keep_group, wbits, abits, techniques)

    def _layout(self) -> dict[str, bool]:
        return {
            "keep": self.keep is not None,
            "wbits": self.wbits is not None,
            "abits": self.abits is not None,
            **{name: True for name in self.techniques},
            "split": self.split_choices is not None,
            "adapt": self.adapt_choices is not None,
        }

    @property
    def action_dim(self) -> int:
        return len(self.dims)

    def _component(self, action: np.ndarray, dim: str) -> float:
        return float((np.clip(action[self.dims.index(dim)], -1.0, 1.0) + 1.0) / 2.0)

    @staticmethod
    def _choice(unit: float, choices: list[Any]) -> Any:
        return choices[min(len(choices) - 1, math.floor(unit * len(choices)))]

    def decode_step(self, action: np.ndarray, step: Step) -> StepChoice:
        """Keep ratio and bit-widths an action asks for at ``step``."""
        keep = wbits = abits = None
        if step.keep_group is not None and self.keep is not None:
            keep = self.keep.min + self._component(action, "keep") * (self.keep.max - self.keep.min)
        if step.wbits and self.wbits:
            wbits = self._choice(self._component(action, "wbits"), self.wbits)
        if step.abits and self.abits:
            abits = self._choice(self._component(action, "abits"), self.abits)
        techniques = {}
        for name in step.techniques:
            span = self.techniques[name]
            techniques[name] = span.value(span.min + self._component(action, name) * (span.top - span.min))
        return StepChoice(keep, wbits, abits, techniques)

    def decode_split(self, action: np.ndarray) -> str | None:
        """Split point (``None`` for none) the first step's action asks for."""
        if not self.split_choices:
            return None
        split = self._choice(self._component(action, "split"), self.split_choices)
        return None if split == NO_SPLIT else split

    def decode_adapt(self, action: np.ndarray) -> str:
        """Adaptation the last step's action asks for."""
        if not self.adapt_choices:
            return "none"
        return str(self._choice(self._component(action, "adapt"), self.adapt_choices))

    # --- the inverse direction, for baselines that choose values rather than actions -----------------------------

    def encode(self, values: dict[str, Any]) -> np.ndarray:
        """The action that decodes to ``values`` (keys: keep, wbits, abits, the techniques' names, split, adapt;
        missing = middle, and a missing technique at the top of its range: off where the range reaches 1, so a
        baseline that sets keep alone prunes alone)."""
        action = np.zeros(self.action_dim, np.float32)
        for name in self.techniques:
            action[self.dims.index(name)] = 1.0
        for dim in self.dims:
            if dim not in values or values[dim] is None:
                continue
            ratio = self.keep if dim == "keep" else self.techniques.get(dim)
            if ratio is not None:
                raw = float(values[dim])
                raw = ratio.top if ratio.skip and raw >= 1.0 > ratio.max else raw  # off, where max stays below it
                action[self.dims.index(dim)] = 2 * (raw - ratio.min) / max(1e-9, ratio.top - ratio.min) - 1
            else:
                choices = self.choices(dim)
                action[self.dims.index(dim)] = 2 * (choices.index(values[dim]) + 0.5) / len(choices) - 1
        return np.clip(action, -1, 1)

    def choices(self, dim: str) -> list[Any]:
        return {"wbits": self.wbits, "abits": self.abits, "split": self.split_choices, "adapt": self.adapt_choices}[
            dim
        ] or []

    def parameters(self) -> list[tuple[str, str, Any]]:
        """Optuna parameters of the space: (name, 'float' or 'categorical', (low, high) or choices)."""
        params: list[tuple[str, str, Any]] = []
        for step in self.steps:
            if step.keep_group is not None and self.keep is not None:
                params.append((f"keep/{step.layer}", "float", (self.keep.min, self.keep.max)))
            if step.wbits:
                params.append((f"wbits/{step.layer}", "categorical", self.wbits))
            if step.abits:
                params.append((f"abits/{step.layer}", "categorical", self.abits))
            for name in step.techniques:
                span = self.techniques[name]
                params.append((f"{name}/{step.layer}", "float", (span.min, span.top)))  # above max: off
        if self.split_choices:
            params.append(("split", "categorical", self.split_choices))
        if self.adapt_choices:
            params.append(("adapt", "categorical", self.adapt_choices))
        return params

    def actions_from_params(self, params: dict[str, Any]) -> list[np.ndarray]:
        """One action per step from a flat parameter dict (as Optuna returns it)."""
        actions = []
        for i, step in enumerate(self.steps):
            values = {
                "keep": params.get(f"keep/{step.layer}"),
                "wbits": params.get(f"wbits/{step.layer}"),
                "abits": params.get(f"abits/{step.layer}"),
                **{name: params.get(f"{name}/{step.layer}") for name in step.techniques},
            }
            if i == 0:
                values["split"] = params.get("split")
            if i == len(self.steps) - 1:
                values["adapt"] = params.get("adapt")
            actions.append(self.encode(values))
        return actions
