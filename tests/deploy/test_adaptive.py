"""The adaptive package: configurations from a run's Pareto front, the controller's rule, the runtime (switches,
drift monitor, AdaBN) and trace simulation against static, uncompressed and oracle choices."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from autocompress.data import DatasetSplits
from autocompress.deploy.adaptive import AdaptiveOptions, choose_configurations, export_adaptive
from autocompress.deploy.runtime import AdaptiveModel, input_features, window_drift_score
from autocompress.deploy.simulate import STRATEGIES, load_trace, shipped_traces, simulate
from autocompress.errors import AutoCompressError
from autocompress.search.job import SearchJob
from autocompress.search.record import SearchConfig


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("adaptive")
    config = SearchConfig(
        model="digits-cnn", dataset="digits", env="raspberry-pi-4-wifi", space="full", agent="tpe", episodes=12, seed=0
    )
    job = SearchJob.create(config, root / "run")
    job.run()
    export_adaptive(root / "run", root / "pkg", AdaptiveOptions(configs=3, test_images=120))
    return root / "pkg"


def test_package_holds_verified_configurations_and_a_plain_table(package: Path) -> None:
    table = json.loads((package / "manifest.json").read_text())
    assert table["format"] == "autocompress-package" and table["version"] == 3 and "run" not in table
    assert 1 <= len(table["configs"]) <= 3
    for entry in table["configs"]:
        assert (package / entry["path"]).is_file()
        report = json.loads((package / entry["path"]).with_name("report.json").read_text())
        assert report["verification"]["passed"]
        assert len(entry["costs"]["latency_ms"]) == len(table["bandwidth_grid"]) and 0 <= entry["val_accuracy"] <= 1
    accuracies = [e["val_accuracy"] for e in table["configs"]]
    assert table["storage"]["ratio_to_largest"] >= 1 and table["monitor"]["threshold"] > table["monitor"]["clean_max"]
    assert table["uncompressed"]["val_accuracy"] >= max(accuracies) - 0.05


def test_choice_keeps_the_most_accurate_and_the_cheapest() -> None:
    front = [
        {"accuracy": 0.99, "energy_mj": 5.0},
        {"accuracy": 0.98, "energy_mj": 3.0},
        {"accuracy": 0.95, "energy_mj": 2.0},
        {"accuracy": 0.90, "energy_mj": 1.0},
    ]
    assert choose_configurations(front, 2) == [0, 3]
    assert choose_configurations(front, 9) == [0, 1, 2, 3]
    front[2]["policy"] = {"split": "layer2"}
    assert choose_configurations(front, 3) == [0, 2, 3]  # the split configuration is kept
    with pytest.raises(AutoCompressError, match="needs a Pareto front"):
        choose_configurations([], 2)


def test_shared_packages_choose_configurations_that_nest() -> None:
    """With a union size the rest grow the shared union least: a configuration that fits inside the union is
    chosen before a cheaper-spread one that does not."""
    front = [
        {"accuracy": 0.99, "energy_mj": 5.0},
        {"accuracy": 0.98, "energy_mj": 4.0},
        {"accuracy": 0.97, "energy_mj": 3.0},
        {"accuracy": 0.95, "energy_mj": 2.0},
        {"accuracy": 0.90, "energy_mj": 1.0},
    ]
    channels = [(8, 8), (8, 6), (4, 12), (6, 4), (4, 4)]  # entry 2 does not nest inside entry 0

    def union_size(indices: list[int]) -> float:
        return float(sum(max(channels[i][g] for i in indices) for g in range(2)))

    assert choose_configurations(front, 3) == [0, 2, 4]  # evenly spaced by energy: the non-nesting one
    assert choose_configurations(front, 3, union_size) == [0, 1, 4]  # nests; as far from both as entry 3: first
    assert choose_configurations(front, 4, union_size) == [0, 1, 3, 4]


def test_runtime_switches_by_the_rule_and_logs_it(package: Path, digits: DatasetSplits) -> None:
    model = AdaptiveModel.load(package, adapt=False)
    logits = model.predict(digits.test_x[:5].numpy())
    assert logits.shape == (5, 10)
    from autocompress.context_rules import battery_energy_budget, hours_ahead
    from autocompress.deploy.runtime import BUDGET_MARGIN, CHARGING, HYSTERESIS, STAY_ENERGY

    contexts = (
        {"bandwidth_scale": 0.0},
        {"battery": 0.5, "free_memory": 0.5},
        {"battery": 0.1},
        {"battery": 1.0, "bandwidth_scale": 1.0},
        {"battery": 0.6, "hours_to_charge": 40.0},  # a charge far away: thriftier than the charge alone says
        {"hours_to_charge": 0.5},  # the charger is near: spend
        {"hours_to_charge": None},  # unknown again
    )
    for fields in contexts:
        bound, previous = model._budget_bound, model.current  # held down by the battery: steps up need a margin
        last = model.context["battery"]
        chosen = model.update_context(**fields)
        if model.context["battery"] > last + CHARGING:
            bound = False  # a charge starts a new day with nothing held down
        assert not model.check(chosen, model.context)  # the rule's pick meets every hard limit
        feasible = [c for c in model.configs if not model.check(c, model.context)]
        accuracy = {c: model.configs[c].val_accuracy for c in feasible}
        energy = {c: float(model.costs(c, model.context["bandwidth_scale"])[1] or 0) for c in feasible}
        best = max(feasible, key=lambda c: (accuracy[c], -energy[c]))
        ahead = hours_ahead(model.context["hours_to_charge"], 0.0)  # the clock: no time has passed since load
        budget = battery_energy_budget(model.context["battery"], ahead, min(energy.values()), energy[best])
        up = battery_energy_budget(
            model.context["battery"], ahead * (1 + BUDGET_MARGIN), min(energy.values()), energy[best]
        )
        now = energy.get(previous, float("inf")) if bound else float("inf")
        allowed = [c for c in feasible if energy[c] <= budget * (1 + 1e-9) and (energy[c] <= now or energy[c] <= up)]
        assert chosen in allowed  # within the battery governor's budget
        floor = max(accuracy[c] for c in allowed) - model.manifest.accuracy_tolerance
        assert accuracy[chosen] >= floor - HYSTERESIS  # as accurate as the budget allows, to the tolerance
        cheaper = [c for c in allowed if accuracy[c] >= floor and energy[c] * (1 + STAY_ENERGY) < energy[chosen]]
        assert not cheaper  # and no configuration as good spends clearly less
        if model.context["battery"] <= 0.2:
            assert energy[chosen] == min(energy.values())  # a low battery gets the cheapest
    model.update_context(latency_budget_ms=1e-6)
    assert model.events[-1]["event"] == "violation" and "latency_ms" in model.events[-1]["broken"]
    assert len(model.switch_ms) == 8 and max(model.switch_ms) < 50
    with pytest.raises(AutoCompressError, match="a context has the fields"):
        model.update_context(wifi=1.0)
    before = dict(model.context)
    for bad, rule in (
        ({"battery": 1.5}, "0 < battery <= 1"),
        ({"battery": "full"}, "battery must be a number"),
        ({"free_memory": 0.0}, "0 < free_memory <= 1"),
        ({"bandwidth_scale": -1.0}, "bandwidth_scale >= 0"),
        ({"latency_budget_ms": 0.0}, "latency_budget_ms > 0"),
        ({"hours_to_charge": -2.0}, "hours_to_charge >= 0"),
        ({"battery": float("nan")}, "battery must be a number"),
    ):
        with pytest.raises(AutoCompressError, match=rule):
            model.update_context(**bad)  # type: ignore[arg-type]
    assert model.context == before  # a refused context changes nothing


def test_drift_monitor_triggers_adabn_and_recovers(package: Path, digits: DatasetSplits) -> None:
    from tests.data.test_sources import fog

    model = AdaptiveModel.load(package)
    clean, foggy = digits.test_x[:96].numpy(), fog(digits.test_x[96:288], 4).numpy()
    plain = AdaptiveModel.load(package, adapt=False)
    for i in range(0, 96, 32):
        model.predict(clean[i : i + 32])
    assert not any(e["event"] == "drift" for e in model.events)
    right = sum(
        int((model.predict(foggy[i : i + 32]).argmax(1) == digits.test_y[96 + i : 128 + i].numpy()).sum())
        for i in range(0, 192, 32)
    )
    right_plain = sum(
        int((plain.predict(foggy[i : i + 32]).argmax(1) == digits.test_y[96 + i : 128 + i].numpy()).sum())
        for i in range(0, 192, 32)
    )
    kinds = [e["event"] for e in model.events]
    assert "drift" in kinds and "adapt" in kinds and right > right_plain + 20
    model.predict(clean[:32])
    assert model.events[-1]["event"] == "recover"


def test_drift_score_compares_each_input_with_its_own_class() -> None:
    """Two classes of very different brightness: a window of one class alone scores as low as a mixed one (each
    input is compared with its predicted class), a brightened window of either scores high."""
    rng = np.random.default_rng(0)
    classes = [rng.standard_normal((64, 1, 8, 8)) * 0.5 - 1, rng.standard_normal((64, 1, 8, 8)) * 0.5 + 1]
    features = [input_features(c.astype(np.float32)) for c in classes]
    mean = np.stack([f.mean(axis=0) for f in features])
    std = np.stack([f.std(axis=0) + 1e-3 for f in features])
    one = np.zeros(32, int)
    assert window_drift_score(features[0][:32], one, mean, std) < 0.6
    assert window_drift_score(features[1][:32], one + 1, mean, std) < 0.6
    pooled = np.concatenate(features).mean(axis=0, keepdims=True), np.concatenate(features).std(axis=0, keepdims=True)
    assert window_drift_score(features[0][:32], one, *pooled) > 0.9  # the pooled score fires on one class alone
    bright = input_features((classes[0][:32] + 1.5).astype(np.float32))
    assert window_drift_score(bright, one, mean, std) > 3


def test_simulation_compares_four_strategies(package: Path, tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("t,battery,bandwidth_scale,shift\n0,1.0,1.0,none\n1,0.5,0.0,none\n2,0.3,0.25,noise:3\n")
    result = simulate(package, str(trace), images_per_step=40, out_dir=tmp_path / "sim")
    totals = result["totals"]
    assert set(totals) == {"adaptive", "static_accurate", "static_feasible", "uncompressed", "oracle"}
    assert len(result["rows"]) == 15 and (tmp_path / "sim" / "simulation.png").stat().st_size > 1000
    assert totals["oracle"]["mean_accuracy"] >= totals["static_feasible"]["mean_accuracy"] - 1e-9
    assert totals["adaptive"]["violation_steps"] <= totals["static_feasible"]["violation_steps"]
    assert totals["static_accurate"]["mean_accuracy"] >= totals["static_feasible"]["mean_accuracy"] - 0.05
    accurate = [r["battery"] for r in result["rows"] if r["strategy"] == "static_accurate"]
    assert accurate == [1.0, 0.5, 0.3]  # the trace's battery is static_accurate's
    assert totals["static_accurate"]["final_battery"] == 0.3 and totals["static_accurate"]["empty_steps"] == 0


def test_each_strategy_drains_its_own_battery_by_what_it_spends() -> None:
    """The trace's battery is static_accurate's; a strategy spending half as much per inference loses half of the
    model's share of each drop; a charge is everyone's; model_share 0 gives everyone the trace's battery."""
    from autocompress.deploy.simulate import TraceStep, _drain

    def step(battery: float, share: float = 1.0) -> TraceStep:
        return TraceStep(0.0, battery, 1.0, 1.0, None, "none", None, share)

    def rows(adaptive_mj: float, adapt_mj: float = 0.0) -> list[dict[str, float | str]]:
        spent = {"adaptive": adaptive_mj, "static_accurate": 2.0, "uncompressed": 4.0}
        return [
            {
                "strategy": s,
                "energy_mj": spent.get(s, 2.0),
                "adapt_energy_mj": adapt_mj if s == "adaptive" else 0.0,
            }
            for s in STRATEGIES
        ]

    battery = dict.fromkeys(STRATEGIES, 1.0)
    _drain(battery, rows(1.0), step(1.0), step(0.8), 10)
    assert battery["static_accurate"] == pytest.approx(0.8) and battery["adaptive"] == pytest.approx(0.9)
    assert battery["uncompressed"] == pytest.approx(0.6)
    _drain(battery, rows(1.0, adapt_mj=10.0), step(0.8), step(0.6), 10)  # AdaBN's passes: 1 mJ more per inference
    assert battery["adaptive"] == pytest.approx(0.7)
    _drain(battery, rows(1.0), step(0.6, share=0.5), step(0.4), 10)  # half the drop is the screen's
    assert battery["adaptive"] == pytest.approx(0.55) and battery["static_accurate"] == pytest.approx(0.4)
    _drain(battery, rows(1.0), step(0.4), step(0.9), 10)  # the charger: everyone gains, up to full
    assert battery["adaptive"] == 1.0 and battery["static_accurate"] == pytest.approx(0.9)
    same = dict.fromkeys(STRATEGIES, 0.5)
    _drain(same, rows(1.0), step(0.5, share=0.0), step(0.3), 10)
    assert all(b == pytest.approx(0.3) for b in same.values())


