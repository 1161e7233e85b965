"""Cost-model fidelity on the host: predicted vs measured onnxruntime latency (fp32, batch 1) of random pruned
variants of ResNet-20, MobileNetV2 and VGG-11, per architecture.

Two profiles are validated on the same held-out variants: one fitted now on other variants measured in the same
interleaved rounds (what ``autocompress profile --validate`` does), and the shipped ``host.yaml`` fitted in an
earlier session, which also carries the VM's speed drift between then and now.

    python bench/bench_costmodel.py --quick          # 6 + 6 variants, about a minute (CI smoke test)
    python bench/bench_costmodel.py --variants 24    # about 10 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from autocompress.hardware.calibrate import (
    CALIBRATION_MODELS,
    _rows,
    bandwidth_gbps,
    fit_profile,
    host_template,
    measure_networks,
    peak_gmacs,
    random_variants,
)
from autocompress.hardware.profiles import load_device
from autocompress.models import build_model
from bench.common import publish, rows_table


def per_model(rows: list[Any], profile: str) -> list[dict[str, Any]]:
    out = []
    for model in [*sorted({r.model for r in rows}), "all"]:
        errors = sorted(r.abs_pct_error for r in rows if model in ("all", r.model))
        out.append(
            {
                "profile": profile,
                "model": model,
                "variants": len(errors),
                "median_abs_pct_error": statistics.median(errors),
                "p90_abs_pct_error": errors[min(len(errors) - 1, round(0.9 * (len(errors) - 1)))],
                "max_abs_pct_error": errors[-1],
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--variants", type=int, default=24, help="variants to fit on, and as many to validate on")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    count = 6 if args.quick else args.variants
    threads = torch.get_num_threads()
    base = host_template()
    fit_set = random_variants(CALIBRATION_MODELS, count, 0, build_model, base.channel_rounding)
    test_set = random_variants(CALIBRATION_MODELS, count, args.seed, build_model, base.channel_rounding)
    with tempfile.TemporaryDirectory() as tmp:
        measured = measure_networks(fit_set + test_set, threads, Path(tmp), rounds=2 if args.quick else 5)
    start = replace(
        base, peak_gmacs={"fp32": round(peak_gmacs(threads), 2)}, memory_bandwidth_gbps=round(bandwidth_gbps(), 2)
    )
    fitted = fit_profile(start, list(zip(fit_set, measured[:count], strict=True)))
    held_out = list(zip(test_set, measured[count:], strict=True))
    rows = per_model(_rows(fitted, held_out), "fitted now") + per_model(
        _rows(load_device("host"), held_out), "host.yaml"
    )
    detail = [r.__dict__ | {"abs_pct_error": r.abs_pct_error} for r in _rows(fitted, held_out)]
    body = (
        f"{count} variants fitted and {count} held-out variants validated (seed {args.seed}), onnxruntime fp32, batch "
        f"1, {threads} threads; each measurement is the best of interleaved rounds of the median of 30 calls.\n\n"
        + rows_table(rows)
    )
    publish("costmodel", "Cost-model fidelity on the host", body, {"summary": rows, "held_out": detail}, args.quick)


if __name__ == "__main__":
    main()
