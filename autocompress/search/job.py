"""A search job, readable top to bottom (CleanRL style): seed → run folder → environment → searcher → callbacks →
learn → summary. Every searcher plays the same environment (space, budgets, evaluator) with the same episode
budget; the run record owns the folder, callbacks do the logging."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from autocompress.env import AutoCompressEnv, build_workload, load_space_preset
from autocompress.env.deployment import Deployment
from autocompress.env.episode import EpisodeResult
from autocompress.env.presets import SpaceSpec
from autocompress.errors import ConfigError
from autocompress.runs import FolderLock, run_lock
from autocompress.search.agents import AgentSpec, load_agent
from autocompress.search.base import SearchContext, make_searcher
from autocompress.search.callbacks import (
    CallbackList,
    ProgressCallback,
    RecordCallback,
    SearchCallback,
    TensorBoardCallback,
)
from autocompress.search.record import Episode, ResolvedPresets, RunRecord, SearchConfig, policy_key
from autocompress.search.registry import BUILT_IN, searcher_reference

__all__ = ["SearchConfig", "SearchJob"]

log = logging.getLogger(__name__)


class SearchJob:
    """Run (or resume) one search in its run folder. Build it with :meth:`create` or :meth:`resume`.

    Args:
        config: What to search.
        record: The run folder.
        env: The environment, built from the presets as resolved (from the preset files for a new run, from the run
            folder on resume, so editing a preset file later changes nothing a run does).
        agent: The agent preset as resolved.
    """

    def __init__(self, config: SearchConfig, record: RunRecord, env: AutoCompressEnv, agent: AgentSpec) -> None:
        self.config, self.record, self.env, self.agent = config, record, env, agent
        self.steps = len(env.space.steps)
        self._lock: FolderLock | None = None  # held from create/resume until run ends (see run_lock)

    @property
    def run_dir(self) -> Path:
        return self.record.folder

    @classmethod
    def create(cls, config: SearchConfig, run_dir: str | Path | None = None) -> SearchJob:
        """Resolve the presets, make the run folder, build the environment and write the run record (a folder that
        fails to set up is removed again)."""
        deployment = Deployment.from_preset(config.env, config.budgets)
        space, agent = load_space_preset(config.space), load_agent(config.agent)
        reference = agent.searcher or searcher_reference(agent.algorithm)
        if reference is None and agent.algorithm not in BUILT_IN:
            log.warning(
                "searcher '%s' is defined where another process cannot import it (e.g. a script run as __main__); "
                "register it as 'package.module:Class' so that export and --resume in a new process find it",
                agent.algorithm,
            )
        agent = dataclasses.replace(agent, searcher=reference)
        searcher = make_searcher(agent)
        searcher.check()
        if config.workers > 1 and not searcher.parallel_envs:
            raise ConfigError(
                f"workers > 1 needs an agent that plays environments in parallel (ddpg, td3, sac, ppo), but got "
                f"agent {agent.algorithm}; Optuna agents scale out as several processes sharing one storage "
                f"(README: Scaling out).",
                params=("workers", "agent"),
            )
        folder = RunRecord.make_folder(config, deployment.preset.name, agent.name, run_dir)
        lock = run_lock(folder, "search")
        try:
            env = _build_env(config, deployment, space)
        except BaseException:
            lock.release()
            if not any(folder.iterdir()):
                folder.rmdir()
            raise
        resolved = ResolvedPresets(
            deployment, space, agent, len(env.space.steps), len(env.workload.evaluator.val_labels)
        )
        job = cls(config, RunRecord.create(folder, config, resolved), env, agent)
        job._lock = lock
        return job

    @classmethod
    def resume(
        cls, run_dir: str | Path, device: str | None = None, trust_code: bool = False, episodes: int | None = None
    ) -> SearchJob:
        """Continue the search in ``run_dir`` with the configuration and presets it saved (``device``, where
        policies are scored, may change: it does not change what a policy scores); ``trust_code`` allows a run
        that names code (see :meth:`RunRecord.open`); ``episodes`` raises the run's episode budget (recorded in
        its config.json), e.g. to search further after it finished."""
        folder = RunRecord.open(run_dir, "resume", trust_code).folder
        lock = run_lock(folder, "resume")
        try:
            record = RunRecord.open(folder, "resume", trust_code)  # read again: now nobody else writes it
            resolved = record.resolved
            config = record.config if device is None else dataclasses.replace(record.config, device=device)
            if episodes is not None and episodes != config.episodes:
                if episodes < record.episodes_done:
                    raise ConfigError(
                        f"a resumed run's episodes must be at least the {record.episodes_done} it has logged, but "
                        f"got episodes={episodes}.",
                        params=("episodes",),
                    )
                config = dataclasses.replace(config, episodes=episodes)
                record.set_episodes(episodes)
            if record.episodes_done >= config.episodes:
                log.warning(
                    "the run %s has logged all its %d episodes, so nothing is searched; resume with --episodes N "
                    "(N > %d) to search further",
                    folder,
                    config.episodes,
                    config.episodes,
                )
            job = cls(config, record, _build_env(config, resolved.deployment, resolved.space), resolved.agent)
        except BaseException:
            lock.release()
            raise
        job._lock = lock
        return job

    def close(self) -> None:
        """Let the run folder go (:meth:`run` does when it ends; so does the end of the process)."""
        if self._lock is not None:
            self._lock.release()

    def hparams(self) -> dict[str, Any]:
        """What TensorBoard's HParams tab shows."""
        c = self.config
        flat = {
            "model": c.model,
            "env": c.env,
            "space": c.space,
            "agent": c.agent,
            "episodes": c.episodes,
            "seed": c.seed,
            "workers": c.workers,
        }
        return (
            flat
            | {f"agent/{k}": v for k, v in self.agent.hyperparameters.items()}
            | {f"budget/{k}": str(v) for k, v in self.env.preset.budgets.items()}
        )

    # --- the loop ------------------------------------------------------------------------------------------------

    def run(self, callbacks: list[SearchCallback] | None = None) -> dict[str, Any]:
        """Search until the episode budget is spent (or a callback stops it); returns the summary, also written
        to ``summary.json``.

        Args:
            callbacks: Your callbacks, called after the built-in ones (run record, progress, TensorBoard).
        """
        start = time.perf_counter()
        if self._lock is None or not self._lock.held:  # run again after it ended: hold the folder again
            self._lock = run_lock(self.run_dir, "search")
        # torch creates its compile cache (torchinductor_<user>) in the system temp directory the first time an
        # optimizer is built; unless the user chose a place, it goes into the run folder, which holds all a run writes.
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(self.run_dir / "checkpoints" / "torch-cache"))
        chain = CallbackList(
            [RecordCallback(), ProgressCallback(), TensorBoardCallback(self.hparams()), *(callbacks or [])]
        )
        chain.init_callback(self)
        searcher = make_searcher(self.agent)
        context = self.context(lambda result, wall_s, stats: self._report(chain, result, wall_s, stats))
        summary = None
        try:
            chain.on_search_start()
            try:
                remaining = self.config.episodes - self.record.episodes_done
                if remaining > 0:
                    searcher.setup(context)
                    try:
                        searcher.search(context, remaining)
                    finally:
                        searcher.teardown(context)
                self.confirm()  # the searcher returned: its budget is spent, it needs no more (one-shot), or stopped
                summary = self.summary(time.perf_counter() - start)
            finally:
                chain.on_search_end(summary)
            self.record.write_summary(summary)
        finally:
            self.close()
        return summary

    def context(
        self, report_episode: Callable[[EpisodeResult, float, dict[str, float]], bool] | None = None
    ) -> SearchContext:
        """What a searcher of this job sees; ``report_episode`` logs an episode (default: refuse, nothing runs)."""
        return SearchContext(
            env=self.env,
            agent=self.agent,
            config=self.config,
            run_dir=self.record.folder,
            optuna_storage=self.config.storage or self.record.optuna_storage,
            report_episode=report_episode or _no_episodes,
            episodes_done_fn=lambda: self.record.episodes_done,
            env_factory=functools.partial(_build_env, self.config, self.env.deployment, self.env.space_spec),
            run_id=self.record.run_id,
            logged_rows=lambda: self.record.rows,
        )

    def confirm(self) -> None:
        """Score the run's best candidates again on the whole validation split (``config.confirm`` of them, and as
        many of the Pareto front's most accurate), then name the best by those scores.

        The search scores each policy on a slice (``val_images``) to be fast; picked as the best of hundreds, a
        policy's score on that slice is biased upwards by its luck (its standard error is √(p(1−p)/n), 1.3 points
        at 1,000 images), and the best few differ by less than that. Scored again on every validation image,
        the best is picked by a score with about half that error, and every entry states its error."""
        evaluator, splits = self.env.workload.evaluator, self.env.workload.splits
        searched, images = len(evaluator.val_labels), len(splits.val_y)
        todo = self.record.to_confirm(self.config.confirm, images) if images > searched else []
        scores: dict[str, tuple[float, float]] = {}
        if todo:
            log.info(
                "confirming %d policies on all %d validation images (the search scored %d)", len(todo), images, searched
            )
        for entry in tqdm(todo, desc="confirm", unit="policy", disable=None):
            scores[policy_key(entry)] = self.env.rescore(
                entry["policy"], entry.get("context"), splits.val_x, splits.val_y
            )
        self.record.confirm(scores, images, searched)

    def _report(self, chain: SearchCallback, result: EpisodeResult, wall_s: float, stats: dict[str, float]) -> bool:
        episode = Episode(self.record.episodes_done, result, wall_s, stats)
        keep_going = chain.on_episode_end(episode)
        return keep_going and self.record.episodes_done < self.config.episodes

    def summary(self, wall_s: float) -> dict[str, Any]:
        """The run's summary: its best result, episodes, wall time and violations."""
        best = self.record.best or {}
        rows = self.record.rows
        return {
            "run_dir": str(self.run_dir),
            "agent": self.agent.name,
            "env": self.env.preset.name,
            "space": self.env.space_spec.name,
            "model": self.config.model,
            "episodes": len(rows),
            "search_wall_s": round(self.record.search_wall_s(), 2),
            "session_wall_s": round(wall_s, 2),
            "best_reward": best.get("reward"),
            "best_accuracy": best.get("accuracy"),
            "best_accuracy_se": best.get("accuracy_se"),
            "best_scored_images": best.get("scored_images"),
            "best_search_accuracy": best.get("search_accuracy", best.get("accuracy")),
            "best_latency_ms": best.get("latency_ms"),
            "best_energy_mj": best.get("energy_mj"),
            "best_storage_bytes": best.get("storage_bytes"),
            "best_macs_ratio": best.get("macs_ratio"),
            "best_episode": best.get("episode"),
            "search_best_episode": self.record.candidates[0]["episode"] if self.record.candidates else None,
            "pareto_size": len(self.record.front),
            "hard_violations": sum(int(r["hard_violations"]) for r in rows),
        }


def _build_env(config: SearchConfig, deployment: Deployment, space: SpaceSpec) -> AutoCompressEnv:
    """Seed everything, then load the workload and build the environment of a search."""
    _seed_everything(config.seed)
    workload = build_workload(
        config.model,
        config.dataset,
        config.pretrained,
        config.weights,
        config.data_dir,
        config.val_images,
        protect_first_last=space.protect_first_last,
        reconstruct=space.reconstruct,
        device=config.device,
    )
    return AutoCompressEnv(workload=workload, space=space, deployment=deployment)


def _no_episodes(result: EpisodeResult, wall_s: float, stats: dict[str, float]) -> bool:
    raise RuntimeError("this search context only inspects the run; run the job to play episodes.")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
