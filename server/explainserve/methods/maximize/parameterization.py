"""How an optimised image is parameterised: plain pixels, or a decorrelated-colour Fourier
spectrum (Olah et al. 2017, "Feature Visualization", Distill, section "Preconditioning").

Both map a parameter tensor to an image in the model's normalised space, and back (for a
start image). Plain pixels are the image itself (Simonyan et al. 2013 optimise I directly);
the Fourier parameterisation scales each frequency by 1/f so that gradient steps are
whitened, decorrelates colour with the square root of the ImageNet colour covariance, and
squashes with a sigmoid, so its images always lie in the valid pixel range.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# Square root of ImageNet's RGB covariance (Olah et al. 2017; the constants lucid publishes),
# scaled so that its largest column has unit norm.
_COLOUR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOUR_SQRT = _COLOUR_SQRT / _COLOUR_SQRT.norm(dim=0).max()
FOURIER_DECAY = 1.0  # power of 1/f: 1 whitens the 1/f^2 power spectrum of natural images
PIXEL_EPSILON = 1e-3  # keeps logit() finite when a start image holds pure black or white

PARAMETERIZATIONS = ("pixels", "fourier")


def param_shape(kind: str, image_shape: tuple[int, int, int]) -> tuple[int, ...]:
    channels, height, width = image_shape
    if kind == "fourier":  # real and imaginary parts of the half spectrum of rfft2
        return (channels, height, width // 2 + 1, 2)
    return image_shape


def frequencies(height: int, width: int, device: torch.device) -> Tensor:
    """|f| in cycles per pixel of each rfft2 coefficient, [H, W//2+1]."""
    fy = torch.fft.fftfreq(height, device=device)[:, None]
    fx = torch.fft.rfftfreq(width, device=device)[None, :]
    return (fx * fx + fy * fy).sqrt()


def _spectrum_scale(height: int, width: int, device: torch.device) -> Tensor:
    """1/f per coefficient (the DC term gets the lowest non-zero frequency's weight)."""
    floor = 1.0 / max(height, width)
    return frequencies(height, width, device).clamp_min(floor).pow(-FOURIER_DECAY)


def _stats(values: tuple[float, ...], like: Tensor) -> Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device)[:, None, None]


def _mix_colours(raw: Tensor, inverse: bool = False) -> Tensor:
    if raw.shape[1] != 3:
        return raw  # decorrelation is defined for RGB only
    matrix = COLOUR_SQRT.to(raw.device, raw.dtype)
    matrix = torch.linalg.inv(matrix) if inverse else matrix
    return torch.einsum("ij,njhw->nihw", matrix, raw)


def to_image(kind: str, param: Tensor, image_shape: tuple[int, int, int],
             mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """Parameters [N, *param_shape] -> images [N, C, H, W] in the model's normalised space."""
    if kind == "pixels":
        return param
    _, height, width = image_shape
    spectrum = torch.view_as_complex(param.contiguous()) * _spectrum_scale(height, width, param.device)
    raw = torch.fft.irfft2(spectrum, s=(height, width), norm="ortho")
    pixels = torch.sigmoid(_mix_colours(raw))
    return (pixels - _stats(mean, pixels)) / _stats(std, pixels)


def from_image(kind: str, images: Tensor, mean: tuple[float, ...],
               std: tuple[float, ...]) -> Tensor:
    """The inverse of to_image (up to clipping to the open pixel range), for start images."""
    if kind == "pixels":
        return images.clone()
    height, width = images.shape[-2:]
    pixels = (images * _stats(std, images) + _stats(mean, images))
    pixels = pixels.clamp(PIXEL_EPSILON, 1 - PIXEL_EPSILON)
    raw = _mix_colours(torch.logit(pixels), inverse=True)
    spectrum = torch.fft.rfft2(raw, norm="ortho") / _spectrum_scale(height, width, images.device)
    return torch.view_as_real(spectrum).contiguous()


def noise(kind: str, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    """Small random start parameters: 0.1 in normalised pixels, 0.01 per Fourier coefficient
    (Olah et al. 2017), so a noise start is a faint texture around the mean image."""
    std = 0.01 if kind == "fourier" else 0.1
    return torch.randn(shape, generator=generator) * std


def blur(kind: str, param: Tensor, sigma: float, image_shape: tuple[int, int, int]) -> Tensor:
    """Gaussian blur of the image a parameter stands for (Yosinski et al. 2015 blur every k
    steps): a separable convolution of the pixels, or for the Fourier parameterisation the
    Gaussian's transfer function exp(-2 pi^2 sigma^2 f^2) applied to the spectrum."""
    if kind == "fourier":
        freqs = frequencies(image_shape[1], image_shape[2], param.device)
        gain = torch.exp(-2 * math.pi ** 2 * sigma ** 2 * freqs ** 2)
        return param * gain[..., None]
    radius = max(1, min(math.ceil(3 * sigma), min(image_shape[1:]) - 1))  # 3 sigma: 99.7%
    offsets = torch.arange(-radius, radius + 1, dtype=param.dtype, device=param.device)
    kernel = torch.exp(-offsets ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    channels = param.shape[1]
    padded = torch.nn.functional.pad(param, (radius, radius, radius, radius), mode="reflect")
    rows = torch.nn.functional.conv2d(padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1),
                                      groups=channels)
    return torch.nn.functional.conv2d(rows, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1),
                                      groups=channels)
