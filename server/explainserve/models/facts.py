"""What the methods layer may know about a model besides running it: its name, classes, input
shape and the shape and type of every layer's output. Built by the model registry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from explainserve.models.layouts import LayerLayout


@dataclass(frozen=True)
class ModelFacts:
    """What an orchestration may know about the model besides running kernels."""

    name: str
    num_classes: int
    input_size: tuple[int, int, int]  # C, H, W
    layer_shapes: Mapping[str, tuple[int, ...]]
    layer_types: Mapping[str, str]
    # how each layer's output reads as [K, h, w] channel maps (models/layouts.py)
    layer_layouts: Mapping[str, LayerLayout] = field(default_factory=dict)
