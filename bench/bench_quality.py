"""Search quality against baselines: every agent — the searchers and Torch-Pruning's one-shot global pruning —
works on the same space at the same MACs budget with the same evaluator (least-squares reconstruction included);
then each best policy is exported (sequential reconstruction) with no fine-tune and with the same short fine-tune,
and measured on the test split from the exported ONNX file. ``--long-finetune N`` adds an N-epoch distilled
fine-tune of the best searched policy and of the best Torch-Pruning baseline.

    python bench/bench_quality.py --quick        # digits, three agents, seconds (CI smoke test)
    python bench/bench_quality.py --data-dir ../shared/data --agents ddpg tp-taylor tp-magnitude uniform \\
        --episodes 300 --seeds 0 --val-images 1000 --finetune-epochs 1 --long-finetune 20   # ResNet-20, hours

Resumable: each search and each export lives in ``bench/results/quality/<model>-macs<budget>/``; a finished one is
reused, an interrupted search continues from its checkpoint. Those folders are not committed; on a fresh checkout
``--reuse AGENT ...`` takes those agents' runs, where their folders are missing, from the committed raw results of
the same command instead of redoing them (the note under the tables names them and their date), so a long fine-tune
can be added to one agent alone.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from autocompress.deploy.export import ExportOptions, export_run
from autocompress.search import SearchConfig
from bench.common import ONE_EPISODE, RESULTS, markdown_table, publish, rows_table, run_search, section_date

RECIPE = (
    "SGD Nesterov, lr 0.01 with a 5 % linear warm-up then cosine, batch 128, gradients clipped at norm 2, "
    "distillation from the unpruned model at T 4 with weight 0.9"
)

AGENTS = ["ddpg", "ppo", "tpe", "random", "uniform", "tp-taylor", "tp-magnitude"]
BASELINES = ("uniform", "tp-taylor", "tp-magnitude")
LONG_KEYS = ("test_accuracy_long_ft", "val_accuracy_per_epoch")  # in the long fine-tune's table, not every run's
NOTE_KEYS = ("measured", "reused")  # in the note under the tables, not every run's


def committed_runs(name: str, episodes: int) -> dict[tuple[str, int], dict[str, Any]]:
    """The runs of the committed raw results ``name`` (same model, budget and space) that searched ``episodes``
    episodes (any number for one-episode agents), by (agent, seed); each keeps the date it was measured."""
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return {}
    raw = json.loads(path.read_text())
    date = section_date(name) or "an earlier run"
    return {
        (r["agent"], r["seed"]): {**r, "measured": r.get("measured", date)}
        for r in raw["runs"]
        if r["episodes"] == episodes or r["agent"] in ONE_EPISODE
    }


def export(run: Path, epochs: int, data_dir: str | None) -> dict[str, Any]:
    out = run / f"export-ft{epochs}"
    if (out / "report.json").exists():
        return dict(json.loads((out / "report.json").read_text()))
    # A killed fine-tune resumes from out/finetune/ (a checkpoint per epoch).
    return export_run(run, out, ExportOptions(finetune_epochs=epochs, data_dir=data_dir, latency_repeats=20))


def unpruned_test_accuracy(model: str, dataset: str, data_dir: str | None) -> float:
    from autocompress.data import load_dataset
    from autocompress.models import load_model
    from autocompress.models.training import evaluate_accuracy

    splits = load_dataset(dataset, data_dir)
    net = load_model(model, splits.info.num_classes, splits.info.input_shape, dataset, pretrained=True)
    return evaluate_accuracy(net, splits.test_x, splits.test_y, splits)


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def render(rows: list[dict[str, Any]], base: float, args: argparse.Namespace) -> str:
    per_agent = []
    for agent in dict.fromkeys(r["agent"] for r in rows):
        mine = [r for r in rows if r["agent"] == agent]
        per_agent.append(
            [
                agent,
                len(mine),
                spread([r["best_val_accuracy"] for r in mine]),
                f"{statistics.mean(r['search_wall_s'] for r in mine):.0f}",
                spread([r["test_accuracy_no_ft"] for r in mine]),
                spread([r["test_accuracy_ft"] for r in mine]),
                f"{statistics.mean(r['test_accuracy_ft'] for r in mine) - base:+.4f}",
                f"{statistics.mean(r['macs_ratio'] for r in mine):.3f}",
            ]
        )
    columns = [
        "agent",
        "seeds",
        "best val acc",
        "search s",
        "test acc",
        f"test acc ({args.finetune_epochs}-ep ft)",
        "vs unpruned",
        "MACs ratio",
    ]
    intro = (
        f"{args.model} on {args.dataset}, env `{args.env}`, space `{args.space}`, budget {args.macs:.0%} of the MACs, "
        f"{args.episodes} episodes per search ({args.val_images} validation images per evaluation), seeds "
        f"{', '.join(map(str, args.seeds))}; `uniform` is one episode (the bisected single keep ratio). Test accuracy "
        f"is measured on the {args.test_images or 'whole'} test split from the exported ONNX file, after sequential "
        f"least-squares reconstruction, with no fine-tune"
        + (
            f" and after the same {args.finetune_epochs}-epoch fine-tune ({RECIPE})"
            if args.finetune_epochs
            else " (no fine-tune was asked for: both test columns are the same export)"
        )
        + f". Search val accuracy is what the search scored (`{args.reconstruct}` reconstruction). Unpruned "
        f"test accuracy: {base:.4f}."
    )
    detail = rows_table([{k: v for k, v in r.items() if k not in LONG_KEYS + NOTE_KEYS} for r in rows])
    body = f"{intro}\n\n{markdown_table(columns, per_agent)}\n\nEvery run:\n\n{detail}"
    long = [r for r in rows if "test_accuracy_long_ft" in r]
    if long:
        table = markdown_table(
            [
                "agent",
                "seed",
                f"test acc ({args.long_finetune}-ep ft)",
                "vs unpruned",
                "MACs ratio",
                "val acc by epoch",
            ],
            [
                [
                    r["agent"],
                    r["seed"],
                    f"{r['test_accuracy_long_ft']:.4f}",
                    f"{r['test_accuracy_long_ft'] - base:+.4f}",
                    f"{r['macs_ratio']:.3f}",
                    " ".join(f"{v:.3f}" for v in r.get("val_accuracy_per_epoch", [])),
                ]
                for r in long
            ],
        )
        body += (
            "\n\nLong fine-tune of the best run of "
            + (", ".join(args.long_agents) if args.long_agents else "the searchers and of the Torch-Pruning baselines")
            + f" (by test accuracy without fine-tune), {args.long_finetune} epochs, same recipe:\n\n{table}"
        )
    earlier = sorted({r["measured"] for r in rows if r.get("reused")})
    if earlier:
        body += (
            "\n\nMeasured on an earlier run of this command and reused (`--reuse`, their run folders were not on this "
            "checkout): "
            + "; ".join(
                f"{', '.join(sorted({r['agent'] for r in rows if r.get('reused') and r['measured'] == d}))} on {d}"
                for d in earlier
            )
            + ". Everything else was measured on "
            + time.strftime("%Y-%m-%d")
            + "."
        )
    return body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--env", default="raspberry-pi-4")
    parser.add_argument("--space", default="prune")
    parser.add_argument("--macs", type=float, default=0.5)
    parser.add_argument("--agents", nargs="+", default=AGENTS)
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--val-images", type=int, default=1000)
    parser.add_argument("--test-images", type=int, default=None)
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--long-finetune", type=int, default=0, help="epochs of the long fine-tune (0: none)")
    parser.add_argument(
        "--long-agents",
        nargs="+",
        default=None,
        help="agents whose best run gets the long fine-tune (default: the best searched and the best baseline)",
    )
    parser.add_argument("--data-dir", default=None)
    parser.add_argument(
        "--reuse",
        nargs="+",
        default=[],
        metavar="AGENT",
        help="agents whose runs, when their folders are missing, come from the committed raw results of this command",
    )
    args = parser.parse_args()
    root = RESULTS / "quality" / f"{args.model}-macs{args.macs}"
    if args.space != "prune":
        root = root.with_name(f"{root.name}-{Path(args.space).stem}")
    if args.quick:
        args.model, args.dataset, args.agents, args.episodes, args.seeds = (
            "digits-cnn",
            "digits",
            ["ddpg", "uniform", "tp-taylor"],
            12,
            [0],
        )
        args.val_images, args.finetune_epochs = None, 1
        root = Path(tempfile.mkdtemp(prefix="bench-quality-"))
    name = f"quality-{root.name}"
    committed = committed_runs(name, args.episodes) if not args.quick else {}
    rows: list[dict[str, Any]] = []
    for agent in args.agents:
        for seed in args.seeds if agent not in ONE_EPISODE else args.seeds[:1]:
            config = SearchConfig(
                model=args.model,
                dataset=args.dataset,
                env=args.env,
                agent=agent,
                space=args.space,
                episodes=args.episodes,
                seed=seed,
                data_dir=args.data_dir,
                budgets={"macs_ratio": args.macs},
                val_images=args.val_images,
                exp="bench-quality",
            )
            folder = root / f"{agent}-s{seed}"
            if agent in args.reuse and not (folder / "config.json").exists() and (agent, seed) in committed:
                rows.append({**committed[agent, seed], "reused": True})
                print(f"reused from bench/results/{name}.json: {json.dumps(rows[-1])}", flush=True)
                continue
            summary = run_search(folder, config)
            plain = export(folder, 0, args.data_dir)
            report = export(folder, args.finetune_epochs, args.data_dir)
            rows.append(
                {
                    "agent": agent,
                    "seed": seed,
                    "episodes": summary["episodes"],
                    "best_val_accuracy": summary["best_accuracy"],
                    "best_episode": summary["best_episode"],
                    "search_wall_s": summary["search_wall_s"],
                    "macs_ratio": report["macs_ratio"],
                    "test_accuracy_no_ft": plain["test_accuracy"],
                    "test_accuracy_ft": report["test_accuracy"],
                    "measured": time.strftime("%Y-%m-%d"),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    if args.long_finetune:
        groups = (
            [[r for r in rows if r["agent"] == agent] for agent in args.long_agents]
            if args.long_agents
            else [[r for r in rows if r["agent"] not in BASELINES], [r for r in rows if r["agent"] in BASELINES[1:]]]
        )
        for group in groups:
            if group:
                best = max(group, key=lambda r: r["test_accuracy_no_ft"])
                if best.get("reused"):
                    if "test_accuracy_long_ft" in best:
                        continue  # reused with its long fine-tune
                    raise SystemExit(
                        f"the best {best['agent']} run was reused from bench/results/{name}.json without a long "
                        "fine-tune and its run folder is not here; run again without --reuse"
                    )
                folder = root / f"{best['agent']}-s{best['seed']}"
                report = export(folder, args.long_finetune, args.data_dir)
                best["test_accuracy_long_ft"] = report["test_accuracy"]
                best["val_accuracy_per_epoch"] = report["finetune"]["val_accuracy"]
                print(json.dumps(best), flush=True)
    from autocompress.env.presets import load_space_preset

    args.reconstruct = load_space_preset(args.space).reconstruct
    base = unpruned_test_accuracy(args.model, args.dataset, args.data_dir)
    raw = {"unpruned_test_accuracy": base, "runs": rows}
    title = f"Search quality: {args.model} at {args.macs:.0%} MACs"
    publish(name, title, render(rows, base, args), raw, args.quick)


if __name__ == "__main__":
    main()
