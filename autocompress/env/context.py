"""The deployment context of an episode, drawn at reset from the environment preset's distribution.

How the context acts (AdaSpring/CAQ style) is applied in one place, :class:`~autocompress.env.deployment.Deployment`:
the battery level scales the energy budget and raises the energy weight of the ``weighted`` reward; the free-memory
fraction scales the RAM a policy may use; the bandwidth scale multiplies the link's rates; the latency budget, when
drawn, replaces the preset's. The shift corrupts the validation images and sets the drift score (the evaluator).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from dataclasses import fields as dataclass_fields
from typing import Any

import numpy as np

from autocompress import context_rules
from autocompress.data.drift import DriftData
from autocompress.data.shifts import Shift
from autocompress.env.presets import ContextSpec
from autocompress.errors import ConfigError


@dataclass(frozen=True)
class Context:
    battery: float
    free_memory: float
    bandwidth_scale: float
    latency_budget_ms: float | None
    shift: Shift | DriftData | None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["shift"] = str(self.shift) if self.shift else None
        return data


def _draw(rng: np.random.Generator, values: list[float]) -> float:
    return (
        float(values[0]) if len(values) == 1 or values[0] == values[-1] else float(rng.uniform(values[0], values[-1]))
    )


def sample_context(spec: ContextSpec, rng: np.random.Generator) -> Context:
    """Draw one context; all randomness comes from ``rng`` (the environment's ``np_random``)."""
    shift_spec = spec.shifts[int(rng.integers(len(spec.shifts)))]
    return Context(
        battery=_draw(rng, spec.battery),
        free_memory=_draw(rng, spec.free_memory),
        bandwidth_scale=_draw(rng, spec.bandwidth_scale),
        latency_budget_ms=_draw(rng, spec.latency_budget_ms) if spec.latency_budget_ms else None,
        shift=None if shift_spec == "none" else Shift.parse(shift_spec),
    )


def override_context(context: Context, fields: dict[str, Any]) -> Context:
    """``context`` with some fields replaced; ``shift`` is given as text (``"contrast:3"``, ``"none"``)."""
    names = [f.name for f in dataclass_fields(Context)]
    unknown = sorted(set(fields) - set(names))
    if unknown:
        raise ConfigError(f"a context override may set {', '.join(names)}, but got '{unknown[0]}'.")
    values = dict(fields)
    if "shift" in values:
        values["shift"] = None if values["shift"] in (None, "none") else Shift.parse(str(values["shift"]))
    return replace(context, **values)


def worst_context(spec: ContextSpec) -> Context:
    """The context with the tightest limits, checked when the environment is built."""
    least = context_rules.worst({name: getattr(spec, name) for name in context_rules.CONTEXT_FIELDS})
    return Context(**least, shift=None)  # type: ignore[arg-type]
