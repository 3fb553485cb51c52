"""Attention explanations of Vision Transformers, as [h, w] maps on the patch grid.

attention_rollout (Abnar & Zuidema 2020, arXiv:2005.00928, sec. 3): fuse each layer's heads
(mean, max or min), optionally zero the smallest fraction of the fused weights (the
"discard ratio" of the reference implementation, never the class token's own weight), add the
identity for the residual path and renormalise the rows, A_l = (Abar_l + I) / 2 row-normalised,
then multiply through the layers, R = A_L ... A_1; the map is the class token's row over the
patch tokens.

attention_gradient (Chefer et al. 2021, "Generic Attention-model Explainability", arXiv:2103.15679,
eq. 5-6, the self-attention rule): R = I, and per layer in forward order
R = R + mean_h(ReLU(dS/dA_l * A_l)) . R; the map is again the class token's row.

A model without a class token (prefix_tokens = 0, global-pool heads) reads the mean of all
rows. The weights come from methods/explain/attention_forms.py through hooks.py.
"""

from __future__ import annotations

import torch
from torch import Tensor

from explainserve import hooks
from explainserve.errors import FailedPrecondition
from explainserve.methods.base import Kernel, ModelHandle, Param, normalize_maps, run_single_pass, score_targets, upsample
from explainserve.methods.explain.attention_forms import form_of, recompute
from explainserve.methods.explain.registry import register_method
from explainserve.models.layouts import LayerLayout

HEAD_FUSION = Param("head_fusion", str, "mean", choices=("mean", "max", "min"),
                    help="how a layer's heads are fused before the rollout")
DISCARD_RATIO = Param("discard_ratio", float, 0.0, minimum=0.0, maximum=0.99,
                      help="fraction of each layer's smallest fused weights set to zero")
UPSAMPLE = Param("upsample", str, "bilinear", choices=("bilinear", "nearest"),
                 help="how the [h,w] map is resized to the input for the heatmap")


def attention_weights(model: ModelHandle, inputs: Tensor, modules: tuple[str, ...],
                      in_graph: bool) -> tuple[list[Tensor], Tensor]:
    """Each attention module's A [N, heads, T, T] in forward order, and the logits. in_graph:
    the network runs on outputs rebuilt from A, so dS/dA exists; the first A becomes a leaf
    (nothing below it needs a gradient), later ones depend on it through the tokens."""
    captured: list[Tensor] = []

    def rebuild(name, module, args, kwargs, output):
        form = form_of(module)
        if form is None:
            raise FailedPrecondition(f"attention module {name!r} ({type(module).__name__}) is not "
                                     "a form whose weights can be rebuilt (torchvision, timm or "
                                     "Hugging Face ViT self-attention)")
        weights, rebuilt = recompute(form, module, args, kwargs, output, name, leaf=in_graph,
                                     weights_only=not in_graph)
        captured.append(weights)
        return rebuilt if in_graph else None

    table = {name: model.layer(name) for name in modules}
    with hooks.recomputed_outputs(table, rebuild):
        logits = model.module(inputs)
    if not captured or any(a.shape[0] != inputs.shape[0] for a in captured):
        raise FailedPrecondition("the attention is windowed (its batch is not the model's), "
                                 "so there is no token-to-token matrix to roll out")
    return captured, logits


def class_row(relevance: Tensor, layout: LayerLayout) -> Tensor:
    """[N, T, T] -> [N, h, w]: the class token's row (mean row without one) over the patches."""
    rows = relevance[:, 0] if layout.prefix_tokens else relevance.mean(dim=1)
    patches = rows[:, layout.prefix_tokens:]
    return patches.reshape(-1, layout.height, layout.width)


def fuse(weights: Tensor, fusion: str) -> Tensor:
    return {"mean": weights.mean(dim=1), "max": weights.amax(dim=1), "min": weights.amin(dim=1)}[fusion]


