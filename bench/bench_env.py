"""Environment throughput: random episodes through AutoCompress/Compress-v0, episodes per minute, where an
episode's time goes, and whether any final policy breaks a hard budget.

    python bench/bench_env.py --quick                                   # digits, seconds (CI smoke test)
    python bench/bench_env.py --data-dir ../shared/data --episodes 50   # ResNet-20 / CIFAR-10, Pi 4 + Wi-Fi, full space
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from autocompress.env import AutoCompressEnv, build_workload
from bench.common import markdown_table, publish

PHASES = ("prune", "reconstruct", "bn_repair", "adapt", "quantize", "split", "evaluate")


def run(env: AutoCompressEnv, episodes: int, seed: int) -> list[dict[str, Any]]:
    rows = []
    env.action_space.seed(seed)
    for episode in range(episodes):
        env.reset(seed=seed + episode)
        done, info = False, {}
        while not done:
            _, _, done, _, info = env.step(env.action_space.sample())
        timings = info["timings"]
        rows.append(
            {
                "episode": episode,
                "accuracy": info["accuracy"],
                "macs_ratio": info["macs_ratio"],
                "latency_ms": info["latency_ms"],
                "hard_violations": info["hard_violations"],
                "split": info["policy"]["split"],
                "adapt": info["policy"]["adapt"],
                "shift": info["context"]["shift"],
                **{p: timings.get(p, 0.0) for p in PHASES},
                "episode_s": timings["episode"],
            }
        )
    return rows


def cost_model_us(env: AutoCompressEnv, repeats: int = 200) -> float:
    policy = env.guard.initial()
    start = time.perf_counter()
    for _ in range(repeats):
        env.cost.predict(policy.kept, policy.bits, None)
    return (time.perf_counter() - start) / repeats * 1e6


def summarize(rows: list[dict[str, Any]], cost_us: float) -> dict[str, Any]:
    total = sum(r["episode_s"] for r in rows)
    phases = {p: sum(r[p] for r in rows) for p in PHASES}
    overhead = total - sum(phases.values())
    return {
        "episodes": len(rows),
        "episodes_per_min": 60 * len(rows) / total,
        "median_episode_s": statistics.median(r["episode_s"] for r in rows),
        **{f"share_{p}": phases[p] / total for p in PHASES},
        "overhead_share": overhead / total,
        "overhead_vs_evaluation": overhead / max(phases["evaluate"], 1e-9),
        "hard_violations": sum(r["hard_violations"] for r in rows),
        "cost_model_us": cost_us,
        "best_accuracy": max(r["accuracy"] for r in rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits, a few episodes; prints, writes nothing")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--images", type=int, default=2000, help="validation slice")
    parser.add_argument("--env", default="raspberry-pi-4-wifi")
    parser.add_argument("--space", default="full")
    args = parser.parse_args()
    if args.quick:
        env = AutoCompressEnv(env_preset=args.env, space=args.space)
        episodes = 5
    else:
        workload = build_workload("resnet20", "cifar10", True, None, args.data_dir, args.images)
        env, episodes = AutoCompressEnv(workload=workload, env_preset=args.env, space=args.space), args.episodes
    rows = run(env, episodes, seed=0)
    summary = summarize(rows, cost_model_us(env))
    body = "\n\n".join(
        [
            f"{summary['episodes']} random episodes, {env.workload.model_name} on {env.workload.info.name} "
            f"({len(env.workload.evaluator.val_labels)} val images), env `{args.env}`, space `{args.space}` "
            f"({len(env.space.steps)} steps per episode).",
            markdown_table(["metric", "value"], [[k, v] for k, v in summary.items()]),
            "Shares are of the total episode wall time; `overhead` is everything outside prune, adapt, quantize, split "
            "and evaluate (observation, budget guard, cost model, reward).",
        ]
    )
    publish("env", "Environment throughput (issue 5)", body, {"summary": summary, "episodes": rows}, args.quick)


if __name__ == "__main__":
    main()
