"""Projections of a set of feature vectors by name: a dict, a decorator, a clear error and a
list function (the shape of methods/explain/registry.py), so the Embed engine never branches on a
projection's name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from explainserve.errors import not_found

# projection(vectors [N, D] with N >= 1, dims) -> float32 [N, dims]; each projection answers
# for any set size itself (t-SNE hands sets too small for it to PCA), so the spec holds no
# size limit. The wire allows dims 2 or 3 for every projection (api/embed.py).
ProjectionFn = Callable[[Tensor, int], Tensor]


@dataclass(frozen=True)
class ProjectionSpec:
    name: str
    function: ProjectionFn
    description: str = ""


_PROJECTIONS: dict[str, ProjectionSpec] = {}


def register_projection(name: str) -> Callable[[ProjectionFn], ProjectionFn]:
    """Register a projection function under `name`."""
    def decorator(function: ProjectionFn) -> ProjectionFn:
        if name in _PROJECTIONS:
            raise ValueError(f"projection {name!r} is registered twice")
        description = (function.__doc__ or "").strip().splitlines()[0] if function.__doc__ else ""
        _PROJECTIONS[name] = ProjectionSpec(name, function, description)
        return function
    return decorator


def get_projection(name: str) -> ProjectionSpec:
    _load_builtin_projections()
    try:
        return _PROJECTIONS[name]
    except KeyError:
        raise not_found("projection", name, list_projections()) from None


def list_projections() -> list[str]:
    _load_builtin_projections()
    return sorted(_PROJECTIONS)


def _load_builtin_projections() -> None:
    """Import the projection modules once; each registers itself on import."""
    from explainserve.methods.embed import builtin  # noqa: F401
