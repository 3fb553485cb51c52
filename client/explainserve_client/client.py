"""The thin Python client: numpy, grpcio, protobuf and pillow; no torch."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from google.protobuf import struct_pb2

from . import codec
# MAX_MESSAGE_BYTES stays importable from here, where it was defined before channel.py.
from .channel import (MAX_MESSAGE_BYTES, SERVICE_CONFIG, channel_options,  # noqa: F401
                      open_channel, target_of)
from ._proto import explainer_pb2 as pb
from ._proto import explainer_pb2_grpc as pb_grpc
from .embed import Embedding, assemble_embedding, embed_config, embed_requests
from .images import ImageLike, to_input
from .maximize import MaximizeFrame, assemble_frames, maximize_request
from .methods import MethodDescription, decode_methods
from .wire_names import BASELINES, FAITHFULNESS, OUTPUTS




class ExplainServeError(Exception):
    """A call that ended with a gRPC status other than OK."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


@dataclass(frozen=True)
class LayerLayout:
    """How a layer's output reads as [channels, height, width] maps."""

    kind: str = "none"  # nchw, nhwc, tokens or none
    channels: int = 0
    height: int = 0
    width: int = 0
    prefix_tokens: int = 0

    def __str__(self) -> str:
        if self.kind in ("none", ""):
            return "none"
        text = f"{self.kind} {self.channels}x{self.height}x{self.width}"
        return text + (f" +{self.prefix_tokens} prefix" if self.prefix_tokens else "")


@dataclass(frozen=True)
class Layer:
    name: str
    type: str
    output_shape: tuple[int, ...]
    layout: LayerLayout = LayerLayout()


@dataclass(frozen=True)
class ModelSummary:
    name: str
    arch: str
    num_classes: int
    devices: tuple[str, ...]


@dataclass(frozen=True)
class ModelDescription:
    name: str
    arch: str
    num_classes: int
    input_size: tuple[int, int, int]  # (C, H, W)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    labels: tuple[str, ...]
    layers: tuple[Layer, ...]
    default_layer: str
    methods: tuple[str, ...]
    devices: tuple[str, ...]


@dataclass
class Explanation:
    """The explanation of one target class."""

    target: int
    label: str
    score: float
    probability: float
    attribution: np.ndarray | None = None
    heatmap: np.ndarray | None = None
    overlay_png: bytes | None = None
    box: tuple[int, int, int, int] | None = None  # x_min, y_min, x_max, y_max (inclusive)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    grid_png: bytes | None = None
    # deletion_auc / insertion_auc when asked for (their curves are in tensors as
    # deletion_curve / insertion_curve) and figures the method reports, e.g. completeness_gap
    quality: dict[str, float] = field(default_factory=dict)


