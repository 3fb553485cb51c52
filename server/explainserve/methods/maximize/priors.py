"""Image priors and random transformations for activation maximisation and inversion.

Penalties are per row, so rows from different requests can share a batch. The random
transformations (jitter, scale, rotation, noise: lucent's "transformation robustness", Olah
et al. 2017) draw from a generator per row and step, seeded from the request's seed, so a row's
randomness never depends on who else is in its batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

_MASK64 = (1 << 64) - 1
_NOISE_STREAM = 1  # the noise of a step draws from its own stream, apart from the affine draws


def mix_seed(*values: int) -> int:
    """SplitMix64 over the values: a well-spread 63-bit seed from (seed, image, step)."""
    state = 0
    for value in values:
        state = (state + (value & _MASK64) + 0x9E3779B97F4A7C15) & _MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        state = z ^ (z >> 31)
    return state >> 1


def l2_penalty(images: Tensor) -> Tensor:
    """Simonyan et al. 2013 eq. 1's ||I||^2, as a mean over pixels so that lambda does not
    depend on the image size."""
    return images.pow(2).flatten(1).mean(dim=1)


def total_variation(images: Tensor) -> Tensor:
    """Mahendran & Vedaldi 2015 R_{V^beta} with beta = 2: the mean over pixels of the squared
    differences to the right and lower neighbours."""
    down = (images[:, :, 1:, :] - images[:, :, :-1, :]).pow(2).flatten(1).mean(dim=1)
    right = (images[:, :, :, 1:] - images[:, :, :, :-1]).pow(2).flatten(1).mean(dim=1)
    return down + right


def random_affine(seeds: list[int], jitter: int, scale: float, rotate: float,
                  size: tuple[int, int]) -> Tensor:
    """One 2x3 affine matrix per row (affine_grid's normalised coordinates): an integer shift
    of up to `jitter` pixels, a zoom in [1 - scale, 1 + scale] and a turn of up to `rotate`
    degrees, each drawn from that row's own generator on the CPU."""
    height, width = size
    thetas = []
    for seed in seeds:
        draws = torch.rand(4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        shift_x = math.floor(float(draws[0]) * (2 * jitter + 1)) - jitter
        shift_y = math.floor(float(draws[1]) * (2 * jitter + 1)) - jitter
        zoom = 1.0 + scale * (2 * float(draws[2]) - 1)
        angle = math.radians(rotate * (2 * float(draws[3]) - 1))
        cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
        thetas.append([[cos, -sin, 2 * shift_x / width], [sin, cos, 2 * shift_y / height]])
    return torch.tensor(thetas, dtype=torch.float32)


def transform(images: Tensor, seeds: list[int], jitter: int, scale: float, rotate: float,
              noise: float = 0.0) -> Tensor:
    """The images as the model sees them at this step: randomly moved, plus Gaussian noise of
    std `noise` (robustness to noise; it also smooths the objective). The identity when all
    are off, so that a row's gradient is exactly the objective's."""
    if jitter or scale or rotate:
        thetas = random_affine(seeds, jitter, scale, rotate, tuple(images.shape[-2:]))
        grid = F.affine_grid(thetas.to(images.device, images.dtype), list(images.shape),
                             align_corners=False)
        images = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection",
                               align_corners=False)
    if noise:
        generators = [torch.Generator().manual_seed(mix_seed(seed, _NOISE_STREAM)) for seed in seeds]
        draws = torch.stack([torch.randn(images.shape[1:], generator=g) for g in generators])
        images = images + noise * draws.to(images.device, images.dtype)
    return images
