"""Every built-in searcher and every shipped device's cost model pass the contract checks users can run on theirs."""

from __future__ import annotations

from pathlib import Path

import pytest

from autocompress.compress.layers import build_layer_table
from autocompress.env.deployment import Deployment
from autocompress.env.presets import preset_dir
from autocompress.hardware.graph import analyse
from autocompress.hardware.profiles import DEVICES_DIR, shipped
from autocompress.models import build_model
from autocompress.search.agents import load_agent
from autocompress.search.base import searcher_names
from autocompress.testing import check_cost_model, check_searcher


@pytest.mark.parametrize(
    "algorithm", ["ddpg", "td3", "sac", "ppo", "tpe", "nsga2", "random", "uniform", "tp-taylor", "tp-magnitude"]
)
def test_builtin_searchers_keep_the_contract(tmp_path: Path, algorithm: str) -> None:
    summary = check_searcher(algorithm, tmp_path, episodes=6)
    assert summary["agent"] == algorithm


def test_every_registered_algorithm_is_checked() -> None:
    assert set(searcher_names()) >= {"ddpg", "td3", "sac", "ppo", "tpe", "nsga2", "random", "uniform"}


@pytest.mark.parametrize("device", shipped(DEVICES_DIR))
@pytest.mark.parametrize("model", ["resnet20", "mobilenetv2"])
def test_shipped_cost_models_keep_the_contract(device: str, model: str) -> None:
    net = build_model(model, 10, (3, 32, 32))
    table = build_layer_table(net, (3, 32, 32))
    cost = Deployment.from_profiles(device, "wifi").cost_model(table, analyse(net, table))
    check_cost_model(cost, model)


def test_cost_model_contract_catches_a_broken_model() -> None:
    """A cost model whose latency grows when channels go must fail the check."""
    from autocompress.hardware.cost_model import CostModel

    class Inverted(CostModel):
        def layer_ms(self, layer, shape, bits, profile):  # type: ignore[no-untyped-def]
            return 1.0 / max(1, shape.macs)

    net = build_model("resnet20", 10, (3, 32, 32))
    table = build_layer_table(net, (3, 32, 32))
    deployment = Deployment.from_profiles("raspberry-pi-4")
    broken = Inverted(table, analyse(net, table), deployment.device)
    with pytest.raises(AssertionError, match="pruning raised latency_ms"):
        check_cost_model(broken, "resnet20")


def test_every_shipped_agent_preset_loads_and_the_readme_names_it() -> None:
    root = Path(__file__).parents[2]
    row = next(line for line in (root / "README.md").read_text().splitlines() if line.startswith("| `--agent`"))
    table = (root / "agents" / "README.md").read_text()
    presets = sorted(preset_dir("agents").glob("*.yaml"))
    assert len(presets) >= 10
    for path in presets:
        assert load_agent(path.stem).name == path.stem
        assert f"`{path.stem}`" in row, f"README's --agent row lacks {path.stem}"
        assert f"`{path.stem}`" in table, f"agents/README.md lacks {path.stem}"
