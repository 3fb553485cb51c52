"""The seeds' first-layer filters: the weights of a convolution layer, as a tensor and, on
request, as an image grid in which each filter is min-max scaled to [0, 255] on its own (RGB
when it reads the 3 colour channels; a row of grayscale tiles, one per input channel, else).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from explainserve.errors import InvalidArgument, not_found
from explainserve.methods.explain.activations import GRID, min_max_uint8, tiles_grid, with_scores
from explainserve.methods.base import Kernel, ModelFacts, ModelHandle, TensorRows
from explainserve.methods.explain.registry import register_method

CONVOLUTIONS = ("Conv1d", "Conv2d", "Conv3d")
MAX_FILTER_TILES = 64  # filters (rows) and input channels (columns) shown for a deep layer


def filters_kernel(model: ModelHandle, inputs: Tensor, targets: Tensor, *,
                   layer: str) -> dict[str, Tensor]:
    """The layer's weight [K, C_in, kh, kw], once per row, and the rows' logits."""
    module = model.layer(layer)
    if not isinstance(module, nn.modules.conv._ConvNd):
        raise InvalidArgument(f"method 'filters' needs a convolution layer; {layer!r} is a "
                              f"{type(module).__name__}")
    with torch.no_grad():
        logits = model.module(inputs)
    weight = module.weight.detach()
    return {"logits": logits, "weight": weight.expand(len(inputs), *weight.shape)}


@register_method("filters", params=(GRID,))
async def filters(ctx, image, targets, layer, params):
    """Weights of a convolution layer (default: the first one), as a tensor and an image grid."""
    layer = layer or first_convolution(ctx.model)
    if layer not in ctx.model.layer_types:
        raise not_found("layer", layer, list(ctx.model.layer_types),
                        f" of model {ctx.model.name!r}")
    outputs = await ctx.run(Kernel.of(filters_kernel, layer=layer), TensorRows.repeat(image, [0]))
    weight = outputs["weight"][0]
    grid = filter_grid(weight) if params["grid"] else None
    results = with_scores(outputs, targets)
    for result in results:
        result.tensors, result.grid = {f"{layer}.weight": weight}, grid
    return results


def first_convolution(model: ModelFacts) -> str:
    for name, kind in model.layer_types.items():
        if kind in CONVOLUTIONS:
            return name
    raise InvalidArgument(f"model {model.name!r} has no convolution layer for method 'filters'; "
                          "name one")


def filter_grid(weight: Tensor) -> Tensor:
    """uint8 [H, W, 3]: the filters of a 2-d convolution, each scaled by its own min and max."""
    if weight.ndim != 4:
        raise InvalidArgument(f"parameter 'grid' of method 'filters' needs a 2-d convolution; "
                              f"the weight has shape {list(weight.shape)}")
    scaled = min_max_uint8(weight, (1, 2, 3))
    if weight.shape[1] == 3:
        return tiles_grid(scaled.permute(0, 2, 3, 1), math.ceil(math.sqrt(len(weight))))
    shown = scaled[:MAX_FILTER_TILES, :MAX_FILTER_TILES]
    tiles = shown.reshape(-1, *shown.shape[2:])[..., None].expand(-1, -1, -1, 3)
    return tiles_grid(tiles, shown.shape[1])
