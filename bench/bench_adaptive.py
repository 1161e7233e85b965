"""What an adaptive package buys over one static model, replayed over the shipped context traces.

For each deployment: a search (TPE over the ``full`` space: keep, low rank, bits, split point, adaptation — a run
folder keeps the space it searched, so one made before low rank joined ``full`` resumes without it), its adaptive
package (``export --adaptive``: configurations from the Pareto front, each reconstructed and verified), then
``simulate`` over each shipped trace. Energy, accuracy and hard-budget violations are compared with the best static
configuration of the package that meets every budget of the trace, the uncompressed model and the per-step oracle;
the drift trace also reports how many inputs after a shift's onset the monitor fired and what adaptation recovered.

    python bench/bench_adaptive.py --quick       # digits, one deployment, seconds (CI smoke test)
    python bench/bench_adaptive.py --data-dir ../shared/data --episodes 150   # ResNet-20, two deployments
    python bench/bench_adaptive.py ... --share-weights   # nested configurations sharing weights (own section)
    python bench/bench_adaptive.py ... --train-epochs 2  # nested and trained once together (own section)
    python bench/bench_adaptive.py --model digits-cnn --dataset digits --envs mcu --space prune --episodes 60 \
        --train-epochs 5      # the README's digits example where its energy follows its MACs (own section)

Resumable: searches and packages live in ``bench/results/adaptive/<model>-<env>/`` and are reused.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from autocompress.deploy.adaptive import AdaptiveOptions, export_adaptive
from autocompress.deploy.simulate import shipped_traces, simulate
from autocompress.search import SearchConfig
from bench.common import RESULTS, ROOT, publish, rows_table, run_search

OWN_NOTE = "Each configuration is refitted on its own (sequential least squares) and stored whole."
TRAINED_NOTE = (
    "Configurations are nested slices of one union model trained once for all of them (`--train-epochs {n}`: "
    "{rule} — distilled from the "
    "unpruned model, each configuration's gradient clipped on its own before they are summed, fake-quantised "
    "below 8 bits; each configuration's BatchNorm scale and shift trained as its "
    "own and its statistics re-estimated); the shared weights are stored once. Validation accuracy per "
    "configuration after each epoch: {curve}."
)
SHARED_NOTE = (
    "Configurations are nested slices of one union model whose weights are refitted jointly for all of them "
    "(`--share-weights`); each keeps only its BatchNorm statistics, the shared weights are stored once. Beyond the "
    "most accurate, the cheapest and a split one, each configuration is the one that grows the union least."
)


def package_for(root: Path, model: str, dataset: str, env: str, args: argparse.Namespace) -> Path:
    folder = root / f"{model}-{env}-{Path(args.space).stem}"
    config = SearchConfig(
        model=model,
        dataset=dataset,
        env=env,
        space=args.space,
        agent="tpe",
        episodes=args.episodes,
        seed=0,
        data_dir=args.data_dir,
        val_images=args.val_images,
        budgets=budgets(args.budget),
    )
    run_search(folder / "search", config)
    name = f"package-trained{args.train_epochs}" if args.train_epochs else "package"
    if args.reconstruct is not None:
        name += f"-{args.reconstruct}"
    if args.train_per_step != 3:  # the sandwich's packages and sections, made before 0 became export's default
        name += f"-per-step{args.train_per_step or '-all'}"
    package = folder / (name.replace("package", "package-shared") if args.share_weights else name)
    if not (package / "manifest.json").exists():
        options = AdaptiveOptions(
            configs=args.configs,
            test_images=args.test_images,
            data_dir=args.data_dir,
            share_weights=args.share_weights,
            train_epochs=args.train_epochs,
            device=args.device,
            **({"reconstruct": args.reconstruct} if args.reconstruct is not None else {}),
            train_per_step=args.train_per_step,
        )
        export_adaptive(folder / "search", package, options)
    return package


def budgets(items: list[str]) -> dict[str, Any]:
    from autocompress.cli.search_cmd import parse_budgets

    return parse_budgets(items)


def drift_figures(result: dict[str, Any]) -> dict[str, Any]:
    """Inputs from each shift's onset to the monitor's first adaptation, and accuracy on the drifted steps."""
    delays = []
    for onset in result["shift_onsets"]:
        fired = [
            e["input"] - onset["input"]
            for e in result["events"]
            if e["event"] == "adapt" and e["input"] > onset["input"]
        ]
        delays.append(min(fired) if fired else None)
    drifted = {r["step"] for r in result["rows"] if r["shift"] not in ("none", None)}

    def mean_on(strategy: str) -> float:
        return statistics.mean(
            r["accuracy"] for r in result["rows"] if r["strategy"] == strategy and r["step"] in drifted
        )

    return {
        "inputs_to_adapt": delays,
        "drifted_acc_adaptive": mean_on("adaptive") if drifted else None,
        "drifted_acc_static": mean_on("static_feasible") if drifted else None,
    }


def note(args: argparse.Namespace, raw: dict[str, Any]) -> str:
    if not args.train_epochs:
        return SHARED_NOTE if args.share_weights else OWN_NOTE
    curves = []
    for env in args.envs:
        training = raw.get(f"{env}/training") or {}
        per_epoch = [" / ".join(f"{a:.3f}" for a in accs) for accs in training.get("val_accuracy", [])]
        curves.append(f"{env}: " + " → ".join(per_epoch))
    start = (
        "The union starts from the unpruned model's weights (`--reconstruct none`: no least-squares refit). "
        if args.reconstruct == "none"
        else "The union starts from a joint least-squares refit for all configurations. "
    )
    n = args.train_per_step
    rule = (
        "every configuration each step (`--train-per-step 0`)"
        if n == 0
        else "sandwich rule — the largest, the smallest and a random middle configuration each step"
        if n == 3
        else f"the largest, the smallest and {n - 2} random middle configurations each step (`--train-per-step {n}`)"
    )
    return start + TRAINED_NOTE.format(n=args.train_epochs, rule=rule, curve="; ".join(curves))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--envs", nargs="+", default=["raspberry-pi-4-wifi", "phone-lte"])
    parser.add_argument("--traces", nargs="+", default=None)
    parser.add_argument("--episodes", type=int, default=150)
    parser.add_argument("--space", default="full", help="search space preset (name or YAML path)")
    parser.add_argument("--budget", nargs="*", default=[], help="budget overrides, e.g. macs=0.5")
    parser.add_argument("--val-images", type=int, default=500)
    parser.add_argument("--test-images", type=int, default=2000)
    parser.add_argument("--configs", type=int, default=4)
    parser.add_argument("--images-per-step", type=int, default=200)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument(
        "--share-weights",
        action="store_true",
        help="nested configurations with shared weights (export --adaptive --share-weights); "
        "written as its own section",
    )
    parser.add_argument(
        "--train-epochs",
        type=int,
        default=0,
        help="train the nested configurations once together (export --adaptive --train-epochs); "
        "written as its own section",
    )
    parser.add_argument("--device", default="auto", help="where the union trains (auto, cpu, cuda)")
    parser.add_argument(
        "--reconstruct",
        default=None,
        choices=["sequential", "fast", "none"],
        help="refit of the package's configurations (export --reconstruct; default: export's); named in the "
        "package folder",
    )
    parser.add_argument(
        "--train-per-step",
        type=int,
        default=3,
        help="configurations per training step (export --train-per-step; 0: all; default 3, the sandwich rule, as "
        "the published trained sections were made; other values are named in the package folder and section)",
    )
    args = parser.parse_args()
    if args.quick:
        args.model, args.dataset, args.envs, args.episodes = "digits-cnn", "digits", ["raspberry-pi-4-wifi"], 12
        args.val_images, args.test_images, args.images_per_step, args.configs = None, 120, 40, 3
    traces = args.traces or shipped_traces()
    root = Path(tempfile.mkdtemp()) if args.quick else RESULTS / "adaptive"
    rows, configs, raw = [], [], {}
    for env in args.envs:
        package = package_for(root, args.model, args.dataset, env, args)
        table = json.loads((package / "manifest.json").read_text())
        for trace in traces:
            sims = package.parent / f"sim-{package.name}-{trace}"
            result = simulate(package, trace, args.images_per_step, args.data_dir, sims)
            totals, static = result["totals"], result["totals"]["static_accurate"]
            feasible = totals["static_feasible"]
            drift = drift_figures(result)
            raw[f"{env}/{trace}"] = {k: v for k, v in result.items() if k != "rows"} | {"drift": drift}
            raw[f"{env}/{trace}"]["package"] = os.path.relpath(package, ROOT)
            for strategy, t in totals.items():
                rows.append(
                    {
                        "env": env,
                        "trace": trace,
                        "strategy": strategy,
                        "mean acc": round(t["mean_accuracy"], 4),
                        "energy mJ": round(t["energy_mj"], 1),
                        "energy vs static_accurate": f"{t['energy_mj'] / static['energy_mj'] - 1:+.1%}",
                        "acc vs static_accurate (pt)": round(100 * (t["mean_accuracy"] - static["mean_accuracy"]), 2),
                        "acc vs static_feasible (pt)": round(100 * (t["mean_accuracy"] - feasible["mean_accuracy"]), 2),
                        "violating steps": t["violation_steps"],
                        "switches": t["switches"],
                        "battery at end (least)": f"{t['final_battery']:.2f} ({t['min_battery']:.2f})",
                    }
                )
        raw[f"{env}/storage"] = table["storage"]
        raw[f"{env}/training"] = table.get("training")
        # false alarms: a clean stream whose classes arrive in order (every image of class 0, then 1, …)
        sorted_run = simulate(package, "battery-day", args.images_per_step, args.data_dir, None, order="by-class")
        raw[f"{env}/false-alarms"] = sum(e["event"] == "drift" for e in sorted_run["events"])
        for c in table["configs"]:
            configs.append(
                {
                    "env": env,
                    "config": c["id"],
                    "origin": c["origin"],
                    "val acc": round(c["val_accuracy"], 4),
                    "test acc": round(c["test_accuracy"], 4),
                    "MACs ratio": round(c["macs_ratio"], 3),
                    "split": c["split"] or "-",
                    "storage B (at its bits)": c["costs"]["storage_bytes"],
                }
            )
    summary = []
    for env in args.envs:
        storage = raw[f"{env}/storage"]
        switch = [raw[f"{env}/{t}"]["totals"]["adaptive"]["switch_ms_median"] for t in traces]
        line = {
            "env": env,
            "package on disk / largest config alone": round(storage["ratio_to_largest"], 3),
            "median decision+switch ms": round(statistics.median(switch), 4),
            "drift alarms on a class-sorted clean stream": raw[f"{env}/false-alarms"],
        }
        if "camera-drift" in traces:
            drift = raw[f"{env}/camera-drift"]["drift"]
            line |= {
                "inputs from shift to adaptation": drift["inputs_to_adapt"],
                "drifted steps acc adaptive": drift["drifted_acc_adaptive"],
                "drifted steps acc static": drift["drifted_acc_static"],
            }
        summary.append(line)
    body = (
        f"Model {args.model} on {args.dataset}; TPE over the `{Path(args.space).stem}` space "
        f"({args.episodes} episodes, seed 0{', budgets ' + ' '.join(args.budget) if args.budget else ''}), "
        f"{args.configs} configurations per package, {args.images_per_step} test images per trace step. Energy is "
        "the cost model's prediction per inference × images (plus AdaBN's forward passes for the adaptive runtime); "
        "each strategy's battery drains with what it spends (the trace's battery is `static_accurate`'s; README "
        '"Traces"); '
        "`static_accurate` is the package's most accurate configuration whatever the context (its violations "
        "counted), `static_feasible` the most accurate one that meets every hard budget at every step. Packages "
        "hold the Pareto front's configurations and a ladder derived from the most accurate one at 1.0, 0.5 and "
        "0.25 of the MACs, dominated ones left out. "
        + note(args, raw)
        + "\n\n"
        + rows_table(configs)
        + "\n\n"
        + rows_table(rows)
        + "\n\n"
        + rows_table(summary)
        + "\n\nStorage: "
        + raw[f"{args.envs[0]}/storage"]["measure"]
        + "."
    )
    name, title = "adaptive", "Adaptive package vs static model over context traces"
    if args.train_epochs:
        name, title = "adaptive-trained", title + ": nested configurations trained once together"
    elif args.share_weights:
        name, title = "adaptive-shared", title + ": nested configurations, shared weights"
    if args.model != "resnet20":  # a section of its own per model (ResNet-20's sections keep their names)
        name, title = f"{name}-{args.model}-{'-'.join(args.envs)}", f"{title} ({args.model}, {', '.join(args.envs)})"
    elif args.train_epochs:  # trained packages take long: a section per deployment, so one run never erases another
        name, title = f"{name}-{'-'.join(args.envs)}", f"{title} ({', '.join(args.envs)})"
    if args.reconstruct is not None:
        name, title = f"{name}-{args.reconstruct}", f"{title}, --reconstruct {args.reconstruct}"
    if args.train_per_step != 3:
        n = args.train_per_step
        name, title = f"{name}-per-step{n or '-all'}", f"{title}, --train-per-step {n}"
    publish(name, title, body, raw, args.quick)


if __name__ == "__main__":
    main()
