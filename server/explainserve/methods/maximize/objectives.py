"""Activation maximisation: synthesise the input that drives up one unit of the network.

- class: Simonyan et al. 2013, eq. 1, argmax_I S_c(I) - lambda ||I||^2, with S_c the class
  score before softmax (maximising the posterior would also push the other classes down).
- channel: Erhan et al. 2009, the mean of one channel's feature map at a layer.
- neuron: one spatial unit (y, x) of one channel at a layer.

The step lives in step.py and the loop in engine/maximize.py; this module only says what each
row's objective is. The unit (class or channel index) and the neuron's position come from the
row's targets, so rows of different requests with different units share one pass.
"""

from __future__ import annotations

import torch
from torch import Tensor

from explainserve.methods.base import ModelHandle
from explainserve.methods.maximize.layers import layer_output
from explainserve.methods.maximize.plan import NEURON_X, NEURON_Y, UNIT, AscentPlan, ascent_params
from explainserve.methods.maximize.registry import Unit, register_objective
from explainserve.models.layouts import to_channel_maps


def _channel_maps(activations: Tensor, plan: AscentPlan) -> Tensor:
    """Channels-last and token outputs as [N, K, h, w], so a channel index is a channel."""
    if plan.layout.kind in ("nhwc", "tokens"):
        return to_channel_maps(activations, plan.layout)
    return activations

# Class models: the L2 prior of eq. 1 keeps the image near the mean, small jitter and blur
# suppress the high-frequency patterns that fool a network without looking like anything
# (Yosinski et al. 2015, Olah et al. 2017). Units: no prior, the strongest activation within
# the valid pixel range (Erhan et al.'s bounded-input setting); priors are one parameter away.
CLASS_PARAMS = ascent_params(learning_rate=0.05, l2=0.05, jitter=2, blur_every=4,
                             blur_sigma=0.5)
UNIT_PARAMS = ascent_params(learning_rate=0.1)


# The class score is the logit, so no layer; the zero start is the mean image, the seeds'
# recipe for class models. Units start from seeded noise: without random transformations (off
# by default for units) restarts from one zero image would all take the same path.
@register_objective("class", CLASS_PARAMS, unit=Unit.CLASS, needs_layer=False,
                    default_start="zeros")
def class_score(model: ModelHandle, images: Tensor, targets: Tensor, code: Tensor,
                plan: AscentPlan, full: bool) -> tuple[Tensor, Tensor]:
    """S_c(I), the logit of each row's class."""
    logits = model.module(images)
    return logits.gather(1, targets[:, UNIT, None]).squeeze(1), logits


@register_objective("channel", UNIT_PARAMS, unit=Unit.CHANNEL)
def channel_mean(model: ModelHandle, images: Tensor, targets: Tensor, code: Tensor,
                 plan: AscentPlan, full: bool) -> tuple[Tensor, Tensor | None]:
    """The mean over positions of each row's channel at the layer."""
    activations, logits = layer_output(model, images, plan.layer, full)
    activations = _channel_maps(activations, plan)
    rows = torch.arange(activations.shape[0], device=activations.device)
    picked = activations[rows, targets[:, UNIT]]
    return picked.reshape(len(rows), -1).mean(dim=1), logits


@register_objective("neuron", UNIT_PARAMS, unit=Unit.NEURON, spatial_layer=True)
def neuron(model: ModelHandle, images: Tensor, targets: Tensor, code: Tensor,
           plan: AscentPlan, full: bool) -> tuple[Tensor, Tensor | None]:
    """The activation of each row's channel at its (y, x) in the layer's feature map."""
    activations, logits = layer_output(model, images, plan.layer, full)
    activations = _channel_maps(activations, plan)
    rows = torch.arange(activations.shape[0], device=activations.device)
    value = activations[rows, targets[:, UNIT], targets[:, NEURON_Y], targets[:, NEURON_X]]
    return value, logits
