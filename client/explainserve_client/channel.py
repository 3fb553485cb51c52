"""Channels to one server or to several replicas: the target, the options and the service
config that balances calls over the replicas with round_robin and retries refusals.

A target is what gRPC takes (`host:port`, `dns:///name:port`, `ipv4:a:p,b:p`, `unix:...`), or a
list of `host:port` addresses (a sequence, or one string with commas), which becomes gRPC's
static multi-address target `ipv4:a:p,b:p` (names are resolved once, here). For replicas whose
set changes, use `dns:///` with a headless Service (gRPC re-resolves the name when a
connection closes and at the server's max connection age), or `Client.update_targets` with
the new list."""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Mapping, Sequence
from typing import Any

import grpc

# Message limits are set explicitly on both sides; the server never relies on a raised limit
# (large tensors arrive in chunks), so the default 4 MiB is also what it sends at most.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024

# The same as docs/service_config.json (a test keeps them equal). round_robin spreads calls
# over every address of the target. gRPC retries UNAVAILABLE (a draining or restarting replica)
# and RESOURCE_EXHAUSTED (a full queue) only while the server has sent nothing but its status,
# waits what the server asks in grpc-retry-pushback-ms, and keeps the whole call within its
# deadline; each retry is a new pick, so it lands on another replica.
SERVICE_CONFIG: dict[str, Any] = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [
        {
            "name": [{"service": "explainserve.v1.ExplainerService"}],
            "timeout": "60s",
            "retryPolicy": {
                "maxAttempts": 4,
                "initialBackoff": "0.2s",
                "maxBackoff": "5s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"],
            },
        }
    ],
}

# A dns:/// target re-resolves when a connection drops; gRPC's default waits 30 s between
# resolutions, longer than a rolling update takes to replace a pod.
DNS_MIN_RESOLUTION_INTERVAL_MS = 5000


SCHEMES = ("dns", "ipv4", "ipv6", "unix", "unix-abstract", "vsock", "xds")


def target_of(addresses: str | Sequence[str]) -> str:
    """One gRPC target for one address, a gRPC target string, or a list of host:port."""
    if isinstance(addresses, str):
        if addresses.split(":", 1)[0] in SCHEMES or "," not in addresses:
            return addresses  # already a gRPC target: a scheme, or a single address
        addresses = addresses.split(",")
    listed = [address.strip() for address in addresses if address.strip()]
    if not listed:
        raise ValueError("no server address given")
    if len(listed) == 1:
        return listed[0]
    resolved = [_literal(address) for address in listed]
    if all(":" not in host for host, _ in resolved):
        return "ipv4:" + ",".join(f"{host}:{port}" for host, port in resolved)
    if all(":" in host for host, _ in resolved):
        return "ipv6:" + ",".join(f"[{host}]:{port}" for host, port in resolved)
    raise ValueError(f"addresses {listed} mix IPv4 and IPv6; gRPC balances over one family")


def _literal(address: str) -> tuple[str, int]:
    """host:port with the host as an IP literal (a name is resolved once, to its first IPv4
    address if it has one)."""
    host, separator, port = address.rpartition(":")
    if not separator or not port.isdigit():
        raise ValueError(f"server address {address!r} is not host:port")
    host = host.strip("[]")
    try:
        return str(ipaddress.ip_address(host)), int(port)
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise ValueError(f"server address {address!r}: cannot resolve {host!r}: {error}") from None
    families = sorted(found, key=lambda entry: entry[0] != socket.AF_INET)
    return families[0][4][0], int(port)


def channel_options(options: Sequence[tuple[str, Any]],
                    service_config: Mapping[str, Any] | None) -> list[tuple[str, Any]]:
    """Message limits, the service config (unless the caller's options set one, or None), and
    a short DNS re-resolution interval; the caller's options come last and win."""
    chosen = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
              ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
              ("grpc.dns_min_time_between_resolutions_ms", DNS_MIN_RESOLUTION_INTERVAL_MS)]
    if service_config is not None and not any(key == "grpc.service_config" for key, _ in options):
        chosen.append(("grpc.service_config", json.dumps(service_config)))
    return chosen + list(options)


def open_channel(target: str, options: list[tuple[str, Any]],
                 credentials: grpc.ChannelCredentials | None) -> grpc.Channel:
    if credentials is not None:
        return grpc.secure_channel(target, credentials, options=options)
    return grpc.insecure_channel(target, options=options)
