"""The plain values an Embed stream passes between the api layer and the session."""

from __future__ import annotations

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
