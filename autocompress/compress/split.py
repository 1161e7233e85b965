"""Split computing: cut a model at a layer boundary into a device head and an edge tail (torch.fx). The cut points
themselves are found by :func:`autocompress.compress.graph.cut_points`."""

from __future__ import annotations

import copy

from torch import fx, nn

from autocompress.compress.graph import trace
from autocompress.errors import PolicyError, did_you_mean


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
