"""The hardware arena: where a search beats the pipeline a user would build by hand. Three device budgets that a MACs
ratio does not express — latency on a Raspberry Pi 4 (`prune-quant`), energy on a phone with an edge server over LTE
(`full`: bits, low rank, split, adaptation; a run folder keeps the space it searched), storage on a microcontroller
below the all-8-bit model (4- or 8-bit weights) — each set at a fraction of the unpruned model's predicted cost. On
each, the search (``--agents``, default ddpg) meets Torch-Pruning's one-shot global pruning at uniform 8-bit (4-bit
weights where 8 bits cannot meet the budget; the ``tp-taylor-int8`` agent), refitted by the same least squares,
scored, exported and measured alike: test accuracy of the exported ``model.onnx`` without fine-tune and after one
distilled epoch.

    python bench/bench_arena.py --quick                          # digits, seconds (CI smoke test)
    python bench/bench_arena.py --data-dir ../shared/data        # ResNet-20 / CIFAR-10, ~1 h on 2 cores

Resumable: each search and export lives in ``bench/results/arena/<model>/<scenario>/<agent>/`` and is reused.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autocompress.env import AutoCompressEnv, build_workload
from autocompress.search import SearchConfig
from bench.bench_quality import export, unpruned_test_accuracy
from bench.common import RESULTS, markdown_table, publish, run_search

PRESETS = Path(__file__).resolve().parent / "presets"


@dataclass(frozen=True)
class Scenario:
    """One device budget: the env preset, the space, which cost is budgeted and at what fraction of the unpruned
    model's (float) cost."""

    name: str
    env: str
    space: str
    budget: str
    fraction: float


SCENARIOS = (
    Scenario("pi4-latency", str(PRESETS / "arena-pi4.yaml"), "prune-quant", "latency_ms", 0.4),
    Scenario("phone-lte-energy", str(PRESETS / "arena-phone-lte.yaml"), "full", "energy_mj", 0.4),
    Scenario("mcu-storage", str(PRESETS / "arena-mcu.yaml"), "prune-quant", "storage_bytes", 0.125),
)


def budget_value(scenario: Scenario, model: str, dataset: str, data_dir: str | None) -> float:
    """The scenario's budget: its fraction of the unpruned float model's predicted cost on the device."""
    workload = build_workload(model, dataset, True, None, data_dir, 50)
    env = AutoCompressEnv(workload=workload, env_preset=scenario.env, space=scenario.space)
    return float(env.reference[scenario.budget]) * scenario.fraction


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--agents", nargs="+", default=["ddpg", "tp-taylor-int8"])
    parser.add_argument("--scenarios", nargs="+", default=[s.name for s in SCENARIOS])
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-images", type=int, default=1000)
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument(
        "--done-only",
        action="store_true",
        help="publish the searches and exports already done, run nothing new (the table says which are missing)",
    )
    args = parser.parse_args()
    dataset = "cifar10"
    root = RESULTS / "arena" / args.model
    if args.quick:
        args.model, dataset, args.episodes, args.val_images, args.scenarios = (
            "digits-cnn",
            "digits",
            8,
            None,
            ["pi4-latency"],
        )
        root = Path(tempfile.mkdtemp(prefix="bench-arena-"))
    scenarios = [s for s in SCENARIOS if s.name in args.scenarios]
    if args.quick:  # the digits CNN's latency is mostly per-layer overhead: 40 % of it is out of reach
        scenarios = [dataclasses.replace(s, fraction=0.9) for s in scenarios]
    rows: list[dict[str, Any]] = []
    missing: list[str] = []
    for scenario in scenarios:
        value = budget_value(scenario, args.model, dataset, args.data_dir)
        for agent in args.agents:
            config = SearchConfig(
                model=args.model,
                dataset=dataset,
                env=scenario.env,
                agent=agent,
                space=scenario.space,
                episodes=1 if agent.startswith("tp-") else args.episodes,
                seed=args.seed,
                data_dir=args.data_dir,
                budgets={scenario.budget: value},
                val_images=args.val_images,
                exp="bench-arena",
            )
            folder = root / scenario.name / agent
            done = (folder / "export-ft0" / "report.json").exists() and (
                not args.finetune_epochs or (folder / f"export-ft{args.finetune_epochs}" / "report.json").exists()
            )
            if args.done_only and not done:
                missing.append(f"{agent} on {scenario.name}")
                continue
            summary = run_search(folder, config)
            plain = export(folder, 0, args.data_dir)
            tuned = export(folder, args.finetune_epochs, args.data_dir) if args.finetune_epochs else plain
            policy = json.loads((folder / "export-ft0" / "policy.json").read_text())
            rows.append(row(scenario, value, agent, summary, plain, tuned, policy))
            print(rows[-1], flush=True)
    if not rows:
        raise SystemExit(f"nothing to publish: no search of {', '.join(args.agents)} is done under {root}.")
    base = unpruned_test_accuracy(args.model, dataset, args.data_dir)
    body = render(rows, base, args)
    if missing:
        body += "\n\nNot run (`--done-only` published what was done): " + ", ".join(missing) + "."
    publish(f"arena-{args.model}", f"The hardware arena: {args.model}", body, rows, args.quick)


