"""Find the structure a class activation map needs (Zhou et al. 2016, arXiv:1512.04150, sec. 2):

    features [K, h, w] -> global average pool -> (flatten / dropout / identity) -> nn.Linear -> logits

It is read from the model's layers in the order the forward pass finishes them (ModelFacts keeps
that order), so nothing runs on a device. The CAM kernel still checks at run time that the logits
are the head applied to the spatial mean of the features, which catches functional operations
(F.relu, a scale) that module order cannot show.
"""

from __future__ import annotations

from dataclasses import dataclass

from explainserve.errors import FailedPrecondition
from explainserve.models.facts import ModelFacts

# Modules that leave a pooled [K] or [K,1,1] vector as it is in eval mode.
IDENTITY_LIKE = frozenset({"Flatten", "Identity", "Dropout", "Dropout1d", "Dropout2d",
                           "AlphaDropout", "FeatureAlphaDropout"})
AVERAGE_POOLS = frozenset({"AdaptiveAvgPool2d", "AvgPool2d"})


@dataclass(frozen=True)
class CamStructure:
    features: str  # the layer the pool averages: CAM's feature maps f_k
    pool: str
    head: str  # the nn.Linear whose row w^c weights the maps


def find_cam_structure(model: ModelFacts) -> CamStructure:
    """The features, pool and head of `model`, or FailedPrecondition naming what is missing."""
    order = list(model.layer_shapes)  # finish order; a container finishes after its children
    parents = {name.rsplit(".", depth)[0] for name in order for depth in range(1, name.count(".") + 1)}
    leaves = [name for name in order if name not in parents]

    def missing(what: str) -> FailedPrecondition:
        return FailedPrecondition(
            f"model {model.name!r} has no class activation map structure (feature maps -> global "
            f"average pool -> one nn.Linear producing the {model.num_classes} logits): {what}; "
            "use gradcam, which needs no particular head")

    if not leaves:
        raise missing("it has no layers")
    head = leaves[-1]
    if model.layer_types[head] != "Linear" or model.layer_shapes[head] != (model.num_classes,):
        raise missing(f"its last layer {head!r} is a {model.layer_types[head]} with output shape "
                      f"{list(model.layer_shapes[head])}, not an nn.Linear producing the logits")
    position = len(leaves) - 2
    while position >= 0 and model.layer_types[leaves[position]] in IDENTITY_LIKE:
        position -= 1
    pool = leaves[position] if position >= 0 else None
    if pool is None:
        raise missing(f"before its linear head {head!r} comes nothing, not a global average pool")
    if model.layer_types[pool] not in AVERAGE_POOLS or not _is_pooled(model.layer_shapes[pool]):
        raise missing(f"before its linear head {head!r} comes {pool!r} ({model.layer_types[pool]}, "
                      f"output {list(model.layer_shapes[pool])}), not a global average pool")
    before_pool = order.index(pool) - 1
    features = order[before_pool] if before_pool >= 0 else None
    shape = model.layer_shapes[features] if features else ()
    if len(shape) != 3 or shape[0] != model.layer_shapes[pool][0]:
        raise missing(f"the layer before the pool {pool!r} is {features!r} with output "
                      f"{list(shape)}, not [K, h, w] feature maps")
    return CamStructure(features=features, pool=pool, head=head)


def _is_pooled(shape: tuple[int, ...]) -> bool:
    """[K, 1, 1] (or [K]): one value per channel."""
    return len(shape) == 1 or (len(shape) == 3 and shape[1] == shape[2] == 1)
