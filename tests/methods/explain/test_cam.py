"""CAM, Grad-CAM, counterfactual Grad-CAM, Grad-CAM++ and guided Grad-CAM through the real
server and client: against Captum, pytorch-grad-cam and hand computations on resnet18, vgg16
and the demo model (alone and in a batch of 8), closed forms on the tiny model, and CAM's
structural precondition."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import GuidedGradCam
from explainserve.methods.explain.cam import class_activation_kernel
from explainserve_client import Client, ExplainServeError
from gradient_family_references import CAM_METHODS, check_alone_and_in_a_batch_of_8
from support import random_input, reference_module, relative_l2, running_server, tiny_config

MATRIX = [(model, method) for model in ("resnet18", "vgg16", "demo") for method in CAM_METHODS
          if (model, method) != ("vgg16", "cam")]  # vgg16 has no GAP + linear head: see below


@pytest.mark.parametrize(("model", "method"), MATRIX)
def test_matches_its_reference_alone_and_in_a_batch_of_8(serving, reference_modules, model, method):
    # References: Captum LayerGradCam (gradcam) and GuidedGradCam (guided_gradcam), the raw
    # per-layer map of pytorch-grad-cam's GradCAMPlusPlus, and hand computations for CAM and
    # the counterfactual map. vgg16's layer is an in-place ReLU.
    check_alone_and_in_a_batch_of_8(serving, reference_modules, model, method)


def test_guided_gradcam_bilinear_upsampling_matches_captum(client, models_by_name):
    module = reference_module(models_by_name["resnet18"])
    image = random_input((3, 64, 64), seed=41)
    (got,) = client.explain(image, model="resnet18", method="guided_gradcam", targets=[5],
                            layer="layer3", upsample="bilinear")
    expected = GuidedGradCam(module, module.layer3).attribute(
        torch.from_numpy(image)[None], target=5, interpolate_mode="bilinear")[0]
    assert relative_l2(got.attribution, expected.detach()) < 1e-4


@pytest.fixture(scope="module")
def tiny(models_by_name):
    """tiny_cnn (conv -> ReLU -> GAP -> linear) and, for one image, its maps A = ReLU(conv(x))."""
    module = reference_module(models_by_name["tiny_cnn"])
    image = random_input((3, 8, 8), seed=42)
    with torch.no_grad():
        preactivation = module.conv(torch.from_numpy(image)[None])[0]
    return module, image, preactivation, torch.relu(preactivation)


def test_cam_on_a_conv_gap_linear_model_is_zhous_equation(client, tiny):
    module, image, _, maps = tiny
    logits = module(torch.from_numpy(image)[None])[0].detach()
    for got in client.explain(image, model="tiny_cnn", method="cam", targets=[0, 1, 2, 3]):
        weights = module.fc.weight[got.target].detach()
        expected = torch.einsum("k,khw->hw", weights, maps)  # M_c = sum_k w^c_k f_k
        np.testing.assert_allclose(got.attribution, expected.numpy(), rtol=1e-5, atol=1e-6)
        # Zhou et al. sec. 2: the class score is the pooled map plus the bias
        assert got.attribution.mean() + float(module.fc.bias[got.target]) == pytest.approx(
            float(logits[got.target]), rel=1e-5, abs=1e-6)


def test_on_a_gap_linear_model_gradcam_is_relu_of_cam_and_its_variants_have_closed_forms(client, tiny):
    # dS_c/dA^k_ij = W[c,k]/(hw) =: g_k everywhere (Grad-CAM sec. 3.1: Grad-CAM generalises CAM)
    module, image, _, maps = tiny
    area = maps.shape[1] * maps.shape[2]
    got = {method: client.explain(image, model="tiny_cnn", method=method, targets=[0, 1, 2, 3])
           for method in ("cam", "gradcam", "gradcam_counterfactual", "gradcam_plus_plus")}
    for index, target in enumerate(range(4)):
        cam = torch.from_numpy(got["cam"][index].attribution)
        g = module.fc.weight[target].detach() / area
        # Grad-CAM++ eq. 19 with g constant over (i, j): alpha = 1 / (2 + g sum_ab A_ab)
        alphas = torch.where(g != 0, 1 / (2 + g * maps.sum(dim=(1, 2))), 0.0)
        plus_plus = torch.relu(torch.einsum("k,khw->hw", area * alphas * torch.relu(g), maps))
        expected = {"gradcam": torch.relu(cam) / area, "gradcam_counterfactual": torch.relu(-cam) / area,
                    "gradcam_plus_plus": plus_plus}
        for method, values in expected.items():
            np.testing.assert_allclose(got[method][index].attribution, values.numpy(), rtol=1e-4, atol=1e-7)


def test_guided_gradcam_on_the_tiny_model_is_guided_backprop_times_gradcam(client, tiny):
    module, image, z, maps = tiny
    area = maps.shape[1] * maps.shape[2]
    for got in client.explain(image, model="tiny_cnn", method="guided_gradcam", targets=[1, 3]):
        g = module.fc.weight[got.target].detach() / area
        guided = F.conv_transpose2d((torch.relu(g)[:, None, None] * (z > 0))[None],
                                    module.conv.weight.detach(), padding=1)[0]
        gradcam = torch.relu(torch.einsum("k,khw->hw", g, maps))  # layer "relu" is 8x8: no resize
        np.testing.assert_allclose(got.attribution, (guided * gradcam).numpy(), rtol=1e-4, atol=1e-9)


def test_cam_runs_no_backward_pass(models_by_name):
    module = reference_module(models_by_name["resnet18"]).requires_grad_(False)
    layers = dict(module.named_modules())
    handle = SimpleNamespace(module=module, device=torch.device("cpu"), layer=layers.__getitem__)
    outputs = class_activation_kernel(handle, torch.randn(2, 3, 64, 64), torch.tensor([1, -1]),
                                      features="layer4", requested="layer4", head="fc",
                                      upsample_mode="bilinear")
    assert all(value.grad_fn is None and not value.requires_grad for value in outputs.values())


@pytest.mark.parametrize("layer", ["", "layer4", "layer4.1", "layer4.1.relu"])
def test_cam_layer_is_the_pools_input_under_any_of_its_names(client, layer):
    image = random_input((3, 64, 64), seed=43)
    (default,) = client.explain(image, model="resnet18", method="cam", targets=[2])
    (named,) = client.explain(image, model="resnet18", method="cam", targets=[2], layer=layer or None)
    np.testing.assert_array_equal(named.attribution, default.attribution)


def test_cam_on_the_demo_model_accepts_its_default_layer(demo_client):
    # features.block4.relu is the demo's default layer and the very tensor its pool reads
    image = random_input((3, 64, 64), seed=44)
    (default,) = demo_client.explain(image, model="demo", method="cam", targets=[1])
    (named,) = demo_client.explain(image, model="demo", method="cam", targets=[1],
                                   layer="features.block4.relu")
    np.testing.assert_array_equal(named.attribution, default.attribution)


@pytest.mark.parametrize(("layer", "code"), [
    ("layer3", "INVALID_ARGUMENT"),  # another shape
    ("layer4.1.bn2", "INVALID_ARGUMENT"),  # the same shape, another tensor (before the add)
    ("layer9", "NOT_FOUND"),
])
def test_cam_refuses_any_other_layer(client, layer, code):
    with pytest.raises(ExplainServeError) as caught:
        client.explain(random_input((3, 64, 64), seed=0), model="resnet18", method="cam", layer=layer)
    assert caught.value.code.name == code
    assert repr(layer) in caught.value.details


@pytest.mark.parametrize(("model", "missing"), [
    ("vgg16", "'classifier.4' (ReLU"),  # three linear layers after the pool, not one
    ("linear", "comes nothing"),  # no pool at all
])
def test_cam_without_a_gap_linear_head_is_a_failed_precondition(client, model, missing):
    size = {"vgg16": 64, "linear": 8}[model]
    with pytest.raises(ExplainServeError) as caught:
        client.explain(random_input((3, size, size), seed=0), model=model, method="cam")
    assert caught.value.code.name == "FAILED_PRECONDITION"
    assert repr(model) in caught.value.details and missing in caught.value.details


def test_cam_refuses_a_model_whose_logits_are_not_its_head_on_the_pooled_maps():
    # The modules have the structure, but the forward doubles the logits: seen only at run time.
    config = tiny_config("doubled", "DoubledLogits")
    with running_server((config,)) as background, Client(background.address, timeout=60) as client:
        with pytest.raises(ExplainServeError) as caught:
            client.explain(random_input((3, 8, 8), seed=0), model="doubled", method="cam")
        assert caught.value.code.name == "FAILED_PRECONDITION"
        assert "'fc'" in caught.value.details
        (gradcam,) = client.explain(random_input((3, 8, 8), seed=0), model="doubled", method="gradcam")
        assert gradcam.attribution.shape == (8, 8)


@pytest.mark.parametrize("method", ["cam", "guided_gradcam", "gradcam"])
def test_unknown_upsampling_is_an_invalid_argument_naming_it(client, method):
    with pytest.raises(ExplainServeError) as caught:
        client.explain(random_input((3, 8, 8), seed=0), model="tiny_cnn", method=method, upsample="cubic")
    assert caught.value.code.name == "INVALID_ARGUMENT"
    assert "'upsample'" in caught.value.details
