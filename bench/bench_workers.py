"""Search throughput with parallel environments: a DDPG search with ``--workers 1`` and ``--workers N`` (SB3's
``SubprocVecEnv``, one process per environment), side by side in one run, episodes per minute and their ratio.

Each configuration runs a fresh search of the same budget in a temporary folder; configurations alternate over
``--repeats`` rounds so the machine's noise falls on all of them alike. ``1 worker × 1 thread`` is measured too: it is
the per-core rate a machine with more cores multiplies by its workers, as long as each worker keeps a core.

    python bench/bench_workers.py --quick                                  # digits, seconds (CI smoke test)
    python bench/bench_workers.py --data-dir ../shared/data --episodes 40  # ResNet-20 / CIFAR-10, Pi 4 + Wi-Fi
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from autocompress.env import build_workload
from autocompress.search import SearchConfig, SearchJob
from bench.common import markdown_table, publish


def one_search(config: SearchConfig, threads: int, folder: Path) -> dict[str, Any]:
    """Run one search; returns its wall time with and without start-up, and its episode count."""
    torch.set_num_threads(threads)  # a worker process gets this process's threads divided by the workers
    # Every search builds its workload afresh: the cached one would remember the scores of the policies an earlier
    # search of the same seed already played, and replay them for free.
    build_workload.cache_clear()
    start = time.perf_counter()
    job = SearchJob.create(config, folder)
    built = time.perf_counter()
    summary = job.run()
    wall = time.perf_counter() - start
    with (folder / "progress.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    # the first batch carries the workers' start-up (they build their environments); the rest is the steady rate
    steady = rows[config.workers :]
    steady_s = sum(float(r["wall_s"]) for r in steady)
    return {
        "episodes": summary["episodes"],
        "wall_s": wall,
        "setup_s": built - start,
        "episodes_per_min": 60 * summary["episodes"] / wall,
        "steady_episodes_per_min": 60 * len(steady) / steady_s if steady_s else float("nan"),
        "best_reward": summary["best_reward"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits, a few episodes; prints, writes nothing")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--val-images", type=int, default=1000)
    parser.add_argument("--env", default="raspberry-pi-4-wifi")
    parser.add_argument("--space", default="prune-quant")
    parser.add_argument("--workers", type=int, default=2, help="the parallel configuration (default 2)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    cores = torch.get_num_threads()
    if args.quick:
        base = SearchConfig(model="digits-cnn", dataset="digits", env="host", agent="ddpg", episodes=6)
        args.repeats = 1
    else:
        base = SearchConfig(
            model="resnet20",
            dataset="cifar10",
            env=args.env,
            space=args.space,
            agent="ddpg",
            episodes=args.episodes,
            data_dir=args.data_dir,
            val_images=args.val_images,
        )
    reference, single, parallel_setup = (1, cores), (1, 1), (args.workers, cores)  # (workers, threads here)
    setups = list(dict.fromkeys([reference, single, parallel_setup]))
    results: dict[tuple[int, int], list[dict[str, Any]]] = {s: [] for s in setups}
    with tempfile.TemporaryDirectory(prefix="bench-workers-", dir=Path.cwd()) as tmp:
        for repeat in range(args.repeats):
            for workers, threads in setups:
                config = dataclasses.replace(base, workers=workers)
                folder = Path(tmp) / f"w{workers}-t{threads}-r{repeat}"
                results[(workers, threads)].append(one_search(config, threads, folder))
                print(
                    f"round {repeat + 1}: {workers} worker(s), {threads} thread(s): {results[(workers, threads)][-1]}"
                )
    reference_rate = statistics.median(r["episodes_per_min"] for r in results[reference])
    rows = []
    for (workers, threads), runs in results.items():
        rate = statistics.median(r["episodes_per_min"] for r in runs)
        per_worker_threads = max(1, threads // workers)
        rows.append(
            [
                f"{workers} × {per_worker_threads} thread(s)",
                runs[0]["episodes"],
                statistics.median(r["wall_s"] for r in runs),
                statistics.median(r["setup_s"] for r in runs),
                rate,
                statistics.median(r["steady_episodes_per_min"] for r in runs),
                rate / reference_rate,
                statistics.median(r["best_reward"] for r in runs),
            ]
        )
    per_core = statistics.median(r["steady_episodes_per_min"] for r in results[single])
    parallel = statistics.median(r["steady_episodes_per_min"] for r in results[parallel_setup])
    efficiency = parallel / (args.workers * per_core)
    threads_gain = statistics.median(r["steady_episodes_per_min"] for r in results[reference]) / per_core
    body = "\n\n".join(
        [
            f"DDPG, {base.model} on {base.dataset} ({base.val_images or 'all'} val images), env `{base.env}`, space "
            f"`{base.space}`, {base.episodes} episodes per search, median of {args.repeats} alternating round(s); "
            f"{cores} cores. Workers share the cores: each gets cores ÷ workers torch threads.",
            markdown_table(
                [
                    "workers × threads",
                    "episodes",
                    "wall s",
                    "setup s",
                    "episodes/min",
                    "steady episodes/min",
                    f"ratio to 1 × {cores}",
                    "best reward",
                ],
                rows,
            ),
            f"Steady rate = episodes after the first batch (which carries the workers' start-up) over their wall "
            f"time. Parallel efficiency at {args.workers} workers: {efficiency:.2f} of {args.workers} × the "
            f"1-thread rate ({per_core:.1f} episodes/min); one process gains {threads_gain:.2f}× from 1 to {cores} "
            f"threads. Workers pay where one process's thread scaling falls below efficiency × workers: on a bigger "
            f"machine expect about {efficiency:.2f} × W × the 1-thread rate with W workers, each keeping a core and "
            f"its own workload in memory; the agent's updates run in the main process between batches and do not "
            f"parallelise.",
        ]
    )
    raw = {f"{w}x{t}": runs for (w, t), runs in results.items()}
    publish("workers", "Parallel environments: episodes per minute (issue 13)", body, raw, args.quick)


if __name__ == "__main__":
    main()
