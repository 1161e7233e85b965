"""``autocompress profile``: calibrate the host's device profile from measurements and validate the cost model."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from autocompress.cli.common import apply_threads, seed_value

log = logging.getLogger(__name__)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "profile",
        help="calibrate the host profile (--device host) and validate the cost model (--validate)",
        description="With --device host: measure this machine, fit its profile and print or write it (--out). "
        "With --validate: fit on one set of pruned variants and compare predictions with measurements on another, "
        "measured in the same interleaved rounds; --device PATH validates an existing profile instead.",
    )
    p.add_argument("--device", default="host", help="'host' (calibrate now), or a profile name or YAML to validate")
    p.add_argument("--out", default=None, help="write the calibrated profile to this YAML file")
    p.add_argument("--validate", action="store_true", help="predict and measure held-out pruned variants")
    p.add_argument("--variants", type=int, default=24, help="pruned variants to fit on and to validate on")
    p.add_argument("--seed", type=seed_value, default=1, help="seed of the validation variants (the fit uses seed 0)")
    p.add_argument("--json", action="store_true", help="with --validate: one JSON object on stdout")
    p.add_argument("--threads", type=int, default=None, help="threads for torch and onnxruntime (default: all cores)")
    p.set_defaults(run=run)


def _build(name: str) -> Any:
    from autocompress.models import build_model

    return build_model(name)


def run(args: argparse.Namespace) -> int:
    import torch

    from autocompress.cli.common import UsageError
    from autocompress.hardware.calibrate import calibrate_and_validate, host_template, validate
    from autocompress.hardware.profiles import load_device

    apply_threads(args.threads)
    threads = torch.get_num_threads()
    if args.variants < 6:
        raise UsageError(f"--variants >= 6 must hold (two per architecture), but got {args.variants}.")
    if args.device != "host":
        if not args.validate:
            raise UsageError(
                f"only 'host' can be calibrated, but got --device {args.device}; add --validate to test it."
            )
        rows = validate(load_device(args.device), _build, threads, args.variants, args.seed)
        profile_name = args.device
    else:
        profile, rows = calibrate_and_validate(
            host_template(), _build, threads, args.variants, args.variants, args.seed
        )
        profile_name = "host (fitted now)"
        _write(profile, args, threads)
    if args.validate:
        _report(rows, profile_name, threads, args.json)
    return 0


def _write(profile: Any, args: argparse.Namespace, threads: int) -> None:
    from autocompress.hardware.calibrate import profile_to_yaml

    note = (
        f"onnxruntime fp32 at batch 1, {threads} threads; matmul peak 1024^3 (best of 10) and 128 MB copy bandwidth "
        f"measured; rates, traffic bandwidth and overheads fitted to {args.variants} pruned variants of resnet20, "
        "mobilenetv2 and vgg11 (each the best of 5 interleaved rounds of the median of 30 runs); power estimated"
    )
    text = profile_to_yaml(profile, note)
    if args.out:
        Path(args.out).write_text(text)
        log.info("wrote %s", args.out)
    elif not args.validate:
        print(text)


def _report(rows: list[Any], profile_name: str, threads: int, as_json: bool) -> None:
    from autocompress.hardware.calibrate import summarize

    summary = summarize(rows)
    if as_json:
        table = [r.__dict__ | {"abs_pct_error": r.abs_pct_error} for r in rows]
        print(json.dumps({"profile": profile_name, "threads": threads, **summary, "rows": table}, indent=2))
        return
    from autocompress.cli.output import print_table

    cells = [[r.model, round(r.mean_keep, 2), r.macs, r.predicted_ms, r.measured_ms, r.abs_pct_error] for r in rows]
    median, p90 = summary["median_abs_pct_error"], summary["p90_abs_pct_error"]
    caption = f"median abs error {median:.1f} %, p90 {p90:.1f} % over {len(rows)} held-out variants"
    columns = ["model", "mean keep", "MACs", "predicted ms", "measured ms", "abs % error"]
    print_table(f"Cost model vs onnxruntime on this host ({profile_name})", columns, cells, caption)
