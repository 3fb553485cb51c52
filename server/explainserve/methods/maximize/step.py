"""One batchable step of gradient ascent on the input (the kernel of Maximize).

Per row: image = parameterisation(param); the model sees a randomly transformed copy; the
objective minus the priors is differentiated with respect to param; Adam (or plain gradient
ascent, as Simonyan et al. 2013) takes the step; then blur-every-k and clipping. The rows are
independent, so the gradient of the summed objectives is each row's own gradient.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import Tensor

from explainserve import hooks
from explainserve.methods.base import ModelHandle
from explainserve.methods.maximize import parameterization as param_space
from explainserve.methods.maximize import priors
from explainserve.methods.maximize.plan import (COUNT, REPORT, SEED, STEP, UNIT, AscentPlan, pack,
                                                unpack)
from explainserve.methods.maximize.registry import Unit, get_objective

ADAM_BETAS = (0.9, 0.999)
ADAM_EPSILON = 1e-8


def _image(plan: AscentPlan, param: Tensor) -> Tensor:
    return param_space.to_image(plan.parameterization, param, plan.image_shape, plan.mean, plan.std)


def objective_value(model: ModelHandle, plan: AscentPlan, image: Tensor, seen: Tensor,
                    targets: Tensor, code: Tensor, full: bool) -> tuple[Tensor, Tensor | None]:
    """The objective of the transformed image minus the priors of the image itself."""
    value, logits = get_objective(plan.objective).function(model, seen, targets, code, plan, full)
    if plan.l2:
        value = value - plan.l2 * priors.l2_penalty(image)
    if plan.tv:
        value = value - plan.tv * priors.total_variation(image)
    return value, logits


def _update(plan: AscentPlan, param: Tensor, grad: Tensor, m: Tensor, v: Tensor,
            t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Ascent: plain gradient steps (Simonyan et al.) or Adam with per-row bias correction."""
    if plan.optimizer == "sgd":
        return param + plan.learning_rate * grad, m, v
    b1, b2 = ADAM_BETAS
    m = b1 * m + (1 - b1) * grad
    v = b2 * v + (1 - b2) * grad * grad
    shape = (-1,) + (1,) * (param.ndim - 1)
    m_hat = m / (1 - b1 ** t.to(param.dtype)).view(shape)
    v_hat = v / (1 - b2 ** t.to(param.dtype)).view(shape)
    return param + plan.learning_rate * m_hat / (v_hat.sqrt() + ADAM_EPSILON), m, v


def _after_step(plan: AscentPlan, param: Tensor, t: Tensor) -> Tensor:
    """Blur every k steps, then clip pixels to what the normalisation can produce."""
    if plan.blur_every:
        due = (t % plan.blur_every == 0).view((-1,) + (1,) * (param.ndim - 1))
        blurred = param_space.blur(plan.parameterization, param, plan.blur_sigma, plan.image_shape)
        param = torch.where(due, blurred, param)
    if plan.clip and plan.parameterization == "pixels":
        stats = list(zip(plan.mean, plan.std))
        low = torch.tensor([-mu / sigma for mu, sigma in stats], device=param.device)
        high = torch.tensor([(1 - mu) / sigma for mu, sigma in stats], device=param.device)
        param = torch.maximum(torch.minimum(param, high[:, None, None]), low[:, None, None])
    return param


def _step(model: ModelHandle, plan: AscentPlan, state: list[Tensor], targets: Tensor,
          step: Tensor) -> list[Tensor]:
    param, m, v, code = state
    param = param.detach().requires_grad_(True)
    # early rows are redirected at every unit (plan.redirect_steps), the others only where a
    # ReLU blocks a row's whole gradient
    early = step < plan.redirect_steps
    relus = (hooks.relu_backward_rule(model.module, "redirected", early) if plan.redirect_relu
             else nullcontext())
    # one random stream per row and step: a row's draws never depend on its batch
    pairs = zip(targets[:, SEED].tolist(), step.tolist())
    seeds = [priors.mix_seed(row_seed, row_step) for row_seed, row_step in pairs]
    with torch.enable_grad(), relus:
        image = _image(plan, param)
        seen = priors.transform(image, seeds, plan.jitter, plan.scale, plan.rotate,
                                      plan.noise)
        value, _ = objective_value(model, plan, image, seen, targets, code, full=False)
        (grad,) = torch.autograd.grad(value.sum(), param)  # rows are independent
    new_param, m, v = _update(plan, param.detach(), grad, m, v, step + 1)
    return [_after_step(plan, new_param, step + 1), m, v, code]


def ascent_kernel(model: ModelHandle, inputs: Tensor, targets: Tensor, *,
                  plan: AscentPlan) -> dict[str, Tensor]:
    """COUNT steps for each row from its STEP; rows with REPORT set also get the objective,
    prediction and probability of their image after the last step."""
    if plan.batch_invariant and len(inputs) > 1:
        # BLAS and oneDNN/cuDNN may round a row differently at different batch sizes; one row
        # at a time makes a row's arithmetic independent of whoever shares its batch.
        parts = [ascent_kernel(model, inputs[i:i + 1], targets[i:i + 1], plan=plan)
                 for i in range(len(inputs))]
        return {name: torch.cat([part[name] for part in parts]) for name in parts[0]}
    state = unpack(plan, inputs)
    count = targets[:, COUNT]
    for i in range(int(count.max())):
        stepped = _step(model, plan, state, targets, targets[:, STEP] + i)
        active = count > i
        state = [torch.where(active.view((-1,) + (1,) * (old.ndim - 1)), new, old)
                 for new, old in zip(stepped, state)]
    param = state[0]
    with torch.no_grad():
        image = _image(plan, param)
        report = _report(model, plan, image, targets, state[3])
    return {"state": pack(*state), "image": image, **report}


def _report(model: ModelHandle, plan: AscentPlan, image: Tensor, targets: Tensor,
            code: Tensor) -> dict[str, Tensor]:
    n = image.shape[0]
    out = {"objective": torch.full((n,), float("nan"), device=image.device),
           "predicted": torch.full((n,), -1, dtype=torch.long, device=image.device),
           "probability": torch.full((n,), float("nan"), device=image.device)}
    rows = targets[:, REPORT].nonzero().flatten()
    if len(rows) == 0:
        return out
    value, logits = objective_value(model, plan, image[rows], image[rows], targets[rows],
                                    code[rows], full=True)
    probabilities = logits.softmax(dim=1)
    predicted = logits.argmax(dim=1)
    # a class objective reports the probability of its own class, the others the prediction's
    unit_is_class = get_objective(plan.objective).unit is Unit.CLASS
    shown = targets[rows, UNIT] if unit_is_class else predicted
    out["objective"][rows] = value.to(out["objective"].dtype)
    out["predicted"][rows] = predicted
    out["probability"][rows] = probabilities.gather(1, shown[:, None]).squeeze(1)
    return out
