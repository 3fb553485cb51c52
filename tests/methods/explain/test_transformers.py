"""Layer methods on transformers through the real server and client: Grad-CAM and Grad-CAM++
on torchvision ViT and Swin, timm DeiT and Swin and a Hugging Face ViT (random weights, small
sizes) equal pytorch-grad-cam's GradCAM with the reshape_transform its README gives for each
(Grad-CAM++: eq. 19 by hand, without pytorch-grad-cam's epsilon), alone and in a batch of 8;
channels-last stages answer [h, w] maps; GELU models refuse the ReLU rules; hooks are gone."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from explainserve.config import ModelConfig
from explainserve.models.registry import build_module
from explainserve_client import Client, ExplainServeError
from gradient_family_references import explain_together
from pytorch_grad_cam import GradCAM
from safetensors.torch import save_file
from support import assert_no_hooks, random_inputs, reference_module, relative_l2, running_server


def tokens_to_maps(prefix: int, height: int, width: int):
    """pytorch-grad-cam's README reshape_transform for ViT/DeiT: drop the class token(s),
    [B, h*w, C] -> [B, C, h, w]."""
    def reshape(tensor):
        result = tensor[:, prefix:, :].reshape(tensor.size(0), height, width, tensor.size(2))
        return result.transpose(2, 3).transpose(1, 2)
    return reshape


def channels_last_to_maps(tensor):
    """Its README's Swin transform for [B, h, w, C] outputs: channels to dimension 1."""
    return tensor.permute(0, 3, 1, 2)


@dataclasses.dataclass(frozen=True)
class Case:
    config: ModelConfig
    layer: str
    reshape: object
    grid: tuple[int, int]


