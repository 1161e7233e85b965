import numpy as np
import pytest

from autocompress.env import AutoCompressEnv


@pytest.fixture(scope="module")
def env() -> AutoCompressEnv:
    return AutoCompressEnv(env_preset="raspberry-pi-4-wifi", space="full", budgets={"latency_ms": 100.0})


def test_dimensions_follow_the_space(env) -> None:
    assert env.space.dims == ["keep", "wbits", "abits", "rank", "split", "adapt"]
    assert env.space.wbits == [2, 4, 8, 16, 32] and env.space.abits == [8, 16, 32]
    assert env.space.split_choices[:2] == ["none", "input"] and "relu_1" in env.space.split_choices
    assert env.space.round_to == 4  # the Raspberry Pi profile's channel rounding


def test_encode_decode_round_trip(env) -> None:
    step = next(s for s in env.space.steps if s.keep_group is not None and s.wbits)
    for keep in (0.2, 0.55, 1.0):
        for wbits in env.space.wbits:
            action = env.space.encode({"keep": keep, "wbits": wbits, "abits": 16, "split": "relu_1", "adapt": "tent"})
            choice = env.space.decode_step(action, step)
            assert choice.keep == pytest.approx(keep, abs=1e-6) and choice.wbits == wbits and choice.abits == 16
            assert env.space.decode_split(action) == "relu_1" and env.space.decode_adapt(action) == "tent"
    action = env.space.encode({"split": "none", "adapt": "none"})
    assert env.space.decode_split(action) is None and env.space.decode_adapt(action) == "none"


def test_optuna_parameters_and_actions_give_the_same_policy(env) -> None:
    rng = np.random.default_rng(0)
    params = {}
    for name, kind, domain in env.space.parameters():
        params[name] = float(rng.uniform(*domain)) if kind == "float" else domain[int(rng.integers(len(domain)))]
    actions = env.space.actions_from_params(params)
    assert len(actions) == len(env.space.steps)
    env.reset(seed=0)
    for action in actions:
        _, _, done, _, info = env.step(action)
    assert done
    policy = info["policy"]
    for step in env.space.steps:
        setting = policy["layers"].get(step.layer, {"keep": 1.0, "wbits": 32, "abits": 32})
        assert setting["wbits"] == params[f"wbits/{step.layer}"] and setting["abits"] == params[f"abits/{step.layer}"]
    assert policy["adapt"] == params["adapt"]


def test_a_technique_is_a_dimension_a_parameter_and_a_clipped_choice() -> None:
    env = AutoCompressEnv(space="prune-lowrank", budgets={"macs_ratio": 0.4})
    assert env.space.dims == ["keep", "rank"]
    ranked = [s for s in env.space.steps if s.techniques == ("rank",)]
    assert ranked and all(s.layer not in (env.table.names[0], env.table.names[-1]) for s in env.space.steps)
    names = {name for name, _, _ in env.space.parameters()}
    assert {f"rank/{s.layer}" for s in ranked} <= names
    action = env.space.encode({"keep": 1.0, "rank": 0.6})
    assert env.space.decode_step(action, ranked[0]).techniques["rank"] == pytest.approx(0.6, abs=1e-6)
    rng = np.random.default_rng(1)
    factorised = 0
    for episode in range(200):  # the guard clips keep and rank alike: the MACs budget holds by construction
        env.reset(seed=episode)
        state = env.plan([rng.uniform(-1, 1, env.space.action_dim).astype(np.float32) for _ in env.space.steps])
        assert not env.guard.violations(state)
        factorised += any(v.get("rank", 1.0) < 1.0 for v in state.techniques.values())
    assert factorised > 150
    params = {name: (lo + hi) / 2 for name, _, (lo, hi) in env.space.parameters()}
    env.reset(seed=0)
    for action in env.space.actions_from_params(params):
        *_, info = env.step(action)
    assert info["macs_ratio"] <= 0.4 + 1e-9
    assert any("rank" in setting for setting in info["policy"]["layers"].values())


def test_baselines_that_set_keep_alone_leave_techniques_off() -> None:
    env = AutoCompressEnv(space="prune-lowrank", budgets={"macs_ratio": 0.5})
    step = next(s for s in env.space.steps if s.techniques)
    assert env.space.decode_step(env.space.encode({"keep": 0.5}), step).techniques == {"rank": 1.0}
    env.reset(seed=0)
    for action in [env.space.encode({"keep": 0.5}) for _ in env.space.steps]:
        *_, info = env.step(action)
    assert not any("rank" in setting for setting in info["policy"]["layers"].values())


