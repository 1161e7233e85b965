"""The deployment owns device + link + edge + context → cost model, hard limits and soft budgets."""

from __future__ import annotations

import pytest

from autocompress.env.context import Context
from autocompress.env.deployment import Deployment


def context(**fields: object) -> Context:
    values = {"battery": 1.0, "free_memory": 1.0, "bandwidth_scale": 1.0, "latency_budget_ms": None, "shift": None}
    return Context(**(values | fields))  # type: ignore[arg-type]


def test_context_scales_energy_memory_and_replaces_latency() -> None:
    deployment = Deployment.from_preset("phone-lte")  # latency 6 ms hard, energy 10 mJ soft
    limits = deployment.limits(context(battery=0.5, free_memory=0.25, latency_budget_ms=4.0))
    assert limits.hard == {"latency_ms": 4.0}
    assert limits.ram_bytes == pytest.approx(deployment.device.ram_bytes * 0.25)
    assert deployment.budgets(context(battery=0.5), hard=False) == {"energy_mj": pytest.approx(5.0)}
    assert deployment.budgets(None, hard=False) == {"energy_mj": 10.0}  # nominal: no context


def test_bandwidth_scale_multiplies_the_link() -> None:
    deployment = Deployment.from_preset("raspberry-pi-4-wifi")
    slow = deployment.link_in(context(bandwidth_scale=0.25))
    assert deployment.link is not None and slow is not None
    assert slow.uplink_mbps == pytest.approx(deployment.link.uplink_mbps / 4)
    assert deployment.link_in(None) == deployment.link


def test_budget_overrides_and_the_record_round_trip() -> None:
    deployment = Deployment.from_preset("host", {"macs_ratio": 0.3, "latency_ms": {"value": 5, "hard": False}})
    assert deployment.budgets(None, hard=True) == {"macs_ratio": 0.3}
    assert deployment.budgets(None, hard=False) == {"latency_ms": 5.0}
    assert Deployment.from_dict(deployment.to_dict(), "x") == deployment


def test_from_profiles_for_one_measurement() -> None:
    deployment = Deployment.from_profiles("raspberry-pi-4", "wifi", interval_ms=250.0)
    assert deployment.link is not None and deployment.link.name == "wifi"
    assert deployment.preset.context.interval_ms == 250.0 and deployment.budgets(None, hard=True) == {}


def test_profile_paths_in_an_env_preset_are_relative_to_its_folder(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Before: ``device: board.yaml`` was looked up in the working directory, not beside the preset."""
    from autocompress.hardware.profiles import DEVICES_DIR

    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "board.yaml").write_text(
        (DEVICES_DIR / "raspberry-pi-4.yaml").read_text().replace("name: raspberry-pi-4", "name: my-board")
    )
    (folder / "env.yaml").write_text("name: mine\ndescription: x\ndevice: board.yaml\n")
    monkeypatch.chdir(tmp_path)  # the preset's folder is not the working directory
    assert Deployment.from_preset(str(folder / "env.yaml")).device.name == "my-board"
