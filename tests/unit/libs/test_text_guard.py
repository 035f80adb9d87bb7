"""A lone UTF-16 surrogate escape in a caller's JSON is a 400 for every route; pairs and escaped backslashes
pass, wherever the chunks of the body split."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from pydantic import BaseModel

from mlops.text_guard import LoneSurrogateScanner, RefuseLoneSurrogates

LONE = [b'{"a": "\\ud800"}', b'{"a": "\\uDFFF"}', b'["x\\udc00y"]', b'{"a": "\\\\\\ud800"}',
        b'{"a": "\\ud800\\u0041"}', b'{"\\udbff": 1}']
FINE = [b'{"a": "\\ud83d\\ude00"}', b'{"a": "\\\\ud800"}', b'{"a": "\\u00e9\\n\\"\\\\"}', b'{"a": "\xed\x9f\xbf"}',
        b"[1, 2, 3]", b""]


def _scan(body: bytes, size: int) -> bool:
    scanner = LoneSurrogateScanner()
    chunks = [body[i:i + size] for i in range(0, len(body), size)] or [b""]
    return any(scanner.feed(chunk, final=n == len(chunks) - 1) for n, chunk in enumerate(chunks))


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 13, 1000])
def test_lone_surrogates_are_found_across_any_split(size: int) -> None:
    for body in LONE:
        assert _scan(body, size), (body, size)
    for body in FINE:
        assert not _scan(body, size), (body, size)


def test_the_scanner_agrees_with_json_on_what_is_text() -> None:
    for body in LONE + FINE[:-1]:
        text = json.dumps(json.loads(body), ensure_ascii=False)
        try:
            text.encode("utf-8")
            encodable = True
        except UnicodeEncodeError:
            encodable = False
        assert encodable is not _scan(body, 1000), body


class Item(BaseModel):
    name: str


def _client() -> TestClient:
    app = FastAPI()

    @app.post("/model")
    async def model(item: Item) -> dict[str, str]:
        return {"name": item.name}

    @app.post("/raw")
    async def raw(request: Request) -> dict[str, Any]:
        return {"length": len(await request.body())}

    @app.post("/v2/models/m/infer")
    async def infer(request: Request) -> dict[str, Any]:
        return {"length": len(await request.body())}

    app.add_middleware(RefuseLoneSurrogates)
    return TestClient(app)


@pytest.mark.parametrize("path", ["/model", "/raw"])
def test_a_lone_surrogate_is_a_400_naming_the_body(path: str) -> None:
    response = _client().post(path, content=b'{"name": "\\ud800"}', headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "body"


def test_under_v2_the_error_has_the_v2_shape() -> None:
    response = _client().post("/v2/models/m/infer", content=b'{"id": "\\udfff"}')
    assert response.status_code == 400
    assert isinstance(response.json()["error"], str)


def test_text_and_other_content_types_pass() -> None:
    client = _client()
    ok = client.post("/model", content=b'{"name": "\\ud83d\\ude00"}', headers={"content-type": "application/json"})
    assert ok.json() == {"name": "\U0001f600"}
    raw = client.post("/raw", content=b'"\\ud800"', headers={"content-type": "application/octet-stream"})
    assert raw.status_code == 200
