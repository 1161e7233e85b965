"""A workload: the trained model, its data slices, evaluator, layer table and graph facts — everything an
environment needs that does not change between episodes. Built once and shared by all environments of a job."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache

from torch import nn

from autocompress.compress.evaluator import EvaluatorOptions, PolicyEvaluator
from autocompress.compress.layers import LayerTable, build_layer_table, default_protected
from autocompress.data import DatasetInfo, DatasetSplits, load_dataset
from autocompress.hardware.graph import GraphInfo, analyse
from autocompress.models import load_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Workload:
    """The fixed part of a compression search."""

    model_name: str
    info: DatasetInfo
    splits: DatasetSplits
    model: nn.Module
    table: LayerTable
    graph: GraphInfo
    evaluator: PolicyEvaluator


@cache
def build_workload(
    model: str = "digits-cnn",
    dataset: str = "digits",
    pretrained: bool = True,
    weights: str | None = None,
    data_dir: str | None = None,
    val_images: int | None = None,
    train_images: int = 2048,
    protect_first_last: bool = True,
    bn_repair: bool = True,
    criterion: str = "l1",
    reconstruct: str = "sequential",
    device: str = "cpu",
) -> Workload:
    """Load data and model and prepare the evaluator (cached per argument set).

    Args:
        model: Model spec (zoo name, ``torchvision:<name>`` or ``package.module:factory``).
        dataset: ``digits`` or ``cifar10``.
        pretrained: Load the shipped weights (ignored when ``weights`` is given).
        weights: A weights file to load instead.
        data_dir: Dataset folder (CIFAR-10).
        val_images: Size of the validation slice policies are scored on (default: the whole val split).
        train_images: Training images kept for BatchNorm repair, calibration and adaptation.
        protect_first_last: Keep all output channels of the first layer and the classifier.
        bn_repair: Re-estimate BatchNorm statistics after pruning.
        criterion: Channel ranking, ``l1`` or ``l2``.
        reconstruct: Least-squares refit after pruning: ``fast``, ``sequential`` or ``none``.
        device: Where policies are scored: ``cpu``, ``cuda`` or ``auto``.
    """
    splits = load_dataset(dataset, data_dir)
    info = splits.info
    net = load_model(model, info.num_classes, info.input_shape, dataset, pretrained and not weights, weights)
    probe = build_layer_table(net, info.input_shape, protect=set())
    protect = default_protected(probe.names) if protect_first_last else {probe.names[-1]}
    table = build_layer_table(net, info.input_shape, protect=protect)
    count = len(splits.val_y) if val_images is None else min(val_images, len(splits.val_y))
    if val_images is not None and val_images > count:
        log.warning("val_images %d is more than the validation split holds: all %d are used", val_images, count)
    evaluator = PolicyEvaluator(
        net,
        info,
        splits.val_x[:count],
        splits.val_y[:count],
        splits.train_x[:train_images],
        EvaluatorOptions(criterion=criterion, bn_repair=bn_repair, reconstruct=reconstruct, device=device),
        table=table,
    )
    log.debug("workload %s on %s: %d layers, %d val images", model, dataset, len(table.layers), count)
    return Workload(model, info, splits, net, table, analyse(net, table), evaluator)
