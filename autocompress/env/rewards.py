"""Episode rewards, selected by the environment preset.

- ``acc``: accuracy; the hard budgets already hold by construction (AMC's accuracy-guaranteed reward).
- ``acc_log_cost``: −error × ln(cost), AMC's resource-aware reward (cost in its natural unit, e.g. MACs).
- ``weighted``: accuracy − Σ wᵢ × costᵢ / referenceᵢ, costs normalised by the uncompressed model's on the device.
- ``constrained``: accuracy − penalty × Σ max(0, costᵢ / soft budgetᵢ − 1) over the soft budgets.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from autocompress.env.presets import RewardSpec


def compute_reward(
    spec: RewardSpec,
    accuracy: float,
    costs: Mapping[str, float],
    reference: Mapping[str, float],
    soft_budgets: Mapping[str, float],
    energy_weight_scale: float = 1.0,
) -> float:
    """The reward of one finished episode.

    Args:
        spec: Reward mode, cost and weights.
        accuracy: Validation accuracy (0–1) of the compressed model.
        costs: The policy's costs by name (``macs``, ``latency_ms``, ``energy_mj``, ``storage_bytes``, and the
            budget names such as ``macs_ratio``).
        reference: The same costs of the uncompressed model (for ``weighted``).
        soft_budgets: Soft budget values by budget name (for ``constrained``).
        energy_weight_scale: Multiplies the energy weight (the context raises it as the battery drains).
    """
    if spec.mode == "acc":
        return accuracy
    if spec.mode == "acc_log_cost":
        return -(1.0 - accuracy) * math.log(max(costs[spec.cost], 1.0 + 1e-9))
    if spec.mode == "weighted":
        penalty = 0.0
        for name, weight in spec.weights.items():
            scale = energy_weight_scale if name == "energy_mj" else 1.0
            penalty += weight * scale * costs[name] / max(reference[name], 1e-12)
        return accuracy - penalty
    excess = sum(max(0.0, costs[name] / budget - 1.0) for name, budget in soft_budgets.items())
    return accuracy - spec.penalty * excess
