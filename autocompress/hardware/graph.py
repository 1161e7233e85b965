"""Static facts of a model's dataflow graph that the cost model needs, traced once per model with torch.fx:
where each layer and cut point sits, and how big each intermediate tensor is as a function of the channels kept.

Element-wise ops that a deployment runtime fuses into the preceding layer (BatchNorm, ReLU, ReLU6, flatten,
dropout) are aliases of their input and occupy no memory of their own; every other op's output is a buffer.
A tensor's channels follow the channel group of the layer that produced it (through aliases, pooling and adds).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from torch import fx, nn

from autocompress.compress.graph import cut_points, node_shapes, trace
from autocompress.compress.layers import LayerTable

ALIAS_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.Dropout, nn.Identity, nn.Flatten)
ALIAS_FUNCTIONS = {"flatten", "relu", "relu6", "dropout", "reshape", "view"}


@dataclass(frozen=True)
class Tensor:
    """One buffer: its channel group (``None`` = fixed size) and elements per kept channel (or in all)."""

    group: int | None
    per_channel: int
    fixed: int

    def elements(self, kept: Mapping[int, int]) -> int:
        if self.group is None:
            return self.fixed
        return kept.get(self.group, self.fixed // max(1, self.per_channel)) * self.per_channel


@dataclass(frozen=True)
class GraphInfo:
    """Layer and cut-point positions in execution order, the buffers, and which buffers are live at each step."""

    layer_position: dict[str, int]
    cut_position: dict[str, int]
    cut_tensor: dict[str, Tensor]
    tensors: list[Tensor]
    live_sets: list[tuple[int, ...]]

    def peak_activation_elements(self, kept: Mapping[int, int]) -> int:
        """Largest number of activation elements alive at once."""
        sizes = [t.elements(kept) for t in self.tensors]
        return max((sum(sizes[i] for i in live) for live in self.live_sets), default=0)


def analyse(model: nn.Module, table: LayerTable) -> GraphInfo:
    """Trace ``model`` and build its :class:`GraphInfo`."""
    gm = trace(model)
    shapes = node_shapes(gm, table.input_shape)
    modules = dict(gm.named_modules())
    nodes = [n for n in gm.graph.nodes if n.op != "output"]
    position = {n: i for i, n in enumerate(nodes)}
    owner: dict[fx.Node, fx.Node] = {}
    group_of: dict[fx.Node, int | None] = {}
    for node in nodes:
        inputs = [a for a in node.all_input_nodes if a in position]
        if node.op == "call_module" and str(node.target) in table.by_name:
            group_of[node], owner[node] = table.by_name[str(node.target)].group, node
        elif inputs and _is_alias(node, modules):
            group_of[node], owner[node] = group_of[inputs[0]], owner[inputs[0]]
        else:
            group_of[node] = group_of[inputs[0]] if inputs else None
            owner[node] = node
    buffers = [n for n in nodes if owner[n] is n]
    index = {n: i for i, n in enumerate(buffers)}
    tensors = [_tensor(n, shapes, group_of[n], table) for n in buffers]
    last_use = {b: max([position[b]] + [position[u] for u in _alias_users(b, owner, nodes)]) for b in buffers}
    live_sets = [tuple(index[b] for b in buffers if position[b] <= position[n] <= last_use[b]) for n in nodes]
    points = cut_points(model, table.input_shape)
    return GraphInfo(
        layer_position={
            str(n.target): position[n] for n in nodes if n.op == "call_module" and str(n.target) in table.by_name
        },
        cut_position={p.name: p.index for p in points},
        cut_tensor={p.name: tensors[index[owner[_by_name(nodes, p.name)]]] for p in points},
        tensors=tensors,
        live_sets=live_sets,
    )


def _by_name(nodes: list[fx.Node], name: str) -> fx.Node:
    return next(n for n in nodes if n.name == name)


def _is_alias(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules[str(node.target)], ALIAS_MODULES)
    name = getattr(node.target, "__name__", str(node.target))
    return node.op in ("call_function", "call_method") and name in ALIAS_FUNCTIONS


def _alias_users(buffer: fx.Node, owner: dict[fx.Node, fx.Node], nodes: list[fx.Node]) -> list[fx.Node]:
    """Nodes that read ``buffer`` directly or through one of its aliases."""
    aliases = {n for n in nodes if owner.get(n) is buffer}
    return [u for a in aliases for u in a.users if u in owner]


def _tensor(node: fx.Node, shapes: dict[str, tuple[int, ...]], group: int | None, table: LayerTable) -> Tensor:
    numel = math.prod(shapes.get(node.name, (0,)))
    if group is None:
        return Tensor(None, 0, numel)
    channels = table.groups[group].channels
    return Tensor(group, max(1, numel // channels), numel)
