"""The plain values an Embed stream passes between the api layer and the session, and the
byte budget that all open streams of one server share."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from torch import Tensor

from explainserve.errors import InvalidArgument
from explainserve.engine.embed_top import Hit


@dataclass(frozen=True)
class EmbedSpec:
    """An EmbedConfig decoded into plain values (the api layer builds it)."""

    model: str
    layer: str = ""
    pooling: str = "mean"  # mean | max | none
    projection: str = "pca"  # a registered projection (methods/embed/registry.py)
    dims: int = 2
    neighbours: int = 0
    metric: str = "cosine"  # cosine | l2
    units: tuple[tuple[str, int], ...] = ()
    top_k: int = 9
    return_vectors: bool = False


@dataclass(frozen=True)
class EmbedInput:
    """One item as decoded: its image, or the error that made it undecodable."""

    id: str
    image: bytes | Tensor | None
    error: InvalidArgument | None = None


class Finish:
    """The client asked for the set results now."""


@dataclass
class VectorResult:
    index: int
    id: str
    vector: Tensor | None = None  # [D], only when the spec asks for vectors back
    predicted: int = -1
    error: InvalidArgument | None = None


@dataclass
class SetSummary:
    count: int
    indices: list[int]
    projection: Tensor  # float32 [N, dims]
    neighbour_indices: Tensor | None  # int64 [N, k] of item indices
    neighbour_distances: Tensor | None
    top_patches: list[tuple[tuple[str, int], list[Hit]]] = field(default_factory=list)


class StreamBytesBudget:
    """The bytes all open Embed streams of one server may keep together. A stream reserves
    what each item adds as it keeps it (ending when refused) and gives everything back when it
    ends, however it ends."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.held = 0
        # Streams account on the event loop; the lock keeps the sum right should a caller
        # ever account from a worker thread.
        self._lock = threading.Lock()

    def reserve(self, amount: int) -> bool:
        """Take `amount` more bytes (a negative amount gives some back); False, taking
        nothing, when that would go over the capacity."""
        with self._lock:
            if amount > 0 and self.held + amount > self.capacity:
                return False
            self.held += amount
            return True

    def release(self, amount: int) -> None:
        with self._lock:
            self.held -= amount
