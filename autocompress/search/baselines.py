"""Baselines that search the very same environment as the RL agents: random, uniform and Torch-Pruning's one-shot
global pruning (Optuna's samplers are in :mod:`autocompress.search.optuna_search`).

Each proposes values for the search space's dimensions, turns them into the action sequence that encodes them
(:meth:`SearchSpace.actions_from_params`, :meth:`SearchSpace.encode`), and plays it through the environment, so
budget clipping, evaluation and reward are identical for every agent.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from autocompress.compress.one_shot import global_kept_channels, keep_ratios
from autocompress.env.budgets import BudgetGuard
from autocompress.env.search_space import SearchSpace
from autocompress.errors import ConfigError
from autocompress.search.base import SearchContext, Searcher

log = logging.getLogger(__name__)


class RandomSearcher(Searcher):
    """Uniform random actions; episode ``i`` is seeded by (seed, i), so a resumed run continues the same sequence
    and needs no checkpoint."""

    def search(self, context: SearchContext, episodes: int) -> None:
        space, seed = context.space, context.seed
        for episode in range(context.episodes_done, context.episodes_done + episodes):
            rng = np.random.default_rng([seed, episode])
            actions = [rng.uniform(-1, 1, space.action_dim).astype(np.float32) for _ in space.steps]
            context.play(actions, seed=seed + episode)
            if context.stopped:
                break


class UniformSearcher(Searcher):
    """One keep ratio and one bit-width pair for every layer: the largest that meet the hard budgets without any
    clipping, found by bisection on the cost model; then that one policy is evaluated (one episode)."""

    def search(self, context: SearchContext, episodes: int) -> None:
        if context.episodes_done:
            return  # its one episode is done; a resumed run has nothing left to do
        seed = context.seed
        context.env.reset(seed=seed)
        values = uniform_values(context.space, context.env.guard)
        context.play([context.space.encode(values) for _ in context.space.steps], seed=seed)
        log.info("uniform policy: %s (the other %d episodes of the budget are not needed)", values, episodes - 1)


def uniform_values(space: SearchSpace, guard: BudgetGuard) -> dict[str, Any]:
    """The uniform choice that ``guard`` (set up for the current context) accepts; split none, adaptation none."""
    wbits: list[int | None] = [*sorted(space.wbits, reverse=True)] if space.wbits else [None]
    abits: list[int | None] = [*sorted(space.abits, reverse=True)] if space.abits else [None]
    pairs = sorted(((w, a) for w in wbits for a in abits), key=lambda p: (-(p[0] or 0), -(p[1] or 0)))
    fixed = {"split": "none", "adapt": "none"}

    def feasible(keep: float | None, w: int | None, a: int | None) -> bool:
        return guard.feasible(guard.uniform(keep, w, a))

    for w, a in pairs:
        if space.keep is None:
            if feasible(None, w, a):
                return {"wbits": w, "abits": a, **fixed}
            continue
        low, high = space.keep.min, space.keep.max
        if not feasible(low, w, a):
            continue
        if feasible(high, w, a):
            return {"keep": high, "wbits": w, "abits": a, **fixed}
        for _ in range(30):
            mid = (low + high) / 2
            low, high = (mid, high) if feasible(mid, w, a) else (low, mid)
        return {"keep": low, "wbits": w, "abits": a, **fixed}
    return {
        "keep": space.keep.min if space.keep else None,
        "wbits": min(space.wbits or [32]),
        "abits": min(space.abits or [32]),
        **fixed,
    }


class OneShotSearcher(Searcher):
    """Torch-Pruning's one-shot global pruning (``tp-taylor``, ``tp-magnitude``): the smallest global pruning ratio
    whose per-group channel counts meet the hard budgets, found by bisection; then that one policy is played (one
    episode) at the space's widest bits, no split, no adaptation.

    What Torch-Pruning decides here is how many channels each group keeps. Which channels go within a group follows
    the evaluator's ranking, as for every agent, so the baseline is scored, refitted and exported like the rest.
    """

    def search(self, context: SearchContext, episodes: int) -> None:
        if context.episodes_done:
            return
        space, env = context.space, context.env
        if space.keep is None:
            raise ConfigError(f"{self.agent.algorithm} prunes channels, so the search space must have a keep range.")
        env.reset(seed=context.seed)
        kept = self._kept_for_budget(context)
        ratios = keep_ratios(env.table, kept)
        params: dict[str, Any] = {"split": "none", "adapt": "none"}
        for step in space.steps:
            group = env.table.group_of(step.layer)
            if step.keep_group is not None and group is not None:
                params[f"keep/{step.layer}"] = ratios[group.leader]
            params[f"wbits/{step.layer}"] = max(space.wbits or [32])
            params[f"abits/{step.layer}"] = max(space.abits or [32])
        context.play(space.actions_from_params(params), seed=context.seed)
        log.info("%s kept %s (the other %d episodes are not needed)", self.agent.algorithm, kept, episodes - 1)

    def _kept_for_budget(self, context: SearchContext) -> dict[int, int]:
        env, space = context.env, context.space
        assert space.keep is not None
        workload = env.workload
        x, y = workload.splits.train_x[:256], workload.splits.train_y[:256]
        batches = [(workload.evaluator.normalize(x[i : i + 64]), y[i : i + 64]) for i in range(0, len(y), 64)]
        importance = self.agent.algorithm.removeprefix("tp-")
        max_ratio = 1.0 - space.keep.min

        def kept_at(ratio: float) -> dict[int, int]:
            return global_kept_channels(
                workload.model, env.table, ratio, importance, batches, space.round_to, max_ratio
            )

        def feasible(kept: dict[int, int]) -> bool:
            state = env.guard.initial()
            state.kept.update(kept)
            return env.guard.feasible(state)

        low, high = 0.0, max_ratio
        if feasible(kept_at(low)):
            return kept_at(low)
        best = kept_at(high)
        for _ in range(12):
            mid = (low + high) / 2
            candidate = kept_at(mid)
            if feasible(candidate):
                high, best = mid, candidate
            else:
                low = mid
        return best
