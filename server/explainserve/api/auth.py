"""Bearer-token authentication: a server interceptor that admits a call only with a known token.

Tokens come from a file (one per line, so a Kubernetes Secret can hold several during a
rotation) and/or an environment variable. They are compared in constant time; a call without
a valid `authorization: Bearer <token>` ends with UNAUTHENTICATED before any handler runs.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import grpc

from explainserve import metrics
from explainserve.config import ConfigError

logger = logging.getLogger(__name__)

TOKENS_ENV = "EXPLAINSERVE_AUTH_TOKENS"
MIN_TOKEN_LENGTH = 16
# Services a deployment may leave open: kubelet's gRPC probes cannot send a token.
OPENABLE_SERVICES = {
    "health": "grpc.health.v1.Health",
    "reflection": "grpc.reflection.v1alpha.ServerReflection",
}
_BEARER = re.compile(r"bearer\s+(\S+)\s*", re.IGNORECASE)


def load_tokens(path: Path | None = None, environ: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    """Tokens from `path` (one per line; blank lines and # comments skipped) and from the
    comma-separated TOKENS_ENV variable. Errors name the source and line, never the token."""
    found: list[tuple[str, str]] = []
    if path is not None:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as error:
            raise ConfigError(f"auth token file {path}: {error.strerror}") from None
        found += [(f"{path}:{number}", line.strip()) for number, line in enumerate(lines, 1)
                  if line.strip() and not line.strip().startswith("#")]
    found += [(f"${TOKENS_ENV}", item.strip()) for item in environ.get(TOKENS_ENV, "").split(",")
              if item.strip()]
    for source, token in found:
        if len(token) < MIN_TOKEN_LENGTH or any(c.isspace() for c in token):
            raise ConfigError(f"auth token at {source} must be at least {MIN_TOKEN_LENGTH} "
                              "characters without spaces")
    return tuple(dict.fromkeys(token for _, token in found))


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> bytes | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            match = _BEARER.fullmatch(value)
            return match.group(1).encode() if match else None
    return None


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Admits a call to an open service, or one that presents one of `tokens`."""

    def __init__(self, tokens: Iterable[str], open_services: Iterable[str] = ()) -> None:
        self._tokens = tuple(token.encode() for token in tokens)
        if not self._tokens:
            raise ConfigError("token authentication needs at least one token")
        self._open = frozenset(open_services)

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        handler = await continuation(details)
        if handler is None or _service_of(details.method) in self._open or self._admits(details.invocation_metadata):
            return handler
        metrics.REJECTED.labels(reason="unauthenticated").inc()
        logger.info("refused %s: missing or invalid bearer token", details.method)
        return _refusal(handler)

    def _admits(self, metadata) -> bool:
        presented = bearer_token(metadata)
        if presented is None:
            return False
        # Compare with every token, never stopping early: the time taken tells nothing about
        # which token (or how much of one) matched.
        matched = False
        for token in self._tokens:
            matched |= hmac.compare_digest(presented, token)
        return matched


def _service_of(method: str) -> str:
    """'/package.Service/Method' -> 'package.Service'."""
    parts = method.split("/")
    return parts[1] if len(parts) == 3 else ""


async def _deny(request, context: grpc.aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                        "missing or invalid bearer token; send 'authorization: Bearer <token>'")


def _refusal(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that only aborts."""
    codecs = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(_deny, **codecs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(_deny, **codecs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(_deny, **codecs)
    return grpc.stream_stream_rpc_method_handler(_deny, **codecs)


def open_service_names(names: Iterable[str]) -> tuple[str, ...]:
    """Map the CLI's short names (health, reflection) to full gRPC service names."""
    unknown = sorted(set(names) - set(OPENABLE_SERVICES))
    if unknown:
        raise ConfigError(f"cannot open {unknown} without a token; choose from {sorted(OPENABLE_SERVICES)}")
    return tuple(OPENABLE_SERVICES[name] for name in names)
