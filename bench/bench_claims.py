"""The research claims, on our data and our cost model.

(a) split — compress-only vs compress + split (Neurosurgeon) on a Raspberry Pi 4 with an edge server over Wi-Fi
    and over Ethernet: the exhaustive Neurosurgeon scan of the unpruned model, then TPE searches of the `prune` and
    `prune-split` spaces under the same latency budget (half the model's on-device latency).
(b) bits — mixed-precision bits (HAQ/CAQ style, TPE over per-layer weight and activation bits) vs uniform bits
    under the same storage budgets, against the uniform 8-bit model.
(c) drift — accuracy under each shift and severity with no adaptation, AdaBN and TENT; then a DDPG agent trained
    on drifting contexts (keep ratios + adaptation, reward = accuracy − energy) is rolled out per context: how often
    it triggers adaptation per severity and the energy it spends.

    python bench/bench_claims.py --quick                                   # digits, seconds (CI smoke test)
    python bench/bench_claims.py --data-dir ../shared/data --part a b c    # CIFAR-10, about 40 min on 2 cores

Resumable: searches live in ``bench/results/claims/``; finished ones are reused, interrupted ones continue.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from autocompress.compress.adaptation import ADAPTATIONS
from autocompress.compress.policy import LayerSetting, Policy
from autocompress.data.shifts import Shift
from autocompress.env import build_workload
from autocompress.env.deployment import Deployment
from autocompress.search import SearchConfig, SearchJob
from bench.common import RESULTS, publish, rows_table, run_search

PRESETS = Path(__file__).resolve().parent / "presets"
SHIFTS = ("gaussian_noise", "contrast", "gaussian_blur")


def search(folder: Path, config: SearchConfig) -> dict[str, Any]:
    """Run, resume or reuse a search; returns its summary with the best entry."""
    return run_search(folder, config) | {"best": json.loads((folder / "best_policy.json").read_text())}


# --- (a) split ----------------------------------------------------------------------------------------------------


def claim_split(args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    rows = []
    for model in args.models:
        workload = build_workload(model, args.dataset, True, None, args.data_dir, args.val_images)
        base = Policy(model)
        val_acc = workload.evaluator.evaluate(base).accuracy
        for link in ("wifi", "ethernet"):
            deployment = Deployment.from_profiles("raspberry-pi-4", link, "edge-server")
            cost = deployment.cost_model(workload.table, workload.graph)
            device_ms = cost.predict_policy(base).latency_ms
            scan = [
                (cost.predict_policy(base.with_changes(split=p.name)).latency_ms, p.name)
                for p in workload.evaluator.cut_points
            ]
            scan.append((cost.predict_policy(base.with_changes(split="input")).latency_ms, "input"))
            best_ms, best_cut = min(scan)
            budget = round(device_ms * args.latency_fraction, 3)
            row: dict[str, Any] = {
                "model": model,
                "link": link,
                "unpruned_acc": val_acc,
                "device_ms": device_ms,
                "neurosurgeon_ms": best_ms,
                "neurosurgeon_cut": best_cut,
                "budget_ms": budget,
                "split_only_acc": val_acc if best_ms <= budget else "over budget",
            }
            for space in ("prune", "prune-split"):
                config = SearchConfig(
                    model=model,
                    dataset=args.dataset,
                    env=str(PRESETS / f"pi4-{link}.yaml"),
                    agent="tpe",
                    space=str(PRESETS / "prune-split.yaml") if space == "prune-split" else "prune",
                    episodes=args.episodes,
                    seed=0,
                    data_dir=args.data_dir,
                    budgets={"latency_ms": budget},
                    val_images=args.val_images,
                    exp="claim-a",
                )
                found = search(root / "a" / f"{model}-{link}-{space}", config)
                best = found["best"]
                row[f"{space}_acc"] = best["accuracy"]
                row[f"{space}_ms"] = best["latency_ms"]
                if space == "prune-split":
                    row["chosen_split"] = best["policy"]["split"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


# --- (b) bits -----------------------------------------------------------------------------------------------------


def claim_bits(args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    model = args.models[0]
    workload = build_workload(model, args.dataset, True, None, args.data_dir, args.val_images)
    eight = workload.evaluator.evaluate(Policy(model, LayerSetting(wbits=8, abits=8)))
    rows = [
        {
            "method": "uniform 8/8 bits",
            "storage_budget": "-",
            "accuracy": eight.accuracy,
            "storage_bytes": eight.storage_bytes,
            "storage_vs_8bit": 1.0,
            "acc_vs_8bit": 0.0,
        }
    ]
    for fraction in args.storage_fractions:
        budget = int(eight.storage_bytes * fraction)
        for agent in ("uniform", "tpe"):
            config = SearchConfig(
                model=model,
                dataset=args.dataset,
                env=str(PRESETS / "pi4-storage.yaml"),
                agent=agent,
                space="quant",
                episodes=args.episodes,
                seed=0,
                data_dir=args.data_dir,
                budgets={"storage_bytes": budget},
                val_images=args.val_images,
                exp="claim-b",
            )
            best = search(root / "b" / f"{model}-{fraction}-{agent}", config)["best"]
            bits = sorted({(s["wbits"], s["abits"]) for s in best["policy"]["layers"].values()})
            label = f"uniform bits {bits}" if agent == "uniform" else "mixed bits (TPE)"
            rows.append(
                {
                    "method": label,
                    "storage_budget": f"{fraction:.0%} of 8-bit",
                    "accuracy": best["accuracy"],
                    "storage_bytes": best["storage_bytes"],
                    "storage_vs_8bit": best["storage_bytes"] / eight.storage_bytes,
                    "acc_vs_8bit": best["accuracy"] - eight.accuracy,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


# --- (c) drift ----------------------------------------------------------------------------------------------------


def claim_adaptation(args: argparse.Namespace) -> list[dict[str, Any]]:
    model = args.models[0]
    evaluator = build_workload(model, args.dataset, True, None, args.data_dir, args.val_images).evaluator
    rows = []
    for name in SHIFTS:
        for severity in args.severities:
            shift = Shift.parse(f"{name}:{severity}")
            row: dict[str, Any] = {"shift": name, "severity": severity}
            for method in ADAPTATIONS:
                row[method] = evaluator.evaluate(Policy(model, adapt=method), shift).accuracy
            rows.append(row)
            print(json.dumps(row), flush=True)
    clean = evaluator.evaluate(Policy(model)).accuracy
    rows.insert(0, {"shift": "none", "severity": 0, "none": clean, "adabn": "-", "tent": "-"})
    return rows


def claim_trigger(args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    """Train DDPG on drifting contexts, then roll out its deterministic actor in each fixed context."""
    from autocompress.search.rl import trained_model

    model = args.models[0]
    folder = root / "c" / f"{model}-ddpg"
    config = SearchConfig(
        model=model,
        dataset=args.dataset,
        env=str(PRESETS / "pi4-drift.yaml"),
        agent="ddpg",
        space=str(PRESETS / "prune-adapt.yaml"),
        episodes=args.trigger_episodes,
        seed=0,
        data_dir=args.data_dir,
        val_images=args.val_images,
        exp="claim-c",
    )
    search(folder, config)
    job = SearchJob.resume(folder)
    agent = trained_model(job)
    env = job.env
    rows = []
    for severity in [0, *args.severities]:
        shifts = ["none"] if severity == 0 else [f"{name}:{severity}" for name in SHIFTS]
        choices, energy, accuracy, best_choices = [], [], [], []
        for shift in shifts:
            actions, info = rollout(env, agent, shift)
            choices.append(info["policy"]["adapt"])
            energy.append(info["energy_mj"])
            accuracy.append(info["accuracy"])
            # the hindsight choice: the same keep ratios with each adaptation, scored by the same reward
            rewards = {method: replay(env, actions, shift, method)["reward"] for method in ADAPTATIONS}
            best_choices.append(max(rewards, key=lambda m: rewards[m]))
        rows.append(
            {
                "severity": severity,
                "contexts": len(shifts),
                "trigger_rate": sum(c != "none" for c in choices) / len(choices),
                "choices": ", ".join(f"{s.split(':')[0]}→{c}" for s, c in zip(shifts, choices, strict=True)),
                "accuracy": statistics.mean(accuracy),
                "energy_mj": statistics.mean(energy),
                "best_in_hindsight": ", ".join(best_choices),
                "hindsight_trigger_rate": sum(c != "none" for c in best_choices) / len(best_choices),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def rollout(env: Any, agent: Any, shift: str) -> tuple[list[np.ndarray], dict[str, Any]]:
    """The agent's deterministic episode in a fixed context: its actions and the final info."""
    obs, _ = env.reset(seed=0, options={"context": {"shift": shift}})
    done, info, actions = False, {}, []
    while not done:
        action, _ = agent.predict(obs, deterministic=True)
        actions.append(np.asarray(action))
        obs, _, done, _, info = env.step(actions[-1])
    return actions, info


