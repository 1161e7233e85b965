"""``autocompress export`` and ``compare``: the exported files run in onnxruntime and give the reported figures."""

from __future__ import annotations

import json
from pathlib import Path

import onnxruntime
import pytest
import torch

from autocompress.cli import main
from autocompress.data import Normalizer, load_dataset
from autocompress.deploy.export import load_exported

QUICK = ["--model", "digits-cnn", "--dataset", "digits", "--threads", "1"]


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["-q", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def pq_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short DDPG search over pruning and bits on the host preset."""
    run = tmp_path_factory.mktemp("runs") / "pq"
    assert (
        main(
            [
                "-q",
                "search",
                *QUICK,
                "--agent",
                "ddpg",
                "--episodes",
                "8",
                "--space",
                "prune-quant",
                "--run-dir",
                str(run),
            ]
        )
        == 0
    )
    return run


def test_export_verifies_and_reports_what_the_files_give(capsys, pq_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    code, stdout, err = cli(capsys, "export", str(pq_run), "--out", str(out), "--json", "--threads", "1")
    assert code == 0, err
    report = json.loads(stdout)
    assert {"policy.json", "model.pt", "model.onnx", "report.json", "report.md"} <= {p.name for p in out.iterdir()}
    assert report["verification"]["passed"] and report["verification"]["top1_agreement"] == 1.0
    # the reported accuracy is what model.onnx gives on the raw (uint8) test split, fed by plain onnxruntime
    digits = load_dataset("digits")
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert report["input"] == {
        "dtype": "uint8",
        "shape": [1, 8, 8],
        "layout": "NCHW",
        "scale": 1 / 255,
        "mean": [0.3052],
        "std": [0.3757],
        "note": report["input"]["note"],
    }
    logits = session.run(None, {"input": digits.test_x.numpy()})[0]
    assert report["test_accuracy"] == pytest.approx(float((logits.argmax(1) == digits.test_y.numpy()).mean()))
    assert report["test_accuracy"] > 0.5 and report["test_images"] == len(digits.test_y)
    # model.pt rebuilds the compressed module, activation quantization included
    model = load_exported(out / "model.pt")
    with torch.inference_mode():
        simulated = model(Normalizer(digits.info)(digits.test_x)).argmax(1)
    assert float((simulated == digits.test_y).float().mean()) == pytest.approx(report["test_accuracy_simulated"])
    best = json.loads((pq_run / "best_policy.json").read_text())
    assert json.loads((out / "policy.json").read_text()) == best["policy"]
    assert report["device"]["storage_bytes"] == best["storage_bytes"]
    assert report["macs_ratio"] == pytest.approx(best["macs_ratio"])
    assert report["host_latency_ms"]["onnx_fp32"] > 0 and "passed" in (out / "report.md").read_text()


def test_int8_file_where_the_policy_is_int8(capsys, pq_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "int8run"
    run.mkdir()
    for name in ("config.json", "pareto.json"):
        (run / name).write_text((pq_run / name).read_text())
    best = json.loads((pq_run / "best_policy.json").read_text())
    best["policy"]["default"] |= {"wbits": 8, "abits": 8}
    for setting in best["policy"]["layers"].values():
        setting |= {"wbits": 8, "abits": 8}
    (run / "best_policy.json").write_text(json.dumps(best))
    code, stdout, err = cli(capsys, "export", str(run), "--out", str(tmp_path / "e"), "--json", "--test-images", "200")
    assert code == 0, err
    report = json.loads(stdout)
    assert "model.int8.onnx" in report["files"] and report["test_images"] == 200
    assert abs(report["test_accuracy_int8"] - report["test_accuracy"]) < 0.05
    assert report["host_latency_ms"]["onnx_int8"] > 0


def test_split_policy_exports_head_and_tail(capsys, tmp_path: Path) -> None:
    run = tmp_path / "full"
    assert (
        main(
            [
                "-q",
                "search",
                *QUICK,
                "--agent",
                "random",
                "--episodes",
                "12",
                "--space",
                "full",
                "--env",
                "raspberry-pi-4-wifi",
                "--run-dir",
                str(run),
            ]
        )
        == 0
    )
    capsys.readouterr()
    front = json.loads((run / "pareto.json").read_text())
    index = next((i for i, e in enumerate(front) if e["policy"]["split"] not in (None, "input")), None)
    if index is None:
        pytest.fail(f"no split policy on the front of 12 random episodes: {[e['policy']['split'] for e in front]}")
    code, stdout, err = cli(
        capsys,
        "export",
        str(run),
        "--policy",
        f"pareto:{index}",
        "--out",
        str(tmp_path / "e"),
        "--json",
        "--test-images",
        "100",
    )
    assert code == 0, err
    report = json.loads(stdout)
    assert {"head.onnx", "tail.onnx"} <= set(report["files"]) and report["verification"]["split"]["passed"]
    assert report["device"]["link"] == "wifi" and report["device"]["sent_bytes"] > 0


def test_finetune_runs_and_is_reported(capsys, pq_run: Path, tmp_path: Path) -> None:
    code, stdout, err = cli(
        capsys,
        "export",
        str(pq_run),
        "--out",
        str(tmp_path / "ft"),
        "--finetune-epochs",
        "2",
        "--json",
        "--threads",
        "1",
    )
    assert code == 0, err
    report = json.loads(stdout)
    assert report["finetune_epochs"] == 2 and len(report["finetune_losses"]) == 2
    assert report["verification"]["passed"] and report["reconstruct"] == "sequential"
    assert report["finetune"]["distilled"] and len(report["finetune"]["val_accuracy"]) == 2
    assert not (tmp_path / "ft" / "finetune").exists()  # training state: kept only while the export is unfinished
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ft"]  # swapped in whole: no staging left beside it


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["--policy", "worst"], "--policy must be 'best' or 'pareto:K'"),
        (["--policy", "pareto:999"], "--policy pareto:K needs 0 <= K <"),
        (["--finetune-epochs", "-1"], "--finetune-epochs >= 0 must hold"),
        (["--finetune-schedule", "linear"], "--finetune-schedule must be cosine, step or constant"),
        (["--reconstruct", "slow"], "--reconstruct must be one of fast, sequential, none"),
        (["--device", "tpu"], "--device must be auto, cpu or cuda"),
    ],
)
def test_export_bad_arguments_give_one_line(capsys, pq_run: Path, tmp_path: Path, args: list[str], pattern: str):
    code, _, err = cli(capsys, "export", str(pq_run), "--out", str(tmp_path / "x"), *args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and pattern in lines[0], err


def test_export_of_a_folder_that_is_not_a_run(capsys, tmp_path: Path) -> None:
    code, _, err = cli(capsys, "export", str(tmp_path), "--out", str(tmp_path / "x"))
    assert code == 1 and "--resume needs" not in err and "config.json" in err


def test_compare_prints_each_run(capsys, pq_run: Path, tmp_path: Path) -> None:
    other = tmp_path / "uniform"
    assert main(["-q", "search", *QUICK, "--agent", "uniform", "--space", "prune", "--run-dir", str(other)]) == 0
    capsys.readouterr()
    code, out, _ = cli(capsys, "compare", str(pq_run), str(other), "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["agent"] for r in rows] == ["ddpg", "uniform"]
    assert rows[0]["episodes"] == "8/8" and rows[1]["best_accuracy"] > 0
    code, out, _ = cli(capsys, "compare", str(pq_run), str(other))
    assert code == 0 and "ddpg" in out and "uniform" in out
    assert cli(capsys, "compare", str(tmp_path / "missing"))[0] == 1


def test_export_fails_loudly_when_onnx_disagrees(capsys, pq_run: Path, tmp_path: Path, monkeypatch) -> None:
    """A broken ONNX file (simulated: its logits shuffled) fails the export with one line; the files stay."""
    import autocompress.deploy.export as export_module

    real = export_module.ort_predict
    monkeypatch.setattr(export_module, "ort_predict", lambda session, x: real(session, x).roll(1, dims=1))
    out = tmp_path / "broken"
    code, _, err = cli(capsys, "export", str(pq_run), "--out", str(out), "--test-images", "100")
    assert code == 1 and "the exported ONNX model must match PyTorch" in err and len(err.strip().splitlines()) == 1
    kept = tmp_path / ".broken.partial"  # kept beside --out for inspection; --out itself is not made from it
    assert f"files kept in '{kept}'" in err and not out.exists()
    assert (kept / "model.onnx").exists() and "FAILED" in (kept / "report.md").read_text()
