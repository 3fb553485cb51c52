"""The HTTP routes. Every one decodes JSON into the query its gRPC twin builds and runs the same
engine call: v2 infer and v1 :predict / :explain through api/oip.py and engine/explain.py,
:maximize and :embed through the ExplainerService's own codecs (api/maximize.py, api/embed.py)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import numpy as np
import orjson
from explainserve_client import wire_names
from explainserve_client._proto import explainer_pb2 as pb
from explainserve_client.embed import assemble_embedding
from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from explainserve.api import oip
from explainserve.api import embed as embed_api
from explainserve.api import maximize as maximize_api
from explainserve.api.http import Gate, json_object, read_body, route
from explainserve.api.oip_servicer import SERVER_NAME, SERVER_VERSION
from explainserve.engine.core import Engine
from explainserve.engine.explain import explain
from explainserve.errors import InvalidArgument, ServiceError, echo
from explainserve.methods.explain.registry import get_method, list_methods

HEADER_LENGTH = "inference-header-content-length"
STATIC = resources.files("explainserve.api") / "static"


def _b64(value: Any, where: str) -> bytes:
    if isinstance(value, dict) and "b64" in value:
        value = value["b64"]
    if not isinstance(value, str):
        raise InvalidArgument(f"{where} must be a base64 string or {{\"b64\": ...}}, got "
                              f"{type(value).__name__}")
    try:
        return base64.b64decode(value.split(",", 1)[1] if value.startswith("data:") else value,
                                validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument(f"{where} is not valid base64 ({len(value)} characters, starting "
                              f"{echo(value[:16])})") from None


def _json_tensor(item: Any, index: int, binary: bytes | None, offset: int) -> tuple[oip.WireTensor, int]:
    """One v2 JSON input; with the binary tensor extension its bytes follow the JSON header."""
    if not isinstance(item, dict):
        raise InvalidArgument(f"inputs[{index}] must be an object with name, datatype, shape, data")
    name, datatype, shape = item.get("name", f"inputs[{index}]"), item.get("datatype"), item.get("shape")
    if not isinstance(datatype, str) or not isinstance(shape, list) or not all(
            isinstance(dim, int) and not isinstance(dim, bool) for dim in shape):
        raise InvalidArgument(f"input {echo(str(name))} needs a string datatype and an integer "
                              f"shape list, got datatype {datatype!r} and shape {shape!r}")
    size = (item.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if binary is None or not isinstance(size, int) or offset + size > len(binary):
            raise InvalidArgument(f"input {echo(str(name))}: binary_data_size {size!r} does not "
                                  "match the binary data after the JSON header")
        return oip.tensor_from_raw(name, datatype, shape, binary[offset:offset + size]), offset + size
    if datatype == "BYTES":
        data = [_b64(value, f"input {name!r} element") for value in _flat(item.get("data", []))]
    else:
        try:  # nested lists of numbers straight into an array; oip checks kind and range
            data = np.asarray(item.get("data", [])).ravel()
        except ValueError:  # ragged nesting
            raise oip.TensorMismatch(f"input {echo(str(name))}: data is not a regular array "
                                     "of numbers") from None
    return oip.tensor_from_values(name, datatype, shape, data), offset


def _infer_document(body: bytes, binary: bytes | None) -> tuple[dict[str, Any], list]:
    """The JSON header and its input tensors (on a worker thread: tensor-sized JSON)."""
    document = json_object(body)
    inputs, offset = [], 0
    for index, item in enumerate(document.get("inputs") or []):
        tensor, offset = _json_tensor(item, index, binary, offset)
        inputs.append(tensor)
    return document, inputs


def _flat(values: Any) -> list:
    if not isinstance(values, list):
        return [values]
    return [leaf for value in values for leaf in _flat(value)]


def _output_json(tensor: oip.WireTensor, binary: bool) -> tuple[dict[str, Any], bytes]:
    head: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype,
                            "shape": list(tensor.shape)}
    if binary:
        raw = oip.raw_bytes(tensor)
        head["parameters"] = {"binary_data_size": len(raw)}
        return head, raw
    if tensor.datatype == "BYTES":
        readable = tensor.name == "labels"
        head["data"] = [item.decode() if readable else base64.b64encode(item).decode()
                        for item in tensor.data]
        if not readable:
            head["parameters"] = {"content_type": "base64"}
    else:
        head["data"] = np.ascontiguousarray(tensor.data).ravel()  # orjson writes it natively
    return head, b""


class Routes:
    def __init__(self, engine: Engine, gate: Gate) -> None:
        self.engine = engine
        self.gate = gate

    async def _explain(self, model: str, image, parameters: dict[str, Any],
                       outputs: tuple[str, ...], request: Request, include_extra: bool):
        self.engine.batcher.admit(model)
        query = oip.explain_query(model, image, parameters, outputs, None)
        request.state.method = query.method
        result = await explain(self.engine, query)
        return oip.result_tensors(result, outputs, include_extra)

    # --- Open Inference Protocol v2 ---------------------------------------------------------
    async def live(self, request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(self, request: Request) -> Response:
        ready = not self.gate.draining.active
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    async def server_metadata(self, request: Request) -> Response:
        return JSONResponse({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": [
            "binary_tensor_data"]})

    async def model_metadata(self, request: Request) -> Response:
        return JSONResponse(oip.model_metadata(self.engine.registry.get(request.path_params["name"])))

    async def model_ready(self, request: Request) -> Response:
        self.engine.registry.get(request.path_params["name"])
        ready = not self.gate.draining.active
        return JSONResponse({"name": request.path_params["name"], "ready": ready},
                            status_code=200 if ready else 503)

    async def infer(self, request: Request) -> Response:
        model = request.path_params["name"]
        body = await read_body(request)
        header_length = request.headers.get(HEADER_LENGTH)
        binary = None
        if header_length is not None:
            if not header_length.isdigit() or int(header_length) > len(body):
                raise InvalidArgument(f"{HEADER_LENGTH} {echo(header_length)} is not a length "
                                      f"within the {len(body)}-byte body")
            body, binary = body[:int(header_length)], body[int(header_length):]
        # Parsing and writing JSON of a whole tensor takes milliseconds: off the event loop.
        document, inputs = await asyncio.to_thread(_infer_document, body, binary)
        wanted = document.get("outputs") or []
        if not isinstance(wanted, list) or not all(isinstance(o, dict) for o in wanted):
            raise InvalidArgument("outputs must be a list of objects with a name")
        outputs = oip.requested_outputs([str(o.get("name", "")) for o in wanted])
        binary_out = {str(o.get("name")) for o in wanted
                      if (o.get("parameters") or {}).get("binary_data")}
        if (document.get("parameters") or {}).get("binary_data_output"):
            binary_out = set(outputs)
        parameters = document.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise InvalidArgument("parameters must be a JSON object")
        parameters = {k: v for k, v in parameters.items() if k != "binary_data_output"}
        image = await asyncio.to_thread(oip.image_of, inputs)
        tensors = await self._explain(model, image, parameters, outputs, request, not wanted)
        header, tail = await asyncio.to_thread(_infer_answer, model, document, tensors, binary_out)
        if not any(tail):
            return Response(header, media_type="application/json")
        return Response(header + b"".join(tail), media_type="application/octet-stream",
                        headers={HEADER_LENGTH: str(len(header))})

    # --- KServe v1 --------------------------------------------------------------------------
    def _instances(self, document: dict[str, Any]) -> list:
        instances = document.get("instances")
        if not isinstance(instances, list) or not instances:
            raise InvalidArgument("the body needs a non-empty 'instances' list, each an image "
                                  "as {\"b64\": ...}, {\"image\": {\"b64\": ...}} or [H][W][3] pixels")
        if len(instances) > self.engine.limits.max_targets:
            raise InvalidArgument(f"{len(instances)} instances; at most "
                                  f"{self.engine.limits.max_targets} per request")
        return instances

    @staticmethod
    def _instance_image(instance: Any, index: int):
        if isinstance(instance, dict) and "image" in instance:
            instance = instance["image"]
        if isinstance(instance, (dict, str)):
            return _b64(instance, f"instances[{index}]")
        if isinstance(instance, list):
            pixels = np.asarray(instance)
            if pixels.dtype.kind not in "iu" or pixels.min(initial=0) < 0 or pixels.max(initial=0) > 255:
                raise InvalidArgument(f"instances[{index}] must hold integer pixels in [0, 255]")
            tensor = oip.tensor_from_values(f"instances[{index}]", "UINT8", pixels.shape,
                                            pixels.ravel().tolist())
            return oip.image_of([tensor])
        raise InvalidArgument(f"instances[{index}] is a {type(instance).__name__}, not an image")

    async def _v1(self, request: Request, outputs: tuple[str, ...], default_method: str | None):
        model = request.path_params["name"]
        document = json_object(await read_body(request))
        parameters = document.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise InvalidArgument("parameters must be a JSON object")
        if default_method is not None:
            parameters = {"method": default_method, **parameters}
        images = [await asyncio.to_thread(self._instance_image, item, index)
                  for index, item in enumerate(self._instances(document))]
        runs = [self._explain(model, image, parameters, outputs, request, False)
                for image in images]
        return await asyncio.gather(*runs)

    async def predict(self, request: Request) -> Response:
        # The classes come from the same explain path, with the cheapest map (one gradient).
        results = await self._v1(request, ("targets", "labels", "scores", "probabilities"),
                                 "saliency")
        predictions = []
        for tensors in results:
            by_name = {t.name: t.data for t in tensors}
            predictions.append([
                {"class": int(c), "label": l.decode(), "score": float(s), "probability": float(p)}
                for c, l, s, p in zip(by_name["targets"], by_name["labels"], by_name["scores"],
                                      by_name["probabilities"])])
        return JSONResponse({"predictions": predictions})

    async def explain(self, request: Request) -> Response:
        results = await self._v1(request, ("targets", "labels", "scores", "probabilities",
                                           "heatmap", "overlay"), None)
        explanations = []
        for tensors in results:
            item = {}
            for tensor in tensors:
                head, _ = _output_json(tensor, False)
                item[tensor.name] = (np.asarray(tensor.data).tolist()
                                     if tensor.datatype != "BYTES" else head["data"])
            explanations.append(item)
        return JSONResponse({"explanations": explanations})

    # --- for the page -------------------------------------------------------------------------
    async def methods(self, request: Request) -> Response:
        described = []
        for name in list_methods():
            spec = get_method(name)
            described.append({
                "name": name, "description": spec.description, "uses_layer": spec.uses_layer,
                "needs_target": spec.needs_target, "needs_gradients": spec.needs_gradients,
                "params": [{"name": p.name, "type": p.kind.__name__, "default": p.default,
                            "minimum": p.minimum, "maximum": p.maximum,
                            "choices": list(p.choices) if p.choices else None, "help": p.help}
                           for p in spec.params]})
        return JSONResponse({"methods": described})

    async def models(self, request: Request) -> Response:
        return JSONResponse({"models": [
            {"name": m.name, "arch": m.config.arch, "num_classes": m.config.num_classes,
             "input_size": list(m.input_shape), "labels": list(m.labels),
             "default_layer": m.default_layer} for m in self.engine.registry]})

    async def demo_images(self, request: Request) -> Response:
        from explainserve.api import http_demo
        return JSONResponse({"images": await asyncio.to_thread(http_demo.demo_images)})

    async def maximize(self, request: Request) -> Response:
        """Frames as NDJSON lines while they are computed; a closed connection cancels the
        pending step (Starlette cancels the generator on disconnect)."""
        message = self._message(pb.MaximizeRequest, json_object(await read_body(request)))
        message.model = request.path_params["name"]
        request.state.method = maximize_api.objective_name(message)
        self.engine.batcher.admit(message.model)
        frames = maximize_api.respond(self.engine, message, None)
        first = await anext(frames, None)  # errors before the first frame get a status

        async def lines() -> AsyncIterator[bytes]:
            pending = first
            try:
                while pending is not None:
                    yield (json.dumps(_frame_json(pending)) + "\n").encode()
                    pending = await anext(frames, None)
            except ServiceError as error:
                yield (json.dumps({"error": error.message, "status": error.status}) + "\n").encode()
            finally:
                await frames.aclose()
        return StreamingResponse(lines(), media_type="application/x-ndjson")

    async def embed(self, request: Request) -> Response:
        document = json_object(await read_body(request))
        items = document.get("items")
        if not isinstance(items, list) or not items:
            raise InvalidArgument("the body needs a non-empty 'items' list of {id, b64}")
        config = self._message(pb.EmbedConfig, document.get("config") or {})
        config.model = request.path_params["name"]
        config.return_vectors = False
        messages = [pb.EmbedRequest(config=config)] + [
            pb.EmbedRequest(item=pb.EmbedItem(id=str(item.get("id", i)) if isinstance(item, dict) else str(i),
                                              input=pb.Input(encoded_image=_b64(item, f"items[{i}]"))))
            for i, item in enumerate(items)]
        self.engine.batcher.admit(config.model)

        async def stream():
            for message in messages:
                yield message
        responses = [r async for r in embed_api.serve_embed(self.engine, stream(), None)]
        embedding = await asyncio.to_thread(assemble_embedding, responses)
        return JSONResponse({
            "ids": embedding.ids, "predicted": embedding.predicted.tolist(),
            "projection": None if embedding.projection is None else embedding.projection.tolist(),
            "failures": [{"id": f.id, "message": f.message} for f in embedding.failures]})

    @staticmethod
    def _message(message_class, document: Any):
        if not isinstance(document, dict):
            raise InvalidArgument(f"{message_class.DESCRIPTOR.name} must be a JSON object")
        try:
            return json_format.ParseDict(document, message_class())
        except json_format.ParseError as error:
            raise InvalidArgument(f"not a valid {message_class.DESCRIPTOR.name}: {error}") from None

    async def page(self, request: Request) -> Response:
        return Response((STATIC / "index.html").read_bytes(), media_type="text/html")


def _infer_answer(model: str, document: dict[str, Any], tensors: list[oip.WireTensor],
                  binary_out: set[str]) -> tuple[bytes, list[bytes]]:
    heads, tail = [], []
    for tensor in tensors:
        head, raw = _output_json(tensor, tensor.name in binary_out)
        heads.append(head)
        tail.append(raw)
    answer = {"model_name": model, "model_version": oip.MODEL_VERSION, "outputs": heads,
              **({"id": document["id"]} if "id" in document else {})}
    return orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY), tail


def _frame_json(frame: pb.MaximizeResponse) -> dict[str, Any]:
    return {"image_index": frame.image_index, "unit": frame.unit, "step": frame.step,
            "final": frame.final_frame, "objective_value": frame.objective_value,
            "predicted_class": frame.predicted_class, "probability": frame.probability,
            "png": base64.b64encode(frame.image_png).decode() if frame.image_png else None}


def build_app(engine: Engine, gate: Gate) -> Starlette:
    gate.known_models = frozenset(engine.registry.names())
    gate.known_methods = frozenset(list_methods()) | frozenset(wire_names.OBJECTIVES)
    r = Routes(engine, gate)

    def at(path: str, rpc: str, handler, methods=("GET",), health: bool = False) -> Route:
        return Route(path, route(gate, rpc, handler, health=health), methods=list(methods))
    routes = [
        at("/v2/health/live", "http_v2_health_live", r.live, health=True),
        at("/v2/health/ready", "http_v2_health_ready", r.ready, health=True),
        at("/v2", "http_v2_server_metadata", r.server_metadata),
        at("/v2/models/{name}", "http_v2_model_metadata", r.model_metadata),
        at("/v2/models/{name}/versions/{version}", "http_v2_model_metadata", r.model_metadata),
        at("/v2/models/{name}/ready", "http_v2_model_ready", r.model_ready),
        at("/v2/models/{name}/infer", "http_v2_infer", r.infer, ("POST",)),
        at("/v2/models/{name}/versions/{version}/infer", "http_v2_infer", r.infer, ("POST",)),
        at("/v1/models/{name}:predict", "http_v1_predict", r.predict, ("POST",)),
        at("/v1/models/{name}:explain", "http_v1_explain", r.explain, ("POST",)),
        at("/v1/models/{name}:maximize", "http_v1_maximize", r.maximize, ("POST",)),
        at("/v1/models/{name}:embed", "http_v1_embed", r.embed, ("POST",)),
        at("/v1/methods", "http_v1_methods", r.methods),
        at("/v1/models", "http_v1_models", r.models),
        at("/v1/demo-images", "http_v1_demo_images", r.demo_images),
        Route("/", r.page, methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=str(STATIC)), name="static"),
    ]
    return Starlette(routes=routes)