def replay(env: Any, actions: list[np.ndarray], shift: str, adapt: str) -> dict[str, Any]:
    """Replay ``actions`` in the same context with the last step's adaptation replaced by ``adapt``."""
    last = actions[-1].copy()
    dim = env.space.dims.index("adapt")
    last[dim] = env.space.encode({"adapt": adapt})[dim]
    env.reset(seed=0, options={"context": {"shift": shift}})
    info: dict[str, Any] = {}
    for action in [*actions[:-1], last]:
        _, _, _, _, info = env.step(action)
    return info


# --- report -------------------------------------------------------------------------------------------------------


def render(results: dict[str, Any], args: argparse.Namespace) -> str:
    parts = [
        f"Model(s) {', '.join(args.models)} on {args.dataset}; {args.val_images} validation images per evaluation; "
        f"searches of {args.episodes} episodes (TPE, seed 0); presets in `bench/presets/`."
    ]
    if "split" in results:
        parts.append(
            f"### (a) Compress-only vs compress + split, Raspberry Pi 4 + edge server\n\nLatency budget: "
            f"{args.latency_fraction:.0%} of the unpruned model's on-device latency. `neurosurgeon_ms` is the best "
            "single cut (or full offload, `input`) of the unpruned model; `split_only_acc` is its accuracy when "
            "that meets the budget (no pruning needed). Accuracies are validation accuracies "
            "without fine-tuning; latencies are predicted by the cost model.\n\n" + rows_table(results["split"])
        )
    if "bits" in results:
        parts.append(
            "### (b) Mixed-precision vs uniform bits under a storage budget\n\nSpace `quant` (first and last "
            "layers fixed at 8 bits); `uniform` bisects one bit-width pair for all layers.\n\n"
            + rows_table(results["bits"])
        )
    if "adaptation" in results:
        parts.append("### (c) Accuracy under drift: no adaptation, AdaBN, TENT\n\n" + rows_table(results["adaptation"]))
    if "trigger" in results:
        parts.append(
            f"### (c) The agent's own trigger choice\n\nDDPG, {args.trigger_episodes} episodes on `pi4-drift` "
            "(keep ratios and adaptation, reward = accuracy − 0.1 × normalised energy, adaptation amortised over "
            "200 inferences), rolled out deterministically in each fixed context. `best_in_hindsight` replays the "
            "agent's keep ratios with each adaptation and names the one with the highest reward.\n\n"
            + rows_table(results["trigger"])
        )
    return "\n\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--part", nargs="+", default=["a", "b", "c"], choices=["a", "b", "c"])
    parser.add_argument("--models", nargs="+", default=["resnet20", "vgg11", "mobilenetv2"])
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--trigger-episodes", type=int, default=150)
    parser.add_argument("--val-images", type=int, default=500)
    parser.add_argument("--latency-fraction", type=float, default=0.5)
    parser.add_argument("--storage-fractions", type=float, nargs="+", default=[0.6, 0.5, 0.4])
    parser.add_argument("--severities", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    root = RESULTS / "claims"
    if args.quick:
        args.models, args.dataset, args.episodes, args.trigger_episodes = ["digits-cnn"], "digits", 6, 9
        args.val_images, args.severities, args.latency_fraction = None, [3], 0.9
        root = Path(tempfile.mkdtemp(prefix="bench-claims-"))
    results: dict[str, Any] = {}
    if "a" in args.part:
        results["split"] = claim_split(args, root)
    if "b" in args.part:
        results["bits"] = claim_bits(args, root)
    if "c" in args.part:
        results["adaptation"] = claim_adaptation(args)
        results["trigger"] = claim_trigger(args, root)
    if args.quick:
        print(render(results, args))
        return
    for key, part in (("split", "a"), ("bits", "b"), ("adaptation", "c")):
        if key in results:
            mine = {k: v for k, v in results.items() if k == key or (part == "c" and k == "trigger")}
            publish(f"claims-{part}", f"Research claim ({part})", render(mine, args), mine, quick=False)


if __name__ == "__main__":
    main()
