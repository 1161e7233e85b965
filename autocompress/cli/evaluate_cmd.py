"""``autocompress evaluate``: accuracy, size, MACs and measured host latency of a (compressed) model."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from autocompress.cli.app import add_common_data_args, apply_threads

log = logging.getLogger(__name__)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="measure accuracy, parameters, MACs and host latency")
    add_model_args(p)
    p.add_argument("--split", default="test", help="test (final reports) or val (what searches score on)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images of the split")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--repeats", type=int, default=50, help="timed repeats of the batch-1 latency measurement")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else")
    add_common_data_args(p)
    p.set_defaults(run=run)


def add_model_args(p: argparse.ArgumentParser) -> None:
    """--model/--pretrained/--weights/--dataset, shared by the verbs that load a trained model."""
    p.add_argument("--model", required=True, help="zoo name, torchvision:<name> or package.module:factory")
    p.add_argument("--dataset", required=True, help="digits or cifar10")
    p.add_argument("--pretrained", action="store_true", help="load the weights shipped with autocompress")
    p.add_argument("--weights", default=None, help="load a state dict or training checkpoint (weights_only)")


def run(args: argparse.Namespace) -> int:
    from autocompress.cli.app import UsageError
    from autocompress.compress.layers import count_macs
    from autocompress.data import load_dataset
    from autocompress.hardware.measure import torch_latency
    from autocompress.models import load_model
    from autocompress.training import evaluate_accuracy

    apply_threads(args.threads)
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit >= 1 must hold, but got {args.limit}.")
    splits = load_dataset(args.dataset, args.data_dir, args.download)
    info = splits.info
    model = load_model(args.model, info.num_classes, info.input_shape, args.dataset, args.pretrained, args.weights)
    images, labels = splits.split(args.split)
    images, labels = images[: args.limit], labels[: args.limit]
    result = {
        "model": args.model,
        "dataset": args.dataset,
        "split": args.split,
        "images": len(labels),
        "accuracy": evaluate_accuracy(model, images, labels, info, args.batch_size),
        "params": sum(p.numel() for p in model.parameters()),
        "macs": count_macs(model, info.input_shape),
        "host_latency_ms": torch_latency(model, info.input_shape, repeats=args.repeats).median_ms,
    }
    _report(result, args.json)
    return 0


def _report(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
        return
    from autocompress.cli.output import print_table

    print_table(
        f"{result['model']} on {result['dataset']} ({result['split']})",
        ["metric", "value"],
        [[k, v] for k, v in result.items() if not isinstance(v, dict)],
    )
