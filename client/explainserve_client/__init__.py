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
from .maximize import MaximizeFrame, class_visualisations

__all__ = [
    "Client",
    "Embedding",
    "ExplainServeError",
    "Explanation",
    "ItemFailure",
    "Layer",
    "MaximizeFrame",
    "ModelDescription",
    "ModelSummary",
    "PatchHit",
    "assemble_explanations",
    "class_visualisations",
]