def row(
    scenario: Scenario,
    value: float,
    agent: str,
    summary: dict[str, Any],
    plain: dict[str, Any],
    tuned: dict[str, Any],
    policy: dict[str, Any],
) -> dict[str, Any]:
    device = plain["device"]
    layers = list(policy["layers"].values()) or [policy["default"]]
    bits = sorted({(s["wbits"], s["abits"]) for s in layers}, reverse=True)
    return {
        "scenario": scenario.name,
        "budget": f"{scenario.budget} <= {value:.4g} ({scenario.fraction:.0%} of unpruned)",
        "agent": agent,
        "episodes": summary["episodes"],
        "val acc": summary["best_accuracy"],
        "test acc": plain["test_accuracy"],
        "test acc (ft)": tuned["test_accuracy"],
        "MACs ratio": plain["macs_ratio"],
        "cost": device[scenario.budget],
        "split": policy["split"],
        "adapt": policy["adapt"],
        "bits (w/a)": " ".join(f"{w}/{a}" for w, a in bits),
    }


def render(rows: list[dict[str, Any]], base: float, args: argparse.Namespace) -> str:
    columns = list(rows[0])
    table = markdown_table(columns, [[r[c] for c in columns] for r in rows])
    gaps = []
    for scenario in dict.fromkeys(r["scenario"] for r in rows):
        mine = {r["agent"]: r for r in rows if r["scenario"] == scenario}
        searched = [a for a in mine if not a.startswith("tp-")]
        one_shot = [a for a in mine if a.startswith("tp-")]
        for s in searched:
            for o in one_shot:
                no_ft = 100 * (mine[s]["test acc"] - mine[o]["test acc"])
                ft = 100 * (mine[s]["test acc (ft)"] - mine[o]["test acc (ft)"])
                gaps.append([scenario, f"{s} − {o}", f"{no_ft:+.2f}", f"{ft:+.2f}"])
    intro = (
        f"{args.model} on the {args.val_images or 'whole'}-image validation slice for the search, test accuracy on "
        f"the whole test split from the exported `model.onnx` (onnxruntime), without fine-tune and after "
        f"{args.finetune_epochs} distilled epoch(s); {args.episodes} episodes per search, seed {args.seed}; the "
        f"one-shot agents play one episode. Unpruned test accuracy {base:.4f}. `cost` is the budgeted cost of the "
        "exported policy as the cost model predicts it."
    )
    gap_table = markdown_table(["scenario", "search − one-shot", "test pt, no fine-tune", "test pt, fine-tuned"], gaps)
    return f"{intro}\n\n{table}\n\n{gap_table}"


if __name__ == "__main__":
    main()
