"""The names of the contract's enum values, defined once for the client and the server.

Each table maps the name a caller writes (in Python, the CLI or a JSON parameter) to the
proto enum value on the wire. The server reads the same tables backwards, and the `*_DEFAULT`
names say what an UNSPECIFIED value means, so the two sides cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping

from ._proto import explainer_pb2 as pb

OUTPUTS = {"attribution": pb.OUTPUT_ATTRIBUTION, "heatmap": pb.OUTPUT_HEATMAP,
           "overlay": pb.OUTPUT_OVERLAY_PNG, "box": pb.OUTPUT_BOX}
DEFAULT_OUTPUTS = ("attribution", "heatmap")
# Faithfulness scores (Petsiuk et al. 2018) and the baselines they perturb towards; an
# UNSPECIFIED baseline means each score's own default (the server's faithfulness module).
FAITHFULNESS = {"deletion": pb.FAITHFULNESS_DELETION, "insertion": pb.FAITHFULNESS_INSERTION}
BASELINES = {"blur": pb.BASELINE_BLUR, "constant": pb.BASELINE_CONSTANT}

OBJECTIVES = {"class": pb.OBJECTIVE_CLASS, "channel": pb.OBJECTIVE_CHANNEL,
              "neuron": pb.OBJECTIVE_NEURON, "inversion": pb.OBJECTIVE_INVERSION}
# UNSPECIFIED: the objective's own default start (its registered spec says which).
INITIALIZATIONS = {"zeros": pb.INITIALIZATION_ZEROS, "noise": pb.INITIALIZATION_NOISE,
                   "image": pb.INITIALIZATION_IMAGE}
FRAME_FORMATS = {"png": pb.FRAME_FORMAT_PNG, "tensor": pb.FRAME_FORMAT_TENSOR}
DEFAULT_FRAME_FORMAT = "png"

POOLINGS = {"mean": pb.POOLING_MEAN, "max": pb.POOLING_MAX, "none": pb.POOLING_NONE}
POOLING_DEFAULT = "mean"
PROJECTIONS = {"pca": pb.PROJECTION_PCA, "tsne": pb.PROJECTION_TSNE}
PROJECTION_DEFAULT = "pca"
METRICS = {"cosine": pb.METRIC_COSINE, "l2": pb.METRIC_L2}
METRIC_DEFAULT = "cosine"


def names_by_value(table: Mapping[str, int], unspecified: str | None = None) -> dict[int, str]:
    """The table read backwards; with `unspecified`, value 0 (UNSPECIFIED) reads as that name."""
    backwards = {value: name for name, value in table.items()}
    if unspecified is not None:
        backwards[0] = unspecified
    return backwards
