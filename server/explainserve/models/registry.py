"""Load the model repository: build each architecture, load its weights safely, describe it.

Weights come from safetensors or a state_dict read with `torch.load(weights_only=True)`; a
pickled module is never loaded. Layer names are looked up only among `named_modules()`.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import inspect
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from explainserve.config import ConfigError, ModelConfig
from explainserve.errors import not_found
from explainserve import hooks
from explainserve.models.facts import ModelFacts
from explainserve.models import architectures
from explainserve.models.layouts import LayerLayout, infer_layouts, make_layout, patch_grid

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerDescription:
    name: str
    type: str
    output_shape: tuple[int, ...]  # for one input, without the batch dimension
    layout: LayerLayout = LayerLayout()  # how the output reads as [K, h, w] channel maps


@dataclass(frozen=True)
class LoadedModel:
    """A model as loaded on the CPU, before it is copied to the devices."""

    config: ModelConfig
    module: nn.Module
    labels: tuple[str, ...]
    layers: tuple[LayerDescription, ...]
    default_layer: str
    channels_last_works: bool = False  # the forward runs with channels-last weights

    def memory_format(self, device: torch.device) -> torch.memory_format:
        """The layout of the replica on `device` (ModelConfig.memory_format)."""
        return replica_memory_format(self.config.memory_format, self.channels_last_works, device)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (len(self.config.mean), *self.config.input_size)

    @property
    def facts(self) -> ModelFacts:
        return ModelFacts(
            name=self.name, num_classes=self.config.num_classes, input_size=self.input_shape,
            layer_shapes={layer.name: layer.output_shape for layer in self.layers},
            layer_types={layer.name: layer.type for layer in self.layers},
            layer_layouts={layer.name: layer.layout for layer in self.layers},
            mean=tuple(self.config.mean), std=tuple(self.config.std),
            attention_modules=self.attention_modules,
        )

    @property
    def attention_modules(self) -> tuple[str, ...]:
        table = dict(self.module.named_modules())
        return tuple(architectures.attention_modules(table, list(table)))

    def check_layer(self, name: str) -> LayerDescription:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise not_found("layer", name, [l.name for l in self.layers], f" of model {self.name!r}")


def build_module(config: ModelConfig) -> nn.Module:
    kind, _, target = config.arch.partition(":")
    options = dict(config.options)
    if kind == "torchvision":
        if target not in torchvision.models.list_models():
            raise ConfigError(f"model {config.name!r}: unknown torchvision architecture {target!r}")
        try:
            return torchvision.models.get_model(target, weights=None,
                                                num_classes=config.num_classes, **options)
        except TypeError as error:
            raise ConfigError(f"model {config.name!r}: torchvision architecture {target!r} "
                              f"rejects options {sorted(options)}: {error}") from None
    if kind == "timm":
        return architectures.build_timm(config.name, target, config.num_classes, options)
    if kind == "hf":
        return architectures.build_hf(config.name, target, config.num_classes)
    if options:
        raise ConfigError(f"model {config.name!r}: options are for torchvision and timm "
                          f"architectures, not {kind!r}")
    if kind == "python":
        module_name, _, attribute = target.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as error:
            raise ConfigError(f"model {config.name!r}: cannot import {target!r}: {error}") from None
        takes_classes = "num_classes" in inspect.signature(factory).parameters
        return factory(num_classes=config.num_classes) if takes_classes else factory()
    raise ConfigError(
        f"model {config.name!r}: arch {config.arch!r} must start with 'torchvision:', 'timm:', "
        f"'hf:' or 'python:'"
    )


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as error:
            raise ConfigError(f"weights file {path} is not a valid safetensors file: {error}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as error:
        # weights_only refuses pickled modules and code: say so, naming the file, not a traceback.
        reason = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        raise ConfigError(f"weights file {path} is not a safetensors file or a plain state_dict "
                          f"(a pickled module or object is never loaded): {reason}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConfigError(f"weights file {path} does not hold a state_dict")
    return state


def load_model(config: ModelConfig) -> LoadedModel:
    module = build_module(config)
    if config.weights is not None:
        try:
            module.load_state_dict(load_state_dict(config.weights), strict=True)
        except (RuntimeError, OSError, ValueError) as error:
            raise ConfigError(f"model {config.name!r}: weights {config.weights} do not fit: "
                              f"{str(error).strip()[:2000]}") from None
    # A serving replica never trains: eval mode (BatchNorm statistics, no dropout) and frozen
    # parameters, so explanation backward passes compute input or layer gradients only.
    module.eval().requires_grad_(False)
    input_shape = (len(config.mean), *config.input_size)
    layers = declare_layouts(config, describe_layers(module, input_shape), module)
    labels = read_labels(config)
    default_layer = config.default_layer or default_layer_of(module, layers, input_shape)
    if default_layer and default_layer not in {layer.name for layer in layers}:
        raise ConfigError(f"model {config.name!r}: default_layer {default_layer!r} is not a module path")
    channels_last = channels_last_works(module, (len(config.mean), *config.input_size))
    if config.memory_format == "channels_last" and not channels_last:
        raise ConfigError(f"model {config.name!r}: memory_format 'channels_last' was asked for, "
                          f"but the model's forward fails or differs with channels-last weights")
    logger.info("loaded model %s (%s, %d classes, default layer %s, channels-last %s)",
                config.name, config.arch, config.num_classes, default_layer,
                "works" if channels_last else "unusable")
    return LoadedModel(config, module, labels, layers, default_layer, channels_last)


def replica_memory_format(wanted: str, channels_last_works: bool,
                          device: torch.device) -> torch.memory_format:
    """"auto" is channels last on a CPU where the model allows it; otherwise as configured."""
    if wanted == "auto":
        wanted = "channels_last" if device.type == "cpu" and channels_last_works else "contiguous"
    return torch.channels_last if wanted == "channels_last" else torch.preserve_format


def channels_last_works(module: nn.Module, input_shape: tuple[int, int, int]) -> bool:
    """Whether a channels-last copy of the model gives the same logits. A model with 4-D
    weights may still `view` a conv output as if it were contiguous, which fails (or, rarely,
    reads it in the wrong order) once activations are channels last."""
    if not any(p.ndim == 4 for p in module.parameters()):
        return False  # nothing to lay out differently
    probe = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0))
    trial = copy.deepcopy(module).to(memory_format=torch.channels_last)
    try:
        with torch.no_grad():
            expected, got = module(probe), trial(probe)
    except RuntimeError as error:
        logger.info("channels-last forward fails (%s); keeping the contiguous layout", error)
        return False
    return bool(torch.allclose(got, expected, rtol=1e-3, atol=1e-4 * float(expected.abs().max())))


def describe_layers(module: nn.Module, input_shape: tuple[int, int, int]) -> tuple[LayerDescription, ...]:
    """Every named module with a tensor output, in the order the forward pass finishes them."""
    modules = {name: m for name, m in module.named_modules() if name}
    with torch.no_grad(), hooks.capture_outputs(modules) as captured:
        logits = module(torch.zeros(1, *input_shape))
    if logits.ndim != 2:
        raise ConfigError(f"model output has shape {list(logits.shape)}, expected [N, classes]")
    shapes = {name: tuple(captured.outputs[name].shape[1:])
              for name in captured.order if name in captured.outputs}
    layouts = infer_layouts(modules, shapes)
    return tuple(LayerDescription(name, type(modules[name]).__name__, shape, layouts[name])
                 for name, shape in shapes.items())


def declare_layouts(config: ModelConfig, layers: tuple[LayerDescription, ...],
                    module: nn.Module) -> tuple[LayerDescription, ...]:
    """The layouts the model repository declares, checked against each layer's output."""
    by_name = {layer.name: layer for layer in layers}
    table = dict(module.named_modules())
    grid = patch_grid(table, {layer.name: layer.output_shape for layer in layers})
    declared = {}
    for name, declaration in config.layouts:
        if name not in by_name:
            raise ConfigError(f"model {config.name!r}: layouts names layer {name!r}, which is not "
                              f"a module with a tensor output")
        own_grid = (declaration.height, declaration.width) if declaration.height else grid
        try:
            declared[name] = make_layout(declaration.kind, by_name[name].output_shape,
                                         declaration.prefix_tokens, own_grid)
        except ValueError as error:
            raise ConfigError(f"model {config.name!r}: layout of layer {name!r}: {error}") from None
    return tuple(dataclasses.replace(layer, layout=declared.get(layer.name, layer.layout))
                 for layer in layers)


