"""`explainserve serve`: run the gRPC server on a model repository (default: the demo model)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from explainserve.config import LimitsConfig, SecurityConfig, ServerConfig, load_model_repository


def add_parser(commands) -> None:
    serve = commands.add_parser("serve", help="run the gRPC server")
    serve.add_argument("--models", type=Path, help="model repository TOML (default: the demo model)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=50051)
    serve.add_argument("--metrics-port", type=int, default=9090, help="0 disables metrics")
    serve.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    serve.add_argument("--cpu-workers", type=int, default=1)
    serve.add_argument("--grace-period", type=float, default=10.0, help="seconds to drain on SIGTERM")
    serve.add_argument("--drain-delay", type=float, default=0.0, metavar="SECONDS",
                       help="after SIGTERM, keep serving this long while health reports "
                            "NOT_SERVING, before refusing new calls and closing the listener "
                            "(default: 0)")
    serve.add_argument("--max-connection-age", type=float, metavar="SECONDS",
                       help="close client connections at this age so clients rebalance over "
                            "new replicas (default: never)")
    serve.add_argument("--max-connection-age-grace", type=float, metavar="SECONDS",
                       help="time calls on an aged connection get to finish (default: --grace-period)")
    serve.add_argument("--health-port", type=int, default=0,
                       help="also serve grpc.health.v1 alone, plaintext, on this port (for "
                            "kubelet probes when TLS is on); 0 disables")
    serve.add_argument("--http-port", type=int, default=0,
                       help="also serve HTTP/JSON on this port: Open Inference Protocol v2 REST, "
                            "KServe v1 :predict/:explain, and a page at / to try the models; "
                            "same TLS and tokens as gRPC; 0 disables")
    security = serve.add_argument_group("security")
    security.add_argument("--tls-cert", type=Path, help="PEM certificate chain; enables TLS")
    security.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    security.add_argument("--tls-client-ca", type=Path,
                          help="PEM CA bundle; clients must present a certificate it signed (mTLS)")
    security.add_argument("--auth-token-file", type=Path,
                          help="bearer tokens, one per line; tokens in $EXPLAINSERVE_AUTH_TOKENS "
                               "(comma-separated) count too; any token enables auth")
    security.add_argument("--auth-open", nargs="*", default=["health"], metavar="SERVICE",
                          choices=["health", "reflection"],
                          help="services reachable without a token (default: health)")
    serve.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from explainserve.app import serve
    asyncio.run(serve(build_config(args)))
    return 0


def build_config(args: argparse.Namespace) -> ServerConfig:
    from explainserve.models.demo.repository import demo_model_config
    models = load_model_repository(args.models) if args.models else (demo_model_config(),)
    return ServerConfig(
        host=args.host, port=args.port, metrics_port=args.metrics_port or None,
        device=args.device, cpu_workers=args.cpu_workers, grace_period_s=args.grace_period,
        drain_delay_s=args.drain_delay,
        models=models, limits=LimitsConfig(), security=security_config(args),
        max_connection_age_s=args.max_connection_age,
        max_connection_age_grace_s=args.max_connection_age_grace,
        health_port=args.health_port or None,
        http_port=args.http_port or None,
    )


def security_config(args: argparse.Namespace) -> SecurityConfig:
    from explainserve.api.auth import load_tokens, open_service_names
    return SecurityConfig(
        tls_cert=args.tls_cert, tls_key=args.tls_key, tls_client_ca=args.tls_client_ca,
        tokens=load_tokens(args.auth_token_file), open_services=open_service_names(args.auth_open),
    )
