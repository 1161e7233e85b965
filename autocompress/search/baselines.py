"""Baselines that search the very same environment as the RL agents: Optuna (TPE, NSGA-II), random and uniform.

Each proposes values for the search space's dimensions, turns them into the action sequence that encodes them
(:meth:`SearchSpace.actions_from_params`), and plays it through the environment, so budget clipping, evaluation
and reward are identical for every agent.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from autocompress.env.budgets import Assignment

if TYPE_CHECKING:
    from autocompress.search.job import SearchJob

log = logging.getLogger(__name__)
OBJECTIVES = ("accuracy", "latency_ms", "energy_mj", "storage_bytes")


def run_random(job: SearchJob, remaining: int) -> None:
    """Uniform random actions; episode ``i`` is seeded by (seed, i), so a resumed run continues the same sequence."""
    space, seed = job.env.space, job.config.seed
    for episode in range(job.recorder.episodes_done, job.recorder.episodes_done + remaining):
        rng = np.random.default_rng([seed, episode])
        actions = [rng.uniform(-1, 1, space.action_dim).astype(np.float32) for _ in space.steps]
        start = time.perf_counter()
        info = job.run_episode(actions, seed=seed + episode)
        if not job.on_episode(info, time.perf_counter() - start):
            break


def run_optuna(job: SearchJob, remaining: int) -> None:
    """TPE on the episode reward, or NSGA-II on accuracy, latency, energy and storage, over the same space."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    multi = job.agent.algorithm == "nsga2"
    seed, params = job.config.seed, dict(job.agent.hyperparameters)
    sampler = (
        optuna.samplers.NSGAIISampler(seed=seed, **params) if multi else optuna.samplers.TPESampler(seed=seed, **params)
    )
    config = job.config
    storage = config.storage or f"sqlite:///{job.run_dir / 'optuna.db'}"
    # With a shared --storage, workers launched with the same experiment, env, agent and seed join one study (and
    # its sampler sees every worker's trials); each worker still logs only its own episodes in its run folder.
    name = job.run_dir.name if config.storage is None else f"{config.exp}__{config.env}__{job.agent.name}__s{seed}"
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=sampler,
        directions=["maximize", "minimize", "minimize", "minimize"] if multi else ["maximize"],
        load_if_exists=True,
    )
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)  # a killed run's trial
    space = job.env.space

    def objective(trial: optuna.Trial) -> Any:
        values = {}
        for name, kind, domain in space.parameters():
            values[name] = (
                trial.suggest_float(name, *domain) if kind == "float" else trial.suggest_categorical(name, domain)
            )
        start = time.perf_counter()
        info = job.run_episode(space.actions_from_params(values), seed=seed + job.recorder.episodes_done)
        trial.set_user_attr("policy", info["policy"])
        if not job.on_episode(info, time.perf_counter() - start):
            trial.study.stop()
        return tuple(info[k] for k in OBJECTIVES) if multi else info["reward"]

    study.optimize(objective, n_trials=remaining, gc_after_trial=False)


def run_uniform(job: SearchJob, remaining: int) -> None:
    """One keep ratio and one bit-width pair for every layer: the largest that meet the hard budgets without any
    clipping, found by bisection on the cost model; then that one policy is evaluated (one episode)."""
    if job.recorder.episodes_done:
        return  # its one episode is done; a resumed run has nothing left to do
    env, seed = job.env, job.config.seed + job.recorder.episodes_done
    env.reset(seed=seed)
    values = uniform_values(job)
    actions = [env.space.encode(values) for _ in env.space.steps]
    start = time.perf_counter()
    info = job.run_episode(actions, seed=seed)
    job.on_episode(info, time.perf_counter() - start)
    log.info("uniform policy: %s (the other %d episodes of the budget are not needed)", values, remaining - 1)


def uniform_values(job: SearchJob) -> dict[str, Any]:
    """The uniform choice for the environment's current context (split none, adaptation none)."""
    space = job.env.space
    wbits: list[int | None] = [*sorted(space.wbits, reverse=True)] if space.wbits else [None]
    abits: list[int | None] = [*sorted(space.abits, reverse=True)] if space.abits else [None]
    pairs = sorted(((w, a) for w in wbits for a in abits), key=lambda p: (-(p[0] or 0), -(p[1] or 0)))
    for w, a in pairs:
        if space.keep is None:
            if _feasible(job, None, w, a):
                return {"wbits": w, "abits": a, "split": "none", "adapt": "none"}
            continue
        low, high = space.keep.min, space.keep.max
        if not _feasible(job, low, w, a):
            continue
        if _feasible(job, high, w, a):
            return {"keep": high, "wbits": w, "abits": a, "split": "none", "adapt": "none"}
        for _ in range(30):
            mid = (low + high) / 2
            low, high = (mid, high) if _feasible(job, mid, w, a) else (low, mid)
        return {"keep": low, "wbits": w, "abits": a, "split": "none", "adapt": "none"}
    return {
        "keep": space.keep.min if space.keep else None,
        "wbits": min(space.wbits or [32]),
        "abits": min(space.abits or [32]),
        "split": "none",
        "adapt": "none",
    }


def _feasible(job: SearchJob, keep: float | None, wbits: int | None, abits: int | None) -> bool:
    guard = job.env.guard
    state: Assignment = guard.initial()
    for step in job.env.space.steps:
        guard._set(state, step, keep, wbits, abits)
    return not guard.violations(state)
