"""ingest on ``events.raw`` (JSON and protobuf) and REST: malformed records land in ``events.deadletter``
with their original bytes and the reason in headers and the service keeps running; valid ones reach the
online store; REST rejections name the field."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from google.protobuf import struct_pb2, timestamp_pb2

from mlops.v1 import events_pb2
from tests.integration.kafka_util import header, produce, read_until
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration


def _schema(stack: Stack, stream: str) -> None:
    with stack.http() as http:
        r = http.put(stack.url("ingest", f"/v1/streams/{stream}/schema"),
                     json={"fields": [{"name": "amount", "type": "float", "min": 0}]})
        assert r.status_code == 200, r.text


async def test_malformed_raw_events_are_dead_lettered_with_a_reason(stack: Stack) -> None:
    stream = f"dlq{uuid.uuid4().hex[:8]}"
    _schema(stack, stream)
    run = uuid.uuid4().hex
    bad = {
        f"{run}-notjson": b"{this is not json",
        f"{run}-range": json.dumps({"stream": stream, "entity_id": "e1", "amount": -5}).encode(),
        f"{run}-nostream": json.dumps({"entity_id": "e1", "amount": 5}).encode(),
        f"{run}-unknown": json.dumps({"stream": "no-such-stream", "entity_id": "e1", "amount": 5}).encode(),
        f"{run}-proto-garbage": b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
    }
    good_id = f"{run}-good"
    entity = f"ent-{run}"
    records = [(None, v, [("event_id", k.encode())]) for k, v in bad.items()]
    records.append((None, json.dumps({"stream": stream, "entity_id": entity, "amount": 7.5}).encode(),
                    [("event_id", good_id.encode()), ("content-type", b"application/json")]))
    await produce(stack.kafka, "events.raw", records)

    def all_seen(recs: list) -> bool:
        return set(bad) <= {header(r, "event_id") for r in recs}

    dead = await read_until(stack.kafka, "events.deadletter", all_seen, timeout_s=90)
    by_id = {header(r, "event_id"): r for r in dead if header(r, "event_id") in bad}
    assert set(by_id) == set(bad), f"missing dead letters: {set(bad) - set(by_id)}"
    for event_id, record in by_id.items():
        assert record.value == bad[event_id], "the original bytes are kept"
        assert header(record, "mlops-dlq-reason"), f"{event_id} has no reason"
        assert header(record, "mlops-dlq-source-topic") == "events.raw"
    assert "bad_json" in header(by_id[f"{run}-notjson"], "mlops-dlq-reason")
    assert "out_of_range" in header(by_id[f"{run}-range"], "mlops-dlq-reason")
    assert header(by_id[f"{run}-range"], "mlops-dlq-field") == "amount"
    assert header(by_id[f"{run}-nostream"], "mlops-dlq-field") == "stream"

    with stack.http() as http:
        assert http.get(stack.url("ingest", "/healthz")).status_code == 200
        deadline = time.time() + 60
        row = {}
        while time.time() < deadline:
            row = http.post(stack.url("feature", "/v1/features/online"), json={"entities": [entity]}).json()["rows"][0]
            if row["found"]:
                break
            await asyncio.sleep(0.5)
        assert row["found"] and row["values"]["amount"] == 7.5


def test_rest_rejections_name_the_field(stack: Stack) -> None:
    stream = f"rest{uuid.uuid4().hex[:8]}"
    _schema(stack, stream)
    with stack.http() as http:
        url = stack.url("ingest", f"/v1/streams/{stream}/events")
        r = http.post(url, json=[{"entity_id": "a", "amount": 1}, {"entity_id": "b", "amount": "x"}])
        assert r.status_code == 202
        assert r.json()["accepted"] == 1
        assert r.json()["rejected"] == [{"index": 1, "error": "amount must be a float, got str", "field": "amount"}]
        r = http.post(url, json={"entity_id": "a"})
        assert r.status_code == 400 and r.json()["error"]["field"] == "amount"
        r = http.post(url, content=b"{broken", headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["field"] == "body"
        ndjson = b'{"entity_id": "n1", "amount": 1}\n{"entity_id": "n2", "amount": 2}\n'
        r = http.post(url, content=ndjson, headers={"content-type": "application/x-ndjson"})
        assert r.status_code == 202 and r.json()["accepted"] == 2
        r = http.post(stack.url("ingest", "/v1/streams/never-declared/events"), json=[{"entity_id": "a"}])
        assert r.status_code == 404 and r.json()["error"]["field"] == "stream"


def _raw_event(stream: str, entity: str, **fields: object) -> bytes:
    values = struct_pb2.Struct()
    values.update(fields)
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(datetime.now(UTC))
    return events_pb2.RawEvent(stream=stream, entity_id=entity, event_time=ts, fields=values).SerializeToString()


async def test_protobuf_raw_events_are_ingested_or_dead_lettered(stack: Stack) -> None:
    """``events.raw`` takes protobuf ``RawEvent`` too; an invalid one is dead-lettered with its original
    bytes and a reason naming the field; records without an event_id header are deduplicated by position."""
    stream = f"pb{uuid.uuid4().hex[:8]}"
    _schema(stack, stream)
    run = uuid.uuid4().hex
    entity = f"pb-{run}"
    good = _raw_event(stream, entity, amount=12.5)
    bad = {
        f"{run}-range": _raw_event(stream, entity, amount=-1.0),
        f"{run}-type": _raw_event(stream, entity, amount="x"),
        f"{run}-unknown": _raw_event(stream, entity, amount=1.0, colour="red"),
        f"{run}-nostream": _raw_event("", entity, amount=1.0),
        f"{run}-noschema": _raw_event(f"never{run[:8]}", entity, amount=1.0),
    }
    proto = [("content-type", b"application/x-protobuf")]
    await produce(stack.kafka, "events.raw",
                  [(entity.encode(), good, [("event_id", f"{run}-good".encode()), *proto])]
                  + [(None, v, [("event_id", k.encode()), *proto]) for k, v in bad.items()]
                  + [(None, good, proto)])  # the same bytes without an event_id: a new event (id from its offset)

    dead = await read_until(stack.kafka, "events.deadletter",
                            lambda recs: set(bad) <= {header(r, "event_id") for r in recs}, timeout_s=90)
    by_id = {header(r, "event_id"): r for r in dead if header(r, "event_id") in bad}
    assert set(by_id) == set(bad)
    for event_id, record in by_id.items():
        assert record.value == bad[event_id], "the original bytes are kept"
        assert header(record, "content-type") == "application/x-protobuf"
        assert header(record, "mlops-dlq-source-topic") == "events.raw"
        assert header(record, "mlops-dlq-source-offset") is not None
    assert header(by_id[f"{run}-range"], "mlops-dlq-reason").startswith("out_of_range")
    assert header(by_id[f"{run}-range"], "mlops-dlq-field") == "amount"
    assert header(by_id[f"{run}-type"], "mlops-dlq-reason").startswith("wrong_type")
    assert header(by_id[f"{run}-unknown"], "mlops-dlq-field") == "colour"
    assert header(by_id[f"{run}-nostream"], "mlops-dlq-field") == "stream"
    assert header(by_id[f"{run}-noschema"], "mlops-dlq-reason").startswith("not_found")

    async with httpx.AsyncClient(timeout=30) as http:
        for _ in range(120):
            r = await http.post(stack.url("feature", "/v1/features/online"), json={"entities": [entity]})
            row = r.json()["rows"][0]
            if row["found"] and row["values"].get("event_count") == 2:
                break
            await asyncio.sleep(0.25)
        assert row["values"]["amount"] == 12.5 and row["values"]["event_count"] == 2
        stats = (await http.get(stack.url("ingest", f"/v1/streams/{stream}/stats"))).json()
        assert stats["accepted"] == 2
        assert stats["rejected"] == {"out_of_range": 1, "wrong_type": 1, "unknown_field": 1}