def test_shipped_traces_load_and_bad_ones_get_one_line(tmp_path: Path) -> None:
    assert {"phone-day", "commute", "camera-drift"} <= set(shipped_traces())
    for name in shipped_traces():
        assert len(load_trace(name)[1]) >= 10
    (tmp_path / "bad.yaml").write_text("steps:\n- {t: 0, battery: 1.5}\n")
    with pytest.raises(AutoCompressError, match="0 < battery <= 1"):
        load_trace(str(tmp_path / "bad.yaml"))
    (tmp_path / "bad.yaml").write_text("steps:\n- {t: 0, hours_to_charge: -1}\n")
    with pytest.raises(AutoCompressError, match="hours_to_charge >= 0"):
        load_trace(str(tmp_path / "bad.yaml"))
    (tmp_path / "hours.csv").write_text("t,battery,hours_to_charge\n0,0.9,10\n60,0.8,\n")
    steps = load_trace(str(tmp_path / "hours.csv"))[1]
    assert [s.hours_to_charge for s in steps] == [10.0, None]  # empty: unknown from then on
    (tmp_path / "bad.yaml").write_text("steps:\n- {t: 0, model_share: 1.5}\n")
    with pytest.raises(AutoCompressError, match="0 <= model_share <= 1"):
        load_trace(str(tmp_path / "bad.yaml"))
    with pytest.raises(AutoCompressError, match="must be one of"):
        load_trace("no-such-trace")