def test_a_latency_budget_only_unfactorised_layers_meet_is_reachable(tmp_path) -> None:
    """Each factorised layer is one more operation with its dispatch overhead: where overheads dominate (a tiny
    model), the least rank is not the least latency, and the look-ahead also tries each technique at the top."""
    preset = tmp_path / "pi.yaml"
    preset.write_text("name: pi\ndescription: latency only\ndevice: raspberry-pi-4\nreward: {mode: acc}\n")
    probe = AutoCompressEnv(env_preset=str(preset), space="lowrank", budgets={"latency_ms": 1e9})
    whole = probe.guard.evaluate(probe.guard.initial())["latency_ms"]
    least = probe.guard.evaluate(probe.guard.minimum_from(probe.guard.initial(), 0))["latency_ms"]
    assert least > whole  # the premise: on this model factorising everything costs latency
    env = AutoCompressEnv(env_preset=str(preset), space="lowrank", budgets={"latency_ms": whole * 1.001})
    rng = np.random.default_rng(0)
    for episode in range(20):
        env.reset(seed=episode)
        state = env.plan([rng.uniform(-1, 1, env.space.action_dim).astype(np.float32) for _ in env.space.steps])
        assert not env.guard.violations(state)


@pytest.mark.parametrize(
    ("techniques", "message"),
    [
        ("{rank: {min: 0, max: 1}}", r"techniques.rank: a ratio range must have 0 < min <= max <= 1, but got min 0"),
        ("[rank]", r"techniques must be a mapping, but got \['rank'\]"),
        ("{rnak: {min: 0.2, max: 1}}", r"techniques must name registered techniques \(rank\).*Did you mean 'rank'"),
        ("{rank: {min: 0.2, max: 1, step: 2}}", r"techniques.rank: unknown key 'step'; valid keys are min, max"),
        (
            "{rank: {min: 0.2, max: 1, skip: 1}}",
            r"techniques.rank: a range's skip share must be in \[0, 1\), but got skip 1",
        ),
    ],
)
def test_bad_technique_ranges_are_one_line(tmp_path, techniques: str, message: str) -> None:  # type: ignore[no-untyped-def]
    from autocompress.env import load_space_preset
    from autocompress.errors import ConfigError

    path = tmp_path / "space.yaml"
    path.write_text(f"{{name: x, description: y, techniques: {techniques}}}\n")
    with pytest.raises(ConfigError, match=message) as caught:
        load_space_preset(str(path))
    assert "\n" not in str(caught.value)


def test_a_skip_share_makes_leaving_a_layer_whole_a_choice(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # full: half of rank's searched range means "whole" — draws leave a layer unfactorised about half the time
    # (without the share only a sliver at the range's top rounds to the break-even rank), and off and every value
    # in the range survive encode/decode and Optuna's parameters
    from autocompress.env import load_space_preset
    from autocompress.errors import ConfigError

    env = AutoCompressEnv(env_preset="raspberry-pi-4-wifi", space="full", budgets={"latency_ms": 1e9})
    span = env.space.techniques["rank"]
    assert span.skip == 0.5 and span.top == pytest.approx(1.8)
    step = next(s for s in env.space.steps if s.techniques)
    assert (f"rank/{step.layer}", "float", (0.2, pytest.approx(1.8))) in env.space.parameters()
    for value in (0.2, 0.55, 0.99, 1.0):
        assert env.space.decode_step(env.space.encode({"rank": value}), step).techniques["rank"] == pytest.approx(value)
    assert env.space.decode_step(env.space.encode({"rank": 1.5}), step).techniques["rank"] == 1.0  # Optuna's off
    rng = np.random.default_rng(0)
    draws = [
        env.space.decode_step(rng.uniform(-1, 1, env.space.action_dim), step).techniques["rank"] for _ in range(400)
    ]
    assert 0.4 < np.mean([d == 1.0 for d in draws]) < 0.6
    assert min(draws) >= 0.2 and len({d for d in draws if d < 1.0}) > 150
    lowrank = AutoCompressEnv(space="lowrank", budgets={"latency_ms": 1e9})
    plain = [
        lowrank.space.decode_step(rng.uniform(-1, 1, lowrank.space.action_dim), step).techniques["rank"]
        for _ in range(400)
    ]
    assert np.mean([d == 1.0 for d in plain]) < 0.01  # the sliver
    path = tmp_path / "space.yaml"
    path.write_text("{name: x, description: y, keep: {min: 0.2, max: 1, skip: 0.5}}\n")
    with pytest.raises(ConfigError, match="keep takes no skip share"):
        load_space_preset(str(path))
