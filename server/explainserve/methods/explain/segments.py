"""XRAI's regions and their greedy ranking (Kapishnikov et al. 2019, arXiv:1906.02825, sec. 3),
in numpy and scipy on a worker thread; no torch.

Regions are Felzenszwalb segments (Felzenszwalb & Huttenlocher 2004) at several scales, each
dilated by a disk, as PAIR's reference implementation (saliency.core.xrai) makes them: the
image min-max scaled to [-1, 1] and resized to 224 x 224 for segmenting, the labels resized
back with nearest neighbours. The ranking is its algorithm 1: repeatedly add the region whose
not yet covered pixels have the highest mean attribution (the gain density), until the image
is covered. The regions are a sparse [regions, pixels] matrix, so each round's gains for all
regions are two sparse products instead of one pass over the image per region.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from skimage import segmentation
from skimage.morphology import disk
from skimage.transform import resize

SCALES = (50, 100, 150, 250, 500, 1200)  # PAIR's Felzenszwalb scales
SIGMA = 0.8
SEGMENT_SIZE = (224, 224)
MIN_PIXEL_DIFF = 50  # a region adding fewer new pixels is dropped (PAIR's default)
DENSE_BYTES = 64 * 1024 * 1024  # a scale's regions are built as a dense mask up to this size


def label_maps(image: np.ndarray, min_size: int, resize_image: bool = True) -> list[np.ndarray]:
    """One Felzenszwalb label map [H, W] per scale, of an image [H, W, C]."""
    low, high = float(image.min()), float(image.max())
    scaled = (image - low) / (high - low) * 2.0 - 1.0 if high > low else np.zeros_like(image)
    if resize_image:
        scaled = resize(scaled, SEGMENT_SIZE, order=3, mode="constant", preserve_range=True,
                        anti_aliasing=True)
    maps = []
    for scale in SCALES:
        labels = segmentation.felzenszwalb(scaled, scale=scale, sigma=SIGMA, min_size=min_size)
        if resize_image:
            labels = resize(labels, image.shape[:2], order=0, preserve_range=True, mode="constant",
                            anti_aliasing=False).astype(int)
        maps.append(labels)
    return maps


def region_matrix(maps: list[np.ndarray], dilation: int) -> sparse.csr_matrix:
    """Sparse bool [regions, H*W]: label l of each map (l from its min to its max, in order),
    dilated by a disk of radius `dilation` with reflected borders (skimage's dilation)."""
    height, width = maps[0].shape
    offsets = np.argwhere(disk(dilation)) - dilation if dilation else np.zeros((1, 2), int)
    pixels = np.tile(np.arange(height * width), len(offsets))
    blocks = []
    for labels in maps:
        low, count = int(labels.min()), int(labels.max() - labels.min() + 1)
        padded = np.pad(labels - low, dilation, mode="symmetric") if dilation else labels - low
        shifted = [padded[dilation + dy:dilation + dy + height, dilation + dx:dilation + dx + width].ravel()
                   for dy, dx in offsets]
        if count * height * width <= DENSE_BYTES:  # scatter into a dense mask: 10x faster
            covered = np.zeros((count, height * width), dtype=bool)
            for owners in shifted:
                covered[owners, pixels[:height * width]] = True
            blocks.append(sparse.csr_matrix(covered, dtype=np.float64))
            continue
        owners = np.concatenate(shifted)
        block = sparse.csr_matrix((np.ones(len(owners)), (owners, pixels)), shape=(count, height * width))
        block.data[:] = 1.0  # a pixel reached from several offsets is in the region once
        blocks.append(block)
    return sparse.vstack(blocks, format="csr")


def region_count(maps: list[np.ndarray]) -> int:
    return sum(int(labels.max() - labels.min() + 1) for labels in maps)


@dataclass
class Ranking:
    density: np.ndarray  # [H, W] gain density of the region each pixel joined with
    ranks: np.ndarray  # [H, W] int: 1 for the region added first (highest gain), ...
    regions: int  # regions ranked (the uncovered rest counts as one)


def rank_regions(attribution: np.ndarray, regions: sparse.csr_matrix, area_threshold: float = 1.0,
                 min_pixel_diff: int = MIN_PIXEL_DIFF) -> Ranking:
    """Algorithm 1: greedy selection by gain density over an attribution [H, W]."""
    shape = attribution.shape
    values = attribution.ravel().astype(np.float64)
    density = np.full(values.shape, -np.inf)
    free = np.ones(values.shape, dtype=bool)
    remaining = np.ones(regions.shape[0], dtype=bool)
    trace: list[tuple[np.ndarray, float]] = []
    while np.mean(~free) <= area_threshold:
        new_pixels = regions @ free.astype(np.float64)
        remaining &= new_pixels >= min_pixel_diff
        if not remaining.any():
            break
        gains = np.where(remaining, (regions @ np.where(free, values, 0.0)) / np.maximum(new_pixels, 1), -np.inf)
        best = int(np.argmax(gains))  # the first of equal gains, as PAIR's strict ">"
        row = regions.indices[regions.indptr[best]:regions.indptr[best + 1]]
        added = row[free[row]]
        trace.append((added, float(gains[best])))
        density[added] = gains[best]
        free[added] = False
        remaining[best] = False
    if free.any():
        density[free] = values[free].mean()
    order = [pixels for pixels, _ in sorted(trace, key=lambda item: -item[1])]
    if free.any():
        order.append(np.flatnonzero(free))
    ranks = np.zeros(values.shape, dtype=np.int64)
    for rank, pixels in enumerate(order, start=1):
        ranks[pixels] = rank
    return Ranking(density.reshape(shape), ranks.reshape(shape), len(order))
