"""Baselines x' of path methods (integrated gradients, XRAI), in the model's normalised space.

Sundararajan et al. 2017 (arXiv:1703.01365, sec. 3) ask for a baseline whose score is near zero
and that carries "no signal". Which image that is depends on the task, so several are offered
(Sturmfels et al., "Visualizing the Impact of Feature Attribution Baselines", Distill 2020):

    black, white  the constant image of pixel value 0 or 1, normalised: (v - mean_c) / std_c
    blur          the input blurred by a Gaussian of `blur_sigma` pixels (no edges, same colours)
    noise         uniform pixel noise in [0, 1], normalised, drawn from `seed`
    tensor        an image the caller sends, already normalised (ExplainRequest.baseline)

Every baseline is a function of the row and hashable parameters only, so it can be made on the
worker thread next to the rows that use it.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from explainserve.errors import InvalidArgument

BASELINES = ("black", "white", "blur", "noise", "tensor")


@dataclass(frozen=True)
class Baseline:
    """A named baseline with what it needs to be made (hashable: it is part of a kernel key)."""

    name: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    blur_sigma: float = 5.0
    seed: int = 0
    # "tensor": the caller's image; kernels are grouped by its digest, not by the tensor
    image: Tensor | None = field(default=None, compare=False, repr=False)
    digest: str = ""

    @classmethod
    def sent(cls, image: Tensor | None, mean: tuple[float, ...], std: tuple[float, ...]) -> Baseline:
        """The baseline the caller sent as ExplainRequest.baseline."""
        if image is None:
            raise InvalidArgument("baseline 'tensor' needs the request's baseline tensor "
                                  "(ExplainRequest.baseline, float32 shaped like the input)")
        digest = hashlib.blake2b(image.contiguous().numpy().tobytes(), digest_size=16).hexdigest()
        return cls("tensor", mean, std, image=image, digest=f"{digest}{list(image.shape)}")

    def __post_init__(self) -> None:
        if self.name not in BASELINES:
            raise InvalidArgument(f"unknown baseline {self.name!r}; valid: {list(BASELINES)}")
        if self.name == "tensor" and self.image is None:
            raise InvalidArgument("baseline 'tensor' needs the request's baseline tensor")
        if self.name in ("black", "white") and not (self.mean and self.std):
            raise InvalidArgument(f"baseline {self.name!r} needs the model's normalisation "
                                  "(mean and std), which this model does not declare")

    def _constant(self, value: float, like: Tensor) -> Tensor:
        channels = like.shape[-3]
        if len(self.mean) != channels:
            raise InvalidArgument(f"baseline {self.name!r}: the model normalises {len(self.mean)} "
                                  f"channels but its input has {channels}")
        mean = torch.tensor(self.mean, dtype=like.dtype, device=like.device)
        std = torch.tensor(self.std, dtype=like.dtype, device=like.device)
        return ((value - mean) / std)[:, None, None].expand(like.shape[-3:])

    def make(self, image: Tensor) -> Tensor:
        """The baseline of one image [C, H, W] (or of each image of [N, C, H, W])."""
        if self.name == "black":
            return self._constant(0.0, image).expand_as(image).contiguous()
        if self.name == "white":
            return self._constant(1.0, image).expand_as(image).contiguous()
        if self.name == "blur":
            return blur(image, self.blur_sigma)
        if self.name == "tensor":
            return self.image.to(image.device, image.dtype).expand_as(image).contiguous()
        generator = torch.Generator().manual_seed(self.seed)
        pixels = torch.rand(image.shape[-3:], generator=generator)
        if self.mean and self.std:
            pixels = (pixels - torch.tensor(self.mean)[:, None, None]) / torch.tensor(self.std)[:, None, None]
        return pixels.to(image.device, image.dtype).expand_as(image).contiguous()


def blur(image: Tensor, sigma: float) -> Tensor:
    """A Gaussian blur with a kernel of 2 ceil(3 sigma) + 1 taps and reflected borders; sigma 0
    is the image itself."""
    if sigma <= 0:
        return image.clone()
    size = 2 * math.ceil(3 * sigma) + 1
    limit = 2 * min(image.shape[-2:]) - 1  # reflect padding needs the kernel within the image
    size = min(size, limit if limit % 2 else limit - 1)
    return TF.gaussian_blur(image, [size, size], [sigma, sigma])