def _with_weights(config: ModelConfig, directory) -> ModelConfig:
    """The architecture built once, its (re-initialised) head saved, so the server and the
    reference load the same weights."""
    module = build_module(config)
    head = [m for m in module.modules() if isinstance(m, torch.nn.Linear)][-1]
    generator = torch.Generator().manual_seed(11)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * 0.2)
    path = directory / f"{config.name}.safetensors"
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    return dataclasses.replace(config, weights=path)


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    from transformers import ViTConfig, ViTForImageClassification
    directory = tmp_path_factory.mktemp("transformers")
    torch.manual_seed(7)
    hf_dir = directory / "hf_vit"
    ViTForImageClassification(ViTConfig(
        image_size=32, patch_size=8, num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
        intermediate_size=64, num_labels=5)).save_pretrained(hf_dir)
    swin_options = (("depths", (2, 2)), ("embed_dim", 16), ("img_size", 64), ("num_heads", (1, 2)),
                    ("window_size", 4))
    return {
        "tv_vit": Case(ModelConfig("tv_vit", "python:vit_models:build_small_vit", None, 5, (32, 32)),
                       "encoder.layers.encoder_layer_1.ln_1", tokens_to_maps(1, 4, 4), (4, 4)),
        "tv_swin": Case(ModelConfig("tv_swin", "python:vit_models:build_small_swin", None, 5, (64, 64)),
                        "features.3", channels_last_to_maps, (8, 8)),
        "deit": Case(_with_weights(ModelConfig(
            "deit", "timm:deit_tiny_patch16_224", None, 5, (32, 32),
            options=(("depth", 2), ("img_size", 32), ("patch_size", 8))), directory),
            "blocks.1.norm1", tokens_to_maps(1, 4, 4), (4, 4)),
        "timm_swin": Case(_with_weights(ModelConfig(
            "timm_swin", "timm:swin_tiny_patch4_window7_224", None, 5, (64, 64),
            options=swin_options), directory),
            "layers.1.blocks.1.norm1", channels_last_to_maps, (8, 8)),
        "hf_vit": Case(ModelConfig("hf_vit", f"hf:{hf_dir}", None, 5, (32, 32),
                                   mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
                       "model.vit.layers.1.layernorm_before", tokens_to_maps(1, 4, 4), (4, 4)),
    }


@pytest.fixture(scope="module")
def serving(cases):
    with running_server(tuple(case.config for case in cases.values())) as background:
        with Client(background.address, timeout=120) as client:
            yield background, client


def layer_of(module, name):
    return dict(module.named_modules())[name]


def reference_maps(module, case: Case, images: torch.Tensor, targets: list[int], plus_plus: bool):
    """pytorch-grad-cam's activations and gradients at the layer, through its reshape_transform;
    Grad-CAM: its own get_cam_image; Grad-CAM++: eq. 19 by hand, with no epsilon."""
    cam = GradCAM(module, [layer_of(module, case.layer)], reshape_transform=case.reshape)
    try:
        inputs = images.clone().requires_grad_(True)
        outputs = cam.activations_and_grads(inputs)
        torch.autograd.grad(outputs.gather(1, torch.tensor(targets)[:, None]).sum(), inputs)
        activations = cam.activations_and_grads.activations[0].double()
        gradients = cam.activations_and_grads.gradients[0].double()
        if plus_plus:
            squared = gradients ** 2
            denominator = 2 * squared + activations.sum(dim=(2, 3), keepdim=True) * squared * gradients
            alphas = torch.where(gradients != 0, squared / torch.where(denominator != 0, denominator, 1.0), 0.0)
            weights = (alphas * F.relu(gradients)).sum(dim=(2, 3))
            raw = torch.einsum("nk,nkhw->nhw", weights, activations).numpy()
        else:
            raw = cam.get_cam_image(inputs, layer_of(module, case.layer), None,
                                    activations.numpy(), gradients.numpy())
    finally:
        cam.activations_and_grads.release()
    return np.maximum(raw, 0)


MODELS = ("tv_vit", "tv_swin", "deit", "timm_swin", "hf_vit")


@pytest.mark.parametrize("method", ["gradcam", "gradcam_plus_plus"])
@pytest.mark.parametrize("model", MODELS)
def test_cam_matches_pytorch_grad_cam_alone_and_in_a_batch_of_8(cases, serving, model, method):
    background, client = serving
    case = cases[model]
    module = reference_module(case.config)
    images = random_inputs(8, (3, *case.config.input_size), seed=3)
    targets = [0, 1, 2, 3, 4, 0, 1, 2]
    (alone,) = client.explain(images[0], model=model, method=method, targets=[targets[0]],
                              layer=case.layer)
    batched, _ = explain_together(background, client, model, method, images, targets, layer=case.layer)
    stacked = torch.from_numpy(np.stack(images))
    expected_alone = reference_maps(module, case, stacked[:1], targets[:1], method != "gradcam")
    expected = reference_maps(module, case, stacked, targets, method != "gradcam")
    for got, want in [(alone, expected_alone[0]), *zip(batched, expected)]:
        assert got.attribution.shape == case.grid  # the native map is on the layer's [h, w]
        assert got.heatmap.shape == case.config.input_size
        assert relative_l2(got.attribution, want) < 1e-4, (model, method)
    assert len({float(r.score) for r in batched}) > 1  # the classes' logits differ
    for worker in background.server._pool.workers:
        assert_no_hooks(worker.replicas[model].module, where=f"{model}.")


def test_layouts_and_default_layers_reported_by_get_model(cases, serving):
    _, client = serving
    expected_default = {"tv_vit": "encoder.layers.encoder_layer_0", "tv_swin": "features.3",
                        "deit": "blocks.0", "timm_swin": "layers.1.blocks",
                        "hf_vit": "model.vit.layers.0"}
    for name, default in expected_default.items():
        description = client.get_model(name)
        assert description.default_layer == default, name
        layers = {layer.name: layer for layer in description.layers}
        layout = layers[cases[name].layer].layout
        assert (layout.height, layout.width) == cases[name].grid, name
        assert layout.kind == ("nhwc" if "swin" in name else "tokens"), name
        if layout.kind == "tokens":
            assert layout.prefix_tokens == 1


def test_swin_final_norm_gives_an_h_by_w_map(serving):
    # torchvision Swin's `norm` is a LayerNorm over [h, w, C]: read as [K, h, w] it gave a
    # [w, C] map; read through its nhwc layout it is [h, w].
    _, client = serving
    image = random_inputs(1, (3, 64, 64), seed=9)[0]
    (got,) = client.explain(image, model="tv_swin", method="gradcam", layer="norm", targets=[1])
    assert got.attribution.shape == (8, 8)


@pytest.mark.parametrize("method", ["guided_backprop", "deconvnet", "guided_gradcam"])
def test_relu_rules_refuse_a_gelu_model_naming_its_activations(serving, method):
    _, client = serving
    image = random_inputs(1, (3, 32, 32), seed=1)[0]
    with pytest.raises(ExplainServeError) as raised:
        client.explain(image, model="deit", method=method, targets=[0])
    assert raised.value.code.name == "FAILED_PRECONDITION"
    assert "GELU" in raised.value.details and "nn.ReLU" in raised.value.details
