"""What ships to a device: raw-input ONNX files, a package that names nothing outside itself (typed manifest,
confined paths), code imported only on the caller's say-so, one set of context rules, and a runtime that runs on
numpy and onnxruntime alone — AdaBN included."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from autocompress import context_rules
from autocompress.cli import main
from autocompress.data import DatasetSplits
from autocompress.deploy import onnx_wire
from autocompress.deploy.adaptive import AdaptiveOptions, export_adaptive
from autocompress.deploy.export import ExportOptions, export_run, load_exported
from autocompress.deploy.manifest import MANIFEST_FILE, ManifestError
from autocompress.deploy.runtime import AdaptiveModel
from autocompress.deploy.simulate import simulate
from autocompress.env.context import Context
from autocompress.errors import AutoCompressError
from autocompress.hardware.graph import analyse
from autocompress.search.job import SearchJob
from autocompress.search.record import SearchConfig
from tests.data.test_sources import fog

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A run on the phone preset (a link, a drawn latency budget) and its package, moved away from where it was
    made (the run folder deleted)."""
    root = tmp_path_factory.mktemp("device")
    config = SearchConfig(
        model="digits-cnn", dataset="digits", env="raspberry-pi-4-wifi", space="full", agent="tpe", episodes=12, seed=3
    )
    SearchJob.create(config, root / "run").run()
    export_adaptive(root / "run", root / "built", AdaptiveOptions(configs=3, test_images=200))
    moved = root / "elsewhere" / "pkg"
    shutil.copytree(root / "built", moved)
    shutil.rmtree(root / "built")
    return root / "run", moved


def _accuracy(logits: np.ndarray, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels.numpy()).mean())


