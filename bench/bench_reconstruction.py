"""What least-squares reconstruction buys, and what it costs, side by side in one run: the same random policies at
one MACs budget (drawn through the environment, so all meet it) are scored by three evaluators — no refit, the fast
refit (Gram matrices of the unpruned network) and the sequential refit (inputs from the pruned network) — with the
evaluations of each policy interleaved, so machine noise hits every mode alike.

    python bench/bench_reconstruction.py --quick                      # digits, seconds (CI smoke test)
    python bench/bench_reconstruction.py --data-dir ../shared/data    # ResNet-20 / CIFAR-10, about 3 min
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import numpy as np

from autocompress.compress.evaluator import EvaluatorOptions, PolicyEvaluator
from autocompress.compress.policy import Policy
from autocompress.env import AutoCompressEnv, build_workload
from bench.common import markdown_table, publish

MODES = ("none", "fast", "sequential")


def random_policies(env: AutoCompressEnv, count: int, seed: int) -> list[Policy]:
    rng = np.random.default_rng(seed)
    policies = []
    for episode in range(count):
        env.reset(seed=seed + episode)
        info: dict[str, Any] = {}
        for _ in env.space.steps:
            *_, info = env.step(rng.uniform(-1, 1, env.space.action_dim).astype(np.float32))
        policies.append(Policy.from_dict(info["policy"]))
    return policies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--policies", type=int, default=20)
    parser.add_argument("--val-images", type=int, default=1000)
    parser.add_argument("--macs", type=float, default=0.5)
    args = parser.parse_args()
    model, dataset, env_name = (
        ("digits-cnn", "digits", "host") if args.quick else ("resnet20", "cifar10", "raspberry-pi-4")
    )
    count = 4 if args.quick else args.policies
    workload = build_workload(
        model, dataset, True, None, args.data_dir, None if args.quick else args.val_images, reconstruct="none"
    )
    env = AutoCompressEnv(workload=workload, env_preset=env_name, space="prune", budgets={"macs_ratio": args.macs})
    policies = random_policies(env, count, seed=0)
    base = workload.evaluator
    evaluators = {
        mode: PolicyEvaluator(
            base.model,
            base.info,
            base.val_images,
            base.val_labels,
            base.train_images,
            EvaluatorOptions(reconstruct=mode),
            table=base.table,
        )
        for mode in MODES
    }
    for evaluator in evaluators.values():  # one-off set-up (Gram matrices, targets) outside the timings
        evaluator.evaluate(policies[0])
    results: dict[str, list[Any]] = {mode: [] for mode in MODES}
    for policy in policies[1:]:
        for mode in MODES:
            results[mode].append(evaluators[mode].evaluate(policy))
    none_s = statistics.mean(sum(r.timings.values()) for r in results["none"])
    rows = []
    for mode in MODES:
        mine = results[mode]
        seconds = statistics.mean(sum(r.timings.values()) for r in mine)
        refit = statistics.mean(r.timings["reconstruct"] for r in mine)
        gain = statistics.mean(a.accuracy - b.accuracy for a, b in zip(mine, results["none"], strict=True))
        accuracy = [r.accuracy for r in mine]
        figures = [f"{statistics.mean(accuracy):.4f}", f"{max(accuracy):.4f}", f"{gain:+.4f}", f"{seconds:.3f}"]
        rows.append([mode, *figures, f"{seconds / none_s:.2f}", f"{refit / seconds:.1%}"])
    body = (
        f"{model} on {dataset}, {len(policies) - 1} random policies at {args.macs:.0%} MACs (env `{env_name}`, space "
        f"`prune`), {len(base.val_labels)} validation images; each policy scored by the three evaluators in turn.\n\n"
        + markdown_table(
            [
                "reconstruct",
                "mean val acc",
                "best val acc",
                "gain over none",
                "evaluation s",
                "time vs none",
                "refit share of the evaluation",
            ],
            rows,
        )
    )
    raw = {m: [{"accuracy": r.accuracy, "timings": r.timings} for r in results[m]] for m in MODES}
    publish(f"reconstruction-{model}", f"Least-squares reconstruction: what it buys ({model})", body, raw, args.quick)


if __name__ == "__main__":
    main()