def test_the_readme_runtime_snippet_runs(package: Path, digits: DatasetSplits, capsys) -> None:  # type: ignore[no-untyped-def]
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Adapting on the device", 1)[1]
    block = section.split("```python\n", 1)[1].split("```", 1)[0].replace("runs/adaptive/package", str(package))
    exec(compile(block, "README.md", "exec"), {"x": digits.test_x[:4].numpy()})
    assert capsys.readouterr().out.strip()


def test_shared_weight_package_nests_configurations_and_stores_them_once(tmp_path: Path, digits: DatasetSplits) -> None:
    """--share-weights: the configurations are slices of one refitted union model, stored once; each stripped file
    rebuilds exactly, the runtime predicts what the export measured, and the torch model.pt rebuilds too."""
    import onnxruntime as ort
    import torch

    from autocompress.deploy.export import load_exported
    from autocompress.deploy.shared_weights import SHARED_FILE, load_store, materialize

    config = SearchConfig(
        model="digits-cnn",
        dataset="digits",
        env="raspberry-pi-4-wifi",
        space="prune",
        agent="random",
        episodes=10,
        seed=1,
    )
    SearchJob.create(config, tmp_path / "run").run()
    table = export_adaptive(tmp_path / "run", tmp_path / "pkg", AdaptiveOptions(configs=3, share_weights=True))
    package = tmp_path / "pkg"
    storage = table["storage"]
    assert (package / SHARED_FILE).is_file() and storage["shared_weights"]
    assert len(table["configs"]) >= 2
    # stored once: the package is well under the configurations stored whole, and near the largest alone
    assert storage["package_bytes"] < 0.8 * sum(storage["configs_bytes_alone"].values())
    assert storage["ratio_to_largest"] <= 1.5
    store = load_store(package)
    model = AdaptiveModel.load(package, adapt=False)
    x = digits.test_x.numpy()
    for entry in table["configs"]:
        path = package / entry["path"]
        assert path.name == "model.shared.onnx" and not path.with_name("model.onnx").exists()
        refs = json.loads(path.with_name("shared.json").read_text())["model.shared.onnx"]
        assert refs, f"{entry['id']} shares nothing"
        model.current = entry["id"]
        predicted = model.predict(x).argmax(1)
        assert (predicted == digits.test_y.numpy()).mean() == pytest.approx(entry["test_accuracy"], abs=1e-6)
        # the torch model AdaBN starts from rebuilds from the same store and agrees with the ONNX file
        torch_model = load_exported(path.with_name("model.pt"))
        session = ort.InferenceSession(materialize(path.parent, path.name, store))
        for module in torch_model.modules():
            module._forward_pre_hooks.clear()  # the ONNX file computes in float (no activation fake-quant)
        with torch.inference_mode():
            ours = torch_model(torch.from_numpy(model.manifest.input.normalise(x[:32]))).numpy()
        theirs = session.run(None, {session.get_inputs()[0].name: x[:32]})[0]
        assert np.allclose(ours, theirs, atol=1e-4)
    # exported again into the same folder (fewer configurations, no sharing): nothing of the first package is left
    again = export_adaptive(tmp_path / "run", package, AdaptiveOptions(configs=2))
    assert not (package / SHARED_FILE).exists() and not list(package.glob("configs/*/shared.json"))
    assert sorted(p.name for p in (package / "configs").iterdir()) == [e["id"] for e in again["configs"]]
    assert AdaptiveModel.load(package, adapt=False).predict(x[:4]).shape[0] == 4


