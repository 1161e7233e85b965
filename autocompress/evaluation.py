"""Measure one policy on one model: accuracy on a data split (optionally shifted), size, MACs, storage, the bytes a
split sends, the drift score, host latency and throughput, and — given a deployment — the predicted device costs.
What ``autocompress evaluate`` prints, as a library call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from autocompress.compress.evaluator import EvaluatorOptions, PolicyEvaluator
from autocompress.compress.policy import Policy, PolicyError
from autocompress.data import load_dataset
from autocompress.data.drift import DriftData
from autocompress.data.shifts import Shift
from autocompress.env.deployment import Deployment
from autocompress.errors import AutoCompressError
from autocompress.hardware.graph import analyse
from autocompress.hardware.measure import torch_latency, torch_throughput

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class EvaluateOptions:
    """How :func:`evaluate_policy` measures.

    Args:
        split: ``test`` (final reports) or ``val`` (what searches score on).
        limit: Measure only the first ``limit`` images of the split.
        criterion: Channel ranking for pruning, ``l1`` or ``l2``.
        bn_repair: Re-estimate BatchNorm statistics after pruning.
        reconstruct: Least-squares refit after pruning: ``sequential`` (default, what export ships), ``fast`` (what
            a search scores) or ``none``.
        device: Where the measured forward passes run: ``cpu``, ``cuda`` or ``auto``.
        repeats: Timed repeats of the batch-1 host latency.
        data_dir: Dataset folder (CIFAR-10).
        download: Let torchvision download the dataset.
    """

    split: str = "test"
    limit: int | None = None
    criterion: str = "l1"
    bn_repair: bool = True
    reconstruct: str = "sequential"
    device: str = "cpu"
    repeats: int = 50
    data_dir: str | None = None
    download: bool = False

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise AutoCompressError(
                f"split must be one of {', '.join(SPLITS)}, but got '{self.split}'.", params=("split",)
            )
        if self.limit is not None and self.limit < 1:
            raise AutoCompressError(f"limit >= 1 must hold, but got {self.limit}.", params=("limit",))
        if self.repeats < 1:
            raise AutoCompressError(f"repeats >= 1 must hold, but got {self.repeats}.", params=("repeats",))


def evaluate_policy(
    model: nn.Module,
    model_name: str,
    dataset: str,
    policy: Policy | None = None,
    shift: Shift | DriftData | None = None,
    deployment: Deployment | None = None,
    options: EvaluateOptions | None = None,
) -> dict[str, Any]:
    """Apply ``policy`` (default: none) to the trained ``model`` and measure it.

    Args:
        model: The trained, unpruned model (not modified).
        model_name: Its spec, for the report.
        dataset: The dataset it was trained on.
        policy: The compression policy; ``None`` measures the model as it is.
        shift: An input shift applied to the measured images.
        deployment: Adds the costs the cost model predicts on this deployment.
        options: See :class:`EvaluateOptions`.
    """
    options = options or EvaluateOptions()
    policy = policy or Policy(model_name)
    if policy.model != model_name:
        raise PolicyError(
            f"the policy must be for the model it is applied to ('{model_name}'), but it names '{policy.model[:80]}'; "
            "pass the policy that search or export wrote for this model.",
            params=("policy",),
        )
    splits = load_dataset(dataset, options.data_dir, options.download)
    images, labels = splits.split(options.split)
    images, labels = images[: options.limit], labels[: options.limit]
    evaluator = PolicyEvaluator(
        model,
        splits.info,
        images,
        labels,
        splits.train_x,
        EvaluatorOptions(
            criterion=options.criterion,
            bn_repair=options.bn_repair,
            reconstruct=options.reconstruct,
            device=options.device,
        ),
    )
    policy.validate(evaluator.table, [p.name for p in evaluator.cut_points] if policy.split else None)
    scored = evaluator.evaluate(policy, shift)
    pruned = evaluator.pruned_copy(policy)
    shape = splits.info.input_shape
    result: dict[str, Any] = {
        "model": model_name,
        "dataset": dataset,
        "split": options.split,
        "images": len(shift.labels) if isinstance(shift, DriftData) else len(labels),
        "shift": str(shift) if shift else None,
        **scored.summary(),
        "params": sum(p.numel() for p in pruned.parameters()),
        "host_latency_ms": torch_latency(pruned, shape, repeats=options.repeats).median_ms,
        "host_throughput_ips": torch_throughput(pruned, shape),
        "policy": policy.to_dict(),
    }
    if result["split_bytes"] is None:
        del result["split_bytes"]
    if deployment is not None:
        cost = deployment.cost_model(evaluator.table, analyse(evaluator.model, evaluator.table))
        link = deployment.link
        result["device"] = {
            "name": deployment.device.name,
            "link": link.name if link else None,
            **cost.predict_policy(policy, scored.adapt_cost).to_dict(),
        }
    return result
