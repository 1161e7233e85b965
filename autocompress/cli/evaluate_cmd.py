"""``autocompress evaluate``: apply a policy (prune → quantize → split → adapt) and report accuracy, size, MACs,
storage, the bytes a split sends, the drift score and measured host latency."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from autocompress.cli.common import add_common_data_args, add_model_args, apply_threads

log = logging.getLogger(__name__)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="apply a policy and measure accuracy, size, MACs, storage and latency")
    add_model_args(p, required=False)
    p.add_argument(
        "--policy",
        default=None,
        help='compression policy JSON (default: the uncompressed model); its "adapt": "adabn" or "tent" runs '
        "test-time adaptation on the (shifted) images",
    )
    p.add_argument(
        "--shift",
        default=None,
        help="input shift name:severity (e.g. noise:3; see --list-shifts), a plugin package.module:function:severity, "
        "or data:FILE.npz with your own drifted x, y (and unlabelled x_target for adaptation)",
    )
    p.add_argument("--split", default="test", help="test (final reports) or val (what searches score on)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images of the split")
    p.add_argument("--no-bn-repair", action="store_true", help="skip re-estimating BatchNorm statistics after pruning")
    p.add_argument("--criterion", default="l1", help="channel ranking for pruning: l1 or l2")
    p.add_argument(
        "--reconstruct",
        default="sequential",
        help="least-squares refit of pruned layers: sequential (default), fast or none",
    )
    p.add_argument(
        "--compute-device",
        dest="compute_device",
        default="cpu",
        help="where the measured forward passes run: cpu (default), cuda or auto "
        "(--device names the hardware profile whose costs are predicted)",
    )
    p.add_argument("--repeats", type=int, default=50, help="timed repeats of the batch-1 latency measurement")
    p.add_argument("--device", default=None, help="add predicted costs on this device profile (name or YAML)")
    p.add_argument("--link", default=None, help="link to the edge server for split policies (wifi, lte, ble, ethernet)")
    p.add_argument("--edge", default="edge-server", help="device profile of the edge server that runs a split's tail")
    p.add_argument(
        "--interval-ms", type=float, default=1000.0, help="time between inferences (bounds radio tail energy)"
    )
    p.add_argument(
        "--random-init",
        action="store_true",
        help="measure the randomly initialised network (without it, --pretrained or --weights is needed)",
    )
    p.add_argument("--list-splits", action="store_true", help="list the model's valid split points and exit")
    p.add_argument("--list-shifts", action="store_true", help="list the input shifts and exit")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else")
    add_common_data_args(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from autocompress.compress.policy import Policy
    from autocompress.data import dataset_info
    from autocompress.data.shifts import ANY_KIND, SHIFTS, Shift
    from autocompress.env.deployment import Deployment
    from autocompress.errors import AutoCompressError
    from autocompress.evaluation import EvaluateOptions, evaluate_policy
    from autocompress.models import load_model

    apply_threads(args.threads)
    if args.list_shifts:
        kinds = [[n, "any data" if n in ANY_KIND else "uint8 images"] for n in SHIFTS]
        return _print_list("Input shifts (severity 1..5)", kinds, ["shift", "applies to"])
    from autocompress.cli.common import UsageError
    from autocompress.models.training import resolve_device

    if not args.model or not args.dataset:
        raise UsageError(
            "evaluate needs --model and --dataset (only --list-shifts needs neither); e.g. --model digits-cnn "
            "--dataset digits --pretrained."
        )

    try:  # here --device names a hardware profile, so the torch device is --compute-device
        resolve_device(args.compute_device)
    except AutoCompressError as exc:
        raise UsageError(str(exc).replace("device", "--compute-device", 1)) from None
    options = EvaluateOptions(
        split=args.split,
        limit=args.limit,
        criterion=args.criterion,
        bn_repair=not args.no_bn_repair,
        repeats=args.repeats,
        data_dir=args.data_dir,
        download=args.download,
        reconstruct=args.reconstruct,
        device=args.compute_device,
    )
    shift = Shift.parse(args.shift) if args.shift else None
    policy = Policy.load(args.policy) if args.policy else None
    info = dataset_info(args.dataset, args.data_dir)
    model = load_model(args.model, info.num_classes, info.input_shape, args.dataset, args.pretrained, args.weights)
    if not (args.pretrained or args.weights or args.random_init or args.list_splits):
        raise UsageError(
            "evaluate needs trained weights, but neither --pretrained nor --weights was given; pass one of them "
            "(or --random-init to measure an untrained network on purpose)."
        )
    if args.list_splits:
        from autocompress.compress.graph import cut_points

        rows = [
            [p.name, p.module, "×".join(map(str, p.shape)), p.bytes_at(8)] for p in cut_points(model, info.input_shape)
        ]
        return _print_list(f"Split points of {args.model}", rows, ["cut point", "after", "tensor", "bytes at 8 bit"])
    deployment = Deployment.from_profiles(args.device, args.link, args.edge, args.interval_ms) if args.device else None
    result = evaluate_policy(model, args.model, args.dataset, policy, shift, deployment, options)
    _report(result, args.json)
    return 0


def _print_list(title: str, rows: list[list[Any]], columns: list[str]) -> int:
    from autocompress.cli.output import print_table

    print_table(title, columns, rows)
    return 0


def _report(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
        return
    from autocompress.cli.output import print_table

    rows = [[k, v] for k, v in result.items() if not isinstance(v, dict)]
    print_table(f"{result['model']} on {result['dataset']} ({result['split']})", ["metric", "value"], rows)
