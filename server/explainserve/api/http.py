"""HTTP/JSON beside gRPC, in the server's own event loop: the Open Inference Protocol's REST
binding (/v2/...), KServe's v1 protocol (/v1/models/NAME:predict, :explain), a few routes for
the page at `/` and the page itself. Starlette routes (api/http_routes.py) served by uvicorn.

Each route goes through `Route.call`, the HTTP twin of ExplainerServicer._call: the same TLS,
bearer tokens and metrics (one `rpc` label per route), a bounded body, and the errors of the
layers below mapped to HTTP statuses, the message naming the bad value.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from explainserve import logs, metrics
from explainserve.api.auth import bearer_token
from explainserve.api.transport import MAX_MESSAGE_BYTES
from explainserve.config import ServerConfig
from explainserve.errors import InvalidArgument, ServiceError

logger = logging.getLogger(__name__)

# A body is bounded like a gRPC message: an image travels best as base64 PNG/JPEG or binary
# tensor data (Inference-Header-Content-Length); a JSON list of numbers is ~5x larger.
MAX_BODY_BYTES = MAX_MESSAGE_BYTES
HEALTH_SERVICE = "grpc.health.v1.Health"
UNKNOWN_LABEL = "unknown"

# gRPC status -> HTTP status (KServe answers 400 for any invalid input).
HTTP_STATUS = {"INVALID_ARGUMENT": 400, "OUT_OF_RANGE": 400, "FAILED_PRECONDITION": 400,
               "NOT_FOUND": 404, "UNAUTHENTICATED": 401, "RESOURCE_EXHAUSTED": 429,
               "DEADLINE_EXCEEDED": 504, "UNAVAILABLE": 503, "CANCELLED": 499, "INTERNAL": 500}


class HttpError(ServiceError):
    """An error that only HTTP has (a body too large); `code` is the HTTP status."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.status = {413: "RESOURCE_EXHAUSTED"}.get(code, "INVALID_ARGUMENT")


class Gate:
    """What every route checks first: draining, and the bearer token."""

    def __init__(self, config: ServerConfig, draining) -> None:
        self._tokens = tuple(token.encode() for token in config.security.tokens)
        self._open_health = HEALTH_SERVICE in config.security.open_services
        self.draining = draining
        self.known_models: frozenset[str] = frozenset()
        self.known_methods: frozenset[str] = frozenset()

    def admits(self, request: Request, health: bool) -> bool:
        if not self._tokens or (health and self._open_health):
            return True
        presented = bearer_token([("authorization", request.headers.get("authorization", ""))])
        if presented is None:
            return False
        matched = False
        for token in self._tokens:  # every token compared: the time says nothing
            matched |= hmac.compare_digest(presented, token)
        return matched


def error_response(code: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=code, headers=headers)


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HttpError(413, f"request body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpError(413, f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(body: bytes, what: str = "request body") -> Any:
    try:
        return orjson.loads(body)  # several times faster than json on tensor-sized bodies
    except orjson.JSONDecodeError as error:
        raise InvalidArgument(f"the {what} ({len(body)} bytes) is not valid JSON: {error}") from None


def json_object(body: bytes) -> dict[str, Any]:
    value = parse_json(body) if body else {}
    if not isinstance(value, dict):
        raise InvalidArgument(f"the request body must be a JSON object, got {type(value).__name__}")
    return value


Handler = Callable[[Request], Awaitable[Response]]


def route(gate: Gate, rpc: str, handler: Handler, *, health: bool = False) -> Handler:
    """Wrap a route: auth, draining, errors to statuses, metrics and the request id."""
    async def endpoint(request: Request) -> Response:
        started = time.perf_counter()
        model = request.path_params.get("name", "")
        request_id = logs.request_id_from([(logs.REQUEST_ID_KEY,
                                            request.headers.get(logs.REQUEST_ID_KEY, ""))])
        bound = logs.bind_request_id(request_id)
        status, response = "OK", None
        request.state.method = ""
        try:
            if not gate.admits(request, health):
                metrics.REJECTED.labels(reason="unauthenticated").inc()
                status = "UNAUTHENTICATED"
                response = error_response(401, "missing or invalid bearer token; send "
                                               "'Authorization: Bearer <token>'",
                                          {"WWW-Authenticate": "Bearer"})
            elif gate.draining.active and not health:
                status = "UNAVAILABLE"
                response = error_response(503, "server is shutting down; retry on another replica")
            else:
                response = await handler(request)
        except ServiceError as error:
            status = error.status
            code = getattr(error, "code", None) or HTTP_STATUS.get(error.status, 500)
            # pushback -1 means "do not retry": no Retry-After then
            headers = ({"Retry-After": str(max(1, round(error.retry_after_ms / 1000)))}
                       if error.retry_after_ms is not None and error.retry_after_ms >= 0 else None)
            response = error_response(code, error.message, headers)
        except asyncio.CancelledError:
            status = "CANCELLED"
            raise
        except Exception:
            status = "INTERNAL"
            logger.exception("%s failed for model=%s", rpc, model)
            response = error_response(500, f"internal error in {rpc}; see the server log")
        finally:
            method = request.state.method
            model_label = model if not model or model in gate.known_models else UNKNOWN_LABEL
            method_label = method if not method or method in gate.known_methods else UNKNOWN_LABEL
            metrics.REQUESTS.labels(rpc=rpc, model=model_label, method=method_label,
                                    code=status).inc()
            metrics.REQUEST_DURATION.labels(rpc=rpc, model=model_label).observe(
                time.perf_counter() - started)
            logs.reset_request_id(bound)
        if response is not None:
            response.headers[logs.REQUEST_ID_KEY] = request_id
        return response
    return endpoint


def ssl_options(config: ServerConfig) -> dict[str, Any]:
    security = config.security
    if security.tls_cert is None:
        return {}
    options: dict[str, Any] = {"ssl_certfile": str(security.tls_cert),
                               "ssl_keyfile": str(security.tls_key)}
    if security.tls_client_ca is not None:
        options.update(ssl_ca_certs=str(security.tls_client_ca), ssl_cert_reqs=ssl.CERT_REQUIRED)
    return options


class HttpServer:
    """uvicorn in the running event loop, without its signal handling (serve() owns that)."""

    def __init__(self, app, config: ServerConfig) -> None:
        self._config = uvicorn.Config(
            app, host=config.host, port=config.http_port, lifespan="off", log_config=None,
            access_log=False, timeout_graceful_shutdown=max(1, round(config.grace_period_s)),
            **ssl_options(config))
        self._server = uvicorn.Server(self._config)
        self._loop_task: asyncio.Task | None = None
        self.port: int | None = None

    async def start(self) -> int:
        self._config.load()
        self._server.lifespan = self._config.lifespan_class(self._config)
        await self._server.startup()
        if not self._server.started:
            raise OSError(f"could not listen on {self._config.host}:{self._config.port}")
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        self._loop_task = asyncio.create_task(self._server.main_loop())
        return self.port

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._loop_task is not None:
            await self._loop_task
            await self._server.shutdown()
