"""Helpers tests import: a real server on a free port, and independent reference models."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from explainserve.app import BackgroundServer
from explainserve.config import ModelConfig, ServerConfig
from explainserve.models.registry import (build_module, channels_last_works, load_state_dict,
                                          replica_memory_format)


@contextlib.contextmanager
def running_server(models: tuple[ModelConfig, ...], **options) -> Iterator[BackgroundServer]:
    """A real server on a free loopback port (port 0), stopped on exit."""
    settings = {"host": "127.0.0.1", "port": 0, "metrics_port": None, "device": "cpu", **options}
    config = ServerConfig(models=models, **settings)
    with BackgroundServer(config) as server:
        yield server


def reference_module(config: ModelConfig) -> torch.nn.Module:
    """The same network and weights as the server loads, built independently for references,
    and laid out in memory as the server's CPU replica is (channels last where it works): the
    layout picks other convolution kernels, whose float32 rounding can flip a near-tie in a
    random network's ReLU or max-pool and so change a gradient path. The methods' math does
    not depend on the layout."""
    module = build_module(config)
    if config.weights is not None:
        module.load_state_dict(load_state_dict(config.weights))
    module.eval()
    works = channels_last_works(module, (len(config.mean), *config.input_size))
    return module.to(memory_format=replica_memory_format(config.memory_format, works,
                                                         torch.device("cpu")))


def relative_l2(actual, expected) -> float:
    """||a - e|| / ||e||, the error measure the exactness tests bound."""
    actual = torch.as_tensor(actual, dtype=torch.float64)
    expected = torch.as_tensor(expected, dtype=torch.float64)
    return float((actual - expected).norm() / expected.norm().clamp_min(1e-30))
