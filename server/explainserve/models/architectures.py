"""Architectures from the optional extras (timm, Hugging Face transformers), and the structure
of transformer and channels-last models the default layer is read from."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from explainserve import hooks
from explainserve.config import ConfigError


EXTRAS = {"timm": "timm", "transformers": "hf"}  # import name -> explainserve extra


def _optional(name: str, model: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        raise ConfigError(f"model {model!r} needs the {name!r} package: install the "
                          f"'{EXTRAS[name]}' extra (pip install 'explainserve[{EXTRAS[name]}]')") from None


def build_timm(model: str, name: str, num_classes: int, options: dict) -> nn.Module:
    timm = _optional("timm", model)
    if name not in timm.list_models():
        raise ConfigError(f"model {model!r}: unknown timm architecture {name!r}")
    try:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, **options)
    except TypeError as error:
        raise ConfigError(f"model {model!r}: timm architecture {name!r} rejects options "
                          f"{sorted(options)}: {error}") from None


class HuggingFaceLogits(nn.Module):
    """A transformers image classifier whose forward returns its output's `logits`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.model(pixel_values=pixel_values).logits


def build_hf(model: str, directory: str, num_classes: int) -> nn.Module:
    transformers = _optional("transformers", model)
    path = Path(directory)
    if not (path / "config.json").is_file():
        raise ConfigError(f"model {model!r}: {path} is not a directory saved with save_pretrained "
                          f"(it has no config.json)")
    try:
        loaded = transformers.AutoModelForImageClassification.from_pretrained(
            str(path), local_files_only=True)
    except (OSError, ValueError) as error:
        raise ConfigError(f"model {model!r}: cannot load {path}: {str(error)[:300]}") from None
    if loaded.config.num_labels != num_classes:
        raise ConfigError(f"model {model!r}: {path} has {loaded.config.num_labels} labels, the "
                          f"model repository says num_classes = {num_classes}")
    return HuggingFaceLogits(loaded)


def is_attention(module: nn.Module) -> bool:
    """The self-attention forms the attention methods know (methods/explain/attention_forms.py)."""
    return (isinstance(module, nn.MultiheadAttention)
            or (isinstance(getattr(module, "qkv", None), nn.Linear) and hasattr(module, "num_heads"))
            or all(isinstance(getattr(module, p, None), nn.Linear)
                   for p in ("q_proj", "k_proj", "v_proj", "o_proj")))


def attention_modules(table: Mapping[str, nn.Module], order: Sequence[str]) -> list[str]:
    """The self-attention modules in forward order (outermost where they nest)."""
    found = [name for name in order if name in table and is_attention(table[name])]
    return [n for n in found if not any(n.startswith(f"{o}.") for o in found)]


def last_block_input(module: nn.Module, table: Mapping[str, nn.Module], layers: Sequence,
                     input_shape: tuple[int, int, int]) -> str:
    """The layer whose output is the input of the last transformer block's first LayerNorm:
    the module, among those returning that very tensor, that finishes last. The LayerNorm
    itself when no module returns it (a functional op in between); "" without attention."""
    names = [layer.name for layer in layers]
    attentions = attention_modules(table, names) or [
        n for n, m in table.items() if n and is_attention(m)]
    if not attentions:
        return ""
    block = attentions[-1].rpartition(".")[0]
    norms = [n for n in names if n.startswith(f"{block}.") and isinstance(table[n], nn.LayerNorm)]
    if not norms:
        return ""
    described = {n: table[n] for n in names}
    with torch.no_grad(), hooks.capture_outputs(described) as captured, \
            hooks.capture_inputs({norms[0]: table[norms[0]]}) as inputs:
        module(torch.zeros(1, *input_shape))
    wanted = inputs.get(norms[0])
    same = [n for n in captured.order if captured.outputs.get(n) is wanted]
    return same[-1] if same else norms[0]


def last_channels_last_stage(table: Mapping[str, nn.Module], layers: Sequence) -> str:
    """The last stage of a channels-last model: the last module whose two or more children
    are blocks of one type with the stage's own [h, w, K] output (Swin's `features.7`)."""
    by_name = {layer.name: layer for layer in layers}
    stages = []
    for layer in layers:
        if layer.layout.kind != "nhwc":
            continue
        children = [f"{layer.name}.{c}" for c, _ in table[layer.name].named_children()]
        if (len(children) >= 2 and all(c in by_name for c in children)
                and len({type(table[c]) for c in children}) == 1
                and all(by_name[c].layout.kind == "nhwc"
                        and by_name[c].output_shape == layer.output_shape for c in children)):
            stages.append(layer.name)
    return stages[-1] if stages else ""
