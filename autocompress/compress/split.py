"""Split computing: cut a model at a layer boundary into a device head and an edge tail (torch.fx).

A valid cut point is a node after which exactly one tensor is still needed: everything before it can run on the
device and only that tensor crosses the link. Cut points are named by their fx node names, which stay the same
after structured pruning (pruning changes channel counts, not the graph).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import fx, nn

from autocompress.errors import PolicyError, did_you_mean

INPUT = "input"


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


def trace(model: nn.Module) -> fx.GraphModule:
    """Symbolically trace ``model``; a one-line error names what fx could not follow."""
    try:
        return fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many exception types for untraceable code
        raise PolicyError(
            f"splitting needs a model torch.fx can trace, but tracing failed ({type(exc).__name__}: {exc}); "
            "use split null or make the model's forward traceable."
        ) from None


def cut_points(model: nn.Module, input_shape: tuple[int, ...]) -> list[CutPoint]:
    """All valid cut points of ``model`` in execution order, with the shape of the tensor that crosses."""
    gm = trace(model)
    nodes = [n for n in gm.graph.nodes if n.op not in ("placeholder", "output")]
    shapes = _node_shapes(gm, input_shape)
    position = {n: i for i, n in enumerate(gm.graph.nodes)}
    modules = dict(gm.named_modules())
    layer_nodes = [
        n
        for n in nodes
        if n.op == "call_module" and isinstance(modules[str(n.target)], (nn.Conv1d, nn.Conv2d, nn.Linear))
    ]
    points = []
    for node in nodes[:-1]:
        live = {
            producer
            for producer in gm.graph.nodes
            if position[producer] <= position[node] and any(position[u] > position[node] for u in producer.users)
        }
        if live == {node} and node.name in shapes:
            target = str(node.target) if node.op == "call_module" else node.op
            after = [str(n.target) for n in layer_nodes if position[n] > position[node]]
            kind = type(modules[target]).__name__ if node.op == "call_module" else getattr(node.target, "__name__", "")
            points.append(
                CutPoint(node.name, position[node], shapes[node.name], target, after[0] if after else None, kind)
            )
    return points


def _node_shapes(gm: fx.GraphModule, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
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


def split_model(model: nn.Module, cut: str) -> tuple[fx.GraphModule, fx.GraphModule]:
    """Cut ``model`` after node ``cut`` into (head, tail) with ``tail(head(x)) == model(x)``."""
    gm = trace(copy.deepcopy(model))
    by_name = {n.name: n for n in gm.graph.nodes}
    if cut not in by_name:
        names = [n.name for n in gm.graph.nodes]
        raise PolicyError(f"split must name a cut point of the model, but got '{cut}'.{did_you_mean(cut, names)}")
    order = list(gm.graph.nodes)
    boundary = order.index(by_name[cut])
    head_graph, tail_graph = fx.Graph(), fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in order[: boundary + 1]:
        env[node] = head_graph.node_copy(node, lambda n: env[n])
    head_graph.output(env[by_name[cut]])
    tail_env: dict[fx.Node, fx.Node] = {by_name[cut]: tail_graph.placeholder("crossing")}
    for node in order[boundary + 1 :]:
        if node.op == "placeholder":
            continue
        tail_env[node] = tail_graph.node_copy(node, lambda n: tail_env[n])
    head, tail = fx.GraphModule(gm, head_graph), fx.GraphModule(gm, tail_graph)
    head.graph.eliminate_dead_code()
    tail.graph.eliminate_dead_code()
    head.delete_all_unused_submodules()
    tail.delete_all_unused_submodules()
    head.recompile()
    tail.recompile()
    return head, tail
