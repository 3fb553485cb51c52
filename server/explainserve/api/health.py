"""grpc.health.v1 for this server. Unlike grpc's reference servicer, a Watch stream ends once it
has sent the final NOT_SERVING of a shutdown: a watcher (client-side health checking, a probe)
would otherwise count as an in-flight call and hold the drain open for the whole grace period."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

Status = health_pb2.HealthCheckResponse.ServingStatus


class HealthService(health_pb2_grpc.HealthServicer):
    def __init__(self, services: tuple[str, ...]) -> None:
        self._status = {service: health_pb2.HealthCheckResponse.NOT_SERVING for service in services}
        self._final = False
        self._changed = asyncio.Condition()

    async def set_all(self, status: Status, *, final: bool = False) -> None:
        """Set every service's status; `final` (shutdown) ends the Watch streams after it."""
        async with self._changed:
            if self._final:
                return
            self._status = dict.fromkeys(self._status, status)
            self._final = final
            self._changed.notify_all()

    async def Check(self, request: health_pb2.HealthCheckRequest, context) -> health_pb2.HealthCheckResponse:
        status = self._status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context) -> None:
        sent = None
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda: self._final or self._of(request.service) != sent)
                status, final = self._of(request.service), self._final
            if status != sent:  # written outside the lock: a slow reader never blocks set_all
                await context.write(health_pb2.HealthCheckResponse(status=status))
                sent = status
            if final:
                return

    def _of(self, service: str) -> Status:
        return self._status.get(service, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
