"""Searches warm-started from a one-shot agent: a new study's first trial (TPE, NSGA-II) or a new agent's first
episode (DDPG, TD3, SAC) is the policy tp-taylor would play, so the search starts where the pipeline a user would
build ends."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from autocompress.errors import ConfigError
from autocompress.search import SearchConfig, SearchJob


def _run(tmp_path: Path, agent: str, episodes: int, name: str, space: str = "prune") -> list[dict[str, str]]:
    config = SearchConfig(
        model="digits-cnn",
        dataset="digits",
        agent=agent,
        space=space,
        env="raspberry-pi-4",
        budgets={"macs_ratio": 0.4},
        episodes=episodes,
    )
    SearchJob.create(config, tmp_path / name).run()
    with (tmp_path / name / "progress.csv").open() as f:
        return list(csv.DictReader(f))


def _agent(
    tmp_path: Path, warm: object, algorithm: str = "tpe", spread: object = None, startup: int = 2, warmup: int = 1
) -> str:
    path = tmp_path / f"{algorithm}-warm-{warm}-{spread}.yaml"
    params: dict[str, object] = {"warm_start": warm}
    if spread is not None:
        params["warm_spread"] = spread
    if algorithm == "tpe":
        params["n_startup_trials"] = startup
    body = {"name": f"{algorithm}-warm", "algorithm": algorithm, "hyperparameters": params}
    if algorithm == "ddpg":
        body["warmup_episodes"] = warmup
    path.write_text(yaml.safe_dump(body))
    return str(path)


@pytest.mark.parametrize(("one_shot_agent", "space"), [("tp-taylor", "prune"), ("tp-taylor-int8", "prune-quant")])
def test_the_first_trial_is_the_one_shot_policy(tmp_path: Path, one_shot_agent: str, space: str) -> None:
    one_shot = _run(tmp_path, one_shot_agent, 1, "tp", space)[0]
    cold = _run(tmp_path, "tpe", 2, "cold", space)
    warm = _run(tmp_path, _agent(tmp_path, one_shot_agent), 2, "warm", space)
    assert len(warm) == 2
    for key in ("accuracy", "macs_ratio", "reward", "storage_bytes"):
        assert warm[0][key] == one_shot[key], key
    assert cold[0]["macs_ratio"] != one_shot["macs_ratio"]  # without it, TPE's first trial is its own


def test_an_unknown_warm_start_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError,
        match="warm_start must be one of none, tp-taylor, tp-magnitude, tp-taylor-int8, tp-magnitude-int8, but got "
        "'ddpg'",
    ):
        _run(tmp_path, _agent(tmp_path, "ddpg"), 1, "bad")


def test_ddpg_plays_the_one_shot_policy_first_and_stores_it_as_its_own(tmp_path: Path) -> None:
    one_shot = _run(tmp_path, "tp-taylor", 1, "tp")[0]
    cold = _run(tmp_path, "ddpg", 3, "cold")
    warm = _run(tmp_path, _agent(tmp_path, "tp-taylor", "ddpg"), 3, "warm")
    assert len(warm) == 3
    for key in ("accuracy", "macs_ratio", "reward"):
        assert warm[0][key] == one_shot[key], key
    assert cold[0]["macs_ratio"] != one_shot["macs_ratio"]  # without it, DDPG's first episode is random
    # the scripted episode is in the replay buffer as the agent's own: with the same seed the two runs drew the
    # same random actions for their first two episodes (the second is random in both: warm-up, capped at a third
    # of the run, is one episode, and the agent has not trained before it), so their buffers differ exactly in the
    # first episode's steps
    steps = 3  # decisions per episode in digits-cnn's prune space (its three prunable layers)
    first, again = (np.load(tmp_path / r / "checkpoints" / "replay.npz")["actions"][:, 0] for r in ("warm", "cold"))
    assert all(not np.array_equal(first[t], again[t]) for t in range(steps))
    assert np.array_equal(first[steps : 2 * steps], again[steps : 2 * steps])


@pytest.mark.parametrize(
    ("algorithm", "warm", "message"),
    [
        ("ddpg", "random", "warm_start must be one of none, tp-taylor, .*, but got 'random'"),
        ("ppo", "tp-taylor", "warm_start .and warm_spread. need an agent that learns from any episode"),
    ],
)
def test_a_warm_start_an_agent_cannot_take_is_one_line(tmp_path: Path, algorithm: str, warm: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _run(tmp_path, _agent(tmp_path, warm, algorithm), 1, "bad")


def _keeps(run: Path) -> dict[int, np.ndarray]:
    """Each logged episode's keep ratios per layer (from the run's candidates)."""
    out = {}
    for entry in json.loads((run / "candidates.json").read_text()):
        layers = entry["policy"]["layers"]
        out[entry["episode"]] = np.array([layers[n]["keep"] for n in sorted(layers) if "keep" in layers[n]])
    return out


@pytest.mark.parametrize("algorithm", ["tpe", "ddpg"])
def test_a_warm_spread_explores_around_the_one_shot_policy(tmp_path: Path, algorithm: str) -> None:
    # the startup trials (TPE) or warm-up episodes (DDPG) after the first are policies near the one-shot one, not
    # uniform draws over the space: their keep ratios sit near its keep ratios, far nearer than cold draws do
    episodes = 18  # DDPG's warm-up is capped at a third of the run: 6 episodes, as TPE's startup
    _run(tmp_path, _agent(tmp_path, "tp-taylor", algorithm, 0.1, startup=6, warmup=6), episodes, "near")
    _run(tmp_path, _agent(tmp_path, "none", algorithm, None, startup=6, warmup=6), episodes, "cold")
    near, cold = _keeps(tmp_path / "near"), _keeps(tmp_path / "cold")
    startup = 6
    center = near[0]
    around = [np.abs(near[e] - center).mean() for e in range(1, startup) if e in near]
    uniform = [np.abs(cold[e] - center).mean() for e in range(1, startup) if e in cold]
    # candidates are distinct policies: a small move that rounds to the one-shot's channels is not listed again
    assert around and len(uniform) >= 2
    assert np.mean(around) < 0.5 * np.mean(uniform), (around, uniform)


@pytest.mark.parametrize(
    ("warm", "spread", "message"),
    [
        ("tp-taylor", 1.5, "warm_spread must be a number in .0, 1. .*, but got 1.5; e.g. 0.2"),
        ("tp-taylor", "wide", "'warm_spread' must be a float like its default 0.0, but got 'wide'"),
        ("none", 0.2, "warm_spread explores around a warm start, so warm_start must name one"),
    ],
)
def test_a_bad_warm_spread_is_one_line(tmp_path: Path, warm: str, spread: object, message: str) -> None:
    for algorithm in ("tpe", "ddpg"):
        with pytest.raises(ConfigError, match=message):
            _run(tmp_path, _agent(tmp_path, warm, algorithm, spread), 1, f"bad-{algorithm}")
