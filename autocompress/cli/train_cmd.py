"""``autocompress train``: train a zoo, torchvision or user model; resumable run folders under runs/."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autocompress.cli.common import DATASET_HELP, add_common_data_args, apply_threads, join_torchrun, seed_value

if TYPE_CHECKING:
    from autocompress.distributed import World

log = logging.getLogger(__name__)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("train", help="train a model on a dataset (checkpoint every epoch, --resume)")
    p.add_argument("--model", help="zoo name, torchvision:<name> or package.module:factory")
    p.add_argument("--dataset", help=DATASET_HELP)
    p.add_argument("--epochs", type=int, default=None, help="default: the dataset's recipe (digits 30, cifar10 200)")
    p.add_argument("--batch-size", type=int, default=None, help="default: digits 64, cifar10 256")
    p.add_argument(
        "--lr", type=float, default=None, help="peak learning rate of SGD (default: digits 0.05, cifar10 0.1)"
    )
    p.add_argument("--momentum", type=float, default=None, help="default 0.9 (Nesterov)")
    p.add_argument("--weight-decay", type=float, default=None, help="default 5e-4")
    p.add_argument("--schedule", default=None, help="cosine (default) or onecycle")
    p.add_argument("--warmup-epochs", type=int, default=None, help="linear warm-up epochs (cosine schedule)")
    p.add_argument("--label-smoothing", type=float, default=None, help="default 0")
    p.add_argument("--seed", type=seed_value, default=0)
    p.add_argument(
        "--device", default=None, help="torch device: auto, cpu or cuda (default: cpu, or the run's on --resume)"
    )
    p.add_argument(
        "--run-dir", default=None, help="run folder (default: runs/train__<dataset>__<model>__s<seed>__<time>)"
    )
    p.add_argument("--resume", metavar="RUN", default=None, help="continue the run in this folder")
    add_common_data_args(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from autocompress import distributed

    apply_threads(args.threads)
    here = join_torchrun(args.device)  # under torchrun: join the job first (the run folder is rank 0's choice)
    try:
        result = _train(args, here)
    finally:
        distributed.close(here)
    if here.main:
        print(json.dumps(result, indent=2))
    return 0


def _train(args: argparse.Namespace, here: World) -> dict[str, Any]:
    from autocompress import distributed
    from autocompress.cli.common import UsageError
    from autocompress.data import dataset_info, load_dataset
    from autocompress.models.training import Trainer, config_for
    from autocompress.models.zoo import ZOO
    from autocompress.runs import existing_run_dir, new_run_dir

    if args.resume:
        trainer = Trainer.resume(existing_run_dir(args.resume, "config.json"), args.data_dir, args.device)
    else:
        if not args.model or not args.dataset:
            raise UsageError(
                "train needs --model and --dataset (or --resume RUN); e.g. --model digits-cnn --dataset digits."
            )
        info = dataset_info(args.dataset, args.data_dir)
        if ":" not in args.model and args.model not in ZOO:
            from autocompress.errors import unknown_name_error

            raise unknown_name_error("model", args.model, ZOO)
        config = config_for(
            args.model,
            args.dataset,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            momentum=args.momentum,
            weight_decay=args.weight_decay,
            schedule=args.schedule,
            warmup_epochs=args.warmup_epochs,
            label_smoothing=args.label_smoothing,
            seed=args.seed,
            device=args.device,
        )
        splits = load_dataset(args.dataset, args.data_dir, args.download)
        # a model file's path would make folders inside the runs root: its name and factory name the run
        source, _, factory = args.model.rpartition(":")
        label = f"{Path(source).stem}-{factory}" if source else args.model
        chosen = new_run_dir("train", info.name, label.replace("/", "-"), args.seed, args.run_dir) if here.main else ""
        run_dir = Path(distributed.from_main(str(chosen), here))
        log.info("run folder: %s", run_dir)
        try:
            trainer = Trainer.create(config, run_dir, splits)
        except BaseException:  # a run that never started (e.g. its model factory failed) leaves no folder behind
            for name in ("config.json", "command.txt", "system.json"):
                (run_dir / name).unlink(missing_ok=True)
            if here.main and run_dir.is_dir() and not any(run_dir.iterdir()):
                run_dir.rmdir()
            raise
    return trainer.run()
