"""``autocompress compare``: the best results of several runs side by side."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

from autocompress.errors import AutoCompressError

COLUMNS = [
    "run", "agent", "env", "space", "episodes", "best reward", "best accuracy", "MACs ratio", "latency ms",
    "energy mJ", "storage bytes", "best at episode", "search s",
]  # fmt: skip


def add_parser(sub: Any) -> None:
    p = sub.add_parser("compare", help="compare the best results of search runs")
    p.add_argument("runs", metavar="RUN", nargs="+", help="run folders (a running or killed run shows its progress)")
    p.add_argument("--json", action="store_true", help="print one JSON object per run instead of a table")
    p.set_defaults(run=run)


def run_row(folder: str) -> dict[str, Any]:
    """A run's best result, read from best_policy.json and progress.csv (so unfinished runs compare too)."""
    run = Path(folder)
    config_path, best_path, progress = run / "config.json", run / "best_policy.json", run / "progress.csv"
    if not config_path.is_file():
        raise AutoCompressError(f"compare needs run folders holding config.json, but '{run}' does not.")
    config = json.loads(config_path.read_text())
    rows: list[dict[str, str]] = []
    if progress.is_file():
        with progress.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    best = json.loads(best_path.read_text()) if best_path.is_file() else {}
    return {
        "run": run.name,
        "agent": config["agent"],
        "env": config["env"],
        "space": config["space"],
        "episodes": f"{len(rows)}/{config['episodes']}",
        "best_reward": best.get("reward"),
        "best_accuracy": best.get("accuracy"),
        "macs_ratio": best.get("macs_ratio"),
        "latency_ms": best.get("latency_ms"),
        "energy_mj": best.get("energy_mj"),
        "storage_bytes": best.get("storage_bytes"),
        "best_episode": best.get("episode"),
        "search_s": round(sum(float(r["wall_s"]) for r in rows), 1),
    }


def run(args: argparse.Namespace) -> int:
    rows = [run_row(folder) for folder in args.runs]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    from autocompress.cli.output import print_table

    print_table("Search runs (best by reward)", COLUMNS, [list(r.values()) for r in rows])
    return 0
