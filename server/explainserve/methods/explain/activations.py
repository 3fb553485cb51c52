"""The seeds' "visualize activations": the feature maps of named layers for an input, as
named tensors, and on request as a grid in which a [K, h, w] map is K grayscale images. No
gradient and no target are needed; each response still names a class and its score, as every
method's does, unless `score` is false and the forward pass stops after the last layer asked for.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from explainserve.errors import InvalidArgument
from explainserve import hooks
from explainserve.methods.base import PREDICTED, Attribution, Kernel, ModelFacts, ModelHandle, Param, TensorRows
from explainserve.methods.explain.registry import register_method
from explainserve.models.layouts import NONE, to_channel_maps

GRID = Param("grid", bool, False, help="also return the channels (filters) as an image grid")
SCORE = Param("score", bool, True, help="run the forward pass on to the logits so the response "
              "carries the class score; false stops it after the last requested layer")
MAX_GRID_SIDE = 1024  # pixels: the grid PNG stays well inside one 4 MiB message


def activations_kernel(model: ModelHandle, inputs: Tensor, targets: Tensor, *,
                       layers: tuple[str, ...], stop_after: str | None) -> dict[str, Tensor]:
    """Feature maps of `layers`; with stop_after, nothing above that module is computed.
    for_gradient=True is used for its clone, which shields a captured map from a later
    in-place ReLU; under no_grad nothing is recorded for a backward pass."""
    names = set(layers) | ({stop_after} if stop_after else set())
    modules = {name: model.layer(name) for name in names}
    outputs: dict[str, Tensor] = {}
    with torch.no_grad(), hooks.capture_outputs(modules, stop_after=stop_after,
                                                 for_gradient=True) as captured:
        try:
            outputs["logits"] = model.module(inputs)
        except hooks.StopForward:
            pass
    return {**outputs, **{f"layer:{name}": captured.outputs[name].detach() for name in layers}}


def stop_layer(model: ModelFacts, layers: list[str]) -> str | None:
    """The module after which the forward may stop. A child of an nn.Sequential (or of the
    model) runs once per pass; any other module may run more than once (resnet's blocks call
    one ReLU twice), so the pass runs on to the end of its enclosing block."""
    def called_once(name: str) -> str:
        parts = name.split(".")
        while len(parts) > 1 and model.layer_types.get(".".join(parts[:-1])) != "Sequential":
            parts = parts[:-1]
        return ".".join(parts)

    order = list(model.layer_types)
    candidates = [called_once(name) for name in layers]
    if not all(name in order for name in candidates):
        return None  # an enclosing module without a tensor output: run the whole pass
    return max(candidates, key=order.index)


def with_scores(outputs: dict[str, Tensor], targets: list[int]) -> list[Attribution]:
    """One Attribution per target, scored from the single row's logits when there are any
    (else target as requested, -1 for the predicted class, and NaN score and probability)."""
    if "logits" not in outputs:
        return [Attribution(target=t, score=math.nan, probability=math.nan) for t in targets]
    logits = outputs["logits"][0]
    probabilities = logits.softmax(dim=0)
    classes = [int(logits.argmax()) if t == PREDICTED else t for t in targets]
    return [Attribution(target=c, score=float(logits[c]), probability=float(probabilities[c]))
            for c in classes]


@register_method("activations", params=(GRID, SCORE), uses_layer=True)
async def activations(ctx, image, targets, layer, params):
    """Feature maps of the request's layer and extra layers, as named tensors."""
    layers = tuple(dict.fromkeys([layer, *getattr(ctx, "extra_layers", ())]))
    first = ctx.model.layer_shapes[layer]
    layout = ctx.model.layer_layouts.get(layer, NONE)
    if params["grid"] and not layout.spatial:
        raise InvalidArgument(f"parameter 'grid' of method 'activations' needs a layer with "
                              f"channel maps (layout nchw, nhwc or tokens); {layer!r} has output "
                              f"shape {list(first)} and layout {layout.kind!r}")
    stop = None if params["score"] else stop_layer(ctx.model, list(layers))
    kernel = Kernel.of(activations_kernel, layers=layers, stop_after=stop)
    outputs = await ctx.run(kernel, TensorRows.repeat(image, [0]))
    maps = {name: outputs[f"layer:{name}"][0] for name in layers}
    # the tensors are the layer's own output; the grid reads it as [K, h, w] channel maps
    grid = channel_grid(to_channel_maps(maps[layer][None], layout)[0]) if params["grid"] else None
    results = with_scores(outputs, targets)
    for result in results:
        result.tensors, result.grid = maps, grid
    return results


def min_max_uint8(values: Tensor, dims: tuple[int, ...]) -> Tensor:
    """Scale each slice to [0, 255] by its own minimum and maximum (a constant slice is 0)."""
    low, high = values.amin(dim=dims, keepdim=True), values.amax(dim=dims, keepdim=True)
    return ((values - low) / torch.where(high > low, high - low, 1.0) * 255).round().to(torch.uint8)


def channel_grid(feature_map: Tensor) -> Tensor:
    """[K, h, w] -> the K channels as min-max scaled grayscale tiles in a near-square grid."""
    tiles = min_max_uint8(feature_map, (1, 2))[..., None].expand(-1, -1, -1, 3)
    return tiles_grid(tiles, math.ceil(math.sqrt(len(feature_map))))


def tiles_grid(tiles: Tensor, columns: int) -> Tensor:
    """uint8 [n, h, w, 3] -> one uint8 [H, W, 3] image with a white pixel between tiles,
    enlarged by an integer factor to about 256 pixels, or shrunk to MAX_GRID_SIDE."""
    count, height, width, _ = tiles.shape
    rows = math.ceil(count / columns)
    padded = torch.full((rows * columns, height + 1, width + 1, 3), 255, dtype=torch.uint8)
    padded[:count, 1:, 1:] = tiles
    canvas = padded.reshape(rows, columns, height + 1, width + 1, 3).permute(0, 2, 1, 3, 4)
    canvas = canvas.reshape(rows * (height + 1), columns * (width + 1), 3)
    side = max(canvas.shape[:2])
    scale = max(1, 256 // side) if side <= MAX_GRID_SIDE else MAX_GRID_SIDE / side
    if scale == 1:
        return canvas.contiguous()
    resized = nn.functional.interpolate(canvas.permute(2, 0, 1)[None].float(),
                                        scale_factor=scale, mode="nearest")
    return resized[0].permute(1, 2, 0).to(torch.uint8).contiguous()
