"""Receptive fields from the layer geometry, and the image patch that drives a unit (Zeiler &
Fergus 2014; Girshick et al. 2014: "maximally activating image patches").

The network is traced once with torch.fx (no hook, no change to the module) and every node of
the graph gets, per spatial axis, how its positions read the input: a tree of sliding windows
(convolutions and pooling) and unions (element-wise nodes). A window with kernel k, stride s,
padding p and dilation d over an input of n positions makes output position j read input
positions

    { j * s - p + t * d : t < k }  clipped to [0, n)

and the clipping happens at every level: a position of an intermediate map that falls in its
padding reads nothing below it. Without dilation this is the familiar interval
[lo + i*jump, hi + i*jump] clipped to the image; with dilation the taps have gaps, and near the
border the pixels a unit reads can end well inside the interval's clipped edge.

Element-wise nodes (ReLU, eval-mode BatchNorm, the residual `+`, channel concatenation) take
the union of their inputs' offsets, so a resnet block's field is that of its deepest path
(conv-conv, never the 1x1 shortcut). Anything that mixes all positions (global or adaptive
pooling to a smaller map, flatten, linear, GroupNorm) or that we do not know makes the field
the whole image, which is always a safe answer.
"""

from __future__ import annotations

import logging
import operator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from explainserve import hooks
from explainserve.models import preprocess

logger = logging.getLogger(__name__)

# Per axis, how positions of a node read the input: INPUT, a Window over a child, or a Union
# of children. Field: one per spatial axis (rows, columns); None: the whole image.
INPUT = ("input",)
NO_INPUT = ("union", ())  # a constant: reads nothing; the identity of the union
Axis = tuple
Field = tuple[Axis, Axis] | None


def _children(axis: Axis) -> tuple[Axis, ...]:
    if axis[0] == "union":
        return axis[1]
    return (axis[-1],) if axis[0] == "window" else ()


def _read(root: Axis, positions: frozenset[int]) -> set[int]:
    """The input positions that `positions` of this axis's node read. Residual blocks share
    subtrees (a block's two paths meet at its input), so each node is visited once, parents
    before children, with the positions of all its parents merged."""
    order: list[Axis] = []
    seen: set[int] = set()
    stack: list[tuple[Axis, bool]] = [(root, False)]
    while stack:  # iterative post-order: deep networks would exceed the recursion limit
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
        elif id(node) not in seen:
            seen.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node))
    arriving: dict[int, set[int]] = {id(root): set(positions)}
    pixels: set[int] = set()
    for node in reversed(order):
        here = arriving.pop(id(node), set())
        if node[0] == "input":
            pixels |= here
        elif node[0] == "union":
            for child in node[1]:
                arriving.setdefault(id(child), set()).update(here)
        else:
            _, kernel, stride, padding, dilation, size, child = node
            below = arriving.setdefault(id(child), set())
            below.update(i for j in here for t in range(kernel)
                         if 0 <= (i := j * stride - padding + t * dilation) < size)
    return pixels


_POINTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.GELU, nn.SiLU,
                      nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Mish, nn.Identity,
                      nn.BatchNorm2d, nn.Dropout, nn.Dropout2d)
_POINTWISE_CALLS = {operator.add, operator.iadd, operator.mul, operator.imul, operator.sub,
                    operator.truediv, torch.add, torch.mul, torch.sub, torch.relu, torch.sigmoid,
                    torch.tanh, F.relu, F.relu6, F.gelu, F.silu, F.sigmoid, F.hardswish, F.dropout,
                    "relu", "relu_", "add", "add_", "mul", "mul_", "sigmoid", "contiguous", "clone"}


@dataclass(frozen=True)
class ReceptiveField:
    """The field of one layer's units; `box(y, x)` bounds the input pixels the unit reads."""

    field: Field
    height: int
    width: int

    def box(self, y: int, x: int) -> tuple[int, int, int, int]:
        """(x_min, y_min, x_max, y_max), inclusive: the input pixels unit (y, x) reads."""
        if self.field is None:
            return (0, 0, self.width - 1, self.height - 1)
        rows, columns = self.field
        y_min, y_max = _span(_read(rows, frozenset({y})), self.height)
        x_min, x_max = _span(_read(columns, frozenset({x})), self.width)
        return (x_min, y_min, x_max, y_max)


def _span(pixels: set[int], size: int) -> tuple[int, int]:
    if not pixels:  # a unit that reads only padding: nothing narrower than the image is true
        return (0, size - 1)
    return (min(pixels), max(pixels))


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _window(field: Field, kernel, stride, padding, size: tuple[int, ...] | None,
            dilation=1) -> Field:
    """A sliding window over an input of spatial `size`."""
    if field is None or size is None:
        return None
    return tuple(("window", k, s, p, d, n, axis) for axis, k, s, p, d, n in zip(
        field, _pair(kernel), _pair(stride), _pair(padding), _pair(dilation), size))


