"""Run folders and atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autocompress.errors import AutoCompressError
from autocompress.runs import atomic_write_json, existing_run_dir, new_run_dir, system_report


def test_new_run_dir_is_named_like_cleanrl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOCOMPRESS_RUNS_DIR", str(tmp_path))
    path = new_run_dir("exp", "host", "ddpg", 3)
    exp, env, agent, seed, stamp = path.name.split("__")
    assert (exp, env, agent, seed) == ("exp", "host", "ddpg", "s3") and len(stamp) == 15 and path.is_dir()


def test_run_dir_must_be_new_or_empty(tmp_path: Path) -> None:
    assert new_run_dir("e", "h", "a", 0, tmp_path / "fresh").is_dir()
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "file").write_text("x")
    with pytest.raises(AutoCompressError, match="run_dir must be a new or empty folder") as caught:
        new_run_dir("e", "h", "a", 0, tmp_path / "used")
    assert caught.value.params == ("run_dir",)


def test_existing_run_dir_needs_its_marker(tmp_path: Path) -> None:
    with pytest.raises(AutoCompressError, match="resume needs a run folder holding config.json"):
        existing_run_dir(tmp_path, "config.json")
    (tmp_path / "config.json").write_text("{}")
    assert existing_run_dir(tmp_path, "config.json") == tmp_path


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    atomic_write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary file left behind


def test_system_report_names_the_machine() -> None:
    report = system_report()
    assert report["cpu_count"] >= 1 and report["torch"] != "not installed" and "python" in report
