"""Does the named best policy hold on the test split? A search scores each policy on a validation slice; before
it names its best it scores its best candidates again on the whole validation split (``search --confirm``). This
script runs one search, takes its 8 best distinct policies by the search's score, measures each one's test
accuracy (the pipeline the export runs: the policy applied with the search's reconstruction, scored on the whole
test split), and prints the Spearman rank correlation of the test accuracy with the search's score and with the
confirmed score, and where the named best ranks on test under each.

    python bench/bench_confirm.py --quick                       # digits, seconds (CI smoke test)
    python bench/bench_confirm.py --data-dir ../shared/data     # ResNet-20 / CIFAR-10, ddpg 300 episodes, ~15 min

Resumable: the search lives in ``bench/results/confirm/<model>-<agent>-s<seed>/`` and is reused when finished.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path
from typing import Any

from scipy.stats import spearmanr

from autocompress.compress.policy import Policy
from autocompress.search import SearchConfig, SearchJob
from bench.common import RESULTS, markdown_table, publish, run_search

TOP = 8


def test_accuracy(job: SearchJob, policy: dict[str, Any]) -> float:
    """Test accuracy of ``policy`` as the search applies it (reconstruction, BatchNorm, quantisation)."""
    evaluator, splits = job.env.workload.evaluator, job.env.workload.splits
    compressed = evaluator.apply(Policy.from_dict(policy))
    return evaluator.accuracy(compressed.model, evaluator.normalize(splits.test_x), splits.test_y)


def rank_of_best(scores: list[float], test: list[float]) -> int:
    """Where the policy with the highest score ranks on test (1 = the most accurate on test)."""
    best = max(range(len(scores)), key=lambda i: scores[i])
    return 1 + sum(t > test[best] for t in test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--agent", default="ddpg")
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-images", type=int, default=1000)
    parser.add_argument("--macs", type=float, default=0.5)
    parser.add_argument("--space", default="bench/presets/prune-sequential.yaml")
    args = parser.parse_args()
    dataset, env = "cifar10", "raspberry-pi-4"
    folder = RESULTS / "confirm" / f"{args.model}-{args.agent}-s{args.seed}"
    if args.quick:
        args.model, dataset, env, args.agent = "digits-cnn", "digits", "host", "random"
        args.episodes, args.val_images, args.space = 24, 40, "prune"
        folder = Path(tempfile.mkdtemp(prefix="bench-confirm-")) / "run"
    config = SearchConfig(
        model=args.model,
        dataset=dataset,
        env=env,
        agent=args.agent,
        space=args.space,
        episodes=args.episodes,
        seed=args.seed,
        data_dir=args.data_dir,
        budgets={"macs_ratio": args.macs},
        val_images=args.val_images,
        exp="bench-confirm",
        confirm=TOP,
    )
    summary = run_search(folder, config)
    job = SearchJob.resume(folder)
    try:
        top = job.record.candidates[:TOP]
        test = [test_accuracy(job, e["policy"]) for e in top]
    finally:
        job.close()
    search = [e.get("search_reward", e["reward"]) for e in top]
    confirmed = [e["reward"] for e in top]
    rows = [
        [
            e["episode"],
            f"{e.get('search_accuracy', e['accuracy']):.4f}",
            f"{e['accuracy']:.4f} ± {e['accuracy_se']:.4f}",
            f"{t:.4f}",
            f"{e['macs_ratio']:.3f}",
        ]
        for e, t in zip(top, test, strict=True)
    ]
    rho_search, rho_confirmed = (float(spearmanr(scores, test).statistic) for scores in (search, confirmed))
    n_search, n_all = top[0].get("search_images", top[0]["scored_images"]), top[0]["scored_images"]
    summary_rows = [
        ["search's score", n_search, f"{rho_search:.2f}", rank_of_best(search, test)],
        ["confirmed score", n_all, f"{rho_confirmed:.2f}", rank_of_best(confirmed, test)],
    ]
    body = (
        f"{args.model} on {dataset}, env `{env}`, space `{args.space}`, budget {args.macs:.0%} of the MACs, "
        f"{args.agent} {args.episodes} episodes, seed {args.seed}. The run's {len(top)} best distinct policies by the "
        f"search's reward; test accuracy on the whole test split through the pipeline the export runs (no "
        f"fine-tune). The run named episode {summary['best_episode']} (the search's own best: episode "
        f"{summary['search_best_episode']}).\n\n"
        + markdown_table(
            ["ranked by", "validation images", "Spearman ρ with test", "named best's rank on test"], summary_rows
        )
        + "\n\n"
        + markdown_table(["episode", "search val acc", "confirmed val acc ± se", "test acc", "MACs ratio"], rows)
    )
    raw = {
        "summary": summary,
        "candidates": top,
        "test_accuracy": test,
        "rho_search": None if math.isnan(rho_search) else rho_search,
        "rho_confirmed": None if math.isnan(rho_confirmed) else rho_confirmed,
    }
    title = f"Naming the best policy: search score vs confirmed score ({args.model})"
    publish(f"confirm-{args.model}", title, body, raw, args.quick)


if __name__ == "__main__":
    main()
