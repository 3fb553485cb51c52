"""Integrated gradients (Sundararajan et al. 2017, arXiv:1703.01365, eq. 1): the rule in
quadrature.py, the baselines in baselines.py, the path's rows and refinement in paths.py. As a
SmoothGrad base, each noisy copy's whole path is one kernel row.
"""

from __future__ import annotations

import asyncio

import torch
from torch import Tensor

from explainserve.methods.base import Attribution, Kernel, ModelHandle, Param, gradient_heatmap
from explainserve.methods.explain.baselines import BASELINES, Baseline
from explainserve.methods.explain.paths import check_steps, integrate
from explainserve.methods.explain.quadrature import QUADRATURES, nodes
from explainserve.methods.explain.registry import register_method
from explainserve.methods.explain.saliency import input_gradient

PARAMS = (
    Param("steps", int, 50, minimum=1,
          help="points of the path quadrature (at most limits.max_integrated_gradients_steps)"),
    Param("quadrature", str, "gausslegendre", choices=QUADRATURES,
          help="the rule approximating eq. 1's integral"),
    Param("baseline", str, "black", choices=BASELINES, help="the path's starting image x'"),
    Param("blur_sigma", float, 5.0, minimum=0.0, maximum=1e3, help="pixels; the blur baseline's"),
    Param("seed", int, 0, minimum=0, maximum=2**31 - 1, help="seed of the noise baseline"),
    Param("max_completeness_gap", float, 0.05, minimum=0.0,
          help="refine the steps of a target until its completeness gap is at most this; "
               "0 uses exactly `steps`"),
)
# Path points one gradient pass of the SmoothGrad kernel holds at once.
KERNEL_ROWS = 64


def baseline_of(ctx_model, params: dict) -> Baseline:
    if params["baseline"] == "tensor":
        return Baseline.sent(params.get("baseline_image"), tuple(ctx_model.mean), tuple(ctx_model.std))
    return Baseline(params["baseline"], tuple(ctx_model.mean), tuple(ctx_model.std),
                    params["blur_sigma"], params["seed"])


def integrated_gradients_kernel(model: ModelHandle, inputs: Tensor, targets: Tensor, *, steps: int,
                                quadrature: str, baseline: Baseline) -> dict[str, Tensor]:
    """Eq. 1 for each row, all in one kernel (what SmoothGrad averages over noisy copies):
    the rows' path points, alpha-major as in Captum, KERNEL_ROWS at a time."""
    baselines = torch.stack([baseline.make(row) for row in inputs])
    alphas, weights = nodes(quadrature, steps)
    total = torch.zeros_like(inputs)
    per_pass = max(1, KERNEL_ROWS // len(inputs))
    for start in range(0, steps, per_pass):
        a = torch.tensor(alphas[start:start + per_pass], dtype=inputs.dtype, device=inputs.device)
        w = torch.tensor(weights[start:start + per_pass], dtype=inputs.dtype, device=inputs.device)
        points = (baselines + a[:, None, None, None, None] * (inputs - baselines)).flatten(0, 1)
        gradient, _ = input_gradient(model, points, targets.repeat(len(a)))
        total += (gradient.view(len(a), *inputs.shape) * w[:, None, None, None, None]).sum(0)
    return {"attribution": total * (inputs - baselines), "target": targets}


def gradient_kernel(params: dict) -> Kernel:
    """The kernel SmoothGrad averages; params carry the model's facts and the limits."""
    check_steps("integrated_gradients", params["steps"], params["quadrature"],
                params["limits"].max_integrated_gradients_steps)
    return Kernel.of(integrated_gradients_kernel, steps=params["steps"], quadrature=params["quadrature"],
                     baseline=baseline_of(params["facts"], params))


@register_method("integrated_gradients", params=PARAMS, gradient_kernel=gradient_kernel,
                 takes_baseline=True)
async def integrated_gradients(ctx, image, targets, layer, params):
    """Integrated gradients: the gradient integrated along the path from a baseline (Sundararajan 2017)."""
    check_steps("integrated_gradients", params["steps"], params["quadrature"],
                ctx.limits.max_integrated_gradients_steps)
    result = await integrate(ctx, image, targets, baseline_of(ctx.model, params), params["quadrature"],
                             params["steps"], params["max_completeness_gap"])
    heatmaps = await asyncio.to_thread(gradient_heatmap, result.attribution)
    probabilities = result.logits.softmax(0)
    return [Attribution(target=t, score=float(result.logits[t]), probability=float(probabilities[t]),
                        attribution=result.attribution[i], heatmap=heatmaps[i],
                        quality={"completeness_gap": result.gaps[i], "steps": float(result.steps[i])})
            for i, t in enumerate(result.targets)]
