"""Every gRPC handler kind through the platform's wrapper on a real grpc.aio server: answers pass through,
a platform error becomes its status, an unexpected one INTERNAL, and each call is counted by its code."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY

from mlops.errors import NotFound
from mlops.grpc_util import ServerInstrumentation

SERVICE = "unit.Kinds"


def _echo(value: bytes) -> bytes:
    if value == b"missing":
        raise NotFound("no such thing")
    if value == b"boom":
        raise RuntimeError("a bug")
    return value.upper()


async def _unary(request: bytes, context: Any) -> bytes:
    return _echo(request)


async def _client_stream(requests: AsyncIterator[bytes], context: Any) -> bytes:
    return b"+".join([_echo(r) async for r in requests])


async def _server_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
    for _ in range(2):
        yield _echo(request)


async def _bidi(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for request in requests:
        yield _echo(request)


def _handlers() -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(SERVICE, {
        "Unary": grpc.unary_unary_rpc_method_handler(_unary),
        "ClientStream": grpc.stream_unary_rpc_method_handler(_client_stream),
        "ServerStream": grpc.unary_stream_rpc_method_handler(_server_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(_bidi),
    })


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server()
    ServerInstrumentation("unit-kinds").instrumented(server).add_generic_rpc_handlers((_handlers(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield ch
    await server.stop(None)


async def _call(channel: grpc.aio.Channel, kind: str, value: bytes) -> list[bytes]:
    method = f"/{SERVICE}/{kind}"
    if kind == "Unary":
        return [await channel.unary_unary(method)(value)]
    if kind == "ClientStream":
        return [await channel.stream_unary(method)(iter([value, value]))]
    if kind == "ServerStream":
        return [r async for r in channel.unary_stream(method)(value)]
    return [r async for r in channel.stream_stream(method)(iter([value]))]


EXPECTED = {"Unary": [b"HI"], "ClientStream": [b"HI+HI"], "ServerStream": [b"HI", b"HI"], "Bidi": [b"HI"]}


def _count(kind: str, code: str) -> float:
    return REGISTRY.get_sample_value("mlops_requests_total", {
        "service": "unit-kinds", "transport": "grpc", "method": f"/{SERVICE}/{kind}", "code": code}) or 0.0


@pytest.mark.parametrize("kind", list(EXPECTED))
async def test_every_kind_answers_and_maps_errors(channel: grpc.aio.Channel, kind: str) -> None:
    before = {code: _count(kind, code) for code in ("OK", "NOT_FOUND", "INTERNAL")}
    assert await _call(channel, kind, b"hi") == EXPECTED[kind]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _call(channel, kind, b"missing")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and err.value.details() == "no such thing"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _call(channel, kind, b"boom")
    assert err.value.code() == grpc.StatusCode.UNKNOWN  # grpc's own answer to an unexpected exception
    assert {code: _count(kind, code) - n for code, n in before.items()} == {"OK": 1, "NOT_FOUND": 1, "INTERNAL": 1}
