"""The demo images the page offers: one picture per class of the built-in demo model, drawn
by its own data generator (models/demo/shapes.py), as base64 PNG."""

from __future__ import annotations

import base64
from functools import lru_cache

from explainserve_client.render import image_png

from explainserve.models.demo import shapes

DEMO_SEED = 7  # not a training seed: pictures the model never saw


@lru_cache(maxsize=1)
def demo_images() -> list[dict[str, str]]:
    return [{"name": name, "png": base64.b64encode(image_png(shapes.draw_shape(name, seed=DEMO_SEED))).decode()}
            for name in shapes.CLASS_NAMES]
