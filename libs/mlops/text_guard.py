"""No lone UTF-16 surrogate in a caller's JSON. ``"\\ud800"`` is valid JSON syntax but no Unicode text
(I-JSON, RFC 7493 section 2.1, forbids it): Python's json turns it into a ``str`` that nothing downstream can
encode (SQLite, Redis, protobuf, the JSON response itself), so it was a 500 on the request, or worse on
every later read of what was stored (one training job named so broke ``GET /v1/training-jobs`` for all).
Refused as the body is received, for every route at once: a 400 naming the body.

The scan runs on the raw bytes chunk by chunk (nothing is buffered beyond 12 bytes), so it costs one regex
pass over bodies the services read anyway, and only bodies that claim to be JSON (or claim nothing)."""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlops.asgi_refusal import run_refusable
from mlops.errors import InvalidArgument

# Every backslash in JSON starts an escape: a surrogate pair (fine), a lone surrogate (group 1), or any
# other escape, consumed whole so that the "u" after an escaped backslash ("\\ud800", a text) is not
# taken for an escape.
_ESCAPE = re.compile(
    rb"\\(?:u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|(u[dD][89a-fA-F][0-9a-fA-F]{2})|[\s\S])"
)
#: The longest escape the pattern reads: a pair, ``\uD83D\uDE00``.
_LONGEST = 12


class LoneSurrogateScanner:
    """Fed a body in chunks, says whether it holds a lone surrogate escape; splits between chunks are
    handled by carrying the last few bytes over."""

    def __init__(self) -> None:
        self._carry = b""

    def feed(self, chunk: bytes, final: bool) -> bool:
        data = self._carry + chunk
        # An escape starting in the last bytes may continue in the next chunk: it waits for it.
        limit = len(data) if final else len(data) - _LONGEST
        consumed = 0
        for match in _ESCAPE.finditer(data):
            if match.start() > limit:
                break
            if match.group(1) is not None:
                return True
            consumed = match.end()
        self._carry = b"" if final else data[max(consumed, limit, 0):]
        return False


def _claims_json(scope: Scope) -> bool:
    for key, value in scope["headers"]:
        if key == b"content-type":
            return b"json" in value.lower()
    return True  # no content type: FastAPI and the hand-parsed routes read it as JSON


def refusal() -> InvalidArgument:
    return InvalidArgument("the JSON holds a lone UTF-16 surrogate escape (\\ud800-\\udfff): not text",
                           field="body")


class RefuseLoneSurrogates:
    """ASGI middleware: a JSON body with a lone surrogate escape is answered 400 (the V2 error shape under
    ``/v2``), whatever the route would have made of the failed read."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS") or not _claims_json(scope):
            await self.app(scope, receive, send)
            return
        scanner = LoneSurrogateScanner()
        refused: InvalidArgument | None = None

        async def scanned_receive() -> Message:
            nonlocal refused
            message = await receive()
            if message["type"] == "http.request" and refused is None:
                if scanner.feed(message.get("body", b""), final=not message.get("more_body", False)):
                    refused = refusal()
            if refused is not None:
                raise refused
            return message

        await run_refusable(self.app, scope, scanned_receive, send, lambda: refused)