class Client:
    """A connection to an ExplainServe server; use it as a context manager."""

    def __init__(
        self,
        target: str | Sequence[str],
        *,
        timeout: float | None = 60.0,
        root_certificates: bytes | None = None,
        client_certificate: bytes | None = None,
        client_key: bytes | None = None,
        token: str | None = None,
        options: Sequence[tuple[str, Any]] = (),
        service_config: Mapping[str, Any] | None = SERVICE_CONFIG,
    ) -> None:
        """target: one address, a gRPC target (`dns:///name:port` for a headless Service), or
        several `host:port` addresses (a list, or one string with commas), balanced with
        round_robin. service_config: the retry and balancing policy (default: the one of
        docs/service_config.json); None sends none, and a `grpc.service_config` option wins."""
        self._channel_options = channel_options(options, service_config)
        self._credentials = None
        if root_certificates is not None:
            self._credentials = grpc.ssl_channel_credentials(
                root_certificates=root_certificates,
                private_key=client_key,
                certificate_chain=client_certificate,
            )
        self._retired: list[grpc.Channel] = []
        self._channel = open_channel(target_of(target), self._channel_options, self._credentials)
        self._stub = pb_grpc.ExplainerServiceStub(self._channel)
        self._timeout = timeout
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        for channel in (*self._retired, self._channel):
            channel.close()
        self._retired.clear()

    def update_targets(self, target: str | Sequence[str]) -> None:
        """Send new calls to another address list (as a headless Service's DNS answer changes):
        a fresh channel for the new list; calls already running finish on the old one, which
        stays open until close()."""
        fresh = open_channel(target_of(target), self._channel_options, self._credentials)
        self._retired.append(self._channel)
        self._channel, self._stub = fresh, pb_grpc.ExplainerServiceStub(fresh)

    @property
    def stub(self) -> pb_grpc.ExplainerServiceStub:
        """The raw generated stub, for calls this class does not wrap."""
        return self._stub

    def _call_options(self, timeout: float | None, request_id: str | None) -> dict[str, Any]:
        metadata = self._metadata + ((("x-request-id", request_id),) if request_id else ())
        return {"timeout": self._timeout if timeout is None else timeout, "metadata": metadata}

    def list_models(self, *, timeout: float | None = None) -> list[ModelSummary]:
        response = _unary(self._stub.ListModels, pb.ListModelsRequest(),
                          **self._call_options(timeout, None))
        return [ModelSummary(m.name, m.arch, m.num_classes, tuple(m.devices)) for m in response.models]

    def list_methods(self, *, timeout: float | None = None) -> list[MethodDescription]:
        """Every Explain method: parameters, needs and sanity-check verdict, by name."""
        return decode_methods(_unary(self._stub.ListMethods, pb.ListMethodsRequest(),
                                     **self._call_options(timeout, None)))

    def get_model(self, name: str, *, timeout: float | None = None) -> ModelDescription:
        info = _unary(self._stub.GetModel, pb.GetModelRequest(name=name),
                      **self._call_options(timeout, None)).model
        return ModelDescription(
            name=info.name, arch=info.arch, num_classes=info.num_classes,
            input_size=(info.input_channels, info.input_height, info.input_width),
            mean=tuple(info.mean), std=tuple(info.std), labels=tuple(info.labels),
            layers=tuple(Layer(l.name, l.type, tuple(l.output_shape), LayerLayout(
                l.layout.kind or "none", l.layout.channels, l.layout.height, l.layout.width,
                l.layout.prefix_tokens)) for l in info.layers),
            default_layer=info.default_layer, methods=tuple(info.methods),
            devices=tuple(info.devices),
        )

    def explain(
        self,
        image: ImageLike,
        model: str = "demo",
        method: str = "gradcam",
        targets: Iterable[int] | int | None = None,
        layer: str | None = None,
        *,
        top_k: int = 0,
        extra_layers: Sequence[str] = (),
        outputs: Sequence[str] = ("attribution", "heatmap"),
        overlay: bool = False,
        box: bool = False,
        evaluate: Sequence[str] = (),
        evaluation_steps: int = 0,
        evaluation_baseline: str | None = None,
        evaluation_constant: float = 0.0,
        evaluation_blur_sigma: float = 0.0,
        baseline_tensor: np.ndarray | None = None,
        timeout: float | None = None,
        request_id: str | None = None,
        **params: Any,
    ) -> list[Explanation]:
        """Explain one image; one Explanation per target, in the order the server explains them.

        targets: class indices, or None for the top_k predicted classes (default: the top one).
        params: the method's parameters, e.g. window=32, stride=2 for occlusion.
        evaluate: faithfulness scores per target, "deletion" and/or "insertion" (Petsiuk et
        al. 2018), in evaluation_steps steps (0: the server's 64) towards evaluation_baseline
        ("blur", "constant" or None for each score's default); see Explanation.quality.
        baseline_tensor: the baseline image of integrated_gradients with baseline="tensor",
        float32 [C,H,W] in the model's normalised space.
        """
        request = self.explain_request(
            image, model, method, targets, layer, top_k=top_k, extra_layers=extra_layers,
            outputs=outputs, overlay=overlay, box=box, evaluate=evaluate,
            evaluation_steps=evaluation_steps, evaluation_baseline=evaluation_baseline,
            evaluation_constant=evaluation_constant, evaluation_blur_sigma=evaluation_blur_sigma,
            baseline_tensor=baseline_tensor, **params)
        stream = self._stub.Explain(request, **self._call_options(timeout, request_id))
        try:
            return assemble_explanations(stream)
        except grpc.RpcError as error:
            raise ExplainServeError(error.code(), error.details()) from None

    @staticmethod
    def explain_request(
        image: ImageLike, model: str, method: str, targets: Iterable[int] | int | None = None,
        layer: str | None = None, *, top_k: int = 0, extra_layers: Sequence[str] = (),
        outputs: Sequence[str] = ("attribution", "heatmap"), overlay: bool = False,
        box: bool = False, evaluate: Sequence[str] = (), evaluation_steps: int = 0,
        evaluation_baseline: str | None = None, evaluation_constant: float = 0.0,
        evaluation_blur_sigma: float = 0.0, baseline_tensor: np.ndarray | None = None,
        **params: Any,
    ) -> pb.ExplainRequest:
        """Build the ExplainRequest that explain() sends (useful for custom stubs and tests)."""
        if isinstance(targets, (int, np.integer)):
            targets = [int(targets)]
        wanted = list(outputs) + (["overlay"] if overlay else []) + (["box"] if box else [])
        unknown = [name for name in wanted if name not in OUTPUTS]
        if unknown:
            raise ValueError(f"unknown outputs {unknown}; choose from {sorted(OUTPUTS)}")
        if isinstance(evaluate, str):
            evaluate = [evaluate]
        unknown = [name for name in evaluate if name not in FAITHFULNESS]
        if unknown:
            raise ValueError(f"unknown evaluate {unknown}; choose from {sorted(FAITHFULNESS)}")
        if evaluation_baseline is not None and evaluation_baseline not in BASELINES:
            raise ValueError(f"unknown evaluation_baseline {evaluation_baseline!r}; choose from "
                             f"{sorted(BASELINES)}")
        parameters = struct_pb2.Struct()
        parameters.update(_plain(params))
        baseline = (codec.encode(np.asarray(baseline_tensor, dtype=np.float32), "baseline")
                    if baseline_tensor is not None else None)
        return pb.ExplainRequest(
            baseline=baseline,
            model=model, method=method, input=to_input(image),
            targets=[int(t) for t in targets or ()], top_k=top_k, layer=layer or "",
            extra_layers=list(extra_layers), parameters=parameters,
            outputs=[OUTPUTS[name] for name in dict.fromkeys(wanted)],
            evaluate=[FAITHFULNESS[name] for name in dict.fromkeys(evaluate)],
            evaluation=pb.EvaluationOptions(
                steps=evaluation_steps, constant=evaluation_constant,
                blur_sigma=evaluation_blur_sigma,
                baseline=BASELINES[evaluation_baseline] if evaluation_baseline else 0),
        )

    def embed(
        self,
        images: Iterable[ImageLike],
        model: str = "demo",
        layer: str | None = None,
        *,
        pooling: str = "mean",
        project: str | None = None,
        dims: int = 2,
        neighbours: int = 0,
        metric: str = "cosine",
        top_patches: Iterable[tuple[str, int]] = (),
        top_k: int = 9,
        ids: Iterable[str] | None = None,
        labels: Iterable[int | None] | None = None,
        return_vectors: bool = True,
        progress: Callable[[int], None] | None = None,
        timeout: float | None = None,
        request_id: str | None = None,
    ) -> Embedding:
        """Feature vectors of any iterable of images (read lazily, one at a time) at `layer`
        (default: the penultimate layer), with the set results: a projection ("pca", the
        default, or "tsne"; `dims` 2 or 3), `neighbours` nearest neighbours per image, and the
        top_k most activating patches of each (layer, channel) in `top_patches`.
        progress(n) is called as each image's result arrives. A big set needs a `timeout`
        that covers the whole stream."""
        config = embed_config(model, layer, pooling, project, dims, neighbours, metric,
                              top_patches, top_k, return_vectors)
        sent_labels: list[int] | None = [] if labels is not None else None
        requests = embed_requests(config, images, ids, labels, sent_labels)
        stream = self._stub.Embed(requests, **self._call_options(timeout, request_id))
        try:
            return assemble_embedding(stream, sent_labels, progress)
        except grpc.RpcError as error:
            raise ExplainServeError(error.code(), error.details()) from None


    def maximize_frames(
        self, model: str = "demo", units: Iterable[int] | int = (), objective: str = "class", *,
        layer: str | None = None, neuron: tuple[int, int] = (-1, -1),
        reference: ImageLike | None = None, initialization: str | None = None, steps: int = 0,
        frame_every: int = 0, seed: int = 0, formats: Sequence[str] = ("png",),
        timeout: float | None = None, request_id: str | None = None, **params: Any,
    ) -> Iterator[MaximizeFrame]:
        """Stream a Maximize call's frames as they arrive (every frame_every steps, then a
        final frame per image). units: class indices, or channels for "channel"/"neuron".
        params: optimiser and prior settings, e.g. l2=0.05, jitter=2, parameterization="fourier".
        Leaving the loop early cancels the call; the server stops within one step."""
        request = maximize_request(model, objective, units, layer=layer, neuron=neuron,
                                   reference=reference, initialization=initialization,
                                   steps=steps, frame_every=frame_every, seed=seed,
                                   formats=formats, params=_plain(params))
        stream = self._stub.Maximize(request, **self._call_options(timeout, request_id))
        try:
            yield from assemble_frames(stream)
        except grpc.RpcError as error:
            raise ExplainServeError(error.code(), error.details()) from None
        finally:
            stream.cancel()

    def maximize(self, model: str = "demo", units: Iterable[int] | int = (),
                 objective: str = "class", **kwargs: Any) -> list[MaximizeFrame]:
        """Run a Maximize call to the end; the final frame of each image, in image order.
        Takes the keyword arguments of maximize_frames."""
        return [frame for frame in self.maximize_frames(model, units, objective, **kwargs)
                if frame.final]

