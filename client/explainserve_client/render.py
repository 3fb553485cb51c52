"""Heatmaps to pictures: a perceptual colour map and an overlay, in numpy alone."""

from __future__ import annotations

import numpy as np
from PIL import Image

from .images import encode_png

# Anchor colours of the "turbo"-like map from blue (0) through green to red (1).
_ANCHORS = np.array([
    [48, 18, 59], [65, 69, 171], [70, 117, 237], [57, 162, 252], [27, 207, 212],
    [36, 236, 166], [97, 252, 108], [164, 252, 59], [209, 232, 52], [243, 198, 58],
    [254, 155, 45], [243, 99, 21], [217, 56, 6], [177, 26, 1], [122, 4, 3],
], dtype=np.float32)


def colormap(heatmap: np.ndarray) -> np.ndarray:
    """float [H, W] in [0, 1] -> uint8 [H, W, 3]."""
    position = np.clip(np.nan_to_num(heatmap), 0, 1) * (len(_ANCHORS) - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, len(_ANCHORS) - 1)
    fraction = (position - low)[..., None]
    return (_ANCHORS[low] * (1 - fraction) + _ANCHORS[high] * fraction).round().astype(np.uint8)


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the coloured heatmap over a uint8 [H, W, 3] image of the same size."""
    colours = colormap(heatmap).astype(np.float32)
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colours
    return blended.round().astype(np.uint8)


def heatmap_png(heatmap: np.ndarray) -> bytes:
    return encode_png(Image.fromarray(colormap(heatmap)))


def overlay_png(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.5) -> bytes:
    return encode_png(Image.fromarray(overlay(image, heatmap, alpha)))


def image_png(pixels: np.ndarray) -> bytes:
    """uint8 [H, W] or [H, W, 3] -> PNG bytes."""
    return encode_png(Image.fromarray(pixels))
