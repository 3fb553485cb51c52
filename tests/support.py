"""Helpers tests import (tests/ is on the import path): the repository's folders, a real server
on a free port, random inputs, independent reference networks, what a forward hook sees, and
the batch counters the server keeps."""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from explainserve.app import BackgroundServer
from explainserve.config import ModelConfig, ServerConfig
from explainserve.models.registry import (build_module, channels_last_works, load_state_dict,
                                          replica_memory_format)
from explainserve_client import Client, ExplainServeError
from prometheus_client import REGISTRY
from torch import nn

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

# Every per-module hook dictionary a torch.nn.Module keeps, and the global ones.
HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
              "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs",
              "_forward_hooks_always_called")
GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                "_global_backward_pre_hooks")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_server(models: tuple[ModelConfig, ...], **options) -> Iterator[BackgroundServer]:
    """A real server on a free loopback port (port 0), stopped on exit."""
    settings = {"host": "127.0.0.1", "port": 0, "metrics_port": None, "device": "cpu", **options}
    config = ServerConfig(models=models, **settings)
    with BackgroundServer(config) as server:
        yield server


def explain_concurrently(address: str, inputs: list, model: str, method: str = "gradcam",
                         targets: Sequence[int] | None = None) -> list:
    """Send every input at once, each from its own thread and connection (target i for input
    i, or the predicted class); the results in input order, or the ExplainServeError raised."""
    def one(index_image):
        index, image = index_image
        with Client(address, timeout=60) as client:
            try:
                return client.explain(image, model=model, method=method,
                                      targets=None if targets is None else [targets[index]])
            except ExplainServeError as error:
                return error
    with ThreadPoolExecutor(len(inputs)) as pool:
        return list(pool.map(one, enumerate(inputs)))


def tiny_config(name: str, factory: str = "build_conv_gap_linear", **fields) -> ModelConfig:
    """A model of tests/tiny_models.py: 4 classes, 8x8 inputs, no weights file unless given."""
    settings = {"weights": None, "num_classes": 4, "input_size": (8, 8), **fields}
    return ModelConfig(name=name, arch=f"python:tiny_models:{factory}", **settings)


def random_input(shape: Sequence[int], seed: int = 0) -> np.ndarray:
    """A float32 array of standard normal values, the same for the same seed."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def random_inputs(count: int, shape: Sequence[int], seed: int = 0) -> list[np.ndarray]:
    """`count` different float32 arrays drawn one after the other from one seeded generator."""
    generator = np.random.default_rng(seed)
    return [generator.standard_normal(shape).astype(np.float32) for _ in range(count)]


def reference_module(config: ModelConfig) -> nn.Module:
    """The same network and weights as the server loads, built independently for references,
    and laid out in memory as the server's CPU replica is (channels last where it works): the
    layout picks other convolution kernels, whose float32 rounding can flip a near-tie in a
    random network's ReLU or max-pool and so change a gradient path. The methods' math does
    not depend on the layout. A torchvision network with weights is built on the meta device
    first, so vgg16's 130M parameters are not randomly initialised only to be overwritten
    (seconds on a busy 2-core machine)."""
    if config.arch.startswith("torchvision:") and config.weights is not None:
        with torch.device("meta"):
            module = build_module(config)
        module.load_state_dict(load_state_dict(config.weights), assign=True)
    else:
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


def as_batch(images) -> torch.Tensor:
    """A float tensor [N, C, H, W] from one [C, H, W] array, a list of them, or a tensor."""
    if isinstance(images, torch.Tensor):
        return images if images.ndim == 4 else images[None]
    if isinstance(images, np.ndarray):
        return torch.from_numpy(images if images.ndim == 4 else images[None])
    return torch.from_numpy(np.stack(images))


def layer_outputs(module: nn.Module, layers: Sequence[str], images
                  ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """What a plain forward hook sees at each named layer on the layer's LAST call, cloned at
    once (a later in-place op, like resnet's `out += identity` after bn2 or an in-place ReLU,
    must not change it), and the logits; no autograd graph."""
    table = dict(module.named_modules())
    seen: dict[str, torch.Tensor] = {}
    handles = [table[name].register_forward_hook(
        lambda _module, _args, output, name=name: seen.__setitem__(name, output.detach().clone()))
        for name in layers]
    try:
        with torch.no_grad():
            logits = module(as_batch(images))
    finally:
        for handle in handles:
            handle.remove()
    return seen, logits


def assert_no_hooks(module: nn.Module, where: str = "") -> None:
    """No hook of any kind on `module` or any of its submodules, and no global module hook."""
    for name, submodule in module.named_modules():
        for hooks in HOOK_DICTS:
            assert not getattr(submodule, hooks, {}), f"{hooks} left on {where}{name or '<root>'}"
    for hooks in GLOBAL_HOOKS:
        assert not getattr(torch.nn.modules.module, hooks), hooks


def batch_stats(model: str) -> tuple[float, float]:
    """(number of batches, rows in them) the servers in this process have run for `model`
    so far, from the batch-size histogram."""
    labels = {"model": model}
    return (REGISTRY.get_sample_value("explainserve_batch_size_count", labels) or 0.0,
            REGISTRY.get_sample_value("explainserve_batch_size_sum", labels) or 0.0)


def load_script(path: Path, name: str) -> ModuleType:
    """Import a script that is not on the import path (proto/docs.py, benchmarks/tables.py)
    as module `name`; registered in sys.modules, where dataclasses look their module up."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
