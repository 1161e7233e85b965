"""What lifting bits buys an adaptive package: each policy of a search's Pareto front and the ladder derived from
its most accurate one, with the searched bits and with the bits ``export --adaptive`` ships
(:func:`~autocompress.deploy.adaptive.lift_bits`: a layer's weight and activation bits raised to the most the device
runs at the same predicted latency and energy, no limit broken). Test accuracy of both, measured as the search
applies a policy (its reconstruction, BatchNorm, quantisation) on the whole test split, beside the predicted
latency, energy and storage.

    python bench/bench_lift_bits.py --quick                      # digits, seconds (CI smoke test)
    python bench/bench_lift_bits.py --data-dir ../shared/data    # ResNet-20 / CIFAR-10, raspberry-pi-4-wifi

The search is the one ``bench/bench_adaptive.py`` runs (TPE over the ``full`` space, 100 episodes, seed 0), reused
from ``bench/results/adaptive/`` when it is there.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

from autocompress.compress.policy import Policy
from autocompress.deploy.adaptive import LADDER, ladder_policies, lifted_policies
from autocompress.env import build_workload
from autocompress.hardware.graph import analyse
from autocompress.search import SearchConfig
from autocompress.search.record import RunRecord
from bench.common import RESULTS, markdown_table, publish, run_search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--env", default="raspberry-pi-4-wifi")
    parser.add_argument("--episodes", type=int, default=100)
    args = parser.parse_args()
    model, dataset = "resnet20", "cifar10"
    val_images: int | None = 500
    folder = RESULTS / "adaptive" / f"{model}-{args.env}-full" / "search"
    if args.quick:
        model, dataset, args.episodes = "digits-cnn", "digits", 12
        val_images = None
        folder = Path(tempfile.mkdtemp(prefix="bench-lift-")) / "search"
    config = SearchConfig(
        model=model,
        dataset=dataset,
        env=args.env,
        space="full",
        agent="tpe",
        episodes=args.episodes,
        seed=0,
        data_dir=args.data_dir,
        val_images=val_images,
    )
    run_search(folder, config)
    record = RunRecord.open(folder, "export")
    workload = build_workload(
        model,
        dataset,
        True,
        None,
        args.data_dir,
        val_images,
        protect_first_last=record.resolved.space.protect_first_last,
    )
    evaluator, table, splits = workload.evaluator, workload.table, workload.splits
    deployment = record.resolved.deployment
    front = [Policy.from_dict(e["policy"]) for e in record.front]
    policies = front + ladder_policies(front[0], table, LADDER)
    names = [f"pareto:{i}" for i in range(len(front))] + [f"ladder:{t:g}" for t in LADDER]
    graph = analyse(workload.model, table)
    lifted = lifted_policies(policies, table, deployment, evaluator, graph)
    cost_model = deployment.cost_model(table, graph)
    test = evaluator.normalize(splits.test_x)

    def accuracy(policy: Policy) -> float:
        return evaluator.accuracy(evaluator.apply(policy).model, test, splits.test_y)

    rows: list[dict[str, Any]] = []
    for name, before, after in zip(names, policies, lifted, strict=True):
        changed = [n for n in table.names if before.setting(n) != after.setting(n)]
        costs = [cost_model.predict_policy(p) for p in (before, after)]
        searched = accuracy(before)
        shipped = accuracy(after) if changed else searched
        rows.append(
            {
                "policy": name,
                "MACs ratio": sum(s.macs for s in table.shapes(before.kept_channels(table))) / table.macs,
                "layers lifted": len(changed),
                "test acc searched": searched,
                "test acc lifted": shipped,
                "gain pt": 100 * (shipped - searched),
                "latency ms": f"{costs[0].latency_ms:.4g} / {costs[1].latency_ms:.4g}",
                "energy mJ": f"{costs[0].energy_mj:.4g} / {costs[1].energy_mj:.4g}",
                "storage B": f"{costs[0].storage_bytes} / {costs[1].storage_bytes}",
            }
        )
        print(rows[-1], flush=True)
    gains = [r["gain pt"] for r in rows if r["layers lifted"]]
    body = (
        f"{model} on {dataset}, `{args.env}`; the Pareto front ({len(front)} policies) of TPE over the `full` space "
        f"({args.episodes} episodes, seed 0) and the ladder of its most accurate policy at "
        f"{', '.join(f'{t:g}' for t in LADDER)} of the MACs. Each policy with the searched bits and with the bits "
        "an adaptive package ships (`lift_bits`); test accuracy on the whole test split as the search applies a "
        "policy; latency, energy and storage predicted at full bandwidth (searched / lifted). "
        + (
            f"{len(gains)} of {len(rows)} policies had bits to lift: mean gain {statistics.mean(gains):+.2f} pt "
            f"(least {min(gains):+.2f}, most {max(gains):+.2f})."
            if gains
            else "No policy had bits to lift."
        )
        + "\n\n"
        + markdown_table(list(rows[0]), [list(r.values()) for r in rows])
    )
    publish(f"lift-bits-{model}", f"Lifting bits the device gains nothing from: {model}", body, rows, args.quick)


if __name__ == "__main__":
    main()
