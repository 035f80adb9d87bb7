"""The platform middleware counts a body while it is read, chunked or not, by itself or by the app: past
the limit the answer is 413 and nothing more is pulled from the client; an anonymous caller's body is not
read at all; bad JSON in a body the middleware reads is a 400; requests no route matches share one metrics
label. Driven straight through ASGI with a real FastAPI app and a real token store (no server)."""

from __future__ import annotations

import gc
import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from mlops import telemetry
from mlops.auth.guard import Guard
from mlops.auth.tokens import TokenStore
from mlops.errors import MlopsError
from mlops.http_middleware import UNMATCHED, CountedReceive, PlatformMiddleware, json_fields
from mlops.settings import PlatformSettings

LIMIT = 1000
CHUNK = 100


class Body(BaseModel):
    stage: str = "candidate"
    data: list[Any] = []


def _app(tmp_path: Path, auth: bool, limit: int = LIMIT) -> tuple[FastAPI, str]:
    token = ""
    settings = PlatformSettings(home=tmp_path, rate_limit_per_s=0,
                                auth_tokens_file=tmp_path / "tokens.json" if auth else None)
    if auth:
        _, token = TokenStore(tmp_path / "tokens.json").create("t", "admin")
    app = FastAPI()

    @app.exception_handler(MlopsError)
    async def _error(_: Request, exc: MlopsError) -> JSONResponse:
        return JSONResponse(exc.to_body(), status_code=exc.http_status)

    @app.post("/v1/streams/{stream}/events")  # the app reads the body itself
    async def raw(stream: str, request: Request) -> dict[str, int]:
        return {"read": len(await request.body())}

    @app.post("/v1/features/online")  # FastAPI reads and parses the body
    async def parsed(body: Body) -> dict[str, int]:
        return {"items": len(body.data)}

    @app.post("/v1/models/{name}/versions/{version}/stage")  # the middleware reads it (audited, staged)
    async def staged(name: str, version: str, body: Body) -> dict[str, str]:
        return {"stage": body.stage}

    app.add_middleware(PlatformMiddleware, service="unit-bodies", guard=Guard(settings, None),  # type: ignore[arg-type]
                       max_body_bytes=limit, producer=lambda: None)
    return app, token


class Client:
    """One request through the ASGI app, its body sent in chunks (no Content-Length: chunked)."""

    def __init__(self, body: bytes, chunk: int = CHUNK) -> None:
        self.chunks = [body[i:i + chunk] for i in range(0, len(body), chunk)] or [b""]
        self.pulled = 0  # body bytes the server took
        self.messages: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        if not self.chunks:
            return {"type": "http.disconnect"}
        piece = self.chunks.pop(0)
        self.pulled += len(piece)
        return {"type": "http.request", "body": piece, "more_body": bool(self.chunks)}

    async def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int:
        return next(m["status"] for m in self.messages if m["type"] == "http.response.start")

    @property
    def json(self) -> Any:
        return json.loads(b"".join(m.get("body", b"") for m in self.messages if m["type"] == "http.response.body"))


async def _call(app: FastAPI, method: str, path: str, body: bytes = b"", token: str = "",
                headers: dict[str, str] | None = None) -> Client:
    client = Client(body)
    raw_headers = [(b"content-type", b"application/json")]
    if token:
        raw_headers.append((b"authorization", f"Bearer {token}".encode()))
    raw_headers += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": raw_headers, "http_version": "1.1", "scheme": "http", "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 80), "root_path": ""}
    await app(scope, client.receive, client.send)
    return client


ROUTES = ["/v1/streams/s/events", "/v1/features/online", "/v1/models/m/versions/1/stage"]


@pytest.mark.parametrize("auth", [True, False])
@pytest.mark.parametrize("path", ROUTES)
async def test_a_chunked_body_past_the_limit_is_413_and_read_no_further(tmp_path: Path, auth: bool,
                                                                        path: str) -> None:
    app, token = _app(tmp_path, auth)
    client = await _call(app, "POST", path, b"x" * (LIMIT * 20), token)
    assert client.status == 413
    assert client.json["error"]["code"] == "too_large"
    assert client.pulled <= LIMIT + CHUNK  # stopped at the limit, not read whole


@pytest.mark.parametrize("path", ROUTES)
async def test_a_body_within_the_limit_is_served(tmp_path: Path, path: str) -> None:
    app, token = _app(tmp_path, True)
    body = json.dumps({"stage": "candidate", "data": [1] * 100}).encode()
    assert len(body) <= LIMIT
    client = await _call(app, "POST", path, body, token)
    assert client.status == 200, client.json
    assert client.pulled == len(body)


