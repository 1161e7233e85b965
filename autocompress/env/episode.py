"""The typed record of one finished episode: what the environment's final ``info`` holds (its contract with every
searcher, callback and run folder), and the objectives searches trade off."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# The objectives of multi-objective search and of the Pareto front: (info key, +1 to maximise / -1 to minimise).
OBJECTIVES: tuple[tuple[str, int], ...] = (
    ("accuracy", 1),
    ("latency_ms", -1),
    ("energy_mj", -1),
    ("storage_bytes", -1),
)


@dataclass(frozen=True)
class EpisodeResult:
    """One finished episode, as the environment reports it in the last step's ``info``.

    Args:
        accuracy: Validation accuracy of the compressed model (0–1).
        reward: The episode's reward (see :mod:`autocompress.env.rewards`).
        latency_ms: Predicted latency of one inference on the deployment.
        energy_mj: Predicted energy of one inference (adaptation energy spread over ``adapt_every`` inferences).
        macs_ratio: MACs kept, as a fraction of the uncompressed model's.
        macs: MACs kept.
        storage_bytes: Weight storage at the policy's bits.
        peak_memory_bytes: Predicted peak RAM.
        fits: Whether the policy fits the device's RAM and flash in this context.
        split_bytes: Bytes sent over the link per input (``None`` without a split).
        constraint_violations: Budgets broken (hard, memory and soft).
        hard_violations: Hard budgets and memory limits broken (0 by construction).
        violated: Names of the broken budgets.
        drift_score: Drift score of the context's input under the unpruned model.
        policy: The policy document (:meth:`Policy.to_dict`).
        context: The episode's context (:meth:`Context.to_dict`).
        timings: Seconds spent per phase of the evaluation, and the whole episode.
    """

    accuracy: float
    reward: float
    latency_ms: float
    energy_mj: float
    macs_ratio: float
    macs: int
    storage_bytes: int
    peak_memory_bytes: int
    fits: bool
    split_bytes: int | None
    constraint_violations: int
    hard_violations: int
    violated: list[str]
    drift_score: float
    policy: dict[str, Any]
    context: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)

    def to_info(self) -> dict[str, Any]:
        """The ``info`` dict of the episode's last step."""
        return dataclasses.asdict(self)

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> EpisodeResult:
        """Read the last step's ``info`` back (extra keys a wrapper added are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in info.items() if k in names})

    def objectives(self) -> tuple[float, ...]:
        """The :data:`OBJECTIVES` values, in their order."""
        return tuple(float(getattr(self, key)) for key, _ in OBJECTIVES)