def test_an_rl_run_ships_its_actor_as_onnx(tmp_path: Path, package: Path) -> None:
    import onnxruntime as ort

    from autocompress.deploy.adaptive import export_actor
    from autocompress.search.rl import trained_model

    config = SearchConfig(
        model="digits-cnn", dataset="digits", env="raspberry-pi-4-wifi", space="prune", agent="ddpg", episodes=6, seed=0
    )
    SearchJob.create(config, tmp_path / "run").run()
    info = export_actor(tmp_path / "run", tmp_path)
    assert info is not None and info["algorithm"] == "ddpg" and info["max_error"] < 1e-4
    job = SearchJob.resume(tmp_path / "run")
    agent = trained_model(job)
    observations = np.stack([job.env.reset(seed=s)[0] for s in range(5)])
    session = ort.InferenceSession(str(tmp_path / "actor.onnx"))
    ours = np.clip(session.run(None, {"observation": observations})[0], -1, 1)
    assert np.allclose(ours, agent.predict(observations, deterministic=True)[0], atol=1e-5)
    # a TPE run has no actor to ship
    assert json.loads((package / "manifest.json").read_text())["actor"] is None


def test_a_typo_in_a_trace_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "typo.yaml").write_text("steps:\n- {t: 0, batery: 0.5}\n")
    with pytest.raises(AutoCompressError, match="has 'batery'.*battery"):
        load_trace(str(tmp_path / "typo.yaml"))


