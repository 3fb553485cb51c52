"""Layer-CAM, HiResCAM, Eigen-CAM, Score-CAM and Ablation-CAM through the real server and client,
against pytorch-grad-cam (grad-cam 1.5.7) on resnet18 (random weights) and the demo model, alone
and in batches of 8 concurrent requests; Ablation-CAM's suffix and full-rerun paths; limits.

What is compared: the layer-resolution map each reference's get_cam_image returns, with the
ReLU its BaseCAM applies next (np.maximum(cam, 0)) and BEFORE its scale_cam_image min-max
scaling and resize; our heatmap is that map resized bilinearly and divided by its maximum."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import torch
from explainserve.config import LimitsConfig
from explainserve.methods.explain import ablation_cam
from explainserve.methods.explain.suffix import suffix_above
from explainserve_client import Client, ExplainServeError
from gradient_family_references import batches_of, expected_heatmap, explain_together, layer_of
from pytorch_grad_cam import AblationCAM, EigenCAM, HiResCAM, LayerCAM, ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget
from support import random_input, reference_module, relative_l2, running_server

REFERENCES = {"layer_cam": LayerCAM, "hires_cam": HiResCAM, "eigen_cam": EigenCAM,
              "score_cam": ScoreCAM, "ablation_cam": AblationCAM}
GRADIENTS = ("layer_cam", "hires_cam")
# The layer per (model, method): layer4 for the one-pass methods; layer1 (64 channels) for the
# methods that run one forward per channel on resnet18, in ours and in the reference.
LAYERS = {"resnet18": {"score_cam": "layer1", "ablation_cam": "layer1"}, "demo": {}}
DEFAULT_LAYER = {"resnet18": "layer4", "demo": "features.block4.relu"}
TARGETS = {"resnet18": (3, 0, 7, 1, 9, 4, 2, 5), "demo": (3, 0, 7, 1, 6, 4, 2, 5)}
SHAPE = (3, 64, 64)


def grad_cam_reference(method: str, module, layer: str, images: torch.Tensor, targets, *,
                       target_class=ClassifierOutputTarget) -> torch.Tensor:
    """pytorch-grad-cam's per-layer map for images [N,C,H,W] as ONE batch, after its ReLU and
    before its scaling. Eigen-CAM: EigenCAM's get_2d_projection in float64 (our precision) with
    the sign correction of its get_2d_projection_with_sign_correction (SVD leaves the sign free:
    flip where |min| > |max|)."""
    extra = {"batch_size": 64} if method == "ablation_cam" else {}
    cam = REFERENCES[method](module, [layer_of(module, layer)], **extra)
    try:
        inputs = images.clone().requires_grad_(method in GRADIENTS)
        outputs = cam.activations_and_grads(inputs)
        gradients = None
        if method in GRADIENTS:
            torch.autograd.grad(outputs.gather(1, torch.tensor(list(targets))[:, None]).sum(), inputs)
            gradients = cam.activations_and_grads.gradients[0].numpy()
        activations = cam.activations_and_grads.activations[0].numpy()
        if method == "eigen_cam":
            activations = activations.astype(np.float64)
        raw = cam.get_cam_image(inputs.detach(), layer_of(module, layer),
                                [target_class(t) for t in targets], activations, gradients, False)
    finally:
        cam.activations_and_grads.release()
    if method == "eigen_cam":
        flip = np.abs(raw.min(axis=(1, 2))) > np.abs(raw.max(axis=(1, 2)))
        raw = np.where(flip[:, None, None], -raw, raw)
    return torch.from_numpy(np.maximum(np.asarray(raw, dtype=np.float64), 0))


def check(explanations, expected, targets, upsample="bilinear"):
    for index, (result, reference, target) in enumerate(zip(explanations, expected, targets)):
        assert result.target == target
        assert relative_l2(result.attribution, reference) < 1e-4, index
        heatmap = expected_heatmap(reference, SHAPE[1:], upsample)
        assert relative_l2(result.heatmap, heatmap) < 1e-4, index


@pytest.mark.parametrize("model", ["resnet18", "demo"])
@pytest.mark.parametrize("method", list(REFERENCES))
def test_matches_pytorch_grad_cam_alone_and_in_a_batch_of_8(serving, reference_modules, model, method):
    # Alone is compared with the reference alone, a batch of 8 with the reference's batch of 8
    # (gradient_family_references.check_alone_and_in_a_batch_of_8 says why the size matters).
    background, client = serving(model)
    layer = LAYERS[model].get(method, DEFAULT_LAYER[model])
    targets = TARGETS[model]
    images = [random_input(SHAPE, seed) for seed in range(len(targets))]
    module = reference_modules(model)
    stacked = torch.from_numpy(np.stack(images))
    if method == "ablation_cam":  # pytorch-grad-cam zeroes a channel only where min(A) == 0
        with torch.no_grad():
            activations = layer_outputs_of(module, layer, stacked)
        assert float(activations.flatten(1).min(dim=1).values.abs().max()) == 0.0
    with batches_of(background, model, 1):
        alone = client.explain(images[0], model=model, method=method, targets=[targets[0]], layer=layer)
    check(alone, grad_cam_reference(method, module, layer, stacked[:1], targets[:1]), targets[:1])
    batched, (batches, rows) = explain_together(background, client, model, method, images,
                                                targets, layer=layer)
    assert batches >= 1 and rows == len(images) * batches  # every pass held 8 rows
    check(batched, grad_cam_reference(method, module, layer, stacked, targets), targets)


def layer_outputs_of(module, layer, images):
    captured = []
    handle = layer_of(module, layer).register_forward_hook(lambda m, a, o: captured.append(o))
    try:
        module(images)
    finally:
        handle.remove()
    return captured[0]


def test_score_cam_on_probabilities_matches_the_softmax_target(client, reference_modules):
    image = random_input(SHAPE, seed=11)
    got = client.explain(image, model="resnet18", method="score_cam", targets=[2, 6],
                         layer="layer2", score="probability")
    expected = grad_cam_reference("score_cam", reference_modules("resnet18"), "layer2",
                                  torch.from_numpy(np.stack([image, image])), [2, 6],
                                  target_class=ClassifierOutputSoftmaxTarget)
    check(got, expected, [2, 6])


def test_eigen_cam_does_not_depend_on_the_target(client):
    image = random_input(SHAPE, seed=12)
    first, second = client.explain(image, model="resnet18", method="eigen_cam", targets=[1, 8])
    np.testing.assert_allclose(first.attribution, second.attribution, rtol=1e-6)
    assert (first.target, second.target) == (1, 8)


def test_requests_of_different_methods_together_get_what_they_get_alone(demo_client):
    # Sent at once, their rows share passes (Score-CAM's masked copies use the plain logits
    # kernel, the two Ablation-CAM requests the same suffix); each gets what it gets alone.
    requests = [("score_cam", 0, [1]), ("ablation_cam", 1, [2, 5]), ("eigen_cam", 2, [0]),
                ("score_cam", 3, [4, 0]), ("ablation_cam", 4, [7]), ("layer_cam", 5, [3])]

    def explain(request):
        method, seed, targets = request
        return demo_client.explain(random_input(SHAPE, seed), model="demo", method=method,
                                   targets=targets)

    alone = [explain(request) for request in requests]
    with ThreadPoolExecutor(len(requests)) as pool:
        together = list(pool.map(explain, requests))
    for one, many in zip(alone, together):
        for a, b in zip(one, many):
            assert a.target == b.target
            assert relative_l2(b.attribution, a.attribution) < 1e-5


def test_ablation_cam_without_a_suffix_reruns_the_forward_and_matches_pytorch_grad_cam(
        demo_client, reference_modules, monkeypatch):
    # The fallback path on a model that has a suffix: told there is none, the server reruns the
    # whole forward with the layer's output replaced, which is pytorch-grad-cam's own method.
    monkeypatch.setattr(ablation_cam, "suffix_above", lambda module, layer: None)
    image = random_input(SHAPE, seed=13)
    got = demo_client.explain(image, model="demo", method="ablation_cam", targets=[4, 1])
    expected = grad_cam_reference("ablation_cam", reference_modules("demo"), DEFAULT_LAYER["demo"],
                                  torch.from_numpy(np.stack([image, image])), [4, 1])
    check(got, expected, [4, 1])


def test_ablation_cam_on_a_layer_called_twice_ablates_its_last_call(client, models_by_name):
    # layer4.1.relu runs twice per forward (resnet's BasicBlock), so it has no suffix; its last
    # call returns layer4's output, so full reruns ablating that call give layer4's map. Only
    # to 1e-3: the paths round y_k differently (the rerun recomputes the layers below at
    # another batch size) and (y - y_k) / y magnifies a 1e-7 relative change in y_k by
    # |y / (y - y_k)| ~ 1e3 for a channel that moves the score little.
    module = reference_module(models_by_name["resnet18"])
    assert suffix_above(module, "layer4.1.relu") is None
    assert suffix_above(module, "layer4.0.bn2") is None  # the identity branch goes around it
    assert suffix_above(module, "layer4") is not None and suffix_above(module, "layer3.1") is not None
    image = random_input(SHAPE, seed=13)
    rerun = client.explain(image, model="resnet18", method="ablation_cam", targets=[4, 1],
                           layer="layer4.1.relu")
    suffix = client.explain(image, model="resnet18", method="ablation_cam", targets=[4, 1],
                            layer="layer4")
    for a, b in zip(rerun, suffix):
        assert relative_l2(a.attribution, b.attribution) < 1e-3


def test_the_suffix_computes_what_the_network_computes_above_the_layer(models_by_name):
    module = reference_module(models_by_name["resnet18"])
    images = torch.from_numpy(np.stack([random_input(SHAPE, seed) for seed in range(3)]))
    with torch.no_grad():
        logits = module(images)
        above = suffix_above(module, "layer3")(layer_outputs_of(module, "layer3", images).clone())
    assert torch.equal(above, logits)


@pytest.mark.parametrize("method", ["score_cam", "ablation_cam", "eigen_cam", "layer_cam"])
def test_a_layer_without_a_spatial_form_is_an_invalid_argument_naming_it(client, method):
    with pytest.raises(ExplainServeError) as caught:
        client.explain(random_input(SHAPE), model="resnet18", method=method, layer="avgpool")
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "'avgpool'" in caught.value.details


@pytest.mark.parametrize("method", ["score_cam", "ablation_cam"])
def test_more_channels_than_the_limit_is_an_invalid_argument(models_by_name, method):
    limits = LimitsConfig(max_cam_channels=128)
    with running_server((models_by_name["resnet18"],), limits=limits) as server, \
            Client(server.address, timeout=60) as small:
        with pytest.raises(ExplainServeError) as caught:
            small.explain(random_input(SHAPE), model="resnet18", method=method, layer="layer3")
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "'layer3' has 256 channels" in caught.value.details and "128" in caught.value.details


def test_an_unknown_score_is_an_invalid_argument_naming_it(client):
    with pytest.raises(ExplainServeError) as caught:
        client.explain(random_input(SHAPE), model="resnet18", method="score_cam", score="loss")
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "'score'" in caught.value.details
