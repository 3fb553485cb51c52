"""What the integrated-gradients, SmoothGrad-IG and XRAI tests compare against: Captum's
IntegratedGradients and NoiseTunnel, and the documented baselines rebuilt by hand."""

from __future__ import annotations

import math

import torch
from captum.attr import IntegratedGradients, NoiseTunnel
from explainserve.config import ModelConfig
from gradient_family_references import our_seed
from torchvision.transforms.v2 import functional as TF

# Captum's trapezoid weights are 1/n (halved at the ends) and sum to 1 - 1/n; ours are
# 1/(n-1) and sum to 1. Its trapezoid attribution times n/(n-1) is the exact rule.
def captum_scale(method: str, steps: int) -> float:
    return steps / (steps - 1) if method == "riemann_trapezoid" else 1.0


def constant_baseline(config: ModelConfig, value: float, shape) -> torch.Tensor:
    """The documented black (0) or white (1) image in the model's normalised space."""
    mean = torch.tensor(config.mean)[:, None, None]
    std = torch.tensor(config.std)[:, None, None]
    return ((value - mean) / std).expand(shape).contiguous()


def blur_baseline(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """The documented blur: a Gaussian of 2 ceil(3 sigma) + 1 taps, reflected borders."""
    size = 2 * math.ceil(3 * sigma) + 1
    return TF.gaussian_blur(image, [size, size], [sigma, sigma])


def noise_baseline(config: ModelConfig, shape, seed: int) -> torch.Tensor:
    """The documented noise: uniform pixels from a CPU generator seeded with `seed`, normalised."""
    pixels = torch.rand(shape, generator=torch.Generator().manual_seed(seed))
    return (pixels - torch.tensor(config.mean)[:, None, None]) / torch.tensor(config.std)[:, None, None]


def baseline_for(config: ModelConfig, image: torch.Tensor, name: str, sigma: float = 5.0,
                 seed: int = 0) -> torch.Tensor:
    if name == "black":
        return constant_baseline(config, 0.0, image.shape)
    if name == "white":
        return constant_baseline(config, 1.0, image.shape)
    if name == "blur":
        return blur_baseline(image, sigma)
    return noise_baseline(config, image.shape, seed)


def captum_ig(module, image: torch.Tensor, baseline: torch.Tensor, target: int, steps: int,
              method: str = "gausslegendre", internal_batch_size: int | None = None):
    """(attribution [C,H,W] on our quadrature's scale, Captum's convergence delta)."""
    attribution, delta = IntegratedGradients(module).attribute(
        image[None], baselines=baseline[None], target=target, n_steps=steps, method=method,
        internal_batch_size=internal_batch_size, return_convergence_delta=True)
    return attribution[0].detach() * captum_scale(method, steps), float(delta[0])


def captum_smoothgrad_ig(module, image, baseline, target, *, samples, noise_level, seed, steps,
                         method="gausslegendre", squared=False) -> torch.Tensor:
    """NoiseTunnel(IntegratedGradients), one sample per call with the global generator seeded
    as our sample i's generator is, so torch.normal draws our noise (as smoothgrad_reference)."""
    sigma = noise_level * float(image.max() - image.min())
    tunnel = NoiseTunnel(IntegratedGradients(module))
    total = torch.zeros_like(image)
    for sample in range(samples):
        with torch.random.fork_rng():
            torch.manual_seed(our_seed(seed, sample))
            total += tunnel.attribute(image[None], nt_type="smoothgrad_sq" if squared else "smoothgrad",
                                      nt_samples=1, stdevs=sigma, target=target, n_steps=steps,
                                      method=method, baselines=baseline[None])[0].detach()
    return total / samples * (captum_scale(method, steps) ** (2 if squared else 1))
