"""Gradient saliency (Simonyan et al. 2013) and input x gradient.

Simonyan et al., eq. 2-3: the class score S_c is linearised around the image I0,
S_c(I) ~ w^T I + b with w = dS_c/dI at I0, and the saliency of a pixel is max_c |w|.
"""

from __future__ import annotations

import torch
from torch import Tensor

from explainserve.methods.base import Kernel, ModelHandle, gradient_heatmap, run_single_pass, score_targets
from explainserve.methods.explain.registry import register_method


def input_gradient(model: ModelHandle, inputs: Tensor, targets: Tensor) -> tuple[Tensor, dict]:
    """dS_c/dx for each row; rows are independent, so the gradient of the summed scores is
    each row's own gradient."""
    inputs = inputs.detach().requires_grad_(True)
    scored = score_targets(model.module(inputs), targets)
    (gradient,) = torch.autograd.grad(scored["score"].sum(), inputs)
    return gradient, scored


def saliency_kernel(model: ModelHandle, inputs: Tensor, targets: Tensor) -> dict[str, Tensor]:
    gradient, scored = input_gradient(model, inputs, targets)
    return {**scored, "attribution": gradient, "heatmap": gradient_heatmap(gradient)}


def input_x_gradient_kernel(model: ModelHandle, inputs: Tensor, targets: Tensor) -> dict[str, Tensor]:
    gradient, scored = input_gradient(model, inputs, targets)
    attribution = inputs * gradient
    return {**scored, "attribution": attribution, "heatmap": gradient_heatmap(attribution)}


@register_method("saliency", gradient_kernel=lambda params: Kernel.of(saliency_kernel))
async def saliency(ctx, image, targets, layer, params):
    """Gradient of the class score with respect to the input (Simonyan et al. 2013)."""
    return await run_single_pass(ctx, Kernel.of(saliency_kernel), image, targets)


@register_method("input_x_gradient",
                 gradient_kernel=lambda params: Kernel.of(input_x_gradient_kernel))
async def input_x_gradient(ctx, image, targets, layer, params):
    """The input times the gradient of the class score."""
    return await run_single_pass(ctx, Kernel.of(input_x_gradient_kernel), image, targets)