def assemble_explanations(responses: Iterable[pb.ExplainResponse]) -> list[Explanation]:
    """Join a stream of ExplainResponse chunks into one Explanation per target."""
    by_index: dict[int, Explanation] = {}
    pending: dict[tuple[int, str], codec.TensorAssembler] = {}
    for response in responses:
        explanation = by_index.get(response.target_index)
        if explanation is None:
            explanation = by_index[response.target_index] = Explanation(
                target=response.target, label=response.label, score=response.score,
                probability=response.probability,
            )
        if response.HasField("attribution"):
            pending.setdefault((response.target_index, "\0attribution"), codec.TensorAssembler()).add(response.attribution)
        if response.HasField("heatmap"):
            pending.setdefault((response.target_index, "\0heatmap"), codec.TensorAssembler()).add(response.heatmap)
        for tensor in response.tensors:
            pending.setdefault((response.target_index, tensor.name), codec.TensorAssembler()).add(tensor)
        if response.overlay_png:
            explanation.overlay_png = response.overlay_png
        if response.grid_png:
            explanation.grid_png = response.grid_png
        explanation.quality.update(response.quality)
        if response.HasField("box"):
            b = response.box
            explanation.box = (b.x_min, b.y_min, b.x_max, b.y_max)
    for (index, name), assembler in pending.items():
        array = assembler.result()
        if name == "\0attribution":
            by_index[index].attribution = array
        elif name == "\0heatmap":
            by_index[index].heatmap = array
        else:
            by_index[index].tensors[name] = array
    return [by_index[index] for index in sorted(by_index)]


def _unary(method: Any, request: Any, **kwargs: Any) -> Any:
    try:
        return method(request, **kwargs)
    except grpc.RpcError as error:
        raise ExplainServeError(error.code(), error.details()) from None


def _plain(params: Mapping[str, Any]) -> dict[str, Any]:
    """Struct holds JSON values: turn numpy scalars and tuples into plain Python."""
    def convert(value: Any) -> Any:
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, (tuple, list, np.ndarray)):
            return [convert(v) for v in value]
        return value
    return {key: convert(value) for key, value in params.items()}