def discard(fused: Tensor, ratio: float) -> Tensor:
    """Zero the int(T*T*ratio) smallest weights of each sample, sparing entry (0, 0)."""
    count = int(fused[0].numel() * ratio)
    if count == 0:
        return fused
    flat = fused.flatten(1).clone()
    lowest = flat.topk(count, dim=1, largest=False).indices
    keep = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, lowest, True)
    keep[:, 0] = False
    return flat.masked_fill(keep, 0.0).view_as(fused)


def rollout_kernel(model: ModelHandle, inputs: Tensor, targets: Tensor, *, modules: tuple[str, ...],
                   layout: LayerLayout, fusion: str, ratio: float, upsample_mode: str) -> dict[str, Tensor]:
    with torch.no_grad():
        weights, logits = attention_weights(model, inputs, modules, in_graph=False)
        tokens = weights[0].shape[-1]
        eye = torch.eye(tokens, device=inputs.device, dtype=weights[0].dtype)
        relevance = eye.expand(inputs.shape[0], tokens, tokens)
        for layer in weights:
            fused = discard(fuse(layer, fusion), ratio)
            fused = (fused + eye) / 2
            relevance = (fused / fused.sum(dim=-1, keepdim=True)) @ relevance
    return _outputs(score_targets(logits, targets), class_row(relevance, layout), inputs, upsample_mode)


def gradient_kernel(model: ModelHandle, inputs: Tensor, targets: Tensor, *, modules: tuple[str, ...],
                    layout: LayerLayout, upsample_mode: str) -> dict[str, Tensor]:
    weights, logits = attention_weights(model, inputs, modules, in_graph=True)
    scored = score_targets(logits, targets)
    gradients = torch.autograd.grad(scored["score"].sum(), weights)
    with torch.no_grad():
        tokens = weights[0].shape[-1]
        relevance = torch.eye(tokens, device=inputs.device).expand(inputs.shape[0], tokens, tokens)
        for layer, gradient in zip(weights, gradients):
            relevance = relevance + (gradient * layer).clamp(min=0).mean(dim=1) @ relevance
    return _outputs(scored, class_row(relevance, layout), inputs, upsample_mode)


def _outputs(scored: dict[str, Tensor], attribution: Tensor, inputs: Tensor, mode: str) -> dict[str, Tensor]:
    heatmap = normalize_maps(upsample(attribution.detach(), tuple(inputs.shape[-2:]), mode))
    return {**{k: v.detach() for k, v in scored.items()}, "attribution": attribution.detach(),
            "heatmap": heatmap}


def token_setup(ctx, method: str) -> tuple[tuple[str, ...], LayerLayout]:
    """The model's attention modules and its token layout, or FAILED_PRECONDITION saying why
    the method does not apply to it."""
    model = ctx.model
    modules = tuple(getattr(model, "attention_modules", ()))
    layouts = [l for l in model.layer_layouts.values() if l.kind == "tokens"]
    if not modules or not layouts:
        raise FailedPrecondition(f"method {method!r} needs a Vision Transformer: model "
                                 f"{model.name!r} has no " + ("self-attention module of a known form"
                                 if not modules else "layer of patch tokens"))
    return modules, layouts[-1]


@register_method("attention_rollout", params=(HEAD_FUSION, DISCARD_RATIO, UPSAMPLE), needs_target=False)
async def attention_rollout(ctx, image, targets, layer, params):
    """Attention rollout: head-fused attention with the residual identity, multiplied through the layers."""
    modules, layout = token_setup(ctx, "attention_rollout")
    kernel = Kernel.of(rollout_kernel, modules=modules, layout=layout, fusion=params["head_fusion"],
                       ratio=params["discard_ratio"], upsample_mode=params["upsample"])
    return await run_single_pass(ctx, kernel, image, targets)


@register_method("attention_gradient", params=(UPSAMPLE,), needs_gradients=True)
async def attention_gradient(ctx, image, targets, layer, params):
    """Chefer et al. 2021: relevance from positive gradient-weighted attention, layer by layer."""
    modules, layout = token_setup(ctx, "attention_gradient")
    kernel = Kernel.of(gradient_kernel, modules=modules, layout=layout,
                       upsample_mode=params["upsample"])
    return await run_single_pass(ctx, kernel, image, targets)
