"""ExplainServe's thin Python client: `from explainserve_client import Client`."""

from .client import (
    Client,
    ExplainServeError,
    Explanation,
    Layer,
    ModelDescription,
    ModelSummary,
    assemble_explanations,
)
from .embed import Embedding, ItemFailure, PatchHit

__all__ = [
    "Client",
    "Embedding",
    "ExplainServeError",
    "Explanation",
    "ItemFailure",
    "Layer",
    "ModelDescription",
    "ModelSummary",
    "PatchHit",
    "assemble_explanations",
]
