"""The Grad-CAM family: a variant supplies only its channel weights alpha_k; the weighted sum,
ReLU, upsampling and scaling live once here (Selvaraju et al., arXiv:1610.02391, eq. 1-2).

    L^c = ReLU(sum_k alpha_k^c A^k)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from explainserve.errors import FailedPrecondition, InvalidArgument, not_found
from explainserve import hooks
from explainserve.methods.base import Kernel, ModelHandle, Param, normalize_maps, run_single_pass, score_targets, upsample
from explainserve.methods.explain.cam_structure import find_cam_structure
from explainserve.methods.explain.layer_maps import layer_gradients
from explainserve.models.layouts import LayerLayout
from explainserve.methods.explain.registry import register_method

UPSAMPLE = Param("upsample", str, "bilinear", choices=("bilinear", "nearest"),
                 help="how the [h,w] map is resized to the input for the heatmap")


def gradcam_weights(activations: Tensor, gradients: Tensor) -> Tensor:
    """Grad-CAM eq. 1: alpha_k = (1/Z) sum_ij dy^c/dA^k_ij, the spatial mean of the gradient."""
    return gradients.mean(dim=(2, 3))


def counterfactual_weights(activations: Tensor, gradients: Tensor) -> Tensor:
    """Grad-CAM sec. 5 (counterfactual explanations): negated gradients, so the map shows the
    regions whose removal would raise the confidence in class c."""
    return (-gradients).mean(dim=(2, 3))


def gradcam_plus_plus_weights(activations: Tensor, gradients: Tensor) -> Tensor:
    """Grad-CAM++ eq. 19 (arXiv:1710.11063), with Y^c = exp(S^c) so that the second and third
    derivatives are powers of the first (eq. 17-18):

        alpha^kc_ij = g^2 / (2 g^2 + sum_ab A^k_ab g^3),  w^c_k = sum_ij alpha^kc_ij ReLU(g)
    """
    squared = gradients.pow(2)
    denominator = 2 * squared + activations.sum(dim=(2, 3), keepdim=True) * squared * gradients
    alphas = torch.where(gradients != 0, squared / torch.where(denominator != 0, denominator, 1.0), 0.0)
    return (alphas * F.relu(gradients)).sum(dim=(2, 3))


ChannelWeights = Callable[[Tensor, Tensor], Tensor]
VARIANTS: dict[str, ChannelWeights] = {
    "gradcam": gradcam_weights,
    "gradcam_counterfactual": counterfactual_weights,
    "gradcam_plus_plus": gradcam_plus_plus_weights,
}


def cam_kernel(model: ModelHandle, inputs: Tensor, targets: Tensor, *, layer: str,
               layout: LayerLayout, variant: str, upsample_mode: str) -> dict[str, Tensor]:
    activations, gradients, scored = layer_gradients(model, inputs, targets, layer, layout)
    weights = VARIANTS[variant](activations, gradients)
    cam = F.relu(torch.einsum("nk,nkhw->nhw", weights, activations))
    heatmap = normalize_maps(upsample(cam, tuple(inputs.shape[-2:]), upsample_mode))
    return {**scored, "attribution": cam, "heatmap": heatmap}


def _register_variant(name: str, doc: str) -> None:
    async def run(ctx, image, targets, layer, params):
        kernel = Kernel.of(cam_kernel, layer=layer, layout=ctx.model.layer_layouts[layer],
                           variant=name, upsample_mode=params["upsample"])
        return await run_single_pass(ctx, kernel, image, targets)
    run.__doc__ = doc
    register_method(name, params=(UPSAMPLE,), uses_layer=True, spatial_layer=True)(run)


_register_variant("gradcam", "Grad-CAM: ReLU of the activations weighted by mean gradients.")
_register_variant("gradcam_counterfactual", "Grad-CAM with negated gradients: evidence against c.")
_register_variant("gradcam_plus_plus", "Grad-CAM++: pixel-wise weighted positive gradients.")


def class_activation_kernel(model: ModelHandle, inputs: Tensor, targets: Tensor, *, features: str,
                            requested: str, head: str, upsample_mode: str) -> dict[str, Tensor]:
    """CAM (Zhou et al. 2016, eq. 2): M_c(x, y) = sum_k w^c_k f_k(x, y), with f_k the maps the
    global average pool reads and w^c the linear head's row for c. A forward pass only."""
    layers = {features: model.layer(features), requested: model.layer(requested)}
    with torch.no_grad(), hooks.capture_outputs(layers) as captured:
        logits = model.module(inputs)
    maps = captured.outputs[features]
    if captured.outputs[requested] is not maps or captured.versions[requested] != captured.versions[features]:
        raise InvalidArgument(f"method 'cam' weights the maps that the global average pool reads, "
                              f"the output of layer {features!r}; layer {requested!r} is another tensor")
    linear = model.layer(head)
    # S_c = w^c . GAP(f) + b_c must hold for M_c to decompose the score (Zhou et al., sec. 2);
    # module order cannot show a functional op (a scale, an F.relu) between pool and logits.
    pooled = F.linear(maps.mean(dim=(2, 3)), linear.weight, linear.bias)
    if not torch.allclose(pooled, logits, rtol=1e-3, atol=1e-4 * (1 + float(logits.abs().max()))):
        raise FailedPrecondition(f"the logits are not the linear head {head!r} applied to the "
                                 f"spatial mean of layer {features!r}, so CAM does not apply")
    scored = score_targets(logits, targets)
    cam = torch.einsum("nk,nkhw->nhw", linear.weight[scored["target"]], maps)
    heatmap = normalize_maps(upsample(cam, tuple(inputs.shape[-2:]), upsample_mode))
    return {**scored, "attribution": cam, "heatmap": heatmap}


@register_method("cam", params=(UPSAMPLE,))
async def cam(ctx, image, targets, layer, params):
    """CAM: the linear head's class weights applied to the maps of the global average pool.

    CAM is defined on one layer only, the input of the global average pool, found from the
    model; `layer` may be empty, that layer's name, or a name for the same tensor (a container
    and its last module); any other layer is INVALID_ARGUMENT."""
    structure = find_cam_structure(ctx.model)
    shapes = ctx.model.layer_shapes
    if layer and layer not in shapes:
        raise not_found("layer", layer, list(shapes), f" of model {ctx.model.name!r}")
    if layer and shapes[layer] != shapes[structure.features]:
        raise InvalidArgument(f"method 'cam' weights the maps that the global average pool "
                              f"{structure.pool!r} reads, the output of layer "
                              f"{structure.features!r}; layer {layer!r} is not that tensor")
    kernel = Kernel.of(class_activation_kernel, features=structure.features,
                       requested=layer or structure.features, head=structure.head,
                       upsample_mode=params["upsample"])
    return await run_single_pass(ctx, kernel, image, targets)
