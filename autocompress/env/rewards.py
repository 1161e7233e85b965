"""Episode rewards, selected by the environment preset's ``reward.mode`` from the :data:`REWARDS` registry.

- ``acc``: accuracy; the hard budgets already hold by construction (AMC's accuracy-guaranteed reward).
- ``acc_log_cost``: −error × ln(cost), AMC's resource-aware reward (cost in its natural unit, e.g. MACs).
- ``weighted``: accuracy − Σ wᵢ × costᵢ / referenceᵢ, costs normalised by the uncompressed model's on the device.
- ``constrained``: accuracy − penalty × Σ max(0, costᵢ / soft budgetᵢ − 1) over the soft budgets.
- your own: ``mode: mypkg.rewards:mine`` (or ``file.py:mine``), a function ``(spec, RewardInputs) -> float``. The
  run records the reference with its presets, so a new process that resumes or exports the run finds it (and
  imports it only with ``trust_code``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from autocompress.plugins import import_object


class RewardSpec(Protocol):
    """What a reward function reads of the preset's ``reward:`` section
    (:class:`autocompress.env.presets.RewardSpec` — a protocol here, since the presets import this registry)."""

    @property
    def mode(self) -> str: ...
    @property
    def cost(self) -> str: ...
    @property
    def weights(self) -> Mapping[str, float]: ...
    @property
    def penalty(self) -> float: ...


@dataclass(frozen=True)
class RewardInputs:
    """What a reward function sees of one finished episode.

    Args:
        accuracy: Validation accuracy (0–1) of the compressed model.
        costs: The policy's costs by name (``macs``, ``latency_ms``, ``energy_mj``, ``storage_bytes``, and the
            budget names such as ``macs_ratio``).
        reference: The same costs of the uncompressed model (for ``weighted``).
        soft_budgets: Soft budget values by budget name (for ``constrained``).
        energy_weight_scale: Multiplies the energy weight (the context raises it as the battery drains).
    """

    accuracy: float
    costs: Mapping[str, float]
    reference: Mapping[str, float]
    soft_budgets: Mapping[str, float]
    energy_weight_scale: float = 1.0


def _acc(spec: RewardSpec, x: RewardInputs) -> float:
    return x.accuracy


def _acc_log_cost(spec: RewardSpec, x: RewardInputs) -> float:
    return -(1.0 - x.accuracy) * math.log(max(x.costs[spec.cost], 1.0 + 1e-9))


def _weighted(spec: RewardSpec, x: RewardInputs) -> float:
    penalty = 0.0
    for name, weight in spec.weights.items():
        scale = x.energy_weight_scale if name == "energy_mj" else 1.0
        penalty += weight * scale * x.costs[name] / max(x.reference[name], 1e-12)
    return x.accuracy - penalty


def _constrained(spec: RewardSpec, x: RewardInputs) -> float:
    excess = sum(max(0.0, x.costs[name] / budget - 1.0) for name, budget in x.soft_budgets.items())
    return x.accuracy - spec.penalty * excess


REWARDS: dict[str, Callable[[RewardSpec, RewardInputs], float]] = {
    "acc": _acc,
    "acc_log_cost": _acc_log_cost,
    "weighted": _weighted,
    "constrained": _constrained,
}


def compute_reward(
    spec: RewardSpec,
    accuracy: float,
    costs: Mapping[str, float],
    reference: Mapping[str, float],
    soft_budgets: Mapping[str, float],
    energy_weight_scale: float = 1.0,
) -> float:
    """The reward of one finished episode under ``spec`` (see :class:`RewardInputs` for the arguments)."""
    function = REWARDS.get(spec.mode) or import_object(spec.mode, "a reward function", "mypkg.rewards:mine")
    return float(function(spec, RewardInputs(accuracy, costs, reference, soft_budgets, energy_weight_scale)))
