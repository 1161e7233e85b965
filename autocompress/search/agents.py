"""Agent presets (``agents/*.yaml``): the algorithm and its hyperparameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from autocompress.config import load_config, require
from autocompress.env.presets import resolve_preset

SB3_ALGORITHMS = ("ddpg", "td3", "sac", "ppo")
OPTUNA_ALGORITHMS = ("tpe", "nsga2")
ALGORITHMS = (*SB3_ALGORITHMS, *OPTUNA_ALGORITHMS, "random", "uniform")


@dataclass(frozen=True)
class AgentSpec:
    """An agent preset. Exploration and warm-up fields apply to the off-policy RL agents (ddpg, td3, sac)."""

    name: str
    algorithm: Literal["ddpg", "td3", "sac", "ppo", "tpe", "nsga2", "random", "uniform"]
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    warmup_episodes: int = 100
    noise_sigma: float = 0.5
    noise_decay: float = 0.95
    baseline_decay: float = 0.95
    buffer_episodes: int = 100
    episodes_per_update: int = 8

    def __post_init__(self) -> None:
        require(self.warmup_episodes >= 0, f"warmup_episodes >= 0 must hold, but got {self.warmup_episodes}.")
        require(0 < self.noise_decay <= 1, f"0 < noise_decay <= 1 must hold, but got {self.noise_decay}.")
        require(0 <= self.baseline_decay < 1, f"0 <= baseline_decay < 1 must hold, but got {self.baseline_decay}.")
        require(self.buffer_episodes >= 1 and self.episodes_per_update >= 1, "buffer and update sizes must be >= 1.")

    def warmup_for(self, episodes: int) -> int:
        """Warm-up episodes for a search of ``episodes``: the preset's, capped at a third of the search."""
        return min(self.warmup_episodes, episodes // 3)


def load_agent(name_or_path: str) -> AgentSpec:
    """An agent preset by shipped name (``ddpg``) or YAML path."""
    return load_config(AgentSpec, resolve_preset("agents", name_or_path))
