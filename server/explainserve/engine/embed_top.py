"""A running top-k of the images that most activate one unit (the seeds' "maximally activating
image patches"): k entries at any time, whatever the length of the stream."""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Hit:
    """One image's strongest response of the unit, with the patch that drives it."""

    index: int
    id: str
    activation: float
    y: int  # feature-map row of the maximum
    x: int
    box: tuple[int, int, int, int]  # x_min, y_min, x_max, y_max in input pixels, inclusive
    patch: np.ndarray  # uint8 [h, w, C], the box cropped from the de-normalised image


class TopK:
    """A min-heap of the k best (activation, earlier item first) seen so far. The hit, and so
    the crop, is only made for an item that enters the heap."""

    def __init__(self, k: int, size_of: Callable[[Hit], int] = lambda hit: 0) -> None:
        self._k = k
        self._heap: list[tuple[float, int, Hit]] = []
        self._size_of = size_of
        self.bytes_held = 0  # sum of size_of over the heap: it counts against the stream's bound

    def offer(self, activation: float, index: int, make_hit: Callable[[], Hit]) -> None:
        if math.isnan(activation) or self._k <= 0:
            return
        key = (activation, -index)  # on equal activations the earlier item ranks higher
        if len(self._heap) < self._k:
            hit = make_hit()
            heapq.heappush(self._heap, (*key, hit))
            self.bytes_held += self._size_of(hit)
        elif key > self._heap[0][:2]:
            hit = make_hit()
            dropped = heapq.heapreplace(self._heap, (*key, hit))[2]
            self.bytes_held += self._size_of(hit) - self._size_of(dropped)

    def hits(self) -> list[Hit]:
        """Highest activation first."""
        return [entry[2] for entry in sorted(self._heap, key=lambda e: e[:2], reverse=True)]
