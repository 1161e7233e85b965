"""``autocompress profile``: calibrate the host's device profile from measurements, or validate the cost model."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from autocompress.cli.app import apply_threads

log = logging.getLogger(__name__)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("profile", help="calibrate the host profile (--device host) or validate it (--validate)")
    p.add_argument("--device", default="host", help="'host' to calibrate, or a profile (name or YAML) to validate")
    p.add_argument("--out", default=None, help="write the calibrated profile to this YAML file (default: stdout)")
    p.add_argument("--validate", action="store_true", help="predict and measure random pruned variants")
    p.add_argument("--variants", type=int, default=24, help="variants to validate (or 12 to calibrate on)")
    p.add_argument("--seed", type=int, default=1, help="seed of the random variants")
    p.add_argument("--json", action="store_true", help="with --validate: one JSON object on stdout")
    p.add_argument("--threads", type=int, default=None, help="threads for torch and onnxruntime (default: all cores)")
    p.set_defaults(run=run)


def _build(name: str) -> Any:
    from autocompress.models import build_model

    return build_model(name)


def run(args: argparse.Namespace) -> int:
    import torch

    from autocompress.cli.app import UsageError

    apply_threads(args.threads)
    threads = torch.get_num_threads()
    if args.variants < 3:
        raise UsageError(f"--variants >= 3 must hold (one per architecture), but got {args.variants}.")
    if args.validate:
        return _validate(args, threads)
    if args.device != "host":
        raise UsageError(
            f"only the host can be calibrated here, but got --device {args.device}; use --validate to check a profile."
        )
    return _calibrate(args, threads)


def _calibrate(args: argparse.Namespace, threads: int) -> int:
    from autocompress.hardware.calibrate import calibrate_host, host_template, profile_to_yaml

    profile = calibrate_host(
        host_template(), _build, threads, variants=min(args.variants, 12), seed=0, progress=log.info
    )
    note = (
        f"measured with onnxruntime fp32 at batch 1, {threads} threads; peak from a 1024^3 matmul (min of 10), "
        "bandwidth from a 128 MB copy (median), per-layer times from onnxruntime's profiler (median of 40 runs), "
        "whole networks median of 30; power estimated"
    )
    text = profile_to_yaml(profile, note)
    if args.out:
        Path(args.out).write_text(text)
        log.info("wrote %s", args.out)
    else:
        print(text)
    return 0


def _validate(args: argparse.Namespace, threads: int) -> int:
    from autocompress.hardware.calibrate import summarize, validate
    from autocompress.hardware.profiles import load_device

    profile = load_device(args.device)
    rows = validate(profile, _build, threads, count=args.variants, seed=args.seed, progress=log.info)
    summary = summarize(rows)
    if args.json:
        print(
            json.dumps(
                {
                    "device": profile.name,
                    "threads": threads,
                    **summary,
                    "rows": [r.__dict__ | {"abs_pct_error": r.abs_pct_error} for r in rows],
                },
                indent=2,
            )
        )
        return 0
    from autocompress.cli.output import print_table

    table = [[r.model, round(r.mean_keep, 2), r.macs, r.predicted_ms, r.measured_ms, r.abs_pct_error] for r in rows]
    median, p90 = summary["median_abs_pct_error"], summary["p90_abs_pct_error"]
    caption = f"median abs error {median:.1f} %, p90 {p90:.1f} % over {len(rows)} variants"
    print_table(
        f"Cost model vs onnxruntime on this host ({profile.name})",
        ["model", "mean keep", "MACs", "predicted ms", "measured ms", "abs % error"],
        table,
        caption,
    )
    return 0
