"""Shared fixtures: real servers on free loopback ports, reached through the real client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torchvision
from explainserve.app import BackgroundServer
from explainserve.config import ModelConfig, load_model_repository
from explainserve_client import Client
from safetensors.torch import save_file
from support import running_server

torch.set_num_threads(2)


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu",
                     help="device of the servers the tests start in-process: cpu (default), "
                          "cuda or cuda:N (benchmarks/gpu_check.sh); servers a test starts on "
                          "its own device or in a child process keep theirs")


def pytest_configure(config):
    """With --device other than cpu, support.running_server (and so every fixture server)
    starts its servers on that device unless the test asks for one. Patched before the test
    modules are imported, so their `from support import running_server` gets the patched one."""
    device = config.getoption("--device")
    if device == "cpu":
        return
    import support
    plain = support.running_server

    def on_device(models, **options):
        options.setdefault("device", device)
        return plain(models, **options)
    support.running_server = on_device
    globals()["running_server"] = on_device


def _random_weights(path: Path, arch: str, num_classes: int, seed: int) -> Path:
    torch.manual_seed(seed)
    if arch.startswith("torchvision:"):
        module = torchvision.models.get_model(arch.split(":")[1], weights=None, num_classes=num_classes)
    else:
        import importlib
        module_name, attribute = arch.split(":")[1:]
        module = getattr(importlib.import_module(module_name), attribute)(num_classes=num_classes)
    # Random BatchNorm statistics, so eval-mode BatchNorm is not the identity.
    for layer in module.modules():
        if isinstance(layer, torch.nn.BatchNorm2d):
            layer.running_mean.uniform_(-0.5, 0.5)
            layer.running_var.uniform_(0.5, 2.0)
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    return path


# The CPU replicas run channels-last ("auto"), and so do the references (support.py). In that
# layout a convolution's backward rounds according to the layout of the gradient arriving at
# it, which differs between Captum's autograd call (one output per row) and ours (their sum)
# by ~2e-6; random-weight vgg16 has ReLU/max-pool near-ties that turn this into another
# gradient path for 2 of 8 rows. resnet18, the tiny models and the demo model are checked in
# the production layout; vgg16 in the contiguous one, where both calls round alike.
LAYOUTS = {"vgg16": 'memory_format = "contiguous"\n'}


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory) -> tuple[ModelConfig, ...]:
    """resnet18 and vgg16 with random weights, and the closed-form tiny models."""
    root = tmp_path_factory.mktemp("models")
    entries = {
        "resnet18": ("torchvision:resnet18", 10, 64),
        "vgg16": ("torchvision:vgg16", 10, 64),
        "linear": ("python:tiny_models:build_linear", 4, 8),
        "tiny_cnn": ("python:tiny_models:build_conv_gap_linear", 4, 8),
    }
    lines = []
    for seed, (name, (arch, classes, size)) in enumerate(entries.items()):
        weights = _random_weights(root / f"{name}.safetensors", arch, classes, seed)
        lines.append(f'[models.{name}]\narch = "{arch}"\nweights = "{weights.name}"\n'
                     f"num_classes = {classes}\ninput_size = {size}\n{LAYOUTS.get(name, '')}")
    (root / "models.toml").write_text("\n".join(lines))
    return load_model_repository(root / "models.toml")


@pytest.fixture(scope="session")
def models_by_name(model_repository) -> dict[str, ModelConfig]:
    return {config.name: config for config in model_repository}


@pytest.fixture(scope="session")
def server(model_repository) -> Iterator[BackgroundServer]:
    """One shared server with the torchvision and tiny models."""
    with running_server(model_repository) as background:
        yield background


@pytest.fixture(scope="session")
def demo_server() -> Iterator[BackgroundServer]:
    """One shared server with the built-in demo model (trained weights, 64x64, 8 shapes)."""
    from explainserve.models.demo.repository import demo_model_config
    with running_server((demo_model_config(),)) as background:
        yield background


def _connected(background: BackgroundServer) -> Iterator[Client]:
    with Client(background.address, timeout=120) as connection:
        yield connection


@pytest.fixture
def client(server) -> Iterator[Client]:
    yield from _connected(server)


@pytest.fixture
def demo_client(demo_server) -> Iterator[Client]:
    yield from _connected(demo_server)


@pytest.fixture(scope="session")
def star_png() -> bytes:
    """A 64x64 star from the demo model's own data generator, as PNG bytes."""
    from explainserve.models.demo.shapes import draw_shape
    from explainserve_client.render import image_png
    return image_png(draw_shape("star", seed=3))


