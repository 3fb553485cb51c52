"""Explicit attention weights of the self-attention forms in torchvision, timm and Hugging Face
ViTs, recomputed from each module's own projections.

None of the three hands its weights out on the fast path: torchvision calls its
nn.MultiheadAttention with need_weights=False, timm and transformers (sdpa) call
F.scaled_dot_product_attention. So a forward hook (hooks.recomputed_outputs) reads the module's
input and computes, with the module's own layers,

    A = softmax(q k^T / sqrt(d))   [N, heads, T, T],   output = proj(A v)

and the output from A equals the module's (up to float rounding), so a gradient of the score
reaches A. Nothing in a module is changed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from explainserve.errors import FailedPrecondition

# form(module, x [N, T, D], A or None) -> (A [N, heads, T, T], the output tensor from A); a
# given A (a leaf that a gradient is taken for) is used in place of the recomputed one
Form = Callable[[nn.Module, Tensor, Tensor | None], tuple[Tensor, Tensor]]


def _heads(x: Tensor, heads: int) -> Tensor:
    """[N, T, heads*d] -> [N, heads, T, d]."""
    n, t, _ = x.shape
    return x.reshape(n, t, heads, -1).transpose(1, 2)


def _merge(x: Tensor) -> Tensor:
    """[N, heads, T, d] -> [N, T, heads*d]."""
    n, _, t, _ = x.shape
    return x.transpose(1, 2).reshape(n, t, -1)


def _softmax(q: Tensor, k: Tensor, scale: float, given: Tensor | None) -> Tensor:
    return (q * scale @ k.transpose(-2, -1)).softmax(dim=-1) if given is None else given


def multihead(module: nn.MultiheadAttention, x: Tensor, given: Tensor | None = None
              ) -> tuple[Tensor, Tensor]:
    """torch's nn.MultiheadAttention (torchvision ViT), batch first, one packed in-projection."""
    q, k, v = F.linear(x, module.in_proj_weight, module.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (_heads(t, module.num_heads) for t in (q, k, v))
    weights = _softmax(q, k, q.shape[-1] ** -0.5, given)
    return weights, module.out_proj(_merge(weights @ v))


def timm_qkv(module: nn.Module, x: Tensor, given: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """timm's Attention (ViT, DeiT, EVA-style qk-norm and gate included)."""
    n, t, _ = x.shape
    qkv = module.qkv(x).reshape(n, t, 3, module.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = module.q_norm(q), module.k_norm(k)
    weights = _softmax(q, k, module.scale, given)
    out = module.norm(_merge(weights @ v))
    if getattr(module, "gate", None) is not None:
        out = out * module.gate(x).sigmoid()
    return weights, module.proj_drop(module.proj(out))


def hf_projections(module: nn.Module, x: Tensor, given: Tensor | None = None
                   ) -> tuple[Tensor, Tensor]:
    """transformers' ViTAttention (q_proj, k_proj, v_proj, o_proj)."""
    heads = module.num_attention_heads
    q, k, v = (_heads(p(x), heads) for p in (module.q_proj, module.k_proj, module.v_proj))
    weights = _softmax(q, k, module.scaling, given)
    return weights, module.o_proj(_merge(weights @ v))


def query_key_weights(module: nn.Module, x: Tensor) -> Tensor:
    """A alone, without the value projection or the output (what rollout needs): q and k
    from the rows of the module's packed projection, so v costs nothing."""
    if isinstance(module, nn.MultiheadAttention):
        width = module.embed_dim
        bias = module.in_proj_bias[:2 * width] if module.in_proj_bias is not None else None
        q, k = F.linear(x, module.in_proj_weight[:2 * width], bias).chunk(2, dim=-1)
        q, k = _heads(q, module.num_heads), _heads(k, module.num_heads)
        return _softmax(q, k, q.shape[-1] ** -0.5, None)
    if hasattr(module, "qkv"):
        width = module.num_heads * module.head_dim
        bias = module.qkv.bias[:2 * width] if module.qkv.bias is not None else None
        q, k = F.linear(x, module.qkv.weight[:2 * width], bias).chunk(2, dim=-1)
        q, k = module.q_norm(_heads(q, module.num_heads)), module.k_norm(_heads(k, module.num_heads))
        return _softmax(q, k, module.scale, None)
    q, k = (_heads(p(x), module.num_attention_heads) for p in (module.q_proj, module.k_proj))
    return _softmax(q, k, module.scaling, None)


def form_of(module: nn.Module) -> Form | None:
    if isinstance(module, nn.MultiheadAttention):
        return multihead if module.batch_first and module._qkv_same_embed_dim else None
    if isinstance(getattr(module, "qkv", None), nn.Linear) and hasattr(module, "q_norm"):
        return timm_qkv
    if all(isinstance(getattr(module, p, None), nn.Linear)
           for p in ("q_proj", "k_proj", "v_proj", "o_proj")) and hasattr(module, "scaling"):
        return hf_projections
    return None


def recompute(form: Form, module: nn.Module, args: tuple, kwargs: dict, output: object,
              name: str, leaf: bool = False, weights_only: bool = False) -> tuple[Tensor, object]:
    """(A, the module's output rebuilt from A in the module's own return form). leaf: an A
    that does not depend on anything needing a gradient (the first layer's, the input being
    constant) is made a grad-requiring leaf, so every layer's A has a gradient."""
    x = args[0] if args else kwargs.get("hidden_states", kwargs.get("x", kwargs.get("query")))
    extra = [a for a in args[1:] if isinstance(a, Tensor)] if form is not multihead else []
    masks = [kwargs.get(key) for key in ("attn_mask", "attention_mask", "key_padding_mask")]
    if not isinstance(x, Tensor) or x.ndim != 3 or extra or any(m is not None for m in masks):
        raise FailedPrecondition(f"attention module {name!r} is not called as unmasked self-"
                                 f"attention on [N, T, D] tokens, so its weights cannot be rebuilt")
    if weights_only:
        return query_key_weights(module, x), None
    weights, out = form(module, x, None)
    if leaf and not weights.requires_grad:
        weights, out = form(module, x, weights.detach().requires_grad_(True))
    if isinstance(output, tuple):
        return weights, (out, *(weights if o is not None else None for o in output[1:]))
    return weights, out