def test_the_union_store_keeps_only_what_the_remaining_configurations_slice() -> None:
    """A dominated configuration left out (here the widest) takes the union positions only it used with it; every
    remaining configuration's slice is unchanged."""
    import torch

    from autocompress.deploy.adaptive import compact_union
    from autocompress.deploy.shared_weights import take

    weight = torch.arange(6 * 4, dtype=torch.float32).reshape(6, 4)
    bias = torch.arange(6, dtype=torch.float32)
    maps = [{"w": [[0, 2, 4], None], "b": [[0, 2, 4]]}, {"w": [[2, 4], [1, 3]], "b": [[2, 4]]}]
    before = [{n: take(t.numpy(), m[n]) for n, t in (("w", weight), ("b", bias))} for m in maps]
    state, renumbered = compact_union({"w": weight, "b": bias, "bn.running_mean": bias}, maps)
    assert state["w"].shape == (3, 4) and state["b"].shape == (3,) and state["bn.running_mean"].shape == (6,)
    for m, expected in zip(renumbered, before, strict=True):
        for name in ("w", "b"):
            assert np.array_equal(take(state[name].numpy(), m[name]), expected[name])
    assert renumbered[1]["w"] == [[1, 2], [1, 3]] and maps[1]["w"] == [[2, 4], [1, 3]]  # the caller's maps stay


