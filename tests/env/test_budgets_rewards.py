import math
from pathlib import Path

import numpy as np
import pytest

from autocompress.env import AutoCompressEnv, load_env_preset, load_space_preset
from autocompress.env.presets import RewardSpec
from autocompress.env.rewards import compute_reward
from autocompress.errors import AutoCompressError, ConfigError


def guard_episodes(env: AutoCompressEnv, episodes: int, seed: int) -> list[list[str]]:
    """Run the budget guard through random episodes (no evaluation) and return each final policy's violations."""
    rng = np.random.default_rng(seed)
    broken = []
    for episode in range(episodes):
        env.reset(seed=seed + episode)
        actions = [rng.uniform(-1, 1, env.space.action_dim) for _ in env.space.steps]
        broken.append(env.guard.violations(env.plan(actions)))
    return broken


def test_a_plan_is_what_the_episode_plays() -> None:
    env = AutoCompressEnv(env_preset="raspberry-pi-4-wifi", space="full", budgets={"latency_ms": 2.0})
    rng = np.random.default_rng(3)
    for episode in range(5):
        env.reset(seed=episode)
        actions = [rng.uniform(-1, 1, env.space.action_dim).astype(np.float32) for _ in env.space.steps]
        planned = env.plan(actions)
        for action in actions:
            *_, info = env.step(action)
        assert env.policy(planned).to_dict() == info["policy"]


def tight(env_preset: str, space: str, name: str) -> float:
    """A budget between the smallest and the uncompressed policy's cost: binding, yet feasible."""
    probe = AutoCompressEnv(env_preset=env_preset, space=space, budgets={name: 1e9})
    low = probe.guard.evaluate(probe.guard.minimum_from(probe.guard.initial(), 0))[name]
    return (low + probe.guard.evaluate(probe.guard.initial())[name]) / 2


def test_hard_budgets_hold_over_1000_random_episodes() -> None:
    env = AutoCompressEnv(budgets={"macs_ratio": 0.3, "latency_ms": tight("host", "prune-quant", "latency_ms")})
    assert all(not b for b in guard_episodes(env, 1000, 0))


def test_full_space_with_split_and_adaptation_never_breaks_the_budget() -> None:
    latency = tight("raspberry-pi-4-wifi", "full", "latency_ms")
    energy = tight("raspberry-pi-4-wifi", "full", "energy_mj") / 0.3  # the battery (0.3-1.0) scales the budget
    env = AutoCompressEnv(
        env_preset="raspberry-pi-4-wifi", space="full", budgets={"latency_ms": latency, "energy_mj": energy}
    )
    assert all(not b for b in guard_episodes(env, 300, 1))


def test_budget_clipping_uses_the_budget_and_keeps_exploring() -> None:
    env = AutoCompressEnv(space="prune", budgets={"macs_ratio": 0.5})
    ratios = []
    for episode in range(20):
        env.reset(seed=episode)
        done = False
        while not done:
            _, _, done, _, info = env.step(np.ones(env.action_space.shape, np.float32))
        ratios.append(info["macs_ratio"])
    assert max(ratios) <= 0.5 and min(ratios) > 0.4  # greedy agents end close to the budget


def test_infeasible_budget_is_an_error_naming_the_minimum() -> None:
    with pytest.raises(
        ConfigError, match=r"budget macs_ratio <= 0.01 is infeasible: the smallest policy .* reaches 0\.\d+"
    ):
        AutoCompressEnv(space="prune", budgets={"macs_ratio": 0.01})


def test_reward_acc() -> None:
    assert compute_reward(RewardSpec(mode="acc"), 0.9, {}, {}, {}) == 0.9


def test_reward_acc_log_cost() -> None:
    value = compute_reward(RewardSpec(mode="acc_log_cost", cost="macs"), 0.9, {"macs": 1e6}, {}, {})
    assert value == pytest.approx(-0.1 * math.log(1e6)) == pytest.approx(-1.381551)


def test_reward_weighted() -> None:
    spec = RewardSpec(mode="weighted", weights={"latency_ms": 0.5, "energy_mj": 0.1})
    costs, reference = {"latency_ms": 2.0, "energy_mj": 3.0}, {"latency_ms": 4.0, "energy_mj": 6.0}
    assert compute_reward(spec, 0.8, costs, reference, {}) == pytest.approx(0.8 - 0.25 - 0.05)
    assert compute_reward(spec, 0.8, costs, reference, {}, energy_weight_scale=2.0) == pytest.approx(0.8 - 0.25 - 0.1)


def test_reward_constrained() -> None:
    spec = RewardSpec(mode="constrained", penalty=2.0)
    costs = {"latency_ms": 6.0, "energy_mj": 5.0}
    assert compute_reward(spec, 0.7, costs, {}, {"latency_ms": 4.0, "energy_mj": 10.0}) == pytest.approx(
        0.7 - 2.0 * 0.5
    )


def test_presets_resolve_by_name_and_by_path(tmp_path: Path) -> None:
    for name in ("host", "raspberry-pi-4-wifi", "smartwatch-ble", "phone-lte", "mcu"):
        assert load_env_preset(name).name == name
    for name in ("prune", "quant", "prune-quant", "full"):
        assert load_space_preset(name).name == name
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\ndescription: x\ndevice: mcu\n")
    assert load_env_preset(str(path)).device == "mcu"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\ndescription: y\ndevice: host\nbudget: {}\n", "unknown key 'budget'"),
        ("name: x\ndescription: y\n", "the required key 'device' is missing"),
        ("name: x\ndescription: y\ndevice: host\nbudgets: {latency: {value: 3}}\n", "budgets may name"),
        ("name: x\ndescription: y\ndevice: host\nreward: {mode: accuracy}\n", "reward.mode must be one of"),
        ("name: x\ndescription: y\ndevice: host\ncontext: {battery: [0.9, 0.2]}\n", "0 < low <= high"),
        ("name: x\ndescription: y\ndevice: host\ncontext: {shifts: [noise:9]}\n", "1 <= severity <= 5"),
    ],
)
def test_bad_env_presets_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(AutoCompressError) as info:
        load_env_preset(str(path))
    assert message in str(info.value) and ("bad.yaml" in str(info.value) or "severity" in message)


def test_unknown_preset_suggests() -> None:
    with pytest.raises(AutoCompressError, match="Did you mean 'raspberry-pi-4-wifi'"):
        load_env_preset("raspberry-pi4-wifi")


@pytest.mark.parametrize(("budget", "split"), [(12.5, "input"), (5.0, None)])
def test_split_is_chosen_at_the_first_step_when_it_can_meet_the_budget(budget: float, split: str | None) -> None:
    """Full offload over Wi-Fi costs the 10 ms round trip: kept under a 12.5 ms budget (and every layer then keeps
    its channels), refused under 5 ms before any layer is decided."""
    env = AutoCompressEnv(env_preset="raspberry-pi-4-wifi", space="full", budgets={"latency_ms": budget})
    action = env.space.encode({"keep": 1.0, "split": "input", "adapt": "none"})
    env.reset(seed=0, options={"context": {"bandwidth_scale": 1.0, "shift": "none"}})
    env.step(action)
    assert env.state.split == split
    done, info = False, {}
    while not done:
        _, _, done, _, info = env.step(action)
    assert info["policy"]["split"] == split and info["latency_ms"] <= budget and info["hard_violations"] == 0
