"""The Maximize parameterisations (methods/maximize/parameterization.py): pixels and a
Fourier basis whose blur is the Gaussian's transfer function; no server needed."""

from __future__ import annotations

import pytest
import torch
from explainserve.methods.maximize import parameterization as space
from support import relative_l2


def test_the_fourier_parameterisation_inverts_and_blurs_like_a_gaussian():
    """to_image(from_image(x)) == x, and its blur is the Gaussian's transfer function: a
    blurred impulse is a (circular) Gaussian of the same sigma."""
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    pixels = torch.rand(2, 3, 16, 20, generator=torch.Generator().manual_seed(0)) * 0.9 + 0.05
    image = (pixels - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    param = space.from_image("fourier", image, mean, std)
    assert param.shape == (2, *space.param_shape("fourier", (3, 16, 20)))
    back = space.to_image("fourier", param, (3, 16, 20), mean, std)
    torch.testing.assert_close(back, image, atol=1e-4, rtol=1e-4)
    impulse = torch.zeros(1, 1, 32, 32)
    impulse[0, 0, 16, 16] = 1.0
    spectrum = torch.view_as_real(torch.fft.rfft2(impulse, norm="ortho"))
    sigma = 1.5
    blurred_spectrum = space.blur("fourier", spectrum, sigma, (1, 32, 32)).contiguous()
    blurred = torch.fft.irfft2(torch.view_as_complex(blurred_spectrum), s=(32, 32),
                               norm="ortho")[0, 0]
    offsets = torch.arange(32.0) - 16
    gaussian = torch.exp(-offsets ** 2 / (2 * sigma ** 2))
    expected = gaussian[:, None] * gaussian[None, :]
    torch.testing.assert_close(blurred, expected / expected.sum(), atol=1e-5, rtol=1e-3)
    pixel_blur = space.blur("pixels", impulse, sigma, (1, 32, 32))[0, 0]
    assert float(pixel_blur.sum()) == pytest.approx(1.0, abs=1e-5)
    assert relative_l2(pixel_blur, expected / expected.sum()) < 0.01