def test_the_battery_governor_allows_the_pace_the_charge_sustains() -> None:
    from autocompress.context_rules import BATTERY_LOW, DAY_HOURS, MIN_HOURS_AHEAD, battery_energy_budget, hours_ahead

    assert hours_ahead() == DAY_HOURS and hours_ahead(None, 6.0) == DAY_HOURS - 6.0  # the rest of the day
    assert hours_ahead(3.0, 6.0) == 3.0  # a known charge wins over the day
    assert hours_ahead(0.0) == hours_ahead(None, 30.0) == MIN_HOURS_AHEAD
    assert battery_energy_budget(1.0, DAY_HOURS, 1.0, 4.0) == 4.0  # a full battery, a day ahead: the most accurate
    assert battery_energy_budget(0.6, DAY_HOURS, 1.0, 4.0) == pytest.approx(4.0 * 0.5)  # half the usable charge
    assert battery_energy_budget(0.6, DAY_HOURS / 2, 1.0, 4.0) == pytest.approx(4.0)  # half the day ahead
    assert battery_energy_budget(BATTERY_LOW, 0.5, 1.0, 4.0) == 1.0  # the reserve: the cheapest, charger or not
    assert battery_energy_budget(0.25, DAY_HOURS, 1.0, 4.0) == 1.0  # never below the cheapest
    hours = [0.5, 2, 8, 16, 24, 48, 96]
    budgets = [battery_energy_budget(0.7, h, 1.0, 4.0) for h in hours]
    assert budgets == sorted(budgets, reverse=True) and budgets[0] == 4.0 and budgets[-1] == 1.0
    charges = [battery_energy_budget(c, 8.0, 1.0, 4.0) for c in (0.1, 0.3, 0.5, 0.7, 0.9)]
    assert charges == sorted(charges)


def test_the_runtime_reads_the_hours_since_the_last_charge_from_its_clock(package: Path) -> None:
    """Half a battery 4 hours into a day (behind schedule) allows less than a full one at its start, and the same
    half 12 hours in (ahead of it) the most accurate again; a first reading, or a charge, is placed on schedule."""
    from autocompress.context_rules import (
        DAY_HOURS,
        MIN_HOURS_AHEAD,
        battery_energy_budget,
        hours_ahead,
        hours_on_schedule,
    )

    assert hours_on_schedule(1.0) == 0.0 and hours_on_schedule(0.2) == DAY_HOURS == hours_on_schedule(0.05)
    now = [0.0]
    model = AdaptiveModel.load(package, adapt=False, clock=lambda: now[0])

    def energy(config: str) -> float:
        return float(model.costs(config, 1.0)[1] or 0)

    cheapest = min(energy(c) for c in model.configs)
    start = energy(model.update_context(battery=1.0))
    assert start > cheapest  # the package spans energies, or this test shows nothing
    now[0] = 4 * 3600.0
    assert energy(model.update_context(battery=0.5)) < start  # behind schedule: thriftier
    now[0] = 12 * 3600.0
    model.update_context(battery=0.5)  # the charger is near by the day's clock: the budget allows every one again
    assert model._day_start is not None
    ahead = hours_ahead(None, (now[0] - model._day_start) / 3600)
    assert ahead == DAY_HOURS - 12 and battery_energy_budget(0.5, ahead, cheapest, start) == start
    assert hours_ahead(None, 30.0) == MIN_HOURS_AHEAD
    now[0] = 13 * 3600.0
    model.update_context(battery=0.7)  # charging: the day restarts where 70 % stands on schedule
    assert model._day_start == pytest.approx(now[0] - 3600 * hours_on_schedule(0.7))
    late = AdaptiveModel.load(package, adapt=False, clock=lambda: now[0])
    assert energy(late.update_context(battery=0.8)) == start  # a first reading at 80 % is on schedule


