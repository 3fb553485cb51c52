"""Attention rollout and attention gradient (Chefer et al. 2021) through the real server and
client, against independent computations from the attention matrices (checked against what
torch's own nn.MultiheadAttention returns with need_weights=True) on a 2-block ViT with a 2x2
patch grid, small enough to follow by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from explainserve.config import ModelConfig
from explainserve_client import Client, ExplainServeError
from support import assert_no_hooks, random_inputs, reference_module, relative_l2, running_server, tiny_config

VIT = ModelConfig("vit2", "python:vit_models:build_one_block_vit", None, 5, (16, 16))


@pytest.fixture(scope="module")
def serving():
    with running_server((VIT, tiny_config("tiny_cnn"))) as background:
        with Client(background.address, timeout=60) as client:
            yield background, client


def explicit_forward(model, images):
    """torchvision's VisionTransformer written out with each block's attention weights
    A = softmax(q k^T / sqrt(d)) explicit and kept in the graph; every block's output is checked
    against its own nn.MultiheadAttention(need_weights=True), weights included.
    Returns ([A_l [N, H, T, T]], logits)."""
    x = model._process_input(images)
    x = torch.cat([model.class_token.expand(x.shape[0], -1, -1), x], dim=1)
    x = x + model.encoder.pos_embedding
    weights = []
    for block in model.encoder.layers:
        attention = block.self_attention
        y = block.ln_1(x)
        n, t, d = y.shape
        q, k, v = (p.reshape(n, t, attention.num_heads, -1).transpose(1, 2) for p in
                   torch.nn.functional.linear(y, attention.in_proj_weight, attention.in_proj_bias).chunk(3, -1))
        a = (q @ k.transpose(-2, -1) / (d // attention.num_heads) ** 0.5).softmax(dim=-1)
        if a.requires_grad:
            a.retain_grad()
        out = attention.out_proj((a @ v).transpose(1, 2).reshape(n, t, d))
        torch_out, torch_weights = attention(y, y, y, need_weights=True, average_attn_weights=False)
        torch.testing.assert_close(out, torch_out, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a, torch_weights, rtol=1e-5, atol=1e-6)
        weights.append(a)
        x = x + out
        x = x + block.mlp(block.ln_2(x))
    return weights, model.heads(model.encoder.ln(x)[:, 0])


def rollout_by_hand(weights, fusion="mean", ratio=0.0):
    """Abnar & Zuidema with numpy, one sample at a time."""
    maps = []
    for n in range(weights[0].shape[0]):
        tokens = weights[0].shape[-1]
        result = np.eye(tokens)
        for layer in weights:
            heads = layer[n].detach().double().numpy()
            fused = {"mean": heads.mean(0), "max": heads.max(0), "min": heads.min(0)}[fusion]
            flat = fused.flatten()
            lowest = [i for i in np.argsort(flat, kind="stable")[:int(flat.size * ratio)] if i != 0]
            flat[lowest] = 0
            a = (flat.reshape(tokens, tokens) + np.eye(tokens)) / 2
            result = (a / a.sum(axis=1, keepdims=True)) @ result
        maps.append(result[0, 1:].reshape(2, 2))
    return maps


@pytest.mark.parametrize(("fusion", "ratio"), [("mean", 0.0), ("max", 0.5), ("min", 0.2)])
def test_rollout_equals_the_hand_computation(serving, fusion, ratio):
    _, client = serving
    module = reference_module(VIT)
    images = random_inputs(3, (3, 16, 16), seed=5)
    with torch.no_grad():
        weights, _ = explicit_forward(module, torch.from_numpy(np.stack(images)))
    expected = rollout_by_hand(weights, fusion, ratio)
    for image, want in zip(images, expected):
        (got,) = client.explain(image, model="vit2", method="attention_rollout",
                                head_fusion=fusion, discard_ratio=ratio)
        assert got.attribution.shape == (2, 2) and got.heatmap.shape == (16, 16)
        assert relative_l2(got.attribution, want) < 1e-5


def test_attention_gradient_equals_chefers_rule_by_hand(serving):
    background, client = serving
    module = reference_module(VIT)
    images = random_inputs(2, (3, 16, 16), seed=8)
    for image, target in zip(images, (1, 3)):
        weights, logits = explicit_forward(module, torch.from_numpy(image)[None])
        logits[0, target].backward()
        relevance = torch.eye(weights[0].shape[-1], dtype=torch.float64)
        for a in weights:  # R = R + mean_h(ReLU(grad * A)) . R
            cam = (a.grad[0].double() * a[0].detach().double()).clamp(min=0).mean(dim=0)
            relevance = relevance + cam @ relevance
        (got,) = client.explain(image, model="vit2", method="attention_gradient", targets=[target])
        assert got.target == target
        assert relative_l2(got.attribution, relevance[0, 1:].reshape(2, 2)) < 1e-5
    for worker in background.server._pool.workers:
        assert_no_hooks(worker.replicas["vit2"].module, where="vit2.")


@pytest.mark.parametrize("method", ["attention_rollout", "attention_gradient"])
def test_a_model_without_attention_is_a_failed_precondition(serving, method):
    _, client = serving
    with pytest.raises(ExplainServeError) as raised:
        client.explain(random_inputs(1, (3, 8, 8))[0], model="tiny_cnn", method=method)
    assert raised.value.code.name == "FAILED_PRECONDITION"
    assert "tiny_cnn" in raised.value.details
