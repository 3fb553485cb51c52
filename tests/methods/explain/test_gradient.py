"""Saliency, input x gradient, SmoothGrad, deconvnet and guided backprop through the real server
and client: against Captum on resnet18, vgg16 and the demo model (alone and in a batch of 8),
against closed forms on the tiny models, and SmoothGrad's own contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from explainserve.methods.explain.smoothgrad import NoisyRows
from explainserve_client import ExplainServeError
from gradient_family_references import (GRADIENT_METHODS, batches_of,
                                        check_alone_and_in_a_batch_of_8, our_noise,
                                        smoothgrad_reference)
from support import random_input, reference_module, relative_l2


@pytest.mark.parametrize("model", ["resnet18", "vgg16", "demo"])
@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_matches_captum_alone_and_in_a_batch_of_8(serving, reference_modules, model, method):
    # resnet18 reuses one in-place ReLU module twice per block and vgg16's ReLUs are in place:
    # guided backprop and deconvnet must still apply their rule at every call.
    params = {"samples": 2, "seed": 11, "base": "guided_backprop"} if method == "smoothgrad" else {}
    check_alone_and_in_a_batch_of_8(serving, reference_modules, model, method, **params)


@pytest.mark.parametrize(("base", "squared"), [("saliency", False), ("input_x_gradient", False),
                                               ("deconvnet", False), ("guided_backprop", False),
                                               ("saliency", True), ("guided_backprop", True)])
def test_smoothgrad_wraps_each_base_method_as_captums_noise_tunnel(server, client, models_by_name,
                                                                  base, squared):
    module = reference_module(models_by_name["resnet18"])
    image = random_input((3, 64, 64), seed=21)
    params = {"base": base, "samples": 3, "noise_level": 0.2, "seed": 5, "squared": squared}
    with batches_of(server, "resnet18", 1):  # one noisy copy per pass, as NoiseTunnel runs them
        (got,) = client.explain(image, model="resnet18", method="smoothgrad", targets=[4], **params)
    expected = smoothgrad_reference(module, torch.from_numpy(image), 4, **params)
    assert relative_l2(got.attribution, expected) < 1e-4


def tiny_cnn_parts(models_by_name, image):
    module = reference_module(models_by_name["tiny_cnn"])
    with torch.no_grad():
        preactivation = module.conv(torch.from_numpy(image)[None])
    return module, preactivation


@pytest.mark.parametrize("method", ["saliency", "deconvnet", "guided_backprop"])
def test_relu_rules_on_a_conv_relu_gap_linear_model_are_the_closed_forms(client, models_by_name, method):
    # y_c = sum_k W[c,k] mean_ij ReLU(z_k)_ij + b_c with z = conv(x): the gradient reaching the
    # ReLU is W[c,k]/(hw) everywhere. Backprop masks it with 1{z>0}, deconvnet passes its positive
    # part, guided backprop does both; the conv's backward is its transposed convolution.
    image = random_input((3, 8, 8), seed=31)
    module, z = tiny_cnn_parts(models_by_name, image)
    height, width = z.shape[-2:]
    for got in client.explain(image, model="tiny_cnn", method=method, targets=[0, 1, 2, 3]):
        gradient = module.fc.weight[got.target].detach() / (height * width)
        upstream = gradient[None, :, None, None].expand_as(z)
        if method != "saliency":
            upstream = upstream.clamp(min=0)
        if method != "deconvnet":
            upstream = upstream * (z > 0)
        expected = F.conv_transpose2d(upstream, module.conv.weight.detach(), padding=1)[0]
        np.testing.assert_allclose(got.attribution, expected.numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method", ["deconvnet", "guided_backprop", "smoothgrad"])
def test_on_a_linear_model_every_gradient_method_is_the_weight_row(client, models_by_name, method):
    # No ReLU and a constant gradient: the rules change nothing and noise averages nothing away.
    weights = reference_module(models_by_name["linear"]).linear.weight.detach()
    image = random_input((3, 8, 8), seed=32)
    params = {"samples": 70, "noise_level": 0.5} if method == "smoothgrad" else {}  # > one window
    for got in client.explain(image, model="linear", method=method, targets=[2, 0], **params):
        np.testing.assert_allclose(got.attribution, weights[got.target].reshape(3, 8, 8).numpy(),
                                   rtol=1e-5, atol=1e-7)


def test_smoothgrad_variants_on_a_linear_model_have_closed_forms(client, models_by_name):
    weights = reference_module(models_by_name["linear"]).linear.weight.detach()[1].reshape(3, 8, 8)
    image = random_input((3, 8, 8), seed=33)
    (squared,) = client.explain(image, model="linear", method="smoothgrad", targets=[1], squared=True,
                                samples=5)
    np.testing.assert_allclose(squared.attribution, (weights ** 2).numpy(), rtol=1e-5, atol=1e-8)
    # input x gradient: mean_i (x + n_i) * W = (x + mean_i n_i) * W, with our noise reproduced
    sigma = 0.3 * float(image.max() - image.min())
    noise = torch.stack([our_noise(weights.shape, sigma, 9, i) for i in range(6)]).mean(0)
    (product,) = client.explain(image, model="linear", method="smoothgrad", targets=[1],
                                base="input_x_gradient", samples=6, noise_level=0.3, seed=9)
    np.testing.assert_allclose(product.attribution, ((torch.from_numpy(image) + noise) * weights).numpy(),
                               rtol=1e-4, atol=1e-6)


def test_smoothgrad_without_noise_is_its_base_method(server, client):
    image = random_input((3, 64, 64), seed=34)
    with batches_of(server, "resnet18", 1):
        (smooth,) = client.explain(image, model="resnet18", method="smoothgrad", targets=[6],
                                   base="deconvnet", noise_level=0.0, samples=2)
        (plain,) = client.explain(image, model="resnet18", method="deconvnet", targets=[6])
    np.testing.assert_array_equal(smooth.attribution, plain.attribution)  # (a + a) / 2 == a


def test_smoothgrad_explains_the_clean_images_prediction_and_reports_its_score(client, models_by_name):
    # With sigma = 2 (max - min) the noisy copies predict other classes; the target, score and
    # probability must still be the clean image's.
    module = reference_module(models_by_name["tiny_cnn"])
    image = random_input((3, 8, 8), seed=35)
    logits = module(torch.from_numpy(image)[None])[0].detach()
    (got,) = client.explain(image, model="tiny_cnn", method="smoothgrad", noise_level=2.0, samples=20)
    assert got.target == int(logits.argmax())
    assert got.score == pytest.approx(float(logits.max()), rel=1e-5)
    assert got.probability == pytest.approx(float(logits.softmax(0).max()), rel=1e-5)
    expected = smoothgrad_reference(module, torch.from_numpy(image), got.target, samples=20, noise_level=2.0)
    assert relative_l2(got.attribution, expected) < 1e-4


def test_smoothgrad_is_reproducible_by_seed(client):
    image = random_input((3, 8, 8), seed=36)
    first, again, other = (client.explain(image, model="tiny_cnn", method="smoothgrad", targets=[2],
                                          base="input_x_gradient", samples=8, seed=seed)[0]
                           for seed in (3, 3, 4))
    np.testing.assert_array_equal(first.attribution, again.attribution)
    assert not np.allclose(first.attribution, other.attribution)


def test_noisy_rows_do_not_depend_on_how_they_are_cut():
    rows = NoisyRows(torch.zeros(3, 4, 4), targets=(1, 3), samples=5, sigma=0.7, seed=2)
    whole_inputs, whole_targets = rows.take(0, len(rows))
    pieces = [rows.take(start, stop) for start, stop in ((0, 3), (3, 4), (4, 10))]
    assert torch.equal(torch.cat([p[0] for p in pieces]), whole_inputs)
    assert whole_targets.tolist() == [1] * 5 + [3] * 5
    assert torch.equal(whole_inputs[:5], whole_inputs[5:])  # every target sees the same copies


@pytest.mark.parametrize(("params", "named"), [
    ({"noise_level": -0.1}, "noise_level"),
    ({"samples": 513}, "samples"),  # LimitsConfig.max_smoothgrad_samples is 512
    ({"samples": 0}, "samples"),
    ({"base": "occlusion"}, "base"),
    ({"seed": -1}, "seed"),
])
def test_bad_smoothgrad_parameters_are_invalid_arguments_naming_them(client, params, named):
    with pytest.raises(ExplainServeError) as caught:
        client.explain(random_input((3, 8, 8), seed=0), model="tiny_cnn", method="smoothgrad", **params)
    assert caught.value.code.name == "INVALID_ARGUMENT"
    assert repr(named) in caught.value.details
