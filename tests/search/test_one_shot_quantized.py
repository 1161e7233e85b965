"""The one-shot Torch-Pruning agents with ``quantize`` are the pipeline a user builds by hand: uniform 8-bit (or
4-bit weights where 8 cannot meet the budget), the global pruning ratio found for those bits."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from autocompress.errors import ConfigError
from autocompress.search import SearchConfig, SearchJob
from autocompress.search.record import RunRecord


def _best(tmp_path: Path, agent: str, storage: float, name: str) -> dict:
    config = SearchConfig(
        model="digits-cnn",
        dataset="digits",
        agent=agent,
        space="prune-quant",
        env="raspberry-pi-4",
        budgets={"storage_bytes": storage},
        episodes=1,
    )
    SearchJob.create(config, tmp_path / name).run()
    best = RunRecord.open(tmp_path / name).best
    assert best is not None
    return best


def test_int8_keeps_more_channels_than_float_at_one_storage_budget(tmp_path: Path) -> None:
    quantized = _best(tmp_path, "tp-taylor-int8", 30_000, "q")
    float_ = _best(tmp_path, "tp-taylor", 30_000, "f")
    assert quantized["storage_bytes"] <= 30_000 and float_["storage_bytes"] <= 30_000
    bits = {s["wbits"] for s in quantized["policy"]["layers"].values() if "wbits" in s}
    assert bits == {8}
    assert quantized["macs_ratio"] > 2 * float_["macs_ratio"]  # 8-bit weights leave room for 3x the channels
    assert quantized["accuracy"] > float_["accuracy"]


def test_four_bit_weights_where_eight_cannot_meet_the_budget(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="autocompress.search.baselines"):
        best = _best(tmp_path, "tp-magnitude-int8", 2_500, "q4")
    assert "at 4/8 bits" in caplog.text  # 8 bits cannot fit 2.5 kB even at the space's smallest keep
    assert best["storage_bytes"] <= 2_500


@pytest.mark.parametrize(
    ("agent", "space"), [("tp-taylor", "prune"), ("tp-magnitude", "prune"), ("tp-taylor-int8", "prune-quant")]
)
def test_the_guard_clips_nothing_the_one_shot_agent_asks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, agent: str, space: str
) -> None:
    # Feasibility judged on the episode the guard plays passed every ratio (the guard makes every episode
    # feasible): the bisection returned "prune nothing" and the guard then pruned the last layers to their floor
    # (ResNet-20 at half its MACs: 0.37 val instead of 0.77).
    config = SearchConfig(
        model="digits-cnn",
        dataset="digits",
        agent=agent,
        space=space,
        env="raspberry-pi-4",
        budgets={"macs_ratio": 0.4},
        episodes=1,
    )
    with caplog.at_level(logging.WARNING, logger="autocompress.search.baselines"):
        SearchJob.create(config, tmp_path / "r").run()
    assert "clipped" not in caplog.text
    best = RunRecord.open(tmp_path / "r").best
    assert best is not None and 0.3 < best["macs_ratio"] <= 0.4 and best["accuracy"] > 0.9


@pytest.mark.parametrize("storage", [6_000, 4_000])
def test_the_played_policy_has_the_bits_the_agent_chose(tmp_path: Path, storage: int) -> None:
    # Torch-Pruning keeps 4 of conv2's 32 channels here, below the space's keep floor (0.2, rounded up to 8 by the
    # device): judged on the channels as asked, the budget held at 8 bits, and the guard then played conv3/conv4 at
    # 2 bits (0.88 and 0.57 val); judged on what the episode plays, every layer keeps the bits chosen.
    best = _best(tmp_path, "tp-taylor-int8", storage, "q")
    bits = {(s["wbits"], s["abits"]) for name, s in best["policy"]["layers"].items() if name not in ("conv1", "fc")}
    assert len(bits) == 1 and bits <= {(8, 8), (4, 8)}
    assert best["storage_bytes"] <= storage and best["accuracy"] > 0.85


@pytest.mark.parametrize(
    ("hyperparameters", "message"),
    [("quantize: 16", "quantize must be null, 8, 4 or auto"), ("bogus: 1", "takes only quantize")],
)
def test_bad_quantize_is_one_line(tmp_path: Path, hyperparameters: str, message: str) -> None:
    preset = tmp_path / "a.yaml"
    preset.write_text(f"name: a\nalgorithm: tp-taylor\nhyperparameters: {{{hyperparameters}}}\n")
    config = SearchConfig(model="digits-cnn", dataset="digits", agent=str(preset), space="prune-quant", episodes=1)
    with pytest.raises(ConfigError, match=message):
        SearchJob.create(config, tmp_path / "r")
    assert not (tmp_path / "r").exists()
