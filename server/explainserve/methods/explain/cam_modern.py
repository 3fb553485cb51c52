"""Layer-CAM, HiResCAM and Eigen-CAM: one pass each, reading the layer through layer_maps so
they work on any layer with a spatial form. Layer-CAM and HiResCAM weight every element of
A^k (not one alpha_k per channel), so they are not Grad-CAM variants:

    Layer-CAM (Jiang et al. 2021, eq. 5-6):   L^c = ReLU(sum_k ReLU(dy^c/dA^k) * A^k)
    HiResCAM (Draelos & Carin 2020, eq. 3):   L^c = ReLU(sum_k dy^c/dA^k * A^k)
    Eigen-CAM (Muhammad & Yeasin 2020, eq. 5): L = ReLU(A_c v_1), A_c the [h*w, K] matrix of
        the maps centred per channel, v_1 its first right singular vector

The final ReLU is pytorch-grad-cam's (its base applies it to every CAM before scaling).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from explainserve.methods.base import (Kernel, ModelHandle, normalize_maps, run_single_pass,
                                       score_targets, upsample)
from explainserve.methods.explain.cam import UPSAMPLE
from explainserve.methods.explain.layer_maps import layer_activations, layer_gradients
from explainserve.methods.explain.registry import register_method
from explainserve.models.layouts import LayerLayout

ELEMENTWISE = {
    "layer_cam": lambda activations, gradients: F.relu(gradients) * activations,
    "hires_cam": lambda activations, gradients: gradients * activations,
}


def _result(scored: dict[str, Tensor], cam: Tensor, inputs: Tensor, mode: str) -> dict[str, Tensor]:
    heatmap = normalize_maps(upsample(cam, tuple(inputs.shape[-2:]), mode))
    return {**scored, "attribution": cam, "heatmap": heatmap}


def elementwise_cam_kernel(model: ModelHandle, inputs: Tensor, targets: Tensor, *, layer: str,
                           layout: LayerLayout, variant: str, upsample_mode: str) -> dict[str, Tensor]:
    activations, gradients, scored = layer_gradients(model, inputs, targets, layer, layout)
    cam = F.relu(ELEMENTWISE[variant](activations, gradients).sum(dim=1))
    return _result(scored, cam, inputs, upsample_mode)


def first_component(maps: Tensor) -> Tensor:
    """[N, K, h, w] -> [N, h, w]: each row's projection on its first principal direction, in
    float64 (the direction is ill-conditioned when sigma_1 ~ sigma_2). SVD leaves its sign
    free; the map is flipped when its most negative value outweighs its largest, so the
    salient region is positive (Seg-Eigen-CAM eq. 13; pytorch-grad-cam's
    get_2d_projection_with_sign_correction)."""
    rows, _, height, width = maps.shape
    matrix = maps.flatten(2).transpose(1, 2).double()  # [N, h*w, K]
    matrix = matrix - matrix.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(matrix, full_matrices=False)
    projection = (matrix @ vh[:, 0, :, None])[..., 0]
    flip = projection.amin(dim=1).abs() > projection.amax(dim=1).abs()
    projection = torch.where(flip[:, None], -projection, projection)
    return projection.reshape(rows, height, width).to(maps.dtype)


def eigen_cam_kernel(model: ModelHandle, inputs: Tensor, targets: Tensor, *, layer: str,
                     layout: LayerLayout, upsample_mode: str) -> dict[str, Tensor]:
    maps, logits = layer_activations(model, inputs, layer, layout)
    cam = F.relu(first_component(maps))
    return _result(score_targets(logits, targets), cam, inputs, upsample_mode)


def _register_elementwise(name: str, doc: str) -> None:
    async def run(ctx, image, targets, layer, params):
        kernel = Kernel.of(elementwise_cam_kernel, layer=layer, layout=ctx.model.layer_layouts[layer],
                           variant=name, upsample_mode=params["upsample"])
        return await run_single_pass(ctx, kernel, image, targets)
    run.__doc__ = doc
    register_method(name, params=(UPSAMPLE,), uses_layer=True, spatial_layer=True,
                    needs_gradients=True)(run)


_register_elementwise("layer_cam", "Layer-CAM: ReLU of positive gradients times activations, "
                                   "element-wise.")
_register_elementwise("hires_cam", "HiResCAM: ReLU of gradients times activations, element-wise.")


@register_method("eigen_cam", params=(UPSAMPLE,), uses_layer=True, spatial_layer=True,
                 needs_target=False)
async def eigen_cam(ctx, image, targets, layer, params):
    """Eigen-CAM: the first principal component of the layer's activations (no gradient)."""
    kernel = Kernel.of(eigen_cam_kernel, layer=layer, layout=ctx.model.layer_layouts[layer],
                       upsample_mode=params["upsample"])
    return await run_single_pass(ctx, kernel, image, targets)
