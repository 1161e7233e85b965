import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import autocompress  # noqa: F401  (registers the environment)
from autocompress.env import ENV_ID, AutoCompressEnv


@pytest.fixture(scope="module")
def env() -> AutoCompressEnv:
    return gym.make(ENV_ID).unwrapped


def test_registered_with_no_kwargs_is_cheap_and_passes_both_checkers(env) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env)
        sb3_check_env(env, warn=True)
    assert env.workload.model_name == "digits-cnn" and env.preset.name == "host"


def rollout(env: AutoCompressEnv, seed: int) -> tuple[list[np.ndarray], list[float], dict]:
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    observations, rewards, done, info = [obs], [], False, {}
    while not done:
        obs, reward, done, truncated, info = env.step(env.action_space.sample())
        assert not truncated
        observations.append(obs)
        rewards.append(reward)
    return observations, rewards, info


def test_same_seed_same_rollout(env) -> None:
    a, b = rollout(env, 7), rollout(env, 7)
    for x, y in zip(a[0], b[0], strict=True):
        np.testing.assert_array_equal(x, y)
    assert a[1] == b[1] and a[2]["policy"] == b[2]["policy"] and a[2]["accuracy"] == b[2]["accuracy"]


def test_reward_only_at_the_end_and_info_has_the_contract(env) -> None:
    _, rewards, info = rollout(env, 3)
    assert all(r == 0.0 for r in rewards[:-1])
    for key in ("accuracy", "latency_ms", "energy_mj", "storage_bytes", "macs", "constraint_violations", "policy"):
        assert key in info
    assert info["policy"]["version"] == 1 and info["policy"]["model"] == "digits-cnn"
    assert rewards[-1] == pytest.approx(info["accuracy"])  # the host preset's reward is 'acc'


def test_observations_are_normalised(env) -> None:
    observations, _, _ = rollout(env, 11)
    stacked = np.stack(observations)
    assert stacked.dtype == np.float32 and stacked.min() >= 0.0 and stacked.max() <= 1.0


def test_env_never_prints(env, capsys) -> None:
    rollout(env, 5)
    out, err = capsys.readouterr()
    assert out == "" and err == ""


def test_reset_can_fix_the_context() -> None:
    env = AutoCompressEnv(env_preset="raspberry-pi-4-wifi", space="full")
    _, info = env.reset(seed=0, options={"context": {"shift": "contrast:5", "battery": 0.4}})
    assert info["context"]["shift"] == "contrast:5" and info["context"]["battery"] == 0.4
    obs_shifted = env._observation()
    _, info = env.reset(seed=0, options={"context": {"shift": "none", "battery": 0.4}})
    assert info["context"]["shift"] is None and not np.array_equal(obs_shifted, env._observation())  # drift score
    with pytest.raises(Exception, match="a context override may set battery"):
        env.reset(seed=0, options={"context": {"batery": 0.5}})


def test_a_technique_space_passes_both_checkers_and_replays_by_seed() -> None:
    lowrank = gym.make(ENV_ID, space="prune-lowrank", budgets={"macs_ratio": 0.5}).unwrapped
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(lowrank)
        sb3_check_env(lowrank, warn=True)
    a, b = rollout(lowrank, 4), rollout(lowrank, 4)
    assert a[1] == b[1] and a[2]["policy"] == b[2]["policy"]
