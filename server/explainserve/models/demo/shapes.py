"""Synthetic 64x64 shape images with ground-truth masks, for the built-in demo model.

Numpy and PIL only, so the generator can be used by clients and benchmarks without torch.
Every object comes with its boolean mask, which is what lets us score explanations (does the
saliency fall on the object?) instead of just eyeballing them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

CLASS_NAMES: tuple[str, ...] = (
    "circle", "square", "triangle", "star", "cross", "ring", "hexagon", "heart")
IMAGE_SIZE = 64
MIN_DIAMETER, MAX_DIAMETER = 18.0, 34.0
SUPERSAMPLE = 4  # draw at 4x and box-downsample: anti-aliased edges, sub-pixel positions
MIN_COLOUR_DISTANCE = 90.0  # RGB distance object vs. background underneath: always visible
OBJECT_GAP = 2.0  # pixels between the circumcircles of two objects, so masks never touch
MAX_PLACEMENT_TRIES = 1000


@dataclass(frozen=True, eq=False)  # eq=False: element-wise array comparison has no truth value
class Sample:
    image: np.ndarray  # uint8 [64, 64, 3]
    labels: tuple[int, ...]  # 1 or 2 distinct class indices
    masks: tuple[np.ndarray, ...]  # bool [64, 64], one per label, pairwise disjoint


def _regular_polygon(vertices: int, start_deg: float = 90.0) -> np.ndarray:
    angles = np.deg2rad(start_deg) + 2 * np.pi * np.arange(vertices) / vertices
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star(points: int = 5, inner_radius: float = 0.45) -> np.ndarray:
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner_radius)
    return _regular_polygon(2 * points) * radii[:, None]


def _cross(half_width: float = 0.32) -> np.ndarray:
    w = half_width
    quarter = np.array([[w, 1.0], [w, w], [1.0, w]])  # clockwise corner, turned clockwise
    turns = [quarter @ np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
             for a in -np.pi / 2 * np.arange(4)]
    return np.concatenate(turns)


def _heart(points: int = 64) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, points, endpoint=False)  # the classic parametric heart
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return np.stack([x, y], axis=1)


def _shape(outline: np.ndarray, *holes: np.ndarray) -> tuple[np.ndarray, ...]:
    """Centre on the outline's bounding box and scale to circumradius 1, so 'diameter' means
    the same for every class and placement only has to reason about circumcircles."""
    centre = (outline.min(axis=0) + outline.max(axis=0)) / 2
    scale = np.linalg.norm(outline - centre, axis=1).max()
    return tuple((polygon - centre) / scale for polygon in (outline, *holes))


# Each class is a filled outline followed by holes (only the ring has one).
_OUTLINES: dict[str, tuple[np.ndarray, ...]] = {
    "circle": _shape(_regular_polygon(64)),
    "square": _shape(_regular_polygon(4, 45.0)),
    "triangle": _shape(_regular_polygon(3)),
    "star": _shape(_star()),
    "cross": _shape(_cross()),
    "ring": _shape(_regular_polygon(64), 0.55 * _regular_polygon(64)),
    "hexagon": _shape(_regular_polygon(6)),
    "heart": _shape(_heart()),
}


def _background(rng: np.random.Generator) -> np.ndarray:
    """Colour gradient in a random direction plus faint stripes: texture the model must ignore."""
    ys, xs = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE] / (IMAGE_SIZE - 1)
    gradient_angle, stripe_angle = rng.uniform(0, 2 * np.pi, size=2)
    along = (xs * np.cos(gradient_angle) + ys * np.sin(gradient_angle) + 1) / 2
    start, end = rng.uniform(0, 255, size=(2, 3))
    image = start + (end - start) * along[..., None]
    stripe_phase = xs * np.cos(stripe_angle) + ys * np.sin(stripe_angle)
    stripes = rng.uniform(0, 12) * np.sin(
        2 * np.pi * rng.uniform(2, 8) * stripe_phase + rng.uniform(0, 2 * np.pi))
    return image + stripes[..., None]


def _coverage(class_name: str, centre: np.ndarray, radius: float, angle: float) -> np.ndarray:
    """Fraction of each pixel covered by the shape, float32 [64, 64] in [0, 1]."""
    rotation = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    canvas = Image.new("L", (IMAGE_SIZE * SUPERSAMPLE,) * 2, 0)
    draw = ImageDraw.Draw(canvas)
    for index, outline in enumerate(_OUTLINES[class_name]):
        points = (outline @ rotation * radius + centre) * SUPERSAMPLE
        draw.polygon([tuple(p) for p in points], fill=255 if index == 0 else 0)
    small = canvas.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def _place(rng: np.random.Generator, count: int) -> list[tuple[np.ndarray, float]]:
    """Random (centre, radius) per object: fully inside the image, circumcircles apart."""
    for _ in range(MAX_PLACEMENT_TRIES):
        radii = rng.uniform(MIN_DIAMETER, MAX_DIAMETER, size=count) / 2
        centres = [rng.uniform(r + 1, IMAGE_SIZE - 1 - r, size=2) for r in radii]
        if count == 1 or np.linalg.norm(centres[0] - centres[1]) >= radii.sum() + OBJECT_GAP:
            return list(zip(centres, radii))
    raise RuntimeError(f"could not place {count} objects in {MAX_PLACEMENT_TRIES} tries")


def _contrasting_colour(rng: np.random.Generator, underneath: np.ndarray) -> np.ndarray:
    for _ in range(100):
        colour = rng.uniform(0, 255, size=3)
        if np.linalg.norm(colour - underneath) >= MIN_COLOUR_DISTANCE:
            return colour
    return 255.0 - underneath  # the complement is always far enough away


def _validated_classes(rng: np.random.Generator, num_objects: int,
                       classes: Sequence[int] | None) -> tuple[int, ...]:
    if num_objects not in (1, 2):
        raise ValueError(f"num_objects must be 1 or 2, got {num_objects}")
    if classes is None:
        return tuple(int(c) for c in rng.choice(len(CLASS_NAMES), num_objects, replace=False))
    labels = tuple(int(c) for c in classes)
    if len(labels) != num_objects or len(set(labels)) != num_objects:
        raise ValueError(f"classes must hold {num_objects} distinct indices, got {classes}")
    if any(not 0 <= c < len(CLASS_NAMES) for c in labels):
        raise ValueError(f"class indices must lie in [0, {len(CLASS_NAMES)}), got {classes}")
    return labels


def draw_sample(rng: np.random.Generator, num_objects: int = 1,
                classes: Sequence[int] | None = None) -> Sample:
    """One image of `num_objects` non-overlapping shapes of distinct classes."""
    labels = _validated_classes(rng, num_objects, classes)
    image = _background(rng)
    masks = []
    for label, (centre, radius) in zip(labels, _place(rng, num_objects)):
        alpha = _coverage(CLASS_NAMES[label], centre, radius, rng.uniform(0, 2 * np.pi))
        mask = alpha >= 0.5
        colour = _contrasting_colour(rng, image[mask].mean(axis=0))
        image = image * (1 - alpha[..., None]) + colour * alpha[..., None]
        masks.append(mask)
    image += rng.normal(0, rng.uniform(2, 8), size=image.shape)  # sensor-like noise everywhere
    return Sample(np.clip(image, 0, 255).round().astype(np.uint8), labels, tuple(masks))


def generate(count: int, seed: int, two_object_fraction: float = 0.0) -> list[Sample]:
    """`count` samples, identical for identical arguments."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if not 0.0 <= two_object_fraction <= 1.0:
        raise ValueError(f"two_object_fraction must lie in [0, 1], got {two_object_fraction}")
    rng = np.random.default_rng(seed)
    return [draw_sample(rng, 2 if rng.random() < two_object_fraction else 1)
            for _ in range(count)]


def draw_shape(class_name: str, seed: int = 0) -> np.ndarray:
    """One single-object uint8 image of the named class, e.g. for tests and demos."""
    if class_name not in CLASS_NAMES:
        raise ValueError(f"unknown class {class_name!r}; expected one of {CLASS_NAMES}")
    rng = np.random.default_rng(seed)
    return draw_sample(rng, classes=(CLASS_NAMES.index(class_name),)).image