def default_layer_of(module: nn.Module, layers: tuple[LayerDescription, ...],
                     input_shape: tuple[int, int, int]) -> str:
    """Token models: the input of the last block's first LayerNorm (pytorch-grad-cam's advice
    for ViTs: the class token of the last block reads every patch there). Channels-last
    models: the last stage. Others: the last layer with a spatial output; "" for a model
    without one (layer methods then need an explicit layer)."""
    table = dict(module.named_modules())
    stage = architectures.last_channels_last_stage(table, layers)
    if stage:
        return stage
    if any(layer.layout.kind == "tokens" for layer in layers):
        chosen = architectures.last_block_input(module, table, layers, input_shape)
        if chosen:
            return chosen
    spatial = [layer.name for layer in layers if layer.layout.spatial]
    return spatial[-1] if spatial else ""


def read_labels(config: ModelConfig) -> tuple[str, ...]:
    if config.labels is None:
        return tuple(str(index) for index in range(config.num_classes))
    labels = tuple(line.strip() for line in config.labels.read_text().splitlines() if line.strip())
    if len(labels) != config.num_classes:
        raise ConfigError(f"model {config.name!r}: labels file {config.labels} has {len(labels)} "
                          f"labels for {config.num_classes} classes")
    return labels


class ModelRegistry:
    """The loaded models by name."""

    def __init__(self, models: list[LoadedModel]) -> None:
        self._models = {model.name: model for model in models}

    @classmethod
    def load(cls, configs: tuple[ModelConfig, ...]) -> ModelRegistry:
        return cls([load_model(config) for config in configs])

    def get(self, name: str) -> LoadedModel:
        try:
            return self._models[name]
        except KeyError:
            raise not_found("model", name, self.names()) from None

    def names(self) -> list[str]:
        return sorted(self._models)

    def __iter__(self):
        return iter(self._models.values())

