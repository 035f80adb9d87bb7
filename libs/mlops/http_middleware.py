"""The one ASGI middleware in front of every service's REST API: the server span and request metrics,
then the guard (body limit, authentication, authorisation, rate limit) and, after a state change, its
audit record.

Plain ASGI rather than Starlette's ``BaseHTTPMiddleware`` (``@app.middleware("http")``): that one runs
each request through an extra task and memory streams per middleware, which dominated the REST profile
of the inference service. Here a request costs a few function calls when auth is off and no trace is
exported.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlops import json_input, telemetry
from mlops.asgi_refusal import error_response, run_refusable
from mlops.auth import audit, policy
from mlops.auth.guard import ANONYMOUS, Guard
from mlops.auth.refusals import RefusalAudit, is_refusal
from mlops.auth.tokens import Principal
from mlops.bus.producer import Producer
from mlops.errors import MlopsError, PermissionDenied, TooLarge

#: paths whose requests are neither counted nor timed (scrapes and probes would drown the figures).
UNMEASURED = frozenset({"/metrics", "/healthz", "/readyz"})
#: The route label (metrics) and span name of a request no route matched: one value for every unknown
#: path, so a caller probing paths cannot grow a series (or a span name) per path.
UNMATCHED = "unmatched"
_ROOT = otel_context.Context()


def route_label(scope: Scope) -> str:
    """The matched route's template (``/v1/models/{name}``), or :data:`UNMATCHED`; measured paths that are
    not routes (``/metrics`` mounted apps) keep their path only when listed in :data:`UNMEASURED`."""
    route = getattr(scope.get("route"), "path", None)
    if route is not None:
        return str(route)
    return scope["path"] if scope["path"] in UNMEASURED else UNMATCHED


def json_fields(body: bytes) -> dict[str, Any]:
    """The top-level fields of a JSON object body; empty for a body that is no JSON object (the route says
    what it expects). JSON past the bounds of :mod:`mlops.json_input` (depth, number length) is a 400."""
    if not body:
        return {}
    try:
        data = json_input.loads(body)
    except json_input.NotJson:
        return {}
    return data if isinstance(data, dict) else {}


#: The console's session cookie, and the pages it is scoped to (``Path=/ui``).
SESSION_COOKIE = "mlops_token"
CONSOLE_PATH = "/ui"
#: Sent with every response: browsers take the declared content type, never a sniffed one.
NOSNIFF = (b"x-content-type-options", b"nosniff")


def console_read(request: Request) -> bool:
    """A console page read: GET or HEAD under ``/ui``, the only requests a session cookie may authenticate."""
    path = request.url.path
    return request.method in ("GET", "HEAD") and (path == CONSOLE_PATH or path.startswith(CONSOLE_PATH + "/"))


def cookie_token(request: Request) -> str | None:
    """The console's browser session: a token given once as ``/ui?token=...`` is kept in a cookie. A browser
    sends a cookie on requests other sites make too, so it counts only for console page reads: API routes
    and every state change need the bearer header."""
    if not console_read(request):
        return None
    token = request.cookies.get(SESSION_COOKIE) or request.query_params.get("token")
    return f"Bearer {token}" if token else None


def cross_site_without_bearer(scope: Scope) -> bool:
    """A browser's state-changing request sent by another site's page, with no bearer header (which such a
    page cannot add without a CORS preflight the services never grant): refused, so a page elsewhere acts
    neither with the console's cookie nor against a stack on this machine running with auth off."""
    if scope["method"] in ("GET", "HEAD", "OPTIONS") or _header(scope, b"authorization") is not None:
        return False
    site = _header(scope, b"sec-fetch-site")
    if site is not None:
        return site not in ("same-origin", "none")
    origin = _header(scope, b"origin")
    return origin is not None and urlsplit(origin).netloc.lower() != (_header(scope, b"host") or "").lower()


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


