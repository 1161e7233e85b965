"""``autocompress evaluate``: apply a policy (prune → quantize → split → adapt) and report accuracy, size, MACs,
storage, the bytes a split sends, the drift score and measured host latency."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from autocompress.cli.app import add_common_data_args, apply_threads

log = logging.getLogger(__name__)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="apply a policy and measure accuracy, size, MACs, storage and latency")
    add_model_args(p)
    p.add_argument("--policy", default=None, help="compression policy JSON (default: the uncompressed model)")
    p.add_argument("--shift", default=None, help="input shift name:severity, e.g. noise:3 (see --list-shifts)")
    p.add_argument("--split", default="test", help="test (final reports) or val (what searches score on)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images of the split")
    p.add_argument("--no-bn-repair", action="store_true", help="skip re-estimating BatchNorm statistics after pruning")
    p.add_argument("--criterion", default="l1", help="channel ranking for pruning: l1 or l2")
    p.add_argument("--repeats", type=int, default=50, help="timed repeats of the batch-1 latency measurement")
    p.add_argument("--device", default=None, help="add predicted costs on this device profile (name or YAML)")
    p.add_argument("--link", default=None, help="link to the edge server for split policies (wifi, lte, ble, ethernet)")
    p.add_argument("--edge", default="edge-server", help="device profile of the edge server that runs a split's tail")
    p.add_argument(
        "--interval-ms", type=float, default=1000.0, help="time between inferences (bounds radio tail energy)"
    )
    p.add_argument("--list-splits", action="store_true", help="list the model's valid split points and exit")
    p.add_argument("--list-shifts", action="store_true", help="list the input shifts and exit")
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
    from autocompress.compress.policy import Policy
    from autocompress.data import dataset_info
    from autocompress.data.shifts import SHIFTS, Shift
    from autocompress.models import load_model

    apply_threads(args.threads)
    if args.list_shifts:
        return _print_list("Input shifts (severity 1..5)", [[n] for n in SHIFTS], ["shift"])
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit >= 1 must hold, but got {args.limit}.")
    shift = Shift.parse(args.shift) if args.shift else None
    policy = Policy.load(args.policy) if args.policy else None
    info = dataset_info(args.dataset)
    model = load_model(args.model, info.num_classes, info.input_shape, args.dataset, args.pretrained, args.weights)
    if args.list_splits:
        from autocompress.compress.split import cut_points

        rows = [
            [p.name, p.module, "×".join(map(str, p.shape)), p.bytes_at(8)] for p in cut_points(model, info.input_shape)
        ]
        return _print_list(f"Split points of {args.model}", rows, ["cut point", "after", "tensor", "bytes at 8 bit"])
    result = evaluate_policy(args, model, policy or Policy(args.model), shift)
    _report(result, args.json)
    return 0


def evaluate_policy(args: argparse.Namespace, model: Any, policy: Any, shift: Any) -> dict[str, Any]:
    """Apply ``policy`` with a PolicyEvaluator on the chosen split and measure it."""
    from autocompress.compress.evaluator import EvaluatorOptions, PolicyEvaluator
    from autocompress.data import load_dataset
    from autocompress.hardware.measure import torch_latency, torch_throughput

    splits = load_dataset(args.dataset, args.data_dir, args.download)
    images, labels = splits.split(args.split)
    images, labels = images[: args.limit], labels[: args.limit]
    options = EvaluatorOptions(criterion=args.criterion, bn_repair=not args.no_bn_repair)
    evaluator = PolicyEvaluator(model, splits.info, images, labels, splits.train_x, options)
    policy.validate(evaluator.table, [p.name for p in evaluator.cut_points] if policy.split else None)
    scored = evaluator.evaluate(policy, shift)
    pruned = evaluator.pruned_copy(policy)
    shape = splits.info.input_shape
    result: dict[str, Any] = {
        "model": args.model,
        "dataset": args.dataset,
        "split": args.split,
        "images": len(labels),
        "shift": str(shift) if shift else None,
        **scored.summary(),
        "params": sum(p.numel() for p in pruned.parameters()),
        "host_latency_ms": torch_latency(pruned, shape, repeats=args.repeats).median_ms,
        "host_throughput_ips": torch_throughput(pruned, shape),
        "policy": policy.to_dict(),
    }
    if result["split_bytes"] is None:
        del result["split_bytes"]
    if args.device:
        result["device"] = device_costs(args, evaluator, policy, scored.adapt_cost)
    return result


def device_costs(args: argparse.Namespace, evaluator: Any, policy: Any, adapt_cost: Any) -> dict[str, Any]:
    """Predicted latency, energy, storage, peak memory and fit of ``policy`` on ``--device``."""
    from autocompress.hardware.cost_model import CostModel
    from autocompress.hardware.profiles import load_device, load_link

    device = load_device(args.device)
    link = load_link(args.link) if args.link else None
    edge = load_device(args.edge) if policy.split is not None else None
    model = CostModel.for_model(
        evaluator.model, evaluator.table, device, link=link, edge=edge, interval_ms=args.interval_ms
    )
    return {
        "name": device.name,
        "link": link.name if link else None,
        **model.predict_policy(policy, adapt_cost).to_dict(),
    }


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