def test_a_moved_package_runs_without_its_run_folder(
    made: tuple[Path, Path], digits: DatasetSplits, tmp_path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    run, package = made
    hidden = run.with_name("hidden")
    run.rename(hidden)
    monkeypatch.chdir(tmp_path)  # another working directory
    try:
        manifest = json.loads((package / MANIFEST_FILE).read_text())
        assert "run" not in manifest
        for path in package.rglob("*"):  # no file of the package names the run folder
            if path.suffix in (".json", ".md"):
                assert str(run) not in path.read_text(), path
        model = AdaptiveModel.load(package)
        # plain onnxruntime on a configuration's file and on raw test data gives the accuracy the package states
        for entry in manifest["configs"]:
            session = onnxruntime.InferenceSession(str(package / entry["path"]), providers=["CPUExecutionProvider"])
            logits = session.run(None, {"input": digits.test_x[:200].numpy()})[0]
            assert _accuracy(logits, digits.test_y[:200]) == pytest.approx(entry["test_accuracy"], abs=1e-6)
            assert np.array_equal(logits, model.run(entry["id"], digits.test_x[:200].numpy()))
        result = simulate(package, "commute", images_per_step=32)
        assert result["totals"]["uncompressed"]["mean_accuracy"] > 0.5
    finally:
        hidden.rename(run)


def test_inputs_of_the_wrong_kind_are_refused_in_one_line(made: tuple[Path, Path], digits: DatasetSplits) -> None:
    from sklearn.datasets import load_digits

    model = AdaptiveModel.load(made[1], adapt=False)
    with pytest.raises(AutoCompressError, match=r"uint8 pixels 0..255.*float64 \(range 0..16\).*255/16"):
        model.predict(load_digits().images[:4, None])
    with pytest.raises(AutoCompressError, match="must be a batch N×1×8×8"):
        model.predict(np.zeros((4, 8, 8, 1), np.uint8))
    assert model.predict(digits.test_x[0].numpy()).shape == (1, 10)  # one example without its batch axis


def test_manifest_is_strict_and_its_paths_stay_inside(made: tuple[Path, Path], tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    shutil.copytree(made[1], package)
    good = json.loads((package / MANIFEST_FILE).read_text())

    def refused(change, match: str) -> None:  # type: ignore[no-untyped-def]
        data = json.loads(json.dumps(good))
        change(data)
        (package / MANIFEST_FILE).write_text(json.dumps(data))
        with pytest.raises(ManifestError, match=match) as info:
            AdaptiveModel.load(package)
        assert "\n" not in str(info.value)

    refused(lambda d: d.update(version=99), "of version 3, but is")
    refused(lambda d: d["monitor"]["class_std"][0].pop(), "classes × .* features")
    refused(lambda d: d.pop("monitor"), "must have the field 'monitor'")
    refused(lambda d: d["monitor"].update(window="32"), r"manifest.monitor.window must be int")
    refused(lambda d: d.update(extra=1), "but also 'extra'")
    refused(lambda d: d["configs"][0].update(path="../../etc/passwd"), "inside the package")
    refused(lambda d: d["configs"][0].update(path="/etc/passwd"), "inside the package")
    outside = tmp_path / "outside.onnx"
    shutil.copy(package / good["configs"][0]["path"], outside)
    (package / "configs" / "link.onnx").symlink_to(outside)
    refused(lambda d: d["configs"][0].update(path="configs/link.onnx"), "leads out of it through a symlink")
    (package / MANIFEST_FILE).unlink()
    (package / "controller.json").write_text("{}")
    with pytest.raises(ManifestError, match="controller.json, the format of round 2"):
        AdaptiveModel.load(package)


def test_raw_inputs_for_a_users_float_series_and_a_split_head(tmp_path: Path) -> None:
    """A user's npz of raw float series (offset and scale far from 0/1): model.onnx takes them as they are and gives
    the report's accuracy; a split policy's head takes raw inputs too."""
    rng = np.random.default_rng(0)
    n, length = 300, 32
    labels = rng.integers(0, 3, n)
    t = np.linspace(0, 1, length)
    series = np.stack([np.sin(2 * np.pi * (k + 1) * t) for k in labels])[:, None] * 40 + 900
    series = (series + rng.normal(0, 4, series.shape)).astype(np.float32)
    data = tmp_path / "sensors.npz"
    np.savez(data, x_train=series[:220], y_train=labels[:220], x_test=series[220:], y_test=labels[220:])
    assert (
        main(
            [
                "-q",
                "train",
                "--model",
                "sensor-cnn",
                "--dataset",
                str(data),
                "--epochs",
                "6",
                "--batch-size",
                "16",
                "--run-dir",
                str(tmp_path / "train"),
            ]
        )
        == 0
    )
    weights = next((tmp_path / "train").glob("*.pt"))
    preset = ROOT / "envs" / "smartwatch-ble.yaml"
    env = tmp_path / "watch.yaml"  # the watch preset with drifts a series can have
    env.write_text(preset.read_text().replace("brightness:3", "gain:3").replace("smartwatch-ble", "watch-series"))
    assert (
        main(
            [
                "-q",
                "search",
                "--model",
                "sensor-cnn",
                "--dataset",
                str(data),
                "--weights",
                str(weights),
                "--env",
                str(env),
                "--space",
                "full",
                "--agent",
                "random",
                "--episodes",
                "10",
                "--run-dir",
                str(tmp_path / "run"),
            ]
        )
        == 0
    )
    report = export_run(tmp_path / "run", tmp_path / "out", ExportOptions())
    assert report["input"]["dtype"] == "float32" and report["input"]["layout"] == "NCL"
    session = onnxruntime.InferenceSession(str(tmp_path / "out" / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": series[220:]})[0]
    assert _accuracy(logits, torch.from_numpy(labels[220:])) == pytest.approx(report["test_accuracy"])
    assert report["test_accuracy"] > 0.6
    front = json.loads((tmp_path / "run" / "pareto.json").read_text())
    split = next((i for i, e in enumerate(front) if (e.get("policy") or {}).get("split")), None)
    if split is not None:
        export_run(tmp_path / "run", tmp_path / "split", ExportOptions(policy=f"pareto:{split}"))
        head = onnxruntime.InferenceSession(str(tmp_path / "split" / "head.onnx"), providers=["CPUExecutionProvider"])
        tail = onnxruntime.InferenceSession(str(tmp_path / "split" / "tail.onnx"), providers=["CPUExecutionProvider"])
        crossing = head.run(None, {"input": series[220:]})[0]
        whole = json.loads((tmp_path / "split" / "report.json").read_text())
        got = _accuracy(tail.run(None, {"input": crossing})[0], torch.from_numpy(labels[220:]))
        assert got == pytest.approx(whole["test_accuracy"], abs=1 / 80)


PLUGIN = """
import sys
from autocompress.models import load_model
RAN = sys.modules.setdefault("ran_marker", type(sys)("ran_marker"))
RAN.count = getattr(RAN, "count", 0) + 1
def build(num_classes):
    return load_model("digits-cnn", num_classes, (1, 8, 8), "digits")
"""


def test_code_named_in_a_file_is_imported_only_when_trusted(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "mynet.py").write_text(PLUGIN)
    spec = f"{tmp_path / 'mynet.py'}:build"
    config = SearchConfig(model=spec, dataset="digits", agent="random", episodes=3, seed=0, pretrained=False)
    SearchJob.create(config, tmp_path / "run").run()
    with pytest.raises(AutoCompressError, match=r"names code to import \('.*mynet.py:build'\).*trust_code"):
        export_run(tmp_path / "run", tmp_path / "out", ExportOptions())
    with pytest.raises(AutoCompressError, match="names code to import"):
        SearchJob.resume(tmp_path / "run")
    with pytest.raises(AutoCompressError, match="names code to import"):
        export_adaptive(tmp_path / "run", tmp_path / "pkg", AdaptiveOptions())
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert "allow it with --trust-code" in err and "\n" not in err
    report = export_run(tmp_path / "run", tmp_path / "out", ExportOptions(trust_code=True))
    assert report["verification"]["passed"]
    with pytest.raises(AutoCompressError, match="names code to import"):
        load_exported(tmp_path / "out" / "model.pt")
    assert load_exported(tmp_path / "out" / "model.pt", trust_code=True) is not None
    assert main(["-q", "search", "--resume", str(tmp_path / "run"), "--trust-code"]) == 0


def test_a_run_folder_refuses_a_symlink_out(tmp_path: Path) -> None:
    config = SearchConfig(model="digits-cnn", dataset="digits", agent="random", episodes=2, seed=0)
    SearchJob.create(config, tmp_path / "run").run()
    progress = tmp_path / "run" / "progress.csv"
    victim = tmp_path / "victim.csv"
    victim.write_text(progress.read_text())
    progress.unlink()
    progress.symlink_to(victim)
    with pytest.raises(AutoCompressError, match="is a symlink to"):
        SearchJob.resume(tmp_path / "run")


def test_env_and_runtime_give_the_same_feasible_set_on_a_grid(made: tuple[Path, Path]) -> None:
    """For every configuration and a grid of contexts (at the grid's bandwidths), the env's deployment (its cost
    model and limits) and the runtime's manifest agree on which hard limits break."""
    from autocompress.compress.policy import Policy
    from autocompress.env import build_workload
    from autocompress.search.record import RunRecord

    run, package = made
    record = RunRecord.open(run, "export")
    deployment = record.resolved.deployment
    workload = build_workload("digits-cnn", "digits", True, None, None, None)
    graph = analyse(workload.model, workload.table)
    model = AdaptiveModel.load(package, adapt=False)
    checked = 0
    for config in model.configs.values():
        # the policy the configuration ships (bits lifted, a ladder rung): not always its front entry's
        shipped = json.loads((package / config.path).with_name("policy.json").read_text())
        policy = Policy.from_dict(shipped, "shipped")
        for battery in (1.0, 0.4, 0.05):
            for free in (1.0, 0.02, 1e-4):
                for bandwidth in model.manifest.bandwidth_grid[1:]:
                    for budget in (None, 50.0, 0.05):
                        context = Context(battery, free, bandwidth, budget, None)
                        report = deployment.cost_model(workload.table, graph, context).predict_policy(policy)
                        limits = deployment.limits(context)
                        values = report.to_dict()
                        env_broken = context_rules.violations(
                            values, limits.hard, limits.ram_bytes / free, limits.flash_bytes, free
                        )
                        fields = {
                            "battery": battery,
                            "free_memory": free,
                            "bandwidth_scale": bandwidth,
                            "latency_budget_ms": budget,
                        }
                        assert sorted(model.check(config.id, fields)) == sorted(env_broken), (config.id, fields)
                        checked += 1
    assert checked >= 100


def test_adabn_in_onnxruntime_matches_pytorch_train_mode(made: tuple[Path, Path], digits: DatasetSplits) -> None:
    """The statistics graph gives what PyTorch's BatchNorm gives in train mode on the same batch."""
    from autocompress.compress.adaptation import BN_TYPES, recalibrate_batchnorm
    from autocompress.data import Normalizer

    package = made[1]
    path = (package / json.loads((package / MANIFEST_FILE).read_text())["configs"][0]["path"]).parent
    model_bytes = (path / "model.onnx").read_bytes()
    stats_model, outputs = onnx_wire.statistics_model(model_bytes)
    session = onnxruntime.InferenceSession(stats_model, providers=["CPUExecutionProvider"])
    raw = fog(digits.test_x[:128], 3)
    got = session.run(outputs, {"input": raw.numpy()})
    torch_model = load_exported(path / "model.pt")
    for module in torch_model.modules():
        module._forward_pre_hooks.clear()  # the ONNX file computes in float
    recalibrate_batchnorm(torch_model, [Normalizer(digits.info)(raw)])
    norms = [m for m in torch_model.modules() if isinstance(m, BN_TYPES)]
    assert len(norms) == len(outputs) // 2 >= 2
    for k, norm in enumerate(norms):
        assert np.allclose(got[2 * k], norm.running_mean.numpy(), atol=1e-4)
        assert np.allclose(got[2 * k + 1], norm.running_var.numpy(), rtol=2e-2, atol=1e-4)  # biased vs unbiased


RUNTIME_SCRIPT = """
import sys, numpy as np
blocked = {"torch", "gymnasium", "onnx", "yaml", "optuna", "stable_baselines3", "sklearn", "scipy", "torchvision"}
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}")  # what an absent package raises
if BLOCK:
    sys.meta_path.insert(0, Block())
from autocompress.deploy.runtime import AdaptiveModel
data = np.load(sys.argv[2])
model = AdaptiveModel.load(sys.argv[1])
clean, foggy, y = data["clean"], data["foggy"], data["y"]
for i in range(0, 96, 32):
    model.predict(clean[i : i + 32])
model.update_context(battery=0.3, bandwidth_scale=0.0)
right = sum(int((model.predict(foggy[i : i + 32]).argmax(1) == y[i : i + 32]).sum()) for i in range(0, 192, 32))
kinds = [e["event"] for e in model.events]
assert "drift" in kinds and "adapt" in kinds, kinds
print(right, sorted({m.split(".")[0] for m in sys.modules} & blocked))
"""


def _device_inputs(tmp_path: Path, digits: DatasetSplits) -> Path:
    path = tmp_path / "inputs.npz"
    np.savez(
        path,
        clean=digits.test_x[:96].numpy(),
        foggy=fog(digits.test_x[96:288], 4).numpy(),
        y=digits.test_y[96:288].numpy(),
    )
    return path


def test_the_runtime_runs_with_the_training_stack_unimportable(
    made: tuple[Path, Path], digits: DatasetSplits, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """predict, update_context and AdaBN with torch, gymnasium, onnx, yaml … unimportable; AdaBN pays."""
    inputs = _device_inputs(tmp_path, digits)
    script = tmp_path / "device.py"
    script.write_text("BLOCK = True\n" + RUNTIME_SCRIPT)
    out = subprocess.run(
        [sys.executable, str(script), str(made[1]), str(inputs)], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr[-2000:]
    right, loaded = out.stdout.split(" ", 1)
    assert loaded.strip() == "[]"
    plain = AdaptiveModel.load(made[1], adapt=False)
    plain.update_context(battery=0.3, bandwidth_scale=0.0)
    data = np.load(inputs)
    right_plain = sum(
        int((plain.predict(data["foggy"][i : i + 32]).argmax(1) == data["y"][i : i + 32]).sum())
        for i in range(0, 192, 32)
    )
    assert int(right) > right_plain + 10


@pytest.mark.slow
def test_a_fresh_venv_with_numpy_and_onnxruntime_only_runs_a_package(
    made: tuple[Path, Path], digits: DatasetSplits, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """What a device does (README "On the device"): a venv with numpy and onnxruntime, this project installed
    --no-deps, runs a copied package through predict, update_context and drift adaptation."""
    venv = tmp_path / "rt"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "numpy", "onnxruntime"], check=True, timeout=600)
    subprocess.run([*pip, "--no-deps", str(ROOT)], check=True, timeout=600)
    listed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list"], capture_output=True, text=True)
    assert "torch" not in listed.stdout.lower() and "gymnasium" not in listed.stdout.lower()
    package = tmp_path / "copied"
    shutil.copytree(made[1], package)
    script = tmp_path / "device.py"
    script.write_text("BLOCK = False\n" + RUNTIME_SCRIPT)
    inputs = _device_inputs(tmp_path, digits)
    out = subprocess.run(
        [str(venv / "bin" / "python"), str(script), str(package), str(inputs)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert textwrap.dedent(out.stdout).split(" ", 1)[1].strip() == "[]"


SEARCHER = """
from autocompress.search.baselines import RandomSearcher


class GreedyKeep(RandomSearcher):
    '''A user's searcher (random draws, under its own name).'''
"""


@pytest.mark.slow  # three CLI processes; the trust rule itself is checked in-process above
def test_a_run_made_with_a_users_searcher_reopens_in_a_new_process(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The run records where the searcher lives ("module:Class"); a new process exports it and resumes it."""
    from autocompress.search import SearchCallback, register_searcher

    (tmp_path / "mysearch.py").write_text(SEARCHER)
    monkeypatch.syspath_prepend(str(tmp_path))
    import mysearch  # type: ignore[import-not-found]

    register_searcher("greedy-keep", mysearch.GreedyKeep)

    class StopAfterTwo(SearchCallback):
        def on_episode_end(self, episode):  # type: ignore[no-untyped-def,override]
            return self.record.episodes_done < 2

    config = SearchConfig(model="digits-cnn", dataset="digits", agent="greedy-keep", episodes=4, seed=0)
    job = SearchJob.create(config, tmp_path / "run")
    job.run(callbacks=[StopAfterTwo()])
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["resolved"]["agent"]
    assert saved["searcher"] == "mysearch:GreedyKeep"
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin", "AUTOCOMPRESS_RUNS_DIR": str(tmp_path / "runs")}
    env["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS", "1")
    cli = [sys.executable, "-m", "autocompress"]
    refused = subprocess.run(
        [*cli, "export", str(tmp_path / "run"), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert refused.returncode == 1 and "mysearch:GreedyKeep" in refused.stderr and "--trust-code" in refused.stderr
    for verb in (
        ["search", "--resume", str(tmp_path / "run")],
        ["export", str(tmp_path / "run"), "--out", str(tmp_path / "out")],
    ):
        done = subprocess.run([*cli, "-q", *verb, "--trust-code"], capture_output=True, text=True, env=env, cwd=ROOT)
        assert done.returncode == 0, done.stderr[-1500:]
    assert len((tmp_path / "run" / "progress.csv").read_text().splitlines()) == 1 + 4
    assert json.loads((tmp_path / "out" / "report.json").read_text())["verification"]["passed"]


def _StopAfter(count: int):  # type: ignore[no-untyped-def]
    from autocompress.search import SearchCallback

    class Stop(SearchCallback):
        def on_episode_end(self, episode):  # type: ignore[no-untyped-def,override]
            return self.record.episodes_done < count

    return Stop()


ADAPTATION = """
from autocompress.compress.adaptation import AdaptationCost, AdaptationMethod, recalibrate_batchnorm

CALLS = []


def _run(model, batches):
    CALLS.append(len(batches))
    return recalibrate_batchnorm(model, batches[:1])


half_adabn = AdaptationMethod("half-adabn", _run, lambda n: AdaptationCost(forward_images=n // 2), "AdaBN on 1 batch")
"""


def test_a_users_reward_and_adaptation_by_reference_are_searched_recorded_and_reopened(tmp_path: Path) -> None:
    """One run names two pieces of the user's code, an env's reward and a space's adaptation method: both are
    scored and logged, the run holds what it needs once its YAML files are gone, and a new process resumes it only
    when trusted, the refusal naming both files."""
    from autocompress.compress.adaptation import adaptation_method

    (tmp_path / "myreward.py").write_text("def mine(spec, x):\n    return 2.0 * x.accuracy - 1.0\n")
    env = tmp_path / "env.yaml"
    env.write_text(  # drifting inputs, so the user's adaptation runs on shifted batches
        f"name: my-pi\ndescription: mine\ndevice: raspberry-pi-4\nreward: {{mode: {tmp_path}/myreward.py:mine}}\n"
        "context: {shifts: [gaussian_noise:3, contrast:3]}\n"
    )
    (tmp_path / "myadapt.py").write_text(ADAPTATION)
    ref = f"{tmp_path}/myadapt.py:half_adabn"
    space = tmp_path / "space.yaml"
    space.write_text(f"name: mine\ndescription: mine\nkeep: {{min: 0.5, max: 1.0}}\nadapt: [none, '{ref}']\n")
    assert adaptation_method(ref).estimate(64).forward_images == 32
    config = SearchConfig(
        model="digits-cnn", dataset="digits", env=str(env), space=str(space), agent="random", episodes=6, seed=0
    )
    job = SearchJob.create(config, tmp_path / "run")
    env.unlink()  # the run holds what it needs
    space.unlink()
    job.run(callbacks=[_StopAfter(3)])
    assert ref in (tmp_path / "run" / "config.json").read_text()
    cli = [sys.executable, "-m", "autocompress", "-q", "search", "--resume", str(tmp_path / "run")]
    refused = subprocess.run(cli, capture_output=True, text=True, cwd=ROOT)
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1
    assert "myreward.py:mine" in refused.stderr and "myadapt.py:half_adabn" in refused.stderr
    done = subprocess.run([*cli, "--trust-code"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-1500:]
    with (tmp_path / "run" / "progress.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    for row in rows:  # the user's reward scored every episode, in this process and in the resumed one
        assert float(row["reward"]) == pytest.approx(2 * float(row["accuracy"]) - 1, abs=1e-6)
    assert any(row["adapt"] == ref for row in rows)  # searched, scored and logged under its reference
    with pytest.raises(AutoCompressError, match="AdaptationMethod"):
        adaptation_method(f"{tmp_path}/myadapt.py:CALLS")


@pytest.mark.slow
def test_raw_cifar10_bytes_from_the_official_file_give_the_reports_accuracy(tmp_path: Path, cifar_dir: Path) -> None:
    """The exported ResNet-20 takes CIFAR-10 as ``test_batch.bin`` stores it (uint8, N×3×32×32, no normalisation
    by the user), read here straight from the file, not through the tool's loader."""
    config = SearchConfig(
        model="resnet20",
        dataset="cifar10",
        data_dir=str(cifar_dir),
        pretrained=True,
        env="raspberry-pi-4",
        space="prune-quant",
        agent="random",
        episodes=2,
        seed=0,
        val_images=200,
    )
    SearchJob.create(config, tmp_path / "run").run()
    report = export_run(tmp_path / "run", tmp_path / "out", ExportOptions(test_images=500, latency_repeats=3))
    assert report["input"]["dtype"] == "uint8" and report["input"]["layout"] == "NCHW"
    records = np.fromfile(cifar_dir / "cifar-10-batches-bin" / "test_batch.bin", dtype=np.uint8).reshape(-1, 3073)
    labels, images = records[:500, 0], records[:500, 1:].reshape(-1, 3, 32, 32)
    session = onnxruntime.InferenceSession(str(tmp_path / "out" / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: images})[0]
    assert _accuracy(logits, torch.from_numpy(labels.astype(np.int64))) == pytest.approx(report["test_accuracy"])
    assert report["test_accuracy"] > 0.3  # a compressed ResNet-20 without fine-tune, far above chance (0.1)


def test_an_installed_packages_searcher_entry_point_is_found_by_name(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """An installed distribution declaring ``[autocompress.searchers] greedy-ep = mysearch:GreedyKeep`` (here a
    dist-info folder on sys.path, as pip writes it) is an agent by name, and a run records its reference."""
    from autocompress.search.registry import searcher_names

    (tmp_path / "mysearch.py").write_text(SEARCHER)
    info = tmp_path / "mysearch-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mysearch\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[autocompress.searchers]\ngreedy-ep = mysearch:GreedyKeep\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "greedy-ep" in searcher_names()
    config = SearchConfig(model="digits-cnn", dataset="digits", agent="greedy-ep", episodes=2, seed=0)
    SearchJob.create(config, tmp_path / "run").run()
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["resolved"]["agent"]
    assert saved["searcher"] == "mysearch:GreedyKeep"
    assert len((tmp_path / "run" / "progress.csv").read_text().splitlines()) == 1 + 2