def test_bits_the_device_gains_nothing_from_are_lifted() -> None:
    from autocompress.compress.policy import LayerSetting, Policy
    from autocompress.deploy.adaptive import lift_bits
    from autocompress.deploy.manifest import Costs
    from autocompress.env import build_workload

    table = build_workload("digits-cnn", "digits", True, None, None, None).table
    names = table.names

    def costs_of(policy: Policy) -> Costs:  # int8 kernels when both are at most 8 bits, else float; weights stored
        int8 = [policy.setting(n).wbits <= 8 and policy.setting(n).abits <= 8 for n in names]
        time = float(sum(1.0 if fast else 2.0 for fast in int8))
        storage = sum(policy.setting(n).wbits for n in names)
        return Costs((time, time), (3 * time, 3 * time), storage, 0)

    def broken(limit: int):  # type: ignore[no-untyped-def]
        return lambda costs: {"storage_bytes"} if costs.storage_bytes > limit else set()

    legal = {"wbits": [2, 4, 8, 16, 32], "abits": [8, 16, 32]}
    settings = [LayerSetting(wbits=4, abits=8), LayerSetting(wbits=16, abits=8), LayerSetting(wbits=32, abits=32)]
    policy = Policy("digits-cnn", layers={n: settings[i % 3] for i, n in enumerate(names)})
    lifted = lift_bits(policy, table, legal, costs_of, broken(10_000))
    expected = [(8, 8), (32, 32), (32, 32)]  # int8 stays int8 (2x faster), float layers get float bits
    assert [(lifted.setting(n).wbits, lifted.setting(n).abits) for n in names] == [
        expected[i % 3] for i in range(len(names))
    ]
    assert costs_of(lifted).latency_ms == costs_of(policy).latency_ms
    assert lift_bits(lifted, table, legal, costs_of, broken(10_000)) == lifted  # nothing left to lift
    tight = costs_of(policy).storage_bytes  # a storage limit the searched policy just meets: nothing may grow
    held = lift_bits(policy, table, legal, costs_of, broken(tight))
    assert all(held.setting(n).wbits == policy.setting(n).wbits for n in names)  # stored bits may not grow
    assert held.setting(names[1]).abits == 32  # activation bits cost no storage here: still lifted
    assert lift_bits(policy, table, {"wbits": [2, 4], "abits": [8]}, costs_of, broken(10_000)) == policy  # none legal


def test_a_package_holds_no_configuration_its_own_lifted_bits_beat(package: Path) -> None:
    from autocompress.compress.policy import Policy
    from autocompress.deploy.adaptive import lifted_policies
    from autocompress.env import build_workload
    from autocompress.hardware.graph import analyse
    from autocompress.search.record import RunRecord

    record = RunRecord.open(package.parent / "run", "export")
    workload = build_workload("digits-cnn", "digits", True, None, None, None)
    table = json.loads((package / "manifest.json").read_text())
    policies = [Policy.load(package / Path(c["path"]).parent / "policy.json") for c in table["configs"]]
    searched = [Policy.from_dict(e["policy"]) for e in record.front]
    graph = analyse(workload.model, workload.table)
    again = lifted_policies(policies, workload.table, record.resolved.deployment, workload.evaluator, graph)
    assert again == policies  # every shipped configuration's bits are already as high as its costs allow
    lifted = lifted_policies(searched, workload.table, record.resolved.deployment, workload.evaluator, graph)
    assert any(a != b for a, b in zip(lifted, searched, strict=True))  # the search left bits to lift (this one did)
    assert any(c["origin"].endswith("bits lifted") for c in table["configs"])


def test_val_images_must_be_positive_or_none() -> None:
    with pytest.raises(AutoCompressError, match=r"val_images >= 1 \(or None: the whole validation split\)"):
        AdaptiveOptions(val_images=0)


@pytest.mark.parametrize("train_epochs", [0, pytest.param(1, marks=pytest.mark.slow)])  # trained: a slow case
def test_factorised_configurations_nest_and_share_their_factors(
    tmp_path: Path, digits: DatasetSplits, train_epochs: int
) -> None:
    """A run over pruning and low rank: its configurations share their pruned layers and their low-rank factors as
    slices of one union, and the runtime and the torch model.pt predict what the export measured."""
    import torch

    from autocompress.compress.policy import Policy
    from autocompress.deploy.export import load_exported
    from autocompress.deploy.shared_weights import SHARED_FILE

    config = SearchConfig(
        model="digits-cnn",
        dataset="digits",
        env="raspberry-pi-4-wifi",
        space="prune-lowrank",
        agent="random",
        episodes=8,
        seed=2,
    )
    SearchJob.create(config, tmp_path / "run").run()
    options = AdaptiveOptions(configs=3, share_weights=True, train_epochs=train_epochs, device="cpu", test_images=300)
    table = export_adaptive(tmp_path / "run", tmp_path / "pkg", options)
    package = tmp_path / "pkg"
    assert (package / SHARED_FILE).is_file() and len(table["configs"]) >= 2
    model = AdaptiveModel.load(package, adapt=False)
    x, y = digits.test_x[:300].numpy(), digits.test_y[:300].numpy()
    factored = 0
    for entry in table["configs"]:
        path = package / entry["path"]
        policy = Policy.from_dict(json.loads(path.with_name("policy.json").read_text()))
        assert policy.model == "digits-cnn"
        refs = json.loads(path.with_name("shared.json").read_text())["model.shared.onnx"]
        torch_model = load_exported(path.with_name("model.pt"))
        names = {n for n, m in torch_model.named_modules() if type(m).__name__ == "LowRankModule"}
        factored += len(names)
        # its factored layers are slices of the union's factors too: stored once
        assert refs and all(any(ref == f"{n}.first.weight" for ref in refs) for n in names)
        model.current = entry["id"]
        assert (model.predict(x).argmax(1) == y).mean() == pytest.approx(entry["test_accuracy"], abs=1e-6)
        assert entry["test_accuracy"] > 0.5, entry
        for module in torch_model.modules():
            module._forward_pre_hooks.clear()
        with torch.inference_mode():
            ours = torch_model(torch.from_numpy(model.manifest.input.normalise(x[:16]))).numpy()
        assert np.allclose(ours, model.predict(x[:16]), atol=1e-3)
    assert factored > 0, "no configuration of the run factorised a layer: the test tests nothing"
    if train_epochs:
        assert table["training"]["epochs"] == 1 and len(table["training"]["val_accuracy"]) == 1