class CountedReceive:
    """The client's ``receive``, counting the body as whoever reads it (the middleware or the app) reads
    it: past ``limit`` bytes it raises :class:`TooLarge` and marks itself :attr:`exceeded`, so a chunked
    body (no Content-Length to check up front) is stopped at the limit, not read whole. What is not read is
    not received: the server stops reading the socket while nothing consumes the body."""

    def __init__(self, receive: Receive, limit: int) -> None:
        self._receive = receive
        self.limit = limit
        self.received = 0
        self.exceeded = False

    def error(self) -> TooLarge:
        return TooLarge(f"the body is larger than {self.limit} bytes", field="body")

    async def __call__(self) -> Message:
        if self.exceeded:
            raise self.error()
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                self.exceeded = True
                raise self.error()
        return message


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` for the app after the middleware read the body: the body once, then the client's own."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class PlatformMiddleware:
    """Observe, then guard, every HTTP request of one service."""

    def __init__(self, app: ASGIApp, *, service: str, guard: Guard, max_body_bytes: int,
                 producer: Callable[[], Producer | None]) -> None:
        self.app = app
        self.service = service
        self.guard = guard
        self.max_body_bytes = max_body_bytes
        self.producer = producer
        self.refusals = RefusalAudit(service, "http", producer)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        method, path = scope["method"], scope["path"]
        ctx = _ROOT
        if _header(scope, b"traceparent") is not None:
            ctx = telemetry.extract_context(
                (k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"])
        if ctx is _ROOT and not telemetry.exporting():
            span: trace.Span = trace.INVALID_SPAN  # no caller trace to continue, no one to read a span
        else:
            span = telemetry.tracer().start_span(
                f"{method} {path}", context=ctx, kind=trace.SpanKind.SERVER,
                attributes={"http.request.method": method, "url.path": path})
        token = otel_context.attach(trace.set_span_in_context(span, ctx))
        status = 500

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), NOSNIFF]
            await send(message)

        try:
            await self._guarded(scope, receive, observed_send)
        except BaseException as exc:
            span.record_exception(exc)
            raise
        finally:
            route = route_label(scope)
            if span.is_recording():
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(trace.Status(trace.StatusCode.ERROR))
            span.end()
            otel_context.detach(token)
            if route not in UNMEASURED:
                label = f"{method} {route}"
                telemetry.REQUESTS.labels(self.service, "http", label, str(status)).inc()
                telemetry.REQUEST_LATENCY.labels(self.service, "http", label).observe(time.perf_counter() - start)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Body limit, authentication and rate limit, then (the body read only now) authorisation; then the
        audit record of a state change. A refusal is counted and audited (rate limited)."""
        method, path = scope["method"], scope["path"]
        principal: Principal | None = None
        # Every read of the body, the middleware's or the app's, is counted against the limit.
        counted = CountedReceive(receive, self.max_body_bytes)
        try:
            length = _header(scope, b"content-length")
            if length and length.isascii() and length.isdigit() and int(length) > self.max_body_bytes:
                raise counted.error()
            if cross_site_without_bearer(scope):
                raise PermissionDenied("a cross-site request may not change state; send the bearer header")
            if policy.OPEN_PATHS.match(path):
                await self._within_limit(scope, counted, send)
                return
            permission = policy.rest_permission(method, path)
            stage_default = policy.rest_stage_default(method, path)
            staged = policy.is_staged(stage_default)
            if permission not in policy.AUDITED and not staged and not self.guard.enabled:
                await self._within_limit(scope, counted, send)
                return
            request = Request(scope)
            # Who is calling comes first: nothing of an anonymous or unknown caller's body is read.
            principal = ANONYMOUS
            if self.guard.enabled:
                authorization = _header(scope, b"authorization") or cookie_token(request)
                principal = await self.guard.authenticate(authorization)
                # The method's own permission before anything of the body is read: a caller who may not
                # call the route learns nothing from it (a bad stage is 400 only to those who may use it).
                self.guard.authorize(principal, permission)
            reason = ""
            body: bytes | None = None
            permissions: tuple[str, ...] = (permission,)
            if permission in policy.AUDITED or staged:
                body = await _read_body(counted)
                fields = json_fields(body)
                reason = str(fields.get("reason", ""))
                if staged:
                    # The stage normalised as the registry will read it, then the decision on that value.
                    permissions = policy.permissions_for(permission, fields.get("stage"), stage_default)  # type: ignore[arg-type]
            self.guard.authorize(principal, permissions)
        except MlopsError as exc:
            if is_refusal(exc):
                client = scope.get("client")
                await self.refusals.report(exc, principal=principal, peer=client[0] if client else "",
                                           action=f"{method} {path}", target=path)
            await error_response(path, exc)(scope, receive, send)
            return

        ok = True
        session = request.query_params.get("token") if console_read(request) else None

        async def guarded_send(message: Message) -> None:
            nonlocal ok
            if message["type"] == "http.response.start":
                ok = message["status"] < 400
                if session:
                    # Keep the console's token in an HttpOnly cookie for the pages that follow.
                    cookie = Response()
                    cookie.set_cookie(SESSION_COOKIE, session, path=CONSOLE_PATH, httponly=True, samesite="strict")
                    headers = MutableHeaders(scope=message)
                    headers.append("set-cookie", cookie.headers["set-cookie"])
            await send(message)

        await self._within_limit(scope, counted, guarded_send, None if body is None else _replay(body, counted))
        if policy.audited(permissions) and ok:
            route = route_label(scope)
            await audit.record(self.producer(), principal.name, f"{method} {route}", path, reason,
                               actor_id=principal.token_id)

    async def _within_limit(self, scope: Scope, counted: CountedReceive, send: Send,
                            receive: Receive | None = None) -> None:
        """Run the app on the counted body (``receive``: the body the middleware read already, replayed, then
        ``counted``). Once the body passed the limit the answer is 413, whatever the app makes of its failed
        read (FastAPI turns a failed body read into a 400 of its own)."""
        if await run_refusable(self.app, scope, receive or counted, send,
                               lambda: counted.error() if counted.exceeded else None):
            # The chunks read up to the limit stay referenced from the failed read's traceback, which
            # FastAPI's handler holds in a reference cycle (its error -> traceback -> its own frame): free
            # them now, not at the next cyclic pass, which the services' GC thresholds make rare (two
            # over-limit bodies in a row held twice the limit).
            gc.collect(1)
