"""Networks the Embed method tests share: random weights, frozen, in eval mode."""

from __future__ import annotations

import pytest
import torch
import torchvision
from explainserve.models.demo.network import build_demo_model


def frozen(module: torch.nn.Module) -> torch.nn.Module:
    return module.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def resnet18() -> torch.nn.Module:
    torch.manual_seed(0)
    return frozen(torchvision.models.resnet18(num_classes=10))


@pytest.fixture(scope="module")
def demo_network() -> torch.nn.Module:
    """The demo model's architecture with seeded random weights (not the trained ones)."""
    torch.manual_seed(1)
    return frozen(build_demo_model())