def _conv_padding(conv: nn.Conv2d) -> tuple[int, int]:
    if conv.padding == "valid":
        return (0, 0)
    if conv.padding == "same":  # stride 1 only; PyTorch puts the odd pixel on the far side
        return tuple(d * (k - 1) // 2 for k, d in zip(conv.kernel_size, conv.dilation))
    return conv.padding


def _union(fields: list[Field]) -> Field:
    if any(f is None for f in fields):
        return None
    real = [f for f in fields if f != (NO_INPUT, NO_INPUT)]
    if len(real) == 1:
        return real[0]
    return tuple(("union", tuple(axes)) for axes in zip(*real)) if real else (NO_INPUT, NO_INPUT)


def _spatial(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    shape = getattr(meta, "shape", None)
    return tuple(shape[2:]) if shape is not None and len(shape) == 4 else None


def _module_field(module: nn.Module, node: fx.Node, field: Field) -> Field:
    size = _spatial(node.args[0]) if node.args else None
    if isinstance(module, nn.Conv2d):
        return _window(field, module.kernel_size, module.stride, _conv_padding(module), size,
                       module.dilation)
    if isinstance(module, nn.MaxPool2d):
        return _window(field, module.kernel_size, module.stride or module.kernel_size,
                       module.padding, size, module.dilation)
    if isinstance(module, nn.AvgPool2d):
        return _window(field, module.kernel_size, module.stride or module.kernel_size,
                       module.padding, size)
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        same = _spatial(node.args[0]) == _spatial(node)  # an adaptive pool to its own size
        return field if same else None
    return field if isinstance(module, _POINTWISE_MODULES) else None


def _node_field(gm: fx.GraphModule, node: fx.Node, fields: dict[fx.Node, Field]) -> Field:
    inputs = [fields[arg] for arg in node.all_input_nodes]
    if node.op == "placeholder":
        return (INPUT, INPUT)
    if node.op == "get_attr":
        return (NO_INPUT, NO_INPUT)
    if node.op == "call_module":
        return _module_field(gm.get_submodule(node.target), node, inputs[0] if inputs else None)
    if node.op == "call_function" and node.target is torch.cat:
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
        return _union(inputs) if dim in (1, -3) else None
    if node.op in ("call_function", "call_method") and node.target in _POINTWISE_CALLS:
        return _union(inputs) if inputs else (NO_INPUT, NO_INPUT)
    return None


def _layer_node(graph: fx.Graph, layer: str) -> fx.Node | None:
    """The node whose value is the layer's output: its last call, or for a container the last
    node computed inside it."""
    calls = [node for node in graph.nodes if node.op == "call_module" and node.target == layer]
    inside = [node for node in graph.nodes
              if any(path == layer for path, _ in node.meta.get("nn_module_stack", {}).values())]
    return (calls or inside or [None])[-1]


@lru_cache(maxsize=16)
def _traced(module: nn.Module, input_shape: tuple[int, int, int]) -> fx.GraphModule | None:
    """The module's graph with every node's output shape, once per model; None (logged) for
    a model that torch.fx cannot trace."""
    try:
        with hooks.fx_tracing():  # fx patches nn.Module for the process while it traces
            gm = fx.symbolic_trace(module)
        with torch.no_grad():
            ShapeProp(gm).propagate(torch.zeros(1, *input_shape))
    except Exception as error:  # noqa: BLE001 - any tracing failure means "unknown geometry"
        logger.warning("cannot trace %s to find receptive fields (%s); patches are whole images",
                       type(module).__name__, error)
        return None
    return gm


def receptive_field(module: nn.Module, layer: str, input_shape: tuple[int, int, int]) -> ReceptiveField:
    """The receptive field of `layer`'s units in a model taking [C,H,W] = input_shape inputs;
    the whole image when the model cannot be traced or the layer mixes every position."""
    _, height, width = input_shape
    gm = _traced(module, input_shape)
    target = _layer_node(gm.graph, layer) if gm is not None else None
    if target is None:
        return ReceptiveField(None, height, width)
    fields: dict[fx.Node, Field] = {}
    for node in gm.graph.nodes:
        fields[node] = _node_field(gm, node, fields)
        if node is target:
            break
    field = fields[target]
    return ReceptiveField(field if field != (NO_INPUT, NO_INPUT) else None, height, width)


def call_count(module: nn.Module, layer: str, input_shape: tuple[int, int, int]) -> int:
    """How many times one forward pass calls the named module (resnet reuses each block's
    ReLU twice); 1 when the model cannot be traced."""
    gm = _traced(module, input_shape)
    if gm is None:
        return 1
    return max(1, sum(1 for node in gm.graph.nodes
                      if node.op == "call_module" and node.target == layer))


def crop_patch(image: Tensor, box: tuple[int, int, int, int], mean: tuple[float, ...],
               std: tuple[float, ...]) -> np.ndarray:
    """The box of a preprocessed [C,H,W] image as a uint8 [h,w,C] picture."""
    x_min, y_min, x_max, y_max = box
    return preprocess.denormalize(image[:, y_min:y_max + 1, x_min:x_max + 1], mean, std)
