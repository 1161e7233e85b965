"""Agent presets (``agents/*.yaml``): the algorithm and its hyperparameters."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from autocompress.config import load_config, require
from autocompress.env.presets import preset_names, resolve_preset
from autocompress.errors import did_you_mean
from autocompress.search.registry import register_searcher, searcher_names


@dataclass(frozen=True)
class AgentSpec:
    """An agent preset. Exploration and warm-up fields apply to the off-policy RL agents (ddpg, td3, sac).

    Args:
        name: The preset's name (in run folder names and reports).
        algorithm: A registered searcher (``ddpg``, ``td3``, ``sac``, ``ppo``, ``tpe``, ``nsga2``, ``random``,
            ``uniform``, or one added with :func:`~autocompress.search.base.register_searcher`).
        hyperparameters: Passed to the algorithm (SB3 model or Optuna sampler keyword arguments).
        searcher: Where a user's searcher lives (``"package.module:Class"``), recorded by a run so that a new
            process knows ``algorithm`` without registering it (see :mod:`autocompress.search.registry`).
    """

    name: str
    algorithm: str
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    warmup_episodes: int = 100
    noise_sigma: float = 0.5
    noise_decay: float = 0.95
    baseline_decay: float = 0.95
    buffer_episodes: int = 100
    episodes_per_update: int = 8
    searcher: str | None = None

    def __post_init__(self) -> None:
        if self.searcher is not None and self.algorithm not in searcher_names():
            register_searcher(self.algorithm, self.searcher, from_run=True)  # imported only when it runs
        names = searcher_names()
        require(
            self.algorithm in names,
            f"algorithm must be one of {', '.join(names)}, but got '{self.algorithm}'."
            + did_you_mean(self.algorithm, names),
        )
        require(self.warmup_episodes >= 0, f"warmup_episodes >= 0 must hold, but got {self.warmup_episodes}.")
        require(
            math.isfinite(self.noise_sigma) and self.noise_sigma >= 0,
            f"noise_sigma >= 0 must hold (the exploration noise's standard deviation), but got {self.noise_sigma}.",
        )
        require(0 < self.noise_decay <= 1, f"0 < noise_decay <= 1 must hold, but got {self.noise_decay}.")
        require(0 <= self.baseline_decay < 1, f"0 <= baseline_decay < 1 must hold, but got {self.baseline_decay}.")
        require(self.buffer_episodes >= 1 and self.episodes_per_update >= 1, "buffer and update sizes must be >= 1.")

    def warmup_for(self, episodes: int) -> int:
        """Warm-up episodes for a search of ``episodes``: the preset's, capped at a third of the search."""
        return min(self.warmup_episodes, episodes // 3)


def load_agent(name_or_path: str) -> AgentSpec:
    """An agent preset by shipped name (``ddpg``) or YAML path; the name of a registered searcher with no preset
    file gives that searcher with default settings."""
    if name_or_path not in preset_names("agents") and name_or_path in searcher_names():
        return AgentSpec(name=name_or_path, algorithm=name_or_path)
    return load_config(AgentSpec, resolve_preset("agents", name_or_path))
