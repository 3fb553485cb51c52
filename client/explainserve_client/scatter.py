"""A scatter plot of a 2-D projection drawn with PIL alone (no matplotlib): points coloured by
class with a legend, or small thumbnails of the images themselves, as in the seeds' t-SNE
figure of FC7 codes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from .images import encode_png

# Tableau's 10 categorical colours, then 10 lighter ones: distinct for up to 20 classes.
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
           (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
           (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229))
MARGIN = 24
LEGEND_WIDTH = 150


def class_colour(label: int) -> tuple[int, int, int]:
    return PALETTE[label % len(PALETTE)] if label >= 0 else (60, 60, 60)


def _canvas_positions(points: np.ndarray, side: int) -> np.ndarray:
    """Scale the first two coordinates into [MARGIN, side - MARGIN], keeping the aspect ratio."""
    xy = np.asarray(points, dtype=np.float64)[:, :2]
    low, high = xy.min(axis=0), xy.max(axis=0)
    scale = (side - 2 * MARGIN) / max(float((high - low).max()), 1e-12)
    return (xy - low) * scale + MARGIN


def scatter_png(points: np.ndarray, labels: Sequence[int] | None = None,
                names: Sequence[str] | None = None, thumbnails: Sequence[np.ndarray] | None = None,
                size: int = 900, thumbnail_size: int = 28, title: str = "") -> bytes:
    """PNG of points [N, >=2]. labels colour the points (and frame the thumbnails); names label
    the legend entries by class index; thumbnails (uint8 [h, w, 3] per point) are pasted at
    their points instead of dots."""
    count = len(points)
    labels = list(labels) if labels is not None else [-1] * count
    legend = sorted({int(label) for label in labels if label >= 0})
    image = Image.new("RGB", (size + (LEGEND_WIDTH if legend else 0), size), "white")
    draw = ImageDraw.Draw(image)
    positions = _canvas_positions(points, size) if count else np.zeros((0, 2))
    for index, (x, y) in enumerate(positions):
        colour = class_colour(int(labels[index]))
        if thumbnails is not None:
            thumb = Image.fromarray(np.asarray(thumbnails[index])).convert("RGB")
            thumb = thumb.resize((thumbnail_size, thumbnail_size), Image.Resampling.BILINEAR)
            left, top = int(x - thumbnail_size / 2), int(y - thumbnail_size / 2)
            image.paste(thumb, (left, top))
            draw.rectangle((left - 1, top - 1, left + thumbnail_size, top + thumbnail_size), outline=colour)
        else:
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colour)
    for row, label in enumerate(legend):
        top = MARGIN + row * 18
        draw.rectangle((size + 8, top, size + 20, top + 12), fill=class_colour(label))
        text = names[label] if names is not None and label < len(names) else str(label)
        draw.text((size + 26, top), text, fill="black")
    if title:
        draw.text((MARGIN, 6), title, fill="black")
    return encode_png(image)
