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

__all__ = [
    "Client",
    "ExplainServeError",
    "Explanation",
    "Layer",
    "ModelDescription",
    "ModelSummary",
    "assemble_explanations",
]
