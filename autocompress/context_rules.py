"""How a deployment context becomes limits and budgets — one set of rules, used by the environment
(:class:`~autocompress.env.deployment.Deployment`), the package builder (:mod:`~autocompress.deploy.adaptive`) and
the on-device runtime and simulator (:class:`~autocompress.deploy.runtime.AdaptiveModel`). Standard library only:
it runs on the device.

- battery (0..1] scales the preset's hard energy budget per inference, and becomes an energy budget of its own by
  :func:`battery_energy_budget` (the battery governor: the pace the charge sustains until the next charge),
  whatever the preset's budgets are; hours_to_charge, when the device knows when it is next charged, says how long
  the charge must last (:func:`hours_ahead`; else the rest of a day since the last charge);
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


BATTERY_LOW = 0.2  # the reserve: at or below this charge the governor allows only the cheapest configuration
DAY_HOURS = 16.0  # the time a full charge is meant to last: a waking day for a phone, a watch or a field sensor
MIN_HOURS_AHEAD = 1.0  # the governor plans at least this far ahead (a day overrun, a charger said to be near)


def hours_ahead(hours_to_charge: float | None = None, hours_since_charge: float | None = None) -> float:
    """The hours the charge must still last: until the next charge when the device knows it, else the rest of a
    :data:`DAY_HOURS` day since the battery was last charged (a whole day when that is unknown too); at least
    :data:`MIN_HOURS_AHEAD`."""
    if hours_to_charge is not None:
        hours = hours_to_charge
    elif hours_since_charge is not None:
        hours = DAY_HOURS - hours_since_charge
    else:
        hours = DAY_HOURS
    return max(float(hours), MIN_HOURS_AHEAD)


def hours_on_schedule(battery: float) -> float:
    """The hours into a :data:`DAY_HOURS` day at which a charge spent on schedule (full to the reserve in a day)
    stands at ``battery``: where the governor places a day whose start it has not seen (the runtime's first reading,
    a partial charge), so a device that starts at 80 % runs as if on schedule until its drain says otherwise."""
    usable = min(1.0, max(0.0, (battery - BATTERY_LOW) / (1.0 - BATTERY_LOW)))
    return (1.0 - usable) * DAY_HOURS


def battery_energy_budget(battery: float, ahead: float, least_mj: float, most_mj: float) -> float:
    """The energy per inference the battery governor allows: the pace the charge sustains. ``most_mj`` (the most
    accurate runnable configuration's energy) is the pace that takes a full battery down to the reserve
    (:data:`BATTERY_LOW`) in one :data:`DAY_HOURS` day; with ``battery`` left and ``ahead`` hours to go
    (:func:`hours_ahead`) the sustainable pace is ``most_mj × usable charge / day fraction ahead``, where the usable
    charge is the part above the reserve as a fraction of a full one — a device behind that schedule spends less,
    one ahead of it (a charger near) spends up to ``most_mj``; at or below the reserve, ``least_mj`` (the cheapest's).
    A constant pace is what the concavity of accuracy against energy favours: spending a day's energy evenly loses
    less accuracy than spending it fully first and running the cheapest configuration at the end. The budget moves
    with the package's own energy range, so it binds whatever the preset's energy budget is (none, soft or hard)."""
    usable = (battery - BATTERY_LOW) / (1.0 - BATTERY_LOW)
    if usable <= 0 or most_mj <= least_mj:
        return least_mj if usable <= 0 else max(least_mj, most_mj)
    pace = usable / (ahead / DAY_HOURS)
    return float(min(most_mj, max(least_mj, most_mj * pace)))


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
