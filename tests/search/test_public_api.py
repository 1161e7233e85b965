"""A user's own searcher and callback through the public API (the README's snippet), and the registry's errors."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

import autocompress as ac
from autocompress.testing import check_searcher


class GreedyKeep(ac.Searcher):
    """Tries one keep ratio per episode, from the largest down (a user's searcher, as in the README)."""

    def search(self, context: ac.SearchContext, episodes: int) -> None:
        for i in range(context.episodes_done, context.episodes_done + episodes):
            keep = 1.0 - 0.1 * i
            context.play([context.space.encode({"keep": keep}) for _ in context.space.steps])
            if context.stopped:
                break


class StopAtAccuracy(ac.SearchCallback):
    """Stops the search once an episode reaches an accuracy (a user's callback)."""

    def __init__(self, target: float) -> None:
        self.target, self.seen = target, []

    def on_episode_end(self, episode: ac.Episode) -> bool:
        self.seen.append(episode.result.accuracy)
        return episode.result.accuracy < self.target


@pytest.fixture(autouse=True)
def _registered() -> None:
    ac.register_searcher("greedy-keep", GreedyKeep)


def test_user_searcher_and_callback_run_through_the_public_api(tmp_path: Path) -> None:
    config = ac.SearchConfig(model="digits-cnn", dataset="digits", agent="greedy-keep", space="prune", episodes=5)
    job = ac.SearchJob.create(config, tmp_path / "run")
    stop = StopAtAccuracy(target=0.0)  # the first episode reaches it: the search stops after one episode
    summary = job.run(callbacks=[stop])
    assert summary["episodes"] == 1 and len(stop.seen) == 1 and stop.seen[0] == summary["best_accuracy"]
    summary = ac.SearchJob.resume(tmp_path / "run").run()  # resumable after a callback stopped it
    with (tmp_path / "run" / "progress.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert summary["episodes"] == 5 and [int(r["episode"]) for r in rows] == list(range(5))
    macs = [float(r["macs_ratio"]) for r in rows]
    assert macs == sorted(macs, reverse=True) and max(macs) <= 0.5 + 1e-6  # clipped to the host's 50 % MACs


def test_user_searcher_keeps_the_contract(tmp_path: Path) -> None:
    check_searcher("greedy-keep", tmp_path, episodes=4, space="prune")


def test_searcher_by_import_path(tmp_path: Path) -> None:
    ac.register_searcher("random-by-path", "autocompress.search.baselines:RandomSearcher")
    config = ac.SearchConfig(model="digits-cnn", dataset="digits", agent="random-by-path", episodes=2)
    assert ac.SearchJob.create(config, tmp_path / "run").run()["episodes"] == 2


def test_unknown_algorithm_suggests_the_nearest() -> None:
    with pytest.raises(ac.ConfigError, match="Did you mean 'greedy-keep'"):
        ac.AgentSpec(name="x", algorithm="greedy-kep")


def test_env_made_by_id_reports_a_typed_episode() -> None:
    import gymnasium as gym

    env = gym.make(ac.ENV_ID)
    env.reset(seed=0)
    done, info = False, {}
    while not done:
        _, _, done, _, info = env.step(np.zeros(env.action_space.shape, np.float32))
    result = ac.EpisodeResult.from_info(info)
    assert result.to_info() == info and 0 <= result.accuracy <= 1 and result.hard_violations == 0
