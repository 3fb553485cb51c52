"""Proto <-> plain values. Decoding validates wire shapes; encoding splits large tensors."""

from __future__ import annotations

import time
from collections.abc import Iterator

import torch
from explainserve_client import codec as wire
from explainserve_client import render
from explainserve_client._proto import explainer_pb2 as pb
from google.protobuf import json_format

from explainserve.errors import InvalidArgument
from explainserve.models import preprocess
from explainserve.engine.explain import ExplainQuery, ExplainResult
from explainserve.methods.explain.boxes import box_from_heatmap

DEFAULT_OUTPUTS = (pb.OUTPUT_ATTRIBUTION, pb.OUTPUT_HEATMAP)


def decode_input(message: pb.Input, field: str = "input") -> bytes | torch.Tensor:
    source = message.WhichOneof("source")
    if source == "encoded_image":
        return message.encoded_image
    if source == "tensor":
        if message.tensor.dtype != pb.DATA_TYPE_FLOAT32:
            raise InvalidArgument(f"{field}.tensor must be float32, got dtype "
                                  f"{pb.DataType.Name(message.tensor.dtype)}")
        try:
            array = wire.decode(message.tensor)
        except wire.TensorDecodeError as error:
            raise InvalidArgument(f"{field}.tensor: {error}") from None
        return torch.from_numpy(array.copy())
    raise InvalidArgument(f"{field} holds neither encoded_image nor tensor")


def deadline_of(time_remaining: float | None) -> float | None:
    return None if time_remaining is None else time.monotonic() + time_remaining


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
        deadline=deadline_of(time_remaining),
    )


def encode_explain(result: ExplainResult, outputs: list[int], chunk_bytes: int) -> Iterator[pb.ExplainResponse]:
    """One response per target, more when a tensor has to be split into chunks."""
    wanted = set(outputs) or set(DEFAULT_OUTPUTS)
    labels = result.model.labels
    picture = None
    for index, item in enumerate(result.attributions):
        label = labels[item.target] if item.target >= 0 else ""  # activations without a score
        head = pb.ExplainResponse(target_index=index, target=item.target, label=label,
                                  score=item.score, probability=item.probability)
        tensors = []
        heatmap = item.heatmap.numpy() if item.heatmap is not None else None
        if pb.OUTPUT_ATTRIBUTION in wanted and item.attribution is not None:
            tensors.append(("attribution", wire.encode(item.attribution.numpy(), "attribution")))
        if pb.OUTPUT_HEATMAP in wanted and heatmap is not None:
            tensors.append(("heatmap", wire.encode(heatmap, "heatmap")))
        tensors += [("tensors", wire.encode(t.numpy(), name)) for name, t in item.tensors.items()]
        if pb.OUTPUT_OVERLAY_PNG in wanted and heatmap is not None:
            if picture is None:
                picture = preprocess.denormalize(result.image, result.model.config.mean,
                                                 result.model.config.std)
            head.overlay_png = render.overlay_png(picture, heatmap)
        if pb.OUTPUT_BOX in wanted and heatmap is not None:
            x_min, y_min, x_max, y_max = box_from_heatmap(heatmap)
            head.box.CopyFrom(pb.BoundingBox(x_min=x_min, y_min=y_min, x_max=x_max, y_max=y_max))
        if item.grid is not None:
            head.grid_png = render.image_png(item.grid.numpy())
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
        layers=[pb.LayerInfo(name=l.name, type=l.type, output_shape=list(l.output_shape))
                for l in model.layers],
        default_layer=model.default_layer, methods=methods, devices=devices,
    )


