"""Feature inversion (Mahendran & Vedaldi 2015): reconstruct an image from its code at a layer,

    x* = argmin_x ||Phi(x) - Phi0||^2 / ||Phi0||^2 + lambda R(x),

with R the total variation prior (priors.total_variation). The loss is normalised by
||Phi0||^2 as in the paper, so lambda means the same at every layer. The code Phi0 is the
reference image's (layers.layer_kernel, the spec's reference_code) and travels in each row
(plan.py), so inversions of different images share a pass.
"""

from __future__ import annotations

import torch
from torch import Tensor

from explainserve.methods.base import ModelHandle
from explainserve.methods.maximize.layers import layer_kernel, layer_output
from explainserve.methods.maximize.plan import AscentPlan, ascent_params
from explainserve.methods.maximize.registry import Unit, register_objective

# No random transformations by default: a shifted image has a shifted code, which would make
# the exact match the loss asks for impossible. The loss has local minima where ReLU units the
# code needs stay dead and max-pools pick other pixels; on the demo model, redirecting the
# gradient at every dead unit for the first quarter of the steps and keeping the best of four
# seeded starts lower the relative code error (measured by benchmarks/inversion.py, in
# docs/maximize.md).
INVERSION_PARAMS = ascent_params(learning_rate=0.02, tv=0.01, redirect_steps=256, restarts=4)


# One image per request, the reconstruction of the reference; from seeded noise, which ended
# nearer the code than a zero start on the demo model (docs/maximize.md).
@register_objective("inversion", INVERSION_PARAMS, unit=Unit.NONE, reference_code=layer_kernel,
                    default_steps=1024)
def code_match(model: ModelHandle, images: Tensor, targets: Tensor, code: Tensor,
               plan: AscentPlan, full: bool) -> tuple[Tensor, Tensor | None]:
    """Minus the normalised squared distance between each row's code and its target code."""
    activations, logits = layer_output(model, images, plan.layer, full)
    distance = (activations - code).flatten(1).pow(2).sum(dim=1)
    scale = code.flatten(1).pow(2).sum(dim=1).clamp_min(torch.finfo(code.dtype).tiny)
    return -distance / scale, logits
