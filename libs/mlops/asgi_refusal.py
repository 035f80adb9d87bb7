"""Refusing a request from inside its body read, for the ASGI middlewares that watch a body as the app reads
it (the size limit, the lone-surrogate scan): the read fails on purpose, and the app's own answer to that
failed read (FastAPI makes a 400 of its own, a hand-parsed route a 500) is replaced by the refusal."""

from __future__ import annotations

from collections.abc import Callable

from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlops.errors import MlopsError


def error_response(path: str, exc: MlopsError) -> Response:
    """``exc`` as the platform answers it: the Open Inference Protocol's shape under ``/v2``, else ours."""
    if path.startswith("/v2"):
        # Unmodified tritonclient reads "error" as a string.
        return JSONResponse({"error": exc.message, "code": exc.code}, status_code=exc.http_status)
    return JSONResponse(exc.to_body(), status_code=exc.http_status)


async def run_refusable(app: ASGIApp, scope: Scope, receive: Receive, send: Send,
                        refused: Callable[[], MlopsError | None]) -> bool:
    """Run ``app``; once ``refused()`` names an error (``receive`` raised it), whatever the app answers is
    dropped and that error is the answer instead (unless a response had already started). Returns whether
    the request was refused."""
    started = False

    async def replacing_send(message: Message) -> None:
        nonlocal started
        error = refused()
        if error is not None:
            if not started:
                started = True
                await error_response(scope["path"], error)(scope, receive, send)
            return  # the app's own answer to the failed read
        if message["type"] == "http.response.start":
            started = True
        await send(message)

    try:
        await app(scope, receive, replacing_send)
    except Exception:
        if refused() is None:
            raise
    error = refused()
    if error is not None and not started:
        await error_response(scope["path"], error)(scope, receive, send)
    return error is not None
