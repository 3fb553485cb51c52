"""SmoothGrad over any method that declares a gradient kernel, through the real server and
client: SmoothGrad-IG against Captum's NoiseTunnel(IntegratedGradients), the base's own
parameters, and the errors for a base without a gradient kernel."""

from __future__ import annotations

import json

import pytest
import torch
from explainserve.methods.explain.smoothgrad import gradient_bases
from explainserve_client import ExplainServeError
from gradient_family_references import batches_of
from path_references import baseline_for, captum_smoothgrad_ig
from support import random_input, reference_module, relative_l2


def test_every_gradient_method_is_a_base():
    assert {"saliency", "input_x_gradient", "guided_backprop", "deconvnet",
            "integrated_gradients"} <= set(gradient_bases())
    assert "gradcam" not in gradient_bases() and "smoothgrad" not in gradient_bases()


@pytest.mark.parametrize(("model", "shape", "quadrature", "baseline", "squared"), [
    ("tiny_cnn", (3, 8, 8), "gausslegendre", "black", False),
    ("tiny_cnn", (3, 8, 8), "riemann_trapezoid", "white", True),
    ("resnet18", (3, 64, 64), "riemann_middle", "black", False),
])
def test_smoothgrad_ig_is_captums_noise_tunnel_around_integrated_gradients(
        server, client, models_by_name, model, shape, quadrature, baseline, squared):
    config = models_by_name[model]
    image = random_input(shape, seed=51)
    base = {"steps": 5, "quadrature": quadrature, "baseline": baseline}
    params = {"samples": 3, "noise_level": 0.2, "seed": 8, "squared": squared}
    with batches_of(server, model, 1):  # one noisy copy per pass, as NoiseTunnel runs them
        (got,) = client.explain(image, model=model, method="smoothgrad", targets=[2],
                                base="integrated_gradients", base_parameters=json.dumps(base), **params)
    tensor = torch.from_numpy(image)
    expected = captum_smoothgrad_ig(reference_module(config), tensor, baseline_for(config, tensor, baseline),
                                    2, steps=5, method=quadrature, **params)
    assert relative_l2(got.attribution, expected) < 1e-4


def test_base_parameters_reach_the_base(client):
    image = random_input((3, 8, 8), seed=52)
    few, many = (client.explain(image, model="tiny_cnn", method="smoothgrad", targets=[1], samples=2,
                                base="integrated_gradients",
                                base_parameters=json.dumps({"steps": steps}))[0] for steps in (2, 9))
    assert relative_l2(few.attribution, many.attribution) > 1e-6


@pytest.mark.parametrize(("params", "named"), [
    ({"base": "gradcam"}, "'gradcam'"),  # a method without a gradient kernel
    ({"base": "no_such_method"}, "'no_such_method'"),
    ({"base": "integrated_gradients", "base_parameters": json.dumps({"steps": 5000})}, "5000"),
    ({"base": "integrated_gradients", "base_parameters": json.dumps({"baseline": "grey"})}, "'grey'"),
    ({"base": "saliency", "base_parameters": json.dumps({"steps": 3})}, "'steps'"),
    ({"base_parameters": "{steps: 3"}, "'base_parameters'"),
    ({"base_parameters": "[1, 2]"}, "'base_parameters'"),
])
def test_bad_bases_and_base_parameters_are_invalid_arguments_naming_the_value(client, params, named):
    with pytest.raises(ExplainServeError) as caught:
        client.explain(random_input((3, 8, 8), seed=0), model="tiny_cnn", method="smoothgrad",
                       samples=2, **params)
    assert caught.value.code.name == "INVALID_ARGUMENT"
    assert named in caught.value.details
    if params.get("base") in ("gradcam", "no_such_method"):
        assert "integrated_gradients" in caught.value.details  # the valid ones are listed
