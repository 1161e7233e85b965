"""The layer table: every prunable layer of a model, its shapes and costs, and the channel groups that must be
pruned together. Built once per model by tracing one forward pass; the environment's state, the pruner and the
hardware cost model all read it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn

LAYER_TYPES = (nn.Conv1d, nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class Layer:
    """One Conv1d/Conv2d/Linear layer as seen in a forward pass with batch size 1.

    ``group`` is the channel group its output channels belong to (``None`` when they may not change, e.g. the
    classifier); ``in_group`` is the group whose channels feed its input (``None`` for the network input).
    ``in_per_channel`` is how many input features one input channel stands for (H×W for a linear after a flatten).
    """

    index: int
    name: str
    kind: str
    op_class: str
    in_channels: int
    out_channels: int
    groups: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    in_hw: tuple[int, ...]
    out_hw: tuple[int, ...]
    macs: int
    params: int
    has_bias: bool
    in_elements: int
    out_elements: int
    group: int | None
    in_group: int | None
    in_per_channel: int

    @property
    def kernel_area(self) -> int:
        return math.prod(self.kernel)

    @property
    def out_area(self) -> int:
        return math.prod(self.out_hw)


@dataclass(frozen=True)
class ChannelGroup:
    """Layers whose output channels are coupled (residual adds, depthwise chains) and share one kept count."""

    id: int
    members: tuple[str, ...]
    channels: int
    protected: bool

    @property
    def leader(self) -> str:
        """The first member in execution order; its policy entry decides the group's keep ratio."""
        return self.members[0]


@dataclass(frozen=True)
class LayerShape:
    """A layer's channels and costs after pruning (what the cost model prices). ``parts`` lists the operations a
    technique turned the layer into, as (op class, MACs); empty: one operation of the layer's own op class."""

    in_channels: int
    out_channels: int
    macs: int
    params: int
    in_elements: int
    out_elements: int
    parts: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class LayerTable:
    """All prunable layers of a model in execution order, with their coupling groups."""

    input_shape: tuple[int, ...]
    layers: tuple[Layer, ...]
    groups: tuple[ChannelGroup, ...]
    model_params: int
    by_name: Mapping[str, Layer] = field(repr=False)

    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    def group_of(self, name: str) -> ChannelGroup | None:
        gid = self.by_name[name].group
        return None if gid is None else self.groups[gid]

    def kept_channels(self, keep: Mapping[int, float], round_to: int = 1) -> dict[int, int]:
        """Channels each group keeps for keep ratios per group id (missing ids keep all; protected groups too)."""
        kept = {}
        for group in self.groups:
            ratio = 1.0 if group.protected else keep.get(group.id, 1.0)
            kept[group.id] = round_channels(group.channels, ratio, round_to)
        return kept

    def shapes(self, kept: Mapping[int, int]) -> list[LayerShape]:
        """Per-layer channels, MACs and parameters when each group keeps ``kept[group id]`` channels."""
        out = []
        for layer in self.layers:
            cout = layer.out_channels if layer.group is None else kept.get(layer.group, layer.out_channels)
            cin = layer.in_channels if layer.in_group is None else kept.get(layer.in_group, layer.in_channels)
            out.append(_shape_of(layer, cin, cout))
        return out


def round_channels(channels: int, keep: float, round_to: int = 1) -> int:
    """Channels kept of ``channels`` at ratio ``keep``: rounded to the nearest multiple of ``round_to``, at least
    one multiple (or all channels when there are fewer), at most all."""
    step = max(1, min(round_to, channels))
    kept = math.floor(keep * channels / step + 0.5) * step
    return max(step, min(channels, kept))


def _shape_of(layer: Layer, cin: int, cout: int) -> LayerShape:
    if layer.kind == "depthwise":
        cin = cout
        per_out = layer.kernel_area
        weights = cout * layer.kernel_area
    elif layer.kind == "linear":
        per_out = cin * layer.in_per_channel
        weights = per_out * cout
    else:
        groups = layer.groups
        per_out = (cin // groups) * layer.kernel_area
        weights = per_out * cout
    macs = per_out * cout * layer.out_area
    params = weights + (cout if layer.has_bias else 0)
    in_elements = cin * layer.in_per_channel if layer.kind == "linear" else cin * math.prod(layer.in_hw)
    return LayerShape(cin, cout, macs, params, in_elements, cout * layer.out_area)


def _classify(module: nn.Module) -> tuple[str, str]:
    if isinstance(module, nn.Linear):
        return "linear", "linear"
    assert isinstance(module, (nn.Conv1d, nn.Conv2d))
    if module.groups > 1 and module.groups == module.in_channels == module.out_channels:
        return "depthwise", "depthwise"
    return "conv", "conv_1x1" if math.prod(module.kernel_size) == 1 else "conv_kxk"


def _trace(model: nn.Module, example: torch.Tensor) -> list[tuple[str, nn.Module, tuple[int, ...], tuple[int, ...]]]:
    """Run one forward pass and record (name, module, input shape, output shape) of each layer in call order."""
    seen: list[tuple[str, nn.Module, tuple[int, ...], tuple[int, ...]]] = []
    names = {m: n for n, m in model.named_modules()}
    handles = []

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if all(module is not s[1] for s in seen):
            seen.append((names[module], module, tuple(inputs[0].shape), tuple(output.shape)))

    for module in model.modules():
        if isinstance(module, LAYER_TYPES):
            handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def build_dependency_graph(model: nn.Module, input_shape: tuple[int, ...]) -> tp.DependencyGraph:
    """Torch-Pruning's dependency graph of ``model`` (in eval mode, traced with one example input)."""
    was_training = model.training
    model.eval()
    example = torch.zeros(1, *input_shape)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example, verbose=False)
    model.train(was_training)
    return graph


