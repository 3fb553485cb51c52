"""ExplainServe's thin Python client: `from explainserve_client import Client`."""

from .client import (
    Client,
    ExplainServeError,
    Explanation,
    Layer,
    LayerLayout,
    ModelDescription,
    ModelSummary,
    assemble_explanations,
)
from .embed import Embedding, ItemFailure, PatchHit
from .maximize import MaximizeFrame, class_visualisations
from .methods import MethodDescription, MethodParameter

__all__ = [
    "Client",
    "Embedding",
    "ExplainServeError",
    "Explanation",
    "ItemFailure",
    "Layer",
    "LayerLayout",
    "MaximizeFrame",
    "MethodDescription",
    "MethodParameter",
    "ModelDescription",
    "ModelSummary",
    "PatchHit",
    "assemble_explanations",
    "class_visualisations",
]