def test_a_bad_train_per_step_is_one_line_naming_the_flag(capsys: pytest.CaptureFixture[str], package: Path) -> None:
    from autocompress.cli.app import main

    run, out = package.parent / "run", package.parent / "never-written"
    assert (
        main(["export", str(run), "--adaptive", "--train-epochs", "1", "--train-per-step", "1", "--out", str(out)]) == 1
    )
    assert not out.exists()
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --train-per-step must be 0 (every configuration every step) or >= 2, but got 1")
    assert "\n" not in err
    with pytest.raises(AutoCompressError, match="train_per_step must be 0"):
        AdaptiveOptions(train_epochs=1, train_per_step=2.5)  # type: ignore[arg-type]


def test_the_ladder_top_rung_is_the_whole_model_even_from_a_factorised_base() -> None:
    """A base with low-rank layers: the 1.0 rung is the whole model (no factorised layer left); the others keep its
    ranks and scale the channels."""
    from autocompress.compress.policy import LayerSetting, Policy
    from autocompress.deploy.adaptive import ladder_policies
    from autocompress.env import build_workload

    table = build_workload("digits-cnn", "digits", True, None, None, None).table
    names = [layer.name for layer in table.layers]
    layers = {n: LayerSetting(keep=0.5, techniques={"rank": 0.5}) for n in names[:2]}
    base = Policy(model="digits-cnn", layers=layers)
    assert base.technique_values(table)  # the base really factorises a layer
    top, half, low = ladder_policies(base, table, [1.0, 0.5, 0.1])
    assert top.macs(table) / table.macs == pytest.approx(1.0) and not top.technique_values(table)
    assert half.macs(table) / table.macs <= 0.5 + 1e-9
    assert half.technique_values(table) == low.technique_values(table) == base.technique_values(table)


def test_the_governor_steps_back_up_only_with_a_margin_once_the_battery_held_it_down(package: Path) -> None:
    """Behind schedule the governor steps down; just past its pace (budget = the most accurate's energy, but not
    with BUDGET_MARGIN more hours) it stays down; with room to spare it steps back up."""
    now = [0.0]
    model = AdaptiveModel.load(package, adapt=False, clock=lambda: now[0])

    def energy(config: str) -> float:
        return float(model.costs(config, 1.0)[1] or 0)

    start = energy(model.update_context(battery=1.0))
    now[0] = 4 * 3600.0
    down = energy(model.update_context(battery=0.5))  # 4 h in at half a battery: behind a 16-hour day
    assert down < start
    now[0] = (16 - 0.375 * 16 / 1.05) * 3600.0  # the same charge now sustains 1.05 x the top rung's pace
    assert energy(model.update_context(battery=0.5)) == down  # within the margin: stays down
    now[0] = 12 * 3600.0  # 1.5 x its pace
    assert energy(model.update_context(battery=0.5)) > down
    now[0] = 4 * 3600.0
    model.update_context(battery=0.5)
    now[0] = 14 * 3600.0  # held down again, then charged full: a new day on schedule runs the top rung again
    assert model.update_context(battery=1.0) == model.choose({**model.context}).config
    assert not model._budget_bound and energy(model.current) == start
