"""``autocompress simulate``: replay a context trace over an adaptive package against static and oracle choices."""

from __future__ import annotations

import argparse
from typing import Any

from autocompress.cli.common import apply_threads


def add_parser(sub: Any) -> None:
    p = sub.add_parser("simulate", help="replay a context trace over an adaptive package (export --adaptive)")
    p.add_argument("package", metavar="DIR", help="the adaptive package's folder")
    p.add_argument("--trace", required=True, help="phone-day, commute, camera-drift, or a YAML/CSV trace file")
    p.add_argument("--images-per-step", type=int, default=200, help="test images classified per step (default 200)")
    p.add_argument("--out", default=None, help="folder for simulation.json/.csv/.png and TensorBoard logs")
    p.add_argument("--data-dir", default=None, help="dataset folder (CIFAR-10; default AUTOCOMPRESS_DATA_DIR)")
    p.add_argument("--dataset", default=None, help="the package's dataset, if its file moved (default: the manifest's)")
    p.add_argument(
        "--order",
        choices=("stored", "by-class"),
        default="stored",
        help="test images as stored, or sorted by class (a clean stream whose classes arrive in order)",
    )
    p.add_argument(
        "--trust-code",
        action="store_true",
        help="import file.py:… / pkg.mod:… code the run or package names (else refused)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--json", action="store_true", help="print the totals as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from autocompress.deploy.simulate import dumps, render, simulate

    apply_threads(args.threads)
    result = simulate(
        args.package,
        args.trace,
        args.images_per_step,
        args.data_dir,
        args.out,
        args.dataset,
        args.trust_code,
        order=args.order,
    )
    print(dumps(result) if args.json else render(result))
    return 0
