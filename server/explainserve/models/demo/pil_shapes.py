"""The demo model's eight classes drawn a second, independent way: with PIL's own primitives
(ellipse, regular_polygon, rounded_rectangle, polygon) straight onto the 64x64 image, with no
supersampling and no code shared with `shapes.py`, on plain or noisy backgrounds.

A model that only learnt the quirks of our generator (its polygon outlines, its box-filtered
edges, its textured backgrounds) scores worse here, so these images are a robustness check
for accuracy and for where explanations point. Each class is a fair rendition of the
generator's: a full disc; a square, turned or axis-aligned with slightly rounded corners; an
equilateral triangle; a five-pointed star; a plus-shaped cross; a ring (a thick circle
outline); a regular hexagon; a heart made of two discs and a triangle. Every object lies
fully inside the image; its mask is the set of pixels PIL filled (edges are hard, so the
image and the mask agree pixel for pixel).

Numpy and PIL only, like the generator.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

CLASS_NAMES: tuple[str, ...] = (  # the demo model's label order (demo_labels.txt)
    "circle", "square", "triangle", "star", "cross", "ring", "hexagon", "heart")
IMAGE_SIZE = 64
MIN_DIAMETER, MAX_DIAMETER = 16.0, 44.0  # of the shape's circumcircle, in pixels
MIN_COLOUR_DISTANCE = 90.0  # RGB distance between object and background
BACKGROUNDS = ("plain", "noisy")


@dataclass(frozen=True, eq=False)
class PilSample:
    image: np.ndarray  # uint8 [64, 64, 3]
    label: int
    mask: np.ndarray  # bool [64, 64]
    background: str


def _points(centre: np.ndarray, radius: float, angles: np.ndarray, radii: np.ndarray
            ) -> list[tuple[float, float]]:
    return [(float(centre[0] + r * radius * np.cos(a)), float(centre[1] + r * radius * np.sin(a)))
            for a, r in zip(angles, radii)]


def _draw(draw: ImageDraw.ImageDraw, name: str, centre: np.ndarray, radius: float,
          rotation: float, fill, rng_values: np.ndarray) -> None:
    """Draw class `name` with circumradius `radius`; `rng_values` (3 uniforms in [0, 1))
    vary its proportions within the class, so every image needs the same number of draws."""
    x, y = (float(v) for v in centre)
    degrees = float(np.rad2deg(rotation))
    if name == "circle":
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=fill)
    elif name == "square":
        if rng_values[0] < 0.5:
            draw.regular_polygon((x, y, radius), 4, rotation=degrees, fill=fill)
        else:  # axis-aligned with corners rounded by up to a sixth of the side
            half = radius / np.sqrt(2)
            draw.rounded_rectangle((x - half, y - half, x + half, y + half),
                                   radius=float(rng_values[1] * half / 3), fill=fill)
    elif name == "triangle":
        draw.regular_polygon((x, y, radius), 3, rotation=degrees, fill=fill)
    elif name == "hexagon":
        draw.regular_polygon((x, y, radius), 6, rotation=degrees, fill=fill)
    elif name == "star":
        inner = 0.4 + 0.1 * rng_values[0]  # inner / outer radius
        angles = rotation + np.pi * np.arange(10) / 5
        draw.polygon(_points(centre, radius, angles, np.where(np.arange(10) % 2, inner, 1.0)),
                     fill=fill)
    elif name == "cross":
        # A plus: two bars of half-width w (relative to the arm length 1); the corners of the
        # bars lie on the circumcircle.
        w = 0.28 + 0.08 * rng_values[0]
        arm = radius / np.hypot(1.0, w)
        for bar in ((1.0, w), (w, 1.0)):
            corners = np.array([[-bar[0], -bar[1]], [bar[0], -bar[1]], [bar[0], bar[1]],
                                [-bar[0], bar[1]]]) * arm
            turn = np.array([[np.cos(rotation), np.sin(rotation)],
                             [-np.sin(rotation), np.cos(rotation)]])
            draw.polygon([tuple(p) for p in corners @ turn + centre], fill=fill)
    elif name == "ring":
        thickness = max(2, round(radius * (0.38 + 0.14 * rng_values[0])))
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), outline=fill,
                     width=thickness)
    elif name == "heart":
        # Two discs side by side over a triangle whose tip points down (before rotation),
        # scaled to fit the circumcircle.
        lobe = 0.45 * radius  # lobes reach 0.99 of the radius from the centre, the tip 0.9
        lobes = np.array([[-0.45, -0.3], [0.45, -0.3]]) * radius
        tip = np.array([0.0, 0.9]) * radius
        left, right = np.array([-0.87, -0.1]) * radius, np.array([0.87, -0.1]) * radius
        turn = np.array([[np.cos(rotation), np.sin(rotation)],
                         [-np.sin(rotation), np.cos(rotation)]])
        for lobe_centre in lobes @ turn + centre:
            lx, ly = (float(v) for v in lobe_centre)
            draw.ellipse((lx - lobe, ly - lobe, lx + lobe, ly + lobe), fill=fill)
        middle = np.array([[0.0, -0.3]]) * radius
        draw.polygon([tuple(p) for p in np.stack([left, tip, right, middle[0]]) @ turn + centre],
                     fill=fill)
    else:
        raise ValueError(f"unknown class {name!r}; expected one of {CLASS_NAMES}")


def draw(rng: np.random.Generator, label: int) -> PilSample:
    """One image of class `label` on a random plain or noisy background."""
    if not 0 <= label < len(CLASS_NAMES):
        raise ValueError(f"label must lie in [0, {len(CLASS_NAMES)}), got {label}")
    background_kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    background = rng.uniform(0, 255, size=3)
    colour = rng.uniform(0, 255, size=3)
    while np.linalg.norm(colour - background) < MIN_COLOUR_DISTANCE:
        colour = rng.uniform(0, 255, size=3)
    radius = rng.uniform(MIN_DIAMETER, MAX_DIAMETER) / 2
    # PIL fills the pixels a bounding box's edges pass through: 2 pixels of margin keep
    # the border clear
    centre = rng.uniform(radius + 2, IMAGE_SIZE - 2 - radius, size=2)
    rotation = rng.uniform(0, 2 * np.pi)
    proportions = rng.uniform(0, 1, size=3)

    mask_canvas = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    _draw(ImageDraw.Draw(mask_canvas), CLASS_NAMES[label], centre, radius, rotation, 255,
          proportions)
    mask = np.asarray(mask_canvas) > 0
    image = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3))
    image[...] = background
    image[mask] = colour
    if background_kind == "noisy":
        image += rng.normal(0, rng.uniform(4, 16), size=image.shape)
    pixels = np.clip(image, 0, 255).round().astype(np.uint8)
    return PilSample(pixels, label, mask, background_kind)


def generate(count: int, seed: int) -> list[PilSample]:
    """`count` images, the classes in turn (count / 8 of each), identical for identical
    arguments."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    rng = np.random.default_rng(seed)
    return [draw(rng, index % len(CLASS_NAMES)) for index in range(count)]
