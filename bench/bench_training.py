"""Training throughput of ``autocompress train`` in one process and data-parallel under torchrun, side by side.

Configurations alternate over ``--repeats`` rounds so the machine's noise falls on all alike: one process with all
threads, one process with one thread per process of the parallel run, and ``torchrun --nproc_per_node N`` (gloo on
the CPU). Images per second count the training images of the epochs over the training time the run logs
(``metrics.csv``; start-up and the final test excluded), so the ratio is the speed-up of the training loop.

    python bench/bench_training.py --quick                                   # digits, seconds (CI smoke test)
    python bench/bench_training.py --data-dir ../shared/data --epochs 1      # ResNet-20 / CIFAR-10
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import markdown_table, publish


def one_run(args: list[str], procs: int, threads: int, folder: Path, data_dir: str | None) -> float:
    """Train once; returns the training images per second the run's log implies."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    base = ["-m", "autocompress", "-q", *args, "--threads", str(threads), "--run-dir", str(folder)]
    if data_dir:
        base += ["--data-dir", data_dir]
    command = (
        [sys.executable, *base]
        if procs == 1
        else [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs), *base]
    )
    subprocess.run(command, check=True, capture_output=True, env=env)
    with (folder / "metrics.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    from autocompress.data import load_dataset

    images = len(load_dataset(args[args.index("--dataset") + 1], data_dir).train_y) * len(rows)
    return images / float(rows[-1]["elapsed_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits, two epochs; prints, writes nothing")
    parser.add_argument("--data-dir", default=os.environ.get("AUTOCOMPRESS_DATA_DIR"))
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    if args.quick:
        train = ["train", "--model", "digits-cnn", "--dataset", "digits", "--epochs", "2"]
        data_dir, repeats = None, 1
    else:
        train = ["train", "--model", "resnet20", "--dataset", "cifar10", "--epochs", str(args.epochs)]
        data_dir, repeats = args.data_dir, args.repeats
    per = max(1, cores // args.procs)
    configs = [
        (f"1 process × {cores} threads", 1, cores),
        (f"1 process × {per} thread{'s' if per > 1 else ''}", 1, per),
        (f"torchrun {args.procs} processes × {per} thread{'s' if per > 1 else ''}", args.procs, per),
    ]
    measured: dict[str, list[float]] = {name: [] for name, _, _ in configs}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(repeats):
            for i, (name, procs, threads) in enumerate(configs):
                folder = Path(tmp) / f"r{round_}-{i}"
                measured[name].append(one_run(train, procs, threads, folder, data_dir))
                print(f"round {round_ + 1}/{repeats} {name}: {measured[name][-1]:.0f} images/s", flush=True)
    base = statistics.median(measured[configs[0][0]])
    rows: list[list[Any]] = [
        [name, procs, threads, statistics.median(measured[name]), statistics.median(measured[name]) / base]
        for name, procs, threads in configs
    ]
    table = markdown_table(["configuration", "processes", "threads each", "images/s (median)", "vs 1 process"], rows)
    model = " ".join(train[1:5])
    body = (
        f"`autocompress train` ({model}, {train[-1]} epoch(s) per run, {repeats} alternating rounds) in one process "
        f"and data-parallel under `torchrun --nproc_per_node {args.procs}` (gloo, CPU). Images per second: training "
        "images over the training time its metrics.csv logs (start-up and the final test excluded).\n\n"
        f"{table}\n\nOn a machine whose cores are already busy with one process's threads, a second process adds "
        "no arithmetic: data parallelism pays where each rank brings its own cores or GPU (one rank per GPU, nccl), "
        "and the search's agent updates do not scale this way (see Scaling out in the README)."
    )
    publish("training", "Training throughput: one process vs torchrun data-parallel", body, measured, args.quick)


if __name__ == "__main__":
    main()
