"""Model-graph analysis with torch.fx, in one place: tracing, the shape of every node's output, and the valid cut
points of a network (where exactly one tensor is live). Split computing (:mod:`autocompress.compress.split`) and the
cost model's memory liveness (:mod:`autocompress.hardware.graph`) both build on it.

A valid cut point is a node after which exactly one tensor is still needed: everything before it can run on the
device and only that tensor crosses the link. Cut points are named by their fx node names, which stay the same
after structured pruning (pruning changes channel counts, not the graph).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import fx, nn

from autocompress.compress.techniques import FactoredModule
from autocompress.errors import PolicyError


@dataclass(frozen=True)
class CutPoint:
    """A place where the network can be split: the node name, its position, and the tensor that crosses."""

    name: str
    index: int
    shape: tuple[int, ...]
    module: str
    next_layer: str | None
    kind: str = ""

    @property
    def after_activation(self) -> bool:
        """Whether the crossing tensor comes out of an activation, pooling, add or flatten rather than a conv or
        BatchNorm (cutting before the ReLU sends as many bytes with no gain)."""
        return self.kind not in ("Conv1d", "Conv2d", "BatchNorm1d", "BatchNorm2d", "Linear")

    @property
    def elements(self) -> int:
        return math.prod(self.shape)

    def bytes_at(self, bits: int) -> int:
        """Bytes sent for one input when the crossing tensor is coded at ``bits`` bits."""
        return (self.elements * bits + 7) // 8


class _Tracer(fx.Tracer):
    """fx's tracer, with a layer a technique replaced kept as one node named as the layer (its cut point stays)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, FactoredModule) or super().is_leaf_module(m, module_qualified_name)


def trace(model: nn.Module) -> fx.GraphModule:
    """Symbolically trace ``model``; a one-line error names what fx could not follow."""
    try:
        tracer = _Tracer()
        graph = tracer.trace(model)
        return fx.GraphModule(tracer.root, graph, type(model).__name__)
    except Exception as exc:  # fx raises many exception types for untraceable code
        raise PolicyError(
            f"splitting needs a model torch.fx can trace, but tracing failed ({type(exc).__name__}: {exc}); "
            "use split null or make the model's forward traceable."
        ) from None


def cut_points(model: nn.Module, input_shape: tuple[int, ...]) -> list[CutPoint]:
    """All valid cut points of ``model`` in execution order, with the shape of the tensor that crosses."""
    gm = trace(model)
    nodes = [n for n in gm.graph.nodes if n.op not in ("placeholder", "output")]
    shapes = node_shapes(gm, input_shape)
    position = {n: i for i, n in enumerate(gm.graph.nodes)}
    modules = dict(gm.named_modules())
    layer_nodes = [
        n
        for n in nodes
        if n.op == "call_module" and isinstance(modules[str(n.target)], (nn.Conv1d, nn.Conv2d, nn.Linear))
    ]
    # A sweep over execution order: a producer is live at a node from its own position until its last user.
    last_use = {n: max((position[u] for u in n.users), default=position[n]) for n in gm.graph.nodes}
    live: set[fx.Node] = set()
    points = []
    for node in gm.graph.nodes:
        live = {p for p in live if last_use[p] > position[node]}
        if last_use[node] > position[node]:
            live.add(node)
        if node.op in ("placeholder", "output") or node is nodes[-1]:
            continue
        if live == {node} and node.name in shapes:
            target = str(node.target) if node.op == "call_module" else node.op
            after = [str(n.target) for n in layer_nodes if position[n] > position[node]]
            kind = type(modules[target]).__name__ if node.op == "call_module" else getattr(node.target, "__name__", "")
            points.append(
                CutPoint(node.name, position[node], shapes[node.name], target, after[0] if after else None, kind)
            )
    return points


def node_shapes(gm: fx.GraphModule, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """The shape (without the batch dimension) of every tensor-valued node, from one forward pass on zeros."""
    shapes: dict[str, tuple[int, ...]] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n: fx.Node) -> object:
            result = super().run_node(n)
            if isinstance(result, torch.Tensor):
                shapes[n.name] = tuple(result.shape[1:])
            return result

    was_training = gm.training
    gm.eval()
    with torch.no_grad():
        Recorder(gm).run(torch.zeros(1, *input_shape))
    gm.train(was_training)
    return shapes
