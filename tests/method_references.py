"""Helpers for the method tests: random inputs and fast, independent reference networks."""

from __future__ import annotations

import numpy as np
import torch
from explainserve.config import ModelConfig
from explainserve.models.registry import build_module, load_state_dict
from support import reference_module as plain_reference


def random_input(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def reference_module(config: ModelConfig) -> torch.nn.Module:
    """The served network and weights, built independently; a torchvision network is built on
    the meta device first, so vgg16's 130M parameters are not randomly initialised only to be
    overwritten (seconds on a busy 2-core machine)."""
    if not config.arch.startswith("torchvision:"):
        return plain_reference(config)
    with torch.device("meta"):
        module = build_module(config)
    module.load_state_dict(load_state_dict(config.weights), assign=True)
    return module.eval()
