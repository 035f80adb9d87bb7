"""gRPC plumbing shared by every service: channel and server options, a server interceptor that
continues the caller's trace, records metrics and maps :class:`MlopsError` to status codes, and a
client interceptor that sends the current trace context in metadata."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from opentelemetry import trace

from mlops import telemetry
from mlops.errors import MlopsError

MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def server_options() -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ]


def _wrap_unary(
    fn: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]], service: str, method: str
) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        ctx = telemetry.extract_context(
            (k, v) for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)
        )
        rpc_service, _, rpc_method = method.lstrip("/").partition("/")
        start = time.perf_counter()
        code = "OK"
        with telemetry.tracer().start_as_current_span(
            method.lstrip("/"),
            context=ctx,
            kind=trace.SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": rpc_service, "rpc.method": rpc_method},
        ) as span:
            try:
                return await fn(request, context)
            except MlopsError as exc:
                code = exc.grpc_code.name
                span.set_attribute("rpc.grpc.status_code", exc.grpc_code.value[0])
                await context.abort(exc.grpc_code, exc.message)
            except grpc.aio.AbortError:
                code = "ABORTED_BY_HANDLER"
                raise
            except Exception:
                code = "INTERNAL"
                raise
            finally:
                telemetry.REQUESTS.labels(service, "grpc", method, code).inc()
                telemetry.REQUEST_LATENCY.labels(service, "grpc", method).observe(time.perf_counter() - start)

    return handler


class ServerInterceptor(grpc.aio.ServerInterceptor):
    """Traces, metrics and error mapping for unary and client-streaming methods."""

    def __init__(self, service: str) -> None:
        self._service = service

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith("/grpc.health"):
            return handler
        method = handler_call_details.method
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, self._service, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                _wrap_unary(handler.stream_unary, self._service, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


class _TraceClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor, grpc.aio.UnaryStreamClientInterceptor):
    async def _inject(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        method = client_call_details.method
        method = method.decode() if isinstance(method, bytes) else method
        rpc_service, _, rpc_method = method.lstrip("/").partition("/")
        # The CLIENT span covers sending the call; the server continues from it.
        with telemetry.tracer().start_as_current_span(
            method.lstrip("/"),
            kind=trace.SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "rpc.service": rpc_service, "rpc.method": rpc_method},
        ):
            metadata = list(client_call_details.metadata or [])
            metadata.extend((k, v.decode()) for k, v in telemetry.inject_headers())
            details = grpc.aio.ClientCallDetails(
                client_call_details.method,
                client_call_details.timeout,
                metadata,
                client_call_details.credentials,
                client_call_details.wait_for_ready,
            )
            return await continuation(details, request)

    async def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return await self._inject(continuation, client_call_details, request)

    async def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return await self._inject(continuation, client_call_details, request)


def channel(address: str) -> grpc.aio.Channel:
    """An insecure channel to a platform service that carries the trace context."""
    return grpc.aio.insecure_channel(address, options=server_options(), interceptors=[_TraceClientInterceptor()])
