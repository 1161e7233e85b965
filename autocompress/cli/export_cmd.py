"""``autocompress export``: the chosen policy of a search as a verified PyTorch + ONNX model with a report."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autocompress.cli.common import apply_threads

log = logging.getLogger(__name__)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("export", help="export a run's policy as a compressed PyTorch + ONNX model, verified")
    p.add_argument("run_dir", metavar="RUN", help="the search's run folder")
    p.add_argument("--out", required=True, help="folder for policy.json, model.pt, model.onnx and the report")
    p.add_argument("--policy", default="best", help="best (default) or pareto:K, the K-th most accurate on the front")
    p.add_argument("--finetune-epochs", type=int, default=0, help="fine-tune epochs after pruning (default 0)")
    p.add_argument("--finetune-lr", type=float, default=0.01, help="starting learning rate of the fine-tune")
    p.add_argument("--finetune-schedule", default="cosine", help="cosine (default), step or constant")
    p.add_argument(
        "--no-distill",
        dest="distill",
        action="store_false",
        help="fine-tune on labels only (default: distil from the unpruned model)",
    )
    p.add_argument("--device", default="auto", help="where the fine-tune runs: auto (default), cpu or cuda")
    p.add_argument(
        "--reconstruct",
        default="sequential",
        help="least-squares refit of pruned layers: sequential (default), fast or none",
    )
    p.add_argument("--test-images", type=int, default=None, help="test images to measure on (default: all)")
    p.add_argument("--data-dir", default=None, help="dataset folder, if it moved since the search")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--trust-code",
        action="store_true",
        help="import file.py:… / pkg.mod:… code the run or package names (else refused)",
    )
    p.add_argument(
        "--adaptive",
        action="store_true",
        help="write an adaptive package: several configurations from the run's Pareto front and "
        "a manifest.json by which the runtime picks one per context",
    )
    p.add_argument("--configs", type=int, default=4, help="configurations in an adaptive package (default 4)")
    p.add_argument(
        "--accuracy-tolerance",
        type=float,
        default=0.01,
        help="accuracy the controller may give up for less energy (default 0.01)",
    )
    p.add_argument(
        "--objective",
        default="accuracy",
        help="adaptive controller: accuracy (default: the most accurate the context and the battery allow, "
        "least energy within the tolerance) or energy (least energy at the accuracy of the model one "
        "would ship alone)",
    )
    p.add_argument(
        "--ladder",
        default="1.0,0.5,0.25",
        help="adaptive package: MACs fractions at which configurations derived from the best policy join "
        "the Pareto front's (default 1.0,0.5,0.25; 'none' for the front's alone)",
    )
    p.add_argument(
        "--keep-bits",
        dest="lift_bits",
        action="store_false",
        help="adaptive package: ship the searched bits (default: raise a layer's bits where the device runs "
        "them at the same predicted latency and energy and no limit breaks)",
    )
    p.add_argument(
        "--train-epochs",
        type=int,
        default=0,
        help="adaptive package: train the configurations once, together, as slices of one model for N "
        "epochs (every configuration each step, distilled, own BatchNorm scale, shift and statistics; implies "
        "--share-weights; resumes from OUT/training/)",
    )
    p.add_argument("--train-lr", type=float, default=0.01, help="its starting learning rate (default 0.01)")
    p.add_argument(
        "--train-per-step",
        type=int,
        default=0,
        metavar="N",
        help="configurations each training step takes: 0 (default) every configuration every step; N the largest, "
        "the smallest and random middle ones up to N (3: the sandwich rule, faster per epoch)",
    )
    p.add_argument(
        "--share-weights",
        action="store_true",
        help="adaptive package: nest the configurations as slices of one refitted model and store "
        "shared weights once (smaller; the smaller configurations lose their own refit)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from autocompress.deploy.export import ExportOptions, export_run, render_report

    apply_threads(args.threads)
    if args.adaptive:
        return _adaptive(args)
    here = _world(args)
    options = ExportOptions(
        policy=args.policy,
        reconstruct=args.reconstruct,
        finetune_epochs=args.finetune_epochs,
        finetune_lr=args.finetune_lr,
        finetune_schedule=args.finetune_schedule,
        distill=args.distill,
        device=args.device,
        test_images=args.test_images,
        data_dir=args.data_dir,
        trust_code=args.trust_code,
    )
    if here.active and not here.main:
        from autocompress.deploy.export import write_export

        return _helper_rank(lambda scratch: write_export(args.run_dir, scratch, options))
    report = export_run(args.run_dir, args.out, options)
    print(json.dumps(report, indent=2) if args.json else render_report(report))
    log.info("exported to %s", args.out)
    return 0


def _world(args: argparse.Namespace) -> Any:
    """Under torchrun, the export's training is what runs data-parallel: refuse an export without one, join."""
    from autocompress import distributed
    from autocompress.cli.common import UsageError, join_torchrun

    if distributed.world().active and (args.train_epochs if args.adaptive else args.finetune_epochs) < 1:
        raise UsageError(
            "under torchrun, export runs its training data-parallel, so it needs --finetune-epochs N >= 1 (or, with "
            "--adaptive, --train-epochs N >= 1); without training, run it as one process."
        )
    return join_torchrun(args.device)


