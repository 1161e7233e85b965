"""The run record owns the run folder: resume, export and compare read the presets it saved, not the preset files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autocompress.deploy.export import ExportOptions, export_run
from autocompress.errors import AutoCompressError
from autocompress.search import RunRecord, SearchConfig, SearchJob

ENV_YAML = """\
name: my-pi
description: a user's preset
device: raspberry-pi-4
budgets:
  macs_ratio: {value: 0.5, hard: true}
"""


@pytest.fixture(scope="module")
def edited_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """A search on a user's preset file; the export made before the file is edited."""
    root = tmp_path_factory.mktemp("record")
    preset = root / "my-pi.yaml"
    preset.write_text(ENV_YAML)
    config = SearchConfig(model="digits-cnn", dataset="digits", env=str(preset), agent="random", episodes=4)
    job = SearchJob.create(config, root / "run")
    job.run()
    before = export_run(root / "run", root / "export-before", ExportOptions(latency_repeats=3))
    return root, preset, before


def test_export_is_unchanged_after_the_preset_file_is_edited(edited_run: tuple[Path, Path, dict]) -> None:
    root, preset, before = edited_run
    preset.write_text(ENV_YAML.replace("raspberry-pi-4", "mcu").replace("0.5", "0.2"))
    after = export_run(root / "run", root / "export-after", ExportOptions(latency_repeats=3))
    assert after["device"] == before["device"] and after["device"]["device"] == "raspberry-pi-4"
    preset.unlink()  # even gone, the run still resumes and exports from what it saved
    job = SearchJob.resume(root / "run")
    assert job.env.preset.budgets["macs_ratio"].value == 0.5 and job.env.device.name == "raspberry-pi-4"


def test_resume_uses_the_saved_budget_overrides(tmp_path: Path) -> None:
    config = SearchConfig(model="digits-cnn", dataset="digits", agent="random", episodes=2, budgets={"macs_ratio": 0.3})
    SearchJob.create(config, tmp_path / "run").run()
    resumed = SearchJob.resume(tmp_path / "run")
    assert resumed.env.preset.budgets["macs_ratio"].value == 0.3
    assert resumed.record.resolved.steps_per_episode == resumed.steps


def test_record_reads_what_the_search_wrote(tmp_path: Path) -> None:
    config = SearchConfig(model="digits-cnn", dataset="digits", agent="random", episodes=3, seed=2)
    summary = SearchJob.create(config, tmp_path / "run").run()
    record = RunRecord.open(tmp_path / "run")
    assert record.config == config and record.episodes_done == 3 and record.summary == summary
    assert record.select("best") == record.best and record.select("pareto:0") == record.front[0]
    overview = record.overview()
    assert overview["episodes"] == "3/3" and overview["best_reward"] == summary["best_reward"]


@pytest.mark.parametrize(
    ("choice", "message"),
    [("worst", "policy must be 'best' or 'pareto:K'"), ("pareto:99", "policy pareto:K needs 0 <= K <")],
)
def test_select_errors_name_the_parameter(tmp_path: Path, choice: str, message: str) -> None:
    SearchJob.create(
        SearchConfig(model="digits-cnn", dataset="digits", agent="random", episodes=1), tmp_path / "r"
    ).run()
    with pytest.raises(AutoCompressError, match=message) as caught:
        RunRecord.open(tmp_path / "r").select(choice)
    assert caught.value.params == ("policy",)


def test_missing_and_corrupt_run_folders_give_one_line(tmp_path: Path) -> None:
    with pytest.raises(AutoCompressError, match="export needs a run folder holding config.json"):
        RunRecord.open(tmp_path / "nope", "export")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    with pytest.raises(AutoCompressError, match="must be valid JSON"):
        RunRecord.open(tmp_path / "bad")
    (tmp_path / "bad" / "config.json").write_text(json.dumps({"model": "x"}))
    with pytest.raises(AutoCompressError, match="must hold a search config"):
        _ = RunRecord.open(tmp_path / "bad").config


def test_library_errors_speak_python(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    config = SearchConfig(model="digits-cnn", dataset="digits", agent="random", episodes=1)
    with pytest.raises(AutoCompressError) as caught:
        SearchJob.create(config, tmp_path / "full")
    assert str(caught.value).startswith("run_dir must be a new or empty folder") and "--" not in str(caught.value)
