"""Feature vectors at a layer, and the strongest response of chosen units, in one forward pass.

The kernel runs the network only as far as the deepest layer it needs (hooks.capture_outputs
with stop_after) under no_grad, and reduces every spatial map before it returns, so only
[N, D] vectors and a few numbers per unit ever leave the device.

The default layer is the penultimate layer in the seeds' sense, "the layer immediately before
the classifier" (the 4096-d FC7 code): the module whose output feeds the model's final
nn.Linear. Concretely: the last nn.Linear in forward order, and the nearest module finishing
before it whose output holds exactly that Linear's in_features numbers (resnet: `avgpool`;
vgg: `classifier.5`, i.e. FC7 after its ReLU and eval-mode dropout; the demo model: its global
pool). A functional flatten in between does not change the vector.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from explainserve import hooks
from explainserve.methods.base import ModelHandle
from explainserve.models.layouts import LayerLayout, to_channel_maps

POOLINGS = ("mean", "max", "none")
NOT_PREDICTED = -1  # predicted_class when the pass stopped below the classifier


def penultimate_layer(module: nn.Module, layers: Sequence) -> str:
    """The layer feeding the final nn.Linear (see the module docstring); "" when the model
    has no Linear or nothing before it matches its input size. `layers` are the model's
    LayerDescriptions in forward order."""
    table = dict(module.named_modules())
    linears = [i for i, layer in enumerate(layers) if isinstance(table.get(layer.name), nn.Linear)]
    if not linears:
        return ""
    final = table[layers[linears[-1]].name]
    for layer in reversed(layers[:linears[-1]]):
        if math.prod(layer.output_shape) == final.in_features:
            return layer.name
    return ""


def pool(features: Tensor, pooling: str) -> Tensor:
    """[N, K, *spatial] -> [N, D]: spatial mean or max per channel, or the map flattened."""
    if features.ndim <= 2 or pooling == "none":
        return features.flatten(1)
    spatial = tuple(range(2, features.ndim))
    return features.mean(dim=spatial) if pooling == "mean" else features.amax(dim=spatial)


def unit_peak(features: Tensor, channel: int) -> tuple[Tensor, Tensor, Tensor]:
    """Each row's largest activation of one channel and its (y, x) in the feature map."""
    maps = features[:, channel].reshape(features.shape[0], -1)
    width = features.shape[-1] if features.ndim == 4 else 1
    values, flat = maps.max(dim=1)
    return values, flat // width, flat % width


def channel_maps(output: Tensor, layout: LayerLayout | None) -> Tensor:
    """A channels-last or token output as [N, K, h, w] channel maps (patch tokens only), so
    pooling and unit peaks see channels and positions; any other output as it is."""
    if layout is not None and layout.kind in ("nhwc", "tokens"):
        return to_channel_maps(output, layout)
    return output


def embed_kernel(model: ModelHandle, inputs: Tensor, targets: Tensor, *, layer: str,
                 pooling: str, units: tuple[tuple[str, int], ...],
                 stop_after: str | None,
                 layouts: tuple[tuple[str, LayerLayout], ...] = ()) -> dict[str, Tensor]:
    """vector [N, D]; predicted [N] (NOT_PREDICTED when stopped early); per unit i:
    unit{i}_value, unit{i}_y, unit{i}_x [N]. `layouts`: the layers read as channel maps."""
    layout_of = dict(layouts)
    names = dict.fromkeys([layer, *(unit_layer for unit_layer, _ in units)])
    # for_gradient=True hands the network a clone of each captured map, so an in-place op
    # further on (resnet's inplace ReLU after a BatchNorm) cannot change what we captured.
    with torch.no_grad(), hooks.capture_outputs(
            hooks.named_layers(model.module, list(names)), stop_after=stop_after,
            for_gradient=True) as captured:
        logits = None
        try:
            logits = model.module(inputs)
        except hooks.StopForward:
            pass
        features = captured.outputs[layer].detach()
        outputs = {"vector": pool(features if pooling == "none" else
                                  channel_maps(features, layout_of.get(layer)), pooling)}
        outputs["predicted"] = (logits.argmax(dim=1) if logits is not None else
                                torch.full((inputs.shape[0],), NOT_PREDICTED, dtype=torch.long))
        for index, (unit_layer, channel) in enumerate(units):
            value, y, x = unit_peak(channel_maps(captured.outputs[unit_layer].detach(),
                                                 layout_of.get(unit_layer)), channel)
            outputs.update({f"unit{index}_value": value, f"unit{index}_y": y, f"unit{index}_x": x})
    return outputs
