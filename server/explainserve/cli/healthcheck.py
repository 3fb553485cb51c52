"""`python -m explainserve.cli.healthcheck`: exit 0 when the server's gRPC health service says
SERVING, 1 otherwise. For Docker's HEALTHCHECK and any probe that can only run a command; it
imports grpc and nothing heavy, so it answers in well under a second."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ADDRESS_ENV = "EXPLAINSERVE_HEALTH_ADDRESS"


def check(address: str, service: str = "", timeout: float = 3.0,
          root_certificates: bytes | None = None) -> str:
    """The serving status's name (SERVING, NOT_SERVING, ...) or the failed call's code name."""
    if root_certificates is None:
        channel = grpc.insecure_channel(address)
    else:
        channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates))
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as error:
            return error.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m explainserve.cli.healthcheck", description=__doc__)
    parser.add_argument("--address", default=os.environ.get(ADDRESS_ENV, "127.0.0.1:50051"),
                        help=f"host:port of the gRPC (or --health-port) listener (env {ADDRESS_ENV})")
    parser.add_argument("--service", default="", help="service to ask about ('' = the server)")
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--tls-ca", type=Path, help="PEM CA bundle when the port speaks TLS")
    args = parser.parse_args(argv)
    roots = args.tls_ca.read_bytes() if args.tls_ca else None
    status = check(args.address, args.service, args.timeout, roots)
    sys.stdout.write(f"{args.address} {args.service or '(server)'}: {status}\n")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    raise SystemExit(main())
