"""XRAI (Kapishnikov et al. 2019, arXiv:1906.02825): integrated gradients aggregated over image
regions, the regions ranked greedily by attribution density (segments.py).

As in the paper (sec. 3.1) and PAIR's implementation, the pixel attribution is the mean of two
integrated-gradients maps, from a black and from a white baseline, reduced over channels by the
maximum. Both paths' rows go through the batcher at once while the image is segmented on a
worker thread: segmenting is CPU work the event loop must not do. The heatmap ranks the regions:
the region added first is 1, the last (R of them) is 1/R; `attribution` is PAIR's map, each
pixel's region gain density; `ranks` numbers the regions in that order.
"""

from __future__ import annotations

import asyncio

import numpy as np
import torch

from explainserve.errors import InvalidArgument
from explainserve.methods.base import Attribution, Param
from explainserve.methods.explain import segments
from explainserve.methods.explain.baselines import Baseline
from explainserve.methods.explain.paths import check_steps, integrate
from explainserve.methods.explain.quadrature import QUADRATURES
from explainserve.methods.explain.registry import register_method

PARAMS = (
    Param("steps", int, 50, minimum=1, help="points of each integrated-gradients path"),
    Param("quadrature", str, "gausslegendre", choices=QUADRATURES, help="the paths' quadrature rule"),
    Param("min_segment_size", int, 150, minimum=1, maximum=50_000,
          help="smallest Felzenszwalb segment, in pixels of the 224 x 224 segmentation image"),
    Param("dilation", int, 5, minimum=0, maximum=50, help="radius of the disk each region grows by"),
    Param("area_threshold", float, 1.0, minimum=0.0, maximum=1.0,
          help="stop ranking once regions cover this share of the image; the rest is one region"),
)


def _regions(image: np.ndarray, params: dict, limit: int):
    maps = segments.label_maps(image, params["min_segment_size"])
    count = segments.region_count(maps)
    if count > limit:
        raise InvalidArgument(
            f"the image splits into {count} regions, more than the limit of {limit}; raise "
            f"parameter 'min_segment_size' (now {params['min_segment_size']})")
    return segments.region_matrix(maps, params["dilation"])


def _rank(attributions: list[torch.Tensor], regions, area_threshold: float) -> list[segments.Ranking]:
    """Per target: the mean of the black- and white-baseline maps, max over channels, ranked."""
    pixel = (sum(attributions) / len(attributions)).amax(dim=1).numpy()
    return [segments.rank_regions(one, regions, area_threshold) for one in pixel]


@register_method("xrai", params=PARAMS, needs_gradients=True)
async def xrai(ctx, image, targets, layer, params):
    """XRAI: integrated gradients summed over segments, regions ranked by density (Kapishnikov 2019)."""
    check_steps("xrai", params["steps"], params["quadrature"], ctx.limits.max_integrated_gradients_steps)
    picture = image.permute(1, 2, 0).numpy()  # [H, W, C], a view: no copy on the event loop
    paths = [integrate(ctx, image, targets, Baseline(name, tuple(ctx.model.mean), tuple(ctx.model.std)),
                       params["quadrature"], params["steps"], 0.0) for name in ("black", "white")]
    regions, black, white = await asyncio.gather(
        asyncio.to_thread(_regions, picture, params, ctx.limits.max_xrai_segments), *paths)
    rankings = await asyncio.to_thread(_rank, [black.attribution, white.attribution], regions,
                                       params["area_threshold"])
    probabilities = black.logits.softmax(0)
    results = []
    for i, (target, ranking) in enumerate(zip(black.targets, rankings)):
        heatmap = (ranking.regions + 1 - ranking.ranks) / ranking.regions
        results.append(Attribution(
            target=target, score=float(black.logits[target]), probability=float(probabilities[target]),
            attribution=torch.from_numpy(ranking.density.astype(np.float32)),
            heatmap=torch.from_numpy(heatmap.astype(np.float32)),
            tensors={"ranks": torch.from_numpy(ranking.ranks.astype(np.float32))},
            quality={"regions": float(ranking.regions), "steps": float(params["steps"]),
                     "completeness_gap_black": black.gaps[i], "completeness_gap_white": white.gaps[i]}))
    return results
