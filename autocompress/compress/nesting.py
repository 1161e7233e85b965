"""Nested configurations: several pruned models that are slices of one shared model, so their weights can be stored
once (AdaSpring's retraining-free, weight-sharing configurations, built from a search's policies).

Channels are ranked once per model (:class:`~autocompress.compress.pruning.ChannelPruner`), so two policies that
keep k₁ ≤ k₂ channels of a group keep nested channel sets. The *union* model keeps, in every group, the most channels
any of the policies keeps; each policy's model is the union model pruned further in the same channel order — a slice
of it — with its BatchNorm statistics re-estimated (the one thing it keeps to itself). The shared weights are refitted
jointly (:func:`~autocompress.compress.reconstruction.reconstruct_joint_sequential`): every layer's weights minimise
the sum of all configurations' least-squares errors (each relative to what its own best fit leaves), each
configuration seeing only the inputs it keeps — one set of weights that serves every slice, instead of a refit that
suits the largest only. :func:`slice_map` says, for every
tensor of a configuration, which slice of the union's tensor it is.

A configuration whose policy applies a technique to a layer (a low-rank factorisation) builds that layer from its
slice of the jointly refitted weights and refits it on its own inputs; the layer is then its own, not a slice of the
union (absent from its slice map): stored with the configuration, trained as its own by the union training.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from autocompress.compress.layers import LayerTable, build_layer_table
from autocompress.compress.pruning import ChannelPruner
from autocompress.compress.reconstruction import factored_layers, reconstruct_joint_sequential
from autocompress.compress.techniques import LowRankModule, Values, apply_techniques
from autocompress.compress.union_training import take
from autocompress.errors import AutoCompressError

if TYPE_CHECKING:
    from autocompress.compress.evaluator import PolicyEvaluator
    from autocompress.compress.policy import Policy

EXACT = 2**24  # float32 holds every integer up to here exactly: the probe's index values


def union_kept(kepts: Sequence[Mapping[int, int]], table: LayerTable) -> dict[int, int]:
    """The union model's channels: in every group, the most any of the configurations keeps."""
    return {g.id: max(kept[g.id] for kept in kepts) for g in table.groups}


def nested_models(
    evaluator: PolicyEvaluator, policies: Sequence[Policy], reconstruct: str
) -> tuple[nn.Module, list[nn.Module], list[dict[str, list[list[int] | None]]]]:
    """The union model of ``policies`` (refitted jointly for all of them: ``sequential`` on each configuration's own
    inputs layer after layer, ``fast`` on the unpruned network's, or ``none``), each policy's model as a slice of it
    (BatchNorm re-estimated unless the refit was sequential; the layers its techniques replace its own, refitted
    alone), and for each the slice map of :func:`slice_map` (of the tensors that are slices)."""
    table = evaluator.table
    kepts = [policy.kept_channels(table) for policy in policies]
    union = union_kept(kepts, table)
    shared = evaluator.pruner.prune(union)
    shared.eval()
    sub_table = build_layer_table(shared, table.input_shape, protect=set())
    by_leader = {g.leader: g for g in table.groups}
    ranking: dict[int, torch.Tensor] = {}
    ids: dict[int, int] = {}  # the original table's group id -> the union model's
    for group in sub_table.groups:
        original = by_leader.get(group.leader)
        if original is None:  # a group the original table does not prune: nothing goes
            ranking[group.id] = torch.arange(group.channels)
            continue
        top = evaluator.pruner.ranking[original.id][: union[original.id]].tolist()
        position = {channel: i for i, channel in enumerate(sorted(top))}  # pruning keeps channels in their order
        ranking[group.id] = torch.tensor([position[channel] for channel in top])
        ids[original.id] = group.id
    pruner = ChannelPruner(shared, sub_table, ranking=ranking)  # prunes copies of `shared` as it is at each call
    sub_kepts = [{ids[g]: n for g, n in kept.items() if g in ids} for kept in kepts]
    values = [policy.technique_values(table) for policy in policies]
    working = [pruner.prune(sub_kept) for sub_kept in sub_kepts]
    own = [_with_techniques(model, table, values[k], k) for k, model in enumerate(working)]  # factored layers
    if reconstruct == "sequential":  # low-rank layers get the union's shared factors; other factored ones their own
        reconstruct_joint_sequential(
            shared,
            union,
            working,
            kepts,
            table,
            evaluator.pruner.ranking,
            evaluator.sequential_targets(),
            evaluator.options.reconstruction,
        )
    elif reconstruct == "fast":
        evaluator.fast_reconstructor().apply_joint(shared, union, kepts, evaluator.pruner.ranking, own)
    # the low-rank factors the joint refit gave the union (children of its dense layers) stay out of the copies the
    # configurations are pruned from; they come back once every configuration is built
    factors = {
        name: {child: module._modules.pop(child) for child in ("first", "second")}
        for name, module in shared.named_modules()
        if "first" in module._modules and not isinstance(module, LowRankModule)
    }
    probe = ChannelPruner(index_probe(shared), sub_table, ranking=ranking)
    union_state = shared.state_dict()
    models, maps = [], []
    dense: list[dict[str, list[list[int] | None]]] = []
    for k, (kept, sub_kept) in enumerate(zip(kepts, sub_kepts, strict=True)):
        model = pruner.prune(sub_kept)
        factored = _with_techniques(model, table, values[k], k)
        if factored and reconstruct == "sequential":  # as the joint refit left them (slices of shared factors or own)
            for name in factored:
                model.get_submodule(name).load_state_dict(working[k].get_submodule(name).state_dict())
        elif factored and reconstruct == "fast":
            evaluator.fast_reconstructor().apply(model, kept, evaluator.pruner.ranking, only=factored)
        models.append(model.eval())
        shapes = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
        slices = slice_map(probe.prune(sub_kept), union_state)
        dense.append(slices)
        # a factored layer's tensors are not slices of the union's dense layer (neither by name nor by shape)
        maps.append({n: index for n, index in slices.items() if shapes.get(n) == _shape(union_state, index, n)})
    for name, children in factors.items():
        for child, module in children.items():
            shared.get_submodule(name).add_module(child, module)
    _share_factors(shared, models, maps, dense, set(factors))
    for model, kept in zip(models, kepts, strict=True):
        # after a sequential refit the unpruned statistics stay right (as for one model); otherwise each slice
        # re-estimates its own
        evaluator.repair_batchnorm(model, kept, "sequential" if reconstruct == "sequential" else "fast")
    return shared, models, maps


