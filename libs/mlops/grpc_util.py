"""gRPC plumbing shared by every service: channel and server options, a server interceptor that
continues the caller's trace, records metrics and maps :class:`MlopsError` to status codes, and a
client interceptor that sends the current trace context in metadata."""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from opentelemetry import trace

from mlops import telemetry
from mlops.auth import audit, policy
from mlops.auth.guard import Guard, current_principal
from mlops.bus.producer import Producer
from mlops.errors import MlopsError

MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def server_options() -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ]


def _authorization(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            return value
    return None


async def _admit(guard: Guard | None, method: str, request: Any, context: grpc.aio.ServicerContext) -> str:
    """Check the caller; returns the permission used (for the audit trail)."""
    permission = policy.grpc_permission(method, request)
    if guard is not None and not policy.OPEN_GRPC.match(method):
        await guard.check(_authorization(context), permission)
    return permission


def _wrap_unary(
    fn: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]],
    service: str,
    method: str,
    guard: Guard | None = None,
    producer: Callable[[], Producer | None] = lambda: None,
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
                # Client-streaming requests are checked before the stream is read.
                permission = await _admit(guard, method, None if hasattr(request, "__aiter__") else request, context)
                result = await fn(request, context)
                if permission in policy.AUDITED:
                    principal = current_principal.get()
                    await audit.record(producer(), principal.name if principal else "anonymous", method,
                                       getattr(request, "model", "") or method, getattr(request, "reason", ""))
                return result
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


def _wrap_unary_stream(fn: Callable[..., Any], method: str, guard: Guard | None) -> Callable[..., Any]:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            await _admit(guard, method, request, context)
            async for item in fn(request, context):
                yield item
        except MlopsError as exc:
            await context.abort(exc.grpc_code, exc.message)

    return handler


class ServerInterceptor(grpc.aio.ServerInterceptor):
    """Auth, traces, metrics and error mapping for unary and client-streaming methods (auth only for
    server-streaming ones)."""

    def __init__(self, service: str, guard: Guard | None = None,
                 producer: Callable[[], Producer | None] = lambda: None) -> None:
        self._service = service
        self._guard = guard
        self._producer = producer

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith("/grpc.health"):
            return handler
        method = handler_call_details.method
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, self._service, method, self._guard, self._producer),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                _wrap_unary(handler.stream_unary, self._service, method, self._guard, self._producer),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_unary_stream(handler.unary_stream, method, self._guard),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


class _ClientMetadata:
    """Sends the trace context, and the platform's service token (``MLOPS_SERVICE_TOKEN``) when set."""

    def __init__(self) -> None:
        self._token = os.environ.get("MLOPS_SERVICE_TOKEN")

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
            if self._token and not any(k == "authorization" for k, _ in metadata):
                metadata.append(("authorization", f"Bearer {self._token}"))
            details = grpc.aio.ClientCallDetails(
                client_call_details.method,
                client_call_details.timeout,
                metadata,
                client_call_details.credentials,
                client_call_details.wait_for_ready,
            )
            return await continuation(details, request)


# grpc.aio files an interceptor under the first kind it matches only, so each kind gets its own class.
class _UnaryUnaryMetadata(_ClientMetadata, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return await self._inject(continuation, client_call_details, request)


class _UnaryStreamMetadata(_ClientMetadata, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return await self._inject(continuation, client_call_details, request)


def channel(address: str) -> grpc.aio.Channel:
    """An insecure channel to a platform service that carries the trace context."""
    interceptors = [_UnaryUnaryMetadata(), _UnaryStreamMetadata()]
    return grpc.aio.insecure_channel(address, options=server_options(), interceptors=interceptors)
