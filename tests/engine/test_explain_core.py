"""Saliency and Grad-CAM through the real server and client, against closed forms and Captum."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import LayerGradCam, Saliency
from support import random_input, reference_module, relative_l2


def test_saliency_on_a_linear_model_is_the_weight_row(client, models_by_name):
    weights = reference_module(models_by_name["linear"]).linear.weight.detach()
    image = random_input((3, 8, 8))
    explanations = client.explain(image, model="linear", method="saliency", targets=[0, 3, 1])
    assert [e.target for e in explanations] == [0, 3, 1]
    for explanation in explanations:
        expected = weights[explanation.target].reshape(3, 8, 8).numpy()
        np.testing.assert_allclose(explanation.attribution, expected, rtol=1e-6, atol=1e-7)
        heatmap = np.abs(expected).max(axis=0)
        np.testing.assert_allclose(explanation.heatmap, heatmap / heatmap.max(), atol=1e-6)


def test_scores_and_probabilities_are_the_models(client, models_by_name):
    module = reference_module(models_by_name["linear"])
    image = random_input((3, 8, 8), seed=4)
    logits = module(torch.from_numpy(image)[None])[0].detach()
    for explanation in client.explain(image, model="linear", method="saliency", targets=[2, 1]):
        assert explanation.score == pytest.approx(float(logits[explanation.target]), rel=1e-5)
        assert explanation.probability == pytest.approx(
            float(logits.softmax(0)[explanation.target]), rel=1e-5)
        assert explanation.label == str(explanation.target)


def test_default_target_is_the_predicted_class_and_top_k_the_best_classes(client, models_by_name):
    module = reference_module(models_by_name["linear"])
    image = random_input((3, 8, 8), seed=5)
    ranking = module(torch.from_numpy(image)[None])[0].argsort(descending=True).tolist()
    (only,) = client.explain(image, model="linear", method="saliency")
    assert only.target == ranking[0]
    top3 = client.explain(image, model="linear", method="saliency", top_k=3)
    assert [e.target for e in top3] == ranking[:3]


def test_gradcam_on_a_conv_gap_linear_model_equals_the_papers_equations(client, models_by_name):
    module = reference_module(models_by_name["tiny_cnn"])
    image = random_input((3, 8, 8), seed=1)
    with torch.no_grad():
        activations = module.relu(module.conv(torch.from_numpy(image)[None]))[0]  # [K, h, w]
    height, width = activations.shape[1:]
    for explanation in client.explain(image, model="tiny_cnn", method="gradcam", targets=[0, 1, 2, 3]):
        # alpha_k = W[c,k] / (h w) (Grad-CAM eq. 1 with dy/dA = W/(hw)); L = ReLU(sum alpha_k A^k)
        alphas = module.fc.weight[explanation.target].detach() / (height * width)
        expected = F.relu((alphas[:, None, None] * activations).sum(0))
        np.testing.assert_allclose(explanation.attribution, expected.numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("targets", [[3], [0, 7, 9]])
def test_saliency_matches_captum_on_resnet18(client, models_by_name, targets):
    module = reference_module(models_by_name["resnet18"])
    image = random_input((3, 64, 64), seed=2)
    explanations = client.explain(image, model="resnet18", method="saliency", targets=targets)
    for explanation in explanations:
        inputs = torch.from_numpy(image)[None].requires_grad_(True)
        expected = Saliency(module).attribute(inputs, target=explanation.target, abs=False)[0]
        assert relative_l2(explanation.attribution, expected.detach()) < 1e-4


@pytest.mark.parametrize("targets", [[3], [0, 7, 9]])
def test_gradcam_matches_captum_on_resnet18(client, models_by_name, targets):
    module = reference_module(models_by_name["resnet18"])
    image = random_input((3, 64, 64), seed=3)
    explanations = client.explain(image, model="resnet18", method="gradcam", targets=targets)
    for explanation in explanations:
        expected = LayerGradCam(module, module.layer4).attribute(
            torch.from_numpy(image)[None], target=explanation.target, relu_attributions=True)[0, 0]
        assert explanation.attribution.shape == (2, 2)
        assert relative_l2(explanation.attribution, expected.detach()) < 1e-4
        assert explanation.heatmap.shape == (64, 64)
        assert 0.0 <= explanation.heatmap.min() and explanation.heatmap.max() <= 1.0
