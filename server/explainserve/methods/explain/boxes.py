"""Bounding boxes from heatmaps (Simonyan et al. 2013, sec. 3.1, weakly supervised localisation):
the foreground is the pixels above the 95% quantile of the map, and the box is drawn around
its largest connected component."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def box_from_heatmap(heatmap: np.ndarray, quantile: float = 0.95) -> tuple[int, int, int, int]:
    """(x_min, y_min, x_max, y_max), inclusive, of the largest 8-connected foreground blob."""
    threshold = np.quantile(heatmap, quantile)
    # A sparse map (ReLU'd Grad-CAM, clipped occlusion) is mostly zeros, so its quantile can be
    # its minimum: then "above the quantile" must be strict, or every pixel is foreground.
    foreground = heatmap > threshold if threshold <= heatmap.min() else heatmap >= threshold
    labels, count = ndimage.label(foreground, structure=np.ones((3, 3), dtype=int))
    if count == 0:
        return (0, 0, heatmap.shape[1] - 1, heatmap.shape[0] - 1)
    sizes = np.bincount(labels.ravel())[1:]
    rows, cols = np.nonzero(labels == int(np.argmax(sizes)) + 1)
    return (int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max()))
