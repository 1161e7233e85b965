"""Your own data and 1-D sensor models from the CLI alone: train → evaluate → search → export → verified ONNX."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autocompress.data import DatasetSplits
from tests.cli.test_cli_basics import assert_one_line_error, run_cli
from tests.data.test_sources import digits_folder, digits_npz, write_plugin


def train_search_export(capsys: pytest.CaptureFixture[str], tmp: Path, model: str, dataset: str, agent: str) -> dict:
    code, out, err = run_cli(
        capsys,
        "train",
        "--model",
        model,
        "--dataset",
        dataset,
        "--epochs",
        "4",
        "--batch-size",
        "16",
        "--run-dir",
        str(tmp / "train"),
    )
    assert code == 0, err
    weights = json.loads(out[out.index("{") :])["weights"]
    code, out, err = run_cli(
        capsys, "evaluate", "--model", model, "--dataset", dataset, "--weights", weights, "--json", "--repeats", "3"
    )
    assert code == 0, err
    assert 0.0 <= json.loads(out)["accuracy"] <= 1.0
    search = [
        "search",
        "--model",
        model,
        "--dataset",
        dataset,
        "--weights",
        weights,
        "--agent",
        agent,
        "--episodes",
        "4",
        "--run-dir",
        str(tmp / "search"),
    ]
    code, _, err = run_cli(capsys, *search)
    assert code == 0, err
    export = ["export", str(tmp / "search"), "--out", str(tmp / "export")]
    if ".py:" in dataset:  # the run names code: exported only when the user says so
        code, _, err = run_cli(capsys, *export)
        assert code == 1 and "names code to import" in err and "--trust-code" in err
        export.append("--trust-code")
    code, _, err = run_cli(capsys, *export)
    assert code == 0, err
    report = json.loads((tmp / "export" / "report.json").read_text())
    assert report["verification"]["passed"] and (tmp / "export" / "model.onnx").is_file()
    return report


@pytest.mark.slow
@pytest.mark.parametrize("agent", ["ddpg", "tpe"])
def test_sensor_model_on_a_real_time_series_from_the_cli(capsys, tmp_path: Path, agent: str) -> None:
    report = train_search_export(capsys, tmp_path, "sensor-cnn", "basic-motions", agent)
    assert report["dataset"] == "basic-motions" and report["test_accuracy"] >= 0.5


@pytest.mark.slow
@pytest.mark.parametrize("source", ["npz", "folder", "plugin"])
def test_your_own_dataset_through_every_verb(capsys, tmp_path: Path, digits: DatasetSplits, source: str) -> None:
    if source == "npz":
        model, dataset = "digits-cnn", str(digits_npz(tmp_path / "mine.npz", digits))
    elif source == "folder":
        model, dataset = "digits-cnn", str(digits_folder(tmp_path / "imgs", digits, per_class=30))
    else:
        model, dataset = "sensor-cnn", write_plugin(tmp_path)
    report = train_search_export(capsys, tmp_path, model, dataset, "random")
    chance = 0.1 if source == "npz" else 1 / 3  # four epochs: well above chance, far from converged
    assert report["test_accuracy"] > 1.5 * chance


def test_a_model_of_the_wrong_rank_gets_one_line(capsys) -> None:
    code, _, err = run_cli(capsys, "evaluate", "--model", "resnet20", "--dataset", "basic-motions", "--pretrained")
    assert_one_line_error(code, err, "takes images (C×H×W), but the dataset holds sequences (C×L)")


def test_image_shifts_on_sensor_data_are_refused_before_a_search_starts(capsys, tmp_path: Path) -> None:
    import torch

    from autocompress.models import build_model

    torch.save(build_model("sensor-cnn", 4, (6, 100)).state_dict(), tmp_path / "none.pt")
    run = tmp_path / "run"
    code, _, err = run_cli(
        capsys,
        "search",
        "--model",
        "sensor-cnn",
        "--dataset",
        "basic-motions",
        "--env",
        "smartwatch-ble",
        "--weights",
        str(tmp_path / "none.pt"),
        "--run-dir",
        str(run),
        "--episodes",
        "2",
    )
    assert_one_line_error(code, err, "the shift 'brightness:3' works on uint8 images only")
    assert not run.exists() or not any(run.iterdir())  # refused before the run folder fills


def test_unknown_dataset_gets_one_line_with_the_ways_to_give_one(capsys) -> None:
    code, _, err = run_cli(capsys, "train", "--model", "digits-cnn", "--dataset", "digitz")
    assert_one_line_error(code, err, "a .npz file, an image folder or package.module:factory")
    assert "Did you mean 'digits'" in err


@pytest.mark.slow
def test_a_search_under_the_users_own_drift_data(capsys, tmp_path: Path, digits: DatasetSplits) -> None:
    import numpy as np

    from tests.data.test_sources import fog

    presets = tmp_path / "presets"
    presets.mkdir()
    np.savez(
        presets / "fog.npz",
        x=fog(digits.val_x, 3).numpy(),
        y=digits.val_y.numpy(),
        x_target=fog(digits.train_x[-300:], 3).numpy(),
    )
    (presets / "foggy.yaml").write_text(
        "name: foggy\ndescription: host under a fog the user recorded\ndevice: host\nlink: wifi\n"
        "budgets:\n  macs_ratio: {value: 0.7, hard: true}\nreward: {mode: acc}\n"
        "context:\n  shifts: ['data:fog.npz']\n"  # read beside the preset
    )
    run = tmp_path / "run"
    code, _, err = run_cli(
        capsys,
        "search",
        "--model",
        "digits-cnn",
        "--dataset",
        "digits",
        "--pretrained",
        "--env",
        str(presets / "foggy.yaml"),
        "--space",
        "full",
        "--agent",
        "random",
        "--episodes",
        "6",
        "--run-dir",
        str(run),
    )
    assert code == 0, err
    rows = (run / "progress.csv").read_text().splitlines()
    assert len(rows) == 7 and all(f"data:{presets / 'fog.npz'}" in row for row in rows[1:])
