"""How the gRPC server listens: explicit message limits, a maximum connection age, plaintext,
TLS or mutual TLS, bearer tokens, and an optional plaintext health-only port for probes."""

from __future__ import annotations

from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2_grpc

from explainserve.config import ConfigError, SecurityConfig, ServerConfig
from explainserve.api.auth import TokenAuthInterceptor

# Set on both sides (the client uses the same value); large tensors travel in chunks instead.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


def server_options(config: ServerConfig) -> list[tuple[str, int]]:
    options = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
               ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
    if config.max_connection_age_s is not None:
        # An L4 Service pins an HTTP/2 connection to one pod; closing connections at this age
        # (GOAWAY, then `grace` for the calls still on them) makes clients reconnect and
        # spread over the pods a scale-up added.
        grace = config.max_connection_age_grace_s
        grace = config.grace_period_s if grace is None else grace
        options += [("grpc.max_connection_age_ms", round(config.max_connection_age_s * 1000)),
                    ("grpc.max_connection_age_grace_ms", round(grace * 1000))]
    return options


def interceptors(security: SecurityConfig) -> list[grpc.aio.ServerInterceptor]:
    if not security.tokens:
        return []
    return [TokenAuthInterceptor(security.tokens, security.open_services)]


def server_credentials(security: SecurityConfig) -> grpc.ServerCredentials | None:
    """None for plaintext; TLS with the certificate chain and key; mutual TLS (clients must
    present a certificate that `tls_client_ca` signed) when that CA bundle is given."""
    if security.tls_cert is None and security.tls_key is None:
        if security.tls_client_ca is not None:
            raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if security.tls_cert is None or security.tls_key is None:
        raise ConfigError("TLS needs both --tls-cert and --tls-key")
    client_ca = _read(security.tls_client_ca, "--tls-client-ca") if security.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(_read(security.tls_key, "--tls-key"), _read(security.tls_cert, "--tls-cert"))],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def bind(server: grpc.aio.Server, address: str, security: SecurityConfig) -> int:
    """Add the listening port (secure when configured); returns the bound port number."""
    credentials = server_credentials(security)
    if credentials is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, credentials)


def describe(security: SecurityConfig) -> str:
    """For the start-up log: what a client must bring."""
    if security.tls_cert is None:
        transport = "plaintext"
    else:
        transport = "mutual TLS" if security.tls_client_ca else "TLS"
    auth = (f"bearer tokens ({len(security.tokens)}), open without one: "
            f"{', '.join(security.open_services) or 'nothing'}" if security.tokens else "no auth")
    return f"{transport}, {auth}"


async def start_health_server(servicer: health_pb2_grpc.HealthServicer, host: str,
                              port: int) -> tuple[grpc.aio.Server, int]:
    """The same health servicer on a plaintext port of its own: kubelet's native gRPC probes
    speak neither TLS nor bearer tokens. It serves nothing but grpc.health.v1.Health."""
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    return server, bound


def _read(path: Path, flag: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(f"{flag} {path}: {error.strerror}") from None
