"""Budgets that hold by construction (AMC-style look-ahead clipping).

Before each step's choice is accepted, the guard checks that every hard budget (and the device's RAM and flash)
would still hold if every later step took its minimum (smallest keep, fewest bits). The largest choice not above
the agent's that passes is taken. The all-minimum policy is checked when the environment is built, so an episode
always has a feasible completion; the final policy therefore never violates a hard budget.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from autocompress import context_rules
from autocompress.compress.adaptation import AdaptationCost
from autocompress.compress.layers import round_channels
from autocompress.compress.techniques import technique_shapes
from autocompress.env.deployment import Limits
from autocompress.env.search_space import SearchSpace, Step, StepChoice
from autocompress.errors import ConfigError
from autocompress.hardware.cost_model import CostModel, CostReport, LayerBits


@dataclass
class Assignment:
    """A (partial) policy in the guard's terms: channels kept per group, bits per layer (table order) and the
    techniques' values per layer name (absent: off)."""

    kept: dict[int, int]
    bits: list[LayerBits]
    split: str | None = None
    adapt: str = "none"
    techniques: dict[str, dict[str, float]] = field(default_factory=dict)

    def copy(self) -> Assignment:
        techniques = {name: dict(values) for name, values in self.techniques.items()}
        return Assignment(dict(self.kept), list(self.bits), self.split, self.adapt, techniques)


def resources(report: CostReport, macs: int, total_macs: int, adapt_every: int) -> dict[str, float]:
    """A cost report in budget terms; adaptation energy is spread over ``adapt_every`` inferences."""
    return {
        "macs": float(macs),
        "macs_ratio": macs / total_macs,
        "latency_ms": report.latency_ms,
        "energy_mj": report.energy_mj + report.adapt_energy_mj / adapt_every,
        "storage_bytes": float(report.storage_bytes),
        "peak_memory_bytes": float(report.peak_memory_bytes),
    }


