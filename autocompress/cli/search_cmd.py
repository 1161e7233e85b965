"""``autocompress search``: launch (or resume) a compression search and write its run folder."""

from __future__ import annotations

import argparse
import json
import logging
import math
from typing import Any

from autocompress.cli.common import DATASET_HELP, apply_threads, seed_value

log = logging.getLogger(__name__)
BUDGET_ALIASES = {
    "macs": "macs_ratio",
    "latency": "latency_ms",
    "energy": "energy_mj",
    "storage": "storage_bytes",
    "memory": "peak_memory_bytes",
}


def add_parser(sub: Any) -> None:
    p = sub.add_parser("search", help="search a compression policy (DDPG, PPO, TPE, NSGA-II, random, uniform)")
    p.add_argument("--model", help="zoo name, torchvision:<name> or package.module:factory")
    p.add_argument("--dataset", help=DATASET_HELP)
    p.add_argument(
        "--pretrained", action="store_true", help="load the shipped weights (default when --weights is absent)"
    )
    p.add_argument("--weights", default=None, help="weights file of the trained model")
    p.add_argument("--env", default="host", help="deployment preset name (see envs/) or YAML path")
    p.add_argument(
        "--agent",
        default="ddpg",
        help="agent: ddpg, td3, sac, ppo, tpe, nsga2, random, uniform, tp-taylor, tp-magnitude, tp-taylor-int8, "
        "tp-magnitude-int8, ddpg-warm, ddpg-warm-int8, ddpg-near-int8, tpe-warm (autocompress list agents), a "
        "registered searcher or a YAML preset",
    )
    p.add_argument(
        "--space",
        default="prune-quant",
        help="search-space preset (autocompress list spaces: prune, quant, prune-quant, full, lowrank, prune-lowrank), "
        "or a YAML",
    )
    p.add_argument(
        "--budget",
        action="append",
        default=[],
        metavar="NAME=VALUE[:soft]",
        help="override a budget, e.g. macs=0.5, latency=20, energy=5:soft (repeatable)",
    )
    p.add_argument(
        "--episodes", type=int, default=None, help="episodes (default 300); with --resume: a new total, to go further"
    )
    p.add_argument("--seed", type=seed_value, default=0)
    p.add_argument("--val-images", type=int, default=None, help="validation images per evaluation (default: all)")
    p.add_argument(
        "--confirm",
        type=int,
        default=None,
        help="score the N best policies (and the front's N most accurate) again on the whole validation split "
        "before naming the best (default 8; 0: keep the search's scores)",
    )
    p.add_argument("--run-dir", default=None, help="run folder (default: runs/<exp>__<env>__<agent>__s<seed>__<time>)")
    p.add_argument("--exp", default="search", help="experiment name in the run folder's name")
    p.add_argument("--storage", default=None, help="Optuna storage URL shared by workers (default: SQLite in the run)")
    p.add_argument("--resume", metavar="RUN", default=None, help="continue the search in this run folder")
    p.add_argument(
        "--trust-code", action="store_true", help="with --resume: import file.py:… / pkg.mod:… code the run names"
    )
    p.add_argument("--data-dir", default=None, help="dataset folder (default: $AUTOCOMPRESS_DATA_DIR)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument(
        "--device",
        default=None,
        help="where policies are scored: cpu (default), cuda or auto; with --resume: change it",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="RL agents: environments played at once, each in its own process (default 1; a resumed run keeps its own)",
    )
    p.set_defaults(run=run)


def parse_budgets(items: list[str]) -> dict[str, Any]:
    """``["macs=0.5", "energy=5:soft"]`` → ``{"macs_ratio": 0.5, "energy_mj": {"value": 5.0, "hard": False}}``."""
    from autocompress.cli.common import UsageError
    from autocompress.env.presets import BUDGET_NAMES
    from autocompress.errors import did_you_mean

    budgets: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        value, _, kind = value.partition(":")
        key = BUDGET_ALIASES.get(name, name)
        if not sep or key not in BUDGET_NAMES:
            names = [*BUDGET_ALIASES, *BUDGET_NAMES]
            raise UsageError(
                f"--budget must be NAME=VALUE with NAME one of {', '.join(names)}, but got '{item}'."
                + did_you_mean(name, names)
            )
        try:
            number = float(value)
        except ValueError:
            raise UsageError(
                f"--budget {name} must be a number, but got '{value}'; e.g. --budget {name}=0.5."
            ) from None
        if not math.isfinite(number) or number <= 0:
            raise UsageError(
                f"--budget {name} must be a finite number > 0, but got '{value}'; e.g. --budget {name}=0.5."
            )
        if kind not in ("", "hard", "soft"):
            raise UsageError(f"--budget may end in :hard or :soft, but got ':{kind}' in '{item}'.")
        if key in budgets:
            raise UsageError(
                f"each budget may be given once, but --budget {name} is given twice ('{item}' after an earlier one); "
                "keep the one you mean."
            )
        budgets[key] = number if kind in ("", "hard") else {"value": number, "hard": False}
    return budgets


def run(args: argparse.Namespace) -> int:
    from autocompress.cli.common import UsageError
    from autocompress.search import SearchConfig, SearchJob

    apply_threads(args.threads)
    if args.resume:
        from autocompress.search.record import RunRecord

        saved = RunRecord.open(args.resume, "resume", args.trust_code).config.workers
        if args.workers is not None and args.workers != saved:
            raise UsageError(
                f"a resumed run keeps its --workers ({saved}; its replay buffer has one column per worker), but got "
                f"--workers {args.workers}; drop --workers."
            )
        job = SearchJob.resume(args.resume, device=args.device, trust_code=args.trust_code, episodes=args.episodes)
    else:
        if not args.model or not args.dataset:
            raise UsageError(
                "search needs --model and --dataset (or --resume RUN); e.g. --model digits-cnn --dataset digits."
            )
        config = SearchConfig(
            model=args.model,
            dataset=args.dataset,
            env=args.env,
            agent=args.agent,
            space=args.space,
            episodes=300 if args.episodes is None else args.episodes,
            seed=args.seed,
            pretrained=args.weights is None,
            weights=args.weights,
            data_dir=args.data_dir,
            budgets=parse_budgets(args.budget),
            val_images=args.val_images,
            storage=args.storage,
            exp=args.exp,
            device=args.device or "cpu",
            workers=1 if args.workers is None else args.workers,
            confirm=8 if args.confirm is None else args.confirm,
        )
        job = SearchJob.create(config, args.run_dir)
    if args.resume and args.confirm is not None:  # this session's confirmation only; the run keeps its own
        import dataclasses

        job.config = dataclasses.replace(job.config, confirm=args.confirm)
    log.info("run folder: %s (watch it with: tensorboard --logdir %s)", job.run_dir, job.run_dir)
    summary = job.run()
    print(json.dumps(summary, indent=2))
    return 0
