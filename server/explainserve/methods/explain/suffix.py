"""The part of a network above one layer, as a module of its own, where the network allows it.

Ablation-CAM needs the class scores of K copies of one layer output, each with one channel
zeroed; only the layers above that layer depend on the ablation. torch.fx traces the network
with the layer as one opaque call, and the part above it may run alone when

  - the layer is called exactly once per forward, and
  - every operation between it and the logits reads only the layer's output, values computed
    from it, parameters and constants: nothing computed from the input below the layer (a skip
    connection across it, a second branch) reaches the logits except through the layer.

The suffix graph then takes the layer's output as its only input and runs the very modules and
operations the network runs above the layer, in the same order. A network fx cannot trace
(data-dependent control flow, an untraceable call) or that fails a condition has no suffix: the
caller reruns the whole forward instead.
"""

from __future__ import annotations

import logging
import threading
import weakref

from torch import fx, nn

from explainserve import hooks

logger = logging.getLogger(__name__)

_LOCK = threading.Lock()
_SUFFIXES: weakref.WeakKeyDictionary[nn.Module, dict[str, fx.GraphModule | None]] = (
    weakref.WeakKeyDictionary())


class _LayerAsLeaf(fx.Tracer):
    """fx's tracer, with the requested layer kept as one call instead of traced through."""

    def __init__(self, layer: str) -> None:
        super().__init__()
        self.layer = layer

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return qualified_name == self.layer or super().is_leaf_module(module, qualified_name)


def suffix_above(model: nn.Module, layer: str) -> fx.GraphModule | None:
    """The network above `layer` as a module taking the layer's output, or None; traced once
    per replica and layer (the replica's weights are shared, not copied)."""
    with _LOCK:
        cache = _SUFFIXES.setdefault(model, {})
        if layer in cache:
            return cache[layer]
    # Built outside _LOCK: the trace waits for every running pass to end, and another worker's
    # pass may be waiting on _LOCK right here. Two threads may build the same suffix; one wins.
    built = _build(model, layer)
    with _LOCK:
        return cache.setdefault(layer, built)


def _build(model: nn.Module, layer: str) -> fx.GraphModule | None:
    try:
        with hooks.fx_tracing():  # fx patches nn.Module for the process while it traces
            graph = _LayerAsLeaf(layer).trace(model)
    except Exception as error:  # noqa: BLE001 - any tracing failure means: run the whole forward
        logger.info("no traced suffix above layer %s (%r); the whole forward reruns", layer, error)
        return None
    nodes = list(graph.nodes)
    calls = [node for node in nodes if node.op == "call_module" and node.target == layer]
    if len(calls) != 1:
        logger.info("layer %s is called %d times per forward; the whole forward reruns",
                    layer, len(calls))
        return None
    (at,) = calls
    from_input: set[fx.Node] = set()  # computed from the network's input
    from_layer: set[fx.Node] = set()  # computed from the layer's output
    for node in nodes:
        sources = node.all_input_nodes
        if node.op == "placeholder" or any(source in from_input for source in sources):
            from_input.add(node)
        if node is at or any(source in from_layer for source in sources):
            from_layer.add(node)
    output = next(node for node in nodes if node.op == "output")
    needed, pending = set(), [output]
    while pending:
        node = pending.pop()
        if node not in needed:
            needed.add(node)
            pending.extend(node.all_input_nodes)
    if at not in needed:
        return None
    for node in needed & from_layer - {at}:
        if any(source in from_input and source not in from_layer for source in node.all_input_nodes):
            logger.info("a value from below layer %s reaches the logits around it; the whole "
                        "forward reruns", layer)
            return None
    suffix = fx.Graph()
    env = {at: suffix.placeholder("layer_output")}
    for node in nodes:  # topological order: every source is copied before its readers
        if node in needed and node is not at and (node in from_layer or node not in from_input):
            env[node] = suffix.node_copy(node, env.__getitem__)
    return fx.GraphModule(model, suffix)
