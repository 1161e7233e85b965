import json
import subprocess
import sys
from pathlib import Path

import pytest

from autocompress import __version__
from autocompress.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, pattern: str) -> None:
    assert code == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert pattern in lines[0], lines[0]


def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and __version__ in capsys.readouterr().out


def test_console_script_module_entry_point() -> None:
    done = subprocess.run([sys.executable, "-m", "autocompress", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == f"autocompress {__version__}"


def test_list_models_shows_macs_and_pretrained(capsys) -> None:
    code, out, _ = run_cli(capsys, "list", "models")
    assert code == 0
    row = next(line for line in out.splitlines() if "resnet20" in line)
    assert "272 k" in row and "40.8 M" in row and "yes" in row


def test_list_datasets(capsys) -> None:
    code, out, _ = run_cli(capsys, "list", "datasets")
    assert code == 0 and "digits" in out and "cifar10" in out


@pytest.mark.parametrize(
    ("what", "expected"),
    [
        ("envs", ["raspberry-pi-4-wifi", "phone-lte", "mcu"]),
        ("agents", ["ddpg", "nsga2", "uniform"]),
        ("spaces", ["prune-quant", "full"]),
        ("algorithms", ["td3", "tpe", "random"]),
    ],
)
def test_list_presets(capsys, what: str, expected: list[str]) -> None:
    code, out, _ = run_cli(capsys, "list", what)
    assert code == 0 and all(name in out for name in expected), out


def test_doctor_json_reports_versions(capsys) -> None:
    code, out, _ = run_cli(capsys, "doctor", "--json")
    report = json.loads(out)
    assert code == 0 and report["cpu_count"] >= 1 and report["torch"] != "not installed"


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["list", "modles"], "Did you mean 'models'"),
        (["evaluate", "--model", "resnet-20", "--dataset", "digits"], "Did you mean 'resnet20'"),
        (["evaluate", "--model", "digits-cnn", "--dataset", "digitz"], "Did you mean 'digits'"),
        (["train", "--model", "digits-cnn", "--dataset", "digits", "--epochs", "x"], "invalid int value"),
        (["train", "--bogus"], "unrecognized arguments: --bogus"),
        (["train"], "train needs --model and --dataset"),
        (
            ["evaluate", "--pretrained", "--model", "resnet20", "--dataset", "cifar10", "--data-dir", "/nonexistent"],
            "is not a directory; check --data-dir",
        ),
        (
            ["evaluate", "--model", "resnet20", "--pretrained", "--weights", "w.pt", "--dataset", "cifar10"],
            "pass either --pretrained or --weights, not both",
        ),
        (["evaluate", "--model", "digits-cnn", "--dataset", "digits", "--limit", "0"], "--limit >= 1"),
        (
            ["evaluate", "--pretrained", "--model", "digits-cnn", "--dataset", "digits", "--compute-device", "tpu"],
            "--compute-device must be auto, cpu or cuda",
        ),
        (
            ["evaluate", "--pretrained", "--model", "digits-cnn", "--dataset", "digits", "--reconstruct", "x"],
            "--reconstruct must be one of fast, sequential, none",
        ),
        (["evaluate", "--model", "digits-cnn", "--dataset", "digits", "--weights", "missing.pt"], "must exist"),
        (["train", "--resume", "nowhere"], "--resume needs a run folder"),
        (["train", "--model", "digits-cnn", "--dataset", "digits", "--threads", "0"], "--threads >= 1"),
    ],
)
def test_bad_input_gives_one_line_and_exit_1(capsys, args: list[str], pattern: str) -> None:
    code, _, err = run_cli(capsys, *args)
    assert_one_line_error(code, err, pattern)


def test_evaluate_json_prints_only_json(capsys) -> None:
    code, out, _ = run_cli(
        capsys, "evaluate", "--model", "digits-cnn", "--pretrained", "--dataset", "digits", "--json", "--repeats", "3"
    )
    result = json.loads(out)
    assert code == 0 and result["accuracy"] >= 0.95 and result["macs"] == 1_493_632
    assert result["params"] == 65_834 and result["host_latency_ms"] > 0


def test_train_then_resume_from_cli(capsys, tmp_path: Path) -> None:
    run = tmp_path / "run"
    code, out, _ = run_cli(
        capsys, "train", "--model", "digits-cnn", "--dataset", "digits", "--epochs", "2", "--run-dir", str(run)
    )
    assert code == 0 and json.loads(out)["epochs"] == 2
    code, out, _ = run_cli(capsys, "train", "--resume", str(run))
    assert code == 0 and json.loads(out)["epochs"] == 2
    code, _, err = run_cli(capsys, "train", "--model", "digits-cnn", "--dataset", "digits", "--run-dir", str(run))
    assert_one_line_error(code, err, "--run-dir must be a new or empty folder")


@pytest.mark.slow
def test_evaluate_pretrained_resnet20_on_real_cifar(capsys, cifar_dir: Path) -> None:
    code, out, _ = run_cli(
        capsys,
        "evaluate",
        "--model",
        "resnet20",
        "--pretrained",
        "--dataset",
        "cifar10",
        "--data-dir",
        str(cifar_dir),
        "--limit",
        "500",
        "--json",
        "--repeats",
        "3",
    )
    result = json.loads(out)
    assert code == 0 and result["images"] == 500 and result["accuracy"] > 0.8 and result["macs"] == 40_813_184


def test_evaluate_with_policy_and_shift_reports_compression(capsys, tmp_path: Path) -> None:
    policy = tmp_path / "p.json"
    policy.write_text(
        json.dumps(
            {
                "version": 1,
                "model": "digits-cnn",
                "default": {"keep": 0.5, "wbits": 8, "abits": 8},
                "split": "relu_1",
                "adapt": "adabn",
            }
        )
    )
    code, out, _ = run_cli(
        capsys,
        "evaluate",
        "--model",
        "digits-cnn",
        "--pretrained",
        "--dataset",
        "digits",
        "--policy",
        str(policy),
        "--shift",
        "contrast:3",
        "--json",
        "--repeats",
        "3",
    )
    result = json.loads(out)
    assert code == 0 and result["macs"] < 1_493_632 / 2 and result["split_bytes"] == 1024
    assert result["storage_bytes"] < 65_834 and result["drift_score"] > 0 and result["host_throughput_ips"] > 0
    assert result["adapt_forward_images"] > 0 and result["shift"] == "contrast:3"


@pytest.mark.parametrize(
    ("policy", "pattern"),
    [
        ({"model": "digits-cnn", "default": {"keep": 2}}, "0 < keep <= 1 must hold"),
        ({"model": "digits-cnn", "layers": {"conv_1": {"keep": 0.5}}}, "Did you mean 'conv1'"),
        ({"model": "digits-cnn", "split": "nowhere"}, "valid cut point"),
    ],
)
def test_bad_policy_gives_one_line(capsys, tmp_path: Path, policy: dict, pattern: str) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(policy))
    code, _, err = run_cli(
        capsys, "evaluate", "--pretrained", "--model", "digits-cnn", "--dataset", "digits", "--policy", str(path)
    )
    assert_one_line_error(code, err, pattern)


def test_bad_shift_gives_one_line(capsys) -> None:
    code, _, err = run_cli(capsys, "evaluate", "--model", "digits-cnn", "--dataset", "digits", "--shift", "noise:9")
    assert_one_line_error(code, err, "1 <= severity <= 5")


def test_list_splits(capsys) -> None:
    code, out, _ = run_cli(capsys, "evaluate", "--model", "resnet20", "--dataset", "cifar10", "--list-splits")
    assert code == 0 and "layer2_0_relu_1" in out