def _helper_rank(write: Callable[[Path], Any]) -> int:
    """A rank other than 0 rebuilds the same compressed models (the refit is deterministic), joins the training
    (restoring rank 0's checkpoint) and writes its own copy of the files into a scratch folder it then deletes;
    rank 0 alone writes --out."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="autocompress-rank-") as scratch:
        write(Path(scratch))
    return 0


def _adaptive(args: argparse.Namespace) -> int:
    from autocompress.cli.output import print_table
    from autocompress.deploy.adaptive import AdaptiveOptions, export_adaptive

    options = AdaptiveOptions(
        configs=args.configs,
        reconstruct=args.reconstruct,
        accuracy_tolerance=args.accuracy_tolerance,
        objective=args.objective,
        test_images=args.test_images,
        data_dir=args.data_dir,
        share_weights=args.share_weights,
        trust_code=args.trust_code,
        ladder=_ladder(args.ladder),
        lift_bits=args.lift_bits,
        train_epochs=args.train_epochs,
        train_lr=args.train_lr,
        train_per_step=args.train_per_step,
        device=args.device,
    )
    here = _world(args)
    if here.active and not here.main:
        from autocompress.deploy.adaptive import _write_package
        from autocompress.search.record import RunRecord

        record = RunRecord.open(args.run_dir, "export", args.trust_code)
        return _helper_rank(lambda scratch: _write_package(record, args.run_dir, scratch, options))
    controller = export_adaptive(args.run_dir, args.out, options)
    if args.json:
        print(json.dumps(controller, indent=2))
        return 0
    rows = [
        [
            c["id"],
            c["val_accuracy"],
            c["test_accuracy"],
            c["macs_ratio"],
            c["costs"]["latency_ms"][-1],
            c["costs"]["energy_mj"][-1],
            c["costs"]["storage_bytes"],
            c["split"] or "-",
        ]
        for c in controller["configs"]
    ]
    print_table(
        f"Adaptive package of {controller['model']} ({controller['deployment']['env']})",
        ["config", "val acc", "test acc", "MACs ratio", "latency ms", "energy mJ", "storage B", "split"],
        rows,
    )
    storage = controller["storage"]
    ratio = storage["ratio_to_largest"]
    print(
        f"package storage {storage['package_bytes']:,} B"
        + (f" = {ratio:.2f}× the largest configuration" if ratio else "")
        + (" (weights shared)" if storage.get("shared_weights") else "")
        + f"; drift threshold {controller['monitor']['threshold']:.3f}; written to {args.out}"
    )
    return 0


def _ladder(text: str) -> tuple[float, ...]:
    from autocompress.cli.common import UsageError

    if text.strip().lower() in ("none", ""):
        return ()
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise UsageError(
            f"--ladder must be comma-separated fractions of the MACs such as 1.0,0.5,0.25 (or none), but got '{text}'."
        ) from None
