"""Small models whose explanations are known in closed form; served through
`arch = "python:tiny_models:<factory>"` (tests/ is on the path)."""

from __future__ import annotations

import time

import torch
from torch import nn


class LinearModel(nn.Module):
    """logits = W x + b on the flattened image: saliency is exactly the weight row W[c]."""

    def __init__(self, num_classes: int = 4, shape: tuple[int, int, int] = (3, 8, 8)) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(int(torch.tensor(shape).prod()), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.flatten(x))


class ConvGapLinear(nn.Module):
    """conv -> ReLU -> GAP -> linear: Grad-CAM and CAM have closed forms here.

    With A = ReLU(conv(x)) of size h x w, y_c = sum_k W[c,k] mean_ij A^k_ij + b_c, so
    dy_c/dA^k_ij = W[c,k] / (h w), alpha_k = W[c,k] / (h w) and Grad-CAM = ReLU(sum_k W[c,k] A^k) / (h w).
    """

    def __init__(self, num_classes: int = 4, channels: int = 6) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, channels, kernel_size=3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.relu(self.conv(x)))))


class RaisesOnNegativeSum(nn.Module):
    """Fails for inputs whose sum is negative: lets tests check per-request fault isolation."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.inner = ConvGapLinear(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x.flatten(1).sum(1) < 0).any()):
            raise ValueError("poisoned sample")
        return self.inner(x)


def build_linear(num_classes: int = 4) -> nn.Module:
    return LinearModel(num_classes)


def build_conv_gap_linear(num_classes: int = 4) -> nn.Module:
    return ConvGapLinear(num_classes)


class SlowModel(nn.Module):
    """ConvGapLinear that sleeps in every forward pass, to keep a worker busy (or calls in
    flight while a test signals the server) in tests."""

    def __init__(self, num_classes: int = 4, seconds: float = 0.4) -> None:
        super().__init__()
        self.inner = ConvGapLinear(num_classes)
        self.seconds = seconds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        return self.inner(x)


def build_slow(num_classes: int = 4) -> nn.Module:
    return SlowModel(num_classes)


def build_sleepy(num_classes: int = 4) -> nn.Module:
    """0.3 s per pass: the lifecycle test's calls stay in flight through a SIGTERM."""
    return SlowModel(num_classes, seconds=0.3)


class GuardedReLU(nn.ReLU):
    """A ReLU that raises on inputs above `limit`: a failure inside a hooked module, after its
    forward pre-hooks ran and before its forward hooks run."""

    limit = 1e4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x.abs() > self.limit).any()):
            raise ValueError("activation overflow")
        return super().forward(x)


class RaisesInsideReLU(ConvGapLinear):
    """ConvGapLinear whose ReLU raises for huge inputs: a forward pass that fails mid-way."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__(num_classes)
        self.relu = GuardedReLU()


class DoubledLogits(ConvGapLinear):
    """The CAM structure by its modules, but the forward doubles the logits afterwards: the
    logits are no longer the head applied to the pooled maps, so CAM must refuse it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * super().forward(x)


class ViewsConvOutput(nn.Module):
    """conv -> `.view` of its output as if contiguous -> linear: a forward that fails once the
    activations are channels last, so the server must keep this model contiguous."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, kernel_size=3, padding=1)
        self.fc = nn.Linear(2 * 8 * 8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.conv(x)
        return self.fc(features.view(features.shape[0], -1))


def build_views_conv_output(num_classes: int = 4) -> ViewsConvOutput:
    return ViewsConvOutput(num_classes)
