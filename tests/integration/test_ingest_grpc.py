"""ingest over gRPC against the real stack: schemas, unary and client-streaming events, violations named
by field, and the events reaching the feature service."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc
import httpx
import pytest
from google.protobuf import struct_pb2, timestamp_pb2

from mlops.grpc_util import channel
from mlops.v1 import events_pb2, ingest_pb2, ingest_pb2_grpc
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)  # recent: older values would be past the features' TTL


def _raw(stream: str, entity: str, event_id: str = "", **fields: object) -> events_pb2.RawEvent:
    values = struct_pb2.Struct()
    values.update(fields)
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(NOW)
    return events_pb2.RawEvent(stream=stream, event_id=event_id, entity_id=entity, event_time=ts, fields=values)


async def _put_schema(stub: ingest_pb2_grpc.IngestServiceStub, stream: str) -> ingest_pb2.StreamSchema:
    return await stub.PutSchema(ingest_pb2.StreamSchema(stream=stream, fields=[
        ingest_pb2.FieldSpec(name="amount", type="float", required=True, min=0, max=1000),
        ingest_pb2.FieldSpec(name="kind", type="string", required=False, enum=["card", "cash"]),
    ]))


async def _online(stack: Stack, entities: list[str]) -> list[dict]:
    async with httpx.AsyncClient(timeout=30) as http:
        rows: list[dict] = []
        for _ in range(120):
            r = await http.post(stack.url("feature", "/v1/features/online"), json={"entities": entities})
            rows = r.json()["rows"]
            if all(row["found"] for row in rows):
                break
            await asyncio.sleep(0.25)
        return rows


async def test_unary_events_schemas_and_violations(stack: Stack) -> None:
    run = uuid.uuid4().hex[:8]
    stream = f"grpc{run}"
    async with channel(stack.grpc("ingest")) as ch:
        stub = ingest_pb2_grpc.IngestServiceStub(ch)
        schema = await _put_schema(stub, stream)
        assert schema.version == 1 and [f.name for f in schema.fields] == ["amount", "kind"]
        got = await stub.GetSchema(ingest_pb2.GetSchemaRequest(stream=stream))
        assert got.fields[0].HasField("min") and got.fields[0].max == 1000
        assert list(got.fields[1].enum) == ["card", "cash"]

        events = [
            _raw(stream, f"{run}-a", f"{run}-1", amount=5.0, kind="card"),
            _raw(stream, f"{run}-b", f"{run}-2", amount=-1.0),            # out of range
            _raw(stream, f"{run}-c", f"{run}-3", amount=3.0, kind="gold"),  # not in the enum
            _raw(stream, f"{run}-d", f"{run}-4", kind="cash"),              # amount missing
            _raw(stream, f"{run}-e", f"{run}-5", amount=1.0, colour="red"),  # unknown field
            _raw(stream, f"{run}-f", f"{run}-6", amount="lots"),            # wrong type
            _raw(stream, "", f"{run}-7", amount=1.0),                       # no entity
        ]
        response = await stub.SendEvents(ingest_pb2.SendEventsRequest(stream=stream, events=events))
        assert response.accepted == 1
        assert [(r.index, r.field) for r in response.rejected] == [
            (1, "amount"), (2, "kind"), (3, "amount"), (4, "colour"), (5, "amount"), (6, "entity_id")]
        assert ">= 0" in response.rejected[0].error and "one of" in response.rejected[1].error

        # the same event again: a duplicate, not a second acceptance
        response = await stub.SendEvents(ingest_pb2.SendEventsRequest(stream=stream, events=events[:1]))
        assert (response.accepted, response.duplicates) == (0, 1)

        # every event invalid: INVALID_ARGUMENT naming the field; an unknown stream: NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.SendEvents(ingest_pb2.SendEventsRequest(stream=stream, events=events[1:2]))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "amount" in (err.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.SendEvents(ingest_pb2.SendEventsRequest(stream=f"none{run}", events=events[:1]))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.PutSchema(ingest_pb2.StreamSchema(stream=stream, fields=[
                ingest_pb2.FieldSpec(name="x", type="complex")]))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    row = (await _online(stack, [f"{run}-a"]))[0]
    assert row["values"]["amount"] == 5.0 and row["values"]["kind"] == "card"
    assert row["event_time"] == NOW.isoformat()
    async with httpx.AsyncClient(timeout=30) as http:
        stats = (await http.get(stack.url("ingest", f"/v1/streams/{stream}/stats"))).json()
    assert stats["accepted"] == 1 and stats["duplicates"] == 1
    assert stats["rejected"] == {"out_of_range": 2, "not_in_enum": 1, "missing_field": 2, "unknown_field": 1,
                                 "wrong_type": 1}


async def test_client_streaming_many_events_over_two_streams(stack: Stack) -> None:
    run = uuid.uuid4().hex[:8]
    streams = [f"gs{run}a", f"gs{run}b"]
    n = 1300  # more than one internal batch (500)

    async def events() -> AsyncIterator[events_pb2.RawEvent]:
        for i in range(n):
            amount = -5.0 if i % 100 == 99 else float(i % 50)
            yield _raw(streams[i % 2], f"{run}-e{i % 40}", f"{run}-{i}", amount=amount)
        yield _raw(streams[0], f"{run}-e0", f"{run}-0", amount=1.0)  # a repeat of the first event

    async with channel(stack.grpc("ingest")) as ch:
        stub = ingest_pb2_grpc.IngestServiceStub(ch)
        for stream in streams:
            await _put_schema(stub, stream)
        response = await stub.StreamEvents(events())
    bad = [i for i in range(n) if i % 100 == 99]
    assert response.accepted == n - len(bad) and response.duplicates == 1
    assert [r.index for r in response.rejected] == bad and {r.field for r in response.rejected} == {"amount"}

    async with httpx.AsyncClient(timeout=30) as http:
        total = 0
        for _ in range(120):
            r = await http.post(stack.url("feature", "/v1/features/online"), json={
                "entities": [f"{run}-e{k}" for k in range(40)], "features": ["event_count"]})
            total = sum(row["values"]["event_count"] or 0 for row in r.json()["rows"])
            if total >= n - len(bad):
                break
            await asyncio.sleep(0.25)
        assert total == n - len(bad)