async def test_a_content_length_past_the_limit_is_413_before_reading(tmp_path: Path) -> None:
    app, token = _app(tmp_path, True)
    client = await _call(app, "POST", ROUTES[0], b"x" * (LIMIT * 2), token,
                         headers={"content-length": str(LIMIT * 2)})
    assert client.status == 413
    assert client.pulled == 0


@pytest.mark.parametrize("path", [*ROUTES, "/no/such/route"])
async def test_an_anonymous_caller_is_401_and_no_byte_of_the_body_is_read(tmp_path: Path, path: str) -> None:
    app, _ = _app(tmp_path, True)
    client = await _call(app, "POST", path, b"x" * (LIMIT * 20))
    assert client.status == 401
    assert client.pulled == 0


@pytest.mark.parametrize("body", [
    b'{"stage": "candidate", "deep": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b'{"stage": "candidate", "deep": ' + b"[" * 65 + b"]" * 65 + b"}",
    b'{"stage": "candidate", "n": ' + b"9" * 5000 + b"}",
])
async def test_json_past_the_bounds_in_a_body_the_middleware_reads_is_400(tmp_path: Path, body: bytes) -> None:
    app, token = _app(tmp_path, True, limit=len(body))
    client = await _call(app, "POST", ROUTES[2], body, token)
    assert client.status == 400
    assert client.json["error"]["field"] == "body"


def test_json_fields_of_what_is_no_object_are_empty() -> None:
    assert json_fields(b"") == {}
    assert json_fields(b"not json") == {}
    assert json_fields(b"[1, 2]") == {}
    assert json_fields(b'{"reason": "r"}') == {"reason": "r"}


def _series(service: str) -> set[str]:
    return {s.labels["method"] for metric in telemetry.REQUESTS.collect() for s in metric.samples
            if s.labels.get("service") == service}


@pytest.mark.parametrize("auth", [True, False])
async def test_paths_no_route_matches_share_one_label(tmp_path: Path, auth: bool) -> None:
    app, token = _app(tmp_path, auth)
    for i in range(50):
        await _call(app, "GET", f"/probe-{i}/x", token=token if i % 2 else "")
        await _call(app, "POST", f"/probe-{i}", token=token)
    labels = _series("unit-bodies")
    assert not any("probe" in label for label in labels), labels
    assert {f"GET {UNMATCHED}", f"POST {UNMATCHED}"} <= labels
    await _call(app, "POST", "/v1/streams/s/events", b"{}", token)
    assert "POST /v1/streams/{stream}/events" in _series("unit-bodies")


async def test_counted_receive_counts_every_read() -> None:
    client = Client(b"x" * 350, chunk=100)
    counted = CountedReceive(client.receive, 300)
    for _ in range(3):
        await counted()
    assert counted.received == 300 and not counted.exceeded
    with pytest.raises(MlopsError) as err:
        await counted()
    assert err.value.http_status == 413 and counted.exceeded
    with pytest.raises(MlopsError):
        await counted()  # and stays refused
    assert client.pulled == 350


async def test_an_over_limit_body_is_freed_when_answered(tmp_path: Path) -> None:
    """Nothing of the refused body outlives its answer, even with the cyclic collector as rare as the
    services make it (FastAPI's handler keeps the failed read's traceback in a reference cycle)."""
    limit = 4 * 1024 * 1024
    app, token = _app(tmp_path, True, limit=limit)
    await _call(app, "POST", "/v1/features/online", b"{}", token)  # warm: routes, validators
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        client = await _call(app, "POST", "/v1/features/online", b"x" * (2 * limit), token)
        assert client.status == 413
        del client
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        gc.enable()
    assert held < limit // 4, f"{held} bytes held after the answer"


@pytest.mark.parametrize("body", [b'{"stage": "no such stage"}', b'{"stage": "production"}', b"not json at all"])
async def test_a_caller_without_the_routes_permission_is_403_before_its_body_is_read(tmp_path: Path,
                                                                                      body: bytes) -> None:
    app, _ = _app(tmp_path, True)
    _, viewer = TokenStore(tmp_path / "tokens.json").create("v", "viewer")
    client = await _call(app, "POST", "/v1/models/m/versions/1/stage", body, token=viewer)
    assert client.status == 403 and client.pulled == 0
