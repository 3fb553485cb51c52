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
    # the preprocessing's per-channel normalisation x = (pixel - mean) / std, pixel in [0, 1]:
    # what "a black image" is in the model's input space
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    # how each layer's output reads as [K, h, w] channel maps (models/layouts.py)
    layer_layouts: Mapping[str, LayerLayout] = field(default_factory=dict)
    # self-attention modules in forward order (outermost where they nest); their outputs may
    # be tuples, so they need not be layers
    attention_modules: tuple[str, ...] = ()
