"""Optuna's samplers warm-started from a one-shot agent: a new study's first trial is the policy tp-taylor would
play, so the search starts where the pipeline a user would build ends."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

from autocompress.errors import ConfigError
from autocompress.search import SearchConfig, SearchJob


def _run(tmp_path: Path, agent: str, episodes: int, name: str) -> list[dict[str, str]]:
    config = SearchConfig(
        model="digits-cnn",
        dataset="digits",
        agent=agent,
        space="prune",
        env="raspberry-pi-4",
        budgets={"macs_ratio": 0.4},
        episodes=episodes,
    )
    SearchJob.create(config, tmp_path / name).run()
    with (tmp_path / name / "progress.csv").open() as f:
        return list(csv.DictReader(f))


def _agent(tmp_path: Path, warm: object) -> str:
    path = tmp_path / f"tpe-warm-{warm}.yaml"
    params = {"n_startup_trials": 2, "warm_start": warm}
    path.write_text(yaml.safe_dump({"name": "tpe-warm", "algorithm": "tpe", "hyperparameters": params}))
    return str(path)


def test_the_first_trial_is_the_one_shot_policy(tmp_path: Path) -> None:
    one_shot = _run(tmp_path, "tp-taylor", 1, "tp")[0]
    cold = _run(tmp_path, "tpe", 2, "cold")
    warm = _run(tmp_path, _agent(tmp_path, "tp-taylor"), 2, "warm")
    assert len(warm) == 2
    for key in ("accuracy", "macs_ratio", "reward"):
        assert warm[0][key] == one_shot[key], key
    assert cold[0]["macs_ratio"] != one_shot["macs_ratio"]  # without it, TPE's first trial is its own


def test_an_unknown_warm_start_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="warm_start must be one of none, tp-taylor, tp-magnitude, but got 'ddpg'"):
        _run(tmp_path, _agent(tmp_path, "ddpg"), 1, "bad")