def _channel_groups(
    graph: tp.DependencyGraph, model: nn.Module, order: list[str], protect: set[str], output_layers: set[str]
) -> tuple[list[ChannelGroup], dict[str, int], dict[str, int]]:
    names = {m: n for n, m in model.named_modules()}
    rank = {name: i for i, name in enumerate(order)}
    found = []
    for group in graph.get_all_groups(root_module_types=LAYER_TYPES):
        outs, ins = set(), set()
        for dep, _ in group:
            module = dep.target.module
            if not isinstance(module, LAYER_TYPES) or names.get(module) not in rank:
                continue
            if graph.is_out_channel_pruning_fn(dep.handler):
                outs.add(names[module])
            if graph.is_in_channel_pruning_fn(dep.handler):
                ins.add(names[module])
        if outs and not outs & output_layers:
            found.append((sorted(outs, key=rank.__getitem__), ins, graph.get_out_channels(group[0].dep.target.module)))
    found.sort(key=lambda item: rank[item[0][0]])
    groups, out_group, in_group = [], {}, {}
    for gid, (members, ins, channels) in enumerate(found):
        groups.append(ChannelGroup(gid, tuple(members), int(channels), bool(set(members) & protect)))
        out_group.update({m: gid for m in members})
        in_group.update({m: gid for m in ins})
    return groups, out_group, in_group


def default_protected(order: list[str]) -> set[str]:
    """Layers protected from pruning by default: the first layer (it sees raw pixels) and the last (the classifier)."""
    return {order[0], order[-1]} if order else set()


def build_layer_table(model: nn.Module, input_shape: tuple[int, ...], protect: set[str] | None = None) -> LayerTable:
    """Trace ``model`` once and build its layer table.

    Args:
        model: The network (not modified).
        input_shape: C×H×W (or C×L) of one input.
        protect: Layers whose output channels must not be pruned (default: first layer and classifier).
    """
    was_training = model.training
    model.eval()
    try:
        traced = _trace(model, torch.zeros(1, *input_shape))
        order = [name for name, *_ in traced]
        graph = build_dependency_graph(model, input_shape)
        output_layers = {order[-1]} if order else set()
        protected = default_protected(order) if protect is None else set(protect)
        groups, out_group, in_group = _channel_groups(graph, model, order, protected, output_layers)
    finally:
        model.train(was_training)
    layers = tuple(_linear_input_channels(_layer(i, e, out_group, in_group), groups) for i, e in enumerate(traced))
    params = sum(p.numel() for p in model.parameters())
    return LayerTable(tuple(input_shape), layers, tuple(groups), params, {layer.name: layer for layer in layers})


def _layer(
    index: int,
    entry: tuple[str, nn.Module, tuple[int, ...], tuple[int, ...]],
    out_group: dict[str, int],
    in_group: dict[str, int],
) -> Layer:
    name, module, in_shape, out_shape = entry
    kind, op_class = _classify(module)
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    in_hw: tuple[int, ...]
    out_hw: tuple[int, ...]
    if isinstance(module, nn.Linear):
        cin, cout, groups = module.in_features, module.out_features, 1
        kernel, stride, in_hw, out_hw = (1,), (1,), (1,), tuple(out_shape[1:-1]) or (1,)
        in_per_channel = 1
    else:
        assert isinstance(module, (nn.Conv1d, nn.Conv2d))
        cin, cout, groups = module.in_channels, module.out_channels, module.groups
        kernel, stride = tuple(module.kernel_size), tuple(module.stride)
        in_hw, out_hw, in_per_channel = tuple(in_shape[2:]), tuple(out_shape[2:]), math.prod(in_shape[2:])
    layer = Layer(
        index,
        name,
        kind,
        op_class,
        cin,
        cout,
        groups,
        kernel,
        stride,
        in_hw,
        out_hw,
        0,
        0,
        module.bias is not None,
        math.prod(in_shape[1:]),
        math.prod(out_shape[1:]),
        out_group.get(name),
        in_group.get(name),
        in_per_channel,
    )
    shape = _shape_of(layer, cin, cout)
    return Layer(**{**layer.__dict__, "macs": shape.macs, "params": shape.params})


def _linear_input_channels(layer: Layer, groups: list[ChannelGroup]) -> Layer:
    """A linear layer fed by a channel group sees ``in_features = channels × positions`` after a flatten."""
    if layer.kind != "linear" or layer.in_group is None:
        return layer
    channels = groups[layer.in_group].channels
    return Layer(**{**layer.__dict__, "in_channels": channels, "in_per_channel": layer.in_channels // channels})


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """MACs of one forward pass (batch 1) of the Conv/Linear layers of any model, as the layer table counts them."""
    was_training = model.training
    model.eval()
    try:
        traced = _trace(model, torch.zeros(1, *input_shape))
    finally:
        model.train(was_training)
    return sum(_layer(i, entry, {}, {}).macs for i, entry in enumerate(traced))
