"""inference.GRPCInferenceService (the Open Inference Protocol over gRPC) beside ExplainerService
on the same port. It only translates: ModelInfer becomes the ExplainQuery that Explain would
build, and runs through engine/explain.py; errors, metrics and request ids go through the
ExplainerService's one `_call` wrapper, so both services end calls with the same statuses."""

from __future__ import annotations

import asyncio

import grpc
from explainserve_client._proto import grpc_predict_v2_pb2 as oip_pb

from explainserve.api import oip
from explainserve.api.handlers import _parse
from explainserve.api.servicer import Draining, ExplainerServicer
from explainserve.api.transport import MAX_MESSAGE_BYTES
from explainserve.engine.explain import explain
from explainserve.errors import InvalidArgument

SERVICE = oip_pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
SERVER_NAME = "explainserve"
try:
    from importlib.metadata import version as _version
    SERVER_VERSION = _version("explainserve")
except Exception:  # noqa: BLE001 - not installed as a distribution (a source checkout)
    SERVER_VERSION = "0"


class InferenceServicer:
    def __init__(self, explainer: ExplainerServicer, draining: Draining) -> None:
        self._explainer = explainer
        self._engine = explainer._engine
        self._draining = draining

    def _call(self, rpc: str, context, model: str = "", method: str = ""):
        return self._explainer._call(rpc, context, model, method)

    async def ServerLive(self, request, context) -> oip_pb.ServerLiveResponse:
        async with self._call("ServerLive", context):
            return oip_pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context) -> oip_pb.ServerReadyResponse:
        async with self._call("ServerReady", context):
            return oip_pb.ServerReadyResponse(ready=not self._draining.active)

    async def ModelReady(self, request, context) -> oip_pb.ModelReadyResponse:
        async with self._call("ModelReady", context, request.name):
            self._engine.registry.get(request.name)  # NOT_FOUND names an unknown model
            return oip_pb.ModelReadyResponse(ready=not self._draining.active)

    async def ServerMetadata(self, request, context) -> oip_pb.ServerMetadataResponse:
        async with self._call("ServerMetadata", context):
            return oip_pb.ServerMetadataResponse(name=SERVER_NAME, version=SERVER_VERSION)

    async def ModelMetadata(self, request, context) -> oip_pb.ModelMetadataResponse:
        async with self._call("ModelMetadata", context, request.name):
            return oip.metadata_response(self._engine.registry.get(request.name))

    async def ModelInfer(self, request: oip_pb.ModelInferRequest, context) -> oip_pb.ModelInferResponse:
        method = request.parameters["method"].string_param if "method" in request.parameters else ""
        async with self._call("ModelInfer", context, request.model_name, method):
            self._engine.batcher.admit(request.model_name)  # refuse before the costly decode
            parameters = oip.parameters_of(request.parameters)
            outputs = oip.requested_outputs([item.name for item in request.outputs])
            # Decoding pixels (and PNG-encoding UINT8 ones) takes milliseconds: off the loop.
            image = await asyncio.to_thread(lambda: oip.image_of(oip.inputs_of(request)))
            query = oip.explain_query(request.model_name, image, parameters, outputs,
                                      context.time_remaining())
            result = await explain(self._engine, query)
            response = oip.infer_response(
                request.model_name, request.id,
                oip.result_tensors(result, outputs, include_extra=not request.outputs))
            if response.ByteSize() > MAX_MESSAGE_BYTES:
                raise InvalidArgument(
                    f"the response of {response.ByteSize()} bytes exceeds the message limit of "
                    f"{MAX_MESSAGE_BYTES} bytes; ask for fewer targets or outputs (e.g. only "
                    "scores and heatmap), or use ExplainerService.Explain, which streams")
            return response


def inference_handler(servicer: InferenceServicer) -> grpc.GenericRpcHandler:
    """Every method of the service, with the request bytes parsed by us (see handlers.py)."""
    def unary(method, message_class):
        async def handle(raw: bytes, context):
            return await method(await _parse(message_class, raw, context), context)
        return handle

    handlers = {
        descriptor.name: grpc.unary_unary_rpc_method_handler(
            unary(getattr(servicer, descriptor.name), getattr(oip_pb, descriptor.input_type.name)),
            response_serializer=getattr(oip_pb, descriptor.output_type.name).SerializeToString)
        for descriptor in SERVICE.methods
    }
    return grpc.method_handlers_generic_handler(SERVICE.full_name, handlers)
