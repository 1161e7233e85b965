"""Baselines that search the very same environment as the RL agents: random, uniform and Torch-Pruning's one-shot
global pruning (Optuna's samplers are in :mod:`autocompress.search.optuna_search`).

Each proposes values for the search space's dimensions, turns them into the action sequence that encodes them
(:meth:`SearchSpace.actions_from_params`, :meth:`SearchSpace.encode`), and plays it through the environment, so
budget clipping, evaluation and reward are identical for every agent.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from autocompress.compress.layers import LayerTable
from autocompress.compress.one_shot import global_kept_channels, keep_ratios
from autocompress.env.budgets import BudgetGuard
from autocompress.env.search_space import SearchSpace
from autocompress.errors import ConfigError
from autocompress.search.agents import AgentSpec, load_agent
from autocompress.search.base import SearchContext, Searcher

log = logging.getLogger(__name__)
# one-shot agent presets whose policy can be a search's first episode (the -int8 ones: the pipeline a user builds
# by hand on a device budget, every layer at 8 bits)
WARM_STARTS = ("none", "tp-taylor", "tp-magnitude", "tp-taylor-int8", "tp-magnitude-int8")


def _takes_none(searcher: Searcher) -> None:
    """A baseline with no hyperparameters refuses any (a key it would silently ignore is a user's mistake)."""
    if searcher.agent.hyperparameters:
        key = sorted(searcher.agent.hyperparameters)[0]
        raise ConfigError(
            f"agent '{searcher.agent.name}' hyperparameters: {searcher.agent.algorithm} takes none, but got "
            f"'{key[:40]}'; remove it."
        )


class RandomSearcher(Searcher):
    """Uniform random actions; episode ``i`` is seeded by (seed, i), so a resumed run continues the same sequence
    and needs no checkpoint."""

    check = _takes_none

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

    check = _takes_none

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


QUANTIZE = (None, 8, 4, "auto")


class OneShotSearcher(Searcher):
    """Torch-Pruning's one-shot global pruning (``tp-taylor``, ``tp-magnitude``): the smallest global pruning ratio
    whose per-group channel counts meet the hard budgets, found by bisection; then that one policy is played (one
    episode), no split, no adaptation — at the space's widest bits, or, with the hyperparameter ``quantize``, as
    the pipeline a user would build by hand: every layer's weights and activations at 8 bits (``8``), 4-bit weights
    and 8-bit activations (``4``), or 8 bits and 4-bit weights where 8 cannot meet the budgets (``auto``; the
    ``tp-*-int8`` presets), the global ratio found for those bits.

    What Torch-Pruning decides here is how many channels each group keeps. Which channels go within a group follows
    the evaluator's ranking, as for every agent, so the baseline is scored, refitted and exported like the rest.
    """

    def check(self) -> None:
        params = self.agent.hyperparameters
        unknown = sorted(set(params) - {"quantize"})
        if unknown:
            raise ConfigError(
                f"agent '{self.agent.name}' hyperparameters: {self.agent.algorithm} takes only quantize, but got "
                f"'{unknown[0][:40]}'."
            )
        if params.get("quantize") not in QUANTIZE or isinstance(params.get("quantize"), bool):
            raise ConfigError(
                f"agent '{self.agent.name}' hyperparameters: quantize must be null, 8, 4 or auto, but got "
                f"{params.get('quantize')!r:.40}."
            )

    def search(self, context: SearchContext, episodes: int) -> None:
        if context.episodes_done:
            return
        space, env = context.space, context.env
        if space.keep is None:
            raise ConfigError(f"{self.agent.algorithm} prunes channels, so the search space must have a keep range.")
        env.reset(seed=context.seed)
        kept, (wbits, abits) = self._kept_and_bits(context)
        actions = _actions(space, env.table, kept, (wbits, abits))
        played, asked = env.plan(actions), env.asked(actions)
        if (played.kept, played.bits) != (asked.kept, asked.bits):
            log.warning(
                "%s: no global ratio meets the budgets, so the budget guard clipped the policy (kept %s, asked %s)",
                self.agent.algorithm,
                played.kept,
                asked.kept,
            )
        context.play(actions, seed=context.seed)
        log.info(
            "%s kept %s at %d/%d bits (the other %d episodes are not needed)",
            self.agent.algorithm,
            played.kept,
            wbits,
            abits,
            episodes - 1,
        )

    def _bit_choices(self, space: SearchSpace) -> list[tuple[int, int]]:
        """The (weight, activation) bits to try, in order, for the ``quantize`` hyperparameter."""
        quantize = self.agent.hyperparameters.get("quantize")
        widest = (max(space.wbits or [32]), max(space.abits or [32]))
        if quantize is None:
            return [widest]
        wanted = {8: [(8, 8)], 4: [(4, 8)], "auto": [(8, 8), (4, 8)]}[quantize]
        legal = [(w, a) for w, a in wanted if w in (space.wbits or []) and a in (space.abits or [])]
        if not legal:
            raise ConfigError(
                f"agent '{self.agent.name}' quantize {quantize} needs a search space whose wbits and abits hold "
                f"{wanted[0][0]} and {wanted[0][1]}, but it has wbits {space.wbits} and abits {space.abits}; use "
                "--space prune-quant or full."
            )
        return legal

    def _kept_and_bits(self, context: SearchContext) -> tuple[dict[int, int], tuple[int, int]]:
        """The channels kept and the bits: the first bit choice whose bisection meets the budgets (else the last)."""
        choices = self._bit_choices(context.space)
        for bits in choices:
            kept, feasible = self._kept_for_budget(context, bits)
            if feasible:
                break
        return kept, bits

    def _kept_for_budget(self, context: SearchContext, bits: tuple[int, int]) -> tuple[dict[int, int], bool]:
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
            # Judged on what the actions ask for once decoded — the space's keep range and the device's channel
            # rounding can keep more channels than Torch-Pruning chose — and not on the episode the guard would
            # play: the guard makes every episode feasible, by pruning the last layers harder or lowering bits.
            # When what is asked meets the limits, the guard clips nothing, so the episode plays it as asked.
            return env.guard.feasible(env.asked(_actions(space, env.table, kept, bits)))

        low, high = 0.0, max_ratio
        if feasible(kept_at(low)):
            return kept_at(low), True
        best = kept_at(high)
        ok = feasible(best)
        for _ in range(12):
            mid = (low + high) / 2
            candidate = kept_at(mid)
            if feasible(candidate):
                high, best, ok = mid, candidate, True
            else:
                low = mid
        return best, ok


def one_shot_params(
    space: SearchSpace, table: LayerTable, kept: dict[int, int], bits: tuple[int, int]
) -> dict[str, Any]:
    """The space's parameters (as Optuna names them) that keep ``kept`` channels per group at ``bits`` everywhere,
    no split, no adaptation."""
    ratios = keep_ratios(table, kept)
    params: dict[str, Any] = {"split": "none", "adapt": "none"}
    for step in space.steps:
        group = table.group_of(step.layer)
        if step.keep_group is not None and group is not None:
            params[f"keep/{step.layer}"] = ratios[group.leader]
        params[f"wbits/{step.layer}"] = bits[0]
        params[f"abits/{step.layer}"] = bits[1]
    return params


def _actions(space: SearchSpace, table: LayerTable, kept: dict[int, int], bits: tuple[int, int]) -> list[np.ndarray]:
    """The actions of one episode that keep ``kept`` channels per group at ``bits`` everywhere, no split, no
    adaptation."""
    return space.actions_from_params(one_shot_params(space, table, kept, bits))


def check_warm_start(agent: AgentSpec) -> None:
    """A preset's ``warm_start`` hyperparameter must name one of :data:`WARM_STARTS`, and ``warm_spread`` be a number
    in [0, 1] that only a warm start uses (one line otherwise)."""
    warm = agent.hyperparameters.get("warm_start", "none")
    if warm not in WARM_STARTS:
        raise ConfigError(
            f"agent '{agent.name}' hyperparameters: warm_start must be one of {', '.join(WARM_STARTS)}, "
            f"but got {warm!r:.40}."
        )
    spread = agent.hyperparameters.get("warm_spread", 0.0)
    if isinstance(spread, bool) or not isinstance(spread, int | float) or not 0 <= spread <= 1:
        raise ConfigError(
            f"agent '{agent.name}' hyperparameters: warm_spread must be a number in [0, 1] (the standard deviation "
            f"of the warm-up's steps around the warm start, in halves of each range), but got {spread!r:.40}; e.g. 0.2."
        )
    if spread and warm == "none":
        raise ConfigError(
            f"agent '{agent.name}' hyperparameters: warm_spread explores around a warm start, so warm_start must name "
            f"one ({', '.join(WARM_STARTS[1:])}), but it is none; set warm_start or remove warm_spread."
        )


def spread_params(
    center: Mapping[str, Any], space: SearchSpace, spread: float, rng: np.random.Generator
) -> dict[str, Any]:
    """A policy near ``center`` (a space's parameters): each float moved by a normal step of ``spread`` × half its
    range (clipped to it), each choice kept with probability 1 − ``spread``, else one drawn uniformly."""
    out: dict[str, Any] = {}
    for key, kind, domain in space.parameters():
        if key not in center:
            continue
        if kind == "float":
            low, high = float(domain[0]), float(domain[1])
            step = rng.normal(0.0, spread * (high - low) / 2)
            out[key] = min(max(float(center[key]) + step, low), high)
        else:
            out[key] = domain[int(rng.integers(len(domain)))] if rng.random() < spread else center[key]
    return out


def one_shot_start(name: str, context: SearchContext) -> dict[str, Any]:
    """The parameters of the policy the one-shot agent preset ``name`` (one of :data:`WARM_STARTS`) would play in
    ``context``, found without playing an episode: a search's first trial, so that it starts where the pipeline a
    user would build ends (within the space's ranges and choices)."""
    if context.space.keep is None:
        raise ConfigError(f"warm_start {name} prunes channels, so the search space must have a keep range.")
    searcher = OneShotSearcher(load_agent(name))
    kept, bits = searcher._kept_and_bits(context)
    params = one_shot_params(context.space, context.env.table, kept, bits)
    wanted = {}
    for key, kind, domain in context.space.parameters():
        if key not in params:
            continue
        if kind == "float":
            wanted[key] = min(max(float(params[key]), domain[0]), domain[1])
        elif params[key] in domain:
            wanted[key] = params[key]
    return wanted
