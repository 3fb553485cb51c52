"""The built-in demo model's entry in the model repository (served when no --models is given)."""

from __future__ import annotations

from explainserve.config import BatchingConfig, ModelConfig
from explainserve.models.demo import network as demo


def demo_model_config(batching: BatchingConfig | None = None) -> ModelConfig:
    return ModelConfig(
        name="demo",
        arch="python:explainserve.models.demo:build_demo_model",
        weights=demo.DEMO_WEIGHTS_PATH,
        num_classes=len(demo.DEMO_LABELS_PATH.read_text().split()),
        input_size=(demo.DEMO_INPUT_SIZE, demo.DEMO_INPUT_SIZE),
        mean=tuple(demo.DEMO_MEAN),
        std=tuple(demo.DEMO_STD),
        labels=demo.DEMO_LABELS_PATH,
        default_layer=demo.DEMO_DEFAULT_LAYER,
        batching=batching or BatchingConfig(),
    )
