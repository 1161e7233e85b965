"""Techniques at one MACs budget: channel pruning alone, low-rank factorisation alone, and both on the same layers
(AdaDeep's choice of techniques), searched by the same agent for the same episodes with the same evaluator
(sequential least-squares reconstruction), each best policy exported and measured on the test split from its ONNX
file without fine-tune and after the same distilled fine-tune.

    python bench/bench_techniques.py --quick     # digits, three spaces, seconds (CI smoke test)
    python bench/bench_techniques.py --data-dir ../shared/data --models resnet20 --episodes 100   # ~1 hour
    python bench/bench_techniques.py --data-dir ../shared/data --models vgg11 --episodes 50 --val-images 500

A section per set of models (``techniques-<models>``). Resumable: each search and export lives in
``bench/results/techniques/<model>-macs<budget>/<space>-<agent>-s<seed>/`` and is reused (not committed).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from autocompress.search import SearchConfig
from bench.bench_quality import RECIPE, export, unpruned_test_accuracy
from bench.common import RESULTS, markdown_table, publish, rows_table, run_search

SPACES = ["prune", "lowrank", "prune-lowrank"]


def measure(model: str, dataset: str, space: str, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    config = SearchConfig(
        model=model,
        dataset=dataset,
        env=args.env,
        agent=args.agent,
        space=space,
        episodes=args.episodes,
        seed=args.seed,
        data_dir=args.data_dir,
        budgets={"macs_ratio": args.macs},
        val_images=args.val_images,
        exp="bench-techniques",
    )
    folder = root / f"{space}-{args.agent}-s{args.seed}"
    summary = run_search(folder, config)
    plain = export(folder, 0, args.data_dir)
    tuned = export(folder, args.finetune_epochs, args.data_dir) if args.finetune_epochs else plain
    policy = json.loads((folder / "best_policy.json").read_text())["policy"]
    settings = list(policy["layers"].values())
    return {
        "model": model,
        "space": space,
        "agent": args.agent,
        "seed": args.seed,
        "episodes": summary["episodes"],
        "episode_s": round(summary["search_wall_s"] / max(1, summary["episodes"]), 2),
        "best_val_accuracy": summary["best_accuracy"],
        "macs_ratio": round(plain["macs_ratio"], 4),
        "params": plain["params"],
        "pruned_layers": sum(1 for s in settings if s["keep"] < 1.0),
        "factorised_layers": sum(1 for s in settings if s.get("rank", 1.0) < 1.0),
        "test_accuracy_no_ft": plain["test_accuracy"],
        "test_accuracy_ft": tuned["test_accuracy"],
        "predicted_latency_ms": round(plain["device"]["latency_ms"], 4),
        "host_onnx_ms": round(plain["host_latency_ms"]["onnx_fp32"], 4),
        "measured": time.strftime("%Y-%m-%d"),
    }


def render(rows: list[dict[str, Any]], bases: dict[str, float], args: argparse.Namespace) -> str:
    parts = []
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = {r["space"]: r for r in rows if r["model"] == model}
        prune = mine.get("prune")
        table = [
            [
                space,
                f"{r['best_val_accuracy']:.4f}",
                f"{r['test_accuracy_no_ft']:.4f}",
                f"{r['test_accuracy_ft']:.4f}",
                f"{r['test_accuracy_ft'] - prune['test_accuracy_ft']:+.4f}" if prune else "—",
                f"{r['test_accuracy_ft'] - bases[model]:+.4f}",
                f"{r['macs_ratio']:.3f}",
                f"{r['params']:,}",
                f"{r['predicted_latency_ms']:.3f}",
                f"{r['host_onnx_ms']:.3f}",
                f"{r['pruned_layers']} / {r['factorised_layers']}",
                f"{r['episode_s']:.2f}",
            ]
            for space, r in mine.items()
        ]
        columns = [
            "space",
            "best val acc",
            "test acc",
            f"test acc ({args.finetune_epochs}-ep ft)",
            "vs prune (ft)",
            "vs unpruned (ft)",
            "MACs ratio",
            "parameters",
            f"predicted ms ({args.env})",
            "host ms (onnxruntime)",
            "layers pruned / factorised",
            "s per episode",
        ]
        parts.append(f"**{model}** (unpruned test accuracy {bases[model]:.4f})\n\n{markdown_table(columns, table)}")
    intro = (
        f"Env `{args.env}`, budget {args.macs:.0%} of the MACs (hard), agent `{args.agent}`, {args.episodes} "
        f"episodes per search, seed {args.seed}, {args.val_images} validation images per evaluation, sequential "
        "least-squares reconstruction in the search and in the export. `lowrank` factorises each dense layer "
        "(rank 0.2–1 of the break-even rank), `prune-lowrank` prunes and factorises the same layers. Test accuracy "
        "from the exported ONNX file on the whole test split, with no fine-tune and after "
        f"{args.finetune_epochs} distilled epoch(s) ({RECIPE}). Latency: the cost model's prediction on the env's "
        "device, and onnxruntime fp32 on this machine at batch 1 (median; the machine was shared with other jobs)."
    )
    return f"{intro}\n\n" + "\n\n".join(parts) + f"\n\nEvery run:\n\n{rows_table(rows)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--models", nargs="+", default=["resnet20", "vgg11"])
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--env", default="raspberry-pi-4")
    parser.add_argument("--spaces", nargs="+", default=SPACES)
    parser.add_argument("--macs", type=float, default=0.5)
    parser.add_argument("--agent", default="ddpg")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-images", type=int, default=1000)
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    root = RESULTS / "techniques"
    if args.quick:
        args.models, args.dataset, args.episodes, args.val_images = ["digits-cnn"], "digits", 8, None
        root = Path(tempfile.mkdtemp(prefix="bench-techniques-"))
    rows, bases = [], {}
    for model in args.models:
        for space in args.spaces:
            rows.append(measure(model, args.dataset, space, root / f"{model}-macs{args.macs}", args))
            print(json.dumps(rows[-1]), flush=True)
        bases[model] = unpruned_test_accuracy(model, args.dataset, args.data_dir)
    raw = {"unpruned_test_accuracy": bases, "runs": rows}
    models = ", ".join(args.models)
    title = f"Techniques: pruning, low-rank factorisation and both, {models} at {args.macs:.0%} of the MACs"
    publish(f"techniques-{'-'.join(args.models)}", title, render(rows, bases, args), raw, args.quick)


if __name__ == "__main__":
    main()
