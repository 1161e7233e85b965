"""``autocompress compare``: the best results of several runs side by side."""

from __future__ import annotations

import argparse
import json
from typing import Any

COLUMNS = [
    "run",
    "agent",
    "env",
    "space",
    "episodes",
    "best reward",
    "best accuracy",
    "± se",
    "MACs ratio",
    "latency ms",
    "energy mJ",
    "storage bytes",
    "best at episode",
    "search s",
]


def add_parser(sub: Any) -> None:
    p = sub.add_parser("compare", help="compare the best results of search runs")
    p.add_argument("runs", metavar="RUN", nargs="+", help="run folders (a running or killed run shows its progress)")
    p.add_argument("--json", action="store_true", help="print one JSON object per run instead of a table")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from autocompress.search.record import RunRecord

    rows = [RunRecord.open(folder, "compare").overview() for folder in args.runs]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    from autocompress.cli.output import print_table

    print_table("Search runs (best by reward)", COLUMNS, [list(r.values()) for r in rows])
    return 0
