"""Service scaffolding: one process serving FastAPI (REST) and grpc.aio (gRPC) side by side, with
``/healthz``, ``/readyz``, ``/metrics``, ``grpc.health.v1``, Kafka consumers and background tasks,
and a graceful stop on SIGTERM (stop taking work, finish what is in flight, commit, close)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import grpc
import uvicorn
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import BlockingConnectionPool, Redis

from mlops import telemetry
from mlops.auth.guard import Guard
from mlops.bus import topics
from mlops.bus.consumer import Consumer, Handler
from mlops.bus.producer import Producer
from mlops.errors import MlopsError
from mlops.grpc_util import ServerInstrumentation, server_options
from mlops.http_middleware import PlatformMiddleware
from mlops.safe_start import open_warning, startup_refusal
from mlops.settings import PlatformSettings, ServiceSettings
from mlops.text_guard import RefuseLoneSurrogates

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[bool]]
GrpcAdder = Callable[[grpc.aio.Server], None]


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the Service owns SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _validation_field(exc: RequestValidationError) -> str | None:
    errors = exc.errors()
    if not errors:
        return None
    if errors[0].get("type") == "json_invalid":
        return "body"
    loc = [str(p) for p in errors[0].get("loc", ()) if p not in ("body", "query", "path")]
    return ".".join(loc) or None


class Service:
    """A platform service: build it, add routers, servicers, consumers and tasks, then ``await run()``."""

    def __init__(self, settings: PlatformSettings, service: ServiceSettings, *, kafka: bool = True) -> None:
        self.settings = settings
        self.service = service
        self.name = service.name
        # A blocking pool: under bursts, callers wait for a connection instead of failing.
        self.redis: Redis = Redis(connection_pool=BlockingConnectionPool.from_url(
            settings.redis_url, max_connections=settings.redis_max_connections, timeout=10))
        self.producer: Producer | None = Producer(settings, client_id=f"mlops-{self.name}") if kafka else None
        self.guard = Guard(settings, self.redis)
        self.app = self._build_app()
        self._grpc_adders: list[GrpcAdder] = []
        self._consumers: list[Consumer] = []
        self._tasks: list[Callable[[], Awaitable[None]]] = []
        self._readiness: dict[str, ReadinessCheck] = {"redis": self._redis_ready}
        self._on_stop: list[Callable[[], Awaitable[None]]] = []
        self._stop = asyncio.Event()
        self._ready = False
        self.health = health.aio.HealthServicer() if hasattr(health, "aio") else health.HealthServicer()

    # -- composition ---------------------------------------------------------------------------------
    def add_http(self, router: APIRouter) -> None:
        self.app.include_router(router)

    def add_grpc(self, adder: GrpcAdder) -> None:
        self._grpc_adders.append(adder)

    def add_consumer(self, topic: str, handler: Handler, group: str | None = None, **kwargs: Any) -> Consumer:
        assert self.producer is not None, "consumers need the Kafka producer (dead letters)"
        consumer = Consumer(
            self.settings, topic, group or f"{self.name}.{topic}", handler, self.producer, **kwargs
        )
        self._consumers.append(consumer)
        return consumer

    def add_task(self, task: Callable[[], Awaitable[None]]) -> None:
        """A background coroutine that runs until the service stops (it is cancelled then)."""
        self._tasks.append(task)

    def add_readiness(self, name: str, check: ReadinessCheck) -> None:
        self._readiness[name] = check

    def on_stop(self, callback: Callable[[], Awaitable[None]]) -> None:
        self._on_stop.append(callback)

    # -- HTTP ------------------------------------------------------------------------------------------
    def _build_app(self) -> FastAPI:
        app = FastAPI(title=f"mlops {self.name}", version="0.1.0")
        name = self.name

        @app.exception_handler(MlopsError)
        async def _mlops_error(_: Request, exc: MlopsError) -> JSONResponse:
            return JSONResponse(exc.to_body(), status_code=exc.http_status)

        @app.exception_handler(RequestValidationError)
        async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
            first = exc.errors()[0] if exc.errors() else {}
            body: dict[str, str] = {"code": "invalid_argument", "message": str(first.get("msg", "invalid request"))}
            field = _validation_field(exc)
            if field:
                body["field"] = field
            return JSONResponse({"error": body}, status_code=400)

        # Inside the platform middleware: a caller is authenticated before any of its body is scanned.
        app.add_middleware(RefuseLoneSurrogates)
        app.add_middleware(PlatformMiddleware, service=name, guard=self.guard,
                           max_body_bytes=self.settings.max_body_bytes, producer=lambda: self.producer)

        @app.get("/healthz", tags=["health"])
        async def healthz() -> dict[str, str]:
            return {"status": "alive", "service": name}

        @app.get("/readyz", tags=["health"])
        async def readyz() -> JSONResponse:
            checks = await self.check_ready()
            ok = self._ready and all(checks.values())
            return JSONResponse(
                {"ready": ok, "service": name, "checks": checks}, status_code=200 if ok else 503
            )

        @app.get("/metrics", tags=["health"])
        async def metrics() -> PlainTextResponse:
            return PlainTextResponse(generate_latest().decode(), media_type=CONTENT_TYPE_LATEST)

        return app

    async def _redis_ready(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self.redis.ping(), 2.0))
        except Exception:
            return False

    async def check_ready(self) -> dict[str, bool]:
        results: dict[str, bool] = {}
        for check_name, check in self._readiness.items():
            try:
                results[check_name] = bool(await check())
            except Exception:
                results[check_name] = False
        if self.producer is not None:
            results["kafka"] = self.producer.started
        return results

    # -- lifecycle -------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Start everything, serve until SIGTERM/SIGINT, then stop gracefully."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)

        if self.producer is not None:
            await topics.ensure_topics(self.settings)
            await self.producer.start()

        grpc_server = grpc.aio.server(options=server_options())
        health_pb2_grpc.add_HealthServicer_to_server(self.health, grpc_server)
        instrumented = ServerInstrumentation(self.name, self.guard, lambda: self.producer).instrumented(grpc_server)
        for adder in self._grpc_adders:
            adder(instrumented)
        grpc_server.add_insecure_port(f"{self.settings.host}:{self.service.grpc_port}")
        await grpc_server.start()

        http = _QuietServer(
            uvicorn.Config(
                self.app,
                host=self.settings.host,
                port=self.service.http_port,
                log_level="warning",
                lifespan="off",
                timeout_graceful_shutdown=int(self.service.shutdown_grace_s),
            )
        )
        http_task = asyncio.create_task(http.serve(), name=f"{self.name}-http")
        consumers = [asyncio.create_task(c.run(), name=f"consume-{c.topic}") for c in self._consumers]
        background = [asyncio.create_task(t(), name=f"{self.name}-task") for t in self._tasks]
        workers = consumers + background

        # Everything loaded so far (modules, descriptors, clients) lives as long as the process: keep it out
        # of the cyclic collector's full passes, which otherwise walk ~100k objects (tens of ms, one request's
        # tail latency).
        gc.collect()
        gc.freeze()
        self._ready = True
        await self._set_grpc_health(health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "%s serving http=%s:%d grpc=%s:%d",
            self.name, self.settings.host, self.service.http_port, self.settings.host, self.service.grpc_port,
        )
        stop_wait = asyncio.create_task(self._stop.wait())
        done, _ = await asyncio.wait([stop_wait, http_task, *workers], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stop_wait and task.exception() is not None:
                log.error("%s: %s stopped: %r", self.name, task.get_name(), task.exception())

        log.info("%s stopping", self.name)
        self._ready = False
        await self._set_grpc_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        for consumer in self._consumers:
            await consumer.stop()
        await grpc_server.stop(self.service.shutdown_grace_s)
        http.should_exit = True
        await asyncio.wait([http_task], timeout=self.service.shutdown_grace_s)
        for callback in self._on_stop:
            await callback()
        # Consumers finish their current batch and commit; background tasks are cancelled at once.
        for task in background:
            task.cancel()
        if consumers:
            await asyncio.wait(consumers, timeout=self.service.shutdown_grace_s)
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        if self.producer is not None:
            await self.producer.stop()
        await self.redis.aclose()
        log.info("%s stopped", self.name)

    async def _set_grpc_health(self, status: int) -> None:
        result = self.health.set("", status)
        if asyncio.iscoroutine(result):
            await result


def collect_young_objects_rarely() -> None:
    """For batch consumers: a batch keeps thousands of objects alive at once (records, events, messages,
    futures), which the default thresholds (a young collection every 700 allocations) walk and promote
    again and again although nearly all of them die together when the batch ends."""
    gc.set_threshold(50_000, 20, 20)


def run_main(service: str, main: Callable[[], Awaitable[None]]) -> None:
    """Process entry point shared by every service: logging, tracing, then ``asyncio.run(main())``."""
    settings = PlatformSettings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format=f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s",
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    refusal = startup_refusal(settings)
    if refusal is not None:
        log.critical("%s", refusal)
        raise SystemExit(2)
    warning = open_warning(settings)
    if warning is not None:
        log.warning("%s", warning)
    telemetry.setup(service)
    asyncio.run(main())
