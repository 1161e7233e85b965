"""``autocompress doctor``: versions, cores and threads, for bug reports."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("doctor", help="print versions, cores and threads (paste into bug reports)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from autocompress.cli.output import print_table
    from autocompress.runs import system_report

    report = system_report()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table("autocompress doctor", ["item", "value"], [[k, str(v)] for k, v in report.items()])
    return 0
