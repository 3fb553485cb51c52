"""Layer layouts: inference, declarations in the model repository, the refusal of an
ambiguous layer with the declaration to write, and the optional extras."""

from __future__ import annotations

import dataclasses
import sys

import pytest
from explainserve.config import ConfigError, LayoutDeclaration, load_model_repository
from explainserve.models.registry import load_model
from explainserve_client import Client, ExplainServeError
from support import random_input, running_server, tiny_config

AMBIGUOUS = tiny_config("ambiguous", "build_ambiguous", input_size=(7, 7))
AMBIGUOUS = dataclasses.replace(AMBIGUOUS, arch="python:vit_models:build_ambiguous")


def test_inferred_layouts_of_a_channels_last_model():
    layers = {layer.name: layer.layout for layer in load_model(AMBIGUOUS).layers}
    assert layers["conv"].kind == "nchw"  # a convolution proves channels first
    assert layers["norm"].kind == "nhwc"  # nn.LayerNorm over the last dimension
    assert layers["to_last"].kind == "none"  # [7, 7, 7] from a permute: undecidable


def test_an_ambiguous_layer_is_refused_with_the_declaration_to_write_then_works_declared():
    declared = dataclasses.replace(
        AMBIGUOUS, name="declared", layouts=(("to_last", LayoutDeclaration("nhwc")),))
    with running_server((AMBIGUOUS, declared)) as background, Client(background.address) as client:
        image = random_input((3, 7, 7), seed=1)
        with pytest.raises(ExplainServeError) as raised:
            client.explain(image, model="ambiguous", method="gradcam", layer="to_last")
        assert raised.value.code.name == "INVALID_ARGUMENT"
        assert '[models.ambiguous.layouts] "to_last" = { kind = "nchw" }' in raised.value.details
        (got,) = client.explain(image, model="declared", method="gradcam", layer="to_last")
        assert got.attribution.shape == (7, 7)
        layers = {layer.name: layer for layer in client.get_model("declared").layers}
        assert str(layers["to_last"].layout) == "nhwc 7x7x7"


def test_layouts_table_in_the_model_repository(tmp_path):
    repository = tmp_path / "models.toml"
    repository.write_text(
        '[models.vit]\narch = "python:vit_models:build_small_vit"\nnum_classes = 5\n'
        'input_size = 32\n[models.vit.layouts]\n'
        '"encoder.layers.encoder_layer_1" = { kind = "tokens", prefix_tokens = 1 }\n')
    (config,) = load_model_repository(repository)
    layout = {l.name: l.layout for l in load_model(config).layers}["encoder.layers.encoder_layer_1"]
    assert (layout.kind, layout.prefix_tokens, layout.grid) == ("tokens", 1, (4, 4))


@pytest.mark.parametrize(("entry", "message"), [
    ('"x" = { kind = "diagonal" }', "layout of layer 'x' needs kind"),
    ('"x" = { kind = "nhwc", prefix_tokens = 1 }', "for kind 'tokens' only"),
    ('"x" = { kind = "tokens", height = 2 }', "both height and width"),
    ('"x" = { kind = "tokens", colour = 1 }', "unknown keys ['colour']"),
])
def test_a_bad_declaration_stops_start_up_naming_the_layer(tmp_path, entry, message):
    repository = tmp_path / "models.toml"
    repository.write_text('[models.m]\narch = "torchvision:resnet18"\nnum_classes = 2\n'
                          f'input_size = 32\n[models.m.layouts]\n{entry}\n')
    with pytest.raises(ConfigError, match="layer 'x'") as raised:
        load_model_repository(repository)
    assert message in str(raised.value)


@pytest.mark.parametrize(("layer", "declaration", "message"), [
    ("nowhere", LayoutDeclaration("nchw"), "not a module"),
    ("fc", LayoutDeclaration("nhwc"), "needs a 3-D output"),
    ("norm", LayoutDeclaration("tokens", prefix_tokens=1), "needs a [tokens, channels] output"),
])
def test_a_declaration_that_does_not_fit_the_layer_stops_start_up(layer, declaration, message):
    config = dataclasses.replace(AMBIGUOUS, layouts=((layer, declaration),))
    with pytest.raises(ConfigError, match=f"layer '{layer}'") as raised:
        load_model(config)
    assert message in str(raised.value)


@pytest.mark.parametrize(("arch", "package", "extra"), [
    ("timm:deit_tiny_patch16_224", "timm", "timm"), ("hf:/nonexistent", "transformers", "hf")])
def test_a_missing_extra_stops_start_up_naming_it(monkeypatch, arch, package, extra):
    monkeypatch.setitem(sys.modules, package, None)  # import now raises ImportError
    config = dataclasses.replace(AMBIGUOUS, arch=arch)
    with pytest.raises(ConfigError, match=rf"explainserve\[{extra}\]"):
        load_model(config)


def test_an_hf_directory_gives_its_preprocessing_and_serves_logits(tmp_path):
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor
    torch.manual_seed(0)
    ViTForImageClassification(ViTConfig(
        image_size=32, patch_size=8, num_hidden_layers=1, hidden_size=16, num_attention_heads=2,
        intermediate_size=32, num_labels=3)).save_pretrained(tmp_path / "vit")
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.4, 0.5, 0.6],
                      image_std=[0.2, 0.3, 0.4]).save_pretrained(tmp_path / "vit")
    repository = tmp_path / "models.toml"
    repository.write_text('[models.hf]\narch = "hf:vit"\nnum_classes = 3\n')
    (config,) = load_model_repository(repository)
    assert config.input_size == (32, 32)
    assert config.mean == (0.4, 0.5, 0.6) and config.std == (0.2, 0.3, 0.4)
    loaded = load_model(config)
    assert loaded.module(torch.zeros(2, 3, 32, 32)).shape == (2, 3)
    assert {l.name: l.layout.kind for l in loaded.layers}["model.vit.layers.0"] == "tokens"
    wrong = dataclasses.replace(config, num_classes=4)
    with pytest.raises(ConfigError, match="has 3 labels"):
        load_model(wrong)
