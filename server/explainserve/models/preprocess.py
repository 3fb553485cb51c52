"""Decode client images safely and apply a model's preprocessing.

Only PNG, JPEG and WebP are decoded, and the pixel count is checked from the header before any
pixel is decoded, so a decompression bomb costs nothing.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from explainserve.errors import InvalidArgument

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP")


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """Bytes -> RGB PIL image, or InvalidArgument saying what is wrong with them."""
    if not data:
        raise InvalidArgument("input.encoded_image is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
            width, height = image.size
            if width * height > max_pixels:
                raise InvalidArgument(
                    f"image of {width}x{height} = {width * height} pixels exceeds the limit of "
                    f"{max_pixels} pixels"
                )
            image.load()
    except InvalidArgument:
        raise
    except UnidentifiedImageError:
        raise InvalidArgument(
            f"input.encoded_image ({len(data)} bytes, starting {data[:8]!r}) is not a "
            f"{', '.join(ALLOWED_FORMATS)} image"
        ) from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as error:
        raise InvalidArgument(f"input.encoded_image is corrupt or truncated: {error}") from None
    return image.convert("RGB")


def resize_and_crop(image: Image.Image, size: tuple[int, int],
                    max_pixels: int | None = None) -> Image.Image:
    """Scale the shorter side to fit, then centre-crop to (H, W): the torchvision recipe.

    A thin image (200000 x 1) scales up to a huge one (12800000 x 64) before the crop; with
    `max_pixels`, a scaled size above it is refused instead of allocated."""
    height, width = size
    scale = max(height / image.height, width / image.width)
    scaled = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    if max_pixels is not None and scaled[0] * scaled[1] > max_pixels:
        raise InvalidArgument(
            f"image of {image.width}x{image.height} pixels would be resized to "
            f"{scaled[0]}x{scaled[1]} to cover the model's {width}x{height} input, over the "
            f"limit of {max_pixels} pixels; its aspect ratio is too extreme, crop it first")
    if scaled != image.size:
        image = image.resize(scaled, Image.Resampling.BILINEAR)
    left, top = (image.width - width) // 2, (image.height - height) // 2
    return image.crop((left, top, left + width, top + height))


def normalize(image: Image.Image, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """RGB image -> float32 [C, H, W] tensor, (x/255 - mean) / std per channel."""
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    mean_array = np.asarray(mean, dtype=np.float32)
    std_array = np.asarray(std, dtype=np.float32)
    return torch.from_numpy(((pixels - mean_array) / std_array).transpose(2, 0, 1).copy())


def denormalize(tensor: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """float [C, H, W] in model space -> uint8 [H, W, C] picture (clipped to valid pixels).

    In numpy: this runs in threads beside the worker, where a torch operator would start a
    second OpenMP team competing for the worker's cores."""
    values = tensor.detach().cpu().numpy()
    shape = (len(mean), 1, 1)
    pixels = np.clip(values * np.asarray(std, dtype=values.dtype).reshape(shape)
                     + np.asarray(mean, dtype=values.dtype).reshape(shape), 0, 1)
    return (pixels.transpose(1, 2, 0) * 255).round().astype(np.uint8)
