"""A search job, readable top to bottom (CleanRL style): seed → run folder → environment → agent → learn →
summary. Every agent searches the same environment (space, budgets, evaluator) with the same episode budget."""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from autocompress.env import AutoCompressEnv, build_workload, load_env_preset, load_space_preset
from autocompress.errors import ConfigError
from autocompress.runs import atomic_write_json, command_line, existing_run_dir, new_run_dir, system_report
from autocompress.search.agents import OPTUNA_ALGORITHMS, SB3_ALGORITHMS, load_agent
from autocompress.search.recorder import SearchRecorder

log = logging.getLogger(__name__)
CONFIG = "config.json"


@dataclass(frozen=True)
class SearchConfig:
    """Everything that defines a search; saved as ``config.json`` in the run folder and reused by ``--resume``."""

    model: str
    dataset: str
    env: str
    agent: str
    space: str
    episodes: int
    seed: int = 0
    pretrained: bool = True
    weights: str | None = None
    data_dir: str | None = None
    budgets: dict[str, Any] = field(default_factory=dict)
    val_images: int | None = None
    storage: str | None = None
    exp: str = "search"

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ConfigError(f"episodes >= 1 must hold, but got episodes={self.episodes}.")
        if self.val_images is not None and self.val_images < 10:
            raise ConfigError(f"val_images >= 10 must hold, but got {self.val_images}.")


class SearchJob:
    """Run (or resume) one search in its run folder."""

    def __init__(self, config: SearchConfig, run_dir: Path) -> None:
        self.config, self.run_dir = config, run_dir
        self.agent = load_agent(config.agent)
        _seed_everything(config.seed)
        workload = build_workload(
            config.model, config.dataset, config.pretrained, config.weights, config.data_dir, config.val_images,
            protect_first_last=load_space_preset(config.space).protect_first_last,
        )  # fmt: skip
        self.env = AutoCompressEnv(workload=workload, env_preset=config.env, space=config.space, budgets=config.budgets)
        self.steps = len(self.env.space.steps)
        self.recorder = SearchRecorder(run_dir, self._hparams())
        self.bar: tqdm | None = None

    @classmethod
    def create(cls, config: SearchConfig, run_dir: str | None = None) -> SearchJob:
        """Validate the presets, then make the run folder and write config, command and system report."""
        env_name = load_env_preset(config.env).name
        load_space_preset(config.space)
        agent = load_agent(config.agent)
        folder = new_run_dir(config.exp, env_name, agent.name, config.seed, run_dir)
        try:
            job = cls(config, folder)
        except BaseException:
            if not any(p for p in folder.iterdir() if p.name != "system.json"):
                for p in folder.iterdir():
                    p.unlink()
                folder.rmdir()
            raise
        atomic_write_json(folder / CONFIG, dataclasses.asdict(config) | {"resolved": job.resolved()})
        (folder / "command.txt").write_text(command_line() + "\n")
        atomic_write_json(folder / "system.json", system_report())
        return job

    @classmethod
    def resume(cls, run_dir: str | Path) -> SearchJob:
        folder = existing_run_dir(run_dir, CONFIG)
        raw = json.loads((folder / CONFIG).read_text())
        raw.pop("resolved", None)
        return cls(SearchConfig(**raw), folder)

    def resolved(self) -> dict[str, Any]:
        """The presets as loaded, so the run folder documents exactly what ran."""
        return {
            "env": dataclasses.asdict(self.env.preset),
            "space": dataclasses.asdict(self.env.space_spec),
            "agent": dataclasses.asdict(self.agent),
            "steps_per_episode": self.steps,
            "val_images": len(self.env.workload.evaluator.val_labels),
        }

    def _hparams(self) -> dict[str, Any]:
        c = self.config
        flat = {
            "model": c.model,
            "env": c.env,
            "space": c.space,
            "agent": c.agent,
            "episodes": c.episodes,
            "seed": c.seed,
        }
        return (
            flat
            | {f"agent/{k}": v for k, v in self.agent.hyperparameters.items()}
            | {f"budget/{k}": str(v) for k, v in self.env.preset.budgets.items()}
        )

    # --- the loop ------------------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Search until the episode budget is spent; returns the summary (also written to ``summary.json``)."""
        start = time.perf_counter()
        done = self.recorder.episodes_done
        remaining = self.config.episodes - done
        self.bar = tqdm(
            total=self.config.episodes, initial=done, desc=f"search {self.agent.name}", unit="ep", disable=None
        )
        try:
            if remaining > 0:
                self._dispatch(remaining)
        finally:
            self.bar.close()
            self.recorder.close()
        summary = self._summary(time.perf_counter() - start)
        atomic_write_json(self.run_dir / "summary.json", summary)
        return summary

    def _dispatch(self, remaining: int) -> None:
        algorithm = self.agent.algorithm
        if algorithm in SB3_ALGORITHMS:
            from autocompress.search.rl import run_sb3

            run_sb3(self, remaining)
        elif algorithm in OPTUNA_ALGORITHMS:
            from autocompress.search.baselines import run_optuna

            run_optuna(self, remaining)
        elif algorithm == "random":
            from autocompress.search.baselines import run_random

            run_random(self, remaining)
        else:
            from autocompress.search.baselines import run_uniform

            run_uniform(self, remaining)

    def on_episode(self, info: dict[str, Any], wall_s: float, extra: dict[str, float] | None = None) -> bool:
        """Record one finished episode; returns whether the budget allows more."""
        row = self.recorder.record(info, wall_s, extra)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(best_reward=f"{row['best_reward']:.4f}", best_acc=f"{row['best_accuracy']:.4f}")
        if self.bar is None or self.bar.disable:
            episode = self.recorder.episodes_done
            if episode % 10 == 0 or episode == self.config.episodes:
                log.info(
                    "episode %d/%d: best reward %.4f, best accuracy %.4f",
                    episode,
                    self.config.episodes,
                    row["best_reward"],
                    row["best_accuracy"],
                )
        return self.recorder.episodes_done < self.config.episodes

    def run_episode(self, actions: list[np.ndarray], seed: int) -> dict[str, Any]:
        """Play a fixed action sequence through the environment (baselines); returns the final ``info``."""
        self.env.reset(seed=seed)
        info: dict[str, Any] = {}
        for action in actions:
            _, _, done, _, info = self.env.step(action)
        assert done
        return info

    def _summary(self, wall_s: float) -> dict[str, Any]:
        best = self.recorder.best or {}
        rows = self.recorder.rows
        return {
            "run_dir": str(self.run_dir),
            "agent": self.agent.name,
            "env": self.env.preset.name,
            "space": self.env.space_spec.name,
            "model": self.config.model,
            "episodes": len(rows),
            "search_wall_s": round(sum(float(r["wall_s"]) for r in rows), 2),
            "session_wall_s": round(wall_s, 2),
            "best_reward": best.get("reward"),
            "best_accuracy": best.get("accuracy"),
            "best_latency_ms": best.get("latency_ms"),
            "best_energy_mj": best.get("energy_mj"),
            "best_storage_bytes": best.get("storage_bytes"),
            "best_macs_ratio": best.get("macs_ratio"),
            "best_episode": best.get("episode"),
            "pareto_size": len(self.recorder.front),
            "hard_violations": sum(int(r["hard_violations"]) for r in rows),
        }


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
