"""The replica's memory layout: channels last on a CPU where the model allows it."""

from __future__ import annotations

import pytest
import torch
from explainserve.config import ConfigError, ModelConfig, load_model_repository
from explainserve.models.registry import load_model
from explainserve.workers.pool import Replica
from support import tiny_config

CPU = torch.device("cpu")


def config(factory: str, memory_format: str = "auto") -> ModelConfig:
    return tiny_config("m", factory, memory_format=memory_format)


def weight_layout(replica: Replica) -> str:
    weight = next(p for p in replica.module.parameters() if p.ndim == 4)
    return "channels_last" if not weight.is_contiguous() else "contiguous"


def test_auto_lays_a_convolutional_model_out_channels_last_on_a_cpu():
    loaded = load_model(config("build_conv_gap_linear"))
    assert loaded.channels_last_works
    assert weight_layout(Replica(loaded, CPU)) == "channels_last"
    image = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(Replica(loaded, CPU).module(image), loaded.module(image))
    # the loaded model itself, which every replica is copied from, keeps its own layout
    assert next(p for p in loaded.module.parameters() if p.ndim == 4).is_contiguous()


def test_contiguous_keeps_the_models_layout():
    loaded = load_model(config("build_conv_gap_linear", "contiguous"))
    assert weight_layout(Replica(loaded, CPU)) == "contiguous"


def test_a_model_that_views_its_conv_output_stays_contiguous():
    loaded = load_model(config("build_views_conv_output"))
    assert not loaded.channels_last_works
    assert weight_layout(Replica(loaded, CPU)) == "contiguous"
    with pytest.raises(ConfigError, match="channels_last"):
        load_model(config("build_views_conv_output", "channels_last"))


def test_an_unknown_memory_format_names_the_value(tmp_path):
    (tmp_path / "models.toml").write_text('[models.m]\narch = "torchvision:resnet18"\n'
                                          'num_classes = 4\ninput_size = 8\n'
                                          'memory_format = "nhwc"\n')
    with pytest.raises(ConfigError, match="'nhwc'"):
        load_model_repository(tmp_path / "models.toml")
