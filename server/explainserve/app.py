"""Wiring: config -> model registry -> worker pool -> grpc.aio server, health, reflection,
metrics, signals. `serve()` is build, register, bind, start, wait."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading

import grpc
from explainserve_client._proto import explainer_pb2 as pb
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from explainserve.api import handlers, transport
from explainserve.api.http import Gate, HttpServer
from explainserve.api.http_routes import build_app
from explainserve.api.oip_servicer import SERVICE as OIP_SERVICE
from explainserve.api.oip_servicer import InferenceServicer, inference_handler
from explainserve.api.health import HealthService
from explainserve.api.servicer import Draining, ExplainerServicer
from explainserve.config import ServerConfig
from explainserve.errors import Unavailable
from explainserve.models.registry import ModelRegistry
from explainserve.scheduling.batcher import Batcher
from explainserve.engine.core import Engine
from explainserve.workers.pool import WorkerPool, resolve_devices

logger = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ExplainerService"].full_name
MAX_MESSAGE_BYTES = transport.MAX_MESSAGE_BYTES


class ExplainServer:
    """One server process: models loaded, workers running, gRPC bound."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.port: int | None = None
        self.draining = Draining()
        self._health = HealthService(("", SERVICE_NAME))
        self._server: grpc.aio.Server | None = None
        self._pool: WorkerPool | None = None
        self._batcher: Batcher | None = None
        self._health_server: grpc.aio.Server | None = None
        self.health_port: int | None = None
        self._metrics_http = None
        self.metrics_port: int | None = None
        self._http: HttpServer | None = None
        self.http_port: int | None = None

    async def start(self) -> int:
        """Load every model, start the workers, bind and start gRPC; returns the bound port."""
        devices = resolve_devices(self.config.device, self.config.cpu_workers)
        registry = await asyncio.to_thread(ModelRegistry.load, self.config.models)
        self._batcher = Batcher({model.name: model.config.batching for model in registry})
        self._pool = WorkerPool(devices, list(registry), self._batcher, self.config.faults)
        self._pool.start()
        engine = Engine(registry, self._batcher, self.config.limits)
        self._server = grpc.aio.server(options=transport.server_options(self.config),
                                       interceptors=transport.interceptors(self.config.security))
        explainer = ExplainerServicer(engine, self._pool.devices, self.draining)
        self._server.add_generic_rpc_handlers((
            handlers.explainer_handler(explainer),
            inference_handler(InferenceServicer(explainer, self.draining))))
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, OIP_SERVICE.full_name, health.SERVICE_NAME, reflection.SERVICE_NAME),
            self._server)
        self.port = transport.bind(self._server, f"{self.config.host}:{self.config.port}",
                                   self.config.security)
        await self._server.start()
        if self.config.health_port is not None:
            self._health_server, self.health_port = await transport.start_health_server(
                self._health, self.config.host, self.config.health_port)
        if self.config.http_port is not None:
            self._http = HttpServer(build_app(engine, Gate(self.config, self.draining)), self.config)
            self.http_port = await self._http.start()
        if self.config.metrics_port is not None:
            self._metrics_http, _ = start_http_server(self.config.metrics_port, addr=self.config.host)
            self.metrics_port = self._metrics_http.server_port
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        for worker in self._pool.workers:
            logger.info("worker %s serves models %s", worker.name, ", ".join(worker.replicas))
        logger.info("serving on %s:%d, %s, health port %s (limits: %s)", self.config.host,
                    self.port, transport.describe(self.config.security), self.health_port or "-",
                    self.config.limits)
        return self.port

    async def _set_health(self, status: int, *, final: bool = False) -> None:
        await self._health.set_all(status, final=final)

    async def stop(self, grace: float | None = None, drain_delay: float | None = None) -> None:
        """NOT_SERVING at once; serve on for the drain delay (load balancers that check health
        stop sending meanwhile), then refuse new calls with UNAVAILABLE, close the listener and
        let in-flight calls finish within the grace."""
        grace = self.config.grace_period_s if grace is None else grace
        drain_delay = self.config.drain_delay_s if drain_delay is None else drain_delay
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING, final=True)
        if drain_delay > 0:
            logger.info("reporting NOT_SERVING; still serving for %.1fs before draining", drain_delay)
            await asyncio.sleep(drain_delay)
        self.draining.active = True
        if self._server is not None:
            await self._server.stop(grace)
        if self._http is not None:
            await self._http.stop()
        if self._batcher is not None:
            self._batcher.fail_all(Unavailable("server shut down"))
        if self._pool is not None:
            await self._pool.stop()
        if self._health_server is not None:
            await self._health_server.stop(None)
        if self._metrics_http is not None:
            self._metrics_http.shutdown()

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


async def serve(config: ServerConfig) -> None:
    server = ExplainServer(config)
    await server.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    logger.info("signal received; draining for up to %.1fs after a drain delay of %.1fs",
                config.grace_period_s, config.drain_delay_s)
    await server.stop()
    logger.info("stopped")


class BackgroundServer:
    """A real server on its own event loop in a daemon thread: for the demo, tests and
    benchmarks. Use as a context manager; `address` is host:port once entered."""

    def __init__(self, config: ServerConfig) -> None:
        self.server = ExplainServer(config)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="explainserve-server")

    @property
    def address(self) -> str:
        return f"{self.server.config.host}:{self.server.port}"

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result()
        except BaseException:
            self._shutdown_loop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(grace=1.0), self._loop).result()
        self._shutdown_loop()

    def call(self, coroutine):
        """Run a coroutine on the server's loop (tests use it to reach server state)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _shutdown_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
