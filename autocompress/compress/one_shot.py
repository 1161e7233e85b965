"""Torch-Pruning's one-shot global pruning, as the baseline users have today: one importance criterion ranks every
channel of the network at once and the lowest-ranked go, until a pruning ratio is reached (``MetaPruner`` with
``global_pruning=True``). What it decides is how many channels each group keeps; the searchers turn that into a
policy, so the baseline is scored, refitted, fine-tuned and exported exactly as every searched policy is.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from autocompress.compress.layers import LAYER_TYPES, LayerTable
from autocompress.errors import unknown_name_error

IMPORTANCES = ("taylor", "magnitude")


def _importance(name: str) -> tp.importance.Importance:
    if name == "taylor":
        return tp.importance.GroupTaylorImportance()
    if name == "magnitude":
        return tp.importance.GroupMagnitudeImportance(p=2)
    raise unknown_name_error("importance", name, IMPORTANCES)


def global_kept_channels(
    model: nn.Module,
    table: LayerTable,
    ratio: float,
    importance: str,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]] = (),
    round_to: int = 1,
    max_ratio: float = 0.8,
) -> dict[int, int]:
    """Channels each group keeps when Torch-Pruning prunes ``ratio`` of the network's channels globally.

    Args:
        model: The trained model (not modified; a copy is pruned).
        table: Its layer table (protected groups are not pruned).
        ratio: Global pruning ratio (Torch-Pruning's ``pruning_ratio``).
        importance: ``taylor`` (first-order Taylor, gradients from ``batches``) or ``magnitude`` (L2).
        batches: Normalised (inputs, labels) for Taylor's gradients.
        round_to: Channel counts are multiples of this.
        max_ratio: No group loses more than this fraction of its channels.
    """
    work = copy.deepcopy(model).eval()
    modules = dict(work.named_modules())
    ignored = [modules[name] for group in table.groups if group.protected for name in group.members]
    ignored += [modules[layer.name] for layer in table.layers if layer.group is None]
    scorer = _importance(importance)
    if importance == "taylor":
        work.zero_grad()
        for x, y in batches:
            F.cross_entropy(work(x), y).backward()
    pruner = tp.pruner.MetaPruner(
        work,
        torch.zeros(1, *table.input_shape),
        importance=scorer,
        global_pruning=True,
        pruning_ratio=ratio,
        max_pruning_ratio=max_ratio,
        ignored_layers=ignored,
        round_to=round_to if round_to > 1 else None,
        root_module_types=list(LAYER_TYPES),
    )
    pruner.step()
    return {group.id: _out_channels(modules[group.leader]) for group in table.groups}


def _out_channels(module: nn.Module) -> int:
    return int(module.out_features if isinstance(module, nn.Linear) else module.out_channels)  # type: ignore[arg-type]


def keep_ratios(table: LayerTable, kept: Mapping[int, int]) -> dict[str, float]:
    """Keep ratio per group leader (what a policy names) for channel counts per group."""
    return {g.leader: kept[g.id] / g.channels for g in table.groups if not g.protected}