def _share_factors(
    union: nn.Module,
    models: Sequence[nn.Module],
    maps: list[dict[str, list[list[int] | None]]],
    dense: Sequence[dict[str, list[list[int] | None]]],
    layers: set[str],
) -> None:
    """The slice maps of the low-rank factors the configurations share: ``layers`` are the union's layers the joint
    refit factored (:func:`~autocompress.compress.reconstruction.shared_factors`: children ``first`` and ``second``
    of the dense layer, components largest first). A configuration that factors such a layer takes its rank's first
    components and its kept output and input channels (``dense[k]``: its slice map of the union's dense tensors);
    its map gains those slices."""
    for name in sorted(layers):
        state = {f"{name}.{n}": t for n, t in union.get_submodule(name).named_parameters() if "." in n}
        rank = int(state[f"{name}.first.weight"].shape[0])
        for k, model in enumerate(models):
            mine = model.get_submodule(name)
            if not isinstance(mine, LowRankModule) or f"{name}.weight" not in dense[k]:
                continue
            out, cols, *rest = (None if ix is None else list(ix) for ix in dense[k][f"{name}.weight"])
            prefix = None if mine.rank == rank else list(range(mine.rank))
            index: dict[str, list[list[int] | None]] = {
                f"{name}.first.weight": [prefix, cols, *rest],
                f"{name}.second.weight": [out, prefix, *([None] * len(rest))],
            }
            if f"{name}.second.bias" in state:
                index[f"{name}.second.bias"] = [out]
            for tensor_name, ix in index.items():  # what the joint refit gave it: the slices, exactly
                if not torch.equal(mine.get_parameter(tensor_name[len(name) + 1 :]), take(state[tensor_name], ix)):
                    raise AssertionError(f"{tensor_name} of configuration {k} is not its slice of the union's")
            maps[k].update(index)


def _shape(state: Mapping[str, torch.Tensor], index: Sequence[Sequence[int] | None], name: str) -> tuple[int, ...]:
    """The shape of the slice ``index`` of the union's tensor ``name``."""
    return tuple(n if ix is None else len(ix) for ix, n in zip(index, state[name].shape, strict=True))


def _with_techniques(model: nn.Module, table: LayerTable, values: Values, k: int) -> set[str]:
    """Apply configuration ``k``'s technique ``values`` to its ``model``; returns its factored layers. A replaced
    layer must be a factored module (refitted and trained as the configuration's own): any other replacement has no
    refit here and would take the union's slice by its name."""
    before = {name: model.get_submodule(name) for name in values}
    apply_techniques(model, table, values)
    factored = factored_layers(model)
    for name, module in before.items():
        if model.get_submodule(name) is not module and name not in factored:
            raise AutoCompressError(
                f"configurations that share weights (share_weights, train_epochs) may replace a layer only by a "
                f"factored module (FactoredModule, as low rank does), but configuration {k} replaces layer '{name}' "
                f"by a {type(model.get_submodule(name)).__name__}; export the package without sharing."
            )
    return factored


def index_probe(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose every floating tensor holds its own flat element indices (tensors too large for
    float32 to count exactly hold NaN): pruned like the model, it tells which elements survived."""
    probe = copy.deepcopy(model)
    with torch.no_grad():
        for tensor in [*probe.parameters(), *probe.buffers()]:
            if tensor.is_floating_point():
                if tensor.numel() < EXACT:
                    tensor.copy_(torch.arange(tensor.numel(), dtype=tensor.dtype).reshape(tensor.shape))
                else:
                    tensor.fill_(float("nan"))
    return probe


def slice_map(pruned_probe: nn.Module, union_state: dict[str, torch.Tensor]) -> dict[str, list[list[int] | None]]:
    """For each floating tensor of a pruned probe that is an axis-wise slice of the union model's tensor of the same
    name: per axis, the positions it keeps (``None``: all)."""
    found: dict[str, list[list[int] | None]] = {}
    for name, tensor in pruned_probe.state_dict().items():
        full = union_state.get(name)
        if full is None or not tensor.is_floating_point() or tensor.ndim == 0 or torch.isnan(tensor).any():
            continue
        flat = tensor.numpy().astype(np.int64)
        coords = np.unravel_index(flat, tuple(full.shape))
        index = [coords[a][tuple(slice(None) if b == a else 0 for b in range(flat.ndim))] for a in range(flat.ndim)]
        grid = np.arange(full.numel()).reshape(tuple(full.shape))[np.ix_(*index)]
        if grid.shape != flat.shape or not np.array_equal(grid, flat):
            continue  # not an axis-wise slice (it never happens for channel pruning; then it is simply not shared)
        found[name] = [
            None if len(ix) == n and np.array_equal(ix, np.arange(n)) else ix.tolist()
            for ix, n in zip(index, full.shape, strict=True)
        ]
    return found
