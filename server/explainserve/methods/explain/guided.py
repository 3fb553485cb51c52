"""Backward passes with a modified ReLU rule: deconvnet, guided backprop and guided Grad-CAM.

For a ReLU s^{l+1} = max(0, s^l) and the gradient R^{l+1} arriving from above, the three rules
(Springenberg et al. 2014, arXiv:1412.6806, fig. 1) are

    backprop:        R^l = 1{s^l > 0} * R^{l+1}
    deconvnet:       R^l = max(0, R^{l+1})                      (Zeiler & Fergus 2014)
    guided backprop: R^l = 1{s^l > 0} * max(0, R^{l+1})

Only nn.ReLU modules get the rule (as in Captum); a model calling F.relu keeps the plain
gradient there. Guided Grad-CAM (Selvaraju et al., arXiv:1610.02391, sec. 3.1) multiplies the
guided backprop map point-wise with the Grad-CAM map upsampled to the input.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from explainserve.errors import FailedPrecondition

from explainserve import hooks
from explainserve.methods.base import Kernel, ModelHandle, Param, gradient_heatmap, run_single_pass, upsample
from explainserve.methods.explain.cam import gradcam_weights
from explainserve.methods.explain.layer_maps import layer_gradients
from explainserve.methods.explain.registry import register_method
from explainserve.methods.explain.saliency import input_gradient
from explainserve.models.layouts import LayerLayout

# Captum's GuidedGradCam resizes the Grad-CAM map with "nearest" by default; so do we.
GUIDED_GRADCAM_UPSAMPLE = Param("upsample", str, "nearest", choices=("nearest", "bilinear"),
                                help="how the Grad-CAM map is resized to the input")


def relu_rule_gradient(model: ModelHandle, inputs: Tensor, targets: Tensor, rule: str):
    """The input gradient of the target score with every nn.ReLU's backward replaced by `rule`
    ("guided" or "deconvnet"); the forward values, and so the scores, are unchanged."""
    require_relus(model.module, rule)
    with hooks.relu_backward_rule(model.module, rule):
        return input_gradient(model, inputs, targets)


def require_relus(module: nn.Module, rule: str) -> None:
    """The rules are defined on ReLUs: a model without nn.ReLU modules (GELU ViTs, SiLU
    EfficientNets) would silently get the plain gradient, so it is refused instead. A model
    with no activation module at all (a linear model) has nothing to change: the rules are
    the plain gradient there."""
    if any(isinstance(m, nn.ReLU) for m in module.modules()):
        return
    found = sorted({type(m).__name__ for m in module.modules()
                    if type(m).__module__.startswith("torch.nn") and any(
                        word in type(m).__name__ for word in ("LU", "Swish", "Sigmoid", "Tanh", "Mish"))}
                   | {type(m).__name__ for m in module.modules() if "Activation" in type(m).__name__})
    if not found:
        return
    raise FailedPrecondition(
        f"the {rule} rule replaces the backward pass of nn.ReLU modules and this model has none "
        f"(its activations: {', '.join(found)}); use a plain "
        f"gradient method such as 'saliency' or 'integrated_gradients'")


def relu_rule_kernel(model: ModelHandle, inputs: Tensor, targets: Tensor, *,
                     rule: str) -> dict[str, Tensor]:
    gradient, scored = relu_rule_gradient(model, inputs, targets, rule)
    return {**scored, "attribution": gradient, "heatmap": gradient_heatmap(gradient)}


GUIDED_BACKPROP = Kernel.of(relu_rule_kernel, rule="guided")
DECONVNET = Kernel.of(relu_rule_kernel, rule="deconvnet")


def guided_gradcam_kernel(model: ModelHandle, inputs: Tensor, targets: Tensor, *, layer: str,
                          layout: LayerLayout, upsample_mode: str) -> dict[str, Tensor]:
    """Two passes, as in Captum's GuidedGradCam: Grad-CAM needs the plain gradient above the
    layer, guided backprop the guided one everywhere. The scores come from the first (plain)
    pass; the targets it resolved are used for the second, so both explain the same class."""
    activations, gradients, scored = layer_gradients(model, inputs, targets, layer, layout)
    cam = torch.relu(torch.einsum("nk,nkhw->nhw", gradcam_weights(activations, gradients), activations))
    guided, _ = relu_rule_gradient(model, inputs, scored["target"], "guided")
    attribution = guided * upsample(cam, tuple(inputs.shape[-2:]), upsample_mode)[:, None]
    return {**scored, "attribution": attribution, "heatmap": gradient_heatmap(attribution)}


@register_method("guided_backprop", gradient_kernel=lambda params: GUIDED_BACKPROP)
async def guided_backprop(ctx, image, targets, layer, params):
    """Guided backpropagation: only positive gradients through active ReLUs (Springenberg 2014)."""
    return await run_single_pass(ctx, GUIDED_BACKPROP, image, targets)


@register_method("deconvnet", gradient_kernel=lambda params: DECONVNET)
async def deconvnet(ctx, image, targets, layer, params):
    """Deconvnet: ReLUs pass the positive part of the gradient (Zeiler & Fergus 2014)."""
    return await run_single_pass(ctx, DECONVNET, image, targets)


@register_method("guided_gradcam", params=(GUIDED_GRADCAM_UPSAMPLE,), uses_layer=True,
                 spatial_layer=True)
async def guided_gradcam(ctx, image, targets, layer, params):
    """Guided Grad-CAM: guided backprop times the upsampled Grad-CAM map (Selvaraju et al.)."""
    kernel = Kernel.of(guided_gradcam_kernel, layer=layer, layout=ctx.model.layer_layouts[layer],
                       upsample_mode=params["upsample"])
    return await run_single_pass(ctx, kernel, image, targets)
