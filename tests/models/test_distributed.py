"""Data-parallel ``autocompress train`` under torchrun (gloo on the CPU): two ranks split every global batch as one
process would see it, reach the one-process accuracy, write each file once, and a kill of one rank ends the job
(no hang) with a run that resumes — with any world size."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from autocompress.data import BatchIterator, load_dataset
from autocompress.distributed import World

TRAIN = ["train", "--model", "digits-cnn", "--dataset", "digits", "--threads", "1"]


def test_ranks_slice_the_global_batch_one_process_draws() -> None:
    splits = load_dataset("digits")
    x, y, info = splits.train_x[:203], splits.train_y[:203], splits.info

    def batches(world: World | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        it = BatchIterator(x, y, info, 64, shuffle=True, augment=True, seed=3, world=world)
        return [(bx.clone(), by.clone()) for bx, by in it]

    whole = batches(None)
    parts = [batches(World(rank, 3)) for rank in range(3)]
    assert len(whole) == len(parts[0]) == len(parts[2]) == 4  # 203 = 3 × 64 + 11: every rank gets a share of 11
    for i, (bx, by) in enumerate(whole):
        assert torch.equal(torch.cat([p[i][0] for p in parts]), bx)  # same images, same augmentation
        assert torch.equal(torch.cat([p[i][1] for p in parts]), by)
    assert [World(r, 3).shard(11) for r in range(3)] == [slice(0, 4), slice(4, 8), slice(8, 11)]


def _torchrun(*args: str, nproc: int = 2) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(nproc),
        "-m",
        "autocompress",
        *args,
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "AUTOCOMPRESS_DIST_TIMEOUT_S": "30"}


def _metrics(folder: Path) -> list[dict[str, str]]:
    with (folder / "metrics.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_two_ranks_reach_the_one_process_accuracy_and_write_once(tmp_path: Path) -> None:
    one = subprocess.run(
        [sys.executable, "-m", "autocompress", *TRAIN, "--epochs", "10", "--run-dir", str(tmp_path / "w1")],
        capture_output=True,
        text=True,
        env=_env(),
    )
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(
        _torchrun(*TRAIN, "--epochs", "10", "--run-dir", str(tmp_path / "w2")),
        capture_output=True,
        text=True,
        env=_env(),
    )
    assert two.returncode == 0, two.stderr[-3000:]
    a = json.loads((tmp_path / "w1" / "result.json").read_text())["test_accuracy"]
    b = json.loads((tmp_path / "w2" / "result.json").read_text())["test_accuracy"]
    assert abs(a - b) <= 2 / 360 + 1e-9, (a, b)  # within two of digits' 360 test images (0.56 pt)
    assert [r["epoch"] for r in _metrics(tmp_path / "w2")] == [str(e) for e in range(1, 11)]  # written once
    assert len(list((tmp_path / "w2").glob("events.out.tfevents.*"))) == 1
    assert two.stdout.count('"test_accuracy"') == 1  # rank 0 alone prints the result


@pytest.mark.slow
def test_a_killed_rank_ends_the_job_and_the_run_resumes_in_one_process(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    job = subprocess.Popen(
        _torchrun(*TRAIN, "--epochs", "60", "--run-dir", str(folder)),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not ((folder / "metrics.csv").exists() and len(_metrics(folder)) >= 2):
            time.sleep(0.2)
        assert (folder / "metrics.csv").exists(), "the job trained no epoch"
        workers = subprocess.run(["pgrep", "-P", str(job.pid)], capture_output=True, text=True).stdout.split()
        assert len(workers) == 2, workers
        os.kill(int(workers[-1]), signal.SIGKILL)
        job.wait(timeout=60)  # the other rank is ended too: no hang
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode != 0
    err = job.stderr.read().decode() if job.stderr else ""
    ours = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(ours) == 1 and ("lost a peer" in ours[0] or "was stopped because another rank" in ours[0]), ours
    done = len(_metrics(folder))
    assert 2 <= done < 60
    resumed = subprocess.run(
        [sys.executable, "-m", "autocompress", "train", "--resume", str(folder), "--threads", "1"],
        capture_output=True,
        text=True,
        env=_env(),
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    epochs = [int(r["epoch"]) for r in _metrics(folder)]
    assert epochs[-1] == 60 and len(set(epochs)) == 60  # every epoch trained; the resumed one carried on


@pytest.mark.slow
def test_the_export_fine_tune_runs_on_two_ranks_and_rank_0_alone_writes(tmp_path: Path) -> None:
    from autocompress.search import SearchConfig, SearchJob

    run = tmp_path / "run"
    SearchJob.create(SearchConfig(model="digits-cnn", dataset="digits", agent="random", episodes=2), run).run()
    export = ["export", str(run), "--finetune-epochs", "2", "--device", "cpu", "--threads", "1", "--json"]
    one = subprocess.run(
        [sys.executable, "-m", "autocompress", *export, "--out", str(tmp_path / "e1")],
        capture_output=True,
        text=True,
        env=_env(),
    )
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(_torchrun(*export, "--out", str(tmp_path / "e2")), capture_output=True, text=True, env=_env())
    assert two.returncode == 0, two.stderr[-3000:]
    a = json.loads((tmp_path / "e1" / "report.json").read_text())
    b = json.loads((tmp_path / "e2" / "report.json").read_text())
    assert b["verification"]["passed"] and len(b["finetune"]["losses"]) == 2
    assert abs(a["test_accuracy"] - b["test_accuracy"]) <= 2 / 360 + 1e-6, (a["test_accuracy"], b["test_accuracy"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e1", "e2", "run"]  # nothing beside --out
    assert two.stdout.count('"test_accuracy"') == 1
    refused = subprocess.run(
        _torchrun("export", str(run), "--out", str(tmp_path / "e3"), "--adaptive"),
        capture_output=True,
        text=True,
        env=_env(),
    )
    assert refused.returncode != 0 and "error: under torchrun, export runs its training data-parallel" in refused.stderr


@pytest.mark.slow
def test_the_union_training_of_an_adaptive_package_runs_on_two_ranks(tmp_path: Path) -> None:
    from autocompress.search import SearchConfig, SearchJob

    run = tmp_path / "run"
    SearchJob.create(SearchConfig(model="digits-cnn", dataset="digits", agent="random", episodes=3), run).run()
    export = [
        "export",
        str(run),
        "--adaptive",
        "--configs",
        "2",
        "--train-epochs",
        "1",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--json",
    ]
    one = subprocess.run(
        [sys.executable, "-m", "autocompress", *export, "--out", str(tmp_path / "p1")],
        capture_output=True,
        text=True,
        env=_env(),
    )
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(_torchrun(*export, "--out", str(tmp_path / "p2")), capture_output=True, text=True, env=_env())
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = (json.loads((tmp_path / p / "manifest.json").read_text()) for p in ("p1", "p2"))
    ids_a, ids_b = [c["id"] for c in a["configs"]], [c["id"] for c in b["configs"]]
    # The same configurations are built and trained; after training, each package leaves out those another beats
    # on validation accuracy, energy and latency, and accuracies that differ by a few images (BatchNorm statistics
    # per slice) can move one configuration across that edge (seen: c3 left out by one process, kept by two ranks).
    assert ids_a[0] == ids_b[0] and len(set(ids_a) ^ set(ids_b)) <= 1, (ids_a, ids_b)
    by_id = {c["id"]: c for c in b["configs"]}
    for x in a["configs"]:
        if x["id"] in by_id:
            y = by_id[x["id"]]
            assert abs(x["test_accuracy"] - y["test_accuracy"]) <= 3 / 360 + 1e-6, (x["id"], x["test_accuracy"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p1", "p2", "run"]
