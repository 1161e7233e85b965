"""Train once, or fine-tune each configuration alone? The configurations of a trained adaptive package
(``export --adaptive --train-epochs N``: slices of one union model trained together) against the very same
configurations exported on their own (``export`` of the configuration's policy: sequential least-squares refit,
then the same distilled fine-tune recipe for 1 and N epochs). Test accuracy on the whole test split: the package's
from its ONNX files as the runtime loads them, each alone export's from its own ``model.onnx``.

    python bench/bench_union_alone.py --quick      # digits, a 1-epoch package built in a temporary folder (CI)
    python bench/bench_union_alone.py --data-dir ../shared/data \
        --package bench/results/adaptive/resnet20-raspberry-pi-4-wifi-full/package-trained5 --epochs 1 5

Resumable: each alone export lives in ``<package>/../alone/<config>-<epochs>ep/`` and is reused; a killed
fine-tune resumes from its checkpoint.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from autocompress.compress.policy import Policy
from autocompress.data import load_dataset
from autocompress.deploy.adaptive import AdaptiveOptions, export_adaptive
from autocompress.deploy.export import ExportOptions, export_run
from autocompress.deploy.runtime import AdaptiveModel
from autocompress.search import SearchConfig
from bench.common import markdown_table, publish, run_search


def union_accuracy(package: Path, ids: list[str], data_dir: str | None) -> dict[str, float]:
    """Each configuration's test accuracy on the whole test split, as the package's runtime runs it."""
    manifest = json.loads((package / "manifest.json").read_text())
    splits = load_dataset(manifest["dataset"], data_dir)
    runtime = AdaptiveModel.load(package, adapt=False)
    x, y = splits.test_x.numpy(), splits.test_y.numpy()
    out = {}
    for cid in ids:
        predicted = np.concatenate([runtime.run(cid, x[i : i + 500]).argmax(1) for i in range(0, len(y), 500)])
        out[cid] = float((predicted == y).mean())
    return out


def alone(run: Path, policy: Path, out: Path, epochs: int, lr: float, data_dir: str | None) -> dict[str, Any]:
    """The configuration exported on its own and fine-tuned for ``epochs`` at ``lr`` (0: the refit alone); reused
    if done (the folder's name holds the epochs and any learning rate but the fine-tune's default)."""
    if (out / "report.json").exists():
        if json.loads((out / "policy.json").read_text()) != json.loads(policy.read_text()):
            raise SystemExit(f"'{out}' holds another policy than '{policy}'; move it away to measure this one.")
        return dict(json.loads((out / "report.json").read_text()))
    options = ExportOptions(finetune_epochs=epochs, finetune_lr=lr, data_dir=data_dir, device="cpu")
    return export_run(run, out, options, policy=Policy.load(policy))


def quick_package(root: Path) -> Path:
    config = SearchConfig(
        model="digits-cnn", dataset="digits", env="mcu", space="prune", agent="tpe", episodes=12, seed=0
    )
    run_search(root / "search", config)
    options = AdaptiveOptions(configs=2, test_images=120, train_epochs=1, device="cpu")
    export_adaptive(root / "search", root / "package-trained1", options)
    return root / "package-trained1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--package", default=None, help="a trained adaptive package (export --adaptive --train-epochs)")
    parser.add_argument("--run", default=None, help="the search it came from (default: <package>/../search)")
    parser.add_argument("--configs", nargs="*", default=None, help="configuration ids (default: all)")
    parser.add_argument("--epochs", nargs="+", type=int, default=[1, 5], help="alone fine-tunes, epochs each")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    if args.quick:
        args.package, args.epochs = str(quick_package(Path(tempfile.mkdtemp()))), [1]
    if args.package is None:
        parser.error("--package is required (a folder written by export --adaptive --train-epochs N)")
    package = Path(args.package)
    run = Path(args.run) if args.run else package.parent / "search"
    manifest = json.loads((package / "manifest.json").read_text())
    training = manifest.get("training") or {}
    if not training.get("epochs"):
        parser.error(f"--package must be a trained package (export --adaptive --train-epochs N); '{package}' is not")
    ids = [c["id"] for c in manifest["configs"]]
    unknown = sorted(set(args.configs or []) - set(ids))
    if unknown:
        parser.error(f"--configs must name configurations of the package ({', '.join(ids)}), but got {unknown[0]}")
    configs = [c for c in manifest["configs"] if not args.configs or c["id"] in args.configs]
    data_dir = args.data_dir or json.loads((run / "config.json").read_text()).get("data_dir")
    lr = training["lr"]
    suffix = "" if lr == ExportOptions.finetune_lr else f"-lr{lr}"
    union = union_accuracy(package, [c["id"] for c in configs], data_dir)
    rows, raw = [], {"package": str(package), "union_epochs": training["epochs"], "configs": {}}
    for c in configs:
        policy = package / "configs" / c["id"] / "policy.json"
        reports = {
            e: alone(run, policy, package.parent / "alone" / f"{c['id']}-{e}ep{suffix}", e, lr, data_dir)
            for e in [0, *args.epochs]
        }
        row: dict[str, Any] = {"config": c["id"], "origin": c["origin"], "MACs ratio": round(c["macs_ratio"], 3)}
        row["refit alone, no ft"] = round(reports[0]["test_accuracy"], 4)
        for e in args.epochs:
            row[f"alone, {e}-ep ft"] = round(reports[e]["test_accuracy"], 4)
        row[f"union, {training['epochs']} ep"] = round(union[c["id"]], 4)
        top = max(args.epochs)
        row[f"union − alone {top} ep (pt)"] = round(100 * (union[c["id"]] - reports[top]["test_accuracy"]), 2)
        rows.append(row)
        raw["configs"][c["id"]] = {
            "union_test": union[c["id"]],
            "alone": {
                e: {"test": r["test_accuracy"], "val_by_epoch": r["finetune"]["val_accuracy"]}
                for e, r in reports.items()
            },
        }
    # a package's training records per epoch how often gradients were clipped from the per-configuration clip on
    clip = "each configuration's gradient clipped on its own" if "clipped" in training else "one clip of their sum"
    body = (
        f"Package `{package.name}` ({manifest['model']} on {manifest['dataset']}, union trained "
        f"{training['epochs']} epochs, {training.get('rule', 'sandwich rule')}, distilled; {clip}); "
        "each configuration also exported alone from "
        "its own policy (the package's, bits as shipped): sequential least-squares refit, then the same distilled "
        f"fine-tune (SGD Nesterov, lr {lr} as the union's, cosine over the run's epochs, batch 128). Test "
        "accuracy on the whole test split from the ONNX files.\n\n"
        + markdown_table(list(rows[0]), [list(r.values()) for r in rows])
    )
    where = f"{package.parent.name}/{package.name}"  # the bench's folders: <model>-<env>-<space>/<package>
    publish(  # a section per package: packages trained differently are compared side by side
        f"union-alone-{where.replace('/', '-')}",
        f"Train once vs fine-tune alone: {where}",
        body,
        raw,
        args.quick,
    )


if __name__ == "__main__":
    main()