class BudgetGuard:
    """Clip each step's choice so the hard budgets stay reachable.

    Args:
        space: The resolved search space.
        cost: The cost model of this episode's device, link and context.
        limits: The hard limits of this episode.
        adapt_cost: Estimates the adaptation cost of a method (for energy budgets).
        adapt_every: Inferences an adaptation's energy is spread over.
    """

    def __init__(
        self,
        space: SearchSpace,
        cost: CostModel,
        limits: Limits,
        adapt_cost: Callable[[str], AdaptationCost],
        adapt_every: int,
    ) -> None:
        self.space, self.cost, self.limits = space, cost, limits
        self.table = space.table
        self.adapt_cost, self.adapt_every = adapt_cost, adapt_every
        self.index = {name: i for i, name in enumerate(self.table.names)}

    def initial(self) -> Assignment:
        """Everything at full size and the space's widest bits (32 where the space does not turn bits)."""
        kept = {g.id: g.channels for g in self.table.groups}
        fixed = self.space.fixed_bits
        first_last = {0, len(self.table.layers) - 1}
        bits = []
        for i in range(len(self.table.layers)):
            if fixed is not None and i in first_last:
                bits.append(LayerBits(self.space.fixed_wbits, self.space.fixed_abits))
            else:
                bits.append(LayerBits(max(self.space.wbits or [32]), max(self.space.abits or [32])))
        return Assignment(kept, bits)

    def minimum_from(self, state: Assignment, start: int, techniques_at_top: bool = False) -> Assignment:
        """``state`` with steps ``start`` onwards at their minimum choices (techniques at the top of their range
        with ``techniques_at_top``: a factorised layer is two operations, so where dispatch overheads dominate the
        least rank is not the least latency)."""
        keep = self.space.keep.min if self.space.keep else None
        spans = self.space.techniques.items()
        ends = {name: span.value(span.top) if techniques_at_top else span.min for name, span in spans}
        return self.uniform(keep, min(self.space.wbits or [32]), min(self.space.abits or [32]), state, start, ends)

    def completable(self, state: Assignment, start: int) -> bool:
        """Whether steps ``start`` onwards at their minimum (techniques at either end of their range) meet every
        hard limit."""
        if not self.violations(self.minimum_from(state, start)):
            return True
        return bool(self.space.techniques) and not self.violations(self.minimum_from(state, start, True))

    def uniform(
        self,
        keep: float | None,
        wbits: int | None,
        abits: int | None,
        state: Assignment | None = None,
        start: int = 0,
        techniques: Mapping[str, float] | None = None,
    ) -> Assignment:
        """``state`` (default: :meth:`initial`) with the same keep ratio, bits and technique values at every step
        from ``start`` on; ``None`` (or a technique not named) leaves that knob as it is."""
        result = (state or self.initial()).copy()
        for step in self.space.steps[start:]:
            self._set(result, step, keep, wbits, abits, techniques)
        return result

    def feasible(self, state: Assignment) -> bool:
        """Whether ``state`` meets every hard limit as it stands."""
        return not self.violations(state)

    def _set(
        self,
        state: Assignment,
        step: Step,
        keep: float | None,
        wbits: int | None,
        abits: int | None,
        techniques: Mapping[str, float] | None = None,
    ) -> None:
        for name in step.techniques:
            if techniques and name in techniques:
                state.techniques.setdefault(step.layer, {})[name] = float(techniques[name])
        if step.keep_group is not None and keep is not None:
            group = self.table.groups[step.keep_group]
            state.kept[group.id] = round_channels(group.channels, keep, self.space.round_to)
        i = self.index[step.layer]
        old = state.bits[i]
        state.bits[i] = LayerBits(
            wbits if step.wbits and wbits else old.wbits, abits if step.abits and abits else old.abits
        )

    def unclipped(self, choices: list[StepChoice]) -> Assignment:
        """The assignment that the choices per step ask for, nothing clipped: if it meets the limits,
        :meth:`apply_step` keeps every choice of it (the costs grow with keep, bits and technique values)."""
        state = self.initial()
        for step, choice in zip(self.space.steps, choices, strict=True):
            self._set(state, step, choice.keep, choice.wbits, choice.abits, choice.techniques)
        return state

    def evaluate(self, state: Assignment) -> dict[str, float]:
        report = self.cost.predict(state.kept, state.bits, state.split, self.adapt_cost(state.adapt), state.techniques)
        macs = sum(s.macs for s in technique_shapes(self.table, state.kept, state.techniques))
        values = resources(report, macs, self.table.macs, self.adapt_every)
        values["fits_ram"] = float(report.peak_memory_bytes <= self.limits.ram_bytes)
        values["fits_flash"] = float(report.storage_bytes <= self.limits.flash_bytes)
        return values

    def violations(self, state: Assignment) -> list[str]:
        """Names of the hard limits ``state`` breaks (``ram`` and ``flash`` for the device's memory)."""
        values = self.evaluate(state)
        return context_rules.violations(values, self.limits.hard, self.limits.ram_bytes, self.limits.flash_bytes)

    def feasible_after(self, state: Assignment, next_step: int) -> bool:
        return self.completable(state, next_step)

    def apply_step(self, state: Assignment, index: int, choice: StepChoice) -> Assignment:
        """Apply step ``index``'s choice, clipped: the largest keep (with this layer's bits and techniques at their
        minimum), then the largest value of each technique, then the most weight bits, then the most activation
        bits, that leave a feasible completion."""
        step = self.space.steps[index]
        min_w, min_a = min(self.space.wbits or [32]), min(self.space.abits or [32])
        lowest = {name: self.space.techniques[name].min for name in step.techniques}
        new = state.copy()
        self._set(new, step, None, None, None, lowest)
        keep = self._clip_keep(new, index, step, choice.keep, min_w, min_a)
        self._set(new, step, keep, None, None)
        for name in step.techniques:
            value = self._clip_technique(new, index, step, name, choice.techniques.get(name), min_w, min_a)
            self._set(new, step, None, None, None, {name: value})
        wbits, abits = choice.wbits, choice.abits
        wbits = self._clip_bits(new, index, step, wbits, "wbits", lambda b: (b, min_a))
        self._set(new, step, None, wbits, None)
        abits = self._clip_bits(new, index, step, abits, "abits", lambda b: (None, b))
        self._set(new, step, None, None, abits)
        return new

    def _clip_keep(
        self, state: Assignment, index: int, step: Step, keep: float | None, min_w: int, min_a: int
    ) -> float | None:
        if keep is None or step.keep_group is None or self.space.keep is None:
            return keep
        group = self.table.groups[step.keep_group]
        low = round_channels(group.channels, self.space.keep.min, self.space.round_to)
        wanted = round_channels(group.channels, keep, self.space.round_to)
        counts = list(range(wanted, low - 1, -max(1, min(self.space.round_to, group.channels)))) or [low]
        ok = self._largest(counts, lambda c: self._try(state, index, step, c / group.channels, min_w, min_a))
        return (ok if ok is not None else low) / group.channels

    def _clip_technique(
        self, state: Assignment, index: int, step: Step, name: str, value: float | None, min_w: int, min_a: int
    ) -> float:
        """The largest value of technique ``name`` not above ``value`` (on a grid of 1/32 of the space's range)
        that leaves a feasible completion; the range's minimum when none does."""
        span = self.space.techniques[name]
        if value is None:
            return span.min
        highest = span.value(span.top)  # off (1) where the range has an off share, else its max
        if value >= 1.0 > span.max and span.skip and self._try(state, index, step, None, min_w, min_a, {name: 1.0}):
            return 1.0  # asked off, and off fits
        top = min(span.max, max(span.min, value))
        grid = [top - k * (top - span.min) / 32 for k in range(33)]
        found = self._largest(grid, lambda v: self._try(state, index, step, None, min_w, min_a, {name: v}))
        if found is None and self._try(state, index, step, None, min_w, min_a, {name: highest}):
            return highest  # latency or energy the least rank cannot meet, one operation fewer can
        return found if found is not None else span.min

    def _clip_bits(
        self,
        state: Assignment,
        index: int,
        step: Step,
        bits: int | None,
        kind: str,
        as_pair: Callable[[int], tuple[int | None, int | None]],
    ) -> int | None:
        if bits is None:
            return None
        legal: list[int] = getattr(self.space, kind)
        choices = [b for b in sorted(legal, reverse=True) if b <= bits]
        found = self._largest(choices, lambda b: self._try(state, index, step, None, *as_pair(b)))
        return found if found is not None else min(legal)

    def _try(
        self,
        state: Assignment,
        index: int,
        step: Step,
        keep: float | None,
        wbits: int | None,
        abits: int | None,
        techniques: Mapping[str, float] | None = None,
    ) -> bool:
        trial = state.copy()
        self._set(trial, step, keep, wbits, abits, techniques)
        return self.feasible_after(trial, index + 1)

    @staticmethod
    def _largest(candidates: list[Any], ok: Callable[[Any], bool]) -> Any:
        """The first candidate (largest first) that passes, by bisection over the monotone sequence."""
        lo, hi = 0, len(candidates) - 1
        if not candidates or not ok(candidates[-1]):
            return None
        while lo < hi:
            mid = (lo + hi) // 2
            if ok(candidates[mid]):
                hi = mid
            else:
                lo = mid + 1
        return candidates[lo]

    def choose_split(self, state: Assignment, split: str | None) -> Assignment:
        """Set the split point before any layer is decided, if every later layer at its minimum can still meet the
        budgets with it; otherwise keep everything on the device."""
        chosen = state.copy()
        chosen.split = split
        if split is not None and not self.completable(chosen, 0):
            chosen.split = None
        return chosen

    def finish(self, state: Assignment, split: str | None, adapt: str) -> Assignment:
        """Apply the split and the last step's adaptation where they keep the policy feasible."""
        final = state.copy()
        for candidate_split, candidate_adapt in ((split, adapt), (split, "none"), (None, adapt), (None, "none")):
            final.split, final.adapt = candidate_split, candidate_adapt
            if not self.violations(final):
                return final
        final.split, final.adapt = None, "none"
        return final

    def check_reachable(self, where: str) -> None:
        """Raise a one-line error when even the all-minimum policy breaks a hard limit."""
        low = self.minimum_from(self.initial(), 0)
        broken = [] if self.completable(self.initial(), 0) else self.violations(low)
        if broken:
            values = self.evaluate(low)
            name = broken[0]
            if name in ("ram", "flash"):
                need = values["peak_memory_bytes" if name == "ram" else "storage_bytes"]
                raise ConfigError(
                    f"{where}: the model must fit the device's {name}, but the smallest policy needs {need:.0f} bytes; "
                    "widen the search space or pick a larger device."
                )
            raise ConfigError(
                f"{where}: budget {name} <= {self.limits.hard[name]:g} is infeasible: the smallest policy of this "
                f"search space reaches {values[name]:.4g}; raise the budget or widen the search space."
            )
