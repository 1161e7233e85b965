"""Structured pruning with channels really removed, through Torch-Pruning's dependency graph.

Channels are ranked once per model (group magnitude of the unpruned weights, L1 or L2); each policy then keeps the
top channels of every group, so evaluating many policies needs no re-ranking. Pruning a copy costs a deepcopy and a
dependency-graph trace (about 25 ms for ResNet-20).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
import torch_pruning as tp
from torch import nn

from autocompress.compress.layers import LAYER_TYPES, LayerTable, build_dependency_graph
from autocompress.errors import unknown_name_error

CRITERIA = {"l1": 1, "l2": 2}


class ChannelPruner:
    """Prune copies of one model to given kept-channel counts per group.

    Args:
        model: The unpruned model (never modified).
        table: Its layer table.
        criterion: ``l1`` (default) or ``l2`` magnitude of each channel across the whole coupled group.
        ranking: Channel indices of each group (by group id), most important first, instead of ranking them by
            ``criterion`` — e.g. to prune an already pruned model further in the original model's order, so that
            the smaller model's channels are a subset of the larger one's.
    """

    def __init__(
        self,
        model: nn.Module,
        table: LayerTable,
        criterion: str = "l1",
        ranking: Mapping[int, torch.Tensor] | None = None,
    ) -> None:
        if criterion not in CRITERIA:
            raise unknown_name_error("pruning criterion", criterion, CRITERIA)
        self.model, self.table, self.criterion = model, table, criterion
        self.ranking = dict(ranking) if ranking is not None else self._rank_channels()

    def _rank_channels(self) -> dict[int, torch.Tensor]:
        """Channel indices of each group, most important first."""
        graph = build_dependency_graph(self.model, self.table.input_shape)
        modules = dict(self.model.named_modules())
        scorer = tp.importance.GroupMagnitudeImportance(
            p=CRITERIA[self.criterion], group_reduction="mean", normalizer=None, target_types=list(LAYER_TYPES)
        )
        ranking = {}
        for group in self.table.groups:
            leader = modules[group.leader]
            handler = graph.get_pruner_of_module(leader).prune_out_channels
            with torch.no_grad():
                scores = scorer(graph.get_pruning_group(leader, handler, list(range(group.channels))))
            ranking[group.id] = torch.argsort(scores, descending=True, stable=True)
        return ranking

    def prune(self, kept: Mapping[int, int]) -> nn.Module:
        """Return a pruned copy in which group ``g`` keeps its ``kept[g]`` most important channels."""
        model = copy.deepcopy(self.model)
        todo = [g for g in self.table.groups if kept.get(g.id, g.channels) < g.channels]
        if not todo:
            return model
        graph = build_dependency_graph(model, self.table.input_shape)
        modules = dict(model.named_modules())
        for group in todo:
            leader = modules[group.leader]
            drop = sorted(self.ranking[group.id][kept[group.id] :].tolist())
            handler = graph.get_pruner_of_module(leader).prune_out_channels
            graph.get_pruning_group(leader, handler, drop).prune()
        return model
