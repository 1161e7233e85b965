"""Exports are swapped in whole: a failure, a full disk or a second export never leaves a mixed or lost folder."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from autocompress.cli import main
from autocompress.deploy import export as export_module
from autocompress.errors import AutoCompressError
from autocompress.runs import FolderLock, atomic_folder

QUICK = ["--model", "digits-cnn", "--dataset", "digits", "--threads", "1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("runs") / "r"
    assert (
        main(
            [
                "-q",
                "search",
                *QUICK,
                "--agent",
                "random",
                "--episodes",
                "2",
                "--space",
                "prune-quant",
                "--run-dir",
                str(folder),
            ]
        )
        == 0
    )
    return folder


def export(capsys: pytest.CaptureFixture[str], run: Path, out: Path, *extra: str) -> tuple[int, str]:
    code = main(["-q", "export", str(run), "--out", str(out), "--test-images", "50", *extra])
    return code, capsys.readouterr().err


def test_a_full_disk_mid_export_leaves_the_earlier_export_as_it_was(
    capsys: pytest.CaptureFixture[str], run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "export"
    assert export(capsys, run, out)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(out / "model.onnx"))

    monkeypatch.setattr(export_module, "ort_latency", full_disk)
    code, err = export(capsys, run, out)
    assert code == 1 and err.count("\n") == 1 and "disk is full" in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # untouched, byte for byte
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no staging or lock left beside it


def test_a_folder_holding_other_files_is_refused_not_replaced(
    capsys: pytest.CaptureFixture[str], run: Path, tmp_path: Path
) -> None:
    code, err = export(capsys, run, run)  # --out pointed at the run folder itself
    assert code == 1 and "holds other files" in err and "--out" in err
    assert (run / "config.json").is_file() and (run / "progress.csv").is_file()
    (tmp_path / "file").write_text("x")
    code, err = export(capsys, run, tmp_path / "file")
    assert code == 1 and "is a file" in err and (tmp_path / "file").read_text() == "x"


def test_a_second_export_into_the_same_folder_is_refused_while_the_first_runs(
    capsys: pytest.CaptureFixture[str], run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "export"
    with atomic_folder(out) as staging:  # the first export, holding the folder
        (staging / "report.json").write_text("{}")
        code, err = export(capsys, run, out)
        assert code == 1 and "one export at a time" in err and "process " in err
    assert json.loads((out / "report.json").read_text()) == {}  # the first one's files, not a mix
    assert export(capsys, run, out)[0] == 0  # free once the first ended
    assert json.loads((out / "report.json").read_text())["verification"]["passed"]


def test_a_swap_cut_short_brings_the_previous_output_back(tmp_path: Path) -> None:
    out = tmp_path / "export"
    with atomic_folder(out) as staging:
        (staging / "report.json").write_text('"first"')
    out.rename(tmp_path / ".export.old")  # as a kill between the two renames leaves it
    with pytest.raises(RuntimeError), atomic_folder(out):
        raise RuntimeError("failed")
    assert (out / "report.json").read_text() == '"first"'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_training_state_is_kept_for_the_retry_and_dropped_on_success(tmp_path: Path) -> None:
    out = tmp_path / "export"
    with pytest.raises(KeyboardInterrupt), atomic_folder(out, keep_on_retry=("finetune",)) as staging:
        (staging / "finetune").mkdir()
        (staging / "finetune" / "finetune.pt").write_text("epoch 1")
        (staging / "model.onnx").write_text("half")
        raise KeyboardInterrupt
    assert not out.exists() and sorted(p.name for p in (tmp_path / ".export.partial").iterdir()) == ["finetune"]
    with atomic_folder(out, keep_on_retry=("finetune",)) as staging:
        assert (staging / "finetune" / "finetune.pt").read_text() == "epoch 1"  # resumed from here
        (staging / "report.json").write_text("{}")
    assert sorted(p.name for p in out.iterdir()) == ["report.json"]


def test_the_lock_names_its_holder(tmp_path: Path) -> None:
    first = FolderLock(tmp_path / ".x.lock", "export", "the folder 'x'", "wait.")
    with pytest.raises(AutoCompressError, match=r"the folder 'x' is in use by process \d+ on .*\(export since"):
        FolderLock(tmp_path / ".x.lock", "export", "the folder 'x'", "wait.")
    first.release()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_kill_9_during_a_re_export_leaves_one_whole_export(run: Path, tmp_path: Path) -> None:
    """A real ``kill -9`` of ``autocompress export`` at several moments of a re-export over an earlier one: the
    folder holds the earlier export byte for byte, or the new one whole (every file its report lists, its model.pt
    of the same policy as its policy.json), never a mix; the retry then succeeds."""
    import subprocess
    import sys
    import time

    import torch

    out = tmp_path / "export"
    command = [sys.executable, "-m", "autocompress", "-q", "export", str(run), "--out", str(out)]
    assert subprocess.run([*command, "--test-images", "50"], capture_output=True).returncode == 0
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    again = [*command, "--test-images", "60"]
    for delay in (0.5, 1.5, 2.5, 3.5, 5.0):
        process = subprocess.Popen(again, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        process.kill()
        process.wait()
        now = {p.name: p.read_bytes() for p in out.iterdir()}
        if now == first:
            continue
        report = json.loads(now["report.json"])
        saved = torch.load(out / "model.pt", weights_only=True)
        assert report["test_images"] == 60 and sorted(report["files"]) == sorted(now), f"mixed after {delay} s"
        assert json.loads(saved["policy"]) == json.loads(now["policy.json"]), f"mixed after {delay} s"
    assert subprocess.run(again, capture_output=True).returncode == 0  # the retry goes through
    assert json.loads((out / "report.json").read_text())["verification"]["passed"]
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name != "export")
    assert leftovers == [], leftovers


def test_a_given_policy_naming_a_layer_the_model_lacks_is_refused(run: Path, tmp_path: Path) -> None:
    # It used to export with that layer ignored and every real layer at its default: a silent wrong result.
    from autocompress.compress.policy import LayerSetting, Policy
    from autocompress.deploy.export import ExportOptions, export_run
    from autocompress.errors import PolicyError

    policy = Policy("digits-cnn", layers={"conv_9": LayerSetting(keep=0.5)})
    with pytest.raises(PolicyError, match="'conv_9' is not one"):
        export_run(run, tmp_path / "out", ExportOptions(test_images=50), policy=policy)
    assert not (tmp_path / "out").exists()
