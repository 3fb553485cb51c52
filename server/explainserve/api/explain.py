"""Explain and the model descriptions on the wire: ExplainRequest -> ExplainQuery, and results
(already rendered by the engine) -> ExplainResponse messages, big tensors split into chunks."""

from __future__ import annotations

from collections.abc import Iterator

from explainserve_client import codec as wire
from explainserve_client import wire_names
from explainserve_client._proto import explainer_pb2 as pb
from google.protobuf import json_format

from explainserve.api.inputs import deadline_of, decode_input
from explainserve.engine.explain import ExplainQuery, ExplainResult
from explainserve.errors import InvalidArgument

_OUTPUT_NAMES = wire_names.names_by_value(wire_names.OUTPUTS)
_FAITHFULNESS_NAMES = wire_names.names_by_value(wire_names.FAITHFULNESS)
_BASELINE_NAMES = wire_names.names_by_value(wire_names.BASELINES, unspecified="")


def decode_explain(request: pb.ExplainRequest, time_remaining: float | None) -> ExplainQuery:
    if not request.model:
        raise InvalidArgument("model is empty")
    if not request.method:
        raise InvalidArgument("method is empty")
    return ExplainQuery(
        model=request.model, method=request.method, image=decode_input(request.input),
        targets=tuple(request.targets), top_k=request.top_k, layer=request.layer,
        extra_layers=tuple(request.extra_layers),
        params=json_format.MessageToDict(request.parameters),
        deadline=deadline_of(time_remaining), outputs=_outputs(request.outputs),
        evaluate=_evaluate(request.evaluate), **_evaluation_options(request.evaluation),
        path_baseline=(decode_input(pb.Input(tensor=request.baseline), "baseline")
                       if request.HasField("baseline") else None),
    )


def _evaluate(values) -> tuple[str, ...]:
    unknown = [value for value in values if value not in _FAITHFULNESS_NAMES]
    if unknown:
        raise InvalidArgument(f"evaluate {unknown} are not known values; choose from "
                              f"{[pb.Faithfulness.Name(v) for v in _FAITHFULNESS_NAMES]}")
    return tuple(_FAITHFULNESS_NAMES[value] for value in values)


def _evaluation_options(options: pb.EvaluationOptions) -> dict:
    if options.baseline not in _BASELINE_NAMES:
        raise InvalidArgument(f"evaluation baseline {options.baseline} is not a known value; "
                              f"choose from {list(pb.Baseline.keys())}")
    return {"evaluation_steps": options.steps, "baseline": _BASELINE_NAMES[options.baseline],
            "baseline_constant": options.constant, "blur_sigma": options.blur_sigma}


def _outputs(values) -> frozenset[str]:
    unknown = [value for value in values if value not in _OUTPUT_NAMES]
    if unknown:
        raise InvalidArgument(f"outputs {unknown} are not known values; choose from "
                              f"{[pb.Output.Name(value) for value in _OUTPUT_NAMES]}")
    return frozenset(_OUTPUT_NAMES[value] for value in values) or frozenset(
        wire_names.DEFAULT_OUTPUTS)


def encode_explain(result: ExplainResult, chunk_bytes: int) -> Iterator[pb.ExplainResponse]:
    """One response per target, more when a tensor has to be split into chunks."""
    for index, item in enumerate(result.explanations):
        head = pb.ExplainResponse(target_index=index, target=item.target, label=item.label,
                                  score=item.score, probability=item.probability)
        tensors = []
        if item.attribution is not None:
            tensors.append(("attribution", wire.encode(item.attribution, "attribution")))
        if item.heatmap is not None:
            tensors.append(("heatmap", wire.encode(item.heatmap, "heatmap")))
        tensors += [("tensors", wire.encode(array, name)) for name, array in item.tensors.items()]
        if item.overlay_png is not None:
            head.overlay_png = item.overlay_png
        if item.box is not None:
            x_min, y_min, x_max, y_max = item.box
            head.box.CopyFrom(pb.BoundingBox(x_min=x_min, y_min=y_min, x_max=x_max, y_max=y_max))
        if item.grid_png is not None:
            head.grid_png = item.grid_png
        head.quality.update(item.quality)
        yield from _with_chunks(head, tensors, chunk_bytes)


def _with_chunks(head: pb.ExplainResponse, tensors: list[tuple[str, pb.Tensor]],
                 chunk_bytes: int) -> Iterator[pb.ExplainResponse]:
    """The head carries the metadata and every tensor that fits; big tensors follow in
    continuation messages with the same target_index. The last message has complete=True."""
    current = head
    budget = chunk_bytes
    for field, tensor in tensors:
        for piece in wire.split(tensor, chunk_bytes):
            if len(piece.data) > budget or (field != "tensors" and current.HasField(field)):
                yield current
                current = pb.ExplainResponse(target_index=head.target_index, target=head.target)
                budget = chunk_bytes
            if field == "tensors":
                current.tensors.append(piece)
            else:
                getattr(current, field).CopyFrom(piece)
            budget -= len(piece.data)
    current.complete = True
    yield current


def encode_model_info(model, methods: list[str], devices: list[str]) -> pb.ModelInfo:
    config = model.config
    channels, height, width = model.input_shape
    return pb.ModelInfo(
        name=model.name, arch=config.arch, num_classes=config.num_classes,
        input_channels=channels, input_height=height, input_width=width,
        mean=list(config.mean), std=list(config.std), labels=list(model.labels),
        layers=[pb.LayerInfo(name=l.name, type=l.type, output_shape=list(l.output_shape),
                             layout=pb.LayerLayout(
                                 kind=l.layout.kind, channels=l.layout.channels,
                                 height=l.layout.height, width=l.layout.width,
                                 prefix_tokens=l.layout.prefix_tokens))
                for l in model.layers],
        default_layer=model.default_layer, methods=methods, devices=devices,
    )


_PARAM_TYPES = {int: "int", float: "float", bool: "bool", str: "string"}


def encode_method_info(spec, sanity) -> pb.MethodInfo:
    """A registered MethodSpec and its sanity-check verdict on the wire."""
    parameters = []
    for param in spec.params:
        entry = pb.MethodParameter(name=param.name, type=_PARAM_TYPES[param.kind],
                                   choices=list(param.choices or ()), help=param.help)
        json_format.ParseDict(param.default, entry.default_value)  # a JSON value, as sent
        if param.minimum is not None:
            entry.minimum = param.minimum
        if param.maximum is not None:
            entry.maximum = param.maximum
        parameters.append(entry)
    return pb.MethodInfo(
        name=spec.name, description=spec.description, parameters=parameters,
        needs_target=spec.needs_target, uses_layer=spec.uses_layer,
        spatial_layer=spec.spatial_layer, needs_gradients=spec.needs_gradients,
        smoothgrad_base=spec.gradient_kernel is not None,
        sanity=pb.SanityCheck(verdict=sanity.verdict, detail=sanity.detail))

