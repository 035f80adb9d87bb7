"""Duplicate suppression on the real stack: a repeated event_id within the stream's window is dropped on
every way in (REST, gRPC, events.raw), counted as a duplicate, and applied to the features once; after
the window it is a new event again. The window is configurable per stream (and per service)."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest
from google.protobuf import struct_pb2

from mlops.grpc_util import channel
from mlops.v1 import events_pb2, ingest_pb2, ingest_pb2_grpc
from tests.integration.kafka_util import produce
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration


async def _wait(check, want, timeout_s: float = 60.0):  # type: ignore[no-untyped-def]
    got = None
    for _ in range(int(timeout_s / 0.25)):
        got = await check()
        if got == want:
            return got
        await asyncio.sleep(0.25)
    return got


async def test_duplicates_are_dropped_on_every_way_in(stack: Stack) -> None:
    run = uuid.uuid4().hex[:8]
    stream = f"dup{run}"
    entity = f"{run}-e"
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.put(stack.url("ingest", f"/v1/streams/{stream}/schema"),
                           json={"fields": [{"name": "amount", "type": "float"}]})
        assert r.status_code == 200 and r.json()["dedup_window_s"] is None

        url = stack.url("ingest", f"/v1/streams/{stream}/events")
        one = {"event_id": f"{run}-1", "entity_id": entity, "amount": 1.0}
        r = await http.post(url, json=[one, one, {**one, "event_id": f"{run}-2"}])  # repeated inside a request
        assert (r.json()["accepted"], r.json()["duplicates"]) == (2, 1)
        r = await http.post(url, json=[one])  # and across requests
        assert (r.json()["accepted"], r.json()["duplicates"]) == (0, 1)

        async with channel(stack.grpc("ingest")) as ch:
            stub = ingest_pb2_grpc.IngestServiceStub(ch)
            fields = struct_pb2.Struct()
            fields.update({"amount": 1.0})
            raw = events_pb2.RawEvent(event_id=f"{run}-1", entity_id=entity, fields=fields)
            response = await stub.SendEvents(ingest_pb2.SendEventsRequest(stream=stream, events=[raw]))
            assert (response.accepted, response.duplicates) == (0, 1)

        record = json.dumps({"stream": stream, "entity_id": entity, "amount": 1.0}).encode()
        await produce(stack.kafka, "events.raw", [
            (None, record, [("event_id", f"{run}-1".encode())]),    # seen over REST already
            (None, record, [("event_id", f"{run}-3".encode())]),
            (None, record, [("event_id", f"{run}-3".encode())]),    # twice on Kafka
        ])

        async def stats() -> tuple[int, int]:
            s = (await http.get(stack.url("ingest", f"/v1/streams/{stream}/stats"))).json()
            return s["accepted"], s["duplicates"]

        assert await _wait(stats, (3, 5)) == (3, 5)

        async def count() -> int | None:
            r = await http.post(stack.url("feature", "/v1/features/online"), json={"entities": [entity]})
            return r.json()["rows"][0]["values"].get("event_count")

        assert await _wait(count, 3) == 3
        await asyncio.sleep(1.0)
        assert await count() == 3 and await stats() == (3, 5)


async def test_the_window_is_configurable_per_stream(stack: Stack) -> None:
    run = uuid.uuid4().hex[:8]
    stream = f"win{run}"
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.put(stack.url("ingest", f"/v1/streams/{stream}/schema"),
                           json={"fields": [{"name": "amount", "type": "float"}], "dedup_window_s": 2})
        assert r.status_code == 200 and r.json()["dedup_window_s"] == 2
        assert (await http.get(stack.url("ingest", f"/v1/streams/{stream}/schema"))).json()["dedup_window_s"] == 2
        r = await http.put(stack.url("ingest", f"/v1/streams/{stream}2/schema"),
                           json={"fields": [], "dedup_window_s": 0})
        assert r.status_code == 400 and r.json()["error"]["field"] == "dedup_window_s"

        url = stack.url("ingest", f"/v1/streams/{stream}/events")
        event = {"event_id": f"{run}-1", "entity_id": f"{run}-e", "amount": 1.0}
        r = await http.post(url, json=[event])
        assert r.json()["accepted"] == 1
        r = await http.post(url, json=[event])
        assert r.json()["duplicates"] == 1
        await asyncio.sleep(3.0)  # the window has passed: the same id is a new event
        r = await http.post(url, json=[event])
        assert r.json()["accepted"] == 1
