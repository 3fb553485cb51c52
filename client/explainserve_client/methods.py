"""ListMethods on the client side: what each Explain method takes and needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format

from ._proto import explainer_pb2 as pb


@dataclass(frozen=True)
class MethodParameter:
    name: str
    type: str  # "int", "float", "bool" or "string"
    default: Any
    minimum: float | None
    maximum: float | None
    choices: tuple[str, ...]
    help: str


@dataclass(frozen=True)
class MethodDescription:
    name: str
    description: str
    parameters: tuple[MethodParameter, ...]
    needs_target: bool
    uses_layer: bool
    spatial_layer: bool
    needs_gradients: bool
    smoothgrad_base: bool  # SmoothGrad can average it
    sanity: str  # "passes", "fails" or "not_checked" (model-randomisation test)
    sanity_detail: str


def _parameter(entry: pb.MethodParameter) -> MethodParameter:
    default = json_format.MessageToDict(entry.default_value)
    if entry.type == "int" and isinstance(default, float) and default.is_integer():
        default = int(default)  # JSON numbers are doubles on the wire
    return MethodParameter(
        name=entry.name, type=entry.type, default=default,
        minimum=entry.minimum if entry.HasField("minimum") else None,
        maximum=entry.maximum if entry.HasField("maximum") else None,
        choices=tuple(entry.choices), help=entry.help)


def decode_methods(response: pb.ListMethodsResponse) -> list[MethodDescription]:
    return [MethodDescription(
        name=info.name, description=info.description,
        parameters=tuple(_parameter(p) for p in info.parameters),
        needs_target=info.needs_target, uses_layer=info.uses_layer,
        spatial_layer=info.spatial_layer, needs_gradients=info.needs_gradients,
        smoothgrad_base=info.smoothgrad_base, sanity=info.sanity.verdict,
        sanity_detail=info.sanity.detail) for info in response.methods]
