"""How a deployment context becomes limits and budgets — one set of rules, used by the environment
(:class:`~autocompress.env.deployment.Deployment`), the package builder (:mod:`~autocompress.deploy.adaptive`) and
the on-device runtime and simulator (:class:`~autocompress.deploy.runtime.AdaptiveModel`). Standard library only:
it runs on the device.

- battery (0..1] scales the preset's hard energy budget per inference, and becomes an energy budget of its own by
  :func:`battery_energy_budget` (the battery governor), whatever the preset's budgets are; hours_to_charge, when the
  device knows when it is next charged, turns the charge into the charge the governor reads
  (:func:`effective_charge`);
- free_memory (0..1] scales the device's RAM a configuration may use;
- bandwidth_scale multiplies the link's nominal rates (0: no link); costs are looked up at the grid point at or
  below it (:func:`grid_index`), so a package never assumes more bandwidth than the context has;
- latency_budget_ms, when the context gives one, is a hard latency budget that replaces the preset's;
- the worst context takes the least of every range (:func:`worst`).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence

CONTEXT_FIELDS = ("battery", "free_memory", "bandwidth_scale", "latency_budget_ms")  # the limits a context sets
RUNTIME_FIELDS = (*CONTEXT_FIELDS, "hours_to_charge")  # what a device tells the runtime
RELATIVE_SLACK = 1e-9  # a cost equal to its limit up to rounding meets it


def budgets(
    preset: Mapping[str, float], hard: bool, battery: float = 1.0, latency_budget_ms: float | None = None
) -> dict[str, float]:
    """The preset's hard (or soft) budgets in a context: energy × battery; a context's latency budget becomes the
    hard latency budget (and removes a soft one)."""
    values = dict(preset)
    if "energy_mj" in values:
        values["energy_mj"] *= battery
    if latency_budget_ms is not None:
        if hard:
            values["latency_ms"] = float(latency_budget_ms)
        else:
            values.pop("latency_ms", None)
    return values


BATTERY_FULL = 0.8  # at or above this charge the governor allows the most accurate configuration's energy
BATTERY_LOW = 0.2  # at or below it, the cheapest configuration's


def battery_energy_budget(battery: float, least_mj: float, most_mj: float) -> float:
    """The energy per inference the battery governor allows at a charge of ``battery``: ``most_mj`` (the most
    accurate runnable configuration's energy) at or above :data:`BATTERY_FULL`, ``least_mj`` (the cheapest's) at or
    below :data:`BATTERY_LOW`, and geometrically between (equal steps of charge buy equal ratios of energy). The
    budget moves with the package's own energy range, so it binds whatever the preset's energy budget is (none, soft
    or hard), and the cheapest configuration always meets it."""
    if most_mj <= least_mj or least_mj <= 0:
        return max(least_mj, most_mj)
    fraction = min(1.0, max(0.0, (battery - BATTERY_LOW) / (BATTERY_FULL - BATTERY_LOW)))
    return float(least_mj * (most_mj / least_mj) ** fraction)


def field_problem(name: str, value: object) -> str | None:
    """What is wrong with a context field's value (``None``: nothing): battery and free_memory are fractions in
    (0, 1], bandwidth_scale >= 0, latency_budget_ms > 0 or None (none), hours_to_charge >= 0 or None (unknown)."""
    if value is None and name in ("latency_budget_ms", "hours_to_charge"):
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != value:
        return f"{name} must be a number, but is {value!r}"
    value = float(value)
    rules = {
        "battery": (0 < value <= 1, "0 < battery <= 1"),
        "free_memory": (0 < value <= 1, "0 < free_memory <= 1"),
        "bandwidth_scale": (value >= 0, "bandwidth_scale >= 0 (0: no link)"),
        "latency_budget_ms": (value > 0, "latency_budget_ms > 0 (or None: no budget)"),
        "hours_to_charge": (value >= 0, "hours_to_charge >= 0 (or None: unknown)"),
    }
    ok, rule = rules[name]
    return None if ok else f"a context must have {rule}, but {name} is {value!r}"


DAY_HOURS = 16.0  # the time a full charge is meant to last: a waking day for a phone, a watch or a field sensor


def effective_charge(battery: float, hours_to_charge: float | None = None) -> float:
    """The charge the battery governor reads, given the hours until the next charge (``None``: unknown, the charge
    itself). The charge above :data:`BATTERY_LOW` is stretched or shrunk by :data:`DAY_HOURS` / ``hours_to_charge``:
    half a battery 8 hours before the charger is as comfortable as a full one at the start of a day (both spend it
    at the same pace), a full one 48 hours from the next charge is as tight as 47 % of one today, and on the way to the
    charger the budget opens up. At or below :data:`BATTERY_LOW` the charge is what it is."""
    if hours_to_charge is None or battery <= BATTERY_LOW:
        return battery
    return min(1.0, BATTERY_LOW + (battery - BATTERY_LOW) * DAY_HOURS / max(hours_to_charge, 1e-9))


def dominated(points: Sequence[Sequence[float]]) -> list[bool]:
    """For points (higher first coordinate better, lower others better — e.g. accuracy, energy, latency): whether
    another point is at least as good in every coordinate and better in one."""

    def beats(a: Sequence[float], b: Sequence[float]) -> bool:
        at_least = a[0] >= b[0] and all(x <= y for x, y in zip(a[1:], b[1:], strict=True))
        return at_least and tuple(a) != tuple(b)

    return [any(beats(other, point) for other in points if other is not point) for point in points]


def within(value: float, limit: float) -> bool:
    return value <= limit * (1 + RELATIVE_SLACK)


def grid_index(grid: Sequence[float], bandwidth_scale: float) -> int:
    """The point of a rising bandwidth grid (starting at 0) at or below ``bandwidth_scale``."""
    return max(i for i, b in enumerate(grid) if b <= max(0.0, bandwidth_scale) + 1e-9)


def violations(
    costs: Mapping[str, float],
    hard_budgets: Mapping[str, float],
    ram_bytes: float,
    flash_bytes: float,
    free_memory: float = 1.0,
) -> list[str]:
    """The hard limits a configuration with ``costs`` (``latency_ms``, ``energy_mj``, ``storage_bytes``,
    ``peak_memory_bytes``, …) breaks, given budgets already in the context (:func:`budgets`): each budget it
    exceeds, ``ram`` when its peak memory exceeds the free RAM, ``flash`` when its storage exceeds the flash."""
    broken = [name for name, limit in hard_budgets.items() if name in costs and not within(costs[name], limit)]
    if not within(costs["peak_memory_bytes"], ram_bytes * free_memory):
        broken.append("ram")
    if not within(costs["storage_bytes"], flash_bytes):
        broken.append("flash")
    return broken


def worst(ranges: Mapping[str, Sequence[float] | None]) -> dict[str, float | None]:
    """The context with the tightest limits: the least of each field's range (``None``: the field is not drawn)."""
    return {name: min(values) if (values := ranges.get(name)) else None for name in CONTEXT_FIELDS}
