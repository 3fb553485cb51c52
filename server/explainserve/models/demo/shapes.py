"""Synthetic 64x64 shape images with ground-truth masks, for the built-in demo model.

Numpy and PIL only, so the generator can be used by clients and benchmarks without torch.
Every object comes with its boolean mask, which is what lets us score explanations (does the
saliency fall on the object?) instead of just eyeballing them.

Two distributions: the classic one (the default; `varied=False`) and a varied one that the demo
model is trained on for robustness (sizes 12-48 px, plain, noisy, striped, gradient or mixed
backgrounds, hard or anti-aliased edges, partial occlusion by a second object, slight blur and
JPEG artefacts). Both return masks computed from the drawn coverage, so they stay exact.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASS_NAMES: tuple[str, ...] = (
    "circle", "square", "triangle", "star", "cross", "ring", "hexagon", "heart")
IMAGE_SIZE = 64
MIN_DIAMETER, MAX_DIAMETER = 18.0, 34.0
SUPERSAMPLE = 4  # draw at 4x and box-downsample: anti-aliased edges, sub-pixel positions
MIN_COLOUR_DISTANCE = 90.0  # RGB distance object vs. background underneath: always visible
OBJECT_GAP = 2.0  # pixels between the circumcircles of two objects, so masks never touch
MAX_PLACEMENT_TRIES = 1000
# The varied distribution (varied=True).
VARIED_MIN_DIAMETER, VARIED_MAX_DIAMETER = 12.0, 48.0
VARIED_PAIR_MAX_DIAMETER = 30.0  # two 30-px circumcircles still fit apart in 64 x 64
VARIED_MIN_COLOUR_DISTANCE = 80.0
BACKGROUND_KINDS = ("plain", "noisy", "striped", "gradient", "mixed")
OCCLUDED_SHARE = (0.1, 0.4)  # share of the lower object's area the upper one hides


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


def _coverage(class_name: str, centre: np.ndarray, radius: float, angle: float,
              supersample: int = SUPERSAMPLE) -> np.ndarray:
    """Fraction of each pixel covered by the shape, float32 [64, 64] in [0, 1]; with
    supersample=1 the edges are hard (every value 0 or 1)."""
    rotation = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    canvas = Image.new("L", (IMAGE_SIZE * supersample,) * 2, 0)
    draw = ImageDraw.Draw(canvas)
    for index, outline in enumerate(_OUTLINES[class_name]):
        points = (outline @ rotation * radius + centre) * supersample
        draw.polygon([tuple(p) for p in points], fill=255 if index == 0 else 0)
    small = canvas.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def _place(rng: np.random.Generator, count: int, min_diameter: float = MIN_DIAMETER,
           max_diameter: float = MAX_DIAMETER) -> list[tuple[np.ndarray, float]]:
    """Random (centre, radius) per object: fully inside the image, circumcircles apart."""
    for _ in range(MAX_PLACEMENT_TRIES):
        radii = rng.uniform(min_diameter, max_diameter, size=count) / 2
        centres = [rng.uniform(r + 1, IMAGE_SIZE - 1 - r, size=2) for r in radii]
        if count == 1 or np.linalg.norm(centres[0] - centres[1]) >= radii.sum() + OBJECT_GAP:
            return list(zip(centres, radii))
    raise RuntimeError(f"could not place {count} objects in {MAX_PLACEMENT_TRIES} tries")


def _contrasting_colour(rng: np.random.Generator, *underneath: np.ndarray,
                        distance: float = MIN_COLOUR_DISTANCE) -> np.ndarray:
    """A random colour at least `distance` away from every colour in `underneath`."""
    for _ in range(100):
        colour = rng.uniform(0, 255, size=3)
        if all(np.linalg.norm(colour - other) >= distance for other in underneath):
            return colour
    return 255.0 - underneath[0]  # the complement is always far enough from the first


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
                classes: Sequence[int] | None = None, varied: bool = False,
                occluded: bool = False) -> Sample:
    """One image of `num_objects` shapes of distinct classes. Classic images (the default)
    never overlap; `varied` draws from the wider distribution, where `occluded` lets the
    second object hide part of the first."""
    labels = _validated_classes(rng, num_objects, classes)
    if varied:
        return _draw_varied(rng, labels, occluded)
    if occluded:
        raise ValueError("occluded needs varied=True")
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


def _varied_background(rng: np.random.Generator) -> np.ndarray:
    """One of BACKGROUND_KINDS: a plain colour, plain with strong noise, plain with strong
    stripes, a two-colour gradient, or the classic mix (gradient, faint stripes, noise)."""
    kind = BACKGROUND_KINDS[rng.integers(len(BACKGROUND_KINDS))]
    ys, xs = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE] / (IMAGE_SIZE - 1)
    if kind == "mixed":
        image = _background(rng)
        return image + rng.normal(0, rng.uniform(2, 8), size=image.shape)
    image = np.broadcast_to(rng.uniform(0, 255, size=3), xs.shape + (3,)).copy()
    if kind == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        along = (xs * np.cos(angle) + ys * np.sin(angle) + 1) / 2
        image = image + (rng.uniform(0, 255, size=3) - image) * along[..., None]
    elif kind == "striped":
        angle = rng.uniform(0, 2 * np.pi)
        phase = xs * np.cos(angle) + ys * np.sin(angle)
        stripes = np.sin(2 * np.pi * rng.uniform(2, 10) * phase + rng.uniform(0, 2 * np.pi))
        image = image + rng.uniform(15, 45) * stripes[..., None] * rng.uniform(0.3, 1.0, size=3)
    elif kind == "noisy":
        image = image + rng.normal(0, rng.uniform(8, 24), size=image.shape)
    return image


def _varied_objects(rng: np.random.Generator, labels: tuple[int, ...], occluded: bool,
                    supersample: int) -> list[np.ndarray]:
    """Coverage maps, bottom first: fully inside the image; apart unless `occluded`, where
    the second object hides an OCCLUDED_SHARE of the first."""
    def draw(label: int, centre: np.ndarray, radius: float) -> np.ndarray:
        return _coverage(CLASS_NAMES[label], centre, radius, rng.uniform(0, 2 * np.pi),
                         supersample)
    if not occluded:
        top = VARIED_MAX_DIAMETER if len(labels) == 1 else VARIED_PAIR_MAX_DIAMETER
        return [draw(label, centre, radius) for label, (centre, radius)
                in zip(labels, _place(rng, len(labels), VARIED_MIN_DIAMETER, top))]
    if len(labels) != 2:
        raise ValueError(f"occluded needs 2 objects, got {len(labels)}")
    for _ in range(MAX_PLACEMENT_TRIES):
        lower_radius = rng.uniform(20, VARIED_MAX_DIAMETER) / 2
        upper_radius = rng.uniform(VARIED_MIN_DIAMETER, min(36.0, 2 * lower_radius)) / 2
        lower_centre = rng.uniform(lower_radius + 1, IMAGE_SIZE - 1 - lower_radius, size=2)
        upper_centre = rng.uniform(upper_radius + 1, IMAGE_SIZE - 1 - upper_radius, size=2)
        gap = np.linalg.norm(lower_centre - upper_centre)
        if not 0.4 * lower_radius < gap < lower_radius + upper_radius:
            continue
        lower, upper = draw(labels[0], lower_centre, lower_radius), draw(
            labels[1], upper_centre, upper_radius)
        whole = lower >= 0.5
        hidden = (whole & (upper >= 0.5)).sum() / max(whole.sum(), 1)
        if OCCLUDED_SHARE[0] <= hidden <= OCCLUDED_SHARE[1]:
            return [lower, upper]
    raise RuntimeError(f"could not place an occluded pair in {MAX_PLACEMENT_TRIES} tries")


def _draw_varied(rng: np.random.Generator, labels: tuple[int, ...], occluded: bool) -> Sample:
    supersample = SUPERSAMPLE if rng.random() < 0.5 else 1  # anti-aliased or hard edges
    image = _varied_background(rng)
    alphas = _varied_objects(rng, labels, occluded, supersample)
    colours: list[np.ndarray] = []
    for alpha in alphas:
        under = image[alpha >= 0.5].mean(axis=0)
        colour = _contrasting_colour(rng, under, *colours, distance=VARIED_MIN_COLOUR_DISTANCE)
        image = image * (1 - alpha[..., None]) + colour * alpha[..., None]
        colours.append(colour)
    # Masks from what stays visible: an object's pixel belongs to it when at least half of the
    # pixel shows it, after every object drawn above it took its share.
    visible = [alpha.copy() for alpha in alphas]
    for index in range(len(alphas)):
        for above in alphas[index + 1:]:
            visible[index] *= 1 - above
    masks = tuple(v >= 0.5 for v in visible)
    image += rng.normal(0, rng.uniform(0, 4), size=image.shape)
    picture = Image.fromarray(np.clip(image, 0, 255).round().astype(np.uint8))
    if rng.random() < 0.3:
        picture = picture.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    if rng.random() < 0.3:
        encoded = io.BytesIO()
        picture.save(encoded, format="JPEG", quality=int(rng.integers(30, 91)))
        picture = Image.open(encoded).convert("RGB")
    return Sample(np.asarray(picture, dtype=np.uint8).copy(), labels, masks)


def generate(count: int, seed: int, two_object_fraction: float = 0.0,
             varied: bool = False) -> list[Sample]:
    """`count` samples, identical for identical arguments. With `varied`, half of the
    two-object images overlap (the second object partly hides the first)."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if not 0.0 <= two_object_fraction <= 1.0:
        raise ValueError(f"two_object_fraction must lie in [0, 1], got {two_object_fraction}")
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(count):
        num_objects = 2 if rng.random() < two_object_fraction else 1
        occluded = varied and num_objects == 2 and rng.random() < 0.5
        samples.append(draw_sample(rng, num_objects, varied=varied, occluded=occluded))
    return samples


def draw_shape(class_name: str, seed: int = 0) -> np.ndarray:
    """One single-object uint8 image of the named class, e.g. for tests and demos."""
    if class_name not in CLASS_NAMES:
        raise ValueError(f"unknown class {class_name!r}; expected one of {CLASS_NAMES}")
    rng = np.random.default_rng(seed)
    return draw_sample(rng, classes=(CLASS_NAMES.index(class_name),)).image
