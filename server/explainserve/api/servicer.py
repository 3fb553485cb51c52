"""The ExplainerService servicer: decode, submit, encode. No torch math lives here."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
from explainserve_client import wire_names
from explainserve_client._proto import explainer_pb2 as pb
from explainserve_client._proto import explainer_pb2_grpc as pb_grpc

from explainserve import logs, metrics
from explainserve.errors import ServiceError, Unavailable
from explainserve.methods.explain import sanity
from explainserve.methods.explain.registry import get_method, list_methods
from explainserve.api import embed as embed_api
from explainserve.api import explain as explain_api
from explainserve.api import maximize as maximize_api
from explainserve.engine.core import Engine
from explainserve.engine.explain import explain

logger = logging.getLogger(__name__)

UNKNOWN_LABEL = "unknown"


class Draining:
    """Set once shutdown begins: new calls are refused with UNAVAILABLE."""

    def __init__(self) -> None:
        self.active = False


class ExplainerServicer(pb_grpc.ExplainerServiceServicer):
    def __init__(self, engine: Engine, devices: list[str], draining: Draining) -> None:
        self._engine = engine
        self._devices = devices
        self._draining = draining
        self._model_names = frozenset(engine.registry.names())
        self._method_names = frozenset(list_methods()) | frozenset(wire_names.OBJECTIVES)

    def _labels(self, model: str, method: str) -> tuple[str, str]:
        """Metric label values: only names the server knows, else "unknown", so that a client
        cannot create series (or megabyte-long label values) at will."""
        known_model = not model or model in self._model_names
        known_method = not method or method in self._method_names
        return model if known_model else UNKNOWN_LABEL, method if known_method else UNKNOWN_LABEL

    @asynccontextmanager
    async def _call(self, rpc: str, context: grpc.aio.ServicerContext, model: str = "",
                    method: str = "") -> AsyncIterator[None]:
        """Map errors to statuses in one place, count every call, and tag its log lines and
        its response metadata with the request id."""
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        request_id = logs.request_id_from(context.invocation_metadata())
        echo = ((logs.REQUEST_ID_KEY, request_id),)
        # Echoed in the trailers only: sending headers early would commit the call, and a
        # committed call is never retried by the client's policy (UNAVAILABLE while draining).
        context.set_trailing_metadata(echo)
        bound = logs.bind_request_id(request_id)
        try:
            if self._draining.active:
                raise Unavailable("server is shutting down; retry on another replica")
            yield
        except ServiceError as error:
            code = grpc.StatusCode[error.status]
            if error.retry_after_ms is not None:
                context.set_trailing_metadata(
                    echo + (("grpc-retry-pushback-ms", str(error.retry_after_ms)),))
            await context.abort(code, error.message)
        except grpc.aio.AbortError:
            code = context.code() or grpc.StatusCode.UNKNOWN
            raise
        except asyncio.CancelledError:
            # gRPC cancels the handler both when the client cancels and at the deadline.
            remaining = context.time_remaining()
            expired = remaining is not None and remaining <= 0
            code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
            raise
        except Exception:
            code = grpc.StatusCode.INTERNAL
            logger.exception("%s failed for model=%s method=%s", rpc, model, method)
            await context.abort(code, f"internal error in {rpc}; see the server log")
        finally:
            status = code.name if isinstance(code, grpc.StatusCode) else str(code)
            model_label, method_label = self._labels(model, method)
            metrics.REQUESTS.labels(rpc=rpc, model=model_label, method=method_label,
                                    code=status).inc()
            metrics.REQUEST_DURATION.labels(rpc=rpc, model=model_label).observe(
                time.perf_counter() - started)
            logger.debug("%s model=%s method=%s ended %s after %.1f ms", rpc, model, method,
                         status, (time.perf_counter() - started) * 1000)
            logs.reset_request_id(bound)

    async def Explain(self, request: pb.ExplainRequest, context) -> AsyncIterator[pb.ExplainResponse]:
        async with self._call("Explain", context, request.model, request.method):
            self._engine.batcher.admit(request.model)  # refuse before the costly decode
            query = explain_api.decode_explain(request, context.time_remaining())
            result = await explain(self._engine, query)
            responses = list(explain_api.encode_explain(result, self._engine.limits.chunk_bytes))
        for response in responses:
            yield response

    async def Maximize(self, request: pb.MaximizeRequest, context) -> AsyncIterator[pb.MaximizeResponse]:
        # Frames are yielded inside _call: a failure after the first frame still ends the
        # stream with its status, and cancelling the call cancels the pending step.
        async with self._call("Maximize", context, request.model,
                              maximize_api.objective_name(request)):
            async for response in maximize_api.respond(self._engine, request,
                                                       context.time_remaining()):
                yield response

    async def Embed(self, requests, context) -> AsyncIterator[pb.EmbedResponse]:
        async with self._call("Embed", context):
            async for response in embed_api.serve_embed(self._engine, requests,
                                                        context.time_remaining()):
                yield response

    async def ListModels(self, request: pb.ListModelsRequest, context) -> pb.ListModelsResponse:
        async with self._call("ListModels", context):
            return pb.ListModelsResponse(models=[
                pb.ModelSummary(name=m.name, arch=m.config.arch, num_classes=m.config.num_classes,
                                devices=self._devices)
                for m in self._engine.registry
            ])

    async def GetModel(self, request: pb.GetModelRequest, context) -> pb.GetModelResponse:
        async with self._call("GetModel", context, request.name):
            model = self._engine.registry.get(request.name)
            return pb.GetModelResponse(
                model=explain_api.encode_model_info(model, list_methods(), self._devices))

    async def ListMethods(self, request: pb.ListMethodsRequest, context) -> pb.ListMethodsResponse:
        async with self._call("ListMethods", context):
            return pb.ListMethodsResponse(methods=[
                explain_api.encode_method_info(get_method(name), sanity.verdict(name))
                for name in list_methods()])
