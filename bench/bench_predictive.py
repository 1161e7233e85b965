"""Does the search's score predict what ships? Policies at one MACs budget — the best of each search and baseline
in ``bench/results/quality/<model>-macs<budget>/`` plus random ones drawn through the environment (so they are
diverse and all meet the budget) — are scored as the search scores them, without and with the fast least-squares
reconstruction, then exported (sequential reconstruction) and fine-tuned with the same recipe and measured on the
test split from the ONNX file. Spearman's ρ between each search-time score and the shipped accuracy.

    python bench/bench_predictive.py --quick     # digits, seconds (CI smoke test)
    python bench/bench_predictive.py --data-dir ../shared/data --random 6 --finetune-epochs 1   # ResNet-20, ~30 min

Resumable: each policy's export lives in ``bench/results/predictive/<model>-macs<budget>/``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from autocompress.compress.evaluator import EvaluatorOptions, PolicyEvaluator
from autocompress.compress.policy import Policy
from autocompress.deploy.export import ExportOptions, export_run
from autocompress.search import SearchConfig, SearchJob
from bench.common import RESULTS, markdown_table, publish, rows_table


def searched_policies(roots: list[Path]) -> list[tuple[str, dict[str, Any], Path | None]]:
    """(name, policy, run folder) of the best policy of every finished run under ``roots`` (bench_quality's folders
    for one model and budget, whatever space scored them)."""
    found: list[tuple[str, dict[str, Any], Path | None]] = []
    for root in roots:
        suffix = root.name.partition("-macs")[2].partition("-")[2]
        for best in sorted(root.glob("*/best_policy.json")):
            name = best.parent.name + (f"-{suffix}" if suffix else "")
            found.append((name, json.loads(best.read_text())["policy"], best.parent))
    return found


def random_policies(folder: Path, config: SearchConfig, count: int) -> list[tuple[str, dict[str, Any], Path | None]]:
    """``count`` random-action episodes of the environment (seeded as the ``random`` agent seeds them), replayed to
    recover each episode's policy (``progress.csv`` keeps none)."""
    run = folder / "random-draws"
    job = SearchJob.resume(run) if (run / "config.json").exists() else SearchJob.create(config, run)
    env, space = job.env, job.env.space
    found: list[tuple[str, dict[str, Any], Path | None]] = []
    for episode in range(count):
        rng = np.random.default_rng([config.seed, episode])
        env.reset(seed=config.seed + episode)
        info: dict[str, Any] = {}
        for _ in space.steps:
            *_, info = env.step(rng.uniform(-1, 1, space.action_dim).astype(np.float32))
        found.append((f"random-{episode}", info["policy"], None))
    return found


MODES = ("none", "fast", "sequential")


def scores(job: SearchJob, policy: dict[str, Any]) -> list[float]:
    """Validation accuracy as a search scores it, with each reconstruction mode."""
    base = job.env.workload.evaluator
    result = []
    for mode in MODES:
        evaluator = PolicyEvaluator(
            base.model,
            base.info,
            base.val_images,
            base.val_labels,
            base.train_images,
            EvaluatorOptions(reconstruct=mode),
            table=base.table,
        )
        result.append(evaluator.evaluate(Policy.from_dict(policy)).accuracy)
    return result


def shipped(
    folder: Path, run: Path, name: str, policy: dict[str, Any], source: Path | None, epochs: int, data_dir: str | None
) -> float:
    """Test accuracy from ONNX after sequential reconstruction and the fine-tune (export of one fixed policy; a
    run's own export by bench_quality is reused)."""
    out = folder / f"{name}-ft{epochs}"
    for done in (out, *([source / f"export-ft{epochs}"] if source else [])):
        if (done / "report.json").exists():
            return float(json.loads((done / "report.json").read_text())["test_accuracy"])
    single = folder / f"{name}-run"
    if not single.exists():  # a run folder whose best policy is this one, so the export picks it
        single.mkdir(parents=True)
        for item in ("config.json", "system.json", "command.txt"):
            (single / item).write_text((run / item).read_text())
        (single / "best_policy.json").write_text(json.dumps({"policy": policy, "accuracy": 0.0, "reward": 0.0}))
    return float(export_run(single, out, ExportOptions(finetune_epochs=epochs, data_dir=data_dir))["test_accuracy"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--env", default="raspberry-pi-4")
    parser.add_argument("--space", default="prune")
    parser.add_argument("--macs", type=float, default=0.5)
    parser.add_argument("--random", type=int, default=6, help="random policies added to the searched ones")
    parser.add_argument("--val-images", type=int, default=1000)
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    quality = sorted((RESULTS / "quality").glob(f"{args.model}-macs{args.macs}*"))
    folder = RESULTS / "predictive" / f"{args.model}-macs{args.macs}"
    if args.quick:
        args.model, args.dataset, args.random, args.val_images, args.finetune_epochs = (
            "digits-cnn",
            "digits",
            4,
            None,
            1,
        )
        folder = Path(tempfile.mkdtemp(prefix="bench-predictive-"))
        quality = []
    config = SearchConfig(
        model=args.model,
        dataset=args.dataset,
        env=args.env,
        agent="random",
        space=args.space,
        episodes=1,
        seed=0,
        data_dir=args.data_dir,
        budgets={"macs_ratio": args.macs},
        val_images=args.val_images,
        exp="bench-predictive",
    )
    policies = searched_policies(quality) + random_policies(folder, config, args.random)
    job = SearchJob.resume(folder / "random-draws")
    rows = []
    for name, policy, source in policies:
        scored = scores(job, policy)
        test = shipped(folder, job.run_dir, name, policy, source, args.finetune_epochs, args.data_dir)
        rows.append(
            {"policy": name, **{f"val_acc_{m}": v for m, v in zip(MODES, scored, strict=True)}, "test_acc_ft": test}
        )
        print(json.dumps(rows[-1]), flush=True)
    tests = [r["test_acc_ft"] for r in rows]
    rho = {m: float(spearmanr([r[f"val_acc_{m}"] for r in rows], tests).statistic) for m in MODES}
    labels = {
        "none": "no reconstruction",
        "fast": "fast reconstruction",
        "sequential": "sequential reconstruction (the default of search and export)",
    }
    summary = markdown_table(
        ["search-time score: val accuracy after", "Spearman ρ with shipped test accuracy", "policies"],
        [[labels[m], f"{rho[m]:.3f}", len(rows)] for m in MODES],
    )
    body = (
        f"{args.model} on {args.dataset}, env `{args.env}`, space `{args.space}`, {args.macs:.0%} MACs; "
        f"{len(rows)} policies (the best of each run in `bench/results/quality/`, and {args.random} random draws "
        f"of the environment). Shipped = test accuracy from ONNX after sequential reconstruction and a "
        f"{args.finetune_epochs}-epoch distilled fine-tune.\n\n{summary}\n\nEvery policy:\n\n{rows_table(rows)}"
    )
    raw = {"rho": rho, "rows": rows}
    publish(
        f"predictive-{args.model}-macs{args.macs}",
        f"Does the search score predict what ships? ({args.model})",
        body,
        raw,
        args.quick,
    )


if __name__ == "__main__":
    main()
